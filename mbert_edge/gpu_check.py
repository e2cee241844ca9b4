"""``mbert-edge gpu-check BUNDLE``: compare every GPU backend with ONNX Runtime on CPU, for a bug report.

One responsibility: run the comparison and produce a report. For each GPU backend (``tensorrt``,
``onnxruntime-cuda``, ``onnxruntime-tensorrt``) and each model file of the bundle it can run, the check loads
the bundle with that backend (for TensorRT: builds the engine or loads it from the engine cache), runs the
packaged multilingual sample texts (``mbert_edge_export``'s ``data/parity_texts.txt``: about 20 languages,
12 scripts, emoji and odd whitespace) and compares the results per text with the CPU reference (ONNX Runtime's
CPU provider on the bundle's fp32 file): cosine of the embeddings or of the class scores (token classification:
of the per-token label probabilities), agreement of the top labels or of the entity spans. A backend that
cannot run here is reported as ``unavailable`` with the message of the typed error the runtime raises.

Nothing here imports TensorRT, CUDA or Polygraphy unless they are installed, so the CPU half (environment,
bundle, reference, every "unavailable") runs and is tested on any machine.

Exit codes (:func:`exit_code`): :data:`EXIT_PASSED` (0) every comparison that could run passed;
:data:`EXIT_FAILED` (1) a comparison failed or a GPU backend that is present failed to build, load or run;
:data:`EXIT_NO_GPU` (3) no GPU backend could run at all, so nothing was compared on a GPU.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mbert_edge import backends
from mbert_edge.backends import engine_cache
from mbert_edge.backends import tensorrt_compat as compat
from mbert_edge.bundle import Bundle, sha256_file
from mbert_edge.errors import BackendUnavailableError, MbertEdgeError
from mbert_edge.manifest import FEATURE_EXTRACTION, MANIFEST_NAME, TEXT_CLASSIFICATION, FileEntry

log = logging.getLogger(__name__)

#: the backends compared, in the order of ``backend="auto"``'s preference
GPU_BACKENDS = ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda")
REFERENCE_BACKEND = "onnxruntime"

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_NO_GPU = 3

PASSED, FAILED, ERROR, UNAVAILABLE = "passed", "failed", "error", "unavailable"
TEXTS_RESOURCE = "data/parity_texts.txt"  # inside the mbert_edge_export package, read without importing it
TEGRA_RELEASE = "etc/nv_tegra_release"


@dataclass(frozen=True)
class Tolerance:
    """What a GPU result must meet against the CPU reference: the lowest per-text cosine, and the share of
    texts whose top label (classifiers) or entity spans (taggers) are the same."""

    min_cosine: float
    min_agreement: float


#: per precision of the GPU file. fp32 on a GPU differs from the CPU by summation order only; fp16 keeps
#: LayerNorm/softmax in fp32 (the export's fp32 islands); int8 is judged like the export's accuracy gate
#: (mean cosine >= 0.99), here per text, so a little lower. One flipped label in the 25 sample texts is 96%.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(min_cosine=0.9999, min_agreement=1.0),
    "fp16": Tolerance(min_cosine=0.999, min_agreement=0.95),
    "int8": Tolerance(min_cosine=0.98, min_agreement=0.9),
}


@dataclass
class Check:
    """One GPU backend on one model file: the comparison with the CPU, or why it could not run."""

    backend: str
    file: str | None
    precision: str | None
    status: str  # passed | failed | error | unavailable
    message: str = ""
    tolerance: dict[str, float] | None = None
    metrics: dict[str, Any] | None = None
    per_text: list[dict[str, Any]] = field(default_factory=list)
    load_s: float | None = None  # loading the bundle with this backend: engine build or cache load included
    run_s: float | None = None  # the first run over every text (ONNX Runtime's TensorRT provider builds here)
    engine: str | None = None  # TensorRT: "built", "rebuilt" or "cache"
    cache_hit: bool | None = None
    polygraphy: dict[str, Any] | None = None


@dataclass
class Report:
    """Everything ``gpu-check`` found, as printed (:meth:`to_text`) or as JSON (:meth:`to_dict`)."""

    environment: dict[str, Any]
    bundle: dict[str, Any]
    texts: dict[str, Any]
    reference: dict[str, Any]
    checks: list[Check]
    #: GPU backends whose libraries and GPU are present here (whether or not the bundle has a file for them)
    installed: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """:data:`EXIT_FAILED` on any failure or error, else :data:`EXIT_NO_GPU` when nothing ran on a GPU,
        else :data:`EXIT_PASSED`."""
        if any(c.status in (FAILED, ERROR) for c in self.checks):
            return EXIT_FAILED
        if not any(c.status == PASSED for c in self.checks):
            return EXIT_NO_GPU
        return EXIT_PASSED

    @property
    def verdict(self) -> str:
        """One plain sentence on the outcome."""
        counts = {s: sum(c.status == s for c in self.checks) for s in (PASSED, FAILED, ERROR, UNAVAILABLE)}
        code = self.exit_code
        if code == EXIT_NO_GPU:
            if self.installed:
                return (
                    f"{', '.join(self.installed)} can run here, but this bundle has no file for it: nothing was "
                    f"compared on a GPU (export with --target tensorrt); exit {code}"
                )
            return f"no GPU backend is available on this machine: nothing was compared on a GPU; exit {code}"
        text = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        if code == EXIT_FAILED:
            return f"GPU check FAILED ({text}); exit {code}"
        return f"every available GPU comparison passed ({text}); exit {code}"

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        from mbert_edge import __version__

        return {
            "mbert_edge": __version__,
            "environment": self.environment,
            "bundle": self.bundle,
            "texts": self.texts,
            "reference": self.reference,
            "checks": [asdict(c) for c in self.checks],
            "installed_gpu_backends": self.installed,
            "summary": {s: sum(c.status == s for c in self.checks) for s in (PASSED, FAILED, ERROR, UNAVAILABLE)}
            | {"exit_code": self.exit_code, "verdict": self.verdict},
        }

    def to_json(self) -> str:
        """The report as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_text(self) -> str:
        """The report as the lines ``mbert-edge gpu-check`` prints."""
        from mbert_edge import __version__

        env, b = self.environment, self.bundle
        ort = env["onnxruntime"]
        lines = [f"mbert-edge gpu-check (mbert-edge {__version__})", "", "environment"]
        lines.append(f"  python        {env['python']} ({env['os']}, {env['machine']})")
        lines.append(f"  onnxruntime   {ort['version']}; providers {', '.join(ort['providers'])}")
        for key, label in (("tensorrt", "tensorrt"), ("cuda_python", "cuda-python"), ("polygraphy", "polygraphy")):
            lib = env[key]
            lines.append(f"  {label:<13} {lib['version'] or 'not installed'}{_note(lib.get('note'))}")
        gpu = env["gpu"]
        if gpu.get("name"):
            cc = ".".join(map(str, gpu["compute_capability"]))
            mem = f", {gpu['total_memory'] / 2**30:.1f} GiB" if gpu.get("total_memory") else ""
            kind = ", integrated (shares system memory)" if gpu.get("integrated") else ""
            lines.append(f"  gpu           {gpu['name']} (compute capability {cc}{mem}{kind})")
        else:
            lines.append(f"  gpu           {'present' if gpu['present'] else 'none'}: {gpu['what']}")
        if gpu.get("note"):
            lines.append(f"                {gpu['note']}")
        jetson = env.get("jetson")
        if jetson:
            lines.append(
                f"  jetson        L4T {jetson.get('l4t') or '?'} (JetPack {jetson.get('jetpack') or '?'})"
                f"{'; ' + jetson['model'] if jetson.get('model') else ''}"
            )
        lines += ["", "bundle"]
        lines.append(f"  path          {b['path']}")
        lines.append(f"  manifest      sha256 {b['manifest_sha256']}")
        lines.append(f"  task          {b['task']}, max_length {b['max_length']}")
        for f in b["files"]:
            lines.append(f"  file          {f['path']:<22} {f['backend']}/{f['precision']}  sha256 {f['sha256'][:16]}…")
        t, r = self.texts, self.reference
        lines += ["", f"texts           {t['count']} from {t['source']} ({len(t['languages'])} languages)"]
        lines.append(f"reference       {r['backend']} on {r['file']} ({r['precision']}), loaded in {r['load_s']:.2f} s")
        lines.append("")
        for c in self.checks:
            lines += _check_lines(c)
        lines += ["", self.verdict]
        return "\n".join(lines)


