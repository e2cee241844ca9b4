"""Quality only: each entry's retention per language against a reference, with its sampling error.

The quality half of ``benchmarks/students.py`` (same texts, same measures, same tables), without the timing,
sizes and cold starts that take most of that benchmark's hour: minutes for a few bundles. Each retention gets a
95% interval from the paired counts behind it (``export/distill/uncertainty.py``), and the kept languages are
sorted into above the issue's 97% target, under it, and too close to call with these texts: a figure a lookup
or a paragraph under 0.97 is told from a student that is really worse.

    python benchmarks/retention_intervals.py --teacher-checkpoint benchmarks/work/e5-small/checkpoint \\
        --bundle student6-int8=build/st10/dA-int8 --out benchmarks/results/retention-intervals-e5-small
    python benchmarks/retention_intervals.py --teacher-checkpoint build/topic/teacher \\
        --bundle s6-int8=build/topic/b-s6-int8-indomain --out benchmarks/results/retention-intervals-topic

The reference is the teacher in PyTorch fp32 (``--reference`` another entry). Writes ``<out>.json`` and
``<out>.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import students  # benchmarks/students.py: runners, quality measures and tables, machine and versions

from mbert_edge.manifest import FEATURE_EXTRACTION, TEXT_CLASSIFICATION


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (a subset of ``students.py``'s)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher-checkpoint", help="Hugging Face checkpoint run in PyTorch fp32 ('default': e5-small)")
    ap.add_argument("--bundle", action="append", default=[], metavar="NAME=PATH", help="a bundle (repeat)")
    ap.add_argument("--reference", default=None, help="entry whose outputs are the reference (default: pytorch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--languages", default="en,de,fr,es,ru,zh,ar,hi", help="kept languages")
    ap.add_argument("--other-languages", default="pt,ja,ko", help="languages not kept, measured too")
    ap.add_argument(
        "--parallel-limit",
        type=int,
        default=None,
        metavar="N",
        help="only the first N sentences of the parallel set (default: all; 100: the set before 2026-12-02)",
    )
    ap.add_argument("--out", type=Path, required=True, help="output path without suffix (.json and .md written)")
    args = ap.parse_args(argv)
    try:
        args.bundles = students.parse_bundles(args.bundle)
    except ValueError as exc:
        ap.error(str(exc))
    if not args.bundles and not args.teacher_checkpoint:
        ap.error("give --bundle NAME=PATH (and/or --teacher-checkpoint DIR)")
    names = [*args.bundles, *([students.PYTORCH] if args.teacher_checkpoint else [])]
    args.reference = args.reference or (students.PYTORCH if args.teacher_checkpoint else names[0])
    if args.reference not in names:
        ap.error(f"--reference {args.reference!r} is not an entry ({', '.join(names)})")
    return args


def quality(
    runners: dict[str, Any], reference: str, kept: list[str], others: list[str], parallel_limit: int | None = None
) -> dict[str, Any]:
    """The quality section of ``students.py`` for ``runners``, with the benchmark's default texts (the first
    ``parallel_limit`` parallel sentences, or all)."""
    settings = students.Settings(parallel_limit=parallel_limit)
    langs = kept + [x for x in others if x not in kept]
    task = runners[reference].task
    if task == FEATURE_EXTRACTION:
        from mbert_edge_export.distill.data import held_out_texts, parallel_set

        paragraphs = held_out_texts(langs, settings.per_language)
        return students.embedding_quality(
            runners, reference, langs, kept, paragraphs, parallel_set(settings.parallel_limit)
        )
    if task == TEXT_CLASSIFICATION:
        return students.topic_quality(runners, reference, langs, kept)
    raise SystemExit(f"error: no quality measure for task {task}")


def markdown(result: dict[str, Any]) -> str:
    """The tables of ``students.py``'s quality section, with the run's setup above them."""
    names = result["names"]
    lines = [
        f"# Retention with its sampling error: {result['out']}",
        "",
        f"Machine: {result['machine'].get('cpu', '?')}. "
        f"Versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}. Started {result['started']}.",
        f"Command: `{result['command']}`",
        "",
        "Intervals: 95%, from the paired counts (the entry and the reference on the same lookups or paragraphs; "
        "Dirichlet posterior with Jeffreys' prior, `export/distill/uncertainty.py`). A kept language is under "
        "the 0.97 target beyond sampling error when its whole interval is, and too close to call when 0.97 lies "
        "inside it.",
        "",
        *students.quality_markdown(result["quality"], names),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Measure, then write ``<out>.json`` and ``<out>.md``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("mbert_edge").setLevel(logging.ERROR)  # long held-out paragraphs are cut: expected
    with contextlib.suppress(ImportError):
        import transformers

        transformers.logging.set_verbosity_error()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    kept = [x for x in args.languages.split(",") if x]
    others = [x for x in args.other_languages.split(",") if x]
    with students.teacher_checkpoint(args.teacher_checkpoint) as ckpt:
        runners = students.load_runners(args.bundles, ckpt, args.threads)
        names = list(runners)
        q = quality(runners, args.reference, kept, others, args.parallel_limit)
    result = {
        **students.run_header(args.out, argv, started),
        "reference": args.reference,
        "names": names,
        "quality": q,
    }
    students.write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
