"""Where TensorRT engines live: the device probe, the engine cache's keys and files, and the load-or-build rule.

A TensorRT engine is tied to the GPU model and the TensorRT version, so it is built on the device that runs
it and cached. Cache layout (``$MBERT_EDGE_TENSORRT_CACHE``, else ``$XDG_CACHE_HOME/mbert-edge/tensorrt``)::

    <root>/<model sha256[:16]>/<key>.plan     one engine per key (see EngineKey)
    <root>/<model sha256[:16]>/<key>.json     what the key was made of, for people
    <root>/timing-<device and TensorRT>.cache  TensorRT's timing cache, shared by every model on that device

The key covers the model file's SHA-256, the precision, the optimization profile, the TensorRT version, the
GPU's name and compute capability and the builder optimization level: change any of them and a new engine
is built; nothing stale is ever loaded. Nothing here imports TensorRT or CUDA, so all of it is tested on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mbert_edge.errors import ShapeOutOfProfileError
from mbert_edge.manifest import ShapeProfile

log = logging.getLogger(__name__)

CACHE_ENV = "MBERT_EDGE_TENSORRT_CACHE"
T = TypeVar("T")


@dataclass(frozen=True)
class DeviceInfo:
    """The GPU an engine is built for."""

    name: str
    compute_capability: tuple[int, int]
    total_memory: int = 0
    integrated: bool = False  # Jetson: the GPU shares the system's memory


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; two loads with equal keys may share one engine."""

    model_sha256: str
    precision: str
    profile: ShapeProfile
    tensorrt_version: str
    device: str
    compute_capability: tuple[int, int]
    optimization_level: int = 3

    def digest(self) -> str:
        """A short stable hash of every field (the engine file's name)."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_root() -> Path:
    """The engine cache's root directory."""
    value = os.environ.get(CACHE_ENV, "")
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mbert-edge" / "tensorrt"


def engine_path(root: Path, key: EngineKey) -> Path:
    """The engine file for ``key``."""
    return root / key.model_sha256[:16] / f"{key.digest()}.plan"


def timing_cache_path(root: Path, device: DeviceInfo, tensorrt_version: str) -> Path:
    """TensorRT's timing cache for one device and TensorRT version (shared by every model)."""
    tag = hashlib.sha256(f"{device.name}|{device.compute_capability}|{tensorrt_version}".encode()).hexdigest()[:16]
    return root / f"timing-{tag}.cache"


def read_profile_override(root: Path, model_sha256: str) -> ShapeProfile | None:
    """The profile ``mbert-edge build-engine`` was given for this model file, when it was given other limits
    than the manifest's; later loads use it (and so find the engine it built)."""
    path = root / model_sha256[:16] / "profile.json"
    try:
        d = json.loads(path.read_text())
        return ShapeProfile(min=tuple(d["min"]), opt=tuple(d["opt"]), max=tuple(d["max"]))  # type: ignore[arg-type]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_profile_override(root: Path, model_sha256: str, profile: ShapeProfile | None) -> None:
    """Remember ``profile`` for later loads of this model file; None forgets it (back to the manifest's)."""
    path = root / model_sha256[:16] / "profile.json"
    if profile is None:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, json.dumps(dataclasses.asdict(profile)).encode())


def select_profile(profiles: Sequence[ShapeProfile], batch: int, sequence: int) -> int:
    """Index of the first profile that admits a ``batch`` x ``sequence`` input; raises
    :class:`ShapeOutOfProfileError` (the most common TensorRT user error, caught before TensorRT sees it)."""
    for i, p in enumerate(profiles):
        if p.admits(batch, sequence):
            return i
    ranges = "; ".join(f"batch {p.min[0]}-{p.max[0]} x tokens {p.min[1]}-{p.max[1]}" for p in profiles)
    raise ShapeOutOfProfileError(
        f"a batch of {batch} texts x {sequence} tokens is outside the TensorRT engine's profiles ({ranges}); "
        "pass a smaller batch_size, or build an engine with larger limits: "
        "mbert-edge build-engine BUNDLE --max-batch N --max-length N"
    )


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers see the old file or the new
    one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path.lock`` (POSIX), so that two processes loading the same bundle build
    its engine once: the second waits, then finds the engine in the cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock, at worst two identical builds
        yield
        return
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_or_build(
    path: Path,
    deserialize: Callable[[bytes], T | None],
    build: Callable[[], bytes],
    describe: dict | None = None,
) -> tuple[T, str]:
    """The engine at ``path`` if it deserializes, else a fresh one from ``build()`` (stored at ``path``).

    Returns ``(engine, how)`` with ``how`` one of ``"cache"``, ``"built"`` or ``"rebuilt"`` (an engine was
    cached but did not deserialize: a truncated file, or one from another TensorRT or GPU, which NVIDIA says
    can only be told by trying). ``deserialize`` returns None on failure, as TensorRT's does; ``build``
    raises when it cannot build.
    """
    with build_lock(path):
        how = "built"
        if path.exists():
            engine = deserialize(path.read_bytes())
            if engine is not None:
                return engine, "cache"
            log.warning("cached TensorRT engine %s does not deserialize here; rebuilding it", path)
            how = "rebuilt"
        plan = build()
        engine = deserialize(plan)
        if engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine it just built")
        try:
            write_atomic(path, plan)
            if describe is not None:
                write_atomic(path.with_suffix(".json"), json.dumps(describe, indent=2, default=list).encode())
        except OSError as exc:  # an unwritable cache costs the next load a build, nothing more
            log.warning(
                "could not store the TensorRT engine in %s (%s); set %s to a writable directory", path, exc, CACHE_ENV
            )
        return engine, how


def nvidia_gpu_present(root: Path = Path("/")) -> tuple[bool, str]:
    """Whether this machine shows an NVIDIA GPU to its OS, without loading any CUDA library: a desktop/server
    driver (``/proc/driver/nvidia/gpus/*`` or ``/dev/nvidia0``) or a Jetson (``/etc/nv_tegra_release`` with
    its GPU device). Returns ``(present, what was found or what is missing)``."""
    gpus = root / "proc/driver/nvidia/gpus"
    if gpus.is_dir() and any(gpus.iterdir()):
        return True, f"NVIDIA driver lists {len(list(gpus.iterdir()))} GPU(s)"
    if (root / "dev/nvidia0").exists():
        return True, "/dev/nvidia0"
    if (root / "etc/nv_tegra_release").exists():
        for dev in ("dev/nvhost-ctrl-gpu", "dev/nvgpu/igpu0", "dev/nvidiactl"):
            if (root / dev).exists():
                return True, f"Jetson ({dev})"
        return False, "a Jetson without its GPU device nodes (in a container? run it with --runtime nvidia)"
    return False, "no NVIDIA GPU: no NVIDIA driver (/proc/driver/nvidia/gpus) and no /dev/nvidia0"
