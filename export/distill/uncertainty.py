"""How sure a per-language retention figure is, given how few held-out texts measured it.

Retention figures are ratios of counts on small held-out sets: parallel sentences looked up both ways per
language (700 since 2026-12-02, 100 before), ~30 held-out paragraphs per language. One lookup of 200 moves a
retrieval ratio by ~0.005 and one paragraph of 29 moves a topic accuracy by 0.034, so a gap of that size between
a student and a 97% target can be the sample, not the model. This module puts an interval on each figure, from
the same counts:

* **Paired hits** (the candidate and the reference scored on the same units: lookups, paragraphs) fall into four
  cells: both right, only the candidate right, only the reference right, neither. Their probabilities get a
  Dirichlet posterior with Jeffreys' prior (1/2 per cell), and the retention ``P(candidate right) /
  P(reference right)`` is read from draws of it. Unlike a percentile bootstrap, this does not collapse to a point
  when the two models never disagree in the sample.
* **A proportion** (agreement with the reference: k of n) gets Jeffreys' interval, the Beta(k + 1/2, n - k + 1/2)
  quantiles (Brown, Cai and DasGupta 2001 recommend it over the Wald interval for small n).
* **A mean** (the cosine to the teacher over ~30 paragraphs) gets the normal interval, mean +- 1.96 standard
  errors.
* **Against a threshold**, a language is above it (its whole interval is), under it (its whole interval is), or
  too close to call with these texts. The worst of several languages is what the targets judge, and it reads low: with
  eight languages measured to +-0.03 each, the smallest figure is expected about 1.4 standard errors under their
  common value even when all eight are equal. So a worst language a point under the threshold is, as often as
  not, a language the texts cannot decide, which the verdict says.

Limits, stated where the figures are read:

* Units are treated as independent. A lookup among the same sentences is not quite, and the words of one text
  (taggers) are far from it, so those intervals are narrower than they should be.
* Coverage is ~95% at 200 units. At 25-30 units, where the candidate only loses, it is 91-94%: the prior's half
  count in the empty "only the candidate right" cell pulls the interval toward 1.
* Each interval is per language. No correction is made for eight languages read at once, nor for picking the
  worst after looking: with eight languages exactly at a threshold, one is called "under" about one time in six.
* A retention that is the smaller of two figures (cosine, retrieval ratio) gets the smaller of their two
  intervals' bounds, which covers at least 92.5%.
* Bounds come from 20,000 seeded draws (same counts, same interval) and carry a simulation error of ~0.0005.
  :func:`against` treats a bound within :data:`TOLERANCE` of the threshold as too close to call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

LEVEL = 0.95  #: coverage of the intervals
DRAWS = 20_000  #: posterior draws per figure
SEED = 0
PRIOR = 0.5  #: Jeffreys: half a count per cell
TOLERANCE = 0.001  #: a bound this close to a threshold is too close to call (the draws' simulation error is ~0.0005)


@dataclass(frozen=True)
class PairedCounts:
    """Paired outcomes of a candidate and a reference on the same units."""

    both: int
    candidate_only: int
    reference_only: int
    neither: int

    @classmethod
    def from_hits(cls, candidate: Sequence[bool] | np.ndarray, reference: Sequence[bool] | np.ndarray) -> PairedCounts:
        """Count the four cells from per-unit hits (equal lengths; truthy = right)."""
        c = np.asarray(candidate, dtype=bool)
        r = np.asarray(reference, dtype=bool)
        if c.shape != r.shape or c.ndim != 1:
            raise ValueError(f"paired hits must be two 1-D arrays of one length, got {c.shape} and {r.shape}")
        return cls(int((c & r).sum()), int((c & ~r).sum()), int((~c & r).sum()), int((~c & ~r).sum()))

    @classmethod
    def from_dict(cls, d: Mapping[str, int]) -> PairedCounts:
        return cls(int(d["both"]), int(d["candidate_only"]), int(d["reference_only"]), int(d["neither"]))

    def to_dict(self) -> dict[str, int]:
        return {
            "both": self.both,
            "candidate_only": self.candidate_only,
            "reference_only": self.reference_only,
            "neither": self.neither,
        }

    @property
    def units(self) -> int:
        return self.both + self.candidate_only + self.reference_only + self.neither

    @property
    def ratio(self) -> float | None:
        """The measured retention: the candidate's hits over the reference's (None when the reference has none)."""
        ref = self.both + self.reference_only
        return (self.both + self.candidate_only) / ref if ref else None

    def ratio_draws(self, rng: np.random.Generator, draws: int = DRAWS) -> np.ndarray:
        """Posterior draws of ``P(candidate right) / P(reference right)``."""
        alpha = np.array([self.both, self.candidate_only, self.reference_only, self.neither], dtype=float) + PRIOR
        p = rng.dirichlet(alpha, size=draws)
        return (p[:, 0] + p[:, 1]) / (p[:, 0] + p[:, 2])


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _bounds(draws: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    lo, hi = np.quantile(draws, [tail, 1 - tail])
    return float(lo), float(hi)


def ratio_interval(counts: PairedCounts, *, level: float = LEVEL, seed: int = SEED) -> tuple[float, float]:
    """The ``level`` interval of a paired retention ratio (the reference must be right on some unit)."""
    if counts.ratio is None:
        raise ValueError("no retention ratio: the reference is right on no unit")
    return _bounds(counts.ratio_draws(_rng(seed)), level)


def proportion_draws(k: int, n: int, rng: np.random.Generator, draws: int = DRAWS) -> np.ndarray:
    """Draws of a proportion's Jeffreys posterior, Beta(k + 1/2, n - k + 1/2)."""
    if not 0 <= k <= n:
        raise ValueError(f"a proportion needs 0 <= k <= n, got k={k}, n={n}")
    return rng.beta(k + PRIOR, n - k + PRIOR, size=draws)


