"""Accelerator smoke check: a few CARE steps of a small random model, and the CARE advantage
kernel timed on the paper-sized batch, printing every figure.

``scripts/gpu_smoke.sh`` runs this on one H100/H200 in bf16 (``--device cuda``); the test suite
runs the same code path on the CPU with ``--small``. Nothing is downloaded: the data are the
synthetic task and the model is random.

Usage::

    python -m care.smoke --device cuda --dtype bfloat16 --steps 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from care.algo.care import CareConfig, care_advantages
from care.algo.grpo import grpo_advantages
from care.config import config_from_dict
from care.data.synth import write_synthetic_dataset
from care.runlog import RunReader


def _environment(device: torch.device) -> dict[str, str]:
    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(
            gpu=props.name,
            memory_gib=f"{props.total_memory / 2**30:.1f}",
            capability=f"{props.major}.{props.minor}",
            cuda=str(torch.version.cuda),
        )
    return facts


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_advantages(
    device: torch.device, prompts: int, rollouts: int, dim: int, repeats: int
) -> dict[str, float]:
    """Median seconds of care_advantages and the vectorised GRPO z-score on one batch."""
    gen = torch.Generator().manual_seed(0)
    batch = prompts * rollouts
    group_index = torch.arange(prompts).repeat_interleave(rollouts)
    correct = torch.rand(batch, generator=gen) < 0.4
    all_wrong = torch.randperm(prompts, generator=gen)[: prompts // 10]
    correct[torch.isin(group_index, all_wrong)] = False
    inputs = {
        "rewards": correct.float(),
        "correct": correct,
        "group_index": group_index,
        "think_len": torch.randint(50, 800, (batch,), generator=gen),
        "answer_len": torch.randint(1, 30, (batch,), generator=gen),
        "embeddings": torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen), dim=1),
        "old_logprob_sum": -torch.rand(batch, generator=gen) * 300,
    }
    inputs = {k: v.to(device) for k, v in inputs.items()}
    cfg = CareConfig()

    def median(fn) -> float:
        fn()
        _synchronize(device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            _synchronize(device)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    care_s = median(lambda: care_advantages(**inputs, cfg=cfg))
    grpo_s = median(lambda: grpo_advantages(inputs["rewards"], inputs["group_index"]))
    return {"care_advantages_ms": care_s * 1e3, "grpo_advantages_ms": grpo_s * 1e3}


def run_steps(out: Path, device: torch.device, dtype: str, steps: int, small: bool) -> list[dict]:
    """Train ``steps`` CARE steps of a random model on the synthetic task; the step records."""
    data = out / "data"
    image_size = 56 if small else 112
    write_synthetic_dataset(data, seed=0, n_train=32, n_test=8, image_size=image_size)
    tiny = (
        {
            "hidden_size": 32,
            "num_layers": 1,
            "num_heads": 2,
            "num_kv_heads": 1,
            "intermediate_size": 64,
            "vision_hidden_size": 16,
        }
        if small
        else {
            "hidden_size": 512,
            "num_layers": 4,
            "num_heads": 8,
            "num_kv_heads": 4,
            "intermediate_size": 1408,
            "vision_hidden_size": 128,
            "vision_depth": 2,
        }
    )
    cfg = config_from_dict(
        {
            "run": {"name": "smoke_care", "out_dir": str(out), "seed": 0},
            "model": {"dtype": dtype, "image_size": image_size, "tiny": tiny},
            "data": {"train_files": [str(data / "train.jsonl")]},
            "rollout": {"n": 8, "max_new_tokens": 16 if small else 64, "batch_rows": 64},
            "algo": {"estimator": "care"},
            "optim": {"lr": 1e-4},
            "train": {
                "steps": steps,
                "prompts_per_step": 4 if small else 8,
                "mini_batch_prompts": 2 if small else 4,
                "micro_batch_rows": 32,
                "device": str(device),
            },
        }
    )
    from care.train.trainer import Trainer

    Trainer(cfg, progress=False).fit()
    return RunReader(cfg.run_dir).steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--small", action="store_true", help="tiny sizes (CPU tests)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("care.smoke: --device cuda but torch sees no GPU")
    report: dict = {"environment": _environment(device)}
    print("environment:", json.dumps(report["environment"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        start = time.perf_counter()
        steps = run_steps(out, device, args.dtype, args.steps, args.small)
        report["train_seconds"] = time.perf_counter() - start
        keys = (
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
        report["steps"] = [{k: record.get(k) for k in keys} for record in steps]
        for record in report["steps"]:
            print("step:", json.dumps(record), flush=True)
    prompts, dim = (64, 256) if args.small else (512, 3584)
    report["advantages"] = {
        "batch": f"{prompts} prompts x 8 rollouts, D={dim}",
        **time_advantages(device, prompts, 8, dim, args.repeats),
    }
    print("advantages:", json.dumps(report["advantages"]), flush=True)
    print(f"total: {report['train_seconds']:.1f} s for {args.steps} CARE steps", flush=True)
    return report


if __name__ == "__main__":
    main()
