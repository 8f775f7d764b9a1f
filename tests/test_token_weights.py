"""Region-weighted token advantages (docs/algorithm.md section 5), with hand-computed numbers."""

from __future__ import annotations

import pytest
import torch

from care.algo.spans import region_masks
from care.algo.token_weights import region_token_advantages, uniform_token_advantages


def bools(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def test_positive_rollout_puts_the_answer_first_and_a_trace_on_its_reasoning():
    # 3 think tokens, 2 tag tokens, 2 answer tokens, 1 closing tag; A = 2.
    think = bools([1, 1, 1, 0, 0, 0, 0, 0])
    answer = bools([0, 0, 0, 0, 0, 1, 1, 0])
    response = bools([1] * 8)
    token_adv = region_token_advantages(
        torch.tensor([2.0]), torch.tensor([True]), think, answer, response
    )
    weight_sum = 2 + 0.005 * 3  # n_answer + gamma_pos * n_think = 2.015
    expected = [2 * 0.005 / weight_sum] * 3 + [0.0, 0.0] + [2 / weight_sum] * 2 + [0.0]
    torch.testing.assert_close(token_adv, torch.tensor([expected]))
    assert token_adv[0, 5].item() == pytest.approx(0.9925558, abs=1e-6)
    assert token_adv[0, 0].item() == pytest.approx(0.0049628, abs=1e-6)
    assert token_adv.sum().item() == pytest.approx(2.0, abs=1e-6)


def test_negative_rollout_gets_no_weight_on_its_reasoning():
    think = bools([1, 1, 1, 0, 0, 0, 0, 0])
    answer = bools([0, 0, 0, 0, 0, 1, 1, 0])
    token_adv = region_token_advantages(
        torch.tensor([-1.0]), torch.tensor([False]), think, answer, bools([1] * 8)
    )
    torch.testing.assert_close(token_adv, torch.tensor([[0, 0, 0, 0, 0, -0.5, -0.5, 0]]))


def test_without_an_answer_span_the_whole_response_counts_as_answer():
    think = bools([1, 1, 0, 0], [1, 1, 0, 0])
    no_answer = bools([0, 0, 0, 0], [0, 0, 0, 0])
    token_adv = region_token_advantages(
        torch.tensor([1.0, -2.0]),
        torch.tensor([True, False]),
        think,
        no_answer,
        bools(*[[1] * 4] * 2),
    )
    # Positive: weights [1.005, 1.005, 1, 1] over a sum of 4.01; negative: 1 each over 4.
    expected = torch.tensor(
        [[1.005 / 4.01, 1.005 / 4.01, 1 / 4.01, 1 / 4.01], [-0.5, -0.5, -0.5, -0.5]]
    )
    torch.testing.assert_close(token_adv, expected)
    assert token_adv[0, 0].item() == pytest.approx(0.2506234, abs=1e-6)


def test_without_think_a_positives_tokens_add_the_think_weight_to_the_answer_weight():
    # No <think>: the think mask is the whole response (fallback), so the answer token weighs
    # 1 + gamma_pos and the other tokens gamma_pos (docs/algorithm.md section 5).
    whole = bools([1, 1, 1, 1])
    answer = bools([0, 0, 1, 0])
    token_adv = region_token_advantages(
        torch.tensor([1.0]), torch.tensor([True]), whole, answer, whole
    )
    expected = torch.tensor([[0.005 / 1.02, 0.005 / 1.02, 1.005 / 1.02, 0.005 / 1.02]])
    torch.testing.assert_close(token_adv, expected)
    # Neither span on a positive: every token weighs 1 + gamma_pos, i.e. uniform A / n.
    uniform = region_token_advantages(
        torch.tensor([1.0]), torch.tensor([True]), whole, bools([0, 0, 0, 0]), whole
    )
    torch.testing.assert_close(uniform, torch.full((1, 4), 0.25))


def test_padding_gets_zero_and_masks_outside_the_response_are_ignored():
    response = bools([0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0])
    # Stray bits on padding (columns 0 and 5) must not count.
    think = bools([1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0])
    answer = bools([1, 0, 0, 0, 1, 1], [0, 0, 1, 0, 0, 1])
    token_adv = region_token_advantages(
        torch.tensor([3.0, -1.0]), torch.tensor([True, True]), think, answer, response
    )
    sum_left = 2 + 0.005 * 2  # answer: columns 4, 5; think: columns 2, 3
    sum_right = 1 + 0.005 * 1
    expected = torch.tensor(
        [
            [0, 0, 3 * 0.005 / sum_left, 3 * 0.005 / sum_left, 3 / sum_left, 3 / sum_left],
            [-0.005 / sum_right, 0, -1 / sum_right, 0, 0, 0],
        ]
    )
    torch.testing.assert_close(token_adv, expected)
    assert token_adv[~response].abs().sum().item() == 0.0


def test_rows_sum_to_their_sequence_advantage_and_empty_rows_stay_zero():
    generator = torch.Generator().manual_seed(7)
    batch, length = 32, 20
    lengths = torch.randint(0, length + 1, (batch,), generator=generator)
    response = torch.arange(length)[None, :] < lengths[:, None]
    think = torch.rand(batch, length, generator=generator) < 0.5
    answer = torch.rand(batch, length, generator=generator) < 0.2
    seq_adv = torch.randn(batch, generator=generator, dtype=torch.float64)
    positive = torch.rand(batch, generator=generator) < 0.5
    token_adv = region_token_advantages(seq_adv, positive, think, answer, response)
    has_tokens = lengths > 0
    assert bool(has_tokens.any()) and bool((~has_tokens).any())
    torch.testing.assert_close(token_adv.sum(dim=1)[has_tokens], seq_adv[has_tokens])
    assert token_adv[~has_tokens].abs().sum().item() == 0.0
    assert torch.isfinite(token_adv).all()
    assert token_adv.dtype == torch.float64


def test_gamma_pos_zero_drops_the_reasoning_of_positives_too():
    think = bools([1, 1, 0])
    answer = bools([0, 0, 1])
    token_adv = region_token_advantages(
        torch.tensor([2.0]), torch.tensor([True]), think, answer, bools([1, 1, 1]), gamma_pos=0.0
    )
    torch.testing.assert_close(token_adv, torch.tensor([[0.0, 0.0, 2.0]]))


def test_region_weighting_on_the_usual_qwen_layout(qwen_tokenizer):
    ids = qwen_tokenizer.encode(
        "<think>\nFirst, 3+4=7.</think>\n<answer>7</answer><|im_end|>", add_special_tokens=False
    )
    response_ids = torch.tensor([ids, ids])
    response_mask = torch.ones_like(response_ids, dtype=torch.bool)
    masks = region_masks(qwen_tokenizer, response_ids, response_mask)
    token_adv = region_token_advantages(
        torch.tensor([2.0, -0.5]),
        torch.tensor([True, False]),
        masks.think_mask,
        masks.answer_mask,
        response_mask,
    )
    # 10 think tokens and 1 answer token (column 17): 2 / (1 + 0.05) on the answer.
    think_value = 2 * 0.005 / 1.05
    expected_positive = [0.0, 0.0] + [think_value] * 10 + [0.0] * 5 + [2 / 1.05] + [0.0] * 4
    torch.testing.assert_close(token_adv[0], torch.tensor(expected_positive))
    assert token_adv[0, 17].item() == pytest.approx(1.9047619, abs=1e-6)
    expected_negative = [0.0] * 17 + [-0.5] + [0.0] * 4
    torch.testing.assert_close(token_adv[1], torch.tensor(expected_negative))


def test_uniform_token_advantages_give_every_response_token_the_sequence_advantage():
    token_adv = uniform_token_advantages(torch.tensor([1.5, -2.0]), bools([1, 1, 0], [0, 1, 1]))
    torch.testing.assert_close(token_adv, torch.tensor([[1.5, 1.5, 0.0], [0.0, -2.0, -2.0]]))


def valid_inputs() -> dict:
    return {
        "seq_adv": torch.tensor([1.0, -1.0]),
        "is_positive": torch.tensor([True, False]),
        "think_mask": bools([1, 0], [1, 0]),
        "answer_mask": bools([0, 1], [0, 1]),
        "response_mask": bools([1, 1], [1, 1]),
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seq_adv", torch.tensor([[1.0, -1.0]]), "seq_adv must be a 1-D tensor"),
        ("seq_adv", torch.tensor([1, -1]), "seq_adv must be a floating tensor"),
        ("is_positive", torch.tensor([1.0, 0.0]), "is_positive must be a bool tensor"),
        ("is_positive", torch.tensor([True]), "is_positive must be a tensor"),
        ("think_mask", torch.ones(2, 2), "think_mask must be a bool tensor"),
        ("answer_mask", torch.ones(2, 3, dtype=torch.bool), "answer_mask shape"),
        ("response_mask", torch.ones(3, 2, dtype=torch.bool), "response_mask must be a 2-D"),
        ("gamma_pos", -0.1, "gamma_pos must be a number >= 0"),
        ("eps", 0.0, "eps must be a number > 0"),
    ],
)
def test_region_token_advantages_reject_bad_inputs(field, value, message):
    inputs = valid_inputs()
    inputs[field] = value
    with pytest.raises(ValueError, match=message):
        region_token_advantages(**inputs)


def test_uniform_token_advantages_reject_a_mismatched_batch():
    with pytest.raises(ValueError, match="response_mask must be a 2-D tensor"):
        uniform_token_advantages(torch.tensor([1.0, 2.0]), bools([1, 1]))
