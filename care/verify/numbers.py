"""Plain numbers ("1,000", "12 cm", "50%", "-0.5", "1e-3") and their tolerant comparison.

Plain numbers are compared here, without any symbolic parser; everything else (fractions,
roots, expressions) goes to math-verify.

Choices, since the task leaves them open:
- Relative tolerance `RELATIVE_TOLERANCE` = 1e-4 (absolute 1e-12 near zero): "1.45" equals
  "1.450" and "1.4500001" but not "1.5" or "1.46". MathVista's official scorer instead rounds
  the prediction to the row's `precision`; with a tolerance a prediction needs about 4
  significant digits right, and more digits than the gold are never penalised.
- A comma followed by exactly three digits groups thousands ("1,000" = 1000, "12,345.5");
  any other comma makes the text not a plain number ("1,5" goes to math-verify as a list).
- A unit after whitespace is dropped ("12 cm", "3 apples", "4.5 square units"); so are degree
  signs ("45°", "45^\\circ"), a leading currency sign ("$3.50") and ``\\text{…}`` wrappers.
- A percent sign may be read either way: "50%" matches 0.5 (per cent) and 50 (the sign
  dropped, as when the question already asks for a percentage).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from care.verify.text import TEXT_WRAPPER

RELATIVE_TOLERANCE = 1e-4
ABSOLUTE_TOLERANCE = 1e-12
MAX_NUMBER_DIGITS = 64

_DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°")
_LATEX_SPACE = re.compile(r"\\[,;:! ]|~")
_PLAIN_NUMBER = re.compile(
    r"(?P<sign>[+-]?)[ \t]*(?P<currency>\$?)[ \t]*"
    r"(?P<whole>\d{1,3}(?:,\d{3})+|\d+)?(?P<fraction>\.\d+)?(?P<exponent>[eE][+-]?\d{1,3})?"
    r"[ \t]*(?P<percent>%?)"
    # a unit: words after whitespace, optionally squared/cubed
    r"(?:[ \t]+[A-Za-z][A-Za-z./ \t]{0,40}(?:\^\{?[23]\}?|[²³])?)?"
)


@dataclass(frozen=True)
class PlainNumber:
    """A number as written: its value and whether it carried a percent sign."""

    value: float
    percent: bool


def parse_plain_number(text: str) -> PlainNumber | None:
    """The number `text` spells, or None when it is anything more than a plain number.

    Example: ``parse_plain_number("1,000 cm")`` → ``PlainNumber(1000.0, False)``;
    ``parse_plain_number("$50\\\\%$")`` → ``PlainNumber(50.0, True)``;
    ``parse_plain_number("\\\\frac{1}{2}")`` → None.
    """
    cleaned = _clean_number_text(text)
    match = _PLAIN_NUMBER.fullmatch(cleaned)
    if match is None or (match["whole"] is None and match["fraction"] is None):
        return None
    digits = (match["whole"] or "").replace(",", "") + (match["fraction"] or "")
    if len(digits) > MAX_NUMBER_DIGITS:
        return None
    literal = f"{match['sign']}{digits}{match['exponent'] or ''}"
    value = float(literal)
    if not math.isfinite(value):
        return None
    return PlainNumber(value=value, percent=bool(match["percent"]))


def numbers_match(predicted: PlainNumber, gold: PlainNumber) -> bool:
    """Whether two plain numbers agree within the tolerance, reading percent signs both ways.

    Example: ``numbers_match(PlainNumber(50, True), PlainNumber(0.5, False))`` → True;
    ``numbers_match(PlainNumber(1.5, False), PlainNumber(1.45, False))`` → False.
    """
    return any(
        values_close(predicted_value, gold_value)
        for predicted_value in _readings(predicted)
        for gold_value in _readings(gold)
    )


def values_close(first: float, second: float) -> bool:
    """`math.isclose` with the verifier's tolerances: ``values_close(1.45, 1.450001)`` → True."""
    return math.isclose(first, second, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE)


def _readings(number: PlainNumber) -> tuple[float, ...]:
    return (number.value / 100.0, number.value) if number.percent else (number.value,)


def _clean_number_text(text: str) -> str:
    """Drop math delimiters, text wrappers, LaTeX spacing and degree signs; unify minus signs."""
    cleaned = text.strip()
    for opening, closing in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if (
            len(cleaned) > len(opening) + len(closing)
            and cleaned.startswith(opening)
            and cleaned.endswith(closing)
        ):
            cleaned = cleaned[len(opening) : -len(closing)].strip()
            break
    cleaned = TEXT_WRAPPER.sub(r" \1", cleaned)
    cleaned = _DEGREE.sub("", cleaned)
    cleaned = _LATEX_SPACE.sub(" ", cleaned)
    cleaned = cleaned.replace("\\%", "%").replace("\\$", "$").replace("\u2212", "-")
    return cleaned.strip().rstrip(".").strip()
