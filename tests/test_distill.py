"""``mbert-edge distill`` on tiny models: layer maps, student shapes, training, resume, the gate, bad settings.

Teachers are the tiny 2-layer checkpoints of conftest.py (and a 4-layer one built here); the recipe is the
``smoke`` preset (a few dozen corpus texts, 20 steps). The reference for the student's layers is the teacher's
own weights; for training, the untrained student cut from the same teacher.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mbert_edge.manifest import FEATURE_EXTRACTION, TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION  # noqa: E402
from mbert_edge_export.distill import REPORT_FILE, distill, work_dir  # noqa: E402
from mbert_edge_export.distill.layers import make_student, named_map, parse_layer_map  # noqa: E402
from mbert_edge_export.errors import DistillError  # noqa: E402

from .conftest import CLS_LABELS, corpus_lines  # noqa: E402


@pytest.fixture(scope="module")
def teacher4(tmp_path_factory, vocab_file) -> Path:
    """A tiny 4-layer embedding teacher (so students of 1 to 3 layers are real cuts)."""
    config = transformers.BertConfig(
        vocab_size=sum(1 for _ in vocab_file.open(encoding="utf-8")),
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.3,
    )
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("teacher4") / "feature-extraction"
    transformers.BertModel(config).eval().save_pretrained(path, safe_serialization=True)
    (path / "vocab.txt").write_text(vocab_file.read_text(encoding="utf-8"), encoding="utf-8")
    (path / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": False, "model_max_length": 128, "tokenizer_class": "BertTokenizer"})
    )
    return path


def _smoke(source: Path | str, out: Path, layers: int, **kw):
    kw.setdefault("threads", 1)
    return distill(str(source), out, layers, preset="smoke", **kw)


class Interrupted(Exception):
    """What :func:`_stop_at` raises: an interruption that writes no checkpoint (unlike Ctrl-C), so a rerun resumes
    from the last periodic one (every 10 steps in the smoke preset)."""


def _stop_at(n: int):
    """An ``on_step`` callback that interrupts the run after step ``n``."""

    def stop(step: int, loss: float) -> None:
        if step == n:
            raise Interrupted

    return stop


def _weights(checkpoint: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(checkpoint / "model.safetensors"))


# -- layer maps and student shapes -------------------------------------------------------------------------


def test_named_layer_maps():
    assert named_map("distilbert", 6, 12) == [0, 2, 4, 7, 9, 11]  # DistilBERT's own choice
    assert named_map("every-other", 6, 12) == [0, 2, 4, 6, 8, 10]
    assert named_map("first", 4, 12) == [0, 1, 2, 3]
    assert named_map("distilbert", 4, 12) == [0, 4, 7, 11]
    assert named_map("distilbert", 1, 12) == [11]
    assert named_map("distilbert", 12, 12) == list(range(12))
    assert parse_layer_map("0,3,7,11", 4, 12) == [0, 3, 7, 11]
    assert parse_layer_map("auto", 4, 12) == "auto"
    for bad in ("0,3,3,11", "3,1,5,7", "0,1,2", "0,1,2,12", "x,y,z,w"):
        with pytest.raises(DistillError):
            parse_layer_map(bad, 4, 12)


def test_student_copies_the_mapped_layers(teacher4):
    teacher = transformers.AutoModel.from_pretrained(teacher4).eval()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = make_student(teacher, [0, 3])
    assert student.config.num_hidden_layers == 2 and len(student.encoder.layer) == 2
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    for s_idx, t_idx in enumerate([0, 3]):
        for name, value in s_sd.items():
            if name.startswith(f"encoder.layer.{s_idx}."):
                ref = t_sd[name.replace(f"encoder.layer.{s_idx}.", f"encoder.layer.{t_idx}.", 1)]
                assert torch.equal(value, ref), name
    assert torch.equal(s_sd["embeddings.word_embeddings.weight"], t_sd["embeddings.word_embeddings.weight"])
    # the teacher is untouched, and a student that keeps every layer computes what the teacher computes
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert len(teacher.encoder.layer) == 4
    full = make_student(teacher, [0, 1, 2, 3])
    x = torch.tensor([[2, 50, 60, 70, 3]])
    assert torch.allclose(full(input_ids=x).last_hidden_state, teacher(input_ids=x).last_hidden_state, atol=1e-6)


# -- bad settings fail before anything slow ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": 5}, "has 4 layers"),
        ({"layers": 0}, "between 1 and 4"),
        ({"layers": 2, "languages": "en,xx"}, "xx"),
        ({"layers": 2, "layer_map": "0,1,2"}, "lists 3 layers"),
        ({"layers": 2, "corpus": False}, "no training text"),
        ({"layers": 2, "max_length": 4096}, "--max-length"),
        ({"layers": 2, "lr": -1.0}, "--lr"),
        ({"layers": 2, "steps": -1}, "--steps -1: must be at least 0"),
        ({"layers": 2, "min_retention": 1.5}, "--min-retention"),
        ({"layers": 2, "dropout": 1.0}, "--dropout"),
        ({"layers": 2, "precision": "fp16"}, "--precision"),
        ({"layers": 2, "device": "gpu"}, "--device gpu: a torch device"),
        ({"layers": 2, "intermediate_size": 65}, "has 64 feed-forward neurons"),
        ({"layers": 2, "intermediate_size": 0}, "keep between 1 and 64"),
        ({"layers": 2, "relation_weight": -0.5}, "loss weights"),
        ({"layers": 2, "relation_weight": 1.0, "relation_temperature": 0.0}, "relation_temperature"),
    ],
)
def test_bad_settings_fail_before_loading(teacher4, tmp_path, monkeypatch, kwargs, message):
    import mbert_edge_export.sources as sources

    def _no_load(*a, **k):
        raise AssertionError("the teacher was loaded before the settings were checked")

    monkeypatch.setattr(sources, "load_source", _no_load)
    layers = kwargs.pop("layers")
    with pytest.raises(DistillError, match=message):
        _smoke(teacher4, tmp_path / "out", layers, **kwargs)
    assert not (tmp_path / "out").exists()


def test_missing_gpu_fails_before_loading(teacher4, tmp_path, monkeypatch):
    import mbert_edge_export.sources as sources

    monkeypatch.setattr(sources, "load_source", lambda *a, **k: pytest.fail("loaded the teacher"))
    gpus = torch.cuda.device_count()
    with pytest.raises(DistillError, match=f"--device cuda:{gpus}: torch sees {gpus} CUDA GPU"):
        _smoke(teacher4, tmp_path / "out", 2, device=f"cuda:{gpus}")
    assert not (tmp_path / "out").exists()


def test_empty_and_missing_data_files_fail_early(teacher4, tmp_path, monkeypatch):
    import mbert_edge_export.sources as sources

    monkeypatch.setattr(sources, "load_source", lambda *a, **k: pytest.fail("loaded the teacher"))
    with pytest.raises(DistillError, match="no such file"):
        _smoke(teacher4, tmp_path / "out", 2, data_files=[tmp_path / "missing.txt"])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DistillError, match=r"empty\.txt"):
        _smoke(teacher4, tmp_path / "out", 2, data_files=[empty], corpus=False)


def test_unknown_preset_and_setting(teacher4, tmp_path):
    with pytest.raises(DistillError, match="preset"):
        distill(str(teacher4), tmp_path / "o", 2, preset="huge")
    with pytest.raises(DistillError, match="learning_rate"):
        distill(str(teacher4), tmp_path / "o", 2, preset="smoke", learning_rate=1.0)


def test_long_preset_is_the_default_recipe_for_fixed_steps():
    from mbert_edge.cli import _parser
    from mbert_edge_export.distill.settings import PRESETS, make_settings

    codes = ["en", "hi"]
    default, long = make_settings("default", 6, languages=codes), make_settings("long", 6, languages=codes)
    assert (default.steps, default.time_budget) == (None, 25.0)
    assert (long.steps, long.time_budget) == (2700, None)
    differ = {k for k, v in long.recipe().items() if default.recipe()[k] != v}
    assert differ == {"steps", "time_budget", "preset"}
    # the same student as the default preset told to make 2,700 steps without a budget (what was measured)
    measured = make_settings("default", 6, languages=codes, steps=2700, time_budget=0)
    assert long.fingerprint_fields() == measured.fingerprint_fields()
    # a budget given on the command line still applies, and 0 still means none
    assert make_settings("long", 6, time_budget=60.0).time_budget == 60.0
    assert make_settings("default", 6, time_budget=0).time_budget is None
    # the CLI offers exactly the presets there are
    distill_cli = _parser()._subparsers._group_actions[0].choices["distill"]
    preset = next(a for a in distill_cli._actions if a.dest == "preset")
    assert sorted(preset.choices) == sorted(PRESETS)


# -- training ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedding_student(teacher4, tmp_path_factory):
    out = tmp_path_factory.mktemp("students") / "s2"
    losses: list[float] = []
    report = _smoke(teacher4, out, 2, on_step=lambda step, loss: losses.append(loss))
    return out, report, losses


def test_student_learns_and_beats_the_untrained_cut(embedding_student):
    _, report, losses = embedding_student
    assert len(losses) == report["training"]["steps"] == 20
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    langs = report["evaluation"]["languages"]
    for lang, entry in langs.items():
        assert entry["student"]["cosine_mean"] > entry["untrained"]["cosine_mean"], lang
    assert report["student"]["layers"] == 2 and report["student"]["layer_map"] == [0, 3]
    assert report["student"]["parameters"] < report["teacher"]["parameters"]


def test_student_is_an_ordinary_checkpoint_with_lineage(embedding_student, teacher4, tmp_path, capsys):
    from mbert_edge_export.sources import load_source

    out, report, _ = embedding_student
    model = transformers.AutoModel.from_pretrained(out)
    assert model.config.num_hidden_layers == 2
    assert json.loads((out / REPORT_FILE).read_text())["student"]["layer_map"] == [0, 3]
    assert not work_dir(out).exists()  # the resume folder is gone once the student is written
    loaded = load_source(str(out))
    lineage = loaded.provenance["lineage"]
    assert lineage["teacher"]["weights_sha256"] == report["teacher"]["weights_sha256"]
    assert lineage["distill"]["layer_map"] == [0, 3] and lineage["distill"]["recipe"]["preset"] == "smoke"
    # export takes it as its source and the bundle records where it came from
    from mbert_edge_export import export_bundle

    bundle = export_bundle(str(out), tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["source"]["lineage"]["distill"]["layer_map"] == [0, 3]
    assert manifest["source"]["lineage"]["teacher"]["weights_sha256"] == report["teacher"]["weights_sha256"]
    from mbert_edge.cli import main

    assert main(["info", str(bundle)]) == 0
    shown = capsys.readouterr().out
    assert "teacher layers kept [0, 3], 20 steps (fp32)" in shown and "fidelity    distill" in shown
    assert lineage["distill"]["precision"] == "fp32"  # the smoke preset's, resolved
    worst = report["evaluation"]["gate"]["worst_language"]
    assert f"worst kept language {worst}" in shown


def test_same_seed_same_student(embedding_student, teacher4, tmp_path):
    out, _, _ = embedding_student
    again = tmp_path / "again"
    _smoke(teacher4, again, 2)
    a, b = _weights(out), _weights(again)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU that torch sees")


@pytest.mark.gpu
@needs_cuda
def test_cuda_trains_the_cpu_student(embedding_student, teacher4, tmp_path):
    """On a GPU in fp32 the same seed and data train the CPU's student, up to float rounding: the reference is
    the CPU run's loss curve and weights (the student's distance from the CPU one is a small share of how far
    training moved it from the untrained cut)."""
    out, cpu_report, cpu_losses = embedding_student
    losses: list[float] = []
    report = _smoke(teacher4, tmp_path / "cuda", 2, device="cuda", on_step=lambda step, loss: losses.append(loss))
    assert report["environment"]["device"] == "cuda" and report["training"]["precision"] == "fp32"
    np.testing.assert_allclose(losses, cpu_losses, rtol=2e-3)
    cpu, gpu = _weights(out), _weights(tmp_path / "cuda")
    start = make_student(transformers.AutoModel.from_pretrained(teacher4), [0, 3]).state_dict()
    for k in cpu:
        if k not in start:
            continue
        moved = float((cpu[k] - start[k]).norm())
        if moved > 0:
            assert float((gpu[k] - cpu[k]).norm()) < 0.02 * moved, k
    kept = cpu_report["evaluation"]["gate"]["value"]
    assert report["evaluation"]["gate"]["value"] == pytest.approx(kept, abs=2e-3)


@pytest.mark.gpu
@needs_cuda
def test_cuda_bf16_autocast_trains(teacher4, tmp_path):
    """``--precision bf16`` on a GPU: forward passes under autocast, float32 weights, and the student learns."""
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    losses: list[float] = []
    report = _smoke(
        teacher4, tmp_path / "bf16", 2, device="cuda", precision="bf16", on_step=lambda step, loss: losses.append(loss)
    )
    assert report["training"]["precision"] == "bf16"
    assert all(v.dtype == torch.float32 for v in _weights(tmp_path / "bf16").values())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def test_resume_reaches_the_uninterrupted_student(embedding_student, teacher4, tmp_path):
    out, _, _ = embedding_student

    resumed = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        _smoke(teacher4, resumed, 2, on_step=_stop_at(13))  # after the resume checkpoint of step 10
    assert not resumed.exists() and work_dir(resumed).exists()
    steps: list[int] = []
    _smoke(teacher4, resumed, 2, on_step=lambda step, loss: steps.append(step))
    assert steps[0] == 11 and steps[-1] == 20  # steps 11..20 only: 1-10 came from the checkpoint
    a, b = _weights(out), _weights(resumed)
    assert sorted(a) == sorted(b) and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_dropout_zero_trains_the_student_as_it_infers(teacher4, tmp_path):
    """``dropout=0``: the student's training forward equals its inference forward (the reference), every
    Dropout module is off, the saved config keeps the teacher's rates, and the student differs from a run
    with the teacher's dropout."""
    from mbert_edge_export.distill.trainer import set_dropout

    model = make_student(transformers.BertModel.from_pretrained(teacher4), [0, 3])
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    reference = model.eval()(input_ids=ids).last_hidden_state
    model.train()
    assert not torch.equal(model(input_ids=ids).last_hidden_state, reference)  # the config's 0.1 drops
    assert set_dropout(model, 0.0) > 0
    assert torch.equal(model(input_ids=ids).last_hidden_state, reference)

    plain, off = tmp_path / "plain", tmp_path / "off"
    _smoke(teacher4, plain, 2)
    _smoke(teacher4, off, 2, dropout=0.0)
    config = json.loads((off / "config.json").read_text())
    assert config["hidden_dropout_prob"] == 0.1 and config["attention_probs_dropout_prob"] == 0.1
    a, b = _weights(plain), _weights(off)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_precision_auto_picks_bf16_only_where_native(monkeypatch):
    from mbert_edge_export.distill import precision

    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert precision.resolve("auto", "cpu") == "fp32"
    assert precision.resolve("bf16", "cpu") == "bf16"  # asked for: emulated where not native, still correct
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert precision.resolve("auto", "cpu") == "bf16"
    assert precision.resolve("fp32", "cpu") == "fp32"
    with pytest.raises(DistillError, match="--precision"):
        precision.resolve("fp16", "cpu")


