"""The project's one prompt protocol, shared by training rollouts, RGR and evaluation.

A prompt is a system message that asks for ``<think>…</think><answer>…</answer>`` and one user
turn holding the images and the question (with lettered options for multiple choice):

    >>> messages = build_messages("How many circles?", num_images=1)
    >>> [item["type"] for item in messages[1]["content"]]
    ['image', 'text']
    >>> print(format_question("Which is larger?", ["3", "5"]))
    Which is larger?
    <BLANKLINE>
    Options:
    A. 3
    B. 5
    <BLANKLINE>
    Answer with the option's letter from the given choices.

`PROMPT_VERSION` names the wording: the evaluation cache keys on it, so bump it whenever any
text below (system prompt, option layout, instruction, repair cue) changes.

RGR (docs/algorithm.md section 4) continues a failed response from `build_repair_prefix`: the
failure's reasoning up to where ``</think>`` stood, then `REPAIR_CUE`, which opens a
``<repair>`` block for the model to fill before it closes ``</think>`` and answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PROMPT_VERSION = "care-prompt-v1"

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
IMAGE_PLACEHOLDER = "<image>"

# End-of-turn strings a decoder may leave after the answer when special tokens are kept.
END_TOKENS: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")

CHOICE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

SYSTEM_PROMPT = (
    "You are a careful visual reasoner. First think through the problem step by step inside "
    "<think> </think> tags, then give only the final answer inside <answer> </answer> tags, "
    "in the form: <think> reasoning </think> <answer> final answer </answer>"
)

MULTIPLE_CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices."

# No protocol tag appears in the cue, so span detection and the format check see only the
# tags the policy itself writes. The cue ends inside an opened <repair> block: the model fills
# the fields, then closes </repair> and </think> and answers.
REPAIR_CUE = (
    "Wait, this reasoning contains a mistake. Let me find it, fix it and re-derive the answer "
    "concisely, then finish thinking and give the corrected answer.\n"
    "<repair>\n"
    "Mistake:"
)
REPAIR_FIELDS: tuple[str, ...] = ("Mistake:", "Fix:", "Corrected final answer:")


def protocol_texts() -> list[str]:
    """The fixed text every prompt and response of the protocol carries: the system prompt, the
    option layout and instruction, the response tags and the repair cue.

    A tokenizer trained on a task's own text (the tiny model's BPE) learns its merges from these
    too, so the tags and the system prompt become a few tokens each instead of one per byte.
    """
    return [
        SYSTEM_PROMPT,
        f"Options:\nA. B. C. D.\n\n{MULTIPLE_CHOICE_INSTRUCTION}",
        f"{THINK_OPEN}\n\n{THINK_CLOSE}\n{ANSWER_OPEN}{ANSWER_CLOSE}",
        REPAIR_CUE + "\n" + "\n".join(REPAIR_FIELDS) + "\n</repair>",
    ]


def format_question(question: str, choices: Sequence[str] | None = None) -> str:
    """The user text of a problem: the question, then for multiple choice the lettered options.

    Args:
        question: the problem text; `<image>` placeholders are kept where they are.
        choices: option texts in order (option 0 is "A"), or None for a free-form answer.

    Example: ``format_question("Pick one", ["red", "blue"])`` →
    ``"Pick one\\n\\nOptions:\\nA. red\\nB. blue\\n\\nAnswer with the option's letter from the
    given choices."``; ``format_question(" 2+2? ")`` → ``"2+2?"``.
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty string, got {question!r}")
    text = question.strip()
    if choices is None:
        return text
    options = _validated_choices(choices)
    option_lines = "\n".join(
        f"{letter}. {option}" for letter, option in zip(CHOICE_LETTERS, options, strict=False)
    )
    return f"{text}\n\nOptions:\n{option_lines}\n\n{MULTIPLE_CHOICE_INSTRUCTION}"


