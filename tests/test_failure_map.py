"""The failure map: one group's rationales in 2-D and failure modes across training, on runs
with planted modes (`fixtures.runs`, ``projections=True``) and on the CARE run the real trainer
wrote (`fast_demo`), and its dashboard page under AppTest."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the failure map needs the 'app' extra")
pytest.importorskip("streamlit", reason="the dashboard needs the 'app' extra")

from fixtures.pages import open_page, page_texts  # noqa: E402
from fixtures.runs import write_synthetic_run  # noqa: E402

from analysis_app import data, failure_map, figures  # noqa: E402
from care.runlog import RunReader  # noqa: E402

PAGE = "failure_map.py"


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """care (30 steps, planted failure modes, samples every 10) and grpo (no projections)."""
    root = tmp_path_factory.mktemp("runs")
    write_synthetic_run(root / "care", steps=30, projections=True)
    write_synthetic_run(root / "grpo", steps=30, estimator="grpo", seed=1)
    return root


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    data.clear_cache()


# ---------------------------------------------------------------------------------------------
# planted modes


def test_group_map_marks_every_role_and_keeps_one_mode_together(runs_root: Path) -> None:
    group = data.load_groups(runs_root / "care").of_step(10)[0]  # anchor 2, negatives 0 and 3
    mapped = failure_map.group_map(group)
    points = mapped.points
    assert points["role"].tolist() == [
        "hard negative", "other failure", "anchor", "hard negative", "RGR repair"
    ]  # fmt: skip
    assert points["pick"].tolist()[0] == 1 and points["pick"].tolist()[3] == 2
    assert math.isnan(points["pick"].tolist()[1])
    assert points["repaired"].tolist() == [True, False, False, False, False]
    assert points["correct"].tolist() == [False, False, True, False, True]  # repair passed (even)
    assert points["advantage"].tolist() == [0.0, 0.0, 2.0, -0.5, 0.5]
    xy = points[["x", "y"]].to_numpy()
    # #1 and #3 are mode B (same axis, offsets 0.01 apart); #0 is mode A, sqrt(2) away.
    assert np.linalg.norm(xy[1] - xy[3]) < 0.05
    assert np.linalg.norm(xy[1] - xy[0]) > 1.0
    first, second = mapped.explained
    assert first >= second > 0 and first + second <= 1.0
    figure = figures.group_map_figure(points)
    traces = {trace.name: list(trace.text) for trace in figure.data if trace.name}
    assert traces["hard negative"] == ["#0 (pick 1)", "#3 (pick 2)"]
    assert traces["RGR repair"] == ["repair"]


def test_failure_modes_recover_the_planted_modes_and_what_care_did_with_them(
    runs_root: Path,
) -> None:
    points, warnings = failure_map.load_failure_points(runs_root / "care")
    assert warnings == [] and len(points) == 9 * 30 and points.groups == 4 * 30
    modes = failure_map.failure_modes(points, k=2)
    table = failure_map.mode_table(points, modes).set_index("mode")
    # mode 1 = B (6 failures a step, 4 picked, 1 repair that fails), mode 2 = A (3, all picked,
    # 1 repair that passes on even steps).
    assert table["failures"].tolist() == [180, 90]
    assert table["share of failures"].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert table["picked as hard negative"].tolist() == pytest.approx([4 / 6, 1.0])
    assert table["share of picks"].tolist() == pytest.approx([4 / 7, 3 / 7])
    assert table["pseudo-anchor"].tolist() == pytest.approx([1 / 6, 0.0])  # template 1's #1
    assert table["repaired by RGR"].tolist() == pytest.approx([1 / 6, 1 / 3])
    assert table["RGR pass rate"].tolist() == pytest.approx([0.0, 0.5])
    shares = failure_map.mode_shares(points, modes)
    assert shares.index.tolist() == list(range(1, 31))
    assert np.allclose(shares.to_numpy(), [[2 / 3, 1 / 3]] * 30)
    examples = failure_map.mode_examples(points, modes, data.sample_steps(runs_root / "care"))
    assert all(example[0] in (10, 20, 30) for example in examples)
    responses, _ = failure_map.example_responses(runs_root / "care", examples)
    step, group_id, rollout = examples[1]
    assert rollout == 0 and responses[1] == (
        f"s{step} g{group_id} r0: counting the shapes (wrong). \\boxed{{1}}"
    )
    bars = figures.mode_shares_figure(shares)
    assert [trace.name for trace in bars.data] == ["mode 1", "mode 2"]


def test_too_many_modes_or_none_are_refused() -> None:
    points = failure_map.failure_points([])
    assert len(points) == 0 and not points.has_projections
    with pytest.raises(ValueError, match="0 failures cannot form 2 failure modes"):
        failure_map.failure_modes(points, 2)
    with pytest.raises(ValueError, match="must be >= 1, got 0"):
        failure_map.failure_modes(points, 0)


def test_the_page_draws_the_group_and_the_modes(
    runs_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_page(
        PAGE, runs_root, monkeypatch, run="care", browse="care", step="20", group="3", modes="2"
    )
    assert [s.value for s in app.selectbox] == ["care", "20", "3", "2"]
    assert len(app.get("plotly_chart")) == 2
    group_points, modes = app.dataframe[0].value, app.dataframe[1].value
    # Group 3: anchor 1, hard negatives 2 then 0, a failed repair of rollout 2.
    assert group_points["role"].tolist() == [
        "hard negative", "anchor", "hard negative", "other correct", "RGR repair"
    ]  # fmt: skip
    assert group_points["pick"].tolist()[2] == 1 and group_points["pick"].tolist()[0] == 2
    assert modes["failures"].tolist() == [180, 90]
    assert modes["example response"].str.contains(r"counting the shapes \(wrong\)").all()
    assert "270 failed rollouts of every step" in page_texts(app)


def test_a_run_without_projections_gets_a_message(
    runs_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_page(PAGE, runs_root, monkeypatch, run="grpo")
    assert "grpo (grpo) logged no rationale projections" in app.info[0].value
    assert not app.error and not app.get("plotly_chart")


# ---------------------------------------------------------------------------------------------
# the CARE run the real trainer wrote


def demo_run(fast_demo: tuple[Path, str], estimator: str) -> Path:
    out, _ = fast_demo
    return out / f"demo_fast_seed0_{estimator}"


def test_the_trainer_logs_projections_for_care_only(fast_demo: tuple[Path, str]) -> None:
    care_groups = RunReader(demo_run(fast_demo, "care")).groups
    for group in care_groups:
        repaired = group.rgr is not None and group.rgr.triggered
        assert len(group.projection) == group.G + repaired
        assert all(len(vector) == 32 for vector in group.projection)
    assert len({vector for group in care_groups for vector in group.projection}) > 1
    assert all(group.projection is None for group in RunReader(demo_run(fast_demo, "grpo")).groups)


def test_the_failure_map_of_a_trainer_written_care_run(
    fast_demo: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = demo_run(fast_demo, "care")
    groups = RunReader(run_dir).groups
    points, warnings = failure_map.load_failure_points(run_dir)
    failures = sum(group.G - group.n_correct for group in groups)
    assert warnings == [] and len(points) == failures and points.groups_without == 0
    modes = failure_map.failure_modes(points, k=2)
    table = failure_map.mode_table(points, modes)
    assert table["failures"].sum() == failures
    picks = sum(len(group.hard_negatives) for group in groups)
    assert picks > 0  # else the pick counts below would compare 0 with 0
    picked = (table["picked as hard negative"] * table["failures"]).sum()
    assert picked == pytest.approx(picks)
    repairs = [group.rgr for group in groups if group.rgr.triggered]
    rescued = sum(group.rescued for group in groups)
    assert (table["pseudo-anchor"] * table["failures"]).sum() == pytest.approx(rescued)
    assert (table["repaired by RGR"] * table["failures"]).sum() == pytest.approx(len(repairs))
    # Every group of the map has its anchor, negatives and repair where the record says.
    group = max(groups, key=lambda g: (g.rgr.triggered, g.k_prime, g.step))
    points_of_group = failure_map.group_map(group).points
    roles = points_of_group["role"].tolist()
    # The fast demo's groups are all wrong and rescued: a pseudo-anchor rather than an anchor.
    if group.anchor_index is not None:
        assert roles[group.anchor_index] == "anchor"
    else:
        assert group.rescued and roles[group.pseudo_anchor] == "pseudo-anchor"
    assert group.k_prime > 0
    assert [roles[negative.index] for negative in group.hard_negatives] == (
        ["hard negative"] * group.k_prime
    )
    assert (roles[-1] == "RGR repair") == group.rgr.triggered
    app = open_page(
        PAGE, run_dir.parent, monkeypatch,
        run=run_dir.name, browse=run_dir.name, step=str(group.step), group=str(group.group_id),
        modes="2",
    )  # fmt: skip
    assert app.dataframe[0].value["role"].tolist() == roles
    assert app.dataframe[1].value["failures"].sum() == failures
