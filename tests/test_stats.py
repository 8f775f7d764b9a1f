"""Intervals and paired comparisons (care.stats) against hand-computed and textbook values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from care.stats import (
    holm,
    mcnemar_exact,
    mean_interval,
    paired_bootstrap,
    wilson_interval,
)


def test_wilson_interval_matches_the_closed_form():
    # p = 0.45, n = 100, z = 1.959964: centre 0.45195..., half-width 0.09570...
    interval = wilson_interval(45, 100)
    assert interval.estimate == 0.45
    assert interval.low == pytest.approx(0.356145, abs=1e-6)
    assert interval.high == pytest.approx(0.547554, abs=1e-6)
    assert interval.n == 100


def test_wilson_interval_stays_inside_zero_one_at_the_edges():
    none_right, all_right = wilson_interval(0, 20), wilson_interval(20, 20)
    assert none_right.low == 0.0 and none_right.high == pytest.approx(0.161125, abs=1e-6)
    assert all_right.high == 1.0 and all_right.low == pytest.approx(0.838875, abs=1e-6)
    # Exactly 0 and 1, not the float noise of centre ∓ half (2.8e-17 at 0 of 12).
    assert [wilson_interval(0, n).low for n in (7, 12, 1000)] == [0.0] * 3
    assert [wilson_interval(n, n).high for n in (7, 12, 1000)] == [1.0] * 3


@pytest.mark.parametrize("k, n", [(-1, 10), (11, 10), (0, 0)])
def test_wilson_interval_rejects_impossible_counts(k, n):
    with pytest.raises(ValueError):
        wilson_interval(k, n)


def test_paired_bootstrap_estimate_is_the_mean_difference_and_is_reproducible():
    rng = np.random.default_rng(1)
    a = (rng.random(500) < 0.4).astype(float)
    b = a.copy()
    b[rng.choice(500, 60, replace=False)] = 1.0  # some items fixed
    first = paired_bootstrap(a, b, seed=3)
    second = paired_bootstrap(a, b, seed=3)
    assert first == second
    assert first.estimate == pytest.approx(float((b - a).mean()))
    assert first.low < first.estimate < first.high
    assert first.excludes_zero()


def test_paired_bootstrap_is_narrower_than_unpaired_intervals_when_models_agree():
    rng = np.random.default_rng(2)
    a = (rng.random(600) < 0.5).astype(float)
    b = a.copy()
    flip = rng.choice(600, 30, replace=False)
    b[flip] = 1.0 - b[flip]
    paired = paired_bootstrap(a, b)
    unpaired_half = 1.96 * math.sqrt(2 * 0.25 / 600)  # two independent proportions near 0.5
    assert (paired.high - paired.low) / 2 < unpaired_half / 2


def test_paired_bootstrap_covers_zero_for_identical_models_and_checks_shapes():
    same = [1.0, 0.0, 1.0, 1.0, 0.0] * 40
    interval = paired_bootstrap(same, same)
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)
    assert not interval.excludes_zero()
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap([1.0, math.nan], [1.0, 0.0])


def test_mean_interval_is_the_student_t_interval():
    interval = mean_interval([0.5, 0.6, 0.7])
    # sem = 0.1 / sqrt(3), t(0.975, 2) = 4.302653
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert interval.estimate == pytest.approx(0.6)
    assert interval.low == pytest.approx(0.6 - half, abs=1e-6)
    assert interval.high == pytest.approx(0.6 + half, abs=1e-6)
    single = mean_interval([0.4])
    assert single.estimate == 0.4 and math.isnan(single.low) and math.isnan(single.high)
    assert single.format() == "40.0"


def test_mcnemar_exact_counts_only_discordant_items():
    # 10 items fixed, 0 broken: two-sided binomial p = 2 * 0.5**10
    assert mcnemar_exact([0] * 10 + [1] * 50, [1] * 10 + [1] * 50) == pytest.approx(2 * 0.5**10)
    # 6 fixed, 6 broken: no evidence either way
    a = [0] * 6 + [1] * 6 + [1] * 20
    b = [1] * 6 + [0] * 6 + [1] * 20
    assert mcnemar_exact(a, b) == pytest.approx(1.0)
    assert mcnemar_exact([1, 0], [1, 0]) == 1.0


def test_holm_adjusts_in_step_down_order_and_keeps_the_input_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([0.02, 0.9, 0.001, 0.04]) == pytest.approx([0.06, 0.9, 0.004, 0.08])
    # A tiny p-value stays itself times the family size, not 0 (the demo's GRPO vs SFT).
    assert holm([2.452e-25, 0.5]) == [4.904e-25, 0.5]
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]  # exactly, without float noise


def test_interval_format_prints_percent_points():
    assert wilson_interval(45, 100).format() == "45.0 [35.6, 54.8]"
