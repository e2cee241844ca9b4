"""The GPU benchmark (benchmarks/gpu.py) on a machine without a GPU: the no-GPU exit, which entries run or are
skipped and why, the timing and statistics helpers, the memory parsers, the JSON and markdown writer, and the
whole pipeline with stand-ins for the GPU backends (ONNX Runtime on the CPU behind their names, the PyTorch peer on
the CPU in float32); plus a ``gpu``-marked end-to-end run of the script on a tiny bundle where a GPU is present.

No timing is asserted: only that every measurement is made and lands in the output, and the arithmetic.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mbert_edge import backends
from mbert_edge.backends.onnxruntime_gpu import OnnxRuntimeCUDABackend
from mbert_edge.backends.tensorrt import TensorRTBackend
from mbert_edge.manifest import FileEntry
from tests.conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


G = load_script(SCRIPT, "bench_gpu")

_GPU_HERE = [n for n in ("tensorrt", "onnxruntime-cuda") if backends.REGISTRY[n].is_available()]
no_gpu_here = pytest.mark.skipif(bool(_GPU_HERE), reason=f"GPU backends are available here: {_GPU_HERE}")


# ----------------------------------------------------------------------------------------------- no GPU here
@no_gpu_here
def test_no_gpu_exits_3_with_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "results" / "gpu-x"
    code = G.main(["--bundle", str(tmp_path / "bundle"), "--checkpoint", "default", "--out", str(out)])
    assert code == G.EXIT_NO_GPU == 3
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("benchmarks/gpu.py: no GPU entry can run here")
    assert "tensorrt-fp16, tensorrt-int8: backend 'tensorrt' is not available" in err  # one reason, both entries
    assert "ort-cuda-fp16: backend 'onnxruntime-cuda' is not available" in err
    assert "pytorch-fp16: no NVIDIA GPU" in err or "pytorch-fp16: torch" in err
    assert err.endswith("nothing measured, no files written (exit 3)")
    assert not (tmp_path / "results").exists()


@no_gpu_here
def test_no_gpu_exit_code_of_the_script(tmp_path):
    """As a user runs it: the process's exit status is 3, one line on stderr, nothing on stdout or disk."""
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--bundle", str(tmp_path / "b"), "--out", str(tmp_path / "o" / "gpu")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 3, out.stderr
    assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1
    assert "no --checkpoint given" in out.stderr and not (tmp_path / "o").exists()


def test_arguments_are_checked(capsys):
    with pytest.raises(SystemExit) as exc:
        G.parse_args(["--bundle", "b", "--entries", "tensorrt-fp16,tensorrt-fp64"])
    assert exc.value.code == 2 and "unknown tensorrt-fp64" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        G.parse_args(["--bundle", "b", "--entries", "ort-cpu"])  # the reference alone measures no GPU
    assert G.parse_args(["--bundle", "b"]).names == list(G.DEFAULT_ENTRIES)


# --------------------------------------------------------------------------------------- which entries run
def _available(cls: type) -> type:
    return type("Fake" + cls.__name__, (cls,), {"is_available": classmethod(lambda c: True)})


def _missing(cls: type, why: str) -> type:
    return type(
        "Missing" + cls.__name__,
        (cls,),
        {"is_available": classmethod(lambda c: False), "unavailable_reason": classmethod(lambda c: why)},
    )


FILES = [
    FileEntry("model.onnx", "model", 1, "0" * 64, backend="onnxruntime", precision="fp32", format="onnx"),
    FileEntry("model.trt-fp16.onnx", "model", 1, "1" * 64, backend="tensorrt", precision="fp16", format="onnx"),
]