def _note(note: str | None) -> str:
    return f" ({note})" if note else ""


def _check_lines(c: Check) -> list[str]:
    head = f"{c.backend} / {c.file or '(no file)'}" + (f" ({c.precision})" if c.precision else "")
    if c.status == UNAVAILABLE:
        return [f"{head}: unavailable: {c.message}"]
    if c.status == ERROR:
        lines = [f"{head}: ERROR: {c.message}"]
    else:
        m, tol = c.metrics or {}, c.tolerance or {}
        agreement = (
            f", {m['agreement_kind']} agreement {m['agreement']:.3f} (needs >= {tol['min_agreement']})"
            if m.get("agreement") is not None
            else ""
        )
        lines = [
            f"{head}: {c.status.upper()}: {m['cosine_of']} cosine min {m['min_cosine']:.6f} "
            f"(needs >= {tol['min_cosine']}), mean {m['mean_cosine']:.6f}{agreement}"
        ]
        for row in sorted(c.per_text, key=lambda r: r["cosine"])[:3]:
            lines.append(f"    worst  {row['cosine']:.6f}  [{row['language']}] {_short(row['text'])}")
        for row in (r for r in c.per_text if r.get("same") is False):
            lines.append(f"    differs [{row['language']}] {_short(row['text'])}: cpu {row['cpu']} / gpu {row['gpu']}")
    timing = []
    if c.load_s is not None:
        timing.append(f"load {c.load_s:.2f} s")
    if c.engine:
        timing.append(f"engine {c.engine} (cache hit: {'yes' if c.cache_hit else 'no'})")
    if c.run_s is not None:
        timing.append(f"first run over every text {c.run_s:.2f} s")
    if timing:
        lines.append(f"    {', '.join(timing)}")
    if c.polygraphy:
        lines.append(f"    polygraphy: {c.polygraphy.get('summary', '')}")
    return lines


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# ---------------------------------------------------------------------------------------------- environment
def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def tensorrt_info() -> dict[str, Any]:
    """TensorRT's version, or why there is none (imports TensorRT only when it is installed)."""
    if not _found("tensorrt"):
        return {"version": None, "note": "the TensorRT Python package is not installed"}
    try:
        import tensorrt as trt

        version = str(trt.__version__)
    except Exception as exc:  # a broken install raises anything from OSError to pybind11 errors
        return {"version": None, "note": f"installed but does not import: {exc}"}
    try:
        reason = compat.unsupported_reason(compat.parse_version(version))
    except ValueError as exc:
        reason = str(exc)
    return {"version": version, "note": reason}


