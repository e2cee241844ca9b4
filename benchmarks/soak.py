"""Soak: one predictor under a long random load; does its memory stay flat?

Texts of random length (1 to ~512 tokens, multilingual words of the dataset-build corpus) in calls of random
batch size (1 to 64), so that almost every call has a shape never seen before (the case where ONNX Runtime's
memory arena could grow). The process's resident memory is read every ``--every`` predictions.

    .venv/bin/python benchmarks/soak.py BUNDLE --predictions 1000000 --out benchmarks/results

Writes ``soak.json``, ``soak.md`` and ``soak.png`` (RSS against predictions). Target: after warm-up (the first
10% of the run) RSS stays within 5% of its warm-up level.

A million predictions of 1-512 tokens through a real e5-small bundle take days on 2 cores (the teacher's INT8
bundle runs ~16 predictions/s on this mix). ``--tiny-from CHECKPOINT`` soaks what the runtime does around the
model instead, at a million predictions: a 2-layer, 128-wide model with random weights, built with that
checkpoint's tokenizer, prefixes and pooling and exported with ``--quantize dynamic`` (the same graph kinds,
4-bit word table, fixed activation ranges), so that tokenization, batching, ONNX Runtime's arena and the
result arrays see every shape a real model would, at a fraction of the arithmetic:

    .venv/bin/python benchmarks/soak.py --tiny-from build/e5-s6 --predictions 1000000 --name soak-tiny
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import platform
import random
import subprocess
import sys
import time
from pathlib import Path


def rss_mb() -> float:
    """Resident memory of this process (VmRSS), in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def word_pool() -> list[str]:
    """Words of the corpus's held-out paragraphs in every language (no training text is needed here)."""
    from mbert_edge_export import corpus

    words: list[str] = []
    for lang in corpus.available_languages():
        for p in corpus.held_out_paragraphs(lang):
            words += p.text.split() if " " in p.text else [p.text[i : i + 4] for i in range(0, len(p.text), 4)]
    return words


