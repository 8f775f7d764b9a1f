"""What kind of failure each scored item is: a rule-based error taxonomy.

Every per-sample record ``care eval`` writes (``acc``, ``fmt``, ``extracted``, ``answer``,
``verify_status``; a training sample's ``finish_reason`` too) gets one type, the first rule
that holds:

| type | rule |
|---|---|
| ``correct`` | right answer in the ``<think>…</think><answer>…</answer>`` format |
| ``format only`` | right answer, but not in that format |
| ``truncated`` | wrong, and generation stopped at the token limit |
| ``no answer block`` | wrong, and no answer was found in the response |
| ``extraction failed`` | wrong, an answer was found but could not be read as its type, or the verifier ran out of time on it |
| ``wrong option`` | wrong, and the gold or the extracted answer is option letters |
| ``numeric near miss`` | wrong, both answers are plain numbers and within 5 % of the gold |
| ``wrong answer`` | every other wrong answer |

    >>> error_type({"acc": False, "fmt": True, "extracted": "10.4", "answer": "10"})
    'numeric near miss'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from care.tables import markdown_table
from care.verify import parse_plain_number, resolve_answer_type
from care.verify.text import strip_answer_cue

ERROR_TYPES = (
    "correct",
    "format only",
    "truncated",
    "no answer block",
    "extraction failed",
    "wrong option",
    "numeric near miss",
    "wrong answer",
)
NEAR_MISS_TOLERANCE = 0.05
"""A wrong number within this fraction of the gold's magnitude is a near miss."""


def error_type(record: Mapping[str, Any]) -> str:
    """The type of one per-sample record (see the module docstring for the rules).

    Example: ``error_type({"acc": False, "fmt": True, "extracted": None, "answer": "B"})`` →
    ``"no answer block"``; ``error_type({"acc": True, "fmt": False, ...})`` → ``"format only"``.
    """
    if "acc" not in record:
        raise ValueError(f"record {dict(record)!r} has no acc field: not a scored sample")
    if record["acc"]:
        return "correct" if record.get("fmt") else "format only"
    status = record.get("verify_status")
    if status == "truncated" or record.get("finish_reason") == "length":
        return "truncated"
    extracted = record.get("extracted")
    if extracted is None or status == "no_answer":
        return "no answer block"
    if status in ("unparsable", "timeout"):
        return "extraction failed"
    gold = str(record.get("answer") or "").strip()
    predicted = strip_answer_cue(str(extracted))
    # The record holds no option texts: an option is recognised by its letter on either side
    # (a gold given as option text still meets a predicted letter).
    if any(text and resolve_answer_type(text) == "multiple_choice" for text in (gold, predicted)):
        return "wrong option"
    predicted_number = parse_plain_number(predicted)
    gold_number = parse_plain_number(gold) if gold else None
    if predicted_number is not None and gold_number is not None:
        scale = abs(gold_number.value)
        if abs(predicted_number.value - gold_number.value) <= NEAR_MISS_TOLERANCE * scale:
            return "numeric near miss"
    return "wrong answer"


def type_counts(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many records have each type, in `ERROR_TYPES` order (zeros included)."""
    counts = Counter(error_type(record) for record in records)
    return {name: counts.get(name, 0) for name in ERROR_TYPES}


def taxonomy_markdown(counts: Mapping[str, Mapping[str, Mapping[str, int]]]) -> str:
    """A Markdown table, one row per (checkpoint, benchmark): the count of every type.

    `counts` maps checkpoint label → benchmark → `type_counts`.
    """
    header = ["checkpoint", "benchmark", "n", *ERROR_TYPES]
    rows = [
        [label, benchmark, str(sum(by_type.values())), *(str(by_type[t]) for t in ERROR_TYPES)]
        for label, by_benchmark in counts.items()
        for benchmark, by_type in by_benchmark.items()
    ]
    return markdown_table(header, rows, "ll" + "r" * (len(ERROR_TYPES) + 1))
