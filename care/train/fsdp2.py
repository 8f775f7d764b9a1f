"""An accelerate FSDP2 setup that also runs on CPU processes (gloo), for tests and smoke checks.

``accelerate launch --config_file configs/accelerate/fsdp_*.yaml`` is how training runs FSDP2
on GPUs. accelerate refuses FSDP on CPU (``--cpu`` with ``--use_fsdp``; on CPU it quietly sets
up DDP instead), yet its FSDP2 preparation itself — ``fully_shard`` of every decoder layer and
vision block, full state dicts — runs on CPU with torch's gloo backend. :func:`fsdp2_accelerator`
builds an ``Accelerator`` in that state inside processes started by ``torchrun`` (or with
:func:`single_process_group_env` for one process), so the real :class:`~care.train.trainer.Trainer`
can be tested under FSDP2 on any machine. On a GPU it is accelerate's own FSDP2 path.

Example (two CPU processes)::

    # torchrun --nproc_per_node 2 script.py
    accelerator = fsdp2_accelerator(cpu=True)
    trainer = Trainer(cfg, accelerator=accelerator)   # accelerator.is_fsdp2 → True
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

# The shard units of configs/accelerate/fsdp_*.yaml (fsdp_transformer_layer_cls_to_wrap).
SHARD_UNITS: tuple[str, ...] = ("Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock")

_DISTRIBUTED_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def fsdp2_plugin() -> FullyShardedDataParallelPlugin:
    """The FSDP2 settings of ``configs/accelerate/fsdp_*.yaml``: full shard, one unit per decoder
    layer and vision block, parameters resharded after forward, full state dicts, no CPU offload,
    every process builds the whole model itself (no RAM-efficient loading)."""
    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        reshard_after_forward=True,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=list(SHARD_UNITS),
        state_dict_type="FULL_STATE_DICT",
        cpu_offload=False,
        cpu_ram_efficient_loading=False,
        activation_checkpointing=False,
    )


def fsdp2_accelerator(*, cpu: bool, mixed_precision: str = "no") -> Accelerator:
    """An ``Accelerator`` that prepares models with FSDP2, in a process of a torchrun job.

    Args:
        cpu: True → gloo process group on CPU (the state is switched to FSDP after accelerate
            set up DDP, see the module docstring); False → accelerate's own FSDP2 on the GPU of
            ``LOCAL_RANK``.
        mixed_precision: ``"no"`` or ``"bf16"`` (accelerate then keeps float32 master copies of
            the trainable weights and computes in bf16).

    Raises:
        ValueError: the torch distributed variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
            MASTER_PORT) are missing — start the process with torchrun, or call
            :func:`single_process_group_env` first for one process.
    """
    missing = [name for name in _DISTRIBUTED_ENV if name not in os.environ]
    if missing:
        raise ValueError(
            f"FSDP2 needs a torch process group, but {', '.join(missing)} are not set: start "
            "with torchrun, or call care.train.fsdp2.single_process_group_env() for one process"
        )
    if mixed_precision not in ("no", "bf16"):
        raise ValueError(f"mixed_precision must be 'no' or 'bf16', got {mixed_precision!r}")
    plugin = fsdp2_plugin()
    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision, fsdp_plugin=plugin)
    if accelerator.distributed_type == DistributedType.FSDP:
        return accelerator
    if not cpu or accelerator.distributed_type != DistributedType.MULTI_CPU:
        raise ValueError(
            f"accelerate set up {accelerator.distributed_type.value}, not FSDP or a CPU process "
            "group; is this process part of a torchrun job?"
        )
    # accelerate ignored the plugin on CPU: switch the shared state to FSDP2 by hand, as
    # AcceleratorState does on GPUs (plugin mixed precision included).
    if mixed_precision != "no":
        plugin.set_mixed_precision(mixed_precision)
    state = AcceleratorState()
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return accelerator


def single_process_group_env() -> dict[str, str]:
    """Set the torch distributed variables of a one-process job where they are missing (rank 0
    of 1, a free local port); returns what it set. FSDP2 needs a process group even alone."""
    defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            defaults["MASTER_PORT"] = str(sock.getsockname()[1])
    added = {name: value for name, value in defaults.items() if name not in os.environ}
    os.environ.update(added)
    return added


def load_full_optimizer_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    saved: dict[str, Any] | None,
    *,
    is_main: bool,
) -> None:
    """Load a whole optimizer state (``get_optimizer_state_dict(full_state_dict=True)``) into
    the optimizer of an FSDP2 model; every process calls this together.

    Only the main process passes ``saved`` (the others None): it is broadcast tensor by tensor
    and each process keeps its shard, so no other process holds the whole state in memory.

    A trainable parameter without saved state (it never had a gradient, e.g. the vision tower
    after image-free batches) is left without state, as the uninterrupted run has it. torch's
    loader refuses such a checkpoint by default, and with ``strict=False`` it would give the
    parameter a zero state whose step count then differs from the uninterrupted run's.

    Example: a checkpoint with states for ``a.weight`` and ``a.bias`` loaded into a model with
    ``a`` and an unused ``b`` → ``a``'s states restored on every process, ``b`` without state.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    if is_main and saved is None:
        raise ValueError("the main process must pass the saved optimizer state")
    names = [sorted(saved["state"]) if is_main else None]
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(names, src=0)
    with_state = set(names[0])
    set_optimizer_state_dict(
        model,
        optimizer,
        saved if is_main else {},
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False),
    )
    for name, param in model.named_parameters():
        if name not in with_state:
            optimizer.state.pop(param, None)


