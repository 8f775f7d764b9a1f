"""The rollout interface: what the trainer and the evaluation model ask of any sampler.

An engine turns requests (a rendered prompt, its images, optionally an assistant prefix to
continue) into ``n`` sampled responses each, with the token ids, the decoded text and the
log-probability of every sampled token under the distribution actually sampled from. The
in-process transformers engine (:mod:`care.rollout.hf`) and a vLLM engine sit behind it, so the
training loop never knows which one runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch
from PIL import Image

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample.

    Attributes:
        temperature: 0 → greedy decoding; > 0 divides the logits before sampling.
        top_p: nucleus mass in (0, 1]; 1 disables it.
        top_k: keep the k most likely tokens; 0 disables it.
        max_new_tokens: response length cap (tokens, stop token included).
        n: samples per request (completions, not prompts).
        seed: fixes the samples (same seed and requests → same outputs); None draws from
            (and advances) the global torch RNG.

    Example: ``SamplingParams(temperature=1.0, max_new_tokens=256, n=8, seed=3)`` — one GRPO
    group of 8 per prompt.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    n: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
            raise ValueError(f"temperature must be a number >= 0, got {self.temperature!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)):
            raise ValueError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        for name in ("top_k", "max_new_tokens", "n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.n < 1:
            raise ValueError(f"n (samples per request) must be >= 1, got {self.n}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(f"seed must be an int or None, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class RolloutRequest:
    """One prompt to sample from.

    Attributes:
        prompt: rendered chat text, generation prompt included (``...<|im_start|>assistant\\n``),
            with one image placeholder per image.
        images: the images, in placeholder order.
        assistant_prefix: text the model continues from (an RGR repair context); it is part of
            the context, not of the response.
    """

    prompt: str
    images: Sequence[Image.Image] = field(default_factory=tuple)
    assistant_prefix: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt:
            raise ValueError("prompt must be a non-empty string (the rendered chat text)")
        if not isinstance(self.assistant_prefix, str):
            raise ValueError(
                f"assistant_prefix must be a string, got {type(self.assistant_prefix).__name__}"
            )
        for index, image in enumerate(self.images):
            if not isinstance(image, Image.Image):
                raise ValueError(f"images[{index}] must be a PIL image, got {type(image).__name__}")


@dataclass(frozen=True)
class RolloutOutput:
    """One sampled response.

    Attributes:
        prompt_ids: the context the model continued: prompt ids (image placeholders expanded to
            one id per vision token) followed by the assistant-prefix ids; no padding.
        response_ids: sampled ids, no padding, ending with the stop token when one was produced.
        text: ``response_ids`` decoded with special tokens (the stop token) removed.
        logprobs: per response token, its log-prob under the distribution sampled from
            (suppression, temperature, top-k, top-p applied and renormalised); for greedy
            decoding, under the untempered distribution with suppression applied.
        finish_reason: ``"stop"`` (a stop token ended it) or ``"length"`` (max_new_tokens).
        prefix_ids: the assistant-prefix ids (the tail of ``prompt_ids``; empty without one).
    """

    prompt_ids: list[int]
    response_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: FinishReason
    prefix_ids: list[int] = field(default_factory=list)


@runtime_checkable
class RolloutEngine(Protocol):
    """A sampler the trainer and the evaluation model drive.

    Attributes:
        suppress_token_ids: ids the sampler never draws (the vision placeholders by default).
            The trainer scores old and new log-probs with the same ids suppressed, so that
            they are log-probs under the distribution the rollouts came from.
    """

    suppress_token_ids: Sequence[int]

    def generate(
        self, requests: Sequence[RolloutRequest], params: SamplingParams
    ) -> list[list[RolloutOutput]]:
        """``params.n`` outputs per request, in request order."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from `model`'s current weights."""
        ...
