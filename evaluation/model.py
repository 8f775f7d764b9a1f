"""``care_vlm``: the project's policy as an lmms-eval chat model.

lmms-eval finds it through the ``lmms_eval.models`` entry point of this package
(`evaluation.care_vlm_manifest`), so the real CLI runs it::

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 CARE_DATA_ROOT=/data python -m lmms_eval \\
        --model care_vlm --model_args pretrained=runs/x/checkpoints/step_100,engine=hf \\
        --tasks care_six --include_path benchmarks_cfg --batch_size 16 --log_samples \\
        --output_path out/

Contract with the task files (``benchmarks_cfg/``, ``evaluation.tasks.doc_to_messages``): a
task's ``doc_to_messages(doc)`` returns exactly ``care.prompts.build_messages(question, choices,
num_images)`` — the training prompt — with each ``{"type": "image"}`` item carrying its image
under ``"url"`` (a PIL image, image bytes, a ``{"bytes", "path"}`` cell or a file path).
`CareVLM` takes the images out (``evaluation.tasks.split_images``), renders the rest with the
processor's chat template (``care.prompts.render_prompt``) and samples through a rollout engine
(``care.rollout``), so the prompt a benchmark sees is the prompt the policy was trained on. A
message list without the project's system prompt is refused unless ``require_care_prompt=False``.

Generation settings, first match wins: the request's ``gen_kwargs`` (the task YAML's
``generation_kwargs``, which lmms-eval's ``--gen_kwargs`` overrides), then the model args, then
`DEFAULT_SAMPLING` (greedy, 1024 new tokens). ``until`` strings cut the decoded text before
the first match (lmms-eval's convention: the stop string is not part of the response); decoding
itself ends at the end-of-turn token or after ``max_new_tokens``.

Log-likelihood scoring and multi-round generation raise NotImplementedError, as lmms-eval's
own generation-only chat models do.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from tqdm import tqdm

from care.prompts import SYSTEM_PROMPT, render_prompt
from care.rollout.base import RolloutRequest, SamplingParams
from care.rollout.factory import ENGINE_NAMES, make_engine
from evaluation.tasks import split_images, to_pil

MODEL_NAME = "care_vlm"
"""The ``--model`` name lmms-eval knows this class by."""

DEFAULT_SAMPLING: dict[str, float | int] = {
    "temperature": 0.0,
    "top_p": 1.0,
    "top_k": 0,
    "max_new_tokens": 1024,
}
"""Used where neither the task's gen_kwargs nor the model args say otherwise: greedy decoding,
one answer per question (the paper's protocol)."""

GEN_KWARGS_KEYS: frozenset[str] = frozenset(
    {"until", "max_new_tokens", "temperature", "top_p", "top_k", "do_sample", "num_beams"}
)
"""The gen_kwargs keys `CareVLM` understands; any other key is an error, not silently dropped."""


class CareVLM(lmms):
    """A local checkpoint folder behind lmms-eval's chat-model interface (see the module doc).

    Model args (``--model_args key=value,...``):
        pretrained: the checkpoint folder (``care.models.vlm.load_policy`` loads it offline).
        engine: rollout engine name (``care.rollout.factory.ENGINE_NAMES``: ``hf``, or ``vllm``
            where vLLM is installed).
        batch_size: questions decoded together (lmms-eval's ``--batch_size`` fills it).
        device: ``cpu``, ``cuda``, ``cuda:1``...; default ``cuda`` when available, else ``cpu``.
        dtype: ``auto`` (the checkpoint's), ``bfloat16``, ``float16`` or ``float32``.
        attn_implementation: passed to ``from_pretrained`` (``sdpa``, ``flash_attention_2``).
        max_new_tokens, temperature, top_p, top_k: sampling defaults under the task's gen_kwargs.
        seed: sampling seed; chunk ``c`` of each gen_kwargs group samples with seed
            ``seed * 100_003 + c`` (irrelevant for greedy decoding). None: the global torch RNG.
        require_care_prompt: refuse messages whose system turn is not the project's prompt.

    Example: ``CareVLM(pretrained="ckpt", batch_size=8, max_new_tokens=64).generate_until(reqs)``
    → one ``GenerationResult`` per request, in request order.
    """

    is_simple = False

    def __init__(
        self,
        pretrained: str,
        engine: str = "hf",
        batch_size: int | str = 1,
        device: str | None = None,
        dtype: str = "auto",
        attn_implementation: str | None = None,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        require_care_prompt: bool = True,
        **unknown: Any,
    ) -> None:
        super().__init__()
        # lmms-eval passes max_batch_size whether or not a model uses it; None means unset.
        unknown = {key: value for key, value in unknown.items() if value is not None}
        unknown.pop("max_batch_size", None)
        if unknown:
            raise ValueError(
                f"care_vlm got unknown model args {sorted(unknown)}; known: pretrained, engine, "
                "batch_size, device, dtype, attn_implementation, max_new_tokens, temperature, "
                "top_p, top_k, seed, require_care_prompt"
            )
        if not isinstance(pretrained, str) or not pretrained:
            raise ValueError(f"pretrained must be a checkpoint folder path, got {pretrained!r}")
        if engine not in ENGINE_NAMES:
            raise ValueError(f"engine must be one of {list(ENGINE_NAMES)}, got {engine!r}")
        self.batch_size_per_call = _positive_int("batch_size", batch_size)
        self.model_defaults = _model_sampling_defaults(max_new_tokens, temperature, top_p, top_k)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        if not isinstance(require_care_prompt, bool):
            raise ValueError(
                f"require_care_prompt must be true or false, got {require_care_prompt!r}"
            )
        self.require_care_prompt = require_care_prompt
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"

        self.pretrained = pretrained
        self.engine_name = engine
        self.engine, self.processor = make_engine(
            engine,
            checkpoint=pretrained,
            batch_size=self.batch_size_per_call,
            dtype=dtype,
            device=device,
            attn_implementation=attn_implementation,
        )

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_call

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        """One response per request: requests with equal gen_kwargs share batches of
        ``batch_size``, in request order; results come back in request order."""
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            gen_kwargs = _request_args(request)[2]
            groups.setdefault(json.dumps(gen_kwargs, sort_keys=True, default=str), []).append(index)
        results: list[GenerationResult | None] = [None] * len(requests)
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="care_vlm responding")
        for indices in groups.values():
            gen_kwargs = _request_args(requests[indices[0]])[2]
            params, until = resolve_sampling(gen_kwargs, self.model_defaults)
            for chunk_number, start in enumerate(range(0, len(indices), self.batch_size)):
                chunk = indices[start : start + self.batch_size]
                rollout_requests = [self.rollout_request(requests[index]) for index in chunk]
                chunk_params = _with_seed(params, self.seed, chunk_number)
                outputs = self.engine.generate(rollout_requests, chunk_params)
                for index, samples in zip(chunk, outputs, strict=True):
                    sample = samples[0]
                    text = cut_at_stop_strings(sample.text, until)
                    results[index] = GenerationResult(
                        text=text,
                        token_counts=TokenCounts(
                            input_tokens=len(sample.prompt_ids),
                            output_tokens=len(sample.response_ids),
                        ),
                    )
                    context, _, request_kwargs = _request_args(requests[index])[:3]
                    self.cache_hook.add_partial("generate_until", (context, request_kwargs), text)
                progress.update(len(chunk))
        progress.close()
        missing = [index for index, result in enumerate(results) if result is None]
        if missing:
            raise RuntimeError(f"the rollout engine returned no response for requests {missing}")
        return results  # type: ignore[return-value]

    def rollout_request(self, request: Instance) -> RolloutRequest:
        """The engine request of one lmms-eval request: the rendered training prompt and its
        images, from the task's ``doc_to_messages`` (see the module docstring)."""
        _, doc_to_messages, _, doc_id, task, split = _request_args(request)
        where = f"{task}[{split}][{doc_id}]"
        try:
            doc = self.task_dict[task][split][doc_id]
        except (KeyError, IndexError, TypeError) as error:
            raise ValueError(f"{where}: lmms-eval did not hand care_vlm this document") from error
        messages, images = split_images(doc_to_messages(doc))
        if self.require_care_prompt:
            check_care_prompt(messages, where)
        pil_images = [
            to_pil(image, f"{where} image {number}") for number, image in enumerate(images)
        ]
        return RolloutRequest(prompt=render_prompt(self.processor, messages), images=pil_images)

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "care_vlm generates answers and scores them with the project's verifier; it does not "
            "score log-likelihoods. Use a generate_until task (output_type: generate_until)."
        )

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(
            "care_vlm answers one question per turn, as the policy was trained; multi-round "
            "tasks (output_type: generate_until_multi_round) are not supported."
        )


