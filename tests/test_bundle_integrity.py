"""Loading rejects missing, tampered, truncated, incomplete and newer-format bundles with typed errors."""

from __future__ import annotations

import itertools
import json

import pytest

import mbert_edge
from mbert_edge.bundle import Bundle
from mbert_edge.errors import (
    BundleFormatError,
    BundleIntegrityError,
    BundleNotFoundError,
    UnsupportedFormatVersionError,
)
from mbert_edge.manifest import FORMAT_VERSION, Manifest


def _edit_manifest(bundle, change):
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_manifest_round_trip(bundles):
    for path in bundles.values():
        m = Manifest.read(path / "manifest.json")
        assert Manifest.from_dict(json.loads(m.to_json())) == m
        assert m.format_version == FORMAT_VERSION
        assert {f.role for f in m.files} == {"model", "weights", "tokenizer"}
        model = m.model_files()[0]
        assert (model.backend, model.format, model.precision) == ("onnxruntime", "onnx", "fp32")
        assert [f.path for f in m.files_of(model)] == ["model.onnx", "model.onnx.data"]
        assert len(m.source["weights_sha256"]) == 64
        assert m.fidelity["onnx_fp32"]["passed"] and m.fidelity["onnx_fp32"]["max_abs_diff"] <= 1e-4
        assert m.fidelity["tokenizer"]["identical"]  # converted from vocab.txt and checked


def test_manifest_contents_per_task(bundles):
    cls = Manifest.read(bundles["text-classification"] / "manifest.json")
    assert cls.labels == {0: "negative", 1: "neutral", 2: "positive"} and cls.score_function == "softmax"
    assert cls.inputs == ["input_ids", "attention_mask", "token_type_ids"] and cls.outputs == ["logits"]
    assert cls.max_length == 128
    emb = Manifest.read(bundles["feature-extraction"] / "manifest.json")
    assert emb.embedding is not None and emb.embedding.pooling == "mean" and emb.embedding.dim == 32
    assert emb.outputs == ["last_hidden_state"] and emb.labels is None


def test_missing_directory_and_manifest(tmp_path):
    with pytest.raises(BundleNotFoundError, match="mbert-edge export"):
        mbert_edge.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleNotFoundError, match=r"manifest\.json"):
        mbert_edge.load(tmp_path / "empty")


def test_tampered_model_file(copy_bundle):
    b = copy_bundle("text-classification")
    model = b / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="checksum"):
        mbert_edge.load(b)
    Bundle.open(b, verify=False)  # sizes still match: only hashing catches it


def test_weights_are_page_aligned_external_data(bundles):
    import onnx

    path = bundles["feature-extraction"] / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    places = [{e.key: e.value for e in t.external_data} for t in model.graph.initializer if t.external_data]
    assert len(places) >= 4  # embeddings and every weight matrix
    assert {p["location"] for p in places} == {"model.onnx.data"}
    assert all(int(p.get("offset", 0)) % 4096 == 0 for p in places)
    ends = sorted((int(p.get("offset", 0)), int(p["length"])) for p in places)
    assert all(a + n <= b for (a, n), (b, _) in itertools.pairwise(ends))  # no overlaps
    data = path.parent / "model.onnx.data"
    assert ends[-1][0] + ends[-1][1] == data.stat().st_size
    assert data.stat().st_mode & 0o777 == path.stat().st_mode & 0o777  # as readable as the graph file
    assert path.parent.stat().st_mode & 0o777 == path.stat().st_mode & 0o777 | 0o111  # not mkdtemp's 0700


def test_single_file_model_of_earlier_bundles_still_loads(copy_bundle, bundles):
    """Bundles written before the weights file existed (one self-contained .onnx) load and predict the same."""
    import onnx

    from mbert_edge.bundle import sha256_file

    b = copy_bundle("text-classification")
    model = onnx.load(str(b / "model.onnx"))  # pulls the weights in
    (b / "model.onnx.data").unlink()
    onnx.save_model(model, str(b / "model.onnx"))

    def single_file(d):
        d["files"] = [f for f in d["files"] if f["role"] != "weights"]
        for f in d["files"]:
            if f["path"] == "model.onnx":
                del f["external_data"]
                f.update(size=(b / "model.onnx").stat().st_size, sha256=sha256_file(b / "model.onnx"))

    _edit_manifest(b, single_file)
    texts = ["Das Essen war großartig!", "The food was awful."]
    old, new = mbert_edge.load(b), mbert_edge.load(bundles["text-classification"])
    assert old.manifest.files_of(old.model_file) == [old.model_file]
    for x, y in zip(old.predict(texts, top_k=None), new.predict(texts, top_k=None), strict=True):
        assert [r["label"] for r in x] == [r["label"] for r in y]
        assert [r["score"] for r in x] == pytest.approx([r["score"] for r in y], abs=1e-6)


def test_tampered_weights_file(copy_bundle):
    b = copy_bundle("feature-extraction")
    weights = b / "model.onnx.data"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"model\.onnx\.data fails its checksum"):
        mbert_edge.load(b)


def test_model_naming_unlisted_weights(copy_bundle):
    b = copy_bundle("feature-extraction")
    _edit_manifest(b, lambda d: d.update(files=[f for f in d["files"] if f["role"] != "weights"]))
    with pytest.raises(BundleFormatError, match="does not list"):
        mbert_edge.load(b)


def test_truncated_file(copy_bundle):
    b = copy_bundle("text-classification")
    tok = b / "tokenizer.json"
    tok.write_bytes(tok.read_bytes()[:-100])
    with pytest.raises(BundleIntegrityError, match="truncated"):
        mbert_edge.load(b, verify=False)


def test_missing_file(copy_bundle):
    b = copy_bundle("feature-extraction")
    (b / "model.onnx").unlink()
    with pytest.raises(BundleIntegrityError, match="missing"):
        mbert_edge.load(b)


def test_truncated_or_invalid_manifest(copy_bundle):
    b = copy_bundle("feature-extraction")
    text = (b / "manifest.json").read_text()
    (b / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(BundleFormatError, match="not valid JSON"):
        mbert_edge.load(b)
    (b / "manifest.json").write_text("[1, 2]")
    with pytest.raises(BundleFormatError, match="JSON object"):
        mbert_edge.load(b)


def test_newer_format_version(copy_bundle):
    b = copy_bundle("text-classification")
    _edit_manifest(b, lambda d: d.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(UnsupportedFormatVersionError, match="upgrade"):
        mbert_edge.load(b)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("task"), "task"),
        (lambda d: d.update(task="translation"), "unknown task"),
        (lambda d: d.update(labels=None), "needs 'labels'"),
        (lambda d: d.update(max_length="512"), "max_length"),
        (lambda d: d["files"][0].update(path="../../etc/passwd"), "escapes"),
        (lambda d: d.update(files=[f for f in d["files"] if f["role"] != "model"]), "no model file"),
        (lambda d: d.update(files=[f for f in d["files"] if f["role"] != "tokenizer"]), "no tokenizer"),
    ],
)
def test_schema_violations(copy_bundle, change, message):
    b = copy_bundle("text-classification")
    _edit_manifest(b, change)
    with pytest.raises(BundleFormatError, match=message):
        mbert_edge.load(b)


def test_checksum_edit_in_manifest_is_caught(copy_bundle):
    b = copy_bundle("text-classification")
    _edit_manifest(b, lambda d: d["files"][0].update(sha256="0" * 64))
    with pytest.raises(BundleIntegrityError):
        mbert_edge.load(b)
