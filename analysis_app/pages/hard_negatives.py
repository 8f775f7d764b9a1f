"""Hard negatives: browse step → group and see what CARE did with it.

Shows the prompt image and question, the anchor's response, the chosen negatives with their
cosine distances, rewards and advantages, the RGR repair before and after, and, for a rescued
all-wrong group, its pseudo-anchor.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from analysis_app import data, figures, tables, view
from care.runlog import GroupRecord, RgrRecord, SampleRecord

MAX_TEXT = 4000


def _text(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …"


def _show_prompt(
    config: dict[str, Any],
    group: GroupRecord,
    question: str | None,
    logged_answers: tuple[str, ...] = (),
) -> None:
    example, problem = data.find_example(config, group.prompt_id)
    image_column, text_column = st.columns([1, 2])
    with image_column:
        if example is None:
            st.caption(f"Prompt image not available: {problem}")
        else:
            try:
                images = example.load_images()
            except (OSError, ValueError) as error:
                images = []
                st.caption(f"Prompt image not readable: {error}")
            for image in images:
                st.image(image, caption=str(group.prompt_id), width=240)
            if not images and example is not None and not example.images:
                st.caption("This prompt has no image.")
    with text_column:
        st.markdown(f"**Prompt** `{group.prompt_id}`")
        shown = question or (example.question if example is not None else None)
        st.markdown(shown if shown else "_question not logged_")
        if example is not None:
            if example.choices:
                letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                options = "  ".join(
                    f"**{letters[i]}.** {choice}" for i, choice in enumerate(example.choices)
                )
                st.markdown(f"Choices: {options}")
                gold = example.choices[letters.index(example.answer)]
                st.markdown(f"**Gold answer:** `{example.answer}` ({gold})")
            else:
                st.markdown(f"**Gold answer:** `{example.answer}`")
        elif logged_answers:
            st.markdown(f"**Gold answer:** {', '.join(f'`{a}`' for a in logged_answers)}")


def _response_of(
    samples: list[SampleRecord], group_id: int, index: int | None
) -> SampleRecord | None:
    for sample in samples:
        if sample.group_id == group_id and sample.index == index and not sample.is_repair:
            return sample
    return None


def _number(value: float | None, pattern: str) -> str:
    return "unknown" if value is None else format(value, pattern)


def _show_rgr(group: GroupRecord, samples: list[SampleRecord]) -> None:
    repair = group.rgr
    st.subheader("RGR repair")
    if repair is None:
        st.caption(
            "Not computed: the run was imported from a rollout dump."
            if group.not_computed
            else "RGR is switched off for this run."
        )
        return
    if not repair.triggered:
        st.caption(
            "No repair for this group (it needs a correct anchor and at least one hard negative)."
        )
        return
    outcome = "passed ✅" if repair.passed else "failed ❌"
    st.markdown(
        f"Repaired rollout **#{repair.source_index}** ({repair.source_len} tokens) "
        f"with a {repair.repair_len}-token continuation: **{outcome}** (reward "
        f"{_number(repair.reward, 'g')}, advantage {_number(repair.advantage, '+.3f')})"
    )
    repaired = [s for s in samples if s.group_id == group.group_id and s.is_repair]
    before = _response_of(samples, group.group_id, repair.source_index)
    before_column, after_column = st.columns(2)
    with before_column:
        st.markdown("**Before: the failed response**")
        st.code(_text(before.response) if before else "(sample not logged)", language=None)
    with after_column:
        st.markdown("**After: repair prefix + continuation**")
        if repaired:
            sample = repaired[0]
            st.code(_text(sample.repair_prefix), language=None)
            st.code(_text(sample.response), language=None)
        else:
            st.code("(repair sample not logged at this step)", language=None)


def body() -> None:
    browsed = view.browsed_run()
    if browsed is None:
        return
    run_name, run_dir = browsed
    imported_note = data.not_computed_note(data.load_config(run_dir))
    if imported_note is not None:
        st.info(
            f"{run_name} was {imported_note}. This page shows its groups, rollouts, rewards and "
            "the GRPO advantages recomputed from the dump."
        )
    groups = data.load_groups(run_dir)
    if not groups.steps:
        view.show_warnings(groups.warnings)
        st.info(f"{run_name} logged no prompt groups (groups.jsonl is empty or missing).")
        return
    with_samples = set(data.sample_steps(run_dir))
    steps = groups.steps
    sampled = [step for step in steps if step in with_samples]
    only_sampled = st.checkbox(
        "Only steps with logged rollout texts", value=bool(sampled), disabled=not sampled
    )
    choices = sampled if only_sampled and sampled else steps
    step = view.choose_int("Step", choices, param="step")
    step_groups = groups.of_step(step)
    # After of_step: a bad line of this step is only found when the step is parsed.
    view.show_warnings(groups.warnings)
    samples_log = data.load_samples(run_dir, step)
    view.show_warnings(samples_log.warnings)
    samples = samples_log.records

    st.markdown(f"**Groups of step {step}**")
    view.show_table(tables.step_groups_table(step_groups), hide_index=True)
    group_ids = [g.group_id for g in step_groups]
    group_id = view.choose_int("Group", group_ids, param="group")
    group = next(g for g in step_groups if g.group_id == group_id)
    if not samples:
        st.caption(f"No rollout texts were logged at step {step} (only the CARE bookkeeping).")

    question = next((s.question for s in samples if s.group_id == group_id and s.question), None)
    answers = next((s.answers for s in samples if s.group_id == group_id and s.answers), ())
    _show_prompt(data.load_config(run_dir), group, question, answers)

    rollouts = tables.group_rollouts_table(group, samples)
    facts = st.columns(4)
    facts[0].metric("correct / G", f"{group.n_correct} / {group.G}")
    missing = set(group.not_computed)
    facts[1].metric(
        "K' (negatives used)",
        "not computed" if "hard_negatives" in missing else group.k_prime,
    )
    facts[2].metric(
        "rescued",
        "not computed" if "rescue" in missing else ("yes" if group.rescued else "no"),
    )
    facts[3].metric("RGR", "not computed" if missing else _rgr_label(group.rgr))

    st.subheader("Rollouts")
    st.caption(
        "distance = cosine distance 1 − h·h_anchor of the reasoning embedding to the "
        "(pseudo-)anchor; hard negatives are numbered in the order picked (nearest first)."
    )
    view.show_table(
        rollouts,
        hide_index=True,
        column_config={"response": st.column_config.TextColumn(width="large")},
    )
    st.plotly_chart(figures.group_advantages_figure(rollouts), theme=None)

    anchor = group.pseudo_anchor if group.rescued else group.anchor_index
    if group.rescued:
        st.subheader("All-negative rescue")
        st.markdown(
            f"No rollout was correct, so the failure with the highest old-policy log-probability, "
            f"**#{anchor}**, became the pseudo-anchor; the other failures nearest to it are "
            "pushed down."
        )
    elif group.rescue_impossible:
        st.warning("Rescue was wanted but impossible (no pseudo-negative): all advantages are 0.")
    if anchor is not None:
        label = "Pseudo-anchor" if group.rescued else "Anchor"
        sample = _response_of(samples, group_id, anchor)
        st.markdown(f"**{label} response (#{anchor})**")
        st.code(_text(sample.response) if sample else "(sample not logged)", language=None)
    elif missing:
        st.caption("No anchor: CARE's anchor and negatives are not computed for an imported run.")
    elif group.G and group.n_correct == group.G:
        st.caption("This group has no anchor: every rollout is correct, so none is contrasted.")
    elif not group.rescued:
        st.caption("This group has no anchor (no correct rollout and no rescue).")
    if group.hard_negatives:
        st.markdown("**Chosen negatives**")
        for rank, negative in enumerate(group.hard_negatives, start=1):
            sample = _response_of(samples, group_id, negative.index)
            st.markdown(
                f"{rank}. rollout **#{negative.index}**, distance "
                f"**{_number(negative.distance, '.3f')}**, advantage "
                f"**{_number(group.advantages[negative.index], '+.3f')}**"
            )
            if sample:
                st.code(_text(sample.response), language=None)
    _show_rgr(group, samples)


def _rgr_label(repair: RgrRecord | None) -> str:
    if repair is None:
        return "off"
    if not repair.triggered:
        return "not triggered"
    return "passed" if repair.passed else "failed"


view.run_page("Hard negatives", body)
