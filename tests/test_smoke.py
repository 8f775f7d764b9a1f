"""The GPU smoke check's code path, run on the CPU at tiny sizes."""

from __future__ import annotations

import json
import math
import platform

import pytest
import torch

from care.runlog import RunReader
from care.smoke import main

REPORTED_KEYS = (
    "step",
    "time/step",
    "time/rollout",
    "time/old_logp_embed",
    "time/rgr",
    "time/update",
    "acc/mean",
    "signal/failure_share_seq",
    "rescue/triggered_frac",
    "rgr/triggered",
    "loss/pg",
    "grad_norm",
)


def test_smoke_check_trains_care_steps_and_times_the_advantage_kernel(tmp_path, capsys):
    report = main(
        [
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--steps",
            "2",
            "--small",
            "--repeats",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert report["environment"] == {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": "cpu",
    }

    # A finished CARE run of two steps in the output folder, with a final checkpoint.
    run = RunReader(tmp_path / "smoke_care")
    assert run.meta["status"] == "finished"
    assert run.config["algo"]["estimator"] == "care"
    assert (tmp_path / "smoke_care" / "checkpoints" / "step_2" / "model.safetensors").is_file()
    assert [s["step"] for s in run.steps] == [1, 2]
    # 4 prompts per step of 8 rollouts each.
    for step in (1, 2):
        groups = [g for g in run.groups if g["step"] == step]
        assert len(groups) == 4 and all(g["G"] == 8 for g in groups)

    # The report is the run's step records, restricted to the reported keys, every one present.
    assert report["steps"] == [{key: record[key] for key in REPORTED_KEYS} for record in run.steps]
    for record, logged in zip(report["steps"], run.steps, strict=True):
        phases = sum(v for k, v in logged.items() if k.startswith("time/") and k != "time/step")
        assert record["time/step"] == pytest.approx(phases)
        assert all(record[f"time/{phase}"] > 0 for phase in ("rollout", "old_logp_embed", "update"))
        assert 0.0 <= record["acc/mean"] <= 1.0
        assert 0.0 <= record["signal/failure_share_seq"] <= 1.0
        assert record["rescue/triggered_frac"] * 4 == round(record["rescue/triggered_frac"] * 4)
        assert record["rgr/triggered"] == sum(
            bool(g["rgr"]["triggered"]) for g in run.groups if g["step"] == record["step"]
        )
        assert math.isfinite(record["loss/pg"]) and math.isfinite(record["grad_norm"])

    advantages = report["advantages"]
    assert advantages["batch"] == "64 prompts x 8 rollouts, D=256"
    for kernel in ("care_advantages_ms", "grpo_advantages_ms"):
        assert advantages[kernel] > 0 and math.isfinite(advantages[kernel])

    # Everything reported is printed, one JSON line per record.
    lines = capsys.readouterr().out.splitlines()
    printed = {line.split(": ", 1)[0]: [] for line in lines}
    for line in lines:
        label, rest = line.split(": ", 1)
        printed[label].append(rest)
    assert [json.loads(text) for text in printed["environment"]] == [report["environment"]]
    assert [json.loads(text) for text in printed["step"]] == report["steps"]
    assert [json.loads(text) for text in printed["advantages"]] == [advantages]
    assert printed["total"] == [f"{report['train_seconds']:.1f} s for 2 CARE steps"]
