"""Resumable checkpoints: a Hugging Face model folder plus the trainer state beside it.

``<run>/checkpoints/step_<N>/`` holds what ``save_pretrained`` writes (config, safetensors,
tokenizer and processor files), so ``care eval`` and plain transformers load it directly, and
``trainer_state.pt`` with the optimizer, scheduler, every RNG state, the data cursor and the step.
A checkpoint is written to ``step_<N>.tmp`` and renamed when complete, so a kill while saving
never leaves a half checkpoint that resume would pick up.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from care.models.vlm import save_policy
from care.train import fsdp2

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / f"step_{step}"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with a trainer state), oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / TRAINER_STATE).is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    save_model: Any,
    trainer_state: dict[str, Any],
    keep: int,
) -> Path:
    """Write ``step_<step>`` atomically and keep only the newest ``keep`` trainer states.

    ``save_model(folder)`` writes the Hugging Face files; ``trainer_state`` is pickled with torch.
    Older checkpoints keep their model files (they are evaluation points) but lose their
    optimizer state once more than ``keep`` newer ones exist, which bounds the disk use.
    """
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model(tmp)
    torch.save({**trainer_state, "step": step, "rng": rng_state()}, tmp / TRAINER_STATE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        (old / TRAINER_STATE).unlink()
    return final


def restore_saved_precision(model: torch.nn.Module, folder: Path) -> list[str]:
    """Put back the parameters a checkpoint stores at a wider float type than `model` was
    loaded with; returns their names.

    Training under FSDP with bf16 mixed precision keeps (and saves) float32 master copies of
    bf16 weights. Loading the checkpoint as bf16 again, to get the same buffers and compute
    dtype as the run had, would round those master weights, and the resumed run would drift
    from the uninterrupted one; this restores them, as accelerate's upcast would have made them.

    Example: a float32 ``lm_head.weight`` on disk, bf16 in `model` → replaced by the float32
    tensor; a bf16 checkpoint of a bf16 model → nothing changes (``[]``).
    """
    from safetensors import safe_open

    params = dict(model.named_parameters())
    restored = []
    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as tensors:
            for name in tensors.keys():  # noqa: SIM118 (safe_open is not a mapping)
                param = params.get(name)
                if param is None or not param.is_floating_point():
                    continue
                saved = tensors.get_slice(name).get_dtype()
                if _FLOAT_BITS.get(saved, 0) > torch.finfo(param.dtype).bits:
                    param.data = tensors.get_tensor(name).to(param.device)
                    restored.append(name)
    return restored


_FLOAT_BITS = {"F64": 64, "F32": 32, "BF16": 16, "F16": 16}


def load_trainer_state(folder: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint folder, its tensors memory-mapped from the file: a
    process that never touches the optimizer state (all but the main one under FSDP) never
    reads it into memory."""
    path = Path(folder) / TRAINER_STATE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trainer state (not a resumable checkpoint)")
    # Our own file: optimizer states and RNG tuples need full unpickling.
    return torch.load(path, map_location="cpu", weights_only=False, mmap=True)


def save_model_files(
    policy: Any, processor: Any, folder: Path, model_state: dict[str, torch.Tensor] | None
) -> None:
    """The Hugging Face files of a checkpoint: the policy's own weights, or ``model_state``
    (whole tensors gathered from FSDP2 shards) when given."""
    if model_state is None:
        save_policy(policy, processor, folder)
        return
    policy.save_pretrained(str(folder), state_dict=model_state)
    processor.save_pretrained(str(folder))


def restore_training_state(
    state: dict[str, Any],
    model: Any,
    optimizer: Any,
    scheduler: Any,
    sampler: Any,
    accelerator: Any,
) -> int:
    """Put a checkpoint's optimizer, scheduler, prompt-sampler and RNG states back; returns its
    step. Under FSDP2 the optimizer state was saved whole: the main process reads it and
    broadcasts it, and each process keeps its shard."""
    if accelerator.is_fsdp2:
        is_main = accelerator.is_main_process
        fsdp2.load_full_optimizer_state(
            model, optimizer.optimizer, state["optimizer"] if is_main else None, is_main=is_main
        )
    else:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    sampler.load_state_dict(state["sampler"])
    restore_rng(state["rng"])
    return int(state["step"])


def save_training_state(
    run_dir: Path,
    step: int,
    *,
    model: Any,
    policy: Any,
    processor: Any,
    optimizer: Any,
    scheduler: Any,
    sampler: Any,
    config: dict[str, Any],
    keep: int,
    accelerator: Any,
) -> Path | None:
    """Write ``checkpoints/step_<step>`` from the main process (the model files, optimizer,
    scheduler, prompt-sampler and RNG states, and the run's ``config``); every process must call
    this. Returns the folder on the main process, None on the others.

    Under FSDP2 every process takes part in gathering the whole weights and optimizer state
    first; the main process writes them.
    """
    path = None
    model_state, optimizer_state = fsdp2.whole_state(model, optimizer, accelerator)
    if accelerator.is_main_process:
        state = {
            "optimizer": optimizer_state,
            "scheduler": scheduler.state_dict(),
            "sampler": sampler.state_dict(),
            "config": config,
        }
        path = save_checkpoint(
            run_dir,
            step,
            save_model=lambda folder: save_model_files(policy, processor, folder, model_state),
            trainer_state=state,
            keep=keep,
        )
    accelerator.wait_for_everyone()
    return path
