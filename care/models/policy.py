"""One forward of the policy over prompt + response: token log-probs and rationale embeddings.

The trainer needs, per rollout, the log-probability of every response token (old log-probs,
then the update pass) and, for CARE, a rationale embedding: the last-layer hidden states mean-
pooled over the ``<think>`` region (docs/algorithm.md section 2.2). Both come from the SAME
forward pass — a pre-hook on the output head catches the hidden states the head is about to
project — so CARE's embeddings cost no extra pass.

Batch layout (:class:`PolicyBatch`)::

    row 0:  pad pad <prompt ......... prefix> | r r r r r pad
    row 1:  <prompt .................. prefix> | r r r pad pad
            \\______ context, LEFT-padded ____/ \\_ response, RIGHT-padded _/
                                                ^ response_start (same column in every row)

Left-padding the context and right-padding the response puts every response token at the same
column, so responses are a plain ``[:, -L:]`` slice (no per-row gather), and the response block
is the END of the sequence, so the model only needs logits for the last ``L + 1`` positions
(``logits_to_keep``): a long image prompt never gets its ``[T, V]`` logits computed.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from PIL import Image
from transformers import ProcessorMixin

from care.algo.losses import sequence_logprobs, token_entropy

from .vlm import IMAGE_PLACEHOLDER_TOKENS, check_token_ids


@dataclass(frozen=True)
class EncodedContext:
    """One rollout context (rendered prompt with its images, then the assistant prefix).

    Attributes:
        input_ids: long ``[T]``, image placeholders expanded to one id per vision token.
        mm_token_type_ids: int ``[T]`` (0 text, 1 image) or None when the processor gives none.
        pixel_values: float ``[N_patches, C*P*P*T]`` or None without images.
        image_grid_thw: long ``[N_images, 3]`` or None without images.
        prefix_length: how many of the last ids come from the assistant prefix.
    """

    input_ids: torch.Tensor
    mm_token_type_ids: torch.Tensor | None
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    prefix_length: int


def encode_context(
    processor: ProcessorMixin,
    prompt: str,
    images: Sequence[Image.Image],
    assistant_prefix: str = "",
) -> EncodedContext:
    """Tokenise one rendered prompt with its images, then append the assistant prefix.

    The prefix is tokenised on its own and appended, so the context ids are the same whether
    the rollout engine or :func:`collate` builds them, and the prefix ids are known exactly.

    Example: prompt ``"<|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>Q<|im_end|>
    \\n<|im_start|>assistant\\n"`` with one 112x112 image → 16 ``<|image_pad|>`` ids,
    ``image_grid_thw = [[1, 8, 8]]``; ``assistant_prefix="<think>"`` adds its ids at the end.
    """
    if not isinstance(prompt, str):
        raise ValueError(
            f"prompt must be a string (rendered chat text), got {type(prompt).__name__}"
        )
    if not isinstance(assistant_prefix, str):
        raise ValueError(
            f"assistant_prefix must be a string, got {type(assistant_prefix).__name__}"
        )
    images = list(images)
    for index, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise ValueError(f"images[{index}] must be a PIL image, got {type(image).__name__}")
    image_token = getattr(processor, "image_token", "<|image_pad|>")
    placeholders = prompt.count(image_token)
    if placeholders != len(images):
        raise ValueError(
            f"the prompt has {placeholders} image placeholder(s) {image_token!r} but "
            f"{len(images)} image(s) were given; render one placeholder per image"
        )
    encoded = processor(text=[prompt], images=images or None, return_tensors="pt", padding=False)
    input_ids = encoded["input_ids"][0].to(torch.long)
    type_ids = encoded.get("mm_token_type_ids")
    type_ids = None if type_ids is None else type_ids[0].to(torch.int32)
    prefix_ids = processor.tokenizer.encode(assistant_prefix, add_special_tokens=False)
    if prefix_ids:
        prefix = torch.tensor(prefix_ids, dtype=torch.long)
        input_ids = torch.cat([input_ids, prefix])
        if type_ids is not None:
            type_ids = torch.cat([type_ids, torch.zeros(len(prefix_ids), dtype=torch.int32)])
    return EncodedContext(
        input_ids=input_ids,
        mm_token_type_ids=type_ids,
        pixel_values=encoded.get("pixel_values") if images else None,
        image_grid_thw=encoded.get("image_grid_thw") if images else None,
        prefix_length=len(prefix_ids),
    )


@dataclass
class PolicyBatch:
    """Prompt + response rows for :func:`policy_forward` (layout in the module docstring).

    Attributes:
        input_ids: long ``[B, T]``, ``T = response_start + L``; context left-padded, response
            right-padded, both with ``pad_token_id``.
        attention_mask: long ``[B, T]``, 1 on real tokens.
        mm_token_type_ids: int ``[B, T]`` (0 text, 1 image; 0 on padding) or None.
        pixel_values: float ``[N_patches, D]`` of all rows' images in row order, or None.
        image_grid_thw: long ``[N_images, 3]``, or None.
        response_ids: long ``[B, L]`` = ``input_ids[:, response_start:]`` (pad on padding).
        response_mask: bool ``[B, L]``, True on real response tokens.
        response_start: column where every response begins.
        pad_token_id: the id used for padding.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mm_token_type_ids: torch.Tensor | None
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    response_start: int
    pad_token_id: int

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def response_length(self) -> int:
        return int(self.response_ids.shape[1])

    def to(self, device: torch.device | str) -> PolicyBatch:
        """The same batch with every tensor on `device`."""
        moved = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, torch.Tensor):
                moved[field.name] = value.to(device)
        return replace(self, **moved)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for the model's forward (ids, mask, vision inputs)."""
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.mm_token_type_ids is not None:
            inputs["mm_token_type_ids"] = self.mm_token_type_ids
        if self.pixel_values is not None:
            inputs["pixel_values"] = self.pixel_values
            inputs["image_grid_thw"] = self.image_grid_thw
        return inputs


