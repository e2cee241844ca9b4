"""Parity: the exported ONNX model, run by the runtime's own backend, against the PyTorch model.

Both see the same padded batches of multilingual text; we compare the raw outputs (logits, or token states
at the non-padding positions) and report the largest absolute difference. Export fails above the tolerance.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mbert_edge.backends.onnxruntime import OnnxRuntimeCPUBackend
from mbert_edge.manifest import TEXT_CLASSIFICATION
from mbert_edge.tokenizer import BundleTokenizer
from mbert_edge_export.errors import ParityError

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-4
BATCH = 8


def check_parity(
    model,
    onnx_path: Path,
    tokenizer_path: Path,
    task: str,
    inputs: Sequence[str],
    max_length: int,
    texts: Sequence[tuple[str, str]],
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """Compare PyTorch and ONNX Runtime on ``texts`` ((language, sentence) pairs); raise if too far apart."""
    import torch

    tokenizer = BundleTokenizer(tokenizer_path, max_length)
    backend = OnnxRuntimeCPUBackend(onnx_path)
    sentences = [t for _, t in texts]
    worst = 0.0
    for start in range(0, len(sentences), BATCH):
        feeds = tokenizer.pad(tokenizer.encode(sentences[start : start + BATCH]))
        got = next(iter(backend.run(feeds).values()))
        with torch.no_grad():
            out = model(**{k: torch.from_numpy(feeds[k]) for k in inputs})
        want = (out.logits if hasattr(out, "logits") else out.last_hidden_state).numpy()
        if task == TEXT_CLASSIFICATION:
            diff = np.abs(got - want)
        else:  # per-token outputs: padding positions carry no meaning
            diff = np.abs(got - want)[feeds["attention_mask"].astype(bool)]
        # NaN or inf (in either output) is as wrong as it gets; max() would skip a NaN
        worst = max(worst, float(diff.max())) if np.isfinite(diff).all() else float("inf")
    report = {
        "reference": "pytorch fp32",
        "max_abs_diff": worst,
        "tolerance": tolerance,
        "texts": len(sentences),
        "languages": sorted({lang for lang, _ in texts}),
        "passed": bool(worst <= tolerance),
    }
    log.info("parity: max |onnx - torch| = %.2e over %d texts (tolerance %.0e)", worst, len(sentences), tolerance)
    if not worst <= tolerance:  # a NaN --tolerance fails too
        raise ParityError(
            f"the ONNX model differs from PyTorch by {worst:.3e} (> {tolerance:.0e}) on multilingual text; "
            "the export is wrong for this architecture — please report it with the model's config.json"
        )
    return report
