"""The pieces of one step's optimizer updates, as functions of the step's columns.

A step's rows are split into ``prompts_per_step / mini_batch_prompts`` updates by prompt group
(a group's RGR repair goes with it), each update into micro-batches of at most
``micro_batch_rows`` rows, and each micro-batch contributes its loss scaled by its share of the
update's denominator, so that the summed gradients are those of the update's mean::

    update loss = Σ_micro  micro_mean · (micro_denominator / update_denominator)

The denominator counts tokens for ``token_mean`` aggregation and rows for the sequence means;
with ``loss.count_zero_adv_rows: false`` rows whose token advantages are all zero count for
nothing in the policy-gradient denominator (the KL denominator always counts them). What
several processes must agree on (the shared denominators, the number of passes) is in
:mod:`care.train.lockstep`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from care.algo.losses import PolicyLossConfig, kl_loss, policy_loss
from care.train import lockstep
from care.train.batch import StepBatch


def mini_batches(batch: StepBatch, updates: int) -> list[list[int]]:
    """Row indices of each optimizer update: the groups split into ``updates`` even parts."""
    groups = sorted({row.group for row in batch.rows})
    out = []
    for part in np.array_split(np.array(groups, dtype=int), updates):
        chosen = set(part.tolist())
        out.append([i for i, row in enumerate(batch.rows) if row.group in chosen])
    return out


def micro_batches(batch: StepBatch, rows: Sequence[int], size: int) -> list[list[int]]:
    """``rows`` in micro-batches of at most ``size``, ordinary rows and RGR repairs apart, each
    in length order.

    A micro-batch is padded to its longest context + response, and a repair's context holds the
    prompt plus the failed reasoning and the repair cue: one repair among ordinary rows pads all
    of them (measured: +50 % update time for +5 % rows).
    """
    parts: list[list[int]] = []
    for repairs in (False, True):
        subset = sorted(
            (i for i in rows if bool(batch.rows[i].prefix) == repairs),
            key=lambda i: (len(batch.rows[i].prefix), len(batch.rows[i].response_ids)),
        )
        if subset:
            count = math.ceil(len(subset) / size)
            parts.extend(p.tolist() for p in np.array_split(np.array(subset, dtype=int), count))
    return parts


def loss_denominator(
    batch: StepBatch, rows: Sequence[int], *, token_mean: bool, count_zero: bool
) -> float:
    """Tokens (``token_mean``) or rows (sequence means) that ``rows`` add to a mean; rows with
    no response token never count, rows with all-zero token advantages only with ``count_zero``."""
    if not rows:
        return 0.0
    assert batch.token_adv is not None, "token advantages come before the update"
    index = torch.as_tensor(list(rows), dtype=torch.long)
    lengths = batch.response_len[index]
    counted = lengths > 0
    if not count_zero:
        counted &= batch.token_adv[index].ne(0).any(dim=1)
    return float(lengths[counted].sum()) if token_mean else float(counted.sum())


def micro_batch_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    token_adv: torch.Tensor,
    response_mask: torch.Tensor,
    answer_mask: torch.Tensor,
    loss_cfg: PolicyLossConfig,
    *,
    pg_weight: float,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "low_var_kl",
    kl_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss one micro-batch adds to its update, and its metrics.

    ``pg_weight`` / ``kl_weight`` are the micro-batch's shares of the update's denominators
    (see the module docstring); the KL term is added only with a reference (``ref_logp``).
    All tensors are ``[B, L]`` over the micro-batch's padded responses.
    """
    pg = policy_loss(logp, old_logp, token_adv, response_mask, loss_cfg, answer_mask)
    loss = pg.loss * pg_weight
    metrics = dict(pg.metrics)
    if ref_logp is not None:
        kl = kl_loss(
            logp,
            ref_logp,
            response_mask,
            estimator=kl_estimator,
            aggregation=loss_cfg.aggregation,
            norm_length=loss_cfg.norm_length,
        )
        loss = loss + kl_coef * kl.loss * kl_weight
        metrics.update(kl.metrics)
    return loss, metrics


@dataclass
class LossMeter:
    """Token-weighted means of the micro-batches' loss metrics and of the policy entropy."""

    totals: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    entropy_sum: float = 0.0
    tokens: float = 0.0

    def add(self, metrics: dict[str, float], entropy: torch.Tensor, mask: torch.Tensor) -> None:
        """One micro-batch: its metrics (NaN or None where undefined, e.g. no negative answer
        token) and its per-token entropy ``[B, L]`` over the response ``mask``."""
        tokens = float(mask.sum())
        self.entropy_sum += float((entropy * mask).sum())
        self.tokens += tokens
        for key, value in metrics.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            self.totals[key] = self.totals.get(key, 0.0) + value * tokens
            self.weights[key] = self.weights.get(key, 0.0) + tokens

    def means(self, accelerator: Any) -> dict[str, float]:
        """The means over every process's micro-batches (all processes must call this)."""
        totals: dict[str, float] = {}
        weights: dict[str, float] = {}
        entropy_sum = tokens = 0.0
        for part in lockstep.gather_from_processes(self, accelerator):
            for key, value in part.totals.items():
                totals[key] = totals.get(key, 0.0) + value
                weights[key] = weights.get(key, 0.0) + part.weights[key]
            entropy_sum += part.entropy_sum
            tokens += part.tokens
        means = {key: totals[key] / weights[key] for key in totals}
        means["entropy"] = entropy_sum / tokens if tokens else float("nan")
        return means
