"""The GPU smoke check's code paths, run on the CPU at tiny sizes: in process for the plain parts,
and ``scripts/gpu_smoke.sh`` end to end (its FSDP2 part in a process of its own, bf16 mixed
precision as on the GPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from care.smoke import main

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
    assert [s["step"] for s in report["steps"]] == [1, 2]
    assert all(s["time/step"] > 0 for s in report["steps"])
    assert report["advantages"]["care_advantages_ms"] > 0
    assert report["environment"]["device"] == "cpu"
    assert report["ran"] == ["steps", "advantages"] and report["failed"] == {}
    if importlib.util.find_spec("vllm") is None:
        assert report["skipped"]["vllm"].startswith("vLLM is not installed")
    printed = capsys.readouterr().out
    assert printed.count("step: ") == 2 and "advantages: " in printed
    assert "skipped: vllm: vLLM is not installed" in printed or "ran: vllm" in printed


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
