"""Per-step learning-signal metrics of one training batch (docs/algorithm.md section 8).

Every estimator (care, grpo, dr_grpo, dapo, gspo) is measured by these same functions, so a
difference in a curve is a difference in the method, not in the bookkeeping.

Batch conventions (B = rows, RGR reflected samples appended as extra rows):

- ``advantages``        float [B]     sequence-level advantage A_i
- ``token_advantages``  float [B, L]  a_{i,t}, zero on padding (optional)
- ``correct``           bool  [B]     verifier acc_i == 1
- ``group_index``       long  [B]     rows of one prompt share an id (any order, any values);
                                      an RGR row carries the id of the group it was drawn for
- ``reflected_from``    long  [B]     -1 for ordinary rollouts; for an RGR sample, the batch row
                                      of the hard negative it replaced (same group, ordinary row)
- ``rescued``           bool  [B]     the row's group had its all-negative rescue fire

All functions are vectorised over groups (``torch.unique`` + ``index_add_``), run on CPU or CUDA
tensors, and return plain Python floats in a dict keyed by the metric name that is logged. The
values of one call leave the device in a single transfer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "batch_summary",
    "failure_share",
    "group_type_fractions",
    "rgr_rates",
    "energy_ratio",
    "step_signal_metrics",
    "variance_ratio",
]

VARIANCE_RATIO_RELATIVE_TOLERANCE = 1e-4
"""``adv/var_ratio_neg_pos`` is NaN when the positive advantages' standard deviation is below
this fraction of their root mean square: a spread that small is float rounding, not signal."""


# --------------------------------------------------------------------------------------------
# validation


def _check_vector(name: str, value: object, kind: str, rows: int | None) -> Tensor:
    """Check that ``value`` is a 1-D tensor of dtype family ``kind`` with ``rows`` rows."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != 1:
        raise ValueError(f"{name} must be 1-D [B], got shape {tuple(value.shape)}")
    if rows is not None and value.shape[0] != rows:
        raise ValueError(
            f"{name} has shape {tuple(value.shape)} but advantages has {rows} rows; "
            f"every per-row input must have shape [{rows}]"
        )
    if kind == "float" and not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if kind == "bool" and value.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor, got dtype {value.dtype} (use .bool())")
    if kind == "int" and (
        value.is_floating_point() or value.is_complex() or value.dtype == torch.bool
    ):
        raise ValueError(f"{name} must be an integer tensor, got dtype {value.dtype}")
    return value


def _check_same_device(reference: Tensor, **tensors: Tensor | None) -> None:
    for name, tensor in tensors.items():
        if tensor is not None and tensor.device != reference.device:
            raise ValueError(
                f"{name} is on {tensor.device} but advantages is on {reference.device}; "
                "all inputs must be on one device"
            )


def _check_advantages(advantages: object) -> Tensor:
    advantages = _check_vector("advantages", advantages, "float", None)
    if advantages.shape[0] == 0:
        raise ValueError("advantages is empty (shape (0,)); a training batch has at least one row")
    return advantages


def _resolve_reflected_from(
    reflected_from: Tensor | None, rows: int, device: torch.device
) -> Tensor:
    """``reflected_from`` as a long tensor, all -1 when None; checks every value is -1 or a row."""
    if reflected_from is None:
        return torch.full((rows,), -1, dtype=torch.long, device=device)
    reflected_from = _check_vector("reflected_from", reflected_from, "int", rows).long()
    out_of_range = (reflected_from < -1) | (reflected_from >= rows)
    if bool(out_of_range.any()):
        bad = reflected_from[out_of_range][0].item()
        raise ValueError(
            f"reflected_from holds {bad}; each value must be -1 (ordinary rollout) or a batch row "
            f"in [0, {rows - 1}]"
        )
    return reflected_from


def _resolve_rescued(rescued: Tensor | None, rows: int, device: torch.device) -> Tensor:
    if rescued is None:
        return torch.zeros(rows, dtype=torch.bool, device=device)
    return _check_vector("rescued", rescued, "bool", rows)


