"""``score()``: plan (or resume) a job, run its pending shards on an engine, and finish it.

Output directory layout::

    _job.json        the plan: shards and the job's fingerprint (written once, atomically)
    _journal.jsonl   one line per committed part (audit, counts, fast resume)
    _lock            held by the running process (flock)
    part-000000.parquet ...   one part per shard, in input order (the truth: a part exists = a shard is done)
    scores.parquet   with single_file: the parts merged (the parts are then removed)
    _manifest.json   when done: the files, their rows and counts
    _SUCCESS         when done: the job's counts (written last)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mbert_edge.batch import commit, outputs
from mbert_edge.batch._deps import pyarrow
from mbert_edge.batch.errors import BatchError, JobMismatchError, TooManyErrorsError
from mbert_edge.batch.inputs import check_columns, list_inputs, plan_shards
from mbert_edge.batch.lock import JobLock
from mbert_edge.batch.plan import JobOptions, JobPlan, bundle_digest, diff, encode_schema, fingerprint
from mbert_edge.batch.progress import Progress
from mbert_edge.batch.report import ScoreReport
from mbert_edge.batch.workers import available_cpus, default_split
from mbert_edge.manifest import FEATURE_EXTRACTION, TEXT_CLASSIFICATION

log = logging.getLogger("mbert_edge.batch")

DEFAULT_SHARD_ROWS = 10_000
ENGINES = ("local", "ray")


def resolve_split(workers: int | None, threads_per_worker: int | None) -> tuple[int, int]:
    """Worker processes and threads per worker: the defaults of :func:`default_split`, or what was asked."""
    cpus = available_cpus()
    if workers is None and threads_per_worker is None:
        return default_split(cpus)
    for name, v in (("workers", workers), ("threads_per_worker", threads_per_worker)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise BatchError(f"{name} must be a positive int")
    if workers is None:
        return max(1, cpus // threads_per_worker), threads_per_worker  # type: ignore[operator,return-value]
    if threads_per_worker is None:
        return workers, max(1, cpus // workers)
    return workers, threads_per_worker


def score(
    bundle: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    input_format: str | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    keep_columns: Sequence[str] = (),
    output_format: str = "parquet",
    single_file: bool = False,
    top_k: int | None = 1,
    prefix: str | None = None,
    normalize: bool | None = None,
    backend: str = "auto",
    precision: str | None = None,
    truncation: bool = True,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    batch_size: int = 32,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    max_errors: int | None = None,
    restart: bool = False,
    engine: str = "local",
    ray_address: str | None = None,
    quiet: bool = False,
) -> ScoreReport:
    """Score every row of ``inputs`` with ``bundle`` into ``output_dir``, exactly once, resumably.

    Running the same call again after a crash resumes: committed parts are kept, the rest is scored. A job
    planned with another bundle, other options or changed inputs is refused (:class:`JobMismatchError`,
    listing the differences) unless ``restart=True``. A second run at the same time is refused
    (:class:`JobLockedError`). Rows that cannot be scored get an ``error`` instead of stopping the job;
    past ``max_errors`` such rows the job stops (:class:`TooManyErrorsError`) and can be resumed.

    Args:
        bundle: a bundle directory.
        inputs: JSONL, CSV or Parquet files, or directories of them (one format per job).
        output_dir: where the parts, the plan and the journal go (created when missing).
        input_format: ``jsonl``, ``csv`` or ``parquet`` instead of guessing from the extension.
        text_column: the column (JSON field) with the text.
        id_column: a column copied to the output next to ``row_id``.
        keep_columns: more columns copied unchanged (JSONL/CSV: as strings; Parquet: their own type).
        output_format: ``parquet`` (default), ``jsonl`` or ``csv``.
        single_file: merge the parts into one ``scores.<ext>`` at the end.
        top_k: classifiers: ``1`` gives ``label``/``score``; ``k`` or ``None`` (every label) ``labels``/``scores``.
        prefix, normalize: sentence encoders, as in :meth:`Predictor.embed`.
        backend, precision, truncation: as in :func:`mbert_edge.load`.
        workers, threads_per_worker: processes (Ray: actors) and threads each; default
            :func:`mbert_edge.batch.workers.default_split`.
        batch_size: texts per model call, as in :meth:`Predictor.predict`.
        shard_rows: rows per shard, the unit of work, memory and commit (Parquet: whole row groups).
        max_errors: stop when more rows than this have an error (default: never).
        restart: discard what ``output_dir`` holds of an earlier job and start over.
        engine: ``local`` (worker processes on this machine) or ``ray``.
        ray_address: the Ray cluster to join (default: a local instance, or ``RAY_ADDRESS``).
        quiet: no progress bar (a log line every 30 s instead).
    """
    pyarrow()
    start = time.monotonic()
    if engine not in ENGINES:
        raise BatchError(f"unknown engine {engine!r}: use local or ray")
    if output_format not in outputs.OUTPUT_FORMATS:
        raise BatchError(f"unknown output format {output_format!r}: use one of {', '.join(outputs.OUTPUT_FORMATS)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BatchError("batch_size must be a positive int")
    if max_errors is not None and max_errors < 0:
        raise BatchError("max_errors must be >= 0")
    n_workers, n_threads = resolve_split(workers, threads_per_worker)
    plan = _new_plan(
        Path(bundle), inputs, input_format, text_column, id_column, tuple(keep_columns), output_format, single_file,
        top_k, prefix, normalize, backend, precision, truncation, shard_rows,
    )  # fmt: skip
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _refuse_strangers(out)  # before the lock file is made: a foreign directory is left as it was
    with JobLock(out):
        plan = _plan_or_resume(plan, out, restart, inputs, shard_rows)
        return _run(plan, out, engine, ray_address, n_workers, n_threads, batch_size, max_errors, quiet, start)


def _new_plan(
    bundle: Path,
    inputs: Any,
    input_format: str | None,
    text_column: str,
    id_column: str | None,
    keep_columns: tuple[str, ...],
    output_format: str,
    single_file: bool,
    top_k: int | None,
    prefix: str | None,
    normalize: bool | None,
    backend: str,
    precision: str | None,
    truncation: bool,
    shard_rows: int,
) -> JobPlan:
    """The plan's options, fingerprint and schema, without its shards (scanning waits for the lock)."""
    import mbert_edge
    from mbert_edge import backends
    from mbert_edge.bundle import Bundle
    from mbert_edge.predictor import _SURROGATE

    b = Bundle.open(bundle, verify=False)
    _cls, entry = backends.choose(backend, b.manifest.model_files(), precision)
    task = b.manifest.task
    # the options are the job's, not a row's: refused here, before any row is read, as embed() and predict()
    # would refuse them (inside the job they would read as an error on every row of a finished job)
    if task == TEXT_CLASSIFICATION:
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise BatchError(f"top_k must be a positive int, or None for every label, not {top_k!r}")
    else:
        top_k = None
    if task == FEATURE_EXTRACTION:
        if prefix is not None and (not isinstance(prefix, str) or _SURROGATE.search(prefix)):
            raise BatchError(f"prefix must be a str of valid Unicode (use '' for none), not {prefix!r}")
        if normalize is not None and not isinstance(normalize, bool):
            raise BatchError(f"normalize must be True, False or None (the bundle's choice), not {normalize!r}")
    else:
        prefix, normalize = None, None
    if not isinstance(shard_rows, int) or shard_rows < 1:
        raise BatchError("shard_rows must be a positive int")
    files = list_inputs([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs), input_format)
    keep_types = check_columns(files, text_column, id_column, keep_columns)
    dim = b.manifest.embedding.dim if b.manifest.embedding else None
    try:
        schema = outputs.output_schema(task, top_k, dim, id_column, keep_types)
    except ValueError as exc:
        raise BatchError(str(exc)) from exc
    options = JobOptions(
        bundle=str(b.path.resolve()),
        backend=backend,
        precision=precision,
        model_file=entry.path,
        task=task,
        truncation=truncation,
        text_column=text_column,
        id_column=id_column,
        keep_columns=keep_columns,
        top_k=top_k,
        prefix=prefix,
        normalize=normalize,
        output_format=output_format,
        single_file=single_file,
        shard_rows=shard_rows,
    )
    fp = fingerprint(mbert_edge.__version__, options, bundle_digest(b.path), schema, files, files[0].format)
    return JobPlan(options, fp, [], encode_schema(schema), extra={"files": files})


