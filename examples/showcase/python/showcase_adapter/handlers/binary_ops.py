"""Binary payloads: a numpy array travels as raw bytes (a binary parameter), not as a
JSON list, and comes back as bytes (``binary_result``)."""

from __future__ import annotations

import os
from typing import Any, Dict, List

import numpy as np

from snakepit_bridge.adapter import tool


class BinaryOps:
    """Array statistics and transforms on bytes."""

    @tool(description="Statistics of the array in `data`: a binary parameter (raw "
                      "bytes of dtype) or a JSON list; reshaped to shape if given")
    def array_stats(self, data: Any, dtype: str = "float64",
                    shape: List[int] = None) -> Dict[str, Any]:
        if isinstance(data, (bytes, bytearray, memoryview)):
            arr = np.frombuffer(data, dtype=np.dtype(dtype))  # no copy
        else:
            arr = np.asarray(data, dtype=np.dtype(dtype))
        if shape:
            arr = arr.reshape(shape)
        return {"shape": list(arr.shape), "dtype": str(arr.dtype), "bytes": int(arr.nbytes),
                "sum": float(arr.sum()), "mean": float(arr.mean()),
                "min": float(arr.min()), "max": float(arr.max()), "pid": os.getpid()}

    @tool(description="Returns the array in `data` scaled by factor, as bytes of the "
                      "same dtype")
    def scale_array(self, data: bytes, factor: float = 2.0, dtype: str = "float64") -> bytes:
        arr = np.frombuffer(data, dtype=np.dtype(dtype))
        return (arr * factor).astype(arr.dtype).tobytes()
