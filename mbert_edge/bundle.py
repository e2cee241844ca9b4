"""Open a bundle directory: read its manifest, check its format version and every file's checksum."""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from mbert_edge.errors import BundleFormatError, BundleIntegrityError, BundleNotFoundError
from mbert_edge.manifest import MANIFEST_NAME, FileEntry, Manifest
from mbert_edge.onnx_refs import OnnxParseError, external_data_locations

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A bundle on disk whose manifest has been read and validated."""

    path: Path
    manifest: Manifest

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> Bundle:
        """Open the bundle at ``path``.

        With ``verify=True`` (the default) every file listed in the manifest must exist with the recorded
        size and SHA-256; a missing, truncated or altered file raises
        :class:`~mbert_edge.errors.BundleIntegrityError`. ``verify=False`` still checks that the files exist
        and have the recorded size (cheap), but skips hashing: use it only for bundles you control.
        """
        root = Path(path)
        if not root.is_dir():
            raise BundleNotFoundError(
                f"no bundle directory at {root}; create one with `mbert-edge export SOURCE -o {root}`"
            )
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise BundleNotFoundError(
                f"{root} has no {MANIFEST_NAME}, so it is not an mbert-edge bundle (or an incomplete one); re-export it"
            )
        _check_inside(root, manifest_path, MANIFEST_NAME)
        bundle = cls(root, Manifest.read(manifest_path))
        for entry in bundle.manifest.files:
            bundle._check_file(entry, hash_it=verify)
        return bundle

    def file_path(self, entry: FileEntry) -> Path:
        """Absolute path of a file listed in the manifest."""
        return self.path / entry.path

    def verify(self, entries: list[FileEntry] | None = None) -> list[FileEntry]:
        """Hash ``entries`` (default: every file) against the manifest; raise on the first mismatch."""
        entries = list(self.manifest.files) if entries is None else entries
        for entry in entries:
            self._check_file(entry, hash_it=True)
        return entries

    def check_model_references(self, model: FileEntry) -> None:
        """Refuse an ONNX model file that reads tensor data from any file but its manifest ``external_data``.

        The checksums cover only the files the manifest lists; a graph naming another file (``../x``, an
        absolute path, or an unlisted file beside it) would load bytes that nothing verified. Raises
        :class:`~mbert_edge.errors.BundleFormatError`; nothing is loaded.
        """
        if model.format != "onnx":
            return
        try:
            locations = external_data_locations(self.file_path(model))
        except (OnnxParseError, OSError) as exc:
            raise BundleFormatError(
                f"model file {model.path} is not a readable ONNX file ({exc}); the bundle is damaged, re-export it"
            ) from exc
        # the graph names its data relative to the model file's folder, the manifest relative to the bundle's;
        # a location that is absolute or has a ".." part is never the listed file (".." after a link leads elsewhere)
        folder = posixpath.dirname(model.path)
        allowed = {posixpath.normpath(model.external_data)} if model.external_data else set()

        def is_listed(loc: str) -> bool:
            parts = loc.replace("\\", "/").split("/")
            if posixpath.isabs(loc) or ".." in parts:
                return False
            return posixpath.normpath(posixpath.join(folder, loc)) in allowed

        stray = sorted(loc for loc in locations if not is_listed(loc))
        if stray:
            listed = f"only its weights file {model.external_data!r}" if allowed else "no external data"
            raise BundleFormatError(
                f"model file {model.path} reads tensor data from {', '.join(map(repr, stray))}, but the manifest "
                f"allows {listed}: those bytes are not covered by any checksum; re-export the bundle"
            )

    def _check_file(self, entry: FileEntry, hash_it: bool) -> None:
        p = self.file_path(entry)
        _check_inside(self.path, p, entry.path)
        if not p.is_file():
            raise BundleIntegrityError(
                f"bundle file {entry.path} is missing from {self.path}; the bundle is incomplete, re-export or "
                "copy it again"
            )
        size = p.stat().st_size
        if size != entry.size:
            raise BundleIntegrityError(
                f"bundle file {entry.path} has {size} bytes, the manifest says {entry.size}: it was truncated or "
                "changed; re-export or copy the bundle again"
            )
        if hash_it:
            digest = sha256_file(p)
            if digest != entry.sha256:
                raise BundleIntegrityError(
                    f"bundle file {entry.path} fails its checksum (sha256 {digest[:12]}…, manifest "
                    f"{entry.sha256[:12]}…): it was altered or damaged; re-export or copy the bundle again"
                )
        log.debug("verified %s", entry.path)


def _check_inside(root: Path, path: Path, name: str) -> None:
    """Refuse a bundle file that is, or passes through, a symbolic link leading out of the bundle directory."""
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError) as exc:  # a link loop, an unreadable directory, a NUL in the path
        raise BundleIntegrityError(f"bundle file {name} cannot be resolved ({exc}); copy the bundle again") from exc
    if not inside:
        raise BundleIntegrityError(
            f"bundle file {name} is a symbolic link leading out of the bundle directory {root} (to "
            f"{path.resolve()}); a bundle must hold its own files: copy them in instead of linking"
        )


def swap_in(stage: Path, target: Path) -> None:
    """Make the finished directory ``stage`` become ``target`` by renames: an existing ``target`` is moved aside
    first, put back if the final rename fails, and deleted after it succeeds. How bundles are written whole (the
    export stage, a distilled checkpoint, a prebuilt engine added to a bundle): a reader sees the old directory or
    the new one, never a half-written one."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        target.rename(old)
    try:
        stage.rename(target)
    except OSError:
        if old is not None:
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
