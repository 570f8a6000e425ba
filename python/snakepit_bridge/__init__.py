"""snakepit_bridge: the Python worker of Snakepit in C++.

Write an adapter::

    from snakepit_bridge import BaseAdapter, tool

    class MyAdapter(BaseAdapter):
        @tool(description="Adds two numbers")
        def add(self, a: float, b: float) -> float:
            return a + b

and run it with ``python3 -m snakepit_bridge --adapter mypkg.MyAdapter --socket ...``.
"""

from .adapter import BaseAdapter, StreamChunk, ToolMetadata, tool
from .errors import BridgeError, InvalidArgumentError, UnknownToolError
from .session_context import SessionContext

__version__ = "0.1.0"

__all__ = [
    "BaseAdapter",
    "BridgeError",
    "InvalidArgumentError",
    "SessionContext",
    "StreamChunk",
    "ToolMetadata",
    "UnknownToolError",
    "tool",
    "__version__",
]
