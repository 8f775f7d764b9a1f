"""care compare: paired differences, McNemar and Holm on hand-built eval folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from care.cli import app
from care.stats import holm, mcnemar_exact
from evaluation.compare import CompareError, compare_folders


def write_eval(folder: Path, benchmark: str, verdicts: list[bool], seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {
                "task": benchmark,
                "seed": seed,
                "doc_id": i,
                "answer": "B",
                "acc": ok,
                "fmt": True,
                "extracted": "B" if ok else "C",
                "verify_status": "ok",
            }
        )
        for i, ok in enumerate(verdicts)
    ]
    (folder / f"{benchmark}_samples.jsonl").write_text("\n".join(lines) + "\n")


def test_compare_counts_fixed_and_broken_items_with_mcnemar_and_holm(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    # care_mmmu: 40 items; A right on 0-19; B right on 0-17 and 20-31: 12 fixed, 2 broken.
    write_eval(a, "care_mmmu", [i < 20 for i in range(40)])
    write_eval(b, "care_mmmu", [i < 18 or 20 <= i < 32 for i in range(40)])
    # care_mathvista: 10 items, identical verdicts.
    write_eval(a, "care_mathvista", [i % 2 == 0 for i in range(10)])
    write_eval(b, "care_mathvista", [i % 2 == 0 for i in range(10)])
    rows, pairs = compare_folders(a, b, resamples=2000)
    by_name = {row.benchmark: row for row in rows}
    mathvista, mmmu = by_name["care_mathvista"], by_name["care_mmmu"]
    assert mmmu.counts == {"fixed": 12, "broken": 2, "both right": 18, "both wrong": 8}
    assert (mmmu.accuracy_a, mmmu.accuracy_b) == (0.5, 0.75)
    assert mmmu.difference.estimate == pytest.approx(0.25)
    assert 0.0 < mmmu.difference.low < 0.25 < mmmu.difference.high
    # Exact McNemar on 12 vs 2 discordant items: 2 · P(X <= 2 | n=14, 1/2) = 2 · 106 / 16384.
    assert mmmu.p_value == pytest.approx(2 * 106 / 2**14)
    assert mathvista.p_value == 1.0 and mathvista.difference.estimate == 0.0
    assert [mathvista.p_holm, mmmu.p_holm] == holm([1.0, mmmu.p_value])
    assert mmmu.p_holm == pytest.approx(2 * mmmu.p_value)
    macro = rows[-1]
    assert macro.benchmark == "macro average (2)"
    # The macro difference is the mean of the per-benchmark differences: (0 + 0.25) / 2.
    assert macro.difference.estimate == pytest.approx(0.125)
    assert macro.accuracy_b - macro.accuracy_a == pytest.approx(0.125)
    assert macro.p_value == pytest.approx(mcnemar_exact([0] * 12 + [1] * 2, [1] * 12 + [0] * 2))
    assert len(pairs) == 50


def test_cli_prints_the_table_and_writes_the_per_item_csv(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_eval(a, "care_synth", [True, False, True, False])
    write_eval(b, "care_synth", [True, True, False, False])
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--resamples", "500"])
    assert result.exit_code == 0, result.output
    line = next(row for row in result.stdout.splitlines() if row.startswith("| care_synth"))
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[:4] == ["care_synth", "4", "50.0", "50.0"]
    assert cells[5:] == ["1", "1", "1", "1", "1", "1"]  # p, Holm p, fixed, broken, both
    lines = (b / "compare.csv").read_text().splitlines()
    assert lines[0] == (
        "benchmark,task,doc_id,a_correct,b_correct,outcome,a_extracted,b_extracted,a_error,b_error"
    )
    # The gold is "B": a wrong "C" is a wrong option.
    assert lines[2] == "care_synth,care_synth,1,0,1,fixed,C,B,wrong option,correct"
    assert lines[3] == "care_synth,care_synth,2,1,0,broken,B,C,correct,wrong option"


def test_mismatched_items_are_an_error_naming_the_benchmark(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_eval(a, "care_mmmu", [True] * 5)
    write_eval(b, "care_mmmu", [True] * 4)
    with pytest.raises(CompareError, match=r"care_mmmu: A and B scored different items \(5 vs 4"):
        compare_folders(a, b)
    result = CliRunner().invoke(app, ["compare", str(a), str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "holds no <benchmark>_samples.jsonl" in result.stderr


def test_a_checkpoint_path_reads_its_runs_eval_folder(tmp_path: Path) -> None:
    a = tmp_path / "grpo" / "checkpoints" / "step_4"
    b = tmp_path / "care" / "checkpoints" / "step_4"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    write_eval(tmp_path / "grpo" / "eval" / "step_4", "care_synth", [False, False, True])
    write_eval(tmp_path / "care" / "eval" / "step_4", "care_synth", [True, True, True])
    rows, _ = compare_folders(a, b, resamples=200)
    assert rows[0].counts == {"fixed": 2, "broken": 0, "both right": 1, "both wrong": 0}
    assert rows[0].p_value == pytest.approx(0.5)  # 2 fixed, 0 broken: 2 · (1/2)²


def test_pairs_of_different_questions_are_noted(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_eval(a, "care_synth", [True, False, True])
    write_eval(b, "care_synth", [True, True, True])
    records = [
        json.loads(line) for line in (b / "care_synth_samples.jsonl").read_text().splitlines()
    ]
    records[1]["answer"] = "D"  # the doc_id of another data file
    (b / "care_synth_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    notes: list[str] = []
    compare_folders(a, b, resamples=100, note=notes.append)
    assert notes == [
        "care_synth: 1 of 3 paired items have another question or gold answer in B than in A "
        "(evaluated on different data?), so they are not the same items"
    ]
    same: list[str] = []
    compare_folders(a, a, resamples=100, note=same.append)
    assert same == []
