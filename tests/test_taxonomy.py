"""The rule-based error taxonomy: one type per scored item, in rule order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from care.cli import app
from evaluation.taxonomy import ERROR_TYPES, error_type, type_counts


def record(acc, extracted, answer, fmt=True, status="ok", **extra):
    return {"acc": acc, "fmt": fmt, "extracted": extracted, "answer": answer,
            "verify_status": status, **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (record(True, "7", "7"), "correct"),
        (record(True, "7", "7", fmt=False), "format only"),
        (record(False, None, "7", finish_reason="length"), "truncated"),
        (record(False, None, "7", status="no_answer"), "no answer block"),
        (record(False, "x^{", "\\frac{1}{2}", status="unparsable"), "extraction failed"),
        (record(False, "\\frac{2}{4}", "\\frac{1}{2}", status="timeout"), "extraction failed"),
        (record(False, "C", "B"), "wrong option"),
        (record(False, "(C)", "blue square"), "wrong option"),  # gold given as option text
        (record(False, "10.4", "10"), "numeric near miss"),  # 4 % off
        (record(False, "10.6", "10"), "wrong answer"),  # 6 % off
        (record(False, "blue", "red"), "wrong answer"),
    ],
)
def test_each_rule_gives_its_type(sample, expected) -> None:
    assert error_type(sample) == expected


def test_counts_list_every_type_and_a_record_without_acc_is_an_error(tmp_path: Path) -> None:
    counts = type_counts([record(True, "7", "7"), record(False, "C", "B"), record(False, "D", "B")])
    assert list(counts) == list(ERROR_TYPES)
    assert (counts["correct"], counts["wrong option"], sum(counts.values())) == (1, 2, 3)
    with pytest.raises(ValueError, match="has no acc field"):
        error_type({"extracted": "7"})
    folder = tmp_path / "eval"
    folder.mkdir()
    lines = [
        {"task": "care_synth", "seed": 0, "doc_id": i, **sample}
        for i, sample in enumerate([record(True, "B", "B"), record(False, None, "B")])
    ]
    (folder / "care_synth_samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = CliRunner().invoke(app, ["errors", str(folder)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "care_synth" in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:] == ["care_synth", "2", "1", "0", "0", "1", "0", "0", "0", "0"]
