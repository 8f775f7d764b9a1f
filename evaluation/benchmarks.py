"""The benchmark registry: one record per care_* task, and the paper's macro average.

Each `Benchmark` says everything the project knows about one task: the hub repository it mirrors,
the files of the evaluated split under a data root, the public columns those files must have,
the rows and answer types it holds, the row rule that turns a row into a prompt and a gold answer
(`evaluation.tasks`), and where its score differs from the official scorer. `BENCHMARKS` holds
them all; groups (`GROUPS`) and the MathVerse versions are derived from it, not listed again.

This module imports nothing heavy, so the dashboard and the result tables read the registry
without loading the verifier.

The macro average is defined here once (`macro_average`) and used by ``care eval``'s table,
the dashboard and the exports:

    >>> macro_average({"care_mathvista": 0.75, "care_mmmu": 0.5, "care_synth": 0.125})
    MacroAverage(value=0.625, tasks=('care_mathvista', 'care_mmmu'))
    >>> macro_average({"care_synth": 0.25}).value
    0.25
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MMMU_IMAGE_COLUMNS: tuple[str, ...] = tuple(f"image_{index}" for index in range(1, 8))
"""MMMU rows hold up to seven images, one column each."""


@dataclass(frozen=True)
class Benchmark:
    """One care_* task.

    task: the lmms-eval task name ("care_mathvista").
    name: the benchmark's name in the paper's table ("MathVista").
    repo: hub id, also the folder under the data root ("AI4Math/MathVista"); "" for care_synth.
    config: the hub config the split comes from (MMMU-Pro), else None.
    split: the split evaluated (the `test_split` of the task YAML).
    rows: rows of that split in the public copy (None: as written, care_synth).
    parquet_patterns / arrow_patterns: globs relative to ``<data-root>/<repo>``, tried in order
        (arrow: the ``data-*.arrow`` files of a ``save_to_disk`` folder).
    columns: the public columns every file must have, in the hub's order.
    answer_types: what the gold answers are, as ``care.verify.score`` compares them.
    rule: the row rule of `evaluation.tasks` (``ROW_RULES``) shared by tasks with one schema.
    problem_version: MathVerse rows kept (None: all rows).
    scoring: where this project's score differs from the official scorer.
    """

    task: str
    name: str
    repo: str
    split: str
    rows: int | None
    columns: tuple[str, ...]
    answer_types: tuple[str, ...]
    rule: str
    scoring: str
    parquet_patterns: tuple[str, ...] = ()
    arrow_patterns: tuple[str, ...] = ()
    config: str | None = None
    problem_version: str | None = None


# MMMU and MMMU-Pro standard share these columns, in this order, before their last ones.
_MMMU_COLUMNS = (
    "id",
    "question",
    "options",
    "explanation",
    *MMMU_IMAGE_COLUMNS,
    "img_type",
    "answer",
    "topic_difficulty",
)
_MATHVERSE_COLUMNS = (
    "sample_index",
    "problem_index",
    "problem_version",
    "question",
    "image",
    "answer",
    "question_type",
    "metadata",
    "query_wo",
    "query_cot",
    "question_for_eval",
)
_MATHVERSE_SCORING = (
    "the official protocol extracts and judges with GPT-4 on question_for_eval; here the "
    "rule-based verifier, with option texts from question_for_eval's Choices block"
)


def _mathverse(task: str, version: str | None) -> Benchmark:
    return Benchmark(
        task=task,
        name="MathVerse" if version is None else f"MathVerse {version}",
        repo="AI4Math/MathVerse",
        split="testmini",
        rows=3940 if version is None else 788,
        columns=_MATHVERSE_COLUMNS,
        answer_types=("multiple_choice", "number", "math", "text"),
        rule="mathverse",
        scoring=_MATHVERSE_SCORING,
        parquet_patterns=("testmini.parquet", "testmini-*.parquet", "data/testmini-*.parquet"),
        arrow_patterns=("testmini/data-*.arrow", "data-*.arrow"),
        problem_version=version,
    )


_MATHVERSE_VERSION_TASKS = {
    "care_mathverse_text_dominant": "Text Dominant",
    "care_mathverse_text_lite": "Text Lite",
    "care_mathverse_vision_intensive": "Vision Intensive",
    "care_mathverse_vision_dominant": "Vision Dominant",
    "care_mathverse_vision_only": "Vision Only",
}

_REGISTRY: tuple[Benchmark, ...] = (
    Benchmark(
        task="care_mathvista",
        name="MathVista",
        repo="AI4Math/MathVista",
        split="testmini",
        rows=1000,
        columns=(
            "pid",
            "question",
            "image",
            "decoded_image",
            "choices",
            "unit",
            "precision",
            "answer",
            "question_type",
            "answer_type",
            "metadata",
            "query",
        ),
        answer_types=("multiple_choice", "integer", "number", "math", "text"),
        rule="mathvista",
        scoring=(
            "the official scorer rounds the prediction to `precision` decimals and lmms-eval "
            "without an API key maps an unparsed answer to the nearest option; here numbers match "
            "within 1e-4 relative (the prompt states the precision) and an unparsed answer is wrong"
        ),
        parquet_patterns=("data/testmini-*.parquet",),
        arrow_patterns=("testmini/data-*.arrow",),
    ),
    _mathverse("care_mathverse", None),
    *(_mathverse(task, version) for task, version in _MATHVERSE_VERSION_TASKS.items()),
    Benchmark(
        task="care_mathvision",
        name="MATH-Vision",
        repo="MathLLMs/MathVision",
        split="test",
        rows=3040,
        columns=(
            "id",
            "question",
            "options",
            "image",
            "decoded_image",
            "answer",
            "solution",
            "level",
            "subject",
        ),
        answer_types=("multiple_choice", "number", "math", "text"),
        rule="mathvision",
        scoring=(
            "as the official rule-based scorer (option letter or text, math equivalence), with "
            "care.verify.extract_answer in place of its find_math_answer"
        ),
        parquet_patterns=("data/test-*.parquet",),
        arrow_patterns=("test/data-*.arrow",),
    ),
    Benchmark(
        task="care_mmmu",
        name="MMMU",
        repo="MMMU/MMMU",
        split="validation",
        rows=900,
        columns=(*_MMMU_COLUMNS, "question_type", "subfield"),
        answer_types=("multiple_choice", "number", "math", "text"),
        rule="mmmu",
        scoring=(
            "the MMMU parser picks a random option when nothing parses and checks open answers "
            "by substring; here an unparsed answer is wrong and open answers match by value, "
            "expression or text"
        ),
        parquet_patterns=("*/validation-*.parquet",),
        arrow_patterns=("*/validation/data-*.arrow",),
    ),
    Benchmark(
        task="care_mmmu_pro_std",
        name="MMMU-Pro standard",
        repo="MMMU/MMMU_Pro",
        config="standard (10 options)",
        split="test",
        rows=1730,
        columns=(*_MMMU_COLUMNS, "subject"),
        answer_types=("multiple_choice",),
        rule="mmmu",
        scoring="as MMMU: no random option for an unparsed answer; up to 10 options (A-J)",
        parquet_patterns=("standard (10 options)/test-*.parquet",),
        arrow_patterns=("standard (10 options)/test/data-*.arrow",),
    ),
    Benchmark(
        task="care_mmmu_pro_vis",
        name="MMMU-Pro vision",
        repo="MMMU/MMMU_Pro",
        config="vision",
        split="test",
        rows=1730,
        columns=("id", "image", "options", "answer", "subject"),
        answer_types=("multiple_choice",),
        rule="mmmu_pro_vision",
        scoring=(
            "lmms-eval's mmmu_pro_vision compares the raw response to the letter ('Answer: B' "
            "scores wrong); here the letter is extracted and the option texts count too"
        ),
        parquet_patterns=("vision/test-*.parquet",),
        arrow_patterns=("vision/test/data-*.arrow",),
    ),
    Benchmark(
        task="care_synth",
        name="synthetic test split",
        repo="",
        split="test",
        rows=None,
        columns=("id", "images", "question", "answer", "answer_type"),
        answer_types=("multiple_choice", "integer", "number", "text"),
        rule="synth",
        scoring="the trainer's reward check itself (no official scorer)",
    ),
)

BENCHMARKS: dict[str, Benchmark] = {benchmark.task: benchmark for benchmark in _REGISTRY}
"""Every leaf task by name (care_mathverse is a leaf for file checks and a group in lmms-eval)."""

TASKS: tuple[str, ...] = tuple(BENCHMARKS)

PAPER_BENCHMARKS: tuple[str, ...] = (
    "care_mathvista",
    "care_mathverse",
    "care_mathvision",
    "care_mmmu",
    "care_mmmu_pro_std",
    "care_mmmu_pro_vis",
)
"""The paper's six benchmarks, in the order of its table."""

