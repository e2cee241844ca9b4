"""Shared by the INT8 graph tests on conftest's tiny models (test_outlier_channels.py, test_smoothing.py):
padded feeds, running a graph up to any of its tensors, quantizing the tiny feature extractor with the gate on
fixed calibration and held-out feeds, and the batch-invariance check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from mbert_edge.manifest import EmbeddingSpec
from mbert_edge_export.quantize.gated import QuantizeSettings, quantize_with_gate

LAYERS = 2  # the tiny models of conftest


def feeds(seed: int, batch: int = 4, length: int = 12) -> dict[str, np.ndarray]:
    """A batch of random token ids, the rows after the first padded by 2, 4, ... positions."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 60, size=(batch, length))
    ids[:, 0] = 2
    mask = np.ones_like(ids)
    for i in range(1, batch):
        mask[i, length - 2 * i :] = 0
        ids[i, length - 2 * i :] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


CALIBRATION = [feeds(seed) for seed in range(4)]
HELD_OUT = [feeds(seed) for seed in (20, 21)]


def run(path: Path, batch: dict[str, np.ndarray], tensors: list[str] | None = None) -> Any:
    """The model's first output on ``batch``, or the list of its intermediate ``tensors``."""
    model = onnx.load(str(path))
    if tensors is not None:
        del model.graph.output[:]
        for t in tensors:
            model.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    out = session.run(None, {k: batch[k] for k in names})
    return out if tensors is not None else out[0]


def quantize(src: Path, dst: Path, settings: QuantizeSettings, spec: EmbeddingSpec | None) -> dict[str, Any]:
    """``quantize_with_gate`` on the tiny feature extractor's graph ``src``, with CALIBRATION and HELD_OUT."""
    return quantize_with_gate(
        src, dst, settings, "feature-extraction", LAYERS, CALIBRATION, HELD_OUT, embedding_spec=spec
    )


def assert_batch_invariant(path: Path, batch: dict[str, np.ndarray]) -> None:
    """The second text of ``batch`` alone, unpadded, gives exactly what it gives inside the batch."""
    alone = {k: v[1:2, : int(batch["attention_mask"][1].sum())] for k, v in batch.items()}
    np.testing.assert_array_equal(run(path, alone)[0], run(path, batch)[1, : alone["input_ids"].shape[1]])
