"""Handler groups of the showcase adapter, one module per theme."""

from .basic_ops import BasicOps
from .binary_ops import BinaryOps
from .concurrent_ops import ConcurrentOps
from .ml_workflow import MLWorkflow
from .session_ops import SessionOps
from .streaming_ops import StreamingOps

__all__ = ["BasicOps", "BinaryOps", "ConcurrentOps", "MLWorkflow", "SessionOps",
           "StreamingOps"]
