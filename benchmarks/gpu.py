"""GPU benchmark: our runtime on TensorRT (fp16, int8) and ONNX Runtime CUDA (fp16) against PyTorch fp16.

Runs only where an NVIDIA GPU is present (a desktop/server GPU or a Jetson); elsewhere it says what is missing
in one line and exits 3 (the exit code of ``mbert-edge gpu-check`` for "no GPU backend can run"), writing nothing.

    python benchmarks/gpu.py --bundle bundles/e5-small-trt --checkpoint default \\
        [--entries tensorrt-fp16,tensorrt-int8,ort-cuda-fp16,pytorch-fp16] [--rounds 10] \\
        [--out benchmarks/results/gpu-<gpu>-<bundle>]

The bundle is a sentence-embedding bundle exported with ``--target tensorrt --precision fp16,int8`` (its
TensorRT-ready ONNX files, plus the fp32 ``model.onnx`` every bundle keeps). ``--checkpoint`` is the Hugging Face
checkpoint it was exported from (``default``: the embedded multilingual-e5-small, converted as ``mbert-edge export
default`` does), run by the PyTorch peer.

Entries (``--entries``; one that cannot run here is reported as skipped with the reason the runtime's typed error
gives):

* ``tensorrt-fp16``, ``tensorrt-int8``: ``mbert_edge.load(bundle, backend="tensorrt", precision=...)``. The engine
  build is measured first: the TensorRT backend constructed on the bundle's file with an **empty engine cache**
  (and its timing cache empty: one fresh cache directory per entry; prebuilt engines in the bundle ignored), then
  the user's ``mbert_edge.load`` is timed loading that engine from the cache; the second load is what is timed.
* ``ort-cuda-fp16``: ``mbert_edge.load(bundle, backend="onnxruntime-cuda", precision="fp16")``.
* ``pytorch-fp16``: the peer a user would pick: transformers ``AutoModel`` in ``torch.float16`` on ``cuda`` (its
  default attention), its own fast tokenizer, the bundle's pooling, prefix and normalization (pooled in fp32 on
  the GPU), ``torch.cuda.synchronize()`` before and after every timed call.
* ``ort-cpu`` (optional, not a GPU entry): ONNX Runtime on the CPU, the fp32 file. It is always loaded as the
  reference for agreement; listed in ``--entries`` it is timed too.

What is measured, per entry:

* **Latency**, median and p90 (and p99, for the CPU benchmark's JSON shape) of one call at b1 x s16 and
  b1 x s128, **throughput** (sequences/s) at b32 x s128. Calls go through the public API, which takes texts:
  ``predictor.embed(texts)`` (tokenization, batching, pooling included; it returns numpy, so every call has
  finished on the GPU when it returns), and the same for the peer (tokenizer, model, pooling, copy to numpy).
  So the texts are real multilingual text of exact token lengths, as in ``benchmarks/students.py``: held-out
  corpus paragraphs of the ``--languages``, cut to exactly 16 / 128 tokens for every entry's tokenizer (prefix
  and special tokens included); b1 calls rotate over the languages, the b32 batch holds them in turn. Timing runs
  in alternating rounds as ``benchmarks/run.py`` does: warm-up calls, then every round visits every entry in a
  new random order, with one untimed call per entry and shape before its timed repeats.
* **GPU memory**: a fresh process per entry loads it, answers once (cold start), runs each shape once, and
  reports the peak device memory of that process: NVML's per-process used memory (``pynvml`` from
  ``nvidia-ml-py``, if installed; sampled every 5 ms), else ``nvidia-smi --query-compute-apps=pid,used_memory``
  for its PID (after load and after each shape), else the device-wide used memory (``cudaMemGetInfo``) minus its
  value before the load; for the peer also ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``. Which
  method gave the number is recorded beside it. Peak RSS (``VmHWM``) of that process too (on a Jetson the GPU
  shares that memory).
* **Engine build time** (TensorRT entries) as above, and the engine's size.
* **Agreement**: cosine of each entry's embeddings with ONNX Runtime CPU on the fp32 file, on the packaged
  multilingual sample texts (``mbert_edge_export/data/parity_texts.txt``, the texts of ``mbert-edge gpu-check``).
* **Ratios** against ``pytorch-fp16``: its median time / the entry's (above 1: faster than PyTorch fp16).

Writes ``<out>.json`` (the CPU benchmark's shape: ``machine``, ``versions``, ``models -> <bundle> -> variants ->
<entry> -> b1s16 / b1s128 / b32s128`` with ``median_ms``, ``p99_ms``, ``seq_per_s``, ``size_mb``, ``peak_rss_mb``,
``cold_start_s``, ``cosine_to_fp32``, plus the GPU facts) and ``<out>.md``. Exit 0: measured; 1: every entry that
could run failed (results written, with the errors); 2: not a sentence-embedding bundle, or one that takes fewer
than 128 tokens; 3: no GPU entry can run here (nothing written).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import logging
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report
import run as cpu_bench
import students

from mbert_edge import backends, gpu_check
from mbert_edge.backends import engine_cache
from mbert_edge.errors import BackendUnavailableError
from mbert_edge.manifest import FEATURE_EXTRACTION, FileEntry

log = logging.getLogger("benchmarks.gpu")

SHAPES: dict[str, tuple[int, int]] = dict(students.SHAPES)  # b1s16, b1s128, b32s128
SHAPE_TITLES = students.SHAPE_TITLES
PEER = "pytorch-fp16"
REFERENCE = "ort-cpu"
EXIT_OK, EXIT_FAILED, EXIT_NO_GPU = 0, 1, gpu_check.EXIT_NO_GPU
DEFAULT_LANGUAGES = "en,de,fr,es,ru,zh,ar,hi"
WORKER_TIMEOUT_S = 1800  # a worker loads from the engine cache; it never builds
#: the peer's device and dtype (tests run the peer's code on the CPU in float32 by changing these)
TORCH_DEVICE = "cuda"
TORCH_DTYPE = "float16"


@dataclass(frozen=True)
class EntrySpec:
    """One way of running the bundle's model: ours through a backend, or the PyTorch peer."""

    name: str
    kind: str  # "ours" or "pytorch"
    backend: str | None  # ours: the backend name passed to mbert_edge.load
    precision: str | None  # ours: the precision passed to mbert_edge.load
    gpu: bool
    description: str


