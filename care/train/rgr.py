"""Reflection-Guided Resampling in the trainer: sample one repair per chosen hard negative.

Which rollouts are repaired is the estimator's choice (``CareResult.rgr_sources``); this module
builds the repair requests (the prompt, its images and the failed reasoning with the repair cue
as the assistant's prefix), their sampling settings and the repaired rows (docs/algorithm.md
section 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from care.config import RgrSection, RolloutSection
from care.prompts import build_repair_prefix
from care.rollout.base import RolloutRequest, SamplingParams
from care.train.batch import Row, StepBatch

# The reference code decodes repairs with these (algo.rgr.sampling: reference).
REFERENCE_SAMPLING = {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 512}


def repair_sampling(rgr: RgrSection, rollout: RolloutSection, seed: int) -> SamplingParams:
    """One repair per request, decoded with the reference settings or the rollout's own
    (``algo.rgr.sampling``); ``algo.rgr.max_new_tokens`` overrides the length when set."""
    if rgr.sampling == "reference":
        sampling = dict(REFERENCE_SAMPLING)
    else:
        sampling = {
            "temperature": rollout.temperature,
            "top_p": rollout.top_p,
            "max_new_tokens": rollout.max_new_tokens,
        }
    if rgr.max_new_tokens is not None:
        sampling["max_new_tokens"] = rgr.max_new_tokens
    return SamplingParams(n=1, seed=seed, **sampling)


def sample_repairs(
    engine: Any,
    batch: StepBatch,
    sources: Sequence[int],
    params: SamplingParams,
    *,
    train_on: str,
) -> tuple[list[Row], list[str]]:
    """Repair each row of ``sources``: ``(new rows, whole repaired responses)``.

    A new row belongs to its source's group and records ``reflected_from``; it trains on the
    continuation alone (``train_on: continuation``, the repair context is its prefix) or on the
    context and continuation together. The whole responses (context + continuation) are what
    the verifier judges.
    """
    prefixes = [build_repair_prefix(batch.rows[src].text) for src in sources]
    requests = [
        RolloutRequest(
            prompt=batch.rows[src].prompt,
            images=batch.rows[src].images,
            assistant_prefix=prefix,
        )
        for src, prefix in zip(sources, prefixes, strict=True)
    ]
    outputs = engine.generate(requests, params)
    rows = [
        Row.sampled(
            samples[0],
            group=batch.rows[src].group,
            prompt=batch.rows[src].prompt,
            images=batch.rows[src].images,
            prefix=prefix if train_on == "continuation" else "",
            reflected_from=src,
        )
        for src, prefix, samples in zip(sources, prefixes, outputs, strict=True)
    ]
    return rows, [prefix + row.text for prefix, row in zip(prefixes, rows, strict=True)]
