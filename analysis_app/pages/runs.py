"""Runs: every run under the runs root with its estimator, model, progress and status."""

from __future__ import annotations

import streamlit as st

from analysis_app import data, tables, view

STATUS_HELP = (
    "Status comes from the run's meta.json. A process killed without cleaning up (kill -9, "
    "out of memory) stays “running”: compare “last logged” with the clock to tell."
)


def body() -> None:
    root = view.runs_root_or_stop()
    names = view.all_runs_or_stop(root)
    view.select_runs(root, names)
    summaries = [data.summarise_run(root, data.resolve_run(root, name)) for name in names]
    frame = tables.runs_table(summaries)
    st.caption(f"{len(names)} run(s) under `{root.resolve()}`. {STATUS_HELP}")
    view.show_table(
        frame,
        digits=1,
        hide_index=True,
        column_config={
            "eval macro (%)": st.column_config.Column(
                help="Macro average of the latest evaluated checkpoint"
            ),
        },
    )
    counts = frame["status"].value_counts()
    columns = st.columns(4)
    for column, status in zip(
        columns, ("finished", "running", "crashed", "unreadable"), strict=True
    ):
        column.metric(status, int(counts.get(status, 0)))
    view.show_warnings([warning for summary in summaries for warning in summary.warnings])


view.run_page("Runs", body)
