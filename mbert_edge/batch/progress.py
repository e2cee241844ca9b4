"""Progress of a job: a bar (rows, rows/s, ETA) on a terminal, else a log line every 30 seconds."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("mbert_edge.batch")

LOG_EVERY_S = 30.0


class Progress:
    """Counts scored rows of this run; shows a tqdm bar when stderr is a terminal and ``quiet`` is off."""

    def __init__(self, total: int, done: int, quiet: bool = False, log_every_s: float = LOG_EVERY_S) -> None:
        self.total, self.done = total, done
        self.start = time.monotonic()
        self.rows_this_run = 0
        self._last_log = self.start
        self._log_every = log_every_s
        self._bar: Any = None
        if not quiet and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, initial=done, unit="rows", unit_scale=True, dynamic_ncols=True)
            except ImportError:
                self._bar = None

    def update(self, rows: int) -> None:
        """``rows`` more rows are committed."""
        self.done += rows
        self.rows_this_run += rows
        if self._bar is not None:
            self._bar.update(rows)
            return
        now = time.monotonic()
        if now - self._last_log >= self._log_every:
            self._last_log = now
            rate = self.rows_this_run / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate else float("inf")
            log.info("scored %d/%d rows (%.0f rows/s, ETA %.0f s)", self.done, self.total, rate, eta)

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
