"""The one table writer (care.tables): Markdown layout and escaping, CSV quoting, bad rows."""

from __future__ import annotations

import csv
import io
import re

import pytest

from care.tables import csv_table, markdown_table


def test_markdown_pads_columns_and_aligns_each_as_asked():
    text = markdown_table(
        ["run", "acc (%)", "c"], [["grpo", "41.0", "x"], ["care", "7.25", "yz"]], "lrc"
    )
    assert text.splitlines() == [
        "| run  | acc (%) |  c  |",
        "|:-----|--------:|:---:|",
        "| grpo |    41.0 |  x  |",
        "| care |    7.25 |  yz |",
    ]
    assert text.endswith("|\n")
    # Left alignment when none is given; a column is never narrower than its 3-dash rule.
    assert markdown_table(["a"], [["1"]]).splitlines() == ["| a   |", "|:----|", "| 1   |"]


def test_markdown_escapes_pipes_and_line_breaks_inside_cells():
    text = markdown_table(["response"], [["a|b\nc"]])
    assert text.splitlines()[2] == "| a\\|b c   |"


def test_csv_quotes_commas_and_quotes_and_round_trips():
    text = csv_table(["name", "note"], [["a,b", 'say "hi"'], ["c", ""]])
    assert text == 'name,note\n"a,b","say ""hi"""\nc,\n'
    assert list(csv.reader(io.StringIO(text))) == [["name", "note"], ["a,b", 'say "hi"'], ["c", ""]]


def test_rows_of_the_wrong_length_and_bad_alignments_are_errors():
    with pytest.raises(ValueError, match=r"row 2 has 1 cells but the header has 2"):
        markdown_table(["a", "b"], [["1", "2"], ["3"]])
    with pytest.raises(ValueError, match=r"row 1 has 3 cells"):
        csv_table(["a", "b"], [["1", "2", "3"]])
    with pytest.raises(ValueError, match="one of l, r, c per column"):
        markdown_table(["a", "b"], [["1", "2"]], "lx")


def test_missing_cells_are_blank_not_none():
    text = markdown_table(["run", "acc"], [["a", None], [None, "0.5"]], "lr")
    assert "None" not in text
    assert text.splitlines()[2] == "| a   |     |"
    assert text.splitlines()[3] == "|     | 0.5 |"
    assert csv_table(["run", "acc"], [["a", None]]) == "run,acc\na,\n"


def test_dashboard_exports_leave_missing_cells_blank():
    import math

    import pandas as pd

    from analysis_app.tables import step_groups_table, to_csv, to_latex, to_markdown
    from care.runlog import GroupRecord

    frame = pd.DataFrame(
        {"acc/mean": [0.5, math.nan], "note": ["x", None]}, index=pd.Index(["a", None], name="run")
    )
    markdown = to_markdown(frame, {"acc/mean": "max"})
    latex = to_latex(frame, {"acc/mean": "max"})
    csv_text = to_csv(frame)
    for text in (markdown, latex, csv_text):
        assert "None" not in text and "nan" not in text
    assert markdown.splitlines()[3] == "|     |           |      |"
    assert r" &  &  \\" in latex
    assert csv_text.splitlines()[2] == ",,"
    # A group record has no missing cells to blank (every field is checked when it is built);
    # an int prompt id shows as text and a run without RGR says "off".
    group = GroupRecord(
        step=1, group_id=0, prompt_id=17, G=2, n_correct=1, anchor_index=None,
        hard_negatives=(), k_prime=0, rescued=False, pseudo_anchor=None,
        rescue_impossible=False, rgr=None, advantages=(1.0, -1.0), rewards=(1.0, 0.0),
        correct=(True, False),
    )  # fmt: skip
    groups = step_groups_table([group])
    assert groups.loc[0, ["prompt", "G", "correct", "K'", "RGR"]].tolist() == ["17", 2, 1, 0, "off"]


def test_evaluation_table_cells_read_estimate_and_interval_and_missing_ones_stay_blank():
    import math

    import pandas as pd

    from analysis_app.evaluation_table import IntervalTable, to_csv, to_latex, to_markdown

    index = pd.Index(["care @ step_3", "paper: X"], name="row")
    estimate = pd.DataFrame(
        {"MathVista": [75.0, 74.7], "MMMU": [math.nan, 62.5], "macro": [75.0, 50.57]}, index=index
    )
    estimate["macro tasks"] = pd.array([1, 6], dtype="Int64")
    low = pd.DataFrame(math.nan, index=index, columns=estimate.columns)
    high = low.copy()
    low.loc["care @ step_3", ["MathVista", "macro"]] = 65.68
    high.loc["care @ step_3", ["MathVista", "macro"]] = 82.52
    table = IntervalTable(estimate, low, high, checkpoints={})
    latex, markdown, csv_text = to_latex(table), to_markdown(table), to_csv(table)
    for text in (latex, markdown, csv_text):
        assert not re.search(r"\b(None|nan|NaN|<NA>)\b", text)
    # The paper's macro is over six benchmarks, the run's over one: only the former can be best.
    assert (
        r"care @ step\_3 & \textbf{75.00} {\scriptsize [65.7, 82.5]} &  & "
        r"75.00 {\scriptsize [65.7, 82.5]} & 1 \\"
    ) in latex
    assert r"paper: X & 74.70 & \textbf{62.50} & \textbf{50.57} & 6 \\" in latex
    assert "| care @ step_3 | **75.00** [65.7, 82.5] |           |" in markdown
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert [(row["row"], row["benchmark"]) for row in rows] == [
        ("care @ step_3", "MathVista"),
        ("care @ step_3", "macro"),
        ("paper: X", "MathVista"),
        ("paper: X", "MMMU"),
        ("paper: X", "macro"),
    ]
    assert (rows[0]["estimate"], rows[0]["low"], rows[0]["high"]) == ("75", "65.68", "82.52")
    assert rows[2]["low"] == "" and rows[2]["significant"] == ""
