"""Score one shard and commit its part: read, validate, predict in chunks, write, fsync, rename.

Used alike by the local engine's worker processes and by the Ray engine's actors. Rows whose text cannot
be used were marked by the reader; a chunk that the predictor still refuses (its own input checks) is
scored row by row, so that only the offending rows get an ``error``.

Test-only hook: ``MBERT_EDGE_BATCH_TEST_KILL=WHO:POINT:SHARD`` (WHO ``worker``, ``parent`` or ``orphan``,
POINT ``mid-shard``, ``before-rename`` or ``after-rename``) SIGKILLs the worker, or the parent and then the
worker, or only the parent (``orphan``: the worker then waits, and must be ended by its parent-death watch),
when shard SHARD reaches POINT on its first attempt. WHO ``hang`` stops the process there instead, for a test to
kill the driver from outside. With ``MBERT_EDGE_BATCH_TEST_KILL_ONCE=PATH`` the hook fires only in the process
that creates PATH first (the signal to such a test, and the only way to tell a Ray retry, which runs in a
restarted actor, from a first attempt). The Ray engine passes both variables on to its actors.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from mbert_edge.batch import commit, outputs
from mbert_edge.batch.inputs import Shard, read_shard
from mbert_edge.batch.plan import JobPlan
from mbert_edge.errors import InvalidInputError
from mbert_edge.manifest import FEATURE_EXTRACTION

log = logging.getLogger(__name__)

CHUNK_ROWS = 2048  # texts per predictor call: long enough for length-sorted batching to pay off
KILL_ENV = "MBERT_EDGE_BATCH_TEST_KILL"
KILL_ONCE_ENV = "MBERT_EDGE_BATCH_TEST_KILL_ONCE"
KILL_POINTS = ("mid-shard", "before-rename", "after-rename")


class TruncationCounter(logging.Filter):
    """Counts the predictor's truncation warnings (texts cut at max_length) and keeps them out of the log.

    The runtime logs one warning per call with the number of texts it cut; a batch job reports the total.
    """

    PREFIX = "%d of %d texts were cut"

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(self.PREFIX) and record.args:
            self.count += int(record.args[0])  # type: ignore[index]
            return False
        return True

    @classmethod
    def install(cls) -> TruncationCounter:
        """Attach a counter to the predictor's logger (once per process)."""
        logger = logging.getLogger("mbert_edge.predictor")
        for f in logger.filters:
            if isinstance(f, cls):
                return f
        counter = cls()
        logger.addFilter(counter)
        if logger.level == logging.NOTSET or logger.level > logging.WARNING:
            logger.setLevel(logging.WARNING)  # the record must reach the filter
        return counter


def _kill_hook(point: str, shard: int, attempt: int) -> None:
    spec = os.environ.get(KILL_ENV)
    if not spec or attempt:
        return
    who, where, index = spec.split(":")
    if where != point or int(index) != shard:
        return
    once = os.environ.get(KILL_ONCE_ENV)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # atomic: one process wins
        except FileExistsError:
            return
    if who == "hang":
        time.sleep(3600)  # the test kills the driver (Ray then ends this actor)
        return
    if who in ("parent", "orphan"):
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(0.05)
    if who == "orphan":
        time.sleep(60)  # the parent-death signal or the watchdog ends this process first
        return
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # not reached


def _predict(predictor: Any, plan: JobPlan, texts: list[str] | str, batch_size: int) -> Any:
    """Results for a list of texts (a list), or for one text passed as a str (one result, and an error that says
    "the text" rather than "texts[0]": it goes into that row's error column)."""
    o = plan.options
    if o.task == FEATURE_EXTRACTION:
        out = predictor.embed(texts, normalize=o.normalize, prefix=o.prefix, batch_size=batch_size)
    else:
        out = predictor.predict(texts, top_k=o.top_k, batch_size=batch_size)
    return out if isinstance(texts, str) else list(out)


def score_shard(
    predictor: Any, plan: JobPlan, shard: Shard, out: Path, batch_size: int, attempt: int = 0
) -> dict[str, Any]:
    """Score ``shard`` and commit its part under ``out``; return its counts (rows, errors, truncated)."""
    o = plan.options
    counter = TruncationCounter.install()
    truncated_before = counter.count
    rows = read_shard(shard, o.text_column, o.id_column, o.keep_columns)
    errors = list(rows.errors)
    results: list[Any] = [None] * shard.rows
    valid = [i for i, e in enumerate(errors) if e is None]
    for n, start in enumerate(range(0, len(valid), CHUNK_ROWS)):
        idx = valid[start : start + CHUNK_ROWS]
        texts = [rows.texts[i] for i in idx]
        try:
            got = _predict(predictor, plan, texts, batch_size)
        except InvalidInputError:
            got = []
            for i, text in zip(idx, texts, strict=True):  # find the rows the predictor refuses
                try:
                    got.append(_predict(predictor, plan, text, batch_size))
                except InvalidInputError as exc:
                    got.append(None)
                    errors[i] = str(exc)
        for i, r in zip(idx, got, strict=True):
            results[i] = r
        if n == 0:
            _kill_hook("mid-shard", shard.index, attempt)
    table = outputs.build_table(
        plan.schema, o.task, o.top_k, shard.first_row, results, errors, rows.ids, o.id_column, rows.keep
    )
    stats = {
        "shard": shard.index,
        "rows": shard.rows,
        "errors": sum(e is not None for e in errors),
        "truncated": counter.count - truncated_before,
    }
    final = out / commit.part_name(shard.index, outputs.EXTENSIONS[o.output_format])
    tmp = commit.tmp_path(final)
    try:
        outputs.write_part(table, tmp, o.output_format, stats)
        _kill_hook("before-rename", shard.index, attempt)
        commit.commit(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    _kill_hook("after-rename", shard.index, attempt)
    return stats