def _plan_or_resume(plan: JobPlan, out: Path, restart: bool, inputs: Any, shard_rows: int) -> JobPlan:
    existing = JobPlan.read(out) if not restart else None
    if restart:
        removed = [p.name for p in commit.own_files(out) if p.name != commit.LOCK_NAME]
        for name in removed:
            (out / name).unlink(missing_ok=True)
        if removed:
            commit.fsync_dir(out)
            log.info("--restart: removed %d file(s) of the earlier job in %s", len(removed), out)
    if existing is not None:
        differences = diff(existing.fingerprint, plan.fingerprint)
        if differences:
            raise JobMismatchError(
                f"{out} holds a job planned with another bundle, other options or other inputs; run with --restart "
                "to discard it and start over, or choose another output directory. What differs:\n  "
                + "\n  ".join(differences),
                differences,
            )
        return existing
    _refuse_strangers(out)
    plan.shards = plan_shards(plan.extra["files"], shard_rows)
    plan.write(out)
    log.info("planned %d rows in %d shard(s) into %s", plan.total_rows, len(plan.shards), out)
    return plan


def _refuse_strangers(out: Path) -> None:
    """Refuse an output directory that holds files of something other than a scoring job."""
    if (out / commit.PLAN_NAME).exists():
        return
    own = {f.name for f in commit.own_files(out)}
    strangers = sorted(p.name for p in out.iterdir() if p.name not in own)
    if strangers:
        raise BatchError(
            f"output directory {out} is not empty and holds no scoring job ({', '.join(strangers[:5])}"
            f"{', ...' if len(strangers) > 5 else ''}); choose an empty or new directory"
        )


