"""The ``mbert-edge score`` subcommand: its parser (:func:`add_parser`) and its command (:func:`run`).

Kept light: argparse only at import time; the job's modules (and pyarrow) load when the command runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``score`` to the ``mbert-edge`` subcommands."""
    s = sub.add_parser(
        "score",
        help="score large JSONL/CSV/Parquet inputs into a resumable output directory (needs mbert-edge[batch])",
        description="Score every row of INPUT (files or directories; JSONL, CSV or Parquet) with BUNDLE into "
        "OUT_DIR, one part file per shard, exactly once. Run the same command again to resume after a crash; "
        "a changed bundle, options or inputs are refused (--restart starts over). See docs/batch-scoring.md.",
    )
    s.add_argument("bundle", type=Path, metavar="BUNDLE")
    s.add_argument("inputs", nargs="+", metavar="INPUT", help="input files or directories (one format per job)")
    s.add_argument("-o", "--output", required=True, type=Path, metavar="OUT_DIR", help="output directory")
    s.add_argument("--format", choices=("jsonl", "csv", "parquet"), help="input format (default: from the extension)")
    s.add_argument("--text-column", default="text", help="the column with the text (default: text)")
    s.add_argument("--id-column", help="a column copied next to row_id")
    s.add_argument("--keep-columns", metavar="COLS", help="more columns to copy unchanged (comma list)")
    s.add_argument(
        "--output-format", choices=("parquet", "jsonl", "csv"), default="parquet", help="part format (default parquet)"
    )
    s.add_argument("--single-file", action="store_true", help="merge the parts into OUT_DIR/scores.<ext> at the end")
    s.add_argument("--top-k", type=int, default=1, help="labels per row for classifiers (0: all; default 1)")
    s.add_argument("--prefix", help="embedding prefix (default: the model's; '' for none)")
    s.add_argument("--backend", default="auto", help="auto (default), onnxruntime/cpu, openvino")
    s.add_argument("--precision", help="model file precision to run (default: the backend's favourite)")
    s.add_argument("--no-truncation", action="store_true", help="texts over max_length get an error instead")
    s.add_argument("--workers", type=int, help="worker processes (Ray: actors); default: one per CPU")
    s.add_argument("--threads-per-worker", type=int, help="ONNX Runtime threads per worker (default 1)")
    s.add_argument("--batch-size", type=int, default=32, help="texts per model call (default 32)")
    s.add_argument("--shard-rows", type=int, default=10_000, help="rows per shard (default 10000)")
    s.add_argument("--max-errors", type=int, metavar="N", help="stop when more than N rows have an error")
    s.add_argument("--restart", action="store_true", help="discard an earlier job in OUT_DIR and start over")
    s.add_argument("--engine", choices=("local", "ray"), default="local", help="local processes (default) or Ray")
    s.add_argument("--ray-address", metavar="ADDRESS", help="Ray cluster to join (default: a local instance)")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument("--no-progress", action="store_true", help="no progress bar (a log line every 30 s instead)")
    return s


def run(args: argparse.Namespace) -> int:
    """Run ``mbert-edge score``; print the summary (or the JSON report). Errors propagate as MbertEdgeError."""
    from mbert_edge.batch import score

    keep = [c.strip() for c in args.keep_columns.split(",") if c.strip()] if args.keep_columns else []
    report = score(
        args.bundle,
        [str(p) for p in args.inputs],
        args.output,
        input_format=args.format,
        text_column=args.text_column,
        id_column=args.id_column,
        keep_columns=keep,
        output_format=args.output_format,
        single_file=args.single_file,
        top_k=args.top_k or None,
        prefix=args.prefix,
        backend=args.backend,
        precision=args.precision,
        truncation=not args.no_truncation,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        batch_size=args.batch_size,
        shard_rows=args.shard_rows,
        max_errors=args.max_errors,
        restart=args.restart,
        engine=args.engine,
        ray_address=args.ray_address,
        quiet=args.no_progress or getattr(args, "quiet", False),
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0
