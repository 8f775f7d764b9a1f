"""Multi-process training through ``accelerate launch``: DDP on CPU (gloo), FSDP2 on 2+ GPUs.

Two processes split a step's prompts and must train exactly what one process would: every prompt
of a step is trained and logged once, the replicas hold equal weights after each update, and the
gradient of a step spread over two processes equals the one-process gradient of the same batch.
accelerate launches FSDP on GPUs only, so the FSDP case here runs where two GPUs are visible and
the CPU check is that an FSDP launch on CPU stops with a clear error instead of silently running
DDP; tests/test_fsdp2_cpu.py runs the trainer under accelerate's FSDP2 preparation on CPU.
The one-step recorder below is also the script the tests launch:
``accelerate launch tests/test_distributed.py CONFIG OUT_DIR``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_run import failure_share_of, scripted_groups, tiny_config

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIGS = ROOT / "configs" / "accelerate"
LAUNCH_TIMEOUT_S = 180
N_TRAIN = 12
PROMPTS_PER_STEP = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launch(config_file: str, *args: str) -> None:
    """``accelerate launch`` with a shipped config on a free port; a hang fails the test."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE_CONFIGS / config_file),
        "--main_process_port",
        str(_free_port()),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S
    )
    assert done.returncode == 0, (
        f"{' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    )


def _tiny_config(data_dir: Path, out_dir: Path, name: str, **sections: dict) -> dict:
    cfg = tiny_config(
        data_dir,
        out_dir,
        name,
        train={"prompts_per_step": PROMPTS_PER_STEP, "mini_batch_prompts": 2},
    )
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def _write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from care.data.synth import write_synthetic_dataset

    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, seed=3, n_train=N_TRAIN, n_test=4, image_size=56)
    return out


# ------------------------------------------------------------------------------------------------
# The one-step recorder (runs under accelerate launch, and in-process as the one-process reference)


class ScriptedEngine:
    """Rollouts that depend only on the example, so one and two processes see the same rows.

    Examples (training-set indices) in ``anchored`` get one correct rollout (sample 0) and three
    wrong ones, so CARE picks hard negatives and RGR appends a repair; the others get four correct
    rollouts and no repair, so the processes hold different numbers of rows. A request is matched
    to its example by image identity (the trainer caches each example's decoded images), since
    prompts of different examples may read the same. Each call also runs ``1 + rank``
    forwards of the policy, as a real engine's per-process token counts differ: under FSDP these
    only finish when the trainer gathered whole weights first.
    """

    def __init__(self, trainer: Any, anchored: set[int]) -> None:
        self.trainer = trainer
        self.tokenizer = trainer.processor.tokenizer
        self.anchored = anchored
        self.suppress_token_ids: list[int] = []
        self.stop = self.tokenizer.convert_tokens_to_ids("<|im_end|>")

    def _example_index(self, request: Any) -> int:
        cache = self.trainer._image_cache
        return next(i for i, images in cache.items() if images[0] is request.images[0])

    def generate(self, requests: list, params: Any) -> list:

        probe = torch.tensor([[self.stop] * 3], device=self.trainer.accelerator.device)
        with torch.no_grad():
            for _ in range(1 + self.trainer.rank):
                self.trainer.policy(input_ids=probe)
        return scripted_groups(self, requests, params.n, self.anchored)

    def sync_weights(self, model: Any) -> None:
        return None


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """A plain CPU copy; FSDP2 shards (DTensors) are gathered first (a collective)."""
    if hasattr(tensor, "full_tensor"):
        tensor = tensor.full_tensor()
    return tensor.detach().clone().cpu()