def test_bf16_training_keeps_fp32_targets_and_weights(teacher4, tmp_path, monkeypatch):
    """bf16 autocast: the cached targets are float32 and within bf16's precision of the fp32 teacher's
    (the reference: the same teacher run in fp32), the student's weights stay float32, and it learns."""
    from mbert_edge_export.distill import modeling
    from mbert_edge_export.distill import trainer as trainer_mod

    made: list = []

    class Recording(trainer_mod.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr("mbert_edge_export.distill.Trainer", Recording)
    report = _smoke(teacher4, tmp_path / "bf16", 2, precision="bf16")
    tr = made[0]
    assert report["training"]["precision"] == "bf16" and tr.precision == "bf16"
    assert all(p.dtype == torch.float32 for p in tr.student.parameters())
    assert report["training"]["loss_last"] < report["training"]["loss_first"]
    idx = [i for i in range(tr.n) if tr.cache.done[i]][:8]
    assert idx
    batch = modeling.collate([tr.teacher_ids[i] for i in idx], tr.teacher_pad_id, "cpu")
    with torch.inference_mode():
        ref = modeling.run(tr.teacher, tr.task, batch, tr.pooling).pooled
    got = torch.from_numpy(np.stack([tr.cache.values[i] for i in idx]))
    assert got.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(got, ref, dim=-1)
    assert float(cos.min()) > 0.999 and not torch.equal(got, ref)  # bf16's rounding, nothing more


def test_relation_loss_is_added_and_recorded(embedding_student, teacher4, tmp_path):
    """The same run with ``--relation-loss 1``: the first step starts from the same student on the same batch, so
    its loss is the plain run's plus the (positive) in-batch relation loss; the recipe records the weight."""
    _, plain, plain_losses = embedding_student
    losses: list[float] = []
    report = _smoke(teacher4, tmp_path / "rel", 2, relation_weight=1.0, on_step=lambda s, v: losses.append(v))
    assert report["recipe"]["relation_weight"] == 1.0 and plain["recipe"]["relation_weight"] == 0.0
    assert losses[0] > plain_losses[0]
    assert len(losses) == 20 and sum(losses[-5:]) < sum(losses[:5])


def test_relation_loss_needs_an_embedding_teacher(checkpoints, tmp_path, monkeypatch):
    import mbert_edge_export.sources as sources

    monkeypatch.setattr(sources, "load_source", lambda *a, **k: pytest.fail("loaded the teacher"))
    with pytest.raises(DistillError, match="sentence-embedding teachers"):
        _smoke(checkpoints[TEXT_CLASSIFICATION], tmp_path / "cls", 1, relation_weight=1.0)


def test_resume_with_other_settings_is_refused(teacher4, tmp_path):
    out = tmp_path / "s"
    with pytest.raises(Interrupted):
        _smoke(teacher4, out, 2, on_step=_stop_at(11))
    with pytest.raises(DistillError, match="lr"):
        _smoke(teacher4, out, 2, lr=5e-4)
    _smoke(teacher4, out, 2, lr=5e-4, restart=True)  # --restart discards the unfinished run
    assert out.is_dir()


def test_retention_gate_fails_when_set_impossibly_high(teacher4, tmp_path):
    out = tmp_path / "gated"
    with pytest.raises(DistillError, match="retention gate failed") as info:
        _smoke(teacher4, out, 1, min_retention=1.0, languages=None)
    report = info.value.distill_report
    assert report is not None and report["evaluation"]["gate"]["passed"] is False
    g = report["evaluation"]["gate"]  # the worst kept language's sampling error beside the verdict
    assert g["level"] == 0.95 and g["worst_interval"][0] <= g["worst_interval"][1] <= 1.0
    assert g["worst_interval"] == g["intervals"][g["worst_language"]]
    groups = g["against_threshold"]  # every kept language with an interval, in exactly one group
    assert sorted(groups["above"] + groups["below"] + groups["undecided"]) == sorted(g["intervals"])
    for lang, (lo, hi) in g["intervals"].items():
        student = report["evaluation"]["languages"][lang]["student"]
        # at a ratio of exactly 0 or 1 (no lookup won, or none lost) Jeffreys' half counts keep the interval off
        # the point itself; the tiny smoke student lands on 0 in some runs (thread counts change its weights)
        assert lo - 1e-9 <= student["retention"] <= hi + 1e-9 or student["retention"] in (0.0, 1.0)
        assert 0.0 <= lo <= hi
    from mbert_edge_export.distill.evaluate import format_report

    assert f"sampling error: {g['worst_language']}'s retention lies in" in format_report(report)
    rows = report["evaluation"]["languages"]
    counted = [r for r in rows.values() if "retrieval_counts" in r["student"]]
    assert counted and all(
        sum(r["student"]["retrieval_counts"].values()) == 2 * r["parallel_sentences"] for r in counted
    )
    assert not out.exists()  # nothing written; the trained student waits in the work directory
    assert (work_dir(out) / REPORT_FILE).is_file()


def test_classifier_student_uses_gold_labels(checkpoints, tmp_path):
    data = tmp_path / "train.jsonl"
    # a label the student can learn (the text's language), so that the gold-label loss falls with the rest
    rows = [{"text": t, "label": CLS_LABELS[0 if lang == "eng" else 2]} for lang, t in corpus_lines(("eng", "deu"), 40)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    losses: list[float] = []
    report = _smoke(
        checkpoints[TEXT_CLASSIFICATION], tmp_path / "cls", 1, data_files=[data], on_step=lambda s, v: losses.append(v)
    )
    assert report["data"]["user_files"][0]["labelled"] is True and report["data"]["labelled_texts"] > 0
    assert sum(losses[-5:]) < 0.9 * sum(losses[:5]), losses
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "cls")
    assert model.config.num_hidden_layers == 1 and model.config.id2label[0] == CLS_LABELS[0]
    entry = next(iter(report["evaluation"]["languages"].values()))
    assert "agreement" in entry["student"]


def test_token_classifier_student(checkpoints, tmp_path):
    report = _smoke(checkpoints[TOKEN_CLASSIFICATION], tmp_path / "ner", 1)
    model = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path / "ner")
    assert model.config.num_hidden_layers == 1
    assert report["training"]["steps"] == 20


