"""The Node module (examples/node) against the Python runtime on the same bundles: same token ids, same answers.

Bundles of all three tasks, fp32 and INT8 (each INT8 bundle keeps its fp32 file too, so both files and the choice
between them are run), on multilingual text: token ids identical; fp32 embeddings and scores within 1e-5; INT8 the
same labels and within 1e-4; entity spans identical (code point offsets in the CLI's JSON, UTF-16 offsets from the
API); tampered, truncated, newer and malformed bundles refused with the same typed errors; bad input refused the
same way. Skipped, saying how to fix it, when node or the npm dependencies (`make node-deps`) are missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import mbert_edge
from mbert_edge.errors import MbertEdgeError
from tests.conftest import corpus_lines

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "examples" / "node"
PREDICT = NODE_DIR / "bin" / "predict.mjs"
TASKS = ("text-classification", "token-classification", "feature-extraction")
MIN_NODE = 18

EDGE_TEXTS = [
    "Angela Merkel besuchte Paris 😀 gestern, 👨‍👩‍👧 und 🇩🇪.",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters and 𠜎𠜱 ancient CJK; emoji at the end 🎉",
    "Cafe\u0301 vs Café; ﬁ ligature; ① ② ③; ｆｕｌｌｗｉｄｔｈ",
    "Straße, İstanbul, ΣΊΣΥΦΟΣ, ǅemal — “quotes” …",
    "東京は日本の首都です。北京是中国的首都。",
    "tabs\tinside  and   spaces ",
    "zero\u200bwidth\u200djoiner and <unk> [UNK] [CLS] literal",
    "x",
    " ".join(["Ein langer Satz über das Wetter in Berlin 🌧️."] * 30),  # past max_length: cut at the end
]


def _node() -> str:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed: `make node-deps` installs Debian's nodejs and the npm dependencies")
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major = int(re.match(r"v(\d+)", out).group(1))
    if major < MIN_NODE:
        pytest.skip(f"node {out} is older than v{MIN_NODE}, the minimum of examples/node")
    for dep in ("onnxruntime-node", "tokenizers"):
        if not (NODE_DIR / "node_modules" / dep / "package.json").is_file():
            pytest.skip(f"the npm dependencies of examples/node are not installed ({dep}): run `make node-deps`")
    return node


@pytest.fixture(scope="module")
def node() -> str:
    return _node()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [t for _, t in corpus_lines(per_lang=4)] + EDGE_TEXTS


@pytest.fixture(scope="module")
def int8_bundles(tmp_path_factory, checkpoints) -> dict[str, Path]:
    """INT8 bundles that keep their fp32 file and have the browser variant (model.wo8.onnx) too."""
    from mbert_edge_export import export_bundle
    from mbert_edge_export.quantize.gate import Thresholds
    from mbert_edge_export.quantize.gated import QuantizeSettings

    root = tmp_path_factory.mktemp("node-int8")
    # random tiny models have tiny score margins: the gate's thresholds are not what is tested here
    settings = QuantizeSettings(mode="dynamic", thresholds=Thresholds(0.0, 0.0), browser_variant=True)
    return {t: export_bundle(str(checkpoints[t]), root / t, quantize=settings, keep_fp32=True) for t in TASKS}


def predictor_for(bundle: Path, path: str):
    """A Python predictor on one named model file of the bundle (load() chooses by precision only)."""
    from mbert_edge.backends.onnxruntime import OnnxRuntimeCPUBackend
    from mbert_edge.bundle import Bundle
    from mbert_edge.predictor import Predictor
    from mbert_edge.tokenizer import BundleTokenizer

    b = Bundle.open(bundle)
    entry = next(f for f in b.manifest.model_files() if f.path == path)
    tokenizer = BundleTokenizer(b.file_path(b.manifest.tokenizer_file()), b.manifest.max_length)
    return Predictor(b, OnnxRuntimeCPUBackend(b.file_path(entry)), entry, tokenizer)


def run_node_cli(node: str, bundle: Path, texts: list[str], *args: str) -> list[dict]:
    proc = subprocess.run(
        [node, str(PREDICT), str(bundle), "--json", "--ids", *args],
        input="\n".join(texts) + "\n",
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [x["text"] for x in lines] == texts
    return lines


def python_ids(model, texts: list[str]) -> list[list[int]]:
    if model.task == "feature-extraction":
        texts = [model.manifest.embedding.default_prefix + t for t in texts]
    return [e.ids for e in model.tokenizer.encode(texts)]


def utf16(text: str, cp: int) -> int:
    return len(text[:cp].encode("utf-16-le")) // 2


def compare(model, texts, node_lines, tol: float, same_order: bool) -> dict[str, float]:
    """Assert parity; return the largest differences seen."""
    assert [x["ids"] for x in node_lines] == python_ids(model, texts)
    worst = {"max_abs_diff": 0.0}
    if model.task == "feature-extraction":
        ours = model.embed(texts)
        theirs = np.array([x["embedding"] for x in node_lines], dtype=np.float32)
        assert theirs.shape == ours.shape
        worst["max_abs_diff"] = float(np.abs(theirs - ours).max())
        np.testing.assert_allclose(theirs, ours, atol=tol, rtol=0)
    elif model.task == "text-classification":
        for py, js in zip(model.predict(texts, top_k=None), (x["result"] for x in node_lines), strict=True):
            assert js[0]["label"] == py[0]["label"]  # the answer
            if same_order:
                assert [r["label"] for r in js] == [r["label"] for r in py]
            by_label = {r["label"]: r["score"] for r in js}
            diffs = [abs(by_label[r["label"]] - r["score"]) for r in py]
            worst["max_abs_diff"] = max(worst["max_abs_diff"], *diffs)
            assert max(diffs) <= tol
    else:
        for text, py, js in zip(texts, model.predict(texts), (x["result"] for x in node_lines), strict=True):
            assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in js] == [
                (e["entity_group"], e["word"], e["start"], e["end"]) for e in py
            ], text
            diffs = [abs(a["score"] - b["score"]) for a, b in zip(js, py, strict=True)]
            worst["max_abs_diff"] = max(worst["max_abs_diff"], *diffs, 0.0)
            assert max(diffs, default=0.0) <= tol
    return worst


@pytest.mark.parametrize("task", TASKS)
def test_fp32_bundles_same_ids_and_answers(node, bundles, texts, task):
    model = mbert_edge.load(bundles[task])
    assert model.model_file.precision == "fp32"
    compare(model, texts, run_node_cli(node, bundles[task], texts, "--top-k", "0"), tol=1e-5, same_order=True)


@pytest.mark.parametrize("task", TASKS)
def test_int8_bundles_same_labels_and_close(node, int8_bundles, texts, task):
    bundle = int8_bundles[task]
    model = mbert_edge.load(bundle)  # INT8 first, in both runtimes; the browser variant only by name
    assert model.model_file.path == "model.int8.onnx"
    compare(model, texts, run_node_cli(node, bundle, texts, "--top-k", "0"), tol=1e-4, same_order=False)
    fp32 = mbert_edge.load(bundle, precision="fp32")  # the file kept beside it, chosen by precision
    lines = run_node_cli(node, bundle, texts, "--top-k", "0", "--precision", "fp32")
    compare(fp32, texts, lines, tol=1e-5, same_order=True)
    # the browser variant, by name: INT8 weights, fp32 activations, so fp32's tolerance
    variant = predictor_for(bundle, "model.wo8.onnx")
    lines = run_node_cli(node, bundle, texts, "--top-k", "0", "--model-file", "model.wo8.onnx")
    compare(variant, texts, lines, tol=1e-5, same_order=True)


def test_entity_offsets_are_utf16_in_the_api(node, bundles, texts):
    """`--offsets utf16` (the API's default): JavaScript's text.slice(start, end) is Python's text[start:end]."""
    bundle = bundles["token-classification"]
    py = mbert_edge.load(bundle).predict(texts)
    js = run_node_cli(node, bundle, texts, "--offsets", "utf16")
    astral = 0
    for text, p, j in zip(texts, py, (x["result"] for x in js), strict=True):
        assert [(e["start"], e["end"]) for e in j] == [(utf16(text, e["start"]), utf16(text, e["end"])) for e in p]
        astral += any(utf16(text, e["start"]) != e["start"] for e in p)
    assert astral, "no entity after an astral character: the test texts no longer exercise UTF-16 offsets"


def test_top_k_shapes_match_python(node, bundles, texts):
    bundle = bundles["text-classification"]
    model = mbert_edge.load(bundle)
    sample = texts[:5]
    for k in ("1", "2"):
        js = [x["result"] for x in run_node_cli(node, bundle, sample, "--top-k", k)]
        py = model.predict(sample, top_k=int(k))
        assert [type(j).__name__ for j in js] == [type(p).__name__ for p in py]  # dict for top 1, list for top k
        assert [[r["label"] for r in (j if isinstance(j, list) else [j])] for j in js] == [
            [r["label"] for r in (p if isinstance(p, list) else [p])] for p in py
        ]


def test_cli_lines_have_pythons_shape(node, bundles):
    """Same keys, same order, same separators as `mbert-edge predict --json` (only the floats' last digits differ)."""
    from mbert_edge.cli import main as cli_main

    bundle = bundles["token-classification"]
    text = "Angela Merkel besuchte Paris 😀."
    proc = subprocess.run(
        [node, str(PREDICT), str(bundle), "--json"], input=text + "\n", capture_output=True, text=True, check=True
    )
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["predict", str(bundle), text, "--json"]) == 0
    number = re.compile(r"-?\d+\.\d+(e-?\d+)?")
    assert number.sub("N", proc.stdout) == number.sub("N", out.getvalue())


# ---------------------------------------------------------------- refusals

NODE_LOAD_ERRORS = """
import { load } from %(index)s;
const out = [];
for (const path of JSON.parse(process.argv[1])) {
  try { await (await load(path)).predict('Hallo Welt'); out.push({ path, name: null }); }
  catch (err) { out.push({ path, name: err.name, message: err.message }); }
}
console.log(JSON.stringify(out));
"""


def _damaged_bundles(root: Path, bundle: Path) -> dict[str, Path]:
    def copy(name: str) -> Path:
        dst = root / name
        shutil.copytree(bundle, dst)
        return dst

    cases = {}
    b = cases["weights altered"] = copy("altered")
    data = bytearray((b / "model.onnx.data").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / "model.onnx.data").write_bytes(bytes(data))
    b = cases["tokenizer truncated"] = copy("truncated")
    (b / "tokenizer.json").write_bytes((b / "tokenizer.json").read_bytes()[:-10])
    b = cases["model missing"] = copy("missing")
    (b / "model.onnx").unlink()

    def edit(name: str, change) -> Path:
        b = copy(name)
        m = json.loads((b / "manifest.json").read_text())
        change(m)
        (b / "manifest.json").write_text(json.dumps(m))
        return b

    cases["newer format"] = edit("newer", lambda m: m.update(format_version=m["format_version"] + 1))
    cases["path escapes"] = edit("escape", lambda m: m["files"][0].update(path="../model.onnx"))
    cases["unknown task"] = edit("task", lambda m: m.update(task="summarization"))
    cases["no labels"] = edit("labels", lambda m: m.pop("labels"))
    cases["label ids with a gap"] = edit("label-gap", lambda m: m["labels"].pop("0"))
    cases["label id spelt 01"] = edit("label-01", lambda m: m["labels"].update({"01": "X"}))
    cases["fewer labels than scores"] = edit("label-short", lambda m: m["labels"].pop(str(len(m["labels"]) - 1)))
    cases["weights not listed"] = edit(
        "weights", lambda m: m.update(files=[f for f in m["files"] if f["role"] != "weights"])
    )
    cases["manifest not JSON"] = copy("json")
    (cases["manifest not JSON"] / "manifest.json").write_text('{"format_version": 1, ')
    cases["no manifest"] = copy("nomanifest")
    (cases["no manifest"] / "manifest.json").unlink()
    cases["no directory"] = root / "does-not-exist"
    return cases


