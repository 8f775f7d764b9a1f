"""The one table writer (care.tables): Markdown layout and escaping, CSV quoting, bad rows."""

from __future__ import annotations

import csv
import io

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