def test_bad_label_names_the_file(checkpoints, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"text": "hello there", "label": "spam"}) + "\n", encoding="utf-8")
    with pytest.raises(DistillError, match="spam"):
        _smoke(checkpoints[TEXT_CLASSIFICATION], tmp_path / "o", 1, data_files=[data], corpus=False)


def test_cli_distill_smoke(checkpoints, tmp_path, capsys):
    from mbert_edge.cli import main

    out = tmp_path / "cli-student"
    rc = main([
        "distill", str(checkpoints[FEATURE_EXTRACTION]), "-o", str(out), "--layers", "1", "--preset", "smoke",
        "--threads", "1", "--dropout", "0", "--intermediate-size", "24", "--no-ffn-refit",
    ])  # fmt: skip
    assert rc == 0 and (out / "config.json").is_file()
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["recipe"]["dropout"] == 0.0
    assert report["recipe"]["intermediate_size"] == 24 and report["student"]["intermediate_size"] == 24
    assert report["recipe"]["ffn_refit"] is False and "refit" not in report["student"]["feed_forward_pruning"]
    assert "Next: mbert-edge export" in capsys.readouterr().out
    rc = main(["distill", str(checkpoints[FEATURE_EXTRACTION]), "-o", str(tmp_path / "x"), "--layers", "3"])
    assert rc != 0
    assert "layers" in capsys.readouterr().err


