"""The evaluation table of ``care export``: accuracy with its 95 % interval, a mark where a
checkpoint differs from a chosen baseline, and a footer saying how every number was produced.

One row per evaluated run checkpoint (``run @ checkpoint``), then the paper's rows; one column
per benchmark, then the macro average (`analysis_app.tables.eval_table`'s layout and numbers).

- Interval (`evaluation.results.build_table`, the one ``care eval`` prints): Wilson's for one
  greedy evaluation, the Student-t interval over evaluation seeds for several (clipped to
  [0, 1]); the macro average's is the normal interval of a mean of independent proportions, or
  the t interval of the per-seed macro averages (one benchmark's macro: its own). A cell reads ``estimate [low, high]`` in
  percent: Wilson and clipped t intervals are not symmetric about the estimate, so ``± half``
  would misstate them.
- Mark († in LaTeX and Markdown, ``significant`` in the CSV): the row's items paired with the
  baseline checkpoint's (`evaluation.compare.compare_items`, first evaluation seed); a benchmark
  is marked when its exact McNemar p-value, Holm-corrected across the benchmarks the row shares
  with the baseline, is below `ALPHA`; the macro average when the paired-bootstrap 95 % interval
  of its difference excludes 0 (a macro of one benchmark is marked as that benchmark). A benchmark whose recorded data digest differs from the
  baseline's is not tested (its items are other questions under the same ids).
- Footer: the provenance each ``<benchmark>.json`` recorded at evaluation time
  (`evaluation.provenance`), "not recorded" where an older file lacks a fact.

The CSV is long and machine-readable: one line per cell, estimate, low, high, the test's
numbers and the provenance in columns of their own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis_app import tables
from analysis_app.data import EVAL_DIR, PaperReference
from care.stats import BOOTSTRAP_RESAMPLES, CONFIDENCE, Interval
from care.tables import csv_table, markdown_table
from evaluation import compare
from evaluation.benchmarks import macro_tasks
from evaluation.provenance import FACTS, HASH_PREFIX, NOT_RECORDED, Provenance
from evaluation.results import BenchmarkResult, ResultsTable, TableRow, build_table

ALPHA = 1.0 - CONFIDENCE
"""A Holm-corrected p-value below this marks a benchmark cell."""

ESTIMATE_DIGITS = 2
INTERVAL_DIGITS = 1
"""Decimals of a cell's estimate and bounds, in percent (the paper reports 74.7 and 50.57)."""

MARK_LATEX = r"$^{\dagger}$"
MARK_TEXT = "†"

CSV_COLUMNS = (
    "row", "run", "checkpoint", "benchmark", "tasks", "n", "seeds", "estimate", "low", "high",
    "interval", "baseline", "difference", "difference_low", "difference_high", "p_value",
    "p_holm", "significant", "suite_version", "suite_commit", "suite_commit_dirty",
    "lmms_eval_version", "prompt_version", "max_new_tokens", "verify_time_limit_s",
    "data_sha256",
)  # fmt: skip


@dataclass(frozen=True)
class CellTest:
    """A cell's paired comparison with the baseline: difference row - baseline (fractions)
    with its paired-bootstrap interval, the McNemar p-value, the Holm-corrected one (None for
    the macro average, which is not in the Holm family) and whether the cell is marked."""

    difference: Interval
    p_value: float
    p_holm: float | None
    significant: bool


@dataclass(frozen=True)
class CheckpointEvaluation:
    """One evaluated checkpoint as the table reads it: its results (intervals included) and
    each benchmark's recorded provenance, by task."""

    run: str
    checkpoint: str
    folder: Path
    results: ResultsTable
    provenance: dict[str, Provenance]


