"""Failure map: where a group's rationales lie, and which kinds of failure training produces.

For one step and group, the rollouts and the RGR repair in 2-D (PCA of their projected
rationale embeddings), marked by role: anchor, hard negatives in pick order, other failures,
other correct rollouts, pseudo-anchor. Across training, every failed rollout clustered into
failure modes (k-means): each mode's share of the step's failures, and how often CARE picked a
mode's failures as hard negatives or repaired them, with an example response per mode.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from analysis_app import data, failure_map, figures, view
from care.runlog import GroupRecord

MODE_CHOICES = tuple(range(2, 9))


def _no_projection_note(run_name: str, run_dir: Path) -> str:
    estimator = data.estimator_of(data.load_config(run_dir), data.load_steps(run_dir))
    return (
        f"{run_name} ({estimator}) logged no rationale projections, so there is no failure map. "
        "Only CARE computes rationale embeddings; GRPO and the other baselines, imported runs "
        "and runs written before schema version 3 have none."
    )


def _show_group(group: GroupRecord) -> None:
    mapped = failure_map.group_map(group)
    if mapped is None:
        st.caption("This group record holds no projection.")
        return
    st.plotly_chart(figures.group_map_figure(mapped.points), theme=None)
    if mapped.explained is None:
        st.caption("All of the group's rationales project to the same point.")
    else:
        first, second = mapped.explained
        st.caption(
            f"PCA of this group's points: the axes hold {first:.0%} and {second:.0%} of their "
            "variance. ○ correct, × failed; dotted lines join the anchor to the hard negatives "
            "(pick order in brackets), the dashed line joins the repaired failure to its repair."
        )
    view.show_table(
        mapped.points[["point", "role", "pick", "correct", "advantage"]].astype({"pick": "Int64"}),
        hide_index=True,
        key="group_points",
    )


def _show_modes(run_dir: Path, points: failure_map.FailurePoints) -> None:
    k = int(
        view.choose(
            "Failure modes (k-means clusters)",
            [str(k) for k in MODE_CHOICES],
            param="modes",
            default=str(failure_map.DEFAULT_MODES),
        )
    )
    if len(points) < k:
        st.info(f"Only {len(points)} failed rollouts hold a projection: too few for {k} modes.")
        return
    modes = failure_map.load_failure_modes(run_dir, points, k)
    st.plotly_chart(figures.mode_shares_figure(failure_map.mode_shares(points, modes)), theme=None)
    table = failure_map.mode_table(points, modes)
    examples = failure_map.mode_examples(points, modes, data.sample_steps(run_dir))
    responses, warnings = failure_map.example_responses(run_dir, examples)
    view.show_warnings(warnings)
    table["example"] = [
        "" if example is None else f"step {example[0]}, group {example[1]}, #{example[2]}"
        for example in examples
    ]
    table["example response"] = [text or "(not logged)" for text in responses]
    st.caption(
        f"{len(points)} failed rollouts of every step, clustered by k-means on their projected "
        "rationales (seed 0). Picked: chosen as a (pseudo-)negative; pseudo-anchor: anchored a "
        "rescued all-wrong group; repaired: the failure an RGR repair continued. The example "
        "is the mode's failure nearest its centre among the steps whose rollout texts were "
        "logged."
    )
    view.show_table(
        table,
        hide_index=True,
        column_config={"example response": st.column_config.TextColumn(width="large")},
        key="mode_table",
    )


def body() -> None:
    browsed = view.browsed_run()
    if browsed is None:
        return
    run_name, run_dir = browsed
    groups = data.load_groups(run_dir)
    if not groups.steps:
        view.show_warnings(groups.warnings)
        st.info(f"{run_name} logged no prompt groups (groups.jsonl is empty or missing).")
        return
    points, warnings = failure_map.load_failure_points(run_dir)
    view.show_warnings(warnings)
    if not points.has_projections:
        st.info(_no_projection_note(run_name, run_dir))
        return

    st.subheader("One group")
    step = view.choose_int("Step", groups.steps, param="step")
    step_groups = groups.of_step(step)
    group_id = view.choose_int("Group", [g.group_id for g in step_groups], param="group")
    _show_group(next(g for g in step_groups if g.group_id == group_id))

    st.subheader("Failure modes across training")
    _show_modes(run_dir, points)


view.run_page("Failure map", body)
