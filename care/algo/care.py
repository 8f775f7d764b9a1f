"""CARE sequence advantages: anchored subgroup, hard negatives, rescue and RGR samples.

This is docs/algorithm.md sections 2-4 as one vectorised function. Per prompt group:

1. the anchor is the correct rollout with the shortest ``<think>`` (then shortest ``<answer>``,
   then lowest batch index);
2. the hard negatives are K' = min(K, |F|) failures picked by farthest-first from the M failures
   nearest to the anchor in rationale-embedding space;
3. the subgroup S = {anchor} ∪ negatives is z-scored with the population std, negatives are
   scaled to ``-s·|A|`` (``-s_refl·|A|`` for a failed reflection), and every advantage in S is
   multiplied by ``sqrt(K/K')`` so a group's total push does not depend on how many failures it had;
4. a group with no correct rollout is "rescued": the failure the old policy found most likely is
   a pseudo-anchor with pseudo-reward +δ against K' = min(K, |F|-1) diverse other failures at
   -δ/K';
5. RGR samples (rows with ``reflected_from >= 0``) take the place of the hard negative they
   repair; the replaced failure gets 0.

Every rollout outside its group's subgroup gets advantage 0.

Worked example (binary rewards, K=4, s=0.5): a group with 1 correct and 2 failures gives
anchor +2.0 and each negative -0.5; with 4+ failures, anchor +2.0 and four negatives -0.25.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import (
    AliasChoices,
    AliasPath,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from care.algo.groups import GroupLayout, build_group_layout
from care.algo.hard_negatives import farthest_first, nearest_pool

_RESCUE_KEYS = ("enable", "delta", "normalize", "anchor")


def _rescue_field(name: str, default: object, description: str, **bounds: object) -> Any:
    """A ``rescue_<name>`` field that a config file writes nested, as ``rescue: {<name>: ...}``."""
    return Field(
        default,
        validation_alias=AliasChoices(f"rescue_{name}", AliasPath("rescue", name)),
        description=description,
        **bounds,
    )


class CareConfig(BaseModel):
    """Hyper-parameters of the CARE advantage (defaults are the paper's).

    This one class is both the algorithm's argument and the ``algo.care`` section of a run's
    YAML: Python code passes the flat keywords below, a config file nests the four rescue
    settings (``rescue: {enable, delta, normalize, anchor}``), and :meth:`model_dump` writes
    them back nested. A bad value raises a ``ValueError`` (pydantic's ``ValidationError``)
    naming the field and what it allows.

    Attributes:
        K: hard negatives per subgroup (the subgroup has K' = min(K, |F|) of them).
        M: size of the nearest-failure pool the negatives are drawn from (M >= K).
        s: negative-only scale; a negative's advantage becomes ``-s·|A_raw|``.
        s_refl: scale for a failed RGR reflection; ``None`` means ``s / 2``.
        equalize: multiply the subgroup's advantages by ``sqrt(K / K')``.
        eps: added to the subgroup std before dividing.
        rescue_enable: give all-wrong groups a pseudo-anchored subgroup.
        rescue_delta: δ, the pseudo-reward of the rescue pseudo-anchor.
        rescue_normalize: z-score the pseudo-rewards like real rewards (then δ cancels); ``False``
            uses the raw pseudo-rewards ``+δ`` / ``-δ/K'`` as the advantages.
        rescue_anchor: pseudo-anchor = highest old-policy log-prob, ``"sum"`` over tokens or
            ``"mean"`` per token (``"mean"`` needs ``response_len``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    K: int = Field(4, ge=1, strict=True, description="Hard negatives per subgroup.")
    M: int = Field(6, ge=1, strict=True, description="Nearest-failure pool size (M >= K).")
    s: float = Field(0.5, ge=0.0, description="Negative-only scale.")
    s_refl: float | None = Field(None, ge=0.0, description="Failed-reflection scale (null: s/2).")
    equalize: bool = Field(True, description="Multiply the subgroup by sqrt(K/K').")
    eps: float = Field(1e-6, gt=0.0, description="Added to the subgroup std.")
    rescue_enable: bool = _rescue_field(
        "enable", True, "Give all-wrong groups a pseudo-anchored subgroup."
    )
    rescue_delta: float = _rescue_field("delta", 0.1, "Pseudo-reward of the pseudo-anchor.", gt=0.0)
    rescue_normalize: bool = _rescue_field(
        "normalize", True, "z-score the pseudo-rewards (δ then cancels)."
    )
    rescue_anchor: Literal["sum", "mean"] = _rescue_field(
        "anchor", "sum", "Old log-prob sum or mean per token."
    )

    @model_validator(mode="before")
    @classmethod
    def _rescue_mapping_is_complete(cls, data: Any) -> Any:
        # The nested form is read through the field aliases, which would pass over a misspelt
        # key or a rescue value that is not a mapping without a word.
        if isinstance(data, dict) and "rescue" in data:
            rescue = data["rescue"]
            if not isinstance(rescue, dict):
                raise ValueError(
                    f"rescue must be a mapping of {', '.join(_RESCUE_KEYS)}, got {rescue!r}"
                )
            unknown = sorted(str(key) for key in rescue if key not in _RESCUE_KEYS)
            if unknown:
                raise ValueError(
                    f"rescue: unknown key(s) {', '.join(unknown)}; allowed: "
                    f"{', '.join(_RESCUE_KEYS)}"
                )
            both = [key for key in rescue if f"rescue_{key}" in data]
            if both:
                raise ValueError(
                    f"rescue.{both[0]} and rescue_{both[0]} are the same setting; give it once"
                )
        return data

    @model_validator(mode="after")
    def _pool_holds_the_negatives(self) -> CareConfig:
        if self.M < self.K:
            raise ValueError(f"CareConfig.M={self.M} must be >= K={self.K}")
        return self

    @model_serializer(mode="wrap")
    def _nest_rescue(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        flat = handler(self)
        rescue = {key: flat.pop(f"rescue_{key}") for key in _RESCUE_KEYS}
        return {**flat, "rescue": rescue}

    @property
    def reflection_scale(self) -> float:
        """The scale applied to a failed reflection: ``s_refl``, or ``s / 2`` when unset."""
        return self.s / 2 if self.s_refl is None else self.s_refl


@dataclass(frozen=True)
class CareOutput:
    """Result of :func:`care_advantages`; every field is ``[B]``.

    Attributes:
        advantages: float, sequence-level advantages (0 outside every subgroup).
        is_anchor: bool, the row is its subgroup's anchor (or rescue pseudo-anchor).
        negative_rank: long, 0.. in pick order (nearest first) for rows in the final subgroup as
            negatives (an RGR sample holds the rank of the negative it replaced), else -1.
        rescued: bool, the row's group was rescued (no correct rollout, rescue fired).
        k_prime: long, K' of the row's group (0 where the group has no subgroup).
        picked_rank: long, the hard-negative pick order among ordinary rows before any RGR
            replacement (a replaced failure keeps its rank here); -1 for others and RGR rows.
        anchor_distance: float, cosine distance of an ordinary row to its group's (pseudo-)anchor;
            NaN where the group has no anchor and for RGR rows.
        rescue_impossible: bool, the row's group had no correct rollout, rescue was enabled, but
            fewer than two ordinary rollouts failed (G = 1), so no pseudo-contrast exists.
    """

    advantages: torch.Tensor
    is_anchor: torch.Tensor
    negative_rank: torch.Tensor
    rescued: torch.Tensor
    k_prime: torch.Tensor
    picked_rank: torch.Tensor
    anchor_distance: torch.Tensor
    rescue_impossible: torch.Tensor

    def rgr_sources(self) -> torch.Tensor:
        """Rows RGR repairs: the first hard negative of each group with a real anchor. long ``[R]``."""
        return torch.nonzero((self.picked_rank == 0) & ~self.rescued).flatten()


def _check_inputs(
    rewards: torch.Tensor,
    correct: torch.Tensor,
    group_index: torch.Tensor,
    think_len: torch.Tensor,
    answer_len: torch.Tensor,
    embeddings: torch.Tensor,
    old_logprob_sum: torch.Tensor,
    reflected_from: torch.Tensor | None,
    response_len: torch.Tensor | None,
) -> None:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    batch = rewards.shape[0]
    per_row = {
        "correct": correct,
        "group_index": group_index,
        "think_len": think_len,
        "answer_len": answer_len,
        "old_logprob_sum": old_logprob_sum,
    }
    if reflected_from is not None:
        per_row["reflected_from"] = reflected_from
    if response_len is not None:
        per_row["response_len"] = response_len
    for name, tensor in per_row.items():
        if tensor.shape != (batch,):
            raise ValueError(
                f"{name} must have shape [B]=({batch},) like rewards, got {tuple(tensor.shape)}"
            )
    if embeddings.dim() != 2 or embeddings.shape[0] != batch:
        raise ValueError(
            f"embeddings must have shape [B, D] with B={batch}, got {tuple(embeddings.shape)}"
        )
    if correct.dtype != torch.bool:
        raise ValueError(f"correct must be a bool tensor, got {correct.dtype}")
    for name in ("group_index", "think_len", "answer_len"):
        if per_row[name].is_floating_point():
            raise ValueError(f"{name} must be an integer tensor, got {per_row[name].dtype}")
    for name, tensor in (
        ("rewards", rewards),
        ("embeddings", embeddings),
        ("old_logprob_sum", old_logprob_sum),
    ):
        if not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {tensor.dtype}")
    # embeddings are screened later through the diagonal of the similarity matrix (free).
    _raise_if_not_finite("rewards", rewards)
    _raise_if_not_finite("old_logprob_sum", old_logprob_sum)
    if bool(((think_len < 0) | (answer_len < 0)).any()):
        raise ValueError("think_len and answer_len must be >= 0")


def _raise_if_not_finite(name: str, tensor: torch.Tensor, rows: torch.Tensor | None = None) -> None:
    """Raise naming the first non-finite row; ``rows`` maps a subset back to batch rows."""
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        first = int(torch.nonzero(bad)[0][0])
        if rows is not None:
            first = int(rows[first])
        raise ValueError(f"{name} has a non-finite value (NaN or inf) at row {first}")


def _check_embeddings_finite(
    embeddings: torch.Tensor, similarity: torch.Tensor, valid: torch.Tensor
) -> None:
    """A NaN or inf anywhere in a row makes its squared norm (the similarity diagonal) non-finite,
    so the diagonal screens the grouped rows for free; a full ``isfinite`` scan of a [4096, 3584]
    matrix would cost more than the rest of the computation. The scan runs only on failure."""
    diagonal = similarity.diagonal(dim1=1, dim2=2)
    if bool(torch.isfinite(diagonal[valid]).all()):
        return
    _raise_if_not_finite("embeddings", embeddings)
    raise ValueError(
        "embeddings overflow in the cosine similarity (finite values, infinite dot product): "
        "pass L2-normalised rationale embeddings"
    )


def _validate_reflections(
    reflected_from: torch.Tensor, group_index: torch.Tensor, ordinary: torch.Tensor
) -> None:
    batch = reflected_from.shape[0]
    refl_rows = torch.nonzero(~ordinary).flatten()
    if refl_rows.numel() == 0:
        return
    sources = reflected_from[refl_rows]
    if bool((sources >= batch).any()):
        row = int(refl_rows[sources >= batch][0])
        raise ValueError(
            f"reflected_from[{row}]={int(reflected_from[row])} is out of range [0, {batch})"
        )
    src_is_reflected = ~ordinary[sources]
    if bool(src_is_reflected.any()):
        row = int(refl_rows[src_is_reflected][0])
        raise ValueError(
            f"reflected_from[{row}]={int(reflected_from[row])} points at another RGR sample; "
            "it must point at an ordinary rollout"
        )
    other_group = group_index[sources] != group_index[refl_rows]
    if bool(other_group.any()):
        row = int(refl_rows[other_group][0])
        raise ValueError(
            f"RGR row {row} has group_index {int(group_index[row])} but replaces row "
            f"{int(reflected_from[row])} of group {int(group_index[reflected_from[row]])}"
        )
    if torch.unique(sources).numel() != sources.numel():
        raise ValueError(
            "two RGR rows replace the same rollout (duplicate values in reflected_from)"
        )


def care_advantages(
    rewards: torch.Tensor,
    correct: torch.Tensor,
    group_index: torch.Tensor,
    think_len: torch.Tensor,
    answer_len: torch.Tensor,
    embeddings: torch.Tensor,
    old_logprob_sum: torch.Tensor,
    reflected_from: torch.Tensor | None = None,
    cfg: CareConfig | None = None,
    *,
    response_len: torch.Tensor | None = None,
) -> CareOutput:
    """CARE sequence-level advantages for a flat batch of rollouts (docs/algorithm.md sections 2-4).

    Args:
        rewards: float ``[B]`` verifier rewards.
        correct: bool ``[B]`` positive gate (acc == 1).
        group_index: long ``[B]`` prompt id of each rollout; any order, any group sizes.
        think_len: long ``[B]`` tokens inside ``<think>`` (a missing span counts as the response).
        answer_len: long ``[B]`` tokens inside ``<answer>``.
        embeddings: float ``[B, D]`` L2-normalised rationale embeddings.
        old_logprob_sum: float ``[B]`` summed old-policy log-probs of each response.
        reflected_from: long ``[B]`` or None; for an RGR sample the batch row of the hard negative
            it replaces, ``-1`` for ordinary rollouts.
        cfg: :class:`CareConfig` (defaults if None).
        response_len: long ``[B]`` response lengths; needed only for ``rescue_anchor="mean"``.

    Returns:
        :class:`CareOutput`.

    Example (K=4, s=0.5)::

        rewards = [1, 0, 0], correct = [T, F, F], one group, embeddings of the failures at
        cosine distances 0.1 and 0.4 from the anchor → advantages = [2.0, -0.5, -0.5]
    """
    cfg = cfg or CareConfig()
    _check_inputs(
        rewards,
        correct,
        group_index,
        think_len,
        answer_len,
        embeddings,
        old_logprob_sum,
        reflected_from,
        response_len,
    )
    if cfg.rescue_anchor == "mean" and response_len is None:
        raise ValueError("CareConfig.rescue_anchor='mean' needs response_len")
    device = rewards.device
    batch = rewards.shape[0]
    dtype = rewards.dtype
    # float64 inputs are computed in float64 (reference checks); everything else in float32.
    work = torch.float64 if dtype == torch.float64 else torch.float32
    if batch == 0:
        return _empty_output(device, dtype)
    if reflected_from is None:
        reflected_from = torch.full((batch,), -1, dtype=torch.long, device=device)
    reflected_from = reflected_from.to(torch.long)
    ordinary = reflected_from < 0
    _validate_reflections(reflected_from, group_index, ordinary)

    layout = build_group_layout(group_index, include=ordinary)
    num_groups, width = layout.num_groups, layout.max_size
    group_arange = torch.arange(num_groups, device=device)
    valid = layout.valid
    is_pos = layout.gather(correct, False) & valid
    is_fail = ~is_pos & valid
    n_pos = is_pos.sum(1)
    n_fail = is_fail.sum(1)

    # Pairwise cosine similarity inside each group: one batched matmul for every distance needed.
    similarity = _group_similarity(embeddings.to(work), layout)
    _check_embeddings_finite(embeddings, similarity, valid)
    if not bool(ordinary.all()):
        reflected_rows = torch.nonzero(~ordinary).flatten()
        _raise_if_not_finite("embeddings", embeddings[reflected_rows], reflected_rows)
    distance = 1.0 - similarity

    # --- Anchor: fewest think tokens, then fewest answer tokens, then lowest batch index. -------
    think = layout.gather(think_len.to(torch.long), 0)
    answer = layout.gather(answer_len.to(torch.long), 0)
    answer_span = int(answer.max().item()) + 1 if answer.numel() else 1
    key = (think * answer_span + answer) * max(width, 1) + torch.arange(width, device=device)
    key = key.masked_fill(~is_pos, torch.iinfo(torch.long).max)
    anchor_slot = key.argmin(dim=1)
    anchored = (n_pos > 0) & (n_fail > 0)

    # --- Rescue: pseudo-anchor = failure with the highest old log-prob. -----------------------
    rescue = (n_pos == 0) & (n_fail >= 2) if cfg.rescue_enable else torch.zeros_like(anchored)
    impossible = (n_pos == 0) & (n_fail < 2) & cfg.rescue_enable
    score = old_logprob_sum.to(work)
    if cfg.rescue_anchor == "mean":
        score = score / response_len.clamp(min=1).to(work)
    lp = layout.gather(score, 0.0).masked_fill(~is_fail, float("-inf"))
    pseudo_slot = lp.argmax(dim=1)  # first maximum → lowest batch index on ties
    center_slot = torch.where(anchored, anchor_slot, pseudo_slot)
    has_center = anchored | rescue

    anchor_dist = distance[group_arange, center_slot]  # [NG, G]

    # --- Hard negatives for anchored groups: M-pool nearest, then farthest-first. ---------------
    K = cfg.K
    pool, pool_valid = nearest_pool(anchor_dist, is_fail, cfg.M)
    pool_dist = distance[group_arange[:, None, None], pool[:, :, None], pool[:, None, :]]
    k_anchored = torch.where(anchored, n_fail.clamp(max=K), 0)
    pool_picks = farthest_first(pool_dist, pool_valid, torch.zeros_like(anchor_slot), k_anchored, K)
    anchored_negs = torch.where(pool_picks >= 0, pool.gather(1, pool_picks.clamp(min=0)), -1)

    # --- Pseudo-negatives for rescued groups: farthest-first over all other failures. ---------
    others = is_fail.clone()
    others[group_arange, pseudo_slot] = False
    k_rescue = torch.where(rescue, (n_fail - 1).clamp(min=0, max=K), 0)
    rescue_seed = anchor_dist.masked_fill(~others, float("-inf")).argmax(dim=1)
    rescue_negs = farthest_first(distance, others, rescue_seed, k_rescue, K)

    negatives = torch.where(anchored[:, None], anchored_negs, rescue_negs)  # slots, -1 if none
    k_prime = torch.where(anchored, k_anchored, k_rescue)

    # --- Subgroup members as batch rows: column 0 the (pseudo-)anchor, 1..K the negatives. ------
    member_slots = torch.cat([center_slot[:, None], negatives], dim=1)
    member_slots[:, 0] = torch.where(has_center, center_slot, -1)
    member_valid = member_slots >= 0
    members = torch.where(
        member_valid, layout.rows.gather(1, member_slots.clamp(min=0)), -1
    )  # [NG, 1+K]
    picked_rank = torch.full((batch,), -1, dtype=torch.long, device=device)
    neg_members = members[:, 1:]
    rank_grid = torch.arange(K, device=device).expand_as(neg_members)
    has_neg = neg_members >= 0
    picked_rank[neg_members[has_neg]] = rank_grid[has_neg]

    # RGR samples take their source's place in the subgroup.
    refl_rows = torch.nonzero(~ordinary).flatten()
    is_reflected_member = torch.zeros_like(member_valid)
    if refl_rows.numel() > 0:
        sources = reflected_from[refl_rows]
        src_rank = picked_rank[sources]
        src_group = layout.group_of_row[sources]
        not_negative = (src_rank < 0) | rescue[src_group]
        if bool(not_negative.any()):
            row = int(refl_rows[not_negative][0])
            raise ValueError(
                f"RGR row {row} replaces row {int(reflected_from[row])}, which is not a hard "
                "negative of an anchored group (RGR repairs only hard negatives of groups with "
                "a correct rollout)"
            )
        members[src_group, 1 + src_rank] = refl_rows
        is_reflected_member[src_group, 1 + src_rank] = True

    # --- Subgroup z-score with population std, negative-only scaling, equalisation. ----------
    safe_members = members.clamp(min=0)
    member_rewards = rewards[safe_members].to(work)
    pseudo = torch.full_like(member_rewards, 0.0)
    pseudo[:, 0] = cfg.rescue_delta
    pseudo[:, 1:] = -cfg.rescue_delta / k_prime.clamp(min=1).to(work)[:, None]
    member_rewards = torch.where(rescue[:, None], pseudo, member_rewards)
    weight = member_valid.to(work)
    size = weight.sum(1).clamp(min=1)
    mean = (member_rewards * weight).sum(1) / size
    var = (((member_rewards - mean[:, None]) ** 2) * weight).sum(1) / size
    raw = (member_rewards - mean[:, None]) / (var.sqrt()[:, None] + cfg.eps)

    member_correct = correct[safe_members] & member_valid
    positive_role = torch.zeros_like(member_valid)
    positive_role[:, 0] = True
    positive_role[:, 1:] = member_correct[:, 1:] & is_reflected_member[:, 1:]
    scale = torch.where(
        is_reflected_member,
        torch.tensor(cfg.reflection_scale, dtype=work, device=device),
        torch.tensor(cfg.s, dtype=work, device=device),
    )
    adv = torch.where(positive_role, raw, -scale * raw.abs())
    if cfg.equalize:
        adv = adv * torch.sqrt(K / k_prime.clamp(min=1).to(work))[:, None]
    if not cfg.rescue_normalize:
        adv = torch.where(rescue[:, None], pseudo, adv)
    in_subgroup = member_valid & (k_prime > 0)[:, None]
    adv = adv.masked_fill(~in_subgroup, 0.0)

    advantages = torch.zeros(batch, dtype=work, device=device)
    advantages[members[in_subgroup]] = adv[in_subgroup]

    is_anchor = torch.zeros(batch, dtype=torch.bool, device=device)
    anchor_rows = members[:, 0][in_subgroup[:, 0]]
    is_anchor[anchor_rows] = True
    negative_rank = torch.full((batch,), -1, dtype=torch.long, device=device)
    final_negs = members[:, 1:]
    keep = final_negs >= 0
    negative_rank[final_negs[keep]] = rank_grid[keep]

    # Per-row views of group-level facts (RGR rows share their group's values).
    row_group = _row_group(layout, group_index, ordinary, reflected_from)
    rescued_row = rescue[row_group]
    k_prime_row = k_prime[row_group]
    impossible_row = impossible[row_group]
    anchor_distance = torch.full((batch,), float("nan"), dtype=work, device=device)
    row_slot = layout.slot_of_row
    ordinary_rows = torch.nonzero(ordinary).flatten()
    ord_groups = layout.group_of_row[ordinary_rows]
    ord_dist = anchor_dist[ord_groups, row_slot[ordinary_rows]]
    anchor_distance[ordinary_rows] = torch.where(
        has_center[ord_groups], ord_dist, torch.tensor(float("nan"), dtype=work, device=device)
    )

    return CareOutput(
        advantages=advantages.to(dtype),
        is_anchor=is_anchor,
        negative_rank=negative_rank,
        rescued=rescued_row,
        k_prime=k_prime_row,
        picked_rank=picked_rank,
        anchor_distance=anchor_distance,
        rescue_impossible=impossible_row,
    )


# Rows of padded embeddings gathered per block when the batch is not laid out group by group:
# a block of ~4 MiB stays in cache and its buffer is reused, where one [NG, G, D] gather of a
# 4096 x 3584 batch would write 58 MB of fresh pages.
_GATHER_BLOCK_BYTES = 4 << 20


def _group_similarity(embeddings: torch.Tensor, layout: GroupLayout) -> torch.Tensor:
    """Cosine similarity of every pair of rows inside each group, float ``[NG, G, G]``.

    Padding slots hold zero vectors (similarity 0). Contiguous batches are a zero-copy view;
    others are gathered in blocks of groups (a loop over a few blocks, not over groups).
    """
    if layout.contiguous:
        grouped = layout.gather(embeddings)
        return torch.bmm(grouped, grouped.transpose(1, 2))
    num_groups, width = layout.num_groups, layout.max_size
    dim = embeddings.shape[1]
    row_bytes = max(width * dim * embeddings.element_size(), 1)
    block = max(1, min(num_groups, _GATHER_BLOCK_BYTES // row_bytes))
    similarity = embeddings.new_empty((num_groups, width, width))
    buffer = embeddings.new_empty((block * width, dim))  # reused: no fresh pages per block
    slots = layout.rows.clamp(min=0)
    for start in range(0, num_groups, block):
        rows = slots[start : start + block].flatten()
        grouped = torch.index_select(embeddings, 0, rows, out=buffer[: rows.shape[0]])
        grouped = grouped.view(-1, width, dim)
        torch.bmm(grouped, grouped.transpose(1, 2), out=similarity[start : start + block])
    # Padding slots repeated row 0; give them similarity 0 (a zero vector) as the view path does.
    pad = ~layout.valid
    if bool(pad.any()):
        similarity.masked_fill_(pad[:, :, None] | pad[:, None, :], 0.0)
    return similarity


def _empty_output(device: torch.device, dtype: torch.dtype) -> CareOutput:
    def empty(kind: torch.dtype) -> torch.Tensor:
        return torch.zeros(0, dtype=kind, device=device)

    return CareOutput(
        advantages=empty(dtype),
        is_anchor=empty(torch.bool),
        negative_rank=empty(torch.long),
        rescued=empty(torch.bool),
        k_prime=empty(torch.long),
        picked_rank=empty(torch.long),
        anchor_distance=empty(torch.float32),
        rescue_impossible=empty(torch.bool),
    )


def _row_group(
    layout: GroupLayout,
    group_index: torch.Tensor,
    ordinary: torch.Tensor,
    reflected_from: torch.Tensor,
) -> torch.Tensor:
    """Dense group id of every row; an RGR row gets the group of the rollout it replaces."""
    row_group = layout.group_of_row.clone()
    refl = ~ordinary
    if bool(refl.any()):
        row_group[refl] = layout.group_of_row[reflected_from[refl]]
    return row_group
