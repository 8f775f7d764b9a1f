"""Decisions every training process must take together.

Under DDP and FSDP every process has to run the same sequence of collectives, and a few trainer
decisions depend on data only one process sees: whether DAPO still needs refill groups, how many
groups were kept. Each helper here turns a per-process value into the one value every process
agrees on (one small all-gather). With a single process they return the local value and never
touch ``torch.distributed``.

Example (two processes, process 0 still short of groups, process 1 full)::

    any_process(True, accelerator)   # on process 0 → True
    any_process(False, accelerator)  # on process 1 → True: both run the refill round
    sum_over_processes([2.0, 7.0], accelerator)  # with [1.0, 3.0] on the other → [3.0, 10.0]

The update's lockstep lives here too: the per-update plan (shared loss denominators, the number
of micro-batch passes), the empty passes that keep a lighter process in step, and the gather of
every process's loss metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import gather_object


def sum_over_processes(values: Sequence[float], accelerator: Any) -> list[float]:
    """Element-wise sum of ``values`` over every process (float64, so counts stay exact).

    Every process must call this with the same number of values.
    """
    local = torch.tensor([list(values)], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        local = accelerator.gather(local)
    return [float(total) for total in local.sum(dim=0).tolist()]


def any_process(flag: bool, accelerator: Any) -> bool:
    """True on every process when ``flag`` is True on at least one of them."""
    return sum_over_processes([1.0 if flag else 0.0], accelerator)[0] > 0


@dataclass(frozen=True)
class MiniBatchPlan:
    """What every process agrees on before one optimizer update.

    Attributes:
        pg_denominator / kl_denominator: the MEAN over processes of their loss denominators
            (tokens or rows). DDP and FSDP average gradients over processes, so a process that
            divides its loss sums by this mean contributes exactly its part of the whole
            mini-batch's mean, also when the processes hold different numbers of rows.
        passes: the busiest process's micro-batch count; every process runs this many passes.
    """

    pg_denominator: float
    kl_denominator: float
    passes: int


def mini_batch_plan(
    pg_denominator: float, kl_denominator: float, passes: int, accelerator: Any
) -> MiniBatchPlan:
    """This process's denominators and micro-batch count → the plan all processes share."""
    local = torch.tensor(
        [[pg_denominator, kl_denominator, float(passes)]],
        dtype=torch.float64,
        device=accelerator.device,
    )
    if accelerator.num_processes > 1:
        local = accelerator.gather(local)
    return MiniBatchPlan(
        float(local[:, 0].mean()), float(local[:, 1].mean()), int(local[:, 2].max())
    )


def pad_passes(micro_batches: list[list[int]], passes: int) -> list[list[int]]:
    """``micro_batches`` followed by empty ones up to ``passes``: DDP all-reduces in the synced
    backward and FSDP all-gathers in every forward, so a process with fewer rows still runs
    every pass (an empty micro-batch is a zero-weight pass)."""
    if passes < len(micro_batches):
        raise ValueError(f"{len(micro_batches)} micro-batches do not fit in {passes} passes")
    return micro_batches + [[] for _ in range(passes - len(micro_batches))]


def gather_from_processes(value: Any, accelerator: Any) -> list[Any]:
    """Every process's ``value`` (any picklable object), in process order."""
    if accelerator.num_processes == 1:
        return [value]
    return gather_object([value])