def test_damaged_bundles_refused_with_the_same_typed_errors(node, bundles, tmp_path):
    cases = _damaged_bundles(tmp_path, bundles["text-classification"])
    script = NODE_LOAD_ERRORS % {"index": json.dumps((NODE_DIR / "index.mjs").as_uri())}
    proc = subprocess.run(
        [node, "--input-type=module", "-e", script, json.dumps([str(p) for p in cases.values()])],
        capture_output=True,
        text=True,
        check=True,
    )
    js = {r["path"]: r for r in json.loads(proc.stdout)}
    for case, path in cases.items():
        with pytest.raises(MbertEdgeError) as info:
            mbert_edge.load(path).predict("Hallo Welt")
        result = js[str(path)]
        assert result["name"] == type(info.value).__name__, (case, result)
        py_message, js_message = str(info.value), result["message"]
        if case == "newer format":  # the upgrade hint names each runtime's own package
            py_message, js_message = py_message.split(";")[0], js_message.split(";")[0]
        if case != "manifest not JSON":  # the JSON parsers word their errors differently
            assert js_message == py_message, case
    # and the command line says so, exit status 1
    proc = subprocess.run(
        [node, str(PREDICT), str(cases["weights altered"]), "--json"], input="Hallo\n", capture_output=True, text=True
    )
    assert proc.returncode == 1 and proc.stderr.startswith("error: bundle file model.onnx.data fails its checksum")


