"""The optional OpenVINO backend runs INT8 files made for it (NNCF) and fp32 files; never chosen by "auto"."""

from __future__ import annotations

import numpy as np
import pytest

import mbert_edge
from mbert_edge.errors import BackendUnavailableError
from mbert_edge_export import export_bundle
from mbert_edge_export.quantize.gated import QuantizeSettings
from tests.cpu_features import has_vnni

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def static_bundle(tmp_path_factory, checkpoints):
    return export_bundle(
        str(checkpoints["text-classification"]),
        tmp_path_factory.mktemp("ov") / "static",
        quantize=QuantizeSettings(mode="static", target="openvino", thresholds=_lenient()),
        keep_fp32=True,
        calibration_size=32,
        eval_size=32,
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
    assert ov_int8.model_file.backend == "openvino"

    def scores(model):  # (texts, labels) probabilities, labels in a fixed order
        return np.array(
            [[r["score"] for r in sorted(x, key=lambda r: r["label"])] for x in model.predict(texts, top_k=None)]
        )

    # the same QDQ file run by ONNX Runtime (standard ops only): an independent run of the same graph
    ort_int8 = mbert_edge.load(static_bundle, precision="fp32")
    from mbert_edge.backends.onnxruntime import OnnxRuntimeCPUBackend

    ort_int8.backend = OnnxRuntimeCPUBackend(static_bundle / ov_int8.model_file.path)
    ov, ort, fp32 = scores(ov_int8), scores(ort_int8), scores(ort_fp32)
    # both run the same QDQ graph with their own integer kernels: close to each other, and both close to fp32.
    # Without int8 dot-product instructions (AVX2 only) the u8s8 kernels can saturate (ONNX Runtime documents it;
    # OpenVINO's AVX2 path measured 0.086 from fp32 on this tiny random model, ONNX Runtime's 0.021): there both
    # are held only to a bound that a wrong graph (outputs unrelated to fp32's) would still break
    if has_vnni():
        assert np.abs(ov - ort).mean() <= 0.03 and np.abs(ov - ort).max() <= 0.15
        assert np.abs(ov - fp32).mean() <= 1.5 * np.abs(ort - fp32).mean() + 0.005
    else:
        assert np.abs(ov - fp32).mean() <= 0.15 and np.abs(ort - fp32).mean() <= 0.15


def test_the_gate_records_openvinos_integer_kernels(static_bundle, capsys):
    from mbert_edge.backends import int8_kernels
    from mbert_edge.cli import main
    from mbert_edge.manifest import Manifest

    report = Manifest.read(static_bundle / "manifest.json").fidelity["int8"]
    # the gate ran the file in OpenVINO, so the record is OpenVINO's probe, not ONNX Runtime's
    assert report["gate_cpu"] == {"runtime": "openvino", "u8s8_saturates": int8_kernels.openvino_u8s8_saturates()}
    assert main(["info", str(static_bundle)]) == 0
    out = capsys.readouterr().out
    here = int8_kernels.describe(int8_kernels.openvino_u8s8_saturates())
    assert f"OpenVINO's integer kernels: {here}" in out


def test_auto_never_picks_openvino(static_bundle):
    p = mbert_edge.load(static_bundle)
    assert p.backend.name == "onnxruntime" and p.model_file.precision == "fp32"


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_onnxruntime_int8_is_not_for_openvino(tmp_path, checkpoints, mode):
    """INT8 files made for ONNX Runtime use its contrib ops (QAttention, MatMulIntegerToFloat, ...)."""
    out = export_bundle(
        str(checkpoints["feature-extraction"]),
        tmp_path / mode,
        quantize=QuantizeSettings(mode=mode),
        calibration_size=16,
        eval_size=16,
    )
    with pytest.raises(BackendUnavailableError, match="no model file"):
        mbert_edge.load(out, backend="openvino")


def test_compile_cache_is_used_and_keyed_by_file(tmp_path, monkeypatch, copy_bundle):
    """Compiled blobs go to a per-file subdirectory; a second load reuses them; a changed file gets a new one."""
    import os

    from mbert_edge.backends import openvino as ov_backend

    monkeypatch.setenv(ov_backend.CACHE_ENV, str(tmp_path / "cache"))
    bundle = copy_bundle("text-classification")
    model = bundle / "model.onnx"
    first = mbert_edge.load(bundle, backend="openvino", threads=1)
    (blob_dir,) = (tmp_path / "cache").iterdir()
    assert blob_dir == ov_backend.cache_dir_for(model, tmp_path / "cache")
    blobs = sorted(p.name for p in blob_dir.iterdir())
    assert blobs  # OpenVINO wrote its compiled model
    again = mbert_edge.load(bundle, backend="openvino", threads=1)
    assert sorted(p.name for p in blob_dir.iterdir()) == blobs  # imported, not compiled anew
    texts = ["Das Wetter ist schön.", "Le chat dort."]
    assert first.predict(texts, top_k=None) == again.predict(texts, top_k=None)

    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a re-exported file: new key
    assert ov_backend.cache_dir_for(model, tmp_path / "cache") != blob_dir


def test_compile_cache_off_or_unwritable(tmp_path, monkeypatch, bundles, caplog):
    from mbert_edge.backends import openvino as ov_backend

    monkeypatch.setenv(ov_backend.CACHE_ENV, "off")
    assert ov_backend.cache_root() is None
    mbert_edge.load(bundles["text-classification"], backend="openvino", threads=1)

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv(ov_backend.CACHE_ENV, str(blocker))
    with caplog.at_level("WARNING", logger="mbert_edge.backends.openvino"):
        p = mbert_edge.load(bundles["text-classification"], backend="openvino", threads=1)
    assert "compile cache disabled" in caplog.text
    assert p.predict(["Hola"])  # still runs, only without the speed-up


def test_openvino_pads_lengths_to_multiples_of_16_and_tags_the_same(bundles, monkeypatch):
    """Fewer input shapes for OpenVINO; the extra padding changes no token's tag (ONNX Runtime as reference)
    and counts against the padded-token cap of a model call."""
    from mbert_edge import predictor
    from tests.conftest import corpus_lines

    monkeypatch.setattr(predictor, "DEFAULT_MAX_TOKENS", 1)  # cap = max_length (128) padded tokens per call
    texts = [line[: 20 + 7 * i] for i, (_, line) in enumerate(corpus_lines(per_lang=1))]
    ov = mbert_edge.load(bundles["token-classification"], backend="openvino", threads=1)
    shapes = []
    run = ov.backend.run
    ov.backend.run = lambda feeds: shapes.append(feeds["input_ids"].shape) or run(feeds)
    got = ov.predict(texts, batch_size=8)
    ref = mbert_edge.load(bundles["token-classification"]).predict(texts, batch_size=8)
    assert shapes and all(w % 16 == 0 or w == ov.tokenizer.max_length for _, w in shapes)
    assert all(rows * w <= ov.tokenizer.max_length for rows, w in shapes)
    assert any(rows > 1 for rows, _ in shapes)
    assert sum(map(len, ref)) >= len(texts)  # entities to compare
    assert [[(e["entity_group"], e["start"], e["end"]) for e in x] for x in got] == [
        [(e["entity_group"], e["start"], e["end"]) for e in x] for x in ref
    ]
    for x, y in zip(got, ref, strict=True):
        np.testing.assert_allclose([e["score"] for e in x], [e["score"] for e in y], atol=1e-4)