GROUPS: dict[str, tuple[str, ...]] = {
    "care_mathverse": tuple(_MATHVERSE_VERSION_TASKS),
    "care_six": PAPER_BENCHMARKS,
}
"""Group → its members; care_mathverse's score is the size-weighted mean of its five versions
(= accuracy over all 3,940 rows), care_six's is the unweighted mean of the six (the paper's
macro average, `macro_average`)."""

SYNTH_FOLDER = "care_synth"
"""care_synth reads ``<data-root>/care_synth/test.jsonl`` (or a synthetic dataset folder itself)."""


MATHVERSE_VERSIONS: dict[str, str] = {
    task: record.problem_version
    for task, record in BENCHMARKS.items()
    if record.problem_version is not None
}
"""MathVerse version task → the `problem_version` value its rows carry."""


def get_benchmark(task: str) -> Benchmark:
    """The record of `task`; ValueError listing the known tasks and groups otherwise.

    Example: ``get_benchmark("care_mmmu").repo`` → ``"MMMU/MMMU"``.
    """
    found = BENCHMARKS.get(task)
    if found is None:
        raise ValueError(
            f"unknown task {task!r}; known tasks: {list(TASKS)}, groups: {list(GROUPS)}"
        )
    return found


@dataclass(frozen=True)
class MacroAverage:
    """A macro average and the tasks it was taken over.

    value: the unweighted mean accuracy (a fraction) over `tasks`.
    tasks: the tasks averaged, in the order given.
    """

    value: float
    tasks: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """True when it covers all six of the paper's benchmarks (the paper's "avg" column)."""
        return set(self.tasks) == set(PAPER_BENCHMARKS)


