"""Training signal: where the learning signal comes from, step by step, for several runs."""

from __future__ import annotations

import streamlit as st

from analysis_app import data, figures, tables, view


def body() -> None:
    selection = view.selected_steps()
    if selection is None:
        return
    runs, steps, smoothing = selection
    seed_groups = view.seed_groups_toggle(runs)
    empty = [name for name in runs if not (steps["run"] == name).any()]
    if empty:
        st.info(f"No steps logged yet by: {', '.join(empty)}.")
    if not figures.has_metrics(steps, figures.SIGNAL_METRICS):
        st.info(
            "None of the selected runs logs learning-signal metrics (signal/*, groups/*, rescue/*, "
            "rgr/*). Supervised warm-start runs have none; pick an RL run."
        )
        return
    st.caption(
        "Failure-signal share: the part of Σ|advantage| carried by failed rollouts (with RGR: "
        "passed repairs count as failure-derived). Colour = run, dash = metric."
    )
    imported = {name: data.not_computed_note(data.load_config(path)) for name, path in runs.items()}
    for name, note in imported.items():
        if note is not None:
            st.info(
                f"{name}: {note}. Its failure-signal share and group types come from GRPO "
                "advantages recomputed from the dump's rewards; token-level shares, rescue and "
                "RGR are not shown for it."
            )
    if figures.has_metrics(steps, figures.ACCURACY_METRICS):
        st.plotly_chart(
            figures.accuracy_figure(steps, smoothing, seed_groups), theme=None, key="accuracy"
        )
    built = figures.signal_figures(steps, smoothing, logged_only=True, seed_groups=seed_groups)
    for name in figures.SIGNAL_FIGURES:
        if name in built:
            st.plotly_chart(built[name], theme=None, key=f"signal_{name}")
        else:
            st.caption(f"{name.replace('_', ' ')}: not logged by the selected runs.")
    st.subheader("Mean over steps")
    summary = tables.signal_summary_table(steps)
    silent = [run for run in summary.index if summary.loc[run].isna().all()]
    summary = summary.drop(index=silent)
    if silent:
        st.caption(f"Not shown (no learning-signal metrics logged): {', '.join(silent)}.")
    view.show_table(summary.T.rename_axis("metric"))


view.run_page("Training signal", body)
