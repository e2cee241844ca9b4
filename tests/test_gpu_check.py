"""``mbert-edge gpu-check``: the report on a machine without GPU libraries, its JSON shape and exit codes, and
the comparison logic with a fake GPU backend (ONNX Runtime on CPU behind a GPU backend's name) that returns the
CPU's results (pass) or perturbed ones (fail); plus a ``gpu``-marked run of the real thing.

No timing is asserted anywhere: the report's times are for people.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mbert_edge import backends, gpu_check
from mbert_edge.backends.onnxruntime_gpu import OnnxRuntimeCUDABackend
from mbert_edge.backends.tensorrt import TensorRTBackend
from mbert_edge.cli import main
from mbert_edge.errors import BackendUnavailableError, EngineBuildError

_GPU_HERE = [n for n in gpu_check.GPU_BACKENDS if backends.REGISTRY[n].is_available()]
no_gpu_here = pytest.mark.skipif(bool(_GPU_HERE), reason=f"GPU backends are available here: {_GPU_HERE}")


class _FakeGPU(OnnxRuntimeCUDABackend):
    """A "GPU" backend that runs the bundle's fp32 model.onnx on ONNX Runtime's CPU provider; ``scale`` -1 turns
    every output around (a broken GPU result). Picks files as the CUDA backend does (TensorRT files, else fp32)."""

    scale = 1.0
    how: str | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None

    @classmethod
    def is_available(cls) -> bool:
        return True

    def __init__(self, model_path: Path, threads: int | None = None, precision: str | None = None) -> None:
        import onnxruntime as ort

        sibling = Path(model_path).parent / "model.onnx"  # "the CPU's results", whatever file was chosen
        self._session = ort.InferenceSession(str(sibling), providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.closed = False

    def run(self, feeds):
        values = self._session.run(None, {n: feeds[n] for n in self._inputs})
        return {n: np.asarray(v, dtype=np.float32) * self.scale for n, v in zip(self._outputs, values, strict=True)}

    def close(self) -> None:
        self.closed = True


def _fake(name: str, scale: float = 1.0, how: str | None = None, pad: int = 8) -> type:
    return type("Fake", (_FakeGPU,), {"name": name, "scale": scale, "how": how, "pad_to_multiple_of": pad})


TEXTS = [("en", "Where is the station?"), ("de", "Wo ist der Bahnhof?"), ("ja", "駅はどこですか？")]


# ----------------------------------------------------------------------------------------------- no GPU here
@no_gpu_here
def test_report_without_gpu_libraries(bundles):
    bundle = bundles["feature-extraction"]
    report = gpu_check.run_check(bundle)
    assert [c.backend for c in report.checks] == list(gpu_check.GPU_BACKENDS)
    from mbert_edge.bundle import Bundle

    model_files = Bundle.open(bundle).manifest.model_files()
    for check in report.checks:
        assert check.status == gpu_check.UNAVAILABLE
        with pytest.raises(BackendUnavailableError) as exc:  # the very message load() would raise
            backends.choose(check.backend, model_files, check.precision)
        assert check.message == str(exc.value)
    assert "TensorRT Python package is not installed" in report.checks[0].message
    # the CPU half ran: environment, bundle, texts, reference
    assert report.reference["backend"] == "onnxruntime" and report.reference["precision"] == "fp32"
    assert report.texts["count"] >= 20 and {"ar", "ja", "ru", "hi"} <= set(report.texts["languages"])
    assert report.bundle["task"] == "feature-extraction" and len(report.bundle["manifest_sha256"]) == 64
    assert report.environment["onnxruntime"]["providers"] and report.environment["gpu"]["present"] is False
    assert report.installed == [] and report.exit_code == gpu_check.EXIT_NO_GPU == 3
    text = report.to_text()
    assert "tensorrt / (no file): unavailable: backend 'tensorrt' is not available on this machine" in text
    assert text.rstrip().endswith("no GPU backend is available on this machine: nothing was compared on a GPU; exit 3")


@no_gpu_here
def test_cli_json_and_exit_code_without_a_gpu(bundles, capsys):
    assert main(["-q", "gpu-check", str(bundles["text-classification"]), "--json"]) == gpu_check.EXIT_NO_GPU
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {
        "mbert_edge",
        "environment",
        "bundle",
        "texts",
        "reference",
        "checks",
        "installed_gpu_backends",
        "summary",
    }
    env = data["environment"]
    assert {"python", "os", "machine", "onnxruntime", "tensorrt", "cuda_python", "gpu", "jetson"} <= set(env)
    assert env["tensorrt"]["version"] is None and "not installed" in env["tensorrt"]["note"]
    assert {f["path"] for f in data["bundle"]["files"]} == {"model.onnx"}
    assert data["summary"] == {
        "passed": 0,
        "failed": 0,
        "error": 0,
        "unavailable": 3,
        "exit_code": 3,
        "verdict": "no GPU backend is available on this machine: nothing was compared on a GPU; exit 3",
    }
    for check in data["checks"]:
        assert check["status"] == "unavailable" and check["message"] and check["metrics"] is None


def test_cli_usage_and_bundle_errors(tmp_path, capsys):
    assert main(["gpu-check", str(tmp_path / "missing")]) == 1
    assert "no bundle directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["gpu-check", str(tmp_path), "--backend", "openvino"])
    assert exc.value.code == 2


# ----------------------------------------------------------------------------------------------- a fake GPU
@pytest.mark.parametrize("task", ["feature-extraction", "text-classification", "token-classification"])
def test_fake_gpu_with_the_cpu_results_passes(bundles, monkeypatch, task):
    monkeypatch.setitem(backends.REGISTRY, "onnxruntime-cuda", _fake("onnxruntime-cuda"))
    report = gpu_check.run_check(bundles[task], names=["onnxruntime-cuda"])
    (check,) = report.checks
    assert (check.backend, check.file, check.precision, check.status) == (
        "onnxruntime-cuda",
        "model.onnx",
        "fp32",
        "passed",
    )
    m = check.metrics
    assert m["min_cosine"] >= 0.9999 and m["texts"] == report.texts["count"] == len(check.per_text)
    if task == "feature-extraction":
        assert m["cosine_of"] == "embedding" and m["agreement"] is None
    else:
        assert m["agreement"] == 1.0
        assert m["agreement_kind"] == ("top label" if task == "text-classification" else "entity span")
    assert check.tolerance == {"min_cosine": 0.9999, "min_agreement": 1.0}
    assert check.load_s is not None and check.run_s is not None and check.engine is None
    assert report.exit_code == gpu_check.EXIT_PASSED
    assert "onnxruntime-cuda / model.onnx (fp32): PASSED" in report.to_text()


@pytest.mark.parametrize("task", ["feature-extraction", "text-classification", "token-classification"])
def test_fake_gpu_with_perturbed_results_fails(bundles, monkeypatch, task):
    monkeypatch.setitem(backends.REGISTRY, "onnxruntime-cuda", _fake("onnxruntime-cuda", scale=-1.0))
    report = gpu_check.run_check(bundles[task], names=["onnxruntime-cuda"])
    (check,) = report.checks
    assert check.status == "failed" and report.exit_code == gpu_check.EXIT_FAILED
    assert check.metrics["min_cosine"] < 0.9999
    if task != "feature-extraction":
        assert check.metrics["agreement"] < 1.0
        differs = [r for r in check.per_text if r["same"] is False]
        assert differs and "cpu" in differs[0] and "gpu" in differs[0]
    assert "onnxruntime-cuda / model.onnx (fp32): FAILED" in report.to_text()
    assert report.verdict.startswith("GPU check FAILED")


def test_cli_exit_codes_with_a_fake_gpu(bundles, monkeypatch, capsys):
    bundle = str(bundles["text-classification"])
    monkeypatch.setitem(backends.REGISTRY, "onnxruntime-cuda", _fake("onnxruntime-cuda"))
    assert main(["-q", "gpu-check", bundle, "--backend", "onnxruntime-cuda"]) == 0
    assert "every available GPU comparison passed (1 passed); exit 0" in capsys.readouterr().out
    monkeypatch.setitem(backends.REGISTRY, "onnxruntime-cuda", _fake("onnxruntime-cuda", scale=-1.0))
    assert main(["-q", "gpu-check", bundle, "--backend", "onnxruntime-cuda", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["summary"]["failed"] == 1
    # a looser tolerance from the command line is applied to every precision
    monkeypatch.setitem(backends.REGISTRY, "onnxruntime-cuda", _fake("onnxruntime-cuda"))
    texts = Path(bundle).parent / "texts.txt"
    texts.write_text("en\tgood morning\nfr\tbonjour\nplain line without a language\n", encoding="utf-8")
    argv = ["-q", "gpu-check", bundle, "--backend", "onnxruntime-cuda", "--texts", str(texts), "--json"]
    assert main([*argv, "--min-cosine", "0.5", "--min-agreement", "0.5"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["texts"] == {"source": str(texts), "count": 3, "languages": ["?", "en", "fr"]}
    assert data["checks"][0]["tolerance"] == {"min_cosine": 0.5, "min_agreement": 0.5}


def test_a_gpu_backend_that_fails_to_load_is_an_error(bundles, monkeypatch):
    class Broken(_fake("onnxruntime-cuda")):
        def __init__(self, *args, **kwargs):
            raise EngineBuildError("TensorRT could not build an engine from model.onnx: out of memory")

    monkeypatch.setitem(backends.REGISTRY, "onnxruntime-cuda", Broken)
    report = gpu_check.run_check(bundles["feature-extraction"], names=["onnxruntime-cuda"], texts=TEXTS)
    (check,) = report.checks
    assert check.status == "error" and report.exit_code == gpu_check.EXIT_FAILED
    assert check.message == (
        "could not load: EngineBuildError: TensorRT could not build an engine from model.onnx: out of memory"
    )
    assert "ERROR: could not load: EngineBuildError" in report.to_text()


@pytest.fixture(scope="module")
def trt_bundle(tmp_path_factory, checkpoints):
    """A feature-extraction bundle with a TensorRT fp16 file beside the fp32 one (tiny model, gate relaxed)."""
    pytest.importorskip("torch")
    from mbert_edge_export import export_bundle
    from mbert_edge_export.quantize.gate import Thresholds
    from mbert_edge_export.tensorrt import TensorRTSettings

    settings = TensorRTSettings(precisions=("fp16",), max_batch=8, thresholds=Thresholds(0.5, 0.9))
    return export_bundle(
        str(checkpoints["feature-extraction"]),
        tmp_path_factory.mktemp("gpu-check") / "b",
        tensorrt=settings,
        calibration_size=16,
        eval_size=32,
    )


def test_rows_per_backend_file_and_precision(trt_bundle, monkeypatch):
    """Every GPU backend x every file it can run; the TensorRT backend reports its engine and cache hit, and
    its batches stay within the engine's profile."""
    from mbert_edge.manifest import ShapeProfile

    batches = []

    class FakeTRT(_fake("tensorrt", how="cache")):
        file_backend = "tensorrt"
        precisions = ("fp16", "int8")
        profile = ShapeProfile((1, 1), (1, 128), (8, 128))

        @classmethod
        def pick_file(cls, files, precision=None):
            return TensorRTBackend.pick_file(files, precision)

        def run(self, feeds):
            batches.append(feeds["input_ids"].shape[0])
            return super().run(feeds)

    monkeypatch.setitem(backends.REGISTRY, "tensorrt", FakeTRT)
    monkeypatch.setitem(backends.REGISTRY, "onnxruntime-cuda", _fake("onnxruntime-cuda", how=None))
    report = gpu_check.run_check(trt_bundle)
    assert [(c.backend, c.file, c.precision) for c in report.checks] == [
        ("tensorrt", "model.trt-fp16.onnx", "fp16"),
        ("onnxruntime-tensorrt", "model.trt-fp16.onnx", "fp16"),
        ("onnxruntime-tensorrt", "model.onnx", "fp32"),
        ("onnxruntime-cuda", "model.trt-fp16.onnx", "fp16"),
        ("onnxruntime-cuda", "model.onnx", "fp32"),
    ]
    assert [c.status for c in report.checks if c.backend != "onnxruntime-tensorrt"] == ["passed"] * 3
    trt = report.checks[0]
    assert (
        trt.engine == "cache"
        and trt.cache_hit is True
        and trt.tolerance == {"min_cosine": 0.999, "min_agreement": 0.95}
    )
    assert max(batches) <= 8  # the engine's profile allows batches of 8
    assert report.installed[:1] == ["tensorrt"] and report.exit_code == 0
    data = json.loads(report.to_json())
    files = {f["path"]: f for f in data["bundle"]["files"]}
    assert set(files) == {"model.onnx", "model.trt-fp16.onnx"} and "profiles" not in files["model.onnx"]
    assert files["model.trt-fp16.onnx"]["profiles"] == [{"min": [1, 1], "opt": [1, 128], "max": [8, 128]}]
    assert "engine cache (cache hit: yes)" in report.to_text()


# ----------------------------------------------------------------------------------------------- pieces
def test_compare_judges_per_text():
    ref = gpu_check.Outputs([np.array([1.0, 0.0]), np.array([0.0, 2.0])], ["a", "b"], "class score", "top label")
    same = gpu_check.Outputs([np.array([2.0, 0.0]), np.array([0.0, 1.0])], ["a", "b"], "class score", "top label")
    passed, metrics, rows = gpu_check.compare(ref, same, TEXTS[:2], gpu_check.Tolerance(0.999, 1.0))
    assert passed and metrics["min_cosine"] == pytest.approx(1.0) and metrics["agreement"] == 1.0
    off = gpu_check.Outputs([np.array([1.0, 0.1]), np.array([0.0, 1.0])], ["a", "c"], "class score", "top label")
    passed, metrics, rows = gpu_check.compare(ref, off, TEXTS[:2], gpu_check.Tolerance(0.999, 0.5))
    assert not passed and metrics["worst_language"] == "en" and metrics["agreement"] == 0.5
    assert rows[1] == {"language": "de", "text": TEXTS[1][1], "cosine": 1.0, "same": False, "cpu": "b", "gpu": "c"}
    passed, *_ = gpu_check.compare(ref, off, TEXTS[:2], gpu_check.Tolerance(0.99, 0.5))
    assert passed  # cosine 0.995 and half the labels: within a loose tolerance
    assert gpu_check.cosine(np.zeros(3), np.zeros(3)) == 1.0 and gpu_check.cosine(np.zeros(3), np.ones(3)) == 0.0


def test_tolerances_tighten_with_precision():
    t = gpu_check.TOLERANCES
    assert t["fp32"].min_cosine > t["fp16"].min_cosine > t["int8"].min_cosine
    assert t["fp32"].min_agreement >= t["fp16"].min_agreement >= t["int8"].min_agreement


def test_texts_are_the_packaged_samples():
    texts, source = gpu_check.sample_texts()
    assert source == "mbert_edge_export/data/parity_texts.txt" and len(texts) >= 20
    assert all(lang and text.strip() for lang, text in texts)
    assert gpu_check.parse_texts("# comment\n\nde\tHallo\nno tab here\n") == [("de", "Hallo"), ("?", "no tab here")]


@pytest.mark.parametrize(
    ("release", "l4t", "jetpack"),
    [
        ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: x", "36.4.3", "6.2"),
        ("# R35 (release), REVISION: 2.1, GCID: 32398013, BOARD: t186ref, EABI: aarch64, DATE: x", "35.2.1", "5.1"),
        ("# R38 (release), REVISION: 2.0, GCID: 1, BOARD: generic, EABI: aarch64, DATE: x", "38.2.0", "7.x"),
    ],
)
def test_jetson_release_and_board(tmp_path, release, l4t, jetpack):
    assert gpu_check.jetson_info(tmp_path) is None
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text(release + "\n# KERNEL_VARIANT: oot\n")
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    info = gpu_check.jetson_info(tmp_path)
    assert (info["l4t"], info["jetpack"], info["model"]) == (l4t, jetpack, "NVIDIA Jetson Orin Nano Developer Kit")
    env = gpu_check.environment(tmp_path)  # a Jetson without its GPU device nodes (a container without nvidia)
    assert env["jetson"] == info and env["gpu"]["present"] is False and "--runtime nvidia" in env["gpu"]["what"]


def test_polygraphy_cpu_half(trt_bundle):
    """Polygraphy imports TensorRT lazily: its ONNX Runtime runner runs the TensorRT file on CPU anywhere."""
    pytest.importorskip("polygraphy")
    import mbert_edge
    from mbert_edge.bundle import Bundle

    bundle = Bundle.open(trt_bundle)
    entry = TensorRTBackend.pick_file(bundle.manifest.model_files())
    tok = mbert_edge.load(trt_bundle).tokenizer
    out = gpu_check.polygraphy_compare(bundle.file_path(entry), entry, tok, [t for _, t in TEXTS], with_tensorrt=False)
    assert out["ran"] == ["onnxrt-cpu"] and out["iterations"] == 3
    assert "TensorRT unavailable" in out["summary"]


# ----------------------------------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
@pytest.mark.skipif(not _GPU_HERE, reason="needs a GPU backend (TensorRT or onnxruntime-gpu) and an NVIDIA GPU")
def test_gpu_check_on_a_real_gpu(trt_bundle, tmp_path, monkeypatch, capsys):
    from mbert_edge.backends import engine_cache

    monkeypatch.setenv(engine_cache.CACHE_ENV, str(tmp_path))
    report = gpu_check.run_check(trt_bundle)
    print(report.to_text())  # with -s: the report this GPU gives, to paste into docs/gpu.md
    ran = [c for c in report.checks if c.status != "unavailable"]
    assert ran and all(c.status == "passed" for c in ran), report.to_text()
    assert report.exit_code == 0 and report.environment["gpu"]["present"]
    if "tensorrt" in _GPU_HERE:
        assert report.checks[0].engine == "built"
        again = gpu_check.run_check(trt_bundle, names=["tensorrt"])
        assert again.checks[0].engine == "cache" and again.checks[0].cache_hit
