"""Offline batch scoring (mbert_edge.batch, `mbert-edge score`) on tiny bundles: exactly once, resumable.

Kill-and-resume tests run the command in a subprocess with the test-only hook MBERT_EDGE_BATCH_TEST_KILL
(WHO:POINT:SHARD), which SIGKILLs the parent or a worker at a point of a shard's commit, then resume and
compare with an uninterrupted run. No timings are asserted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import corpus_lines

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from mbert_edge.batch import (  # noqa: E402
    JobLockedError,
    JobMismatchError,
    TooManyErrorsError,
    score,
)
from mbert_edge.batch.commit import JOURNAL_NAME, SUCCESS_NAME, TMP_MARK  # noqa: E402
from mbert_edge.batch.lock import JobLock  # noqa: E402

SHARD_ROWS = 9
ONE = {"workers": 1, "threads_per_worker": 1}  # one single-threaded worker: bit-identical values run to run


@pytest.fixture(scope="module")
def texts() -> list[str]:
    lines = [t for _, t in corpus_lines(("eng", "deu", "rus", "ara", "zho", "hin", "jpn"), per_lang=6)]
    return [ln[:300] for ln in lines]  # 42 texts: 5 shards of 9 rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_output(out: Path) -> pa.Table:
    """The job's rows: every part (or the single file) in name order, concatenated."""
    assert (out / SUCCESS_NAME).exists()
    files = json.loads((out / SUCCESS_NAME).read_text())["files"]
    tables = []
    for name in files:
        if name.endswith(".parquet"):
            tables.append(pq.read_table(out / name).replace_schema_metadata(None))
        else:
            raise AssertionError(name)
    return pa.concat_tables(tables)


def leftovers(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if TMP_MARK in p.name]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mbert_edge.cli", "score", *args], capture_output=True, text=True, env=full_env
    )


# ------------------------------------------------------------------------------------------- results
@pytest.mark.parametrize("task", ["text-classification", "token-classification", "feature-extraction"])
def test_every_task_matches_the_predictor_in_input_order(tmp_path, bundles, texts, task):
    import mbert_edge

    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"doc-{i}", "text": t} for i, t in enumerate(texts)])
    workers = 2 if task == "feature-extraction" else 1
    report = score(bundles[task], src, tmp_path / "out", id_column="id", shard_rows=SHARD_ROWS, workers=workers)
    assert (report.rows_in, report.scored, report.errors, report.shards) == (42, 42, 0, 5)
    assert report.files == [f"part-{i:06d}.parquet" for i in range(5)]
    table = read_output(tmp_path / "out")
    assert table.column("row_id").to_pylist() == list(range(42))
    assert table.column("id").to_pylist() == [f"doc-{i}" for i in range(42)]
    assert table.column("error").null_count == 42
    model = mbert_edge.load(bundles[task])
    if task == "feature-extraction":
        assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)
        got = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
        np.testing.assert_allclose(got, model.embed(texts), atol=1e-5)
    elif task == "text-classification":
        expected = model.predict(texts)
        assert table.column("label").to_pylist() == [e["label"] for e in expected]
        np.testing.assert_allclose(table.column("score").to_pylist(), [e["score"] for e in expected], atol=1e-5)
    else:
        expected = model.predict(texts)
        got = table.column("entities").to_pylist()
        assert [[(e["entity_group"], e["word"], e["start"], e["end"]) for e in row] for row in got] == [
            [(e["entity_group"], e["word"], e["start"], e["end"]) for e in row] for row in expected
        ]