def proportion_interval(k: int, n: int, *, level: float = LEVEL, seed: int = SEED) -> tuple[float, float]:
    """Jeffreys' ``level`` interval for k successes of n (by draws; within ~0.003 of the exact quantiles)."""
    return _bounds(proportion_draws(k, n, _rng(seed)), level)


def mean_interval(values: Sequence[float] | np.ndarray, *, level: float = LEVEL) -> tuple[float, float] | None:
    """The normal ``level`` interval of a mean; None for fewer than two values (no spread to judge it by)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return None
    m = float(v.mean())
    half = NormalDist().inv_cdf(0.5 + level / 2) * float(v.std(ddof=1)) / np.sqrt(len(v))
    return m - half, m + half


def rounded(bounds: Sequence[float], digits: int = 4) -> list[float]:
    """Bounds rounded outward (the lower down, the upper up), so that a shown interval never claims more."""
    scale = 10**digits
    return [float(np.floor(bounds[0] * scale) / scale), float(np.ceil(bounds[1] * scale) / scale)]


def format_interval(bounds: Sequence[float], digits: int = 3) -> str:
    """``lo-hi`` at ``digits`` digits, rounded outward (the form every report and table prints)."""
    lo, hi = rounded(bounds, digits)
    return f"{lo:.{digits}f}-{hi:.{digits}f}"


def against(intervals: Mapping[str, Sequence[float] | None], threshold: float) -> dict[str, list[str]]:
    """Which languages' retention is above ``threshold`` (the whole interval is), under it (the whole interval
    is), or too close to call with these texts (the threshold inside the interval, or within
    :data:`TOLERANCE` of a bound)."""
    out: dict[str, list[str]] = {"above": [], "below": [], "undecided": []}
    for lang in sorted(intervals):
        iv = intervals[lang]
        if not iv:
            continue
        lo, hi = iv
        if lo >= threshold + TOLERANCE:
            out["above"].append(lang)
        elif hi < threshold - TOLERANCE:
            out["below"].append(lang)
        else:
            out["undecided"].append(lang)
    return out


def against_text(groups: Mapping[str, Sequence[str]], threshold: float) -> str:
    """:func:`against`'s verdict in words: ``under 0.97 beyond sampling error: ...; too close to call: ...``."""
    under = ", ".join(groups["below"]) or "none"
    close = ", ".join(groups["undecided"]) or "none"
    return f"under {threshold:g} beyond sampling error: {under}; too close to call: {close}"


__all__ = [
    "DRAWS",
    "LEVEL",
    "TOLERANCE",
    "PairedCounts",
    "against",
    "against_text",
    "format_interval",
    "mean_interval",
    "proportion_draws",
    "proportion_interval",
    "ratio_interval",
    "rounded",
]