@dataclass
class IntervalTable:
    """The table's content before rendering.

    estimate: `tables.eval_table` (percent; run rows, then paper rows; the "macro tasks"
        column); low, high: the interval bounds in percent, NaN where there is none (paper
        rows). checkpoints: the run rows' evaluations by row label. tests: (row, column) ->
        `CellTest` for the rows compared with `baseline` (a row label, or None: no marks).
        untested: row -> why it (or one of its benchmarks) was not compared.
    """

    estimate: pd.DataFrame
    low: pd.DataFrame
    high: pd.DataFrame
    checkpoints: dict[str, CheckpointEvaluation]
    paper: PaperReference | None = None
    baseline: str | None = None
    tests: dict[tuple[str, str], CellTest] = field(default_factory=dict)
    untested: dict[str, list[str]] = field(default_factory=dict)

    def significant(self, row: str, column: str) -> bool:
        """Whether the cell carries the mark (False for cells without a test)."""
        test = self.tests.get((row, column))
        return test is not None and test.significant


# --------------------------------------------------------------------------------------------
# reading


def read_summary(path: Path) -> tuple[BenchmarkResult, Provenance]:
    """The accuracy under each evaluation seed and the recorded provenance of one
    ``<benchmark>.json``. A summary without ``per_seed`` (written before seeds were recorded)
    counts as one evaluation of its ``accuracy``.

    ValueError naming the file and the field when one is missing or of the wrong type.

    Example: ``{"task": "care_synth", "n": 12, "accuracy": 0.25, ...}`` →
    ``(BenchmarkResult("care_synth", {0: 0.25}, n=12), Provenance(recorded=False, ...))``.
    """
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"{path}: cannot read the evaluation summary ({error})") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from error
    if not isinstance(summary, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(summary).__name__}")
    task, n = summary.get("task"), summary.get("n")
    if not isinstance(task, str):
        raise ValueError(f"{path}: field 'task' must be the benchmark's name, got {task!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
        raise ValueError(f"{path}: field 'n' must be an item count, got {n!r}")
    accuracy_by_seed = _accuracy_by_seed(summary, path)
    try:
        result = BenchmarkResult(task, accuracy_by_seed, n)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    return result, Provenance.from_summary(summary, path)


def _accuracy_by_seed(summary: Mapping[str, Any], path: Path) -> dict[int, float]:
    per_seed = summary.get("per_seed")
    if per_seed is None:
        accuracy = summary.get("accuracy")
        if isinstance(accuracy, bool) or not isinstance(accuracy, int | float):
            raise ValueError(f"{path}: field 'accuracy' must be a number, got {accuracy!r}")
        return {0: float(accuracy)}
    try:
        return {int(seed): float(entry["accuracy"]) for seed, entry in per_seed.items()}
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{path}: field 'per_seed' must map each seed to {{'accuracy': number}} ({error!r})"
        ) from error


def read_checkpoint(
    run: str, checkpoint: str, folder: Path, tasks: Sequence[str]
) -> CheckpointEvaluation:
    """The ``<task>.json`` of each of `tasks` in `folder`, with intervals (`build_table`)."""
    read = {task: read_summary(folder / f"{task}.json") for task in tasks}
    results = build_table([result for result, _ in read.values()])
    return CheckpointEvaluation(
        run, checkpoint, folder, results, {task: facts for task, (_, facts) in read.items()}
    )


# --------------------------------------------------------------------------------------------
# building


