"""Plain-text tables: Markdown and CSV from a header and rows of already formatted cells.

The one writer behind every table the project prints or saves: ``care eval``'s results table
(`evaluation.results`) and the dashboard's exports (`analysis_app.tables`). Formatting numbers is
the caller's business (each table knows its digits); this module only lays the cells out.

    >>> print(markdown_table(["run", "acc"], [["grpo", "0.41"], ["care", "0.47"]], "lr"), end="")
    | run  |  acc |
    |:-----|-----:|
    | grpo | 0.41 |
    | care | 0.47 |
    >>> csv_table(["run", "acc"], [["grpo", "0.41"]])
    'run,acc\\ngrpo,0.41\\n'
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

_RULES = {"l": ":{}", "r": "{}:", "c": ":{}:"}


def _checked(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    for number, row in enumerate(rows, start=1):
        if len(row) != len(header):
            raise ValueError(
                f"row {number} has {len(row)} cells but the header has {len(header)}: {list(row)}"
            )


def _cell_text(value: object) -> str:
    # A missing value is an empty cell: str(None) printed "None" into papers' tables.
    return "" if value is None else str(value)


def _markdown_cell(value: object) -> str:
    # A pipe would end the cell and a newline the row.
    return _cell_text(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str | None]], align: str | None = None
) -> str:
    """A GitHub Markdown table, columns padded to a common width so the text reads as a table.

    Args:
        header: one name per column.
        rows: cells as text, one sequence per row, as many as `header`; None is an empty cell.
        align: one letter per column, ``l``, ``r`` or ``c``; None: all left.

    Returns the table, one line per row, ending in a newline. ValueError for a row of the wrong
    length or an alignment that is not one letter per column.

    Example: ``markdown_table(["n", "text"], [["1", "x|y"]], "rl")`` → three lines,
    ``|   n | text |``, ``|----:|:-----|``, ``|   1 | x\\|y |`` (the pipe escaped).
    """
    _checked(header, rows)
    align = "l" * len(header) if align is None else align
    if len(align) != len(header) or set(align) - set(_RULES):
        raise ValueError(
            f"align must give one of l, r, c per column ({len(header)} columns), got {align!r}"
        )
    cells = [[_markdown_cell(text) for text in row] for row in [header, *rows]]
    widths = [max(3, *(len(row[column]) for row in cells)) for column in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                _pad(text, width, side)
                for text, width, side in zip(row, widths, align, strict=True)
            )
            + " |"
        )

    # A rule cell spans the column and its two spaces of padding, colons included.
    rule = (
        "|"
        + "|".join(
            _RULES[side].format("-" * (width + (0 if side == "c" else 1)))
            for width, side in zip(widths, align, strict=True)
        )
        + "|"
    )
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])]) + "\n"


def _pad(text: str, width: int, side: str) -> str:
    if side == "r":
        return text.rjust(width)
    return text.center(width) if side == "c" else text.ljust(width)


def csv_table(header: Sequence[str], rows: Sequence[Sequence[str | None]]) -> str:
    """CSV text (RFC 4180 quoting, "\\n" line ends) of `header` and `rows` (None: empty field).

    Example: ``csv_table(["a", "b"], [["1", "x,y"]])`` → ``'a,b\\n1,"x,y"\\n'``.
    """
    _checked(header, rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_cell_text(value) for value in row] for row in rows])
    return buffer.getvalue()
