"""The INT8 fallback search: which quantizable nodes stay in fp32 so that the accuracy gate holds.

Used by the CPU INT8 stage (:mod:`.gated`) and the TensorRT int8 file (``stages/tensorrt.py``) alike, in two
passes:

1. **Groups.** :func:`sensitivity` quantizes one group of nodes at a time (about one encoder layer each, the
   embedding tables apart) and ranks the groups by the damage each does alone; the most damaging groups go
   back to fp32, one more per pass, until the gate holds. The gate's value (an agreement, for classifiers) is
   often tied between groups: every group alone keeps every label. :func:`damage_key` breaks such ties with
   a continuous measure of the same comparison (mean score error, or the lowest cosine), so that the order
   still follows the damage instead of the graph order.
2. **Nodes.** Damage adds up over groups, so a whole group kept in fp32 usually holds nodes that were not
   needed there. :func:`refine` tries each fp32 node on its own back in INT8, biggest weight first (the most
   time and bytes), and keeps it there when the gate still holds.

Each pass of either kind is one quantization and one gate run on the held-out text, logged as it goes. The
search selects on the gate's text, so the final gate value is a selected one; the held-out quality figures
of the benchmarks come from other text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: quantize the model with these nodes kept in fp32, into this path; return the recipe
Quantize = Callable[[list[str], Path], dict[str, Any]]
#: the gate's report on the model at this path (``value``, ``metric``, ``passed``, ...)
Judge = Callable[[Path], dict[str, Any]]


def damage_key(result: Mapping[str, Any]) -> tuple[float, float]:
    """Sort key of a gate report, lowest = most damaged: the gate's value, then a continuous tie-breaker
    (classification: minus the mean score error; embeddings: the lowest cosine; else 0)."""
    if "mean_score_error" in result:
        tie = -float(result["mean_score_error"])
    elif "min_cosine" in result:
        tie = float(result["min_cosine"])
    else:
        tie = 0.0
    return float(result["value"]), tie


def sensitivity(groups: Sequence[list[str]], quantize_only: Quantize, judge: Judge, work: Path) -> list[dict[str, Any]]:
    """Rank groups by damage: quantize each group alone (the rest fp32) and judge it; most damaging first.

    Returns ``{"group", "nodes", "value_alone", "tie_break"}`` per group.
    """
    all_nodes = [n for g in groups for n in g]
    ranked = []
    for i, group in enumerate(groups):
        path = work / f"sensitivity-{i}.onnx"
        quantize_only([n for n in all_nodes if n not in group], path)  # exclude everything but this group
        value, tie = damage_key(judge(path))
        path.unlink(missing_ok=True)
        ranked.append({"group": i, "nodes": list(group), "value_alone": value, "tie_break": tie})
        log.info(
            "sensitivity: group %d/%d (%d nodes) alone scores %.5f (tie-break %.5f)",
            i + 1,
            len(groups),
            len(group),
            value,
            tie,
        )
    return sorted(ranked, key=lambda r: (r["value_alone"], r["tie_break"]))


@dataclass
class Outcome:
    """Where the search ended: the file at ``dst`` is quantized with ``recipe`` and judged ``gate``."""

    passed: bool
    recipe: dict[str, Any]
    gate: dict[str, Any]
    fp32_groups: list[int] = field(default_factory=list)
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    #: nodes of the fp32 groups that the node pass returned to INT8
    returned_to_int8: list[str] = field(default_factory=list)
    #: the nodes that stay in fp32
    fp32_nodes: list[str] = field(default_factory=list)

    def report_fields(self) -> dict[str, Any]:
        """The INT8 report's entries for this outcome (``settings`` is the recipe of the file left at ``dst``)."""
        return {
            "settings": self.recipe,
            "gate": self.gate,
            "sensitivity": self.sensitivity,
            "fp32_groups": self.fp32_groups,
            "fp32_nodes_returned_to_int8": self.returned_to_int8,
        }


def search(
    groups: Sequence[list[str]],
    quantize: Quantize,
    judge: Judge,
    dst: Path,
    work: Path,
    max_groups: int | None = None,
    weight_sizes: Mapping[str, int] | None = None,
    label: str = "in fp32",
    start: tuple[dict[str, Any], dict[str, Any]] = ({}, {}),
) -> Outcome:
    """Keep the most sensitive groups in fp32 until the gate holds (at most ``max_groups``, default all but
    one), then return what nodes of them it can to INT8 (:func:`refine`, biggest ``weight_sizes`` first).
    ``label`` says where the others stay, for the log ("in fp32", "unquantized"); ``start`` is the recipe and
    gate report of the file at ``dst`` before the search (all nodes quantized), the outcome when no group may
    go back.

    ``dst`` ends up holding the file the outcome describes, passed or not.
    """
    ranking = sensitivity(groups, quantize, judge, work)
    limit = max_groups if max_groups is not None else len(groups) - 1
    outcome = Outcome(passed=False, recipe=start[0], gate=start[1], sensitivity=ranking)
    excluded: list[str] = []
    for step, entry in enumerate(ranking[:limit], 1):
        excluded += entry["nodes"]
        outcome.recipe = quantize(excluded, dst)
        outcome.gate = judge(dst)
        outcome.fp32_groups.append(entry["group"])
        log.info(
            "keeping %d group(s) %s: %s = %.5f",
            step,
            label,
            outcome.gate["metric"],
            outcome.gate["value"],
        )
        if outcome.gate["passed"]:
            outcome.passed = True
            break
    outcome.fp32_nodes = list(excluded)
    if outcome.passed:
        refine(outcome, quantize, judge, dst, weight_sizes or {}, label)
    return outcome


def refine(
    outcome: Outcome, quantize: Quantize, judge: Judge, dst: Path, weight_sizes: Mapping[str, int], label: str
) -> None:
    """Try each of ``outcome.fp32_nodes`` alone back in INT8, biggest weight first; keep it there when the gate
    still holds. Updates ``outcome`` and leaves the accepted file at ``dst``."""
    order = sorted(outcome.fp32_nodes, key=lambda n: -weight_sizes.get(n, 0))
    kept = list(outcome.fp32_nodes)
    stale = False  # dst holds a rejected candidate
    for i, node in enumerate(order, 1):
        trial = [n for n in kept if n != node]
        recipe = quantize(trial, dst)
        result = judge(dst)
        accepted = bool(result["passed"])
        log.info(
            "node pass %d/%d: %s in INT8 -> %s = %.5f: %s",
            i,
            len(order),
            node,
            result["metric"],
            result["value"],
            "kept in INT8" if accepted else f"kept {label}",
        )
        if accepted:
            kept, outcome.recipe, outcome.gate = trial, recipe, result
            outcome.returned_to_int8.append(node)
        stale = not accepted
    if stale:  # write the accepted file again (quantization is deterministic: its gate report stands)
        outcome.recipe = quantize(kept, dst)
    outcome.fp32_nodes = kept
