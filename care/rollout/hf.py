"""The in-process rollout engine: batched transformers ``generate`` with a KV cache.

Requests are expanded to ``n`` rows each (request-major: request 0's samples first) and decoded
``batch_size`` rows at a time, contexts left-padded so every row's next token sits in the last
column. The vision placeholder ids are suppressed at every step (a random or young policy
samples them otherwise, and the next multimodal forward then fails).

Sampler log-probs: the processed scores — after suppression, temperature, top-k and top-p, i.e.
exactly the distribution ``generate`` samples from — go through a log-softmax inside a last
logits processor, which keeps the chosen token's value when the next step reveals it. This gives
what ``output_scores=True`` would give without holding a ``[steps, rows, vocab]`` score history
(tens of GB for a 150k vocabulary and 2k-token responses).

Generation settings come only from :class:`~care.rollout.base.SamplingParams`: a checkpoint's
``generation_config.json`` (a released Qwen2.5-VL ships top_k=1, temperature 0.1 and a
repetition penalty) is ignored while the engine samples.

Every process generates on its own (``synced_gpus=False``). transformers would otherwise turn
each decoding step into an all-reduce whenever the model is FSDP-managed and several processes
exist, and processes that call ``generate`` a different number of times (RGR repairs for some
groups only, DAPO refills) would wait for each other forever. The engine therefore needs whole
weights: under FSDP2 the trainer gathers them before rollout, and the engine refuses sharded
ones rather than hang.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    ProcessorMixin,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from care.models.policy import encode_context, left_pad_contexts
from care.models.vlm import resolve_token_sets

from .base import FinishReason, RolloutOutput, RolloutRequest, SamplingParams


class _SampledTokenLogProbs(LogitsProcessor):
    """Last logits processor: records the log-prob of each sampled token under the final scores.

    At step t it stores ``log_softmax(scores_t)``; at step t+1 ``input_ids`` ends with the token
    drawn from ``scores_t``, whose log-prob is then kept. :meth:`finish` collects the last step.
    """

    def __init__(self) -> None:
        self._pending: torch.Tensor | None = None
        self._chosen: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._collect(input_ids[:, -1])
        self._pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def _collect(self, chosen_tokens: torch.Tensor) -> None:
        if self._pending is not None:
            self._chosen.append(self._pending.gather(-1, chosen_tokens[:, None]).squeeze(-1))
            self._pending = None

    def finish(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """float32 ``[rows, steps]`` log-probs of `new_tokens` (``[rows, steps]``)."""
        if new_tokens.shape[1] > 0:
            self._collect(new_tokens[:, -1])
        if len(self._chosen) != new_tokens.shape[1]:
            raise RuntimeError(
                f"recorded {len(self._chosen)} sampling steps for {new_tokens.shape[1]} "
                "generated tokens; generate() skipped the logits processors"
            )
        if not self._chosen:
            return torch.zeros(new_tokens.shape, dtype=torch.float32)
        return torch.stack(self._chosen, dim=1)


class HFRolloutEngine:
    """Samples with ``model.generate`` in this process (see the module docstring).

    Args:
        model: a Qwen-VL style ``PreTrainedModel`` (a DDP wrapper's ``.module`` is used).
        processor: its processor (tokenises prompts, turns images into pixel values).
        batch_size: rows (samples, not prompts) decoded together.
        suppress_token_ids: ids never sampled; None → :func:`care.models.vlm.vision_token_ids`.
        stop_ids: ids that end a response; None → ``<|im_end|>``, ``<|endoftext|>`` and eos.

    Example::

        engine = HFRolloutEngine(model, processor, batch_size=16)
        outs = engine.generate([RolloutRequest(prompt, [image])],
                               SamplingParams(n=8, max_new_tokens=128, seed=0))
        outs[0][3].response_ids, outs[0][3].logprobs    # 4th sample of the 1st prompt
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: ProcessorMixin,
        *,
        batch_size: int = 8,
        suppress_token_ids: Sequence[int] | None = None,
        stop_ids: Sequence[int] | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"batch_size must be a positive int (rows per generate), got {batch_size!r}"
            )
        self.model = _unwrap(model)
        self.processor = processor
        self.batch_size = batch_size
        tokenizer = processor.tokenizer
        self.suppress_token_ids, self.stop_token_ids = resolve_token_sets(
            processor, suppress_token_ids, stop_ids
        )
        pad_token_id = tokenizer.pad_token_id
        self.pad_token_id = int(self.stop_token_ids[0] if pad_token_id is None else pad_token_id)

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Sample from `model` from now on (in process the weights are shared, so this only
        rebinds the engine when the trainer hands it a different module)."""
        self.model = _unwrap(model)

    def generate(
        self, requests: Sequence[RolloutRequest], params: SamplingParams
    ) -> list[list[RolloutOutput]]:
        """``params.n`` samples per request (see :class:`~care.rollout.base.RolloutEngine`)."""
        if not isinstance(params, SamplingParams):
            raise ValueError(f"params must be SamplingParams, got {type(params).__name__}")
        for index, request in enumerate(requests):
            if not isinstance(request, RolloutRequest):
                raise ValueError(
                    f"requests[{index}] must be a RolloutRequest, got {type(request).__name__}"
                )
        contexts = [
            encode_context(self.processor, request.prompt, request.images, request.assistant_prefix)
            for request in requests
        ]
        rows = [(request, sample) for request in range(len(requests)) for sample in range(params.n)]
        results: list[list[RolloutOutput | None]] = [[None] * params.n for _ in requests]
        model = self.model
        if _has_sharded_parameters(model):
            raise RuntimeError(
                "the policy's weights are FSDP-sharded: gather them before generating (the "
                "trainer does so around rollout), since processes generate independently and "
                "per-forward all-gathers would leave them waiting for each other"
            )
        was_training = model.training
        model.eval()
        try:
            with _seeded(params.seed, model.device), torch.no_grad():
                for start in range(0, len(rows), self.batch_size):
                    chunk = rows[start : start + self.batch_size]
                    outputs = self._generate_rows([contexts[r] for r, _ in chunk], params)
                    for (request, sample), output in zip(chunk, outputs, strict=True):
                        results[request][sample] = output
        finally:
            model.train(was_training)
        return [[output for output in outputs if output is not None] for outputs in results]

    def _generate_rows(self, contexts: Sequence, params: SamplingParams) -> list[RolloutOutput]:
        model = self.model
        inputs = left_pad_contexts(contexts, self.pad_token_id)
        inputs = {name: tensor.to(model.device) for name, tensor in inputs.items()}
        context_width = inputs["input_ids"].shape[1]
        recorder = _SampledTokenLogProbs()
        processors = LogitsProcessorList([*self._warpers(params), recorder])
        settings = {
            "do_sample": not params.greedy,
            "max_new_tokens": params.max_new_tokens,
            "num_beams": 1,
            "use_cache": True,
            "eos_token_id": self.stop_token_ids,
            "pad_token_id": self.pad_token_id,
            "suppress_tokens": self.suppress_token_ids or None,
        }
        if not params.greedy:
            # Our own warpers apply these before the recorder; transformers must add none
            # after it (its default top_k is 50).
            settings.update(temperature=1.0, top_k=0, top_p=1.0)
        generation_config = GenerationConfig(**settings)
        with _only_this_generation_config(model):
            sequences = model.generate(
                **inputs,
                generation_config=generation_config,
                logits_processor=processors,
                synced_gpus=False,  # see the module docstring
            )
        new_tokens = sequences[:, context_width:]
        token_logprobs = recorder.finish(new_tokens).cpu()
        new_tokens = new_tokens.cpu()
        stop_set = set(self.stop_token_ids)
        tokenizer = self.processor.tokenizer
        outputs = []
        for row, context in enumerate(contexts):
            generated = new_tokens[row].tolist()
            stop_at = next((i for i, token in enumerate(generated) if token in stop_set), None)
            finish_reason: FinishReason = "length" if stop_at is None else "stop"
            response = generated if stop_at is None else generated[: stop_at + 1]
            prompt_ids = context.input_ids.tolist()
            outputs.append(
                RolloutOutput(
                    prompt_ids=prompt_ids,
                    response_ids=response,
                    text=tokenizer.decode(response, skip_special_tokens=True),
                    logprobs=token_logprobs[row, : len(response)].tolist(),
                    finish_reason=finish_reason,
                    prefix_ids=prompt_ids[len(prompt_ids) - context.prefix_length :],
                )
            )
        return outputs

    @staticmethod
    def _warpers(params: SamplingParams) -> list[LogitsProcessor]:
        if params.greedy:
            return []
        # transformers' own order: temperature, then top-k, then top-p.
        warpers: list[LogitsProcessor] = []
        if params.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(float(params.temperature)))
        if params.top_k > 0:
            warpers.append(TopKLogitsWarper(top_k=params.top_k))
        if params.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=float(params.top_p)))
        return warpers


def _has_sharded_parameters(model: torch.nn.Module) -> bool:
    """True when some parameter is an FSDP2 shard (a DTensor) rather than a whole tensor.

    FSDP2 swaps whole tensors in for the module's parameters while it is unsharded
    (``FSDPModule.unshard``) and the shards back in on ``reshard``.
    """
    from torch.distributed.tensor import DTensor

    return any(isinstance(param, DTensor) for param in model.parameters())


def _unwrap(model: torch.nn.Module) -> PreTrainedModel:
    inner = getattr(model, "module", model)
    if not hasattr(inner, "generate"):
        raise ValueError(
            f"the model must have .generate (a transformers model), got {type(inner).__name__}"
        )
    return inner


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch for the block and restore the caller's RNG state afterwards."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed)
        yield


@contextmanager
def _only_this_generation_config(model: PreTrainedModel) -> Iterator[None]:
    # generate() fills every unset field from model.generation_config; a blank one leaves only
    # transformers' global defaults, which the engine's config overrides explicitly.
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved
