"""The accuracy gate: the INT8 model against the fp32 model (or the user's labels) on held-out text.

Metrics per task:

* text-classification — argmax agreement with fp32 (or accuracy against the user's labels, reported next to
  fp32's), mean and max absolute score error;
* token-classification — agreement of the per-token argmax over real (non-special, non-padding) tokens;
* feature-extraction — cosine between INT8 and fp32 sentence embeddings (mean and min).

Defaults: agreement >= 0.99, mean cosine >= 0.99, overall and for every language of the held-out text with
enough texts (the worst language counts, not only the mean). When the gate fails, the fallback search (:mod:`.fallback`)
keeps the most damaging groups of quantized nodes (:func:`layer_groups`) in fp32 until the gate holds, then
returns what single nodes of them it can to INT8, or fails with the report.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mbert_edge.backends.base import Backend
from mbert_edge.backends.onnxruntime import OnnxRuntimeCPUBackend
from mbert_edge.manifest import FEATURE_EXTRACTION, TEXT_CLASSIFICATION, EmbeddingSpec
from mbert_edge.tasks import classification, embedding

log = logging.getLogger(__name__)

QUANTIZABLE_OPS = ("MatMul", "Attention", "EmbedLayerNormalization", "Gather", "Gemm")


@dataclass(frozen=True)
class Thresholds:
    """Minimum agreement (classification, NER) and mean cosine (embeddings) the INT8 model must reach."""

    min_agreement: float = 0.99
    min_cosine: float = 0.99


def model_outputs(
    path: Path, batches: Sequence[dict[str, np.ndarray]], backend: Callable[[Path], Backend] = OnnxRuntimeCPUBackend
) -> list[np.ndarray]:
    """The model's first output on every batch, run by one of the runtime's backends (ONNX Runtime's unless
    told otherwise)."""
    model = backend(path)
    return [next(iter(model.run(b).values())) for b in batches]


def evaluate(
    reference: Sequence[np.ndarray],
    candidate_path: Path,
    batches: Sequence[dict[str, np.ndarray]],
    task: str,
    embedding_spec: EmbeddingSpec | None = None,
    score_function: str | None = None,
    labels: Sequence[int] | None = None,
    thresholds: Thresholds = Thresholds(),
    backend: Callable[[Path], Backend] = OnnxRuntimeCPUBackend,
    langs: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Compare the candidate model's outputs on ``batches`` (run by ``backend``) with the fp32 ``reference``.

    With ``langs`` (the language of each text, in batch order) the metric is also computed per language, and
    the gate's ``value`` is the lower of the overall value and the worst language's (languages with at least
    :data:`MIN_TEXTS_PER_LANGUAGE` texts are judged; every language is reported).
    """
    got = model_outputs(candidate_path, batches, backend)
    per_text: np.ndarray  # each text's agreement / cosine; for tokens: (hits, total) per text
    report: dict[str, Any] = {"texts": int(sum(b["input_ids"].shape[0] for b in batches))}
    if task == TEXT_CLASSIFICATION:
        ref_s = np.concatenate([classification.scores_from_logits(r, score_function) for r in reference])
        got_s = np.concatenate([classification.scores_from_logits(g, score_function) for g in got])
        per_text = (ref_s.argmax(1) == got_s.argmax(1)).astype(np.float64)
        agree = float(per_text.mean())
        err = np.abs(ref_s - got_s)
        report.update(agreement=agree, mean_score_error=float(err.mean()), max_score_error=float(err.max()))
        if labels is not None:
            y = np.asarray(labels)
            report.update(
                accuracy_fp32=float((ref_s.argmax(1) == y).mean()), accuracy_int8=float((got_s.argmax(1) == y).mean())
            )
        report["metric"], report["value"], report["threshold"] = "agreement", agree, thresholds.min_agreement
    elif task == FEATURE_EXTRACTION:
        assert embedding_spec is not None
        cos = []
        for r, g, b in zip(reference, got, batches, strict=True):
            a = embedding.l2_normalize(embedding.pool(r, b["attention_mask"], embedding_spec.pooling))
            c = embedding.l2_normalize(embedding.pool(g, b["attention_mask"], embedding_spec.pooling))
            cos.append((a * c).sum(1))
        cosines = np.concatenate(cos)
        per_text = cosines.astype(np.float64)
        report.update(mean_cosine=float(cosines.mean()), min_cosine=float(cosines.min()))
        report["metric"], report["value"], report["threshold"] = (
            "mean_cosine",
            float(cosines.mean()),
            thresholds.min_cosine,
        )
    else:
        rows, errors = [], []
        for r, g, b in zip(reference, got, batches, strict=True):
            mask = b["attention_mask"].astype(bool).copy()
            lengths = mask.sum(1)
            mask[:, 0] = False  # [CLS]
            mask[np.arange(len(lengths)), lengths - 1] = False  # [SEP]
            same = (r.argmax(-1) == g.argmax(-1)) & mask
            rows.append(np.stack([same.sum(1), mask.sum(1)], axis=1))
            errors.append(np.abs(_softmax(r[mask]) - _softmax(g[mask])))
        per_text = np.concatenate(rows).astype(np.float64)
        hits, total = int(per_text[:, 0].sum()), int(per_text[:, 1].sum())
        agree = hits / max(total, 1)
        err = np.concatenate(errors) if errors else np.zeros((0,))
        report.update(
            token_agreement=agree,
            tokens=total,
            mean_score_error=float(err.mean()) if err.size else 0.0,
            max_score_error=float(err.max()) if err.size else 0.0,
        )
        report["metric"], report["value"], report["threshold"] = "token_agreement", agree, thresholds.min_agreement
    if langs is not None:
        _judge_languages(report, per_text, langs, discrete=task != FEATURE_EXTRACTION)
    report["passed"] = bool(report["value"] >= report["threshold"])
    return report


MIN_TEXTS_PER_LANGUAGE = 8


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _judge_languages(
    report: dict[str, Any], per_text: np.ndarray, langs: Sequence[str], discrete: bool = False
) -> None:
    """Add per-language values; make the gate's value the worst of the overall and the judged languages'.

    A language is judged when its sample can resolve the threshold: at least :data:`MIN_TEXTS_PER_LANGUAGE`
    texts for a continuous metric (cosine); for an agreement (``discrete``) enough items that one
    disagreement alone cannot fail it, i.e. ``1 / (1 - threshold)`` texts (classification) or tokens (token
    classification) — with 8 texts per language and a threshold of 0.99 a single flipped text would read as
    0.875 and fail the gate on noise. Every language is reported either way.
    """
    if len(langs) != len(per_text):
        raise ValueError(f"{len(langs)} languages for {len(per_text)} texts")
    threshold = float(report.get("threshold", 0.0))
    needed = int(np.ceil(1.0 / max(1.0 - threshold, 1e-6))) if discrete else MIN_TEXTS_PER_LANGUAGE
    tags = np.asarray(langs)
    by_lang: dict[str, dict[str, Any]] = {}
    for lang in sorted(set(langs)):
        rows = per_text[tags == lang]
        value = float(rows[:, 0].sum() / max(rows[:, 1].sum(), 1)) if rows.ndim == 2 else float(rows.mean())
        items = int(rows[:, 1].sum()) if rows.ndim == 2 else len(rows)
        by_lang[lang] = {"value": round(value, 5), "texts": len(rows), "judged": items >= max(needed, 1)}
    report["languages"] = by_lang
    judged = {k: v["value"] for k, v in by_lang.items() if v["judged"]}
    if judged:
        worst = min(judged, key=lambda k: judged[k])
        report["worst_language"] = {"language": worst, "value": judged[worst]}
        report["overall_value"] = report["value"]
        report["value"] = min(report["value"], judged[worst])


def latency_ms(
    path: Path, batch: dict[str, np.ndarray], reps: int = 5, backend: Callable[[Path], Backend] = OnnxRuntimeCPUBackend
) -> float:
    """Median milliseconds of one run of the model on ``batch`` by ``backend`` (after one warm-up run)."""
    import time

    model = backend(path)
    model.run(batch)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        model.run(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def quantizable_nodes(path: Path, activation_matmuls: bool = False) -> list[str]:
    """Names of the nodes quantization would touch, in graph (topological) order: those with weights, and
    with ``activation_matmuls`` also the MatMuls of two activations (attention's Q·Kᵀ and softmax·V: NNCF
    quantizes the first for OpenVINO)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    constants = {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    out = []
    for node in graph.node:
        if node.op_type not in QUANTIZABLE_OPS:
            continue
        if node.op_type == "Gather":
            if _reads_table(node, weights):
                out.append(node.name)
        elif any(i in weights for i in node.input) or (
            activation_matmuls and node.op_type == "MatMul" and not any(i in constants for i in node.input)
        ):
            out.append(node.name)
    return out


def weight_sizes(path: Path, nodes: Sequence[str]) -> dict[str, int]:
    """Elements of the weights (initializers) each of ``nodes`` reads: the fallback tries the biggest first."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    sizes = {init.name: int(np.prod(init.dims)) for init in graph.initializer}
    wanted = set(nodes)
    return {n.name: sum(sizes.get(i, 0) for i in n.input) for n in graph.node if n.name in wanted}


def embedding_nodes(path: Path) -> list[str]:
    """Names of the nodes that read an embedding table: Gathers of a weight, or a fused EmbedLayerNormalization."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "EmbedLayerNormalization" or _reads_table(n, weights)]


def _reads_table(node: Any, weights: set[str]) -> bool:
    """A Gather of rows of a weight (an embedding table), not a shape lookup with constant indices."""
    return node.op_type == "Gather" and node.input[0] in weights


def layer_groups(nodes: Sequence[str], embeddings: Sequence[str], num_layers: int) -> list[list[str]]:
    """The fallback's unit: the embedding tables as one group, the other nodes split into about one group
    per encoder layer (plus one for the head). Tables and matmuls fail differently (a 4-bit table vs an
    INT8 layer), and keeping a table in fp32 costs size, not speed, so they are ranked apart."""
    tables = [n for n in nodes if n in set(embeddings)]
    rest = [n for n in nodes if n not in set(embeddings)]
    return ([tables] if tables else []) + node_groups(rest, num_layers + 1)


def node_groups(nodes: Sequence[str], n_groups: int) -> list[list[str]]:
    """Split nodes, in graph order, into ``n_groups`` consecutive groups (about one per encoder layer)."""
    n_groups = max(1, min(n_groups, len(nodes)))
    bounds = np.linspace(0, len(nodes), n_groups + 1).round().astype(int)
    return [list(nodes[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
