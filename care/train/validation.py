"""Held-out accuracy during training (``train.eval_every``): greedy decoding of the validation
split with the training prompt template and verifier, summarised as the ``val/*`` metrics of
``steps.jsonl``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from care.data import Example
from care.rollout.base import RolloutEngine, RolloutRequest, SamplingParams
from care.verify import Verdict


@dataclass(frozen=True)
class Outcome:
    """One scored validation row: its ``family`` and ``difficulty`` fields (None when the row
    has none) and its verdict's accuracy and format flags."""

    family: str | None
    difficulty: Any
    acc: float
    fmt: float


def greedy_outcomes(
    engine: RolloutEngine,
    examples: Sequence[Example],
    prompt_for: Callable[[Example], str],
    judge: Callable[[Example, str, str], Verdict],
    *,
    batch_rows: int,
    max_new_tokens: int,
) -> list[Outcome]:
    """Decode ``examples`` greedily, ``batch_rows`` prompts a call, and score each response with
    ``judge(example, text, finish_reason)``."""
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, n=1)
    outcomes = []
    for start in range(0, len(examples), batch_rows):
        chunk = examples[start : start + batch_rows]
        requests = [RolloutRequest(prompt=prompt_for(ex), images=ex.load_images()) for ex in chunk]
        for ex, samples in zip(chunk, engine.generate(requests, params), strict=True):
            verdict = judge(ex, samples[0].text, samples[0].finish_reason)
            extra = ex.extra or {}
            outcomes.append(
                Outcome(extra.get("family"), extra.get("difficulty"), verdict.acc, verdict.fmt)
            )
    return outcomes


def validation_metrics(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """``val/acc``, ``val/fmt``, ``val/n``, ``val/acc/<family>`` and ``val/acc/difficulty_<k>``.

    Example: 600 rows, 300 counting of which 150 right and 300 bar_chart of which 90 right →
    ``{"val/acc": 0.4, "val/acc/counting": 0.5, "val/acc/bar_chart": 0.3, ...}``.
    """
    metrics = {
        "val/acc": float(np.mean([o.acc for o in outcomes])),
        "val/fmt": float(np.mean([o.fmt for o in outcomes])),
        "val/n": float(len(outcomes)),
    }
    for field, name in (("family", "val/acc/{}"), ("difficulty", "val/acc/difficulty_{}")):
        groups: dict[Any, list[float]] = {}
        for outcome in outcomes:
            key = getattr(outcome, field)
            if key is not None:
                groups.setdefault(key, []).append(outcome.acc)
        for key in sorted(groups, key=str):
            metrics[name.format(key)] = float(np.mean(groups[key]))
    return metrics
