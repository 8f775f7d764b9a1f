"""The trainer's phase modules on hand-made batches: DAPO's refill rounds (care.train.dapo) and
RGR's repair requests and rows (care.train.rgr). The trainer runs that use them end to end are in
test_estimators_learn.py, test_trainer.py and the multi-process tests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from care.config import DapoSection, RgrSection, RolloutSection
from care.prompts import build_repair_prefix
from care.rollout.base import RolloutOutput
from care.train import dapo, rgr
from care.train.batch import Row, StepBatch

ONE_PROCESS = SimpleNamespace(num_processes=1, is_main_process=True, device=torch.device("cpu"))


def output(text: str, finish_reason: str = "stop") -> RolloutOutput:
    return RolloutOutput(
        prompt_ids=[1, 2],
        response_ids=list(range(3, 3 + len(text.split()))),
        text=text,
        logprobs=[-0.5] * len(text.split()),
        finish_reason=finish_reason,
    )


def batch_of(rewards: list[list[float]], name: str = "p") -> StepBatch:
    """One group per inner list; each row's reward as given."""
    batch = StepBatch(examples=[f"{name}{g}" for g in range(len(rewards))])
    for group, group_rewards in enumerate(rewards):
        for k, reward in enumerate(group_rewards):
            row = Row.sampled(
                output(f"{name}{group} answer {k}"),
                group=group,
                prompt=f"prompt {name}{group}",
                images=[],
                index_in_group=k,
            )
            row.reward = reward
            batch.rows.append(row)
    return batch


class Draws:
    """Refill rounds from a script: round r returns ``rounds[r - 1]``; records every call."""

    def __init__(self, rounds: list[list[list[float]]], prompts_per_round: int = 2) -> None:
        self.rounds = rounds
        self.prompts_per_round = prompts_per_round
        self.prompt_calls = 0
        self.sampled: list[int] = []

    def next_prompts(self) -> list[int]:
        self.prompt_calls += 1
        return list(range(self.prompts_per_round))

    def rollout(self, indices: list[int], stream: int) -> StepBatch:
        self.sampled.append(stream)
        return batch_of(self.rounds[stream - 1], name=f"r{stream}-")


def refill(first: StepBatch, draws: Draws, rounds: int, wanted: int = 2):
    return dapo.refill_varied_groups(
        first,
        next_prompts=draws.next_prompts,
        rollout=draws.rollout,
        wanted=wanted,
        dapo=DapoSection(max_refill_rounds=rounds),
        accelerator=ONE_PROCESS,
    )


def test_dapo_keeps_varied_groups_and_refills_until_the_target() -> None:
    first = batch_of([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    draws = Draws([[[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
    batch, stats, rows_count = refill(first, draws, rounds=3)
    # Round 1 adds nothing varied, round 2 fills the batch (one of its two groups fits).
    assert draws.sampled == [1, 2]
    assert batch.examples == ["p1", "r2-0"]
    assert [row.group for row in batch.rows] == [0, 0, 1, 1]
    assert [row.reward for row in batch.rows] == [0.0, 1.0, 1.0, 0.0]
    assert stats == {
        "dapo/kept_groups": 2.0,
        "dapo/drawn_groups": 7.0,
        "dapo/passed_prompts": 0.0,
        "dapo/refill_rounds": 2.0,
    }
    assert rows_count


def test_dapo_stops_after_its_refill_rounds_and_keeps_the_first_draw_when_nothing_varied() -> None:
    first = batch_of([[1.0, 1.0], [0.0, 0.0]])
    draws = Draws([[[0.0, 0.0]], [[1.0, 1.0]]])
    batch, stats, rows_count = refill(first, draws, rounds=2)
    assert draws.prompt_calls == 2 and draws.sampled == [1, 2]
    # No group varied: the rows only keep the process stepping; they carry no gradient.
    assert batch is first and not rows_count
    assert stats["dapo/kept_groups"] == 0.0 and stats["dapo/refill_rounds"] == 2.0


def test_dapo_with_no_refill_rounds_draws_nothing_more() -> None:
    first = batch_of([[1.0, 0.0], [1.0, 1.0]])
    draws = Draws([])
    batch, stats, rows_count = refill(first, draws, rounds=0)
    assert draws.prompt_calls == 0
    assert batch.examples == ["p0"] and rows_count
    assert stats["dapo/drawn_groups"] == 2.0 and stats["dapo/kept_groups"] == 1.0


def test_dapo_filter_reads_the_reward_variance_with_its_tolerance() -> None:
    batch = batch_of([[0.5, 0.5 + 1e-6], [0.2, 0.9]])
    assert dapo.keep_varied_groups(batch, tolerance=1e-8).examples == ["p1"]
    assert dapo.keep_varied_groups(batch, tolerance=0.0).examples == ["p0", "p1"]


@pytest.mark.parametrize(
    ("rgr_fields", "expected"),
    [
        ({"sampling": "reference"}, (0.6, 0.95, 512)),
        ({"sampling": "rollout"}, (1.0, 0.9, 64)),
        ({"sampling": "reference", "max_new_tokens": 100}, (0.6, 0.95, 100)),
        ({"sampling": "rollout", "max_new_tokens": 100}, (1.0, 0.9, 100)),
    ],
)
def test_repairs_decode_with_the_reference_or_the_rollout_settings(rgr_fields, expected) -> None:
    rollout = RolloutSection(temperature=1.0, top_p=0.9, max_new_tokens=64)
    params = rgr.repair_sampling(RgrSection(enable=True, **rgr_fields), rollout, seed=11)
    assert (params.temperature, params.top_p, params.max_new_tokens) == expected
    assert params.n == 1 and params.seed == 11


class RepairEngine:
    """Answers every repair request with a fixed continuation; keeps the requests."""

    def __init__(self) -> None:
        self.requests = []

    def generate(self, requests, params):
        self.requests.extend(requests)
        return [[output(f"fixed {i}\n</think>\n<answer>B</answer>")] for i in range(len(requests))]


@pytest.mark.parametrize("train_on", ["continuation", "response"])
def test_a_repair_row_belongs_to_its_source_group_and_is_judged_whole(train_on) -> None:
    batch = batch_of([[1.0, 0.0], [0.0, 1.0]])
    batch.rows[1].text = "<think>\n2+2=5\n</think>\n<answer>5</answer>"
    engine = RepairEngine()
    rows, responses = rgr.sample_repairs(
        engine,
        batch,
        [1, 2],
        rgr.repair_sampling(RgrSection(enable=True), RolloutSection(), 0),
        train_on=train_on,
    )
    prefixes = [build_repair_prefix(batch.rows[src].text) for src in (1, 2)]
    assert [r.assistant_prefix for r in engine.requests] == prefixes
    assert [r.prompt for r in engine.requests] == ["prompt p0", "prompt p1"]
    assert [(row.group, row.reflected_from, row.index_in_group) for row in rows] == [
        (0, 1, -1),
        (1, 2, -1),
    ]
    # The verifier reads context + continuation; training sees the context as a prefix only
    # when it trains on the continuation.
    assert responses == [p + row.text for p, row in zip(prefixes, rows, strict=True)]
    expected_prefixes = prefixes if train_on == "continuation" else ["", ""]
    assert [row.prefix for row in rows] == expected_prefixes
