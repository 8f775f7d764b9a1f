"""Smoothness: the raw curve faintly under its debiased EMA, and the smoothness metrics per run
(and per seed group: mean ± 95 % interval over its seeds)."""

from __future__ import annotations

import streamlit as st

from analysis_app import figures, tables, view

PREFERRED_METRICS = ("acc/mean", "reward/mean", "grad_norm", "loss/kl", "entropy")

EXPLANATION = """
- **step-diff std**: spread of the step-to-step changes of the raw curve;
- **detrended IQR**: inter-quartile range of those changes after removing their linear trend;
- **max drawdown**: largest fall of the smoothed (EMA 0.6) accuracy from its running maximum;
- **spikes**: grad-norm and KL steps above median + 5·MAD.

Lower is smoother. “–” means the run has too few logged steps for that metric (or never
logged the series). Computed by `care.metrics.smoothness.smoothness_summary`, the same function
the library exports. With seeds grouped, each group adds its mean over its seeds and the
half-width of the 95 % Student-t interval (“± 95 %”), over the seeds where the metric is defined.
"""


def body() -> None:
    selection = view.selected_steps()
    if selection is None:
        return
    runs, steps, smoothing = selection
    seed_groups = view.seed_groups_toggle(runs)
    numeric = view.numeric_metrics(steps)
    if not numeric:
        st.info("The selected runs have no logged steps yet.")
        return
    options = [m for m in PREFERRED_METRICS if m in numeric] + sorted(
        m for m in numeric if m not in PREFERRED_METRICS
    )
    metric = view.choose("Metric", options, param="metric", default="acc/mean")
    st.plotly_chart(
        figures.smoothed_metric_figure(steps, metric, smoothing, seed_groups), theme=None
    )
    st.subheader("Smoothness metrics")
    table = tables.smoothness_table(steps)
    if seed_groups:
        table = tables.seed_group_smoothness_table(table, seed_groups)
    table = table.T.rename_axis("metric")
    view.show_table(table, digits=4)
    st.markdown(EXPLANATION)


view.run_page("Smoothness", body)