def _check_reflected_rows(reflected_from: Tensor, group_index: Tensor) -> None:
    """An RGR row must replace an ordinary row of its own group (else the bookkeeping is off)."""
    reflected = reflected_from >= 0
    source = reflected_from.clamp(min=0)
    wrong_group = reflected & (group_index[source] != group_index)
    source_is_reflected = reflected & (reflected_from[source] >= 0)
    bad = wrong_group | source_is_reflected
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0, 0].item())
        src = int(reflected_from[row].item())
        reason = (
            f"is in group {group_index[src].item()} but the RGR row is in group "
            f"{group_index[row].item()}"
            if bool(wrong_group[row])
            else "is itself an RGR row"
        )
        raise ValueError(
            f"reflected_from[{row}] = {src}: the replaced row {reason}; an RGR row must point to "
            "an ordinary rollout (reflected_from == -1) of its own group"
        )


def _check_token_advantages(token_advantages: object, rows: int) -> Tensor:
    if not isinstance(token_advantages, Tensor):
        raise ValueError(
            f"token_advantages must be a torch.Tensor, got {type(token_advantages).__name__}"
        )
    if token_advantages.dim() != 2 or token_advantages.shape[0] != rows:
        raise ValueError(
            f"token_advantages must have shape [B, L] = [{rows}, L] to match advantages, "
            f"got {tuple(token_advantages.shape)}"
        )
    if not token_advantages.is_floating_point():
        raise ValueError(
            f"token_advantages must be a floating-point tensor, got dtype {token_advantages.dtype}"
        )
    return token_advantages


def _to_floats(metrics: dict[str, Tensor]) -> dict[str, float]:
    """Move every 0-d metric tensor to the host in one transfer rather than one per metric."""
    if not metrics:
        return {}
    values = torch.stack([value.to(torch.float64) for value in metrics.values()]).tolist()
    return dict(zip(metrics.keys(), values, strict=True))


# --------------------------------------------------------------------------------------------
# tensor-valued cores (shared by the public functions and step_signal_metrics)


def _share(magnitude: Tensor, selected: Tensor) -> Tensor:
    """sum(magnitude[selected]) / sum(magnitude), 0 when the total is 0. Shapes: [B], [B] → []."""
    total = magnitude.sum()
    part = torch.where(selected, magnitude, torch.zeros_like(magnitude)).sum()
    return torch.where(total > 0, part / torch.where(total > 0, total, torch.ones_like(total)), 0.0)


def _failure_share(
    advantages: Tensor, correct: Tensor, reflected_from: Tensor, token_advantages: Tensor | None
) -> dict[str, Tensor]:
    verifier_negative = ~correct
    # A passed repair is verifier-positive, but the text it was trained on is a corrected failure:
    # its credit comes from a failure. A failed repair is already verifier-negative.
    failure_derived = verifier_negative | (reflected_from >= 0)
    sequence_magnitude = advantages.to(torch.float64).abs()
    metrics = {
        "signal/failure_share_seq": _share(sequence_magnitude, failure_derived),
        "signal/failure_share_seq_no_rgr": _share(sequence_magnitude, verifier_negative),
    }
    if token_advantages is not None:
        token_magnitude = token_advantages.to(torch.float64).abs().sum(dim=1)
        metrics["signal/failure_share_token"] = _share(token_magnitude, failure_derived)
        metrics["signal/failure_share_token_no_rgr"] = _share(token_magnitude, verifier_negative)
    return metrics


