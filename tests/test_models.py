"""The tiny offline VLM, its processor, checkpoint folders and the one-pass policy forward."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures.prompts import IMAGE_PROMPT, TEXT_PROMPT, user_prompt
from PIL import Image, ImageDraw
from transformers import Qwen2_5_VLForConditionalGeneration

from care.models import (
    Qwen2_5_VLImageProcessor,
    TinyVLMConfig,
    build_processor,
    build_tiny_vlm,
    collate,
    load_policy,
    policy_forward,
    save_policy,
    vision_token_ids,
)
from care.models.policy import pooled_embeddings

TWO_IMAGE_PROMPT = user_prompt("Which is larger?", images=2)


def drawn_image(width: int, height: int, seed: int) -> Image.Image:
    image = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    for index in range(3):
        left = (seed * 17 + index * 29) % max(1, width - 20)
        top = (seed * 11 + index * 23) % max(1, height - 20)
        draw.ellipse([left, top, left + 18, top + 18], fill=(40 * index, 200 - seed * 30, 90))
    return image


@pytest.fixture(scope="module")
def tiny_policy(tiny_bpe_tokenizer):
    return build_tiny_vlm(tiny_bpe_tokenizer, shape=TinyVLMConfig(initializer_range=0.2), seed=0)


@pytest.fixture(scope="module")
def images():
    return [drawn_image(112, 112, 0), drawn_image(112, 112, 1), drawn_image(84, 56, 2)]


def test_processor_turns_a_112px_image_into_16_vision_tokens(tiny_bpe_tokenizer, images):
    processor = build_processor(tiny_bpe_tokenizer)
    encoded = processor(text=[IMAGE_PROMPT], images=[images[0]], return_tensors="pt")
    image_pad = tiny_bpe_tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert encoded["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert int((encoded["input_ids"] == image_pad).sum()) == 16
    # 64 patches of 3 channels x 2 frames x 14 x 14 pixels
    assert tuple(encoded["pixel_values"].shape) == (64, 1176)
    assert int(encoded["mm_token_type_ids"].sum()) == 16
    # image_size=56 → a 4x4 patch grid → 4 tokens
    small = build_processor(tiny_bpe_tokenizer, image_size=56)
    assert small(text=[IMAGE_PROMPT], images=[images[0]])["image_grid_thw"].tolist() == [[1, 4, 4]]


def test_build_processor_rejects_bad_pixel_budgets(tiny_bpe_tokenizer):
    with pytest.raises(ValueError, match="image_size must be a multiple of"):
        build_processor(tiny_bpe_tokenizer, image_size=100)
    with pytest.raises(ValueError, match="min_pixels .* must not exceed max_pixels"):
        build_processor(tiny_bpe_tokenizer, min_pixels=20000, max_pixels=10000)
    with pytest.raises(ValueError, match="max_pixels must be a positive int"):
        build_processor(tiny_bpe_tokenizer, max_pixels=0)


def test_vision_token_ids_of_the_real_and_the_tiny_vocabulary(qwen_tokenizer, tiny_bpe_tokenizer):
    assert vision_token_ids(qwen_tokenizer) == [151652, 151653, 151654, 151655, 151656]
    names = [
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    tiny_ids = sorted(tiny_bpe_tokenizer.convert_tokens_to_ids(names))
    assert vision_token_ids(build_processor(tiny_bpe_tokenizer)) == tiny_ids
    with pytest.raises(ValueError, match="tokenizer or a processor"):
        vision_token_ids("not a tokenizer")


def test_tiny_vlm_config_comes_from_the_tokenizer_and_seed(tiny_bpe_tokenizer):
    state_before = torch.get_rng_state()
    model, processor = build_tiny_vlm(tiny_bpe_tokenizer, seed=3)
    assert torch.equal(torch.get_rng_state(), state_before)
    config = model.config
    vocabulary = tiny_bpe_tokenizer.get_vocab()
    assert config.text_config.vocab_size == len(tiny_bpe_tokenizer) == 366
    assert config.text_config.rope_parameters["mrope_section"] == [2, 3, 3]  # sums to 16 / 2
    assert config.image_token_id == vocabulary["<|image_pad|>"]
    assert config.video_token_id == vocabulary["<|video_pad|>"]
    assert config.vision_start_token_id == vocabulary["<|vision_start|>"]
    assert config.vision_end_token_id == vocabulary["<|vision_end|>"]
    assert config.vision_config.out_hidden_size == config.text_config.hidden_size == 64
    embed = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight.data_ptr() == embed.data_ptr()
    again, _ = build_tiny_vlm(tiny_bpe_tokenizer, seed=3)
    other, _ = build_tiny_vlm(tiny_bpe_tokenizer, seed=4)
    assert torch.equal(again.get_input_embeddings().weight, embed)
    assert not torch.equal(other.get_input_embeddings().weight, embed)
    assert isinstance(processor, Qwen2_5_VLImageProcessor)
    with pytest.raises(
        ValueError, match=r"hidden_size \(60\) must be divisible by num_heads \(8\)"
    ):
        TinyVLMConfig(hidden_size=60, num_heads=8)


def test_the_tiny_model_takes_every_field_of_its_shape(tiny_bpe_tokenizer):
    shape = TinyVLMConfig(
        hidden_size=48,
        num_layers=3,
        num_heads=2,
        num_kv_heads=1,
        intermediate_size=40,
        vision_depth=2,
        vision_hidden_size=24,
        vision_num_heads=3,
        initializer_range=0.1,
    )
    model, _ = build_tiny_vlm(tiny_bpe_tokenizer, shape=shape, seed=0)
    text, vision = model.config.text_config, model.config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.intermediate_size) == (48, 3, 40)
    assert (text.num_attention_heads, text.num_key_value_heads) == (2, 1)
    assert (vision.depth, vision.hidden_size, vision.num_heads) == (2, 24, 3)
    assert text.initializer_range == vision.initializer_range == 0.1


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (
            {"num_heads": 4, "num_kv_heads": 3},
            r"num_heads \(4\) must be a multiple of num_kv_heads",
        ),
        ({"hidden_size": 48, "num_heads": 4}, r"head_dim = hidden_size / num_heads = 12 must be"),
        ({"vision_hidden_size": 20}, r"vision_hidden_size \(20\) / vision_num_heads \(2\)"),
        ({"num_layers": 0}, r"num_layers\n  Input should be greater than or equal to 1"),
        ({"num_layers": True}, r"num_layers\n  Input should be a valid integer"),
        ({"initializer_range": 0.0}, r"initializer_range\n  Input should be greater than 0"),
        ({"num_attention_heads": 2}, r"num_attention_heads\n  Extra inputs are not permitted"),
    ],
)
def test_a_tiny_shape_that_cannot_be_built_is_refused_naming_the_fields(fields, named):
    with pytest.raises(ValueError, match=named):
        TinyVLMConfig(**fields)


def test_tiny_vlm_runs_forward_generate_and_backward_with_an_image(tiny_policy, images):
    model, processor = tiny_policy
    inputs = processor(text=[IMAGE_PROMPT], images=[images[0]], return_tensors="pt")
    model.zero_grad()
    logits = model(**inputs).logits
    assert tuple(logits.shape) == (1, inputs["input_ids"].shape[1], 366)
    logits[0, -1].log_softmax(-1)[7].backward()
    patch_grad = model.model.visual.patch_embed.proj.weight.grad
    assert patch_grad is not None and float(patch_grad.abs().sum()) > 0
    assert float(model.get_input_embeddings().weight.grad.abs().sum()) > 0
    model.zero_grad()
    with torch.no_grad():
        generated = model.generate(
            **inputs, max_new_tokens=6, do_sample=False, suppress_tokens=vision_token_ids(processor)
        )
    assert generated.shape[1] > inputs["input_ids"].shape[1]


def test_saved_policy_reloads_in_plain_transformers_and_load_policy_with_equal_logits(
    tiny_policy, images, tmp_path
):
    model, processor = tiny_policy
    folder = save_policy(model, processor, tmp_path / "step_1")
    names = {path.name for path in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    assert {"processor_config.json", "preprocessor_config.json", "chat_template.jinja"} <= names
    declared = json.loads((folder / "processor_config.json").read_text())["processor_class"]
    assert declared == "Qwen2_5_VLProcessor"

    inputs = processor(text=[IMAGE_PROMPT], images=[images[0]], return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits
        plain = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(folder))
        assert torch.equal(plain(**inputs).logits, expected)
        loaded, loaded_processor = load_policy(folder, dtype="float32")
        reencoded = loaded_processor(text=[IMAGE_PROMPT], images=[images[0]], return_tensors="pt")
        assert torch.equal(reencoded["input_ids"], inputs["input_ids"])
        assert torch.equal(reencoded["pixel_values"], inputs["pixel_values"])
        assert torch.equal(loaded(**reencoded).logits, expected)
    assert loaded_processor.tokenizer.chat_template == processor.tokenizer.chat_template
    reloaded = Qwen2_5_VLImageProcessor.from_pretrained(str(folder))
    assert reloaded.image_processor.size.longest_edge == 112 * 112
    bf16, _ = load_policy(folder, dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16


def test_load_policy_turns_hub_kernels_off_across_mode_switches(tiny_policy, tmp_path):
    # transformers 5 with the `kernels` package kernelizes a loaded model from the Hugging Face
    # Hub, again at every train()/eval() switch; offline on a GPU that raised in Trainer's
    # policy.train() (the first GPU smoke run). load_policy turns Hub kernels off.
    model, processor = tiny_policy
    folder = save_policy(model, processor, tmp_path / "step_1")
    loaded, _ = load_policy(folder, dtype="float32")
    for training in (True, False, True):
        loaded.train(training)
        assert not loaded.use_kernels and loaded.kernels_mode is None


def test_load_policy_errors_name_the_path(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        load_policy(missing)
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty_folder is not a Hugging Face model folder"):
        load_policy(empty)
    (empty / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="dtype must be 'auto' or one of"):
        load_policy(empty, dtype="float8")


def test_collate_left_pads_contexts_and_right_pads_responses(tiny_policy, images):
    _, processor = tiny_policy
    batch = collate(
        processor,
        [IMAGE_PROMPT, TEXT_PROMPT],
        [[images[0]], []],
        [[5, 6, 7], [8]],
    )
    pad = processor.tokenizer.pad_token_id
    assert batch.response_ids.tolist() == [[5, 6, 7], [8, pad, pad]]
    assert batch.response_mask.tolist() == [[True, True, True], [True, False, False]]
    assert torch.equal(batch.input_ids[:, batch.response_start :], batch.response_ids)
    image_row_context = int(batch.attention_mask[0, : batch.response_start].sum())
    text_row_context = int(batch.attention_mask[1, : batch.response_start].sum())
    assert batch.response_start == image_row_context  # the longer context is not padded
    assert batch.attention_mask[1, : batch.response_start - text_row_context].sum() == 0
    assert batch.image_grid_thw.tolist() == [[1, 8, 8]]
    assert int(batch.mm_token_type_ids.sum()) == 16


def test_collate_rejects_mismatched_or_unscorable_input(tiny_policy, images):
    _, processor = tiny_policy
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    with pytest.raises(ValueError, match="responses has 1 rows but prompts has 2"):
        collate(processor, [TEXT_PROMPT, TEXT_PROMPT], [[], []], [[5]])
    with pytest.raises(ValueError, match=r"responses\[0\] contains an image/video placeholder"):
        collate(processor, [TEXT_PROMPT], [[]], [[5, image_pad]])
    with pytest.raises(ValueError, match="1 image placeholder.* but 0 image"):
        collate(processor, [IMAGE_PROMPT], [[]], [[5]])
    with pytest.raises(ValueError, match=r"responses\[0\] holds id 9999"):
        collate(processor, [TEXT_PROMPT], [[]], [[9999]])


def test_policy_forward_log_probs_and_embeddings_come_from_one_pass(tiny_policy, images):
    model, processor = tiny_policy
    responses = [[40, 41, 42, 43, 44], [50, 51, 52], [60, 61, 62, 63]]
    batch = collate(
        processor,
        [IMAGE_PROMPT, TEXT_PROMPT, TWO_IMAGE_PROMPT],
        [[images[0]], [], [images[1], images[2]]],
        responses,
    )
    think_mask = torch.tensor(
        [
            [False, True, True, False, False],  # a think span inside the response
            [False, False, False, False, False],  # no think span → the whole response
            [True, True, True, True, True],  # covers padding too: padding must not count
        ]
    )
    calls = {"n": 0}
    hook = model.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    try:
        out = policy_forward(model, batch, want_embeddings=True, think_mask=think_mask)
    finally:
        hook.remove()
    assert calls["n"] == 1

    with torch.no_grad():
        full = model(**batch.model_inputs(), output_hidden_states=True)
    start = batch.response_start
    manual_logprobs = torch.log_softmax(full.logits[:, start - 1 : -1].float(), dim=-1)
    manual_logprobs = manual_logprobs.gather(-1, batch.response_ids[..., None]).squeeze(-1)
    manual_logprobs = manual_logprobs * batch.response_mask
    torch.testing.assert_close(out.token_logprobs, manual_logprobs, atol=1e-5, rtol=0)
    assert out.token_logprobs[1, 3:].abs().sum() == 0  # padding → 0

    last_hidden = full.hidden_states[-1][:, start:]
    regions = [[1, 2], [0, 1, 2], [0, 1, 2, 3]]
    for row, positions in enumerate(regions):
        mean = last_hidden[row, positions].mean(dim=0)
        expected = mean / mean.norm()
        torch.testing.assert_close(out.embeddings[row], expected, atol=1e-5, rtol=0)
    assert out.embeddings.requires_grad is False
    assert out.token_logprobs.requires_grad is False


def test_policy_forward_with_grad_temperature_suppression_and_entropy(tiny_policy, images):
    model, processor = tiny_policy
    batch = collate(processor, [IMAGE_PROMPT], [[images[0]]], [[40, 41, 42]])
    suppressed = vision_token_ids(processor)
    model.zero_grad()
    out = policy_forward(
        model,
        batch,
        want_embeddings=False,
        temperature=0.7,
        requires_grad=True,
        want_entropy=True,
        suppress_token_ids=suppressed,
        chunk_size=2,
    )
    out.token_logprobs.sum().backward()
    assert float(model.get_input_embeddings().weight.grad.abs().sum()) > 0
    model.zero_grad()
    assert out.embeddings is None
    with torch.no_grad():
        logits = model(**batch.model_inputs()).logits[:, batch.response_start - 1 : -1] / 0.7
        logits[..., suppressed] = float("-inf")
        log_probs = torch.log_softmax(logits, dim=-1)
    expected = log_probs.gather(-1, batch.response_ids[..., None]).squeeze(-1)
    torch.testing.assert_close(out.token_logprobs.detach(), expected, atol=1e-5, rtol=0)
    probs = log_probs.exp()
    expected_entropy = -(probs * log_probs.nan_to_num(neginf=0.0)).sum(-1)
    torch.testing.assert_close(out.entropy, expected_entropy, atol=1e-5, rtol=0)
    with pytest.raises(
        ValueError, match=r"think_mask must have the response shape \[B, L\] = \[1, 3\]"
    ):
        policy_forward(
            model, batch, want_embeddings=True, think_mask=torch.ones(1, 4, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="temperature must be > 0"):
        policy_forward(model, batch, want_embeddings=False, temperature=0.0)


def test_pooled_embeddings_worked_example():
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    response = torch.tensor([[True, True, True]])
    think = torch.tensor([[True, True, False]])
    torch.testing.assert_close(
        pooled_embeddings(hidden, response, think), torch.tensor([[0.7071068, 0.7071068]])
    )
    # no think tokens → mean of the whole response [2, 2] → normalised
    empty = torch.zeros(1, 3, dtype=torch.bool)
    torch.testing.assert_close(
        pooled_embeddings(hidden, response, empty), torch.tensor([[0.7071068, 0.7071068]])
    )


def test_real_qwen_vocabulary_builds_and_scores_in_chunks(qwen_tokenizer, images):
    model, processor = build_tiny_vlm(
        qwen_tokenizer,
        shape=TinyVLMConfig(hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64),
        seed=1,
    )
    assert model.config.text_config.vocab_size == 151665
    assert model.config.image_token_id == 151655
    response = qwen_tokenizer.encode(
        "<think>\n2+3=5.</think>\n<answer>5</answer>", add_special_tokens=False
    )
    batch = collate(processor, [IMAGE_PROMPT], [[images[0]]], [response + [151645]])
    out = policy_forward(model, batch, want_embeddings=True, chunk_size=3)
    with torch.no_grad():
        logits = model(**batch.model_inputs()).logits[:, batch.response_start - 1 : -1]
    expected = torch.log_softmax(logits, -1).gather(-1, batch.response_ids[..., None])[..., 0]
    torch.testing.assert_close(out.token_logprobs, expected, atol=1e-5, rtol=0)
    assert tuple(out.embeddings.shape) == (1, 32)
