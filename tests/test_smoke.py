"""The GPU smoke check's code paths, run on the CPU at tiny sizes: in process for the plain parts,
and ``scripts/gpu_smoke.sh`` end to end (its FSDP2 part in a process of its own, bf16 mixed
precision as on the GPU)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

import accelerate
import pytest
import torch
import transformers

from care.runlog import RunReader
from care.smoke import REPORTED_KEYS, main

ROOT = Path(__file__).resolve().parents[1]


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
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "device": "cpu",
    }
    # The parts it ran, and the one it skipped with the reason where vLLM is missing.
    assert report["ran"] == ["steps", "advantages"] and report["failed"] == {}
    vllm_missing = importlib.util.find_spec("vllm") is None
    if vllm_missing:
        assert report["skipped"]["vllm"].startswith("vLLM is not installed")

    # A finished CARE run of two steps in the output folder, with a final checkpoint.
    run = RunReader(tmp_path / "smoke_care")
    assert run.meta["status"] == "finished"
    assert run.config["algo"]["estimator"] == "care"
    assert (tmp_path / "smoke_care" / "checkpoints" / "step_2" / "model.safetensors").is_file()
    assert [s["step"] for s in run.steps] == [1, 2]
    # 4 prompts per step of 8 rollouts each.
    for step in (1, 2):
        groups = [g for g in run.groups if g.step == step]
        assert len(groups) == 4 and all(g.G == 8 for g in groups)

    # The report is the run's step records, restricted to the reported keys, every one present;
    # the keys hold the method's own signals, not only timings.
    assert {"signal/failure_share_seq", "rescue/triggered_frac", "rgr/triggered"} <= set(
        REPORTED_KEYS
    )
    assert report["steps"] == [{key: record[key] for key in REPORTED_KEYS} for record in run.steps]
    for record, logged in zip(report["steps"], run.steps, strict=True):
        phases = sum(v for k, v in logged.items() if k.startswith("time/") and k != "time/step")
        assert record["time/step"] == pytest.approx(phases)
        assert all(record[f"time/{phase}"] > 0 for phase in ("rollout", "old_logp_embed", "update"))
        assert 0.0 <= record["acc/mean"] <= 1.0
        assert 0.0 <= record["signal/failure_share_seq"] <= 1.0
        assert record["rescue/triggered_frac"] * 4 == round(record["rescue/triggered_frac"] * 4)
        assert record["rgr/triggered"] == sum(
            bool(g.rgr.triggered) for g in run.groups if g.step == record["step"]
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
    assert [json.loads(text) for text in printed["summary"]] == [
        {key: report[key] for key in ("ran", "skipped", "failed")}
    ]
    assert [text.split(" (")[0] for text in printed["ran"]] == ["steps", "advantages"]
    if vllm_missing:
        assert printed["skipped"] == [f"vllm: {report['skipped']['vllm']}"]


def test_the_fsdp2_part_needs_a_process_of_its_own():
    with pytest.raises(SystemExit, match="run --parts fsdp2 on its own"):
        main(["--device", "cpu", "--parts", "steps,fsdp2"])
    with pytest.raises(SystemExit, match=r"unknown part\(s\) \['sharding'\]"):
        main(["--device", "cpu", "--parts", "sharding"])


@pytest.mark.slow
def test_gpu_smoke_script_runs_every_part_and_says_what_was_skipped(tmp_path):
    env = {
        **os.environ,
        "SMOKE_DEVICE": "cpu",
        "SMOKE_DTYPE": "bfloat16",
        "STEPS": "1",
        # The GPU time limits do not hold on a shared CPU; a hang still ends the test.
        "PARTS_LIMIT_S": "400",
        "FSDP2_LIMIT_S": "400",
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_smoke.sh"), "--small", "--repeats", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout
    assert done.returncode == 0, f"{out[-3000:]}\n{done.stderr[-3000:]}"
    summaries = [
        json.loads(line[len("summary: ") :])
        for line in out.splitlines()
        if line.startswith("summary: ")
    ]
    assert [s["ran"] for s in summaries] == [["steps", "advantages"], ["fsdp2"]]
    assert all(s["failed"] == {} for s in summaries)
    assert "skipped: vllm: vLLM is not installed" in out
    fsdp2 = json.loads(next(line for line in out.splitlines() if line.startswith("fsdp2: "))[7:])
    # Every parameter sharded; accelerate keeps float32 master weights of the bf16 model and
    # saves them; the resume from step 1 trains step 2 to the same bits.
    assert fsdp2["sharded_parameters"] == "32 of 32"
    assert fsdp2["mixed_precision"] == "bf16"
    assert fsdp2["trainable_dtype"] == ["torch.float32"]
    assert fsdp2["checkpoint_dtype"] == ["torch.float32"]
    assert fsdp2["checkpoint_matches_weights"] is True
    assert fsdp2["resume_max_abs_difference"] == 0.0
    assert [s["step"] for s in fsdp2["steps"]] == [1, 2]
