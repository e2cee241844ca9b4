"""Prebuilt TensorRT engines in bundles (``build-engine --add-to-bundle``), on CPU against the TensorRT and
cuda-python stand-ins of ``test_tensorrt_runtime``: the manifest entry, the fit rules and every kind of mismatch
(each falls back to the engine cache / a build with one log line), a broken engine, the atomic write, signed
bundles, checksums and ``mbert-edge info``; plus a ``gpu``-marked test for a real GPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import types
from pathlib import Path

import pytest

from mbert_edge.backends import tensorrt as trt_backend
from mbert_edge.backends import tensorrt_compat as compat
from mbert_edge.backends.tensorrt import TensorRTBackend, add_engine_to_bundle, build_engine
from mbert_edge.bundle import Bundle
from mbert_edge.errors import BundleFormatError, BundleIntegrityError, SigningError
from mbert_edge.manifest import (
    FEATURE_EXTRACTION,
    MANIFEST_NAME,
    EmbeddingSpec,
    EngineSpec,
    FileEntry,
    Manifest,
    ShapeProfile,
)
from tests.test_tensorrt_runtime import _Enum, _fake_cudart, _fake_trt, _trt_missing, gpu_bundle  # noqa: F401

PROFILE = ShapeProfile((1, 1), (1, 16), (4, 32))
TRT_FILE = "model.trt-fp16.onnx"
LOGGER = "mbert_edge.backends.tensorrt"
ORIN = {"gpu": "Fake Orin", "compute_capability": "8.7", "tensorrt": "10.3.0", "hardware_compatibility_level": "NONE"}


# ----------------------------------------------------------------------------------------------- helpers
def _entry(root: Path, name: str, data: bytes, role: str, **fields) -> FileEntry:
    (root / name).write_bytes(data)
    return FileEntry(name, role, len(data), hashlib.sha256(data).hexdigest(), **fields)


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A small bundle with a CPU file and a TensorRT file (the stand-in parser only checks that it exists)."""
    root = tmp_path / "bundle"
    root.mkdir()
    files = [
        _entry(root, "model.onnx", b"cpu graph", "model", backend="onnxruntime", precision="fp32", format="onnx"),
        _entry(
            root,
            TRT_FILE,
            b"trt graph",
            "model",
            backend="tensorrt",
            precision="fp16",
            format="onnx",
            profiles=(PROFILE,),
        ),
        _entry(root, "tokenizer.json", b"{}", "tokenizer"),
    ]
    Manifest(
        task=FEATURE_EXTRACTION,
        max_length=32,
        inputs=["input_ids", "attention_mask"],
        outputs=["last_hidden_state"],
        files=files,
        embedding=EmbeddingSpec(dim=4),
    ).write(root / MANIFEST_NAME)
    return root


def _cudart(name: str = "Fake Orin", cc: tuple[int, int] = (8, 7), integrated: bool = True):
    rt = _fake_cudart()
    props = types.SimpleNamespace(
        name=name.encode() + b"\x00", major=cc[0], minor=cc[1], totalGlobalMem=8 << 30, integrated=int(integrated)
    )
    rt.cudaGetDeviceProperties = lambda dev: (0, props)
    return rt


@pytest.fixture
def fake(monkeypatch):
    """Install a TensorRT stand-in (10.3.0 unless asked) whose builder config reports its hardware compatibility
    level, and a GPU (the stand-in's Jetson "Fake Orin", sm 8.7, unless asked); returns the fake module."""

    def install(version: str = "10.3.0", **device) -> types.SimpleNamespace:
        trt = _fake_trt(version, "INT64")
        trt.HardwareCompatibilityLevel = _Enum(NONE=0, AMPERE_PLUS=1, SAME_COMPUTE_CAPABILITY=2)
        make_config = trt.Builder.create_builder_config

        def config():
            c = make_config()
            c.hardware_compatibility_level = trt.HardwareCompatibilityLevel.NONE  # TensorRT's default
            return c

        trt.Builder.create_builder_config = staticmethod(config)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(trt_backend, "missing_pieces", lambda: None)
        monkeypatch.setattr(trt_backend, "import_cudart", lambda: _cudart(**device))
        return trt

    return install


