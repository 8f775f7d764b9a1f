"""`score`: the project's single answer check, behind both training rewards and evaluation.

Which comparison runs depends on the answer type (given, or inferred when None):
- ``multiple_choice`` (or any call with `choices`): option letters, `care.verify.choice`;
- ``integer``, ``number``, ``math``: plain numbers with a relative tolerance of 1e-4
  (`care.verify.numbers`), anything else through math-verify under a time limit
  (`care.verify.mathexpr`);
- ``text``: normalised exact match (`care.verify.text`).
Aliases from benchmark schemas: ``multi_choice`` → multiple_choice, ``float`` → number,
``list`` → math.

Inference when `answer_type` is None and no `choices` are given: a gold made only of option
letters ("B", "A, C") → multiple_choice (options unknown, letters A–Z); a plain number →
number; LaTeX or arithmetic notation (a backslash, ``^``, ``_``, ``{``, ``=``, ``/``, a
digit next to an operator) → math; anything else → text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from care.verify.choice import gold_letters, predicted_letters
from care.verify.extract import extract_answer, format_ok
from care.verify.mathexpr import math_compare
from care.verify.numbers import numbers_match, parse_plain_number
from care.verify.text import strip_answer_cue, texts_match

ANSWER_TYPES: tuple[str, ...] = ("multiple_choice", "integer", "number", "text", "math")
"""The answer types `score` compares by; the same names as the dataset rows use."""
ANSWER_TYPE_ALIASES: dict[str, str] = {
    "multi_choice": "multiple_choice",
    "float": "number",
    "list": "math",
}

VERDICT_STATUSES: tuple[str, ...] = ("ok", "no_answer", "unparsable", "timeout", "truncated")
"""Why a verdict is what it is (`Verdict.status`), in the order of precedence `score` applies."""

_GOLD_LETTERS = re.compile(r"[(\[]?[A-Z][)\]]?(?:[ \t]*[,;&][ \t]*[(\[]?[A-Z][)\]]?)*")
_MATH_NOTATION = re.compile(r"[\\^_{}=/]|\d[ \t]*[-+*×·][ \t]*\d|\d[ \t]*[a-z]\b|\bsqrt|\bpi\b")


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one response.

    acc: the extracted answer equals the gold answer.
    fmt: the response is exactly ``<think>…</think><answer>…</answer>`` (see `format_ok`).
    extracted: the answer that was compared (stripped), or None when none was found or it was
        longer than 512 characters.
    status: why, one of `VERDICT_STATUSES`, the first that holds of
        ``"timeout"`` (math-verify ran out of its time budget: the answer was NOT judged, and
        may be right), ``"truncated"`` (the response hit the token limit), ``"no_answer"`` (no
        answer was found), ``"unparsable"`` (an answer was found but could not be read as the
        answer type: no option letter, an expression math-verify cannot parse or refuses), and
        ``"ok"`` (the answer was compared; acc says how that went).
    """

    acc: bool
    fmt: bool
    extracted: str | None
    status: str = "ok"


def score(
    response: str,
    answer: str,
    choices: Sequence[str] | None = None,
    answer_type: str | None = None,
    *,
    truncated: bool = False,
    time_limit: float | None = None,
) -> Verdict:
    """Check a model response against the gold answer.

    Args:
        response: the decoded response (the assistant's text, end tokens allowed).
        answer: the gold answer: a letter (list) or option text for multiple choice, a number,
            a LaTeX expression (no ``$`` needed) or text.
        choices: option texts in order (option 0 is "A"), or None.
        answer_type: one of `ANSWER_TYPES` (or an alias), or None to infer it.
        truncated: the response stopped at the token limit (finish reason "length"); the
            verdict's status then says so (acc is judged as usual).
        time_limit: seconds math-verify may spend on this answer; None: `TIME_LIMIT_SECONDS`.

    Returns:
        A `Verdict`; acc is False whenever the answer is missing, unparseable or ambiguous.

    Example: ``score("<think>6/4</think><answer>1.5</answer>", "\\\\frac{3}{2}")`` →
    ``Verdict(acc=True, fmt=True, extracted="1.5")``; ``score("Answer: A or B", "A",
    choices=["x", "y"])`` → ``Verdict(acc=False, fmt=False, extracted="A or B")``.
    """
    if not isinstance(response, str):
        raise ValueError(f"response must be a string, got {type(response).__name__}")
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"answer must be a non-empty string, got {answer!r}")
    options = _validated_choices(choices)
    kind = resolve_answer_type(answer, options, answer_type)
    if kind == "multiple_choice":
        # Validates the gold before looking at the response: a bad row fails loudly every time.
        gold = gold_letters(answer, options)

    if time_limit is not None and not (
        isinstance(time_limit, int | float) and not isinstance(time_limit, bool) and time_limit > 0
    ):
        raise ValueError(f"time_limit must be a number of seconds > 0 or None, got {time_limit!r}")

    fmt = format_ok(response)
    extracted = extract_answer(response)
    if extracted is None:
        return Verdict(False, fmt, None, "truncated" if truncated else "no_answer")
    predicted = strip_answer_cue(extracted)
    status = "ok"
    if not predicted:
        acc, status = False, "unparsable"
    elif kind == "multiple_choice":
        letters = predicted_letters(predicted, options)
        acc = letters == gold
        status = "ok" if letters is not None else "unparsable"
    elif kind == "text":
        acc = texts_match(predicted, answer)
    else:
        acc, status = _values_equal(predicted, answer.strip(), time_limit)
    if truncated and status != "timeout":
        status = "truncated"
    return Verdict(acc=acc, fmt=fmt, extracted=extracted, status=status)


