"""The verifier: extraction, format, answer types, rewards, and a time bound on every input."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from care.verify import (
    MAX_ANSWER_CHARS,
    Verdict,
    extract_answer,
    format_ok,
    gold_letters,
    math_equal,
    mathexpr,
    parse_plain_number,
    predicted_letters,
    resolve_answer_type,
    reward,
    score,
    screen_expression,
    status_fractions,
)
from care.verify.deadline import TimeLimitExceeded, time_limit

THINK = "<think>\nreasoning\n</think>\n"
MC4 = ["3 cm", "5 cm", "Every day", "blue square"]

# (case id, response, gold, choices, answer_type, expected acc, expected fmt, expected extracted)
CASES = [
    # --- multiple choice: the letter parser (MMMU / MMMU-Pro spellings) ---
    ("mc bare letter", THINK + "<answer>B</answer>", "B", MC4, None, True, True, "B"),
    ("mc parenthesised", THINK + "<answer>(B)</answer>", "B", MC4, None, True, True, "(B)"),
    ("mc letter period", THINK + "<answer>B.</answer>", "B", MC4, None, True, True, "B."),
    ("mc letter paren", THINK + "<answer>B)</answer>", "B", MC4, None, True, True, "B)"),
    ("mc bold", THINK + "<answer>**B**</answer>", "B", MC4, None, True, True, "**B**"),
    (
        "mc answer colon",
        THINK + "<answer>Answer: B</answer>",
        "B",
        MC4,
        None,
        True,
        True,
        "Answer: B",
    ),
    (
        "mc the answer is (B)",
        THINK + "<answer>The answer is (B)</answer>",
        "B",
        MC4,
        None,
        True,
        True,
        "The answer is (B)",
    ),
    (
        "mc letter then text",
        THINK + "<answer>B. 5 cm</answer>",
        "B",
        MC4,
        None,
        True,
        True,
        "B. 5 cm",
    ),
    (
        "mc option text only",
        THINK + "<answer>Blue Square.</answer>",
        "D",
        MC4,
        None,
        True,
        True,
        "Blue Square.",
    ),
    ("mc lower-case letter", THINK + "<answer>b</answer>", "B", MC4, None, True, True, "b"),
    (
        "mmmu-pro vision Answer: line",
        "The chart shows growth.\nAnswer: B",
        "B",
        None,
        "multiple_choice",
        True,
        False,
        "B",
    ),
    (
        "mmmu-pro vision (B) in answer",
        THINK + "<answer>(B)</answer>",
        "B",
        None,
        "multiple_choice",
        True,
        True,
        "(B)",
    ),
    (
        "mmmu-pro vision wrong letter",
        THINK + "<answer>(C)</answer>",
        "B",
        None,
        "multiple_choice",
        False,
        True,
        "(C)",
    ),
    (
        "mc gold given as option text",
        THINK + "<answer>C</answer>",
        "Every day",
        MC4,
        None,
        True,
        True,
        "C",
    ),
    (
        "mc 'E' is not 'Every day'",
        THINK + "<answer>E</answer>",
        "Every day",
        MC4,
        None,
        False,
        True,
        "E",
    ),
    (
        "mc hedge A or B is wrong",
        THINK + "<answer>A or B</answer>",
        "B",
        MC4,
        None,
        False,
        True,
        "A or B",
    ),
    (
        "mc two cued letters is wrong",
        THINK + "<answer>option A, or maybe option B</answer>",
        "B",
        MC4,
        None,
        False,
        True,
        "option A, or maybe option B",
    ),
    (
        "mc unparseable is wrong",
        THINK + "<answer>I am not sure</answer>",
        "B",
        MC4,
        None,
        False,
        True,
        "I am not sure",
    ),
    (
        "mc letter contradicts its text",
        THINK + "<answer>A. 5 cm</answer>",
        "B",
        MC4,
        None,
        False,
        True,
        "A. 5 cm",
    ),
    (
        "mc cue inside a sentence",
        THINK + "<answer>So the correct answer is C here</answer>",
        "C",
        MC4,
        None,
        True,
        True,
        "So the correct answer is C here",
    ),
    (
        "mc multi-select partial is wrong",
        THINK + "<answer>A</answer>",
        "A, C",
        MC4,
        None,
        False,
        True,
        "A",
    ),
    (
        "mc multi-select any order",
        THINK + "<answer>C, A</answer>",
        "A, C",
        MC4,
        None,
        True,
        True,
        "C, A",
    ),
    (
        "mc multi-select with and",
        THINK + "<answer>A and C</answer>",
        "A, C",
        MC4,
        None,
        True,
        True,
        "A and C",
    ),
    (
        "mc numeric option by value",
        THINK + "<answer>3.0</answer>",
        "B",
        ["2", "3", "4"],
        None,
        True,
        True,
        "3.0",
    ),
    ("mc letter out of range", THINK + "<answer>F</answer>", "B", MC4, None, False, True, "F"),
    (
        "mc gold letter without choices inferred",
        THINK + "<answer>Answer: (D)</answer>",
        "D",
        None,
        None,
        True,
        True,
        "Answer: (D)",
    ),
    # --- numbers: MathVista free form with precision ---
    (
        "number trailing zero",
        THINK + "<answer>1.450</answer>",
        "1.45",
        None,
        "number",
        True,
        True,
        "1.450",
    ),
    (
        "number rounded too far",
        THINK + "<answer>1.5</answer>",
        "1.45",
        None,
        "number",
        False,
        True,
        "1.5",
    ),
    (
        "number within 1e-4",
        THINK + "<answer>1.45001</answer>",
        "1.45",
        None,
        "number",
        True,
        True,
        "1.45001",
    ),
    (
        "number outside 1e-4",
        THINK + "<answer>1.4503</answer>",
        "1.45",
        None,
        "number",
        False,
        True,
        "1.4503",
    ),
    (
        "integer thousands",
        THINK + "<answer>1,000</answer>",
        "1000",
        None,
        "integer",
        True,
        True,
        "1,000",
    ),
    (
        "integer with unit",
        THINK + "<answer>12 cm</answer>",
        "12",
        None,
        "integer",
        True,
        True,
        "12 cm",
    ),
    (
        "percent vs fraction",
        THINK + "<answer>50%</answer>",
        "0.5",
        None,
        "number",
        True,
        True,
        "50%",
    ),
    (
        "percent vs same number",
        THINK + "<answer>50\\%</answer>",
        "50",
        None,
        "number",
        True,
        True,
        "50\\%",
    ),
    (
        "degrees",
        THINK + "<answer>45^\\circ</answer>",
        "45",
        None,
        "integer",
        True,
        True,
        "45^\\circ",
    ),
    ("negative number", THINK + "<answer>-3</answer>", "3", None, "integer", False, True, "-3"),
    (
        "number with words",
        THINK + "<answer>The answer is 7.</answer>",
        "7",
        None,
        "integer",
        True,
        True,
        "The answer is 7.",
    ),
    # --- math through math-verify ---
    (
        "frac vs decimal",
        THINK + "<answer>\\frac{1}{2}</answer>",
        "0.5",
        None,
        "number",
        True,
        True,
        "\\frac{1}{2}",
    ),
    (
        "decimal vs frac gold",
        THINK + "<answer>0.5</answer>",
        "\\frac{1}{2}",
        None,
        "math",
        True,
        True,
        "0.5",
    ),
    (
        "decimal vs thirds, tolerance",
        THINK + "<answer>0.3333</answer>",
        "\\frac{1}{3}",
        None,
        "math",
        True,
        True,
        "0.3333",
    ),
    (
        "sqrt is not 2",
        THINK + "<answer>\\sqrt{2}</answer>",
        "2",
        None,
        "math",
        False,
        True,
        "\\sqrt{2}",
    ),
    ("equation value", THINK + "<answer>x = 2</answer>", "2", None, "math", True, True, "x = 2"),
    (
        "dollar-wrapped latex",
        THINK + "<answer>$\\frac{3}{4}$</answer>",
        "0.75",
        None,
        None,
        True,
        True,
        "$\\frac{3}{4}$",
    ),
    (
        "boxed inside answer",
        THINK + "<answer>The result is \\boxed{\\frac{1}{2}}.</answer>",
        "\\frac{1}{2}",
        None,
        "math",
        True,
        True,
        "\\frac{1}{2}",
    ),
    (
        "boxed without tags",
        "We get 7 - 2 = 5, so \\boxed{5}.",
        "5",
        None,
        "integer",
        True,
        False,
        "5",
    ),
    (
        "last boxed wins",
        "First \\boxed{4}, corrected: \\boxed{5}",
        "5",
        None,
        None,
        True,
        False,
        "5",
    ),
    (
        "list answer",
        THINK + "<answer>[1,2,3]</answer>",
        "[1, 2, 3]",
        None,
        "list",
        True,
        True,
        "[1,2,3]",
    ),
    # --- text ---
    (
        "text normalised",
        THINK + "<answer>The Triangle.</answer>",
        "triangle",
        None,
        "text",
        True,
        True,
        "The Triangle.",
    ),
    (
        "text 'E' is not 'Every'",
        THINK + "<answer>E</answer>",
        "Every",
        None,
        None,
        False,
        True,
        "E",
    ),
    ("text yes", THINK + "<answer> Yes </answer>", "yes", None, None, True, True, "Yes"),
    # --- extraction order and fallbacks ---
    ("no tags, final Answer line", "3 + 4 = 7\nAnswer: 7", "7", None, "integer", True, False, "7"),
    (
        "no tags, answer is sentence",
        "Adding gives 7. So the answer is 7. Done",
        "7",
        None,
        None,
        True,
        False,
        "7",
    ),
    (
        "multiple answer spans, last wins",
        THINK + "<answer>6</answer>\n<answer>7</answer>",
        "7",
        None,
        None,
        True,
        False,
        "7",
    ),
    (
        "multiple answer spans, last wrong",
        THINK + "<answer>7</answer>\n<answer>6</answer>",
        "7",
        None,
        None,
        False,
        False,
        "6",
    ),
    (
        "unclosed final answer to end",
        THINK + "<answer>7<|im_end|>",
        "7",
        None,
        None,
        True,
        False,
        "7",
    ),
    (
        "answer tag beats boxed outside",
        "\\boxed{6}" + THINK + "<answer>7</answer>",
        "7",
        None,
        None,
        True,
        False,
        "7",
    ),
    ("nothing to extract", "I think about it a lot.", "7", None, None, False, False, None),
    ("empty answer span", THINK + "<answer>  </answer>", "7", None, None, False, False, None),
    (
        "too long an answer",
        THINK + "<answer>" + "1" * 600 + "</answer>",
        "1",
        None,
        None,
        False,
        True,
        None,
    ),
    # --- format ---
    (
        "format with end token",
        THINK + "<answer>7</answer><|im_end|>",
        "7",
        None,
        None,
        True,
        True,
        "7",
    ),
    (
        "format: text after answer",
        THINK + "<answer>7</answer> Hope this helps!",
        "7",
        None,
        None,
        True,
        False,
        "7",
    ),
    ("format: no think", "<answer>7</answer>", "7", None, None, True, False, "7"),
    (
        "format: text before think",
        "Sure. " + THINK + "<answer>7</answer>",
        "7",
        None,
        None,
        True,
        False,
        "7",
    ),
    (
        "format: text between",
        "<think>r</think> so: <answer>7</answer>",
        "7",
        None,
        None,
        True,
        False,
        "7",
    ),
    (
        "format: two thinks",
        "<think>a</think><think>b</think><answer>7</answer>",
        "7",
        None,
        None,
        True,
        False,
        "7",
    ),
    (
        "format: answer before think",
        "<answer>7</answer><think>r</think>",
        "7",
        None,
        None,
        True,
        False,
        "7",
    ),
]


@pytest.fixture
def unhurried_verifier(monkeypatch):
    """math-verify with a 30 s budget instead of 0.3 s, for tests of what a verdict IS: a
    list or an equation takes math-verify 0.05-0.25 s on an idle core the first time, so on a
    loaded machine the production budget turns right answers wrong. The budget itself is
    tested below, with the time limit under the test's control."""
    monkeypatch.setattr(mathexpr, "TIME_LIMIT_SECONDS", 30.0)


