"""Training-smoothness metrics computed from the step logs (docs/algorithm.md section 8).

Inputs are 1-D sequences of per-step values (numpy arrays or lists of floats) in step order;
``None`` or a non-finite value marks a step where the metric is missing. Differences are taken
between consecutive FINITE points, so a missing step joins its neighbours instead of breaking
the curve. These run on logs after (or beside) training, not on the GPU hot path, so numpy is
used throughout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real

import numpy as np

__all__ = [
    "debiased_ema",
    "detrended_iqr",
    "max_drawdown",
    "smoothness_summary",
    "spike_count",
    "step_diff_std",
]

SeriesLike = Sequence[float | None] | np.ndarray

# steps.jsonl key of each series read by smoothness_summary
_ACC_KEY = "acc/mean"
_REWARD_KEY = "reward/mean"
_GRAD_NORM_KEY = "grad_norm"
_KL_KEY = "loss/kl"


def _as_series(values: SeriesLike, name: str = "values") -> np.ndarray:
    """1-D float64 array with NaN for missing (None / non-finite) points."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {values.shape}")
        if values.dtype == object:
            values = values.tolist()
        else:
            try:
                series = values.astype(np.float64)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{name} must hold numbers, got dtype {values.dtype}") from error
            return np.where(np.isfinite(series), series, np.nan)
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(
            f"{name} must be a 1-D list or numpy array of floats, got {type(values).__name__}"
        )
    series = np.empty(len(values), dtype=np.float64)
    for position, value in enumerate(values):
        if value is None:
            series[position] = np.nan
        elif isinstance(value, Real) and not isinstance(value, bool):
            series[position] = float(value)
        else:
            raise ValueError(
                f"{name}[{position}] = {value!r} is not a number or None (missing step)"
            )
    return np.where(np.isfinite(series), series, np.nan)


def _finite_points(values: SeriesLike, name: str = "values") -> np.ndarray:
    series = _as_series(values, name)
    return series[np.isfinite(series)]