def _builds(trt) -> int:
    return sum(1 for c in trt.calls if c[0] == "build")


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _add(bundle: Path, plan: bytes = b"ENGINE", **keys) -> FileEntry:
    """Add an engine recorded with ``keys`` (default: this stand-in device) without building it."""
    model = Manifest.read(bundle / MANIFEST_NAME).model_files()[1]
    spec = EngineSpec(**{**ORIN, **keys}, profiles=(PROFILE,), source_sha256=model.sha256)
    return add_engine_to_bundle(bundle, model, plan, spec)


def _prebuilt_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("prebuilt TensorRT engine")]


# ----------------------------------------------------------------------------------------------- manifest
def test_engine_entry_round_trip_and_validation(bundle):
    entry = _add(bundle)
    d = json.loads((bundle / MANIFEST_NAME).read_text())
    raw = next(f for f in d["files"] if f["role"] == "engine")
    assert raw == {
        "path": "model.trt-fp16.fake-orin-sm87-trt10.3.0.plan",
        "role": "engine",
        "size": 6,
        "sha256": hashlib.sha256(b"ENGINE").hexdigest(),
        "backend": "tensorrt",
        "precision": "fp16",
        "format": "tensorrt-plan",
        "source": TRT_FILE,
        "engine": {
            **ORIN,
            "profiles": [{"min": [1, 1], "opt": [1, 16], "max": [4, 32]}],
            "source_sha256": hashlib.sha256(b"trt graph").hexdigest(),
        },
    }
    m = Manifest.from_dict(d)
    assert m.engine_files() == [entry] and m.engine_files(m.model_files()[1]) == [entry]
    assert Manifest.from_dict(json.loads(m.to_json())) == m  # round trip
    assert entry not in m.model_files()  # never chosen as a model file (older readers ignore the role too)

    def broken(**change) -> dict:
        copy = json.loads(json.dumps(d))
        e = next(f for f in copy["files"] if f["role"] == "engine")
        for k, v in change.items():
            if k == "source":
                e["source"] = v
            elif v is None:
                e["engine"].pop(k)
            else:
                e["engine"][k] = v
        return copy

    for change, msg in [
        ({"compute_capability": "sm87"}, "major.minor"),
        ({"tensorrt": "ten"}, "version"),
        ({"hardware_compatibility_level": "ampere+"}, "HardwareCompatibilityLevel name"),
        ({"gpu": None}, "'gpu'"),
        ({"profiles": None}, "'profiles'"),
        ({"source": "model.onnx.missing"}, "source"),
    ]:
        with pytest.raises(BundleFormatError, match=msg):
            Manifest.from_dict(broken(**change))
    d_old = json.loads((bundle / MANIFEST_NAME).read_text())
    d_old["files"] = [f for f in d_old["files"] if f["role"] != "engine"]
    assert Manifest.from_dict(d_old).engine_files() == []  # bundles without engines read as before


# ----------------------------------------------------------------------------------------------- fit rules
def _mismatch(**here) -> list[str]:
    keys = {
        "engine_gpu": "Orin",
        "engine_compute_capability": (8, 7),
        "engine_tensorrt": "10.3.0",
        "engine_hardware_compatibility": "NONE",
        "gpu": "Orin",
        "compute_capability": (8, 7),
        "tensorrt": "10.3.0.26",
        "integrated": True,
        "known_hardware_compatibility": {"NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY"},
    }
    return compat.prebuilt_engine_mismatches(**{**keys, **here})


