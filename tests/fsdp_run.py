"""The trainer under FSDP2 on CPU processes: the script ``tests/test_fsdp2_cpu.py`` launches.

    python -m torch.distributed.run --nproc_per_node 2 tests/fsdp_run.py CONFIG OUT_DIR MIXED ...

Each process builds the real :class:`~care.train.trainer.Trainer` with accelerate's FSDP2
preparation (``care.train.fsdp2.fsdp2_accelerator(cpu=True)``, gloo), trains two steps with a
checkpoint after each, then resumes the same run from the step-1 checkpoint and trains step 2
again, then starts the vLLM engine (a recording stand-in for ``vllm.LLM``) from the trained,
sharded policy. It writes ``rank<r>.pt`` with what the tests compare. Called in-process with
``fsdp=False`` it is the one-process reference (no resume, no vLLM).

Rollouts are scripted by example (:class:`ScriptedRollouts`), so one and two processes train the
same rows, but every engine call first runs the real transformers engine ``1 + rank`` times on
the first request: its image goes through the vision tower before any forward through the whole
model, and the processes call ``generate`` a different number of times.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from tiny_run import recording_vllm_modules, scripted_groups

ROOT = Path(__file__).resolve().parents[1]
HANG_TIMEOUT_S = 600  # a normal launch takes about 1 minute; a hang fails after this


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun(script: Path, *args: str, processes: int = 2, timeout: float = HANG_TIMEOUT_S) -> str:
    """Run ``script`` under ``torchrun --nproc_per_node processes`` on a free local port.

    A hang (processes waiting for each other in a collective) fails after ``timeout`` seconds;
    the whole process group is killed then, so no stuck worker outlives the test.
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(processes),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(script),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        output, _ = process.communicate()
        raise AssertionError(
            f"{' '.join(command)} hung for {timeout} s (processes stuck in a collective)\n"
            f"{output[-4000:]}"
        ) from None
    assert process.returncode == 0, f"{' '.join(command)}\n{output[-8000:]}"
    return output


class ScriptedRollouts:
    """Rollouts that depend only on the example, around the real transformers engine.

    Examples (training-set indices) in ``mixed`` get one correct rollout (sample 0) and three
    wrong ones: CARE anchors and repairs them, DAPO keeps them; the others get four correct
    rollouts (no repair; DAPO drops them). A request is matched to its example by image
    identity (the trainer caches each example's decoded images).
    """

    def __init__(self, trainer: Any, mixed: set[int]) -> None:
        self.trainer = trainer
        self.real = trainer.engine
        self.tokenizer = trainer.processor.tokenizer
        self.mixed = mixed
        self.suppress_token_ids = list(self.real.suppress_token_ids)
        self.stop = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.calls = 0
        self.real_calls = 0

    def _example_index(self, request: Any) -> int:
        cache = self.trainer._image_cache
        return next(i for i, images in cache.items() if images[0] is request.images[0])

    def generate(self, requests: list, params: Any) -> list:
        from care.rollout.base import RolloutRequest, SamplingParams

        self.calls += 1
        self.last_call = (requests, params)
        first = requests[0]
        probe = [RolloutRequest(prompt=first.prompt, images=first.images)]
        for _ in range(1 + self.trainer.rank):
            self.real.generate(probe, SamplingParams(n=1, max_new_tokens=2, seed=0))
            self.real_calls += 1
        return scripted_groups(self, requests, params.n, self.mixed)

    def sync_weights(self, model: Any) -> None:
        self.real.sync_weights(model)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """A plain CPU copy; FSDP2 shards (DTensors) are gathered first (a collective)."""
    if hasattr(tensor, "full_tensor"):
        tensor = tensor.full_tensor()
    return tensor.detach().clone().cpu()


def whole_params(trainer: Any) -> dict[str, torch.Tensor]:
    return {name: whole(param) for name, param in trainer.policy.named_parameters()}


def _watch_first_update(trainer: Any) -> dict[str, torch.Tensor]:
    """The gradients of the first optimizer update, gathered whole, filled in when it runs."""
    grads: dict[str, torch.Tensor] = {}
    step = trainer.optimizer.step

    def step_and_record(*args: Any, **kwargs: Any) -> Any:
        if not grads:
            for name, param in trainer.policy.named_parameters():
                if param.grad is not None:
                    grads[name] = whole(param.grad)
        return step(*args, **kwargs)

    trainer.optimizer.step = step_and_record
    return grads


def _watch_saves(trainer: Any) -> dict[int, dict[str, int]]:
    """The sampler state of this process at every checkpoint, by step."""
    states: dict[int, dict[str, int]] = {}
    save = trainer.save

    def save_and_record(step: int) -> Any:
        states[step] = dict(trainer.sampler.state_dict())
        return save(step)

    trainer.save = save_and_record
    return states