def _record_training(mp: pytest.MonkeyPatch) -> tuple[list, list[list[str]]]:
    """Patch distill so that the Trainer it makes and the texts its student encoder reads are recorded; returns
    the two lists they are appended to."""
    from mbert_edge_export.distill import modeling
    from mbert_edge_export.distill import trainer as trainer_mod

    made: list = []
    encoded: list[list[str]] = []

    class Recording(trainer_mod.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    def recorder(original):
        def recording(self, texts):
            encoded.append(list(texts))
            return original(self, texts)

        return recording

    mp.setattr("mbert_edge_export.distill.Trainer", Recording)
    mp.setattr(modeling.TextEncoder, "ids_and_spans", recorder(modeling.TextEncoder.ids_and_spans))
    mp.setattr(modeling.TextEncoder, "ids", recorder(modeling.TextEncoder.ids))
    return made, encoded


def _capped_run(source, out, monkeypatch, **kw):
    """A smoke distillation with a vocabulary cap; returns (report, the Trainer, the training texts)."""
    made, encoded = _record_training(monkeypatch)
    report = _smoke(
        source, out, 1, languages=["en", "de"], trim_options={"sources": ("dataset-build",), "max_vocab": 700}, **kw
    )
    (tr,) = made
    return report, tr, encoded[0]


@pytest.mark.parametrize("task", [FEATURE_EXTRACTION, TEXT_CLASSIFICATION])
def test_capped_trim_takes_targets_from_the_untrimmed_teacher(checkpoints, tmp_path, monkeypatch, task):
    """With --max-vocab the student reads the capped tokenization, but its targets are what the untrimmed
    teacher makes of the original tokenization of the same span of text (checked against transformers' own
    model and tokenizer): a text the capped tokenizer cuts at max_length reaches the teacher cut there too."""
    import numpy as np
    from tokenizers import Tokenizer

    teacher = checkpoints[task]
    vocab = sum(1 for _ in (teacher / "vocab.txt").open(encoding="utf-8"))
    report, tr, texts = _capped_run(teacher, tmp_path / "capped", monkeypatch)
    assert report["trim"]["vocab_size"]["after"] <= 700 < vocab
    assert report["teacher"]["targets"] == "untrimmed teacher, original tokenization"
    assert tr.teacher.get_input_embeddings().weight.shape[0] == vocab  # the untrimmed teacher
    assert tr.student.get_input_embeddings().weight.shape[0] <= 700
    assert len(texts) == len(tr.ids)
    tok = transformers.AutoTokenizer.from_pretrained(teacher)
    auto = transformers.AutoModel if task == FEATURE_EXTRACTION else transformers.AutoModelForSequenceClassification
    model = auto.from_pretrained(teacher).eval()
    capped = Tokenizer.from_file(str(tmp_path / "capped" / "tokenizer.json"))
    capped.enable_truncation(32)
    done = [i for i in range(len(texts)) if tr.cache.done[i]]
    assert done
    split = cut = 0
    for i in done:
        enc = capped.encode(texts[i])
        assert list(tr.ids[i]) == enc.ids
        span = texts[i]
        if len(enc.ids) == 32:  # cut by the capped tokenizer: the teacher reads up to its last token's end
            ends = [e for (_, e), sp in zip(enc.offsets, enc.special_tokens_mask, strict=True) if not sp]
            span = texts[i][: max(ends)]
            cut += len(span) < len(texts[i])
        expected = tok(span, truncation=True, max_length=32)["input_ids"]
        assert list(tr.teacher_ids[i]) == expected
        split += enc.tokens != tok.convert_ids_to_tokens(tok(texts[i], truncation=True, max_length=32)["input_ids"])
        with torch.no_grad():
            out = model(input_ids=torch.tensor([expected]))
        target = out.last_hidden_state[0].mean(0) if task == FEATURE_EXTRACTION else out.logits[0]
        np.testing.assert_allclose(tr.cache.values[i], target.numpy(), atol=1e-5)
    assert split > 0 and cut > 0  # both cases happen, so the test tells the teachers and the spans apart


def test_token_classifier_targets_stay_with_the_trimmed_teacher(checkpoints, tmp_path, monkeypatch):
    """Per-token targets need the student's tokens: under a cap, the trimmed teacher reads what the student reads."""
    report, tr, _ = _capped_run(checkpoints[TOKEN_CLASSIFICATION], tmp_path / "ner", monkeypatch)
    assert report["teacher"]["targets"] == "trimmed teacher"
    assert tr.teacher.get_input_embeddings().weight.shape[0] == report["trim"]["vocab_size"]["after"]
    assert tr.teacher_ids is tr.ids


def test_teacher_ids_refused_for_per_token_targets(teacher4):
    from mbert_edge_export.distill.settings import make_settings
    from mbert_edge_export.distill.trainer import Trainer

    settings = make_settings("smoke", 1, hidden_weight=1.0)
    model = transformers.AutoModel.from_pretrained(teacher4)
    with pytest.raises(ValueError, match="per-token targets"):
        Trainer(model, model, FEATURE_EXTRACTION, [[1, 2]], [None], settings, [0], 0, Path("."), "f", teacher_ids=[[1]])


# -- feed-forward width pruning ----------------------------------------------------------------------------


def test_pruning_equals_zeroing_the_dropped_neurons(teacher4):
    """The reference: the unpruned student with the dropped neurons' output columns set to zero."""
    from mbert_edge_export.distill import pruning

    teacher = transformers.AutoModel.from_pretrained(teacher4).eval()
    keep = [[i for i in range(64) if i % 3 != 1], [i for i in range(64) if i % 5 != 0][:43]]  # 43 of 64 each
    pruned = make_student(teacher, [0, 3])
    pruning.prune(pruned, keep)
    zeroed = make_student(teacher, [0, 3])
    with torch.no_grad():
        for layer, kept in zip(zeroed.encoder.layer, keep, strict=True):
            dropped = [i for i in range(64) if i not in kept]
            layer.output.dense.weight[:, dropped] = 0.0
    assert pruned.config.intermediate_size == 43
    assert pruned.encoder.layer[1].intermediate.dense.weight.shape == (43, 32)
    assert pruned.encoder.layer[1].output.dense.weight.shape == (32, 43)
    x = torch.tensor([[2, 50, 60, 70, 80, 3], [2, 90, 91, 3, 0, 0]])
    mask = (x != 0).long()
    a = pruned(input_ids=x, attention_mask=mask).last_hidden_state
    b = zeroed(input_ids=x, attention_mask=mask).last_hidden_state
    assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    with pytest.raises(DistillError, match="same number"):
        pruning.prune(make_student(teacher, [0, 3]), [list(range(40)), list(range(41))])


def test_importance_is_activation_times_output_norm(teacher4):
    """Hand-checkable properties of the score: scaling one neuron's output column by 2 doubles its score and
    leaves the others (the last kept layer, so no later activation changes); a zeroed column scores 0 and is
    the first dropped; ``top_neurons`` keeps the best in their original order."""
    from mbert_edge_export.distill import pruning

    teacher = transformers.AutoModel.from_pretrained(teacher4).eval()
    ids = [[2, 10 + i, 20 + 2 * i, 30 + 3 * i, 3] for i in range(12)]
    (base,) = pruning.importance(teacher, [3], ids, pad_id=0)
    with torch.no_grad():
        teacher.encoder.layer[3].output.dense.weight[:, 5] *= 2.0
        teacher.encoder.layer[3].output.dense.weight[:, 9] = 0.0
    (after,) = pruning.importance(teacher, [3], ids, pad_id=0)
    assert float(after[5]) == pytest.approx(2 * float(base[5]), rel=1e-9)
    assert float(after[9]) == 0.0
    others = [i for i in range(64) if i not in (5, 9)]
    assert torch.allclose(after[others], base[others], rtol=1e-9)
    (keep,) = pruning.top_neurons([after], 63)
    assert 9 not in keep and keep == sorted(keep) and len(keep) == 63
    assert pruning.top_neurons([torch.tensor([0.5, 3.0, 1.0, 2.0])], 2) == [[1, 3]]
    with pytest.raises(DistillError, match="64 feed-forward neurons"):
        pruning.top_neurons([after], 65)


@pytest.mark.parametrize("bias", [True, False])
def test_refit_output_is_the_least_squares_solution(bias, monkeypatch):
    """Against NumPy's least squares on explicit activations: the kept neurons' output projection (and bias)
    that best reproduce ``A W^T + b`` (without the ridge: exactly; with it, within 1% of the optimum's error);
    keeping every neuron gives back ``W`` and ``b``."""
    from mbert_edge_export.distill import pruning

    rng = np.random.default_rng(0)
    n, d, out = 400, 24, 8
    a = rng.normal(size=(n, d)) * rng.uniform(0.2, 3.0, size=d) + rng.normal(size=d)  # correlated, offset
    a[:, 5] = 0.7 * a[:, 3] - 0.2 * a[:, 11]  # a neuron the others explain: dropping it should cost ~nothing
    w, b = rng.normal(size=(out, d)), rng.normal(size=out)
    target = a @ w.T + (b if bias else 0.0)
    aug = np.hstack([a, np.ones((n, 1))])
    gram = torch.from_numpy(aug.T @ aug)
    kept = [i for i in range(d) if i not in (5, 7, 19)]
    w_t, b_t = torch.from_numpy(w), torch.from_numpy(b) if bias else None
    design = np.hstack([a[:, kept], np.ones((n, 1))]) if bias else a[:, kept]
    ref, *_ = np.linalg.lstsq(design, target, rcond=None)

    def error(weight, offset):
        return np.square(a[:, kept] @ weight.T + (offset if bias else 0.0) - target).mean()

    with monkeypatch.context() as m:
        m.setattr(pruning, "REFIT_RIDGE", 0.0)
        w0, b0 = pruning.refit_output(w_t, b_t, gram, kept)
    assert w0.shape == (len(w), len(kept))
    np.testing.assert_allclose(w0.numpy(), ref[: len(kept)].T, rtol=1e-6, atol=1e-6)
    if bias:
        np.testing.assert_allclose(b0.numpy(), ref[-1], rtol=1e-6, atol=1e-6)
    else:
        assert not b0.any()
    w2, b2 = pruning.refit_output(w_t, b_t, gram, kept)  # with the ridge
    optimum = error(ref[: len(kept)].T, ref[-1])
    assert optimum <= error(w2.numpy(), b2.numpy()) <= 1.01 * optimum
    assert error(w2.numpy(), b2.numpy()) < 0.9 * error(w[:, kept], b)  # neuron 5 recovered; 7 and 19 are lost
    with monkeypatch.context() as m:
        m.setattr(pruning, "REFIT_RIDGE", 0.0)
        a[:, 5] += rng.normal(size=n)  # full rank again, so that W is the one exact solution
        aug = np.hstack([a, np.ones((n, 1))])
        w3, b3 = pruning.refit_output(w_t, b_t, torch.from_numpy(aug.T @ aug), list(range(d)))
    np.testing.assert_allclose(w3.numpy(), w, atol=1e-8)
    if bias:
        np.testing.assert_allclose(b3.numpy(), b, atol=1e-8)


def test_refit_narrowing_reconstructs_the_feed_forward_block_better(teacher4):
    """On the text it was fit on, a layer narrowed with the refit reproduces the full feed-forward block's output
    more closely than the same neurons sliced, on every layer; the report records the refit."""
    from mbert_edge_export.distill import pruning

    teacher = transformers.AutoModel.from_pretrained(teacher4).eval()
    ids = [[2, *[(7 * i + 3 * j) % 3900 + 5 for j in range(4 + i % 9)], 3] for i in range(48)]
    inputs: dict[int, torch.Tensor] = {}
    hooks = [
        layer.intermediate.register_forward_hook(lambda m, x, y, j=j: inputs.__setitem__(j, x[0].detach()))
        for j, layer in enumerate(teacher.encoder.layer)
    ]
    batch = {"input_ids": torch.tensor([x + [0] * (14 - len(x)) for x in ids])}
    batch["attention_mask"] = (batch["input_ids"] != 0).long()
    with torch.no_grad():
        teacher(**batch)
    for h in hooks:
        h.remove()
    mask = batch["attention_mask"].bool()

    def block(layer, j):  # the feed-forward block's output on layer j's real tokens
        with torch.no_grad():
            return layer.output.dense(layer.intermediate(inputs[j]))[mask]

    full = [block(teacher.encoder.layer[j], j) for j in (0, 3)]
    errors = {}
    for refit in (False, True):
        student = make_student(teacher, [0, 3])
        _, report = pruning.prune_by_importance(teacher, student, [0, 3], 40, ids, pad_id=0, refit=refit)
        assert ("refit" in report) is refit
        errors[refit] = [
            float((block(layer, j) - ref).square().mean())
            for layer, j, ref in zip(student.encoder.layer, (0, 3), full, strict=True)
        ]
    assert all(r < 0.8 * s for r, s in zip(errors[True], errors[False], strict=True)), errors


def test_untrained_row_is_the_narrowed_start(teacher4, tmp_path, monkeypatch):
    """The report's ``untrained`` candidate is narrowed exactly as training started (the same neurons, refit on
    the same text), not sliced: both narrowings write the same output projections."""
    from mbert_edge_export.distill import pruning

    narrowed = []
    prune = pruning.prune

    def recording(model, keep, grams=None):
        prune(model, keep, grams)
        narrowed.append([layer.output.dense.weight.detach().clone() for layer in model.encoder.layer])

    monkeypatch.setattr(pruning, "prune", recording)
    _smoke(teacher4, tmp_path / "s", 2, intermediate_size=40, steps=2)
    assert len(narrowed) == 2  # the student before training, then the report's untrained copy
    for start, untrained in zip(*narrowed, strict=True):
        assert torch.equal(start, untrained)


def test_steps_zero_writes_the_cut_untrained(teacher4, tmp_path, capsys):
    """``--steps 0``: no training; the checkpoint holds the teacher's mapped layers as they are, and the report
    evaluates that student (no separate untrained row) without a work directory left behind."""
    out = tmp_path / "cut"
    report = _smoke(teacher4, out, 2, steps=0)
    assert report["training"]["steps"] == 0 and report["training"]["stopped_by"] == "--steps 0 (evaluation only)"
    assert report["evaluation"]["candidates"] == ["student"]
    assert not work_dir(out).exists()
    teacher, student = _weights(teacher4), _weights(out)
    kept = {k for k in teacher if not k.startswith(("encoder.layer.", "pooler."))}  # the student has no pooler
    kept |= {k for k in teacher if k.startswith("encoder.layer.0.")}
    kept |= {k.replace(".3.", ".1.", 1) for k in teacher if k.startswith("encoder.layer.3.")}
    assert set(student) == kept
    for name, value in student.items():
        ref = name.replace("encoder.layer.1.", "encoder.layer.3.", 1) if name.startswith("encoder.layer.1.") else name
        assert torch.equal(value, teacher[ref]), name
    from mbert_edge.cli import main

    assert main(["distill", str(teacher4), "-o", str(tmp_path / "cli"), "--layers", "2", "--preset", "smoke",
                 "--steps", "0", "--threads", "1"]) == 0  # fmt: skip
    assert "0 steps (--steps 0 (evaluation only))" in capsys.readouterr().out


def test_steps_zero_evaluates_where_training_starts(teacher4, tmp_path):
    """A narrowed (refit) student written with ``--steps 0`` is the start of training: its evaluation is the
    ``untrained`` row of a run that trains from the same settings."""
    start = _smoke(teacher4, tmp_path / "start", 2, intermediate_size=40, steps=0)
    trained = _smoke(teacher4, tmp_path / "trained", 2, intermediate_size=40, steps=2)
    assert start["student"]["feed_forward_pruning"] == trained["student"]["feed_forward_pruning"]
    assert set(start["training"]) == set(trained["training"])  # the summary of no training has the same fields
    for lang, entry in trained["evaluation"]["languages"].items():
        assert start["evaluation"]["languages"][lang]["student"] == entry["untrained"], lang
    with pytest.raises(DistillError, match="--steps 0: the student as it starts") as info:
        _smoke(teacher4, tmp_path / "gated", 2, intermediate_size=40, steps=0, min_retention=1.0)
    assert info.value.distill_report["evaluation"]["gate"]["passed"] is False
    assert not (tmp_path / "gated").exists() and not work_dir(tmp_path / "gated").exists()


@pytest.fixture(scope="module")
def narrow_student(teacher4, tmp_path_factory):
    out = tmp_path_factory.mktemp("students") / "narrow"
    report = _smoke(teacher4, out, 2, intermediate_size=40)
    return out, report


def test_narrow_student_is_pruned_trained_and_exported(narrow_student, tmp_path, capsys):
    out, report = narrow_student
    model = transformers.AutoModel.from_pretrained(out)
    assert model.config.intermediate_size == 40
    assert model.encoder.layer[0].intermediate.dense.weight.shape == (40, 32)
    from mbert_edge_export.distill import pruning

    ffn = report["student"]["feed_forward_pruning"]
    assert ffn["intermediate_size"] == {"teacher": 64, "student": 40} and len(ffn["importance_kept"]) == 2
    assert ffn["refit"] == pruning.REFIT_METHOD and report["recipe"]["ffn_refit"] is True  # refit by default
    assert all(0.625 <= x <= 1.0 for x in ffn["importance_kept"])  # the top 40 of 64 hold at least 40/64
    for lang, entry in report["evaluation"]["languages"].items():
        assert entry["student"]["cosine_mean"] > entry["untrained"]["cosine_mean"], lang
    from mbert_edge_export import export_bundle

    bundle = export_bundle(str(out), tmp_path / "bundle")  # parity against transformers is checked in export
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["source"]["lineage"]["distill"]["intermediate_size"] == 40
    from mbert_edge.cli import main

    assert main(["info", str(bundle)]) == 0
    assert "feed-forward 64 -> 40 (output projections refit), 20 steps" in capsys.readouterr().out


def test_narrow_student_resumes_with_the_same_neurons(narrow_student, teacher4, tmp_path):
    out, _ = narrow_student

    resumed = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        _smoke(teacher4, resumed, 2, intermediate_size=40, on_step=_stop_at(12))
    _smoke(teacher4, resumed, 2, intermediate_size=40)
    a, b = _weights(out), _weights(resumed)
    assert sorted(a) == sorted(b) and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(Interrupted):
        _smoke(teacher4, tmp_path / "other", 2, intermediate_size=40, on_step=_stop_at(12))
    with pytest.raises(DistillError, match="intermediate_size"):  # another width does not resume that run
        _smoke(teacher4, tmp_path / "other", 2, intermediate_size=32)


def test_init_student_narrows_a_trained_student(embedding_student, teacher4, tmp_path, capsys):
    """Second stage: start from a trained student of the same teacher, score its own neurons, cut and train
    on; the untrained reference is that student cut, and the lineage names where it started."""
    from mbert_edge_export.sources import huggingface

    init, first, _ = embedding_student
    out = tmp_path / "narrowed"
    report = _smoke(teacher4, out, 2, intermediate_size=40, init_student=init)
    assert report["student"]["layer_map"] == [0, 3]  # the earlier student's, not a new cut
    start = report["student"]["initialized_from"]
    assert start["path"] == str(init) and start["weights_sha256"] == huggingface.weights_sha256(init)
    assert start["distill"]["layer_map"] == [0, 3]
    assert transformers.AutoModel.from_pretrained(out).config.intermediate_size == 40
    # a further stage at the same width prunes nothing and still says where it started and how wide it is
    again = _smoke(teacher4, tmp_path / "again", 2, intermediate_size=40, init_student=out)
    assert again["student"]["feed_forward_pruning"] is None and again["student"]["intermediate_size"] == 40
    from mbert_edge.cli import main
    from mbert_edge_export import export_bundle

    bundle = export_bundle(str(tmp_path / "again"), tmp_path / "bundle")
    assert main(["info", str(bundle)]) == 0
    assert f"feed-forward 40, started from the student {out}, 20 steps" in capsys.readouterr().out
    for lang, entry in report["evaluation"]["languages"].items():
        assert entry["student"]["cosine_mean"] > entry["untrained"]["cosine_mean"], lang
        # the untrained reference is the trained first student, narrowed: far above a fresh cut's
        assert entry["untrained"]["cosine_mean"] > first["evaluation"]["languages"][lang]["untrained"]["cosine_mean"]


def test_bad_init_student_fails_before_loading(
    embedding_student, narrow_student, teacher4, checkpoints, tmp_path, monkeypatch
):
    import mbert_edge_export.sources as sources

    init, _, _ = embedding_student
    monkeypatch.setattr(sources, "load_source", lambda *a, **k: pytest.fail("loaded the teacher"))
    cases = [
        ({"layers": 1, "init_student": init}, "has 2 layers"),
        ({"layers": 2, "init_student": teacher4}, "not a checkpoint written by"),
        ({"layers": 2, "init_student": init, "languages": "en"}, "same --languages"),
        ({"layers": 2, "init_student": init, "layer_map": "0,1"}, "its own layer map"),
        ({"layers": 2, "init_student": narrow_student[0], "intermediate_size": 48}, "has 40 feed-forward neurons"),
    ]
    for kwargs, message in cases:
        layers = kwargs.pop("layers")
        with pytest.raises(DistillError, match=message):
            _smoke(teacher4, tmp_path / "out", layers, **kwargs)
    with pytest.raises(DistillError, match="another teacher"):
        _smoke(checkpoints[FEATURE_EXTRACTION], tmp_path / "out", 2, init_student=init)
    assert not (tmp_path / "out").exists()


# -- training text and held-out text never meet -------------------------------------------------------------


def test_user_copies_of_corpus_text_keep_the_corpus_split(teacher4, tmp_path):
    """A --data file holding corpus paragraphs (as one built for the topic task does): the held-out ones are
    judged and never trained on, the training ones are never judged; other text splits by its own hash."""
    from mbert_edge_export import corpus
    from mbert_edge_export.distill.data import build_training_data
    from mbert_edge_export.distill.settings import inspect_teacher, make_settings

    held = [p.text for p in corpus.held_out_paragraphs("de")[:10]]
    train = [p.text for p in corpus.train_paragraphs("de")[:40]]
    own = [f"Eigener Satz Nummer {i} aus der Datei des Nutzers." for i in range(200)]
    data = tmp_path / "mine.txt"
    data.write_text("\n".join(held + train + own) + "\n", encoding="utf-8")
    settings = make_settings("smoke", 1, languages=("de",), data_files=[data], max_texts=400)
    out = build_training_data(settings, inspect_teacher(str(teacher4)))
    judged = {t.text for t in out.held_out_user}
    trained = {t.text for t in out.items}
    assert set(held) <= judged and not judged & set(train)
    assert not trained & set(held)
    assert not trained & {s for p in held for s in corpus.sentences(p)}
    own_held = {t for t in own if t in judged}
    assert own_held == {t for t in own if corpus.is_held_out("user", t)} and 0 < len(own_held) < len(own)


def test_norwegian_under_either_code_is_weighted_and_judged_on_unseen_text(teacher4, tmp_path, caplog):
    from mbert_edge_export import corpus
    from mbert_edge_export.distill.data import build_training_data, held_out_texts
    from mbert_edge_export.distill.settings import inspect_teacher, make_settings

    info = inspect_teacher(str(teacher4))
    runs = {}
    for code in ("no", "nb"):
        settings = make_settings("smoke", 1, languages=(code,), max_texts=400)
        with caplog.at_level("WARNING"):
            runs[code] = build_training_data(settings, info)
        assert "has no text in" not in caplog.text
    assert runs["no"].summary["texts_per_language"] == runs["nb"].summary["texts_per_language"]
    counts = runs["no"].summary["corpus"]["texts_per_language"]
    assert counts["nb"] > counts["de"]  # the kept language is weighted up
    judged = set(held_out_texts(["no"], 1000)["no"])
    assert judged and not judged & {t.text for t in runs["no"].items}
    assert judged == {p.text for p in corpus.held_out_paragraphs("nb")}


def test_resumed_run_has_only_the_time_budget_left(teacher4, tmp_path):
    """The time budget is the whole run's: an interrupted run records what it spent, and a rerun whose
    budget is spent (here: the record set to the whole budget) stops at once instead of training again."""
    from mbert_edge_export.distill.trainer import RESUME_DIR, STATE_FILE, read_state

    out = tmp_path / "s"
    with pytest.raises(Interrupted):
        _smoke(teacher4, out, 2, time_budget=60, on_step=_stop_at(13))
    state = read_state(work_dir(out))
    assert state is not None and state.step == 10 and state.budget_seconds > 0  # the checkpoint of step 10
    path = work_dir(out) / RESUME_DIR / STATE_FILE
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["budget_seconds"] = 60 * 60.0
    path.write_text(json.dumps(raw), encoding="utf-8")
    steps: list[int] = []
    report = _smoke(teacher4, out, 2, time_budget=60, on_step=lambda step, loss: steps.append(step))
    assert steps == [] and report["training"]["steps"] == 10 and report["training"]["stopped_by"] == "time budget"
    # with budget left, the same interrupted state trains on to the planned steps
    again = tmp_path / "again"
    with pytest.raises(Interrupted):
        _smoke(teacher4, again, 2, time_budget=60, on_step=_stop_at(13))
    assert _smoke(teacher4, again, 2, time_budget=60)["training"]["steps"] == 20


def test_ctrl_c_inside_a_step_saves_whole_steps(embedding_student, teacher4, tmp_path, monkeypatch):
    """Ctrl-C (SIGINT) arriving while an update runs stops training after that step, so the checkpoint holds
    whole steps and the resumed run reaches the uninterrupted student (the reference)."""
    import signal
    import threading

    from mbert_edge_export.distill.trainer import Trainer, read_state

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    out, _, _ = embedding_student
    original = Trainer._step

    def step_with_ctrl_c(self, step: int) -> float:
        loss = original(self, step)
        if step == 12:  # the weights are updated, the step not yet counted: where a raw Ctrl-C would land
            signal.raise_signal(signal.SIGINT)
        return loss

    monkeypatch.setattr(Trainer, "_step", step_with_ctrl_c)
    resumed = tmp_path / "resumed"
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        _smoke(teacher4, resumed, 2)
    assert signal.getsignal(signal.SIGINT) is before  # the handler is restored
    state = read_state(work_dir(resumed))
    assert state is not None and state.step == 13 and len(state.losses) == 13
    monkeypatch.setattr(Trainer, "_step", original)
    steps: list[int] = []
    _smoke(teacher4, resumed, 2, on_step=lambda step, loss: steps.append(step))
    assert steps[0] == 14 and steps[-1] == 20
    a, b = _weights(out), _weights(resumed)
    assert sorted(a) == sorted(b) and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resume_after_the_vocabulary_corpus_changed_is_refused(teacher4, tmp_path):
    """--vocab-corpus decides the trimmed vocabulary: an edit of the file between the interruption and the
    rerun is a change of settings (refused), even at the same path."""

    words = tmp_path / "words.txt"
    words.write_text("Guten Morgen, wie geht es dir heute?\n", encoding="utf-8")
    out = tmp_path / "s"
    options = {"corpus_files": (str(words),)}
    with pytest.raises(Interrupted):
        _smoke(teacher4, out, 2, languages="en,de", trim_options=options, on_step=_stop_at(11))
    words.write_text("Bonjour, comment allez-vous aujourd'hui ?\n", encoding="utf-8")
    with pytest.raises(DistillError, match="unfinished run with other settings"):
        _smoke(teacher4, out, 2, languages="en,de", trim_options=options)


def test_force_never_replaces_the_teacher(teacher4, tmp_path, monkeypatch):
    import shutil

    import mbert_edge_export.sources as sources

    monkeypatch.setattr(sources, "load_source", lambda *a, **k: pytest.fail("loaded the teacher"))
    teacher = tmp_path / "teacher"
    shutil.copytree(teacher4, teacher)
    from mbert_edge_export.errors import ExportError

    with pytest.raises(ExportError, match="would replace the source"):
        _smoke(teacher, teacher, 2, force=True)
    assert (teacher / "config.json").is_file()


# -- augmented training text ------------------------------------------------------------------------------


def test_augmented_text_comes_from_training_paragraphs_only(teacher4):
    """--augment adds distinct variants of the kept languages' training paragraphs (windows of their
    sentences, sentences of two paragraphs, word drops), the same for the same seed, and no held-out text."""
    from mbert_edge_export import corpus
    from mbert_edge_export.distill.data import build_training_data
    from mbert_edge_export.distill.settings import inspect_teacher, make_settings

    info = inspect_teacher(str(teacher4))
    plain = build_training_data(make_settings("smoke", 1, languages=("hi", "zh"), max_texts=400), info)
    runs = [
        build_training_data(make_settings("smoke", 1, languages=("hi", "zh"), max_texts=400, augment=2.0), info)
        for _ in range(2)
    ]
    aug = runs[0].summary["corpus"]["augmented_per_language"]
    corpus_counts = runs[0].summary["corpus"]["texts_per_language"]
    assert sorted(aug) == ["hi", "zh"] and all(aug[c] == 2 * corpus_counts[c] for c in aug)
    assert [t.text for t in runs[0].items] == [t.text for t in runs[1].items]  # seeded
    extra = [t for t in runs[0].items[len(plain.items) :]]
    assert [t.text for t in runs[0].items[: len(plain.items)]] == [t.text for t in plain.items]
    assert len(extra) == sum(aug.values()) and len({t.text for t in extra}) == len(extra)
    for lang in ("hi", "zh"):
        train_paras = [p.text for p in corpus.train_paragraphs(lang)]
        train_sentences = {s for p in train_paras for s in corpus.sentences(p)}
        held = corpus.held_out_paragraphs(lang)
        held_sentences = {s for p in held for s in corpus.sentences(p.text)}
        texts = [t.text for t in extra if t.lang == lang]
        assert texts and not set(texts) & (set(train_paras) | train_sentences | {p.text for p in held})
        for text in texts:
            assert not any(s in text for s in held_sentences if s not in train_sentences)
        if lang == "zh":  # no word drops where words are not separated by spaces: whole sentences, joined directly
            assert all(
                any(t.startswith(s) for s in train_sentences) and any(t.endswith(s) for s in train_sentences)
                for t in texts
            )
    # every hindi variant is a window, a pair or a drop of training text: its words all come from there
    hindi_words = {w for p in corpus.train_paragraphs("hi") for w in p.text.split()}
    assert all(set(t.text.split()) <= hindi_words for t in extra if t.lang == "hi")


def test_augment_variants_follow_their_kinds(monkeypatch):
    """Hand-made paragraphs: a window is consecutive sentences, shorter than its paragraph; a pair joins
    sentences of two paragraphs; a drop leaves out about an eighth of the words, in order."""
    from mbert_edge_export.distill import augment

    paras = [
        "Alpha one is here today. Alpha two is here today. Alpha three is here today. Alpha four is here today.",
        "Beta uno was there then. Beta dos was there then. Beta tres was there then.",
    ]
    out = augment.variants(paras, 30, "en", "7")
    assert len(out) == len(set(out)) and len(out) > 10
    sentences = [s.rstrip() for p in paras for s in p.replace(". ", ".|").split("|")]
    kinds = {"window": 0, "pair": 0, "drop": 0}
    for text in out:
        parts = text.replace(". ", ".|").split("|")
        if all(p in sentences for p in parts):
            origins = {p.split()[0] for p in parts}
            if len(origins) == 2:
                assert len(parts) == 2
                kinds["pair"] += 1
            else:
                para = next(p for p in paras if parts[0] in p)
                assert text in para and text != para and len(parts) >= 2
                kinds["window"] += 1
        else:
            words = text.split()
            source = next(p for p in paras if set(words) <= set(p.split())).split()  # the two share no word
            it = iter(source)
            assert all(w in it for w in words)  # a subsequence: the order kept
            assert len(source) - len(words) == round(augment.DROP_SHARE * len(source))
            kinds["drop"] += 1
    assert all(kinds.values()), kinds
    assert augment.variants(paras, 30, "en", "7") == out and augment.variants(paras, 30, "en", "8") != out
    assert augment.variants(paras, 0, "en", "7") == [] and augment.variants([], 5, "en", "7") == []
    # a paragraph one of whose sentences is also held-out text (in another paragraph) is not used at all
    monkeypatch.setattr(augment.corpus, "split_of", lambda text: True if text == "Alpha two is here today." else None)
    clean = augment.variants(paras, 30, "en", "7")
    assert clean and not any("Alpha" in t for t in clean)


def test_augment_needs_kept_languages_and_a_positive_count(teacher4, tmp_path):
    for kwargs, message in (
        ({"augment": -1.0, "languages": ("de",)}, "--augment -1.0: variants per corpus text"),
        ({"augment": 1.0}, "name the languages with --languages"),
    ):
        with pytest.raises(DistillError, match=message):
            _smoke(teacher4, tmp_path / "out", 1, **kwargs)
    assert not (tmp_path / "out").exists()


# -- prompts, frozen word embeddings, hidden-state loss, schedule and clipping, re-export -------------------

E5_PROMPTS = {"query": "query: ", "passage": "passage: "}
WORD_TABLE = "embeddings.word_embeddings.weight"


@pytest.fixture(scope="module")
def prompted_teacher(teacher4, tmp_path_factory) -> Path:
    """The 4-layer teacher as an e5-style embedding model: the same weights and vocabulary, with e5's prompts."""
    import shutil

    path = tmp_path_factory.mktemp("prompted") / "teacher"
    shutil.copytree(teacher4, path)
    (path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": E5_PROMPTS, "default_prompt_name": "query"}), encoding="utf-8"
    )
    return path


@pytest.fixture(scope="module")
def prompted_student(prompted_teacher, tmp_path_factory) -> tuple[Path, dict, object, list[str]]:
    """A smoke student of the prompted teacher trimmed to en,de (dataset-build mining): (checkpoint, report, the
    Trainer it trained with, the training texts as the student's encoder received them)."""
    out = tmp_path_factory.mktemp("students") / "prompted"
    with pytest.MonkeyPatch.context() as mp:
        made, encoded = _record_training(mp)
        report = _smoke(prompted_teacher, out, 2, languages="en,de", trim_options={"sources": ("dataset-build",)})
    (tr,) = made
    return out, report, tr, encoded[0]


def _prompt_of(text: str) -> str | None:
    return next((p for p in E5_PROMPTS.values() if text.startswith(p)), None)


def test_student_trains_on_both_prompts_and_its_targets_read_the_same_text(prompted_student, prompted_teacher):
    """An embedding teacher with prompts: the training texts carry the query and the passage prompt in turn,
    batches mix them, the student reads the prefixed text (trimmed tokenizer), and each target is the untrimmed
    teacher's vector of that same prefixed text (the reference: transformers' own tokenizer and model)."""
    from tokenizers import Tokenizer

    out, report, tr, texts = prompted_student
    assert len(texts) == tr.n == report["data"]["texts"]
    prompts = [_prompt_of(t) for t in texts]
    assert prompts == [("query: ", "passage: ")[i % 2] for i in range(len(texts))]  # alternating, text by text
    assert any(len({prompts[i] for i in batch}) == 2 for batch in tr.epoch_batches(0))
    assert report["teacher"]["targets"] == "untrimmed teacher, original tokenization"
    student_tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    student_tok.enable_truncation(32)
    teacher_tok = transformers.AutoTokenizer.from_pretrained(prompted_teacher)
    model = transformers.AutoModel.from_pretrained(prompted_teacher).eval()
    done = [i for i in range(tr.n) if tr.cache.done[i]]
    assert len(done) >= 16
    for i in done:
        prompt = prompts[i]
        enc = student_tok.encode(texts[i])
        assert list(tr.ids[i]) == enc.ids
        head = student_tok.encode(prompt, add_special_tokens=False).tokens
        assert enc.tokens[1 : 1 + len(head)] == head  # the student reads the prompt first
        span = texts[i]
        if len(enc.ids) == 32:  # cut: the teacher reads up to the student's last token
            span = texts[i][: max(e for (_, e), sp in zip(enc.offsets, enc.special_tokens_mask, strict=True) if not sp)]
        expected = teacher_tok(span, truncation=True, max_length=32)["input_ids"]
        assert list(tr.teacher_ids[i]) == expected
        teacher_head = teacher_tok.tokenize(prompt)
        assert teacher_tok.convert_ids_to_tokens(expected)[1 : 1 + len(teacher_head)] == teacher_head
        with torch.no_grad():
            target = model(input_ids=torch.tensor([expected])).last_hidden_state[0].mean(0)
        np.testing.assert_allclose(tr.cache.values[i], target.numpy(), atol=1e-5)


def _in_teacher(name: str, layer_map: list[int]) -> str:
    """The teacher's name of a student weight: ``encoder.layer.<i>.`` becomes ``encoder.layer.<layer_map[i]>.``."""
    if not name.startswith("encoder.layer."):
        return name
    i = int(name.split(".")[2])
    return name.replace(f"encoder.layer.{i}.", f"encoder.layer.{layer_map[i]}.", 1)


def test_word_embeddings_stay_frozen_unless_asked(embedding_student, teacher4, tmp_path):
    """By default the student's word-embedding table is the teacher's, bit for bit, while its transformer layers
    trained; ``--train-embeddings`` trains the table too (and counts it as trainable)."""
    from mbert_edge.cli import main

    out, report, _ = embedding_student
    teacher, student = _weights(teacher4), _weights(out)
    assert torch.equal(student[WORD_TABLE], teacher[WORD_TABLE])
    assert report["recipe"]["train_embeddings"] is False
    layer_map = report["student"]["layer_map"]
    moved = [
        k
        for k in student
        if k.startswith("encoder.layer.") and not torch.equal(student[k], teacher[_in_teacher(k, layer_map)])
    ]
    assert len(moved) >= 0.9 * sum(k.startswith("encoder.layer.") for k in student)
    trained = tmp_path / "trained-table"
    assert main(["distill", str(teacher4), "-o", str(trained), "--layers", "2", "--preset", "smoke",
                 "--threads", "1", "--train-embeddings"]) == 0  # fmt: skip
    table = _weights(trained)[WORD_TABLE]
    assert table.shape == teacher[WORD_TABLE].shape and not torch.equal(table, teacher[WORD_TABLE])
    again = json.loads((trained / REPORT_FILE).read_text())
    assert again["recipe"]["train_embeddings"] is True
    trainable = report["training"]["trainable_parameters"] + teacher[WORD_TABLE].numel()
    assert again["training"]["trainable_parameters"] == trainable


def test_trimmed_student_keeps_the_teachers_word_rows(prompted_student, prompted_teacher):
    """Trimmed and distilled: the student's word table is the teacher's rows of the kept pieces, re-indexed in
    the teacher's order, bit for bit (frozen by default)."""
    from tokenizers import Tokenizer

    out, report, _, _ = prompted_student
    old = transformers.AutoTokenizer.from_pretrained(prompted_teacher).get_vocab()
    new = Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab()
    teacher, student = _weights(prompted_teacher)[WORD_TABLE], _weights(out)[WORD_TABLE]
    assert student.shape[0] == len(new) == report["trim"]["vocab_size"]["after"] < teacher.shape[0]
    kept = sorted(new, key=new.get)
    assert [old[p] for p in kept] == sorted(old[p] for p in kept)  # the teacher's order
    assert torch.equal(student, teacher[[old[p] for p in kept]])


def test_hidden_state_loss_trains_end_to_end(embedding_student, teacher4, tmp_path):
    """``hidden_weight=1``: the run trains (the per-token targets come from the teacher reading the student's
    tokens), the report and the checkpoint's lineage record the weight, the first step's loss is the plain run's
    plus a positive hidden-state term (same student, same batch), and the loss falls."""
    from mbert_edge_export.sources import load_source

    _, plain, plain_losses = embedding_student
    losses: list[float] = []
    out = tmp_path / "hidden"
    report = _smoke(teacher4, out, 2, hidden_weight=1.0, on_step=lambda step, loss: losses.append(loss))
    assert report["recipe"]["hidden_weight"] == 1.0 and plain["recipe"]["hidden_weight"] == 0.0
    assert load_source(str(out)).provenance["lineage"]["distill"]["recipe"]["hidden_weight"] == 1.0
    assert report["teacher"]["targets"] == "teacher"
    assert len(losses) == report["training"]["steps"] == 20
    assert losses[0] > plain_losses[0]
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5]), losses