def test_plan_skips_with_the_runtimes_reasons(monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "tensorrt", _available(TensorRTBackend))
    monkeypatch.setitem(backends.REGISTRY, "onnxruntime-cuda", _missing(OnnxRuntimeCUDABackend, "no CUDA here"))
    names = ["tensorrt-fp16", "tensorrt-int8", "ort-cuda-fp16", "pytorch-fp16", "ort-cpu"]
    reasons = G.plan(names, None, FILES)
    assert reasons["tensorrt-fp16"] is None and reasons["ort-cpu"] is None
    with pytest.raises(backends.BackendUnavailableError) as exc:  # the very message load() would raise
        backends.choose("tensorrt", FILES, "int8")
    assert reasons["tensorrt-int8"] == str(exc.value) and "at precision int8" in reasons["tensorrt-int8"]
    assert reasons["ort-cuda-fp16"] == "backend 'onnxruntime-cuda' is not available on this machine: no CUDA here"
    assert reasons["pytorch-fp16"].startswith("no --checkpoint given")
    assert G.gpu_runnable(reasons) == ["tensorrt-fp16"]  # ort-cpu runs, but it is no GPU entry
    # without the bundle's files only the machine is judged
    assert G.plan(["tensorrt-int8"], None, None) == {"tensorrt-int8": None}
    # the peer, given a checkpoint, needs torch and a GPU
    monkeypatch.setattr(G, "torch_reason", lambda ckpt: None if ckpt else "no --checkpoint given")
    assert G.plan(["pytorch-fp16"], "ckpt", FILES) == {"pytorch-fp16": None}
    assert G.gpu_runnable({"tensorrt-fp16": "x", "ort-cpu": None}) == []
    msg = G.no_gpu_message({"tensorrt-fp16": "why a", "tensorrt-int8": "why a", "ort-cuda-fp16": "why b\nmore"})
    assert "tensorrt-fp16, tensorrt-int8: why a; ort-cuda-fp16: why b more;" in msg and "\n" not in msg


def test_reference_without_fp32_file_takes_the_cpu_default(monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "tensorrt", _available(TensorRTBackend))
    int8 = FileEntry("model.int8.onnx", "model", 1, "2" * 64, "onnxruntime", "int8", "onnx", quantization="dynamic")
    int8_only = [int8]
    assert G.bundle_reason(G.ENTRIES["ort-cpu"], int8_only) is None
    assert "has no model file" in G.bundle_reason(G.ENTRIES["tensorrt-fp16"], int8_only)


# ---------------------------------------------------------------------------------------- timing and stats
class Counting:
    """A runner that records its calls; ``fail_on`` raises on that call number."""

    tokenizer = None
    default_prefix = ""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[list[str]] = []
        self.syncs = 0
        self.fail_on = fail_on

    def run(self, texts):
        self.calls.append(texts)
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("CUDA out of memory")
        return np.ones((len(texts), 4), np.float32)

    def synchronize(self):
        self.syncs += 1


def test_time_rounds_counts_calls_and_synchronizes():
    runners = {"a": Counting(), "b": Counting()}
    inputs = {"b1s16": [["x"], ["y"], ["z"]], "b32s128": [["t"] * 32]}
    ticks = iter(range(10_000))
    times = G.time_rounds(runners, inputs, rounds=3, reps={"b1s16": 4, "b32s128": 2}, clock=lambda: next(ticks) / 1000)
    for name, r in runners.items():
        assert len(r.calls) == 3 * ((1 + 4) + (1 + 2))  # per round and shape: one untimed call, then the repeats
        assert r.syncs == 2 * 3 * (4 + 2)  # before and after every timed call
        assert [len(times[name][s]) for s in inputs] == [12, 6]
        assert all(t == pytest.approx(0.001) for ts in times[name].values() for t in ts)  # one tick per call
        assert {tuple(c) for c in r.calls if len(c) == 1} == {("x",), ("y",), ("z",)}  # b1 rotates over its texts


def test_warm_up_counts_and_reports_failures():
    ok, broken = Counting(), Counting(fail_on=2)
    failed = G.warm_up({"ok": ok, "broken": broken}, {"b1s16": [["x"]], "b1s128": [["y"]]}, calls=3)
    assert len(ok.calls) == 6 and ok.syncs == 1
    assert failed == {"broken": "failed while warming up: RuntimeError: CUDA out of memory"}


