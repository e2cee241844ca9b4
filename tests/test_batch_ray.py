"""The Ray engine of batch scoring on a local instance (``ray.init(num_cpus=2)``): same output as the local engine.

Run by ``make test-ray`` (which installs the ``ray`` extra); skipped by ``make test`` (Ray takes seconds to start).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(os.environ.get("MBERT_EDGE_TEST_RAY") != "1", reason="Ray tests run with make test-ray"),
]

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from mbert_edge.batch import score  # noqa: E402
from mbert_edge.batch.commit import JOURNAL_NAME, SUCCESS_NAME  # noqa: E402
from tests.conftest import corpus_lines  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _table(out: Path):
    files = json.loads((out / SUCCESS_NAME).read_text())["files"]
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(out / f).replace_schema_metadata(None) for f in files])


@pytest.mark.parametrize("task", ["text-classification", "feature-extraction"])
def test_ray_engine_gives_the_local_engines_output(tmp_path, bundles, local_ray, task):
    texts = [t for _, t in corpus_lines(("eng", "fra", "rus", "zho"), per_lang=8)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in [*texts, ""]), encoding="utf-8")
    local = score(bundles[task], src, tmp_path / "local", shard_rows=7, workers=1, threads_per_worker=1)
    remote = score(bundles[task], src, tmp_path / "ray", shard_rows=7, workers=2, threads_per_worker=1, engine="ray")
    assert (remote.rows_in, remote.errors, remote.engine) == (local.rows_in, local.errors, "ray") == (33, 1, "ray")
    assert _table(tmp_path / "ray").equals(_table(tmp_path / "local"))
    # a resume after an interruption scores only the missing shards, on Ray too
    (tmp_path / "ray" / "part-000002.parquet").unlink()
    (tmp_path / "ray" / SUCCESS_NAME).unlink()
    again = score(bundles[task], src, tmp_path / "ray", shard_rows=7, workers=2, threads_per_worker=1, engine="ray")
    assert (again.shards_resumed, again.rows_this_run) == (4, 7)
    assert _table(tmp_path / "ray").equals(_table(tmp_path / "local"))
    journal = [json.loads(x)["shard"] for x in (tmp_path / "ray" / JOURNAL_NAME).read_text().splitlines()]
    assert sorted(journal) == [0, 1, 2, 2, 3, 4]
