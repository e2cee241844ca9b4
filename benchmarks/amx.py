"""Does ONNX Runtime's AMX INT8 kernel speed up our bundles? The same bundles with and without it, in one run.

On Linux a process must ask the kernel for AMX tile state (``arch_prctl(ARCH_REQ_XCOMP_PERM,
XFEATURE_XTILEDATA)``) before its first tile instruction; ONNX Runtime's MLAS asks when it starts and, when
the kernel agrees, runs its U8S8 GEMMs (our dynamic INT8 graphs) on AMX tiles, falling back to AVX-512 VNNI
for small ones. This script runs each bundle in two kinds of fresh process: as is, and with a small
``LD_PRELOAD`` shim (compiled here with ``cc``) that refuses that one request, so that MLAS keeps to its
AVX-512 kernels. Nothing else differs: same wheel, same machine, same texts.

    .venv/bin/python benchmarks/amx.py --bundle teacher-int8=bundles/e5-small-int8 \\
        --bundle student6-int8=build/s6-int8 --rounds 6 --out benchmarks/results/amx-e5-small

Each round starts one child per mode in a new random order; a child loads every bundle (2 threads), makes one
untimed call per shape and then times b1 x s16 (10 calls), b1 x s128 (5) and b32 x s128 (1) for each bundle,
in the order of ``benchmarks/students.py`` (same texts: held-out corpus paragraphs cut to exactly 16 / 128
tokens). Each child also reports whether the kernel granted it AMX tile state (``ARCH_GET_XCOMP_PERM``), so a
table never credits AMX to a run that could not use it. Latency is the median over all rounds; the ratio is
the no-AMX time / the AMX time (above 1: AMX is faster). Needs a CPU with ``amx_int8`` and a C compiler.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import students  # benchmarks/students.py: runners, texts, timing, machine and versions

log = logging.getLogger("amx")

SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/syscall.h>
/* Refuse arch_prctl(ARCH_REQ_XCOMP_PERM = 0x1023, ...): no AMX tile state for this process. */
long syscall(long number, ...) {
    static long (*real)(long, ...) = 0;
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    va_list ap;
    va_start(ap, number);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_arch_prctl && a[0] == 0x1023) { errno = EPERM; return -1; }
    return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
"""

ARCH_GET_XCOMP_PERM = 0x1022
XFEATURE_XTILEDATA = 18
SYS_ARCH_PRCTL = 158  # x86_64
MODES = ("amx", "no-amx")


def cpu_has_amx_int8() -> bool:
    """Whether ``/proc/cpuinfo`` lists ``amx_int8``."""
    try:
        return " amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def build_shim(directory: Path) -> Path:
    """Compile the ``LD_PRELOAD`` shim into ``directory``; a clear error without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("error: no C compiler (cc or gcc) to build the no-AMX shim; install gcc")
    src, lib = directory / "noamx.c", directory / "noamx.so"
    src.write_text(SHIM_C)
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src), "-ldl"], check=True)
    return lib


def amx_granted() -> bool:
    """Whether this process holds AMX tile state (the kernel's permitted-features mask has XTILEDATA)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    mask = ctypes.c_uint64(0)
    if libc.syscall(SYS_ARCH_PRCTL, ARCH_GET_XCOMP_PERM, ctypes.byref(mask)) != 0:
        return False
    return bool(mask.value >> XFEATURE_XTILEDATA & 1)


def child(spec_file: str) -> None:
    """One process: load every bundle, time every shape once per the settings, print the seconds as JSON."""
    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    runners = {name: students.BundleRunner(Path(path), spec["threads"]) for name, path in spec["bundles"].items()}
    settings = students.Settings(rounds=1)
    times = students.time_calls(runners, spec["inputs"], settings, seed=spec["seed"])
    print(json.dumps({"amx_granted": amx_granted(), "times": times}))


def run_child(spec_file: Path, shim: Path | None) -> dict[str, Any]:
    """Start one child (with the shim preloaded for the no-AMX mode) and return what it printed."""
    env = dict(os.environ)
    if shim is not None:
        env["LD_PRELOAD"] = str(shim)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(spec_file)], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: a timing process failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(
    bundles: Mapping[str, Path], langs: Sequence[str], threads: int, rounds: int, seed: int, work: Path
) -> dict[str, Any]:
    """Both modes, ``rounds`` children each, interleaved; medians and ratios per bundle and shape."""
    shim = build_shim(work)
    runners = {name: students.BundleRunner(path, threads) for name, path in bundles.items()}
    inputs = students.timing_inputs(runners, langs)
    del runners
    spec_file = work / "spec.json"
    spec = {"bundles": {k: str(v) for k, v in bundles.items()}, "threads": threads, "inputs": inputs, "seed": seed}
    spec_file.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    rng = random.Random(seed)
    times: dict[str, dict[str, dict[str, list[float]]]] = {m: {} for m in MODES}
    granted: dict[str, list[bool]] = {m: [] for m in MODES}
    for r in range(rounds):
        order = list(MODES)
        rng.shuffle(order)
        for mode in order:
            out = run_child(spec_file, shim if mode == "no-amx" else None)
            granted[mode].append(out["amx_granted"])
            for name, shapes in out["times"].items():
                for shape, ts in shapes.items():
                    times[mode].setdefault(name, {}).setdefault(shape, []).extend(ts)
        log.info("round %d/%d", r + 1, rounds)
    summary = {mode: students.summarize(times[mode]) for mode in MODES}
    ratios = {
        name: {
            shape: round(summary["no-amx"][name][shape]["median_ms"] / summary["amx"][name][shape]["median_ms"], 3)
            for shape in summary["amx"][name]
        }
        for name in bundles
    }
    return {"granted": granted, "latency": summary, "amx_speedup": ratios}


