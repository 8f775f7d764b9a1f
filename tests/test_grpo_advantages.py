"""GRPO, Dr. GRPO and DAPO's dynamic-sampling filter against worked examples computed by hand.

Each expected value is derived in the comment above it, so a wrong std (population instead of
Bessel), a leaked raw reward in a single-rollout group or a filter on the mean instead of the
variance shows up as a wrong number.
"""

from __future__ import annotations

import math

import pytest
import torch

from care.algo.grpo import dynamic_sampling_keep, group_moments, grpo_advantages
from care.algo.registry import AdvantageBatch, get_estimator
from care.config import config_from_dict


def t(values, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def ids(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def test_grpo_divides_by_the_bessel_std_of_the_group():
    # rewards [1, 0, 0, 0]: mean 0.25, squared deviations 0.5625 + 3 x 0.0625 = 0.75.
    # Bessel variance 0.75 / 3 = 0.25, std 0.5  → [0.75, -0.25 x 3] / 0.5 = [1.5, -0.5 x 3].
    # (The population std sqrt(0.75 / 4) = 0.433 would give 1.732 for the correct rollout.)
    adv = grpo_advantages(t([1.0, 0.0, 0.0, 0.0]), ids([0, 0, 0, 0]))
    assert adv.tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-5)
    assert adv[0].item() == pytest.approx(0.75 / (0.5 + 1e-6), rel=1e-12)


def test_dr_grpo_only_centres_on_the_group_mean():
    # Same group, no division: r - 0.25.
    adv = grpo_advantages(t([1.0, 0.0, 0.0, 0.0]), ids([0, 0, 0, 0]), norm_by_std=False)
    assert adv.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25], abs=1e-12)
    estimator = get_estimator("dr_grpo")
    batch = AdvantageBatch(
        rewards=t([1.0, 0.0, 0.0, 0.0]),
        correct=torch.tensor([True, False, False, False]),
        group_index=ids([0, 0, 0, 0]),
    )
    assert estimator.advantages(batch, None).advantages.tolist() == pytest.approx(
        [0.75, -0.25, -0.25, -0.25], abs=1e-12
    )


def test_a_single_rollout_group_gets_zero_not_its_raw_reward():
    # Groups 3 = [1, 0] (mean 0.5, Bessel var 0.5, std 0.7071 → ±0.7071), 9 = [1] and 5 = [0.5]:
    # a group of one has nothing to compare with, so 0 under both estimators.
    rewards, groups = t([1.0, 0.0, 1.0, 0.5]), ids([3, 3, 9, 5])
    grpo = grpo_advantages(rewards, groups)
    assert grpo.tolist() == pytest.approx([math.sqrt(0.5), -math.sqrt(0.5), 0.0, 0.0], abs=1e-5)
    dr = grpo_advantages(rewards, groups, norm_by_std=False)
    assert dr.tolist() == [0.5, -0.5, 0.0, 0.0]
    only = grpo_advantages(t([1.0]), ids([0]))
    assert only.tolist() == [0.0]


