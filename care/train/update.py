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
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from care.algo.losses import PolicyLossConfig, kl_loss, policy_loss
from care.config import TrainSection
from care.train import lockstep
from care.train.batch import StepBatch

# A micro-batch's forward with grad: its rows → (token log-probs [B, L], entropy [B, L],
# response mask [B, L]).
MicroForward = Callable[[list[int]], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def run_updates(
    batch: StepBatch,
    forward: MicroForward,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    accelerator: Any,
    train: TrainSection,
    loss_cfg: PolicyLossConfig,
    grad_clip: float,
    with_reference: bool,
    rows_count: bool = True,
) -> dict[str, float]:
    """The step's optimizer updates: ``train.ppo_epochs`` passes over the step's mini-batches,
    one optimizer and scheduler step each. Returns the loss metrics of every process's rows, the
    mean gradient norm (``grad_norm``) and the mean learning rate the updates applied (``lr``).

    ``train`` is the config's train section (``prompts_per_step``, ``mini_batch_prompts``,
    ``micro_batch_rows``, ``ppo_epochs``). ``rows_count=False`` (DAPO kept no group on this
    process): the rows only keep this process in step with the others and add nothing to the
    gradient or its denominators.
    """
    updates = train.prompts_per_step // train.mini_batch_prompts
    token_mean = loss_cfg.aggregation == "token_mean"
    meter = LossMeter()
    grad_norms, rates = [], []
    model.train()
    for _ in range(train.ppo_epochs):
        for rows in mini_batches(batch, updates):
            rows = rows if rows_count else []
            micro = micro_batches(batch, rows, train.micro_batch_rows)
            plan = lockstep.mini_batch_plan(
                loss_denominator(
                    batch, rows, token_mean=token_mean, count_zero=loss_cfg.count_zero_adv_rows
                ),
                loss_denominator(batch, rows, token_mean=token_mean, count_zero=True),
                len(micro),
                accelerator,
            )
            if plan.passes == 0:
                continue  # no process has rows in this update: all skip it together
            for index, part in enumerate(lockstep.pad_passes(micro, plan.passes)):
                synced = index == plan.passes - 1
                with nullcontext() if synced else accelerator.no_sync(model):
                    loss, metrics, entropy, mask = _micro_batch_step(
                        batch, part, plan, forward, loss_cfg, with_reference
                    )
                    accelerator.backward(loss)
                if part:  # an empty part is a zero-weight pass over row 0
                    meter.add(metrics, entropy, mask)
            grad_norms.append(float(accelerator.clip_grad_norm_(model.parameters(), grad_clip)))
            # The rate this update applies (the scheduler moves it on right after).
            rates.append(float(optimizer.param_groups[0]["lr"]))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    metrics = meter.means(accelerator)
    metrics["grad_norm"] = float(np.mean(grad_norms)) if grad_norms else float("nan")
    # The mean rate of the step's updates (they differ only while a warm-up is running).
    metrics["lr"] = float(np.mean(rates)) if rates else float("nan")
    return metrics


def _micro_batch_step(
    batch: StepBatch,
    rows: list[int],
    plan: lockstep.MiniBatchPlan,
    forward: MicroForward,
    loss_cfg: PolicyLossConfig,
    with_reference: bool,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor]:
    """Forward ``rows`` with grad: ``(loss, metrics, entropy [B, L], response mask)``.
    No rows: a pass over row 0 with weight zero (it keeps the collectives in step)."""
    token_mean = loss_cfg.aggregation == "token_mean"
    logp, entropy, mask = forward(rows or [0])
    length = mask.shape[1]

    def column(name: str) -> torch.Tensor:
        return getattr(batch, name)[rows or [0], :length].to(mask.device)

    def share(denominator: float, count_zero: bool) -> float:
        if denominator == 0:
            return 0.0
        return loss_denominator(batch, rows, token_mean=token_mean, count_zero=count_zero) / (
            denominator
        )

    loss, metrics = micro_batch_loss(
        logp,
        column("old_logp"),
        column("token_adv"),
        mask,
        column("answer_mask"),
        loss_cfg,
        pg_weight=share(plan.pg_denominator, loss_cfg.count_zero_adv_rows),
        ref_logp=column("ref_logp") if with_reference else None,
        kl_weight=share(plan.kl_denominator, True),
    )
    return loss, metrics, entropy, mask


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
    kl_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss one micro-batch adds to its update, and its metrics.

    ``pg_weight`` / ``kl_weight`` are the micro-batch's shares of the update's denominators
    (see the module docstring); the KL term (``loss_cfg.kl_coef``, ``loss_cfg.kl_estimator``)
    is added only with a reference (``ref_logp``).
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
            estimator=loss_cfg.kl_estimator,
            aggregation=loss_cfg.aggregation,
            norm_length=loss_cfg.norm_length,
        )
        loss = loss + loss_cfg.kl_coef * kl.loss * kl_weight
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