def test_stats_on_known_times():
    s = G.stats([i / 1000 for i in range(1, 11)])  # 1..10 ms
    assert s["median_ms"] == pytest.approx(5.5) and s["p90_ms"] == pytest.approx(9.1)
    assert s["p99_ms"] == pytest.approx(9.91) and s["n"] == 10 and "seq_per_s" not in s
    b = G.stats([0.2, 0.1, 0.3], batch=32)
    assert b["median_ms"] == pytest.approx(200.0) and b["seq_per_s"] == pytest.approx(160.0)


def test_cosines():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    c = G.cosines(a, np.array([[2.0, 0.0], [1.0, 1.0]]))
    assert c["mean"] == pytest.approx((1 + 2**-0.5) / 2) and c["min"] == pytest.approx(2**-0.5) and c["texts"] == 2


# ------------------------------------------------------------------------------------------------ memory
def test_parse_compute_apps():
    assert G.parse_compute_apps("12, 300\n77, 1024\n77, 10\n", 77) == 1034.0  # two GPUs: summed
    with_header = "pid, used_gpu_memory [MiB]\n77, 812 MiB\n"
    assert G.parse_compute_apps(with_header, 77) == 812.0
    assert G.parse_compute_apps("77, [N/A]\n", 77) is None and G.parse_compute_apps("12, 5\n", 77) is None


class _Proc:
    def __init__(self, pid, used):
        self.pid, self.usedGpuMemory = pid, used


class _FakeNVML:
    def __init__(self, per_device):
        self.per_device = per_device

    def nvmlDeviceGetCount(self):
        return len(self.per_device)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [_Proc(pid, used) for pid, used in self.per_device[handle]]


def test_memory_probe_prefers_nvml_and_keeps_peaks():
    nvml = _FakeNVML([[(5, 512 * 2**20), (9, 1)], [(5, None)]])
    assert G.nvml_process_mb(nvml, 5) == 512.0 and G.nvml_process_mb(nvml, 6) is None
    smi = iter([100.0, 300.0, 200.0])
    used = iter([1500.0, 1200.0, 1100.0])
    probe = G.MemoryProbe(5, nvml, lambda pid: next(smi), lambda: next(used), baseline_mb=1000.0)
    for _ in range(3):
        probe.sample()
    r = probe.result()
    assert r["method"] == "nvml" and r["peak_mb"] == 512.0
    assert r["by_method"] == {"nvml": 512.0, "nvidia-smi": 300.0, "cudaMemGetInfo": 500.0}
    nothing = G.MemoryProbe(5, None, None, None, None)
    nothing.sample()
    assert nothing.result()["peak_mb"] is None and nothing.result()["method"] is None


# ---------------------------------------------------------------------------------------- JSON and markdown
def _variant(b1s16, b1s128, b32s128, **extra):
    def shape(ms, batch=1):
        return G.stats([ms / 1000] * 3, batch)

    return {
        "b1s16": shape(b1s16),
        "b1s128": shape(b1s128),
        "b32s128": shape(b32s128, 32),
        "size_mb": 236.0,
        "cosine_to_fp32": {"mean": 0.99995, "min": 0.9998, "texts": 25},
        **extra,
    }


def _result():
    return {
        "machine": {
            "cpu": "ARMv8 Processor rev 1 (v8l)",
            "cores": 6,
            "gpu": {"present": True, "name": "Orin", "compute_capability": [8, 7], "integrated": True},
            "tensorrt": {"version": "10.3.0"},
            "nvidia_driver": None,
            "jetson": {"l4t": "36.4.3", "jetpack": "6.2", "model": "NVIDIA Jetson Orin Nano Developer Kit"},
            "power_mode": "NV Power Mode: MAXN_SUPER 2",
        },
        "versions": {"mbert-edge": "0.1.0", "tensorrt": "10.3.0"},
        "threads": None,
        "started": "now",
        "load_before": (0.5, 0.4, 0.3),
        "load_after": (0.6, 0.5, 0.4),
        "command": "benchmarks/gpu.py --bundle b",
        "timing": {"note": "3 warm-up calls"},
        "models": {
            "e5-small-trt": {
                "variants": {
                    "tensorrt-fp16": _variant(
                        1.0,
                        4.0,
                        50.0,
                        engine={"build_s": 123.4, "cache_load_s": 0.56, "engine_mb": 60.0, "cache_load_how": "cache"},
                        gpu_memory={"peak_mb": 812.0, "method": "nvml"},
                        peak_rss_mb=700.0,
                        cold_start_s=1.25,
                        describe={"backend": "tensorrt", "file": "model.trt-fp16.onnx", "precision": "fp16"},
                    ),
                    "ort-cuda-fp16": _variant(8.0, 16.0, 400.0, worker_error="Traceback\nMemoryError: boom"),
                    "pytorch-fp16": _variant(
                        4.0,
                        8.0,
                        200.0,
                        gpu_memory={"peak_mb": 1400.0, "method": "nvml", "torch_max_allocated_mb": 600.0},
                    ),
                },
                "skipped": {"tensorrt-int8": "the bundle has no int8 file"},
                "errors": {},
            }
        },
    }


def test_markdown_ratios_and_columns(tmp_path):
    result = _result()
    for v in result["models"]["e5-small-trt"]["variants"].values():
        G.report._flat(v)  # the CPU benchmark reads every entry: the JSON has its shape
    json_path, md_path = G.write_results(result, tmp_path / "out" / "gpu-orin-e5")
    assert (json_path.name, md_path.name) == ("gpu-orin-e5.json", "gpu-orin-e5.md")
    assert json.loads(json_path.read_text())["models"]["e5-small-trt"]["skipped"] == {
        "tensorrt-int8": "the bundle has no int8 file"
    }
    md = md_path.read_text()
    rows = {line.split(" | ")[0].strip("|* "): line for line in md.splitlines() if line.startswith("| ")}
    trt, ort, peer = rows["tensorrt-fp16"], rows["ort-cuda-fp16"], rows["pytorch-fp16"]
    assert "| 1.00 (1.00) [4.00x] | 4.00 (4.00) [2.00x] | 640.0 [4.00x] |" in trt  # 4/1, 8/4, 640/160 seq/s
    assert "| 8.00 (8.00) [0.50x] | 16.00 (16.00) [0.50x] | 80.0 [0.50x] |" in ort  # slower than the peer
    assert "[" not in peer.split(" | ", 1)[1] and "| 160.0 |" in peer  # no ratio to itself
    assert "| 123.4 (0.56) | 812 (nvml) | 700 | 1.25 | 236 | 0.99995 / 0.99980 |" in trt
    assert "1400 (nvml); torch allocated 600" in peer
    assert "Jetson: L4T 36.4.3 (JetPack 6.2), NVIDIA Jetson Orin Nano Developer Kit" in md
    assert "compute capability 8.7" in md and "TensorRT 10.3.0" in md and "MAXN_SUPER" in md
    assert "- skipped tensorrt-int8: the bundle has no int8 file" in md
    assert "memory/cold start not measured: MemoryError: boom" in md
    assert "GPU memory methods: nvml: NVML per-process" in md


def test_markdown_without_the_peer_has_no_ratios():
    result = _result()
    del result["models"]["e5-small-trt"]["variants"]["pytorch-fp16"]
    md = G.markdown(result)
    assert "pytorch-fp16 was not measured: no ratios." in md and "x]" not in md


# --------------------------------------------------------------------------------- the pipeline, faked GPU
@pytest.fixture(scope="module")
def emb_bundle(tmp_path_factory, checkpoints):
    from mbert_edge_export import export_bundle

    return export_bundle(str(checkpoints["feature-extraction"]), tmp_path_factory.mktemp("gpu-bench") / "bundle")


class _OnCPU:
    """Runs the bundle's fp32 model.onnx on ONNX Runtime's CPU provider, whatever file was chosen."""

    def _session(self, model_path):
        import onnxruntime as ort

        self._s = ort.InferenceSession(str(Path(model_path).parent / "model.onnx"), providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._s.get_inputs()]
        self._outputs = [o.name for o in self._s.get_outputs()]

    def run(self, feeds):
        values = self._s.run(None, {n: feeds[n] for n in self._inputs})
        return {n: np.asarray(v, np.float32) for n, v in zip(self._outputs, values, strict=True)}

    @property
    def input_names(self):
        return list(self._inputs)

    def close(self):
        pass

    @classmethod
    def unavailable_reason(cls):
        return None

    @classmethod
    def is_available(cls):
        return True

    @classmethod
    def pick_file(cls, files, precision=None):
        if precision == "int8":
            return None  # as a bundle without an int8 TensorRT file
        return next(f for f in files if f.path == "model.onnx")


class FakeCUDA(_OnCPU, OnnxRuntimeCUDABackend):
    def __init__(self, model_path, threads=None, precision=None):
        self._session(model_path)


class FakeTRT(_OnCPU, TensorRTBackend):
    """Builds a fake engine into the cache on first load, loads it from there on the next."""

    def __init__(self, model_path, threads=None, precision=None, profile=None, cache_dir=None, **kwargs):
        from mbert_edge.backends import engine_cache

        self._session(model_path)
        root = Path(cache_dir) if cache_dir else engine_cache.cache_root()
        self.cache_path = self.engine_path = root / "fake.plan"
        self.how = "cache" if self.cache_path.exists() else "built"
        root.mkdir(parents=True, exist_ok=True)
        self.cache_path.write_bytes(b"x" * 2000)
        self.profile = None

    def __del__(self):
        pass


def test_pipeline_with_stand_ins_for_the_gpu(emb_bundle, checkpoints, tmp_path, monkeypatch):
    import mbert_edge.backends.tensorrt as trt_module

    monkeypatch.setitem(backends.REGISTRY, "tensorrt", FakeTRT)
    monkeypatch.setitem(backends.REGISTRY, "onnxruntime-cuda", FakeCUDA)
    monkeypatch.setattr(trt_module, "TensorRTBackend", FakeTRT)  # what the engine build constructs
    monkeypatch.setattr(G, "torch_reason", lambda ckpt: None)
    monkeypatch.setattr(G, "TORCH_DEVICE", "cpu")
    monkeypatch.setattr(G, "TORCH_DTYPE", "float32")
    # the fresh process per entry would not see these stand-ins: run the worker in this one
    monkeypatch.setattr(G, "run_worker", lambda name, bundle, ckpt, texts, env: G.worker(name, bundle, ckpt, texts))
    out = tmp_path / "gpu-fake"
    argv = ["--bundle", str(emb_bundle), "--checkpoint", str(checkpoints["feature-extraction"])]
    argv += ["--entries", "tensorrt-fp16,tensorrt-int8,ort-cuda-fp16,pytorch-fp16,ort-cpu", "--rounds", "1"]
    argv += ["--warmup", "1", "--engine-cache", str(tmp_path / "engines"), "--out", str(out)]
    assert G.main(argv) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    model = result["models"]["bundle"]
    variants = model["variants"]
    assert list(variants) == ["tensorrt-fp16", "ort-cuda-fp16", "pytorch-fp16", "ort-cpu"]
    assert "at precision int8" in model["skipped"]["tensorrt-int8"]
    for name, v in variants.items():
        G.report._flat(v)
        assert [v[s]["n"] for s in G.SHAPES] == [20, 20, 5]
        assert v["b32s128"]["seq_per_s"] > 0 and v["cold_start_s"] > 0 and v["peak_rss_mb"] > 0
        cos = v["cosine_to_fp32"]
        assert cos["texts"] >= 20 and cos["mean"] > 0.999, name
        # the peer tokenizes with the checkpoint's own tokenizer, which differs from the bundle's on one odd sample
        # text (ligatures, fullwidth letters) for this tiny test vocabulary; ours run the bundle's fp32 file here
        assert cos["min"] > (0.95 if name == "pytorch-fp16" else 0.9999), name
        assert set(v["vs_pytorch_fp16"]) == set(G.SHAPES)
    assert variants["pytorch-fp16"]["vs_pytorch_fp16"] == {s: 1.0 for s in G.SHAPES}
    engine = variants["tensorrt-fp16"]["engine"]
    assert (engine["build_how"], engine["cache_load_how"], engine["engine_mb"]) == ("built", "cache", 0.002)
    # the runtime caps a model call at 1024 padded tokens: b32 x s128 is four calls of 8; the peer makes one
    assert variants["ort-cuda-fp16"]["describe"]["model_calls_b32s128"] == 4
    assert variants["pytorch-fp16"]["describe"]["model_calls_b32s128"] == 1
    # no NVML, nvidia-smi or cuda-python here: the memory is reported as not measured, with the reason
    assert variants["ort-cuda-fp16"]["gpu_memory"]["peak_mb"] is None and "gpu_memory" not in variants["ort-cpu"]
    timing = model["texts"]["timing"]
    assert len(timing["b32s128"][0]) == 32 and len(timing["b1s16"]) >= 2  # b1 calls rotate over languages
    md = out.with_suffix(".md").read_text()
    assert "| **tensorrt-fp16** |" in md and "| pytorch-fp16 |" in md and "x] |" in md
    assert "GPU memory not measured: no NVML, nvidia-smi or CUDA query here" in md
    assert "present" in result["machine"]["gpu"] and result["versions"]["mbert-edge"]
    assert not (tmp_path / "engines" / "tensorrt-int8").exists()