def _group_type_fractions(
    advantages: Tensor,
    correct: Tensor,
    group_index: Tensor,
    reflected_from: Tensor,
    rescued: Tensor,
    rescue_enabled: bool,
) -> dict[str, Tensor]:
    unique_groups, group_of_row = torch.unique(group_index, return_inverse=True)
    n_groups = unique_groups.numel()

    def per_group_count(flag: Tensor) -> Tensor:
        counts = torch.zeros(n_groups, dtype=torch.float64, device=advantages.device)
        return counts.index_add_(0, group_of_row, flag.to(torch.float64))

    # RGR rows are extra samples drawn because a group was mixed; classifying by them would turn
    # a mixed group "all correct" or hide an all-wrong one, so only ordinary rollouts decide.
    ordinary = reflected_from < 0
    n_ordinary = per_group_count(ordinary)
    if bool((n_ordinary == 0).any()):
        lonely = unique_groups[n_ordinary == 0][0].item()
        raise ValueError(
            f"group_index {lonely} has only RGR rows (reflected_from >= 0) and no ordinary rollout; "
            "an RGR row must carry the group id of the rollouts it was drawn for"
        )
    n_ordinary_correct = per_group_count(ordinary & correct)
    all_correct = n_ordinary_correct == n_ordinary
    all_wrong = n_ordinary_correct == 0
    mixed = ~all_correct & ~all_wrong
    with_signal = per_group_count(advantages != 0) > 0
    group_rescued = per_group_count(rescued) > 0
    if rescue_enabled:
        # Rescue needs a pseudo-anchor and at least one pseudo-negative: two failures.
        rescue_impossible = all_wrong & (n_ordinary < 2)
    else:
        rescue_impossible = torch.zeros_like(all_wrong)

    def fraction(flag: Tensor) -> Tensor:
        return flag.to(torch.float64).mean()

    return {
        "groups/all_correct_frac": fraction(all_correct),
        "groups/all_wrong_frac": fraction(all_wrong),
        "groups/mixed_frac": fraction(mixed),
        "groups/with_signal_frac": fraction(with_signal),
        "rescue/triggered_frac": fraction(group_rescued),
        "rescue/impossible_frac": fraction(rescue_impossible),
    }


def _rgr_rates(correct: Tensor, reflected_from: Tensor) -> dict[str, Tensor]:
    reflected = reflected_from >= 0
    triggered = reflected.to(torch.float64).sum()
    passed = (reflected & correct).to(torch.float64).sum()
    pass_rate = torch.where(
        triggered > 0, passed / triggered.clamp(min=1.0), torch.full_like(triggered, math.nan)
    )
    return {"rgr/triggered": triggered, "rgr/passed": passed, "rgr/pass_rate": pass_rate}


def _population_variance(values: Tensor, selected: Tensor) -> tuple[Tensor, Tensor]:
    """(count, population variance) of values[selected] without boolean indexing (no sync)."""
    weights = selected.to(torch.float64)
    count = weights.sum()
    safe_count = count.clamp(min=1.0)
    mean = (values * weights).sum() / safe_count
    variance = (((values - mean) ** 2) * weights).sum() / safe_count
    return count, variance


def _variance_ratio(advantages: Tensor) -> dict[str, Tensor]:
    values = advantages.to(torch.float64)
    negative_count, negative_variance = _population_variance(values, values < 0)
    positive_count, positive_variance = _population_variance(values, values > 0)
    # A spread below the tolerance is rounding, not signal: CARE's equalised anchors differ only
    # by float noise (a variance of ~1e-12), and dividing by it printed ratios of 1e10.
    positive_energy = _mean_square(values, values > 0)
    spread_floor = (VARIANCE_RATIO_RELATIVE_TOLERANCE**2) * positive_energy
    has_spread = positive_variance > spread_floor
    defined = (negative_count >= 2) & (positive_count >= 2) & has_spread
    safe_positive_variance = torch.where(
        has_spread, positive_variance, torch.ones_like(positive_variance)
    )
    ratio = torch.where(
        defined,
        negative_variance / safe_positive_variance,
        torch.full_like(positive_variance, math.nan),
    )
    return {"adv/var_ratio_neg_pos": ratio}


def _mean_square(values: Tensor, selected: Tensor) -> Tensor:
    """Mean of values[selected] ** 2 (0 when nothing is selected), without boolean indexing."""
    weights = selected.to(torch.float64)
    return ((values**2) * weights).sum() / weights.sum().clamp(min=1.0)


def _energy_ratio(advantages: Tensor) -> dict[str, Tensor]:
    values = advantages.to(torch.float64)
    negative, positive = values < 0, values > 0
    defined = negative.any() & positive.any()
    positive_energy = _mean_square(values, positive)
    safe_positive_energy = torch.where(defined, positive_energy, torch.ones_like(positive_energy))
    ratio = torch.where(
        defined,
        _mean_square(values, negative) / safe_positive_energy,
        torch.full_like(positive_energy, math.nan),
    )
    return {"adv/energy_ratio_neg_pos": ratio}


# --------------------------------------------------------------------------------------------
# public functions


