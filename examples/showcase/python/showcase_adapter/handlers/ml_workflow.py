"""An ML-style workflow: load a data set, train with streamed progress, evaluate.

Everything between the steps (the split data set, the trained model) is stored in the
host's session, as plain JSON lists; any worker can run any step.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator

import numpy as np

from snakepit_bridge.adapter import StreamChunk, tool

from ..utils import ml_helpers as ml


def _load(ctx: Any, key: str) -> Any:
    value = ctx.get(key)
    if value is None:
        raise KeyError(f"session {ctx.session_id} has no {key!r}; run the earlier step first")
    return value


class MLWorkflow:
    """load_sample_data -> train_model (streaming) -> evaluate_model."""

    @tool(description="Generates data set `dataset` (only 'blobs' exists: others raise "
                      "DataNotFoundError), splits it and stores it in the session")
    def load_sample_data(self, dataset: str = "blobs", samples: int = 300,
                         split: float = 0.8, seed: int = 7) -> Dict[str, Any]:
        ctx = self.session_context
        X, y = ml.make_dataset(dataset, int(samples), int(seed))
        parts = ml.split(X, y, float(split), int(seed))
        for key, arr in parts.items():
            ctx.set(f"ml:{key}", arr.tolist())
        ctx.set("ml:feature_names", ml.FEATURES)
        return {"dataset": dataset, "total_samples": int(len(y)),
                "train_samples": int(len(parts["y_train"])),
                "test_samples": int(len(parts["y_test"])), "features": ml.FEATURES,
                "pid": os.getpid()}

    @tool(description="Trains softmax regression on the session's training data, "
                      "streaming {type: progress, epoch, loss, accuracy} every "
                      "`report_every` epochs; stores the model in the session",
          supports_streaming=True)
    def train_model(self, epochs: int = 40, lr: float = 0.5,
                    report_every: int = 5) -> Iterator[Any]:
        ctx = self.session_context
        X = np.array(_load(ctx, "ml:X_train"))
        y = np.array(_load(ctx, "ml:y_train"), dtype=int)
        mean, std = X.mean(axis=0), X.std(axis=0) + 1e-9
        Xs = ml.standardise(X, mean, std)
        W, b = np.zeros((X.shape[1], int(y.max()) + 1)), np.zeros(int(y.max()) + 1)
        loss = accuracy = 0.0
        for epoch in range(1, int(epochs) + 1):
            W, b, loss, accuracy = ml.gradient_step(W, b, Xs, y, float(lr))
            if epoch % int(report_every) == 0 or epoch == int(epochs):
                yield {"type": "progress", "epoch": epoch, "total_epochs": int(epochs),
                       "loss": loss, "accuracy": accuracy}
        ctx.set("ml:model", {"W": W.tolist(), "b": b.tolist(), "mean": mean.tolist(),
                             "std": std.tolist(), "epochs": int(epochs)})
        yield StreamChunk({"type": "completed", "final_loss": loss,
                           "final_accuracy": accuracy, "pid": os.getpid()}, is_final=True)

    @tool(description="Accuracy and confusion matrix of the session's model on the "
                      "session's test data; class names come from the host tool "
                      "`label_names`")
    def evaluate_model(self) -> Dict[str, Any]:
        ctx = self.session_context
        model = _load(ctx, "ml:model")
        X = np.array(_load(ctx, "ml:X_test"))
        y = np.array(_load(ctx, "ml:y_test"), dtype=int)
        pred = ml.predict(model, X)
        labels = ctx.call_host_tool("label_names")
        return {"accuracy": float(np.mean(pred == y)), "test_samples": int(len(y)),
                "confusion": ml.confusion(y, pred, len(model["b"])).tolist(),
                "labels": labels, "pid": os.getpid()}

    @tool(description="Classifies one measurement vector with the session's model")
    def classify(self, features: list) -> Dict[str, Any]:
        ctx = self.session_context
        cls = int(ml.predict(_load(ctx, "ml:model"), np.array([features], dtype=float))[0])
        return {"class": cls, "pid": os.getpid()}