def cuda_python_info() -> dict[str, Any]:
    """cuda-python's version (the TensorRT backend's device memory and streams)."""
    version = _dist_version("cuda-python", "cuda-bindings")
    if version is None and (_found("cuda.bindings") or _found("cuda.cudart")):
        version = "installed (version unknown)"
    return {"version": version, "note": None if version else "needed by the tensorrt backend only"}


def polygraphy_info() -> dict[str, Any]:
    """Polygraphy's version (optional: ``--polygraphy`` runs it on the TensorRT files)."""
    version = _dist_version("polygraphy")
    return {"version": version, "note": None if version else "optional, for --polygraphy"}


def gpu_info(root: Path = Path("/")) -> dict[str, Any]:
    """Whether the OS shows an NVIDIA GPU and, when cuda-python can query it, its name, compute capability
    and memory (the values the TensorRT backend keys its engines on), with the builder workspace it would use."""
    present, what = engine_cache.nvidia_gpu_present(root)
    info: dict[str, Any] = {"present": present, "what": what}
    if not present or not (_found("cuda.bindings") or _found("cuda.cudart")):
        return info
    try:
        from mbert_edge.backends.tensorrt import _Cuda

        cuda = _Cuda()
        device = cuda.device()
        info.update(
            name=device.name,
            compute_capability=list(device.compute_capability),
            total_memory=device.total_memory,
            integrated=device.integrated,
            tensorrt_workspace=compat.workspace_bytes(device.total_memory, device.integrated),
        )
        info["cuda_driver"] = _cuda_version(cuda.check(cuda.rt.cudaDriverGetVersion()))
        info["cuda_runtime"] = _cuda_version(cuda.check(cuda.rt.cudaRuntimeGetVersion()))
    except Exception as exc:  # no driver, a container without the GPU, a mismatched CUDA: all worth reporting
        info["note"] = f"cuda-python could not query the GPU: {type(exc).__name__}: {exc}"
    return info