@pytest.mark.parametrize(
    ("response", "gold", "choices", "answer_type", "acc", "fmt", "extracted"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_verifier_case_table(
    response, gold, choices, answer_type, acc, fmt, extracted, unhurried_verifier
):
    verdict = score(response, gold, choices, answer_type)
    assert (verdict.acc, verdict.fmt, verdict.extracted) == (acc, fmt, extracted)
    # An unjudged answer never hides in the table: no case here runs out of time.
    assert verdict.status != "timeout"
    assert (verdict.status == "no_answer") == (extracted is None)


def test_case_table_is_large_and_ids_unique():
    assert len(CASES) >= 40
    assert len({case[0] for case in CASES}) == len(CASES)


def test_extract_answer_unwraps_nested_boxed_and_escaped_braces():
    assert extract_answer("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert extract_answer("\\boxed{\\frac{a}{b}} and \\boxed{x") == "\\frac{a}{b}"
    assert extract_answer("**Final Answer:**\n\n  12 cm") == "12 cm"


def test_format_ok_accepts_whitespace_around_tags():
    assert format_ok("\n <think> a </think>\n\n <answer> 7 </answer>\n<|im_end|>\n")
    assert not format_ok("<think>a</think><answer></answer>")


def test_plain_numbers_parse_as_documented():
    assert parse_plain_number("1,000 cm").value == 1000.0
    assert parse_plain_number("$3.50").value == 3.5
    assert parse_plain_number("1e-3").value == 0.001
    assert parse_plain_number("−2").value == -2.0
    assert parse_plain_number("50%").percent
    assert parse_plain_number("1,5") is None
    assert parse_plain_number("3/4") is None
    assert parse_plain_number("12x") is None


def test_choice_letters_parse_and_never_guess():
    assert gold_letters("(B)", None) == frozenset("B")
    assert gold_letters("blue square", MC4) == frozenset("D")
    assert predicted_letters("The answer is (B)", None) == frozenset("B")
    assert predicted_letters("A triangle", None) is None
    assert predicted_letters("(A) is false, (B) holds", None) is None
    assert predicted_letters("A. 3 cm, C. Every day", MC4) is None


def test_gold_that_names_no_option_is_an_error():
    with pytest.raises(ValueError, match="names no option"):
        score("<answer>A</answer>", "E", MC4)
    with pytest.raises(ValueError, match="names no option"):
        score("<answer>A</answer>", "purple", MC4)


def test_answer_type_inference_and_aliases():
    assert resolve_answer_type("A, C") == "multiple_choice"
    assert resolve_answer_type("1.45") == "number"
    assert resolve_answer_type("\\frac{1}{2}") == "math"
    assert resolve_answer_type("2x + 1") == "math"
    assert resolve_answer_type("Every") == "text"
    assert resolve_answer_type("7", answer_type="float") == "number"
    assert resolve_answer_type("B", ["x", "y"], "multi_choice") == "multiple_choice"


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="answer_type 'fraction' is unknown"):
        score("<answer>1</answer>", "1", answer_type="fraction")
    with pytest.raises(ValueError, match="contradicts choices"):
        score("<answer>1</answer>", "A", ["1", "2"], answer_type="integer")
    with pytest.raises(ValueError, match="answer must be a non-empty string"):
        score("<answer>1</answer>", "  ")
    with pytest.raises(ValueError, match="response must be a string"):
        score(None, "1")
    with pytest.raises(ValueError, match="choices must be None or a non-empty list"):
        score("<answer>1</answer>", "A", "AB")


def test_reward_mixes_accuracy_and_format():
    assert reward(Verdict(True, False, "7")) == 1.0
    assert reward(Verdict(False, True, "6")) == 0.0
    assert reward(Verdict(False, True, "6"), format_weight=0.1) == pytest.approx(0.1)
    assert reward(Verdict(True, True, "7"), format_weight=0.1) == pytest.approx(1.0)
    assert reward(Verdict(True, False, "7"), format_weight=0.25) == pytest.approx(0.75)
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="format_weight"):
            reward(Verdict(True, True, "7"), format_weight=bad)


# --- every input returns within a second ---------------------------------------------------

PATHOLOGICAL = {
    "1 MB of text": ("x" * 1_000_000, "7", None),
    "1 MB answer span": ("<answer>" + "1+" * 500_000 + "1</answer>", "7", None),
    "1 MB of answer cues": ("Answer: " * 130_000, "7", None),
    "1 MB of boxed openings": ("\\boxed{" * 140_000, "7", None),
    "10,000 nested braces in boxed": ("\\boxed{" + "{" * 10_000 + "}" * 10_001, "7", None),
    "10,000 nested braces in answer": (
        "<answer>" + "{" * 10_000 + "}" * 10_000 + "</answer>",
        "7",
        "math",
    ),
    "deep parentheses": ("<answer>" + "(" * 200 + "1" + ")" * 200 + "</answer>", "1", "math"),
    "nested bare braces at the depth cap": (
        "<answer>" + "{" * 8 + "2" + "}" * 8 + "</answer>",
        "2",
        "math",
    ),
    "exponent tower": ("<answer>9^{9^{9}}</answer>", "2", "math"),
    "power of a power": ("<answer>(10^{999})^{999}</answer>", "2", "math"),
    "huge factorial": ("<answer>100000!</answer>", "2", "math"),
    "nested factorial": ("<answer>((5!)!)!</answer>", "2", "math"),
    "huge binomial": ("<answer>\\binom{100000}{50000}</answer>", "2", "math"),
    "product to a million": ("<answer>\\prod_{k=1}^{10^{6}} k</answer>", "2", "math"),
    "polynomial expansion": ("<answer>(x+y+z+1)^{30}</answer>", "x^2", "math"),
    "wide expansion": ("<answer>(a+b+c+d+e+f+g+h)^{8}</answer>", "x^2", "math"),
    "long sum": ("<answer>" + "+".join(["x"] * 250) + "</answer>", "250x", "math"),
    "many hedged letters": ("<answer>" + "A or " * 100 + "</answer>", "A", None),
}


@pytest.fixture(scope="module")
def warm_verifier():
    # math-verify's first call builds its parser; that one-off cost is not a per-input cost.
    assert score("<answer>\\frac{1}{2}</answer>", "0.5").acc


def _timed_score(response, gold, answer_type):
    started = time.perf_counter()
    verdict = score(response, gold, None, answer_type)
    return verdict, time.perf_counter() - started


# Right answers that take math-verify long to parse (tenths of a second on a loaded machine):
# within the budget they are right, past it wrong, so their verdict is tested with the budget
# under the test's control, not the machine's load.
SLOW_TO_PARSE_RIGHT = ("nested bare braces at the depth cap", "long sum")


@pytest.mark.parametrize("name", [name for name in PATHOLOGICAL if name not in SLOW_TO_PARSE_RIGHT])
def test_pathological_input_is_wrong_within_one_second(name, warm_verifier):
    verdict, seconds = _timed_score(*PATHOLOGICAL[name])
    assert seconds < 1.0, f"{name} took {seconds:.2f} s"
    assert verdict.acc is False


@pytest.mark.parametrize("name", SLOW_TO_PARSE_RIGHT)
def test_slow_right_answer_returns_within_one_second(name, warm_verifier):
    _, seconds = _timed_score(*PATHOLOGICAL[name])
    assert seconds < 1.0, f"{name} took {seconds:.2f} s"


def _budget_spent(seconds: float):
    """Stands in for `time_limit` when the budget is already used up: it fires at once."""
    raise TimeLimitExceeded(f"time limit of {seconds} s exceeded")


@pytest.mark.parametrize("name", SLOW_TO_PARSE_RIGHT)
def test_slow_right_answer_is_right_within_its_budget_and_wrong_once_the_budget_is_spent(
    name, warm_verifier, monkeypatch
):
    response, gold, answer_type = PATHOLOGICAL[name]
    monkeypatch.setattr(mathexpr, "TIME_LIMIT_SECONDS", 30.0)  # load cannot decide the verdict
    assert score(response, gold, None, answer_type).acc is True
    monkeypatch.setattr(mathexpr, "time_limit", _budget_spent)
    assert score(response, gold, None, answer_type).acc is False


def test_pathological_inputs_return_within_one_second_on_a_worker_thread(warm_verifier):
    # Signals reach only the main thread: the limit must hold without them too.
    names = [
        "exponent tower",
        "polynomial expansion",
        "wide expansion",
        "10,000 nested braces in answer",
        "deep parentheses",
        "1 MB answer span",
    ]
    with ThreadPoolExecutor(max_workers=1) as pool:
        results = list(pool.map(lambda name: _timed_score(*PATHOLOGICAL[name]), names))
    for name, (verdict, seconds) in zip(names, results, strict=True):
        assert seconds < 1.0, f"{name} took {seconds:.2f} s on a worker thread"
        assert verdict.acc is False


def test_screen_refuses_costly_expressions_before_parsing():
    assert screen_expression("9^{9^{9}}") == "exponent tower"
    assert screen_expression("(10^{999})^{999}") == "power too large"
    assert screen_expression("100000!") == "factorial too large"
    assert screen_expression("(5!)!") == "factorial of an expression"
    assert screen_expression("\\int_0^1 x dx") == "sum, product, integral or limit"
    assert screen_expression("{" * 9 + "}" * 9) == "nested too deeply"
    assert screen_expression("x" * (MAX_ANSWER_CHARS + 1)).startswith("longer than")
    assert screen_expression("2^{10} + \\frac{\\sqrt{3}}{2} + 5!") is None
    # refused, but an identical spelling of the gold still counts
    assert math_equal("9^{9^{9}}", "9^{9^{9}}")


def test_time_limit_interrupts_python_work_on_main_and_worker_threads():
    def spin():
        while True:
            sum(range(100))

    def limited():
        started = time.perf_counter()
        with pytest.raises(TimeLimitExceeded), time_limit(0.2):
            spin()
        return time.perf_counter() - started

    assert threading.current_thread() is threading.main_thread()
    assert 0.15 < limited() < 0.6
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert 0.15 < pool.submit(limited).result() < 0.6
    # nothing is left armed: plain work after the block is not interrupted
    spun = sum(sum(range(100)) for _ in range(20_000))
    assert spun == 20_000 * 4950
    with pytest.raises(ValueError, match="seconds must be a number > 0"):
        with time_limit(0):
            pass


def test_time_limit_never_raises_inside_the_import_machinery():
    # An exception inside importlib can leave a module lock held and hang every other thread
    # that imports the module; the limit waits until the import is done, then fires.
    import importlib
    import sys

    def import_fresh():
        sys.modules.pop("colorsys", None)
        importlib.import_module("colorsys")
        while True:
            sum(range(100))

    def limited() -> bool:
        with pytest.raises(TimeLimitExceeded), time_limit(1e-4):
            import_fresh()
        return "colorsys" in sys.modules

    assert limited()
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(limited).result()


def test_verdict_status_says_why_an_answer_was_scored_as_it_was(unhurried_verifier):
    assert score("<think>x</think><answer>7</answer>", "7").status == "ok"
    assert score("<think>x</think><answer>8</answer>", "7").status == "ok"  # judged wrong
    assert score("I think it is seven", "7").status == "no_answer"
    assert score("<think>x</think><answer>maybe</answer>", "B", ["3", "5"]).status == "unparsable"
    assert score("<think>x</think><answer>9^{9^{9}}</answer>", "\\frac{1}{2}").status == (
        "unparsable"
    )
    cut = score("<think>a long derivation that never", "7", truncated=True)
    assert (cut.acc, cut.extracted, cut.status) == (False, None, "truncated")
    finished_late = score("<think>x</think><answer>7</answer>", "7", truncated=True)
    assert (finished_late.acc, finished_late.status) == (True, "truncated")


def test_an_injected_math_verify_timeout_is_counted_not_hidden(monkeypatch):
    parse_once = mathexpr._parse

    def slow_parse(text):
        time.sleep(0.5)  # a machine too busy to parse within the budget
        return parse_once(text)

    monkeypatch.setattr(mathexpr, "_parse", slow_parse)
    mathexpr._parse_gold_cached.cache_clear()
    started = time.monotonic()
    verdict = score("<think>x</think><answer>\\frac{2}{4}</answer>", "\\frac{1}{2}", time_limit=0.1)
    assert time.monotonic() - started < 0.45
    assert (verdict.acc, verdict.status) == (False, "timeout")
    # The same answer with a budget that covers the slow parse is judged right.
    generous = score("<think>x</think><answer>\\frac{2}{4}</answer>", "\\frac{1}{2}", time_limit=5)
    assert (generous.acc, generous.status) == (True, "ok")
    verdicts = [
        verdict,
        generous,
        score("no answer here", "7"),
        score("<think>", "7", truncated=True),
    ]
    assert status_fractions(verdicts) == {
        "verify/timeout_frac": 0.25,
        "verify/no_answer_frac": 0.25,
        "verify/truncated_frac": 0.25,
        "verify/unparsable_frac": 0.0,
    }
    mathexpr._parse_gold_cached.cache_clear()


def test_time_limit_must_be_positive_seconds():
    for bad in (0, -1.0, True, "1"):
        with pytest.raises(ValueError, match="time_limit must be a number of seconds > 0"):
            score("<answer>7</answer>", "7", time_limit=bad)
