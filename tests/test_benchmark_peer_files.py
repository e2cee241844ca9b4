"""``benchmarks/peer_files.py``: the peers' INT8 files, on a tiny bundle (no timings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .conftest import load_script

P = load_script(Path(__file__).parents[1] / "benchmarks" / "peer_files.py", "peer_files")


def test_openvino_int8_of_a_bundle_runs_close_to_its_fp32(bundles, tmp_path, monkeypatch):
    ov = pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from mbert_edge_export.quantize import calibration

    asked: list[dict] = []
    real = calibration.corpus_sample

    def spy(n, **kw):
        asked.append(kw)
        return real(n, **kw)

    monkeypatch.setattr(calibration, "corpus_sample", spy)
    bundle = bundles["feature-extraction"]
    path = P.openvino_int8(bundle, tmp_path / "ov", n=16)
    assert asked == [{"seed": P.CALIBRATION_SEED, "held_out": False}]  # never the held-out paragraphs
    assert path == tmp_path / "ov" / "model.xml" and path.with_suffix(".bin").exists()
    assert path.read_text(encoding="utf-8").count('type="FakeQuantize"') > 0  # NNCF quantized it
    import mbert_edge

    feeds = P.calibration_feeds(bundle, 16)[0]
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = [i.get_any_name() for i in compiled.inputs]
    got = np.asarray(compiled.create_infer_request().infer({k: feeds[k] for k in names})[compiled.outputs[0]])
    backend = mbert_edge.load(bundle).backend
    want = next(iter(backend.run({k: feeds[k] for k in backend.input_names}).values()))
    assert got.shape == want.shape
    mask = feeds["attention_mask"].astype(bool)
    a, b = got[mask], want[mask]
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.mean() > 0.9, cos.mean()  # INT8 of the same model, not another one


def test_openvino_needs_an_fp32_bundle(bundles, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(bundles["feature-extraction"], bundle)
    (bundle / "model.onnx").unlink()
    with pytest.raises(SystemExit, match=r"no fp32 model\.onnx"):
        P.openvino_int8(bundle, tmp_path / "ov")


def test_refuses_a_non_empty_output(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep me")
    with pytest.raises(SystemExit, match="not empty"):
        P.main(["openvino", str(tmp_path / "bundle"), str(tmp_path / "out")])
    assert (tmp_path / "out" / "x").read_text() == "keep me"


def test_openvino_refuses_a_trimmed_bundle(bundles, tmp_path):
    """A peer runs with the teacher checkpoint's token ids, so its file must come from the untrimmed bundle."""
    import json
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(bundles["feature-extraction"], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["export"]["trim"] = {"languages": ["en"]}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="is trimmed"):
        P.openvino_int8(bundle, tmp_path / "ov")
    assert not (tmp_path / "ov").exists()


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("feature-extraction", "ORTModelForFeatureExtraction"),
        ("text-classification", "ORTModelForSequenceClassification"),
        ("token-classification", "ORTModelForTokenClassification"),
    ],
)
def test_optimum_recipe_per_task(checkpoints, tmp_path, monkeypatch, task, expected):
    """Optimum's recipe, checked with stand-ins for its classes (optimum lives in the benchmark venv): the
    checkpoint's task picks the ORTModel class, exported with export=True, then dynamic per-channel INT8 for
    AVX-512 VNNI."""
    import sys
    import types

    calls: list[tuple] = []

    def model_class(name):
        class Model:
            @classmethod
            def from_pretrained(cls, path, export=False):
                calls.append((name, path, export))
                return cls()

            def save_pretrained(self, path):
                calls.append(("save", path))

        return Model

    class Quantizer:
        @classmethod
        def from_pretrained(cls, path):
            return cls()

        def quantize(self, save_dir, quantization_config):
            calls.append(("quantize", save_dir, quantization_config))

    class AutoQuantizationConfig:
        @staticmethod
        def avx512_vnni(is_static, per_channel):
            return {"avx512_vnni": True, "is_static": is_static, "per_channel": per_channel}

    ort_module = types.ModuleType("optimum.onnxruntime")
    for name in ("ORTModelForFeatureExtraction", "ORTModelForSequenceClassification", "ORTModelForTokenClassification"):
        setattr(ort_module, name, model_class(name))
    ort_module.ORTQuantizer = Quantizer
    config_module = types.ModuleType("optimum.onnxruntime.configuration")
    config_module.AutoQuantizationConfig = AutoQuantizationConfig
    monkeypatch.setitem(sys.modules, "optimum", types.ModuleType("optimum"))
    monkeypatch.setitem(sys.modules, "optimum.onnxruntime", ort_module)
    monkeypatch.setitem(sys.modules, "optimum.onnxruntime.configuration", config_module)

    path = P.optimum_int8(checkpoints[task], tmp_path / "out")
    assert path == tmp_path / "out" / "model_quantized.onnx"
    assert calls[0] == (expected, str(checkpoints[task]), True)
    assert calls[-1] == (
        "quantize",
        str(tmp_path / "out"),
        {"avx512_vnni": True, "is_static": False, "per_channel": True},
    )
