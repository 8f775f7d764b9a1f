"""Greedy evaluation of a checkpoint on rows in the project's data format, scored by the
project's verifier — the same prompt template and ``score`` the trainer's reward uses.

The lmms-eval bridge (``evaluation/``) runs the public benchmarks through the same two pieces;
this module is the in-process path the demo uses on the synthetic test split.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from care.data import Example
from care.prompts import PROMPT_VERSION, build_messages, render_prompt
from care.rollout.base import RolloutRequest, SamplingParams
from care.rollout.hf import HFRolloutEngine
from care.verify import score


@dataclass(frozen=True)
class EvalResult:
    """Accuracy and format rate over ``n`` examples, with one record per example."""

    task: str
    n: int
    accuracy: float
    format_rate: float
    prompt_version: str
    records: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "records"}


def evaluate_examples(
    model: Any,
    processor: Any,
    examples: list[Example],
    *,
    task: str = "care_synth",
    max_new_tokens: int = 128,
    batch_rows: int = 32,
) -> EvalResult:
    """Greedy-decode every example once and score it; deterministic."""
    if not examples:
        raise ValueError(f"{task}: no examples to evaluate")
    engine = HFRolloutEngine(model, processor, batch_size=batch_rows)
    requests = [
        RolloutRequest(
            prompt=render_prompt(
                processor, build_messages(ex.question, ex.choices, num_images=len(ex.images))
            ),
            images=ex.load_images(),
        )
        for ex in examples
    ]
    outputs = engine.generate(requests, SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens))
    records = []
    for ex, samples in zip(examples, outputs, strict=True):
        verdict = score(samples[0].text, ex.answer, ex.choices, ex.answer_type)
        records.append(
            {
                "id": ex.id,
                "answer": ex.answer,
                "response": samples[0].text,
                "extracted": verdict.extracted,
                "acc": verdict.acc,
                "fmt": verdict.fmt,
            }
        )
    n = len(records)
    return EvalResult(
        task=task,
        n=n,
        accuracy=sum(r["acc"] for r in records) / n,
        format_rate=sum(r["fmt"] for r in records) / n,
        prompt_version=PROMPT_VERSION,
        records=records,
    )


def write_eval(result: EvalResult, out_dir: Path) -> Path:
    """``out_dir/<task>.json`` (summary) and ``out_dir/<task>_samples.jsonl`` (per example)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = out_dir / f"{result.task}.json"
    summary.write_text(json.dumps(result.summary(), indent=2) + "\n")
    with (out_dir / f"{result.task}_samples.jsonl").open("w") as handle:
        for record in result.records:
            handle.write(json.dumps(record) + "\n")
    return summary
