"""The rows of one training step, kept as columns.

A step starts with ``prompts × G`` ordinary rollouts; RGR appends one row per repaired group.
What the sampler and the verifier produce stays per row (:class:`Row`: text, images, verdict).
What the trainer computes from the rows is a column over the whole batch: one padded tensor per
field, filled by the phase that computes it::

    forward    old_logp, ref_logp, think_mask, answer_mask, think_len, answer_len, embeddings
    advantage  token_adv (every row in one call)

Padded columns are ``[N, L]`` with ``L`` the longest response in the batch and zeros (False) past
each row's ``response_len``. A micro-batch reads ``column[rows, :length]``: exactly what it would
have been had the rows been padded on their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from PIL import Image

from care.algo.registry import AdvantageBatch
from care.verify import Verdict


@dataclass
class Row:
    """One trained sequence.

    Attributes:
        group: index of its prompt group within the step.
        prompt: rendered chat prompt (generation prompt included).
        images: the prompt's images.
        prefix: assistant text the response continues (an RGR repair context), else "".
        response_ids: trained response token ids (stop token included when sampled).
        text: decoded response (for an RGR row: the continuation only).
        sampler_logprobs: per-token log-probs reported by the sampler.
        finish_reason: "stop" or "length".
        reflected_from: batch row of the failure this repair replaces, -1 for ordinary rows.
        index_in_group: rollout index within its group (-1 for RGR rows).
    """

    group: int
    prompt: str
    images: list[Image.Image]
    prefix: str
    response_ids: list[int]
    text: str
    sampler_logprobs: list[float]
    finish_reason: str
    reflected_from: int = -1
    index_in_group: int = -1
    verdict: Verdict | None = None
    reward: float = 0.0

    @classmethod
    def sampled(
        cls, out: Any, *, group: int, prompt: str, images: Sequence[Image.Image], **fields: Any
    ) -> Row:
        """A row from a sampler output (:class:`care.rollout.base.RolloutOutput`); ``fields``
        sets ``prefix``, ``reflected_from`` or ``index_in_group``."""
        return cls(
            group=group,
            prompt=prompt,
            images=list(images),
            prefix=fields.pop("prefix", ""),
            response_ids=list(out.response_ids),
            text=out.text,
            sampler_logprobs=list(out.logprobs),
            finish_reason=out.finish_reason,
            **fields,
        )


# Columns [N, L] (padded per token, zeros past each response) and [N] or [N, H] (one value per row).
_TOKEN_COLUMNS = ("old_logp", "ref_logp", "think_mask", "answer_mask", "token_adv")
_ROW_COLUMNS = ("think_len", "answer_len", "old_logp_sum", "embeddings")


@dataclass
class StepBatch:
    """All rows of a step, plus the columns the trainer computed for them.

    Attributes:
        examples: the step's prompts; ``rows[i].group`` indexes them.
        rows: sampler and verifier output per row.
        old_logp: float ``[N, L]`` log-probs of the policy that sampled (no grad).
        ref_logp: float ``[N, L]`` reference-model log-probs, or None without a reference.
        think_mask / answer_mask: bool ``[N, L]`` tag regions of each response.
        think_len / answer_len: long ``[N]`` region lengths in tokens.
        old_logp_sum: float ``[N]`` sum of each row's old log-probs (summed over its own
            tokens, before padding).
        embeddings: float ``[N, H]`` rationale embeddings, or None when the estimator needs none.
        token_adv: float ``[N, L]`` token advantages (after the advantage phase).
    """

    examples: list[Any]
    rows: list[Row] = field(default_factory=list)
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    think_mask: torch.Tensor | None = None
    answer_mask: torch.Tensor | None = None
    think_len: torch.Tensor | None = None
    answer_len: torch.Tensor | None = None
    old_logp_sum: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    token_adv: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A per-row attribute of :class:`Row` as a tensor."""
        return torch.tensor([getattr(row, name) for row in self.rows], dtype=dtype)

    def verdict_column(self, name: str) -> torch.Tensor:
        return torch.tensor([bool(getattr(row.verdict, name)) for row in self.rows])

    @property
    def response_len(self) -> torch.Tensor:
        """long ``[N]``: response tokens per row."""
        return torch.tensor([len(row.response_ids) for row in self.rows], dtype=torch.long)

    @property
    def width(self) -> int:
        """``L``: the longest response of the batch (at least 1)."""
        return max([1, *(len(row.response_ids) for row in self.rows)])

    @property
    def response_mask(self) -> torch.Tensor:
        """bool ``[N, L]``: True on each row's real response tokens."""
        return torch.arange(self.width)[None, :] < self.response_len[:, None]

    def advantage_batch(self) -> AdvantageBatch:
        """What an estimator reads about the rows (after the forward columns are filled).

        An RGR row is never an anchor or a negative candidate; it carries its source's
        embedding only so that the embeddings stay one dense tensor.
        """
        reflected = self.column("reflected_from", torch.long)
        embeddings = self.embeddings
        if embeddings is not None:
            embeddings = embeddings[torch.where(reflected >= 0, reflected, torch.arange(len(self)))]
        return AdvantageBatch(
            rewards=self.column("reward", torch.float32),
            correct=self.verdict_column("acc"),
            group_index=self.column("group", torch.long),
            think_len=self.think_len,
            answer_len=self.answer_len,
            embeddings=embeddings,
            old_logprob_sum=self.old_logp_sum.float(),
            reflected_from=reflected if bool((reflected >= 0).any()) else None,
            response_len=self.response_len,
        )

    def store(self, rows: Sequence[int], **values: torch.Tensor | None) -> None:
        """Write the values of ``rows`` into the named columns.

        Token columns take ``[len(rows), l]`` tensors (``l`` ≤ ``L``; positions past a row's
        response length are written as zeros); row columns take ``[len(rows), ...]``. A column
        is created on first use, sized for every row of the batch. ``None`` leaves a column
        unset (no reference model, no embeddings).
        """
        index = torch.as_tensor(list(rows), dtype=torch.long)
        lengths = self.response_len[index]
        for name, value in values.items():
            if value is None:
                continue
            if name not in _TOKEN_COLUMNS and name not in _ROW_COLUMNS:
                raise KeyError(f"StepBatch has no column {name!r}")
            value = value.detach().cpu()
            column = getattr(self, name)
            if column is None:
                trailing = (self.width,) if name in _TOKEN_COLUMNS else tuple(value.shape[1:])
                column = torch.zeros((len(self.rows), *trailing), dtype=value.dtype)
                setattr(self, name, column)
            if name in _TOKEN_COLUMNS:
                width = value.shape[1]
                real = torch.arange(width)[None, :] < lengths[:, None]
                value = torch.where(real, value, torch.zeros((), dtype=value.dtype))
                column[index, :width] = value
                column[index, width:] = 0
            else:
                column[index] = value

    def append_rows(self, rows: Sequence[Row]) -> range:
        """Add rows (RGR repairs) in one concatenation; returns their indices.

        Every existing column grows by zero-filled rows (the next forward fills them) and token
        columns widen to the new longest response.
        """
        start = len(self.rows)
        self.rows.extend(rows)
        width = self.width
        for name in (*_TOKEN_COLUMNS, *_ROW_COLUMNS):
            column = getattr(self, name)
            if column is None:
                continue
            grown = torch.zeros(
                (len(self.rows), *((width,) if name in _TOKEN_COLUMNS else column.shape[1:])),
                dtype=column.dtype,
            )
            if name in _TOKEN_COLUMNS:
                grown[:start, : column.shape[1]] = column
            else:
                grown[:start] = column
            setattr(self, name, grown)
        return range(start, len(self.rows))

    def select_groups(self, groups: Sequence[int]) -> StepBatch:
        """The rows of ``groups`` (before any column is computed), renumbered 0, 1, …"""
        self._before_columns("select_groups")
        remap = {old: new for new, old in enumerate(groups)}
        out = StepBatch(examples=[self.examples[g] for g in groups])
        out.rows = [_regroup(row, remap[row.group]) for row in self.rows if row.group in remap]
        return out

    def concat_groups(self, other: StepBatch, limit: int) -> StepBatch:
        """This batch's groups followed by ``other``'s, up to ``limit`` groups in all."""
        self._before_columns("concat_groups")
        room = max(0, limit - len(self.examples))
        other = other.select_groups(list(range(min(room, len(other.examples)))))
        offset = len(self.examples)
        out = StepBatch(examples=self.examples + other.examples, rows=list(self.rows))
        out.rows.extend(_regroup(row, row.group + offset) for row in other.rows)
        return out

    def _before_columns(self, what: str) -> None:
        if any(getattr(self, name) is not None for name in (*_TOKEN_COLUMNS, *_ROW_COLUMNS)):
            raise RuntimeError(f"{what} regroups rows only before any column is computed")


def _regroup(row: Row, group: int) -> Row:
    return replace(row, group=group)
