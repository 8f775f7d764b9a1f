"""Prompt length and image count of every training example, checked before training starts.

A prompt's length counts its vision tokens: the processor resizes each image so its pixel count
lies in the processor's budget, and every 28x28 px become one token, so the count follows from
the image's size alone. The size is read from the image header, without decoding the pixels, so
checking a large training set costs a tokenizer pass over the prompts.

Example: a prompt of 40 text tokens with one 448x448 image, under a budget of up to 448*448 px
→ 40 - 1 + 256 = 295 tokens (the one ``<|image_pad|>`` placeholder becomes 256 vision tokens).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from care.data import Example
from care.data.dataset import DataError, ImageSource


@dataclass(frozen=True)
class OverBudget:
    """An example that breaks a limit, and why (``"prompt has 2300 tokens > 2048"``)."""

    example: Example
    reason: str

    def __str__(self) -> str:
        return f"{self.example.source} (id {self.example.id!r}): {self.reason}"


def image_size_of(source: ImageSource) -> tuple[int, int]:
    """``(height, width)`` of an image file or encoded bytes, read from its header only."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else Path(source).open("rb")
    with stream, Image.open(stream) as image:
        width, height = image.size
    return height, width


def vision_tokens(processor: Any, height: int, width: int) -> int:
    """How many vision tokens `processor` turns a ``height x width`` image into.

    Example: the tiny model's processor (56²..112² px) → a 200x100 image becomes 112x56 px →
    ``8 * 4`` patches of 14 px → 32 / (2x2 merge) = 8 tokens.
    """
    image_processor = processor.image_processor
    patches = image_processor.get_number_of_image_patches(height, width, {})
    return int(patches) // int(image_processor.merge_size) ** 2


def prompt_tokens(processor: Any, prompt: str, image_sizes: Sequence[tuple[int, int]]) -> int:
    """Tokens of a rendered prompt once each ``<|image_pad|>`` placeholder is expanded to its
    image's vision tokens (what the policy and vLLM see)."""
    text_ids = processor.tokenizer.encode(prompt, add_special_tokens=False)
    expanded = sum(vision_tokens(processor, height, width) for height, width in image_sizes)
    return len(text_ids) - len(image_sizes) + expanded


def over_budget(
    examples: Sequence[Example],
    processor: Any,
    render: Callable[[Example], str],
    *,
    max_prompt_tokens: int,
    max_images: int | None,
) -> list[OverBudget]:
    """The examples whose rendered prompt (``render(example)``) is longer than
    ``max_prompt_tokens`` tokens, or that hold more than ``max_images`` images (None: any
    number), in input order."""
    found = []
    for example in examples:
        if max_images is not None and len(example.images) > max_images:
            found.append(
                OverBudget(
                    example,
                    f"{len(example.images)} images > rollout.vllm.limit_images_per_prompt="
                    f"{max_images}",
                )
            )
            continue
        sizes = []
        for index, source in enumerate(example.images):
            try:
                sizes.append(image_size_of(source))
            except (OSError, ValueError) as error:
                raise DataError(
                    f"{example.source}:images[{index}]: cannot read image: {error}"
                ) from error
        count = prompt_tokens(processor, render(example), sizes)
        if count > max_prompt_tokens:
            found.append(
                OverBudget(
                    example,
                    f"prompt has {count} tokens (vision tokens included) > "
                    f"data.max_prompt_tokens={max_prompt_tokens}",
                )
            )
    return found


def drop_over_budget(
    examples: Sequence[Example],
    processor: Any,
    render: Callable[[Example], str],
    *,
    max_prompt_tokens: int,
    max_images: int | None,
    on_bad_row: str,
) -> list[Example]:
    """``examples`` without those :func:`over_budget` finds: with ``on_bad_row="error"`` any
    such example raises a DataError listing them (the first 20, by file:line); with ``"skip"``
    they are left out and the caller counts them (``len(examples) - len(kept)``)."""
    bad = over_budget(
        examples, processor, render, max_prompt_tokens=max_prompt_tokens, max_images=max_images
    )
    if not bad:
        return list(examples)
    if on_bad_row == "error":
        listed = "\n  ".join(str(item) for item in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise DataError(
            f"{len(bad)} training example(s) exceed the prompt limits (set "
            f"data.on_bad_row: skip to leave them out):\n  {listed}{more}"
        )
    dropped = {id(item.example) for item in bad}
    kept = [example for example in examples if id(example) not in dropped]
    if not kept:
        raise DataError("every training example exceeds the prompt limits; nothing to train")
    return kept