def test_fit_rules():
    assert _mismatch() == []  # 10.3.0 fits 10.3.0.26
    assert compat.same_tensorrt_version("10.3.0.26", "10.3.0.26")
    assert not compat.same_tensorrt_version("10.3.0.26", "10.3.0.30")  # build numbers differ
    assert not compat.same_tensorrt_version("10.3", "10.3.1") and not compat.same_tensorrt_version("x", "10.3.0")
    assert _mismatch(tensorrt="10.4.0")[0].startswith("TensorRT version (engine 10.3.0, here 10.4.0)")
    assert _mismatch(gpu="Thor")[0].startswith("GPU (engine 'Orin', here 'Thor'")
    assert _mismatch(compute_capability=(8, 6), gpu="Orin")[0].startswith("compute capability (engine sm 8.7")
    same_cc = {"engine_hardware_compatibility": "SAME_COMPUTE_CAPABILITY", "integrated": False}
    assert _mismatch(gpu="NVIDIA A40", **same_cc) == []  # another GPU model, same compute capability
    assert _mismatch(compute_capability=(8, 9), **same_cc)[0].startswith("compute capability")
    ampere = {"engine_hardware_compatibility": "AMPERE_PLUS", "engine_compute_capability": (8, 0), "integrated": False}
    assert _mismatch(gpu="NVIDIA GeForce RTX 4090", compute_capability=(8, 9), **ampere) == []
    assert _mismatch(compute_capability=(12, 0), **ampere) == []
    assert "needs sm 8.0 or newer, here sm 7.5" in _mismatch(compute_capability=(7, 5), **ampere)[0]
    assert "Jetson" in _mismatch(**{**ampere, "integrated": True})[0]
    unknown = _mismatch(engine_hardware_compatibility="SAME_COMPUTE_CAPABILITY", known_hardware_compatibility={"NONE"})
    assert unknown[0].startswith("hardware compatibility level (engine SAME_COMPUTE_CAPABILITY, not one")
    assert compat.known_hardware_compatibility_names(None) == {"NONE"}  # 8.5: no enum
    assert compat.known_hardware_compatibility_names(_Enum(NONE=0, AMPERE_PLUS=1)) == {"NONE", "AMPERE_PLUS"}
    assert compat.hardware_compatibility_name(None) == "NONE"
    assert compat.hardware_compatibility_name(_Enum(AMPERE_PLUS=1).AMPERE_PLUS) == "AMPERE_PLUS"


# ----------------------------------------------------------------------------------------------- add, then load
def test_add_to_bundle_then_load_from_it(bundle, tmp_path, fake, caplog):
    trt = fake()
    info = build_engine(bundle, add_to_bundle=True, cache_dir=tmp_path / "cache")
    assert info["how"] == "built" and _builds(trt) == 1
    name = "model.trt-fp16.fake-orin-sm87-trt10.3.0.plan"
    assert info["added"] == name and info["hardware_compatibility_level"] == "NONE"  # read from the builder config
    opened = Bundle.open(bundle, verify=True)  # every checksum holds, the engine's included
    (entry,) = opened.manifest.engine_files()
    assert (bundle / name).read_bytes() == b"ENGINE" and entry.precision == "fp16" and entry.source == TRT_FILE
    assert entry.engine == EngineSpec(
        "Fake Orin", "8.7", "10.3.0", "NONE", (PROFILE,), opened.manifest.model_files()[1].sha256, 3
    )
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]  # no staging left behind

    with caplog.at_level(logging.INFO, logger=LOGGER):  # an empty cache: the engine comes from the bundle
        backend = TensorRTBackend(bundle / TRT_FILE, cache_dir=tmp_path / "other-cache")
    assert backend.how == "bundle" and backend.prebuilt == entry and _builds(trt) == 1
    assert backend.engine_path == bundle / name and backend.profile == PROFILE
    assert _prebuilt_lines(caplog) == [] and "TensorRT engine from the bundle" in caplog.text
    backend.close()
    again = build_engine(bundle, add_to_bundle=True, cache_dir=tmp_path / "cache")  # already there
    assert again["added"] is None and again["bundle_file"] == name and _builds(trt) == 1
    assert TensorRTBackend(bundle / TRT_FILE, cache_dir=tmp_path / "c3", use_prebuilt=False).how == "built"


