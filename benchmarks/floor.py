"""The INT8 matmul floor: how fast can any mBERT-base INT8 model be on this machine with today's kernels?

Builds mBERT-base's 72 weight matmuls (12 layers of QKV 768x2304, output 768x768, FFN 768x3072 and
3072x768; distinct int8 per-channel weights per layer, so they stream from memory as in the real model) as
a chain with nothing else in it: no attention scores, softmax, LayerNorm, GELU or embeddings. The chain runs
with each runtime's fastest int8 matmul: ONNX Runtime's DynamicQuantizeMatMul (what our default bundle
uses) and OpenVINO's int8 FullyConnected (oneDNN, what NNCF's model uses; fed a QDQ graph). Any INT8 model of
this architecture does at least this work, so the faster chain is a lower bound on its latency here.

Timed in alternating rounds in one process next to the best peer (OpenVINO + NNCF on the full model, built
by ``make bench``), and reported as ratios to it: the issue's target is at most 0.8x the best peer's time
(1.25x faster). A floor above 0.8x means the target cannot be met at that shape with these kernels, whatever
the graph around them.

    .venv-bench/bin/python benchmarks/floor.py --work benchmarks/work --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run
import variants

HIDDEN, FFN, LAYERS = 768, 3072, 12
# (K, N) of one layer's weight matmuls, in order: QKV, attention output, FFN in, FFN out.
LAYER_MATMULS = ((HIDDEN, 3 * HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, FFN), (FFN, HIDDEN))


def int8_macs_per_token() -> int:
    """Multiply-accumulates of the weight matmuls for one token (the chain's work)."""
    return LAYERS * sum(k * n for k, n in LAYER_MATMULS)


def tops(ms: float, shape: str) -> float:
    """Int8 TOP/s of the weight matmuls when one call at ``shape`` takes ``ms``."""
    batch, seq = run.SHAPES[shape]
    return 2 * int8_macs_per_token() * batch * seq / (ms * 1e-3) / 1e12


def _chain(path: Path, fmt: str, seed: int = 0) -> Path:
    """Write the weight-matmul chain as ONNX over input ``x`` [batch, seq, 768]: ``fmt="dynamic"`` as
    com.microsoft DynamicQuantizeMatMul (ONNX Runtime), ``fmt="qdq"`` as QuantizeLinear/DequantizeLinear
    around a MatMul (OpenVINO makes it an int8 FullyConnected)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def quantized(src: str, name: str) -> str:
        """``src`` through QuantizeLinear + DequantizeLinear (per-tensor u8), for the QDQ format."""
        scale, zero = const(f"{name}.s", np.array(0.05, np.float32)), const(f"{name}.z", np.array(128, np.uint8))
        nodes.append(helper.make_node("QuantizeLinear", [src, scale, zero], [f"{name}.q"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}.q", scale, zero], [f"{name}.dq"]))
        return f"{name}.dq"

    def weight_matmul(src: str, name: str, k: int, n: int) -> str:
        w = const(f"{name}.w", rng.integers(-127, 128, (k, n), dtype=np.int8))
        ws = const(f"{name}.ws", rng.uniform(1e-3, 2e-3, n).astype(np.float32))
        wz = const(f"{name}.wz", np.zeros(n, np.int8))
        if fmt == "dynamic":
            nodes.append(helper.make_node("DynamicQuantizeMatMul", [src, w, ws, wz], [name], domain="com.microsoft"))
        else:
            nodes.append(helper.make_node("DequantizeLinear", [w, ws, wz], [f"{name}.wd"], axis=1))
            nodes.append(helper.make_node("MatMul", [quantized(src, f"{name}.x"), f"{name}.wd"], [name]))
        return name

    starts, ends = const("starts", np.array([0], np.int64)), const("ends", np.array([HIDDEN], np.int64))
    axes = const("axes", np.array([2], np.int64))
    h = "x"
    for layer in range(LAYERS):
        p = f"l{layer}"
        qkv = weight_matmul(h, f"{p}.qkv", HIDDEN, 3 * HIDDEN)
        # The attention output projection reads a 768-wide slice of QKV (a cheap copy) where the model
        # reads attention's context: the chain has no attention scores, softmax or context matmuls.
        nodes.append(helper.make_node("Slice", [qkv, starts, ends, axes], [f"{p}.c"]))
        attn = weight_matmul(f"{p}.c", f"{p}.o", HIDDEN, HIDDEN)
        ffn = weight_matmul(weight_matmul(attn, f"{p}.ffn_in", HIDDEN, FFN), f"{p}.ffn_out", FFN, HIDDEN)
        h = f"{p}.h"
        nodes.append(helper.make_node("Add", [attn, ffn], [h]))  # the residual keeps both live
    graph = helper.make_graph(
        nodes,
        "int8_matmul_floor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def outside_fc_share(model: Path, threads: int, shape_feeds: dict[str, variants.Feeds]) -> dict[str, float]:
    """Share of the peer's per-op profiled time spent outside its FullyConnected (int8 weight matmul) nodes:
    attention, softmax, LayerNorm, GELU, embeddings, reorders. OpenVINO's PERF_COUNT, median of 3 calls."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(model), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    names = [i.get_any_name() for i in compiled.inputs]
    shares = {}
    for shape, feeds in shape_feeds.items():
        request.infer({k: feeds[k] for k in names})
        calls = []
        for _ in range(3):
            request.infer({k: feeds[k] for k in names})
            total = fc = 0.0
            for node in request.profiling_info:
                seconds = node.real_time.total_seconds()
                total += seconds
                fc += seconds if node.node_type.startswith("FullyConnected") else 0.0
            calls.append(1 - fc / total)
        shares[shape] = float(np.median(calls))
    return shares


def vnni_peak(cores: int) -> float | None:
    """The CPU's int8 peak in ops/s: ``kernels/vnni_peak.c`` built with the system C compiler and run on
    ``cores`` cores at once. None where there is no compiler or no AVX-512 VNNI."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    with open("/proc/cpuinfo") as f:
        has_vnni = "avx512_vnni" in f.read()
    if compiler is None or not has_vnni:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "vnni_peak"
        source = Path(__file__).resolve().parent / "kernels" / "vnni_peak.c"
        flags = ["-O2", "-mavx512f", "-mavx512bw", "-mavx512vnni"]
        subprocess.run([compiler, *flags, "-o", str(binary), str(source)], check=True)
        procs = [subprocess.Popen([str(binary)], stdout=subprocess.PIPE, text=True) for _ in range(cores)]
        return sum(float(p.communicate()[0].split()[0]) for p in procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    peer_model = args.work / "mbert-base" / "openvino-int8" / "model.xml"
    if not peer_model.exists():
        sys.exit(f"{peer_model} is missing: run `make bench` first (it builds the peers' models)")
    load_avg_before = [round(x, 2) for x in os.getloadavg()]

    with tempfile.TemporaryDirectory() as tmp:
        runners = {
            "peer: openvino-int8 (full model)": variants.load("openvino-int8", peer_model, args.threads),
            "floor: onnxruntime DynamicQuantizeMatMul": variants.ort_runner(
                _chain(Path(tmp) / "dyn.onnx", "dynamic"), args.threads
            ),
            "floor: openvino int8 FC": variants.openvino_runner(_chain(Path(tmp) / "qdq.onnx", "qdq"), args.threads),
        }
    times: dict[str, dict[str, list[float]]] = {name: {s: [] for s in run.SHAPES} for name in runners}
    inputs = {}
    for shape, (batch, seq) in run.SHAPES.items():
        model_feeds = run.feeds(batch, seq, 119547)
        x = np.random.default_rng(1).standard_normal((batch, seq, HIDDEN)).astype(np.float32)
        inputs[shape] = {"model": model_feeds, "chain": {"x": x}}
    for name, runner in runners.items():  # warm-up: first calls prepare kernels for each shape
        for shape in run.SHAPES:
            runner(inputs[shape]["model" if name.startswith("peer") else "chain"])
    for _ in range(args.rounds):
        order = list(runners)
        random.shuffle(order)
        for name in order:
            for shape in run.SHAPES:
                feeds = inputs[shape]["model" if name.startswith("peer") else "chain"]
                for _ in range(run.REPS[shape]):
                    start = time.perf_counter()
                    runners[name](feeds)
                    times[name][shape].append(time.perf_counter() - start)

    peer = next(n for n in runners if n.startswith("peer"))
    results = {
        "machine": run.machine(),
        "versions": run.versions(),
        "load_average": {"before": load_avg_before, "after": [round(x, 2) for x in os.getloadavg()]},
        "int8_macs_per_token": int8_macs_per_token(),
        "median_ms": {n: {s: float(np.median(t) * 1e3) for s, t in v.items()} for n, v in times.items()},
    }
    lines = [
        "# INT8 matmul floor (mBERT-base)",
        "",
        f"Machine: {results['machine'].get('cpu')}, {results['machine']['cores']} cores; "
        f"ISA: {', '.join(results['machine'].get('isa', []))}.",
        f"onnxruntime {results['versions'].get('onnxruntime')}, openvino {results['versions'].get('openvino')}; "
        f"load average before {load_avg_before}, after {results['load_average']['after']}.",
        "",
        "Median ms per call (ratio to the best peer's full model; the target is at most 0.80x). "
        "TOP/s: 2 x int8 MACs of the weight matmuls / time.",
        "",
        "| | " + " | ".join(run.SHAPES) + " |",
        "|---|" + "---|" * len(run.SHAPES),
    ]
    for name in runners:
        cells = []
        for shape in run.SHAPES:
            ms = results["median_ms"][name][shape]
            ratio = ms / results["median_ms"][peer][shape]
            cells.append(f"{ms:.2f} ({ratio:.2f}x, {tops(ms, shape):.2f} TOP/s)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    best_floor = {
        s: min(results["median_ms"][n][s] for n in runners if n.startswith("floor")) / results["median_ms"][peer][s]
        for s in run.SHAPES
    }
    results["best_floor_to_peer"] = best_floor
    outside = outside_fc_share(peer_model, args.threads, {s: inputs[s]["model"] for s in run.SHAPES})
    results["peer_outside_fc_share"] = outside
    results["best_reachable_speedup"] = {s: 1 / (best_floor[s] + outside[s]) for s in run.SHAPES}
    peak = vnni_peak(args.threads)
    results["vnni_peak_tops"] = peak / 1e12 if peak else None
    lines += [
        "",
        "Best floor / best peer: "
        + ", ".join(f"{s} {r:.2f}x" for s, r in best_floor.items())
        + " (the 1.25x target needs at most 0.80x, and the rest of the model still to run).",
        "Share of the peer's time outside its int8 FullyConnected nodes (OpenVINO per-op profile): "
        + ", ".join(f"{s} {outside[s]:.0%}" for s in run.SHAPES)
        + ".",
        "Reachable with these kernels if the rest ran as fast as in the peer (1 / (floor + that share)): "
        + ", ".join(f"{s} {results['best_reachable_speedup'][s]:.2f}x" for s in run.SHAPES)
        + " the peer's speed.",
    ]
    if peak:
        best_tops = max(tops(results["median_ms"][n]["b32s128"], "b32s128") for n in runners if n.startswith("floor"))
        lines.append(
            f"The CPU's int8 peak (AVX-512 VNNI vpdpbusd on {args.threads} cores, kernels/vnni_peak.c): "
            f"{peak / 1e12:.2f} TOP/s; the best library kernel above reaches {best_tops / (peak / 1e12):.0%} "
            "of it at b32s128."
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "floor.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "floor.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
