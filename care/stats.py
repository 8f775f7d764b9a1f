"""Uncertainty for the numbers this suite reports: intervals and paired comparisons.

Every number that compares two models or two runs carries a 95 % interval; where the items are
shared (the same test questions), the comparison is paired by item. The functions are plain
numpy/scipy on per-item scores (1.0 right, 0.0 wrong, or any float score):

- :func:`wilson_interval` — one accuracy from one greedy run (k right of n);
- :func:`paired_bootstrap` — the difference of two models' mean scores on the same items,
  resampling items (both models' scores of an item move together);
- :func:`mean_interval` — the mean over independent runs (seeds) with a Student-t interval;
- :func:`mcnemar_exact` and :func:`holm` — the exact McNemar test of two classifiers on the same
  items, and Holm's step-down correction across several such tests.

>>> i = wilson_interval(45, 100); (round(i.low, 3), round(i.high, 3))
(0.356, 0.548)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
"""The level of every interval this suite prints."""

BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided interval at `level`.

    `n` counts what the estimate averages: items for an accuracy or a paired difference, runs
    for a mean over seeds.
    """

    estimate: float
    low: float
    high: float
    n: int
    level: float = CONFIDENCE

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (a difference that is shown)."""
        return self.low > 0.0 or self.high < 0.0

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        """``"41.3 [37.2, 45.5]"`` (percent points by default); ``"-"`` for a NaN estimate."""
        if math.isnan(self.estimate):
            return "-"
        e, lo, hi = (round(v * scale, digits) for v in (self.estimate, self.low, self.high))
        if math.isnan(lo) or math.isnan(hi):
            return f"{e:.{digits}f}"
        return f"{e:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _scores(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one score per item (1-D), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds a NaN or infinite score")
    return array


def wilson_interval(k: int, n: int, level: float = CONFIDENCE) -> Interval:
    """Wilson score interval of a proportion `k / n` (well behaved near 0 and 1, unlike the
    normal approximation).

    >>> i = wilson_interval(0, 10); (i.estimate, round(i.low, 3), round(i.high, 3))
    (0.0, 0.0, 0.278)
    """
    if n <= 0:
        raise ValueError(f"n must be > 0 items, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n={n}], got {k}")
    z = float(scipy_stats.norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At k = 0 (k = n) the bound is exactly 0 (1); centre - half leaves float noise like 3e-17.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Interval(p, low, high, n, level)


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = CONFIDENCE,
) -> Interval:
    """Mean of ``b - a`` over shared items with a percentile bootstrap interval.

    Items are resampled with replacement and each resample keeps an item's two scores
    together, so the interval reflects how much the *difference* varies across items (much
    narrower than two independent intervals when the models agree on most items). The
    resampling is seeded: the same inputs give the same interval.

    Args:
        a, b: per-item scores of the baseline and of the model compared with it, item i of `a`
            and of `b` being the same question.

    >>> paired_bootstrap([0, 0, 1, 1] * 25, [1, 0, 1, 1] * 25).estimate
    0.25
    """
    a, b = _scores(a, "a"), _scores(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must score the same items: {a.shape[0]} vs {b.shape[0]} scores")
    if a.size == 0:
        raise ValueError("a and b are empty: no items to compare")
    difference = b - a
    rng = np.random.default_rng(seed)
    # Resample in blocks so memory stays bounded for large test sets.
    means = np.empty(resamples)
    block = max(1, 4_000_000 // difference.size)
    for start in range(0, resamples, block):
        count = min(block, resamples - start)
        picks = rng.integers(0, difference.size, size=(count, difference.size))
        means[start : start + count] = difference[picks].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(difference.mean()), float(low), float(high), int(difference.size), level)


def mean_interval(values: Sequence[float] | np.ndarray, level: float = CONFIDENCE) -> Interval:
    """Mean of independent runs (e.g. one value per seed) with a Student-t interval.

    One run gives the value with a NaN interval (nothing to estimate the spread from).

    >>> i = mean_interval([0.5, 0.6, 0.7]); (round(i.estimate, 3), round(i.low, 3), round(i.high, 3))
    (0.6, 0.352, 0.848)
    """
    array = _scores(values, "values")
    if array.size == 0:
        raise ValueError("values is empty: no runs to average")
    mean = float(array.mean())
    if array.size == 1:
        return Interval(mean, math.nan, math.nan, 1, level)
    sem = float(array.std(ddof=1)) / math.sqrt(array.size)
    half = float(scipy_stats.t.ppf(0.5 + level / 2, df=array.size - 1)) * sem
    return Interval(mean, mean - half, mean + half, int(array.size), level)


def mcnemar_exact(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided exact McNemar p-value for two models' right/wrong verdicts on shared items.

    Only discordant items count: `b` right where `a` is wrong, and the reverse. Under the null
    each discordant item goes either way with probability 1/2 (a binomial test).

    >>> round(mcnemar_exact([0] * 10 + [1] * 10, [1] * 10 + [1] * 10), 4)   # 10 fixed, 0 broken
    0.002
    """
    a, b = _scores(a, "a") > 0.5, _scores(b, "b") > 0.5
    if a.shape != b.shape:
        raise ValueError(f"a and b must score the same items: {a.shape[0]} vs {b.shape[0]}")
    fixed = int(np.sum(~a & b))
    broken = int(np.sum(a & ~b))
    if fixed + broken == 0:
        return 1.0
    return float(scipy_stats.binomtest(fixed, fixed + broken, 0.5).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error control), in the input order.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("p_values must be a flat list")
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, (p.size - rank) * p[index])
        adjusted[index] = min(1.0, running)
    # 12 significant digits drop float noise (0.030000000000000002) but keep p = 2e-25, which
    # rounding to 12 decimals turned into 0.
    return [float(f"{v:.12g}") for v in adjusted]
