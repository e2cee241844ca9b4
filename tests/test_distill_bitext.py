"""``distill --parallel``: translation pairs, each translation trained towards the teacher's vector of its source.

The file reader is checked on hand-written files; the training targets against transformers' own model and
tokenizer reading the source sentence (the independent reference), with and without a vocabulary cap.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mbert_edge.manifest import FEATURE_EXTRACTION, TEXT_CLASSIFICATION  # noqa: E402
from mbert_edge_export.distill import bitext, distill  # noqa: E402
from mbert_edge_export.distill.data import parallel_set  # noqa: E402
from mbert_edge_export.errors import DistillError  # noqa: E402

PAIRS = [
    ("The river flooded the old mill last spring.", "Der Fluss überflutete im letzten Frühjahr die alte Mühle."),
    ("Where can I buy a ticket for the night train?", "Wo kann ich eine Fahrkarte für den Nachtzug kaufen?"),
    ("Our neighbour repairs bicycles in his garage.", "Unser Nachbar repariert Fahrräder in seiner Garage."),
    ("The museum is closed on Mondays in winter.", "Das Museum ist im Winter montags geschlossen."),
]


def _write(path: Path, header: str, rows: list[tuple[str, ...]], comment: str = "# made for a test\n") -> Path:
    path.write_text(comment + header + "\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_read_pairs_sources_translations_and_summary(tmp_path):
    f = _write(tmp_path / "p.tsv", "en\tde\tfr", [(*PAIRS[0], "La rivière a inondé le vieux moulin."), (*PAIRS[1], "")])
    items, summary = bitext.read_pairs(f, evaluation=set())
    assert items == [
        bitext.Pair(PAIRS[0][0], "en"),
        bitext.Pair(PAIRS[0][1], "de", target_text=PAIRS[0][0]),
        bitext.Pair("La rivière a inondé le vieux moulin.", "fr", target_text=PAIRS[0][0]),
        bitext.Pair(PAIRS[1][0], "en"),
        bitext.Pair(PAIRS[1][1], "de", target_text=PAIRS[1][0]),
    ]
    assert summary["source_language"] == "en"
    assert summary["pairs_per_language"] == {"de": 2, "fr": 1}
    assert summary["left_out_as_evaluation_text"] == 0


def test_pairs_holding_evaluation_sentences_are_left_out(tmp_path, caplog):
    """A row with a sentence of parallel_eval.tsv, in any column, never reaches training."""
    evaluation = {s for sents in parallel_set().values() for s in sents.values()}
    sets = parallel_set()
    en, de = sets["en"]["s01"], sets["de"]["s01"]
    f = _write(tmp_path / "p.tsv", "en\tde", [PAIRS[0], (en, "Etwas anderes."), ("Something else.", de)])
    with caplog.at_level(logging.WARNING):
        items, summary = bitext.read_pairs(f, evaluation)
    assert [p.text for p in items] == list(PAIRS[0])
    assert summary["left_out_as_evaluation_text"] == 2
    assert "2 pair(s) hold evaluation sentences" in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("The river\tDer Fluss\n", "must name the columns' languages"),
        ("en\n" + PAIRS[0][0] + "\n", "must name the columns' languages"),
        ("en\txx\n" + "\t".join(PAIRS[0]) + "\n", "must name the columns' languages"),
        ("en\tde\n" + "\t".join(PAIRS[0]) + "\textra\n", "row 2 .* has 3 columns, the header 2"),
        ("en\tde\nonly a source\n", "no translation pairs in it"),
    ],
)
def test_bad_pair_files_say_what_is_wrong(tmp_path, content, message):
    f = tmp_path / "bad.tsv"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(DistillError, match=message):
        bitext.read_pairs(f, evaluation=set())


def test_not_utf8_is_refused(tmp_path):
    f = tmp_path / "latin1.tsv"
    f.write_bytes("en\tde\nThe mill\tDie Mühle\n".encode("latin-1"))
    with pytest.raises(DistillError, match="not UTF-8"):
        bitext.read_pairs(f, evaluation=set())


def test_builtin_resolves_to_the_kept_languages_files():
    files = bitext.resolve(["builtin"], ["en", "de", "ar"])
    assert [f.name for f in files] == ["en-ar.tsv", "en-de.tsv"]
    assert {f.name for f in bitext.resolve(["builtin"], None)} == {
        f"en-{c}.tsv" for c in ("de", "fr", "es", "ru", "zh", "ar", "hi")
    }


def test_default_preset_adds_the_builtin_pairs_where_they_apply():
    """The default preset reads the project's files of the kept languages for a sentence-embedding teacher and
    skips them elsewhere; an explicit --parallel file comes on top, once."""
    from mbert_edge_export.distill.settings import make_settings

    default = make_settings("default", 6, languages=["en", "ar", "hi"])
    assert default.builtin_pairs and default.parallel_weight == 2
    assert not make_settings("smoke", 1).builtin_pairs
    files = bitext.files_for(default.parallel, default.languages, default.builtin_pairs, applies=True)
    assert [f.name for f in files] == ["en-ar.tsv", "en-hi.tsv"]
    assert bitext.files_for(default.parallel, default.languages, default.builtin_pairs, applies=False) == []
    mine = Path("mine.tsv")
    both = bitext.files_for(["builtin", mine], ["ar"], True, applies=True)
    assert [f.name for f in both] == ["en-ar.tsv", "mine.tsv"]
    off = make_settings("default", 6, languages=["ar"], builtin_pairs=False)
    assert bitext.files_for(off.parallel, off.languages, off.builtin_pairs, applies=True) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"parallel": ["missing.tsv"]}, "--parallel missing.tsv: no such file"),
        ({"parallel": ["builtin"], "hidden_weight": 1.0}, "--parallel with --hidden-loss"),
        ({"parallel": ["builtin"], "parallel_weight": 0}, "--parallel-weight 0: times each pair"),
    ],
)
def test_bad_parallel_settings_fail_before_loading(checkpoints, tmp_path, monkeypatch, kwargs, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("mbert_edge_export.sources.load_source", lambda *a, **k: pytest.fail("loaded the teacher"))
    with pytest.raises(DistillError, match=message):
        distill(str(checkpoints[FEATURE_EXTRACTION]), tmp_path / "out", 1, preset="smoke", threads=1, **kwargs)


def test_parallel_needs_an_embedding_teacher(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr("mbert_edge_export.sources.load_source", lambda *a, **k: pytest.fail("loaded the teacher"))
    with pytest.raises(DistillError, match="this teacher is text-classification"):
        distill(
            str(checkpoints[TEXT_CLASSIFICATION]), tmp_path / "o", 1, preset="smoke", threads=1, parallel=["builtin"]
        )


def _recorded_run(source: Path, out: Path, monkeypatch, **kw):
    """A smoke distillation that keeps its training texts and Trainer; returns (report, texts, trainer)."""
    from mbert_edge_export.distill import data as data_mod
    from mbert_edge_export.distill import trainer as trainer_mod

    made: list = []
    texts: list = []

    class Recording(trainer_mod.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    def recording_data(*args, **kwargs):
        data = data_mod.build_training_data(*args, **kwargs)
        texts.append(data.items)
        return data

    monkeypatch.setattr("mbert_edge_export.distill.Trainer", Recording)
    monkeypatch.setattr("mbert_edge_export.distill.build_training_data", recording_data)
    report = distill(str(source), out, 1, preset="smoke", threads=1, **kw)
    (tr,), (items,) = made, texts
    return report, items, tr


def _check_translation_targets(items, tr, teacher: Path) -> int:
    """Every translation's teacher input is its source as the teacher's own tokenizer reads it (cut at the
    smoke preset's 32 tokens), and its cached target is transformers' mean-pooled output of that; the other
    texts' targets are their own. Returns how many translations were checked."""
    tok = transformers.AutoTokenizer.from_pretrained(teacher)
    model = transformers.AutoModel.from_pretrained(teacher).eval()
    checked = 0
    for i, item in enumerate(items):
        if not tr.cache.done[i]:
            continue
        expected = tok(item.target_text or item.text, truncation=True, max_length=32)["input_ids"]
        assert list(tr.teacher_ids[i]) == expected
        if item.target_text is None:
            continue
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([expected])).last_hidden_state[0]
        np.testing.assert_allclose(tr.cache.values[i], hidden.mean(0).numpy(), atol=1e-5)
        checked += 1
    return checked


