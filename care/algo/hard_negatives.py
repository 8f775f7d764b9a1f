"""Hard-negative selection: nearest-to-anchor pool, then farthest-first for diversity.

CARE contrasts the anchor (the shortest correct rationale) with failures whose rationales look
most like it, because those carry the most specific "what went wrong" signal. Taking only the
nearest ones would pick near-duplicates of one mistake, so the final K' are spread out with
farthest-first traversal inside a small pool of near failures (docs/algorithm.md section 2.3).

All functions work on padded per-group tensors ``[NG, C, ...]`` and loop only over the number of
picks (K, a small constant), never over groups.
"""

from __future__ import annotations

import torch


def farthest_first(
    distance: torch.Tensor,
    candidate_valid: torch.Tensor,
    seed: torch.Tensor,
    num_picks: torch.Tensor,
    max_picks: int,
) -> torch.Tensor:
    """Pick up to ``num_picks[g]`` candidates per group by farthest-first traversal.

    The first pick is ``seed[g]``. Each later pick is the remaining valid candidate whose
    smallest distance to the already picked ones is largest; ties go to the lower column.

    Args:
        distance: float ``[NG, C, C]``, pairwise distances between the candidates of a group.
        candidate_valid: bool ``[NG, C]``.
        seed: long ``[NG]``, column of the first pick (ignored where ``num_picks`` is 0).
        num_picks: long ``[NG]``, how many to pick (at most the valid candidates and ``max_picks``).
        max_picks: int, width of the result.

    Returns:
        long ``[NG, max_picks]``: picked columns in pick order, ``-1`` past ``num_picks[g]``.

    Example (one group, points on a line at 0, 1, 5, seed 0, two picks)::

        distance = |x_i - x_j| → picks = [[0, 2]]   (5 is farther from 0 than 1 is)
    """
    num_groups, width = candidate_valid.shape
    device = distance.device
    picks = torch.full((num_groups, max_picks), -1, dtype=torch.long, device=device)
    if num_groups == 0 or max_picks == 0 or width == 0:
        return picks
    group_arange = torch.arange(num_groups, device=device)
    active = num_picks > 0
    picks[:, 0] = torch.where(active, seed, -1)
    picked = torch.zeros_like(candidate_valid)
    picked[group_arange, seed] = active
    min_dist = distance[group_arange, seed.clamp(min=0)]
    neg_inf = torch.finfo(distance.dtype).min
    for step in range(1, max_picks):
        take = num_picks > step
        if not bool(take.any()):
            break
        score = min_dist.masked_fill(~candidate_valid | picked, neg_inf)
        nxt = score.argmax(dim=1)
        picks[:, step] = torch.where(take, nxt, -1)
        picked[group_arange, nxt] |= take
        min_dist = torch.where(
            take[:, None], torch.minimum(min_dist, distance[group_arange, nxt]), min_dist
        )
    return picks


def nearest_pool(
    anchor_distance: torch.Tensor, is_failure: torch.Tensor, pool_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``min(pool_size, |F|)`` failures closest to the anchor, nearest first.

    Args:
        anchor_distance: float ``[NG, G]``, cosine distance of each slot to its group's anchor.
        is_failure: bool ``[NG, G]``, slot is a (non-reflected) verifier failure.
        pool_size: M.

    Returns:
        ``(pool, pool_valid)``: long ``[NG, min(M, G)]`` slot columns sorted by distance (ties:
        lower column first) and bool ``[NG, min(M, G)]``.

    Example::

        anchor_distance = [[0.0, 0.9, 0.2, 0.5]], is_failure = [[F, T, T, T]], M = 2
        → pool = [[2, 3]], pool_valid = [[T, T]]
    """
    width = min(pool_size, anchor_distance.shape[1])
    keyed = anchor_distance.masked_fill(~is_failure, float("inf"))
    order = torch.sort(keyed, dim=1, stable=True).indices[:, :width]
    n_fail = is_failure.sum(dim=1)
    pool_valid = (
        torch.arange(width, device=keyed.device)[None, :] < n_fail.clamp(max=width)[:, None]
    )
    return order, pool_valid
