"""Turn the rollouts of a run trained elsewhere into a run folder the dashboard reads.

Per step (docs/import.md):

1. **groups**: the rollouts that share a prompt (verl: the same ``input`` text; generic: the same
   ``prompt_id``) form a group, numbered in order of first appearance;
2. **correctness** of each rollout, from the first source that has it, recorded as
   ``correct_source``: ``given`` (verl's ``acc``, the generic ``correct``), else ``verifier``
   (this suite's `care.verify.score` on the response and the gold answer: verl's ``gts``, the
   generic ``answer``), else ``reward`` (reward > 0);
3. **GRPO advantages** from the rewards the trainer used (`care.algo.grpo.grpo_advantages`),
   and the learning-signal metrics of the trainer's own runs on them
   (`care.metrics.signal.step_signal_metrics`): failure-signal share, group types, variance ratio;
4. where a gold answer exists, the **agreement** between the source's verdict (its flag, else
   reward > 0) and this suite's verifier: a reward-bug detector.

What CARE would have done with the groups (hard negatives, the all-negative rescue) needs the
rollouts' reasoning embeddings and old-policy log-probabilities, which no rollout dump holds:
the records say so (``not_computed``) instead of logging zeros.

Each record type comes from one function (`step_record`, `group_record`, `sample_record`), so
the record format can change in one place. Only one step is in memory at a time.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from care.algo.grpo import grpo_advantages
from care.imports.sources import Rollout, StepRollouts
from care.metrics.signal import step_signal_metrics
from care.runlog import IMPORT_FILE, GroupRecord, RunWriter, SampleRecord, to_json_value
from care.verify import Verdict, score

CORRECT_SOURCES = ("given", "verifier", "reward")
"""Where a rollout's correctness came from, in the order they are tried."""

NOT_COMPUTED = ("hard_negatives", "rescue")
"""What an imported run cannot have: both need reasoning embeddings (and the rescue's
pseudo-anchor old-policy log-probabilities), which a rollout dump does not hold."""

SIGNAL_KEYS = (
    "signal/failure_share_seq",
    "signal/failure_share_seq_no_rgr",
    "groups/all_correct_frac",
    "groups/all_wrong_frac",
    "groups/mixed_frac",
    "groups/with_signal_frac",
    "adv/var_ratio_neg_pos",
    "adv/energy_ratio_neg_pos",
)
"""The learning-signal metrics an import writes. `step_signal_metrics` also gives rescue/* and
rgr/*, which describe CARE's own steps: for a run trained elsewhere they are not computed, so
they are left out rather than logged as zeros."""

MAX_KEPT_WARNINGS = 1000
"""Warnings kept in import.json; the count covers all of them."""

Advantage = Literal["grpo", "dr_grpo"]


@dataclass(frozen=True)
class ImportOptions:
    """How to import.

    verify: re-check responses that have a gold answer with this suite's verifier (slower;
        without it correctness comes from the given flag or the reward, and no agreement is
        measured).
    advantage: ``grpo`` (z-scored in the group, verl's default) or ``dr_grpo`` (mean-centred).
    samples_every: write the rollout texts every N steps (0: never).
    overwrite: replace a run already in the output folder.
    """

    verify: bool = True
    advantage: Advantage = "grpo"
    samples_every: int = 1
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.advantage not in ("grpo", "dr_grpo"):
            raise ValueError(f"advantage must be 'grpo' or 'dr_grpo', got {self.advantage!r}")
        if type(self.samples_every) is not int or self.samples_every < 0:
            raise ValueError(f"samples_every must be an integer >= 0, got {self.samples_every!r}")


@dataclass
class StepAnalysis:
    """One step's rollouts with their groups, correctness, verdicts and advantages.

    Row i describes ``rollouts[i]``; ``groups[g]`` lists the rows of group g in file order.
    """

    step: int
    time: float | None
    rollouts: list[Rollout]
    groups: list[list[int]]
    group_of: list[int]
    index_in_group: list[int]
    correct: list[bool]
    correct_source: list[str]
    verdicts: list[Verdict | None]
    source_says_correct: list[bool]
    advantages: list[float]
    signal: dict[str, float]
    skipped_lines: int


