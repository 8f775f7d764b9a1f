"""Policy loss, KL, aggregation, log-probs and entropy: hand-computed numbers.

The settings are those of docs/algorithm.md sections 6 (CARE) and 7 (the baselines).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from care.algo.losses import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    PolicyLossConfig,
    aggregate_loss,
    importance_ratio,
    kl_loss,
    kl_penalty,
    policy_loss,
    sequence_logprobs,
    token_entropy,
)

DOUBLE = torch.float64


def t(values: object, dtype: torch.dtype = DOUBLE) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def logp_pair(log_ratio: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Current log-probs (leaf with grad) and old log-probs with the given log-ratio."""
    old_logp = torch.full((len(log_ratio), len(log_ratio[0])), -1.0, dtype=DOUBLE)
    logp = (old_logp + t(log_ratio)).requires_grad_(True)
    return logp, old_logp


# ------------------------------------------------------------------------------------------------
# policy_loss, token level
# ------------------------------------------------------------------------------------------------


def test_ratio_one_gives_minus_mean_advantage_and_gradient_minus_a_over_n() -> None:
    token_adv = t([[1.0, 2.0, -0.5], [0.5, -1.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    logp, old_logp = logp_pair([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])

    out = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig())
    out.loss.backward()

    # N = 5 response tokens; Σ A = 1 + 2 - 0.5 + 0.5 - 1 = 2
    assert out.loss.item() == pytest.approx(-0.4)
    expected_grad = torch.where(mask, -token_adv / 5, torch.zeros_like(token_adv))
    torch.testing.assert_close(logp.grad, expected_grad)
    assert out.metrics["loss/pg"] == pytest.approx(-0.4)
    assert out.metrics["loss/clipfrac"] == 0.0
    assert out.metrics["loss/dual_clipfrac"] == 0.0
    assert out.metrics["loss/ratio_mean"] == pytest.approx(1.0)
    assert out.metrics["loss/approx_kl_old"] == pytest.approx(0.0)
    assert all(isinstance(value, float) for value in out.metrics.values())


def test_ratio_outside_clip_range_on_the_pessimistic_side_is_clipped_with_zero_gradient() -> None:
    # tokens: (A=+1, r=1.5) clipped above at 1.3; (A=+1, r=1) free;
    #         (A=-1, r=0.5) clipped below at 0.8; (A=+1, r=0.5) free (clip only helps one side)
    token_adv = t([[1.0, 1.0, -1.0, 1.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    logp, old_logp = logp_pair([[math.log(1.5), 0.0, math.log(0.5), math.log(0.5)]])

    out = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig())
    out.loss.backward()

    per_token = [-1.0 * 1.3, -1.0, 1.0 * 0.8, -1.0 * 0.5]
    assert out.loss.item() == pytest.approx(sum(per_token) / 4)
    # d(-A r)/d logp = -A r for a free token, 0 for a clipped one
    torch.testing.assert_close(logp.grad, t([[0.0, -1.0 / 4, 0.0, -0.5 / 4]]))
    assert out.metrics["loss/clipfrac"] == pytest.approx(2 / 4)
    assert out.metrics["loss/clipfrac_neg_answer"] == pytest.approx(1.0)
    assert out.metrics["loss/ratio_mean"] == pytest.approx((1.5 + 1.0 + 0.5 + 0.5) / 4)


def test_clip_high_is_configurable_for_dapo() -> None:
    token_adv = t([[1.0]])
    logp, old_logp = logp_pair([[math.log(1.29)]])
    mask = torch.ones(1, 1, dtype=torch.bool)

    care = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig())
    dapo = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig(clip_high=0.28))

    assert care.loss.item() == pytest.approx(-1.29)
    assert care.metrics["loss/clipfrac"] == 0.0
    assert dapo.loss.item() == pytest.approx(-1.28)
    assert dapo.metrics["loss/clipfrac"] == 1.0


def test_dual_clip_caps_negative_advantage_loss_at_minus_a_times_c_with_zero_gradient() -> None:
    token_adv = t([[-2.0, 1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    logp, old_logp = logp_pair([[math.log(5.0), 0.0]])

    out = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig(dual_clip=3.0))
    out.loss.backward()

    # token 0: -A·3 = 6 (instead of -A·5 = 10); token 1: -1
    assert out.loss.item() == pytest.approx((6.0 - 1.0) / 2)
    torch.testing.assert_close(logp.grad, t([[0.0, -0.5]]))
    assert out.metrics["loss/dual_clipfrac"] == pytest.approx(0.5)
    assert out.metrics["loss/clipfrac"] == 0.0  # pg1 = 10 > pg2 = 2.6: the clip branch is not it


def test_without_dual_clip_the_negative_advantage_loss_grows_with_the_ratio() -> None:
    token_adv = t([[-2.0]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    logp, old_logp = logp_pair([[math.log(5.0)]])

    out = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig(dual_clip=None))
    out.loss.backward()

    assert out.loss.item() == pytest.approx(10.0)
    torch.testing.assert_close(logp.grad, t([[10.0]]))  # d(-A e^x)/dx = -A r = 10
    assert out.metrics["loss/dual_clipfrac"] == 0.0


def test_docstring_example_of_policy_loss() -> None:
    token_adv = t([[1.0, 1.0, -1.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    logp, old_logp = logp_pair([[0.0, math.log(2.0), math.log(5.0)]])

    out = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig())

    assert out.loss.item() == pytest.approx((-1.0 - 1.3 + 3.0) / 3)
    assert out.metrics["loss/clipfrac"] == pytest.approx(1 / 3)
    assert out.metrics["loss/dual_clipfrac"] == pytest.approx(1 / 3)


def test_log_ratio_is_clamped_before_exp() -> None:
    token_adv = t([[1.0]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    logp, old_logp = logp_pair([[100.0]])

    out = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig(log_ratio_clamp=20.0))

    assert out.metrics["loss/ratio_mean"] == pytest.approx(math.exp(20.0))
    assert out.loss.item() == pytest.approx(-1.3)


def test_padding_garbage_gives_neither_nan_loss_nor_nan_gradient() -> None:
    token_adv = t([[1.0, float("nan")]])
    mask = torch.tensor([[True, False]])
    logp = t([[-1.0, float("-inf")]]).requires_grad_(True)
    old_logp = t([[-1.0, float("nan")]])

    out = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig(ratio_level="sequence"))
    out.loss.backward()

    assert out.loss.item() == pytest.approx(-1.0)
    torch.testing.assert_close(logp.grad, t([[-1.0, 0.0]]))
    assert math.isfinite(out.metrics["loss/approx_kl_old"])


def test_approx_kl_old_is_the_mean_k3_over_response_tokens() -> None:
    token_adv = t([[1.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    logp, old_logp = logp_pair([[0.5, -0.5, 3.0]])

    out = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig())

    k3 = [math.exp(-0.5) + 0.5 - 1, math.exp(0.5) - 0.5 - 1]
    assert out.metrics["loss/approx_kl_old"] == pytest.approx(sum(k3) / 2)


# ------------------------------------------------------------------------------------------------
# clipfrac_neg_answer
# ------------------------------------------------------------------------------------------------


def _neg_answer_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # t0: think, A=-0.5, r=0.5 (clipped); t1: answer, A=-1, r=0.5 (clipped);
    # t2: answer, A=-1, r=1 (free);       t3: answer, A=+1, r=2 (clipped, but positive)
    token_adv = t([[-0.5, -1.0, -1.0, 1.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    logp, old_logp = logp_pair([[math.log(0.5), math.log(0.5), 0.0, math.log(2.0)]])
    return logp, old_logp, token_adv, mask


def test_clipfrac_neg_answer_counts_only_answer_tokens_with_negative_advantage() -> None:
    logp, old_logp, token_adv, mask = _neg_answer_batch()
    answer_mask = torch.tensor([[False, True, True, True]])

    out = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig(), answer_mask)

    assert out.metrics["loss/clipfrac"] == pytest.approx(3 / 4)
    assert out.metrics["loss/clipfrac_neg_answer"] == pytest.approx(1 / 2)  # t1 of {t1, t2}


def test_clipfrac_neg_answer_without_answer_mask_uses_all_response_tokens() -> None:
    logp, old_logp, token_adv, mask = _neg_answer_batch()

    out = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig())

    assert out.metrics["loss/clipfrac_neg_answer"] == pytest.approx(2 / 3)  # t0, t1 of t0..t2


def test_clipfrac_neg_answer_is_nan_without_negative_answer_tokens() -> None:
    logp, old_logp, token_adv, mask = _neg_answer_batch()
    answer_mask = torch.tensor([[True, False, False, True]])
    token_adv = token_adv.abs()

    out = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig(), answer_mask)

    assert math.isnan(out.metrics["loss/clipfrac_neg_answer"])


# ------------------------------------------------------------------------------------------------
# aggregation
# ------------------------------------------------------------------------------------------------

PADDED_LOSS = [[1.0, 2.0, 3.0], [4.0, 6.0, float("nan")]]
PADDED_MASK = [[True, True, True], [True, True, False]]


@pytest.mark.parametrize(
    ("mode", "norm_length", "expected"),
    [
        ("token_mean", None, (1 + 2 + 3 + 4 + 6) / 5),  # 3.2
        ("seq_mean_token_mean", None, (6 / 3 + 10 / 2) / 2),  # 3.5
        ("seq_mean_token_sum_norm", None, (6 / 3 + 10 / 3) / 2),  # 2.6667, L = 3
        ("seq_mean_token_sum_norm", 4, (6 / 4 + 10 / 4) / 2),  # 2.0
    ],
)
def test_aggregation_modes_on_a_padded_two_by_three_example(
    mode: str, norm_length: int | None, expected: float
) -> None:
    loss_mat = t(PADDED_LOSS).requires_grad_(True)

    loss = aggregate_loss(loss_mat, torch.tensor(PADDED_MASK), mode, norm_length)  # type: ignore[arg-type]

    assert loss.item() == pytest.approx(expected)


def test_aggregation_gradients_are_the_per_token_weights() -> None:
    mask = torch.tensor(PADDED_MASK)
    expected = {
        "token_mean": [[1 / 5] * 3, [1 / 5, 1 / 5, 0.0]],
        "seq_mean_token_mean": [[1 / 6] * 3, [1 / 4, 1 / 4, 0.0]],
        "seq_mean_token_sum_norm": [[1 / 6] * 3, [1 / 6, 1 / 6, 0.0]],
    }
    for mode, weights in expected.items():
        loss_mat = t(PADDED_LOSS).requires_grad_(True)
        aggregate_loss(loss_mat, mask, mode).backward()  # type: ignore[arg-type]
        torch.testing.assert_close(loss_mat.grad, t(weights), msg=mode)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("token_mean", 2.0), ("seq_mean_token_mean", 2.0), ("seq_mean_token_sum_norm", 2.0)],
)
def test_row_mask_drops_a_row_from_numerator_and_denominator(mode: str, expected: float) -> None:
    loss = aggregate_loss(
        t(PADDED_LOSS),
        torch.tensor(PADDED_MASK),
        mode,  # type: ignore[arg-type]
        row_mask=torch.tensor([True, False]),
    )
    assert loss.item() == pytest.approx(expected)


@pytest.mark.parametrize("mode", sorted(AGGREGATIONS))
def test_empty_selection_gives_zero_with_gradient_not_nan(mode: str) -> None:
    loss_mat = t(PADDED_LOSS).requires_grad_(True)

    loss = aggregate_loss(
        loss_mat,
        torch.tensor(PADDED_MASK),
        mode,  # type: ignore[arg-type]
        row_mask=torch.tensor([False, False]),
    )
    loss.backward()

    assert loss.item() == 0.0
    assert loss.requires_grad
    torch.testing.assert_close(loss_mat.grad, torch.zeros_like(loss_mat))


def test_aggregate_loss_rejects_bad_arguments() -> None:
    loss_mat, mask = t(PADDED_LOSS), torch.tensor(PADDED_MASK)
    with pytest.raises(ValueError, match="mode='mean'"):
        aggregate_loss(loss_mat, mask, "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="norm_length=0"):
        aggregate_loss(loss_mat, mask, "seq_mean_token_sum_norm", norm_length=0)
    with pytest.raises(ValueError, match="row_mask"):
        aggregate_loss(loss_mat, mask, row_mask=torch.tensor([True]))
    with pytest.raises(ValueError, match="loss_mask"):
        aggregate_loss(loss_mat, mask[:, :2])


@pytest.mark.parametrize(
    ("aggregation", "counted", "dropped"),
    [
        ("token_mean", -2.0 / 4, -2.0 / 2),
        ("seq_mean_token_mean", (-1.0 + 0.0) / 2, -1.0),
        ("seq_mean_token_sum_norm", (-2.0 / 2 + 0.0) / 2, -2.0 / 2),
    ],
)
def test_count_zero_adv_rows_false_drops_the_zero_row_from_the_denominator(
    aggregation: str, counted: float, dropped: float
) -> None:
    token_adv = t([[1.0, 1.0], [0.0, 0.0]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    logp, old_logp = logp_pair([[0.0, 0.0], [0.0, 0.0]])

    keep = policy_loss(
        logp,
        old_logp,
        token_adv,
        mask,
        PolicyLossConfig(aggregation=aggregation),  # type: ignore[arg-type]
    )
    drop = policy_loss(
        logp,
        old_logp,
        token_adv,
        mask,
        PolicyLossConfig(aggregation=aggregation, count_zero_adv_rows=False),  # type: ignore[arg-type]
    )

    assert keep.loss.item() == pytest.approx(counted)
    assert drop.loss.item() == pytest.approx(dropped)


def test_dr_grpo_divides_row_sums_by_the_configured_max_length() -> None:
    token_adv = t([[1.0, 1.0, 1.0], [-1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    logp, old_logp = logp_pair([[0.0] * 3, [0.0] * 3])
    cfg = PolicyLossConfig(aggregation="seq_mean_token_sum_norm", norm_length=10)

    out = policy_loss(logp, old_logp, token_adv, mask, cfg)
    out.loss.backward()

    assert out.loss.item() == pytest.approx((-3 / 10 + 1 / 10) / 2)
    # every token weighs 1 / (rows · norm_length), whatever its row's length
    expected_grad = torch.where(mask, -token_adv / 20, torch.zeros_like(token_adv))
    torch.testing.assert_close(logp.grad, expected_grad)


# ------------------------------------------------------------------------------------------------
# GSPO: sequence-level ratio
# ------------------------------------------------------------------------------------------------


def test_sequence_ratio_is_exp_of_mean_log_ratio_shared_by_every_token_of_a_row() -> None:
    logp, old_logp = logp_pair([[0.2, -0.4, 9.0], [0.1, 0.1, 0.1]])
    mask = torch.tensor([[True, True, False], [True, True, True]])

    ratio = importance_ratio(logp, old_logp, mask, level="sequence")

    s0, s1 = math.exp((0.2 - 0.4) / 2), math.exp(0.1)
    torch.testing.assert_close(ratio.detach(), t([[s0, s0, 1.0], [s1, s1, s1]]))
    token_ratio = importance_ratio(logp, old_logp, mask, level="token")
    torch.testing.assert_close(
        token_ratio.detach(), t([[math.exp(0.2), math.exp(-0.4), 1.0], [s1, s1, s1]])
    )


def test_sequence_ratio_gradient_flows_to_each_token_with_the_sequence_weight() -> None:
    logp, old_logp = logp_pair([[0.2, -0.4, 9.0], [0.1, 0.1, 0.1]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    token_adv = t([[1.0, 1.0, 0.0], [-1.0, -1.0, -1.0]])

    out = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig(ratio_level="sequence"))
    out.loss.backward()

    s0, s1 = math.exp(-0.1), math.exp(0.1)
    assert out.loss.item() == pytest.approx((-2 * s0 + 3 * s1) / 5)
    # token t of row i: d loss / d logp_t = -A_t · s_i / N (not -A_t · r_t)
    torch.testing.assert_close(logp.grad, t([[-s0 / 5, -s0 / 5, 0.0], [s1 / 5, s1 / 5, s1 / 5]]))
    assert out.metrics["loss/ratio_mean"] == pytest.approx((2 * s0 + 3 * s1) / 5)


def test_sequence_level_clipping_clips_the_whole_row() -> None:
    # mean log-ratio log(1.5) > log(1.3): the row is clipped, although token 1 alone is not
    log_ratio = [[math.log(1.5) + 0.3, math.log(1.5) - 0.3]]
    token_adv = t([[1.0, 1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)

    logp, old_logp = logp_pair(log_ratio)
    seq = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig(ratio_level="sequence"))
    seq.loss.backward()
    assert seq.loss.item() == pytest.approx(-1.3)
    torch.testing.assert_close(logp.grad, t([[0.0, 0.0]]))
    assert seq.metrics["loss/clipfrac"] == 1.0

    logp, old_logp = logp_pair(log_ratio)
    tok = policy_loss(logp, old_logp, token_adv, mask, PolicyLossConfig(ratio_level="token"))
    assert tok.metrics["loss/clipfrac"] == 0.5


# ------------------------------------------------------------------------------------------------
# KL
# ------------------------------------------------------------------------------------------------


def test_kl_estimators_on_known_values() -> None:
    logp = t([[-1.0, -1.5, -2.0]])
    ref_logp = t([[-1.5, -1.0, -2.0]])  # d = logp - ref = [0.5, -0.5, 0]

    torch.testing.assert_close(kl_penalty(logp, ref_logp, "k1"), t([[0.5, -0.5, 0.0]]))
    torch.testing.assert_close(kl_penalty(logp, ref_logp, "k2"), t([[0.125, 0.125, 0.0]]))
    torch.testing.assert_close(kl_penalty(logp, ref_logp, "abs"), t([[0.5, 0.5, 0.0]]))
    k3 = t([[math.exp(-0.5) + 0.5 - 1, math.exp(0.5) - 0.5 - 1, 0.0]])  # 0.10653, 0.14872, 0
    torch.testing.assert_close(kl_penalty(logp, ref_logp, "k3"), k3)
    torch.testing.assert_close(kl_penalty(logp, ref_logp, "low_var_kl"), k3)


def test_k1_is_positive_when_the_policy_is_more_confident_than_the_reference() -> None:
    assert kl_penalty(t([-0.1]), t([-2.0]), "k1").item() == pytest.approx(1.9)
    assert kl_penalty(t([-2.0]), t([-0.1]), "k1").item() == pytest.approx(-1.9)


@pytest.mark.parametrize("estimator", sorted(KL_ESTIMATORS))
def test_every_estimator_is_zero_when_policy_equals_reference(estimator: str) -> None:
    logp = t([[-0.3, -7.0, 0.0]])
    assert kl_penalty(logp, logp.clone(), estimator).abs().max().item() == 0.0  # type: ignore[arg-type]


def test_k3_is_clamped_for_stability_and_passes_no_gradient_there() -> None:
    logp = t([0.0, -100.0]).requires_grad_(True)
    ref_logp = t([-100.0, 0.0])

    k3 = kl_penalty(logp, ref_logp, "k3")
    k3.sum().backward()

    # ref - logp = -100 → clamped to -20 → e^-20 + 20 - 1 ≈ 19 → capped at 10; +100 → e^20 → 10
    torch.testing.assert_close(k3.detach(), t([10.0, 10.0]))
    torch.testing.assert_close(logp.grad, t([0.0, 0.0]))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-60.0, 60.0), min_size=1, max_size=16),
    st.lists(st.floats(-60.0, 60.0), min_size=1, max_size=16),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_k3_is_never_negative(a: list[float], b: list[float], dtype: torch.dtype) -> None:
    n = min(len(a), len(b))
    k3 = kl_penalty(t(a[:n], dtype), t(b[:n], dtype), "k3")
    assert (k3 >= 0).all()


def test_k3_is_never_negative_for_tiny_float32_differences() -> None:
    logp = torch.full((7,), -1.0, dtype=torch.float32)
    ref = logp + t([1e-7, -1e-7, 3e-8, -3e-8, 6e-8, -6e-8, 1e-6], torch.float32)
    assert (kl_penalty(logp, ref, "k3") >= 0).all()


def test_kl_penalty_rejects_unknown_estimator_and_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="estimator='k4'"):
        kl_penalty(t([0.0]), t([0.0]), "k4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same shape"):
        kl_penalty(t([0.0]), t([0.0, 1.0]), "k1")


def test_kl_loss_aggregates_and_reports_its_value() -> None:
    logp = t([[-1.0, -2.0, float("-inf")]]).requires_grad_(True)
    ref_logp = t([[-1.0, -1.0, float("nan")]])
    mask = torch.tensor([[True, True, False]])

    out = kl_loss(logp, ref_logp, mask, estimator="k1")
    out.loss.backward()

    assert out.loss.item() == pytest.approx(-0.5)
    assert out.metrics == {"loss/kl": pytest.approx(-0.5)}
    torch.testing.assert_close(logp.grad, t([[0.5, 0.5, 0.0]]))

    k3 = kl_loss(logp, ref_logp, mask, aggregation="seq_mean_token_sum_norm", norm_length=4)
    assert k3.metrics["loss/kl"] == pytest.approx((math.exp(1.0) - 1 - 1) / 4)


# ------------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field_name", "value", "valid"),
    [
        ("clip_low", 1.0, "Input should be less than 1"),
        ("clip_low", -0.1, "Input should be greater than or equal to 0"),
        ("clip_high", -0.01, "Input should be greater than or equal to 0"),
        ("clip_high", float("nan"), "Input should be a finite number"),
        ("dual_clip", 1.0, "Input should be greater than 1"),
        ("dual_clip", 0.5, "Input should be greater than 1"),
        ("ratio_level", "row", "Input should be 'token' or 'sequence'"),
        (
            "aggregation",
            "sum",
            "Input should be 'token_mean', 'seq_mean_token_mean' or 'seq_mean_token_sum_norm'",
        ),
        ("count_zero_adv_rows", 1, "Input should be a valid boolean"),
        ("norm_length", 0, "Input should be greater than or equal to 1"),
        ("norm_length", 2.5, "Input should be a valid integer"),
        ("norm_length", True, "Input should be a valid integer"),
        ("log_ratio_clamp", 0.0, "Input should be greater than 0"),
        ("kl_coef", -0.5, "Input should be greater than or equal to 0"),
        ("kl_estimator", "k4", "Input should be 'k1', 'k2', 'k3', 'low_var_kl' or 'abs'"),
        ("clip_lo", 0.1, "Extra inputs are not permitted"),
    ],
)
def test_config_errors_name_the_field_the_value_and_what_is_valid(
    field_name: str, value: object, valid: str
) -> None:
    # PolicyLossConfig is also the YAML's loss section: pydantic checks it when it is built.
    with pytest.raises(ValueError) as excinfo:
        PolicyLossConfig(**{field_name: value})  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert "validation error for PolicyLossConfig" in message
    assert f"\n{field_name}\n  {valid} [" in message
    assert f"input_value={value!r}" in message


def test_config_defaults_and_baseline_settings() -> None:
    care = PolicyLossConfig()
    assert (care.clip_low, care.clip_high, care.dual_clip) == (0.2, 0.3, 3.0)
    assert (care.ratio_level, care.aggregation, care.count_zero_adv_rows) == (
        "token",
        "token_mean",
        True,
    )
    assert care.log_ratio_clamp == 20.0 and care.norm_length is None
    PolicyLossConfig(clip_high=0.28)  # DAPO
    PolicyLossConfig(aggregation="seq_mean_token_sum_norm", norm_length=2048)  # Dr. GRPO
    PolicyLossConfig(ratio_level="sequence", dual_clip=None)  # GSPO


def test_policy_loss_rejects_mismatched_shapes() -> None:
    logp = torch.zeros(2, 3, dtype=DOUBLE)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="token_adv"):
        policy_loss(logp, logp, torch.zeros(2, 4, dtype=DOUBLE), mask, PolicyLossConfig())
    with pytest.raises(ValueError, match="answer_mask"):
        policy_loss(logp, logp, logp, mask, PolicyLossConfig(), answer_mask=mask[:1])


# ------------------------------------------------------------------------------------------------
# sequence_logprobs and token_entropy
# ------------------------------------------------------------------------------------------------


def _random_logits(dtype: torch.dtype = DOUBLE) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=generator, dtype=torch.float64) * 3
    targets = torch.randint(0, 11, (3, 5), generator=generator)
    return logits.to(dtype), targets


def test_sequence_logprobs_docstring_example() -> None:
    logits = t([[[0.0, math.log(3.0)]]])
    assert sequence_logprobs(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75))


def test_sequence_logprobs_equals_naive_log_softmax_gather() -> None:
    logits, targets = _random_logits()
    naive = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(sequence_logprobs(logits, targets, chunk_size=4), naive)


def test_sequence_logprobs_chunked_path_matches_unchunked_values_and_gradients() -> None:
    logits, targets = _random_logits()
    upstream = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=DOUBLE)
    results = []
    for chunk_size in (1, 4, 1000):
        leaf = logits.clone().requires_grad_(True)
        values = sequence_logprobs(leaf, targets, chunk_size=chunk_size)
        (values * upstream).sum().backward()
        results.append((values.detach(), leaf.grad))
    naive_leaf = logits.clone().requires_grad_(True)
    naive = torch.log_softmax(naive_leaf, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    (naive * upstream).sum().backward()
    for values, grad in results:
        torch.testing.assert_close(values, naive.detach())
        torch.testing.assert_close(grad, naive_leaf.grad)


def test_sequence_logprobs_passes_gradcheck() -> None:
    logits, targets = _random_logits()
    leaf = logits[:2, :3, :6].clone().requires_grad_(True)
    targets = targets[:2, :3] % 6
    assert torch.autograd.gradcheck(lambda x: sequence_logprobs(x, targets, 2), (leaf,))


def test_sequence_logprobs_upcasts_bf16_chunks_to_float32() -> None:
    logits, targets = _random_logits(torch.bfloat16)
    leaf = logits.clone().requires_grad_(True)

    values = sequence_logprobs(leaf, targets, chunk_size=4)
    values.sum().backward()

    assert values.dtype == torch.float32
    naive = torch.log_softmax(logits.float(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(values, naive)
    assert leaf.grad is not None and leaf.grad.dtype == torch.bfloat16


def test_sequence_logprobs_rejects_out_of_range_targets_and_bad_shapes() -> None:
    logits, targets = _random_logits()
    with pytest.raises(ValueError, match=r"\[-100, "):
        sequence_logprobs(logits, targets.masked_fill(targets == targets[0, 0], -100))
    with pytest.raises(ValueError, match="target_ids must have shape"):
        sequence_logprobs(logits, targets[:, :2])
    with pytest.raises(ValueError, match="chunk_size=0"):
        sequence_logprobs(logits, targets, chunk_size=0)


def test_token_entropy_docstring_example() -> None:
    logits = t([[[0.0, 0.0], [0.0, math.log(3.0)]]])
    entropy = token_entropy(logits, torch.tensor([[True, True]]))
    expected = [math.log(2), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]  # 0.6931, 0.5623
    torch.testing.assert_close(entropy, t([expected]))


def test_token_entropy_equals_naive_entropy_on_masked_tokens_in_any_chunking() -> None:
    logits, _ = _random_logits()
    logits[0, 0, 3] = float("-inf")  # a banned token: p log p must count as 0, not NaN
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(2)) > 0.4
    mask[0, 0] = True
    probs = torch.softmax(logits, -1)
    naive = -(probs * torch.log_softmax(logits, -1)).nan_to_num(0.0).sum(-1) * mask

    for chunk_size in (1, 3, 1000):
        entropy = token_entropy(logits.requires_grad_(True), mask, chunk_size=chunk_size)
        torch.testing.assert_close(entropy, naive.detach())
        assert not entropy.requires_grad and entropy.dtype == DOUBLE


def test_token_entropy_is_zero_off_the_mask_and_float32_for_bf16() -> None:
    logits, _ = _random_logits(torch.bfloat16)
    empty = token_entropy(logits, torch.zeros(3, 5, dtype=torch.bool))
    assert empty.dtype == torch.float32 and not empty.any()
    with pytest.raises(ValueError, match=r"mask must have shape \[B, L\] = \(3, 5\)"):
        token_entropy(logits, torch.ones(3, 4, dtype=torch.bool))
