"""Benchmark results as a markdown table (with ratios to the best peer) and a PNG plot."""

from __future__ import annotations

from pathlib import Path

PEERS = ("pytorch-fp32", "pytorch-bf16", "optimum-int8", "openvino-int8")


def _best_peer(variants: dict, key: str, higher_is_better: bool = False) -> tuple[str, float] | None:
    vals = [(n, v[key]) for n, v in variants.items() if n in PEERS and v.get(key) is not None]
    if not vals:
        return None
    return max(vals, key=lambda x: x[1]) if higher_is_better else min(vals, key=lambda x: x[1])


def _flat(v: dict) -> dict:
    return {
        "b1s16": v["b1s16"]["median_ms"],
        "b1s16_p99": v["b1s16"]["p99_ms"],
        "b1s128": v["b1s128"]["median_ms"],
        "b1s128_p99": v["b1s128"]["p99_ms"],
        "b32s128": v["b32s128"]["seq_per_s"],
        "size": v["size_mb"],
        "rss": v.get("peak_rss_mb"),
        "cold": v.get("cold_start_s"),
        "cos": (v.get("cosine_to_fp32") or {}).get("mean"),
        "cos_min": (v.get("cosine_to_fp32") or {}).get("min"),
        "batchmates": (v.get("batch_invariance") or {}).get("max_abs_diff"),
    }


def _cell(name: str, v: dict, best: dict, key: str, p99: str | None = None) -> str:
    """One table cell: the value, its p99, and for our variants the ratio to the best peer."""
    text = f"{v[key]:.2f}" if key == "b1s16" else f"{v[key]:.1f}"
    if p99:
        text += f" ({v[p99]:.1f})"
    b = best.get(key)
    if b and name not in PEERS:
        ratio = (v[key] / b[1]) if key == "b32s128" else (b[1] / v[key])
        text += f" [{ratio:.2f}x]"
    return text


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# CPU benchmark",
        "",
        f"Machine: {m.get('cpu', '?')}, {m['cores']} cores, {results['threads']} threads; ISA: "
        f"{', '.join(m.get('isa', []))}.",
        f"Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}.",
        f"Started {results['started']}; load average before {tuple(round(x, 2) for x in results['load_before'])}, "
        f"after {tuple(round(x, 2) for x in results['load_after'])}.",
        "",
        "Latency: median (p99) ms of one call; throughput: sequences per second at batch 32 x 128 tokens; "
        "ratios in brackets: best peer's time / ours (above 1 means we are faster). Cold start: a fresh process "
        "loading the model and answering once; peak RSS: that process after one call of each shape. Alone vs in a "
        "batch (real weights): 24 sentences embedded one at a time and inside one batch of 96 multilingual "
        "sentences, largest difference of any embedding component (0: the result does not depend on the batch).",
    ]
    for model, res in results["models"].items():
        vs = {n: _flat(v) for n, v in res["variants"].items() if "b1s16" in v}
        best = {k: _best_peer(vs, k, higher_is_better=(k == "b32s128")) for k in ("b1s16", "b1s128", "b32s128")}
        lines += [
            "",
            f"## {model}",
            "",
            "| variant | b1 x s16 ms | b1 x s128 ms | b32 x s128 seq/s | size MB | peak RSS MB | cold start s "
            "| cosine to fp32 (mean / min) | alone vs in a batch (max abs diff) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for n, v in vs.items():
            cells = [
                _cell(n, v, best, "b1s16", "b1s16_p99"),
                _cell(n, v, best, "b1s128", "b1s128_p99"),
                _cell(n, v, best, "b32s128"),
            ]
            cos = f"{v['cos']:.4f} / {v['cos_min']:.4f}" if v["cos"] is not None else "-"
            rss = f"{v['rss']:.0f}" if v["rss"] else "-"
            cold = f"{v['cold']:.2f}" if v["cold"] else "-"
            name = f"**{n}**" if n.startswith("ours") else n
            mates = f"{v['batchmates']:.1e}" if v["batchmates"] is not None else "-"
            lines.append(f"| {name} | {' | '.join(cells)} | {v['size']:.0f} | {rss} | {cold} | {cos} | {mates} |")
        names = ", ".join(f"{k}: {b[0]}" for k, b in best.items() if b)
        lines.append(f"\nBest peer per shape: {names}.")
        for n, v in res["variants"].items():
            if "first_load" in v:
                f = v["first_load"]
                lines.append(
                    f"{n}: cold start and peak RSS with OpenVINO's compile cache filled (every load after the "
                    f"first); the first load compiles: {f['cold_start_s']:.2f} s, {f['peak_rss_mb']:.0f} MB."
                )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"])
    fig, axes = plt.subplots(len(models), 3, figsize=(15, 3.6 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        vs = {n: _flat(v) for n, v in results["models"][model]["variants"].items() if "b1s16" in v}
        names = list(vs)
        colors = ["#1f77b4" if n.startswith("ours") else "#999999" for n in names]
        for col, (key, label) in enumerate(
            [
                ("b1s128", "latency b1 x s128 (ms, lower is better)"),
                ("b32s128", "throughput b32 x s128 (seq/s, higher is better)"),
                ("size", "model size (MB)"),
            ]
        ):
            ax = axes[row][col]
            ax.barh(names, [vs[n][key] for n in names], color=colors)
            ax.set_title(f"{model}: {label}", fontsize=9)
            ax.tick_params(labelsize=8)
            ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
