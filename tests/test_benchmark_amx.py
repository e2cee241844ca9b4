"""The AMX on/off benchmark (benchmarks/amx.py): the shim refuses exactly the AMX request, and one round on a
tiny bundle measures both modes with the kernel's answer recorded. No timing is asserted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_script

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or os.uname().machine != "x86_64" or not (shutil.which("cc") or shutil.which("gcc")),
    reason="the shim is an x86-64 Linux LD_PRELOAD library built with a C compiler",
)

A = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "amx.py", "bench_amx")

PROBE = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
r = libc.syscall(158, 0x1023, 18)  # arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
e = ctypes.get_errno()
pid = libc.syscall(39)  # getpid: every other call goes through
print(json.dumps({"result": r, "errno": e, "pid_ok": pid == os.getpid()}))
"""


def _probe(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_shim_refuses_only_the_amx_request(tmp_path):
    """With the shim the AMX request fails with EPERM whatever the CPU; other system calls still work. Without
    it the kernel answers: granted on a CPU with AMX, refused otherwise (never with the shim's EPERM)."""
    shim = A.build_shim(tmp_path)
    plain = _probe(dict(os.environ))
    shimmed = _probe({**os.environ, "LD_PRELOAD": str(shim)})
    assert shimmed == {"result": -1, "errno": 1, "pid_ok": True}
    assert plain["pid_ok"]
    if A.cpu_has_amx_int8():
        assert plain["result"] == 0
    else:
        assert plain["result"] == -1 and plain["errno"] != 1


def test_one_round_on_a_tiny_bundle(bundles, tmp_path):
    """Both modes run in their own processes; the no-AMX process never holds AMX tile state, the plain one
    holds it exactly when the CPU has AMX (ONNX Runtime asked for it); every shape is timed for the bundle."""
    bundle = Path(bundles["feature-extraction"])
    result = A.measure({"tiny": bundle}, ["en", "de"], threads=1, rounds=1, seed=0, work=tmp_path)
    assert result["granted"] == {"amx": [A.cpu_has_amx_int8()], "no-amx": [False]}
    for mode in A.MODES:
        shapes = result["latency"][mode]["tiny"]
        assert set(shapes) == {"b1s16", "b1s128", "b32s128"}
        assert shapes["b1s16"]["n"] == 10 and shapes["b32s128"]["n"] == 1  # one round: 10 repeats at b1 x s16
    assert set(result["amx_speedup"]["tiny"]) == {"b1s16", "b1s128", "b32s128"}
    page = A.markdown(
        {**result, "title": "tiny", "machine": {"cores": 2}, "versions": {}, "threads": 1, "rounds": 1,
         "started": "now", "command": "amx.py"}
    )  # fmt: skip
    assert "| tiny | b1s128 |" in page and "no-amx 0/1" in page
