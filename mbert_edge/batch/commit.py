"""The commit protocol: a part is written to a temporary name, fsynced, and renamed to its final name.

That rename is the one commit point: a part file under its final name is complete, and a shard is done
exactly when its part exists. Part names are fixed by the shard's index, so a shard scored twice (a retry,
a worker that outlived its parent) replaces its own part with the same rows and can never add a second copy.
The journal (``_journal.jsonl``, one line per commit with the counts) is for audit and a fast resume; when a
run died between a rename and its journal line, the resume reads the counts back from the part.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PLAN_NAME = "_job.json"
JOURNAL_NAME = "_journal.jsonl"
LOCK_NAME = "_lock"
MANIFEST_NAME = "_manifest.json"
SUCCESS_NAME = "_SUCCESS"
TMP_MARK = ".tmp-"
OWN_NAMES = (PLAN_NAME, JOURNAL_NAME, LOCK_NAME, MANIFEST_NAME, SUCCESS_NAME)


def part_name(index: int, ext: str) -> str:
    """The final name of shard ``index``'s part: zero-padded so that names sort in input order."""
    return f"part-{index:06d}.{ext}"


def single_name(ext: str) -> str:
    """The name of the merged output with ``--single-file``."""
    return f"scores.{ext}"


def tmp_path(final: Path) -> Path:
    """A temporary name next to ``final``, private to this process (hidden: starts with a dot)."""
    return final.with_name(f".{final.name}{TMP_MARK}{os.getpid()}")


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, final: Path) -> None:
    """Rename the fsynced ``tmp`` onto ``final`` (atomic on POSIX) and fsync the directory: the commit point."""
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file and a rename."""
    tmp = tmp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    commit(tmp, path)


def remove_temps(out: Path) -> list[str]:
    """Delete temporary files left by a run that died; return their names."""
    removed = []
    for p in out.iterdir():
        if p.name.startswith(".") and TMP_MARK in p.name:
            p.unlink(missing_ok=True)
            removed.append(p.name)
    if removed:
        fsync_dir(out)
    return removed


class Journal:
    """Append-only log of commits; a torn last line (a run killed while writing it) is ignored."""

    def __init__(self, out: Path) -> None:
        self.path = out / JOURNAL_NAME

    def read(self) -> dict[int, dict[str, Any]]:
        """The last entry per shard index."""
        entries: dict[int, dict[str, Any]] = {}
        if not self.path.exists():
            return entries
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(e, dict) and isinstance(e.get("shard"), int):
                    entries[e["shard"]] = e
        return entries

    def append(self, entry: dict[str, Any]) -> None:
        """Add one line and fsync it."""
        entry = {**entry, "time": round(time.time(), 3)}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def repair(self) -> None:
        """Drop a torn last line, so that later lines start on a line of their own."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            write_atomic(self.path, data[: data.rfind(b"\n") + 1])


def own_files(out: Path) -> Iterator[Path]:
    """Every file of a scoring job in ``out``: bookkeeping, parts, the merged output, temporary files."""
    for p in out.iterdir():
        n = p.name
        if n in OWN_NAMES or n.startswith("part-") or n.startswith("scores.") or (n.startswith(".") and TMP_MARK in n):
            yield p
