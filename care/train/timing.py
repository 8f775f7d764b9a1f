"""Named phase timers: each phase of a step is wrapped once, and ``time/<phase>`` falls out."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class PhaseTimer:
    """Accumulates wall seconds per phase within one step.

    ``sync`` runs before each clock read (``torch.cuda.synchronize`` on GPU), so asynchronous
    kernels are charged to the phase that launched them.

    Example::

        timer = PhaseTimer()
        with timer("rollout"):
            ...
        timer.metrics()  # {"time/rollout": 0.42}
    """

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self._sync = sync or (lambda: None)
        self._seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self._seconds[phase] = self._seconds.get(phase, 0.0) + time.perf_counter() - start

    def metrics(self) -> dict[str, float]:
        out = {f"time/{phase}": seconds for phase, seconds in self._seconds.items()}
        out["time/step"] = sum(self._seconds.values())
        return out

    def reset(self) -> None:
        self._seconds.clear()
