"""The optional OpenVINO backend runs static-INT8 (QDQ) and fp32 bundles; never chosen by "auto"."""

from __future__ import annotations

import numpy as np
import pytest

import mbert_edge
from mbert_edge.errors import BackendUnavailableError
from mbert_edge_export import export_bundle
from mbert_edge_export.quantize.gated import QuantizeSettings

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def static_bundle(tmp_path_factory, checkpoints):
    return export_bundle(
        str(checkpoints["text-classification"]),
        tmp_path_factory.mktemp("ov") / "static",
        quantize=QuantizeSettings(mode="static", thresholds=_lenient()),
        keep_fp32=True,
    )


def _lenient():
    from mbert_edge_export.quantize.gate import Thresholds

    return Thresholds(min_agreement=0.0)


def test_openvino_matches_onnxruntime(static_bundle):
    from tests.conftest import corpus_lines

    texts = [line[:200] for _, line in corpus_lines(per_lang=3)]
    ov_fp32 = mbert_edge.load(static_bundle, backend="openvino", precision="fp32", threads=1)
    ort_fp32 = mbert_edge.load(static_bundle, precision="fp32")
    a, b = ov_fp32.predict(texts, top_k=None), ort_fp32.predict(texts, top_k=None)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose([r["score"] for r in x], [r["score"] for r in y], atol=1e-4)

    ov_int8 = mbert_edge.load(static_bundle, backend="openvino")
    assert ov_int8.model_file.precision == "int8" and ov_int8.backend.name == "openvino"
    ort_int8 = mbert_edge.load(static_bundle)

    def scores(model):  # (texts, labels) probabilities, labels in a fixed order
        return np.array(
            [[r["score"] for r in sorted(x, key=lambda r: r["label"])] for x in model.predict(texts, top_k=None)]
        )

    ov, ort, fp32 = scores(ov_int8), scores(ort_int8), scores(ort_fp32)
    # Both run the same QDQ graph with their own integer kernels: close to each other (measured: mean 0.009,
    # max 0.04 on this random tiny model, whose class margins are small), and OpenVINO no further from fp32
    # than ONNX Runtime is (measured: both ~0.008 mean).
    assert np.abs(ov - ort).mean() <= 0.03 and np.abs(ov - ort).max() <= 0.15
    assert np.abs(ov - fp32).mean() <= 1.5 * np.abs(ort - fp32).mean() + 0.005


def test_auto_never_picks_openvino(static_bundle):
    assert mbert_edge.load(static_bundle).backend.name == "onnxruntime"


def test_dynamic_int8_is_not_for_openvino(tmp_path, checkpoints):
    out = export_bundle(str(checkpoints["feature-extraction"]), tmp_path / "dyn", quantize=QuantizeSettings())
    with pytest.raises(BackendUnavailableError, match="no model file"):
        mbert_edge.load(out, backend="openvino")