NODE_INPUT_ERRORS = """
import { load } from %(index)s;
const [clsPath, embPath] = JSON.parse(process.argv[1]);
const cls = await load(clsPath), emb = await load(embPath);
const cases = {
  'none': () => cls.predict(null), 'number': () => cls.predict(5), 'item not str': () => cls.predict(['ok', 3]),
  'blank': () => cls.predict(['ok', ' \\t\\u3000']), 'empty str': () => cls.predict(''),
  'top_k 0': () => cls.predict('ok', { topK: 0 }), 'embed on classifier': () => cls.embed('ok'),
  'predict on encoder': () => emb.predict('ok'), 'prefix not str': () => emb.embed('ok', { prefix: 3 }),
  'batch size 0': () => emb.embed('ok', { batchSize: 0 }),
  'lone surrogate': () => cls.predict(['ok', 'caf\\u00e9 \\ud800 x']),
  'nothing kept': () => cls.predict(['ok', '\\u200b\\u200b']),
  'nothing kept, embed': () => emb.embed('\\u200b\\u0007'),
};
const out = {};
for (const [k, f] of Object.entries(cases)) {
  try { await f(); out[k] = null; } catch (err) { out[k] = err.name; }
}
out['empty list'] = JSON.stringify(await cls.predict([]));
try { await cls.predict(['ok', 'caf\\u00e9 \\ud800 x']); } catch (err) { out['lone surrogate message'] = err.message; }
try { await emb.embed('\\u200b\\u0007'); } catch (err) { out['nothing kept message'] = err.message; }
console.log(JSON.stringify(out));
"""


def test_bad_input_refused_with_the_same_typed_errors(node, bundles):
    cls = mbert_edge.load(bundles["text-classification"])
    emb = mbert_edge.load(bundles["feature-extraction"])
    cases = {
        "none": lambda: cls.predict(None),
        "number": lambda: cls.predict(5),
        "item not str": lambda: cls.predict(["ok", 3]),
        "blank": lambda: cls.predict(["ok", " \t\u3000"]),
        "empty str": lambda: cls.predict(""),
        "top_k 0": lambda: cls.predict("ok", top_k=0),
        "embed on classifier": lambda: cls.embed("ok"),
        "predict on encoder": lambda: emb.predict("ok"),
        "prefix not str": lambda: emb.embed("ok", prefix=3),
        "batch size 0": lambda: emb.embed("ok", batch_size=0),
        "lone surrogate": lambda: cls.predict(["ok", "caf\u00e9 \ud800 x"]),
        "nothing kept": lambda: cls.predict(["ok", "\u200b\u200b"]),
        "nothing kept, embed": lambda: emb.embed("\u200b\u0007"),
    }
    expected = {}
    for name, call in cases.items():
        with pytest.raises(MbertEdgeError) as info:
            call()
        expected[name] = type(info.value).__name__
    expected["empty list"] = json.dumps(cls.predict([]))
    with pytest.raises(MbertEdgeError) as info:
        cls.predict(["ok", "caf\u00e9 \ud800 x"])
    expected["lone surrogate message"] = str(info.value)  # the same words, the position in code points
    with pytest.raises(MbertEdgeError) as info:
        emb.embed("\u200b\u0007")  # a prompt in front would not count as content
    expected["nothing kept message"] = str(info.value)
    script = NODE_INPUT_ERRORS % {"index": json.dumps((NODE_DIR / "index.mjs").as_uri())}
    paths = json.dumps([str(bundles["text-classification"]), str(bundles["feature-extraction"])])
    proc = subprocess.run(
        [node, "--input-type=module", "-e", script, paths], capture_output=True, text=True, check=True
    )
    assert json.loads(proc.stdout) == expected


def test_typescript_types_compile(node):
    """index.d.ts describes the API as types-check.ts uses it (tsc from the module's devDependencies)."""
    tsc = NODE_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.is_file():
        pytest.skip("typescript is not installed: run `make node-deps`")
    proc = subprocess.run([node, str(tsc), "-p", str(NODE_DIR)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_browser_variant_in_the_manifest(int8_bundles):
    """model.wo8.onnx: its own model file (weight-only), after the INT8 file, with its own passed gate report."""
    from mbert_edge.manifest import Manifest
    from mbert_edge_export.errors import ExportError
    from mbert_edge_export.quantize.gated import QuantizeSettings, check_settings

    m = Manifest.read(int8_bundles["feature-extraction"] / "manifest.json")
    models = [(f.path, f.precision, f.quantization, f.batch_invariant) for f in m.model_files()]
    assert models == [
        ("model.int8.onnx", "int8", "dynamic", True),
        ("model.wo8.onnx", "int8", "weight-only", True),
        ("model.onnx", "fp32", None, True),
    ]
    report = m.fidelity["int8_weight_only"]
    assert report["activations"] == "fp32" and report["gate"]["passed"] and report["nodes"]["MatMulNBits"] > 0
    with pytest.raises(ExportError, match="--browser-variant"):
        check_settings(QuantizeSettings(mode="static", target="openvino", browser_variant=True))
