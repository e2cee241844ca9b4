"""Loading rejects missing, tampered, truncated, incomplete and newer-format bundles with typed errors."""

from __future__ import annotations

import itertools
import json

import numpy as np
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


# ------------------------------------------------------------------ the tampering matrix

FILE_KINDS = ("manifest.json", "model.onnx", "model.onnx.data", "tokenizer.json")


@pytest.fixture
def nothing_loaded(monkeypatch):
    """Records every ONNX Runtime session and tokenizer that load() creates. A refused bundle creates no session;
    it creates no tokenizer either, except from a tokenizer file that passed its checks when what is refused is
    the model (load() hashes and checks the model files on a second thread while it parses the tokenizer)."""
    import mbert_edge.tokenizer as tokenizer_module
    from mbert_edge.backends.onnxruntime import OnnxRuntimeCPUBackend

    created: list[str] = []
    backend_init, tokenizer_cls = OnnxRuntimeCPUBackend.__init__, tokenizer_module.BundleTokenizer

    def backend(self, *args, **kwargs):
        created.append("session")
        backend_init(self, *args, **kwargs)

    def tokenizer(*args, **kwargs):
        created.append("tokenizer")
        return tokenizer_cls(*args, **kwargs)

    monkeypatch.setattr(OnnxRuntimeCPUBackend, "__init__", backend)
    monkeypatch.setattr(tokenizer_module, "BundleTokenizer", tokenizer)
    return created


def _refused(bundle, error, message, created, *, model_refused=False, **kwargs):
    with pytest.raises(error, match=message):
        mbert_edge.load(bundle, **kwargs)
    allowed = ["tokenizer"] if model_refused else []  # parsed beside the model's checks, from a verified file
    assert created in ([], allowed), "a refused bundle must not get as far as a session (or an unchecked tokenizer)"
    created.clear()


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _rehash(bundle, name):
    """Make the manifest agree with a changed file (as whoever can rewrite both could)."""
    from mbert_edge.bundle import sha256_file

    def change(d):
        for f in d["files"]:
            if f["path"] == name:
                f.update(size=(bundle / name).stat().st_size, sha256=sha256_file(bundle / name))

    _edit_manifest(bundle, change)


@pytest.mark.parametrize("kind", FILE_KINDS)
@pytest.mark.parametrize("damage", ["byte flip", "truncation", "deletion"])
def test_every_file_kind_damaged(copy_bundle, nothing_loaded, kind, damage):
    b = copy_bundle("token-classification")
    path = b / kind
    if damage == "byte flip":
        _flip(path)
    elif damage == "truncation":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    if kind == "manifest.json":
        error, message = {
            "byte flip": (BundleFormatError, "not UTF-8|not valid JSON"),
            "truncation": (BundleFormatError, "not valid JSON"),
            "deletion": (BundleNotFoundError, r"has no manifest\.json"),
        }[damage]
    else:
        error, message = (
            BundleIntegrityError,
            {
                "byte flip": f"{kind} fails its checksum",
                "truncation": f"{kind} has .* bytes, the manifest says .*truncated",
                "deletion": f"{kind} is missing",
            }[damage],
        )
    _refused(b, error, message, nothing_loaded, model_refused=damage == "byte flip" and kind.startswith("model"))
    if damage != "byte flip" and kind != "manifest.json":
        _refused(b, error, message, nothing_loaded, verify=False)  # sizes and presence are always checked


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_an_extra_file_of_every_kind_is_ignored(copy_bundle, bundles, kind):
    """Files the manifest does not list are never read (documented): an unlisted graph, weights, tokenizer or
    manifest beside the real ones changes nothing, even garbage. Only listed files can change an answer, and
    those are checked."""
    b = copy_bundle("text-classification")
    stem, _, suffix = kind.partition(".")
    (b / f"{stem}.extra.{suffix}").write_bytes(b"\x00garbage" * 100)
    (b / f"{stem} (copy).{suffix}").write_bytes((b / kind).read_bytes())
    texts = ["Das Essen war großartig!", "東京は大きい"]
    got = mbert_edge.load(b).predict(texts, top_k=None)
    want = mbert_edge.load(bundles["text-classification"]).predict(texts, top_k=None)
    assert got == want


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format_version="1"), "format_version"),
        (lambda d: d.update(format_version=True), "format_version"),
        (lambda d: d.update(format_version=0), "not a valid version"),
        (lambda d: d.update(labels={"0": "O", "1": 5}), "labels"),
        (lambda d: d.update(labels=["O", "B-PER"]), "'labels' must be a dict"),
        (lambda d: d.update(labels={"zero": "O"}), "schema"),
        (lambda d: d["labels"].update({"99": "X"}), r"number the labels 0 to \d+, one per logit column; got ids"),
        (lambda d: d["labels"].pop("0"), r"number the labels 0 to \d+"),
        (lambda d: d["labels"].update({"01": "X"}), "label id '01' is not an integer"),  # would merge with "1"
        (lambda d: d["labels"].update({"1_0": "X"}), "label id '1_0' is not an integer"),
        (lambda d: d.update(score_function=1), "score_function"),
        (lambda d: d.update(source=[1, 2]), "'source' must be a dict"),
        (lambda d: d.update(fidelity="passed"), "'fidelity' must be a dict"),
        (lambda d: d.update(inputs="input_ids"), "'inputs' must be a list"),
        (lambda d: d.update(outputs=[]), "'outputs' must be a non-empty list"),
        (lambda d: d.update(files={"model.onnx": {}}), "'files' must be a list"),
        (lambda d: d["files"].append("tokenizer.json"), "must be an object"),
        (lambda d: d["files"][0].update(size=-1), "negative size"),
        (lambda d: d["files"][0].update(size=True), "'size' must be a int"),
        (lambda d: d["files"][0].update(size="123"), "'size' must be a int"),
        (lambda d: d["files"][0].update(sha256=None), "'sha256' must be a str"),
        (lambda d: d["files"][0].update(precision=32), "'precision' must be a str"),
        (lambda d: d["files"][0].update(external_data=["model.onnx.data"]), "'external_data' must be a str"),
        (lambda d: d["files"][0].update(batch_invariant="yes"), "batch_invariant"),
        (lambda d: d["files"][0].update(path="/etc/passwd"), "escapes"),
        (lambda d: d["files"][0].update(path="sub/../../model.onnx"), "escapes"),
        (lambda d: d["files"][0].update(path=7), "'path' must be a str"),
    ],
)
def test_manifest_wrong_types_refused(copy_bundle, nothing_loaded, change, message):
    b = copy_bundle("token-classification")
    _edit_manifest(b, change)
    _refused(b, BundleFormatError, message, nothing_loaded)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["embedding"].update(normalize="false"), "'normalize' must be a bool"),
        (lambda d: d["embedding"].update(dim="32"), "'dim' must be a int"),
        (lambda d: d["embedding"].update(dim=0), "dim 0 must be positive"),
        (lambda d: d["embedding"].update(pooling=["mean"]), "'pooling' must be a str"),
        (lambda d: d["embedding"].update(default_prefix=1), "'default_prefix' must be a str"),
        (lambda d: d["embedding"].update(prefixes={"query": 1}), "prefixes"),
        (lambda d: d.update(embedding="mean"), "'embedding' must be a dict"),
    ],
)
def test_embedding_spec_wrong_types_refused(copy_bundle, nothing_loaded, change, message):
    """A wrong type is refused, never coerced: "normalize": "false" used to mean True."""
    b = copy_bundle("feature-extraction")
    _edit_manifest(b, change)
    _refused(b, BundleFormatError, message, nothing_loaded)


