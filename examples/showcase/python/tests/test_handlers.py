"""The showcase adapter's handlers in isolation, against a dict-backed session: each
tool computes the right thing and keeps what must outlive a call in the session, never
in Python (the C++ showcase runs them on real workers)."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np
import pytest

from showcase_adapter import ShowcaseAdapter
from showcase_adapter.handlers.basic_ops import ShowcaseError
from showcase_adapter.utils.ml_helpers import DataNotFoundError


class FakeSession:
    """What the handlers use of SessionContext, over a plain dict."""

    def __init__(self, session_id: str = "s1", worker_id: str = "w1"):
        self.session_id = session_id
        self.worker_id = worker_id
        self.state: Dict[str, Any] = {}
        self.host_calls = []

    def get(self, key: str, default: Any = None) -> Any:
        return self.state.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.state[key] = value

    def increment(self, key: str, by: Any = 1) -> Any:
        self.state[key] = self.state.get(key, 0) + by
        return self.state[key]

    def call_host_tool(self, name: str, **kwargs: Any) -> Any:
        self.host_calls.append((name, kwargs))
        return ["setosa", "versicolor", "virginica"]


def adapter_for(ctx: FakeSession) -> ShowcaseAdapter:
    """A fresh instance per call, as the worker makes one per request."""
    a = ShowcaseAdapter()
    a.set_session_context(ctx)
    return a


def call(ctx: FakeSession, tool: str, **kwargs: Any) -> Any:
    return adapter_for(ctx).call_tool(tool, **kwargs)


def stream(ctx: FakeSession, tool: str, **kwargs: Any) -> list:
    return [getattr(c, "data", c) for c in call(ctx, tool, **kwargs)]


def test_the_adapter_defines_no_worker_hooks_so_each_request_gets_a_new_instance():
    from snakepit_bridge.adapter import BaseAdapter

    assert ShowcaseAdapter.on_worker_start is BaseAdapter.on_worker_start
    assert ShowcaseAdapter.on_worker_stop is BaseAdapter.on_worker_stop


def test_no_handler_class_holds_mutable_state():
    for klass in ShowcaseAdapter.__mro__:
        if klass.__module__.startswith("showcase_adapter"):
            for name, value in vars(klass).items():
                assert not isinstance(value, (dict, list, set, bytearray)), (klass, name)


def test_counters_live_in_the_session_and_agree_across_instances_and_workers():
    ctx = FakeSession()
    call(ctx, "init_session")
    call(ctx, "increment_counter")
    other = FakeSession(worker_id="w2")
    other.state = ctx.state  # the same host session, seen from another worker
    assert call(other, "increment_counter", by=2)["value"] == 3
    assert call(ctx, "get_counter")["value"] == 3
    assert ctx.state["command_count"] == 2


def test_a_registered_model_predicts_from_the_session():
    ctx = FakeSession()
    call(ctx, "register_model", name="m", weights=[2, 0.5], bias=1)
    assert call(ctx, "predict", name="m", x=[3, 4])["y"] == 9.0
    with pytest.raises(KeyError):
        call(ctx, "predict", name="missing", x=[1])


def test_compute_and_its_errors():
    ctx = FakeSession()
    assert call(ctx, "compute", op="pow", a=2, b=10) == 1024
    with pytest.raises(ZeroDivisionError):
        call(ctx, "compute", op="div", a=1, b=0)
    with pytest.raises(ShowcaseError):
        call(ctx, "compute", op="mod", a=1, b=2)


def test_array_stats_reads_bytes_and_lists_alike():
    arr = np.arange(12, dtype=np.float64)
    from_bytes = call(FakeSession(), "array_stats", data=arr.tobytes(), shape=[3, 4])
    from_list = call(FakeSession(), "array_stats", data=arr.tolist(), shape=[3, 4])
    assert from_bytes["sum"] == from_list["sum"] == 66.0
    assert from_bytes["shape"] == [3, 4] and from_bytes["bytes"] == 96
    doubled = np.frombuffer(call(FakeSession(), "scale_array", data=arr.tobytes()))
    assert doubled.tolist() == (arr * 2).tolist()


def test_streams_end_with_a_final_chunk_or_an_error_and_close_into_the_session():
    chunks = stream(FakeSession(), "stream_squares", count=3)
    assert chunks[-1] == {"done": True, "sum": 14}
    gen = call(FakeSession(), "stream_then_fail", after=2)
    assert [next(gen), next(gen)] == [{"index": 1}, {"index": 2}]
    with pytest.raises(RuntimeError):
        next(gen)
    ctx = FakeSession()
    gen = call(ctx, "stream_readings", delay_ms=0)
    assert [next(gen)["index"] for _ in range(4)] == [1, 2, 3, 4]
    gen.close()  # what the worker does when the host halts the stream
    assert ctx.state["stream_closed_at"] == 4


def test_the_ml_workflow_keeps_data_and_model_in_the_session():
    ctx = FakeSession()
    with pytest.raises(DataNotFoundError):
        call(ctx, "load_sample_data", dataset="iris")
    loaded = call(ctx, "load_sample_data", dataset="blobs", samples=300, split=0.8)
    assert (loaded["train_samples"], loaded["test_samples"]) == (240, 60)
    progress = stream(ctx, "train_model", epochs=40, report_every=5)
    assert len(progress) == 9 and progress[-1]["type"] == "completed"
    assert progress[-2]["loss"] < progress[0]["loss"]
    assert np.array(ctx.state["ml:model"]["W"]).shape == (4, 3)
    # A new instance (another request, perhaps another worker) evaluates it.
    result = call(ctx, "evaluate_model")
    assert result["accuracy"] >= 0.85 and result["labels"][0] == "setosa"
    assert sum(map(sum, result["confusion"])) == 60
    assert ctx.host_calls == [("label_names", {})]


def test_steps_out_of_order_say_which_step_is_missing():
    with pytest.raises(KeyError, match="ml:model"):
        call(FakeSession(), "evaluate_model")