def failure_share(
    advantages: Tensor,
    correct: Tensor,
    reflected_from: Tensor | None = None,
    token_advantages: Tensor | None = None,
) -> dict[str, float]:
    """Share of the advantage magnitude that comes from failures.

    ``signal/failure_share_seq`` = Σ_{i failure-derived} |A_i| / Σ_i |A_i|, where failure-derived
    = verifier-negative rows (rescue pseudo-anchors and failed RGR repairs included) plus passed
    RGR repairs (``reflected_from >= 0 & correct``: their credit comes from a failure).
    ``signal/failure_share_seq_no_rgr`` counts only verifier-negative rows. With
    ``token_advantages`` the same two shares are also computed on Σ_t |a_{i,t}|
    (``signal/failure_share_token``, ``signal/failure_share_token_no_rgr``). A share is 0.0 when
    its total is 0 (a batch with no signal has no failure signal).

    Args:
        advantages: float [B] sequence-level advantages.
        correct: bool [B] verifier acc.
        reflected_from: long [B] or None (None: no RGR rows).
        token_advantages: float [B, L] or None, zero on padding.

    Returns:
        dict metric name → float in [0, 1].

    Example (CARE group, K' = 4: anchor +2.0, four negatives -0.25; s = 0.5 gives s/(1+s)):
        >>> failure_share(torch.tensor([2.0, -0.25, -0.25, -0.25, -0.25]),
        ...               torch.tensor([True, False, False, False, False]))
        {'signal/failure_share_seq': 0.333..., 'signal/failure_share_seq_no_rgr': 0.333...}
    """
    advantages = _check_advantages(advantages)
    rows = advantages.shape[0]
    correct = _check_vector("correct", correct, "bool", rows)
    reflected_from = _resolve_reflected_from(reflected_from, rows, advantages.device)
    if token_advantages is not None:
        token_advantages = _check_token_advantages(token_advantages, rows)
    _check_same_device(
        advantages,
        correct=correct,
        reflected_from=reflected_from,
        token_advantages=token_advantages,
    )
    return _to_floats(_failure_share(advantages, correct, reflected_from, token_advantages))


def group_type_fractions(
    advantages: Tensor,
    correct: Tensor,
    group_index: Tensor,
    reflected_from: Tensor | None = None,
    rescued: Tensor | None = None,
    *,
    rescue_enabled: bool,
) -> dict[str, float]:
    """Fractions of the prompt groups by type, and how often rescue fired or could not.

    A group is classified by its ORDINARY rows (``reflected_from == -1``): all correct, all wrong,
    or mixed (the three fractions sum to 1). ``groups/with_signal_frac`` counts groups with any
    non-zero advantage among all their rows (RGR rows included). ``rescue/triggered_frac`` counts
    groups with any ``rescued`` row. ``rescue/impossible_frac`` counts all-wrong groups with fewer
    than 2 ordinary rollouts (no pseudo-negative can exist) — only when ``rescue_enabled``,
    else 0.0. Every fraction divides by the number of groups.

    Args:
        advantages: float [B]; correct: bool [B]; group_index: long [B] (any ids, any order);
        reflected_from: long [B] or None (no RGR rows); rescued: bool [B] or None (no rescue);
        rescue_enabled: whether all-negative rescue was switched on for this run.

    Raises:
        ValueError: a group consisting only of RGR rows, or malformed inputs.

    Example (groups 7: all correct, 8: all wrong and rescued, 9: mixed):
        >>> group_type_fractions(
        ...     torch.tensor([0.0, 0.0, 1.0, -1.0, 1.0, -1.0]),
        ...     torch.tensor([True, True, False, False, True, False]),
        ...     torch.tensor([7, 7, 8, 8, 9, 9]),
        ...     rescued=torch.tensor([False, False, True, True, False, False]),
        ...     rescue_enabled=True)
        {'groups/all_correct_frac': 0.333..., 'groups/all_wrong_frac': 0.333...,
         'groups/mixed_frac': 0.333..., 'groups/with_signal_frac': 0.666...,
         'rescue/triggered_frac': 0.333..., 'rescue/impossible_frac': 0.0}
    """
    advantages = _check_advantages(advantages)
    rows = advantages.shape[0]
    correct = _check_vector("correct", correct, "bool", rows)
    group_index = _check_vector("group_index", group_index, "int", rows)
    reflected_from = _resolve_reflected_from(reflected_from, rows, advantages.device)
    rescued = _resolve_rescued(rescued, rows, advantages.device)
    _check_same_device(
        advantages,
        correct=correct,
        group_index=group_index,
        reflected_from=reflected_from,
        rescued=rescued,
    )
    _check_reflected_rows(reflected_from, group_index)
    return _to_floats(
        _group_type_fractions(
            advantages, correct, group_index, reflected_from, rescued, bool(rescue_enabled)
        )
    )


