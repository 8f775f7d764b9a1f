"""The `care` command line: commands that exist today behave and exit as documented."""

from __future__ import annotations

from typer.testing import CliRunner

import care
from care.cli import app
from care.runlog import STEPS_FILE, RunWriter

runner = CliRunner()


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == care.__version__


def test_estimators_lists_every_registered_method_with_its_loss_settings():
    result = runner.invoke(app, ["estimators"])
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.stdout.splitlines() if line and not line[0].isspace()]
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


def test_inspect_of_a_missing_folder_fails_with_a_clear_message(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "nope" in result.output