def test_manifest_byte_edits_and_binary(copy_bundle, nothing_loaded):
    b = copy_bundle("text-classification")
    (b / "manifest.json").write_bytes(b"\xff\xfe{\x00")
    _refused(b, BundleFormatError, "not UTF-8", nothing_loaded)
    (b / "manifest.json").write_text("")
    _refused(b, BundleFormatError, "not valid JSON", nothing_loaded)
    (b / "manifest.json").write_text("null")
    _refused(b, BundleFormatError, "JSON object", nothing_loaded)
    (b / "manifest.json").write_text('{"format_version": 1e400}')
    _refused(b, BundleFormatError, "format_version", nothing_loaded)


def test_unknown_keys_are_ignored_as_the_compatibility_promise_says(copy_bundle, bundles):
    """docs/bundle-format.md: new optional keys may appear within a version and are ignored by older readers (a
    change an older reader would misread bumps format_version, which is refused)."""
    b = copy_bundle("text-classification")

    def change(d):
        d["future_key"] = {"anything": [1, 2]}
        d["files"][0]["future_file_key"] = "x"

    _edit_manifest(b, change)
    texts = ["Das Essen war großartig!", "The food was awful."]
    assert mbert_edge.load(b).predict(texts, top_k=None) == mbert_edge.load(bundles["text-classification"]).predict(
        texts, top_k=None
    )


def test_newer_format_version_loads_nothing(copy_bundle, nothing_loaded):
    b = copy_bundle("feature-extraction")
    _edit_manifest(b, lambda d: d.update(format_version=FORMAT_VERSION + 1, task="something-new"))
    _refused(b, UnsupportedFormatVersionError, "upgrade", nothing_loaded)


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_symlink_leaving_the_bundle_is_refused(copy_bundle, tmp_path, nothing_loaded, kind):
    """Same bytes, same checksum, but outside the bundle: refused (a bundle holds its own files)."""
    b = copy_bundle("text-classification")
    outside = tmp_path / "elsewhere" / kind
    outside.parent.mkdir()
    (b / kind).rename(outside)
    (b / kind).symlink_to(outside)
    if kind == "manifest.json":
        _refused(b, BundleIntegrityError, r"manifest\.json is a symbolic link leading out", nothing_loaded)
    else:
        _refused(b, BundleIntegrityError, f"{kind} is a symbolic link leading out", nothing_loaded, verify=False)


