"""Mathematical equivalence through math-verify, under a hard time limit.

Both sides are parsed by math-verify's LaTeX/expression parser (a side without math
delimiters is wrapped in ``$…$``, which math-verify needs: a bare LaTeX string parses to
nothing) and compared with its ``verify``; two numeric values that ``verify`` calls different
are then compared with the verifier's relative tolerance (1e-4), so "0.3333" equals
``\\frac{1}{3}`` as "1.4500001" equals "1.45". Model output is only ever read by that parser;
nothing is evaluated as code.

Time is bounded twice:
- `screen_expression` refuses, before any parsing, what could run long inside one C call
  (which nothing interrupts) or is known to be slow to parse: exponent towers ("9^{9^{9}}"),
  huge powers ("(10^{999})^{999}"), big factorials and binomials, sums/products/integrals/
  limits, brackets nested deeper than `MAX_DEPTH` (math-verify's parser slows down
  exponentially with nested bare braces: about 1 s at depth 10, 24 s at depth 16). A refused
  prediction is wrong unless it is spelled exactly as the gold.
- `time_limit` stops parsing and comparison after `TIME_LIMIT_SECONDS` on any thread
  (math-verify's own timeout is whole seconds of ``signal.alarm``, main thread only, so it is
  switched off here).
"""

from __future__ import annotations

import logging
import math
import re
from functools import lru_cache
from typing import Any

from math_verify import parse, verify

from care.verify.deadline import TimeLimitExceeded, time_limit
from care.verify.extract import MAX_ANSWER_CHARS
from care.verify.numbers import values_close
from care.verify.text import texts_match

TIME_LIMIT_SECONDS = 0.3
"""Budget of one math-verify parse + comparison. A warm comparison takes milliseconds; the
budget leaves 0.7 s of the 1 s promise for the interrupt to land on a loaded machine (a
pathological expansion was seen to take 1.05 s in all with a 0.5 s budget under load)."""
MAX_DEPTH = 8
"""Deepest nesting of (), {} and [] that is parsed."""
MAX_POWERS = 8
MAX_EXPONENT_PRODUCT = 10_000
"""Largest product of the numeric exponents of one answer (bounds the size of any power)."""
MAX_POWER_DIGITS = 200_000
"""Bound on (longest number literal) x (exponent product): the digits a power may reach."""
MAX_FACTORIAL_ARGUMENT = 1000
MAX_BINOMIAL_DIGITS = 4

_BIG_OPERATORS = re.compile(
    r"\\(?:sum|prod|coprod|int|iint|iiint|oint|lim|limsup|liminf)(?![A-Za-z])"
)
_BINOMIAL = re.compile(r"\\(?:binom|dbinom|tbinom|choose)(?![A-Za-z])")
_DIGIT_RUN = re.compile(r"\d+")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_OPENERS = "({["
_CLOSERS = ")}]"

# math-verify warns once per process that its own (signal.alarm) timeout is off; the limit is
# enforced here instead.
for _logger_name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_logger_name).addFilter(
        lambda record: "Timeout is disabled" not in record.getMessage()
    )


def screen_expression(text: str) -> str | None:
    """Why `text` is refused before parsing (a short reason), or None when it may be parsed.

    Example: ``screen_expression("9^{9^{9}}")`` → ``"exponent tower"``;
    ``screen_expression("\\\\frac{1}{2}")`` → None.
    """
    if len(text) > MAX_ANSWER_CHARS:
        return f"longer than {MAX_ANSWER_CHARS} characters"
    if _BIG_OPERATORS.search(text):
        return "sum, product, integral or limit"
    depth = deepest = 0
    for char in text:
        if char in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        elif char in _CLOSERS:
            depth -= 1
    if deepest > MAX_DEPTH:
        return "nested too deeply"
    if text.count("^") > MAX_POWERS:
        return "too many powers"
    exponent_product = 1
    for exponent in _exponents(text):
        if "^" in exponent:
            return "exponent tower"
        literals = [int(run) if len(run) <= 6 else 10**6 for run in _DIGIT_RUN.findall(exponent)]
        exponent_product *= max([1, *literals])
        if exponent_product > MAX_EXPONENT_PRODUCT:
            return "power too large"
    longest_literal = max((len(run) for run in _DIGIT_RUN.findall(text)), default=1)
    if longest_literal * exponent_product > MAX_POWER_DIGITS:
        return "power too large"
    factorial_reason = _screen_factorials(text)
    if factorial_reason is not None:
        return factorial_reason
    if _BINOMIAL.search(text) and any(
        len(run) > MAX_BINOMIAL_DIGITS for run in _DIGIT_RUN.findall(text)
    ):
        return "binomial too large"
    return None


def math_equal(predicted: str, gold: str, time_limit_seconds: float | None = None) -> bool:
    """Whether `predicted` is mathematically equal to `gold` (False when too slow).

    Example: ``math_equal("\\\\frac{1}{2}", "0.5")`` → True; ``math_equal("x = 2", "2")`` → True;
    ``math_equal("\\\\sqrt{2}", "2")`` → False; ``math_equal("9^{9^{9}}", "1")`` → False (refused,
    so only an identical spelling of the gold would count).
    """
    return math_compare(predicted, gold, time_limit_seconds)[0]