def rgr_rates(correct: Tensor, reflected_from: Tensor) -> dict[str, float]:
    """How many RGR repairs were drawn and how many passed the verifier.

    ``rgr/triggered`` = #rows with ``reflected_from >= 0``, ``rgr/passed`` = #of those correct,
    ``rgr/pass_rate`` = passed / triggered, NaN when nothing was triggered (a rate of 0 would
    read as "every repair failed").

    Args:
        correct: bool [B]; reflected_from: long [B].

    Example:
        >>> rgr_rates(torch.tensor([True, False, True, False]), torch.tensor([-1, -1, 1, 3]))
        {'rgr/triggered': 2.0, 'rgr/passed': 1.0, 'rgr/pass_rate': 0.5}
    """
    correct = _check_vector("correct", correct, "bool", None)
    rows = correct.shape[0]
    reflected_from = _resolve_reflected_from(reflected_from, rows, correct.device)
    _check_same_device(correct, reflected_from=reflected_from)
    return _to_floats(_rgr_rates(correct, reflected_from))


def variance_ratio(advantages: Tensor) -> dict[str, float]:
    """``adv/var_ratio_neg_pos``: spread of the negative signal relative to the positive one.

    Population variance of A over signal-bearing negatives (A < 0) divided by the population
    variance over signal-bearing positives (A > 0); zero-advantage rows are in neither set. The
    ratio is NaN when either set has fewer than 2 rows or the positives' standard deviation is
    below `VARIANCE_RATIO_RELATIVE_TOLERANCE` (1e-4) of their root mean square (e.g. every CARE
    anchor gets +sqrt(K) under equalisation, equal up to float rounding): there is no spread to
    compare against. :func:`energy_ratio` is the comparison that stays defined there.

    Args:
        advantages: float [B].

    Example (negatives -1, -3 → Var 1; positives 1, 2 → Var 0.25):
        >>> variance_ratio(torch.tensor([-1.0, -3.0, 1.0, 2.0, 0.0]))
        {'adv/var_ratio_neg_pos': 4.0}
    """
    advantages = _check_advantages(advantages)
    return _to_floats(_variance_ratio(advantages))


def energy_ratio(advantages: Tensor) -> dict[str, float]:
    """``adv/energy_ratio_neg_pos`` = E[A² | A < 0] / E[A² | A > 0]: how strongly failures push
    compared with successes, which is what CARE's negative scale s controls.

    Zero-advantage rows are in neither mean. NaN when the batch has no negative or no positive
    advantage.

    Args:
        advantages: float [B].

    Example (one binary CARE group, s = 0.5, K' = 4: anchor +2.0, four negatives -0.5·0.5):
        >>> energy_ratio(torch.tensor([2.0, -0.25, -0.25, -0.25, -0.25]))
        {'adv/energy_ratio_neg_pos': 0.015625}
    """
    advantages = _check_advantages(advantages)
    return _to_floats(_energy_ratio(advantages))


