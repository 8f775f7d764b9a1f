"""The results table: accuracy per benchmark and the macro average, mean ± std over seeds,
with a 95 % interval: Wilson's for one run (greedy decoding), the Student-t interval of the
per-seed accuracies for several (sampled decoding), clipped to [0, 1]; the macro average of one
run has the normal interval of a mean of independent proportions (`macro_interval`), and a
macro average of a single benchmark has that benchmark's interval.

A benchmark's result is its accuracy under each evaluation seed (`BenchmarkResult`). The table
shows, per benchmark, the mean over seeds ± the sample standard deviation (``ddof=1``; none
with a single seed), in percent. The macro average is `evaluation.benchmarks.macro_average`'s
(the paper's six when any of them was evaluated, else every benchmark: the same definition the
dashboard and the exports use), computed per seed (the mean of the benchmarks' accuracies under
that seed, as the paper's "avg" column) and then summarised the same way, so its ± is the
seed-to-seed spread of the macro average itself; it needs its benchmarks to share their seeds.

    >>> table = build_table([
    ...     BenchmarkResult("care_mathvista", {0: 0.50, 1: 0.60}, n=10),
    ...     BenchmarkResult("care_mmmu", {0: 0.25, 1: 0.35}, n=20),
    ...     BenchmarkResult("care_synth", {0: 0.75, 1: 0.85}, n=20),
    ... ])
    >>> print(to_markdown(table), end="")
    | benchmark              |   n | seeds | accuracy (%) | 95 % interval |
    |:-----------------------|----:|------:|-------------:|--------------:|
    | care_mathvista         |  10 |     2 | 55.00 ± 7.07 |  [0.0, 100.0] |
    | care_mmmu              |  20 |     2 | 30.00 ± 7.07 |  [0.0, 93.5]  |
    | care_synth             |  20 |     2 | 80.00 ± 7.07 | [16.5, 100.0] |
    | macro average (2 of 6) |  30 |     2 | 42.50 ± 7.07 |  [0.0, 100.0] |

`load_results` reads the ``<task>.json`` summaries `evaluation.runner` writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scipy import stats as scipy_stats

from care.stats import CONFIDENCE, Interval, mean_interval, wilson_interval
from care.tables import csv_table, markdown_table
from evaluation.benchmarks import PAPER_BENCHMARKS, macro_tasks

MACRO_LABEL = "macro average"


@dataclass(frozen=True)
class BenchmarkResult:
    """One benchmark's accuracy (a fraction in [0, 1]) under each evaluation seed.

    Example: ``BenchmarkResult("care_mathvista", {0: 0.687, 1: 0.691}, n=1000)``.
    """

    task: str
    accuracy_by_seed: Mapping[int, float]
    n: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise ValueError(f"task must be a non-empty string, got {self.task!r}")
        if not self.accuracy_by_seed:
            raise ValueError(f"{self.task}: accuracy_by_seed must hold at least one seed")
        for seed, accuracy in self.accuracy_by_seed.items():
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(f"{self.task}: seeds must be ints, got {seed!r}")
            if (
                isinstance(accuracy, bool)
                or not isinstance(accuracy, int | float)
                or not 0.0 <= accuracy <= 1.0
            ):
                raise ValueError(
                    f"{self.task}: accuracy of seed {seed} must be a fraction in [0, 1], got "
                    f"{accuracy!r}"
                )
        if self.n is not None and (isinstance(self.n, bool) or not isinstance(self.n, int)):
            raise ValueError(f"{self.task}: n must be an int or None, got {self.n!r}")


@dataclass(frozen=True)
class TableRow:
    """One line of the table: mean and std over seeds, as fractions (std None for one seed), and
    the 95 % interval of the mean (None when the item count is unknown for one seed)."""

    label: str
    n: int | None
    seeds: tuple[int, ...]
    mean: float
    std: float | None
    interval: Interval | None = None


@dataclass(frozen=True)
class ResultsTable:
    """Per-benchmark rows in the order given, then the macro-average row (None when the
    benchmarks were not evaluated under the same seeds)."""

    rows: tuple[TableRow, ...]
    macro: TableRow | None


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``ddof=1``); the std is None for a single value.

    Example: ``mean_std([0.5, 0.6])`` → ``(0.55, 0.0707…)``; ``mean_std([0.4])`` → ``(0.4, None)``.
    """
    if not values:
        raise ValueError("values must hold at least one number")
    mean = math.fsum(values) / len(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return mean, std


def build_table(results: Sequence[BenchmarkResult]) -> ResultsTable:
    """The table of `results` (see the module docstring for the macro average).

    Example: care_mathvista at {0: 0.5, 1: 0.6} and care_mmmu at {0: 0.25, 1: 0.35} → macro
    mean 0.425, std 0.0707 (per-seed macros 0.375 and 0.475); a care_synth row beside them
    does not enter the macro.
    """
    if not results:
        raise ValueError("results must hold at least one benchmark")
    names = [result.task for result in results]
    if len(set(names)) != len(names):
        raise ValueError(f"results name a benchmark twice: {names}")
    rows = []
    for result in results:
        seeds = tuple(sorted(result.accuracy_by_seed))
        accuracies = [result.accuracy_by_seed[seed] for seed in seeds]
        mean, std = mean_std(accuracies)
        interval = None
        if len(seeds) > 1:
            interval = within_unit(mean_interval(accuracies))
        elif result.n:
            # acc = right / n exactly: the right count comes back by rounding.
            interval = wilson_interval(round(mean * result.n), result.n)
        rows.append(TableRow(result.task, result.n, seeds, mean, std, interval))
    members = [results[names.index(task)] for task in macro_tasks(names)]
    member_rows = [rows[names.index(result.task)] for result in members]
    macro = None
    if len({row.seeds for row in member_rows}) == 1:
        seeds = member_rows[0].seeds
        macro_by_seed = [
            math.fsum(result.accuracy_by_seed[seed] for result in members) / len(members)
            for seed in seeds
        ]
        mean, std = mean_std(macro_by_seed)
        sizes = [row.n for row in member_rows]
        total = None if any(size is None for size in sizes) else sum(sizes)  # type: ignore[misc]
        if len(member_rows) == 1:
            # The macro of one benchmark is that benchmark: its Wilson interval, not a normal
            # one that collapses to [0, 0] at an accuracy of 0.
            interval = member_rows[0].interval
        elif len(seeds) > 1:
            interval = within_unit(mean_interval(macro_by_seed))
        elif total is not None:
            interval = macro_interval([row.mean for row in member_rows], sizes)  # type: ignore[arg-type]
        else:
            interval = None
        macro = TableRow(
            macro_label([result.task for result in members]), total, seeds, mean, std, interval
        )
    return ResultsTable(tuple(rows), macro)


def macro_interval(accuracies: Sequence[float], sizes: Sequence[int]) -> Interval:
    """95 % interval of the unweighted mean of independent benchmark accuracies (one run each).

    The benchmarks' items are independent, so the macro average's variance is
    Σ p_b (1 - p_b) / n_b / B²; the interval is the normal one around the mean, clipped to
    [0, 1]. (Each benchmark's own interval is Wilson's; the average of several is close to
    normal even where one benchmark is not.)

    Example: ``macro_interval([0.5, 0.25], [10, 20])`` → 0.375 [0.193, 0.557].
    """
    if not accuracies or len(accuracies) != len(sizes) or any(size < 1 for size in sizes):
        raise ValueError(
            f"need one accuracy and one item count >= 1 per benchmark, got {accuracies}, {sizes}"
        )
    count = len(accuracies)
    mean = math.fsum(accuracies) / count
    variance = math.fsum(p * (1 - p) / n for p, n in zip(accuracies, sizes, strict=True))
    half = float(scipy_stats.norm.ppf(0.5 + CONFIDENCE / 2)) * math.sqrt(variance) / count
    return Interval(mean, max(0.0, mean - half), min(1.0, mean + half), int(sum(sizes)))


def within_unit(interval: Interval) -> Interval:
    """`interval` clipped to [0, 1]: an accuracy's t interval over few seeds can overshoot."""
    return dataclasses.replace(interval, low=max(0.0, interval.low), high=min(1.0, interval.high))


def format_interval(interval: Interval | None, digits: int = 1) -> str:
    """``"[35.6, 54.8]"`` in percent; empty when there is no interval."""
    if interval is None or math.isnan(interval.low):
        return ""
    return f"[{100 * interval.low:.{digits}f}, {100 * interval.high:.{digits}f}]"


def macro_label(tasks: Sequence[str]) -> str:
    """ "macro average" over the paper's six; otherwise the label says what it covers.

    Example: ``macro_label(["care_mmmu", "care_mathvista"])`` → ``"macro average (2 of 6)"``;
    ``macro_label(["care_synth"])`` → ``"macro average (care_synth)"``.
    """
    paper = [task for task in tasks if task in PAPER_BENCHMARKS]
    if set(paper) == set(PAPER_BENCHMARKS):
        return MACRO_LABEL
    if paper:
        return f"{MACRO_LABEL} ({len(paper)} of {len(PAPER_BENCHMARKS)})"
    return f"{MACRO_LABEL} ({', '.join(tasks)})"


def format_percent(mean: float, std: float | None, digits: int = 2) -> str:
    """``"74.70 ± 0.35"`` for (0.747, 0.0035); ``"74.70"`` when std is None."""
    text = f"{100 * mean:.{digits}f}"
    return text if std is None else f"{text} ± {100 * std:.{digits}f}"


def to_markdown(table: ResultsTable, failed: Sequence[str] = ()) -> str:
    """A Markdown table (accuracy in percent); `failed` benchmarks get a line saying so."""
    rows = [
        [
            row.label,
            "" if row.n is None else str(row.n),
            str(len(row.seeds)),
            format_percent(row.mean, row.std),
            format_interval(row.interval),
        ]
        for row in (*table.rows, *([table.macro] if table.macro else []))
    ]
    rows += [[task, "", "", "failed", ""] for task in failed]
    header = ["benchmark", "n", "seeds", "accuracy (%)", "95 % interval"]
    # Callers print it or add their own line end.
    return markdown_table(header, rows, "lrrrr").rstrip("\n")


def to_csv(table: ResultsTable) -> str:
    """CSV with one line per benchmark and the macro line: percent, 4 decimals; empty std for
    a single seed. Columns: benchmark, n, seeds, accuracy_mean, accuracy_std, ci95_low,
    ci95_high (the 95 % interval; empty when unknown)."""
    rows = [
        [
            row.label,
            "" if row.n is None else str(row.n),
            " ".join(str(seed) for seed in row.seeds),
            f"{100 * row.mean:.4f}",
            "" if row.std is None else f"{100 * row.std:.4f}",
            "" if row.interval is None else f"{100 * row.interval.low:.4f}",
            "" if row.interval is None else f"{100 * row.interval.high:.4f}",
        ]
        for row in (*table.rows, *([table.macro] if table.macro else []))
    ]
    header = ["benchmark", "n", "seeds", "accuracy_mean", "accuracy_std", "ci95_low", "ci95_high"]
    return csv_table(header, rows)


def load_results(out_dir: str | Path, tasks: Sequence[str]) -> list[BenchmarkResult]:
    """The `BenchmarkResult` of each task that has an ``<out_dir>/<task>.json`` summary.

    Tasks without one are left out; a summary without ``per_seed`` accuracies is a ValueError
    naming the file.
    """
    folder = Path(out_dir)
    results = []
    for task in tasks:
        path = folder / f"{task}.json"
        if not path.is_file():
            continue
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
            per_seed = summary["per_seed"]
            accuracy_by_seed = {
                int(seed): float(entry["accuracy"]) for seed, entry in per_seed.items()
            }
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(
                f"{path}: not an evaluation summary with per_seed accuracies ({error})"
            ) from error
        results.append(BenchmarkResult(task, accuracy_by_seed, summary.get("n")))
    return results