def check_answer(rollout: Rollout, notes: Counter[str]) -> Verdict | None:
    """This suite's verdict on a rollout against its gold answers (correct when any matches);
    None when it has none or the verifier refuses the gold answer (noted).

    Example: response "... <answer>7</answer>" with answers ("7",) -> ``Verdict(acc=True, ...)``.
    """
    if not rollout.answers:
        return None
    first: Verdict | None = None
    for answer in rollout.answers:
        try:
            verdict = score(rollout.response, answer, answer_type=rollout.answer_type)
        except ValueError:
            notes["gold answer the verifier cannot use (e.g. an unknown answer_type)"] += 1
            return None
        if verdict.acc:
            return verdict
        first = first or verdict
    return first


def analyse_step(batch: StepRollouts, options: ImportOptions) -> StepAnalysis | None:
    """Group, judge and score one step's rollouts; None when the step has none.

    Example: 2 prompts × 4 rollouts with scores [1, 0, 0, 0] and [1, 1, 1, 1], no acc, no gts
    -> groups [[0..3], [4..7]], correct from the reward, advantages [1.5, -0.5, -0.5, -0.5]
    (÷ the group std, 0.5) and [0, 0, 0, 0], failure share 0.5, mixed and all-correct 0.5 each.
    """
    rollouts = batch.rollouts
    if not rollouts:
        return None
    group_ids: dict[str, int] = {}
    groups: list[list[int]] = []
    group_of: list[int] = []
    index_in_group: list[int] = []
    for row, rollout in enumerate(rollouts):
        group = group_ids.setdefault(rollout.prompt_key, len(group_ids))
        if group == len(groups):
            groups.append([])
        index_in_group.append(len(groups[group]))
        groups[group].append(row)
        group_of.append(group)

    correct: list[bool] = []
    sources: list[str] = []
    verdicts: list[Verdict | None] = []
    source_says: list[bool] = []
    for rollout in rollouts:
        verdict = check_answer(rollout, batch.notes) if options.verify else None
        verdicts.append(verdict)
        said = rollout.given_correct
        source_says.append(said if said is not None else rollout.reward > 0)
        if said is not None:
            correct.append(said)
            sources.append("given")
        elif verdict is not None:
            correct.append(verdict.acc)
            sources.append("verifier")
        else:
            correct.append(rollout.reward > 0)
            sources.append("reward")

    rewards = torch.tensor([rollout.reward for rollout in rollouts], dtype=torch.float64)
    group_index = torch.tensor(group_of, dtype=torch.long)
    advantages = grpo_advantages(rewards, group_index, norm_by_std=options.advantage == "grpo")
    metrics = step_signal_metrics(
        advantages, torch.tensor(correct), group_index, rescue_enabled=False
    )
    return StepAnalysis(
        step=batch.step,
        time=batch.time,
        rollouts=rollouts,
        groups=groups,
        group_of=group_of,
        index_in_group=index_in_group,
        correct=correct,
        correct_source=sources,
        verdicts=verdicts,
        source_says_correct=source_says,
        advantages=advantages.tolist(),
        signal={key: metrics[key] for key in SIGNAL_KEYS},
        skipped_lines=len(batch.warnings),
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


# --------------------------------------------------------------------------------------------
# the three record types


def step_record(analysis: StepAnalysis) -> dict[str, Any]:
    """The steps.jsonl metrics of an imported step (docs/import.md lists each).

    Example (2 groups of 4, one mixed, one all correct, nothing verified): ``{"signal/
    failure_share_seq": 0.5, "groups/mixed_frac": 0.5, "groups/zero_signal_frac": 0.5,
    "reward/mean": 0.625, "acc/mean": 0.625, "import/rollouts": 8, "import/groups": 2,
    "import/correct_reward_frac": 1.0, "verify/checked": 0, "verify/agreement": None, ...}``.
    """
    rows = len(analysis.rollouts)
    sizes = [len(members) for members in analysis.groups]
    usual_size = Counter(sizes).most_common(1)[0][0]
    checked = [i for i, verdict in enumerate(analysis.verdicts) if verdict is not None]
    agree = [analysis.verdicts[i].acc == analysis.source_says_correct[i] for i in checked]  # type: ignore[union-attr]
    source_only = [
        analysis.source_says_correct[i] and not analysis.verdicts[i].acc  # type: ignore[union-attr]
        for i in checked
    ]
    verifier_only = [
        analysis.verdicts[i].acc and not analysis.source_says_correct[i]  # type: ignore[union-attr]
        for i in checked
    ]
    lengths = [len(rollout.response) for rollout in analysis.rollouts]
    sources = Counter(analysis.correct_source)
    return {
        **analysis.signal,
        "groups/zero_signal_frac": 1.0 - analysis.signal["groups/with_signal_frac"],
        "reward/mean": _mean([rollout.reward for rollout in analysis.rollouts]),
        "acc/mean": _mean([float(flag) for flag in analysis.correct]),
        "response_chars/mean": _mean([float(length) for length in lengths]),
        "response_chars/max": float(max(lengths)),
        "import/rollouts": rows,
        "import/groups": len(sizes),
        "import/groups_off_size": sum(size != usual_size for size in sizes),
        "import/skipped_lines": analysis.skipped_lines,
        **{f"import/correct_{name}_frac": sources[name] / rows for name in CORRECT_SOURCES},
        "verify/checked": len(checked),
        "verify/agreement": _mean([float(flag) for flag in agree]) if checked else None,
        "verify/source_only_correct_frac": _mean([float(f) for f in source_only])
        if checked
        else None,
        "verify/verifier_only_correct_frac": _mean([float(f) for f in verifier_only])
        if checked
        else None,
    }


def group_record(analysis: StepAnalysis, group_id: int) -> GroupRecord:
    """The groups.jsonl record of one imported group, in the trainer's fields.

    Anchors, hard negatives, rescue and RGR are CARE's own steps: the group gets the values a
    GRPO run of the trainer logs (no anchor, no negatives, rgr null) and ``not_computed``
    saying which of them a dump cannot give.

    Example: group 0 with scores [1, 0, 0, 0] -> ``GroupRecord(group_id=0, prompt_id="3f2a…",
    G=4, n_correct=1, advantages=(1.5, -0.5, -0.5, -0.5), correct_source="reward",
    not_computed=("hard_negatives", "rescue"), ...)``.
    """
    members = analysis.groups[group_id]
    sources = {analysis.correct_source[i] for i in members}
    return GroupRecord(
        step=analysis.step,
        group_id=group_id,
        prompt_id=analysis.rollouts[members[0]].prompt_id,
        G=len(members),
        n_correct=sum(analysis.correct[i] for i in members),
        anchor_index=None,
        hard_negatives=(),
        k_prime=0,
        rescued=False,
        pseudo_anchor=None,
        rescue_impossible=False,
        rgr=None,
        advantages=[analysis.advantages[i] for i in members],
        rewards=[analysis.rollouts[i].reward for i in members],
        correct=[analysis.correct[i] for i in members],
        correct_source=sources.pop() if len(sources) == 1 else "mixed",
        not_computed=NOT_COMPUTED,
    )


def sample_record(analysis: StepAnalysis, row: int) -> SampleRecord:
    """The sample-file record of one imported rollout.

    Beyond the trainer's fields: ``correct_source``, the gold ``answers``, this suite's
    ``verifier_correct`` and ``extracted`` answer (null when not checked), ``source_line``
    (file:line in the dump) and ``dump`` (the line's other keys, e.g. verl's ``pred``).
    """
    rollout = analysis.rollouts[row]
    verdict = analysis.verdicts[row]
    return SampleRecord(
        step=analysis.step,
        group_id=analysis.group_of[row],
        index=analysis.index_in_group[row],
        prompt_id=rollout.prompt_id,
        question=rollout.prompt,
        response=rollout.response,
        reward=rollout.reward,
        correct=analysis.correct[row],
        correct_source=analysis.correct_source[row],
        advantage=analysis.advantages[row],
        answers=tuple(rollout.answers),
        verifier_correct=verdict.acc if verdict is not None else None,
        extracted=verdict.extracted if verdict is not None else None,
        source_line=rollout.where,
        dump=to_json_value(rollout.extra, f"{rollout.where}: dump"),
    )


# --------------------------------------------------------------------------------------------
# the whole import


@dataclass
class ImportReport:
    """What an import read, wrote and left out; written to ``<run>/import.json``."""

    format: str
    source: str
    run_dir: str
    steps: int = 0
    empty_steps: list[int] = field(default_factory=list)
    rollouts: int = 0
    groups: int = 0
    zero_signal_steps: int = 0
    skipped_lines: int = 0
    warnings: list[str] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)
    correct_sources: Counter[str] = field(default_factory=Counter)
    verify_checked: int = 0
    verify_agreed: int = 0
    ignored_files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rollouts_per_second(self) -> float:
        return self.rollouts / self.seconds if self.seconds > 0 else math.nan

    @property
    def agreement(self) -> float | None:
        """Share of the checked rollouts where the source's verdict equals the verifier's."""
        return self.verify_agreed / self.verify_checked if self.verify_checked else None

    def add(self, batch: StepRollouts, analysis: StepAnalysis | None) -> None:
        self.skipped_lines += len(batch.warnings)
        room = MAX_KEPT_WARNINGS - len(self.warnings)
        self.warnings.extend(batch.warnings[: max(room, 0)])
        self.notes.update(batch.notes)
        if analysis is None:
            self.empty_steps.append(batch.step)
            return
        self.steps += 1
        self.rollouts += len(analysis.rollouts)
        self.groups += len(analysis.groups)
        self.zero_signal_steps += analysis.signal["groups/with_signal_frac"] == 0.0
        self.correct_sources.update(analysis.correct_source)
        for verdict, said in zip(analysis.verdicts, analysis.source_says_correct, strict=True):
            if verdict is not None:
                self.verify_checked += 1
                self.verify_agreed += verdict.acc == said

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "source": self.source,
            "steps": self.steps,
            "empty_steps": self.empty_steps,
            "rollouts": self.rollouts,
            "groups": self.groups,
            "zero_signal_steps": self.zero_signal_steps,
            "skipped_lines": self.skipped_lines,
            "warnings": self.warnings,
            "warnings_not_kept": self.skipped_lines - len(self.warnings),
            "notes": dict(self.notes),
            "correct_sources": {name: self.correct_sources[name] for name in CORRECT_SOURCES},
            "verify_checked": self.verify_checked,
            "verify_agreement": self.agreement,
            "ignored_files": self.ignored_files,
            "seconds": self.seconds,
            "rollouts_per_second": self.rollouts_per_second if self.seconds > 0 else None,
        }


