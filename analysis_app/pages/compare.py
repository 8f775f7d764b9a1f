"""Compare: pick runs, see their curves overlaid (seeds of one setting as one mean curve in its
95 % band) and a table of differences to a baseline run."""

from __future__ import annotations

import streamlit as st

from analysis_app import figures, tables, view

DEFAULT_METRICS = ("acc/mean", "reward/mean", "signal/failure_share_seq")


def body() -> None:
    selection = view.selected_steps(
        min_runs=2, prompt="Pick at least two runs in the sidebar to compare them."
    )
    if selection is None:
        return
    runs, steps, smoothing = selection
    seed_groups = view.seed_groups_toggle(runs)
    numeric = view.numeric_metrics(steps)
    if not numeric:
        st.info("The selected runs have no logged steps yet.")
        return
    metrics = view.choose_many("Metrics", numeric, param="metric", default=DEFAULT_METRICS)
    baseline = view.choose("Baseline run", list(runs), param="baseline")
    if not metrics:
        st.info("Pick at least one metric.")
        return
    for metric in metrics:
        st.plotly_chart(
            figures.smoothed_metric_figure(steps, metric, smoothing, seed_groups),
            theme=None,
            key=f"cmp_{metric}",
        )
    st.subheader(f"Differences to {baseline}")
    st.caption(
        f"Final = last value of the EMA-smoothed curve (weight {smoothing:.2f}); "
        "Δ = final of the run minus final of the baseline."
    )
    table = tables.compare_table(steps, metrics, smoothing=smoothing, baseline=baseline)
    logged = table["mean"].notna()
    if not logged.all():
        absent = sorted({f"{row.run} ({row.metric})" for row in table[~logged].itertuples()})
        st.caption(f"Not logged, so left out: {', '.join(absent)}.")
    view.show_table(table[logged], digits=4, hide_index=True)


view.run_page("Compare", body)
