"""The prompt protocol: question layout, chat messages, rendering and the RGR repair prefix."""

from __future__ import annotations

import pytest

from care.models.tokenizer import train_tiny_bpe_tokenizer
from care.prompts import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    MULTIPLE_CHOICE_INSTRUCTION,
    PROMPT_VERSION,
    REPAIR_CUE,
    REPAIR_FIELDS,
    SYSTEM_PROMPT,
    THINK_CLOSE,
    THINK_OPEN,
    build_messages,
    build_repair_prefix,
    format_question,
    render_prompt,
)
from care.verify import score


def test_free_form_question_is_the_stripped_question():
    assert format_question("  How many red squares?\n") == "How many red squares?"


def test_multiple_choice_layout_letters_options_and_instruction():
    text = format_question("Which bar is tallest?", ["  the first ", "the second", "the third"])
    assert text == (
        "Which bar is tallest?\n\n"
        "Options:\n"
        "A. the first\n"
        "B. the second\n"
        "C. the third\n\n"
        "Answer with the option's letter from the given choices."
    )
    assert MULTIPLE_CHOICE_INSTRUCTION in text


def test_bad_questions_and_choices_are_named():
    with pytest.raises(ValueError, match="question must be a non-empty string"):
        format_question("   ")
    with pytest.raises(ValueError, match="choices must be a list"):
        format_question("q", "AB")
    with pytest.raises(ValueError, match=r"choices\[1\] must be a non-empty string"):
        format_question("q", ["a", " "])
    with pytest.raises(ValueError, match="1..26 options"):
        format_question("q", [])


def test_messages_without_placeholders_put_images_first():
    messages = build_messages("Count the circles.", num_images=2)
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert messages[1] == {
        "role": "user",
        "content": [
            {"type": "image"},
            {"type": "image"},
            {"type": "text", "text": "Count the circles."},
        ],
    }


def test_placeholders_mark_where_images_go():
    messages = build_messages("Compare <image> with <image>.", ["left", "right"], num_images=2)
    assert messages[1]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image"},
        {"type": "text", "text": "with"},
        {"type": "image"},
        {
            "type": "text",
            "text": ".\n\nOptions:\nA. left\nB. right\n\n" + MULTIPLE_CHOICE_INSTRUCTION,
        },
    ]
    leading = build_messages("<image>\nWhat is shown?", num_images=1)[1]["content"]
    assert leading == [{"type": "image"}, {"type": "text", "text": "What is shown?"}]


def test_placeholder_count_must_match_num_images():
    with pytest.raises(ValueError, match="question has 2 <image> placeholder.*num_images is 1"):
        build_messages("<image> and <image>", num_images=1)
    with pytest.raises(ValueError, match="num_images must be an int >= 0"):
        build_messages("q", num_images=-1)


def test_system_prompt_asks_for_think_and_answer_tags():
    for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE):
        assert tag in SYSTEM_PROMPT
    assert PROMPT_VERSION == "care-prompt-v1"


def test_render_prompt_applies_the_chat_template_with_generation_prompt():
    tokenizer = train_tiny_bpe_tokenizer()
    rendered = render_prompt(tokenizer, build_messages("2+2? <image>", num_images=1))
    assert rendered == (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\n2+2?<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with pytest.raises(ValueError, match="apply_chat_template"):
        render_prompt(object(), build_messages("q"))


def test_repair_prefix_cuts_before_think_close_and_drops_the_answer():
    failed = "<think>\nThere are 3 + 4 = 8 circles.\n</think>\n<answer>8</answer><|im_end|>"
    assert build_repair_prefix(failed) == (
        "<think>\nThere are 3 + 4 = 8 circles.\n\n"
        "Wait, this reasoning contains a mistake. Let me find it, fix it and re-derive the "
        "answer concisely, then finish thinking and give the corrected answer.\n"
        "<repair>\n"
        "Mistake:"
    )


def test_repair_prefix_of_an_unclosed_think_cuts_at_the_answer():
    failed = "<think>I count 5 <answer>5</answer>"
    assert build_repair_prefix(failed) == "<think>I count 5\n\n" + REPAIR_CUE


def test_repair_prefix_without_think_opens_a_fresh_one():
    assert build_repair_prefix("<answer>8</answer>") == "<think>\n" + REPAIR_CUE
    assert build_repair_prefix("There are 8 circles. <answer>8") == (
        "<think>\nThere are 8 circles.\n\n" + REPAIR_CUE
    )
    assert build_repair_prefix("8<|im_end|>") == "<think>\n8\n\n" + REPAIR_CUE
    with pytest.raises(ValueError, match="failed_response must be a string"):
        build_repair_prefix(None)


def test_repair_cue_is_short_tag_free_and_names_its_fields(qwen_tokenizer):
    for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE):
        assert tag not in REPAIR_CUE
    assert "<repair>" in REPAIR_CUE and REPAIR_CUE.endswith(REPAIR_FIELDS[0])
    assert len(qwen_tokenizer.encode(REPAIR_CUE, add_special_tokens=False)) <= 64


def test_repaired_continuation_completes_a_well_formed_response():
    prefix = build_repair_prefix("<think>\n3 + 4 = 8\n</think>\n<answer>8</answer>")
    continuation = (
        " 3 + 4 is 7, not 8.\nFix: 3 + 4 = 7.\nCorrected final answer: 7\n</repair>\n"
        "</think>\n<answer>7</answer>"
    )
    verdict = score(prefix + continuation, "7", answer_type="integer")
    assert (verdict.acc, verdict.fmt, verdict.extracted) == (True, True, "7")
