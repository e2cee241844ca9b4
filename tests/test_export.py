"""Export: task inference, provenance, safety of the output directory, and loud failures."""

from __future__ import annotations

import json

import pytest

from mbert_edge.manifest import Manifest
from mbert_edge_export import ExportError, ParityError, SourceError, export_bundle
from mbert_edge_export.sources import huggingface


def test_task_inferred_from_architecture(checkpoints):
    for task, ckpt in checkpoints.items():
        config = json.loads((ckpt / "config.json").read_text())
        assert huggingface.infer_task(config, ckpt) == task


def test_unknown_architecture_asks_for_task(tmp_path):
    with pytest.raises(SourceError, match="--task"):
        huggingface.infer_task({"architectures": ["BertForQuestionAnswering"]}, tmp_path)


def test_provenance_and_settings(bundles, checkpoints):
    m = Manifest.read(bundles["token-classification"] / "manifest.json")
    assert m.source["name_or_path"] == str(checkpoints["token-classification"])
    assert m.source["weights_sha256"] == huggingface.weights_sha256(checkpoints["token-classification"])
    assert m.source["architecture"] == "BertForTokenClassification"
    assert m.export["opset"] == 17 and "torch" in m.export["versions"]
    assert set(m.fidelity["onnx_fp32"]["languages"]) >= {"ar", "zh", "ru", "hi", "th", "ko"}


def test_existing_output_is_kept(tmp_path, checkpoints):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ExportError, match="--force"):
        export_bundle(str(checkpoints["feature-extraction"]), out)
    assert (out / "precious.txt").read_text() == "keep me"


def test_force_never_replaces_the_source_or_other_files(tmp_path, checkpoints):
    """--force replaces an earlier bundle only: not the checkpoint being read (or a folder holding it), and not
    a directory of other files. Nothing is loaded or written in either case."""
    import shutil

    src = tmp_path / "models" / "ckpt"
    shutil.copytree(checkpoints["feature-extraction"], src)
    before = sorted(p.name for p in src.iterdir())
    for out in (src, src.parent):
        with pytest.raises(ExportError, match="would replace the source"):
            export_bundle(str(src), out, force=True)
    assert sorted(p.name for p in src.iterdir()) == before
    docs = tmp_path / "documents"
    docs.mkdir()
    (docs / "precious.txt").write_text("keep me")
    with pytest.raises(ExportError, match=r"holds no manifest\.json"):
        export_bundle(str(src), docs, force=True)
    assert (docs / "precious.txt").read_text() == "keep me"


def test_failed_parity_leaves_no_bundle(tmp_path, checkpoints):
    out = tmp_path / "bundle"
    with pytest.raises(ParityError, match="differs from PyTorch"):
        export_bundle(str(checkpoints["text-classification"]), out, tolerance=1e-15)
    assert not out.exists()
    assert not list(tmp_path.iterdir())  # no staging leftovers


def test_nan_outputs_fail_the_parity_check(tmp_path, checkpoints, monkeypatch):
    """An ONNX model that gives NaN differs from PyTorch by everything (max() alone would skip the NaN)."""
    import numpy as np

    import mbert_edge_export.parity as parity

    class NaNBackend(parity.OnnxRuntimeCPUBackend):
        def run(self, feeds):
            return {k: np.full_like(v, np.nan) for k, v in super().run(feeds).items()}

    monkeypatch.setattr(parity, "OnnxRuntimeCPUBackend", NaNBackend)
    with pytest.raises(ParityError, match="differs from PyTorch by inf"):
        export_bundle(str(checkpoints["text-classification"]), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_force_replaces_and_max_length(tmp_path, checkpoints):
    out = tmp_path / "bundle"
    export_bundle(str(checkpoints["feature-extraction"]), out)
    export_bundle(str(checkpoints["feature-extraction"]), out, force=True, max_length=64)
    assert Manifest.read(out / "manifest.json").max_length == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    with pytest.raises(ExportError, match="max-length"):
        export_bundle(str(checkpoints["feature-extraction"]), tmp_path / "b2", max_length=4096)


def test_task_override(tmp_path, checkpoints):
    # a classifier checkpoint exported as a sentence encoder: its encoder, mean pooled
    out = export_bundle(str(checkpoints["text-classification"]), tmp_path / "enc", task="feature-extraction")
    assert Manifest.read(out / "manifest.json").task == "feature-extraction"


def test_pickle_checkpoints_load_with_weights_only(tmp_path, checkpoints):
    """A checkpoint with pytorch_model.bin only: loaded through torch.load(weights_only=True)."""
    import shutil

    import torch
    from safetensors.torch import load_file

    src = checkpoints["text-classification"]
    ckpt = tmp_path / "bin-ckpt"
    shutil.copytree(src, ckpt)
    state = load_file(str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").unlink()
    torch.save(state, ckpt / "pytorch_model.bin")
    out = export_bundle(str(ckpt), tmp_path / "from-bin")
    assert Manifest.read(out / "manifest.json").fidelity["onnx_fp32"]["passed"]

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, ckpt / "pytorch_model.bin")
    with pytest.raises(Exception, match=r"(?i)weights_only|unpickl|unsupported"):
        export_bundle(str(ckpt), tmp_path / "evil")
    assert not (tmp_path / "evil").exists()


def test_hub_id_from_local_cache(tmp_path, checkpoints, monkeypatch):
    """A hub id resolves to its snapshot in the local Hugging Face cache, with no network access."""
    import shutil

    repo = tmp_path / "hub" / "models--acme--tiny-bert"
    snapshot = repo / "snapshots" / ("a" * 40)
    shutil.copytree(checkpoints["token-classification"], snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    assert huggingface.resolve("acme/tiny-bert") == snapshot
    out = export_bundle("acme/tiny-bert", tmp_path / "bundle")
    assert Manifest.read(out / "manifest.json").source["name_or_path"] == "acme/tiny-bert"


@pytest.mark.parametrize(
    ("opset", "int8", "trt"), [(9, False, False), (24, False, False), (12, True, False), (16, False, True)]
)
def test_unsupported_opset_refused_before_loading(tmp_path, checkpoints, monkeypatch, opset, int8, trt):
    """An --opset torch cannot export (or the INT8 step cannot use) fails before the checkpoint loads, naming the
    range; 10 to 23 export (13 with --quantize), checked on the tiny checkpoints when the bound was set."""
    from mbert_edge_export.quantize.gated import QuantizeSettings
    from mbert_edge_export.stages import load_source

    def never(ctx):
        raise AssertionError("the checkpoint was loaded")

    monkeypatch.setattr(load_source, "run", never)
    from mbert_edge_export.tensorrt import TensorRTSettings

    quantize = QuantizeSettings(mode="dynamic") if int8 else None
    low = 17 if trt else 13 if int8 else 10
    with pytest.raises(ExportError, match=rf"--opset {opset} is not supported.*use {low} to 23"):
        export_bundle(
            str(checkpoints["feature-extraction"]), tmp_path / "b", opset=opset, quantize=quantize,
            tensorrt=TensorRTSettings() if trt else None,
        )  # fmt: skip
    assert not (tmp_path / "b").exists()
