"""Training-smoothness metrics (docs/algorithm.md section 8) on hand-computed curves."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from care.metrics.smoothness import (
    debiased_ema,
    detrended_iqr,
    max_drawdown,
    smoothness_summary,
    spike_count,
    step_diff_std,
)

# --------------------------------------------------------------------------------------------
# debiased EMA


def test_debiased_ema_by_hand() -> None:
    # w = 0.5: last 0.5 → 0.5/0.5 = 1; last 1.25 → 1.25/0.75 = 5/3; last 2.125 → /0.875 = 17/7.
    smoothed = debiased_ema([1.0, 2.0, 3.0], 0.5)
    np.testing.assert_allclose(smoothed, [1.0, 5.0 / 3.0, 17.0 / 7.0], rtol=1e-12)


def test_debiased_ema_passes_missing_points_as_nan_without_updating_state() -> None:
    smoothed = debiased_ema([None, 1.0, float("nan"), 2.0, float("inf"), 3.0], 0.5)
    assert np.isnan(smoothed[[0, 2, 4]]).all()
    np.testing.assert_allclose(smoothed[[1, 3, 5]], [1.0, 5.0 / 3.0, 17.0 / 7.0], rtol=1e-12)


def test_debiased_ema_weight_zero_is_identity_on_finite_points() -> None:
    smoothed = debiased_ema(np.array([0.3, np.nan, -1.0, 7.0]), 0.0)
    np.testing.assert_array_equal(smoothed[[0, 2, 3]], [0.3, -1.0, 7.0])
    assert math.isnan(smoothed[1])


@pytest.mark.parametrize("weight", [1.0, -0.1, 1.5, float("nan"), True, "0.5"])
def test_debiased_ema_rejects_weight_outside_unit_interval(weight: object) -> None:
    with pytest.raises(ValueError, match="weight must be"):
        debiased_ema([1.0, 2.0], weight)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(
    constant=st.floats(-100.0, 100.0, allow_nan=False),
    length=st.integers(1, 30),
    weight=st.floats(0.0, 0.99),
)
def test_debiased_ema_of_a_constant_is_the_constant(
    constant: float, length: int, weight: float
) -> None:
    # The point of the debiasing: no pull towards the zero start.
    np.testing.assert_allclose(
        debiased_ema([constant] * length, weight), constant, rtol=1e-9, atol=1e-9
    )


# --------------------------------------------------------------------------------------------
# step differences


def test_step_diff_std_uses_differences_of_finite_points() -> None:
    # finite points 0, 1, 4 → differences 1, 3 → population std 1.
    assert step_diff_std([0.0, 1.0, None, 4.0]) == pytest.approx(1.0)


def test_step_diff_std_of_a_straight_line_is_zero_and_nan_when_too_short() -> None:
    assert step_diff_std([0.0, 0.5, 1.0, 1.5]) == pytest.approx(0.0, abs=1e-15)
    assert math.isnan(step_diff_std([1.0, None, 2.0]))


def test_detrended_iqr_by_hand() -> None:
    # differences 0, 2, 0, 2, 0: slope 0, mean 0.8 → residuals -0.8, 1.2, -0.8, 1.2, -0.8;
    # 25th percentile -0.8 (sorted position 1), 75th 1.2 (position 3) → IQR 2.0.
    assert detrended_iqr([0.0, 0.0, 2.0, 2.0, 4.0, 4.0]) == pytest.approx(2.0)


def test_detrended_iqr_removes_a_linear_trend_in_the_differences() -> None:
    # differences 0, 12, 20, 32, 40 = the pattern above + 10·j: the raw IQR would be 20.
    differences = np.array([0.0, 12.0, 20.0, 32.0, 40.0])
    values = np.concatenate([[0.0], np.cumsum(differences)])
    raw_quartiles = np.percentile(differences, [75, 25])
    assert raw_quartiles[0] - raw_quartiles[1] == pytest.approx(20.0)
    assert detrended_iqr(values) == pytest.approx(2.0)


def test_detrended_iqr_of_an_uneven_curve_by_hand() -> None:
    # differences .5, -.2, .1, -.2: slope -0.18, intercept 0.32 → residuals .18, -.34, .14, .02;
    # quartiles -0.07 and 0.15 → 0.22.
    assert detrended_iqr([0.0, 0.5, 0.3, 0.4, 0.2]) == pytest.approx(0.22)


def test_detrended_iqr_is_nan_with_fewer_than_four_points() -> None:
    assert math.isnan(detrended_iqr([0.0, 1.0, None, 0.0]))


# --------------------------------------------------------------------------------------------
# drawdown and spikes


def test_max_drawdown_of_a_curve_that_rises_then_falls() -> None:
    assert max_drawdown([0.1, 0.5, 0.3, 0.4, 0.2], smoothing=0.0) == pytest.approx(0.3)


def test_max_drawdown_is_measured_on_the_smoothed_curve() -> None:
    # w = 0.5 on [0, 1, 0]: smoothed 0, 0.5/0.75 = 2/3, 0.25/0.875 = 2/7 → drop 2/3 − 2/7 = 8/21.
    assert max_drawdown([0.0, 1.0, None, 0.0], smoothing=0.5) == pytest.approx(8.0 / 21.0)


def test_max_drawdown_of_a_rising_curve_is_zero_and_nan_without_points() -> None:
    assert max_drawdown([0.1, 0.2, 0.4, 0.8]) == 0.0
    assert math.isnan(max_drawdown([None, float("nan")]))


def test_spike_count_finds_a_known_outlier() -> None:
    # median 1, |x − 1| = 0, .5, .5, 0, 8 → MAD 0.5 → threshold 3.5 at k = 5.
    assert spike_count([1.0, 0.5, 1.5, 1.0, 9.0], k=5.0) == 1
    # at k = 1 the threshold is 1.5 (strictly above): still only 9.0
    assert spike_count([1.0, 0.5, 1.5, 1.0, 9.0], k=1.0) == 1
    assert spike_count([1.0, 0.5, 1.5, 1.0, 9.0], k=0.5) == 2


def test_spike_count_with_zero_mad_counts_any_point_above_the_median() -> None:
    assert spike_count([2.0, 2.0, 2.0, 2.0, 2.1]) == 1
    assert spike_count([2.0, 2.0, 2.0, 2.0, 1.0]) == 0
    assert spike_count([2.0, 2.0, 2.0, 2.0]) == 0


def test_spike_count_skips_missing_points_and_rejects_bad_k() -> None:
    assert spike_count([None, 1.0, float("nan"), 1.0, 50.0]) == 1
    assert spike_count([]) == 0
    with pytest.raises(ValueError, match="k must be a finite number >= 0"):
        spike_count([1.0], k=-1.0)


# --------------------------------------------------------------------------------------------
# summary of a run


def test_smoothness_summary_from_step_records() -> None:
    records = [
        {"step": 0, "acc/mean": 0.0, "reward/mean": 1.0, "grad_norm": 1.0},
        {"step": 1, "acc/mean": 0.5, "reward/mean": None, "grad_norm": 1.0, "loss/kl": None},
        {"step": 2, "acc/mean": 0.3, "grad_norm": 1.0},
        {"step": 3, "acc/mean": 0.4, "reward/mean": 0.0, "grad_norm": 1.0},
        {"step": 4, "acc/mean": 0.2, "reward/mean": 1.0, "grad_norm": 10.0},
    ]
    summary = smoothness_summary(records, drawdown_smoothing=0.0)
    # acc differences .5, -.2, .1, -.2: mean .05, squared deviations sum .33 → std sqrt(.0825)
    assert summary["smooth/acc_diff_std"] == pytest.approx(math.sqrt(0.0825))
    assert summary["smooth/acc_diff_iqr_detrended"] == pytest.approx(0.22)
    assert summary["smooth/acc_max_drawdown"] == pytest.approx(0.3)
    # reward finite points 1, 0, 1 → differences -1, 1 → std 1; too few for the IQR
    assert summary["smooth/reward_diff_std"] == pytest.approx(1.0)
    assert math.isnan(summary["smooth/reward_diff_iqr_detrended"])
    # grad norm pinned at 1 (MAD 0) with one jump; KL never logged
    assert summary["smooth/grad_norm_spikes"] == 1.0
    assert math.isnan(summary["smooth/kl_spikes"])
    assert set(summary) == {
        "smooth/acc_diff_std",
        "smooth/reward_diff_std",
        "smooth/acc_diff_iqr_detrended",
        "smooth/reward_diff_iqr_detrended",
        "smooth/acc_max_drawdown",
        "smooth/grad_norm_spikes",
        "smooth/kl_spikes",
    }


def test_smoothness_summary_of_no_records_is_all_nan() -> None:
    assert all(math.isnan(value) for value in smoothness_summary([]).values())


def test_smoothness_summary_names_the_bad_record() -> None:
    with pytest.raises(ValueError, match=r"steps_records\[1\]\['grad_norm'\] = 'big'"):
        smoothness_summary([{"grad_norm": 1.0}, {"grad_norm": "big"}])
    with pytest.raises(ValueError, match=r"steps_records\[0\] must be a dict"):
        smoothness_summary([[1.0]])  # type: ignore[list-item]


def test_series_input_is_validated() -> None:
    with pytest.raises(ValueError, match="values must be 1-D"):
        step_diff_std(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"values\[1\] = 'x' is not a number"):
        step_diff_std([1.0, "x", 2.0])  # type: ignore[list-item]
