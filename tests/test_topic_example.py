"""``examples/train_topic_classifier.py``: one short training run of the topic teacher on the real default model.

A single optimizer step (batch 4, 32 tokens) on English only, scored on English (trained) and Italian
(zero-shot). The reference for the saved report is transformers' own model and tokenizer, read back from the
written checkpoint, on the held-out paragraphs of :func:`mbert_edge_export.topics.split`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mbert_edge_export import topics  # noqa: E402

from .conftest import load_script  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_topic_classifier.py"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """(checkpoint, its topic_eval.json) after one step on English."""
    available = topics.topic_languages().available
    if not {"en", "it"} <= set(available):
        pytest.skip("the dataset-build corpus's English or Italian topic sections are not available")
    example = load_script(SCRIPT, "train_topic_classifier")
    out = tmp_path_factory.mktemp("topic") / "teacher"
    args = ["-o", str(out), "--train-langs", "en", "--eval-langs", "en,it", "--epochs", "0.001"]
    example.main([*args, "--batch-size", "4", "--max-tokens", "32", "--threads", "2"])
    return out, json.loads((out / example.EVAL_FILE).read_text(encoding="utf-8"))


def test_the_example_writes_a_ten_topic_checkpoint_and_scores_it(trained):
    """The checkpoint is an ordinary Hugging Face classifier of the ten topics with its lineage; the report marks
    English trained and Italian zero-shot, and each accuracy is the share of held-out paragraphs that transformers'
    model of the written checkpoint labels right."""
    out, report = trained
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert [config["id2label"][str(i)] for i in range(len(topics.TOPICS))] == list(topics.TOPICS)
    lineage = json.loads((out / "mbert_edge_lineage.json").read_text(encoding="utf-8"))
    assert lineage["fine_tune"]["training"]["steps"] == 1
    assert lineage["fine_tune"]["data"]  # what it trained on
    assert report["languages"]["en"]["split"] == "trained" and report["languages"]["it"]["split"] == "zero-shot"
    tok = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    for lang in ("en", "it"):
        train, held = topics.split(lang)
        assert not {p.text for p, _ in train} & {p.text for p, _ in held}
        texts = [topics.PREFIX + p.text for p, _ in held]
        with torch.no_grad():
            enc = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
            pred = model(**enc).logits.argmax(-1).tolist()
        correct = sum(int(p == gold) for p, (_, gold) in zip(pred, held, strict=True))
        row = report["languages"][lang]
        assert (row["n"], row["correct"]) == (len(held), correct), lang


def test_eval_only_reads_the_checkpoint_back_to_the_same_scores(trained, tmp_path):
    """``--eval-only`` on the written checkpoint (loaded as export loads it) gives the training run's scores."""
    out, report = trained
    example = load_script(SCRIPT, "train_topic_classifier")
    again = tmp_path / "again.json"
    example.main(["--eval-only", str(out), "--train-langs", "en", "--eval-langs", "en,it", "-o", str(again)])
    scored = json.loads(again.read_text(encoding="utf-8"))
    for lang in ("en", "it"):
        assert scored["languages"][lang]["correct"] == report["languages"][lang]["correct"], lang