ENTRIES: dict[str, EntrySpec] = {
    e.name: e
    for e in (
        EntrySpec("tensorrt-fp16", "ours", "tensorrt", "fp16", True, "mbert_edge, backend='tensorrt', fp16 file"),
        EntrySpec("tensorrt-int8", "ours", "tensorrt", "int8", True, "mbert_edge, backend='tensorrt', int8 file"),
        EntrySpec(
            "ort-cuda-fp16", "ours", "onnxruntime-cuda", "fp16", True, "mbert_edge, backend='onnxruntime-cuda', fp16"
        ),
        EntrySpec(PEER, "pytorch", None, "fp16", True, "transformers AutoModel, torch.float16 on cuda"),
        EntrySpec(REFERENCE, "ours", "onnxruntime", "fp32", False, "mbert_edge, backend='onnxruntime' (CPU), fp32"),
    )
}
DEFAULT_ENTRIES = ("tensorrt-fp16", "tensorrt-int8", "ort-cuda-fp16", PEER)


@dataclass(frozen=True)
class Settings:
    """How much to time: warm-up calls per entry and shape, rounds, timed repeats per round and shape."""

    rounds: int = 10
    reps: dict[str, int] = field(default_factory=lambda: {"b1s16": 20, "b1s128": 20, "b32s128": 5})
    warmup: int = 3


# ------------------------------------------------------------------------------------------- which entries run