def test_engine_cache_must_start_empty(emb_bundle, tmp_path, monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "tensorrt", FakeTRT)
    cache = tmp_path / "engines"
    cache.mkdir()
    (cache / "old.plan").write_bytes(b"x")
    with pytest.raises(ValueError, match="not empty"):
        G.load_tensorrt(G.ENTRIES["tensorrt-fp16"], emb_bundle, cache)


# ----------------------------------------------------------------------------------------------- on a GPU
def _torch_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(
    not (_GPU_HERE or _torch_cuda()),
    reason="needs an NVIDIA GPU with TensorRT, onnxruntime-gpu or a CUDA build of torch",
)
def test_script_end_to_end_on_a_gpu(checkpoints, tmp_path_factory):
    """The real thing on a tiny bundle with a TensorRT fp16 file: every GPU entry that can run here is measured,
    tensorrt-int8 is skipped (no int8 file), the TensorRT engine is built on an empty cache and then loaded from it."""
    from mbert_edge_export import export_bundle
    from mbert_edge_export.quantize.gate import Thresholds
    from mbert_edge_export.tensorrt import TensorRTSettings

    tmp = tmp_path_factory.mktemp("gpu-bench-real")
    settings = TensorRTSettings(precisions=("fp16",), max_batch=8, thresholds=Thresholds(0.5, 0.9))
    bundle = export_bundle(
        str(checkpoints["feature-extraction"]), tmp / "b", tensorrt=settings, calibration_size=16, eval_size=32
    )
    out = tmp / "gpu-tiny"
    cmd = [sys.executable, str(SCRIPT), "--bundle", str(bundle), "--checkpoint", str(checkpoints["feature-extraction"])]
    run = subprocess.run([*cmd, "--rounds", "2", "--out", str(out)], capture_output=True, text=True, timeout=3000)
    print(run.stdout[-6000:], run.stderr[-3000:])  # with -s: the results this GPU gives
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    model = result["models"]["b"]
    variants = model["variants"]
    assert variants and "tensorrt-int8" in model["skipped"] and not model["errors"]
    for name, v in variants.items():
        assert v["b1s16"]["median_ms"] > 0 and v["b32s128"]["seq_per_s"] > 0, name
        assert v["cosine_to_fp32"]["min"] > 0.99, name
        assert "worker_error" not in v and v["gpu_memory"]["method"], name
    if "tensorrt" in _GPU_HERE:
        engine = variants["tensorrt-fp16"]["engine"]
        assert engine["build_how"] == "built" and engine["cache_load_how"] == "cache" and engine["engine_mb"] > 0
    assert result["machine"]["gpu"]["present"] and out.with_suffix(".md").exists()
