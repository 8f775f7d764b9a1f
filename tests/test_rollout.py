"""The rollout interface and the batched transformers engine on the tiny offline VLM."""

from __future__ import annotations

import pytest
import torch
from fixtures.prompts import IMAGE_PROMPT, TEXT_PROMPT, user_prompt
from PIL import Image, ImageDraw

from care.models import (
    TinyVLMConfig,
    build_tiny_vlm,
    collate,
    policy_forward,
    vision_token_ids,
)
from care.rollout import (
    HFRolloutEngine,
    RolloutEngine,
    RolloutOutput,
    RolloutRequest,
    SamplingParams,
)

TWO_IMAGE_PROMPT = user_prompt("Which bar is taller?", images=2)


def drawn_image(width: int, height: int, seed: int) -> Image.Image:
    image = Image.new("RGB", (width, height), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    for index in range(2 + seed):
        left = (seed * 19 + index * 31) % max(1, width - 16)
        draw.rectangle([left, 10, left + 14, height - 10], fill=(30 * index, 120, 220 - 40 * seed))
    return image


@pytest.fixture(scope="module")
def tiny_policy(tiny_bpe_tokenizer):
    # A wider init than Qwen's 0.02 makes next-token distributions peaked, so temperature,
    # greedy ties and seeds all make visible differences.
    return build_tiny_vlm(tiny_bpe_tokenizer, shape=TinyVLMConfig(initializer_range=0.2), seed=0)


@pytest.fixture(scope="module")
def requests_with_images():
    return [
        RolloutRequest(IMAGE_PROMPT, [drawn_image(112, 112, 0)]),
        RolloutRequest(TEXT_PROMPT),
        RolloutRequest(TWO_IMAGE_PROMPT, [drawn_image(112, 112, 1), drawn_image(84, 56, 2)]),
    ]


def flatten(outputs: list[list[RolloutOutput]]) -> list[RolloutOutput]:
    return [output for per_request in outputs for output in per_request]


def score_with_policy_forward(model, processor, requests, outputs, n, **kwargs) -> torch.Tensor:
    repeated = [request for request in requests for _ in range(n)]
    batch = collate(
        processor,
        [request.prompt for request in repeated],
        [list(request.images) for request in repeated],
        [output.response_ids for output in flatten(outputs)],
        assistant_prefixes=[request.assistant_prefix for request in repeated],
    )
    return policy_forward(model, batch, want_embeddings=False, **kwargs).token_logprobs


def test_sampling_params_reject_bad_values():
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        SamplingParams(temperature=-0.1)
    with pytest.raises(ValueError, match=r"top_p must lie in \(0, 1\]"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="top_k must be >= 0"):
        SamplingParams(top_k=-1)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        SamplingParams(max_new_tokens=0)
    with pytest.raises(ValueError, match=r"n \(samples per request\) must be >= 1"):
        SamplingParams(n=0)
    with pytest.raises(ValueError, match="seed must be an int or None"):
        SamplingParams(seed=1.5)
    with pytest.raises(ValueError, match="prompt must be a non-empty string"):
        RolloutRequest("")
    with pytest.raises(ValueError, match=r"images\[0\] must be a PIL image"):
        RolloutRequest(TEXT_PROMPT, ["picture.png"])


def test_engine_satisfies_the_rollout_interface(tiny_policy):
    model, processor = tiny_policy
    engine = HFRolloutEngine(model, processor, batch_size=4)
    assert isinstance(engine, RolloutEngine)
    assert engine.suppress_token_ids == vision_token_ids(processor)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        HFRolloutEngine(model, processor, batch_size=0)
    with pytest.raises(ValueError, match="overlap"):
        HFRolloutEngine(model, processor, suppress_token_ids=engine.stop_token_ids)
    assert engine.generate([], SamplingParams()) == []


def test_vision_tokens_are_never_sampled_even_when_the_model_prefers_them(tiny_bpe_tokenizer):
    model, processor = build_tiny_vlm(
        tiny_bpe_tokenizer, shape=TinyVLMConfig(initializer_range=0.2), seed=1
    )
    vision_ids = vision_token_ids(processor)
    request = [RolloutRequest(IMAGE_PROMPT, [drawn_image(112, 112, 0)])]
    params = SamplingParams(temperature=1.0, max_new_tokens=80, n=8, seed=0)
    # Tie each vision token's embedding to 3x that of the model's favourite first token, so
    # that without suppression the model would pick vision tokens most of the time.
    favourite = HFRolloutEngine(model, processor).generate(request, SamplingParams(temperature=0))
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        embedding[vision_ids] = 3.0 * embedding[favourite[0][0].response_ids[0]]
    unsuppressed = HFRolloutEngine(model, processor, suppress_token_ids=[])
    leaked = [t for o in flatten(unsuppressed.generate(request, params)) for t in o.response_ids]
    assert sum(token in vision_ids for token in leaked) > 50

    sampled = flatten(HFRolloutEngine(model, processor, batch_size=8).generate(request, params))
    tokens = [token for output in sampled for token in output.response_ids]
    assert len(tokens) >= 300
    assert not set(tokens) & set(vision_ids)


def test_sampler_log_probs_match_policy_forward_at_temperature_one(
    tiny_policy, requests_with_images
):
    model, processor = tiny_policy
    engine = HFRolloutEngine(model, processor, batch_size=4)  # 6 rows → two generate calls
    params = SamplingParams(temperature=1.0, max_new_tokens=24, n=2, seed=7)
    outputs = engine.generate(requests_with_images, params)
    assert [len(per_request) for per_request in outputs] == [2, 2, 2]
    stop_ids = set(engine.stop_token_ids)
    for output in flatten(outputs):
        assert len(output.logprobs) == len(output.response_ids) >= 1
        if output.finish_reason == "stop":
            assert output.response_ids[-1] in stop_ids
            assert not stop_ids & set(output.response_ids[:-1])
        else:
            assert len(output.response_ids) == 24 and not stop_ids & set(output.response_ids)
    scored = score_with_policy_forward(
        model,
        processor,
        requests_with_images,
        outputs,
        2,
        suppress_token_ids=engine.suppress_token_ids,
    )
    for row, output in enumerate(flatten(outputs)):
        length = len(output.response_ids)
        torch.testing.assert_close(
            scored[row, :length], torch.tensor(output.logprobs), atol=1e-4, rtol=0
        )
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert outputs[0][0].prompt_ids.count(image_pad) == 16
    assert outputs[2][0].prompt_ids.count(image_pad) == 16 + 6  # 112x112 and 84x56 images


def test_sampler_log_probs_at_temperature_0_7_and_with_top_p(tiny_policy, requests_with_images):
    model, processor = tiny_policy
    engine = HFRolloutEngine(model, processor, batch_size=8)
    tempered = engine.generate(
        requests_with_images, SamplingParams(temperature=0.7, max_new_tokens=16, n=2, seed=3)
    )
    scored = score_with_policy_forward(
        model,
        processor,
        requests_with_images,
        tempered,
        2,
        temperature=0.7,
        suppress_token_ids=engine.suppress_token_ids,
    )
    untempered = score_with_policy_forward(
        model,
        processor,
        requests_with_images,
        tempered,
        2,
        suppress_token_ids=engine.suppress_token_ids,
    )
    gaps = []
    for row, output in enumerate(flatten(tempered)):
        length = len(output.response_ids)
        sampler = torch.tensor(output.logprobs)
        torch.testing.assert_close(scored[row, :length], sampler, atol=1e-4, rtol=0)
        gaps.append((untempered[row, :length] - sampler).abs().max())
    assert max(gaps) > 0.05  # temperature really changed the distribution

    nucleus = engine.generate(
        requests_with_images, SamplingParams(top_p=0.5, max_new_tokens=16, n=2, seed=3)
    )
    full = score_with_policy_forward(
        model,
        processor,
        requests_with_images,
        nucleus,
        2,
        suppress_token_ids=engine.suppress_token_ids,
    )
    renormalised = []
    for row, output in enumerate(flatten(nucleus)):
        sampler = torch.tensor(output.logprobs)
        # inside the nucleus each kept token's probability is divided by the kept mass < 1
        difference = sampler - full[row, : len(sampler)]
        assert bool((difference >= -1e-5).all())
        renormalised.append(difference.max())
    assert max(renormalised) > 0.05


def test_batched_greedy_equals_one_by_one_greedy(tiny_policy, requests_with_images):
    model, processor = tiny_policy
    params = SamplingParams(temperature=0.0, max_new_tokens=20)
    batched = HFRolloutEngine(model, processor, batch_size=8).generate(requests_with_images, params)
    single_engine = HFRolloutEngine(model, processor, batch_size=1)
    for request, batched_outputs in zip(requests_with_images, batched, strict=True):
        alone = single_engine.generate([request], params)[0][0]
        assert batched_outputs[0].response_ids == alone.response_ids
        assert batched_outputs[0].finish_reason == alone.finish_reason
        torch.testing.assert_close(
            torch.tensor(batched_outputs[0].logprobs),
            torch.tensor(alone.logprobs),
            atol=1e-4,
            rtol=0,
        )
    # greedy really decodes different things for different prompts
    assert batched[0][0].response_ids != batched[1][0].response_ids


def test_same_seed_same_samples_and_the_global_rng_is_left_alone(tiny_policy, requests_with_images):
    model, processor = tiny_policy
    engine = HFRolloutEngine(model, processor, batch_size=8)
    params = SamplingParams(temperature=1.0, max_new_tokens=12, n=3, seed=11)
    model.train()
    state_before = torch.get_rng_state()
    first = engine.generate(requests_with_images[:2], params)
    assert torch.equal(torch.get_rng_state(), state_before)
    assert model.training  # the engine restores the caller's mode
    model.eval()
    second = engine.generate(requests_with_images[:2], params)
    other = engine.generate(
        requests_with_images[:2], SamplingParams(max_new_tokens=12, n=3, seed=12)
    )
    ids = [output.response_ids for output in flatten(first)]
    assert ids == [output.response_ids for output in flatten(second)]
    assert ids != [output.response_ids for output in flatten(other)]
    assert len({tuple(response) for response in ids[:3]}) == 3  # the n samples differ


def test_engine_continues_from_an_assistant_prefix(tiny_policy, requests_with_images):
    model, processor = tiny_policy
    tokenizer = processor.tokenizer
    engine = HFRolloutEngine(model, processor)
    params = SamplingParams(temperature=0.0, max_new_tokens=24)
    request = requests_with_images[0]
    whole = engine.generate([request], params)[0][0].response_ids
    # Cut the greedy response where its text re-tokenises to the same ids; continuing from that
    # text must reproduce the rest of the greedy response.
    cut = next(
        k
        for k in range(len(whole) - 4, 1, -1)
        if tokenizer.encode(tokenizer.decode(whole[:k]), add_special_tokens=False) == whole[:k]
    )
    prefix = tokenizer.decode(whole[:cut])
    continued = engine.generate(
        [RolloutRequest(request.prompt, request.images, assistant_prefix=prefix)], params
    )[0][0]
    assert continued.prefix_ids == whole[:cut]
    assert continued.prompt_ids[-cut:] == whole[:cut]
    assert continued.response_ids == whole[cut : cut + len(continued.response_ids)]
    assert (
        len(continued.response_ids) == min(24, len(whole) - cut)
        or continued.finish_reason == "length"
    )
    assert continued.text == tokenizer.decode(
        whole[cut : cut + len(continued.response_ids)], skip_special_tokens=True
    )
    # the prefix is context, not response: sampled log-probs line up with a prefixed collate
    scored = score_with_policy_forward(
        model,
        processor,
        [RolloutRequest(request.prompt, request.images, assistant_prefix=prefix)],
        [[continued]],
        1,
        suppress_token_ids=engine.suppress_token_ids,
    )
    torch.testing.assert_close(
        scored[0, : len(continued.logprobs)], torch.tensor(continued.logprobs), atol=1e-4, rtol=0
    )
