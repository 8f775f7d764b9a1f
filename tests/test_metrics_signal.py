"""Per-step signal metrics (docs/algorithm.md section 8) on hand-computed batches."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from care.algo.care import CareConfig, care_advantages
from care.metrics.signal import (
    VARIANCE_RATIO_RELATIVE_TOLERANCE,
    batch_summary,
    energy_ratio,
    failure_share,
    group_type_fractions,
    rgr_rates,
    step_signal_metrics,
    variance_ratio,
)

T, F = True, False


def bools(*values: bool) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


def longs(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def floats(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# failure share


@pytest.mark.parametrize(
    ("k_prime", "negative_advantage"),
    [(1, -1.0), (2, -0.5), (3, -1.0 / 3.0), (4, -0.25)],
)
def test_care_group_failure_share_is_s_over_one_plus_s(
    k_prime: int, negative_advantage: float
) -> None:
    # docs/algorithm.md section 2.4 worked numbers (K = 4, s = 0.5, equalise on): anchor +2.0 and
    # K' negatives of -s*sqrt(K)/K' → failures carry s*sqrt(K) of (1+s)*sqrt(K): 0.5/1.5.
    advantages = floats(2.0, *([negative_advantage] * k_prime))
    correct = bools(T, *([F] * k_prime))
    shares = failure_share(advantages, correct)
    assert shares["signal/failure_share_seq"] == pytest.approx(1.0 / 3.0, abs=1e-7)
    assert shares["signal/failure_share_seq_no_rgr"] == pytest.approx(1.0 / 3.0, abs=1e-7)
    assert "signal/failure_share_token" not in shares


def test_care_group_outside_subgroup_rows_do_not_change_share() -> None:
    # A second correct rollout and a non-selected failure get advantage 0: they add nothing.
    advantages = floats(2.0, -0.25, -0.25, -0.25, -0.25, 0.0, 0.0)
    correct = bools(T, F, F, F, F, T, F)
    assert failure_share(advantages, correct)["signal/failure_share_seq"] == pytest.approx(1 / 3)


def test_grpo_mixed_binary_group_failure_share_is_half() -> None:
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
    advantages = (rewards - rewards.mean()) / (rewards.std(unbiased=True) + 1e-6)
    shares = failure_share(advantages, rewards.bool())
    assert shares["signal/failure_share_seq"] == pytest.approx(0.5, abs=1e-7)
    assert shares["signal/failure_share_seq_no_rgr"] == pytest.approx(0.5, abs=1e-7)


def test_failure_share_is_zero_without_any_signal() -> None:
    shares = failure_share(floats(0.0, 0.0, 0.0), bools(T, F, F))
    assert shares == {"signal/failure_share_seq": 0.0, "signal/failure_share_seq_no_rgr": 0.0}


def test_rescue_pseudo_anchor_counts_as_failure() -> None:
    # All-negative rescued group: every row is verifier-negative, so all signal is failure signal,
    # including the pseudo-anchor's positive advantage.
    shares = failure_share(floats(2.0, -0.5, -0.5), bools(F, F, F))
    assert shares["signal/failure_share_seq"] == 1.0
    assert shares["signal/failure_share_seq_no_rgr"] == 1.0


def test_passed_rgr_repair_is_failure_derived_only_in_the_seq_share() -> None:
    # docs/algorithm.md section 4, repair passed: S rewards [1, 1, 0, 0, 0] → [+a, +a, -a/3 x3] with
    # a = sqrt(1.5). Row 1 (the replaced hard negative) stays in the batch with 0; row 5 is the
    # repair. Failure-derived: the repair a + three negatives a = 2a of 3a; without RGR: a of 3a.
    a = math.sqrt(1.5)
    advantages = floats(a, 0.0, -a / 3, -a / 3, -a / 3, a)
    correct = bools(T, F, F, F, F, T)
    reflected_from = longs(-1, -1, -1, -1, -1, 1)
    shares = failure_share(advantages, correct, reflected_from)
    assert shares["signal/failure_share_seq"] == pytest.approx(2.0 / 3.0, abs=1e-6)
    assert shares["signal/failure_share_seq_no_rgr"] == pytest.approx(1.0 / 3.0, abs=1e-6)


def test_failed_rgr_repair_is_failure_derived_in_both_shares() -> None:
    # Repair failed: [+2.0, -0.125 (repair, s_refl), -0.25 x3] → failures 0.875 of 2.875.
    advantages = floats(2.0, 0.0, -0.25, -0.25, -0.25, -0.125)
    correct = bools(T, F, F, F, F, F)
    reflected_from = longs(-1, -1, -1, -1, -1, 1)
    shares = failure_share(advantages, correct, reflected_from)
    assert shares["signal/failure_share_seq"] == pytest.approx(0.875 / 2.875, abs=1e-7)
    assert shares["signal/failure_share_seq_no_rgr"] == pytest.approx(0.875 / 2.875, abs=1e-7)


def test_token_share_sums_token_magnitudes_and_ignores_padding() -> None:
    # Row 0 (correct): |a| sums to 2.0 over 3 real tokens; row 1 (wrong): 1.0 over 2; row 2
    # (wrong): 0.5 over 1. The trailing zeros are padding. Token share = 1.5 / 3.5.
    token_advantages = torch.tensor(
        [
            [1.0, 0.6, 0.4, 0.0, 0.0],
            [-0.5, -0.5, 0.0, 0.0, 0.0],
            [-0.5, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    advantages = floats(2.0, -1.0, -1.0)
    shares = failure_share(advantages, bools(T, F, F), token_advantages=token_advantages)
    assert shares["signal/failure_share_seq"] == pytest.approx(0.5)
    assert shares["signal/failure_share_token"] == pytest.approx(3.0 / 7.0)
    assert shares["signal/failure_share_token_no_rgr"] == pytest.approx(3.0 / 7.0)


def test_token_share_counts_passed_repair_only_with_rgr() -> None:
    token_advantages = torch.tensor(
        [
            [0.5, 0.5, 0.0],  # anchor, 1.0
            [0.0, 0.0, 0.0],  # replaced hard negative
            [-0.25, -0.25, -0.5],  # negative, 1.0
            [1.0, 1.0, 0.0],  # passed repair of row 1, 2.0
        ]
    )
    shares = failure_share(
        floats(1.0, 0.0, -1.0, 1.0),
        bools(T, F, F, T),
        reflected_from=longs(-1, -1, -1, 1),
        token_advantages=token_advantages,
    )
    assert shares["signal/failure_share_token"] == pytest.approx(3.0 / 4.0)
    assert shares["signal/failure_share_token_no_rgr"] == pytest.approx(1.0 / 4.0)


# --------------------------------------------------------------------------------------------
# group types and rescue


def test_group_fractions_all_correct_all_wrong_rescued_and_mixed() -> None:
    # Groups (rows interleaved on purpose): 10 all correct (no signal); 20 all wrong, rescued
    # (pseudo-anchor + two pseudo-negatives); 30 mixed with a passed RGR repair of row 5.
    group_index = longs(10, 20, 30, 10, 20, 30, 20, 30)
    correct = bools(T, F, T, T, F, F, F, T)
    advantages = floats(0.0, 2.0, 1.0, 0.0, -1.0, 0.0, -1.0, 1.0)
    reflected_from = longs(-1, -1, -1, -1, -1, -1, -1, 5)
    rescued = bools(F, T, F, F, T, F, T, F)
    fractions = group_type_fractions(
        advantages, correct, group_index, reflected_from, rescued, rescue_enabled=True
    )
    assert fractions == pytest.approx(
        {
            "groups/all_correct_frac": 1 / 3,
            "groups/all_wrong_frac": 1 / 3,
            "groups/mixed_frac": 1 / 3,
            "groups/with_signal_frac": 2 / 3,
            "rescue/triggered_frac": 1 / 3,
            "rescue/impossible_frac": 0.0,
        }
    )


def test_group_type_ignores_rgr_rows() -> None:
    # Ordinary rows of group 0 are both wrong; a (synthetic) passed repair row is appended.
    # Were RGR rows to vote, the group would read as mixed; by its ordinary rows it is all wrong.
    fractions = group_type_fractions(
        floats(0.0, 0.0, 1.0),
        bools(F, F, T),
        longs(0, 0, 0),
        reflected_from=longs(-1, -1, 1),
        rescue_enabled=True,
    )
    assert fractions["groups/all_wrong_frac"] == 1.0
    assert fractions["groups/mixed_frac"] == 0.0
    # ...but its non-zero advantage does count as signal
    assert fractions["groups/with_signal_frac"] == 1.0


def test_rescue_impossible_for_single_rollout_all_wrong_group() -> None:
    # Group 5: one wrong rollout (G = 1) → no pseudo-negative; group 6: two wrong, rescued;
    # group 7: mixed. Impossible = 1 of 3 groups when rescue is on, 0 when it is off.
    advantages = floats(0.0, 2.0, -2.0, 1.0, -1.0)
    correct = bools(F, F, F, T, F)
    group_index = longs(5, 6, 6, 7, 7)
    rescued = bools(F, T, T, F, F)
    enabled = group_type_fractions(
        advantages, correct, group_index, rescued=rescued, rescue_enabled=True
    )
    disabled = group_type_fractions(
        advantages, correct, group_index, rescued=rescued, rescue_enabled=False
    )
    assert enabled["rescue/impossible_frac"] == pytest.approx(1 / 3)
    assert enabled["rescue/triggered_frac"] == pytest.approx(1 / 3)
    assert enabled["groups/all_wrong_frac"] == pytest.approx(2 / 3)
    assert disabled["rescue/impossible_frac"] == 0.0


def test_group_fractions_accept_any_group_ids() -> None:
    fractions = group_type_fractions(
        floats(0.0, 0.0, 0.5, -0.5),
        bools(T, T, T, F),
        longs(-3, 1_000_000, 1_000_000, -3),
        rescue_enabled=False,
    )
    assert fractions["groups/mixed_frac"] == 0.5
    assert fractions["groups/all_correct_frac"] == 0.5
    assert fractions["groups/with_signal_frac"] == 1.0


# --------------------------------------------------------------------------------------------
# RGR rates, variance ratio, batch summary


def test_rgr_rates_count_triggered_and_passed() -> None:
    rates = rgr_rates(bools(T, F, F, F, T, F), longs(-1, -1, -1, -1, 1, 3))
    assert rates["rgr/triggered"] == 2.0
    assert rates["rgr/passed"] == 1.0
    assert rates["rgr/pass_rate"] == 0.5


def test_rgr_pass_rate_is_nan_when_nothing_triggered() -> None:
    rates = rgr_rates(bools(T, F), longs(-1, -1))
    assert rates["rgr/triggered"] == 0.0
    assert rates["rgr/passed"] == 0.0
    assert math.isnan(rates["rgr/pass_rate"])


def test_variance_ratio_of_hand_computed_batch() -> None:
    # negatives -1, -3: mean -2, Var 1; positives 1, 2: mean 1.5, Var 0.25; the 0 is in neither.
    ratio = variance_ratio(floats(-1.0, -3.0, 1.0, 2.0, 0.0))
    assert ratio == {"adv/var_ratio_neg_pos": pytest.approx(4.0)}


@pytest.mark.parametrize(
    "advantages",
    [
        [2.0, -0.5, -0.5, 2.0, -1.0, -0.25],  # equalised CARE anchors: positive variance 0
        [1.0, 2.0, -1.0],  # one negative
        [1.0, -1.0, -2.0],  # one positive
        [0.0, 0.0],  # no signal
    ],
)
def test_variance_ratio_is_nan_when_undefined(advantages: list[float]) -> None:
    assert math.isnan(variance_ratio(floats(*advantages))["adv/var_ratio_neg_pos"])


def test_variance_ratio_is_nan_when_positive_spread_is_float_noise() -> None:
    # Anchors equal up to float rounding (std 1e-6 of their size, below the 1e-4 tolerance):
    # dividing by that variance printed 8e10 on the demo; now the ratio is undefined.
    noisy = variance_ratio(floats(2.0, 2.0 + 2e-6, -0.5, -0.25))
    assert VARIANCE_RATIO_RELATIVE_TOLERANCE == 1e-4
    assert math.isnan(noisy["adv/var_ratio_neg_pos"])
    # A real spread just above the tolerance (std 2e-4 of the RMS) is still a ratio.
    spread = variance_ratio(floats(2.0, 2.0008, -0.5, -0.25))
    assert spread["adv/var_ratio_neg_pos"] == pytest.approx(0.015625 / 1.6e-7, rel=1e-3)


def test_energy_ratio_of_one_care_group_is_one_sixty_fourth() -> None:
    # One binary group, 1 correct + 4 failures, K = 4 (K' = 4), s = 0.5: the subgroup z-scores
    # to anchor +2 and negatives -0.5, scaled to -0.25; E[A²|A<0] / E[A²|A>0] = 0.0625 / 4.
    rewards = floats(1.0, 0.0, 0.0, 0.0, 0.0)
    embeddings = torch.nn.functional.normalize(torch.eye(5, 8), dim=1)
    out = care_advantages(
        rewards,
        rewards > 0,
        longs(0, 0, 0, 0, 0),
        longs(5, 5, 5, 5, 5),
        longs(1, 1, 1, 1, 1),
        embeddings,
        floats(-1.0, -2.0, -3.0, -4.0, -5.0),
        cfg=CareConfig(K=4, M=6, s=0.5),
    )
    assert out.k_prime.tolist() == [4, 4, 4, 4, 4]
    assert out.advantages[0].item() == pytest.approx(2.0, rel=1e-5)
    assert out.advantages[1:].tolist() == pytest.approx([-0.25] * 4, rel=1e-5)
    ratio = energy_ratio(out.advantages)["adv/energy_ratio_neg_pos"]
    assert ratio == pytest.approx(1 / 64, rel=1e-9, abs=0.0)
    assert step_signal_metrics(
        out.advantages, rewards > 0, longs(0, 0, 0, 0, 0), rescue_enabled=True
    )["adv/energy_ratio_neg_pos"] == pytest.approx(1 / 64, rel=1e-9, abs=0.0)


@pytest.mark.parametrize("advantages", [[1.0, 2.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
def test_energy_ratio_is_nan_without_both_signs(advantages: list[float]) -> None:
    assert math.isnan(energy_ratio(floats(*advantages))["adv/energy_ratio_neg_pos"])


def test_energy_ratio_of_hand_computed_batch() -> None:
    # negatives -1, -3: E[A²] = 5; positives 1, 2: E[A²] = 2.5; the 0 is in neither.
    assert energy_ratio(floats(-1.0, -3.0, 1.0, 2.0, 0.0)) == {
        "adv/energy_ratio_neg_pos": pytest.approx(2.0)
    }


def test_batch_summary_means() -> None:
    summary = batch_summary(
        floats(1.0, 0.2, 0.0, 1.0),
        bools(T, F, F, T),
        bools(T, T, F, T),
        longs(10, 20, 30, 60),
    )
    assert summary == pytest.approx(
        {"reward/mean": 0.55, "acc/mean": 0.5, "format/mean": 0.75, "response_len/mean": 30.0}
    )


# --------------------------------------------------------------------------------------------
# the entry function


def test_step_signal_metrics_is_the_union_of_the_parts() -> None:
    group_index = longs(0, 0, 0, 0, 0, 1, 1, 0)
    correct = bools(T, F, F, F, F, F, F, T)
    advantages = floats(1.2, 0.0, -0.4, -0.4, -0.4, 2.0, -2.0, 1.2)
    reflected_from = longs(-1, -1, -1, -1, -1, -1, -1, 1)
    rescued = bools(F, F, F, F, F, T, T, F)
    token_advantages = advantages[:, None].repeat(1, 3) / 3
    metrics = step_signal_metrics(
        advantages,
        correct,
        group_index,
        rescue_enabled=True,
        reflected_from=reflected_from,
        rescued=rescued,
        token_advantages=token_advantages,
    )
    expected = {
        **failure_share(advantages, correct, reflected_from, token_advantages),
        **group_type_fractions(
            advantages, correct, group_index, reflected_from, rescued, rescue_enabled=True
        ),
        **rgr_rates(correct, reflected_from),
        **variance_ratio(advantages),
        **energy_ratio(advantages),
    }
    assert metrics.keys() == expected.keys()
    assert metrics == pytest.approx(expected, nan_ok=True)
    assert all(type(value) is float for value in metrics.values())
    # group 0: failures 1.2 (repair) + 1.2 (negatives); group 1 (rescued) 4.0; total 7.6
    assert metrics["signal/failure_share_seq"] == pytest.approx(6.4 / 7.6)
    assert metrics["signal/failure_share_seq_no_rgr"] == pytest.approx(5.2 / 7.6)
    assert metrics["rescue/triggered_frac"] == 0.5
    assert metrics["rgr/pass_rate"] == 1.0


# --------------------------------------------------------------------------------------------
# input validation


def test_shape_mismatch_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"correct has shape \(2,\) but advantages has 3 rows"):
        failure_share(floats(1.0, -1.0, 0.0), bools(T, F))


def test_wrong_dtype_names_the_argument() -> None:
    with pytest.raises(ValueError, match="correct must be a bool tensor"):
        failure_share(floats(1.0, -1.0), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="group_index must be an integer tensor"):
        group_type_fractions(floats(1.0), bools(T), floats(0.0), rescue_enabled=False)
    with pytest.raises(ValueError, match="advantages must be 1-D"):
        failure_share(torch.zeros(2, 2), bools(T, F))


def test_token_advantages_shape_is_checked() -> None:
    with pytest.raises(ValueError, match=r"token_advantages must have shape \[B, L\] = \[2, L\]"):
        failure_share(floats(1.0, -1.0), bools(T, F), token_advantages=torch.zeros(3, 4))


def test_reflected_from_must_point_to_an_ordinary_row_of_the_same_group() -> None:
    with pytest.raises(ValueError, match="reflected_from holds 5"):
        failure_share(floats(1.0, -1.0), bools(T, F), reflected_from=longs(-1, 5))
    with pytest.raises(
        ValueError, match=r"reflected_from\[2\] = 0: the replaced row is in group 1"
    ):
        group_type_fractions(
            floats(1.0, -1.0, 1.0),
            bools(T, F, T),
            longs(1, 2, 2),
            reflected_from=longs(-1, -1, 0),
            rescue_enabled=False,
        )
    with pytest.raises(ValueError, match="is itself an RGR row"):
        group_type_fractions(
            floats(1.0, -1.0, 1.0, 1.0),
            bools(T, F, T, T),
            longs(1, 1, 1, 1),
            reflected_from=longs(-1, -1, 1, 2),
            rescue_enabled=False,
        )


def test_empty_batch_is_rejected() -> None:
    with pytest.raises(ValueError, match="advantages is empty"):
        step_signal_metrics(
            torch.zeros(0), torch.zeros(0, dtype=torch.bool), longs(), rescue_enabled=False
        )


# --------------------------------------------------------------------------------------------
# property test against a plain per-row / per-group loop


@st.composite
def random_batches(draw: st.DrawFn) -> dict[str, object]:
    group_sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=5))
    group_ids: list[int] = []
    for group, size in enumerate(group_sizes):
        group_ids += [group] * size
    rows = len(group_ids)
    correct = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
    advantage_value = st.one_of(
        st.just(0.0), st.floats(-3.0, 3.0, allow_nan=False, allow_subnormal=False, width=32)
    )
    advantages = draw(st.lists(advantage_value, min_size=rows, max_size=rows))
    # RGR rows: per ordinary row, maybe one repair appended (same group), passed or failed.
    reflected_from = [-1] * rows
    for source in range(rows):
        if draw(st.booleans()) and draw(st.booleans()):
            group_ids.append(group_ids[source])
            reflected_from.append(source)
            correct.append(draw(st.booleans()))
            advantages.append(draw(advantage_value))
    permutation = draw(st.permutations(range(len(group_ids))))
    new_position = {old: new for new, old in enumerate(permutation)}
    return {
        "advantages": [advantages[old] for old in permutation],
        "correct": [correct[old] for old in permutation],
        "group_index": [group_ids[old] * 7 - 3 for old in permutation],
        "reflected_from": [
            -1 if reflected_from[old] < 0 else new_position[reflected_from[old]]
            for old in permutation
        ],
        "token_scale": draw(
            st.lists(
                st.floats(0.0, 2.0, width=32), min_size=len(group_ids), max_size=len(group_ids)
            )
        ),
    }


def loop_failure_share(advantages: list[float], derived: list[bool]) -> float:
    total = 0.0
    part = 0.0
    for magnitude, is_derived in zip(advantages, derived, strict=True):
        total += abs(magnitude)
        if is_derived:
            part += abs(magnitude)
    return part / total if total > 0 else 0.0


@settings(max_examples=60, deadline=None)
@given(batch=random_batches())
def test_vectorised_metrics_match_a_python_loop(batch: dict[str, object]) -> None:
    advantages = [float(value) for value in batch["advantages"]]
    correct = batch["correct"]
    group_index = batch["group_index"]
    reflected_from = batch["reflected_from"]
    token_scale = batch["token_scale"]
    # Two token columns with different weights plus a padding column.
    token_rows = [[a * s, a * (1 - s), 0.0] for a, s in zip(advantages, token_scale, strict=True)]

    metrics = step_signal_metrics(
        torch.tensor(advantages, dtype=torch.float64),
        torch.tensor(correct, dtype=torch.bool),
        torch.tensor(group_index, dtype=torch.long),
        rescue_enabled=True,
        reflected_from=torch.tensor(reflected_from, dtype=torch.long),
        token_advantages=torch.tensor(token_rows, dtype=torch.float64),
    )

    derived = [(not c) or r >= 0 for c, r in zip(correct, reflected_from, strict=True)]
    negative = [not c for c in correct]
    token_magnitude = [sum(abs(x) for x in row) for row in token_rows]
    reference = {
        "signal/failure_share_seq": loop_failure_share(advantages, derived),
        "signal/failure_share_seq_no_rgr": loop_failure_share(advantages, negative),
        "signal/failure_share_token": loop_failure_share(token_magnitude, derived),
        "signal/failure_share_token_no_rgr": loop_failure_share(token_magnitude, negative),
    }
    for name, expected in reference.items():
        assert metrics[name] == pytest.approx(expected, rel=1e-9, abs=1e-12), name
        assert 0.0 <= metrics[name] <= 1.0, name

    groups: dict[int, list[int]] = {}
    for row, group in enumerate(group_index):
        groups.setdefault(group, []).append(row)
    all_correct = all_wrong = with_signal = impossible = 0
    for rows in groups.values():
        ordinary = [row for row in rows if reflected_from[row] < 0]
        n_correct = sum(correct[row] for row in ordinary)
        all_correct += n_correct == len(ordinary)
        all_wrong += n_correct == 0
        impossible += n_correct == 0 and len(ordinary) < 2
        with_signal += any(advantages[row] != 0 for row in rows)
    n_groups = len(groups)
    assert metrics["groups/all_correct_frac"] == pytest.approx(all_correct / n_groups)
    assert metrics["groups/all_wrong_frac"] == pytest.approx(all_wrong / n_groups)
    assert metrics["groups/with_signal_frac"] == pytest.approx(with_signal / n_groups)
    assert metrics["rescue/impossible_frac"] == pytest.approx(impossible / n_groups)
    assert metrics["groups/all_correct_frac"] + metrics["groups/all_wrong_frac"] + metrics[
        "groups/mixed_frac"
    ] == pytest.approx(1.0)
    n_reflected = sum(r >= 0 for r in reflected_from)
    n_passed = sum(r >= 0 and c for c, r in zip(correct, reflected_from, strict=True))
    assert metrics["rgr/triggered"] == n_reflected
    assert metrics["rgr/passed"] == n_passed