def status_fractions(verdicts: Sequence[Verdict], prefix: str = "verify/") -> dict[str, float]:
    """Shares of `verdicts` that timed out, found no answer or were truncated.

    ``<prefix>timeout_frac``, ``<prefix>no_answer_frac``, ``<prefix>truncated_frac`` (and
    ``<prefix>unparsable_frac``), each over all the verdicts given; 0.0 for none given.

    Example: statuses ok, timeout, no_answer, no_answer → ``{"verify/timeout_frac": 0.25,
    "verify/no_answer_frac": 0.5, "verify/truncated_frac": 0.0, "verify/unparsable_frac": 0.0}``.
    """
    counts = {status: 0 for status in VERDICT_STATUSES}
    for verdict in verdicts:
        counts[verdict.status] += 1
    total = max(len(verdicts), 1)
    return {
        f"{prefix}{status}_frac": counts[status] / total
        for status in ("timeout", "no_answer", "truncated", "unparsable")
    }


def reward(verdict: Verdict, format_weight: float = 0.0) -> float:
    """The scalar reward of a verdict: ``(1 - w)·acc + w·fmt`` with ``w = format_weight``.

    Example: ``reward(Verdict(True, False, "7"))`` → 1.0;
    ``reward(Verdict(False, True, "6"), format_weight=0.1)`` → 0.1.
    """
    if not isinstance(verdict, Verdict):
        raise ValueError(f"verdict must be a Verdict, got {type(verdict).__name__}")
    if (
        isinstance(format_weight, bool)
        or not isinstance(format_weight, int | float)
        or not math.isfinite(format_weight)
        or not 0.0 <= format_weight <= 1.0
    ):
        raise ValueError(f"format_weight must be a number in [0, 1], got {format_weight!r}")
    return (1.0 - format_weight) * float(verdict.acc) + format_weight * float(verdict.fmt)


def resolve_answer_type(
    answer: str, choices: Sequence[str] | None = None, answer_type: str | None = None
) -> str:
    """The answer type `score` compares by (see the module docstring for the inference rule).

    Example: ``resolve_answer_type("B")`` → ``"multiple_choice"``;
    ``resolve_answer_type("1,000")`` → ``"number"``; ``resolve_answer_type("\\\\frac{1}{2}")``
    → ``"math"``; ``resolve_answer_type("7", answer_type="float")`` → ``"number"``.
    """
    if answer_type is not None:
        if not isinstance(answer_type, str):
            raise ValueError(f"answer_type must be a string or None, got {answer_type!r}")
        kind = ANSWER_TYPE_ALIASES.get(answer_type, answer_type)
        if kind not in ANSWER_TYPES:
            allowed = ", ".join([*ANSWER_TYPES, *ANSWER_TYPE_ALIASES])
            raise ValueError(f"answer_type {answer_type!r} is unknown; allowed: {allowed}")
        if choices is not None and kind != "multiple_choice":
            raise ValueError(
                f"answer_type {answer_type!r} contradicts choices={list(choices)!r}: rows with "
                "choices are multiple_choice"
            )
        return kind
    if choices is not None:
        return "multiple_choice"
    stripped = answer.strip()
    if _GOLD_LETTERS.fullmatch(stripped):
        return "multiple_choice"
    if parse_plain_number(stripped) is not None:
        return "number"
    if _MATH_NOTATION.search(stripped):
        return "math"
    return "text"


def _values_equal(predicted: str, gold: str, time_limit: float | None) -> tuple[bool, str]:
    """Plain numbers compare by tolerance; anything else goes to math-verify. (equal, status)."""
    predicted_number = parse_plain_number(predicted)
    gold_number = parse_plain_number(gold)
    if predicted_number is not None and gold_number is not None:
        return numbers_match(predicted_number, gold_number), "ok"
    return math_compare(predicted, gold, time_limit)


def _validated_choices(choices: Sequence[str] | None) -> list[str] | None:
    if choices is None:
        return None
    if isinstance(choices, str) or not isinstance(choices, Sequence) or not choices:
        raise ValueError(f"choices must be None or a non-empty list of strings, got {choices!r}")
    if len(choices) > 26:
        raise ValueError(f"choices must hold at most 26 options (letters A..Z), got {len(choices)}")
    for index, option in enumerate(choices):
        if not isinstance(option, str):
            raise ValueError(f"choices[{index}] must be a string, got {option!r}")
    return list(choices)
