"""``care compare A B``: is B's accuracy different from A's, item by item?

A and B are two evaluation output folders (what ``care eval`` writes: ``<benchmark>.json`` and
``<benchmark>_samples.jsonl`` per benchmark) or two checkpoints ``<run>/checkpoints/<name>``
whose default output folder ``<run>/eval/<name>`` holds them. Items are paired by
(benchmark, task, doc_id) under each folder's first evaluation seed; for every benchmark both
evaluated:

- the accuracy difference B - A with a paired-bootstrap 95 % interval (`care.stats`),
- the exact McNemar p-value, and the same p-values Holm-corrected across the benchmarks,
- the per-item outcome counts: fixed (A wrong, B right), broken (A right, B wrong), both right,
  both wrong.

The macro row compares the unweighted mean over the benchmarks: each item's score is weighted
by 1 / (benchmarks x its benchmark's items) before the bootstrap, so the resampled mean is the
macro difference. Its McNemar p-value pools every item (not Holm-corrected: it is not one of
the family of per-benchmark tests).

    >>> outcome(False, True), outcome(True, True)
    ('fixed', 'both right')
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from care.stats import Interval, holm, mcnemar_exact, paired_bootstrap
from care.tables import csv_table, markdown_table
from evaluation.taxonomy import error_type

OUTCOMES = ("fixed", "broken", "both right", "both wrong")


class CompareError(ValueError):
    """Inputs that cannot be compared (the CLI exits with 2)."""


@dataclass(frozen=True)
class Item:
    """One scored item of one side: its key, verdict, extracted answer and error type
    (`evaluation.taxonomy.error_type`), and what a reader of the item needs: the prompt's text
    (the record's ``input``), the gold answer and the response."""

    benchmark: str
    task: str
    doc_id: Any
    correct: bool
    extracted: str | None
    error: str
    question: str | None
    answer: str | None
    response: str | None


@dataclass(frozen=True)
class BenchmarkComparison:
    """One row of the comparison (``benchmark`` is the macro label for the macro row)."""

    benchmark: str
    n: int
    accuracy_a: float
    accuracy_b: float
    difference: Interval
    p_value: float
    p_holm: float | None
    counts: dict[str, int]


def outcome(a_correct: bool, b_correct: bool) -> str:
    """The item's diff class: fixed, broken, both right or both wrong."""
    if a_correct and b_correct:
        return "both right"
    if a_correct:
        return "broken"
    return "fixed" if b_correct else "both wrong"


def results_folder(path: str | Path) -> Path:
    """The eval output folder of `path`: itself when it holds ``*_samples.jsonl`` files, else a
    checkpoint's ``<run>/eval/<name>``; CompareError naming what was looked for.

    Example: ``results_folder("runs/care/checkpoints/step_40")`` → ``runs/care/eval/step_40``.
    """
    folder = Path(path)
    if any(folder.glob("*_samples.jsonl")):
        return folder
    if folder.parent.name == "checkpoints":
        evaluated = folder.parent.parent / "eval" / folder.name
        if any(evaluated.glob("*_samples.jsonl")):
            return evaluated
        raise CompareError(
            f"{folder} is a checkpoint without evaluation results: {evaluated} holds no "
            "<benchmark>_samples.jsonl (run care eval first)"
        )
    raise CompareError(
        f"{folder} holds no <benchmark>_samples.jsonl: give an eval output folder or a "
        "checkpoint <run>/checkpoints/<name> that was evaluated"
    )


def load_items(folder: Path) -> dict[str, list[Item]]:
    """Every benchmark's items under its first evaluation seed, by benchmark name (also what
    ``care errors`` counts)."""
    items: dict[str, list[Item]] = {}
    for path in sorted(folder.glob("*_samples.jsonl")):
        benchmark = path.name[: -len("_samples.jsonl")]
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                records.append((record["seed"], record))
                _ = record["task"], record["doc_id"], record["acc"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise CompareError(
                    f"{path}:{number}: not a per-sample record with task, seed, doc_id and acc "
                    f"({error})"
                ) from error
        if not records:
            continue
        first_seed = min(seed for seed, _ in records)
        items[benchmark] = [_item(benchmark, r) for seed, r in records if seed == first_seed]
    return items


def _item(benchmark: str, record: dict[str, Any]) -> Item:
    return Item(
        benchmark=benchmark,
        task=record["task"],
        doc_id=record["doc_id"],
        correct=bool(record["acc"]),
        extracted=record.get("extracted"),
        error=error_type(record),
        question=record.get("input"),
        answer=record.get("answer"),
        response=record.get("response"),
    )


def paired(benchmark: str, a: list[Item], b: list[Item]) -> list[tuple[Item, Item]]:
    """A's and B's items of one benchmark matched by (task, doc_id), in A's order; CompareError
    naming the benchmark and a few unmatched keys when the item sets differ."""
    b_by_key = {(item.task, str(item.doc_id)): item for item in b}
    a_keys = [(item.task, str(item.doc_id)) for item in a]
    only_a = [key for key in a_keys if key not in b_by_key]
    only_b = sorted(set(b_by_key) - set(a_keys))
    if only_a or only_b or len(set(a_keys)) != len(a_keys):
        raise CompareError(
            f"{benchmark}: A and B scored different items ({len(a)} vs {len(b)}; only in A: "
            f"{only_a[:3]}, only in B: {only_b[:3]}); compare evaluations of the same items "
            "(same data and --limit)"
        )
    return [(item, b_by_key[key]) for item, key in zip(a, a_keys, strict=True)]


def different_items(pairs: list[tuple[Item, Item]]) -> int:
    """How many pairs recorded another question or gold answer on each side: the same doc_id
    of two different data files (e.g. the demo's test splits of two seeds) pairs unrelated
    items. A side that did not record them is not counted.

    Example: gold "3" in A and "5" in B for doc_id 0 -> 1.
    """
    return sum(
        1
        for x, y in pairs
        if any(
            left is not None and right is not None and left != right
            for left, right in ((x.question, y.question), (x.answer, y.answer))
        )
    )


def compare_folders(
    a: str | Path,
    b: str | Path,
    *,
    resamples: int = 10_000,
    seed: int = 0,
    note: Callable[[str], None] = lambda line: None,
) -> tuple[list[BenchmarkComparison], list[tuple[Item, Item]]]:
    """The per-benchmark rows (then the macro row) and every item pair; see the module doc.

    Benchmarks evaluated on one side only are left out and reported through `note`, as are
    paired items whose question or gold answer differ between A and B (`different_items`).
    """
    items_a, items_b = load_items(results_folder(a)), load_items(results_folder(b))
    for name in sorted(set(items_a) ^ set(items_b)):
        side = "A" if name in items_a else "B"
        note(f"{name}: evaluated in {side} only, left out")
    if not set(items_a) & set(items_b):
        raise CompareError(f"{a} and {b} share no evaluated benchmark")
    return compare_items(items_a, items_b, resamples=resamples, seed=seed, note=note)


def compare_items(
    items_a: dict[str, list[Item]],
    items_b: dict[str, list[Item]],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    note: Callable[[str], None] = lambda line: None,
) -> tuple[list[BenchmarkComparison], list[tuple[Item, Item]]]:
    """`compare_folders` on items already loaded (`load_items`): the benchmarks both sides have,
    in A's order, Holm-corrected among themselves, then their macro row. Paired items whose
    question or gold answer differ between A and B are reported through `note`.

    Example: restricting both sides to the paper's benchmarks gives the macro row of those
    alone (``care export`` pairs its table's macro average this way).
    """
    shared = [name for name in items_a if name in items_b]
    if not shared:
        raise CompareError("no benchmark was evaluated on both sides")
    rows: list[BenchmarkComparison] = []
    pairs: list[tuple[Item, Item]] = []
    matched_by_benchmark: dict[str, list[tuple[Item, Item]]] = {}
    for name in shared:
        matched = paired(name, items_a[name], items_b[name])
        differing = different_items(matched)
        if differing:
            note(
                f"{name}: {differing} of {len(matched)} paired items have another question or "
                "gold answer in B than in A (evaluated on different data?), so they are not "
                "the same items"
            )
        pairs.extend(matched)
        matched_by_benchmark[name] = matched
        scores_a, scores_b = _scores(matched)
        rows.append(_row(name, scores_a, scores_b, resamples, seed))
    corrected = holm([row.p_value for row in rows])
    rows = [_with_holm(row, p) for row, p in zip(rows, corrected, strict=True)]
    rows.append(macro_comparison(matched_by_benchmark, resamples=resamples, seed=seed))
    return rows, pairs


def macro_comparison(
    matched: dict[str, list[tuple[Item, Item]]], *, resamples: int = 10_000, seed: int = 0
) -> BenchmarkComparison:
    """The macro-average row over the benchmarks of `matched` (each one's items paired by
    `paired`): the difference of the unweighted means over benchmarks, by a paired bootstrap of
    the items each weighted so that every benchmark counts the same, and McNemar's test over
    all the pairs.

    Example: ``care export`` tests the macro over the paper's benchmarks alone this way, with
    the pairs of a comparison that also held care_synth.
    """
    total = sum(len(pairs) for pairs in matched.values())
    scores = [_scores(pairs) for pairs in matched.values()]
    weights = [total / (len(matched) * len(pairs)) for pairs in matched.values()]
    macro_a = np.concatenate([a * weight for (a, _), weight in zip(scores, weights, strict=True)])
    macro_b = np.concatenate([b * weight for (_, b), weight in zip(scores, weights, strict=True)])
    all_a = np.concatenate([a for a, _ in scores])
    all_b = np.concatenate([b for _, b in scores])
    return BenchmarkComparison(
        benchmark=f"macro average ({len(matched)})",
        n=total,
        accuracy_a=float(np.mean([float(a.mean()) for a, _ in scores])),
        accuracy_b=float(np.mean([float(b.mean()) for _, b in scores])),
        difference=paired_bootstrap(macro_a, macro_b, resamples=resamples, seed=seed),
        p_value=mcnemar_exact(all_a, all_b),
        p_holm=None,
        counts=_counts(all_a, all_b),
    )


def _scores(pairs: list[tuple[Item, Item]]) -> tuple[np.ndarray, np.ndarray]:
    """A's and B's 0/1 scores of paired items, as float64 arrays in pair order."""
    a = np.array([x.correct for x, _ in pairs], dtype=np.float64)
    b = np.array([y.correct for _, y in pairs], dtype=np.float64)
    return a, b


def _row(name: str, a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> BenchmarkComparison:
    return BenchmarkComparison(
        benchmark=name,
        n=int(a.size),
        accuracy_a=float(a.mean()),
        accuracy_b=float(b.mean()),
        difference=paired_bootstrap(a, b, resamples=resamples, seed=seed),
        p_value=mcnemar_exact(a, b),
        p_holm=None,
        counts=_counts(a, b),
    )


def _with_holm(row: BenchmarkComparison, p_holm: float) -> BenchmarkComparison:
    return BenchmarkComparison(
        row.benchmark, row.n, row.accuracy_a, row.accuracy_b, row.difference, row.p_value,
        p_holm, row.counts,
    )  # fmt: skip


def _counts(a: np.ndarray, b: np.ndarray) -> dict[str, int]:
    right_a, right_b = a > 0.5, b > 0.5
    return {
        "fixed": int(np.sum(~right_a & right_b)),
        "broken": int(np.sum(right_a & ~right_b)),
        "both right": int(np.sum(right_a & right_b)),
        "both wrong": int(np.sum(~right_a & ~right_b)),
    }


def to_markdown(rows: list[BenchmarkComparison]) -> str:
    """The comparison as a Markdown table, accuracies and differences in percent points."""
    header = ["benchmark", "n", "A (%)", "B (%)", "B - A [95 % CI]", "McNemar p", "Holm p",
              "fixed", "broken", "both right", "both wrong"]  # fmt: skip
    body = [
        [
            row.benchmark,
            str(row.n),
            f"{100 * row.accuracy_a:.1f}",
            f"{100 * row.accuracy_b:.1f}",
            row.difference.format(),
            f"{row.p_value:.3g}",
            "" if row.p_holm is None else f"{row.p_holm:.3g}",
            *(str(row.counts[name]) for name in OUTCOMES),
        ]
        for row in rows
    ]
    return markdown_table(header, body, "lrrrrrrrrrr")


def items_csv(pairs: list[tuple[Item, Item]]) -> str:
    """One line per item: benchmark, task, doc_id, both verdicts, the outcome, both answers and
    both error types (filter the file by benchmark, outcome or error type)."""
    header = ["benchmark", "task", "doc_id", "a_correct", "b_correct", "outcome",
              "a_extracted", "b_extracted", "a_error", "b_error"]  # fmt: skip
    body = [
        [
            x.benchmark,
            x.task,
            str(x.doc_id),
            str(int(x.correct)),
            str(int(y.correct)),
            outcome(x.correct, y.correct),
            x.extracted,
            y.extracted,
            x.error,
            y.error,
        ]
        for x, y in pairs
    ]
    return csv_table(header, body)