def markdown(result: Mapping[str, Any]) -> str:
    """The result as a markdown page: header, the latency table, and what each mode was granted."""
    m, v = result["machine"], result["versions"]
    lines = [
        f"# ONNX Runtime's AMX INT8 kernels on and off: {result['title']}",
        "",
        f"Machine: {m.get('cpu', '?')}, {m['cores']} cores, {result['threads']} threads. Versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + ".",
        f"Started {result['started']}. Command: `{result['command']}`",
        "",
        f"{result['rounds']} rounds; each round one fresh process per mode, in random order. amx: as a user runs it; "
        "no-amx: the same with an LD_PRELOAD shim refusing `arch_prctl(ARCH_REQ_XCOMP_PERM)`, so ONNX Runtime's "
        "MLAS keeps to AVX-512 VNNI. AMX tile state granted (per process): "
        + "; ".join(f"{mode} {sum(g)}/{len(g)}" for mode, g in result["granted"].items())
        + ".",
        "",
        "| bundle | shape | amx: median (p90) ms | no-amx: median (p90) ms | AMX speed-up (no-amx / amx) |",
        "|---|---|---|---|---|",
    ]
    for name, shapes in result["amx_speedup"].items():
        for shape, ratio in shapes.items():
            a, n = result["latency"]["amx"][name][shape], result["latency"]["no-amx"][name][shape]
            lines.append(
                f"| {name} | {shape} | {a['median_ms']:.2f} ({a['p90_ms']:.2f}) | "
                f"{n['median_ms']:.2f} ({n['p90_ms']:.2f}) | {ratio:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Measure and write ``<out>.json`` and ``<out>.md``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", action="append", default=[], metavar="NAME=PATH", help="a bundle (repeat)")
    ap.add_argument("--languages", default="en,de,fr,es,ru,zh,ar,hi", help="languages of the timed texts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6, help="processes per mode")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--title", default="", help="what is measured, for the page's heading")
    ap.add_argument("--out", type=Path, help="output path without suffix (.json and .md written)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.bundle or args.out is None:
        ap.error("give at least one --bundle and --out")
    if not cpu_has_amx_int8():
        raise SystemExit("error: this CPU does not list amx_int8 in /proc/cpuinfo: there is nothing to compare")
    bundles = students.parse_bundles(args.bundle)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="amx-") as tmp:
        result = measure(bundles, args.languages.split(","), args.threads, args.rounds, args.seed, Path(tmp))
    header = students.run_header(args.out, argv, started)
    result = {
        **header,
        "title": args.title or ", ".join(bundles),
        "threads": args.threads,
        "rounds": args.rounds,
        **result,
    }
    students.write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