def build_tiny(checkpoint: Path, out: Path) -> Path:
    """A 2-layer, 128-wide random-weight model with ``checkpoint``'s tokenizer and sentence-transformers files,
    exported to an INT8 bundle at ``out`` (reused when it exists)."""
    import shutil

    if (out / "manifest.json").is_file():
        return out
    import torch
    from transformers import BertConfig, BertModel

    ckpt = out.with_name(out.name + "-checkpoint")
    shutil.rmtree(ckpt, ignore_errors=True)
    shutil.copytree(
        checkpoint,
        ckpt,
        ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "mbert_edge_lineage.json", "distill_report.json"),
    )
    config = BertConfig.from_pretrained(checkpoint)
    config.update({"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512})
    torch.manual_seed(0)
    BertModel(config).save_pretrained(ckpt)
    exe = Path(sys.executable).with_name("mbert-edge")
    subprocess.run([str(exe), "export", str(ckpt), "-o", str(out), "--quantize", "dynamic", "--force"], check=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, nargs="?", help="the bundle to soak (or --tiny-from)")
    ap.add_argument("--tiny-from", type=Path, help="soak a 2-layer random model with this checkpoint's tokenizer")
    ap.add_argument("--tiny-dir", type=Path, default=Path("build/soak-tiny"), help="where --tiny-from builds it")
    ap.add_argument("--build-tiny-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--predictions", type=int, default=1_000_000)
    ap.add_argument("--every", type=int, default=10_000, help="read RSS every N predictions")
    ap.add_argument("--max-words", type=int, default=380, help="longest text in words (~512 e5 tokens)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--name", default="soak")
    args = ap.parse_args()
    if args.build_tiny_only:
        build_tiny(args.tiny_from, args.tiny_dir)
        return
    if args.tiny_from:  # built in a child process: torch must not count in this process's memory
        cmd = [sys.executable, __file__, "--tiny-from", str(args.tiny_from), "--tiny-dir", str(args.tiny_dir)]
        subprocess.run([*cmd, "--build-tiny-only"], check=True)
        args.bundle = args.tiny_dir
    elif args.bundle is None:
        ap.error("give a BUNDLE or --tiny-from CHECKPOINT")

    import mbert_edge

    logging.getLogger("mbert_edge").setLevel(logging.ERROR)  # texts past max_length are cut: expected here
    rng = random.Random(args.seed)
    words = word_pool()
    before_load = rss_mb()  # Python, numpy, the word pool that generates the texts
    model = mbert_edge.load(args.bundle, threads=args.threads)
    embed = model.task == "feature-extraction"
    series: list[tuple[int, float, float]] = [(0, rss_mb(), 0.0)]
    done, calls, next_mark = 0, 0, args.every
    start = time.perf_counter()
    while done < args.predictions:
        batch = min(rng.randint(1, 64), args.predictions - done)
        texts = []
        for _ in range(batch):
            n = rng.randint(1, args.max_words)
            i = rng.randrange(len(words) - n) if len(words) > n else 0
            texts.append(" ".join(words[i : i + n]) or "x")
        if embed:
            model.embed(texts)
        else:
            model.predict(texts)
        done += batch
        calls += 1
        if done >= next_mark or done == args.predictions:
            series.append((done, rss_mb(), time.perf_counter() - start))
            print(f"{done:>9} predictions  {calls:>7} calls  RSS {series[-1][1]:7.1f} MB", flush=True)
            next_mark += args.every
    warm = next(r for d, r, _ in series if d >= args.predictions * 0.1)
    after = [r for d, r, _ in series if d >= args.predictions * 0.1]
    result = {
        "bundle": str(args.bundle),
        "model_file": model.model_file.path,
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "versions": {m: importlib.metadata.version(m) for m in ("mbert-edge", "onnxruntime", "tokenizers", "numpy")},
        "predictions": done,
        "calls": calls,
        "max_words": args.max_words,
        "seconds": round(time.perf_counter() - start, 1),
        "rss_before_load_mb": round(before_load, 1),
        "rss_after_load_mb": series[0][1],
        "rss_after_warmup_mb": warm,
        "rss_max_after_warmup_mb": max(after),
        "rss_final_mb": series[-1][1],
        "growth_after_warmup": round(max(after) / warm - 1, 4),
        "series": series,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    src = json.loads((args.bundle / "manifest.json").read_text()).get("source", {})
    result["model"] = {k: src.get(k) for k in ("name_or_path", "num_hidden_layers", "hidden_size", "vocab_size")}
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    (args.out / f"{args.name}.md").write_text(
        f"# Soak: {args.bundle.name}\n\nModel: {result['model']['num_hidden_layers']} layers, hidden "
        f"{result['model']['hidden_size']}, vocabulary {result['model']['vocab_size']} ({model.model_file.path}); "
        f"{result['machine']['cpu']}, Python {result['machine']['python']}, {versions}.\n\n"
        f"{done:,} predictions in {calls:,} calls (texts of 1-{args.max_words} words, "
        f"batches of 1-64), {result['seconds']} s.\n\nRSS before load {before_load:.0f} MB (Python and the texts' word "
        f"pool), after load {series[0][1]:.0f} MB, after warm-up "
        f"(10% of the run) {warm:.0f} MB, highest after warm-up {max(after):.0f} MB "
        f"({result['growth_after_warmup']:+.1%}), final {series[-1][1]:.0f} MB.\n"
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot([d for d, _, _ in series], [r for _, r, _ in series], marker=".")
        ax.axhline(warm * 1.05, color="grey", linestyle="--", label="warm-up + 5%")
        ax.set_xlabel("predictions")
        ax.set_ylabel("RSS (MB)")
        ax.set_title(f"soak: {args.bundle.name}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out / f"{args.name}.png", dpi=120)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    print(json.dumps({k: v for k, v in result.items() if k != "series"}, indent=2))


if __name__ == "__main__":
    main()
