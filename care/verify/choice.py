"""Multiple-choice answers: which option letters an answer names, without ever guessing.

A prediction is read in this order, and the first rule that applies decides:
1. the whole answer is a letter or a list of letters: "B", "(B)", "B.", "B)", "[B]", "b",
   "A, C", "A and C" (after `strip_answer_cue`, so "Answer: B" and "The answer is (B)" too);
2. a letter opens the answer, then option text: "B. 45°", "(B) 45°", "B: 45°", or
   "B 45°" when "45°" is B's text; if the text is another option's, or the rest names other
   letters ("A. 3, C. 5"), the answer is ambiguous;
3. the answer is one option's text (normalised as text: case, whitespace, articles, final
   period);
4. the answer is a plain number equal to exactly one numeric option ("3.0" for option "3");
5. letters named by a cue ("answer is B", "option (C)", "choice: D") or in parentheses
   anywhere ("… so (B) holds"): exactly one distinct letter (within the options) is the answer.
Anything else, and any rule that finds two different letters ("A or B"), gives None: wrong.
Letters count only as standalone upper-case tokens, so "Every" never reads as "E".
A multi-select gold ("A, C") needs exactly that set: "A" alone is wrong, "C, A" is right.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from care.prompts import CHOICE_LETTERS
from care.verify.numbers import parse_plain_number, values_close
from care.verify.text import TEXT_WRAPPER, normalise_text, strip_answer_cue

_LETTER = r"[(\[]?[A-Z][)\]]?"
_LETTER_LIST = re.compile(rf"{_LETTER}\.?(?:[ \t]*(?:,|;|&|\band\b)[ \t]*{_LETTER}\.?)*")
_LOWERCASE_LETTER = re.compile(r"[(\[]?([a-z])[)\]]?\.?")
_LEADING_LETTER = re.compile(r"[(\[]?([A-Z])(?:[)\]][.:]?|[.:])[ \t]*(.+)", re.S)
_LEADING_BARE_LETTER = re.compile(r"([A-Z])[ \t]+(.+)", re.S)
_LETTER_MARKER = re.compile(r"(?<![A-Za-z0-9])(?:\(([A-Z])\)|([A-Z])[.)](?=\s|$))")
_CUED_LETTER = re.compile(
    r"(?<![A-Za-z])(?i:answer|option|choice)(?:[ \t]+(?i:is))?[ \t]*:?[ \t]*"
    r"[(\[]?\*{0,2}([A-Z])\*{0,2}[)\]]?(?![A-Za-z0-9])"
)
_PARENTHESISED_LETTER = re.compile(r"(?<![A-Za-z0-9])\(([A-Z])\)(?![A-Za-z0-9])")


def gold_letters(answer: str, choices: Sequence[str] | None) -> frozenset[str]:
    """The option letters a gold answer names: a letter (list) or one option's text.

    Raises ValueError when it names no option, e.g. gold "E" with four choices.

    Example: ``gold_letters("A, C", None)`` → ``frozenset({"A", "C"})``;
    ``gold_letters("blue", ["red", "blue"])`` → ``frozenset({"B"})``.
    """
    allowed = _allowed_letters(choices)
    cleaned = _clean(answer)
    letters = _letter_list(cleaned)
    if letters is not None and letters <= allowed:
        return letters
    if choices is not None:
        by_text = _letters_by_text(cleaned, choices)
        if len(by_text) == 1:
            return by_text
    last = CHOICE_LETTERS[len(allowed) - 1]
    raise ValueError(
        f"answer {answer!r} names no option: expected letters A..{last}"
        + (f" or the text of one of the choices {list(choices)!r}" if choices is not None else "")
    )


def predicted_letters(answer: str, choices: Sequence[str] | None) -> frozenset[str] | None:
    """The option letters a predicted answer names, or None when it is unparseable/ambiguous.

    Example: ``predicted_letters("The answer is (B)", None)`` → ``frozenset({"B"})``;
    ``predicted_letters("A or B", None)`` → None; ``predicted_letters("blue", ["red", "blue"])``
    → ``frozenset({"B"})``.
    """
    allowed = _allowed_letters(choices)
    cleaned = _clean(answer)
    if not cleaned:
        return None

    letters = _letter_list(cleaned)
    if letters is not None:
        return letters
    lowercase = _LOWERCASE_LETTER.fullmatch(cleaned)
    if lowercase is not None:
        return frozenset(lowercase[1].upper())

    leading = _leading_letter(cleaned, choices)
    if leading is not _NOT_APPLICABLE:
        return leading

    if choices is not None:
        by_text = _letters_by_text(cleaned, choices)
        if by_text:
            return by_text if len(by_text) == 1 else None
        by_number = _letters_by_number(cleaned, choices)
        if by_number is not None:
            return by_number

    named = {
        letter
        for pattern in (_CUED_LETTER, _PARENTHESISED_LETTER)
        for letter in pattern.findall(cleaned)
        if letter in allowed
    }
    return frozenset(named) if len(named) == 1 else None


class _NotApplicable:
    """Marks that rule 2 does not apply (distinct from None, which means ambiguous)."""


_NOT_APPLICABLE = _NotApplicable()


def _leading_letter(
    cleaned: str, choices: Sequence[str] | None
) -> frozenset[str] | None | _NotApplicable:
    """Rule 2: a letter followed by option text."""
    match = _LEADING_LETTER.fullmatch(cleaned)
    delimited = match is not None
    if match is None:
        match = _LEADING_BARE_LETTER.fullmatch(cleaned)
    if match is None:
        return _NOT_APPLICABLE
    letter, rest = match[1], match[2]
    if choices is not None:
        by_text = _letters_by_text(rest, choices)
        if by_text:
            return frozenset(letter) if letter in by_text else None
    if not delimited:
        # "A triangle" or "B because …": a bare leading capital is only a letter when the
        # rest is that option's text.
        return _NOT_APPLICABLE
    other_markers = {
        marker for pair in _LETTER_MARKER.findall(rest) for marker in pair if marker != ""
    }
    if other_markers - {letter}:
        return None
    return frozenset(letter)


def _letter_list(cleaned: str) -> frozenset[str] | None:
    """Rule 1: the letters of "B", "(B)", "A, C", "A and C"; None if not such a list."""
    if _LETTER_LIST.fullmatch(cleaned) is None:
        return None
    return frozenset(re.findall(r"[A-Z]", cleaned))


def _letters_by_text(cleaned: str, choices: Sequence[str]) -> frozenset[str]:
    """Rule 3: letters of the options whose normalised text equals the answer's."""
    target = normalise_text(cleaned)
    if not target:
        return frozenset()
    return frozenset(
        letter
        for letter, option in zip(CHOICE_LETTERS, choices, strict=False)
        if normalise_text(option) == target
    )


def _letters_by_number(cleaned: str, choices: Sequence[str]) -> frozenset[str] | None:
    """Rule 4: the one numeric option equal to a plain-number answer, else None."""
    number = parse_plain_number(cleaned)
    if number is None or number.percent:
        return None
    matches = []
    for letter, option in zip(CHOICE_LETTERS, choices, strict=False):
        option_number = parse_plain_number(option)
        if option_number is not None and values_close(number.value, option_number.value):
            matches.append(letter)
    return frozenset(matches) if len(matches) == 1 else None


def _allowed_letters(choices: Sequence[str] | None) -> frozenset[str]:
    count = len(CHOICE_LETTERS) if choices is None else len(choices)
    return frozenset(CHOICE_LETTERS[:count])


def _clean(answer: str) -> str:
    """Answer cue, markdown, math delimiters and text wrappers removed."""
    cleaned = TEXT_WRAPPER.sub(r"\1", answer).replace("$", "")
    return strip_answer_cue(cleaned).replace("**", "").strip()