def batch_summary(
    rewards: Tensor, correct: Tensor, format_ok: Tensor, response_len: Tensor
) -> dict[str, float]:
    """Batch means: ``reward/mean``, ``acc/mean``, ``format/mean``, ``response_len/mean``.

    Means are over the rows given. Pass the ordinary rollouts (``reflected_from == -1``) so that
    RGR repairs — extra samples drawn only for mixed groups — do not bias the accuracy.

    Args:
        rewards: float [B]; correct: bool [B]; format_ok: bool [B];
        response_len: integer or float [B] (response tokens per row).

    Example:
        >>> batch_summary(torch.tensor([1.0, 0.0]), torch.tensor([True, False]),
        ...               torch.tensor([True, True]), torch.tensor([10, 30]))
        {'reward/mean': 0.5, 'acc/mean': 0.5, 'format/mean': 1.0, 'response_len/mean': 20.0}
    """
    rewards = _check_vector("rewards", rewards, "float", None)
    rows = rewards.shape[0]
    if rows == 0:
        raise ValueError("rewards is empty (shape (0,)); a training batch has at least one row")
    correct = _check_vector("correct", correct, "bool", rows)
    format_ok = _check_vector("format_ok", format_ok, "bool", rows)
    response_len = _check_vector("response_len", response_len, "any", rows)
    if response_len.dtype == torch.bool or response_len.is_complex():
        raise ValueError(
            f"response_len must be an integer or float tensor, got dtype {response_len.dtype}"
        )
    _check_same_device(rewards, correct=correct, format_ok=format_ok, response_len=response_len)
    return _to_floats(
        {
            "reward/mean": rewards.to(torch.float64).mean(),
            "acc/mean": correct.to(torch.float64).mean(),
            "format/mean": format_ok.to(torch.float64).mean(),
            "response_len/mean": response_len.to(torch.float64).mean(),
        }
    )


def step_signal_metrics(
    advantages: Tensor,
    correct: Tensor,
    group_index: Tensor,
    *,
    rescue_enabled: bool,
    reflected_from: Tensor | None = None,
    rescued: Tensor | None = None,
    token_advantages: Tensor | None = None,
) -> dict[str, float]:
    """All learning-signal metrics of one step: failure share, group types, RGR, variance and
    energy ratios.

    The union of :func:`failure_share`, :func:`group_type_fractions`, :func:`rgr_rates`,
    :func:`variance_ratio` and :func:`energy_ratio` on the same batch, validated once and moved to the host in one
    transfer. ``batch_summary`` is separate because it takes the rewards and lengths instead.

    Args:
        advantages: float [B] sequence-level advantages.
        correct: bool [B] verifier acc.
        group_index: long [B] group id per row (RGR rows carry their group's id).
        rescue_enabled: whether all-negative rescue was on (False for the baselines).
        reflected_from: long [B] or None (no RGR rows).
        rescued: bool [B] or None (no rescued groups).
        token_advantages: float [B, L] or None; adds the token-level failure shares.

    Returns:
        dict with ``signal/*``, ``groups/*``, ``rescue/*``, ``rgr/*``, ``adv/var_ratio_neg_pos``
        and ``adv/energy_ratio_neg_pos``.

    Example (one GRPO group, binary rewards [1, 0, 1, 0] z-scored):
        >>> m = step_signal_metrics(torch.tensor([0.866, -0.866, 0.866, -0.866]),
        ...                         torch.tensor([True, False, True, False]),
        ...                         torch.tensor([0, 0, 0, 0]), rescue_enabled=False)
        >>> m["signal/failure_share_seq"], m["groups/mixed_frac"], m["rgr/triggered"]
        (0.5, 1.0, 0.0)
    """
    advantages = _check_advantages(advantages)
    rows = advantages.shape[0]
    correct = _check_vector("correct", correct, "bool", rows)
    group_index = _check_vector("group_index", group_index, "int", rows)
    reflected_from = _resolve_reflected_from(reflected_from, rows, advantages.device)
    rescued = _resolve_rescued(rescued, rows, advantages.device)
    if token_advantages is not None:
        token_advantages = _check_token_advantages(token_advantages, rows)
    _check_same_device(
        advantages,
        correct=correct,
        group_index=group_index,
        reflected_from=reflected_from,
        rescued=rescued,
        token_advantages=token_advantages,
    )
    _check_reflected_rows(reflected_from, group_index)
    metrics: dict[str, Tensor] = {}
    metrics.update(_failure_share(advantages, correct, reflected_from, token_advantages))
    metrics.update(
        _group_type_fractions(
            advantages, correct, group_index, reflected_from, rescued, bool(rescue_enabled)
        )
    )
    metrics.update(_rgr_rates(correct, reflected_from))
    metrics.update(_variance_ratio(advantages))
    metrics.update(_energy_ratio(advantages))
    return _to_floats(metrics)
