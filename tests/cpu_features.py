"""What the CPU running the tests can do, read from ``/proc/cpuinfo`` (stdlib only: tests/aarch64 imports it too)."""

from __future__ import annotations

import functools
from pathlib import Path

INT8_DOT_PRODUCT = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@functools.cache  # /proc/cpuinfo is read once per process, not at every check
def has_vnni() -> bool:
    """Whether this x86 CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX).

    Without them ONNX Runtime's (and OpenVINO's) u8s8 kernels can saturate, so INT8 results move. True where
    there is no ``/proc/cpuinfo`` or no x86 ``flags`` line, so that such machines keep the stricter checks.
    """
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return True
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), None)
    return True if flags is None else bool(INT8_DOT_PRODUCT & set(flags))