def macro_tasks(tasks: Iterable[str]) -> tuple[str, ...]:
    """The tasks a macro average is taken over: the paper's six among `tasks` when any of them
    is there, else every task given (a run evaluated only on care_synth still gets a number).

    MathVerse versions evaluated one by one are never mixed into a macro with care_mathverse:
    only the whole benchmark is one of the six.

    Example: ``macro_tasks(["care_synth", "care_mmmu", "care_mathvista"])`` →
    ``("care_mmmu", "care_mathvista")``; ``macro_tasks(["care_synth"])`` → ``("care_synth",)``.
    """
    given = tuple(dict.fromkeys(tasks))
    paper = tuple(task for task in given if task in PAPER_BENCHMARKS)
    return paper if paper else given


def macro_average(accuracy_by_task: Mapping[str, float]) -> MacroAverage | None:
    """The macro average of per-task accuracies (fractions) over `macro_tasks`.

    NaN accuracies (a task that logged no number) are left out before choosing the tasks;
    None when nothing is left.

    Example: ``macro_average({"care_mathvista": 0.75, "care_mmmu": 0.5, "care_synth": 0.125})``
    → ``MacroAverage(value=0.625, tasks=("care_mathvista", "care_mmmu"))``.
    """
    finite = {
        task: float(value)
        for task, value in accuracy_by_task.items()
        if value is not None and math.isfinite(float(value))
    }
    members = macro_tasks(finite)
    if not members:
        return None
    return MacroAverage(math.fsum(finite[task] for task in members) / len(members), members)
