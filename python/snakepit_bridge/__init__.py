"""snakepit_bridge: the Python worker of Snakepit in C++.

Write an adapter::

    from snakepit_bridge import BaseAdapter, tool

    class MyAdapter(BaseAdapter):
        @tool(description="Adds two numbers")
        def add(self, a: float, b: float) -> float:
            return a + b

and run it under either worker kind:

* gRPC: ``python3 -m snakepit_bridge --adapter mypkg.MyAdapter --socket ...`` (a
  BridgeService server; host-owned session state and host tools available);
* stdio: ``python3 -m snakepit_bridge.stdio --adapter mypkg.MyAdapter`` (length-prefixed
  JSON frames on stdin/stdout; no grpc or protobuf needed; see ``snakepit_bridge.stdio``).

Per-process hooks, on both kinds: ``on_worker_start(self, config)`` runs once before the
worker reports ready, with the pool's adapter config (``SNAKEPIT_ADAPTER_CONFIG``), and
``on_worker_stop(self)`` once on a graceful stop. An adapter with these hooks is built
once per process and each request works on a shallow copy of it; ``initialize`` /
``cleanup`` still run around every request. Details: ``snakepit_bridge.adapter``.

Importing this package loads neither grpc nor protobuf (the gRPC worker imports them
when it starts), so the stdio bridge starts fast and small.
"""

from .adapter import BaseAdapter, StreamChunk, ToolMetadata, tool
from .errors import BridgeError, InvalidArgumentError, UnknownToolError, WorkerKindError
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
    "WorkerKindError",
    "tool",
    "__version__",
]
