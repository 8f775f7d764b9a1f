"""DAPO's dynamic sampling in the trainer: keep the groups whose rewards vary, refill from new
prompts, and keep every process in step while doing it.

The filter itself (which rows of a batch to keep) is :func:`care.algo.grpo.dynamic_sampling_keep`;
this module draws the refill rounds around it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from care.algo.grpo import dynamic_sampling_keep
from care.config import DapoSection
from care.train import lockstep
from care.train.batch import StepBatch


def keep_varied_groups(batch: StepBatch, tolerance: float) -> StepBatch:
    """The groups of ``batch`` whose rewards vary by more than ``tolerance``, renumbered 0, 1, …"""
    keep = dynamic_sampling_keep(
        batch.column("reward"), batch.column("group", torch.long), tolerance
    )
    kept_groups = sorted({row.group for row, k in zip(batch.rows, keep.tolist(), strict=True) if k})
    return batch.select_groups(kept_groups)


def refill_varied_groups(
    first: StepBatch,
    *,
    next_prompts: Callable[[], list[int]],
    rollout: Callable[[list[int], int], StepBatch],
    wanted: int,
    dapo: DapoSection,
    accelerator: Any,
) -> tuple[StepBatch, dict[str, float], bool]:
    """Keep the varied groups of ``first`` and draw refill rounds until ``wanted`` groups.

    Args:
        first: the step's first draw on this process.
        next_prompts: this process's share of the next round of prompts (advances the sampler).
        rollout: ``(prompt indices, round) → StepBatch`` of sampled, verified groups.
        wanted: groups this process should end with.
        dapo: the config's ``algo.dapo`` section (``variance_tolerance``,
            ``max_refill_rounds``).
        accelerator: the run's accelerator (the rounds are agreed between processes).

    Returns ``(batch, stats, rows count)``: the ``dapo/*`` stats sum over every process, and
    ``rows count`` is False where no group was kept on this process: the batch is then the first
    draw (all of its advantages are zero) and its rows only keep the process in step.

    Refill rounds run in lockstep: while ANY process still lacks groups, every process draws the
    round's prompts, so the sampler cursor (and the checkpoint, which holds the main process's)
    stays the same on all of them and no prompt goes to two processes. A process that is already
    full leaves its share of the round unsampled (``dapo/passed_prompts``), as one process leaves
    the groups beyond its target.
    """
    tolerance = dapo.variance_tolerance
    kept = keep_varied_groups(first, tolerance)
    rounds, drawn, passed = 0, len(first.examples), 0
    while rounds < dapo.max_refill_rounds and lockstep.any_process(
        len(kept.examples) < wanted, accelerator
    ):
        rounds += 1
        indices = next_prompts()
        if len(kept.examples) >= wanted:
            passed += len(indices)
            continue
        more = rollout(indices, rounds)
        drawn += len(more.examples)
        kept = kept.concat_groups(keep_varied_groups(more, tolerance), limit=wanted)
    kept_here = len(kept.examples)
    totals = lockstep.sum_over_processes([kept_here, drawn, passed], accelerator)
    stats = {
        "dapo/kept_groups": totals[0],
        "dapo/drawn_groups": totals[1],
        "dapo/passed_prompts": totals[2],
        "dapo/refill_rounds": float(rounds),
    }
    # Nothing varied: the first draw keeps this process stepping with the others (train_step
    # skips the update when no process kept any group).
    return (kept if kept.rows else first), stats, kept_here > 0