def interval_table(
    eval_frame: pd.DataFrame,
    runs: Mapping[str, Path],
    paper: PaperReference | None = None,
    baseline: str | None = None,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> IntervalTable:
    """The table of `eval_frame` (`analysis_app.data.eval_of_runs` of `runs`, label -> run
    folder), compared with `baseline` when given (`resolve_baseline`).

    Example: two runs with care_synth evaluated at step_3, baseline "sft" → the cell
    ``table.low.loc["care @ step_3", "care_synth"]`` is the Wilson bound and
    ``table.tests["care @ step_3", "care_synth"]`` its McNemar test against ``sft @ step_10``.
    """
    estimate = tables.eval_table(eval_frame, paper)
    low = pd.DataFrame(np.nan, index=estimate.index, columns=estimate.columns)
    high = low.copy()
    checkpoints = {}
    for (run, checkpoint), rows in eval_frame.groupby(["run", "checkpoint"], sort=False):
        label = f"{run} @ {checkpoint}"
        folder = Path(runs[str(run)]) / EVAL_DIR / str(checkpoint)
        evaluation = read_checkpoint(str(run), str(checkpoint), folder, list(rows["task"]))
        checkpoints[label] = evaluation
        for row in evaluation.results.rows:
            _set_bounds(low, high, label, tables.benchmark_column(row.label, paper), row)
        if evaluation.results.macro is not None:
            _set_bounds(low, high, label, tables.MACRO_COLUMN, evaluation.results.macro)
    table = IntervalTable(estimate, low, high, checkpoints, paper)
    if baseline is not None:
        table.baseline = resolve_baseline(baseline, eval_frame)
        _compare_with_baseline(table, resamples)
    return table


def _set_bounds(
    low: pd.DataFrame, high: pd.DataFrame, label: str, column: str, row: TableRow
) -> None:
    if row.interval is not None and not math.isnan(row.interval.low):
        low.loc[label, column] = 100.0 * row.interval.low
        high.loc[label, column] = 100.0 * row.interval.high


def resolve_baseline(baseline: str, eval_frame: pd.DataFrame) -> str:
    """The row label `baseline` names: a row label itself (``"sft @ step_10"``) or a run label,
    which means that run's evaluated checkpoint of the highest step (``step_N``; the first by
    name on a tie, so step_10 before step_10_blank).

    ValueError listing the run and row labels when it names neither.
    """
    labels = [
        f"{run} @ {checkpoint}" for run, checkpoint in eval_frame[["run", "checkpoint"]].values
    ]
    if baseline in labels:
        return baseline
    rows = eval_frame[eval_frame["run"] == baseline]
    if len(rows):
        steps = rows["checkpoint_step"]
        if steps.notna().any():
            rows = rows[steps == steps.max()]
        return f"{baseline} @ {sorted(rows['checkpoint'])[0]}"
    runs = list(dict.fromkeys(eval_frame["run"]))
    raise ValueError(
        f"baseline {baseline!r} is neither an evaluated run ({runs}) nor a row "
        f"({list(dict.fromkeys(labels))})"
    )


def _compare_with_baseline(table: IntervalTable, resamples: int) -> None:
    """Fill `table.tests` and `table.untested` for every run row but the baseline's."""
    reference = table.checkpoints[table.baseline]  # type: ignore[index]
    reference_items = compare.load_items(reference.folder)
    if not reference_items:
        raise ValueError(
            f"baseline {table.baseline}: {reference.folder} holds no <benchmark>_samples.jsonl "
            "to pair items with"
        )
    for label, evaluation in table.checkpoints.items():
        if label == table.baseline:
            continue
        items = compare.load_items(evaluation.folder)
        if not items:
            table.untested[label] = [f"no <benchmark>_samples.jsonl in {evaluation.folder}"]
            continue
        kept, reasons = _comparable(reference, reference_items, evaluation, items)
        tests: dict[str, CellTest] = {}
        if kept:
            try:
                tests = row_tests(reference_items, kept, reference, evaluation, resamples)
            except compare.CompareError as error:
                reasons.append(str(error))
        for task, test in tests.items():
            column = (
                task if task == tables.MACRO_COLUMN else tables.benchmark_column(task, table.paper)
            )
            table.tests[label, column] = test
        if reasons:
            table.untested[label] = reasons


def _comparable(
    reference: CheckpointEvaluation,
    reference_items: dict[str, list[compare.Item]],
    evaluation: CheckpointEvaluation,
    items: dict[str, list[compare.Item]],
) -> tuple[dict[str, list[compare.Item]], list[str]]:
    """`items` without the benchmarks the baseline has no samples of and those whose recorded
    data digest differs from the baseline's (same doc ids, other questions), and a reason for
    each left out."""
    kept, reasons = {}, []
    for task, task_items in items.items():
        ours = evaluation.provenance.get(task, Provenance(recorded=False)).data_sha256
        theirs = reference.provenance.get(task, Provenance(recorded=False)).data_sha256
        if task not in reference_items:
            reasons.append(f"{task}: the baseline has no samples of it")
        elif ours is not None and theirs is not None and ours != theirs:
            reasons.append(
                f"{task}: evaluated on other data than the baseline (sha256 "
                f"{ours[:HASH_PREFIX]} vs {theirs[:HASH_PREFIX]})"
            )
        else:
            kept[task] = task_items
    return kept, reasons


def row_tests(
    reference_items: dict[str, list[compare.Item]],
    items: dict[str, list[compare.Item]],
    reference: CheckpointEvaluation,
    evaluation: CheckpointEvaluation,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, CellTest]:
    """Each shared benchmark's `CellTest` (by task) and the macro average's (key "macro").

    The macro is tested only when the row's and the baseline's macro averages are over the
    same benchmarks and all of them were compared; its test is `compare.macro_comparison`
    over exactly those benchmarks, and a macro of one benchmark takes that
    benchmark's test. CompareError when the items do not pair.
    """
    comparisons, _ = compare.compare_items(reference_items, items, resamples=resamples)
    tests = {
        row.benchmark: CellTest(
            row.difference, row.p_value, row.p_holm, row.p_holm is not None and row.p_holm < ALPHA
        )
        for row in comparisons[:-1]
    }
    members = _macro_members(evaluation)
    if len(members) == 1 and members == _macro_members(reference) and members[0] in tests:
        # A macro of one benchmark is that benchmark: one test, one verdict for both cells.
        tests[tables.MACRO_COLUMN] = tests[members[0]]
    elif members and members == _macro_members(reference) and set(members) <= set(tests):
        macro = comparisons[-1]
        if set(members) != set(tests):
            # The macro over the members alone, from the same pairs (no benchmark is re-tested).
            matched = {
                task: compare.paired(task, reference_items[task], items[task]) for task in members
            }
            macro = compare.macro_comparison(matched, resamples=resamples)
        tests[tables.MACRO_COLUMN] = CellTest(
            macro.difference, macro.p_value, None, macro.difference.excludes_zero()
        )
    return tests


def _macro_members(evaluation: CheckpointEvaluation) -> tuple[str, ...]:
    return tuple(sorted(macro_tasks(row.label for row in evaluation.results.rows)))


# --------------------------------------------------------------------------------------------
# footer


def interval_note() -> str:
    """What the bracketed intervals are."""
    return (
        "Cells: accuracy (%) [95 % interval]. Interval: Wilson for one greedy evaluation, "
        "Student-t over evaluation seeds for several; macro average: normal interval of a "
        "mean of independent proportions (t over seeds for several; a macro of one benchmark "
        "has that benchmark's)."
    )


def significance_note(table: IntervalTable) -> str:
    """What a mark means (the renderers put the mark in front), or that there are none."""
    if table.baseline is None:
        return "No baseline chosen: no significance marks."
    return (
        f"differs from the baseline {table.baseline}: exact McNemar p-value on the items "
        f"paired by (task, doc_id), Holm-corrected across the benchmarks each row shares with the "
        f"baseline, below {ALPHA:.2f}; macro average: paired-bootstrap 95 % interval of the "
        "difference excludes 0 (a macro of one benchmark: that benchmark's test)."
    )


def untested_notes(table: IntervalTable) -> list[str]:
    """One line per row that was not (fully) compared with the baseline, saying why."""
    return [f"Not compared: {row}: {'; '.join(reasons)}" for row, reasons in table.untested.items()]


def provenance_lines(table: IntervalTable) -> list[str]:
    """One line per fact of `evaluation.provenance.FACTS`, then the data digest per benchmark.

    A fact with one value over every evaluated cell is given once; otherwise each value is
    followed by the rows that have it, e.g. ``"prompt: care-prompt-v1 (care @ step_3);
    not recorded (grpo @ step_3)"``.
    """
    lines = []
    for fact in FACTS:
        values = [
            (label, facts.facts()[fact])
            for label, evaluation in table.checkpoints.items()
            for facts in evaluation.provenance.values()
        ]
        lines.append(f"{fact}: {_grouped(values)}")
    digests = []
    for task in _tasks_in_order(table):
        values = [
            (label, evaluation.provenance[task].data_text())
            for label, evaluation in table.checkpoints.items()
            if task in evaluation.provenance
        ]
        digests.append(f"{tables.benchmark_column(task, table.paper)} {_grouped(values)}")
    digest_text = ", ".join(digests) or NOT_RECORDED
    lines.append(f"data sha256 (first {HASH_PREFIX} hex digits): {digest_text}")
    return lines


def _tasks_in_order(table: IntervalTable) -> list[str]:
    tasks = {
        task: tables.benchmark_column(task, table.paper)
        for evaluation in table.checkpoints.values()
        for task in evaluation.provenance
    }
    order = list(table.estimate.columns)
    return sorted(tasks, key=lambda task: order.index(tasks[task]))


def _grouped(values: Sequence[tuple[str, str]]) -> str:
    """The distinct values of (row, value) pairs, each followed by its rows when there is more
    than one; "not recorded" for no pairs."""
    rows_of: dict[str, list[str]] = {}
    for label, value in values:
        rows = rows_of.setdefault(value, [])
        if label not in rows:
            rows.append(label)
    if len(rows_of) <= 1:
        return next(iter(rows_of), NOT_RECORDED)
    return "; ".join(f"{value} ({', '.join(rows)})" for value, rows in rows_of.items())


# --------------------------------------------------------------------------------------------
# rendering


def _cell_parts(table: IntervalTable, row: str, column: str) -> tuple[str, str]:
    """(estimate, "[low, high]") as text, the estimate to `ESTIMATE_DIGITS` decimals and the
    bounds to `INTERVAL_DIGITS` (as ``care eval``'s table); empty for a missing value."""
    value = table.estimate.at[row, column]
    if pd.isna(value):
        return "", ""
    if column == tables.MACRO_TASKS_COLUMN:
        return str(int(value)), ""
    low, high = table.low.at[row, column], table.high.at[row, column]
    bounds = "" if pd.isna(low) else f"[{low:.{INTERVAL_DIGITS}f}, {high:.{INTERVAL_DIGITS}f}]"
    return f"{value:.{ESTIMATE_DIGITS}f}", bounds


def to_latex(table: IntervalTable, *, caption: str | None = None, label: str | None = None) -> str:
    """A booktabs table: ``\\textbf{best} {\\scriptsize [low, high]}$^{\\dagger}$`` cells (best
    estimate of each column bold, as `tables.eval_best_cells`), and under the tabular a
    footnote block: the interval note, the mark's meaning, rows not compared, provenance."""
    best = tables.eval_best_cells(table.estimate)
    frame = table.estimate
    header = [tables.latex_escape(frame.index.name or "")]
    header += [tables.latex_escape(column) for column in frame.columns]
    alignment = "l" + "r" * len(frame.columns)
    lines = tables.latex_opening(header, alignment, caption=caption, label=label)
    first_other = next((row for row in frame.index if row not in table.checkpoints), None)
    for row in frame.index:
        if row == first_other and row != frame.index[0]:
            lines.append(r"\midrule")  # between the evaluated rows and the paper's
        cells = [tables.latex_escape(row)]
        for column in frame.columns:
            value, bounds = _cell_parts(table, row, column)
            text = rf"\textbf{{{value}}}" if value and best.at[row, column] else value
            if bounds:
                text += rf" {{\scriptsize {bounds}}}"
            cells.append(text + (MARK_LATEX if table.significant(row, column) else ""))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip", r"{\footnotesize\raggedright"]
    lines += [tables.latex_escape(interval_note()) + r"\par"]
    mark = MARK_LATEX + " " if table.baseline is not None else ""
    lines += [mark + tables.latex_escape(significance_note(table)) + r"\par"]
    lines += [tables.latex_escape(note) + r"\par" for note in untested_notes(table)]
    provenance = "; ".join(provenance_lines(table))
    lines += [r"Provenance: " + tables.latex_escape(provenance) + r".\par", "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_markdown(table: IntervalTable) -> str:
    """A Markdown table of ``**best** [low, high] †`` cells, then the same notes as the LaTeX
    footer and the provenance as a list."""
    best = tables.eval_best_cells(table.estimate)
    frame = table.estimate
    rows = []
    for row in frame.index:
        cells = [str(row)]
        for column in frame.columns:
            value, bounds = _cell_parts(table, row, column)
            text = f"**{value}**" if value and best.at[row, column] else value
            text = f"{text} {bounds}" if bounds else text
            cells.append(text + (f" {MARK_TEXT}" if table.significant(row, column) else ""))
        rows.append(cells)
    header = [str(frame.index.name or ""), *(str(column) for column in frame.columns)]
    lines = [markdown_table(header, rows, "l" + "r" * len(frame.columns)).rstrip("\n"), ""]
    mark = f"{MARK_TEXT} " if table.baseline is not None else ""
    lines += [interval_note(), "", mark + significance_note(table), ""]
    lines += [line for note in untested_notes(table) for line in (note, "")]
    lines += ["Provenance:", "", *(f"- {line}" for line in provenance_lines(table))]
    return "\n".join(lines) + "\n"


def to_csv(table: IntervalTable) -> str:
    """One line per non-empty cell (`CSV_COLUMNS`): estimate, low, high, difference and its
    bounds in percent (points), p-values, significant (1/0; empty without a test), and the
    cell's recorded provenance; an empty field is a value not recorded or not applicable."""
    lines = []
    for row in table.estimate.index:
        for column in table.estimate.columns:
            value = table.estimate.at[row, column]
            if column == tables.MACRO_TASKS_COLUMN or pd.isna(value):
                continue
            lines.append(_csv_line(table, row, column, float(value)))
    return csv_table(list(CSV_COLUMNS), lines)


def _csv_line(table: IntervalTable, row: str, column: str, value: float) -> list[str]:
    evaluation = table.checkpoints.get(row)
    fields: dict[str, Any] = dict.fromkeys(CSV_COLUMNS)
    fields.update(row=row, benchmark=column, estimate=value)
    fields.update(low=table.low.at[row, column], high=table.high.at[row, column])
    if evaluation is not None:
        result = _result_row(evaluation, column, table.paper)
        fields.update(run=evaluation.run, checkpoint=evaluation.checkpoint, baseline=table.baseline)
        fields.update(n=result.n, seeds=" ".join(str(seed) for seed in result.seeds))
        tasks = _row_tasks(evaluation, column, table.paper)
        fields["interval"] = _interval_method(result, averaged=len(tasks) > 1)
        fields["tasks"] = " ".join(tasks)
        if column != tables.MACRO_COLUMN:
            fields.update(_provenance_fields(evaluation.provenance[result.label]))
    test = table.tests.get((row, column))
    if test is not None:
        fields.update(
            difference=100.0 * test.difference.estimate,
            difference_low=100.0 * test.difference.low,
            difference_high=100.0 * test.difference.high,
            p_value=test.p_value,
            p_holm=test.p_holm,
            significant=int(test.significant),
        )
    return [_csv_text(fields[name]) for name in CSV_COLUMNS]


def _result_row(
    evaluation: CheckpointEvaluation, column: str, paper: PaperReference | None
) -> TableRow:
    if column == tables.MACRO_COLUMN:
        return evaluation.results.macro  # type: ignore[return-value]
    return next(
        row
        for row in evaluation.results.rows
        if tables.benchmark_column(row.label, paper) == column
    )


def _row_tasks(
    evaluation: CheckpointEvaluation, column: str, paper: PaperReference | None
) -> list[str]:
    tasks = [row.label for row in evaluation.results.rows]
    if column == tables.MACRO_COLUMN:
        return list(macro_tasks(tasks))
    return [task for task in tasks if tables.benchmark_column(task, paper) == column]


def _interval_method(row: TableRow, averaged: bool) -> str:
    """How `build_table` got the row's interval; `averaged`: a macro over several benchmarks."""
    if row.interval is None:
        return ""
    if len(row.seeds) > 1:
        return "t over seeds"
    return "normal (mean of proportions)" if averaged else "wilson"


def _provenance_fields(facts: Provenance) -> dict[str, Any]:
    return {
        "suite_version": facts.suite_version,
        "suite_commit": facts.suite_commit,
        "suite_commit_dirty": None
        if facts.suite_commit_dirty is None
        else int(facts.suite_commit_dirty),
        "lmms_eval_version": facts.lmms_eval_version,
        "prompt_version": facts.prompt_version,
        "max_new_tokens": facts.max_new_tokens,
        "verify_time_limit_s": facts.verify_time_limit_s,
        "data_sha256": facts.data_sha256,
    }


def _csv_text(value: Any) -> str:
    """Floats at 6 significant digits; None and NaN empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
