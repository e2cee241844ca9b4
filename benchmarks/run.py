"""Side-by-side CPU benchmark: our bundles against PyTorch, Optimum and OpenVINO on the same machine.

Runs in the benchmark venv (.venv-bench: the peers' pinned versions) after benchmarks/prepare.py built our
bundles. All variants are loaded in one process and timed in alternating rounds (every round visits every
variant in a new random order), so drift on a shared machine hits all of them alike; ratios to the best
peer are reported next to the absolute times. Cold start and peak RSS come from a fresh process per variant.

    make bench            # prepare + run + report
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_files
import report
import variants

SHAPES = {"b1s16": (1, 16), "b1s128": (1, 128), "b32s128": (32, 128)}
REPS = {"b1s16": 10, "b1s128": 5, "b32s128": 1}  # per round
BATCHMATE_CHECK = 24  # sentences embedded alone and inside a batch of every benchmark sentence


def feeds(batch: int, seq: int, vocab: int, seed: int = 0) -> variants.Feeds:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, (batch, seq)).astype(np.int64)
    ids[:, 0], ids[:, -1] = 0, 2
    return {
        "input_ids": ids,
        "attention_mask": np.ones((batch, seq), np.int64),
        "token_type_ids": np.zeros((batch, seq), np.int64),
    }


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count()}
    with open("/proc/cpuinfo") as f:
        text = f.read()
    for line in text.splitlines():
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            info["isa"] = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni", "avx2", "fma")))
            break
    return info


def write_results(prefix: Path, result: dict, page: str) -> None:
    """Write ``PREFIX.json`` (``result``) and ``PREFIX.md`` (``page``), creating the folder, and print the page."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    prefix.with_suffix(".md").write_text(page)
    print(page)


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for dist in (
        "mbert-edge",
        "onnxruntime",
        "torch",
        "transformers",
        "optimum",
        "optimum-onnx",
        "openvino",
        "nncf",
        "numpy",
    ):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


def texts(n: int) -> list[str]:
    from mbert_edge_export.quantize.calibration import corpus_sample

    return corpus_sample(n, seed=7).texts


def text_feeds(model_dir: Path, sentences: list[str], batch: int = 16) -> list[variants.Feeds]:
    """The fp32 bundle's feeds for ``sentences`` (:func:`peer_files.bundle_feeds`)."""
    return peer_files.bundle_feeds(model_dir / "bundle-fp32", sentences, batch)


def pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean-pooled, L2-normalized sentence embeddings, exactly as the runtime computes them."""
    from mbert_edge.tasks.embedding import l2_normalize, pool

    return l2_normalize(pool(hidden, mask, "mean"))


def worker(name: str, path: Path, vocab: int, threads: int) -> None:
    """Fresh process: import + load + first prediction (cold start), then every shape once (peak RSS)."""
    start = time.perf_counter()
    run = variants.load(name, path, threads)
    run(feeds(1, 16, vocab))
    cold = time.perf_counter() - start
    for batch, seq in SHAPES.values():
        run(feeds(batch, seq, vocab))
    # VmHWM, not ru_maxrss: Linux carries the parent's ru_maxrss over fork+exec into the child
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    print(json.dumps({"cold_start_s": cold, "peak_rss_mb": rss}))


def bench_model(model: str, work: Path, names: list[str], rounds: int, threads: int, real: bool) -> dict:
    model_dir = work / model
    sentences = texts(96)
    calib = text_feeds(model_dir, sentences[:64])
    vocab = int(
        json.loads((Path((model_dir / "checkpoint.txt").read_text().strip()) / "config.json").read_text())["vocab_size"]
    )
    result: dict = {"variants": {}}
    runners = {}
    for name in names:
        path = variants.artifact(name, model_dir, calib)
        runners[name] = variants.load(name, path, threads)
        result["variants"][name] = {"size_mb": variants.size_bytes(name, path) / 1e6, "path": str(path)}
        print(f"  loaded {name}", flush=True)
    shape_feeds = {s: feeds(b, q, vocab) for s, (b, q) in SHAPES.items()}
    times: dict = {n: {s: [] for s in SHAPES} for n in names}
    for n in names:  # warm-up
        for f in shape_feeds.values():
            runners[n](f)
    rng = random.Random(0)
    for r in range(rounds):
        order = names[:]
        rng.shuffle(order)
        for n in order:
            for s, f in shape_feeds.items():
                for _ in range(REPS[s]):
                    t0 = time.perf_counter()
                    runners[n](f)
                    times[n][s].append(time.perf_counter() - t0)
        print(f"  round {r + 1}/{rounds}", flush=True)
    for n in names:
        v = result["variants"][n]
        for s, ts in times[n].items():
            ms = np.asarray(ts) * 1000
            v[s] = {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}
        v["b32s128"]["seq_per_s"] = 32000 / v["b32s128"]["median_ms"]
    if real:  # fidelity to PyTorch fp32 on multilingual text
        held = text_feeds(model_dir, sentences[64:])
        ref = [pooled(runners["pytorch-fp32"](f), f["attention_mask"]) for f in held]
        for n in names:
            got = [pooled(runners[n](f), f["attention_mask"]) for f in held]
            cos = np.concatenate([(a * b).sum(1) for a, b in zip(ref, got, strict=True)])
            result["variants"][n]["cosine_to_fp32"] = {
                "mean": float(cos.mean()),
                "min": float(cos.min()),
                "texts": int(cos.size),
            }
        # batch invariance: a sentence alone against the same sentence inside one batch of all 96
        alone = [text_feeds(model_dir, [s], batch=1)[0] for s in sentences[:BATCHMATE_CHECK]]
        together = text_feeds(model_dir, sentences, batch=len(sentences))[0]
        for n in names:
            a = np.concatenate([pooled(runners[n](f), f["attention_mask"]) for f in alone])
            b = pooled(runners[n](together), together["attention_mask"])[:BATCHMATE_CHECK]
            result["variants"][n]["batch_invariance"] = {
                "max_abs_diff": float(np.abs(a - b).max()),
                "min_cosine": float((a * b).sum(1).min()),
                "texts": BATCHMATE_CHECK,
                "batch": len(sentences),
            }
    del runners
    for n in names:
        args = [sys.executable, __file__, "--worker", n, result["variants"][n]["path"], str(vocab), str(threads)]
        out = subprocess.run(args, capture_output=True, text=True)
        if out.returncode == 0:
            result["variants"][n].update(json.loads(out.stdout.strip().splitlines()[-1]))
        else:
            result["variants"][n]["worker_error"] = out.stderr[-500:]
        if n.startswith("ours") and n.endswith("-openvino"):
            # the numbers above load with OpenVINO's compile cache filled by this run; a first load ever
            # compiles the model: measured here with the cache off
            env = {**os.environ, "MBERT_EDGE_OPENVINO_CACHE": "off"}
            out = subprocess.run(args, capture_output=True, text=True, env=env)
            if out.returncode == 0:
                first = json.loads(out.stdout.strip().splitlines()[-1])
                result["variants"][n]["first_load"] = first
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--models", default="mbert-base,e5-small,minilm")
    ap.add_argument("--variants", default=",".join(variants.ALL))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--worker", nargs=4, metavar=("NAME", "PATH", "VOCAB", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    # our OpenVINO variant's compile cache lives with the benchmark's other artifacts
    os.environ.setdefault("MBERT_EDGE_OPENVINO_CACHE", str((args.work / "openvino-cache").resolve()))
    if args.worker:
        name, path, vocab, threads = args.worker
        worker(name, Path(path), int(vocab), int(threads))
        return
    results = {
        "machine": machine(),
        "versions": versions(),
        "threads": args.threads,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_before": os.getloadavg(),
        "models": {},
    }
    for model in args.models.split(","):
        print(f"{model}:", flush=True)
        results["models"][model] = bench_model(
            model, args.work, args.variants.split(","), args.rounds, args.threads, real=model != "mbert-base"
        )
        results["models"][model]["load_after"] = os.getloadavg()
    results["load_after"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu.json").write_text(json.dumps(results, indent=2))
    (args.out / "cpu.md").write_text(report.markdown(results))
    report.plot(results, args.out / "cpu.png")
    print(report.markdown(results))
    print(f"wrote {args.out}/cpu.json, cpu.md and cpu.png")


if __name__ == "__main__":
    main()