def resolve_sampling(
    gen_kwargs: Mapping[str, Any], model_defaults: Mapping[str, float | int] | None = None
) -> tuple[SamplingParams, list[str]]:
    """The engine's `SamplingParams` and the ``until`` strings of one request's gen_kwargs.

    gen_kwargs win over `model_defaults`, which win over `DEFAULT_SAMPLING`. ``do_sample:
    false`` forces greedy decoding; ``do_sample: true`` needs a temperature > 0. ``num_beams``
    must be 1. Unknown keys are a ValueError naming `GEN_KWARGS_KEYS`.

    Example: ``resolve_sampling({"until": "</s>", "max_new_tokens": 64}, {"temperature": 0.7})``
    → ``(SamplingParams(temperature=0.7, top_p=1.0, top_k=0, max_new_tokens=64, n=1), ["</s>"])``.
    """
    if not isinstance(gen_kwargs, Mapping):
        raise ValueError(f"gen_kwargs must be a mapping, got {type(gen_kwargs).__name__}")
    unknown = sorted(set(gen_kwargs) - GEN_KWARGS_KEYS)
    if unknown:
        raise ValueError(
            f"gen_kwargs has unknown key(s) {unknown}; care_vlm understands {sorted(GEN_KWARGS_KEYS)}"
        )
    settings = {**DEFAULT_SAMPLING, **(model_defaults or {})}
    for key in DEFAULT_SAMPLING:
        if gen_kwargs.get(key) is not None:
            settings[key] = gen_kwargs[key]
    num_beams = gen_kwargs.get("num_beams")
    if num_beams is not None and num_beams != 1:
        raise ValueError(f"gen_kwargs num_beams must be 1 (no beam search), got {num_beams!r}")
    do_sample = gen_kwargs.get("do_sample")
    if do_sample is False:
        settings["temperature"] = 0.0
    elif do_sample is True and not settings["temperature"] > 0:
        raise ValueError(
            "gen_kwargs do_sample is true but the temperature is 0: set temperature > 0"
        )
    params = SamplingParams(
        temperature=float(settings["temperature"]),
        top_p=float(settings["top_p"]),
        top_k=_int_setting("top_k", settings["top_k"]),
        max_new_tokens=_int_setting("max_new_tokens", settings["max_new_tokens"]),
        n=1,
    )
    return params, _stop_strings(gen_kwargs.get("until"))


