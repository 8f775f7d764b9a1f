"""Building or loading the policy, its processor and rollout engine from a config.

Kept apart from the loop so ``care sft``, ``care train`` and the demo make the model the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from care.config import ModelSection, RolloutSection
from care.models.tokenizer import load_qwen2_5_tokenizer, train_tiny_bpe_tokenizer
from care.models.vlm import build_tiny_vlm, load_policy
from care.rollout.base import RolloutEngine
from care.rollout.factory import make_engine as make_rollout_engine

# The tiny BPE learns its merges from the task's own text, so the demo's sequences stay short.
TINY_BPE_VOCAB = 1024


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available on this machine")
    return device


def build_or_load_policy(
    model_cfg: ModelSection, *, seed: int, device: torch.device, corpus: Sequence[str] = ()
) -> tuple[Any, Any]:
    """``(model, processor)``: a local checkpoint when ``model.path`` is set, else the tiny
    random Qwen2.5-VL-architecture model (its tiny BPE tokenizer trained on ``corpus``)."""
    if model_cfg.path:
        return load_policy(model_cfg.path, dtype=model_cfg.dtype, device=device)
    if model_cfg.tokenizer == "qwen2_5":
        tokenizer = load_qwen2_5_tokenizer()
    else:
        tokenizer = train_tiny_bpe_tokenizer(vocab_size=TINY_BPE_VOCAB, corpus=list(corpus) or None)
    tiny = model_cfg.tiny
    model, processor = build_tiny_vlm(
        tokenizer,
        hidden_size=tiny.hidden_size,
        num_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_kv_heads,
        intermediate_size=tiny.intermediate_size,
        vision_hidden_size=tiny.vision_hidden_size,
        vision_depth=tiny.vision_depth,
        image_size=model_cfg.image_size,
        seed=seed,
    )
    if model_cfg.dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    return model.to(device), processor


def make_engine(model: Any, processor: Any, rollout_cfg: RolloutSection) -> RolloutEngine:
    """The rollout engine the config names (``rollout.engine``), through
    :func:`care.rollout.factory.make_engine`.

    ``hf``: the in-process transformers engine. ``vllm``: an in-process ``vllm.LLM`` colocated
    with training (:class:`care.rollout.vllm.VLLMRolloutEngine`), started from the folder the
    policy was loaded from (or the policy saved to a temporary folder), sleeping between
    rollouts where vLLM supports it; ImportError naming the install command without vLLM.
    """
    engine, _ = make_rollout_engine(
        rollout_cfg.engine,
        policy=(model, processor),
        batch_size=rollout_cfg.batch_rows,
        sleep_after_generate=True,
    )
    return engine