def test_symlinked_directory_leaving_the_bundle_is_refused(copy_bundle, tmp_path, nothing_loaded):
    b = copy_bundle("text-classification")
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    (b / "tokenizer.json").rename(outside / "tokenizer.json")
    (b / "sub").symlink_to(outside, target_is_directory=True)
    _edit_manifest(b, lambda d: [f.update(path="sub/tokenizer.json") for f in d["files"] if f["role"] == "tokenizer"])
    _refused(b, BundleIntegrityError, "symbolic link leading out", nothing_loaded)


def test_symlink_inside_the_bundle_and_a_linked_bundle_directory_load(copy_bundle, tmp_path):
    """Links that stay inside are fine, and so is a link to the whole bundle (e.g. ``current -> v3`` for updates)."""
    b = copy_bundle("text-classification")
    (b / "real").mkdir()
    (b / "tokenizer.json").rename(b / "real" / "tokenizer.json")
    (b / "tokenizer.json").symlink_to(b / "real" / "tokenizer.json")
    current = tmp_path / "current"
    current.symlink_to(b, target_is_directory=True)
    assert mbert_edge.load(current).predict("Hallo")["label"]


@pytest.mark.parametrize(
    "location",
    ["../outside.data", "/tmp/mbert-edge-absolute.data", "unlisted.data", "sub/../model.onnx.data"],
)
def test_graph_reading_tensor_data_the_manifest_does_not_pin(copy_bundle, tmp_path, nothing_loaded, location):
    """An ONNX graph (checksum made to match) naming external data outside the bundle, absolute, or an unlisted
    file inside it: refused before ONNX Runtime opens anything, since no checksum covers those bytes."""
    import onnx

    b = copy_bundle("feature-extraction")
    model = onnx.load(str(b / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(b / "model.onnx"))
    if location == "unlisted.data":
        (b / "model.onnx.data").rename(b / location)
        (b / "model.onnx.data").write_bytes((b / location).read_bytes())  # the listed file stays, unused
    _rehash(b, "model.onnx")
    _refused(b, BundleFormatError, f"reads tensor data from '{location}'", nothing_loaded, model_refused=True)


def test_model_in_a_subfolder_reads_its_listed_weights(copy_bundle):
    """The graph names its weights relative to its own folder and the manifest relative to the bundle's: a model
    file in a subfolder with its listed weights beside it loads (it was refused as reading unlisted data)."""
    b = copy_bundle("feature-extraction")
    want = mbert_edge.load(b).embed("Hallo Welt")
    (b / "onnx").mkdir()
    for name in ("model.onnx", "model.onnx.data"):
        (b / name).rename(b / "onnx" / name)

    def move(d):
        for f in d["files"]:
            if f["path"] in ("model.onnx", "model.onnx.data"):
                f["path"] = "onnx/" + f["path"]
            if f.get("external_data"):
                f["external_data"] = "onnx/" + f["external_data"]

    _edit_manifest(b, move)
    np.testing.assert_array_equal(mbert_edge.load(b).embed("Hallo Welt"), want)


def test_self_contained_graph_must_not_name_external_data(copy_bundle, nothing_loaded):
    b = copy_bundle("feature-extraction")

    def drop_weights(d):
        d["files"] = [f for f in d["files"] if f["role"] != "weights"]
        for f in d["files"]:
            f.pop("external_data", None)

    _edit_manifest(b, drop_weights)
    _refused(b, BundleFormatError, "allows no external data", nothing_loaded, model_refused=True)


def test_graph_that_is_not_onnx_is_refused(copy_bundle, nothing_loaded):
    b = copy_bundle("feature-extraction")
    (b / "model.onnx").write_bytes(b"\x0a\xff\xff\xff\xff\x0f not protobuf")
    _rehash(b, "model.onnx")
    _refused(b, BundleFormatError, "not a readable ONNX file", nothing_loaded, model_refused=True)


@pytest.mark.parametrize("task", ["text-classification", "token-classification"])
@pytest.mark.parametrize("drop", [True, False])
def test_labels_that_do_not_match_the_models_scores_are_refused(copy_bundle, task, drop):
    """A manifest naming more or fewer labels than the model has logit columns (a model file and a manifest
    from different exports) is a BundleFormatError saying so, not a KeyError or a silently dropped column."""
    b = copy_bundle(task)
    labels = json.loads((b / "manifest.json").read_text())["labels"]
    n = len(labels)
    _edit_manifest(b, lambda d: d["labels"].pop(str(n - 1)) if drop else d["labels"].update({str(n): "EXTRA"}))
    model = mbert_edge.load(b)
    per = "text" if task == "text-classification" else "token"
    expected = f"the model gives {n} scores per {per} but the manifest names {n - 1 if drop else n + 1} labels"
    with pytest.raises(BundleFormatError, match=expected):
        model.predict(["Hallo Welt", "Bonjour"])