def test_groups_in_any_order_with_sparse_ids_are_normalised_separately():
    # Group 2 = rows 0, 2, 4 = [1, 0, 1]: mean 2/3, deviations [1/3, -2/3, 1/3], squared sum 2/3,
    # Bessel var 1/3, std 0.57735 → [0.57735, -1.1547, 0.57735].
    # Group 5 = rows 1, 3, 5 = [0, 1, 0]: the mirror image.
    rewards = t([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    adv = grpo_advantages(rewards, ids([2, 5, 2, 5, 2, 5]))
    a, b = 1 / math.sqrt(3), 2 / math.sqrt(3)
    assert adv.tolist() == pytest.approx([a, -a, -b, b, a, -a], abs=1e-5)


def test_an_equal_reward_group_gets_exact_zeros_and_eps_bounds_the_division():
    # Equal rewards: std 0, deviations 0 → 0 exactly, never NaN. Graded rewards make this
    # delicate: eight float32 rewards of 0.7 average to 0.70000005, and that rounding over
    # 0 + eps would be an advantage of 0.056 on every rollout of a group with nothing to learn.
    for dtype in (torch.float32, torch.float64):
        for value in (0.7, 0.1, 0.9, 1.0):
            rewards = torch.full((8,), value, dtype=dtype)
            for norm_by_std in (True, False):
                adv = grpo_advantages(rewards, torch.zeros(8, dtype=torch.long), norm_by_std)
                assert adv.tolist() == [0.0] * 8, (dtype, value, norm_by_std)
    mixed = grpo_advantages(t([0.7, 0.7, 0.7, 1.0, 0.0], torch.float32), ids([4, 4, 4, 6, 6]))
    assert mixed.tolist() == pytest.approx(
        [0.0, 0.0, 0.0, math.sqrt(0.5), -math.sqrt(0.5)], abs=1e-5
    )
    # [1, 0] with eps = 0.1: std 0.70711 → ±0.5 / 0.80711 = ±0.61949.
    adv = grpo_advantages(t([1.0, 0.0]), ids([0, 0]), eps=0.1)
    assert adv.tolist() == pytest.approx([0.61949, -0.61949], abs=1e-5)


def test_advantages_keep_the_reward_dtype():
    for dtype in (torch.float32, torch.float64):
        adv = grpo_advantages(t([1.0, 0.0, 0.0, 0.0], dtype), ids([0, 0, 0, 0]))
        assert adv.dtype == dtype
        assert adv[0].item() == pytest.approx(1.5, abs=1e-5)


def test_group_moments_are_size_mean_and_bessel_variance_per_row():
    size, mean, var = group_moments(t([1.0, 0.0, 1.0, 1.0, 4.0]), ids([0, 0, 1, 1, 2]))
    assert size.tolist() == [2, 2, 2, 2, 1]
    assert mean.tolist() == [0.5, 0.5, 1.0, 1.0, 4.0]
    # [1, 0]: squared deviations 0.25 + 0.25 over (2 - 1) = 0.5; a group of one has variance 0.
    assert var.tolist() == [0.5, 0.5, 0.0, 0.0, 0.0]


def test_dapo_filter_keeps_groups_whose_reward_varies():
    keep = dynamic_sampling_keep(t([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0]), ids([0, 0, 1, 1, 2, 2, 3]))
    # Group 0 all correct, group 2 all wrong, group 3 a single rollout: variance 0, dropped.
    assert keep.tolist() == [False, False, True, True, False, False, False]


def test_dapo_filter_tolerance_is_on_the_bessel_variance():
    # [0.5, 0.50001]: Bessel variance (1e-5)^2 / 2 = 5e-11, below the default 1e-8: float noise.
    near = t([0.5, 0.50001])
    assert dynamic_sampling_keep(near, ids([0, 0])).tolist() == [False, False]
    assert dynamic_sampling_keep(near, ids([0, 0]), tolerance=1e-12).tolist() == [True, True]
    # The test is strict: variance exactly 0 is dropped even with tolerance 0.
    assert dynamic_sampling_keep(t([0.5, 0.5]), ids([0, 0]), tolerance=0.0).tolist() == [
        False,
        False,
    ]
    # [1, 0]: Bessel variance 0.5 (population 0.25), so a tolerance of 0.3 keeps the group, and
    # one of 0.5 drops it (kept only when the variance EXCEEDS the tolerance).
    assert dynamic_sampling_keep(t([1.0, 0.0]), ids([0, 0]), tolerance=0.3).tolist() == [True, True]
    assert dynamic_sampling_keep(t([1.0, 0.0]), ids([0, 0]), tolerance=0.5).tolist() == [
        False,
        False,
    ]


def test_dapo_filter_reads_the_variance_not_the_mean_for_graded_rewards():
    # Format-weighted rewards (w = 0.1): every rollout wrong, two of four well formatted:
    # rewards [0.1, 0, 0.1, 0] vary (mean 0.05, not 0) and are kept; a mean test "0 < mean < 1"
    # would keep [0.1, 0.1] too, which has nothing to compare.
    keep = dynamic_sampling_keep(t([0.1, 0.0, 0.1, 0.0, 0.1, 0.1]), ids([0, 0, 0, 0, 1, 1]))
    assert keep.tolist() == [True, True, True, True, False, False]


def test_dapo_config_carries_its_tolerance_and_refill_rounds():
    cfg = config_from_dict(
        {"algo": {"estimator": "dapo", "dapo": {"variance_tolerance": 0.3, "max_refill_rounds": 2}}}
    )
    assert cfg.algo.dapo.variance_tolerance == 0.3 and cfg.algo.dapo.max_refill_rounds == 2
    assert cfg.loss.kl_coef == 0.0 and cfg.loss.clip_high == 0.28
    assert get_estimator("dapo").dynamic_sampling and not get_estimator("grpo").dynamic_sampling
