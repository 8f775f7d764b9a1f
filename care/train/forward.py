"""The step's forwards over a :class:`care.train.batch.StepBatch`.

Two passes read the same collated rows: the one without grad that fills the batch's forward
columns (old log-probs and the rationale embeddings in ONE forward, reference log-probs, tag
regions), and the update's forward with grad (:func:`grad_forward`). Both score tokens at the
sampler's temperature with the ids the sampler suppresses, so that the old log-probs are those
of the distribution that sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from care.algo.spans import region_masks
from care.models.policy import PolicyBatch, collate, policy_forward
from care.train.batch import StepBatch


def collate_rows(
    processor: Any, batch: StepBatch, rows: Sequence[int], device: torch.device
) -> PolicyBatch:
    """The policy inputs of ``rows`` (prompts, images, repair prefixes, responses) on ``device``."""
    selected = [batch.rows[i] for i in rows]
    policy_batch = collate(
        processor,
        [row.prompt for row in selected],
        [row.images for row in selected],
        [row.response_ids for row in selected],
        assistant_prefixes=[row.prefix for row in selected],
    )
    return policy_batch.to(device)


def forward_columns(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    tokenizer: Any,
    policy_batch: PolicyBatch,
    *,
    want_embeddings: bool,
    temperature: float,
    suppress_token_ids: Sequence[int],
) -> dict[str, torch.Tensor | None]:
    """The forward columns of one micro-batch, no grad, as :meth:`StepBatch.store` takes them:
    ``old_logp``, ``ref_logp`` (None without a reference), ``think_mask``, ``answer_mask``,
    ``think_len``, ``answer_len``, ``old_logp_sum`` and ``embeddings`` (None unless wanted)."""
    response_mask = policy_batch.response_mask.cpu()
    regions = region_masks(tokenizer, policy_batch.response_ids.cpu(), response_mask)
    out = policy_forward(
        policy,
        policy_batch,
        want_embeddings=want_embeddings,
        think_mask=regions.think_mask.to(policy_batch.response_ids.device),
        temperature=temperature,
        suppress_token_ids=suppress_token_ids,
    )
    ref_logp = None
    if reference is not None:
        ref_logp = policy_forward(
            reference,
            policy_batch,
            want_embeddings=False,
            temperature=temperature,
            suppress_token_ids=suppress_token_ids,
        ).token_logprobs
    old_logp = out.token_logprobs.detach().cpu()
    rows = old_logp.shape[0]
    return {
        "old_logp": old_logp,
        "ref_logp": ref_logp,
        "think_mask": regions.think_mask,
        "answer_mask": regions.answer_mask,
        "think_len": regions.think_len,
        "answer_len": regions.answer_len,
        # Each row's own tokens only: the sum an unpadded row would give.
        "old_logp_sum": torch.stack(
            [old_logp[k, : int(response_mask[k].sum())].sum() for k in range(rows)]
        ),
        "embeddings": out.embeddings,
    }


def grad_forward(
    model: torch.nn.Module,
    policy_batch: PolicyBatch,
    *,
    temperature: float,
    suppress_token_ids: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The update's forward: ``(token log-probs, entropy, response mask)``, all ``[B, L]``."""
    out = policy_forward(
        model,
        policy_batch,
        want_embeddings=False,
        requires_grad=True,
        want_entropy=True,
        temperature=temperature,
        suppress_token_ids=suppress_token_ids,
    )
    return out.token_logprobs, out.entropy, policy_batch.response_mask
