"""Normalised text comparison and the clean-up every extracted answer gets first."""

from __future__ import annotations

import re
import unicodedata

# \text{…}, \mathrm{…} and friends: their content is what counts.
TEXT_WRAPPER = re.compile(r"\\(?:text|textrm|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_ARTICLE = re.compile(r"\b(?:a|an|the)\b")
_WHITESPACE = re.compile(r"\s+")
# "The final answer is:", "Answer:", "correct option:" … at the very start of an answer.
_LEADING_CUE = re.compile(
    r"(?:the[ \t]+)?(?:final[ \t]+|correct[ \t]+|best[ \t]+)?(?:answer|option|choice)"
    r"[*_]{0,3}[ \t]*(?:is\b[ \t]*:?|:)[ \t]*",
    re.I,
)
_DECORATION = "*_`\"' \t\n"


def strip_answer_cue(answer: str) -> str:
    """`answer` without markdown emphasis, a leading answer cue and a trailing period.

    Example: ``strip_answer_cue("**The answer is:** 12.")`` → ``"12"``;
    ``strip_answer_cue("Answer: (B)")`` → ``"(B)"``.
    """
    cleaned = answer.strip(_DECORATION)
    cue = _LEADING_CUE.match(cleaned)
    if cue is not None:
        cleaned = cleaned[cue.end() :]
    cleaned = cleaned.strip(_DECORATION)
    if cleaned.endswith(".") and not cleaned.endswith(".."):
        cleaned = cleaned[:-1].rstrip()
    return cleaned


def normalise_text(text: str) -> str:
    """Text as compared: NFKC, lower case, no math/markdown wrappers, articles or final period.

    Example: ``normalise_text("  The **Blue**  Square. ")`` → ``"blue square"``;
    ``normalise_text("$\\\\text{yes}$")`` → ``"yes"``.
    """
    cleaned = unicodedata.normalize("NFKC", text)
    cleaned = TEXT_WRAPPER.sub(r"\1", cleaned).replace("$", "")
    cleaned = cleaned.replace("*", "").replace("`", "").lower()
    cleaned = _WHITESPACE.sub(" ", cleaned).strip(" \"'")
    cleaned = cleaned.rstrip(". ")
    cleaned = _ARTICLE.sub(" ", cleaned)
    return _WHITESPACE.sub(" ", cleaned).strip()


def texts_match(predicted: str, gold: str) -> bool:
    """Exact match after `normalise_text`; an empty normalised text never matches.

    Example: ``texts_match("the Triangle.", "triangle")`` → True; ``texts_match("E", "Every")``
    → False.
    """
    normalised_gold = normalise_text(gold)
    return bool(normalised_gold) and normalise_text(predicted) == normalised_gold