@pytest.mark.parametrize(
    ("keys", "device", "expected"),
    [
        ({"gpu": "NVIDIA Jetson AGX Thor"}, {}, "GPU (engine 'NVIDIA Jetson AGX Thor', here 'Fake Orin'"),
        ({"compute_capability": "8.6"}, {}, "compute capability (engine sm 8.6, here sm 8.7"),
        ({"tensorrt": "10.4.0"}, {}, "TensorRT version (engine 10.4.0, here 10.3.0)"),
        ({"hardware_compatibility_level": "AMPERE_PLUS"}, {}, "hardware compatibility level (engine AMPERE_PLUS,"),
        (
            {"hardware_compatibility_level": "AMPERE_PLUS", "gpu": "NVIDIA A100", "compute_capability": "8.0"},
            {"name": "Tesla T4", "cc": (7, 5), "integrated": False},
            "needs sm 8.0 or newer, here sm 7.5",
        ),
        ({"hardware_compatibility_level": "FUTURE_LEVEL"}, {}, "engine FUTURE_LEVEL, not one that TensorRT 10.3.0"),
    ],
    ids=["gpu", "compute-capability", "tensorrt-version", "hw-compat-jetson", "hw-compat-pre-ampere", "hw-compat-new"],
)
def test_a_mismatching_engine_falls_back_with_one_log_line(bundle, tmp_path, fake, caplog, keys, device, expected):
    trt = fake(**device)
    _add(bundle, **keys)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        backend = TensorRTBackend(bundle / TRT_FILE, cache_dir=tmp_path / "cache")
    assert backend.how == "built" and backend.prebuilt is None and _builds(trt) == 1
    (line,) = _prebuilt_lines(caplog)
    assert expected in line and "using the engine cache or building" in line
    assert line.startswith("prebuilt TensorRT engine model.trt-fp16.")
    backend.close()


@pytest.mark.parametrize(
    ("keys", "device"),
    [
        (
            {
                "gpu": "NVIDIA A10G",
                "hardware_compatibility_level": "SAME_COMPUTE_CAPABILITY",
                "compute_capability": "8.6",
            },
            {"name": "NVIDIA A40", "cc": (8, 6), "integrated": False},
        ),
        (
            {"gpu": "NVIDIA A100", "hardware_compatibility_level": "AMPERE_PLUS", "compute_capability": "8.0"},
            {"name": "NVIDIA L4", "cc": (8, 9), "integrated": False},
        ),
    ],
    ids=["same-compute-capability", "ampere-plus"],
)
def test_hardware_compatible_engines_run_on_other_gpus(bundle, tmp_path, fake, caplog, keys, device):
    trt = fake(**device)
    _add(bundle, **keys)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        backend = TensorRTBackend(bundle / TRT_FILE, cache_dir=tmp_path / "cache")
    assert backend.how == "bundle" and _builds(trt) == 0 and _prebuilt_lines(caplog) == []
    assert backend.hardware_compatibility_level == keys["hardware_compatibility_level"]
    backend.close()


def test_other_profile_or_source_falls_back(bundle, tmp_path, fake, caplog):
    trt = fake()
    _add(bundle)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        backend = TensorRTBackend(bundle / TRT_FILE, profile=ShapeProfile((1, 1), (1, 16), (8, 32)), cache_dir=tmp_path)
    assert backend.how == "built" and _builds(trt) == 1
    (line,) = _prebuilt_lines(caplog)
    assert "profile (engine min [1, 1] opt [1, 16] max [4, 32], asked min [1, 1] opt [1, 16] max [8, 32])" in line
    caplog.clear()
    _add(bundle, tensorrt="10.3.0")  # rewritten with another source checksum below
    m = Manifest.read(bundle / MANIFEST_NAME)
    e = m.engine_files()[0]
    bad = dataclasses.replace(e, engine=dataclasses.replace(e.engine, source_sha256="00" * 32))
    m.files = [bad if f is e else f for f in m.files]
    m.write(bundle / MANIFEST_NAME)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        TensorRTBackend(bundle / TRT_FILE, cache_dir=tmp_path / "c2").close()
    (line,) = _prebuilt_lines(caplog)
    assert "source model (engine built from sha256 000000000000…" in line


