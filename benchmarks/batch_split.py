"""Batch scoring: worker processes x threads per worker, measured side by side on real multilingual sentences.

    .venv/bin/python benchmarks/batch_split.py BUNDLE --texts 3000 --out benchmarks/results

Sentences of the dataset-build corpus (every language, round robin), written once as JSONL; then, alternating
so that drift on a shared machine hits every setting alike, ``mbert_edge.batch.score`` with each split, and
the bundle's raw ``embed()``/``predict()`` on the same texts in memory (one process, all threads) as the
ceiling. Reports rows/s (median of the repeats) as JSON and Markdown with the machine and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def corpus_sentences(n: int) -> list[str]:
    from mbert_edge_export import corpus

    per_lang = {lang: [s for p in corpus.paragraphs(lang) for s in corpus.sentences(p.text)] for lang in
                corpus.available_languages()}  # fmt: skip
    out: list[str] = []
    i = 0
    while len(out) < n:
        added = False
        for sents in per_lang.values():
            if i < len(sents) and len(out) < n:
                out.append(sents[i])
                added = True
        if not added:
            break
        i += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--texts", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--splits", default="1x2,2x1", help="comma list of WORKERSxTHREADS")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()

    import mbert_edge
    from mbert_edge.batch import score

    texts = corpus_sentences(args.texts)
    work = Path(tempfile.mkdtemp(prefix="batch-split-"))
    src = work / "texts.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    splits = [tuple(int(x) for x in s.split("x")) for s in args.splits.split(",")]
    cpus = len(os.sched_getaffinity(0))
    model = mbert_edge.load(args.bundle, threads=cpus)
    raw = model.embed if model.task == "feature-extraction" else model.predict
    times: dict[str, list[float]] = {f"{w}x{t}": [] for w, t in splits}
    times["raw in-memory (1 process)"] = []
    for rep in range(args.repeats):
        for w, t in splits:
            out = work / f"out-{w}x{t}-{rep}"
            report = score(args.bundle, src, out, workers=w, threads_per_worker=t, shard_rows=1000, quiet=True)
            assert report.rows_in == len(texts) and report.errors == 0
            times[f"{w}x{t}"].append(report.wall_s)
            shutil.rmtree(out)
        start = time.perf_counter()
        raw(texts)
        times["raw in-memory (1 process)"].append(time.perf_counter() - start)
    rows = {k: round(len(texts) / statistics.median(v), 1) for k, v in times.items()}
    result = {
        "bundle": str(args.bundle),
        "model_file": model.model_file.path,
        "texts": len(texts),
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
        "repeats": args.repeats,
        "rows_per_s_median": rows,
        "wall_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "machine": {"cpus": cpus, "platform": platform.platform(), "processor": platform.processor()},
        "versions": {
            "python": sys.version.split()[0],
            "mbert_edge": mbert_edge.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
            "pyarrow": __import__("pyarrow").__version__,
        },
        "note": "score() wall time includes starting the workers and loading the bundle in each",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batch-split.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Batch scoring: processes x threads ({len(texts)} sentences, {model.model_file.path})", "",
          "| setting | rows/s (median) | wall s per run |", "|---|---|---|"]  # fmt: skip
    md += [f"| {k} | {rows[k]} | {', '.join(f'{x:.1f}' for x in times[k])} |" for k in times]
    md += ["", f"Machine: {cpus} CPUs, {platform.platform()}; versions {json.dumps(result['versions'])}.", ""]
    (args.out / "batch-split.md").write_text("\n".join(md))
    print("\n".join(md))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