def test_learning_rate_schedule_by_hand(teacher4, tmp_path):
    """``lr_at``: linear warmup over ceil(warmup x planned) steps, reaching the peak at its last step (step 0
    already gets peak / warm: no step trains at 0), then linear decay that reaches 0 at step ``planned``, one
    past the last step trained (which gets peak / (planned - warm)). Hand-computed for 20 steps, warmup 0.25."""
    from mbert_edge_export.distill.settings import make_settings
    from mbert_edge_export.distill.trainer import Trainer

    model = transformers.AutoModel.from_pretrained(teacher4)

    def trainer(**kw) -> Trainer:
        settings = make_settings("smoke", 1, steps=20, lr=1e-3, **kw)
        return Trainer(model, model, FEATURE_EXTRACTION, [[2, 5, 3]], [None], settings, [0], 0, tmp_path, "f")

    tr = trainer(warmup=0.25)  # 5 warmup steps
    expected = {0: 2e-4, 1: 4e-4, 2: 6e-4, 3: 8e-4, 4: 1e-3, 5: 1e-3}  # (step + 1) / 5, then (20 - step) / 15
    expected.update({8: 1e-3 * 12 / 15, 10: 1e-3 * 10 / 15, 14: 1e-3 * 6 / 15, 19: 1e-3 / 15, 20: 0.0})
    for step, lr in expected.items():
        assert tr.lr_at(step) == pytest.approx(lr, rel=1e-12, abs=1e-15), step
    assert max(tr.lr_at(s) for s in range(20)) == pytest.approx(1e-3)
    flat = trainer(warmup=0.0)  # no warmup: the peak at once, then the same decay over all 20 steps
    assert [flat.lr_at(s) for s in (0, 10, 19, 20)] == pytest.approx([1e-3, 5e-4, 5e-5, 0.0], rel=1e-12, abs=1e-15)
    tr.state.planned_steps = 10  # a time budget that shrinks the plan: ceil(2.5) = 3 warmup steps, decay to 10
    assert [tr.lr_at(s) for s in (0, 2, 3, 9, 10)] == pytest.approx(
        [1e-3 / 3, 1e-3, 1e-3, 1e-3 / 7, 0.0], rel=1e-12, abs=1e-15
    )


