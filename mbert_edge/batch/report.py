"""The report of a scoring job (returned by :func:`mbert_edge.batch.score`, printed by ``mbert-edge score``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ScoreReport:
    """What a job did. Counts cover the whole job (resumed parts included) unless named ``*_this_run``.

    ``truncated`` counts texts cut at the bundle's max_length; ``truncated_unknown_shards`` is the number of
    non-Parquet parts recovered without a journal line, whose truncation count could not be read back.
    """

    output_dir: str
    files: list[str]
    rows_in: int
    scored: int
    errors: int
    truncated: int
    shards: int
    shards_resumed: int
    rows_this_run: int
    wall_s: float
    rows_per_s: float
    engine: str
    workers: int
    threads_per_worker: int
    complete: bool = True
    truncated_unknown_shards: int = 0
    temp_files_removed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def summary(self) -> str:
        """One line for people."""
        resumed = f", {self.shards_resumed} of {self.shards} shards resumed" if self.shards_resumed else ""
        return (
            f"rows in {self.rows_in}, scored {self.scored}, errors {self.errors}, truncated {self.truncated}; "
            f"{self.rows_this_run} rows this run in {self.wall_s:.1f} s ({self.rows_per_s:.0f} rows/s, "
            f"{self.engine} engine, {self.workers} worker(s) x {self.threads_per_worker} thread(s){resumed}) "
            f"-> {self.output_dir}"
        )
