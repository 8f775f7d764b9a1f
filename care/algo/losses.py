"""Policy-gradient losses: clipped surrogate, KL to a reference, aggregation, log-probs, entropy.

docs/algorithm.md section 6 (CARE) and the loss settings of the section 7 baselines:

- CARE / GRPO: token-level PPO ratio, clip range [1 - 0.2, 1 + 0.3], dual clip c = 3 for
  negative advantages, ``low_var_kl`` (k3) to the reference policy, ``token_mean`` aggregation.
- Dr. GRPO: ``seq_mean_token_sum_norm`` aggregation (row token sums divided by a constant, the
  maximum response length).
- DAPO: clip-higher (``clip_low=0.2, clip_high=0.28``), no KL term (the trainer simply does not
  call :func:`kl_loss`), ``token_mean``.
- GSPO: ``ratio_level="sequence"``: one importance ratio per response, the exponential of the
  length-normalised log-ratio, clipped as a whole.

Shapes: ``B`` responses in the (micro-)batch, ``L`` padded response length, ``V`` vocabulary.
Every function here is pure and vectorised and runs wherever its inputs live (CPU or CUDA).

Tiny example (token level, ratio exactly 1, ``token_mean`` over 3 response tokens)::

    logp = old_logp = [[-1.0, -2.0, -0.5]],  token_adv = [[1.0, 1.0, -0.5]]
    loss = -mean(A) = -(1 + 1 - 0.5) / 3 = -0.5;  d loss / d logp = -A / 3
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

RatioLevel = Literal["token", "sequence"]
Aggregation = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]
KLEstimator = Literal["k1", "k2", "k3", "low_var_kl", "abs"]

# verl's stabilisers for the k3 estimator: the log-ratio is clamped before exp so a token whose
# reference log-prob is far below the policy's cannot overflow, and the estimate is capped so a
# handful of such tokens cannot dominate the KL term (their gradient is then zero).
K3_LOG_RATIO_CLAMP = 20.0
K3_VALUE_CLAMP = 10.0


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


class PolicyLossConfig(BaseModel):
    """Settings of the policy loss (docs/algorithm.md section 6): the clipped surrogate that
    :func:`policy_loss` computes and the KL term the trainer adds with :func:`kl_loss`.

    This one class is both the argument of :func:`policy_loss` and the ``loss`` section of a
    run's YAML; the defaults are the paper's PPO settings (CARE and GRPO), and a run config
    fills the fields it leaves unset from its estimator (``care.algo.registry``). A bad value
    raises a ``ValueError`` (pydantic's ``ValidationError``) naming the field and what it allows.

    Attributes:
        clip_low: lower clip range; the ratio is clipped below at ``1 - clip_low``. In [0, 1),
            so the lower bound stays positive.
        clip_high: upper clip range; the ratio is clipped above at ``1 + clip_high`` (DAPO's
            clip-higher uses 0.28). At least 0.
        dual_clip: dual-clip constant ``c`` for negative advantages: a token's loss is capped
            at ``-A * c`` however large its ratio grows. ``None`` disables it. Must be > 1 (a
            cap at or below ratio 1 would clip on-policy tokens).
        ratio_level: ``"token"`` (PPO/GRPO: one ratio per token) or ``"sequence"`` (GSPO: one
            ratio per response, ``exp(mean_t(logp - old_logp))``).
        aggregation: how the ``[B, L]`` per-token losses become one scalar; see
            :func:`aggregate_loss`.
        count_zero_adv_rows: whether responses whose advantages are all zero still count in the
            denominator of the aggregation (the reference code: yes). ``False`` drops them.
        kl_coef: weight of the KL term to the reference policy (0: no KL term). Read by the
            trainer, not by :func:`policy_loss`.
        kl_estimator: the per-token KL estimate (:func:`kl_penalty`). Read by the trainer.
        norm_length: the constant divisor of ``seq_mean_token_sum_norm`` (Dr. GRPO's maximum
            response length, in tokens). ``None`` uses ``L``, the padded length of the batch;
            the trainer puts ``rollout.max_new_tokens`` in its place.
        log_ratio_clamp: ``logp - old_logp`` is clamped to ``[-v, v]`` before ``exp``. > 0.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    clip_low: float = Field(
        0.2, ge=0.0, lt=1.0, description="Ratio clipped below at 1 - clip_low, in [0, 1)."
    )
    clip_high: float = Field(0.3, ge=0.0, description="Ratio clipped above at 1 + clip_high.")
    dual_clip: float | None = Field(
        3.0, gt=1.0, description="Dual-clip constant c > 1 for negative advantages (null: off)."
    )
    ratio_level: RatioLevel = Field("token", description="Token (PPO/GRPO) or sequence (GSPO).")
    aggregation: Aggregation = Field(
        "token_mean", description="How per-token losses become one scalar."
    )
    count_zero_adv_rows: bool = Field(
        True, strict=True, description="Zero-advantage rows count in means."
    )
    kl_coef: float = Field(1e-2, ge=0.0, description="KL coefficient (0 disables the KL term).")
    kl_estimator: KLEstimator = Field(
        "low_var_kl", description="KL estimator to the reference policy."
    )
    norm_length: int | None = Field(
        None,
        ge=1,
        strict=True,
        description="Divisor of seq_mean_token_sum_norm in tokens (null: a run uses "
        "rollout.max_new_tokens, a direct call the padded batch length).",
    )
    log_ratio_clamp: float = Field(
        20.0, gt=0.0, description="logp - old_logp is clamped to +-this before exp."
    )


_RATIO_LEVELS = frozenset({"token", "sequence"})


def _check_norm_length(value: object, owner: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"{owner}={value!r} is invalid: it must be a positive int (Dr. GRPO's maximum "
            "response length in tokens) or None for the padded length L."
        )


# --------------------------------------------------------------------------------------------
# KL estimators
# --------------------------------------------------------------------------------------------


def _kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return logp - ref_logp


def _kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logp - ref_logp).square()