def test_translations_are_trained_towards_their_source(checkpoints, tmp_path, monkeypatch):
    teacher = checkpoints[FEATURE_EXTRACTION]
    f = _write(tmp_path / "pairs.tsv", "en\tde", PAIRS)
    report, items, tr = _recorded_run(teacher, tmp_path / "s", monkeypatch, parallel=[str(f)])
    translations = [t for t in items if t.target_text is not None]
    assert [(t.target_text, t.text, t.lang) for t in translations] == [(en, de, "de") for en, de in PAIRS]
    assert sum(t.text == en and t.lang == "en" and t.target_text is None for t in items for en, _ in PAIRS) == 4
    assert _check_translation_targets(items, tr, teacher) == 4
    (summary,) = report["data"]["parallel"]
    assert summary["pairs_per_language"] == {"de": 4} and summary["path"] == str(f)


def test_translations_under_a_vocabulary_cap_read_the_untrimmed_source(checkpoints, tmp_path, monkeypatch):
    """With --max-vocab the student reads the capped tokenization of the translation, and the target is the
    untrimmed teacher's vector of the source's original tokenization (not of the translation's span)."""
    teacher = checkpoints[FEATURE_EXTRACTION]
    f = _write(tmp_path / "pairs.tsv", "en\tde", PAIRS)
    report, items, tr = _recorded_run(
        teacher,
        tmp_path / "capped",
        monkeypatch,
        parallel=[str(f)],
        languages=["en", "de"],
        trim_options={"sources": ("dataset-build",), "max_vocab": 700},
    )
    assert report["trim"]["vocab_size"]["after"] <= 700
    assert tr.teacher.get_input_embeddings().weight.shape[0] > 700  # the untrimmed teacher
    assert _check_translation_targets(items, tr, teacher) == 4


