"""Advantage estimators by name: ``grpo``, ``dr_grpo``, ``dapo``, ``gspo``, ``care``, ``care_no_rgr``.

An estimator is one registered function from an :class:`AdvantageBatch` to an
:class:`EstimatorResult`, plus the few facts the trainer needs to run it (does it need
rationale embeddings, does it run RGR, does it filter zero-variance groups) and the policy-loss
settings that define the method in its paper (docs/algorithm.md sections 6-7). The trainer looks the
estimator up once and never branches on its name.

Example::

    est = get_estimator("dr_grpo")
    result = est.advantages(batch, care_cfg)
    est.loss_defaults["aggregation"]  # 'seq_mean_token_sum_norm'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from care.algo.care import CareConfig, CareOutput, care_advantages
from care.algo.grpo import grpo_advantages
from care.algo.losses import PolicyLossConfig


@dataclass(frozen=True)
class AdvantageBatch:
    """Everything an estimator may read about a batch of B rollouts (all ``[B]`` unless noted).

    ``embeddings`` ``[B, D]`` and ``old_logprob_sum`` are only needed by the CARE estimators;
    ``reflected_from`` marks RGR rows (``-1`` for ordinary rollouts).
    """

    rewards: torch.Tensor
    correct: torch.Tensor
    group_index: torch.Tensor
    think_len: torch.Tensor | None = None
    answer_len: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    old_logprob_sum: torch.Tensor | None = None
    reflected_from: torch.Tensor | None = None
    response_len: torch.Tensor | None = None


@dataclass(frozen=True)
class EstimatorResult:
    """Sequence advantages ``[B]``; ``care`` holds the subgroup details for CARE estimators."""

    advantages: torch.Tensor
    care: CareOutput | None = None


@dataclass(frozen=True)
class Estimator:
    """A registered advantage estimator.

    Attributes:
        name: registry key.
        summary: one line for ``care`` CLI listings and logs.
        advantages: ``(batch, care_cfg) -> EstimatorResult``.
        needs_embeddings: the trainer must compute rationale embeddings in the old-log-prob pass.
        uses_rgr: the trainer runs Reflection-Guided Resampling before computing advantages.
        dynamic_sampling: drop groups whose rewards have zero variance and refill the batch.
        token_weighting: ``"region"`` (CARE's answer/think weights) or ``"uniform"``.
        loss_defaults: the PolicyLossConfig fields that define the method; a run config fills
            the ones it leaves unset from here before validation, and may set any of them.
    """

    name: str
    summary: str
    advantages: Callable[[AdvantageBatch, CareConfig], EstimatorResult]
    needs_embeddings: bool = False
    uses_rgr: bool = False
    dynamic_sampling: bool = False
    token_weighting: str = "uniform"
    loss_defaults: Mapping[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, Estimator] = {}

# The paper's shared PPO settings (EasyR1's: clip [1-0.2, 1+0.3], dual clip 3, token-level ratio,
# token_mean, low_var_kl 1e-2) are PolicyLossConfig's defaults; each estimator below states how
# it departs from them.
_PPO_DEFAULTS: dict[str, Any] = {
    name: PolicyLossConfig.model_fields[name].default
    for name in ("clip_low", "clip_high", "dual_clip", "ratio_level", "aggregation", "kl_coef")
}


def register_estimator(estimator: Estimator) -> Estimator:
    """Add an estimator to the registry; a second one with the same name is an error."""
    if estimator.name in _REGISTRY:
        raise ValueError(f"an estimator named {estimator.name!r} is already registered")
    frozen = MappingProxyType(dict(estimator.loss_defaults))
    stored = Estimator(**{**estimator.__dict__, "loss_defaults": frozen})
    _REGISTRY[estimator.name] = stored
    return stored


def get_estimator(name: str) -> Estimator:
    """The estimator registered as ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown estimator {name!r}; known estimators: {known}") from None


def estimator_names() -> list[str]:
    """Registered names, sorted."""
    return sorted(_REGISTRY)


def _group_normalised(batch: AdvantageBatch, _: CareConfig) -> EstimatorResult:
    return EstimatorResult(grpo_advantages(batch.rewards, batch.group_index, norm_by_std=True))


def _mean_centred(batch: AdvantageBatch, _: CareConfig) -> EstimatorResult:
    return EstimatorResult(grpo_advantages(batch.rewards, batch.group_index, norm_by_std=False))


def _care(batch: AdvantageBatch, cfg: CareConfig) -> EstimatorResult:
    missing = [
        name
        for name in ("think_len", "answer_len", "embeddings", "old_logprob_sum")
        if getattr(batch, name) is None
    ]
    if missing:
        raise ValueError(f"the CARE estimators need {', '.join(missing)} in the AdvantageBatch")
    out = care_advantages(
        batch.rewards,
        batch.correct,
        batch.group_index,
        batch.think_len,
        batch.answer_len,
        batch.embeddings,
        batch.old_logprob_sum,
        reflected_from=batch.reflected_from,
        cfg=cfg,
        response_len=batch.response_len,
    )
    return EstimatorResult(out.advantages, care=out)


register_estimator(
    Estimator(
        name="grpo",
        summary="GRPO: group z-score (Bessel std), every rollout trained",
        advantages=_group_normalised,
        loss_defaults=_PPO_DEFAULTS,
    )
)
register_estimator(
    Estimator(
        name="dr_grpo",
        summary="Dr. GRPO: mean-centred group advantage, token sums over a constant length",
        advantages=_mean_centred,
        loss_defaults={**_PPO_DEFAULTS, "aggregation": "seq_mean_token_sum_norm"},
    )
)
register_estimator(
    Estimator(
        name="dapo",
        summary="DAPO: clip-higher, no KL, zero-variance groups filtered and refilled",
        advantages=_group_normalised,
        dynamic_sampling=True,
        loss_defaults={**_PPO_DEFAULTS, "clip_high": 0.28, "kl_coef": 0.0},
    )
)
register_estimator(
    Estimator(
        name="gspo",
        summary="GSPO: group z-score with a sequence-level importance ratio and clipping",
        advantages=_group_normalised,
        # GSPO clips a length-normalised sequence ratio, so its range is tiny (GSPO paper: 3e-4/4e-4),
        # and averages per sequence first, so each response weighs the same whatever its length.
        loss_defaults={
            **_PPO_DEFAULTS,
            "ratio_level": "sequence",
            "aggregation": "seq_mean_token_mean",
            "clip_low": 3e-4,
            "clip_high": 4e-4,
            "dual_clip": None,
        },
    )
)
register_estimator(
    Estimator(
        name="care",
        summary="CARE: anchored subgroup with hard negatives, rescue, and RGR repairs",
        advantages=_care,
        needs_embeddings=True,
        uses_rgr=True,
        token_weighting="region",
        loss_defaults=_PPO_DEFAULTS,
    )
)
register_estimator(
    Estimator(
        name="care_no_rgr",
        summary="CARE without Reflection-Guided Resampling (the paper's ablation)",
        advantages=_care,
        needs_embeddings=True,
        token_weighting="region",
        loss_defaults=_PPO_DEFAULTS,
    )
)