def resume_without_state_for_an_unused_parameter() -> dict[str, Any]:
    """Whole-state optimizer resume under FSDP2 when a trainable parameter never had a gradient
    (a vision tower after image-free batches): two sharded linear layers, the first step uses
    only ``first``. The same run continued and resumed from its saved optimizer state (through
    a file, as a checkpoint) must then take the next step, which uses both, to the same bits."""
    import copy

    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )
    from torch.distributed.fsdp import fully_shard

    from care.train.fsdp2 import load_full_optimizer_state

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = torch.nn.Linear(4, 4)
            self.second = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, both: bool) -> torch.Tensor:
            return self.second(self.first(x)) if both else self.first(x)

    def build() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = Tower()
        fully_shard(model.first)
        fully_shard(model.second)
        fully_shard(model)
        return model, torch.optim.AdamW(model.parameters(), lr=0.1)

    def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, both: bool) -> None:
        model(torch.ones(2, 4), both).sum().backward()
        optimizer.step()
        optimizer.zero_grad()

    straight, straight_optimizer = build()
    step(straight, straight_optimizer, both=False)
    saved = get_optimizer_state_dict(
        straight,
        straight_optimizer,
        options=StateDictOptions(full_state_dict=True, cpu_offload=True),
    )
    main = dist.get_rank() == 0
    saved = copy.deepcopy(saved) if main else None  # a checkpoint holds copies, not the tensors
    resumed, resumed_optimizer = build()
    with torch.no_grad():
        for mine, theirs in zip(resumed.parameters(), straight.parameters(), strict=True):
            mine.copy_(theirs)
    load_full_optimizer_state(resumed, resumed_optimizer, saved, is_main=main)
    states_after_load = len(resumed_optimizer.state)
    step(straight, straight_optimizer, both=True)
    step(resumed, resumed_optimizer, both=True)
    return {
        "saved_states": None if saved is None else sorted(saved["state"]),
        "states_after_load": states_after_load,
        "bit_identical": all(
            torch.equal(a.full_tensor(), b.full_tensor())
            for a, b in zip(straight.parameters(), resumed.parameters(), strict=True)
        ),
    }


def record_run(config_path: Path, out_dir: Path, mixed: set[int], *, fsdp: bool) -> dict[str, Any]:
    """Train ``cfg.train.steps`` steps (a checkpoint after each) and record, per process: the
    first update's gradient, the weights at the end, the sampler at every checkpoint; under
    FSDP also the weights of the same run resumed from its step-1 checkpoint and what the vLLM
    engine started from the sharded policy received."""
    from care.config import load_config
    from care.train.trainer import Trainer

    cfg = load_config(config_path, [])
    out_dir.mkdir(parents=True, exist_ok=True)
    from care.train.fsdp2 import fsdp2_accelerator

    accelerator = fsdp2_accelerator(cpu=True) if fsdp else None
    trainer = Trainer(cfg, accelerator=accelerator, progress=False)
    assert trainer.accelerator.is_fsdp2 == fsdp
    trainer.engine = ScriptedRollouts(trainer, mixed)
    first_grads = _watch_first_update(trainer)
    samplers = _watch_saves(trainer)
    trainer.fit()
    record: dict[str, Any] = {
        "rank": trainer.rank,
        "world": trainer.world,
        "first_grads": first_grads,
        "params": whole_params(trainer),
        "samplers": samplers,
        "engine_calls": trainer.engine.calls,
        "real_generate_calls": trainer.engine.real_calls,
        "sharded_params": sum(hasattr(p, "full_tensor") for p in trainer.policy.parameters()),
    }
    run_dir = cfg.run_dir
    if fsdp:
        accelerator = trainer.accelerator
        if trainer.is_main:
            for name in ("steps.jsonl", "groups.jsonl"):
                shutil.copy(run_dir / name, out_dir / f"straight_{name}")
            shutil.copytree(run_dir / "checkpoints" / "step_2", out_dir / "straight_step_2")
            shutil.rmtree(run_dir / "checkpoints" / "step_2")
        accelerator.wait_for_everyone()
        # A fresh Accelerator, as a restarted job has: one that prepared two models mixes them
        # up in clip_grad_norm_.
        resumed = Trainer(cfg, resume=True, accelerator=fsdp2_accelerator(cpu=True), progress=False)
        assert resumed.start_step == 1
        resumed.engine = ScriptedRollouts(resumed, mixed)
        resumed_samplers = _watch_saves(resumed)
        resumed.fit()
        record["resumed_params"] = whole_params(resumed)
        record["resumed_samplers"] = resumed_samplers

        from care.train.policy_setup import context_token_budget, make_engine

        calls: list[dict[str, Any]] = []
        sys.modules.update(recording_vllm_modules(calls))
        vllm_rollout = cfg.rollout.model_copy(
            update={
                "engine": "vllm",
                "vllm": cfg.rollout.vllm.model_copy(update={"sync_chunk_mb": 1}),
            }
        )
        # The straight run's policy was built in code (the resumed one comes from a folder).
        engine = make_engine(
            trainer.policy,
            trainer.processor,
            vllm_rollout,
            max_model_len=context_token_budget(cfg),
        )
        from safetensors.torch import load_file

        folder = Path(calls[0]["folder"])
        record["vllm"] = {
            **calls[0],
            "saved": load_file(folder / "model.safetensors"),
            "weight_version": engine.weight_version,
        }
        engine.sync_chunk_bytes = 16 * 1024  # several chunks even for the tiny model
        engine.sync_weights(trainer.policy)  # sharded: every tensor, gathered chunk by chunk
        record["vllm"]["weight_version_after_sync"] = engine.weight_version
        record["vllm"]["reload_chunks"] = calls[0]["reload_chunks"]
        # The generate() of the real engine refuses sharded weights rather than hang.
        try:
            trainer.engine.real.generate(*trainer.engine.last_call)
            record["sharded_generate"] = "ran"
        except RuntimeError as error:
            record["sharded_generate"] = str(error)
        record["unused_parameter_resume"] = resume_without_state_for_an_unused_parameter()
    torch.save(record, out_dir / f"rank{trainer.rank}.pt")
    return record


if __name__ == "__main__":
    # CONFIG OUT_DIR MIXED, repeated: the runs share one launch (process start-up is the slow
    # part on CPU).
    torch.backends.cuda.matmul.allow_tf32 = False
    arguments = sys.argv[1:]
    for start in range(0, len(arguments), 3):
        config, out, mixed = arguments[start : start + 3]
        record_run(Path(config), Path(out), set(json.loads(mixed)), fsdp=True)
