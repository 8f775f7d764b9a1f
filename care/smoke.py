"""Accelerator smoke check, in parts, printing every figure and what ran, was skipped or failed:

- ``steps``: a few CARE steps of a small random model on the synthetic task;
- ``fsdp2``: two CARE steps through accelerate's FSDP2 with one process (whole weights gathered
  for rollout and scoring, a full-state checkpoint after each step), then a resume from the
  step-1 checkpoint that must train step 2 again to the same weights; prints the dtype of the
  trainable weights and of the checkpoint. It switches accelerate's process-wide state to FSDP,
  so it runs in a process of its own (``--parts fsdp2``);
- ``vllm``: where vLLM is installed, a rollout of the tiny vision model through the vLLM engine,
  with the vision-token count vLLM saw checked against the trainer's processor;
- ``advantages``: ``care_advantages`` and the GRPO z-score timed on the paper-sized batch.

``scripts/gpu_smoke.sh`` runs every part on one H100/H200 in bf16 (``--device cuda``); the test
suite runs them on the CPU with ``--small``. Nothing is downloaded: the data are the synthetic
task and the model is random. The exit status is 1 when a part failed.

Usage::

    python -m care.smoke --device cuda --dtype bfloat16 --parts steps,vllm,advantages
    python -m care.smoke --device cuda --dtype bfloat16 --parts fsdp2
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from care.algo.care import CareConfig, care_advantages
from care.algo.grpo import grpo_advantages
from care.config import config_from_dict
from care.data.synth import write_synthetic_dataset
from care.models.tiny_config import SMALLEST_SHAPE, TinyVLMConfig
from care.runlog import RunReader

PARTS = ("steps", "fsdp2", "vllm", "advantages")


# What the smoke report keeps of each step record.
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


def _environment(device: torch.device) -> dict[str, str]:
    import accelerate
    import transformers

    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
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


def smoke_config(
    out: Path, device: torch.device, dtype: str, steps: int, small: bool, name: str, **train: Any
):
    """The smoke run's config: CARE on the synthetic task (written under ``out/data`` once) with
    the tiny model (``small``) or a small Qwen2.5-VL-architecture one (hidden 512, 4 layers)."""
    data = out / "data"
    image_size = 56 if small else 112
    if not (data / "train.jsonl").is_file():
        write_synthetic_dataset(data, seed=0, n_train=32, n_test=8, image_size=image_size)
    tiny = (
        dict(SMALLEST_SHAPE)
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
    return config_from_dict(
        {
            "run": {"name": name, "out_dir": str(out), "seed": 0},
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
                **train,
            },
        }
    )


def run_steps(out: Path, device: torch.device, dtype: str, steps: int, small: bool) -> list[dict]:
    """Train ``steps`` CARE steps of a random model on the synthetic task; the step records."""
    from care.train.trainer import Trainer

    cfg = smoke_config(out, device, dtype, steps, small, "smoke_care")
    Trainer(cfg, progress=False).fit()
    return RunReader(cfg.run_dir).steps


def fsdp2_unavailable() -> str | None:
    """Why FSDP2 cannot run here (None when it can): torch's ``fully_shard`` and accelerate's
    version-2 FSDP plugin are needed."""
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError as error:
        return f"torch {torch.__version__} has no torch.distributed.fsdp.fully_shard ({error})"
    try:
        from care.train.fsdp2 import fsdp2_plugin

        fsdp2_plugin()
    except (ImportError, TypeError, ValueError) as error:
        return f"accelerate cannot build an FSDP2 plugin: {error}"
    return None


def run_fsdp2_steps(out: Path, device: torch.device, dtype: str, small: bool) -> dict[str, Any]:
    """Two CARE steps through FSDP2 with one process, a checkpoint after each, then a resume from
    step 1 that trains step 2 again; the figures (see the module docstring).

    bf16 runs with accelerate's bf16 mixed precision, as ``configs/accelerate/fsdp_8gpu.yaml``:
    accelerate then keeps float32 copies of the trainable weights, and checkpoints are float32.
    """
    from safetensors.torch import load_file

    from care.train.fsdp2 import fsdp2_accelerator, single_process_group_env
    from care.train.trainer import Trainer

    single_process_group_env()
    mixed = "bf16" if dtype == "bfloat16" else "no"

    def accelerator():
        # A fresh Accelerator per trainer, as a restarted job has.
        return fsdp2_accelerator(cpu=device.type == "cpu", mixed_precision=mixed)

    cfg = smoke_config(out, device, dtype, 2, small, "smoke_fsdp2", save_every=1)
    straight = Trainer(cfg, accelerator=accelerator(), progress=False)
    params = list(straight.policy.parameters())
    sharded = sum(hasattr(param, "full_tensor") for param in params)
    trainable = sorted({str(p.dtype) for p in params if p.requires_grad})
    straight.fit()
    final = {n: p.full_tensor().detach().cpu() for n, p in straight.policy.named_parameters()}
    checkpoints = cfg.run_dir / "checkpoints"
    saved = load_file(checkpoints / "step_2" / "model.safetensors")
    steps = RunReader(cfg.run_dir).steps
    shutil.rmtree(checkpoints / "step_2")
    resumed = Trainer(cfg, resume=True, accelerator=accelerator(), progress=False)
    resumed.fit()
    again = {n: p.full_tensor().detach().cpu() for n, p in resumed.policy.named_parameters()}
    difference = max(float((final[n].float() - again[n].float()).abs().max()) for n in final)
    return {
        "sharded_parameters": f"{sharded} of {len(params)}",
        "mixed_precision": mixed,
        "trainable_dtype": trainable,
        "checkpoint_dtype": sorted({str(t.dtype) for t in saved.values()}),
        "checkpoint_matches_weights": all(
            torch.equal(saved[n], final[n].to(saved[n].dtype)) for n in final if n in saved
        ),
        "resume_max_abs_difference": difference,
        "steps": [
            {k: record.get(k) for k in ("step", "time/rollout", "time/update", "loss/pg")}
            for record in steps
        ],
    }


def vllm_unavailable() -> str | None:
    """Why the vLLM part cannot run here (None when it can)."""
    try:
        import vllm  # noqa: F401
    except ImportError as error:
        return f"vLLM is not installed ({error}); see docs/vllm.md"
    return None


def run_vllm_rollout(small: bool) -> dict[str, Any]:
    """A rollout of the tiny vision model through the vLLM engine: two requests with a plain
    image each, four samples of up to 16 tokens; the vision tokens vLLM expanded each image to
    must equal what the trainer's processor gives (the trainer scores vLLM's samples with it)."""
    from care.models.policy import encode_context
    from care.models.tokenizer import train_tiny_bpe_tokenizer
    from care.models.vlm import build_tiny_vlm
    from care.prompts import build_messages, render_prompt
    from care.rollout.base import RolloutRequest, SamplingParams
    from care.rollout.vllm import VLLMRolloutEngine

    hidden = 64 if small else 256
    model, processor = build_tiny_vlm(
        train_tiny_bpe_tokenizer(),
        shape=TinyVLMConfig(hidden_size=hidden, intermediate_size=2 * hidden),
        image_size=112,
        seed=0,
    )
    requests = []
    for colour, question in (
        ((200, 40, 40), "Which colour fills the image?"),
        ((40, 40, 200), "Is it blue?"),
    ):
        messages = build_messages(question, None, num_images=1)
        image = Image.new("RGB", (160, 120), colour)
        requests.append(RolloutRequest(render_prompt(processor, messages), [image]))
    start = time.perf_counter()
    engine = VLLMRolloutEngine.from_policy(
        model,
        processor,
        dtype="float32",
        gpu_memory_utilization=0.3,
        max_model_len=512,
        enforce_eager=True,
        limit_images_per_prompt=1,
    )
    started = time.perf_counter() - start
    outputs = engine.generate(requests, SamplingParams(n=4, max_new_tokens=16, seed=0))
    trainer_ids = [len(encode_context(processor, r.prompt, r.images).input_ids) for r in requests]
    return {
        "start_seconds": round(started, 1),
        "samples": [len(samples) for samples in outputs],
        "response_lengths": [[len(s.response_ids) for s in samples] for samples in outputs],
        "prompt_ids_vllm": [len(samples[0].prompt_ids) for samples in outputs],
        "prompt_ids_trainer": trainer_ids,
    }


def _run_part(name: str, report: dict, why_not: str | None, run: Callable[[], Any]) -> None:
    """Run one part and print what happened: ``ran``, ``skipped`` (with why) or ``failed``."""
    if why_not is not None:
        report["skipped"][name] = why_not
        print(f"skipped: {name}: {why_not}", flush=True)
        return
    start = time.perf_counter()
    try:
        report[name] = run()
    except Exception as error:  # a smoke check reports every part, then fails
        report["failed"][name] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
        print(f"failed: {name}: {type(error).__name__}: {error}", flush=True)
        return
    report["ran"].append(name)
    print(f"ran: {name} ({time.perf_counter() - start:.1f} s)", flush=True)


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
    parser.add_argument(
        "--parts",
        default="steps,vllm,advantages",
        help=f"comma-separated, from {', '.join(PARTS)}; fsdp2 needs a process of its own",
    )
    args = parser.parse_args(argv)
    parts = [part for part in args.parts.split(",") if part]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"care.smoke: unknown part(s) {unknown}; choose from {list(PARTS)}")
    if "fsdp2" in parts and len(parts) > 1:
        raise SystemExit(
            "care.smoke: run --parts fsdp2 on its own: it switches accelerate's process-wide "
            "state to FSDP, which the other parts must not inherit"
        )
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("care.smoke: --device cuda but torch sees no GPU")
    report: dict = {"environment": _environment(device), "ran": [], "skipped": {}, "failed": {}}
    print("environment:", json.dumps(report["environment"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)

        def steps() -> list[dict]:
            start = time.perf_counter()
            records = run_steps(out, device, args.dtype, args.steps, args.small)
            report["train_seconds"] = time.perf_counter() - start
            kept = [{k: record.get(k) for k in REPORTED_KEYS} for record in records]
            for record in kept:
                print("step:", json.dumps(record), flush=True)
            print(f"total: {report['train_seconds']:.1f} s for {args.steps} CARE steps")
            return kept

        def fsdp2() -> dict[str, Any]:
            figures = run_fsdp2_steps(out, device, args.dtype, args.small)
            print("fsdp2:", json.dumps(figures), flush=True)
            return figures

        def vllm() -> dict[str, Any]:
            figures = run_vllm_rollout(args.small)
            print("vllm:", json.dumps(figures), flush=True)
            if figures["prompt_ids_vllm"] != figures["prompt_ids_trainer"]:
                raise RuntimeError(
                    "vLLM expanded the images to other numbers of vision tokens than the "
                    f"trainer's processor: {figures['prompt_ids_vllm']} vs "
                    f"{figures['prompt_ids_trainer']} prompt ids"
                )
            return figures

        def advantages() -> dict[str, Any]:
            prompts, dim = (64, 256) if args.small else (512, 3584)
            figures = {
                "batch": f"{prompts} prompts x 8 rollouts, D={dim}",
                **time_advantages(device, prompts, 8, dim, args.repeats),
            }
            print("advantages:", json.dumps(figures), flush=True)
            return figures

        runners = {"steps": steps, "fsdp2": fsdp2, "vllm": vllm, "advantages": advantages}
        for part in parts:
            why_not = None
            if part == "fsdp2":
                why_not = fsdp2_unavailable()
            elif part == "vllm":
                why_not = vllm_unavailable()
            _run_part(part, report, why_not, runners[part])
    summary = {key: report[key] for key in ("ran", "skipped", "failed")}
    print("summary:", json.dumps(summary), flush=True)
    return report


if __name__ == "__main__":
    raise SystemExit(1 if main()["failed"] else 0)
