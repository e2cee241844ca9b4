"""The local engine: worker processes, each with one Predictor loaded once, fed one shard at a time.

Each worker talks to the parent over its own pipe, so that a worker killed mid-message cannot block the
others. Workers exit when the parent dies (``PR_SET_PDEATHSIG`` on Linux, and a watchdog thread that polls
the parent's id everywhere). A worker that dies while scoring a shard is replaced and the shard scored
again (its part name is fixed, so this never duplicates rows); a shard that kills its worker
``MAX_ATTEMPTS`` times stops the job.

Processes x threads: see :func:`default_split`.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from mbert_edge.batch.errors import BatchError
from mbert_edge.batch.inputs import Shard
from mbert_edge.batch.plan import JobPlan

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; the cgroup quota is not read)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_split(cpus: int | None = None) -> tuple[int, int]:
    """Default (worker processes, threads per worker) for ``cpus`` CPUs: one single-threaded worker per CPU.

    Why (docs/batch-scoring.md, "Processes x threads"): a single-threaded ONNX Runtime session never waits
    for its peers at the end of each op, which on short texts is a large share of an op, and one worker's
    tokenizer, head and part writing overlap the other's model calls. On many cores the same holds per core;
    the cost is memory: each worker holds its own copy of the model (about 120 MB for e5-small INT8, 470 MB
    fp32), so ask for fewer workers with more threads (``--workers 4 --threads-per-worker 8``) when memory
    is short or texts are long.
    """
    n = cpus if cpus is not None else available_cpus()
    return max(1, n), 1


def _set_pdeathsig() -> None:
    if not sys.platform.startswith("linux") or os.environ.get("MBERT_EDGE_BATCH_TEST_NO_PDEATHSIG"):
        return  # (the test variable leaves the watchdog alone, to test it)
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.5)


def _worker_main(conn: Connection, plan_json: str, out: str, threads: int, batch_size: int, parent: int) -> None:
    _set_pdeathsig()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    import json

    import mbert_edge
    from mbert_edge.batch.inputs import Shard as _Shard
    from mbert_edge.batch.plan import JobOptions
    from mbert_edge.batch.scoring import score_shard

    try:
        data = json.loads(plan_json)
        plan = JobPlan(
            JobOptions(**{**data["options"], "keep_columns": tuple(data["options"]["keep_columns"])}),
            data["fingerprint"],
            [],
            data["schema"],
        )
        o = plan.options
        predictor = mbert_edge.load(
            o.bundle, backend=o.backend, threads=threads, precision=o.precision, truncation=o.truncation
        )
        if predictor.model_file.path != o.model_file:
            raise BatchError(f"the worker loaded {predictor.model_file.path}, the job was planned for {o.model_file}")
        conn.send(("ready", os.getpid()))
        while True:
            msg = conn.recv()
            if msg is None:
                break
            shard_dict, attempt = msg
            shard = _Shard(**shard_dict)
            stats = score_shard(predictor, plan, shard, Path(out), batch_size, attempt)
            conn.send(("done", stats))
    except (EOFError, KeyboardInterrupt):
        pass
    except BaseException as exc:  # report, then exit: the parent stops the job
        with contextlib.suppress(OSError):
            conn.send(("failed", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        conn.close()


@dataclass
class _Worker:
    process: Any
    conn: Connection
    shard: Shard | None = None
    attempt: int = 0
    ready: bool = False


def _plan_json(plan: JobPlan) -> str:
    import json
    from dataclasses import asdict

    return json.dumps({"options": asdict(plan.options), "fingerprint": plan.fingerprint, "schema": plan.schema_b64})


def run_local(
    plan: JobPlan,
    pending: Sequence[Shard],
    out: Path,
    workers: int,
    threads: int,
    batch_size: int,
    on_commit: Callable[[dict[str, Any]], None],
) -> None:
    """Score ``pending`` shards with ``workers`` processes of ``threads`` threads; ``on_commit`` per part."""
    if not pending:
        return
    ctx = mp.get_context("spawn")
    plan_json = _plan_json(plan)
    queue: deque[tuple[Shard, int]] = deque((s, 0) for s in pending)
    pool: list[_Worker] = []

    def start() -> _Worker:
        parent_conn, child_conn = ctx.Pipe()
        p = ctx.Process(
            target=_worker_main,
            args=(child_conn, plan_json, str(out), threads, batch_size, os.getpid()),
            daemon=True,
            name="mbert-edge-batch-worker",
        )
        p.start()
        child_conn.close()
        w = _Worker(p, parent_conn)
        pool.append(w)
        return w

    def feed(w: _Worker) -> None:
        if queue:
            w.shard, w.attempt = queue.popleft()
            with contextlib.suppress(OSError):  # a dead worker: its sentinel reports it, the shard is requeued
                w.conn.send((w.shard.to_dict(), w.attempt))
        else:
            w.shard = None

    try:
        for _ in range(min(workers, len(pending))):
            start()
        remaining = len(pending)
        while remaining:
            ready = wait([w.conn for w in pool] + [w.process.sentinel for w in pool])
            for w in list(pool):
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        msg = None
                    if msg is not None:
                        if msg[0] == "ready":
                            w.ready = True
                            feed(w)
                        elif msg[0] == "done":
                            remaining -= 1
                            w.shard = None
                            on_commit(msg[1])
                            feed(w)
                        elif msg[0] == "failed":
                            where = f" on shard {w.shard.index}" if w.shard else " while loading the bundle"
                            log.debug("worker traceback:\n%s", msg[2])
                            raise BatchError(f"a worker failed{where}: {msg[1]}")
                        continue
                if w.process.sentinel in ready or (w.conn in ready and not w.process.is_alive()):
                    w.process.join(5)
                    pool.remove(w)
                    w.conn.close()
                    code = w.process.exitcode
                    if w.shard is None and not w.ready:
                        raise BatchError(f"a worker died while loading the bundle (exit code {code})")
                    if w.shard is not None:
                        if w.attempt + 1 >= MAX_ATTEMPTS:
                            raise BatchError(
                                f"shard {w.shard.index} killed its worker {MAX_ATTEMPTS} times (last exit code "
                                f"{code}); the parts committed so far are kept"
                            )
                        log.warning(
                            "a worker died (exit code %s) scoring shard %d; scoring it again", code, w.shard.index
                        )
                        queue.appendleft((w.shard, w.attempt + 1))
                    if queue:
                        start()
    finally:
        for w in pool:
            with contextlib.suppress(OSError, BrokenPipeError):
                w.conn.send(None)
        deadline = time.monotonic() + 10
        for w in pool:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
