"""`care demo --fast`: the whole loop end to end on the embedded default, from an empty folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from care.cli import app
from care.demo import WARM_START, format_report, summary_data
from care.runlog import RunReader
from care.stats import paired_bootstrap

# `fast_demo` (conftest.py): one `care demo --fast --seeds 0,1` per session, shared with the
# dashboard, export and CLI tests.


def test_fast_demo_trains_grpo_and_care_from_one_warm_start_per_seed(fast_demo):
    out, stdout = fast_demo
    for seed in (0, 1):
        sft_dir = out / f"demo_fast_seed{seed}_sft"
        warm_start = str(sft_dir / "checkpoints" / "step_10")
        for estimator in ("grpo", "care"):
            run = RunReader(out / f"demo_fast_seed{seed}_{estimator}")
            assert run.config["algo"]["estimator"] == estimator
            assert run.config["model"]["path"] == warm_start  # same warm start, same budget
            assert run.config["run"]["seed"] == seed
            # Validation before step 1 (step 0), at step 2 and at the last step (3).
            assert [s["step"] for s in run.steps if "val/acc" in s] == [0, 2, 3]
            assert [s["step"] for s in run.steps if "acc/mean" in s] == [1, 2, 3]
            assert all(s["val/n"] == 8 for s in run.steps if "val/n" in s)
    # Each seed writes its own data.
    first = (out / "data_fast_seed0" / "test.jsonl").read_text()
    assert first != (out / "data_fast_seed1" / "test.jsonl").read_text()
    rows = [line.split("|")[1].strip() for line in stdout.splitlines() if line.startswith("| ")]
    assert rows.count(WARM_START) == 2 and rows.count("grpo") == 2 and rows.count("care") == 2
    assert "across 2 seeds" in stdout
    assert stdout.count("CARE - GRPO (paired by item):") == 2
    assert stdout.count("blank-image check:") == 2
    assert "--fast checks the loop end to end" in stdout  # nobody reads its numbers as results


def test_fast_demo_summary_matches_the_harness_samples_and_the_paired_intervals(fast_demo):
    out, _ = fast_demo
    summary = json.loads((out / "demo_fast_summary.json").read_text())
    assert summary["threads"] == 1  # the default: a seed's numbers depend on the thread count
    assert [entry["seed"] for entry in summary["seeds"]] == [0, 1]
    for entry in summary["seeds"]:
        models = {row["model"]: row for row in entry["models"]}
        assert list(models) == [WARM_START, "grpo", "care"]
        scores = {}
        for name, row in models.items():
            eval_dir = (
                out / f"demo_fast_seed{entry['seed']}_{'sft' if name == WARM_START else name}"
            )
            step = "step_10" if name == WARM_START else "step_3"
            evaluation = json.loads((eval_dir / "eval" / step / "care_synth.json").read_text())
            assert evaluation["n"] == row["n"] == 12
            samples = (eval_dir / "eval" / step / "care_synth_samples.jsonl").read_text()
            by_doc = sorted(
                (json.loads(line)["doc_id"], json.loads(line)["acc"])
                for line in samples.splitlines()
            )
            scores[name] = np.array([acc for _, acc in by_doc], dtype=float)
            assert row["accuracy"]["estimate"] == pytest.approx(evaluation["accuracy"])
        for name in ("grpo", "care"):
            gain = paired_bootstrap(scores[WARM_START], scores[name])
            assert models[name]["gain"]["estimate"] == pytest.approx(gain.estimate)
            assert models[name]["gain"]["low"] == pytest.approx(gain.low)
        diff = paired_bootstrap(scores["grpo"], scores["care"])
        assert entry["care_minus_grpo"]["estimate"] == pytest.approx(diff.estimate)
        assert 0.0 <= entry["blank_images"]["accuracy"] <= 1.0
    across = summary["across_seeds"]
    mean_care = np.mean([e["models"][2]["accuracy"]["estimate"] for e in summary["seeds"]])
    assert across["care accuracy"]["estimate"] == pytest.approx(mean_care)
    assert across["care accuracy"]["low"] <= mean_care <= across["care accuracy"]["high"]


def test_report_mode_reads_finished_seeds_back_without_training(fast_demo):
    out, stdout = fast_demo
    summary = (out / "demo_fast_summary.json").read_text()
    result = CliRunner().invoke(
        app, ["demo", "--fast", "--report", "--out", str(out), "--seeds", "0,1"]
    )
    assert result.exit_code == 0, result.output
    report = [
        line for line in result.stdout.splitlines() if line.startswith(("| ", "CARE", "blank"))
    ]
    trained = [line for line in stdout.splitlines() if line.startswith(("| ", "CARE", "blank"))]
    assert report == trained
    assert (out / "demo_fast_summary.json").read_text() == summary
    missing = CliRunner().invoke(
        app, ["demo", "--fast", "--report", "--out", str(out), "--seeds", "7"]
    )
    assert missing.exit_code == 2
    assert "demo_fast_seed7_sft" in missing.output


def test_report_marks_a_gain_whose_interval_excludes_zero(tmp_path):
    from care.demo import ModelResult, SeedResult

    difficulties = np.array([1, 2, 3] * 100)
    warm = np.zeros(300)
    better = np.zeros(300)
    better[:120] = 1.0  # +40 points, clearly shown
    same = warm.copy()
    same[0] = 1.0  # +0.3 points, not shown
    result = SeedResult(
        seed=0,
        data_dir=tmp_path,
        difficulties=difficulties,
        models=[
            ModelResult(WARM_START, tmp_path, tmp_path, warm),
            ModelResult("grpo", tmp_path, tmp_path, better, _training()),
            ModelResult("care", tmp_path, tmp_path, same, _training()),
        ],
        blank_scores=warm,
    )
    report = format_report([result])
    grpo_line = next(line for line in report.splitlines() if line.startswith("| grpo"))
    care_line = next(line for line in report.splitlines() if line.startswith("| care"))
    assert "40.0 [" in grpo_line and " *" in grpo_line
    assert " *" not in care_line
    assert "CARE - GRPO (paired by item): -39.7" in report and "(shown)" in report
    data = summary_data([result])
    assert data["seeds"][0]["models"][1]["by_difficulty"] == {"1": 0.4, "2": 0.4, "3": 0.4}


def _training() -> dict[str, float]:
    keys = (
        "failure_share rescue_rate rgr_pass_rate acc_diff_std train_acc_first10 train_acc_last10 "
        "all_wrong_first10 mixed_first10 val_acc_start val_acc_end"
    )
    return {key: 0.5 for key in keys.split()}


def test_cpu_threads_sets_torch_and_subprocess_threads_and_restores_them(monkeypatch):
    import os

    import torch

    from care.demo import cpu_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with cpu_threads(target):
        assert torch.get_num_threads() == target
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == str(target)
    assert torch.get_num_threads() == before
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ
    with pytest.raises(ValueError, match="threads must be >= 1"):
        with cpu_threads(0):
            pass
