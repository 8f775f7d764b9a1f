"""Deterministic prompt order with a resumable cursor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PromptSampler:
    """Shuffles ``num_items`` indices once per epoch from ``(seed, epoch)`` and hands them out in
    batches, wrapping into the next epoch. The state is two integers, so a checkpoint restores
    the exact order.

    Example::

        s = PromptSampler(num_items=5, seed=0)
        s.next_batch(3); s.next_batch(3)   # the second batch wraps into epoch 1
        s.state_dict()                      # {"epoch": 1, "position": 1}
    """

    num_items: int
    seed: int
    epoch: int = 0
    position: int = 0

    def __post_init__(self) -> None:
        if self.num_items < 1:
            raise ValueError("PromptSampler needs at least one item (the training set is empty)")

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_items)

    def next_batch(self, size: int) -> list[int]:
        out: list[int] = []
        while len(out) < size:
            order = self._order(self.epoch)
            take = min(size - len(out), self.num_items - self.position)
            out.extend(int(i) for i in order[self.position : self.position + take])
            self.position += take
            if self.position == self.num_items:
                self.epoch, self.position = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