def _cuda_version(value: Any) -> str:
    v = int(value)
    return f"{v // 1000}.{v % 1000 // 10}"


#: L4T release (``/etc/nv_tegra_release``) -> JetPack, from jetson-containers' ``l4t_version.py`` (NVIDIA_JETPACK);
#: other releases are named by their major line only (L4T_MAJOR_TO_JETPACK)
L4T_TO_JETPACK = {
    (35, 1, 0): "5.0.2",
    (35, 2, 1): "5.1",
    (35, 3, 1): "5.1.1",
    (35, 4, 1): "5.1.2",
    (36, 2, 0): "6.0 DP",
    (36, 3, 0): "6.0",
    (36, 4, 0): "6.1",
    (36, 4, 2): "6.1.1",
    (36, 4, 3): "6.2",
}
L4T_MAJOR_TO_JETPACK = {35: "5.x", 36: "6.x", 38: "7.x"}


def jetson_info(root: Path = Path("/")) -> dict[str, Any] | None:
    """The L4T release from ``/etc/nv_tegra_release`` and the board from the device tree, or None when this
    is not a Jetson."""
    release = root / TEGRA_RELEASE
    if not release.is_file():
        return None
    first = release.read_text(errors="replace").splitlines()[0] if release.stat().st_size else ""
    info: dict[str, Any] = {"nv_tegra_release": first.strip()}
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", first)
    if m:
        major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        info["l4t"] = f"{major}.{minor}.{patch}"
        info["jetpack"] = L4T_TO_JETPACK.get((major, minor, patch)) or L4T_MAJOR_TO_JETPACK.get(major)
    model = root / "proc/device-tree/model"
    if model.is_file():
        info["model"] = model.read_bytes().rstrip(b"\x00").decode(errors="replace").strip()
    return info


def environment(root: Path = Path("/")) -> dict[str, Any]:
    """Python, OS, ONNX Runtime and its providers, TensorRT, cuda-python, Polygraphy, the GPU, the Jetson."""
    import onnxruntime

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "platform": platform.platform(),
        "onnxruntime": {
            "version": onnxruntime.__version__,
            "package": "onnxruntime-gpu" if _dist_version("onnxruntime-gpu") else "onnxruntime",
            "providers": list(onnxruntime.get_available_providers()),
        },
        "tensorrt": tensorrt_info(),
        "cuda_python": cuda_python_info(),
        "polygraphy": polygraphy_info(),
        "gpu": gpu_info(root),
        "jetson": jetson_info(root),
    }


# ---------------------------------------------------------------------------------------------- texts
def sample_texts() -> tuple[list[tuple[str, str]], str]:
    """The packaged multilingual sample sentences as ``(language, text)`` pairs, and where they came from.

    They ship with the export stage's package data (installed with every mbert-edge); the file is found with
    ``importlib.util.find_spec``, which does not import the (heavy) export package.
    """
    spec = importlib.util.find_spec("mbert_edge_export")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / TEXTS_RESOURCE
        if path.is_file():
            return parse_texts(path.read_text(encoding="utf-8")), f"mbert_edge_export/{TEXTS_RESOURCE}"
    raise MbertEdgeError(
        "the packaged sample texts (mbert_edge_export/data/parity_texts.txt) are not installed; pass your own "
        "with --texts FILE (one text per line, optionally 'language<TAB>text')"
    )


def parse_texts(text: str) -> list[tuple[str, str]]:
    """``language<TAB>text`` lines (or plain lines, language ``?``); blank lines and ``#`` comments skipped."""
    pairs = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        lang, tab, sentence = line.partition("\t")
        pairs.append((lang.strip(), sentence) if tab and sentence.strip() else ("?", line))
    return pairs


# ---------------------------------------------------------------------------------------------- comparison
@dataclass
class Outputs:
    """What one backend made of the texts: a vector per text (compared by cosine) and, for classifiers and
    taggers, a discrete answer per text (compared for equality)."""

    vectors: list[np.ndarray]
    answers: list[Any] | None
    cosine_of: str
    agreement_kind: str | None


