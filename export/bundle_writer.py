"""Write a bundle: stage every file next to the output, checksum it, write the manifest, then move it in.

The output directory only ever holds a complete bundle: files are written into a hidden staging directory
beside it and renamed into place at the end. An existing bundle is replaced only with ``force=True``, and
only after the new one is complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
from onnx import external_data_helper

from mbert_edge.bundle import sha256_file, swap_in
from mbert_edge.manifest import MANIFEST_NAME, FileEntry, Manifest
from mbert_edge_export.errors import ExportError

log = logging.getLogger(__name__)


def check_output(
    output: Path, force: bool, *, source: str | Path | None = None, replaceable: tuple[str, ...] = (MANIFEST_NAME,)
) -> None:
    """Fail early, before any work, when ``output`` exists and may not be replaced.

    ``--force`` replaces only an earlier result (a directory holding one of ``replaceable``: a bundle's
    manifest by default), never other files; and never the ``source`` being read, nor a directory holding it.
    """
    if output.exists() and not output.is_dir():
        raise ExportError(f"{output} exists and is a file; choose another output directory")
    if source is not None and Path(source).exists():
        src, out = Path(source).resolve(), output.resolve()
        if src == out or src.is_relative_to(out):
            raise ExportError(f"the output {output} would replace the source {source}; choose another output directory")
    if output.is_dir() and any(output.iterdir()):
        if not force:
            raise ExportError(
                f"{output} already exists and is not empty; pass --force to replace it, or choose another"
            )
        if not any((output / name).exists() for name in replaceable):
            raise ExportError(
                f"{output} is not empty and holds no {' or '.join(replaceable)}: --force replaces only an earlier "
                "result; remove it yourself or choose another output directory"
            )


@contextmanager
def staging_dir(output: Path) -> Iterator[Path]:
    """A temporary directory on the same filesystem as ``output`` (so the final rename is atomic)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_entry(stage: Path, name: str, role: str, **model_fields: str | bool) -> FileEntry:
    """Checksum a staged file into its manifest entry."""
    p = stage / name
    return FileEntry(path=name, role=role, size=p.stat().st_size, sha256=sha256_file(p), **model_fields)


WEIGHTS_SUFFIX = ".data"
_PAGE = 4096  # tensors start on page boundaries, so ONNX Runtime can map them instead of copying


def model_entries(stage: Path, name: str, **model_fields: str | bool) -> list[FileEntry]:
    """Store the staged ONNX model ``name`` as a small graph file plus a weights file; return both entries.

    The tensors go into ``<name>.data`` (ONNX external data), each one page-aligned. ONNX Runtime then maps
    the weights file instead of parsing and copying every tensor out of one protobuf: on mBERT-base INT8
    that cuts load time from 0.25 to 0.10 s and the resident memory after load from 313 to 141 MB, and rows
    of the 120k-token embedding table that no text uses are never read from disk.
    """
    path = stage / name
    data_name = name + WEIGHTS_SUFFIX
    model = onnx.load(str(path))  # also reads external data written by earlier steps
    external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=True, location=data_name)
    offset = 0
    for tensor in model.graph.initializer:
        if not external_data_helper.uses_external_data(tensor):
            continue
        offset = -(-offset // _PAGE) * _PAGE
        external_data_helper.set_external_data(tensor, data_name, offset=offset, length=len(tensor.raw_data))
        offset += len(tensor.raw_data)
    for leftover in stage.glob(f"{name}*.data"):  # data files of an earlier save, if any
        leftover.unlink()
    onnx.save_model(model, str(path))
    os.chmod(stage / data_name, path.stat().st_mode & 0o777)  # onnx creates it owner-only; match the graph file
    log.debug("%s: graph %d bytes, weights %d bytes", name, path.stat().st_size, (stage / data_name).stat().st_size)
    return [
        file_entry(stage, name, "model", external_data=data_name, **model_fields),
        file_entry(stage, data_name, "weights"),
    ]


def move_into_place(stage: Path, output: Path, force: bool, replaceable: tuple[str, ...] = (MANIFEST_NAME,)) -> None:
    """Rename the finished directory ``stage`` to ``output`` (an existing ``output`` is replaced only with
    ``force`` and when it holds one of ``replaceable``, and restored if the rename fails)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # mkdtemp made it owner-only; the result is as readable as any new directory
    check_output(output, force, replaceable=replaceable)
    swap_in(stage, output)


def commit(stage: Path, manifest: Manifest, output: Path, force: bool) -> Path:
    """Write the manifest into ``stage`` and move the finished bundle to ``output``."""
    manifest.write(stage / MANIFEST_NAME)
    move_into_place(stage, output, force)
    log.info("bundle written to %s", output)
    return output
