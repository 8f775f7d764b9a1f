"""The one place a rollout engine is made from its name: ``hf`` or ``vllm``.

Two callers, two starting points, one function:

- training (``care.train.policy_setup.make_engine``) holds the policy in memory: pass
  ``policy=(model, processor)``. ``hf`` decodes with that model in process; ``vllm`` starts from
  the folder the policy was loaded from (or the policy saved to a temporary folder), receives its
  weights, and sleeps between rollouts when asked (`VLLMRolloutEngine.from_policy`).
- evaluation (``care_vlm``) has a checkpoint folder: pass ``checkpoint=folder``. ``hf`` loads the
  policy with transformers; ``vllm`` loads the folder itself and only the processor is read
  here, so no transformers copy of the weights sits on the GPU beside vLLM's.

Either way the result is ``(engine, processor)``, the engine behind the `RolloutEngine`
interface, so neither caller knows which one runs. vLLM's memory and length settings travel as
``vllm_kwargs``; `vllm_settings` turns a config's ``rollout.vllm`` section into them.

Example::

    engine, processor = make_engine("hf", checkpoint="runs/a/checkpoints/step_40", batch_size=8)
    engine, _ = make_engine(
        "vllm",
        policy=(model, processor),
        sleep_after_generate=True,
        vllm_kwargs=vllm_settings(cfg.rollout.vllm, max_model_len=6208),
    )
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from care.rollout.base import RolloutEngine

if TYPE_CHECKING:
    from care.config import VllmSection

ENGINE_NAMES: tuple[str, ...] = ("hf", "vllm")
"""Rollout engines by name: ``hf`` (transformers, in process) and ``vllm`` (an in-process
``vllm.LLM``; needs vLLM installed, see docs/vllm.md)."""


def vllm_settings(vllm_cfg: VllmSection, *, max_model_len: int | None = None) -> dict[str, Any]:
    """`VLLMRolloutEngine` arguments (`make_engine`'s ``vllm_kwargs``) from a config's
    ``rollout.vllm`` section.

    ``max_model_len`` set in the section wins over the argument, which a caller fills with the
    context its run needs (the trainer: ``care.train.policy_setup.context_token_budget``);
    ``sync_chunk_mb`` becomes bytes.

    Example::

        vllm_settings(VllmSection(), max_model_len=6208)
        → {"gpu_memory_utilization": 0.4, "max_model_len": 6208,
           "limit_images_per_prompt": 1, "sync_chunk_bytes": 1073741824}
    """
    return {
        "gpu_memory_utilization": vllm_cfg.gpu_memory_utilization,
        "max_model_len": vllm_cfg.max_model_len or max_model_len,
        "limit_images_per_prompt": vllm_cfg.limit_images_per_prompt,
        "sync_chunk_bytes": vllm_cfg.sync_chunk_mb * 2**20,
    }


def make_engine(
    name: str,
    *,
    policy: tuple[Any, Any] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    batch_size: int = 8,
    dtype: str = "auto",
    device: str = "cpu",
    attn_implementation: str | None = None,
    sleep_after_generate: bool = False,
    vllm_kwargs: Mapping[str, Any] | None = None,
) -> tuple[RolloutEngine, Any]:
    """The rollout engine `name` over a policy in memory or a checkpoint folder.

    Args:
        name: one of `ENGINE_NAMES`.
        policy: ``(model, processor)`` already built (training). Exactly one of `policy` and
            `checkpoint` is given.
        checkpoint: a Hugging Face model folder (evaluation).
        batch_size: rows decoded together (``hf``); with a checkpoint, ``vllm`` schedules at most
            this many sequences at once (``max_num_seqs``).
        dtype, device, attn_implementation: how ``hf`` loads a checkpoint
            (`care.models.vlm.load_policy`); ``vllm`` takes `dtype` too.
        sleep_after_generate: ``vllm`` only: free its memory after each rollout for the update
            (colocated training).
        vllm_kwargs: further `VLLMRolloutEngine` arguments (``gpu_memory_utilization``,
            ``max_model_len``..., from a config through `vllm_settings`); a checkpoint engine
            takes 0.9 of the GPU unless told otherwise, nothing trains beside it.

    Returns:
        ``(engine, processor)``.

    Raises:
        ValueError: an unknown name, or not exactly one of `policy` and `checkpoint`.
        ImportError: ``vllm`` without vLLM installed (the message says how to install it).
    """
    if name not in ENGINE_NAMES:
        raise ValueError(f"rollout engine must be one of {list(ENGINE_NAMES)}, got {name!r}")
    if (policy is None) == (checkpoint is None):
        raise ValueError(
            "make_engine needs exactly one of policy=(model, processor) (training) and "
            f"checkpoint=<folder> (evaluation); got policy={policy is not None}, "
            f"checkpoint={checkpoint!r}"
        )
    extra = dict(vllm_kwargs or {})
    if name == "vllm":
        from care.rollout.vllm import VLLMRolloutEngine

        if policy is not None:
            model, processor = policy
            engine = VLLMRolloutEngine.from_policy(
                model, processor, sleep_after_generate=sleep_after_generate, **extra
            )
            return engine, processor
        from care.models.vlm import load_processor

        processor = load_processor(checkpoint)
        extra.setdefault("gpu_memory_utilization", 0.9)
        extra.setdefault("dtype", dtype)
        extra["llm_kwargs"] = {"max_num_seqs": batch_size, **extra.get("llm_kwargs", {})}
        engine = VLLMRolloutEngine(
            checkpoint, processor, sleep_after_generate=sleep_after_generate, **extra
        )
        return engine, processor
    if extra:
        raise ValueError(f"vllm_kwargs {sorted(extra)} given for the hf engine, which has none")
    from care.rollout.hf import HFRolloutEngine

    if policy is not None:
        model, processor = policy
    else:
        from care.models.vlm import load_policy

        model, processor = load_policy(
            checkpoint, dtype=dtype, device=device, attn_implementation=attn_implementation
        )
    return HFRolloutEngine(model, processor, batch_size=batch_size), processor
