"""Targets for the supervised warm start: a row's rationale and answer in the response format.

The policy answers as `<think>\\n{rationale}\\n</think>\\n<answer>{answer}</answer>`; a warm start
teaches that layout by imitating rows that carry a `solution` (the rationale only, no tags), such
as every row `care.data.synth` writes.

>>> sft_target({"id": "t-0", "answer": "13", "solution": "4 + 7 + 2 = 13."})
'<think>\\n4 + 7 + 2 = 13.\\n</think>\\n<answer>13</answer>'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from care.data.dataset import Example, normalise_choice_answer

RESPONSE_TAGS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")
"""The tags the target adds; a solution holding one would break the layout."""


def sft_target(example_or_row: Example | Mapping[str, Any]) -> str:
    """`<think>\\n{solution}\\n</think>\\n<answer>{answer}</answer>` for one example or raw row.

    An `Example` gives its `extra["solution"]` and its (normalised) `answer`; a row mapping gives
    `row["solution"]` and `row["answer"]`, a multiple-choice gold written as option text or "(B)"
    becoming its letter, as `load_examples` would store it. Raises ValueError naming the row
    when the solution is missing, empty or holds a response tag, or the answer is missing.

    >>> sft_target({"id": "q", "answer": "(B)", "choices": ["red", "blue"],
    ...             "solution": "The blue line is longer. That is option B."})
    '<think>\\nThe blue line is longer. That is option B.\\n</think>\\n<answer>B</answer>'
    """
    if isinstance(example_or_row, Example):
        where = f"example {example_or_row.id!r} ({example_or_row.source})"
        solution = example_or_row.extra.get("solution")
        answer: Any = example_or_row.answer
    elif isinstance(example_or_row, Mapping):
        where = f"row {example_or_row.get('id', '<no id>')!r}"
        solution = example_or_row.get("solution")
        answer = _row_answer(example_or_row, where)
    else:
        raise ValueError(
            f"example_or_row must be an Example or a row mapping, got {type(example_or_row)}"
        )
    if solution is None:
        raise ValueError(
            f"{where} has no 'solution' field, so there is no rationale to imitate; write the "
            "dataset with care.data.synth (generator version 2 or later) or add a solution"
        )
    if not isinstance(solution, str) or not solution.strip():
        raise ValueError(f"{where}: solution must be a non-empty string, got {solution!r}")
    found_tags = [tag for tag in RESPONSE_TAGS if tag in solution]
    if found_tags:
        raise ValueError(
            f"{where}: solution must hold only the rationale text, but it contains {found_tags}"
        )
    return f"<think>\n{solution.strip()}\n</think>\n<answer>{answer}</answer>"


def _row_answer(row: Mapping[str, Any], where: str) -> str:
    answer = row.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, str | int):
        raise ValueError(f"{where}: answer must be a string or an integer, got {answer!r}")
    text = str(answer).strip()
    if not text:
        raise ValueError(f"{where}: answer is empty")
    choices = row.get("choices")
    if choices:
        try:
            return normalise_choice_answer(text, [str(choice) for choice in choices])
        except ValueError as error:
            raise ValueError(f"{where}: answer: {error}") from error
    return text
