"""A pytest plugin for running the runtime's own test files on aarch64 under qemu-user, without torch.

``tests/aarch64/run.sh`` runs ``pytest --noconftest -p tests.aarch64.pytest_prebuilt FILES``: ``tests/conftest.py``
is not loaded (its fixtures build bundles with the export stage, which needs torch), and this plugin provides
its fixtures from bundles that ``tests/aarch64/check.py record`` exported on x86_64 with the same vocabulary and
checkpoints (``MBERT_EDGE_AARCH64_BUNDLES``):

- ``bundles`` and ``copy_bundle`` as in ``tests/conftest.py``;
- ``checkpoints`` and ``vocab_file`` skip the test (they need torch or the corpus package);
- a test whose source imports the export stage, ``onnx``, ``torch`` or ``transformers``, or that runs the CLI's
  ``export`` command (a parameter list starting with ``"export"``), is skipped.

Under qemu-user, ``sys.executable`` is an aarch64 binary that the host kernel cannot start by itself (no
binfmt_misc handler is needed or registered): ``subprocess`` calls that start it are prefixed with the emulator
command in ``MBERT_EDGE_AARCH64_QEMU`` (e.g. ``qemu-aarch64-static -L SYSROOT``).
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NEEDS_EXPORT = re.compile(r"\b(mbert_edge_export|import onnx\b|from onnx\b|import torch|import transformers)")
_Popen = subprocess.Popen


class _EmulatedPopen(_Popen):  # type: ignore[misc,valid-type]
    """``subprocess.Popen`` that starts ``sys.executable`` through the emulator."""

    def __init__(self, args, *a, **kw):
        prefix = shlex.split(os.environ.get("MBERT_EDGE_AARCH64_QEMU", ""))
        if prefix and isinstance(args, (list, tuple)) and args and str(args[0]) == sys.executable:
            args = [*prefix, *args]
        super().__init__(args, *a, **kw)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("MBERT_EDGE_AARCH64_QEMU"):
        subprocess.Popen = _EmulatedPopen  # type: ignore[misc]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fn = getattr(item, "function", None)
        try:
            source = inspect.getsource(fn) if fn is not None else ""
        except (OSError, TypeError):
            source = ""
        params = getattr(getattr(item, "callspec", None), "params", {})
        runs_export = any(isinstance(v, (list, tuple)) and v[:1] == ["export"] for v in params.values())
        if runs_export or NEEDS_EXPORT.search(source):
            item.add_marker(pytest.mark.skip(reason="needs the export stage (torch/onnx): not installed on aarch64"))


def _root() -> Path:
    root = os.environ.get("MBERT_EDGE_AARCH64_BUNDLES")
    if not root:
        pytest.skip("MBERT_EDGE_AARCH64_BUNDLES is not set (tests/aarch64/run.sh sets it)")
    return Path(root)


@pytest.fixture(scope="session")
def bundles() -> dict[str, Path]:
    root = _root()
    return {t: root / t for t in ("text-classification", "token-classification", "feature-extraction")}


@pytest.fixture
def copy_bundle(tmp_path, bundles):
    def _copy(task: str) -> Path:
        dst = tmp_path / task
        shutil.copytree(bundles[task], dst)
        return dst

    return _copy


@pytest.fixture(scope="session")
def checkpoints():
    pytest.skip("needs torch (tiny checkpoints are built by transformers): not installed on aarch64")


@pytest.fixture(scope="session")
def vocab_file():
    pytest.skip("needs the dataset-build corpus and the export stage: not installed on aarch64")