def initialise_root(model: torch.nn.Module, pad_token_id: int, device: torch.device) -> None:
    """One text-only, no-grad forward through the whole FSDP2 model on every process.

    FSDP2 makes the first module that runs forward its root. transformers' generate() (>= 5.18)
    encodes the images before any forward through the whole model, so a vision block would
    become root and the next forward fail ("FSDP state has already been lazily initialized").
    Registering generate() as an FSDP forward method does not do: it nests root forwards, and
    the outer one reshards the root's parameters after every call.
    """
    from torch.distributed.fsdp import FSDPModule

    with torch.no_grad():
        model(input_ids=torch.tensor([[pad_token_id]], device=device), use_cache=False)
    # The root (and the units of tied weights) keep their parameters unsharded after forward;
    # the optimizer, and loading its state on resume, work on the shards.
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


@contextmanager
def full_weights(model: torch.nn.Module, accelerator: Accelerator) -> Iterator[None]:
    """Whole weights on every process for rollout and no-grad scoring.

    Under FSDP2 the shards are gathered once here and kept through every forward: the processes
    generate different numbers of tokens and score different numbers of rows, so per-forward
    all-gathers would deadlock. DDP and one process hold whole weights already (no-op).
    """
    if not accelerator.is_fsdp2:
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    sharded = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for module in sharded:
        module.unshard()
    model.set_reshard_after_forward(False)
    try:
        yield
    finally:
        for module in sharded:
            module.reshard()
        model.set_reshard_after_forward(accelerator.state.fsdp_plugin.reshard_after_forward)
        # FSDP keeps the root unsharded after forward (its default): the backward needs it.
        model.set_reshard_after_forward(False, recurse=False)


def whole_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, accelerator: Accelerator
) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any]]:
    """``(model state, optimizer state)`` for a checkpoint.

    Under FSDP2 every process takes part in gathering the shards into whole tensors (on the CPU
    of the main process); the model state is returned for ``save_pretrained``. Otherwise the
    model state is None (the policy saves itself) and the optimizer's own state dict is used.
    """
    if not accelerator.is_fsdp2:
        return None, optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    model_state = accelerator.get_state_dict(model)
    optimizer_state = get_optimizer_state_dict(
        model,
        optimizer.optimizer,
        options=StateDictOptions(full_state_dict=True, cpu_offload=True),
    )
    return model_state, optimizer_state
