"""The adapter the pool runs: ``showcase_adapter.ShowcaseAdapter``.

Each handler group is a mixin whose ``@tool`` methods become tools of this class
(``BaseAdapter`` collects them along the MRO). The class defines no worker hooks, so
every request gets a fresh instance: nothing a tool assigns to ``self`` survives the
call, which keeps the handlers honest about where their state lives.
"""

from __future__ import annotations

from snakepit_bridge.adapter import BaseAdapter

from .handlers import (BasicOps, BinaryOps, ConcurrentOps, MLWorkflow, SessionOps,
                       StreamingOps)


class ShowcaseAdapter(BasicOps, SessionOps, BinaryOps, StreamingOps, ConcurrentOps,
                      MLWorkflow, BaseAdapter):
    """Basic, session, binary, streaming, concurrent and ML-workflow tools."""