class RolloutSource(Protocol):
    """What `import_run` reads: `care.imports.sources.VerlDump` or `RolloutFiles`."""

    format: str
    path: Path
    ignored: list[str]

    def __iter__(self) -> Iterator[StepRollouts]: ...


def import_config(source: RolloutSource, options: ImportOptions) -> dict[str, Any]:
    """config.yaml of an imported run: where it came from and how it was read."""
    return {
        "import": {
            "format": source.format,
            "source": str(Path(source.path).resolve()),
            "correctness": list(CORRECT_SOURCES),
            "verify": options.verify,
            "advantage": options.advantage,
            "samples_every": options.samples_every,
            "not_computed": list(NOT_COMPUTED),
        }
    }


def import_run(
    source: RolloutSource,
    out: str | os.PathLike[str],
    options: ImportOptions | None = None,
    *,
    on_step: Callable[[int], None] | None = None,
) -> ImportReport:
    """Write the run folder `out` from `source`, one step at a time; returns the report.

    Example::

        report = import_run(VerlDump("verl_ckpt/rollouts"), "runs/verl_grpo")
        report.steps, report.rollouts, report.rollouts_per_second   # 200, 819200, 2.1e4

    Raises:
        ImportInputError: the input cannot be read as a whole (the message names the file).
        RunExistsError: `out` holds a run and ``options.overwrite`` is false.
    """
    options = options or ImportOptions()
    out_dir = Path(out)
    started = time.perf_counter()
    report = ImportReport(
        format=source.format, source=str(Path(source.path).resolve()), run_dir=str(out_dir)
    )
    report.ignored_files = list(source.ignored)
    writer = RunWriter.create(
        out_dir, import_config(source, options), seed=0, overwrite=options.overwrite
    )
    with writer:
        for batch in source:
            analysis = analyse_step(batch, options)
            report.add(batch, analysis)
            if analysis is not None:
                step = analysis.step
                writer.log_groups(
                    step, [group_record(analysis, g) for g in range(len(analysis.groups))]
                )
                if options.samples_every and step % options.samples_every == 0:
                    writer.log_samples(
                        step, [sample_record(analysis, row) for row in range(len(batch.rollouts))]
                    )
                writer.log_step(step, step_record(analysis), timestamp=analysis.time)
            if on_step is not None:
                on_step(batch.step)
        report.seconds = time.perf_counter() - started
        _write_report(out_dir / IMPORT_FILE, report)
    return report


def _write_report(path: Path, report: ImportReport) -> None:
    text = json.dumps(report.to_json(), indent=2, ensure_ascii=False, allow_nan=False)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as temp_file:
        temp_file.write(text + "\n")
    os.replace(temp_name, path)
