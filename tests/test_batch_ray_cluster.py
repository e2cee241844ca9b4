"""The Ray engine joining a two-node Ray cluster (``--ray-address``), with an actor and then the driver killed.

The cluster is ``ray.cluster_utils.Cluster``: a head node and a second node, each a raylet of its own with one
CPU, on this machine; two single-CPU actors therefore run on different nodes, and both commit into the one
output directory (on a real cluster: shared storage). The driver runs as the command, in a subprocess:

- an actor is SIGKILLed mid-shard (test-only hook, fired once): Ray restarts it and retries the shard, and the
  output still holds every row exactly once, equal to the local engine's;
- the driver is SIGKILLed while an actor stands after a rename and before its journal line (the hook's
  ``hang``): running the command again resumes, recovers that part and scores only the rest.

Run by ``make test-ray``; skipped by ``make test``. No timings are asserted (the waits are liveness deadlines).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(os.environ.get("MBERT_EDGE_TEST_RAY") != "1", reason="Ray tests run with make test-ray"),
]

ray_cluster_utils = pytest.importorskip("ray.cluster_utils")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from mbert_edge.batch import score  # noqa: E402
from mbert_edge.batch.commit import JOURNAL_NAME, SUCCESS_NAME, TMP_MARK  # noqa: E402
from tests.conftest import corpus_lines  # noqa: E402

SHARD_ROWS = 4
ROWS = 30  # 8 shards


@pytest.fixture(scope="module")
def cluster():
    c = ray_cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def job(tmp_path_factory, bundles):
    """The input and the local engine's output (the reference)."""
    root = tmp_path_factory.mktemp("ray-cluster")
    texts = [t[:200] for _, t in corpus_lines(("eng", "deu", "rus", "ara", "zho"), per_lang=6)][:ROWS]
    src = root / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    score(bundles["feature-extraction"], src, root / "local", shard_rows=SHARD_ROWS, workers=1, threads_per_worker=1)
    return src, _table(root / "local")


def _table(out: Path) -> pa.Table:
    files = json.loads((out / SUCCESS_NAME).read_text())["files"]
    return pa.concat_tables([pq.read_table(out / f).replace_schema_metadata(None) for f in files])


def _command(bundle: Path, src: Path, out: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "mbert_edge.cli", "score", str(bundle), str(src), "-o", str(out),
            "--shard-rows", str(SHARD_ROWS), "--engine", "ray", "--ray-address", address,
            "--workers", "2", "--threads-per-worker", "1", "--no-progress"]  # fmt: skip


def _check_exactly_once(out: Path, expected: pa.Table) -> list[dict]:
    got = _table(out)
    assert got.column("row_id").to_pylist() == list(range(ROWS))
    assert got.equals(expected)
    assert [p.name for p in out.iterdir() if TMP_MARK in p.name] == []
    journal = [json.loads(x) for x in (out / JOURNAL_NAME).read_text().splitlines()]
    assert sorted(e["shard"] for e in journal) == list(range(8))  # one commit line per shard
    return journal


def test_an_actor_killed_mid_shard_is_retried_by_ray_without_duplicates(tmp_path, bundles, cluster, job):
    src, expected = job
    out = tmp_path / "out"
    env = {**os.environ, "MBERT_EDGE_BATCH_TEST_KILL": "worker:mid-shard:3",
           "MBERT_EDGE_BATCH_TEST_KILL_ONCE": str(tmp_path / "fired")}  # fmt: skip
    done = subprocess.run(
        _command(bundles["feature-extraction"], src, out, cluster.address), capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fired").exists()  # the actor really was killed
    _check_exactly_once(out, expected)


def test_a_killed_driver_resumes_on_the_cluster(tmp_path, bundles, cluster, job):
    src, expected = job
    out = tmp_path / "out"
    fired = tmp_path / "fired"
    env = {**os.environ, "MBERT_EDGE_BATCH_TEST_KILL": "hang:after-rename:2",
           "MBERT_EDGE_BATCH_TEST_KILL_ONCE": str(fired)}  # fmt: skip
    command = _command(bundles["feature-extraction"], src, out, cluster.address)
    with open(tmp_path / "stderr.txt", "w") as err:
        driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = time.monotonic() + 240  # a liveness deadline: Ray starts its actors, then shard 2 is committed
        while not fired.exists() and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fired.exists(), (tmp_path / "stderr.txt").read_text()
        driver.send_signal(signal.SIGKILL)
        assert driver.wait(timeout=60) == -signal.SIGKILL
    assert (out / "part-000002.parquet").exists() and not (out / SUCCESS_NAME).exists()
    again = subprocess.run([*command, "--json"], capture_output=True, text=True, env=os.environ)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["complete"] and report["rows_in"] == ROWS
    assert report["rows_this_run"] < ROWS  # only the rest was scored
    journal = _check_exactly_once(out, expected)
    assert 2 in [e["shard"] for e in journal if e.get("recovered")]