def test_parallel_pairs_alone_are_training_text(checkpoints, tmp_path, monkeypatch):
    f = _write(tmp_path / "pairs.tsv", "en\tde", PAIRS)
    report, items, _ = _recorded_run(
        checkpoints[FEATURE_EXTRACTION], tmp_path / "alone", monkeypatch, parallel=[str(f)], corpus=False
    )
    assert len(items) == 8 and report["data"]["texts"] == 8
    _, twice, _ = _recorded_run(
        checkpoints[FEATURE_EXTRACTION],
        tmp_path / "twice",
        monkeypatch,
        parallel=[str(f)],
        corpus=False,
        parallel_weight=2,
    )
    assert sorted((t.text, t.target_text) for t in twice) == sorted((t.text, t.target_text) for t in items * 2)


def test_cli_parallel_reaches_the_recipe(checkpoints, tmp_path, capsys):
    from mbert_edge.cli import main

    f = _write(tmp_path / "pairs.tsv", "en\tde", PAIRS)
    out = tmp_path / "cli"
    rc = main([
        "distill", str(checkpoints[FEATURE_EXTRACTION]), "-o", str(out), "--layers", "1", "--preset", "smoke",
        "--threads", "1", "--parallel", str(f), "--parallel-weight", "2", "--steps", "2",
    ])  # fmt: skip
    assert rc == 0
    report = json.loads((out / "distill_report.json").read_text())
    assert report["recipe"]["parallel"] == [str(f)] and report["recipe"]["parallel_weight"] == 2
    assert report["data"]["parallel"][0]["pairs_per_language"] == {"de": 4}
    rc = main([
        "distill", str(checkpoints[FEATURE_EXTRACTION]), "-o", str(tmp_path / "x"), "--layers", "1",
        "--parallel", str(tmp_path / "nope.tsv"),
    ])  # fmt: skip
    assert rc != 0 and "no such file" in capsys.readouterr().err