def task_outputs(predictor: Any, texts: Sequence[str], batch_size: int = 32) -> Outputs:
    """Run ``texts`` through a predictor and keep what the comparison needs, per task."""
    task = predictor.task
    if task == FEATURE_EXTRACTION:
        vectors = np.asarray(predictor.embed(list(texts), batch_size=batch_size), dtype=np.float64)
        return Outputs(list(vectors), None, "embedding", None)
    if task == TEXT_CLASSIFICATION:
        rows = predictor.predict(list(texts), top_k=None, batch_size=batch_size)
        labels = predictor.labels
        vectors = [np.array([{r["label"]: r["score"] for r in row}[label] for label in labels]) for row in rows]
        return Outputs(vectors, [row[0]["label"] for row in rows], "class score", "top label")
    entities = predictor.predict(list(texts), batch_size=batch_size)
    spans = [[(e["entity_group"], e["start"], e["end"]) for e in row] for row in entities]
    return Outputs(_token_probabilities(predictor, texts), spans, "token label probability", "entity span")


def _token_probabilities(predictor: Any, texts: Sequence[str]) -> list[np.ndarray]:
    """Per text, the softmax over labels of every real token, flattened (token classification)."""
    tok, backend = predictor.tokenizer, predictor.backend
    out = []
    for enc in tok.encode(list(texts)):
        feeds = tok.pad([enc], multiple_of=backend.pad_to_multiple_of)
        logits = next(iter(backend.run(feeds).values()))[0, : len(enc.ids)].astype(np.float64)
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        out.append((e / e.sum(axis=-1, keepdims=True)).ravel())
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (1.0 for two zero vectors, 0.0 for one)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        return 0.0
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def compare(
    reference: Outputs, got: Outputs, texts: Sequence[tuple[str, str]], tolerance: Tolerance
) -> tuple[bool, dict[str, Any], list[dict[str, Any]]]:
    """Judge ``got`` against ``reference`` text by text: ``(passed, metrics, per-text rows)``."""
    rows = []
    for i, (lang, text) in enumerate(texts):
        row: dict[str, Any] = {"language": lang, "text": text, "cosine": cosine(reference.vectors[i], got.vectors[i])}
        if reference.answers is not None and got.answers is not None:
            row["same"] = reference.answers[i] == got.answers[i]
            if not row["same"]:
                row["cpu"], row["gpu"] = _jsonable(reference.answers[i]), _jsonable(got.answers[i])
        rows.append(row)
    cosines = [r["cosine"] for r in rows]
    agreement = None if reference.answers is None else sum(r["same"] for r in rows) / max(len(rows), 1)
    worst = min(rows, key=lambda r: r["cosine"]) if rows else None
    metrics = {
        "cosine_of": reference.cosine_of,
        "min_cosine": min(cosines) if cosines else 1.0,
        "mean_cosine": float(np.mean(cosines)) if cosines else 1.0,
        "worst_language": worst["language"] if worst else None,
        "agreement_kind": reference.agreement_kind,
        "agreement": agreement,
        "texts": len(rows),
    }
    passed = metrics["min_cosine"] >= tolerance.min_cosine and (
        agreement is None or agreement >= tolerance.min_agreement
    )
    return passed, metrics, rows


def _jsonable(answer: Any) -> Any:
    return [list(x) for x in answer] if isinstance(answer, list) else answer


# ---------------------------------------------------------------------------------------------- the check
def planned(names: Sequence[str], files: list[FileEntry]) -> list[tuple[str, FileEntry | None, str | None]]:
    """``(backend, file, why unavailable)`` for every GPU backend and every model file it can run; one row
    with no file when it can run none. The reason is the message of the :class:`BackendUnavailableError`
    that ``mbert_edge.load(bundle, backend=..., precision=...)`` would raise here (None: it can run)."""
    rows: list[tuple[str, FileEntry | None, str | None]] = []
    for name in names:
        cls = backends.REGISTRY.get(name)
        entries: list[FileEntry] = []
        if cls is not None:
            for precision in dict.fromkeys(f.precision for f in files):
                entry = cls.pick_file(files, precision)
                if entry is not None and entry not in entries:
                    entries.append(entry)
        if not entries:
            rows.append((name, None, _unavailable(name, files, None) or "it has no file to run in this bundle"))
        for entry in entries:
            rows.append((name, entry, _unavailable(name, files, entry.precision)))
    return rows


def _unavailable(name: str, files: list[FileEntry], precision: str | None) -> str | None:
    try:
        backends.choose(name, files, precision)
    except BackendUnavailableError as exc:
        return str(exc)
    return None


