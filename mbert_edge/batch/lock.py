"""One run per output directory: an exclusive ``flock`` on ``OUT_DIR/_lock``, released when the process dies."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from mbert_edge.batch.commit import LOCK_NAME
from mbert_edge.batch.errors import JobLockedError


class JobLock:
    """Held for the whole run; the kernel releases it even after SIGKILL, so a dead run never blocks a resume."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> JobLock:
        """Take the lock or raise :class:`JobLockedError` naming the holder's process id."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise JobLockedError(
                f"another run (process {holder}) is scoring into {self.path.parent}; wait for it to finish, or "
                "stop it and run this command again to resume"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let go of the lock (the file stays: removing it could let two runs lock different files)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
