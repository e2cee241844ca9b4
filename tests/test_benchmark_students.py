"""The teacher-vs-students benchmark (benchmarks/students.py): its pure parts, and one quick run on tiny bundles.

No timing is asserted: only that every measurement is made, lands in the report, and that the arithmetic
around it (ratios, targets, margins, exact-length texts) is right.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_script

S = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "students.py", "bench_students")

TEXTS = {
    "en": [
        "The bakery on the corner opens at seven in the morning and closes when the bread is sold out, which "
        "on Saturdays happens before noon because half of the town queues for the rye loaves."
    ],
    "de": [
        "Die Bäckerei an der Ecke öffnet um sieben Uhr morgens und schließt, wenn das Brot ausverkauft ist; "
        "samstags ist das schon vor Mittag der Fall, weil die halbe Stadt für das Roggenbrot ansteht."
    ],
    "ru": [
        "Пекарня на углу открывается в семь утра и закрывается, когда хлеб распродан, а по субботам это "
        "случается ещё до полудня, потому что полгорода стоит в очереди за ржаным хлебом."
    ],
}


def _tokenizer(bundle: Path):
    from tokenizers import Tokenizer

    return S.raw_tokenizer(Tokenizer.from_file(str(bundle / "tokenizer.json")))


def test_cut_to_tokens_gives_exact_lengths(bundles):
    tok = _tokenizer(bundles["feature-extraction"])
    for texts in TEXTS.values():
        for n in (12, 16, 40):
            for prefix in ("", "query: "):
                cut = S.cut_to_tokens(texts[0], n, (tok, prefix))
                assert cut is not None and texts[0].startswith(cut)
                assert S.token_count(tok, cut, prefix) == n
    assert S.cut_to_tokens("short text", 64, (tok, "")) is None  # too short: never padded or repeated
    by_lang = S.exact_length_texts(TEXTS, 16, 1, [(tok, "query: ")])
    assert set(by_lang) == set(TEXTS) and all(S.token_count(tok, t[0], "query: ") == 16 for t in by_lang.values())
    # every tokenizer must agree: a second one that sees the prefix differently makes it impossible
    assert S.exact_length_texts(TEXTS, 16, 1, [(tok, ""), (tok, "query: ")]) == {}


def test_interleave_takes_languages_in_turn():
    assert S.interleave({"a": ["a1", "a2"], "b": ["b1"], "c": ["c1", "c2"]}, 4) == ["a1", "b1", "c1", "a2"]


def test_summary_and_speed_ratios():
    times = {
        "int8": {"b1s16": [0.010] * 5, "b1s128": [0.040] * 5, "b32s128": [1.0, 1.0, 1.0]},
        "student": {"b1s16": [0.005, 0.005, 0.005, 0.005, 0.050], "b1s128": [0.010] * 5, "b32s128": [0.25] * 3},
    }
    lat = S.summarize(times)
    assert lat["student"]["b1s16"]["median_ms"] == pytest.approx(5.0)
    assert lat["student"]["b1s16"]["p90_ms"] > 5.0  # the slow call shows in p90, not in the median
    assert lat["int8"]["b32s128"]["texts_per_s"] == pytest.approx(32.0)
    ratios = S.speed_ratios(lat, "int8")
    assert ratios["student"] == {"b1s16": 2.0, "b1s128": 4.0, "b32s128": 4.0}  # base time / entry time
    assert ratios["int8"] == {"b1s16": 1.0, "b1s128": 1.0, "b32s128": 1.0}
    assert S.speed_ratios(lat, "pytorch") == {}  # no such entry: no ratios


def test_targets_met_and_missed_with_margins():
    facts = {
        "speed_vs_int8.b1s128": 2.0,
        "speed_vs_int8.b1s16": 1.5,
        "speed_vs_pytorch.b1s128": 9.0,
        "speed_vs_pytorch.b1s16": 8.0,
        "size_mb": 33.0,
        "cold_start_s": 0.15,
        "peak_rss_mb": None,
        "peak_rss_b1_mb": 140.0,
        "worst_kept_retention": 0.96,
        "worst_kept_language": "hi",
    }
    checks = {c["key"]: c for c in S.check_targets(facts)}
    assert checks["speed_vs_int8.b1s128"]["met"] and checks["speed_vs_int8.b1s128"]["margin"] == pytest.approx(0.2)
    assert not checks["speed_vs_int8.b1s16"]["met"] and checks["speed_vs_int8.b1s16"]["margin"] == pytest.approx(-0.3)
    assert checks["speed_vs_pytorch.b1s16"]["met"]  # exactly on the target counts as met
    assert not checks["size_mb"]["met"] and checks["size_mb"]["margin"] == pytest.approx(-3.0)
    assert checks["size_mb"]["margin_rel"] == pytest.approx(-0.1)
    assert checks["cold_start_s"]["met"] and checks["cold_start_s"]["margin"] == pytest.approx(0.05)
    assert checks["peak_rss_mb"]["met"] is None
    assert not checks["worst_kept_retention"]["met"]
    lines = [S.format_target(c, facts) for c in S.check_targets(facts)]
    assert lines[4] == "MISSED: bundle size with its tokenizer 33 MB (target <= 30 MB; missed by 3 MB, 10.0%)"
    assert lines[5].startswith("met: cold start") and "margin 0.05 s" in lines[5]
    assert lines[6].startswith("not measured: peak RSS")
    assert lines[7].startswith("met: peak RSS after a b1 x s128 call") and "margin 10 MB" in lines[7]
    assert "(hi) 0.96" in lines[8] and lines[8].startswith("MISSED")
    assert "sampling error" not in lines[8]  # no interval measured: none printed
    facts.update(
        worst_kept_interval=[0.93, 0.99], kept_against_target={"above": ["de"], "below": [], "undecided": ["hi"]}
    )
    line = S.format_target(S.check_targets(facts)[8], facts)
    assert line.endswith(
        "; sampling error: 95% interval 0.930-0.990; kept languages under 0.97 beyond sampling error: none; "
        "too close to call: hi)"
    )


def test_retention_intervals_from_paired_hits():
    """Hand-made hits: counts per language and entry, intervals around the measured retention, and the worst
    kept language's interval and the languages under or too close to the target in the summary and markdown."""
    from mbert_edge_export.distill.uncertainty import rounded

    ref = np.array([1] * 90 + [0] * 10, dtype=bool)
    weak = ref.copy()
    weak[:8] = False  # 8 of the reference's hits lost: retention 82 / 90
    hits = {"de": {"ref": ref, "s": ref.copy()}, "hi": {"ref": ref, "s": weak}, "ja": {"ref": ref, "s": weak}}
    rows = {
        lang: {"kept": lang != "ja", "entries": {n: {"retention": float(h[n].sum() / ref.sum())} for n in h}}
        for lang, h in hits.items()
    }
    summary = S.quality_summary(rows, ["ref", "s"], ["de", "hi"], ("retention",))
    S._add_intervals(rows, hits, "ref", ["ref", "s"], ["de", "hi"], summary)
    hi = rows["hi"]["entries"]["s"]
    assert hi["retention_counts"] == {"both": 82, "candidate_only": 0, "reference_only": 8, "neither": 10}
    lo, up = hi["retention_interval"]
    assert lo < 82 / 90 < up < 1.0
    assert rows["de"]["entries"]["ref"]["retention_counts"]["reference_only"] == 0  # the reference against itself
    worst = summary["s"]["retention"]["worst_kept"]
    assert worst["lang"] == "hi" and worst["interval"] == [lo, up]
    assert summary["s"]["retention"]["against_target"] == {
        "threshold": 0.97,
        "above": ["de"],  # no loss on any of 90 units: 0.97 is under its whole interval
        "below": ["hi"],  # 0.911 with 8 of 90 lost: under 0.97 beyond sampling error
        "undecided": [],
    }
    md = S._summary_rows(summary, ["ref", "s"], "retention", "retention")
    shown = "{:.3f}-{:.3f}".format(*rounded([lo, up], 3))  # rounded outward
    assert f"| **retention: worst kept, 95% interval** | - | {shown} |" in md
    assert "| **kept languages under the target beyond sampling error** | - | hi |" in md
    assert "| **kept languages too close to the target to call** | - | none |" in md


