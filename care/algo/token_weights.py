"""Spread sequence advantages over response tokens (docs/algorithm.md section 5).

CARE's default (`region`) puts the credit on the answer and only a trace of it on the
reasoning of positive rollouts, so failed rollouts are pushed down on what they answered and
never on how they reasoned:

    w_{i,t} = 1[t in answer] + gamma_pos · 1[i positive] · 1[t in think]
    a_{i,t} = A_i · w_{i,t} / max(Σ_u w_{i,u}, eps)

Without an answer span the whole response counts as answer. The weights add: a token in both
masks (the think fallback covers the whole response when there is no ``<think>``, and an
unclosed ``<think>`` runs over the answer) weighs ``1 + gamma_pos`` for a positive rollout,
which is what docs/algorithm.md section 5 states for the no-``<think>`` case.
"""

from __future__ import annotations

import torch


def region_token_advantages(
    seq_adv: torch.Tensor,
    is_positive: torch.Tensor,
    think_mask: torch.Tensor,
    answer_mask: torch.Tensor,
    response_mask: torch.Tensor,
    gamma_pos: float = 0.005,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Region-weighted token advantages; each row with weight sums to its sequence advantage.

    Args:
        seq_adv: float [B] sequence advantages A_i.
        is_positive: bool [B] verifier-positive rollouts (their think tokens get gamma_pos).
        think_mask: bool [B, L] think region after its fallback (no ``<think>`` → whole response).
        answer_mask: bool [B, L] answer span as found; an empty row means the whole response.
        response_mask: bool [B, L] real response tokens (padding False).
        gamma_pos: think weight of positive rollouts (τ+), >= 0.
        eps: floor of the weight sum, > 0 (keeps rows without weight at zero, not NaN).

    Returns:
        float [B, L] in the dtype of `seq_adv`, zero on padding and on unweighted tokens.

    Example (A = [2, -1], gamma_pos = 0.5 for readable numbers; 2 think + 1 answer token each):
        think_mask  = [[1, 1, 0], [1, 1, 0]], answer_mask = [[0, 0, 1], [0, 0, 1]]
        positive row: weights [0.5, 0.5, 1] / 2 → [0.5, 0.5, 1.0]
        negative row: weights [0, 0, 1] / 1   → [0, 0, -1.0]
    """
    batch = _check_sequence_advantages(seq_adv)
    _check_flags("is_positive", is_positive, batch, seq_adv.device)
    _check_mask("response_mask", response_mask, batch, seq_adv.device, shape=None)
    _check_mask("think_mask", think_mask, batch, seq_adv.device, shape=response_mask.shape)
    _check_mask("answer_mask", answer_mask, batch, seq_adv.device, shape=response_mask.shape)
    if not isinstance(gamma_pos, (int, float)) or isinstance(gamma_pos, bool) or gamma_pos < 0:
        raise ValueError(f"gamma_pos must be a number >= 0, got {gamma_pos!r}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        raise ValueError(f"eps must be a number > 0, got {eps!r}")

    answer = answer_mask & response_mask
    answer_found = answer.any(dim=1, keepdim=True)
    answer = torch.where(answer_found, answer, response_mask)
    reasoning = think_mask & response_mask & is_positive[:, None]
    weights = answer.to(seq_adv.dtype) + gamma_pos * reasoning.to(seq_adv.dtype)
    weight_sum = weights.sum(dim=1, keepdim=True).clamp_min(eps)
    return seq_adv[:, None] * weights / weight_sum


def uniform_token_advantages(seq_adv: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Every real response token gets its sequence advantage (plain GRPO).

    Args:
        seq_adv: float [B]; response_mask: bool [B, L].
    Returns:
        float [B, L], ``seq_adv[i]`` on response tokens, 0 on padding.

    Example: seq_adv = [1.5], response_mask = [[1, 1, 0]] → [[1.5, 1.5, 0.0]].
    """
    batch = _check_sequence_advantages(seq_adv)
    _check_mask("response_mask", response_mask, batch, seq_adv.device, shape=None)
    return seq_adv[:, None] * response_mask.to(seq_adv.dtype)


def _check_sequence_advantages(seq_adv: torch.Tensor) -> int:
    if not isinstance(seq_adv, torch.Tensor) or seq_adv.dim() != 1:
        raise ValueError(f"seq_adv must be a 1-D tensor [B], got {_describe(seq_adv)}")
    if not seq_adv.dtype.is_floating_point:
        raise ValueError(f"seq_adv must be a floating tensor, got dtype {seq_adv.dtype}")
    return seq_adv.shape[0]


def _check_mask(
    name: str, mask: torch.Tensor, batch: int, device: torch.device, shape: torch.Size | None
) -> None:
    """`mask` must be bool [B, L] on `device`, and of `shape` when given (response_mask's)."""
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape[0] != batch:
        raise ValueError(f"{name} must be a 2-D tensor [B={batch}, L], got {_describe(mask)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor, got dtype {mask.dtype}")
    if shape is not None and mask.shape != shape:
        raise ValueError(
            f"{name} shape {tuple(mask.shape)} must equal response_mask shape {tuple(shape)}"
        )
    if mask.device != device:
        raise ValueError(f"{name} is on {mask.device} but seq_adv is on {device}")


def _check_flags(name: str, flags: torch.Tensor, batch: int, device: torch.device) -> None:
    if not isinstance(flags, torch.Tensor) or flags.shape != (batch,):
        raise ValueError(f"{name} must be a tensor [B={batch}], got {_describe(flags)}")
    if flags.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor, got dtype {flags.dtype}")
    if flags.device != device:
        raise ValueError(f"{name} is on {flags.device} but seq_adv is on {device}")


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}"
    return type(value).__name__