def _kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    log_ratio = (ref_logp - logp).clamp(-K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP)
    # expm1(x) - x instead of exp(x) - x - 1: near x = 0 the latter cancels to values of order
    # one float epsilon, which can come out negative; expm1 keeps the estimate >= 0.
    return (torch.expm1(log_ratio) - log_ratio).clamp(-K3_VALUE_CLAMP, K3_VALUE_CLAMP)


def _kl_abs(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return (logp - ref_logp).abs()


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k1": _kl_k1,
    "k2": _kl_k2,
    "k3": _kl_k3,
    "low_var_kl": _kl_k3,
    "abs": _kl_abs,
}


def kl_penalty(
    logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KLEstimator = "low_var_kl"
) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled-token log-probs.

    With ``d = logp - ref_logp`` (log-probs of the sampled tokens, float ``[B, L]``):

    - ``k1``: ``d`` (unbiased, high variance, can be negative);
    - ``k2``: ``0.5 * d**2``;
    - ``k3`` / ``low_var_kl``: ``exp(-d) + d - 1`` (Schulman's low-variance, always >= 0). As
      verl does for stability, ``-d`` is clamped to ±20 before ``exp`` and the estimate to
      [-10, 10]; clamped tokens pass no gradient.
    - ``abs``: ``|d|``.

    Returns float ``[B, L]`` (any matching shape works; the estimate is element-wise).

    Example::

        logp = [[-1.0]], ref_logp = [[-1.5]]   (d = 0.5)
        k1 → 0.5;  k2 → 0.125;  abs → 0.5;  k3 → exp(-0.5) + 0.5 - 1 = 0.10653
        logp == ref_logp → 0 for every estimator
    """
    estimate = KL_ESTIMATORS.get(estimator)
    if estimate is None:
        raise ValueError(
            f"kl_penalty: estimator={estimator!r} is unknown; allowed are {sorted(KL_ESTIMATORS)}."
        )
    if logp.shape != ref_logp.shape:
        raise ValueError(
            f"kl_penalty: logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} must have "
            "the same shape."
        )
    return estimate(logp, ref_logp)


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


def _token_mean(masked_loss: torch.Tensor, counted: torch.Tensor, norm_length: int) -> torch.Tensor:
    return masked_loss.sum() / counted.sum().clamp(min=1)


def _seq_mean_token_mean(
    masked_loss: torch.Tensor, counted: torch.Tensor, norm_length: int
) -> torch.Tensor:
    tokens_per_row = counted.sum(dim=-1)
    row_means = masked_loss.sum(dim=-1) / tokens_per_row.clamp(min=1)
    return row_means.sum() / (tokens_per_row > 0).sum().clamp(min=1)


def _seq_mean_token_sum_norm(
    masked_loss: torch.Tensor, counted: torch.Tensor, norm_length: int
) -> torch.Tensor:
    tokens_per_row = counted.sum(dim=-1)
    row_sums = masked_loss.sum(dim=-1) / norm_length
    return row_sums.sum() / (tokens_per_row > 0).sum().clamp(min=1)


AGGREGATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "token_mean": _token_mean,
    "seq_mean_token_mean": _seq_mean_token_mean,
    "seq_mean_token_sum_norm": _seq_mean_token_sum_norm,
}


def aggregate_loss(
    loss_mat: torch.Tensor,
    loss_mask: torch.Tensor,
    mode: Aggregation = "token_mean",
    norm_length: int | None = None,
    row_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce per-token losses to one scalar.

    Args:
        loss_mat: float ``[B, L]`` per-token losses. Entries outside ``loss_mask`` are ignored,
            even NaN or inf ones.
        loss_mask: bool (or 0/1) ``[B, L]``, the tokens that carry a loss (response tokens).
        mode: ``token_mean``: ``Σ loss / Σ mask`` over all counted tokens of the batch;
            ``seq_mean_token_mean``: the mean over rows of each row's token mean;
            ``seq_mean_token_sum_norm`` (Dr. GRPO): the mean over rows of
            ``row token sum / norm_length``.
        norm_length: divisor of ``seq_mean_token_sum_norm``; ``None`` → ``L``. Other modes
            ignore it.
        row_mask: bool ``[B]`` or ``None`` (all rows): the rows that count. A dropped row leaves
            both numerator and denominator. In the two ``seq_mean`` modes a row also needs at
            least one masked token to count (a row without tokens has no mean).

    Returns:
        0-dim float tensor. An empty selection gives 0, still attached to the graph of
        ``loss_mat`` (so ``backward`` works and yields zero gradients), never NaN.

    Example (``L = 3``, row 1 padded to 2 tokens)::

        loss_mat  = [[1, 2, 3], [4, 6, 99]]
        loss_mask = [[1, 1, 1], [1, 1,  0]]
        token_mean              = (1+2+3+4+6) / 5          = 3.2
        seq_mean_token_mean     = (6/3 + 10/2) / 2         = 3.5
        seq_mean_token_sum_norm = (6/3 + 10/3) / 2         = 2.6667   (norm_length None → 3)
        row_mask = [True, False], token_mean → 6 / 3 = 2.0
    """
    reduce = AGGREGATIONS.get(mode)
    if reduce is None:
        raise ValueError(
            f"aggregate_loss: mode={mode!r} is unknown; allowed are {sorted(AGGREGATIONS)}."
        )
    if loss_mat.dim() != 2:
        raise ValueError(
            f"aggregate_loss: loss_mat must be 2-D [B, L], got shape {tuple(loss_mat.shape)}."
        )
    if loss_mask.shape != loss_mat.shape:
        raise ValueError(
            f"aggregate_loss: loss_mask {tuple(loss_mask.shape)} must match loss_mat "
            f"{tuple(loss_mat.shape)}."
        )
    if norm_length is None:
        norm_length = loss_mat.shape[-1]
    else:
        _check_norm_length(norm_length, owner="aggregate_loss: norm_length")
    counted = loss_mask.to(device=loss_mat.device, dtype=torch.bool)
    if row_mask is not None:
        if row_mask.shape != loss_mat.shape[:1]:
            raise ValueError(
                f"aggregate_loss: row_mask must have shape [B] = ({loss_mat.shape[0]},), got "
                f"{tuple(row_mask.shape)}."
            )
        counted = counted & row_mask.to(device=loss_mat.device, dtype=torch.bool).unsqueeze(-1)
    # torch.where (not multiplication) so NaN/inf in padding cannot leak into the sum.
    masked_loss = torch.where(counted, loss_mat, torch.zeros_like(loss_mat))
    return reduce(masked_loss, counted, norm_length)


# --------------------------------------------------------------------------------------------
# Importance ratio and the clipped surrogate
# --------------------------------------------------------------------------------------------


def importance_ratio(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    response_mask: torch.Tensor,
    level: RatioLevel = "token",
    log_ratio_clamp: float = 20.0,
) -> torch.Tensor:
    """Importance ratio between the current and the old policy, one value per token.

    Args:
        logp: float ``[B, L]`` current log-probs of the response tokens (with grad).
        old_logp: float ``[B, L]`` log-probs under the policy that sampled them (no grad).
        response_mask: bool ``[B, L]`` real response tokens.
        level: ``"token"``: ``exp(clamp(logp - old_logp))`` per token. ``"sequence"`` (GSPO):
            ``s_i = exp(clamp(mean_t (logp - old_logp)))`` over the response tokens of row i,
            returned as ``sg(s_i) * exp(logp - sg(logp))``: every token of the row shows the
            value ``s_i`` and its gradient w.r.t. its own ``logp`` is ``s_i`` (the sequence
            weight), as in GSPO's gradient.
        log_ratio_clamp: the log-ratio (token or row mean) is clamped to ±this before ``exp``.

    Returns:
        float ``[B, L]``; 1 on padding (with zero gradient).

    Example::

        logp - old_logp = [[0.2, -0.4, (pad)]]
        token    → [[exp(0.2), exp(-0.4), 1]] = [[1.2214, 0.6703, 1]]
        sequence → s = exp((0.2 - 0.4) / 2) = 0.9048 → [[0.9048, 0.9048, 1]]
    """
    if level not in _RATIO_LEVELS:
        raise ValueError(
            f"importance_ratio: level={level!r} is unknown; allowed are {sorted(_RATIO_LEVELS)}."
        )
    mask = response_mask.to(device=logp.device, dtype=torch.bool)
    # Zero the padding BEFORE any arithmetic, so garbage there (e.g. -inf) yields neither NaN
    # values nor NaN gradients.
    zeros = torch.zeros_like(logp)
    logp_safe = torch.where(mask, logp, zeros)
    log_ratio = torch.where(mask, logp - old_logp.to(logp.dtype), zeros)
    if level == "token":
        return torch.exp(log_ratio.clamp(-log_ratio_clamp, log_ratio_clamp))
    tokens_per_row = mask.sum(dim=-1, keepdim=True).clamp(min=1)
    seq_log_ratio = (log_ratio.sum(dim=-1, keepdim=True) / tokens_per_row).clamp(
        -log_ratio_clamp, log_ratio_clamp
    )
    ratio = torch.exp(seq_log_ratio.detach()) * torch.exp(logp_safe - logp_safe.detach())
    return torch.where(mask, ratio, torch.ones_like(ratio))


@dataclass(frozen=True)
class PolicyLossOutput:
    """Result of :func:`policy_loss`.

    Attributes:
        loss: 0-dim float tensor with grad, the aggregated clipped surrogate.
        metrics: python floats: ``loss/pg``, ``loss/clipfrac``, ``loss/clipfrac_neg_answer``,
            ``loss/dual_clipfrac``, ``loss/ratio_mean``, ``loss/approx_kl_old``.
    """

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    token_adv: torch.Tensor,
    response_mask: torch.Tensor,
    cfg: PolicyLossConfig,
    answer_mask: torch.Tensor | None = None,
) -> PolicyLossOutput:
    """PPO clipped surrogate with dual clip on token advantages (docs/algorithm.md section 6).

    Per token, with ratio ``r`` from :func:`importance_ratio` and advantage ``A``::

        pg1 = -A * r
        pg2 = -A * clip(r, 1 - clip_low, 1 + clip_high)
        pg  = max(pg1, pg2)                        # the pessimistic (clipped) branch
        pg  = min(pg, -A * dual_clip)  if A < 0    # dual clip: bounded loss for huge ratios

    then ``aggregate_loss(pg, response_mask, cfg.aggregation, cfg.norm_length, row_mask)``,
    where ``row_mask`` drops rows whose advantages are all zero when
    ``cfg.count_zero_adv_rows`` is False.

    Args:
        logp: float ``[B, L]`` current log-probs of the response tokens (with grad).
        old_logp: float ``[B, L]`` log-probs of the same tokens under the sampling policy.
        token_adv: float ``[B, L]`` per-token advantages (zero on padding).
        response_mask: bool ``[B, L]`` real response tokens.
        cfg: :class:`PolicyLossConfig`.
        answer_mask: bool ``[B, L]`` tokens of the ``<answer>`` span, only for the metric
            ``loss/clipfrac_neg_answer``; ``None`` → every response token counts as answer.

    Returns:
        :class:`PolicyLossOutput`. Metrics (all over response tokens; NaN where the set is
        empty):

        - ``loss/pg``: the loss value;
        - ``loss/clipfrac``: share of tokens where the clipped branch is active (``pg2 > pg1``,
          so the token passes no gradient);
        - ``loss/clipfrac_neg_answer``: the same over answer tokens with ``A < 0`` (for those,
          the ratio fell below ``1 - clip_low``);
        - ``loss/dual_clipfrac``: share of tokens where the dual clip is active;
        - ``loss/ratio_mean``: mean ratio (forward value);
        - ``loss/approx_kl_old``: mean k3 estimate of KL(new || old).

    Example (token level, defaults, one row of 3 tokens)::

        A = [1, 1, -1], ratio = [1.0, 2.0, 5.0]
        token 0: pg = -1 * 1.0 = -1.0                      (inside the clip range)
        token 1: pg1 = -2.0, pg2 = -1.3 → -1.3, no grad    (clipped, counts in clipfrac)
        token 2: pg1 = 5.0, pg2 = 1.3 → 5.0; dual: min(5.0, 3.0) = 3.0, no grad
        loss (token_mean) = (-1.0 - 1.3 + 3.0) / 3 = 0.2333
    """
    if not isinstance(cfg, PolicyLossConfig):
        raise ValueError(f"policy_loss: cfg must be a PolicyLossConfig, got {type(cfg).__name__}.")
    _check_same_shape(
        "policy_loss",
        logp=logp,
        old_logp=old_logp,
        token_adv=token_adv,
        response_mask=response_mask,
        answer_mask=answer_mask,
    )
    compute_dtype = torch.promote_types(logp.dtype, torch.float32)
    logp = logp.to(compute_dtype)
    old_logp = old_logp.to(device=logp.device, dtype=compute_dtype)
    mask = response_mask.to(device=logp.device, dtype=torch.bool)
    advantages = torch.where(
        mask, token_adv.to(device=logp.device, dtype=compute_dtype), torch.zeros_like(logp)
    )

    ratio = importance_ratio(
        logp, old_logp, mask, level=cfg.ratio_level, log_ratio_clamp=cfg.log_ratio_clamp
    )
    pg_unclipped = -advantages * ratio
    pg_clipped = -advantages * ratio.clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
    pg = torch.maximum(pg_unclipped, pg_clipped)
    negative = advantages < 0
    if cfg.dual_clip is not None:
        pg_dual = -advantages * cfg.dual_clip
        dual_active = negative & (pg > pg_dual)
        pg = torch.where(dual_active, pg_dual, pg)
    else:
        dual_active = torch.zeros_like(mask)

    row_mask = None
    if not cfg.count_zero_adv_rows:
        row_mask = (advantages != 0).any(dim=-1)
    loss = aggregate_loss(pg, mask, cfg.aggregation, cfg.norm_length, row_mask)

    with torch.no_grad():
        clip_active = (pg_clipped > pg_unclipped) & mask
        if answer_mask is None:
            neg_answer = negative & mask
        else:
            neg_answer = negative & mask & answer_mask.to(device=logp.device, dtype=torch.bool)
        kl_old = kl_penalty(logp.detach(), torch.where(mask, old_logp, logp.detach()), "k3")
        n_tokens = mask.sum()
        # One stacked tensor → one device sync for all metrics.
        metric_values = [
            loss.detach(),
            clip_active.sum() / n_tokens,
            (clip_active & neg_answer).sum() / neg_answer.sum(),
            (dual_active & mask).sum() / n_tokens,
            torch.where(mask, ratio.detach(), torch.zeros_like(ratio)).sum() / n_tokens,
            torch.where(mask, kl_old, torch.zeros_like(kl_old)).sum() / n_tokens,
        ]
        values = torch.stack([value.to(torch.float64) for value in metric_values]).tolist()
    names = (
        "loss/pg",
        "loss/clipfrac",
        "loss/clipfrac_neg_answer",
        "loss/dual_clipfrac",
        "loss/ratio_mean",
        "loss/approx_kl_old",
    )
    return PolicyLossOutput(loss=loss, metrics=dict(zip(names, values, strict=True)))