def cut_at_stop_strings(text: str, until: Sequence[str]) -> str:
    """`text` up to (not including) the earliest occurrence of any stop string.

    Example: ``cut_at_stop_strings("a<answer>1</answer>\\n\\nmore", ["\\n\\n"])`` →
    ``"a<answer>1</answer>"``; with no match the text comes back whole.
    """
    cut = len(text)
    for stop in until:
        position = text.find(stop)
        if position != -1:
            cut = min(cut, position)
    return text[:cut]


def check_care_prompt(messages: Sequence[Mapping[str, Any]], where: str) -> None:
    """ValueError unless `messages` open with the project's system prompt and hold one user turn
    (what ``care.prompts.build_messages`` returns)."""
    roles = [message.get("role") for message in messages]
    system = messages[0].get("content") if messages else None
    if isinstance(system, list):
        system = "".join(item.get("text", "") for item in system if item.get("type") == "text")
    if roles != ["system", "user"] or system != SYSTEM_PROMPT:
        raise ValueError(
            f"{where}: the task's doc_to_messages must return care.prompts.build_messages(...) "
            f"(the training prompt: the project's system prompt, then one user turn), got roles "
            f"{roles}; pass require_care_prompt=false in --model_args to run other tasks as given"
        )


def _request_args(request: Instance) -> tuple[Any, ...]:
    args = request.args
    if len(args) != 6:
        raise ValueError(
            "care_vlm is a chat model: each request's args must be (context, doc_to_messages, "
            f"gen_kwargs, doc_id, task, split), got {len(args)} items; is the task a "
            "doc_to_messages task with output_type generate_until?"
        )
    return args


def _model_sampling_defaults(
    max_new_tokens: int | None, temperature: float | None, top_p: float | None, top_k: int | None
) -> dict[str, float | int]:
    given = {
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
    }
    defaults = {key: value for key, value in given.items() if value is not None}
    # Building SamplingParams validates the ranges here, at load time, not at the first batch.
    SamplingParams(**{**DEFAULT_SAMPLING, **defaults})
    return defaults


def _with_seed(params: SamplingParams, seed: int | None, chunk_number: int) -> SamplingParams:
    if seed is None:
        return params
    return dataclasses.replace(params, seed=seed * 100_003 + chunk_number)


def _stop_strings(until: Any) -> list[str]:
    if until is None:
        return []
    if isinstance(until, str):
        until = [until]
    if not isinstance(until, Sequence) or not all(isinstance(stop, str) for stop in until):
        raise ValueError(f"gen_kwargs until must be a string or a list of strings, got {until!r}")
    return [stop for stop in until if stop]


def _int_setting(name: str, value: Any) -> int:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return value


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value
