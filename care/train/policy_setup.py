"""Building or loading the policy, its processor and rollout engine from a config.

Kept apart from the loop so ``care sft``, ``care train`` and the demo make the model the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from care.config import ModelSection, RolloutSection, TrainConfig
from care.data import Example
from care.models.tokenizer import load_qwen2_5_tokenizer, train_tiny_bpe_tokenizer
from care.models.vlm import build_tiny_vlm, load_policy, pixel_budget, set_pixel_budget
from care.prompts import protocol_texts
from care.rollout.base import RolloutEngine
from care.rollout.factory import make_engine as make_rollout_engine
from care.rollout.factory import vllm_settings

# The tiny BPE learns its merges from the task's own text, so the demo's sequences stay short.
TINY_BPE_VOCAB = 1024
# Room for RGR's repair cue (about 35 Qwen tokens) and for re-tokenising the failed reasoning.
REPAIR_CUE_TOKENS = 64


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available on this machine")
    return device


def task_corpus(examples: Sequence[Example]) -> list[str]:
    """Text the tiny tokenizer learns its merges from: the protocol's fixed text (system prompt,
    tags, option layout, repair cue) and each example's question, options, answer and rationale
    in the response layout. BPE keeps a merge only when its pair occurs at least twice, so the
    protocol text is listed twice."""
    texts = protocol_texts() * 2 + ["system\nuser\nassistant\n"] * 2  # the chat roles
    for ex in examples:
        texts.append(ex.question)
        texts.extend(ex.choices or ())
        solution = ex.extra.get("solution") if ex.extra else None
        texts.append(f"<think>\n{solution or ''}\n</think>\n<answer>{ex.answer}</answer>")
    return texts


def build_or_load_policy(
    model_cfg: ModelSection, *, seed: int, device: torch.device, corpus: Sequence[str] = ()
) -> tuple[Any, Any]:
    """``(model, processor)``: a local checkpoint when ``model.path`` is set, else the tiny
    random Qwen2.5-VL-architecture model (its tiny BPE tokenizer trained on ``corpus``)."""
    if model_cfg.path:
        model, processor = load_policy(model_cfg.path, dtype=model_cfg.dtype, device=device)
        if model_cfg.min_pixels is not None or model_cfg.max_pixels is not None:
            set_pixel_budget(
                processor, min_pixels=model_cfg.min_pixels, max_pixels=model_cfg.max_pixels
            )
        _check_image_size_fits(model_cfg, processor)
        return model, processor
    if model_cfg.tokenizer == "qwen2_5":
        tokenizer = load_qwen2_5_tokenizer()
    else:
        tokenizer = train_tiny_bpe_tokenizer(vocab_size=TINY_BPE_VOCAB, corpus=list(corpus) or None)
    model, processor = build_tiny_vlm(
        tokenizer, shape=model_cfg.tiny, image_size=model_cfg.image_size, seed=seed
    )
    if model_cfg.dtype == "bfloat16":
        # Parameters only, as from_pretrained(dtype=bfloat16) loads a checkpoint: the rotary
        # inv_freq buffers stay float32, so a resumed run computes exactly what the run did.
        for param in model.parameters():
            param.data = param.data.to(torch.bfloat16)
    return model.to(device), processor


def _check_image_size_fits(model_cfg: ModelSection, processor: Any) -> None:
    """A non-default ``model.image_size`` with a checkpoint must describe its processor (as for
    a tiny model's checkpoint); otherwise it would be silently ignored."""
    default = type(model_cfg).model_fields["image_size"].default
    if model_cfg.image_size is None or model_cfg.image_size == default:
        return
    square = model_cfg.image_size**2
    budget = pixel_budget(processor)
    if budget != {"min_pixels": square, "max_pixels": square}:
        raise ValueError(
            f"model.image_size={model_cfg.image_size} does not describe the processor of "
            f"{model_cfg.path} ({budget.get('min_pixels')}..{budget.get('max_pixels')} px per "
            "image): image_size sets the tiny model's images; for a checkpoint set "
            "model.max_pixels (and min_pixels)"
        )


def context_token_budget(cfg: TrainConfig) -> int:
    """The longest context a rollout engine must hold for this run, in tokens.

    A rollout is a prompt (at most ``data.max_prompt_tokens``) plus its response (at most
    ``rollout.max_new_tokens``). With RGR a repair's context also holds the failed reasoning
    (at most one response) and the repair cue (``REPAIR_CUE_TOKENS`` leaves room for it and
    for re-tokenising the decoded reasoning), and the repair itself is at most
    ``algo.rgr.max_new_tokens`` (null: as long as a rollout, or 512 with the reference
    sampling).

    Example: the 7B CARE config (2048-token prompts and responses, RGR on) → 2048 + 2048 +
    64 + 2048 = 6208; without RGR → 4096.
    """
    response = cfg.rollout.max_new_tokens
    budget = cfg.data.max_prompt_tokens + response
    if cfg.algo.rgr.enable:
        repair = cfg.algo.rgr.max_new_tokens
        if repair is None:
            repair = 512 if cfg.algo.rgr.sampling == "reference" else response
        budget += REPAIR_CUE_TOKENS + repair
    return budget


def make_engine(
    model: Any, processor: Any, rollout_cfg: RolloutSection, *, max_model_len: int | None = None
) -> RolloutEngine:
    """The rollout engine the config names (``rollout.engine``), through
    :func:`care.rollout.factory.make_engine`.

    ``hf``: the in-process transformers engine. ``vllm``: an in-process ``vllm.LLM`` colocated
    with training (:class:`care.rollout.vllm.VLLMRolloutEngine`), started from the folder the
    policy was loaded from (or the policy saved to a temporary folder), sleeping between
    rollouts where vLLM supports it, with the memory settings of ``rollout.vllm``
    (:func:`care.rollout.factory.vllm_settings`; ``max_model_len`` there wins over the argument,
    which the trainer fills from :func:`context_token_budget`); ImportError naming the install
    command without vLLM.
    """
    vllm_kwargs = (
        vllm_settings(rollout_cfg.vllm, max_model_len=max_model_len)
        if rollout_cfg.engine == "vllm"
        else None
    )
    engine, _ = make_rollout_engine(
        rollout_cfg.engine,
        policy=(model, processor),
        batch_size=rollout_cfg.batch_rows,
        sleep_after_generate=True,
        vllm_kwargs=vllm_kwargs,
    )
    return engine


def make_accelerator(device: str, accelerator: Any = None) -> Any:
    """The run's ``accelerate.Accelerator`` (``accelerator`` when given), checked for what the
    trainer supports: FSDP only in version 2, and only where accelerate really set it up.

    ``device`` is ``train.device``; "auto" on a machine without CUDA means CPU too: without
    ``cpu=True``, processes started by torchrun there would not join a process group and would
    each train alone.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    accelerator = accelerator or Accelerator(cpu=on_cpu)
    fsdp = accelerator.distributed_type == DistributedType.FSDP
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not fsdp:
        raise ValueError(
            f"the accelerate config asks for FSDP, but with train.device={device!r} "
            f"accelerate set up {accelerator.distributed_type.value} instead: accelerate "
            "runs FSDP on GPUs only. On CPU launch with configs/accelerate/ddp_cpu_2proc.yaml"
        )
    if fsdp and not accelerator.is_fsdp2:
        raise ValueError(
            "accelerate config: FSDP version 1 is not supported by the trainer (rollout and "
            "checkpoints need FSDP2's unshard and full state dicts); set fsdp_version: 2"
        )
    return accelerator


def make_optimizer(policy: torch.nn.Module, cfg: TrainConfig) -> tuple[Any, Any]:
    """AdamW over the policy's parameters and its linear warm-up (``optim.warmup_steps``
    updates, then the constant ``optim.lr``)."""
    optimizer = torch.optim.AdamW(
        policy.parameters(),
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        betas=cfg.optim.betas,
    )
    warmup = cfg.optim.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda update: min(1.0, (update + 1) / warmup) if warmup else 1.0
    )
    return optimizer, scheduler
