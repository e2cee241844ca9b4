"""Teacher outputs per training text, computed once and kept.

The teacher runs on a text the first time a training batch holds it, in that batch; its output (pooled
vector, logits, or per-token logits) is stored here and reused in every later epoch, and it is saved with
each resume checkpoint (safetensors, never pickle), so a resumed run never recomputes it. Computing it
lazily rather than in one pass up front means that a time-bounded run pays the teacher only for the texts it
actually trains on. Hidden states (``hidden_weight > 0``) are too large to keep and are recomputed per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mbert_edge_export.errors import DistillError

POOLED, LOGITS, TOKEN_LOGITS = "pooled", "logits", "token_logits"


class TeacherCache:
    """A ``(texts, width)`` table (or, for per-token logits, ``(tokens, width)`` with offsets per text)."""

    def __init__(self, kind: str, lengths: Sequence[int], width: int) -> None:
        if kind not in (POOLED, LOGITS, TOKEN_LOGITS):
            raise ValueError(f"unknown teacher output kind {kind}")
        self.kind = kind
        self.width = width
        n = len(lengths)
        self.done = np.zeros(n, dtype=bool)
        if kind == TOKEN_LOGITS:
            self.offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.asarray(lengths, dtype=np.int64), out=self.offsets[1:])
            self.values = np.zeros((int(self.offsets[-1]), width), dtype=np.float32)
        else:
            self.offsets = np.arange(n + 1, dtype=np.int64)
            self.values = np.zeros((n, width), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.done)

    @property
    def filled(self) -> int:
        """How many texts have their teacher output."""
        return int(self.done.sum())

    def missing(self, idx: Sequence[int]) -> list[int]:
        """The texts of ``idx`` whose teacher output is not known yet."""
        return [i for i in idx if not self.done[i]]

    def put(self, idx: Sequence[int], outputs: np.ndarray, lengths: Sequence[int] | None = None) -> None:
        """Store outputs of texts ``idx``: ``(B, W)``, or ``(B, T, W)`` padded with ``lengths`` real tokens."""
        for row, i in enumerate(idx):
            if self.kind == TOKEN_LOGITS:
                assert lengths is not None
                self.values[self.offsets[i] : self.offsets[i + 1]] = outputs[row, : lengths[row]]
            else:
                self.values[i] = outputs[row]
            self.done[i] = True

    def get(self, idx: Sequence[int], width: int | None = None) -> np.ndarray:
        """Outputs of texts ``idx``: ``(B, W)``, or ``(B, width, W)`` zero-padded per-token logits."""
        if self.kind != TOKEN_LOGITS:
            return self.values[list(idx)]
        assert width is not None
        out = np.zeros((len(idx), width, self.width), dtype=np.float32)
        for row, i in enumerate(idx):
            part = self.values[self.offsets[i] : self.offsets[i + 1]]
            out[row, : len(part)] = part
        return out

    def save(self, path: Path, fingerprint: str) -> None:
        """Write the table to ``path`` (safetensors) under ``fingerprint``."""
        from safetensors.numpy import save_file

        save_file(
            {"values": self.values, "offsets": self.offsets, "done": self.done.astype(np.uint8)},
            str(path),
            metadata={"fingerprint": fingerprint, "kind": self.kind},
        )

    def load(self, path: Path, fingerprint: str) -> None:
        """Read a table written by :meth:`save` for the same run (same fingerprint and texts)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("fingerprint") != fingerprint or meta.get("kind") != self.kind:
                raise DistillError(f"{path} belongs to another distillation run; start over with --restart")
            values, offsets, done = f.get_tensor("values"), f.get_tensor("offsets"), f.get_tensor("done")
        if values.shape != self.values.shape or not np.array_equal(offsets, self.offsets):
            raise DistillError(f"{path} does not match this run's texts; start over with --restart")
        self.values, self.done = values.astype(np.float32, copy=False), done.astype(bool)