def build_messages(
    question: str, choices: Sequence[str] | None = None, num_images: int = 0
) -> list[dict[str, Any]]:
    """The chat messages of one problem: the system prompt and one user turn.

    The user content is a list of ``{"type": "image"}`` and ``{"type": "text", "text": ...}``
    items. `<image>` placeholders in the question mark where the images go (their count must
    equal `num_images`); without placeholders the images come first. Text pieces between
    images are stripped of surrounding whitespace and empty ones are dropped.

    Example: ``build_messages("Left <image> right <image>", num_images=2)[1]["content"]`` →
    ``[{"type": "text", "text": "Left"}, {"type": "image"}, {"type": "text", "text": "right"},
    {"type": "image"}]``.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 0:
        raise ValueError(f"num_images must be an int >= 0, got {num_images!r}")
    text = format_question(question, choices)
    placeholders = text.count(IMAGE_PLACEHOLDER)
    content: list[dict[str, Any]] = []
    if placeholders == 0:
        content.extend({"type": "image"} for _ in range(num_images))
        content.append({"type": "text", "text": text})
    elif placeholders != num_images:
        raise ValueError(
            f"question has {placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but num_images is "
            f"{num_images}; they must match (or the question must have no placeholders)"
        )
    else:
        for index, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
            if index > 0:
                content.append({"type": "image"})
            if piece.strip():
                content.append({"type": "text", "text": piece.strip()})
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": content},
    ]


def render_prompt(tokenizer_or_processor: Any, messages: list[dict[str, Any]]) -> str:
    """The prompt text the policy continues: the chat template with the generation prompt.

    Works with a tokenizer or a processor (anything with ``apply_chat_template``).

    Example: with Qwen's template, ``render_prompt(tok, build_messages("2+2?"))`` ends with
    ``"2+2?<|im_end|>\\n<|im_start|>assistant\\n"``.
    """
    apply = getattr(tokenizer_or_processor, "apply_chat_template", None)
    if not callable(apply):
        raise ValueError(
            "tokenizer_or_processor must have an apply_chat_template method, got "
            f"{type(tokenizer_or_processor).__name__}"
        )
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"messages must be a non-empty list of chat messages, got {messages!r}")
    rendered = apply(messages, add_generation_prompt=True, tokenize=False)
    if not isinstance(rendered, str):
        raise ValueError(
            "tokenizer_or_processor.apply_chat_template returned "
            f"{type(rendered).__name__}, expected str (does it have a chat template?)"
        )
    return rendered


def build_repair_prefix(failed_response: str) -> str:
    """The assistant text RGR continues from: the failed reasoning, then `REPAIR_CUE`.

    The failure is cut where its first ``</think>`` or first ``<answer>`` begins (whichever
    comes first), so its answer and everything after it are gone; trailing whitespace and end
    tokens are dropped. If what is left has no ``<think>``, a fresh ``<think>`` starts the
    prefix and the left-over text (possibly empty) goes inside it. The cue follows after a
    blank line (a single newline right after a bare ``<think>``). The prefix never holds
    ``</think>``, so the model's continuation closes it and gives ``<answer>``.

    Example: ``build_repair_prefix("<think>\\n2+2=5\\n</think>\\n<answer>5</answer>")`` →
    ``"<think>\\n2+2=5\\n\\n" + REPAIR_CUE``; ``build_repair_prefix("<answer>5</answer>")`` →
    ``"<think>\\n" + REPAIR_CUE``.
    """
    if not isinstance(failed_response, str):
        raise ValueError(f"failed_response must be a string, got {type(failed_response).__name__}")
    cut = len(failed_response)
    for tag in (THINK_CLOSE, ANSWER_OPEN):
        position = failed_response.find(tag)
        if position != -1:
            cut = min(cut, position)
    reasoning = strip_end_tokens(failed_response[:cut])
    if THINK_OPEN not in reasoning:
        reasoning = f"{THINK_OPEN}\n{reasoning.strip()}".rstrip()
    separator = "\n" if reasoning.endswith(THINK_OPEN) else "\n\n"
    return f"{reasoning}{separator}{REPAIR_CUE}"


def strip_end_tokens(text: str) -> str:
    """`text` without trailing whitespace and end tokens: ``"B <|im_end|>\\n"`` → ``"B"``."""
    stripped = text.rstrip()
    while True:
        for token in END_TOKENS:
            if stripped.endswith(token):
                stripped = stripped[: -len(token)].rstrip()
                break
        else:
            return stripped


def _validated_choices(choices: Sequence[str]) -> list[str]:
    """Option texts, stripped; ValueError for a bare string, an empty list, >26 or blank items."""
    if isinstance(choices, str) or not isinstance(choices, Sequence):
        raise ValueError(f"choices must be a list of option strings, got {choices!r}")
    if not 1 <= len(choices) <= len(CHOICE_LETTERS):
        raise ValueError(
            f"choices must hold 1..{len(CHOICE_LETTERS)} options (letters A..Z), got {len(choices)}"
        )
    options = []
    for index, option in enumerate(choices):
        if not isinstance(option, str) or not option.strip():
            raise ValueError(f"choices[{index}] must be a non-empty string, got {option!r}")
        options.append(option.strip())
    return options