def torch_reason(checkpoint: str | Path | None) -> str | None:
    """Why the PyTorch peer cannot run here (no checkpoint, no torch or transformers, no GPU, a CPU-only torch), or
    None. Imports torch only when a GPU is present."""
    if checkpoint is None:
        return "no --checkpoint given (the Hugging Face checkpoint the bundle was exported from, or 'default')"
    for module in ("torch", "transformers"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install torch transformers; on Jetson NVIDIA's torch wheel)"
    present, what = engine_cache.nvidia_gpu_present()
    if not present:
        return what
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (a CPU-only build of torch?)"
    return None


def machine_reason(spec: EntrySpec, checkpoint: str | Path | None) -> str | None:
    """What this machine lacks to run ``spec`` (library, provider, GPU), or None; the bundle is not looked at."""
    if spec.kind == "pytorch":
        return torch_reason(checkpoint)
    cls = backends.REGISTRY[spec.backend or ""]
    if cls.is_available():
        return None
    reason = backends.unavailable_reason(cls)
    hint = f" (pip install 'mbert-edge[{cls.extra}]')" if cls.extra else ""
    return f"backend {spec.backend!r} is not available on this machine: {reason or 'not installed' + hint}"


def bundle_reason(spec: EntrySpec, files: list[FileEntry]) -> str | None:
    """Why ``mbert_edge.load(bundle, backend=..., precision=...)`` would refuse ``spec`` here (the message of its
    ``BackendUnavailableError``), or None. The reference falls back to the CPU's favourite file without fp32."""
    if spec.kind == "pytorch":
        return None
    precision = spec.precision
    if spec.name == REFERENCE and not any(f.backend == "onnxruntime" and f.precision == "fp32" for f in files):
        precision = None
    try:
        backends.choose(spec.backend or "", files, precision)
    except BackendUnavailableError as exc:
        return str(exc)
    return None


def plan(names: Sequence[str], checkpoint: str | Path | None, files: list[FileEntry] | None) -> dict[str, str | None]:
    """Per entry: None when it can run here, else why not; the machine is checked first, then (``files`` given)
    whether the bundle has a file for it."""
    out: dict[str, str | None] = {}
    for name in names:
        spec = ENTRIES[name]
        reason = machine_reason(spec, checkpoint)
        if reason is None and files is not None:
            reason = bundle_reason(spec, files)
        out[name] = reason
    return out


def gpu_runnable(reasons: Mapping[str, str | None]) -> list[str]:
    """The GPU entries (not ``ort-cpu``) that can run, in the given order."""
    return [n for n, r in reasons.items() if r is None and ENTRIES[n].gpu]


def no_gpu_message(reasons: Mapping[str, str | None]) -> str:
    """One line: no GPU entry can run, why for each, and that nothing was measured or written."""
    present, what = engine_cache.nvidia_gpu_present()
    head = "no GPU entry can run here" + ("" if present else f" ({what})")
    groups: dict[str, list[str]] = {}  # entries with the same reason share it
    for n, r in reasons.items():
        if r is not None and ENTRIES[n].gpu:
            groups.setdefault(r, []).append(n)
    why = "; ".join(f"{', '.join(ns)}: {r}" for r, ns in groups.items())
    line = f"benchmarks/gpu.py: {head}; {why}; nothing measured, no files written (exit {EXIT_NO_GPU})"
    return " ".join(line.split())


# ----------------------------------------------------------------------------------------------- the runners


class Runner(Protocol):
    """What the timing loop needs: the call a user makes, and a way to wait for the device."""

    tokenizer: Any
    default_prefix: str

    def run(self, texts: list[str]) -> np.ndarray: ...

    def synchronize(self) -> None: ...


class OursRunner:
    """A bundle through the public runtime: ``mbert_edge.load(bundle, backend=..., precision=...)``, then
    ``embed(texts, batch_size=...)`` (the batch size capped at the TensorRT profile's maximum, as gpu-check does)."""

    kind = "ours"

    def __init__(self, bundle: Path, backend: str, precision: str | None) -> None:
        from tokenizers import Tokenizer

        import mbert_edge

        self.path = Path(bundle)
        self.predictor = mbert_edge.load(self.path, backend=backend, precision=precision)
        entry = self.predictor.model_file
        profile = getattr(self.predictor.backend, "profile", None) or (entry.profiles[0] if entry.profiles else None)
        self.batch_size = min(32, int(profile.max[0])) if profile is not None else 32
        spec = self.predictor.manifest.embedding
        self.default_prefix = spec.default_prefix if spec else ""
        tok_file = self.predictor.manifest.tokenizer_file().path
        self.tokenizer = students.raw_tokenizer(Tokenizer.from_file(str(self.path / tok_file)))
        self.tokenizer_key = f"bundle:{self.path}"

    def run(self, texts: list[str]) -> np.ndarray:
        """The user's call; numpy comes back, so the device has finished."""
        return self.predictor.embed(texts, batch_size=self.batch_size)

    def synchronize(self) -> None:
        """Nothing to wait for: ``embed`` returns host arrays."""

    def model_calls(self, texts: list[str]) -> int:
        """How many backend calls one ``run(texts)`` makes (the runtime caps the padded tokens per call)."""
        backend = self.predictor.backend
        calls = 0
        original = backend.run

        def counting(feeds: Any) -> Any:
            nonlocal calls
            calls += 1
            return original(feeds)

        backend.run = counting  # type: ignore[method-assign]
        try:
            self.run(texts)
        finally:
            del backend.run
        return calls

    def describe(self) -> dict[str, Any]:
        """The backend and the model file the runtime chose."""
        f = self.predictor.model_file
        return {
            "kind": self.kind,
            "backend": self.predictor.backend.name,
            "file": f.path,
            "precision": f.precision,
            "batch_size": self.batch_size,
        }

    def size_mb(self) -> float:
        """The model file and its weights, as the manifest lists them."""
        files = self.predictor.manifest.files_of(self.predictor.model_file)
        return sum(f.size for f in files) / 1e6

    def close(self) -> None:
        """Free the backend's device memory now (TensorRT), not at garbage collection."""
        close = getattr(self.predictor.backend, "close", None)
        if callable(close):
            close()


class TorchRunner:
    """The peer: transformers ``AutoModel`` in fp16 on the GPU, its fast tokenizer (truncation at the bundle's
    ``max_length``), pooling, prefix and normalization as the bundle's manifest says, pooled in fp32 on the device;
    one model call per batch. Timed calls are bracketed by ``torch.cuda.synchronize()``."""

    kind = "pytorch"

    def __init__(self, checkpoint: Path, pooling: str, normalize: bool, prefix: str, max_length: int) -> None:
        import torch
        import transformers

        self.torch = torch
        self.path = Path(checkpoint)
        self.device = torch.device(TORCH_DEVICE)
        self.dtype = getattr(torch, TORCH_DTYPE)
        self.pooling, self.normalize, self.default_prefix = pooling, normalize, prefix
        self.max_length = max_length
        self.hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
        major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
        dtype_arg = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"  # torch_dtype is deprecated since 4.56
        model = transformers.AutoModel.from_pretrained(str(checkpoint), **{dtype_arg: self.dtype})
        self.model = model.to(self.device).eval()
        self.tokenizer = students.raw_tokenizer(self.hf_tokenizer.backend_tokenizer)
        self.tokenizer_key = f"checkpoint:{self.path}"

    def run(self, texts: list[str]) -> np.ndarray:
        """Tokenize, copy to the device, run, pool, normalize, copy back."""
        torch = self.torch
        batch = self.hf_tokenizer(
            [self.default_prefix + t for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state.float()
            if self.pooling == "cls":
                vectors = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.cpu().numpy()

    def synchronize(self) -> None:
        """Wait for every queued kernel (CUDA only)."""
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def model_calls(self, texts: list[str]) -> int:
        """One forward per call."""
        return 1

    def describe(self) -> dict[str, Any]:
        """torch, transformers, device, dtype and attention implementation."""
        import transformers

        return {
            "kind": self.kind,
            "checkpoint": str(self.path),
            "device": str(self.device),
            "dtype": TORCH_DTYPE,
            "attention": getattr(self.model.config, "_attn_implementation", None),
            "torch": self.torch.__version__,
            "transformers": transformers.__version__,
            "batch_size": 32,
        }

    def size_mb(self) -> float:
        """The checkpoint's weight files."""
        files = [*self.path.glob("*.safetensors")] or [*self.path.glob("*.bin")]
        return sum(p.stat().st_size for p in files) / 1e6

    def close(self) -> None:
        """Drop the model and return the cached device memory."""
        self.model = None
        gc.collect()
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()


def make_runner(spec: EntrySpec, bundle: Path, checkpoint: Path | None) -> OursRunner | TorchRunner:
    """Load one entry (TensorRT: from whatever engine cache ``MBERT_EDGE_TENSORRT_CACHE`` names)."""
    if spec.kind == "pytorch":
        if checkpoint is None:
            raise ValueError("the PyTorch peer needs --checkpoint")
        from mbert_edge.bundle import Bundle

        m = Bundle.open(bundle, verify=False).manifest
        emb = m.embedding
        return TorchRunner(
            checkpoint,
            pooling=emb.pooling if emb else "mean",
            normalize=emb.normalize if emb else True,
            prefix=emb.default_prefix if emb else "",
            max_length=m.max_length,
        )
    precision = spec.precision
    if spec.name == REFERENCE:
        from mbert_edge.bundle import Bundle

        files = Bundle.open(bundle, verify=False).manifest.model_files()
        if not any(f.backend == "onnxruntime" and f.precision == "fp32" for f in files):
            precision = None
    return OursRunner(bundle, spec.backend or "auto", precision)


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def load_tensorrt(spec: EntrySpec, bundle: Path, cache_dir: Path) -> tuple[OursRunner, dict[str, Any]]:
    """Build the engine with an empty cache (timed), then ``mbert_edge.load`` it from that cache (timed)."""
    from mbert_edge.backends.tensorrt import TensorRTBackend
    from mbert_edge.bundle import Bundle

    if cache_dir.exists() and any(cache_dir.iterdir()):
        raise ValueError(f"the engine cache {cache_dir} is not empty: the build would not be measured")
    cache_dir.mkdir(parents=True, exist_ok=True)
    b = Bundle.open(bundle, verify=False)
    _, entry = backends.choose("tensorrt", b.manifest.model_files(), spec.precision)
    with _env(engine_cache.CACHE_ENV, str(cache_dir)):
        start = time.perf_counter()
        first = TensorRTBackend(b.file_path(entry), precision=entry.precision, cache_dir=cache_dir, use_prebuilt=False)
        build_s = time.perf_counter() - start
        first_how, engine_file = first.how, first.cache_path
        first.close()
        del first
        gc.collect()
        start = time.perf_counter()
        runner = OursRunner(bundle, "tensorrt", spec.precision)
        load_s = time.perf_counter() - start
    backend = runner.predictor.backend
    facts = {
        "build_s": build_s,
        "build_how": first_how,  # "built": the cache was empty
        "cache_load_s": load_s,  # mbert_edge.load with the engine in the cache
        "cache_load_how": getattr(backend, "how", None),  # "cache" (or "bundle": a prebuilt engine fitted)
        "engine_mb": engine_file.stat().st_size / 1e6 if engine_file.exists() else None,
        "profile": _profile(getattr(backend, "profile", None)),
        "cache_dir": str(cache_dir),
    }
    return runner, facts


def _profile(p: Any) -> dict[str, list[int]] | None:
    return None if p is None else {"min": list(p.min), "opt": list(p.opt), "max": list(p.max)}


# ------------------------------------------------------------------------------------------------- timing


def warm_up(runners: Mapping[str, Runner], inputs: Mapping[str, Sequence[list[str]]], calls: int) -> dict[str, str]:
    """``calls`` untimed calls per entry and shape (kernel selection, allocator growth); returns the entries that
    failed, with the error (they are not timed)."""
    failed: dict[str, str] = {}
    for name, runner in runners.items():
        try:
            for batches in inputs.values():
                for _ in range(calls):
                    runner.run(batches[0])
            runner.synchronize()
        except Exception as exc:  # ShapeOutOfProfileError, CUDA out of memory, ...: reported, not fatal
            failed[name] = f"failed while warming up: {type(exc).__name__}: {exc}"
            log.warning("%s: %s", name, failed[name])
    return failed


def time_rounds(
    runners: Mapping[str, Runner],
    inputs: Mapping[str, Sequence[list[str]]],
    rounds: int,
    reps: Mapping[str, int],
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Seconds per timed call, per entry and shape, in alternating rounds: every round visits every entry in a new
    random order; per entry and shape one untimed call (the device last ran another model), then ``reps[shape]``
    timed calls, each between two ``synchronize()``; the calls of a shape rotate over its batches."""
    names = list(runners)
    times: dict[str, dict[str, list[float]]] = {n: {s: [] for s in inputs} for n in names}
    turn = dict.fromkeys(inputs, 0)
    rng = random.Random(seed)
    for r in range(rounds):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            runner = runners[name]
            for shape, batches in inputs.items():
                runner.run(batches[turn[shape] % len(batches)])
                for _ in range(reps.get(shape, 1)):
                    batch = batches[turn[shape] % len(batches)]
                    turn[shape] += 1
                    runner.synchronize()
                    t0 = clock()
                    runner.run(batch)
                    runner.synchronize()
                    times[name][shape].append(clock() - t0)
        if progress:
            progress(f"  timing round {r + 1}/{rounds}")
    return times


def stats(seconds: Sequence[float], batch: int = 1) -> dict[str, float]:
    """Median, p90 and p99 in ms and the number of calls; for batches, sequences per second at the median."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    med = float(np.median(ms))
    out: dict[str, float] = {
        "median_ms": med,
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "n": len(ms),
    }
    if batch > 1:
        out["seq_per_s"] = batch * 1000 / med
    return out


def speed_ratios(variants: Mapping[str, Mapping[str, Any]], base: str = PEER) -> dict[str, dict[str, float]]:
    """Per entry and shape: ``base``'s median time / the entry's (above 1: faster than ``base``; at b32 x s128 the
    ratio of throughputs). Empty when ``base`` has no times."""
    latency = {n: {s: v[s] for s in SHAPES if isinstance(v.get(s), dict)} for n, v in variants.items()}
    return students.speed_ratios(latency, base) if latency.get(base) else {}


def cosines(reference: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Row-wise cosine of two embedding matrices: mean, min and the number of texts."""
    values = [gpu_check.cosine(a, b) for a, b in zip(reference, got, strict=True)]
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "texts": len(values)}


# ----------------------------------------------------------------------------------------------------- texts


def fallback_candidates(langs: Sequence[str]) -> dict[str, list[str]]:
    """Without the held-out corpus (``dataset-build`` not installed): per language, its packaged sample sentences
    joined and repeated until long enough to cut at 128 tokens."""
    pairs, _ = gpu_check.sample_texts()
    out: dict[str, list[str]] = {}
    for lang in langs:
        sentences = [t for code, t in pairs if code == lang]
        if sentences:
            joiner = "" if lang in ("zh", "ja", "th") else " "
            text = joiner.join(sentences)
            while len(text) < 1500:
                text = joiner.join([text, *sentences])
            out[lang] = [text]
    return out


def timing_texts(runners: Mapping[str, Runner], langs: Sequence[str]) -> tuple[dict[str, list[list[str]]], str]:
    """Per shape, the batches the timed calls take in turn (texts of exactly the shape's tokens for every entry's
    tokenizer), and where the texts came from."""
    try:
        candidates = students.candidate_texts(langs)
        source = "held-out corpus paragraphs (dataset-build), cut by tokens"
    except Exception as exc:  # ExportError: dataset-build is not installed (a device with the runtime only)
        log.info("held-out corpus not available (%s); using the packaged sample sentences", exc)
        candidates = fallback_candidates(langs)
        source = "packaged sample sentences (parity_texts.txt) joined per language, cut by tokens"
    distinct: dict[str, Runner] = {}
    for r in runners.values():
        distinct.setdefault(getattr(r, "tokenizer_key", id(r)), r)  # one check per distinct tokenizer
    return students.timing_inputs(distinct, list(candidates), candidates), source


# ---------------------------------------------------------------------------------------------- GPU memory


def parse_compute_apps(text: str, pid: int) -> float | None:
    """MiB used by ``pid`` in ``nvidia-smi --query-compute-apps=pid,used_memory --format=csv`` output (with or
    without header and units; one line per GPU the process uses, summed); None when it is not listed."""
    total: float | None = None
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[0].isdigit() or int(parts[0]) != pid:
            continue
        m = re.match(r"(\d+(?:\.\d+)?)", parts[1])
        if m:
            total = (total or 0.0) + float(m.group(1))
    return total


def nvml_process_mb(nvml: Any, pid: int) -> float | None:
    """MiB used by ``pid`` on every GPU, from NVML's compute processes; None when NVML does not list it (in a
    container with its own PID namespace NVML shows host PIDs)."""
    total, found = 0, False
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == pid and proc.usedGpuMemory is not None:
                total += int(proc.usedGpuMemory)
                found = True
    return total / 2**20 if found else None


def open_nvml() -> Any | None:
    """``pynvml`` (nvidia-ml-py), initialized, or None (not installed; no NVML library, as on Jetson)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # ImportError, NVMLError_LibraryNotFound, a driver without NVML
        return None


def nvidia_smi_mb(pid: int) -> float | None:
    """This process's MiB according to ``nvidia-smi``, or None."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_compute_apps(out.stdout, pid) if out.returncode == 0 else None


def device_used_mb(use_torch: bool) -> float | None:
    """Device-wide used memory (total - free, ``cudaMemGetInfo``), through torch or cuda-python; None without."""
    try:
        if use_torch:
            import torch

            free, total = torch.cuda.mem_get_info()
            return (total - free) / 2**20
        from mbert_edge.backends.tensorrt import _Cuda

        cuda = _Cuda()
        free, total = cuda.check(cuda.rt.cudaMemGetInfo())
        return (int(total) - int(free)) / 2**20
    except Exception:  # no cuda-python, no device
        return None


METHODS = {
    "nvml": "NVML per-process used memory (nvmlDeviceGetComputeRunningProcesses), peak of samples every 5 ms",
    "nvidia-smi": "nvidia-smi --query-compute-apps=pid,used_memory for this process, after load and each shape",
    "cudaMemGetInfo": "device-wide used memory (cudaMemGetInfo) minus its value before the load: counts other "
    "processes' changes too; on a Jetson it is the shared system memory",
}


class MemoryProbe:
    """This process's GPU memory by every method available here; the peak per method. NVML is sampled by a
    background thread; nvidia-smi and cudaMemGetInfo at each :meth:`sample`."""

    def __init__(
        self,
        pid: int,
        nvml: Any | None,
        smi: Callable[[int], float | None] | None,
        device_used: Callable[[], float | None] | None,
        baseline_mb: float | None,
    ) -> None:
        self.pid, self.nvml, self.smi, self.device_used, self.baseline_mb = pid, nvml, smi, device_used, baseline_mb
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _keep(self, method: str, value: float | None) -> None:
        if value is not None:
            self.peaks[method] = max(value, self.peaks.get(method, value))

    def sample(self) -> None:
        """One sample by every method."""
        if self.nvml is not None:
            with contextlib.suppress(Exception):
                self._keep("nvml", nvml_process_mb(self.nvml, self.pid))
        if self.smi is not None:
            self._keep("nvidia-smi", self.smi(self.pid))
        if self.device_used is not None and self.baseline_mb is not None:
            used = self.device_used()
            self._keep("cudaMemGetInfo", None if used is None else used - self.baseline_mb)

    def start(self, interval: float = 0.005) -> None:
        """Sample NVML every ``interval`` seconds until :meth:`stop`."""
        if self.nvml is None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                with contextlib.suppress(Exception):
                    self._keep("nvml", nvml_process_mb(self.nvml, self.pid))

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the background sampling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def result(self) -> dict[str, Any]:
        """The first method with a number (nvml, nvidia-smi, cudaMemGetInfo), and every method's peak."""
        for method in METHODS:
            if method in self.peaks:
                return {"peak_mb": self.peaks[method], "method": method, "by_method": dict(self.peaks)}
        return {"peak_mb": None, "method": None, "by_method": {}, "note": "no NVML, nvidia-smi or CUDA query here"}


def vm_hwm_mb() -> float | None:
    """This process's peak RSS (``VmHWM``)."""
    with contextlib.suppress(OSError, StopIteration), open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    return None


def worker(name: str, bundle: Path, checkpoint: Path | None, texts_file: Path) -> dict[str, Any]:
    """In a fresh process: load ``name`` and answer once (cold start), run every shape once, and report the peak
    GPU memory of this process and its peak RSS."""
    spec = ENTRIES[name]
    inputs = json.loads(texts_file.read_text(encoding="utf-8"))
    use_torch = spec.kind == "pytorch"
    pid = os.getpid()
    nvml = open_nvml() if spec.gpu else None
    smi = nvidia_smi_mb if spec.gpu and shutil.which("nvidia-smi") else None
    baseline = None
    # the last resort needs a value before the load (CUDA is then initialized before the cold start's clock starts);
    # on a Jetson there is no NVML and nvidia-smi lists no per-process memory, so it is taken there too
    if spec.gpu and nvml is None and (smi is None or gpu_check.jetson_info() is not None):
        baseline = device_used_mb(use_torch)
    start = time.perf_counter()
    runner = make_runner(spec, bundle, checkpoint)
    runner.run(inputs["b1s16"][0])
    runner.synchronize()
    cold = time.perf_counter() - start
    out: dict[str, Any] = {"cold_start_s": cold, "cuda_initialized_before_cold_start": baseline is not None}
    probe = MemoryProbe(pid, nvml, smi, (lambda: device_used_mb(use_torch)) if baseline is not None else None, baseline)
    probe.sample()
    probe.start()
    try:
        for batches in inputs.values():
            runner.run(batches[0])
            runner.synchronize()
            probe.sample()
    finally:
        probe.stop()
    if spec.gpu:
        memory = probe.result()
        if use_torch and sys.modules["torch"].cuda.is_available():
            import torch

            memory["torch_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
            memory["torch_max_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
        out["gpu_memory"] = memory
    out["peak_rss_mb"] = vm_hwm_mb()
    return out


def run_worker(
    name: str, bundle: Path, checkpoint: Path | None, texts_file: Path, env: Mapping[str, str]
) -> dict[str, Any]:
    """Run :func:`worker` in a fresh process; its JSON, or ``{"worker_error": ...}``."""
    args = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--bundle", str(bundle)]
    args += ["--texts-file", str(texts_file)] + (["--checkpoint", str(checkpoint)] if checkpoint else [])
    try:
        out = subprocess.run(args, capture_output=True, text=True, env=dict(env), timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"worker_error": f"timed out after {WORKER_TIMEOUT_S} s"}
    if out.returncode != 0:
        return {"worker_error": out.stderr.strip()[-800:]}
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"worker_error": f"no JSON in the worker's output: {out.stdout[-300:]!r}"}


# ------------------------------------------------------------------------------------------ machine, versions


def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version (``/proc/driver/nvidia/version``, else NVML), or None (Jetson: see L4T)."""
    with contextlib.suppress(OSError):
        m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d[\w.-]*)", Path("/proc/driver/nvidia/version").read_text())
        if m:
            return m.group(1)
    nvml = open_nvml()
    if nvml is not None:
        with contextlib.suppress(Exception):
            v = nvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
    return None


def jetson_power_mode() -> str | None:
    """``nvpmodel -q``'s answer on a Jetson (the power mode the timings ran in), or None."""
    exe = shutil.which("nvpmodel")
    if exe is None:
        return None
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=10)
        text = " ".join(out.stdout.split())
        return text or None
    return None


def machine() -> dict[str, Any]:
    """The CPU benchmark's machine facts, plus the GPU (name, compute capability, memory, CUDA driver and runtime),
    the NVIDIA driver, TensorRT, cuda-python, ONNX Runtime's providers and, on a Jetson, L4T/JetPack, the board and
    the power mode (from ``mbert_edge.gpu_check``)."""
    info: dict[str, Any] = {}
    with contextlib.suppress(OSError):
        info = cpu_bench.machine()
    env = gpu_check.environment()
    gpu = dict(env["gpu"])
    if not gpu.get("name") and "torch" in sys.modules:  # no cuda-python: ask torch, if the peer loaded it
        torch = sys.modules["torch"]
        with contextlib.suppress(Exception):
            if torch.cuda.is_available():
                gpu["name"] = torch.cuda.get_device_name(0)
                gpu["compute_capability"] = list(torch.cuda.get_device_capability(0))
                gpu["total_memory"] = torch.cuda.get_device_properties(0).total_memory
                gpu["cuda_runtime"] = torch.version.cuda
    info.update(
        gpu=gpu,
        nvidia_driver=nvidia_driver(),
        tensorrt=env["tensorrt"],
        cuda_python=env["cuda_python"],
        onnxruntime=env["onnxruntime"],
        jetson=env["jetson"],
    )
    if env["jetson"]:
        info["power_mode"] = jetson_power_mode()
    return info


def versions() -> dict[str, str]:
    """The CPU benchmark's package versions, plus the GPU packages (TensorRT as imported: JetPack's has no pip
    metadata)."""
    import importlib.metadata as md

    out = cpu_bench.versions()
    for dist in ("onnxruntime-gpu", "tensorrt", "cuda-python", "cuda-bindings", "nvidia-ml-py", "tokenizers"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    trt = gpu_check.tensorrt_info().get("version")
    if trt and "tensorrt" not in out:
        out["tensorrt"] = trt
    return out


# ------------------------------------------------------------------------------------------------- measure


def measure(
    bundle: Path,
    names: Sequence[str],
    checkpoint: Path | None,
    settings: Settings,
    cache_root: Path,
    languages: Sequence[str],
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Load, time, compare and measure memory of every entry in ``names`` (all able to run here) on ``bundle``; the
    model's part of the result (``variants``, ``errors``, texts, timing settings)."""
    variants: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    runners: dict[str, Any] = {}
    # TensorRT first: its builds need memory that the other models would hold
    for name in sorted(names, key=lambda n: ENTRIES[n].backend != "tensorrt"):
        spec = ENTRIES[name]
        progress(f"loading {name} ({spec.description})")
        try:
            if spec.backend == "tensorrt":
                runner, engine = load_tensorrt(spec, bundle, cache_root / name)
                variants[name] = {"engine": engine, "load_s": engine["cache_load_s"]}
                build, load = engine["build_s"], engine["cache_load_s"]
                progress(f"  engine built in {build:.1f} s, loaded from the cache in {load:.2f} s")
            else:
                start = time.perf_counter()
                runner = make_runner(spec, bundle, checkpoint)
                variants[name] = {"load_s": time.perf_counter() - start}
        except Exception as exc:  # EngineBuildError, CUDA errors, out of memory: reported, the others go on
            errors[name] = f"could not load: {type(exc).__name__}: {exc}"
            variants.pop(name, None)
            log.warning("%s: %s", name, errors[name])
            continue
        runners[name] = runner
        variants[name].update(describe=runner.describe(), size_mb=runner.size_mb())
        variants[name]["describe"]["entry"] = spec.description
    runners = {n: runners[n] for n in names if n in runners}  # back in the asked order
    if not runners:
        return {"variants": {}, "errors": errors}
    progress("choosing texts of exactly 16 and 128 tokens")
    inputs, source = timing_texts(runners, languages)
    progress(f"warming up ({settings.warmup} calls per entry and shape)")
    for name, why in warm_up(runners, inputs, settings.warmup).items():
        errors[name] = why
        runners.pop(name).close()
        variants.pop(name)
    progress(f"timing {len(runners)} entries, {settings.rounds} rounds")
    times = time_rounds(runners, inputs, settings.rounds, settings.reps, progress=progress)
    for name, shapes in times.items():
        for shape, ts in shapes.items():
            variants[name][shape] = stats(ts, SHAPES[shape][0])
        variants[name]["describe"]["model_calls_b32s128"] = runners[name].model_calls(inputs["b32s128"][0])
    ratios = speed_ratios(variants)
    for name, r in ratios.items():
        variants[name]["vs_pytorch_fp16"] = r
    progress("agreement with ONNX Runtime CPU (fp32) on the packaged multilingual texts")
    pairs, texts_source = gpu_check.sample_texts()
    texts = [t for _, t in pairs]
    ref_describe: dict[str, Any] | None = None
    try:
        reference = runners.get(REFERENCE) or make_runner(ENTRIES[REFERENCE], bundle, None)
        ref = np.asarray(reference.run(texts))
        ref_describe = reference.describe()
        del reference
    except Exception as exc:  # a bundle without a CPU file: no agreement, the rest stands
        errors[REFERENCE + " (reference)"] = f"no agreement measured: {type(exc).__name__}: {exc}"
    for name, runner in runners.items():
        if ref_describe is None:
            break
        try:
            variants[name]["cosine_to_fp32"] = cosines(ref, np.asarray(runner.run(texts)))
        except Exception as exc:
            variants[name]["cosine_error"] = f"{type(exc).__name__}: {exc}"
    for runner in runners.values():
        runner.close()
    runners.clear()
    gc.collect()
    progress("cold start, GPU memory and peak RSS: a fresh process per entry")
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        texts_file = Path(tmp) / "inputs.json"
        texts_file.write_text(json.dumps(inputs, ensure_ascii=False), encoding="utf-8")
        for name in variants:
            env = dict(os.environ)
            if ENTRIES[name].backend == "tensorrt":
                env[engine_cache.CACHE_ENV] = str(cache_root / name)
            variants[name].update(run_worker(name, bundle, checkpoint, texts_file, env))
            progress(f"  {name}: done")
    return {
        "bundle": str(bundle),
        "variants": {n: variants[n] for n in names if n in variants},  # in the asked order
        "errors": errors,
        "reference": ref_describe,
        "texts": {
            "timing_source": source,
            "timing": inputs,
            "agreement_source": texts_source,
            "agreement_languages": sorted({lang for lang, _ in pairs}),
            "agreement_count": len(texts),
        },
    }


# ------------------------------------------------------------------------------------------------ markdown


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def _gpu_line(m: Mapping[str, Any]) -> str:
    gpu = m.get("gpu") or {}
    parts = [gpu.get("name") or ("GPU present" if gpu.get("present") else "no GPU")]
    if gpu.get("compute_capability"):
        parts.append("compute capability " + ".".join(map(str, gpu["compute_capability"])))
    if gpu.get("total_memory"):
        parts.append(f"{gpu['total_memory'] / 2**30:.1f} GiB")
    if gpu.get("integrated"):
        parts.append("integrated (shares system memory)")
    soft = [
        f"NVIDIA driver {m['nvidia_driver']}" if m.get("nvidia_driver") else None,
        f"CUDA driver {gpu['cuda_driver']}" if gpu.get("cuda_driver") else None,
        f"CUDA runtime {gpu['cuda_runtime']}" if gpu.get("cuda_runtime") else None,
        f"TensorRT {(m.get('tensorrt') or {}).get('version')}" if (m.get("tensorrt") or {}).get("version") else None,
    ]
    line = f"GPU: {', '.join(parts)}; {', '.join(s for s in soft if s) or 'no CUDA facts'}."
    j = m.get("jetson")
    if j:
        line += (
            f" Jetson: L4T {j.get('l4t') or '?'} (JetPack {j.get('jetpack') or '?'})"
            f"{', ' + j['model'] if j.get('model') else ''}; power mode: {m.get('power_mode') or 'unknown'}."
        )
    cpu = f"CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores"
    return f"{line} {cpu}."


def _memory_cell(v: Mapping[str, Any]) -> str:
    mem = v.get("gpu_memory")
    if not mem:
        return "-"
    text = f"{mem['peak_mb']:.0f} ({mem['method']})" if mem.get("peak_mb") is not None else "-"
    if mem.get("torch_max_allocated_mb") is not None:
        text += f"; torch allocated {mem['torch_max_allocated_mb']:.0f}"
    return text


def markdown(result: Mapping[str, Any]) -> str:
    """The run as markdown, laid out as the CPU benchmark's (``benchmarks/report.py``) with the GPU's columns:
    latency median (p90) and throughput with ratios to pytorch-fp16 in brackets, engine build, GPU memory."""
    m = result["machine"]
    lines = [
        "# GPU benchmark",
        "",
        _gpu_line(m),
        f"Versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}.",
        f"Started {result['started']}; load average before {tuple(round(x, 2) for x in result['load_before'])}, "
        f"after {tuple(round(x, 2) for x in result['load_after'])}.",
        f"Command: `{result.get('command', '?')}`",
        "",
        "Every entry runs as a user runs it, tokenization included (ours: `mbert_edge.load(bundle, backend=..., "
        "precision=...).embed(texts)`, which returns numpy, so the GPU has finished; pytorch-fp16: transformers "
        "`AutoModel` in torch.float16 on cuda, its tokenizer, the same pooling, `torch.cuda.synchronize()` around "
        "each call). Latency: median (p90) ms of one call; throughput: sequences per second at batch 32 x 128 "
        "tokens; texts of exactly 16 / 128 tokens for every entry. Ratios in brackets: pytorch-fp16's time / the "
        "entry's (above 1: faster than PyTorch fp16). Engine build: the TensorRT backend on an empty engine cache; "
        "in brackets `mbert_edge.load` from the cache afterwards. GPU memory: peak device memory of a fresh process "
        "that loads the entry and runs each shape once, by the method named (nvml: per-process, CUDA context "
        "included; torch allocated: tensors only). Cold start and peak RSS: that process. Cosine: embeddings of "
        f"the {result.get('agreement_count', 'sample')} packaged multilingual sample texts against ONNX Runtime "
        "CPU on the fp32 file.",
        f"Timing: {result['timing']['note']}.",
    ]
    for model, res in result["models"].items():
        variants = {n: v for n, v in res["variants"].items() if "b1s16" in v}
        ratios = speed_ratios(variants)
        lines += [
            "",
            f"## {model}",
            "",
            "| entry | b1 x s16 ms | b1 x s128 ms | b32 x s128 seq/s | engine build s (cache load s) | GPU memory MB "
            "| peak RSS MB | cold start s | size MB | cosine to fp32 (mean / min) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for n, v in variants.items():
            flat = report._flat(v)  # the CPU benchmark's reading of an entry: same JSON shape
            r = ratios.get(n, {}) if n != PEER else {}
            cells = []
            for s in ("b1s16", "b1s128"):
                cells.append(f"{v[s]['median_ms']:.2f} ({v[s]['p90_ms']:.2f})" + (f" [{r[s]:.2f}x]" if s in r else ""))
            cells.append(f"{flat['b32s128']:.1f}" + (f" [{r['b32s128']:.2f}x]" if "b32s128" in r else ""))
            eng = v.get("engine")
            cells.append(f"{eng['build_s']:.1f} ({eng['cache_load_s']:.2f})" if eng else "-")
            cells.append(_memory_cell(v))
            cells += [_f(flat["rss"], ".0f"), _f(flat["cold"], ".2f"), _f(flat["size"], ".0f")]
            cells.append(f"{flat['cos']:.5f} / {flat['cos_min']:.5f}" if flat["cos"] is not None else "-")
            name = n if ENTRIES.get(n) is None or ENTRIES[n].kind == "pytorch" else f"**{n}**"
            lines.append(f"| {name} | {' | '.join(cells)} |")
        if PEER not in variants:
            lines.append(f"\n{PEER} was not measured: no ratios.")
        notes = []
        for n, v in variants.items():
            d = v.get("describe", {})
            runs, on = d.get("backend", d.get("kind")), d.get("file", d.get("checkpoint"))
            what = f"{runs} on {on} ({d.get('precision', d.get('dtype'))})"
            calls = d.get("model_calls_b32s128")
            extra = f", one b32 x s128 call = {calls} model call(s) (batch_size={d.get('batch_size')})" if calls else ""
            eng = v.get("engine")
            if eng:
                extra += f", engine {_f(eng.get('engine_mb'))} MB, second load: {eng.get('cache_load_how')}"
            if v.get("worker_error"):
                extra += f"; memory/cold start not measured: {v['worker_error'].splitlines()[-1]}"
            elif (v.get("gpu_memory") or {}).get("note"):
                extra += f"; GPU memory not measured: {v['gpu_memory']['note']}"
            if v.get("cuda_initialized_before_cold_start"):
                extra += "; cold start without CUDA's initialization (taken before it, for the memory baseline)"
            notes.append(f"- {n}: {what}{extra}.")
        if notes:
            lines += ["", *notes]
        for n, why in res.get("skipped", {}).items():
            lines.append(f"- skipped {n}: {why}")
        for n, why in res.get("errors", {}).items():
            lines.append(f"- error {n}: {why}")
    used = sorted(
        {
            v["gpu_memory"]["method"]
            for r in result["models"].values()
            for v in r["variants"].values()
            if (v.get("gpu_memory") or {}).get("method")
        }
    )
    if used:
        lines += ["", "GPU memory methods: " + "; ".join(f"{k}: {METHODS[k]}" for k in used if k in METHODS) + "."]
    texts = result.get("texts_source")
    if texts:
        lines.append(f"Timing texts: {texts}.")
    return "\n".join(lines) + "\n"


def write_results(result: Mapping[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``<out>.json`` and ``<out>.md``; return their paths."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out.with_name(out.name + ".json"), out.with_name(out.name + ".md")
    json_path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    md_path.write_text(markdown(result), encoding="utf-8")
    return json_path, md_path


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True, help="a sentence-embedding bundle with TensorRT files")
    ap.add_argument("--checkpoint", help="Hugging Face checkpoint for pytorch-fp16 ('default': e5-small)")
    ap.add_argument("--entries", default=",".join(DEFAULT_ENTRIES), help=f"comma-separated, of: {', '.join(ENTRIES)}")
    ap.add_argument("--rounds", type=int, default=Settings.rounds)
    ap.add_argument("--warmup", type=int, default=Settings.warmup, help="untimed calls per entry and shape")
    ap.add_argument("--languages", default=DEFAULT_LANGUAGES, help="languages of the timing texts")
    ap.add_argument("--engine-cache", type=Path, help="where engines are built (default: a temporary directory)")
    ap.add_argument(
        "--out", type=Path, help="output path without suffix (default benchmarks/results/gpu-<gpu>-<bundle>)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--texts-file", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.names = [n.strip() for n in args.entries.split(",") if n.strip()]
    unknown = [n for n in args.names if n not in ENTRIES]
    if unknown or not args.names:
        ap.error(f"--entries: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(ENTRIES)}")
    if not any(ENTRIES[n].gpu for n in args.names):
        ap.error("--entries names no GPU entry (ort-cpu is the CPU reference)")
    if args.rounds < 1 or args.warmup < 0:
        ap.error("--rounds must be at least 1 and --warmup at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the exit code (0 measured, 1 every runnable entry failed, 3 no GPU entry can run)."""
    args = parse_args(argv)
    if args.worker:
        checkpoint = Path(args.checkpoint) if args.checkpoint else None
        print(json.dumps(worker(args.worker, args.bundle, checkpoint, args.texts_file)))
        return EXIT_OK
    reasons = plan(args.names, args.checkpoint, None)
    if not gpu_runnable(reasons):
        print(no_gpu_message(reasons), file=sys.stderr)
        return EXIT_NO_GPU
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("mbert_edge").setLevel(logging.WARNING)
    with contextlib.suppress(ImportError):
        import transformers

        transformers.logging.set_verbosity_error()
    from mbert_edge.bundle import Bundle

    manifest = Bundle.open(args.bundle, verify=False).manifest
    if manifest.task != FEATURE_EXTRACTION:
        print(
            f"benchmarks/gpu.py: {args.bundle} is a {manifest.task} bundle; this benchmark embeds texts "
            "(feature-extraction bundles)",
            file=sys.stderr,
        )
        return 2
    longest = max(seq for _, seq in SHAPES.values())
    if manifest.max_length < longest:
        print(
            f"benchmarks/gpu.py: {args.bundle} takes at most {manifest.max_length} tokens; the benchmark's shapes "
            f"need {longest}",
            file=sys.stderr,
        )
        return 2
    reasons = plan(args.names, args.checkpoint, manifest.model_files())
    if not gpu_runnable(reasons):
        print(no_gpu_message(reasons), file=sys.stderr)
        return EXIT_NO_GPU
    names = [n for n, r in reasons.items() if r is None]
    skipped = {n: r for n, r in reasons.items() if r is not None}
    for n, r in skipped.items():
        log.info("skipping %s: %s", n, r)
    started, load_before = time.strftime("%Y-%m-%d %H:%M:%S %Z"), os.getloadavg()
    settings = Settings(rounds=args.rounds, warmup=args.warmup)
    languages = [x for x in args.languages.split(",") if x]
    with contextlib.ExitStack() as stack:
        ckpt = stack.enter_context(students.teacher_checkpoint(args.checkpoint)) if PEER in names else None
        if args.engine_cache is not None:
            cache_root = args.engine_cache
        else:
            cache_root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu-bench-engines-")))
        res = measure(args.bundle, names, ckpt, settings, cache_root, languages, progress=log.info)
        mach = machine()  # after the loads: torch, if the peer ran, can name the GPU without cuda-python
    if PEER in res.get("variants", {}) and args.checkpoint:
        res["variants"][PEER]["describe"]["checkpoint"] = args.checkpoint
    res["skipped"] = skipped
    res["load_after"] = os.getloadavg()
    reps = settings.reps
    result = {
        "benchmark": "gpu",
        "command": shlex.join(["benchmarks/gpu.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": mach,
        "versions": versions(),
        "threads": None,  # CPU threads: the runtime's default
        "started": started,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "timing": {
            "rounds": settings.rounds,
            "warmup": settings.warmup,
            "reps_per_round": reps,
            "note": f"{settings.warmup} warm-up calls per entry and shape, then {settings.rounds} rounds x "
            + ", ".join(f"{reps[s]} at {SHAPE_TITLES[s]}" for s in SHAPES)
            + " per entry, entries in a new random order every round, one untimed call before each entry's shape",
        },
        "reference": res.pop("reference", None),
        "texts_source": (res.get("texts") or {}).get("timing_source"),
        "agreement_count": (res.get("texts") or {}).get("agreement_count"),
        "models": {args.bundle.resolve().name: res},
    }
    out = (
        args.out
        or Path("benchmarks/results")
        / f"gpu-{_slug(mach['gpu'].get('name') or 'gpu')}-{_slug(args.bundle.resolve().name)}"
    )
    json_path, md_path = write_results(result, out)
    print(markdown(result))
    print(f"wrote {json_path} and {md_path}")
    return EXIT_OK if any("b1s16" in v for v in res["variants"].values()) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