def debiased_ema(values: SeriesLike, weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average (its "smoothing" slider).

    Over the finite points in order: ``last = w·last + (1−w)·y; n += 1; out = last / (1 − w^n)``
    with ``last = 0, n = 0`` at the start. The division removes the pull towards the zero start,
    so the first output equals the first point. Missing points are NaN in the output and do not
    update the state. ``weight = 0`` returns the finite points unchanged.

    Args:
        values: [T] per-step values, None/NaN = missing.
        weight: smoothing w in [0, 1).

    Returns:
        float64 array [T].

    Raises:
        ValueError: weight outside [0, 1) or not finite; values not 1-D numbers.

    Example (w = 0.5):
        >>> debiased_ema([1.0, None, 2.0, 3.0], 0.5)
        array([1.        ,        nan, 1.66666667, 2.42857143])   # 1, 5/3, 17/7
    """
    if isinstance(weight, bool) or not isinstance(weight, Real):
        raise ValueError(f"weight must be a float in [0, 1), got {weight!r}")
    weight = float(weight)
    if not (0.0 <= weight < 1.0):
        raise ValueError(
            f"weight must be in [0, 1) (0 = no smoothing; 1 would never move), got {weight}"
        )
    series = _as_series(values)
    smoothed = np.full_like(series, np.nan)
    last = 0.0
    n_seen = 0
    # A recurrence over steps (not over groups): each output depends on the previous state.
    for position, value in enumerate(series):
        if not math.isfinite(value):
            continue
        last = weight * last + (1.0 - weight) * value
        n_seen += 1
        smoothed[position] = last / (1.0 - weight**n_seen)
    return smoothed


def step_diff_std(values: SeriesLike) -> float:
    """Population std of the differences between consecutive finite points.

    A noisy curve has large step-to-step jumps whatever its trend; a straight line has 0.
    NaN when there are fewer than 3 finite points (fewer than 2 differences to spread).

    Args:
        values: [T] per-step values, None/NaN = missing.

    Example (differences 1, 3 → mean 2, std 1):
        >>> step_diff_std([0.0, 1.0, None, 4.0])
        1.0
    """
    points = _finite_points(values)
    if points.size < 3:
        return math.nan
    return float(np.std(np.diff(points)))


def detrended_iqr(values: SeriesLike) -> float:
    """Inter-quartile range of the step differences after removing their linear trend.

    The differences d_0..d_{n-1} of consecutive finite points are fitted by least squares with
    ``a + b·j`` (j = position of the difference); the IQR (75th − 25th percentile, linear
    interpolation as numpy's default) of the residuals is returned. The detrending keeps a curve
    that is steadily accelerating or levelling off from looking noisy; the IQR ignores a few
    outlier steps. NaN when there are fewer than 4 finite points (a line through 2 differences
    leaves nothing).

    Args:
        values: [T] per-step values, None/NaN = missing.

    Example (differences 0, 2, 0, 2, 0: no trend, residuals -0.8, 1.2, -0.8, 1.2, -0.8):
        >>> detrended_iqr([0.0, 0.0, 2.0, 2.0, 4.0, 4.0])
        2.0
    """
    points = _finite_points(values)
    if points.size < 4:
        return math.nan
    differences = np.diff(points)
    positions = np.arange(differences.size, dtype=np.float64)
    centred_positions = positions - positions.mean()
    slope = float(
        np.dot(centred_positions, differences - differences.mean())
        / np.dot(centred_positions, centred_positions)
    )
    intercept = differences.mean() - slope * positions.mean()
    residuals = differences - (intercept + slope * positions)
    upper_quartile, lower_quartile = np.percentile(residuals, [75.0, 25.0])
    return float(upper_quartile - lower_quartile)


def max_drawdown(values: SeriesLike, smoothing: float = 0.6) -> float:
    """Largest drop from a running maximum of the debiased-EMA-smoothed curve (≥ 0).

    Smoothing first keeps single noisy steps from counting as a collapse; the drop is absolute
    (in the units of the curve, e.g. accuracy points), not relative. 0.0 for a curve that never
    falls; NaN when there is no finite point.

    Args:
        values: [T] per-step values, None/NaN = missing.
        smoothing: EMA weight in [0, 1) (see :func:`debiased_ema`); 0 uses the raw curve.

    Example (raw curve, rises to 0.5 then falls to 0.2):
        >>> max_drawdown([0.1, 0.5, 0.3, 0.4, 0.2], smoothing=0.0)
        0.3
    """
    smoothed = debiased_ema(values, smoothing)
    smoothed = smoothed[np.isfinite(smoothed)]
    if smoothed.size == 0:
        return math.nan
    running_max = np.maximum.accumulate(smoothed)
    return float(np.max(running_max - smoothed))


def spike_count(values: SeriesLike, k: float = 5.0) -> int:
    """Number of finite points above ``median + k·MAD`` (MAD = median |x − median|, unscaled).

    No special case for MAD = 0: the threshold is then the median itself, so ANY point strictly
    above the median counts as a spike. That is deliberate — on a flat series (e.g. a grad norm
    pinned at the clip value) every excursion upward is unusual. A series with no finite point
    has 0 spikes.

    Args:
        values: [T] per-step values, None/NaN = missing.
        k: threshold in MADs, finite and ≥ 0.

    Example (median 1, MAD 0.5, threshold 3.5 at k = 5):
        >>> spike_count([1.0, 0.5, 1.5, 1.0, 9.0], k=5.0)
        1
    """
    if isinstance(k, bool) or not isinstance(k, Real) or not math.isfinite(k) or k < 0:
        raise ValueError(f"k must be a finite number >= 0 (threshold in MADs), got {k!r}")
    points = _finite_points(values)
    if points.size == 0:
        return 0
    median = float(np.median(points))
    mad = float(np.median(np.abs(points - median)))
    return int(np.count_nonzero(points > median + float(k) * mad))


def _series_from_records(records: Sequence[Mapping[str, object]], key: str) -> np.ndarray:
    series = np.full(len(records), np.nan, dtype=np.float64)
    for position, record in enumerate(records):
        value = record.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, Real):
            raise ValueError(
                f"steps_records[{position}][{key!r}] = {value!r} is not a number or None"
            )
        series[position] = float(value)
    return np.where(np.isfinite(series), series, np.nan)


def smoothness_summary(
    steps_records: Sequence[Mapping[str, object]],
    *,
    drawdown_smoothing: float = 0.6,
    spike_k: float = 5.0,
) -> dict[str, float]:
    """The smoothness table of one run, from its steps.jsonl records (in the order written).

    Reads ``acc/mean``, ``reward/mean``, ``grad_norm`` and ``loss/kl``; a missing key or None is
    a missing step. Returns:

    - ``smooth/acc_diff_std``, ``smooth/reward_diff_std``: :func:`step_diff_std` of the raw curve;
    - ``smooth/acc_diff_iqr_detrended``, ``smooth/reward_diff_iqr_detrended``: :func:`detrended_iqr`;
    - ``smooth/acc_max_drawdown``: :func:`max_drawdown` with ``drawdown_smoothing``;
    - ``smooth/grad_norm_spikes``, ``smooth/kl_spikes``: :func:`spike_count` with ``spike_k``
      (as floats; NaN when the run logged no finite value of that key, e.g. KL switched off).

    Each entry is NaN where its function has too few points.

    Example:
        >>> smoothness_summary([{"acc/mean": 0.1, "grad_norm": 1.0},
        ...                     {"acc/mean": 0.3, "grad_norm": 1.0, "loss/kl": None},
        ...                     {"acc/mean": 0.2, "grad_norm": 8.0}])["smooth/acc_diff_std"]
        0.15   # differences +0.2, -0.1
    """
    if isinstance(steps_records, str | bytes) or not isinstance(steps_records, Sequence):
        raise ValueError(
            "steps_records must be a list of dicts (one per steps.jsonl line), "
            f"got {type(steps_records).__name__}"
        )
    for position, record in enumerate(steps_records):
        if not isinstance(record, Mapping):
            raise ValueError(
                f"steps_records[{position}] must be a dict, got {type(record).__name__}"
            )
    accuracy = _series_from_records(steps_records, _ACC_KEY)
    reward = _series_from_records(steps_records, _REWARD_KEY)
    grad_norm = _series_from_records(steps_records, _GRAD_NORM_KEY)
    kl = _series_from_records(steps_records, _KL_KEY)

    def spikes_or_nan(series: np.ndarray) -> float:
        if not np.isfinite(series).any():
            return math.nan
        return float(spike_count(series, k=spike_k))

    return {
        "smooth/acc_diff_std": step_diff_std(accuracy),
        "smooth/reward_diff_std": step_diff_std(reward),
        "smooth/acc_diff_iqr_detrended": detrended_iqr(accuracy),
        "smooth/reward_diff_iqr_detrended": detrended_iqr(reward),
        "smooth/acc_max_drawdown": max_drawdown(accuracy, smoothing=drawdown_smoothing),
        "smooth/grad_norm_spikes": spikes_or_nan(grad_norm),
        "smooth/kl_spikes": spikes_or_nan(kl),
    }