def _check_same_shape(where: str, **tensors: torch.Tensor | None) -> None:
    reference_name, reference = next(iter(tensors.items()))
    assert reference is not None
    if reference.dim() != 2:
        raise ValueError(
            f"{where}: {reference_name} must be 2-D [B, L], got shape {tuple(reference.shape)}."
        )
    for name, tensor in tensors.items():
        if tensor is not None and tensor.shape != reference.shape:
            raise ValueError(
                f"{where}: {name} has shape {tuple(tensor.shape)} but {reference_name} has "
                f"{tuple(reference.shape)}; all must be [B, L]."
            )


# --------------------------------------------------------------------------------------------
# KL loss to the reference policy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KLLossOutput:
    """Result of :func:`kl_loss`.

    Attributes:
        loss: 0-dim float tensor with grad, the aggregated KL estimate (NOT multiplied by the KL
            coefficient: the trainer scales it).
        metrics: ``{"loss/kl": float}``, the same value as a python float.
    """

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def kl_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    response_mask: torch.Tensor,
    estimator: KLEstimator = "low_var_kl",
    aggregation: Aggregation = "token_mean",
    norm_length: int | None = None,
    row_mask: torch.Tensor | None = None,
) -> KLLossOutput:
    """KL penalty to the reference policy, aggregated like the policy loss.

    Args:
        logp: float ``[B, L]`` current log-probs (with grad).
        ref_logp: float ``[B, L]`` reference-policy log-probs of the same tokens.
        response_mask: bool ``[B, L]`` real response tokens.
        estimator: see :func:`kl_penalty` (default ``low_var_kl``: k3, docs/algorithm.md s. 6).
        aggregation, norm_length, row_mask: see :func:`aggregate_loss`.

    Returns:
        :class:`KLLossOutput`; the total loss is ``pg + kl_coef * kl.loss`` (kl_coef = 1e-2).

    Example::

        logp = [[-1.0, -2.0]], ref_logp = [[-1.0, -1.0]], estimator "k1"
        → per token [0, -1] → token_mean -0.5 → metrics {"loss/kl": -0.5}
    """
    _check_same_shape("kl_loss", logp=logp, ref_logp=ref_logp, response_mask=response_mask)
    mask = response_mask.to(device=logp.device, dtype=torch.bool)
    # Padding is replaced by equal values BEFORE the estimator, so garbage there gives neither
    # NaN values nor NaN gradients.
    logp_safe = torch.where(mask, logp, torch.zeros_like(logp))
    ref_safe = torch.where(mask, ref_logp.to(device=logp.device, dtype=logp.dtype), logp_safe)
    per_token = kl_penalty(logp_safe, ref_safe, estimator)
    loss = aggregate_loss(per_token, mask, aggregation, norm_length, row_mask)
    return KLLossOutput(loss=loss, metrics={"loss/kl": float(loss.detach())})