def test_each_update_applies_the_scheduled_lr_and_a_clipped_gradient(teacher4, tmp_path, monkeypatch):
    """Just before every optimizer step (an AdamW pre-step hook) the gradient's total norm is at most
    ``clip_norm``: the norm before clipping (what ``clip_grad_norm_`` returns) where that is smaller, else
    ``clip_norm`` itself; here the clip binds on most steps. Every parameter group's lr is ``lr_at(step)``."""
    from mbert_edge_export.distill import trainer as trainer_mod

    clip_norm = 0.05
    before: list[float] = []
    after: list[float] = []
    lrs: list[list[float]] = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(params, max_norm, *args, **kwargs):
        total = real_clip(params, max_norm, *args, **kwargs)
        before.append(float(total))
        return total

    def pre_step(optimizer, args, kwargs) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        after.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        lrs.append([g["lr"] for g in optimizer.param_groups])

    made: list = []

    class Recording(trainer_mod.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.optimizer.register_step_pre_hook(pre_step)
            made.append(self)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    monkeypatch.setattr("mbert_edge_export.distill.Trainer", Recording)
    _smoke(teacher4, tmp_path / "clipped", 2, steps=8, clip_norm=clip_norm)
    (tr,) = made
    assert len(before) == len(after) == len(lrs) == 8
    for b, a in zip(before, after, strict=True):
        assert a <= clip_norm * (1 + 1e-5)
        assert a == pytest.approx(min(b, clip_norm), rel=1e-4)
    assert sum(b > clip_norm for b in before) >= 6  # the clip did bind
    assert lrs == [[tr.lr_at(s)] * len(tr.optimizer.param_groups) for s in range(8)]


def test_re_export_with_the_same_or_wider_languages_keeps_the_vocabulary(prompted_student, tmp_path, caplog):
    """A student distilled with --languages en,de is trimmed already: exporting it with the same set or a wider one
    (en,de,fr: a vocabulary cannot grow back) leaves its vocabulary as it is, records in the manifest that the
    trim was skipped (the vocabulary's languages stay en,de, not the ones asked for), and logs a warning."""
    import logging

    from tokenizers import Tokenizer

    from mbert_edge.manifest import Manifest
    from mbert_edge_export import export_bundle

    out, report, _, _ = prompted_student
    vocab = Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab()
    for langs in ("en,de", "en,de,fr"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mbert_edge_export"):
            bundle = export_bundle(
                str(out), tmp_path / langs.replace(",", "-"), languages=langs, vocab_sources=("dataset-build",)
            )
        m = Manifest.read(bundle / "manifest.json")
        trim = m.export["trim"]
        assert trim["skipped"] == "source already trimmed to de,en", langs
        assert trim["languages"] == ["de", "en"] and trim["vocab_size"] == report["trim"]["vocab_size"]
        assert Tokenizer.from_file(str(bundle / "tokenizer.json")).get_vocab() == vocab
        assert m.embedding is not None and m.embedding.prefixes == E5_PROMPTS
        asked = ",".join(sorted(langs.split(",")))
        said = [r for r in caplog.records if "already trimmed" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.WARNING], langs
        assert said[0].getMessage() == f"the source is already trimmed to de,en; --languages {asked} changes nothing"


def test_auto_layer_map_picks_the_best_scored_named_map(teacher4, tmp_path):
    """``layer_map="auto"`` scores every named map's untrained student against the teacher and keeps the best;
    the score of the chosen map is recomputed here from transformers' outputs of the same cut."""
    from mbert_edge_export.distill import NAMED_MAPS

    report = _smoke(teacher4, tmp_path / "auto", 2, layer_map="auto")
    scores = report["layer_map_scores"]
    named = {name: scores[name] for name in NAMED_MAPS}
    assert len(named) >= 2
    best = max(named, key=lambda n: named[n]["cosine_untrained"])
    assert scores["chosen"] == best
    assert report["student"]["layer_map"] == named[best]["layer_map"]
    for entry in named.values():
        assert -1.0 <= entry["cosine_untrained"] <= 1.0 and len(entry["layer_map"]) == 2


def test_the_teacher_reads_each_training_text_once(teacher4, tmp_path, monkeypatch):
    """Teacher targets are computed once and cached: over several epochs the teacher's forward passes cover each
    training text exactly once (counted with a forward hook), while the student reads them again every epoch."""
    made, _ = _record_training(monkeypatch)
    rows: list[int] = []
    training = [False]  # the teacher also runs in the evaluation after training: count training passes only

    from mbert_edge_export.distill import trainer as trainer_mod

    real_step = trainer_mod.Trainer._step

    def counting_step(self, step):
        if not getattr(self, "_hooked", False):
            self.teacher.register_forward_hook(
                lambda mod, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0]) if training[0] else None,
                with_kwargs=True,
            )
            self._hooked = True
        training[0] = True
        try:
            return real_step(self, step)
        finally:
            training[0] = False

    monkeypatch.setattr(trainer_mod.Trainer, "_step", counting_step)
    report = _smoke(teacher4, tmp_path / "once", 2)
    (tr,) = made
    texts, steps, batch = report["data"]["texts"], report["training"]["steps"], report["recipe"]["batch_size"]
    assert steps * batch > 2 * texts  # the student saw every text more than twice
    assert sum(rows) == texts == tr.n  # the teacher once each
    assert report["training"]["texts_seen_by_teacher"] == texts