def test_an_engine_that_does_not_deserialize_falls_back(bundle, tmp_path, fake, caplog):
    trt = fake()
    _add(bundle, plan=b"bad engine: from another driver")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        backend = TensorRTBackend(bundle / TRT_FILE, cache_dir=tmp_path / "cache")
    assert backend.how == "built" and _builds(trt) == 1
    (line,) = _prebuilt_lines(caplog)
    assert "does not deserialize here (TensorRT returned no engine" in line
    backend.close()

    def raising(self, plan):  # versions whose bindings raise instead of returning None
        raise RuntimeError("serialization assertion failed")

    monkey = pytest.MonkeyPatch()
    monkey.setattr(trt.Runtime, "deserialize_cuda_engine", raising, raising=False)
    try:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(Exception, match="just built"):
            TensorRTBackend(bundle / TRT_FILE, cache_dir=tmp_path / "c2")
        assert "RuntimeError: serialization assertion failed" in _prebuilt_lines(caplog)[0]
    finally:
        monkey.undo()


def test_an_altered_engine_fails_its_checksum(bundle, tmp_path, fake):
    fake()
    entry = _add(bundle)
    (bundle / entry.path).write_bytes(b"ENGINX")  # same size, other bytes
    with pytest.raises(BundleIntegrityError, match="fails its checksum"):
        TensorRTBackend(bundle / TRT_FILE, cache_dir=tmp_path)
    with pytest.raises(BundleIntegrityError):
        Bundle.open(bundle, verify=True)


