"""The `care` command line: commands that exist today behave and exit as documented."""

from __future__ import annotations

from typer.testing import CliRunner

import care
from care.cli import app
from care.runlog import GROUPS_FILE, STEPS_FILE, RunReader, RunWriter

runner = CliRunner()


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == care.__version__


def test_estimators_lists_every_registered_method_with_its_loss_settings():
    result = runner.invoke(app, ["estimators"])
    assert result.exit_code == 0
    names = [
        line.split()[0] for line in result.stdout.splitlines() if line and not line[0].isspace()
    ]
    assert names == ["care", "care_no_rgr", "dapo", "dr_grpo", "grpo", "gspo"]
    assert "aggregation=seq_mean_token_sum_norm" in result.stdout  # Dr. GRPO
    assert "clip_high=0.28" in result.stdout  # DAPO clip-higher


def test_inspect_summarises_a_run_and_reports_a_corrupt_line_with_file_and_line(tmp_path):
    run = tmp_path / "run"
    with RunWriter.create(run, {"algo": {"estimator": "care"}}, seed=3) as writer:
        for step in range(3):
            writer.log_step(step, {"acc/mean": 0.25 * step})
    ok = runner.invoke(app, ["inspect", str(run)])
    assert ok.exit_code == 0, ok.output
    assert "estimator: care" in ok.stdout
    assert "3 logged, last step 2" in ok.stdout
    assert "status:    finished" in ok.stdout

    lines = (run / STEPS_FILE).read_text().splitlines(keepends=True)
    lines.insert(1, "{not json\n")
    (run / STEPS_FILE).write_text("".join(lines))
    bad = runner.invoke(app, ["inspect", str(run)])
    assert bad.exit_code == 2
    assert "steps.jsonl:2" in bad.output
    assert "3 logged" in bad.stdout


def test_inspect_counts_the_typed_records_of_a_trainer_written_run(fast_demo):
    out, _ = fast_demo
    run_dir = out / "demo_fast_seed0_care"
    run = RunReader(run_dir)
    result = runner.invoke(app, ["inspect", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "estimator: care" in result.stdout
    assert "steps:     4 logged, last step 3" in result.stdout
    mixed = sum(0 < group.n_correct < group.G for group in run.groups)
    wrong = sum(group.n_correct == 0 for group in run.groups)
    repairs = sum(group.rgr.triggered for group in run.groups)
    assert (
        f"groups:    12 records ({mixed} mixed, {wrong} all wrong, {12 - mixed - wrong} all "
        f"correct; {sum(group.rescued for group in run.groups)} rescued, {repairs} RGR repairs)"
    ) in result.stdout
    rollouts = sum(len(run.samples(step)) for step in (1, 2, 3))
    assert rollouts == 3 * 4 * 4 + repairs  # every rollout of every step, and the repairs
    assert f"samples:   {rollouts} rollout texts in 3 steps" in result.stdout


def test_inspect_reports_a_malformed_record_with_file_line_and_field(tmp_path):
    run = tmp_path / "run"
    record = {
        "group_id": 0, "prompt_id": "p", "G": 2, "n_correct": 1, "anchor_index": 0,
        "hard_negatives": [], "k_prime": 0, "rescued": False, "pseudo_anchor": None,
        "rescue_impossible": False, "rgr": None, "advantages": [1.0, -1.0],
        "rewards": [1.0, 0.0], "correct": [True, False],
    }  # fmt: skip
    with RunWriter.create(run, {"algo": {"estimator": "grpo"}}, seed=0) as writer:
        writer.log_groups(1, [record, {**record, "group_id": 1}])
        writer.log_step(1, {"acc/mean": 0.5})
    lines = (run / GROUPS_FILE).read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"n_correct":1', '"n_correct":2')
    (run / GROUPS_FILE).write_text("".join(lines))
    result = runner.invoke(app, ["inspect", str(run)])
    assert result.exit_code == 2
    assert "groups:    1 records" in result.stdout
    assert (
        f"{run / GROUPS_FILE}:2: group record: field 'n_correct': is 2 but 'correct' holds 1 true"
    ) in result.output


def test_inspect_of_a_missing_folder_fails_with_a_clear_message(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "nope" in result.output
