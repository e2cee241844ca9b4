"""benchmarks/distill_on_device.py: what goes to the GPU machine and what comes back.

The round trip (``pack`` there, ``rebuild`` here) must give back the student bit for bit, and refuse a local
student whose trim or word table differs; the stand-in ``wordfreq`` must serve the lists it was given, so that
the vocabulary mining there picks what it picks here; the guard must count reads of zeroed rows.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_script

safetensors_numpy = pytest.importorskip("safetensors.numpy")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "distill_on_device.py"


@pytest.fixture(scope="module")
def dod():
    return load_script(SCRIPT, "distill_on_device")


def _student(path: Path, kept_sha: str, seed: int = 0, rows: int = 50) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors = {
        "embeddings.word_embeddings.weight": rng.standard_normal((rows, 8)).astype(np.float32),
        "encoder.layer.0.output.dense.weight": rng.standard_normal((8, 8)).astype(np.float32),
        "encoder.layer.0.output.dense.bias": rng.standard_normal(8).astype(np.float32),
    }
    path.mkdir(parents=True)
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text("{}")
    (path / "2_Normalize").mkdir()  # empty, as sentence-transformers writes it
    (path / "tokenizer.json").write_text('{"model": "stand-in"}')
    (path / "distill_report.json").write_text(json.dumps({"trim": {"kept_ids_sha256": kept_sha}}))
    safetensors_numpy.save_file(tensors, str(path / "model.safetensors"))
    return tensors


def test_pack_and_rebuild_give_back_the_student(dod, tmp_path, monkeypatch):
    monkeypatch.setattr(dod, "PIECE", 100)  # several pieces, as the 43 MB of a real student
    trained = _student(tmp_path / "work" / "s6", "abc")
    (tmp_path / "work" / "s6.log").write_text("log")
    back = tmp_path / "back"
    back.mkdir()
    dod.pack(tmp_path / "work", "s6", back)
    assert len(list(back.glob("trained.part*"))) > 2
    # here: a local student of the same trim, its own layers trained otherwise, the word table the same
    local = tmp_path / "local"
    mine = _student(local, "abc", seed=1)
    safetensors_numpy.save_file(
        {**mine, "embeddings.word_embeddings.weight": trained["embeddings.word_embeddings.weight"]},
        str(local / "model.safetensors"),
    )
    dod.rebuild(back, "s6", local, tmp_path / "rebuilt")
    got = safetensors_numpy.load_file(str(tmp_path / "rebuilt" / "model.safetensors"))
    assert sorted(got) == sorted(trained) and all(np.array_equal(got[k], trained[k]) for k in trained)
    assert (tmp_path / "rebuilt" / "tokenizer.json").read_text() == '{"model": "stand-in"}'
    assert (tmp_path / "rebuilt" / "2_Normalize").is_dir()


def test_rebuild_refuses_another_trim_or_word_table(dod, tmp_path):
    _student(tmp_path / "work" / "s6", "abc")
    back = tmp_path / "back"
    back.mkdir()
    dod.pack(tmp_path / "work", "s6", back)
    _student(tmp_path / "other-trim", "xyz")
    with pytest.raises(SystemExit, match="trimmed to other pieces"):
        dod.rebuild(back, "s6", tmp_path / "other-trim", tmp_path / "out1")
    _student(tmp_path / "other-table", "abc", seed=2)
    with pytest.raises(SystemExit, match="word table differs"):
        dod.rebuild(back, "s6", tmp_path / "other-table", tmp_path / "out2")


def test_wordfreq_stand_in_serves_the_lists(dod, tmp_path):
    lists = {
        "en": {"list": "large", "freqs": {"the": 0.05, "cat": 1e-5}},
        "hi": {"list": "small", "freqs": {"है": 0.01}},
    }
    path = tmp_path / "wordfreq.json.gz"
    path.write_bytes(gzip.compress(json.dumps(lists, ensure_ascii=False).encode()))
    (tmp_path / "wordfreq").mkdir()
    (tmp_path / "wordfreq" / "__init__.py").write_text(dod.WORDFREQ_STUB)
    code = (
        "import json, wordfreq; print(json.dumps([sorted(wordfreq.available_languages(wordlist='small')), "
        "sorted(wordfreq.available_languages(wordlist='large')), wordfreq.get_frequency_dict('en', wordlist='large')]))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "WORDFREQ_JSON": str(path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    small, large, en = json.loads(out)
    assert small == ["en", "hi"] and large == ["en"] and en == {"the": 0.05, "cat": 1e-5}


@pytest.mark.parametrize("zeroed", [False, True])
def test_guard_counts_reads_of_zeroed_rows(checkpoints, tmp_path, zeroed):
    """The guarded distill of a tiny teacher: no count when no row is zeroed, a count when the rows of the
    ordinary pieces are (the tiny teacher and its student both have the teacher's rows, so both are counted)."""
    teacher = checkpoints["feature-extraction"]
    rows = sum(1 for _ in (teacher / "vocab.txt").open(encoding="utf-8"))
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "payload.json").write_text(json.dumps({"rows": rows}))
    np.save(payload / "zero_rows.npy", np.arange(5, rows, dtype=np.int32) if zeroed else np.zeros(0, np.int32))
    (payload / "wordfreq.json.gz").write_bytes(gzip.compress(b"{}"))
    cmd = [
        sys.executable,
        str(SCRIPT),
        "distill",
        str(payload),
        "--",
        str(teacher),
        "-o",
        str(tmp_path / "s"),
        "--layers",
        "1",
        "--preset",
        "smoke",
        "--threads",
        "1",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stderr.rsplit("zeroed-row guard: ", 1)[1].splitlines()[0].replace("'", '"'))
    assert counts["lookups"] > 0
    assert (counts["tokens"] > 0 and counts["sequences"] > 0) if zeroed else counts["tokens"] == 0