def test_parse_bundles():
    assert S.parse_bundles(["a=x/y", "b=z"]) == {"a": Path("x/y"), "b": Path("z")}
    for bad in (["a"], ["=x"], ["a=x", "a=y"], ["pytorch=x"]):
        with pytest.raises(ValueError):
            S.parse_bundles(bad)


def test_quick_run_on_tiny_encoders(bundles, checkpoints, tmp_path):
    """One --quick-style pass of every measurement: a tiny fp32 bundle against its checkpoint in PyTorch."""
    from mbert_edge.manifest import Manifest

    spec = Manifest.read(bundles["feature-extraction"] / "manifest.json").embedding
    runners = {
        "tiny-fp32": S.BundleRunner(bundles["feature-extraction"], 1),
        S.PYTORCH: S.TorchRunner(checkpoints["feature-extraction"], 1, S.FEATURE_EXTRACTION, spec),
    }
    settings = S.Settings(
        rounds=1, reps=(("b1s16", 1), ("b1s128", 1), ("b32s128", 1)), per_language=3, parallel_limit=6, cold_repeats=1
    )
    result = S.measure(
        runners,
        kept=["en", "de", "ru"],
        others=["ja"],
        reference=S.PYTORCH,
        int8_baseline="tiny-fp32",
        threads=1,
        settings=settings,
        progress=lambda _: None,
    )
    assert runners == {}  # released before the cold starts
    for name in ("tiny-fp32", S.PYTORCH):
        e = result["entries"][name]
        assert set(e["latency"]) == {"b1s16", "b1s128", "b32s128"}
        assert e["latency"]["b1s16"]["n"] == 1
        assert e["speed_vs_int8"]["b1s16"] > 0 and e["speed_vs_pytorch"]["b1s128"] > 0
        assert e["size"]["size_mb"] > e["size"]["tokenizer_mb"] > 0
        assert "error" not in e["cold_start"], e["cold_start"].get("error")
        assert e["cold_start"]["peak_rss_mb"] >= e["cold_start"]["peak_rss_b1_mb"] > 10
        assert e["cold_start"]["cold_start_s"] > 0
    assert result["entries"]["tiny-fp32"]["speed_vs_int8"]["b1s16"] == 1.0
    # the timed texts: exactly 16 / 128 tokens for both tokenizers (the same vocabulary here)
    tok = _tokenizer(bundles["feature-extraction"])
    texts = result["timing"]["texts"]
    assert all(S.token_count(tok, b[0], spec.default_prefix) == 16 for b in texts["b1s16"])
    assert len(texts["b32s128"][0]) == 32
    assert all(S.token_count(tok, t, spec.default_prefix) == 128 for t in texts["b32s128"][0])
    # quality: the bundle runs the checkpoint's own weights, so it matches the PyTorch reference
    q = result["quality"]
    assert q["languages"]["ja"]["kept"] is False and q["languages"]["de"]["kept"] is True
    de = q["languages"]["de"]["entries"]
    assert de[S.PYTORCH]["cosine_mean"] == pytest.approx(1.0, abs=1e-5)
    assert de["tiny-fp32"]["cosine_mean"] > 0.999
    # the reference's retention is 1 where it retrieves anything (the tiny model's WordPiece vocabulary is trained
    # anew each session, and tokenizers' trainer breaks ties at random: on 6 sentences it may retrieve none)
    ref_de = de[S.PYTORCH]
    assert ref_de["retention"] == (pytest.approx(1.0) if ref_de["retrieval"] else None)
    assert q["languages"]["en"]["entries"][S.PYTORCH]["retrieval"] is not None  # English: en -> x over kept x
    worst = q["summary"]["tiny-fp32"]["retention"]["worst_kept"]
    if worst is None:  # the session's tiny vocabulary left the reference no translation found in any kept language
        assert not any(q["languages"][lang]["entries"][S.PYTORCH]["retrieval"] for lang in ("en", "de", "ru"))
    else:
        assert worst["lang"] in ("en", "de", "ru")
    from mbert_edge_export.distill.uncertainty import PairedCounts

    for row in q["languages"].values():  # the stored counts give the table's retention
        for e in row["entries"].values():
            if "retention_counts" in e:
                assert sum(e["retention_counts"].values()) == 2 * row["parallel_sentences"]
                ratio = PairedCounts.from_dict(e["retention_counts"]).ratio
                assert e["retention"] == (None if ratio is None else pytest.approx(ratio, abs=1e-5))
    assert "retention_counts" not in q["languages"]["en"]["entries"]["tiny-fp32"]  # the pivot: no interval
    result.update(
        title="tiny",
        command="students.py --quick",
        quick=True,
        machine=S.machine(),
        versions=S.versions(),
        threads=1,
        started="now",
        load_before=(0.0, 0.0, 0.0),
        load_after=(0.0, 0.0, 0.0),
    )
    facts = S.entry_facts(result, "tiny-fp32")
    assert facts["speed_vs_int8.b1s16"] == 1.0 and facts["worst_kept_language"] == (worst or {}).get("lang")
    # a run with no retention to judge (the reference found nothing) still writes its report, the target open
    nothing = copy.deepcopy(result)
    nothing["quality"]["summary"]["tiny-fp32"]["retention"].update(worst_kept=None, mean_kept=None)
    bare = S.entry_facts(nothing, "tiny-fp32")
    assert bare["worst_kept_language"] is None and bare["worst_kept_retention"] is None
    nothing["targets"] = {"entry": "tiny-fp32", "facts": bare, "checks": S.check_targets(bare)}
    assert next(c for c in nothing["targets"]["checks"] if c["key"] == "worst_kept_retention")["met"] is None
    assert "| **retention: worst kept** | - |" in S.markdown(nothing)
    result["targets"] = {"entry": "tiny-fp32", "facts": facts, "checks": S.check_targets(facts)}
    md = S.markdown(result)
    assert "| tiny-fp32 |" in md and "| pytorch (reference) |" in md and "ja (not kept)" in md
    assert "MISSED: speed vs teacher INT8 at b1 x s16 1x" in md  # 1.0x against itself: below 1.8x
    assert result["entries"]["tiny-fp32"]["describe"]["tokenizer_model_unread"] is False  # WordPiece: no .model
    assert "Not a user's setup" not in md
    result["entries"]["tiny-fp32"]["describe"]["tokenizer_model_unread"] = True  # as without sentencepiece
    assert "Not a user's setup: tiny-fp32 carry `tokenizer.model`" in S.markdown(result)
    result["entries"]["tiny-fp32"]["describe"]["tokenizer_model_unread"] = False
    json.dumps(result)  # the whole result is JSON
    # the plot draws the measured values: the tiny bundle's own latency, size, memory and worst retention
    values = S.plot_values(result, "tiny-fp32")
    e = result["entries"]["tiny-fp32"]
    assert values["b1s128_ms"] == e["latency"]["b1s128"]["median_ms"] and values["size_mb"] == e["size"]["size_mb"]
    assert values["peak_rss_mb"] == e["cold_start"]["peak_rss_mb"]
    assert values["worst_kept_retention"] == (worst or {}).get("value")  # None: drawn as n/a
    if importlib.util.find_spec("matplotlib") is not None:  # the benchmark venv has it; the test venv may not
        S.plot(result, tmp_path / "tiny.png")
        assert (tmp_path / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_quick_on_tiny_classifier(bundles, tmp_path, monkeypatch):
    """The command line end to end (--quick): a classifier bundle as its own reference, topic quality."""
    monkeypatch.setattr(S, "Settings", _tiny_settings(S.Settings))
    out = tmp_path / "students-tiny"
    S.main(
        [
            "--bundle",
            f"cls-fp32={bundles['text-classification']}",
            "--threads",
            "1",
            "--languages",
            "en,de",
            "--other-languages",
            "ja",
            "--target",
            "cls-fp32",
            "--quick",
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert result["reference"] == "cls-fp32" and result["quick"] is True
    assert result["quality"]["task"] == "text-classification"
    rows = result["quality"]["languages"]
    assert rows["de"]["entries"]["cls-fp32"]["agreement"] == 1.0  # the reference agrees with itself
    assert rows["ja"]["kept"] is False
    assert {c["key"] for c in result["targets"]["checks"]} == {t.key for t in S.TARGETS}
    assert "Topic accuracy per language" in md and "Quick run" in md and "## Targets for cls-fp32" in md
    assert result["versions"]["python"] and result["machine"]["cores"]


def _tiny_settings(cls):
    class Tiny(cls):
        @classmethod
        def quick(cls):
            return cls(rounds=1, reps=(("b1s16", 1), ("b1s128", 1), ("b32s128", 1)), per_language=2, cold_repeats=1)

    return Tiny


def test_onnx_peer_runs_the_checkpoint_like_pytorch(checkpoints, bundles, tmp_path):
    """An ONNX peer (a plain export of the checkpoint, as Optimum writes one) embeds as transformers does,
    is sized with the checkpoint's tokenizer, and its cold-start child runs."""
    import shutil

    import torch
    import transformers

    from mbert_edge.manifest import Manifest

    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoints["feature-extraction"], ckpt)
    transformers.AutoTokenizer.from_pretrained(str(ckpt)).backend_tokenizer.save(str(ckpt / "tokenizer.json"))
    tok_config = json.loads((ckpt / "tokenizer_config.json").read_text())  # below the position limit (128)
    (ckpt / "tokenizer_config.json").write_text(json.dumps({**tok_config, "model_max_length": 40}))
    peer_dir = tmp_path / "peer"
    peer_dir.mkdir()
    encoder = transformers.AutoModel.from_pretrained(str(ckpt)).eval()

    class Plain(torch.nn.Module):  # what Optimum exports: the encoder's last hidden state
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    ids = torch.ones((2, 5), dtype=torch.long)
    torch.onnx.export(
        Plain(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(peer_dir / "model.onnx"),
        input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
        dynamic_axes={n: {0: "b", 1: "s"} for n in ("input_ids", "attention_mask", "token_type_ids")},
        opset_version=17, dynamo=False,
    )  # fmt: skip
    spec = Manifest.read(bundles["feature-extraction"] / "manifest.json").embedding
    peer = S.PeerRunner(peer_dir / "model.onnx", ckpt, 1, S.FEATURE_EXTRACTION, spec)
    torch_runner = S.TorchRunner(ckpt, 1, S.FEATURE_EXTRACTION, spec)
    texts = [t for texts in TEXTS.values() for t in texts] + ["short", "x " * 300]  # one text past max_length
    assert peer.max_length == torch_runner.max_length == 40  # both truncate where transformers does
    got, want = peer.embed(texts), torch_runner.embed(texts)
    np = pytest.importorskip("numpy")
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4
    d = peer.describe()
    assert d["kind"] == "onnx-peer" and d["model_file"] == "model.onnx" and d["precision"] == "fp32"
    size = S.size_on_disk(peer.path, peer)
    assert size["tokenizer_mb"] == round((ckpt / "tokenizer.json").stat().st_size / 1e6, 2)
    texts_file = tmp_path / "b32.json"
    texts_file.write_text(json.dumps(texts), encoding="utf-8")
    import subprocess

    out = subprocess.run(S.cold_start_command(peer, 1, texts_file), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    cold = json.loads(out.stdout.strip().splitlines()[-1])
    assert cold["cold_start_s"] > 0 and cold["peak_rss_mb"] >= cold["peak_rss_b1_mb"] > 10

    # the same graph as OpenVINO IR (what NNCF's INT8 is saved as) runs in OpenVINO, as transformers does
    ov = pytest.importorskip("openvino")
    ov.save_model(ov.convert_model(str(peer_dir / "model.onnx")), str(tmp_path / "ov" / "model.xml"))
    cache = tmp_path / "ov-cache"
    ov_peer = S.PeerRunner(tmp_path / "ov" / "model.xml", ckpt, 1, S.FEATURE_EXTRACTION, spec, cache)
    assert ov_peer.engine == "openvino" and ov_peer.describe()["kind"] == "openvino-peer"
    assert ov_peer.describe()["engine_settings"]["CACHE_DIR"] == str(cache) and any(cache.iterdir())
    assert ov_peer.describe()["precision"] == "fp32"  # no FakeQuantize: not an INT8 model
    got = ov_peer.embed(texts)
    # OpenVINO's default precision on this CPU: fp32, or bf16 where the CPU has it (recorded with the results)
    precision = ov_peer.describe()["engine_settings"]["INFERENCE_PRECISION_HINT"]
    assert precision in ("f32", "bf16", "f16")
    # f32: OpenVINO's own kernels (its erf, its accumulation order) differ from PyTorch's by up to 3e-4 on an
    # Intel Xeon without bf16 (1e-5 on AMD EPYC); a wrong graph would be off by ~0.1
    assert got.shape == want.shape and np.abs(got - want).max() < (1e-3 if precision == "f32" else 2e-2)
    assert S.size_on_disk(ov_peer.path, ov_peer)["files"] == 3  # model.xml, model.bin, the tokenizer
    out = subprocess.run(S.cold_start_command(ov_peer, 1, texts_file), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"] > 10


def test_peer_options_check_the_file_kind(capsys):
    with pytest.raises(SystemExit):
        S.parse_args(["--teacher-checkpoint", "c", "--openvino-peer", "ov=m.onnx", "--out", "o"])
    assert "--openvino-peer ov=m.onnx: expected an .xml file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        S.parse_args(["--teacher-checkpoint", "c", "--onnx-peer", "p=m.xml", "--out", "o"])
    assert "expected an .onnx file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        S.parse_args(
            ["--teacher-checkpoint", "c", "--onnx-peer", "p=m.onnx", "--openvino-peer", "p=m.xml", "--out", "o"]
        )
    assert "given twice: p" in capsys.readouterr().err
    args = S.parse_args(
        ["--teacher-checkpoint", "c", "--onnx-peer", "a=m.onnx", "--openvino-peer", "b=m.xml", "--out", "o"]
    )
    assert list(args.peers) == ["a", "b"]


def test_onnx_peer_needs_the_teacher_checkpoint(capsys):
    with pytest.raises(SystemExit):
        S.parse_args(["--bundle", "a=x", "--onnx-peer", "optimum-int8=m.onnx", "--out", "o"])
    assert "--onnx-peer needs --teacher-checkpoint" in capsys.readouterr().err


def test_a_bundle_made_for_openvino_runs_on_openvino(checkpoints, bundles, tmp_path):
    """A `--target openvino` bundle has no file for an automatic backend: the runner loads it the way a user
    must (backend="openvino"), in the benchmark process and in the cold-start child, and says so."""
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    import subprocess

    from mbert_edge_export import export_bundle
    from mbert_edge_export.quantize.gated import QuantizeSettings

    ov_bundle = export_bundle(
        str(checkpoints["feature-extraction"]),
        tmp_path / "ov",
        quantize=QuantizeSettings(mode="static", target="openvino"),
        keep_fp32=True,  # an fp32 file for ONNX Runtime beside it: "auto" would pick that one
    )
    assert S.bundle_backend(ov_bundle) == "openvino"
    assert S.bundle_backend(bundles["feature-extraction"]) == "auto"
    runner = S.BundleRunner(ov_bundle, 1)
    assert runner.describe()["backend"] == "openvino" and runner.describe()["precision"] == "int8"
    texts = [t for texts in TEXTS.values() for t in texts]
    fp32 = S.BundleRunner(bundles["feature-extraction"], 1).embed(texts)
    assert ((runner.embed(texts) * fp32).sum(axis=1)).mean() > 0.95  # the same model, in INT8
    texts_file = tmp_path / "texts.json"
    texts_file.write_text(json.dumps(texts), encoding="utf-8")
    cmd = S.cold_start_command(runner, 1, texts_file)
    assert cmd[-1] == "openvino"
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"] > 10
