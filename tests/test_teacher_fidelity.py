"""Export's ``teacher_fidelity`` stage: a distilled student's shipped files judged against its original teacher.

A tiny 2-layer teacher (conftest.py) is distilled into a 1-layer student (``smoke`` preset); exporting the
student then records, per language, the bundle's files against the teacher. The reference for the recorded
cosines is computed here independently: the teacher through transformers' own tokenizer and model, the bundle's
file through ``tokenizers`` and an ONNX Runtime session, mean-pooled and compared by hand.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mbert_edge.cli import main  # noqa: E402
from mbert_edge_export import export_bundle  # noqa: E402
from mbert_edge_export.distill import distill  # noqa: E402
from mbert_edge_export.distill.data import held_out_texts  # noqa: E402
from mbert_edge_export.quantize.gate import Thresholds  # noqa: E402
from mbert_edge_export.quantize.gated import QuantizeSettings  # noqa: E402


@pytest.fixture(scope="module")
def student(checkpoints, tmp_path_factory) -> tuple[Path, Path, dict]:
    """(teacher copy, student, distill report): the teacher is a private copy, so tests can move or change it."""
    root = tmp_path_factory.mktemp("fidelity")
    teacher = root / "teacher"
    shutil.copytree(checkpoints["feature-extraction"], teacher)
    out = root / "student"
    report = distill(str(teacher), out, 1, preset="smoke", threads=1)
    return teacher, out, report


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


def _teacher_embeddings(teacher: Path, texts: list[str], max_length: int) -> np.ndarray:
    tok = transformers.AutoTokenizer.from_pretrained(teacher)
    model = transformers.AutoModel.from_pretrained(teacher).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    emb = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _onnx_outputs(bundle: Path, model_file: str, texts: list[str], max_length: int) -> list[np.ndarray]:
    """The file's first output per text, one text per run (no padding to account for), read with ``tokenizers``
    from the bundle's tokenizer.json and an ONNX Runtime session."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length)
    session = ort.InferenceSession(str(bundle / model_file), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    out = []
    for text in texts:
        ids = np.array([tok.encode(text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        out.append(session.run(None, {n: feeds[n] for n in names})[0][0])
    return out


def _bundle_embeddings(bundle: Path, model_file: str, texts: list[str], max_length: int) -> np.ndarray:
    emb = np.stack([hidden.mean(0) for hidden in _onnx_outputs(bundle, model_file, texts, max_length)])
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_bundle_files_judged_against_the_original_teacher(student, tmp_path, capsys, caplog):
    """The section holds each shipped file's per-language cosine to the teacher, equal to an independent one."""
    import re

    teacher, out, report = student
    caplog.set_level("INFO", logger="mbert_edge_export.pipeline")
    bundle = export_bundle(
        str(out),
        tmp_path / "b",
        quantize=QuantizeSettings(mode="dynamic", thresholds=Thresholds(min_agreement=0.0, min_cosine=0.0)),
        keep_fp32=True,
    )
    steps = [tuple(map(int, m.groups())) for m in re.finditer(r"\[(\d+)/(\d+)\]", caplog.text)]
    assert steps and steps[-1][0] == steps[-1][1] and all(n <= total for n, total in steps)  # counted once loaded
    section = _manifest(bundle)["fidelity"]["teacher"]
    assert section["measured"] is True and section["teacher"] == str(teacher)
    assert section["teacher_weights_sha256"] == report["teacher"]["weights_sha256"]
    assert section["candidates"] == ["model.onnx", "model.int8.onnx"]
    recipe = report["recipe"]
    assert sorted(section["languages"]) == sorted(report["evaluation"]["languages"])  # the distill report's set
    lang = "de"
    texts = held_out_texts([lang], recipe["eval_texts"])[lang]
    ref = _teacher_embeddings(teacher, texts, recipe["max_length"])
    for name in ("model.onnx", "model.int8.onnx"):
        emb = _bundle_embeddings(bundle, name, texts, recipe["max_length"])
        expected = float((emb * ref).sum(1).mean())
        assert section["languages"][lang][name]["cosine_mean"] == pytest.approx(expected, abs=2e-4), name
        gate = section["gates"][name]
        assert gate["worst_language"] in section["kept_languages"]
    # the fp32 file is the PyTorch student exported (parity 1e-4): its figures are the distill report's
    for lang, row in section["languages"].items():
        if "cosine_mean" in row["model.onnx"]:
            assert row["model.onnx"]["cosine_mean"] == pytest.approx(
                report["evaluation"]["languages"][lang]["student"]["cosine_mean"], abs=1e-3
            ), lang
    assert main(["info", str(bundle)]) == 0
    shown = capsys.readouterr().out
    assert "fidelity    distill, the student in PyTorch" in shown
    assert "fidelity    end to end, model.int8.onnx (ONNX Runtime, this bundle)" in shown
    assert f"worst kept language {section['gates']['model.int8.onnx']['worst_language']}" in shown


def test_a_teacher_that_is_gone_is_recorded_not_fatal(student, tmp_path, capsys):
    """Exporting where the teacher cannot be loaded writes the bundle and says why nothing was measured."""
    teacher, out, _ = student
    moved = teacher.with_name("teacher-moved")
    teacher.rename(moved)
    try:
        bundle = export_bundle(str(out), tmp_path / "b")
    finally:
        moved.rename(teacher)
    section = _manifest(bundle)["fidelity"]["teacher"]
    assert section["measured"] is False and "could not be loaded" in section["reason"]
    assert main(["info", str(bundle)]) == 0
    assert "end to end against the teacher: not measured" in capsys.readouterr().out


def test_a_different_teacher_at_the_same_path_is_not_used(student, tmp_path):
    """Weights at the lineage's path that are not the ones distilled from are refused by checksum."""
    teacher, out, _ = student
    weights = teacher / "model.safetensors"
    saved = weights.read_bytes()
    other = transformers.AutoModel.from_pretrained(teacher)
    with torch.no_grad():
        other.encoder.layer[0].output.dense.weight.mul_(1.5)
    try:
        other.save_pretrained(teacher, safe_serialization=True)
        bundle = export_bundle(str(out), tmp_path / "b")
    finally:
        weights.write_bytes(saved)
    section = _manifest(bundle)["fidelity"]["teacher"]
    assert section["measured"] is False and "not the" in section["reason"] and "distilled from" in section["reason"]


def test_switched_off_and_not_for_ordinary_sources(student, checkpoints, tmp_path):
    """``teacher_fidelity=False`` (``--skip-teacher-fidelity``) leaves the section out; a plain checkpoint has none."""
    _, out, _ = student
    assert "teacher" not in _manifest(export_bundle(str(out), tmp_path / "off", teacher_fidelity=False))["fidelity"]
    assert (
        "teacher"
        not in _manifest(export_bundle(str(checkpoints["feature-extraction"]), tmp_path / "plain"))["fidelity"]
    )


def test_a_classifier_student_is_judged_by_agreement_per_language(checkpoints, tmp_path):
    """For a head, the section's agreement per language is the share of held-out paragraphs on which the bundle's
    file picks the teacher's label, counted here from transformers' and ONNX Runtime's argmaxes."""
    teacher = checkpoints["text-classification"]
    out = tmp_path / "student"
    report = distill(str(teacher), out, 1, preset="smoke", threads=1)
    bundle = export_bundle(str(out), tmp_path / "b")
    section = _manifest(bundle)["fidelity"]["teacher"]
    assert section["measured"] is True and section["candidates"] == ["model.onnx"]
    assert section["gates"]["model.onnx"]["metric"] == "agreement"
    max_length = report["recipe"]["max_length"]
    tok = transformers.AutoTokenizer.from_pretrained(teacher)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(teacher).eval()
    for lang in ("en", "ru"):
        texts = held_out_texts([lang], report["recipe"]["eval_texts"])[lang]
        with torch.no_grad():
            enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            theirs = model(**enc).logits.argmax(-1).tolist()
        mine = [int(logits.argmax()) for logits in _onnx_outputs(bundle, "model.onnx", texts, max_length)]
        same = sum(a == b for a, b in zip(theirs, mine, strict=True))
        row = section["languages"][lang]["model.onnx"]
        assert row["agreement_counts"] == [same, len(texts)], lang
