"""The showcase application's Python side: one adapter class assembled from handler
groups (``handlers/``), run by the host ``snakepit_showcase`` (examples/showcase).

Workers are computation only: every value that must outlive a call (counters, the
data set, the trained model) is kept in the host's session through
``SessionContext``, never in module globals or on the adapter instance.
"""

from .adapter import ShowcaseAdapter

__all__ = ["ShowcaseAdapter"]
