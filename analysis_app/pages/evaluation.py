"""Evaluation: accuracy per benchmark and checkpoint, the paper's rows beside them, deltas."""

from __future__ import annotations

import streamlit as st

from analysis_app import data, figures, tables, view


def body() -> None:
    runs = view.selected_runs()
    if runs is None:
        return
    evaluation, warnings = data.eval_of_runs(runs)
    view.show_warnings(warnings)
    evaluated = set(evaluation["run"].tolist())
    missing = [name for name in runs if name not in evaluated]
    if evaluation.empty:
        st.info(
            "None of the selected runs has evaluation results yet (files "
            "`<run>/eval/<checkpoint>/<task>.json`, written by the evaluation code)."
        )
        return
    if missing:
        st.caption(f"No evaluation results for: {', '.join(missing)}.")
    try:
        paper: data.PaperReference | None = data.load_paper_reference()
    except ValueError as error:
        paper = None
        st.warning(f"The paper's table could not be loaded: {error}")
    show_paper = paper is not None and st.checkbox("Show the paper's rows", value=True)
    table = tables.eval_table(evaluation, paper, include_paper=show_paper)
    st.subheader("Accuracy (%)")
    st.caption(
        "One row per evaluated checkpoint. Macro = unweighted mean over the paper's six "
        "benchmarks when the checkpoint has any of them, else over all its tasks (the same "
        "definition as `care eval`'s table); “macro tasks” says how many, so a macro over fewer "
        "than six is not read as the paper's."
    )
    view.show_table(table, digits=2)

    if paper is not None:
        full = tables.eval_table(evaluation, paper, include_paper=True)
        references = [row for row in full.index if row.startswith("paper: ")]
        first_run = next(iter(runs.values()))
        estimator = data.estimator_of(data.load_config(first_run), data.load_steps(first_run))
        reference = view.choose(
            "Compare with the paper's row",
            references,
            param="reference",
            default=tables.default_paper_row(paper, estimator),
        )
        delta = tables.eval_delta_table(full, reference)
        st.subheader(f"Δ to {reference.removeprefix('paper: ')} (points)")
        if (
            delta.shape[1] == 0
            or delta.drop(columns=[tables.MACRO_COLUMN], errors="ignore").shape[1] == 0
        ):
            st.info(
                "The runs share no benchmark with the paper (e.g. the demo's care_synth), "
                "so there is nothing to subtract."
            )
        else:
            view.show_table(delta, digits=2, signed=True)

    st.subheader("Accuracy per checkpoint")
    macros = tables.checkpoint_macros(evaluation)
    st.plotly_chart(figures.eval_accuracy_figure(evaluation, macros), theme=None)


view.run_page("Evaluation", body)
