"""The Ray engine: the same shards and the same commit protocol, scheduled by Ray on an actor pool.

Each actor loads one Predictor and scores whole shards with :func:`mbert_edge.batch.scoring.score_shard`,
which commits a part by renaming it into the output directory (which must be shared storage on a cluster).
The driver keeps the plan, the lock and the journal. Ray restarts a dead actor and retries its task
(``max_restarts``/``max_task_retries``); a retried shard renames onto its own fixed part name, so a retry can
replace a part but never add a row twice. A killed driver ends its Ray job (and its actors); running the
same command again resumes from the parts, exactly as with the local engine. Ray Data's checkpointing is
not used.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mbert_edge.batch.errors import BatchDependencyError, BatchError
from mbert_edge.batch.inputs import Shard
from mbert_edge.batch.plan import JobPlan
from mbert_edge.batch.scoring import KILL_ENV, KILL_ONCE_ENV

log = logging.getLogger(__name__)

RETRIES = 2


class _ScoringActor:
    """One Predictor per actor; ``score`` scores and commits one shard, returning its counts."""

    def __init__(self, plan_json: str, out: str, threads: int, batch_size: int) -> None:
        import mbert_edge
        from mbert_edge.batch.plan import JobOptions

        data = json.loads(plan_json)
        options = JobOptions(**{**data["options"], "keep_columns": tuple(data["options"]["keep_columns"])})
        self.plan = JobPlan(options, data["fingerprint"], [], data["schema"])
        self.out = Path(out)
        self.batch_size = batch_size
        self.predictor = mbert_edge.load(
            options.bundle, backend=options.backend, threads=threads, precision=options.precision,
            truncation=options.truncation,
        )  # fmt: skip
        if self.predictor.model_file.path != options.model_file:
            raise BatchError(f"the actor loaded {self.predictor.model_file.path}, the job needs {options.model_file}")

    def score(self, shard: dict[str, Any]) -> dict[str, Any]:
        from mbert_edge.batch.scoring import score_shard

        return score_shard(self.predictor, self.plan, Shard(**shard), self.out, self.batch_size)


def run_ray(
    plan: JobPlan,
    pending: Sequence[Shard],
    out: Path,
    workers: int,
    threads: int,
    batch_size: int,
    on_commit: Callable[[dict[str, Any]], None],
    address: str | None = None,
) -> None:
    """Score ``pending`` shards on Ray actors (``workers`` of them, ``threads`` CPUs each); ``on_commit`` per part.

    Joins ``address`` (or ``RAY_ADDRESS``, or starts a local instance) unless Ray is already initialized;
    shuts down only an instance it started itself.
    """
    if not pending:
        return
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as exc:
        raise BatchDependencyError("the Ray engine needs ray: pip install 'mbert-edge[ray]'") from exc
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:  # ray raises plain Exception/ConnectionError when a node cannot start or be joined
            where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
            raise BatchError(f"could not {where}: {exc}") from exc
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(workers, len(pending), cpus // max(1, threads) or 1))
        if n < workers:
            log.info("Ray: %d actor(s) of %d CPU(s) each (the cluster has %d CPUs)", n, threads, cpus)
        actor_cls = ray.remote(num_cpus=threads, max_restarts=RETRIES, max_task_retries=RETRIES)(_ScoringActor)
        plan_json = json.dumps(
            {"options": asdict(plan.options), "fingerprint": plan.fingerprint, "schema": plan.schema_b64}
        )
        test_env = {k: os.environ[k] for k in (KILL_ENV, KILL_ONCE_ENV) if k in os.environ}  # tests only
        if test_env:
            actor_cls = actor_cls.options(runtime_env={"env_vars": test_env})
        actors = [actor_cls.remote(plan_json, str(out.resolve()), threads, batch_size) for _ in range(n)]
        pool = ActorPool(actors)
        try:
            for stats in pool.map_unordered(lambda a, s: a.score.remote(s.to_dict()), list(pending)):
                on_commit(stats)
        except ray.exceptions.RayError as exc:
            raise BatchError(f"the Ray engine failed: {exc}; the parts committed so far are kept") from exc
        finally:
            for a in actors:
                ray.kill(a)
    finally:
        if started:
            ray.shutdown()