def _part_path(out: Path, plan: JobPlan, index: int) -> Path:
    return out / commit.part_name(index, outputs.EXTENSIONS[plan.options.output_format])


def _run(
    plan: JobPlan,
    out: Path,
    engine: str,
    ray_address: str | None,
    workers: int,
    threads: int,
    batch_size: int,
    max_errors: int | None,
    quiet: bool,
    start: float,
) -> ScoreReport:
    o = plan.options
    ext = outputs.EXTENSIONS[o.output_format]
    journal = commit.Journal(out)
    if (out / commit.SUCCESS_NAME).exists():  # finished earlier: tidy up what a kill during cleanup left
        removed = commit.remove_temps(out)
        if o.single_file:
            for s in plan.shards:
                _part_path(out, plan, s.index).unlink(missing_ok=True)
        return _report(plan, out, journal.read(), engine, workers, threads, 0, start, len(plan.shards), removed)
    removed = commit.remove_temps(out)
    if removed:
        log.info("removed %d temporary file(s) of an interrupted run", len(removed))
    journal.repair()
    entries = journal.read()
    done = {s.index for s in plan.shards if _part_path(out, plan, s.index).exists()}
    for s in plan.shards:  # a run killed after a rename, before its journal line: read the counts back
        if s.index in done and s.index not in entries:
            rows, errors, truncated = outputs.read_part_errors(_part_path(out, plan, s.index), o.output_format)
            if rows != s.rows:
                raise BatchError(f"part of shard {s.index} holds {rows} rows, {s.rows} planned; use --restart")
            entry = {"shard": s.index, "rows": rows, "errors": errors, "truncated": truncated, "recovered": True}
            journal.append(entry)
            entries[s.index] = entry
    entries = {k: v for k, v in entries.items() if k in done}
    pending = [s for s in plan.shards if s.index not in done]
    if pending and done:
        log.info("resuming: %d of %d shard(s) already committed", len(done), len(plan.shards))
    errors = sum(e["errors"] for e in entries.values())
    progress = Progress(plan.total_rows, sum(e["rows"] for e in entries.values()), quiet=quiet)
    if max_errors is not None and errors > max_errors and pending:
        raise TooManyErrorsError(
            f"the committed parts already hold {errors} rows with an error (max_errors {max_errors})"
        )

    def on_commit(stats: dict[str, Any]) -> None:
        nonlocal errors
        journal.append(stats)
        entries[stats["shard"]] = stats
        errors += stats["errors"]
        progress.update(stats["rows"])
        if max_errors is not None and errors > max_errors:
            raise TooManyErrorsError(
                f"{errors} rows had an error, more than max_errors={max_errors}; the {len(entries)} part(s) committed "
                "are kept: fix the input, or raise the limit, and run again to resume"
            )

    try:
        if engine == "ray":
            from mbert_edge.batch.engine_ray import run_ray

            run_ray(plan, pending, out, workers, threads, batch_size, on_commit, ray_address)
        else:
            from mbert_edge.batch.workers import run_local

            run_local(plan, pending, out, workers, threads, batch_size, on_commit)
    finally:
        progress.close()
    _finish(plan, out, entries, ext)
    return _report(plan, out, entries, engine, workers, threads, progress.rows_this_run, start, len(done), removed)