# --------------------------------------------------------------------------------------------
# Log-probs and entropy from logits, chunked
# --------------------------------------------------------------------------------------------


class _ChunkedTargetLogProbs(torch.autograd.Function):
    """``log_softmax(logits)[target]`` in chunks of rows, with a hand-written backward.

    Plain autograd would keep every chunk's float32 upcast alive for the backward pass, i.e.
    a float32 copy of all logits. Here only the (original-dtype) logits and one log-sum-exp
    per row are kept; the backward recomputes the softmax chunk by chunk.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        logits: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: int,
    ) -> torch.Tensor:
        n_rows = logits.shape[0]
        compute_dtype = torch.promote_types(logits.dtype, torch.float32)
        target_logp = torch.empty(n_rows, dtype=compute_dtype, device=logits.device)
        log_norm = torch.empty(n_rows, dtype=compute_dtype, device=logits.device)
        for start in range(0, n_rows, chunk_size):
            stop = min(start + chunk_size, n_rows)
            chunk = logits[start:stop].to(compute_dtype)
            chunk_log_norm = torch.logsumexp(chunk, dim=-1)
            target_logit = chunk.gather(-1, targets[start:stop].unsqueeze(-1)).squeeze(-1)
            target_logp[start:stop] = target_logit - chunk_log_norm
            log_norm[start:stop] = chunk_log_norm
        ctx.save_for_backward(logits, targets, log_norm)
        ctx.chunk_size = chunk_size
        return target_logp

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_target_logp: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None]:
        logits, targets, log_norm = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        chunk_size: int = ctx.chunk_size
        grad_logits = torch.empty_like(logits)
        for start in range(0, logits.shape[0], chunk_size):
            stop = min(start + chunk_size, logits.shape[0])
            chunk = logits[start:stop].to(log_norm.dtype)
            upstream = grad_target_logp[start:stop].to(log_norm.dtype).unsqueeze(-1)
            # d logp[target] / d logits = onehot(target) - softmax(logits)
            chunk_grad = torch.exp(chunk - log_norm[start:stop].unsqueeze(-1)) * -upstream
            chunk_grad.scatter_add_(-1, targets[start:stop].unsqueeze(-1), upstream)
            grad_logits[start:stop] = chunk_grad.to(logits.dtype)
        return grad_logits, None, None


def sequence_logprobs(
    logits: torch.Tensor, target_ids: torch.Tensor, chunk_size: int = 1024
) -> torch.Tensor:
    """Log-probability of each target token: ``log_softmax(logits)[..., target]``.

    Rows of the flattened ``[B*L, V]`` logits are processed ``chunk_size`` at a time, each
    chunk upcast to float32, so neither the full log-softmax nor a float32 copy of bf16 logits
    is ever materialised for the whole batch (not in the backward pass either). Differentiable
    w.r.t. ``logits`` (first order).

    Args:
        logits: float (bf16/fp16/fp32/fp64) ``[B, L, V]``, already aligned so that
            ``logits[:, t]`` predicts ``target_ids[:, t]``.
        target_ids: integer ``[B, L]`` with values in ``[0, V)`` (use a valid id such as the
            pad id on padding, then mask the result).
        chunk_size: token positions per chunk (> 0).

    Returns:
        float32 (float64 for float64 logits) ``[B, L]``.

    Example::

        logits = [[[0, ln 3]]] (V = 2), target_ids = [[1]]
        → log(3 / (1 + 3)) = [[-0.2877]]
    """
    if logits.dim() != 3:
        raise ValueError(
            f"sequence_logprobs: logits must be 3-D [B, L, V], got shape {tuple(logits.shape)}."
        )
    if not logits.is_floating_point():
        raise ValueError(f"sequence_logprobs: logits must be floating point, got {logits.dtype}.")
    if target_ids.shape != logits.shape[:2]:
        raise ValueError(
            f"sequence_logprobs: target_ids must have shape [B, L] = {tuple(logits.shape[:2])}, "
            f"got {tuple(target_ids.shape)}."
        )
    if target_ids.is_floating_point() or target_ids.dtype == torch.bool:
        raise ValueError(
            f"sequence_logprobs: target_ids must be an integer tensor, got {target_ids.dtype}."
        )
    _check_chunk_size("sequence_logprobs", chunk_size)
    vocab_size = logits.shape[-1]
    targets = target_ids.to(device=logits.device, dtype=torch.long).reshape(-1)
    if targets.numel() > 0:
        lowest, highest = torch.aminmax(targets)
        if lowest.item() < 0 or highest.item() >= vocab_size:
            raise ValueError(
                f"sequence_logprobs: target_ids must lie in [0, {vocab_size}) (the vocabulary "
                f"size), got values in [{lowest.item()}, {highest.item()}]; replace ignore "
                "indices such as -100 with a valid id and mask the result."
            )
    flat_logits = logits.reshape(-1, vocab_size)
    target_logp = _ChunkedTargetLogProbs.apply(flat_logits, targets, chunk_size)
    return target_logp.reshape(logits.shape[:2])


def token_entropy(logits: torch.Tensor, mask: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """Per-token entropy of the policy at the masked positions (the ``entropy`` metric's terms).

    ``H_t = -Σ_v p_v log p_v`` with ``log p = logits - logsumexp(logits)``; a token at ``-inf``
    (a suppressed vision placeholder) contributes 0, not NaN. Only the masked positions are
    visited, ``chunk_size`` at a time and upcast to float32 chunk by chunk. A metric only:
    computed without grad. The trainer sums it over the rows it trains and divides by their
    token count, so micro-batches and processes combine into one token-weighted mean.

    Args:
        logits: float ``[B, L, V]`` (already divided by the sampling temperature, with the
            suppressed tokens at ``-inf``, as the log-probs are).
        mask: bool ``[B, L]`` (response tokens).
        chunk_size: positions per chunk (> 0).

    Returns:
        float ``[B, L]`` (float32, or float64 for float64 logits), detached, on
        ``logits.device``; 0 where ``mask`` is False.

    Example::

        logits = [[[0, 0], [0, ln 3]]] (V = 2), mask = [[True, True]]
        H = [[ln 2, -(1/4 ln 1/4 + 3/4 ln 3/4)]] = [[0.6931, 0.5623]]
    """
    if logits.dim() != 3:
        raise ValueError(
            f"token_entropy: logits must be 3-D [B, L, V], got shape {tuple(logits.shape)}."
        )
    if mask.shape != logits.shape[:2]:
        raise ValueError(
            f"token_entropy: mask must have shape [B, L] = {tuple(logits.shape[:2])}, got "
            f"{tuple(mask.shape)}."
        )
    _check_chunk_size("token_entropy", chunk_size)
    compute_dtype = torch.promote_types(logits.dtype, torch.float32)
    with torch.no_grad():
        flat_logits = logits.reshape(-1, logits.shape[-1])
        positions = mask.to(device=logits.device, dtype=torch.bool).reshape(-1).nonzero()
        positions = positions.squeeze(-1)
        entropy = torch.zeros(flat_logits.shape[0], dtype=compute_dtype, device=logits.device)
        for start in range(0, positions.numel(), chunk_size):
            rows = positions[start : start + chunk_size]
            chunk = flat_logits[rows].to(compute_dtype)
            log_probs = chunk - torch.logsumexp(chunk, dim=-1, keepdim=True)
            probs = log_probs.exp()
            # p log p → 0 where p = 0 (e.g. -inf logits), instead of 0 * -inf = NaN
            plogp = torch.where(probs > 0, probs * log_probs, torch.zeros_like(probs))
            entropy[rows] = -plogp.sum(dim=-1)
        return entropy.reshape(mask.shape)


def _check_chunk_size(where: str, chunk_size: object) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"{where}: chunk_size={chunk_size!r} is invalid: it must be an int > 0.")