def record_one_step(config_path: Path, out_dir: Path) -> dict[str, Any]:
    """Train one step (two optimizer updates) with scripted rollouts and write, per process,
    ``rank<r>.pt``: the gradient of the first update and the weights after the step."""
    from care.config import load_config
    from care.train.sampler import PromptSampler
    from care.train.trainer import Trainer

    # TF32 would make GPU sums depend on how rows are batched beyond float32 rounding.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cfg = load_config(config_path, [])
    trainer = Trainer(cfg, progress=False)
    drawn = PromptSampler(len(trainer.examples), seed=cfg.run.seed).next_batch(PROMPTS_PER_STEP)
    # Prompts 0, 2 and 3 of the step are anchored; prompt 1 (the second process's first) is not.
    anchored = {drawn[k] for k in (0, 2, 3)}
    trainer.engine = ScriptedEngine(trainer, anchored)
    first_grads: dict[str, torch.Tensor] = {}
    step_optimizer = trainer.optimizer.step

    def step_and_record(*args: Any, **kwargs: Any) -> Any:
        if not first_grads:
            for name, param in trainer.policy.named_parameters():
                if param.grad is not None:
                    first_grads[name] = _whole(param.grad)
        return step_optimizer(*args, **kwargs)

    trainer.optimizer.step = step_and_record
    with _count_gathers_in(trainer) as gathers_in_rollout_and_scoring:
        metrics = trainer.train_step(1)
    trainer.save(1)
    params = {name: _whole(param) for name, param in trainer.policy.named_parameters()}
    record = {
        "rank": trainer.rank,
        "world": trainer.world,
        "first_grads": first_grads,
        "params": params,
        "metrics": metrics,
        "gathers_in_rollout_and_scoring": gathers_in_rollout_and_scoring[0],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(record, out_dir / f"rank{trainer.rank}.pt")
    return record


@contextmanager
def _count_gathers_in(trainer: Any) -> Iterator[list[int]]:
    """Counts FSDP's parameter all-gathers while the engine generates or the trainer scores rows
    without grad; each must be 0 (whole weights gathered once before)."""
    import torch.distributed as dist

    count, active = [0], [False]
    gather = dist.all_gather_single

    def counting_gather(*args: Any, **kwargs: Any) -> Any:
        count[0] += active[0]
        return gather(*args, **kwargs)

    def watched(method: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            active[0] = True
            try:
                return method(*args, **kwargs)
            finally:
                active[0] = False

        return run

    trainer.engine.generate = watched(trainer.engine.generate)
    trainer._old_logprobs_and_embeddings = watched(trainer._old_logprobs_and_embeddings)
    dist.all_gather_single = counting_gather
    try:
        yield count
    finally:
        dist.all_gather_single = gather


def _params_hash(params: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(params):
        digest.update(name.encode())
        digest.update(params[name].float().numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------
# Tests


@pytest.mark.slow
def test_two_process_ddp_run_trains_every_prompt_of_a_step_once_with_consistent_metrics(
    data_dir, tmp_path
):
    from care.runlog import RunReader
    from care.train.sampler import PromptSampler

    cfg = _tiny_config(data_dir, tmp_path, "ddp")
    config_path = _write_config(cfg, tmp_path / "ddp.yaml")
    _launch("ddp_cpu_2proc.yaml", "-m", "care.cli", "train", "-c", str(config_path))

    run = RunReader(tmp_path / "ddp")
    assert run.meta["status"] == "finished"
    assert [record["step"] for record in run.steps] == [1, 2]
    sampler = PromptSampler(N_TRAIN, seed=5)
    ids = [json.loads(line)["id"] for line in (data_dir / "train.jsonl").read_text().splitlines()]
    for step in (1, 2):
        # Exactly the prompts one process would draw for the step, each trained and logged once:
        # process r trains prompts r, r + 2, ... and the main process logs them rank by rank
        # (one process would log them in draw order, so this also shows two processes ran).
        drawn = [ids[i] for i in sampler.next_batch(PROMPTS_PER_STEP)]
        groups = sorted((g for g in run.groups if g.step == step), key=lambda g: g.group_id)
        assert [g.prompt_id for g in groups] == drawn[0::2] + drawn[1::2]
        assert [g.group_id for g in groups] == list(range(PROMPTS_PER_STEP))
        assert all(g.G == 4 and len(g.advantages) == 4 for g in groups)
        # Each process projects its own rows; the merged records keep every group's projection.
        assert all(len(g.projection) == g.G + g.rgr.triggered for g in groups)
        metrics = run.steps[step - 1]
        assert metrics["signal/failure_share_seq"] == pytest.approx(failure_share_of(groups))
        fractions = [metrics[f"groups/{k}_frac"] for k in ("all_correct", "all_wrong", "mixed")]
        assert sum(fractions) == pytest.approx(1.0)
        all_wrong = sum(g.n_correct == 0 for g in groups) / PROMPTS_PER_STEP
        assert metrics["groups/all_wrong_frac"] == pytest.approx(all_wrong)
        assert metrics["rgr/triggered"] == sum(g.rgr.triggered for g in groups)
        assert metrics["rescue/triggered_frac"] == pytest.approx(
            sum(g.rescued for g in groups) / PROMPTS_PER_STEP
        )
        assert metrics["grad_norm"] > 0.0 and metrics["lr"] == pytest.approx(1e-3)
    weights = load_file(tmp_path / "ddp" / "checkpoints" / "step_2" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


TWO_GPUS = pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="FSDP runs on GPUs only (docs/distributed.md)"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("accelerate_config", "device"),
    [
        ("ddp_cpu_2proc.yaml", "cpu"),
        pytest.param("fsdp_2gpu.yaml", "cuda", marks=TWO_GPUS),
    ],
)
def test_two_process_step_has_the_one_process_gradient_and_equal_replicas(
    data_dir, tmp_path, accelerate_config, device
):
    # A huge clip threshold leaves the gradients as computed, so they can be compared directly.
    sections = {
        "optim": {"lr": 1e-3, "grad_clip": 1e6},
        "train": {"micro_batch_rows": 4, "device": device},
    }
    two_cfg = _write_config(
        _tiny_config(data_dir, tmp_path, "two", **sections), tmp_path / "2.yaml"
    )
    _launch(accelerate_config, str(Path(__file__).resolve()), str(two_cfg), str(tmp_path / "two"))
    one_cfg = _write_config(
        _tiny_config(data_dir, tmp_path, "one", **sections), tmp_path / "1.yaml"
    )
    one = record_one_step(one_cfg, tmp_path / "one_rec")
    ranks = [torch.load(tmp_path / "two" / f"rank{r}.pt", weights_only=False) for r in (0, 1)]

    assert [r["world"] for r in ranks] == [2, 2] and one["world"] == 1
    # Generation and no-grad scoring ran on whole weights: no per-forward parameter gathers,
    # although process 1 runs more forwards than process 0 (under FSDP these would mismatch).
    assert [r["gathers_in_rollout_and_scoring"] for r in ranks] == [0, 0]
    # The replicas agree bit for bit after two updates, and the main process saved those weights.
    assert _params_hash(ranks[0]["params"]) == _params_hash(ranks[1]["params"])
    saved = load_file(tmp_path / "two" / "checkpoints" / "step_1" / "model.safetensors")
    for name, value in ranks[0]["params"].items():
        if name in saved:
            assert torch.equal(saved[name], value), name
    assert len(saved) >= len(ranks[0]["params"]) - 1  # a tied head may be stored once

    # Rank 0 holds 5 rows (anchored group + repair) and rank 1 holds 4 (all correct) in the
    # first update: the averaged gradient is still the one-process gradient of all 9 rows.
    two_grads, one_grads = ranks[0]["first_grads"], one["first_grads"]
    assert two_grads.keys() == one_grads.keys() and len(one_grads) > 10
    for name in one_grads:
        torch.testing.assert_close(two_grads[name], one_grads[name], rtol=1e-4, atol=1e-7)
    norm = torch.sqrt(sum(g.double().pow(2).sum() for g in one_grads.values()))
    assert float(norm) > 1e-3  # the comparison is about a gradient that is not zero
    for name in one["params"]:
        torch.testing.assert_close(ranks[0]["params"][name], one["params"][name], rtol=0, atol=2e-5)
    two_metrics, one_metrics = ranks[0]["metrics"], one["metrics"]
    for key in ("loss/pg", "loss/kl", "entropy", "grad_norm", "rgr/triggered", "acc/mean"):
        assert two_metrics[key] == pytest.approx(one_metrics[key], rel=1e-4, abs=1e-7), key
    assert one_metrics["rgr/triggered"] == 3


@pytest.mark.slow
def test_fsdp_launch_on_cpu_stops_with_a_clear_error_instead_of_running_ddp(data_dir, tmp_path):
    # On CPU accelerate quietly sets up DDP for an FSDP config; the trainer must refuse it.
    config_path = _write_config(_tiny_config(data_dir, tmp_path, "fsdp"), tmp_path / "fsdp.yaml")
    # The traceback printer may wrap the message and prefix each line with the rank.
    gap = r"\s+(\[rank\d\]:\s*)?"
    words = ["FSDP,", "but", "with", r"train\.device='cpu'", "accelerate", "set", "up", "MULTI_CPU"]
    with pytest.raises(AssertionError, match=gap.join(words)):
        _launch("fsdp_2gpu.yaml", "-m", "care.cli", "train", "-c", str(config_path))
    assert not (tmp_path / "fsdp" / "steps.jsonl").exists()


if __name__ == "__main__":
    record_one_step(Path(sys.argv[1]), Path(sys.argv[2]))
