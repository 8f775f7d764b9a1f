"""The rows of one training step: every rollout (and RGR repair) with what was learned about it.

A step starts with ``prompts × G`` ordinary rollouts; RGR appends one row per repaired group.
Each phase of the trainer fills in the columns it computes, so by the update every row carries
its context, response, verdict, old log-probs, masks and advantages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

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


@dataclass
class StepBatch:
    """All rows of a step, plus what the trainer computed for each row.

    ``per_row[i]`` holds row i's unpadded tensors: ``old_logp`` ``[L_i]``, ``think_mask`` and
    ``answer_mask`` ``[L_i]``, ``think_len``/``answer_len``, ``embedding`` ``[H]`` (or None),
    ``ref_logp`` ``[L_i]`` (or None) and, after the advantage phase, ``token_adv`` ``[L_i]``.
    """

    examples: list[Any]
    rows: list[Row] = field(default_factory=list)
    per_row: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A per-row attribute of :class:`Row` as a tensor."""
        return torch.tensor([getattr(row, name) for row in self.rows], dtype=dtype)

    def verdict_column(self, name: str) -> torch.Tensor:
        return torch.tensor([bool(getattr(row.verdict, name)) for row in self.rows])