def math_compare(
    predicted: str, gold: str, time_limit_seconds: float | None = None
) -> tuple[bool, str]:
    """`math_equal` with the reason: ``(equal, status)``, status one of ``"ok"`` (compared),
    ``"unparsable"`` (refused by `screen_expression`, or math-verify read nothing in the
    prediction) or ``"timeout"`` (the budget ran out: the answer may well be right).

    Args:
        time_limit_seconds: the budget of the parse + comparison; None: `TIME_LIMIT_SECONDS`.

    Example: ``math_compare("\\\\frac{1}{2}", "0.5")`` → ``(True, "ok")``;
    ``math_compare("9^{9^{9}}", "1")`` → ``(False, "unparsable")``.
    """
    budget = TIME_LIMIT_SECONDS if time_limit_seconds is None else time_limit_seconds
    if screen_expression(predicted) is not None:
        # Refused for cost, not wrong by nature: an identical spelling still counts.
        equal = texts_match(predicted, gold)
        return equal, "ok" if equal else "unparsable"
    try:
        with time_limit(budget):
            gold_parsed = _parse_gold(gold)
            if not gold_parsed:
                return texts_match(predicted, gold), "ok"
            predicted_parsed = _parse(predicted)
            if not predicted_parsed:
                return False, "unparsable"
            if verify(gold_parsed, predicted_parsed, timeout_seconds=None):
                return True, "ok"
            return _numerically_close(gold_parsed, predicted_parsed), "ok"
    except TimeLimitExceeded:
        return False, "timeout"


def _warm_up() -> None:
    """Run math-verify once at import, outside any time limit: its first call imports and builds
    its parsers lazily, which would otherwise be charged to (and could exceed) the first
    answer's time limit and make that verdict depend on timing."""
    verify(_parse("\\frac{1}{2}"), _parse("0.5"), timeout_seconds=None)


def as_math_input(text: str) -> str:
    """`text` as math-verify should read it: wrapped in ``$…$`` unless it has delimiters.

    Example: ``as_math_input("\\\\frac{1}{2}")`` → ``"$\\\\frac{1}{2}$"``;
    ``as_math_input("$x$")`` → ``"$x$"``.
    """
    stripped = text.strip()
    if "$" in stripped or "\\(" in stripped or "\\[" in stripped:
        return stripped
    return f"${stripped}$"


def _parse(text: str) -> list[Any]:
    return parse(as_math_input(text), parsing_timeout=None)


@lru_cache(maxsize=4096)
def _parse_gold_cached(gold: str) -> tuple[Any, ...]:
    return tuple(_parse(gold))


def _parse_gold(gold: str) -> list[Any]:
    # Gold answers repeat across a group's rollouts and across epochs: parse each once. A
    # parse cut short by the time limit raises before the cache stores anything.
    return list(_parse_gold_cached(gold))


def _numerically_close(gold_parsed: list[Any], predicted_parsed: list[Any]) -> bool:
    """Both sides are plain real numbers (after evaluation) within the relative tolerance."""
    gold_value = _real_value(gold_parsed)
    predicted_value = _real_value(predicted_parsed)
    if gold_value is None or predicted_value is None:
        return False
    return values_close(predicted_value, gold_value)


def _real_value(parsed: list[Any]) -> float | None:
    """The float of the first parsed item when it is a closed-form real number, else None."""
    for item in parsed:
        if isinstance(item, str):
            continue
        if not getattr(item, "is_number", False) or getattr(item, "free_symbols", True):
            return None
        try:
            value = float(item.evalf(20))
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            return None
        return value if math.isfinite(value) else None
    return None


def _exponents(text: str) -> list[str]:
    """The text of every exponent: ``^{…}``/``^(…)`` groups, ``^\\cmd{…}`` or one token.

    Example: ``_exponents("2^{10} + x^3 + e^\\\\frac{1}{2}")`` → ``["{10}", "3", "\\\\frac{1}{2}"]``.
    """
    exponents = []
    position = text.find("^")
    while position != -1:
        start = position + 1
        while start < len(text) and text[start] in " \t":
            start += 1
        end = _exponent_end(text, start)
        exponents.append(text[start:end])
        position = text.find("^", start)
    return exponents


def _exponent_end(text: str, start: int) -> int:
    """End of the exponent that begins at `start` (exclusive)."""
    if start >= len(text):
        return start
    char = text[start]
    if char in _OPENERS:
        return _group_end(text, start)
    if char == "\\":
        command = _COMMAND.match(text, start)
        end = command.end() if command else start + 2
        # a command's arguments belong to the exponent: \frac{1}{2}, \sqrt{x}
        while end < len(text) and text[end] == "{":
            end = _group_end(text, end)
        return end
    if char.isdigit():
        return _DIGIT_RUN.match(text, start).end()
    return start + 1


def _group_end(text: str, start: int) -> int:
    """Index just after the bracket that closes the one at `start` (or the end of `text`)."""
    depth = 0
    for index in range(start, len(text)):
        if text[index] in _OPENERS:
            depth += 1
        elif text[index] in _CLOSERS:
            depth -= 1
            if depth == 0:
                return index + 1
    return len(text)


def _screen_factorials(text: str) -> str | None:
    """Refuse factorials of big numbers or of anything but a number or a single letter."""
    text = text.replace("\\!", "")  # LaTeX's negative thin space, not a factorial
    if text.count("!") > 3:
        return "too many factorials"
    position = text.find("!")
    while position != -1:
        before = text[:position].rstrip()
        run = re.search(r"\d+$", before)
        if run is not None:
            if len(run.group()) > 4 or int(run.group()) > MAX_FACTORIAL_ARGUMENT:
                return "factorial too large"
        elif not (before and before[-1].isalpha()):
            return "factorial of an expression"
        position = text.find("!", position + 1)
    return None


_warm_up()