def _finish(plan: JobPlan, out: Path, entries: dict[int, dict[str, Any]], ext: str) -> None:
    """Every planned shard has its part: merge (single_file), write the manifest and the success marker."""
    import json

    o = plan.options
    missing = [s.index for s in plan.shards if not _part_path(out, plan, s.index).exists()]
    if missing:
        raise BatchError(f"shards {missing[:10]} have no part after the run; run again to resume")
    parts = [_part_path(out, plan, s.index) for s in plan.shards]
    if not parts:  # empty input: one empty part carries the schema
        empty = out / commit.part_name(0, ext)
        tmp = commit.tmp_path(empty)
        outputs.write_part(plan.schema.empty_table(), tmp, o.output_format, {"rows": 0, "errors": 0, "truncated": 0})
        commit.commit(tmp, empty)
        parts = [empty]
    files = [p.name for p in parts]
    if o.single_file:
        target = out / commit.single_name(ext)
        tmp = commit.tmp_path(target)
        try:
            outputs.merge_parts(parts, tmp, o.output_format, plan.schema)
            commit.commit(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        files = [target.name]
    manifest = {
        "rows": plan.total_rows,
        "files": files,
        "parts": [
            {
                "shard": s.index,
                "file": _part_path(out, plan, s.index).name,
                "first_row_id": s.first_row,
                "rows": s.rows,
                "errors": entries.get(s.index, {}).get("errors"),
                "input": s.file,
            }
            for s in plan.shards
        ],
        "schema": str(plan.schema),
        "fingerprint": plan.fingerprint,
    }
    commit.write_atomic(
        out / commit.MANIFEST_NAME, (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode()
    )
    success = {
        "rows": plan.total_rows,
        "errors": sum(e.get("errors") or 0 for e in entries.values()),
        "truncated": sum(e.get("truncated") or 0 for e in entries.values()),
        "files": files,
        "finished_at": round(time.time(), 3),
    }
    commit.write_atomic(out / commit.SUCCESS_NAME, (json.dumps(success) + "\n").encode())
    if o.single_file:
        for p in parts:
            p.unlink(missing_ok=True)
        commit.fsync_dir(out)


def _report(
    plan: JobPlan,
    out: Path,
    entries: dict[int, dict[str, Any]],
    engine: str,
    workers: int,
    threads: int,
    rows_this_run: int,
    start: float,
    resumed: int,
    removed: list[str],
) -> ScoreReport:
    import json

    wall = time.monotonic() - start
    errors = sum(e.get("errors") or 0 for e in entries.values())
    success = out / commit.SUCCESS_NAME
    files = json.loads(success.read_text())["files"] if success.exists() else []
    report = ScoreReport(
        output_dir=str(out),
        files=files,
        rows_in=plan.total_rows,
        scored=plan.total_rows - errors,
        errors=errors,
        truncated=sum(e.get("truncated") or 0 for e in entries.values()),
        shards=len(plan.shards),
        shards_resumed=resumed,
        rows_this_run=rows_this_run,
        wall_s=round(wall, 3),
        rows_per_s=round(rows_this_run / wall, 1) if wall > 0 else 0.0,
        engine=engine,
        workers=workers,
        threads_per_worker=threads,
        complete=success.exists(),
        truncated_unknown_shards=sum(1 for e in entries.values() if e.get("truncated") is None),
        temp_files_removed=removed,
    )
    log.debug("%s", report.summary())  # the CLI prints it; API callers have the report
    return report
