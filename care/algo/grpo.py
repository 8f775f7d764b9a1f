"""Group-relative baselines: GRPO, Dr. GRPO and DAPO's dynamic-sampling filter.

All of them compare each rollout with the other rollouts of its prompt. They are written with
``bincount`` / ``index_add`` over a dense group id, so the cost is a handful of tensor ops for
any number of groups (verl and EasyR1 build a dict of per-prompt lists in a Python loop).
"""

from __future__ import annotations

import torch


def _dense_groups(group_index: torch.Tensor) -> tuple[torch.Tensor, int]:
    _, dense = torch.unique(group_index, return_inverse=True)
    return dense, int(dense.max().item()) + 1 if dense.numel() else 0


def _check(rewards: torch.Tensor, group_index: torch.Tensor) -> None:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    if group_index.shape != rewards.shape:
        raise ValueError(
            f"group_index must have the shape of rewards {tuple(rewards.shape)}, "
            f"got {tuple(group_index.shape)}"
        )
    if group_index.is_floating_point():
        raise ValueError(f"group_index must be an integer tensor, got {group_index.dtype}")
    if not rewards.is_floating_point():
        raise ValueError(f"rewards must be a floating-point tensor, got {rewards.dtype}")
    bad = ~torch.isfinite(rewards)
    if bool(bad.any()):
        raise ValueError(
            f"rewards has a non-finite value (NaN or inf) at row {int(torch.nonzero(bad)[0][0])}"
        )


def group_moments(
    rewards: torch.Tensor, group_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row group size, group mean and Bessel-corrected group variance, each ``[B]``.

    A group of one rollout has variance 0.

    Example::

        rewards = [1., 0., 1., 1.], group_index = [0, 0, 1, 1]
        → size = [2, 2, 2, 2], mean = [.5, .5, 1., 1.], var = [.5, .5, 0., 0.]
    """
    dense, num_groups = _dense_groups(group_index)
    work = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    r = rewards.to(work)
    size = torch.bincount(dense, minlength=num_groups).to(work)
    total = torch.zeros(num_groups, dtype=work, device=r.device).index_add_(0, dense, r)
    mean = total / size.clamp(min=1)
    centred = r - mean[dense]
    sq = torch.zeros_like(total).index_add_(0, dense, centred * centred)
    var = sq / (size - 1).clamp(min=1)
    return size[dense], mean[dense], var[dense]


def grpo_advantages(
    rewards: torch.Tensor,
    group_index: torch.Tensor,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO advantage ``(r - group mean) / (group std + eps)`` with the Bessel-corrected std.

    ``norm_by_std=False`` gives Dr. GRPO's mean-centred advantage. A group of a single rollout
    gets 0: there is nothing to compare it with (older verl used mean 0 / std 1 there and so
    leaked the raw reward into the advantage). A group whose rewards are all equal gets exactly
    0 too: its float32 mean can differ from the common value in the last bit (eight rewards of
    0.7 average to 0.70000005), and that rounding divided by ``0 + eps`` would be a spurious
    advantage of 0.056 on every rollout.

    Args:
        rewards: float ``[B]``.
        group_index: long ``[B]``, any order, any group sizes.
        norm_by_std: divide by the group std.
        eps: added to the std.

    Returns:
        float ``[B]`` in the dtype of ``rewards``.

    Example::

        grpo_advantages([1., 0., 1., 0.], [0, 0, 0, 0]) ≈ [0.866, -0.866, 0.866, -0.866]
    """
    _check(rewards, group_index)
    if rewards.numel() == 0:
        return rewards.clone()
    size, mean, var = group_moments(rewards, group_index)
    adv = rewards.to(mean.dtype) - mean
    if norm_by_std:
        adv = adv / (var.sqrt() + eps)
    adv = adv.masked_fill((size < 2) | _constant_groups(rewards, group_index), 0.0)
    return adv.to(rewards.dtype)


def _constant_groups(rewards: torch.Tensor, group_index: torch.Tensor) -> torch.Tensor:
    """Per row ``[B]``: every reward of the row's group is the same (compared exactly)."""
    dense, num_groups = _dense_groups(group_index)
    high = torch.full((num_groups,), -torch.inf, dtype=rewards.dtype, device=rewards.device)
    high = high.scatter_reduce(0, dense, rewards, "amax")
    low = torch.full_like(high, torch.inf).scatter_reduce(0, dense, rewards, "amin")
    return (high == low)[dense]


def dynamic_sampling_keep(
    rewards: torch.Tensor, group_index: torch.Tensor, tolerance: float = 1e-8
) -> torch.Tensor:
    """DAPO's dynamic-sampling filter: keep the rows of groups whose rewards VARY.

    A group whose rewards are all equal gives every rollout zero advantage, so it only dilutes
    the batch. The test is on the reward variance (with a tolerance for float noise), not on
    the mean: a mean strictly between 0 and 1 says nothing once rewards are not binary.

    Args:
        rewards: float ``[B]``.
        group_index: long ``[B]``.
        tolerance: a group is kept when its (Bessel) variance exceeds this.

    Returns:
        bool ``[B]``.

    Example::

        dynamic_sampling_keep([1., 1., 0., 1.], [0, 0, 1, 1]) → [F, F, T, T]
    """
    _check(rewards, group_index)
    if rewards.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=rewards.device)
    _, _, var = group_moments(rewards, group_index)
    return var > tolerance