def run_check(
    bundle_path: str | Path,
    *,
    names: Sequence[str] = GPU_BACKENDS,
    texts: Sequence[tuple[str, str]] | None = None,
    texts_source: str | None = None,
    tolerances: dict[str, Tolerance] | None = None,
    polygraphy: bool = False,
    environment_root: Path = Path("/"),
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Compare every GPU backend in ``names`` with ONNX Runtime on CPU on ``bundle_path``; return the report.

    ``texts`` default to the packaged multilingual samples (:func:`sample_texts`); ``tolerances`` to
    :data:`TOLERANCES` (per precision of the GPU file); ``polygraphy`` also runs Polygraphy's comparison of
    each TensorRT file (TensorRT against ONNX Runtime CPU on the same file), when Polygraphy is installed.
    Raises the runtime's typed errors for a bad bundle; a GPU backend that fails is reported, not raised.
    """
    import mbert_edge

    say = progress or log.info
    tolerances = {**TOLERANCES, **(tolerances or {})}
    if texts is None:
        texts, texts_source = sample_texts()
    texts = list(texts)
    if not texts:
        raise MbertEdgeError("no texts to compare on")
    plain = [t for _, t in texts]
    bundle = Bundle.open(bundle_path, verify=True)
    m = bundle.manifest
    files = m.model_files()
    env = environment(environment_root)
    info = {
        "path": str(bundle.path),
        "manifest_sha256": sha256_file(bundle.path / MANIFEST_NAME),
        "task": m.task,
        "max_length": m.max_length,
        "source": m.source.get("name_or_path"),
        "files": [
            {
                "path": f.path,
                "backend": f.backend,
                "format": f.format,
                "precision": f.precision,
                "size": f.size,
                "sha256": f.sha256,
                **({"profiles": [asdict(p) for p in f.profiles]} if f.profiles else {}),
            }
            for f in files
        ],
    }
    ref_precision = "fp32" if any(f.backend == REFERENCE_BACKEND and f.precision == "fp32" for f in files) else None
    say(f"reference: {REFERENCE_BACKEND} on CPU")
    start = time.perf_counter()
    ref_model = mbert_edge.load(bundle.path, backend=REFERENCE_BACKEND, precision=ref_precision)
    reference_info = {
        "backend": REFERENCE_BACKEND,
        "file": ref_model.model_file.path,
        "precision": ref_model.model_file.precision,
        "load_s": time.perf_counter() - start,
    }
    reference = task_outputs(ref_model, plain)
    checks = []
    for name, entry, reason in planned(names, files):
        if reason is not None or entry is None:
            checks.append(
                Check(
                    name, entry.path if entry else None, entry.precision if entry else None, UNAVAILABLE, reason or ""
                )
            )
            continue
        say(f"{name}: {entry.path} ({entry.precision})")
        check = _compare_one(mbert_edge.load, bundle.path, name, entry, reference, texts, tolerances)
        if polygraphy and name == "tensorrt" and entry.backend == "tensorrt":
            check.polygraphy = polygraphy_compare(bundle.file_path(entry), entry, ref_model.tokenizer, plain)
        checks.append(check)
    source = texts_source or "the given texts"
    text_info = {"source": source, "count": len(texts), "languages": sorted({lang for lang, _ in texts})}
    installed = [n for n in names if n in backends.REGISTRY and backends.REGISTRY[n].is_available()]
    return Report(env, info, text_info, reference_info, checks, installed)


def _compare_one(
    load: Callable[..., Any],
    bundle_path: Path,
    name: str,
    entry: FileEntry,
    reference: Outputs,
    texts: list[tuple[str, str]],
    tolerances: dict[str, Tolerance],
) -> Check:
    tolerance = tolerances.get(entry.precision or "fp32", TOLERANCES["fp32"])
    check = Check(name, entry.path, entry.precision, ERROR, tolerance=asdict(tolerance))
    start = time.perf_counter()
    try:
        model = load(bundle_path, backend=name, precision=entry.precision)
    except Exception as exc:  # EngineBuildError, CUDA errors, ONNX Runtime's untyped ones: all go in the report
        check.load_s = time.perf_counter() - start
        check.message = f"could not load: {type(exc).__name__}: {exc}"
        log.debug("gpu-check %s", name, exc_info=True)
        return check
    check.load_s = time.perf_counter() - start
    how = getattr(model.backend, "how", None)
    if isinstance(how, str):
        check.engine, check.cache_hit = how, how == "cache"
    # stay inside the engine's optimization profile (TensorRT's own, else the one the manifest records)
    profile = getattr(model.backend, "profile", None) or (entry.profiles[0] if entry.profiles else None)
    batch_size = min(32, int(profile.max[0])) if profile is not None else 32
    start = time.perf_counter()
    try:
        got = task_outputs(model, [t for _, t in texts], batch_size=batch_size)
    except Exception as exc:  # ShapeOutOfProfileError, a failed execute_async_v3, ...
        check.message = f"could not run: {type(exc).__name__}: {exc}"
        log.debug("gpu-check %s", name, exc_info=True)
        return check
    finally:
        check.run_s = time.perf_counter() - start
        close = getattr(model.backend, "close", None)
        if callable(close):
            close()
    passed, check.metrics, check.per_text = compare(reference, got, texts, tolerance)
    check.status = PASSED if passed else FAILED
    return check


# ---------------------------------------------------------------------------------------------- polygraphy
def polygraphy_compare(
    model_path: Path, entry: FileEntry, tokenizer: Any, texts: Sequence[str], with_tensorrt: bool | None = None
) -> dict[str, Any]:
    """Polygraphy's own comparison of one TensorRT file: TensorRT against ONNX Runtime CPU on the *same* file
    and the same feeds (one text per iteration), raw outputs by cosine. It tells a bug in the engine (this
    fails) from a file that drifted at export (this passes while the comparison with fp32 fails).

    Polygraphy imports TensorRT lazily, so without TensorRT (``with_tensorrt=False``, the default when the
    ``tensorrt`` backend is unavailable) only its ONNX Runtime half runs: that half is what CPU tests check.
    """
    if not _found("polygraphy"):
        return {"ran": [], "summary": "not installed (pip install polygraphy)"}
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator, CompareFunc

    if with_tensorrt is None:
        with_tensorrt = backends.REGISTRY["tensorrt"].is_available()
    names = _onnx_input_names(model_path)
    feeds = []
    for enc in tokenizer.encode(list(texts)):
        padded = tokenizer.pad([enc], multiple_of=8)
        feeds.append({n: padded[n] for n in names if n in padded})
    runners = [OnnxrtRunner(SessionFromOnnx(str(model_path), providers=["cpu"]), name="onnxrt-cpu")]
    if with_tensorrt:
        from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, Profile, TrtRunner

        p = (entry.profiles or ())[0] if entry.profiles else None
        profiles = []
        if p is not None:
            profile = Profile()
            for n in names:
                profile.add(n, min=list(p.min), opt=list(p.opt), max=list(p.max))
            profiles = [profile]
        config = CreateConfig(profiles=profiles) if profiles else CreateConfig()
        runners.append(TrtRunner(EngineFromNetwork(NetworkFromOnnxPath(str(model_path)), config=config), name="trt"))
    try:
        results = Comparator.run(runners, data_loader=feeds)
    except Exception as exc:
        return {"ran": [r.name for r in runners], "summary": f"error: {type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {"ran": [r.name for r in runners], "iterations": len(feeds)}
    if len(runners) < 2:
        out["summary"] = f"ONNX Runtime CPU half ran on {len(feeds)} texts; TensorRT unavailable, nothing compared"
        return out
    threshold = TOLERANCES.get(entry.precision or "fp32", TOLERANCES["fp32"]).min_cosine
    accuracy = Comparator.compare_accuracy(
        results, compare_func=CompareFunc.distance_metrics(cosine_similarity_threshold=threshold)
    )
    out["passed"] = bool(accuracy)
    out["summary"] = f"TensorRT vs ONNX Runtime CPU on this file: {'passed' if accuracy else 'FAILED'}"
    return out


def _onnx_input_names(model_path: Path) -> list[str]:
    manifest = model_path.parent / MANIFEST_NAME
    if manifest.exists():
        from mbert_edge.manifest import Manifest

        return list(Manifest.read(manifest).inputs)
    return ["input_ids", "attention_mask", "token_type_ids"]


def exit_code(report: Report) -> int:
    """The process exit code for ``report`` (see the module's docstring)."""
    return report.exit_code


__all__ = [
    "EXIT_FAILED",
    "EXIT_NO_GPU",
    "EXIT_PASSED",
    "GPU_BACKENDS",
    "TOLERANCES",
    "Check",
    "Report",
    "Tolerance",
    "compare",
    "environment",
    "exit_code",
    "run_check",
    "sample_texts",
]
