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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


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
