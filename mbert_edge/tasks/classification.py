"""Text classification: logits to scores, and scores to ``{"label", "score"}`` results like transformers'."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def scores_from_logits(logits: np.ndarray, score_function: str | None) -> np.ndarray:
    """Apply the manifest's score function (softmax by default, sigmoid for multi-label or one label)."""
    logits = logits.astype(np.float32, copy=False)
    if score_function == "sigmoid":
        return sigmoid(logits)
    return softmax(logits)


def format_scores(scores: np.ndarray, labels: Mapping[int, str], top_k: int | None) -> Any:
    """One text's result: ``top_k=1`` a dict, ``top_k=k`` a list of the k best, ``None`` every label."""
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    results = [{"label": labels[int(i)], "score": float(scores[i])} for i in order]
    return results[0] if top_k == 1 else results
