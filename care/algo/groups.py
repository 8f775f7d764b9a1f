"""Dense per-group layout of a flat rollout batch.

Rollouts arrive as a flat batch of B rows in any order, with a ``group_index`` saying which prompt
each row answers. Every per-group computation in this package (anchor choice, hard negatives,
subgroup z-scores) runs on a dense ``[num_groups, max_group_size]`` layout built once here, so
no Python loop ever walks the groups.

Example::

    group_index = [7, 3, 7, 7, 3]
    layout.rows  = [[1, 4, -1],      # group 3 (sorted ids), rows in batch order
                    [0, 2,  3]]      # group 7
    layout.valid = [[T, T, F], [T, T, T]]
    layout.group_of_row = [1, 0, 1, 1, 0]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GroupLayout:
    """A flat batch seen as padded groups.

    Attributes:
        rows: long ``[NG, Gmax]``, batch row of each slot, ``-1`` for padding. Within a group the
            rows keep batch order, so slot order is "lowest batch index first".
        valid: bool ``[NG, Gmax]``, slot holds a row.
        group_of_row: long ``[B]``, dense group id (0..NG-1) of every row; ``-1`` for rows that were
            left out of the layout (see ``build_group_layout(include=...)``).
        slot_of_row: long ``[B]``, slot (column) of every row inside its group; ``-1`` if left out.
        group_ids: the original ``group_index`` value of each dense group, ``[NG]``.
        sizes: long ``[NG]``, rows per group.
        contiguous: every group has the same size and its rows sit next to each other in batch
            order (the layout a trainer produces with ``repeat_interleave``); then
            :meth:`gather` is a zero-copy view.
    """

    rows: torch.Tensor
    valid: torch.Tensor
    group_of_row: torch.Tensor
    slot_of_row: torch.Tensor
    group_ids: torch.Tensor
    sizes: torch.Tensor
    contiguous: bool = False

    @property
    def num_groups(self) -> int:
        return self.rows.shape[0]

    @property
    def max_size(self) -> int:
        return self.rows.shape[1]

    def gather(self, values: torch.Tensor, fill: float | int | bool = 0) -> torch.Tensor:
        """Per-row ``values`` ``[B, ...]`` → padded ``[NG, Gmax, ...]``, padding set to ``fill``."""
        if self.contiguous:
            return values.view(*self.rows.shape, *values.shape[1:])
        safe = self.rows.clamp(min=0)
        # index_select on the flat slot list copies whole rows at memory speed; advanced
        # indexing with a 2-D index is several times slower for wide rows (embeddings).
        out = values.index_select(0, safe.flatten()).view(*safe.shape, *values.shape[1:])
        pad = ~self.valid
        if pad.any():
            out = out.clone()
            out[pad] = fill
        return out


def build_group_layout(
    group_index: torch.Tensor, include: torch.Tensor | None = None
) -> GroupLayout:
    """Lay a flat batch out as padded groups, keeping batch order inside each group.

    Args:
        group_index: long ``[B]``, any integer ids, any order, any group sizes.
        include: optional bool ``[B]``; rows with ``False`` are left out of the layout (their
            ``group_of_row`` / ``slot_of_row`` are ``-1``). A group whose rows are all left out
            does not appear.

    Returns:
        A :class:`GroupLayout`.
    """
    device = group_index.device
    batch = group_index.shape[0]
    all_rows = torch.arange(batch, device=device)
    if include is None:
        kept_rows = all_rows
    else:
        kept_rows = all_rows[include]
    kept_groups = group_index[kept_rows]
    group_ids, dense = torch.unique(kept_groups, return_inverse=True)
    num_groups = group_ids.shape[0]
    sizes = torch.bincount(dense, minlength=num_groups)
    max_size = int(sizes.max().item()) if num_groups > 0 else 0

    # Stable sort by dense group id keeps batch order within a group.
    order = torch.sort(dense, stable=True).indices
    sorted_groups = dense[order]
    starts = torch.cumsum(sizes, 0) - sizes
    slots_sorted = torch.arange(order.shape[0], device=device) - starts[sorted_groups]

    rows = torch.full((num_groups, max_size), -1, dtype=torch.long, device=device)
    rows[sorted_groups, slots_sorted] = kept_rows[order]

    group_of_row = torch.full((batch,), -1, dtype=torch.long, device=device)
    slot_of_row = torch.full((batch,), -1, dtype=torch.long, device=device)
    group_of_row[kept_rows[order]] = sorted_groups
    slot_of_row[kept_rows[order]] = slots_sorted
    contiguous = (
        kept_rows.shape[0] == batch
        and num_groups * max_size == batch
        and bool(torch.equal(rows.flatten(), all_rows))
    )
    return GroupLayout(
        contiguous=contiguous,
        rows=rows,
        valid=rows >= 0,
        group_of_row=group_of_row,
        slot_of_row=slot_of_row,
        group_ids=group_ids,
        sizes=sizes,
    )
