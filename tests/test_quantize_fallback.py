"""The INT8 fallback search (export/quantize/fallback.py) with scripted quantization and gate: which groups and
nodes stay in fp32, in what order, and what file is left at the destination."""

from __future__ import annotations

from pathlib import Path

import pytest

from mbert_edge_export.quantize import fallback

GROUPS = [["emb"], ["l0.attn", "l0.ffn1", "l0.ffn2"], ["l1.attn", "l1.ffn1", "l1.ffn2"], ["head"]]
SIZES = {"emb": 1000, "l0.attn": 30, "l0.ffn1": 40, "l0.ffn2": 41, "l1.attn": 30, "l1.ffn1": 40, "l1.ffn2": 41}


class Scripted:
    """A fake quantizer that writes the excluded set into the file, and a gate that reads it back: the gate
    fails while any node of ``harmful`` is quantized, with ``damage`` per quantized node as the tie-break."""

    def __init__(self, harmful: set[str], damage: dict[str, float] | None = None, need_all: bool = False) -> None:
        self.harmful, self.damage, self.need_all = harmful, damage or {}, need_all
        self.passes = 0

    def quantize(self, exclude: list[str], out: Path) -> dict:
        out.write_text("\n".join(exclude))
        return {"fp32_nodes": list(exclude)}

    def judge(self, path: Path) -> dict:
        self.passes += 1
        excluded = set(filter(None, path.read_text().split("\n")))
        quantized = {n for g in GROUPS for n in g} - excluded
        hurt = quantized & self.harmful
        failing = hurt == self.harmful if self.need_all else bool(hurt)
        value = 0.9 if failing else 1.0
        error = sum(self.damage.get(n, 0.0) for n in quantized)
        return {"metric": "agreement", "value": value, "threshold": 0.99, "passed": value >= 0.99,
                "mean_score_error": error}  # fmt: skip


def test_node_pass_returns_the_harmless_nodes_of_a_kept_group(tmp_path):
    s = Scripted(harmful={"l0.ffn2"}, damage={"l0.ffn2": 0.5})
    out = fallback.search(GROUPS, s.quantize, s.judge, tmp_path / "q.onnx", tmp_path, weight_sizes=SIZES)
    assert out.passed and out.fp32_groups == [1]  # group 1 holds the harmful node
    assert out.fp32_nodes == ["l0.ffn2"]
    # biggest weight first: l0.ffn2 (41) is tried and refused, then ffn1 (40), then attn (30)
    assert out.returned_to_int8 == ["l0.ffn1", "l0.attn"]
    assert out.recipe == {"fp32_nodes": ["l0.ffn2"]} and out.gate["passed"]
    assert (tmp_path / "q.onnx").read_text() == "l0.ffn2"  # the file left behind is the accepted one


def test_rejected_last_candidate_leaves_the_accepted_file(tmp_path):
    # the smallest node is tried last and is the harmful one: the destination must be rewritten
    s = Scripted(harmful={"l1.attn"}, damage={"l1.attn": 0.5})
    out = fallback.search(GROUPS, s.quantize, s.judge, tmp_path / "q.onnx", tmp_path, weight_sizes=SIZES)
    assert out.fp32_nodes == ["l1.attn"] and out.returned_to_int8 == ["l1.ffn2", "l1.ffn1"]
    assert (tmp_path / "q.onnx").read_text() == "l1.attn" and out.gate["passed"]
    assert s.passes == len(GROUPS) + 1 + 3  # sensitivity, one group, three nodes: the rewrite is not judged again


def test_ties_of_the_gate_value_are_broken_by_the_score_error(tmp_path):
    """Every group alone keeps every label (value 1.0): the group whose nodes move the scores most ranks first,
    not the first group in graph order."""
    s = Scripted(harmful={"l1.ffn1", "l0.attn"}, damage={"l1.ffn1": 0.3, "l1.ffn2": 0.1, "l0.attn": 0.2}, need_all=True)
    out = fallback.search(GROUPS, s.quantize, s.judge, tmp_path / "q.onnx", tmp_path, weight_sizes=SIZES)
    assert [r["group"] for r in out.sensitivity][:2] == [2, 1]
    assert all(r["value_alone"] == 1.0 for r in out.sensitivity)
    assert out.sensitivity[0]["tie_break"] == pytest.approx(-0.4)
    assert out.fp32_groups == [2]  # one group is enough once both harmful nodes are not quantized together
    assert out.fp32_nodes == ["l1.ffn1"]


def test_no_passing_set_reports_the_last_try(tmp_path):
    s = Scripted(harmful={"head", "emb"})  # two groups needed, one allowed
    out = fallback.search(GROUPS, s.quantize, s.judge, tmp_path / "q.onnx", tmp_path, max_groups=1)
    assert not out.passed and out.returned_to_int8 == []
    assert len(out.fp32_groups) == 1 and out.gate["value"] == 0.9
    assert s.passes == len(GROUPS) + 1  # sensitivity, one fallback pass, no node pass


def test_damage_key_for_each_kind_of_report():
    assert fallback.damage_key({"value": 0.99, "mean_score_error": 0.25}) == (0.99, -0.25)
    assert fallback.damage_key({"value": 0.995, "min_cosine": 0.97}) == (0.995, 0.97)
    assert fallback.damage_key({"value": 1.0}) == (1.0, 0.0)


def test_token_gate_reports_the_probability_error_over_real_tokens():
    """Hand-checked: [CLS] a b [SEP] [PAD]; only a and b count. Token a moves from softmax(0, 0) = (0.5, 0.5)
    to softmax(0, ln 3) = (0.25, 0.75): error 0.25 on both classes; b is unchanged; [CLS], [SEP] and the
    padding differ wildly and must not count."""
    import math

    import numpy as np

    from mbert_edge_export.quantize import gate

    ref = np.zeros((1, 5, 2), np.float32)
    got = ref.copy()
    got[0, 1, 1] = math.log(3.0)
    got[0, 0] = got[0, 3] = got[0, 4] = (9.0, -9.0)  # special tokens and padding

    class Fixed:
        def __init__(self, path):
            pass

        def run(self, feeds):
            return {"logits": got}

    batch = {"input_ids": np.zeros((1, 5), np.int64), "attention_mask": np.array([[1, 1, 1, 1, 0]], np.int64)}
    report = gate.evaluate([ref], Path("unused.onnx"), [batch], "token-classification", backend=Fixed)
    assert report["token_agreement"] == 0.5 and report["tokens"] == 2  # a flips (0.75 > 0.25), b agrees
    assert report["mean_score_error"] == pytest.approx(0.125)  # (0.25 + 0.25 + 0 + 0) / 4
    assert report["max_score_error"] == pytest.approx(0.25)


def test_no_group_allowed_back_reports_the_starting_file(tmp_path):
    s = Scripted(harmful={"head"})
    start = ({"fp32_nodes": []}, {"metric": "agreement", "value": 0.9, "threshold": 0.99, "passed": False})
    out = fallback.search(GROUPS, s.quantize, s.judge, tmp_path / "q.onnx", tmp_path, max_groups=0, start=start)
    assert not out.passed and out.fp32_groups == [] and (out.recipe, out.gate) == start
