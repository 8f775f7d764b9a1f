"""The verifier: one scoring function for training rewards and evaluation alike.

    >>> from care.verify import score, reward
    >>> verdict = score("<think>3 + 4</think>\\n<answer>7</answer>", "7")
    >>> verdict
    Verdict(acc=True, fmt=True, extracted='7', status='ok')
    >>> reward(verdict, format_weight=0.1)
    1.0

`score` finds the final answer (`extract_answer`: last ``<answer>`` span, else last
``\\boxed{}``, else a final "Answer: …" line), checks the format (`format_ok`) and compares by
answer type: option letters that are never guessed, numbers with a 1e-4 relative tolerance,
math-verify for expressions (under a time limit, `time_limit=` seconds), normalised text.
`Verdict.status` says why a verdict is what it is: ok, no_answer, unparsable, timeout (the
budget ran out, so the answer was not judged) or truncated (the caller says the response hit
the token limit); `status_fractions` turns a batch of verdicts into the ``verify/*_frac`` shares. Model output is only read,
never executed, and every call returns within a second whatever the input.
"""

from care.verify.choice import gold_letters, predicted_letters
from care.verify.extract import MAX_ANSWER_CHARS, extract_answer, format_ok
from care.verify.mathexpr import TIME_LIMIT_SECONDS, math_compare, math_equal, screen_expression
from care.verify.numbers import RELATIVE_TOLERANCE, parse_plain_number
from care.verify.score import (
    ANSWER_TYPE_ALIASES,
    ANSWER_TYPES,
    VERDICT_STATUSES,
    Verdict,
    resolve_answer_type,
    reward,
    score,
    status_fractions,
)

__all__ = [
    "ANSWER_TYPES",
    "ANSWER_TYPE_ALIASES",
    "MAX_ANSWER_CHARS",
    "RELATIVE_TOLERANCE",
    "TIME_LIMIT_SECONDS",
    "VERDICT_STATUSES",
    "Verdict",
    "extract_answer",
    "format_ok",
    "gold_letters",
    "math_compare",
    "math_equal",
    "parse_plain_number",
    "predicted_letters",
    "resolve_answer_type",
    "reward",
    "score",
    "screen_expression",
    "status_fractions",
]
