"""Compare checkpoints: is B's accuracy different from A's, item by item (``care compare A B``).

Per benchmark and macro: B − A with its paired-bootstrap 95 % interval, the exact McNemar
p-value, Holm-corrected across the benchmarks, and the fixed / broken / both counts; then every
item, filterable by benchmark, outcome and error type, with its question, image, gold answer
and both responses. The numbers are `evaluation.compare`'s, the same as the CLI prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from analysis_app import data, tables, view
from evaluation.compare import OUTCOMES, CompareError, Item
from evaluation.taxonomy import ERROR_TYPES

ALL = "all"
MAX_TEXT = 4000

EXPLANATION = (
    "Items are paired by (benchmark, task, doc_id) under each evaluation's first seed. "
    "B − A, its interval bounds and the accuracies are percent points; the interval is a "
    "paired bootstrap over the items (10,000 resamples, seeded), the p-value the exact McNemar "
    "test on the discordant items (fixed: A wrong, B right; broken: A right, B wrong), Holm p "
    "its correction across the benchmarks compared. The macro row compares the unweighted mean "
    "over the benchmarks; its p-value pools every item and is not Holm-corrected."
)


def _text(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …"


def body() -> None:
    runs = view.selected_runs()
    if runs is None:
        return
    checkpoints = data.evaluated_checkpoints(runs)
    if len(checkpoints) < 2:
        found = ", ".join(checkpoints) or "none"
        st.info(
            "Comparing needs two evaluated checkpoints among the selected runs, with per-item "
            "records `<run>/eval/<checkpoint>/<benchmark>_samples.jsonl` (what `care eval` "
            f"writes); found {found}."
        )
        return
    labels = list(checkpoints)
    a = view.choose("Checkpoint A (baseline)", labels, param="a")
    b = view.choose("Checkpoint B", labels, param="b", default=labels[-1])
    if a == b:
        st.info("A and B are the same checkpoint: pick two different ones.")
        return
    try:
        comparison = data.compare_checkpoints(checkpoints[a], checkpoints[b])
    except CompareError as error:
        st.info(f"{a} and {b} cannot be compared: {error}")
        return
    for note in comparison.notes:
        st.warning(note)
    st.subheader(f"B − A: {b} minus {a}")
    st.caption(EXPLANATION)
    view.show_table(
        tables.checkpoint_comparison_table(comparison.rows),
        digits=1,
        formats=dict.fromkeys(tables.P_VALUE_COLUMNS, "{:.3g}"),
    )
    _browse_items(checkpoints[a], checkpoints[b], comparison.pairs)


def _browse_items(a_dir: Path, b_dir: Path, pairs: list[tuple[Item, Item]]) -> None:
    """The item table under the benchmark, outcome and error-type filters, and one item."""
    st.subheader("Items")
    items = tables.comparison_items_table(pairs)
    benchmarks = list(dict.fromkeys(items["benchmark"]))
    benchmark = view.choose("Benchmark", [ALL, *benchmarks], param="benchmark")
    outcome = view.choose("Outcome", [ALL, *OUTCOMES], param="outcome")
    error = view.choose("Error type (of A or B)", [ALL, *ERROR_TYPES], param="error")
    keep = pd.Series(True, index=items.index)
    if benchmark != ALL:
        keep &= items["benchmark"] == benchmark
    if outcome != ALL:
        keep &= items["outcome"] == outcome
    if error != ALL:
        keep &= (items["A error"] == error) | (items["B error"] == error)
    shown = items[keep]
    st.caption(f"{len(shown)} of {len(items)} items match.")
    if shown.empty:
        st.info("No item matches these filters.")
        return
    view.show_table(shown, hide_index=True)
    names = {_item_name(pairs[position][0]): position for position in shown.index}
    chosen = view.choose("Item", list(names), param="item")
    _show_item(a_dir, b_dir, *pairs[names[chosen]])


def _item_name(item: Item) -> str:
    """``"care_synth 3"``, with the task when it is not the benchmark (MathVerse's versions)."""
    where = item.benchmark if item.task == item.benchmark else f"{item.benchmark} / {item.task}"
    return f"{where} {item.doc_id}"


def _show_item(a_dir: Path, b_dir: Path, a: Item, b: Item) -> None:
    """The question, the image A was evaluated on, the gold answer, then A's and B's response,
    extracted answer and error type side by side (B's image too when B read other data)."""
    image_column, text_column = st.columns([1, 2])
    with image_column:
        _show_images(a_dir, a, "A")
    with text_column:
        st.markdown("**Question**")
        st.code(_text(a.question) or "(not recorded)", language=None)
        gold = f"`{_text(a.answer)}`" if a.answer is not None else "not recorded"
        st.markdown(f"**Gold answer:** {gold}")
    a_column, b_column = st.columns(2)
    with a_column:
        _show_response(a, "A")
    with b_column:
        _show_response(b, "B")
        b_root, _ = data.eval_data_root(b_dir, b.benchmark)
        if b_root != data.eval_data_root(a_dir, a.benchmark)[0]:
            st.caption(f"B was evaluated on other data ({b_root}):")
            _show_images(b_dir, b, "B")


def _show_response(item: Item, side: str) -> None:
    verdict = "right ✅" if item.correct else "wrong ❌"
    answer = f"`{item.extracted}`" if item.extracted is not None else "none found"
    st.markdown(f"**{side}: {verdict}**, answer {answer}, error type *{item.error}*")
    st.code(_text(item.response) or "(no response recorded)", language=None)


def _show_images(folder: Path, item: Item, side: str) -> None:
    images, problem = data.item_images(folder, item)
    for image in images:
        st.image(image, caption=f"as {side} saw it", width=240)
    if problem is not None:
        st.caption(f"Image not shown: {problem}.")


view.run_page("Compare checkpoints", body)