def left_pad_contexts(
    contexts: Sequence[EncodedContext], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Stack contexts into left-padded model inputs (ids, mask, type ids, vision inputs).

    Example: contexts of 3 and 5 ids → ``input_ids [2, 5]`` with two pads at the start of row
    0 and ``attention_mask [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]``.
    """
    if not contexts:
        raise ValueError("contexts must not be empty")
    width = max(int(context.input_ids.shape[0]) for context in contexts)
    rows = len(contexts)
    input_ids = torch.full((rows, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((rows, width), dtype=torch.long)
    # A context without type ids (a processor that only marks images) is all text: zeros.
    has_type_ids = any(context.mm_token_type_ids is not None for context in contexts)
    type_ids = torch.zeros((rows, width), dtype=torch.int32) if has_type_ids else None
    for row, context in enumerate(contexts):
        length = int(context.input_ids.shape[0])
        input_ids[row, width - length :] = context.input_ids
        attention_mask[row, width - length :] = 1
        if type_ids is not None and context.mm_token_type_ids is not None:
            type_ids[row, width - length :] = context.mm_token_type_ids
    inputs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if type_ids is not None:
        inputs["mm_token_type_ids"] = type_ids
    with_images = [context for context in contexts if context.pixel_values is not None]
    if with_images:
        inputs["pixel_values"] = torch.cat([context.pixel_values for context in with_images])
        inputs["image_grid_thw"] = torch.cat([context.image_grid_thw for context in with_images])
    return inputs


def collate(
    processor: ProcessorMixin,
    prompts: Sequence[str],
    images: Sequence[Sequence[Image.Image]],
    responses: Sequence[Sequence[int]],
    *,
    assistant_prefixes: Sequence[str] | None = None,
) -> PolicyBatch:
    """Build a :class:`PolicyBatch` from rendered prompts, their images and response token ids.

    Contexts are tokenised exactly as the rollout engine does (:func:`encode_context`), so the
    response ids a sampler returned line up with the ids scored here. Responses are used as
    given (never re-tokenised); an empty response gives an all-False mask row.

    Args:
        processor: the policy's processor.
        prompts: B rendered chat texts, each ending with the generation prompt.
        images: B lists of PIL images (one per placeholder in the prompt; may be empty).
        responses: B lists of response token ids (e.g. ``RolloutOutput.response_ids``).
        assistant_prefixes: B texts the responses continue (RGR repair contexts), or None.

    Example: prompts of 20 and 23 ids, responses ``[[5, 6, 7], [8]]`` → ``input_ids [2, 26]``,
    ``response_start = 23``, ``response_mask [[T, T, T], [T, F, F]]``.
    """
    count = len(prompts)
    if count == 0:
        raise ValueError("prompts must not be empty")
    for name, values in (("images", images), ("responses", responses)):
        if len(values) != count:
            raise ValueError(f"{name} has {len(values)} rows but prompts has {count}")
    if assistant_prefixes is not None and len(assistant_prefixes) != count:
        raise ValueError(
            f"assistant_prefixes has {len(assistant_prefixes)} rows but prompts has {count}"
        )
    tokenizer = processor.tokenizer
    vocab_size = len(tokenizer)
    pad_token_id = tokenizer.pad_token_id
    if pad_token_id is None:
        raise ValueError("the processor's tokenizer has no pad token")
    vocabulary = tokenizer.get_vocab()
    placeholder_ids = {
        vocabulary[token] for token in IMAGE_PLACEHOLDER_TOKENS if token in vocabulary
    }
    response_lists: list[list[int]] = []
    for row, response in enumerate(responses):
        ids = check_token_ids(f"responses[{row}]", response, vocab_size)
        if placeholder_ids.intersection(ids):
            raise ValueError(
                f"responses[{row}] contains an image/video placeholder id "
                f"{sorted(placeholder_ids.intersection(ids))}: the model cannot score it "
                "(placeholders are replaced by vision features); suppress them when sampling"
            )
        response_lists.append(ids)
    contexts = [
        encode_context(
            processor,
            prompts[row],
            images[row],
            "" if assistant_prefixes is None else assistant_prefixes[row],
        )
        for row in range(count)
    ]
    context_inputs = left_pad_contexts(contexts, pad_token_id)
    # At least one column so that shapes stay [B, L >= 1] even when every response is empty.
    response_length = max(1, max(len(ids) for ids in response_lists))
    response_ids = torch.full((count, response_length), pad_token_id, dtype=torch.long)
    response_mask = torch.zeros((count, response_length), dtype=torch.bool)
    for row, ids in enumerate(response_lists):
        response_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        response_mask[row, : len(ids)] = True
    response_start = int(context_inputs["input_ids"].shape[1])
    type_ids = context_inputs.get("mm_token_type_ids")
    if type_ids is not None:
        type_ids = torch.cat(
            [type_ids, torch.zeros((count, response_length), dtype=type_ids.dtype)], dim=1
        )
    return PolicyBatch(
        input_ids=torch.cat([context_inputs["input_ids"], response_ids], dim=1),
        attention_mask=torch.cat(
            [context_inputs["attention_mask"], response_mask.to(torch.long)], dim=1
        ),
        mm_token_type_ids=type_ids,
        pixel_values=context_inputs.get("pixel_values"),
        image_grid_thw=context_inputs.get("image_grid_thw"),
        response_ids=response_ids,
        response_mask=response_mask,
        response_start=response_start,
        pad_token_id=int(pad_token_id),
    )


@dataclass
class ForwardOutput:
    """What :func:`policy_forward` returns.

    Attributes:
        token_logprobs: float32 ``[B, L]``, log-prob of each response token (0 on padding);
            differentiable when the forward ran with grad.
        embeddings: float32 ``[B, H]`` L2-normalised rationale embeddings (no grad), or None.
        entropy: float32 ``[B, L]`` per-token entropy of the (temperature-scaled,
            suppressed) distribution, no grad, 0 on padding; or None.
    """

    token_logprobs: torch.Tensor
    embeddings: torch.Tensor | None
    entropy: torch.Tensor | None


def policy_forward(
    model: torch.nn.Module,
    batch: PolicyBatch,
    *,
    want_embeddings: bool,
    think_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    requires_grad: bool = False,
    want_entropy: bool = False,
    suppress_token_ids: Sequence[int] | None = None,
    chunk_size: int = 1024,
) -> ForwardOutput:
    """One forward over prompt + response: response log-probs and, optionally, embeddings.

    ``token_logprobs[b, t] = log_softmax(z / temperature)[response_ids[b, t]]`` where ``z`` are
    the logits predicting that token, computed ``chunk_size`` positions at a time in float32
    (``care.algo.losses.sequence_logprobs``), so ``[B, L, V]`` float32 never exists at once.
    ``suppress_token_ids`` get ``-inf`` logits first — pass the ids the sampler suppressed to
    score tokens under the distribution that was actually sampled (the engine suppresses the
    vision ids); the PPO ratio is unaffected as long as old and new log-probs agree on it.

    The rationale embedding is the final-norm hidden state (the input of the output head, i.e.
    ``hidden_states[-1]`` of ``output_hidden_states=True``) at each response token, mean-pooled
    over ``think_mask & response_mask`` (rows whose think mask selects nothing pool the whole
    response), L2-normalised, detached — caught by a hook during this same forward.

    Args:
        model: the policy (a DDP/FSDP wrapper is fine: the hook goes on the inner output head).
        batch: from :func:`collate`, on the model's device.
        want_embeddings: also return rationale embeddings.
        think_mask: bool ``[B, L]`` think region of each response (after its fallback); None
            pools the whole response.
        temperature: > 0; the rollout temperature for old log-probs.
        requires_grad: True for the update pass; False (default) runs under ``no_grad``.
        want_entropy: also return per-token entropy (no grad).
        suppress_token_ids: ids removed from the distribution before the log-softmax.
        chunk_size: positions per float32 chunk.

    Example: tiny model, one row with a 3-token response and think_mask ``[[T, T, F]]`` →
    ``token_logprobs [1, 3]`` (each about ``-log 366`` for a random model),
    ``embeddings [1, 64]`` with unit norm = normalised mean of the first two tokens' states.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    rows, response_length = batch.response_ids.shape
    if think_mask is not None:
        if tuple(think_mask.shape) != (rows, response_length):
            raise ValueError(
                f"think_mask must have the response shape [B, L] = [{rows}, {response_length}], "
                f"got {list(think_mask.shape)}"
            )
        if think_mask.dtype != torch.bool:
            raise ValueError(f"think_mask must be a bool tensor, got {think_mask.dtype}")
    inner = getattr(model, "module", model)  # DDP keeps the real model in .module
    output_head = inner.get_output_embeddings()
    captured: dict[str, torch.Tensor] = {}

    def catch_final_hidden_states(_module: torch.nn.Module, args: tuple[torch.Tensor]) -> None:
        captured["hidden"] = args[0]

    hook = (
        output_head.register_forward_pre_hook(catch_final_hidden_states)
        if want_embeddings
        else None
    )
    inputs = batch.model_inputs()
    keep_last = _accepts_logits_to_keep(inner)
    if keep_last:
        # Logits at position t predict token t+1: the last L+1 positions cover the response.
        inputs["logits_to_keep"] = response_length + 1
    try:
        with torch.set_grad_enabled(requires_grad):
            outputs = model(**inputs, use_cache=False)
            logits = outputs.logits[:, -(response_length + 1) : -1]
            if temperature != 1.0:
                logits = logits / temperature
            if suppress_token_ids:
                suppressed = torch.tensor(
                    sorted(set(suppress_token_ids)), dtype=torch.long, device=logits.device
                )
                logits = logits.index_fill(-1, suppressed, float("-inf"))
            token_logprobs = sequence_logprobs(logits, batch.response_ids, chunk_size)
            token_logprobs = token_logprobs.masked_fill(~batch.response_mask, 0.0)
    finally:
        if hook is not None:
            hook.remove()
    embeddings = None
    if want_embeddings:
        hidden = captured["hidden"][:, -response_length:].detach()
        embeddings = pooled_embeddings(hidden, batch.response_mask, think_mask)
    entropy = None
    if want_entropy:
        entropy = token_entropy(logits.detach(), batch.response_mask, chunk_size)
    return ForwardOutput(token_logprobs=token_logprobs, embeddings=embeddings, entropy=entropy)


def pooled_embeddings(
    hidden: torch.Tensor, response_mask: torch.Tensor, think_mask: torch.Tensor | None
) -> torch.Tensor:
    """Mean of `hidden` over the think region (fallback: the whole response), L2-normalised.

    Args:
        hidden: float ``[B, L, H]`` hidden states at the response tokens.
        response_mask: bool ``[B, L]``.
        think_mask: bool ``[B, L]`` or None (= whole response).

    Returns:
        float32 ``[B, H]``, unit rows (a row with no response tokens is all zeros).

    Example: hidden ``[[[1, 0], [0, 1], [5, 5]]]``, response all True, think ``[[T, T, F]]``
    → mean ``[0.5, 0.5]`` → ``[[0.7071, 0.7071]]``.
    """
    with torch.no_grad():
        hidden = hidden.float()
        response_mask = response_mask.to(hidden.device)
        if think_mask is None:
            region = response_mask
        else:
            region = think_mask.to(hidden.device) & response_mask
            empty = ~region.any(dim=1, keepdim=True)
            region = torch.where(empty, response_mask, region)
        weights = region.to(hidden.dtype).unsqueeze(-1)
        summed = (hidden * weights).sum(dim=1)
        mean = summed / weights.sum(dim=1).clamp_min(1.0)
        return torch.nn.functional.normalize(mean, dim=-1)


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters
