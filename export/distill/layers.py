"""Which teacher layers the student keeps, and how the student is cut out of the teacher.

A student of ``N`` layers is the teacher with only ``N`` of its encoder layers, copied with their weights
(embeddings, heads and poolers are copied whole). Named maps, for ``N`` of ``L`` teacher layers:

* ``distilbert``: spread over the depth keeping the first and the last layer,
  ``round(i * (L - 1) / (N - 1))``; 6 of 12 gives DistilBERT's ``[0, 2, 4, 7, 9, 11]``; one layer keeps the last.
* ``every-other``: ``floor(i * L / N)``, sentence-transformers' layer-reduction example: ``[0, 2, 4, 6, 8, 10]``.
* ``first``: the first ``N`` layers.
* ``auto``: whichever of those gives the untrained student the highest cosine to the teacher on a few
  held-out texts (see :func:`mbert_edge_export.distill.choose_layer_map`).
* an explicit list, ``"0,3,7,11"``: strictly increasing teacher layer indices.

A run can also start from a student distilled earlier from the same teacher (``--init-student``), keeping its
layer map: :func:`read_init_student` checks it. That is how a narrower feed-forward is trained in a second
stage (see :mod:`.pruning`).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mbert_edge_export.errors import DistillError

if TYPE_CHECKING:
    import torch

NAMED_MAPS = ("distilbert", "every-other", "first")
LAYER_MAP_CHOICES = (*NAMED_MAPS, "auto")


def named_map(name: str, n: int, total: int) -> list[int]:
    """The teacher layers (0-based) that the named map keeps for a student of ``n`` of ``total`` layers."""
    if not 1 <= n <= total:
        raise DistillError(f"a student needs between 1 and {total} layers (the teacher's count), not {n}")
    if name == "distilbert":
        if n == 1:
            return [total - 1]
        return [round(i * (total - 1) / (n - 1)) for i in range(n)]
    if name == "every-other":
        return [i * total // n for i in range(n)]
    if name == "first":
        return list(range(n))
    raise DistillError(f"unknown layer map {name!r}: use one of {', '.join(LAYER_MAP_CHOICES)} or a list like 0,2,5")


def parse_layer_map(spec: str | Sequence[int], n: int, total: int) -> list[int] | str:
    """Check ``spec`` (a name or explicit indices) against ``n`` student and ``total`` teacher layers.

    Returns the explicit list of teacher layers, or the name (``auto`` included) when ``spec`` names a map.
    """
    if not 1 <= n <= total:
        raise DistillError(
            f"--layers {n}: the student must keep between 1 and {total} layers, as many as the teacher has at most"
        )
    if isinstance(spec, str):
        name = spec.strip().lower()
        if name in LAYER_MAP_CHOICES:
            return name
        try:
            layers = [int(x) for x in name.split(",") if x.strip()]
        except ValueError:
            raise DistillError(
                f"--layer-map {spec!r}: use one of {', '.join(LAYER_MAP_CHOICES)} or comma-separated teacher "
                "layer indices like 0,2,4,7,9,11"
            ) from None
    else:
        layers = [int(x) for x in spec]
    if len(layers) != n:
        raise DistillError(f"--layer-map lists {len(layers)} layers but --layers is {n}; give exactly {n} indices")
    if any(not 0 <= i < total for i in layers):
        raise DistillError(f"--layer-map {layers}: teacher layers are numbered 0 to {total - 1}")
    if any(b <= a for a, b in itertools.pairwise(layers)):
        raise DistillError(f"--layer-map {layers}: list teacher layers in increasing order, each once")
    return layers


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The ``ModuleList`` of transformer layers of a BERT-family model (``<base>.encoder.layer``)."""
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise DistillError(
            f"{type(model).__name__} has no encoder.layer list; distill supports BERT-family encoders "
            "(BERT, XLM-R, e5, ...)"
        )
    return layers


def make_student(teacher: torch.nn.Module, layer_map: Sequence[int]) -> torch.nn.Module:
    """A copy of ``teacher`` that keeps only the encoder layers ``layer_map`` (teacher indices, in order).

    Every other module (embeddings, pooler, task head) is copied whole, and ``config.num_hidden_layers``
    is updated, so the student saves and loads as an ordinary checkpoint. The teacher is left untouched.
    """
    import torch

    total = len(encoder_layers(teacher))
    layers = parse_layer_map(list(layer_map), len(layer_map), total)
    assert isinstance(layers, list)
    # deep-copy everything but the dropped layers: swap the layer list out while copying
    t_layers = encoder_layers(teacher)
    base = getattr(teacher, "base_model", teacher)
    kept = torch.nn.ModuleList([t_layers[i] for i in layers])
    base.encoder.layer = kept
    try:
        student = copy.deepcopy(teacher)
    finally:
        base.encoder.layer = t_layers
    for new_idx, layer in enumerate(encoder_layers(student)):
        for module in layer.modules():  # attention caches are indexed by layer position
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    student.config.num_hidden_layers = len(layers)
    if hasattr(student.config, "layer_types") and isinstance(student.config.layer_types, list):
        student.config.layer_types = [student.config.layer_types[i] for i in layers]
    return student


def read_init_student(path: Path, layers: int, teacher_sha256: str, languages: Sequence[str] | None) -> dict:
    """The lineage of ``path``, a student distilled earlier from the same teacher, checked to start this run
    from (``--init-student``): same teacher weights, ``layers`` layers, the same trimmed languages. Reads
    JSON only, so a wrong starting point fails before anything slow. Returns that lineage."""
    from mbert_edge_export.sources.checkpoint import LINEAGE_FILE, read_lineage

    lineage = read_lineage(Path(path)) if (Path(path) / "config.json").is_file() else None
    if lineage is None:
        raise DistillError(
            f"--init-student {path}: not a checkpoint written by `mbert-edge distill` (it needs config.json and "
            f"{LINEAGE_FILE})"
        )
    distilled = lineage.get("distill") or {}
    if not distilled.get("layer_map"):
        raise DistillError(f"--init-student {path}: its lineage has no distillation (no layer map)")
    if (lineage.get("teacher") or {}).get("weights_sha256") != teacher_sha256:
        raise DistillError(
            f"--init-student {path} was distilled from another teacher (weights checksum differs); start from "
            "a student of this teacher, or leave --init-student out to cut one from it"
        )
    if len(distilled["layer_map"]) != layers:
        raise DistillError(
            f"--init-student {path} has {len(distilled['layer_map'])} layers but --layers is {layers}; they must match"
        )
    theirs = sorted((lineage.get("trim") or {}).get("languages") or [])
    if theirs != sorted(languages or []):
        raise DistillError(
            f"--init-student {path} is trimmed to {','.join(theirs) or 'every language (untrimmed)'}; pass the "
            f"same --languages (and vocabulary options) so both read the same vocabulary"
        )
    return lineage
