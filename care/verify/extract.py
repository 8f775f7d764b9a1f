"""Find the final answer in a response, and check the think/answer format.

Every function here runs in time linear in the response (plain ``str.find``/``rfind`` and
bounded scans), so a 1 MB response or 10,000 nested braces cost milliseconds.

Extraction order (the first that yields something wins):
1. the LAST ``<answer>`` opening: its content up to the next ``</answer>``, or to the end when
   it is never closed (end tokens stripped); a ``\\boxed{…}`` inside it is unwrapped;
2. the last ``\\boxed{…}`` of the response whose braces balance;
3. the last "answer is …" / "Answer: …" cue: the rest of its line (cut at the first ". "),
   or the next non-empty line when the cue ends its line.
An answer longer than `MAX_ANSWER_CHARS` counts as unparseable (None), before any parser runs.
"""

from __future__ import annotations

import re

from care.prompts import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, strip_end_tokens

MAX_ANSWER_CHARS = 512
"""Longest answer any parser sees; longer ones are unparseable (wrong)."""
MAX_BRACE_DEPTH = 32
"""Deepest brace nesting accepted inside ``\\boxed{…}``."""
MAX_BOXED_CANDIDATES = 16
"""How many ``\\boxed{`` openings, from the last backwards, are tried before giving up."""

_BOXED_OPEN = "\\boxed{"
# "answer" as a word, optional markdown emphasis, then "is" or ":". Bounded repeats only, so
# matching stays linear.
_ANSWER_CUE = re.compile(r"(?<![A-Za-z])answer[*_]{0,3}[ \t]{0,5}(?:is\b[ \t]{0,5}:?|:)", re.I)
_DECORATION = "*_` \t"


def extract_answer(response: str) -> str | None:
    """The final answer of `response`, stripped, or None when none is found or it is too long.

    Example: ``extract_answer("<think>…</think><answer> \\\\boxed{7} </answer>")`` → ``"7"``;
    ``extract_answer("so the total is 9.\\nAnswer: 7")`` → ``"7"``; ``extract_answer("hmm")`` →
    None.
    """
    span = last_answer_span(response)
    if span is not None:
        boxed = last_boxed_content(span)
        candidate: str | None = boxed if boxed is not None else span
    else:
        candidate = last_boxed_content(response)
        if candidate is None:
            candidate = final_answer_line(response)
    if candidate is None:
        return None
    candidate = candidate.strip()
    if not candidate or len(candidate) > MAX_ANSWER_CHARS:
        return None
    return candidate


def last_answer_span(response: str) -> str | None:
    """Content of the last ``<answer>`` (to its ``</answer>``, else to the end), or None.

    Example: ``last_answer_span("<answer>A</answer> <answer>B</answer>")`` → ``"B"``;
    ``last_answer_span("<answer>A</answer><answer> C<|im_end|>")`` → ``" C"``.
    """
    opening = response.rfind(ANSWER_OPEN)
    if opening == -1:
        return None
    start = opening + len(ANSWER_OPEN)
    closing = response.find(ANSWER_CLOSE, start)
    if closing != -1:
        return response[start:closing]
    return strip_end_tokens(response[start:])


def last_boxed_content(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` whose braces balance within `MAX_ANSWER_CHARS`.

    Escaped braces (``\\{``) do not count. An opening that never closes, nests deeper than
    `MAX_BRACE_DEPTH` or runs longer than `MAX_ANSWER_CHARS` is skipped for the one before it,
    at most `MAX_BOXED_CANDIDATES` times.

    Example: ``last_boxed_content("\\\\boxed{1} then \\\\boxed{\\\\frac{1}{2}}")`` →
    ``"\\\\frac{1}{2}"``.
    """
    search_end = len(text)
    for _ in range(MAX_BOXED_CANDIDATES):
        opening = text.rfind(_BOXED_OPEN, 0, search_end)
        if opening == -1:
            return None
        content = _balanced_group(text, opening + len(_BOXED_OPEN))
        if content is not None:
            return content
        search_end = opening
    return None


def final_answer_line(response: str) -> str | None:
    """What follows the last "answer is" / "Answer:" cue, or None.

    The rest of the cue's line, cut at the first ". " (a sentence end) and stripped of
    markdown emphasis and a trailing period; when that is empty, the next non-empty line
    (within `MAX_ANSWER_CHARS` characters).

    Example: ``final_answer_line("I think the answer is 5. Check: ok\\n**Answer:** 6.")`` →
    ``"6"``; ``final_answer_line("Final answer:\\n\\n  12 cm")`` → ``"12 cm"``.
    """
    last_cue = None
    for match in _ANSWER_CUE.finditer(response):
        last_cue = match
    if last_cue is None:
        return None
    line_end = response.find("\n", last_cue.end())
    line = response[last_cue.end() : line_end if line_end != -1 else len(response)]
    content = _clean_answer_line(line)
    if content or line_end == -1:
        return content or None
    window = response[line_end + 1 : line_end + 1 + MAX_ANSWER_CHARS + 1]
    for next_line in window.split("\n"):
        content = _clean_answer_line(next_line)
        if content:
            return content
    return None


def format_ok(response: str) -> bool:
    """True when `response` is exactly ``<think>…</think><answer>…</answer>``.

    One of each tag, in that order; only whitespace before ``<think>`` and between
    ``</think>`` and ``<answer>``; the answer content is not blank; after ``</answer>`` only
    whitespace and end tokens (e.g. ``<|im_end|>``).

    Example: ``format_ok("<think>x</think>\\n<answer>5</answer><|im_end|>")`` → True;
    ``format_ok("<think>x</think>5")`` → False.
    """
    for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE):
        if response.count(tag) != 1:
            return False
    think_open = response.find(THINK_OPEN)
    think_close = response.find(THINK_CLOSE)
    answer_open = response.find(ANSWER_OPEN)
    answer_close = response.find(ANSWER_CLOSE)
    if not think_open < think_close < answer_open < answer_close:
        return False
    if (
        response[:think_open].strip()
        or response[think_close + len(THINK_CLOSE) : answer_open].strip()
    ):
        return False
    if not response[answer_open + len(ANSWER_OPEN) : answer_close].strip():
        return False
    return not strip_end_tokens(response[answer_close + len(ANSWER_CLOSE) :]).strip()


def _balanced_group(text: str, start: int) -> str | None:
    """Text from `start` up to the brace that closes an already-open group, or None."""
    depth = 1
    limit = min(len(text), start + MAX_ANSWER_CHARS + 1)
    index = start
    while index < limit:
        char = text[index]
        if char == "\\":
            index += 2  # an escaped character, e.g. \{ or \}, is not a group brace
            continue
        if char == "{":
            depth += 1
            if depth > MAX_BRACE_DEPTH:
                return None
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:index]
        index += 1
    return None


def _clean_answer_line(line: str) -> str:
    """An answer cue's line: cut at a sentence end, markdown and trailing period removed."""
    sentence_end = line.find(". ")
    if sentence_end != -1:
        line = line[:sentence_end]
    line = strip_end_tokens(line).strip(_DECORATION).lstrip(":").strip(_DECORATION)
    return line.rstrip(".").strip(_DECORATION)