# ----------------------------------------------------------------------------------------------- writing
def test_a_failure_mid_write_leaves_the_bundle_unchanged(bundle, monkeypatch):
    before = _snapshot(bundle)
    real = trt_backend._write_new

    def disk_full(path: Path, data: bytes) -> None:
        if path.name == MANIFEST_NAME:
            path.write_bytes(data[: len(data) // 2])  # half a manifest, then the disk is full
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(trt_backend, "_write_new", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _add(bundle)
    assert _snapshot(bundle) == before
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["bundle"]  # no staging directory left

    def rename_fails(self, target):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(trt_backend, "_write_new", real)
    real_rename = Path.rename
    monkeypatch.setattr(
        Path, "rename", lambda self, t: rename_fails(self, t) if ".partial-" in self.name else real_rename(self, t)
    )
    with pytest.raises(OSError, match="cross-device"):
        _add(bundle)
    assert _snapshot(bundle) == before and sorted(p.name for p in bundle.parent.iterdir()) == ["bundle"]


def test_adding_keeps_other_files_and_replaces_the_same_engine(bundle):
    (bundle / "README.txt").write_text("not listed, kept")
    first = _add(bundle, plan=b"ENGINE")
    second = _add(bundle, plan=b"ENGINE2")
    third = _add(bundle, tensorrt="10.4.0")
    m = Bundle.open(bundle, verify=True).manifest
    assert first.path == second.path != third.path
    assert [f.path for f in m.engine_files()] == [second.path, third.path]
    assert (bundle / "README.txt").read_text() == "not listed, kept"
    assert (bundle / second.path).read_bytes() == b"ENGINE2"


def test_a_signed_bundle_is_refused_without_force(bundle, tmp_path, fake, capsys):
    from mbert_edge.cli import main

    trt = fake()
    (bundle / "manifest.sig").write_text('{"format": "mbert-edge-signature"}')
    before = _snapshot(bundle)
    args = ["build-engine", str(bundle), "--add-to-bundle", "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "is signed" in err and "--force" in err and "mbert-edge sign" in err and "docs/signing.md" in err
    assert _snapshot(bundle) == before and _builds(trt) == 0  # refused before building
    with pytest.raises(SigningError):
        _add(bundle)
    assert main([*args, "--force"]) == 0
    out = capsys.readouterr()
    assert "added model.trt-fp16.fake-orin-sm87-trt10.3.0.plan" in out.out
    assert "manifest.sig no longer matched and was removed; re-sign it" in out.err
    assert not (bundle / "manifest.sig").exists()
    Bundle.open(bundle, verify=True)


def test_a_really_signed_bundle_needs_re_signing(bundle, tmp_path, fake):
    pytest.importorskip("cryptography")
    from mbert_edge.errors import BundleSignatureError
    from mbert_edge.signing import generate_keypair, sign_bundle, verify_bundle

    fake()
    private, public = tmp_path / "private.pem", tmp_path / "public.pem"
    generate_keypair(private, public)
    sign_bundle(bundle, private)
    verify_bundle(bundle, public)
    build_engine(bundle, add_to_bundle=True, force=True, cache_dir=tmp_path / "cache")
    with pytest.raises(BundleSignatureError, match="not signed"):
        verify_bundle(bundle, public)
    sign_bundle(bundle, private)  # re-signed: the engine is covered by the signed manifest's checksum
    verify_bundle(bundle, public)


def test_info_lists_the_engine_with_its_device_keys(bundle, tmp_path, fake, capsys):
    from mbert_edge.cli import main

    fake()
    assert main(["build-engine", str(bundle), "--add-to-bundle", "--cache-dir", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    assert main(["info", str(bundle)]) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if ".plan" in x]
    assert line.startswith("file        model.trt-fp16.fake-orin-sm87-trt10.3.0.plan")
    assert (
        "tensorrt/tensorrt-plan/fp16 engine from model.trt-fp16.onnx for Fake Orin (sm 8.7, TensorRT 10.3.0, "
        "hardware compatibility NONE), profile max 4x32"
    ) in line
    assert "checksums   OK (4 files verified)" in out


# ----------------------------------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
@pytest.mark.skipif(_trt_missing is not None, reason=f"needs TensorRT and an NVIDIA GPU: {_trt_missing}")
def test_build_add_and_reload_on_a_gpu(gpu_bundle, tmp_path, monkeypatch):  # noqa: F811
    import shutil

    import numpy as np

    import mbert_edge
    from mbert_edge.backends import engine_cache

    bundle = tmp_path / "b"
    shutil.copytree(gpu_bundle, bundle)
    monkeypatch.setenv(engine_cache.CACHE_ENV, str(tmp_path / "cache"))
    info = build_engine(bundle, add_to_bundle=True)
    assert info["added"] and Bundle.open(bundle, verify=True).manifest.engine_files()
    texts = ["Where is the station?", "Wo ist der Bahnhof?", "駅はどこですか？"]
    built = mbert_edge.load(bundle, backend="tensorrt").embed(texts)
    monkeypatch.setenv(engine_cache.CACHE_ENV, str(tmp_path / "empty-cache"))  # only the bundle's engine is there
    again = mbert_edge.load(bundle, backend="tensorrt")
    assert again.backend.how == "bundle"
    assert np.allclose(again.embed(texts), built, atol=1e-3)


def test_load_uses_the_prebuilt_engine(copy_bundle, tmp_path, fake, monkeypatch):
    """Through ``mbert_edge.load``: the checksums of what it reads, then the backend takes the bundle's engine."""
    import shutil

    import mbert_edge
    from mbert_edge.backends import engine_cache

    root = copy_bundle("feature-extraction")
    m = Manifest.read(root / MANIFEST_NAME)
    cpu = next(f for f in m.model_files() if f.precision == "fp32")
    shutil.copyfile(root / cpu.path, root / TRT_FILE)  # the same graph, named and listed as the TensorRT file
    trt_entry = dataclasses.replace(cpu, path=TRT_FILE, backend="tensorrt", precision="fp16", profiles=(PROFILE,))
    m.files.append(trt_entry)
    m.write(root / MANIFEST_NAME)
    trt = fake()
    monkeypatch.setenv(engine_cache.CACHE_ENV, str(tmp_path / "cache"))
    assert build_engine(root, add_to_bundle=True)["added"]
    monkeypatch.setenv(engine_cache.CACHE_ENV, str(tmp_path / "empty"))
    model = mbert_edge.load(root, backend="tensorrt")
    assert model.backend.how == "bundle" and _builds(trt) == 1
    model.backend.close()
