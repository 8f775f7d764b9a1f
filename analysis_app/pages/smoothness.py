"""Smoothness: the raw curve faintly under its debiased EMA, and the smoothness metrics per run."""

from __future__ import annotations

import streamlit as st

from analysis_app import data, figures, tables, view

PREFERRED_METRICS = ("acc/mean", "reward/mean", "grad_norm", "loss/kl", "entropy")

EXPLANATION = """
- **step-diff std**: spread of the step-to-step changes of the raw curve;
- **detrended IQR**: inter-quartile range of those changes after removing their linear trend;
- **max drawdown**: largest fall of the smoothed (EMA 0.6) accuracy from its running maximum;
- **spikes**: grad-norm and KL steps above median + 5·MAD.

Lower is smoother. “None” means the run has too few logged steps for that metric (or never
logged the series). Computed by `care.metrics.smoothness.smoothness_summary`, the same function
the library exports.
"""


def body() -> None:
    root = view.runs_root_or_stop()
    names = view.all_runs_or_stop(root)
    runs = view.select_runs(root, names)
    smoothing = view.smoothing_slider()
    if not runs:
        st.info("Pick one or more runs in the sidebar.")
        return
    steps, warnings = data.steps_of_runs(runs)
    view.show_warnings(warnings)
    numeric = [
        column
        for column in steps.columns
        if column not in ("run", "step", "time") and figures.has_metrics(steps, [column])
    ]
    if not numeric:
        st.info("The selected runs have no logged steps yet.")
        return
    options = [m for m in PREFERRED_METRICS if m in numeric] + sorted(
        m for m in numeric if m not in PREFERRED_METRICS
    )
    metric = view.choose("Metric", options, param="metric", default="acc/mean")
    st.plotly_chart(figures.smoothed_metric_figure(steps, metric, smoothing), theme=None)
    st.subheader("Smoothness metrics")
    table = tables.smoothness_table(steps).T.rename_axis("metric")
    view.show_table(table, digits=4)
    st.markdown(EXPLANATION)


view.run_page("Smoothness", body)