def test_top_k_lists_and_output_formats_agree(tmp_path, bundles, texts):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t, "lang": i % 3} for i, t in enumerate(texts)])
    b = bundles["text-classification"]
    score(b, src, tmp_path / "pq", top_k=None, keep_columns=["lang"], shard_rows=SHARD_ROWS, single_file=True)
    assert sorted(p.name for p in (tmp_path / "pq").iterdir() if not p.name.startswith("_")) == ["scores.parquet"]
    ref = pq.read_table(tmp_path / "pq" / "scores.parquet")
    assert ref.column("lang").to_pylist() == [str(i % 3) for i in range(42)]
    assert all(len(x) == 3 for x in ref.column("labels").to_pylist())
    score(b, src, tmp_path / "js", top_k=None, output_format="jsonl", shard_rows=SHARD_ROWS, single_file=True)
    rows = [json.loads(x) for x in (tmp_path / "js" / "scores.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["row_id"] for r in rows] == list(range(42))
    assert [r["labels"] for r in rows] == ref.column("labels").to_pylist()
    score(b, src, tmp_path / "csv", top_k=2, output_format="csv", shard_rows=SHARD_ROWS, single_file=True)
    import csv

    with open(tmp_path / "csv" / "scores.csv", encoding="utf-8", newline="") as f:
        recs = list(csv.DictReader(f))
    assert [int(r["row_id"]) for r in recs] == list(range(42))
    assert [json.loads(r["labels"]) for r in recs] == [x[:2] for x in ref.column("labels").to_pylist()]


# ------------------------------------------------------------------------------------------- bad rows
def test_malformed_rows_in_jsonl_get_an_error(tmp_path, bundles):
    lines = [
        '{"text": "Guten Morgen"}',
        "{not json",
        '{"title": "no text field"}',
        '{"text": 17}',
        '{"text": ""}',
        '{"text": "   "}',
        '["a", "list"]',
        '{"text": null}',
        "",  # blank lines are not rows
        '{"text": "Доброе утро"}',
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = score(bundles["text-classification"], src, tmp_path / "out", shard_rows=4)
    assert (report.rows_in, report.scored, report.errors) == (9, 2, 7)
    errors = read_output(tmp_path / "out").column("error").to_pylist()
    assert errors[0] is None and errors[8] is None
    assert "bad JSON" in errors[1] and "no 'text' field" in errors[2] and "int, not a string" in errors[3]
    assert "empty" in errors[4] and "empty" in errors[5] and "not an object" in errors[6] and "null" in errors[7]


def test_malformed_rows_in_csv_get_an_error(tmp_path, bundles):
    src = tmp_path / "in.csv"
    src.write_text(
        'id,text\n1,Hello world\n2,"a text with a\nnewline, and a comma"\n3\n4,\n5,x,extra\n\n6,"Bonjour"\n',
        encoding="utf-8",
    )
    report = score(bundles["text-classification"], src, tmp_path / "out", id_column="id", shard_rows=2)
    assert (report.rows_in, report.errors) == (6, 3)
    t = read_output(tmp_path / "out")
    assert t.column("id").to_pylist() == ["1", "2", "3", "4", "5", "6"]
    errors = t.column("error").to_pylist()
    assert [e is None for e in errors] == [True, True, False, False, False, True]
    assert "fields" in errors[2] and "empty" in errors[3] and "fields" in errors[4]


def test_malformed_rows_in_parquet_get_an_error_and_types_are_kept(tmp_path, bundles):
    table = pa.table({"doc": [10, 11, 12, 13, 14], "text": ["Hola", None, "", "Ciao", " "]})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=2)
    report = score(bundles["text-classification"], tmp_path / "in.parquet", tmp_path / "out", id_column="doc",
                   shard_rows=3)  # fmt: skip
    assert (report.rows_in, report.errors, report.shards) == (5, 3, 2)  # whole row groups: 2 + (2 + 1)
    t = read_output(tmp_path / "out")
    assert t.schema.field("doc").type == pa.int64()
    assert t.column("doc").to_pylist() == [10, 11, 12, 13, 14]
    assert [e is None for e in t.column("error").to_pylist()] == [True, False, False, True, False]


def test_empty_input_gives_an_empty_part_with_the_schema(tmp_path, bundles):
    (tmp_path / "in.jsonl").write_text("", encoding="utf-8")
    report = score(bundles["feature-extraction"], tmp_path / "in.jsonl", tmp_path / "out")
    assert (report.rows_in, report.shards, report.complete) == (0, 0, True)
    t = read_output(tmp_path / "out")
    assert t.num_rows == 0 and t.schema.names == ["row_id", "embedding", "error"]
    (tmp_path / "h.csv").write_text("text\n", encoding="utf-8")
    assert score(bundles["feature-extraction"], tmp_path / "h.csv", tmp_path / "out2").rows_in == 0


def test_truncated_texts_are_counted_and_max_errors_stops_the_job(tmp_path, bundles):
    long = " ".join(["Wort"] * 400)
    rows = [{"text": long}, {"text": "kurz"}] * 3 + [{"text": ""}] * 4 + [{"text": "ok"}] * 6
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    b = bundles["text-classification"]
    with pytest.raises(TooManyErrorsError, match="max_errors=1"):
        score(b, src, tmp_path / "out", shard_rows=4, max_errors=1, workers=1)
    assert not (tmp_path / "out" / SUCCESS_NAME).exists()
    report = score(b, src, tmp_path / "out", shard_rows=4, workers=1)  # resumes with no limit
    assert (report.rows_in, report.errors, report.truncated) == (16, 4, 3)
    assert report.shards_resumed >= 1
    assert read_output(tmp_path / "out").column("row_id").to_pylist() == list(range(16))


# ------------------------------------------------------------------------------------------- kill and resume
@pytest.fixture(scope="module")
def reference(tmp_path_factory, bundles, texts):
    """An uninterrupted run of the job that the kill tests interrupt."""
    root = tmp_path_factory.mktemp("batch-ref")
    src = write_jsonl(root / "in.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts)])
    score(bundles["feature-extraction"], src, root / "out", id_column="id", shard_rows=SHARD_ROWS, **ONE)
    return src, read_output(root / "out")


KILLS = [
    ("parent", "mid-shard", 1),
    ("parent", "before-rename", 2),
    ("parent", "after-rename", 3),
    ("worker", "mid-shard", 0),
    ("worker", "before-rename", 2),
    ("worker", "after-rename", 4),
]


@pytest.mark.parametrize(("who", "point", "shard"), KILLS)
def test_killed_run_resumes_with_every_row_exactly_once(tmp_path, bundles, reference, who, point, shard):
    src, expected = reference
    out = tmp_path / "out"
    args = [str(bundles["feature-extraction"]), str(src), "-o", str(out), "--id-column", "id", "--shard-rows",
            str(SHARD_ROWS), "--workers", "1", "--threads-per-worker", "1", "--no-progress"]  # fmt: skip
    first = run_cli(*args, env={"MBERT_EDGE_BATCH_TEST_KILL": f"{who}:{point}:{shard}"})
    parts = sorted(p.name for p in out.glob("part-*"))
    if who == "parent":
        assert first.returncode == -signal.SIGKILL, first.stderr
        assert not (out / SUCCESS_NAME).exists()
        done = shard + 1 if point == "after-rename" else shard
        assert parts == [f"part-{i:06d}.parquet" for i in range(done)]
        if point == "before-rename":
            assert leftovers(out)  # the temporary part of the killed run
    else:  # the parent replaces the worker and scores the shard again
        assert first.returncode == 0, first.stderr
        assert "scoring it again" in first.stderr
    report = score(bundles["feature-extraction"], src, out, id_column="id", shard_rows=SHARD_ROWS, **ONE)
    assert report.complete and report.rows_in == 42
    got = read_output(out)
    assert got.column("row_id").to_pylist() == list(range(42))
    assert got.equals(expected)  # the same values as the uninterrupted run
    assert leftovers(out) == []
    journal = [json.loads(x) for x in (out / JOURNAL_NAME).read_text().splitlines()]
    assert sorted(e["shard"] for e in journal) == list(range(5))  # one commit line per shard
    if who == "parent" and point == "after-rename":
        assert [e["shard"] for e in journal if e.get("recovered")] == [shard]


def processes_with(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes() and "Z" not in (entry / "stat").read_text():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("watch", ["pdeathsig", "watchdog"])
def test_workers_exit_when_the_parent_dies(tmp_path, bundles, reference, watch):
    """The parent is SIGKILLed while its two workers score; the workers must end by themselves (the
    parent-death signal on Linux, and the watchdog that polls the parent's id, tested alone too)."""
    import time
    import uuid

    src, _ = reference
    out = tmp_path / "out"
    marker = f"mbert-edge-orphan-test-{uuid.uuid4().hex}"
    env = {**os.environ, "MBERT_EDGE_BATCH_TEST_KILL": "orphan:mid-shard:1", "MBERT_EDGE_TEST_MARKER": marker}
    if watch == "watchdog":
        env["MBERT_EDGE_BATCH_TEST_NO_PDEATHSIG"] = "1"
    args = [str(bundles["feature-extraction"]), str(src), "-o", str(out), "--shard-rows", str(SHARD_ROWS),
            "--workers", "2", "--threads-per-worker", "1", "--no-progress"]  # fmt: skip
    with open(tmp_path / "stderr.txt", "w") as err:  # a file, not a pipe: an orphan would hold a pipe open
        parent = subprocess.Popen(
            [sys.executable, "-m", "mbert_edge.cli", "score", *args], stdout=subprocess.DEVNULL, stderr=err, env=env
        )
        assert parent.wait(timeout=300) == -signal.SIGKILL, (tmp_path / "stderr.txt").read_text()
    deadline = time.monotonic() + 30  # a liveness deadline, not a speed target: the hook sleeps 60 s
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], f"workers outlived their parent: {left}"
    assert not (out / SUCCESS_NAME).exists()
    report = score(bundles["feature-extraction"], src, out, shard_rows=SHARD_ROWS, **ONE)  # and it resumes
    assert report.complete and report.rows_in == 42
    assert leftovers(out) == []


def test_changed_bundle_options_or_inputs_are_refused_on_resume(tmp_path, copy_bundle, texts):
    b = copy_bundle("text-classification")
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts[:10]])
    out = tmp_path / "out"
    score(b, src, out, shard_rows=4, workers=1)
    manifest = b / "manifest.json"
    manifest.write_text(manifest.read_text() + "\n")  # another manifest: another bundle
    with pytest.raises(JobMismatchError, match=r"bundle\.manifest_sha256") as info:
        score(b, src, out, shard_rows=4, workers=1)
    assert info.value.differences == [d for d in info.value.differences if d.startswith("bundle.")]
    with pytest.raises(JobMismatchError, match=r"options\.top_k"):
        score(b, src, out, shard_rows=4, top_k=2, workers=1)
    with open(src, "a", encoding="utf-8") as f:
        f.write('{"text": "one more"}\n')
    with pytest.raises(JobMismatchError, match=r"inputs: .*in\.jsonl: size"):
        score(b, src, out, shard_rows=4, workers=1)
    report = score(b, src, out, shard_rows=4, workers=1, restart=True)
    assert (report.rows_in, report.shards_resumed) == (11, 0)


def test_a_second_run_at_the_same_time_is_refused(tmp_path, bundles):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello"}])
    out = tmp_path / "out"
    out.mkdir()
    with JobLock(out), pytest.raises(JobLockedError, match=f"process {os.getpid()}"):
        score(bundles["text-classification"], src, out)
    assert score(bundles["text-classification"], src, out, workers=1).complete  # free again


def test_cli_reports_and_refuses_a_foreign_directory(tmp_path, bundles):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello"}, {"text": ""}])
    r = run_cli(str(bundles["text-classification"]), str(src), "-o", str(tmp_path / "out"), "--json", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["errors"] == 1
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    r = run_cli(str(bundles["text-classification"]), str(src), "-o", str(tmp_path / "busy"))
    assert r.returncode == 1 and "not empty" in r.stderr


@pytest.mark.parametrize(
    ("task", "option", "message"),
    [
        ("feature-extraction", {"normalize": "yes"}, "normalize must be True, False or None"),
        ("feature-extraction", {"prefix": "query\ud800: "}, "prefix must be a str of valid Unicode"),
        ("text-classification", {"top_k": True}, "top_k must be a positive int"),
    ],
)
def test_bad_job_options_are_refused_before_any_row(tmp_path, bundles, task, option, message):
    """An option embed()/predict() refuses is the job's error, not every row's: before, the job ran, gave each
    row that error and was marked complete, so a rerun would not redo them."""
    from mbert_edge.batch import BatchError

    (tmp_path / "in.jsonl").write_text('{"text": "eins"}\n{"text": "zwei"}\n', encoding="utf-8")
    with pytest.raises(BatchError, match=message):
        score(bundles[task], tmp_path / "in.jsonl", tmp_path / "out", **option)
    assert not (tmp_path / "out" / SUCCESS_NAME).exists()


@pytest.mark.parametrize("task", ["feature-extraction", "text-classification"])
def test_rows_the_predictor_refuses_get_their_own_error(tmp_path, bundles, task):
    """Rows that read fine but that the model cannot take (nothing the tokenizer keeps, a lone surrogate) get the
    predictor's message about that text, and the rows around them their results."""
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"text": "Hello world"}\n{"text": "\\u200b\\u200b"}\n{"text": "a\\ud800b"}\n{"text": "Guten Morgen"}\n',
        encoding="utf-8",
    )
    report = score(bundles[task], src, tmp_path / "out")
    assert (report.rows_in, report.scored, report.errors) == (4, 2, 2)
    errors = read_output(tmp_path / "out").column("error").to_pylist()
    assert errors[0] is None and errors[3] is None
    assert errors[1].startswith("the text ") and "nothing the tokenizer keeps" in errors[1]
    assert errors[2].startswith("the text ") and "lone surrogate" in errors[2]
    assert not any("texts[" in e for e in errors[1:3])
