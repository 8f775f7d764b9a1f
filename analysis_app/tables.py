"""Table builders (data frame in, data frame out) and their LaTeX / Markdown / CSV renderings.

The pages show these frames; `care export` writes the same frames, LaTeX with booktabs rules and
the best value of each column in bold (`BEST_DIRECTION` says whether higher or lower is better;
columns without a direction, like a failure share, are never bolded).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from analysis_app.data import PaperReference, RunSummary, macro_of
from analysis_app.figures import SIGNAL_METRICS
from care.metrics.smoothness import debiased_ema, smoothness_summary
from care.runlog import GroupRecord, SampleRecord
from care.stats import mean_interval
from care.tables import csv_table, markdown_table
from evaluation.compare import OUTCOMES, BenchmarkComparison, Item, outcome

Direction = Literal["max", "min"]

SMOOTHNESS_COLUMNS = (
    "smooth/acc_diff_std",
    "smooth/reward_diff_std",
    "smooth/acc_diff_iqr_detrended",
    "smooth/reward_diff_iqr_detrended",
    "smooth/acc_max_drawdown",
    "smooth/grad_norm_spikes",
    "smooth/kl_spikes",
)

SIGNAL_SUMMARY_METRICS = (*SIGNAL_METRICS, "acc/mean")

BEST_DIRECTION: dict[str, Direction] = {
    "acc/mean": "max",
    "reward/mean": "max",
    "final acc/mean": "max",
    "macro": "max",
    **{name: "min" for name in SMOOTHNESS_COLUMNS},
}
"""Which way is better for the columns that have a better; evaluation benchmarks are "max"."""

MACRO_COLUMN = "macro"
MACRO_TASKS_COLUMN = "macro tasks"
"""How many benchmarks a row's macro averages: a macro over 2 tasks is not the paper's over 6."""


# --------------------------------------------------------------------------------------------
# Runs page


def _utc_text(timestamp: float) -> str:
    """ "2026-01-31 14:05" for a Unix time; "" for NaN (a run with no step yet)."""
    if not math.isfinite(timestamp):
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M")


def runs_table(summaries: Sequence[RunSummary]) -> pd.DataFrame:
    """One row per run: estimator, model, status, steps, last step, last training accuracy and
    the latest checkpoint's evaluation macro average (both in %).

    Example: a finished CARE run with acc/mean 0.61 at its last step ->
    ``{"run": "a", "estimator": "care", ..., "last train acc (%)": 61.0}``.
    """
    rows = [
        {
            "run": summary.name,
            "estimator": summary.estimator,
            "model": summary.model,
            "status": summary.status,
            "steps": summary.steps,
            "last step": summary.last_step,
            "last train acc (%)": 100.0 * summary.last_accuracy,
            "eval macro (%)": 100.0 * summary.eval_macro,
            "last logged (UTC)": _utc_text(summary.last_log_time),
            "warnings": len(summary.warnings),
        }
        for summary in summaries
    ]
    columns = [
        "run",
        "estimator",
        "model",
        "status",
        "steps",
        "last step",
        "last train acc (%)",
        "eval macro (%)",
        "last logged (UTC)",
        "warnings",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    frame["last step"] = frame["last step"].astype("Int64")
    return frame


# --------------------------------------------------------------------------------------------
# Training signal and smoothness


def signal_summary_table(steps: pd.DataFrame) -> pd.DataFrame:
    """Mean over steps of every learning-signal metric, one row per run (index: run).

    NaN steps (e.g. the variance ratio where it is undefined) are left out of the mean; a metric
    the run never logged is NaN.
    """
    runs = list(dict.fromkeys(steps["run"].tolist())) if "run" in steps.columns else []
    rows = {}
    for run in runs:
        run_rows = steps[steps["run"] == run]
        row = {}
        for metric in SIGNAL_SUMMARY_METRICS:
            if metric in run_rows.columns:
                row[metric] = float(pd.to_numeric(run_rows[metric], errors="coerce").mean())
            else:
                row[metric] = math.nan
        rows[run] = row
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(SIGNAL_SUMMARY_METRICS))
    frame.index.name = "run"
    return frame


def _records_without_run(run_rows: pd.DataFrame) -> list[dict[str, Any]]:
    columns = [name for name in run_rows.columns if name != "run"]
    subset = run_rows[columns]
    # smoothness_summary reads missing steps as None; NaN must not reach it as a float.
    return [
        {
            key: (None if isinstance(value, float) and math.isnan(value) else value)
            for key, value in record.items()
        }
        for record in subset.to_dict("records")
    ]


def smoothness_table(steps: pd.DataFrame, drawdown_smoothing: float = 0.6) -> pd.DataFrame:
    """`care.metrics.smoothness.smoothness_summary` of every run, one row per run (index: run).

    Only the four series it reads are passed, so a 20,000-step run costs milliseconds.
    """
    runs = list(dict.fromkeys(steps["run"].tolist())) if "run" in steps.columns else []
    used = ["acc/mean", "reward/mean", "grad_norm", "loss/kl"]
    rows = {}
    for run in runs:
        run_rows = steps.loc[steps["run"] == run, [c for c in ["run", *used] if c in steps.columns]]
        rows[run] = smoothness_summary(
            _records_without_run(run_rows), drawdown_smoothing=drawdown_smoothing
        )
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(SMOOTHNESS_COLUMNS))
    frame.index.name = "run"
    return frame


def seed_group_smoothness_table(
    table: pd.DataFrame, seed_groups: Mapping[str, Sequence[str]]
) -> pd.DataFrame:
    """`smoothness_table` with two rows more per seed group (`seed_groups`: name -> runs):
    ``"<name>: mean"`` and ``"<name>: ± 95 %"``, per metric the mean over the group's runs and
    the half-width of its Student-t interval (`care.stats.mean_interval`).

    A metric counts only the runs where it is defined; over one run the half-width is NaN,
    over none both are.

    Example: acc_diff_std 0.010 and 0.014 for two seeds -> mean 0.012 and ± 0.0254
    (t₀.₉₇₅,₁ = 12.706 times the standard error 0.002).
    """
    rows = []
    for name, runs in seed_groups.items():
        members = table.loc[[run for run in runs if run in table.index]]
        means, halves = {}, {}
        for column in table.columns:
            values = pd.to_numeric(members[column], errors="coerce").dropna().to_numpy()
            interval = mean_interval(values) if values.size else None
            means[column] = interval.estimate if interval else math.nan
            halves[column] = interval.high - interval.estimate if interval else math.nan
        rows.append(pd.Series(means, name=f"{name}: mean"))
        rows.append(pd.Series(halves, name=f"{name}: ± 95 %"))
    grouped = pd.concat([table, pd.DataFrame(rows, columns=table.columns)])
    grouped.index.name = table.index.name
    return grouped


def compare_table(
    steps: pd.DataFrame,
    metrics: Sequence[str],
    *,
    smoothing: float = 0.6,
    baseline: str | None = None,
    tail_fraction: float = 0.1,
) -> pd.DataFrame:
    """Per metric and run: mean over all steps, mean over the last `tail_fraction` of steps,
    the final EMA value, and the difference of that final value to the `baseline` run.

    Rows are (metric, run) in the order given; the baseline defaults to the first run.

    Example: acc/mean final EMA 0.55 (baseline "grpo") and 0.60 ("care") -> Δ 0 and +0.05.
    """
    if not 0.0 < tail_fraction <= 1.0:
        raise ValueError(f"tail_fraction must be in (0, 1], got {tail_fraction}")
    runs = list(dict.fromkeys(steps["run"].tolist())) if "run" in steps.columns else []
    if baseline is None and runs:
        baseline = runs[0]
    if baseline is not None and baseline not in runs:
        raise ValueError(f"baseline {baseline!r} is not one of the runs {runs}")
    delta_column = f"Δ final vs {baseline}"
    rows = []
    for metric in metrics:
        finals: dict[str, float] = {}
        per_run = []
        for run in runs:
            run_rows = steps[steps["run"] == run]
            if metric not in run_rows.columns:
                values = np.array([], dtype=np.float64)
            else:
                values = pd.to_numeric(run_rows[metric], errors="coerce").to_numpy(np.float64)
            finite = values[np.isfinite(values)]
            tail = (
                finite[-max(1, math.ceil(tail_fraction * finite.size)) :] if finite.size else finite
            )
            smoothed = debiased_ema(values, smoothing) if values.size else values
            smoothed = smoothed[np.isfinite(smoothed)]
            final = float(smoothed[-1]) if smoothed.size else math.nan
            finals[run] = final
            per_run.append(
                {
                    "metric": metric,
                    "run": run,
                    "mean": float(finite.mean()) if finite.size else math.nan,
                    f"mean last {round(100 * tail_fraction)}%": float(tail.mean())
                    if tail.size
                    else math.nan,
                    "final (EMA)": final,
                }
            )
        for row in per_run:
            row[delta_column] = row["final (EMA)"] - finals.get(baseline, math.nan)
        rows.extend(per_run)
    columns = [
        "metric",
        "run",
        "mean",
        f"mean last {round(100 * tail_fraction)}%",
        "final (EMA)",
        delta_column,
    ]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------
# Compare checkpoints

P_VALUE_COLUMNS = ("McNemar p", "Holm p")


def checkpoint_comparison_table(rows: Sequence[BenchmarkComparison]) -> pd.DataFrame:
    """`evaluation.compare`'s rows as a frame (index: benchmark, the macro row last): items,
    A's and B's accuracy and B − A in percent points with its paired-bootstrap 95 % interval,
    the exact McNemar p-value, the Holm-corrected one (NaN in the macro row, which is not one
    of the benchmarks' family of tests) and the counts of each outcome.

    Example: care_mmmu 50 % → 75 % on 40 items, 12 fixed, 2 broken ->
    ``table.loc["care_mmmu", "B − A"] == 25.0`` and ``table.loc["care_mmmu", "fixed"] == 12``.
    """
    records = [
        {
            "benchmark": row.benchmark,
            "items": row.n,
            "A (%)": 100.0 * row.accuracy_a,
            "B (%)": 100.0 * row.accuracy_b,
            "B − A": 100.0 * row.difference.estimate,
            "95 % low": 100.0 * row.difference.low,
            "95 % high": 100.0 * row.difference.high,
            "McNemar p": row.p_value,
            "Holm p": math.nan if row.p_holm is None else row.p_holm,
            **row.counts,
        }
        for row in rows
    ]
    columns = ["benchmark", "items", "A (%)", "B (%)", "B − A", "95 % low", "95 % high",
               *P_VALUE_COLUMNS, *OUTCOMES]  # fmt: skip
    return pd.DataFrame(records, columns=columns).set_index("benchmark")


def comparison_items_table(pairs: Sequence[tuple[Item, Item]]) -> pd.DataFrame:
    """One row per item pair, in the order of `pairs` (index: the pair's position): benchmark,
    task, doc_id, outcome (fixed, broken, both right, both wrong), the gold answer, A's and B's
    extracted answers and error types (`evaluation.taxonomy`). An answer not found is blank.

    Example: A wrong with "C", B right with "B" (gold "B") -> outcome "fixed", A error
    "wrong option", B error "correct".
    """
    records = [
        {
            "benchmark": x.benchmark,
            "task": x.task,
            "doc_id": str(x.doc_id),
            "outcome": outcome(x.correct, y.correct),
            "gold": _label(x.answer),
            "A answer": _label(x.extracted),
            "B answer": _label(y.extracted),
            "A error": x.error,
            "B error": y.error,
        }
        for x, y in pairs
    ]
    columns = ["benchmark", "task", "doc_id", "outcome", "gold", "A answer", "B answer",
               "A error", "B error"]  # fmt: skip
    return pd.DataFrame(records, columns=columns)


# --------------------------------------------------------------------------------------------
# Evaluation


def benchmark_column(task: str, paper: PaperReference | None) -> str:
    """The table column of `task`: the paper's name for its benchmarks (care_mathvista ->
    "MathVista"), the task name otherwise."""
    if paper is None:
        return task
    key = paper.key_of_task().get(task)
    return paper.benchmarks[key]["name"] if key is not None else task


def checkpoint_macros(eval_frame: pd.DataFrame) -> pd.DataFrame:
    """The macro average (`analysis_app.data.macro_of`) per (run, checkpoint): columns run,
    checkpoint, checkpoint_step, macro (fraction) and tasks (how many benchmarks it covers).

    Example: run "care" with care_mathvista 0.6 and care_mmmu 0.7 at step_10 ->
    one row ``("care", "step_10", 10.0, 0.65, 2)``.
    """
    rows = []
    for run, run_rows in eval_frame.groupby("run", sort=False):
        steps = run_rows.drop_duplicates("checkpoint").set_index("checkpoint")["checkpoint_step"]
        for checkpoint, macro in macro_of(run_rows).items():
            rows.append(
                {
                    "run": run,
                    "checkpoint": checkpoint,
                    "checkpoint_step": steps[checkpoint],
                    "macro": macro.value,
                    "tasks": len(macro.tasks),
                }
            )
    return pd.DataFrame(rows, columns=["run", "checkpoint", "checkpoint_step", "macro", "tasks"])


def eval_table(
    eval_frame: pd.DataFrame,
    paper: PaperReference | None = None,
    *,
    include_paper: bool = True,
) -> pd.DataFrame:
    """Accuracy (%) per benchmark and the macro average, one row per run checkpoint, then the
    paper's rows (index "paper: <model>").

    Benchmarks the paper reports are named as in the paper and come first in its order; other
    tasks (e.g. care_synth) follow. The run rows' macro is `evaluation.benchmarks.macro_average`:
    over the paper's benchmarks when the checkpoint has any, else over all its tasks.

    Example: run "care" at step_10 with care_mathvista 0.70 ->
    ``table.loc["care @ step_10", "MathVista"] == 70.0``.
    """
    paper_columns = [info["name"] for info in paper.benchmarks.values()] if paper else []
    run_rows: dict[str, dict[str, float]] = {}
    extra_columns: list[str] = []
    macros = checkpoint_macros(eval_frame) if len(eval_frame) else None
    for record in eval_frame.itertuples(index=False):
        label = f"{record.run} @ {record.checkpoint}"
        column = benchmark_column(record.task, paper)
        if column not in paper_columns and column not in extra_columns:
            extra_columns.append(column)
        run_rows.setdefault(label, {})[column] = 100.0 * float(record.accuracy)
    if macros is not None:
        for record in macros.itertuples(index=False):
            row = run_rows[f"{record.run} @ {record.checkpoint}"]
            row[MACRO_COLUMN] = 100.0 * record.macro
            row[MACRO_TASKS_COLUMN] = float(record.tasks)
    columns = [*paper_columns, *extra_columns, MACRO_COLUMN, MACRO_TASKS_COLUMN]
    rows = dict(run_rows)
    if include_paper and paper is not None:
        for record in paper.rows.to_dict("records"):
            scores = {info["name"]: record[key] for key, info in paper.benchmarks.items()}
            reported = sum(1 for value in scores.values() if not math.isnan(value))
            rows[f"paper: {record['model']}"] = scores | {
                MACRO_COLUMN: record["macro"],
                MACRO_TASKS_COLUMN: float(reported)
                if not math.isnan(record["macro"])
                else math.nan,
            }
    frame = (
        pd.DataFrame.from_dict(rows, orient="index", columns=columns)
        if rows
        else pd.DataFrame(columns=columns)
    )
    frame = frame.astype(np.float64)
    frame[MACRO_TASKS_COLUMN] = frame[MACRO_TASKS_COLUMN].round().astype("Int64")
    frame.index.name = "row"
    # A paper benchmark nobody evaluated is still shown when paper rows are; without them it is noise.
    if not (include_paper and paper is not None):
        frame = frame.dropna(axis=1, how="all")
    return frame


def default_paper_row(paper: PaperReference, estimator: str) -> str:
    """The paper row a run is compared with: the first row trained with the same method
    (care -> "Qwen2.5-VL-7B-Instruct + CARE"), else the first base model row."""
    rows = paper.rows
    same = rows[rows["method"] == estimator]
    chosen = same.iloc[0] if len(same) else rows[rows["method"] == "none"].iloc[0]
    return f"paper: {chosen['model']}"


def eval_delta_table(table: pd.DataFrame, reference_row: str) -> pd.DataFrame:
    """Each run row of `eval_table` minus `reference_row`, in percentage points.

    A benchmark column is kept where both sides have a value. The macro difference is given only
    for a run row that has every benchmark the reference row has: a macro over two tasks minus a
    macro over six is no comparison. Columns that are NaN in every row are dropped.

    Raises:
        ValueError: `reference_row` is not a row of `table`.

    Example: run 72.0 on MathVista, reference 74.7 -> Δ MathVista = -2.7, no macro Δ.
    """
    if reference_row not in table.index:
        raise ValueError(f"reference_row {reference_row!r} is not a row of the table")
    reference = table.loc[reference_row]
    run_rows = table[~table.index.astype(str).str.startswith("paper: ")]
    delta = run_rows - reference
    delta = delta.drop(columns=[MACRO_TASKS_COLUMN], errors="ignore")
    if MACRO_COLUMN in delta.columns:
        needed = [
            c
            for c in table.columns
            if c not in (MACRO_COLUMN, MACRO_TASKS_COLUMN) and pd.notna(reference[c])
        ]
        complete = run_rows[needed].notna().all(axis=1) if needed else False
        delta[MACRO_COLUMN] = delta[MACRO_COLUMN].where(complete)
    return delta.dropna(axis=1, how="all")


def eval_best(table: pd.DataFrame) -> dict[str, Direction]:
    """Every accuracy column of an evaluation table: higher is better."""
    return {str(c): "max" for c in table.columns if c != MACRO_TASKS_COLUMN}


def eval_best_cells(table: pd.DataFrame) -> pd.DataFrame:
    """`best_cells` of an evaluation table, except that the macro column's best is taken only
    among the rows whose macro covers the most benchmarks (a 2-task macro of 69 does not beat
    the paper's 6-task 62.15)."""
    marks = best_cells(table, eval_best(table))
    if MACRO_COLUMN in table.columns and MACRO_TASKS_COLUMN in table.columns:
        counts = pd.to_numeric(table[MACRO_TASKS_COLUMN], errors="coerce")
        comparable = counts == counts.max()
        macros = pd.to_numeric(table[MACRO_COLUMN], errors="coerce").where(comparable)
        marks[MACRO_COLUMN] = comparable & np.isclose(macros, macros.max(), rtol=0, atol=1e-12)
    return marks


# --------------------------------------------------------------------------------------------
# Hard negatives


def rollout_roles(group: GroupRecord) -> list[str]:
    """The role of each rollout of a group record, in rollout order.

    "anchor", "pseudo-anchor", "hard negative 1" (picked first = nearest), ..., then "correct" or
    "wrong" for rollouts outside the anchored subgroup.

    The failure an RGR repair replaced gets " (replaced by RGR repair)" appended. The record's
    indices were checked against G when it was written and read (`care.runlog.GroupRecord`).

    Example: anchor 2, hard negatives [0, 3], correct [F, F, T, F], RGR off ->
    ``["hard negative 1", "wrong", "anchor", "hard negative 2"]``.
    """
    roles = ["correct" if flag else "wrong" for flag in group.correct]
    for rank, negative in enumerate(group.hard_negatives, start=1):
        roles[negative.index] = f"hard negative {rank}"
    if group.anchor_index is not None:
        roles[group.anchor_index] = "anchor"
    if group.pseudo_anchor is not None:
        roles[group.pseudo_anchor] = "pseudo-anchor"
    repair = group.rgr
    if repair is not None and repair.triggered and repair.source_index is not None:
        # Its advantage moved to the repair sample, which is why it shows 0 here.
        roles[repair.source_index] += " (replaced by RGR repair)"
    return roles


def group_rollouts_table(group: GroupRecord, samples: Sequence[SampleRecord] = ()) -> pd.DataFrame:
    """One row per rollout of a group: role, correct, reward, advantage, cosine distance to the
    (pseudo-)anchor (hard negatives only) and the response text when samples were logged.

    `samples` are the step's sample records; those of other groups and RGR repairs are ignored
    here.
    """
    roles = rollout_roles(group)
    distances = {negative.index: negative.distance for negative in group.hard_negatives}
    texts = {
        sample.index: sample.response
        for sample in samples
        if sample.group_id == group.group_id and not sample.is_repair
    }
    rows = [
        {
            "rollout": index,
            "role": roles[index],
            "correct": group.correct[index],
            "reward": group.rewards[index],
            "advantage": group.advantages[index],
            "distance": distances.get(index, math.nan),
            "response": texts.get(index, ""),
        }
        for index in range(group.G)
    ]
    frame = pd.DataFrame(
        rows, columns=["rollout", "role", "correct", "reward", "advantage", "distance", "response"]
    )
    # None (a NaN the trainer logged as null) becomes NaN; the columns stay numeric when empty.
    for name in ("reward", "advantage", "distance"):
        frame[name] = pd.to_numeric(frame[name], errors="raise").astype(float)
    return frame


def step_groups_table(groups: Sequence[GroupRecord]) -> pd.DataFrame:
    """One row per group of a step: prompt, G, correct count, K', rescue and RGR outcome.

    A group whose record lists them in ``not_computed`` (an imported run) says "not computed"
    for K' and the rescue columns instead of 0 and "no".
    """
    rows = []
    for group in groups:
        repair = group.rgr
        if repair is None:
            rgr = "off"
        elif not repair.triggered:
            rgr = "not triggered"
        else:
            rgr = "passed" if repair.passed else "failed"
        missing = set(group.not_computed)
        rescue_unknown = "rescue" in missing
        rows.append(
            {
                "group": group.group_id,
                "prompt": str(group.prompt_id),
                "G": group.G,
                "correct": group.n_correct,
                "K'": "not computed" if "hard_negatives" in missing else group.k_prime,
                "rescued": "not computed" if rescue_unknown else group.rescued,
                "rescue impossible": "not computed" if rescue_unknown else group.rescue_impossible,
                "RGR": "not computed" if missing and repair is None else rgr,
            }
        )
    return pd.DataFrame(
        rows,
        columns=["group", "prompt", "G", "correct", "K'", "rescued", "rescue impossible", "RGR"],
    )


# --------------------------------------------------------------------------------------------
# renderings


def best_cells(frame: pd.DataFrame, best: Mapping[str, Direction]) -> pd.DataFrame:
    """Boolean frame: True where a cell holds its column's best value (ties all True).

    Columns missing from `best` (and all-NaN columns) have no best.

    Example: column "acc/mean" = [0.5, 0.7] with best max -> [False, True].
    """
    marks = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    for column in frame.columns:
        direction = best.get(str(column))
        if direction is None:
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.notna().sum() == 0:
            continue
        target = values.max() if direction == "max" else values.min()
        marks[column] = np.isclose(values.to_numpy(np.float64), target, rtol=0, atol=1e-12)
    return marks


def _formatted(frame: pd.DataFrame, digits: int, missing: str) -> pd.DataFrame:
    def cell(value: Any) -> str:
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return missing
        if isinstance(value, bool | np.bool_):
            return "yes" if value else "no"
        if isinstance(value, float | np.floating):
            return f"{value:.{digits}f}"
        return str(value)

    return frame.map(cell)


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # Without T1 font encoding LaTeX's text fonts print < and > as inverted ! and ?.
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped.

    Example: ``latex_escape("acc_mean 50%")`` -> ``"acc\\_mean 50\\%"``;
    ``latex_escape("p < 0.05")`` -> ``"p \\textless{} 0.05"``.
    """
    return "".join(_LATEX_SPECIALS.get(character, character) for character in str(text))


def latex_opening(
    header: Sequence[str],
    alignment: str,
    *,
    caption: str | None = None,
    label: str | None = None,
    in_float: bool = True,
) -> list[str]:
    """The lines a booktabs table starts with: with `in_float`, ``\\begin{table}[t]``,
    ``\\centering``, the caption (escaped) and label when given; then the tabular of
    `alignment`, ``\\toprule``, the `header` cells (already LaTeX) and ``\\midrule``."""
    lines = []
    if in_float:
        lines += [r"\begin{table}[t]", r"\centering"]
        if caption is not None:
            lines.append(rf"\caption{{{latex_escape(caption)}}}")
        if label is not None:
            lines.append(rf"\label{{{label}}}")
    return lines + [
        rf"\begin{{tabular}}{{{alignment}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]


def to_latex(
    frame: pd.DataFrame,
    best: Mapping[str, Direction] | None = None,
    *,
    digits: int = 3,
    caption: str | None = None,
    label: str | None = None,
) -> str:
    """A booktabs table (\\toprule, \\midrule, \\bottomrule); the best cell of each column that
    has a direction in `best` is \\textbf{}. The index becomes the first column. A missing value
    (None, NaN) is an empty cell.

    Example: ``to_latex(pd.DataFrame({"acc/mean": [0.5, 0.7]}, index=["a", "b"]), {"acc/mean": "max"})``
    contains ``b & \\textbf{0.700} \\\\``.
    """
    marks = best_cells(frame, BEST_DIRECTION if best is None else best)
    cells = _formatted(frame, digits, "")
    header = [latex_escape(frame.index.name or "")] + [latex_escape(c) for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    alignment = "l" + "".join("r" if flag else "l" for flag in numeric)
    in_float = caption is not None or label is not None
    lines = latex_opening(header, alignment, caption=caption, label=label, in_float=in_float)
    for row_label, row in cells.iterrows():
        values = []
        for column, text in row.items():
            escaped = latex_escape(text)
            bold = marks.at[row_label, column] and escaped
            values.append(rf"\textbf{{{escaped}}}" if bold else escaped)
        lines.append(" & ".join([latex_escape(_label(row_label)), *values]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if in_float:
        lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_markdown(
    frame: pd.DataFrame,
    best: Mapping[str, Direction] | None = None,
    *,
    digits: int = 3,
) -> str:
    """A GitHub Markdown table (`care.tables.markdown_table`); best cells in **bold**; a missing
    value (None, NaN) is an empty cell.

    The index becomes the first column; numeric columns are right-aligned.
    """
    marks = best_cells(frame, BEST_DIRECTION if best is None else best)
    cells = _formatted(frame, digits, "")
    cells = cells.where(~marks | (cells == ""), "**" + cells + "**")
    header = [str(frame.index.name or ""), *(str(column) for column in frame.columns)]
    rows = [
        [_label(label), *values]
        for label, values in zip(frame.index, cells.values.tolist(), strict=True)
    ]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    alignment = "l" + "".join("r" if flag else "l" for flag in numeric)
    return markdown_table(header, rows, alignment)


def _label(value: Any) -> str:
    """A row label as text; a missing one (None, NaN) is empty rather than "None"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _csv_cell(value: Any) -> str:
    """Full precision (6 significant digits) for floats, empty for a missing value."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float | np.floating):
        return f"{value:.6g}"
    return str(value)


def to_csv(frame: pd.DataFrame) -> str:
    """CSV (`care.tables.csv_table`) with the index as the first column; NaN as an empty field.

    Example: index "run_b", acc/mean 0.7 -> the line ``run_b,0.7``.
    """
    header = [str(frame.index.name or ""), *(str(column) for column in frame.columns)]
    rows = [
        [_label(label), *(_csv_cell(value) for value in values)]
        for label, values in zip(frame.index, frame.astype(object).values.tolist(), strict=True)
    ]
    return csv_table(header, rows)
