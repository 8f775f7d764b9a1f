"""`care demo --fast`: the whole loop end to end on the embedded default, from an empty folder."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from care.cli import app
from care.runlog import RunReader


def test_fast_demo_trains_grpo_and_care_from_one_warm_start_and_evaluates_both(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--fast", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table[1:]] == ["sft (warm start)", "grpo", "care"]

    summary = json.loads((tmp_path / "demo_fast_seed0_summary.json").read_text())
    sft_dir, grpo_dir, care_dir = (tmp_path / f"demo_fast_seed0_{n}" for n in ("sft", "grpo", "care"))
    warm_start = str(sft_dir / "checkpoints" / "step_10")
    for run_dir, estimator in ((grpo_dir, "grpo"), (care_dir, "care")):
        run = RunReader(run_dir)
        assert run.config["algo"]["estimator"] == estimator
        assert run.config["model"]["path"] == warm_start  # same warm start, same budget
        assert len(run.steps) == run.config["train"]["steps"]
        evaluation = json.loads((run_dir / "eval" / "step_3" / "care_synth.json").read_text())
        assert evaluation["n"] == 12
        samples = (run_dir / "eval" / "step_3" / "care_synth_samples.jsonl").read_text().splitlines()
        accuracy = sum(json.loads(line)["acc"] for line in samples) / len(samples)
        assert accuracy == evaluation["accuracy"]
        row = next(r for r in summary if r["estimator"] == estimator)
        assert row["test_accuracy"] == evaluation["accuracy"]
        shares = [s["signal/failure_share_seq"] for s in run.steps]
        if all(v is not None for v in shares):
            assert abs(row["failure_share"] - sum(shares) / len(shares)) < 1e-9
