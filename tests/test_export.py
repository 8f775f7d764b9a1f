"""`care export`: tables as LaTeX/CSV/Markdown and figures as PNG/PDF/SVG that are valid files."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

pytest.importorskip("plotly", reason="exports need the 'app' extra: pip install -e '.[app]'")

from fixtures.runs import write_synthetic_run  # noqa: E402
from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from analysis_app import data, export, figures  # noqa: E402
from care.cli import app as care_cli  # noqa: E402
from care.runlog import RunReader  # noqa: E402

HAS_BROWSER = export.find_browser() is not None


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("export_runs")
    care = write_synthetic_run(
        root / "care", steps=20, eval_results={20: {"care_mathvista": 0.75, "care_mmmu": 0.63}}
    )
    grpo = write_synthetic_run(
        root / "grpo", steps=20, estimator="grpo", seed=1, lift=0.3,
        eval_results={20: {"care_mathvista": 0.70, "care_mmmu": 0.60}},
    )  # fmt: skip
    return [care.run_dir, grpo.run_dir]


def assert_valid_figure_files(folder: Path, name: str) -> None:
    with Image.open(folder / f"{name}.png") as image:
        image.load()
        assert image.width >= 400 and image.height >= 200
        assert (
            len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 10
        )  # not a blank canvas
    assert (folder / f"{name}.pdf").read_bytes().startswith(b"%PDF-")
    assert "<svg" in (folder / f"{name}.svg").read_text(encoding="utf-8")[:2000]


def test_export_writes_every_table_and_figure_as_valid_files(
    two_runs: list[Path], tmp_path: Path
) -> None:
    data.clear_cache()
    report = export.export_runs(two_runs, tmp_path, engine="matplotlib")
    names = sorted(path.name for path in report.files)
    for table in ("signal_summary", "smoothness", "compare", "evaluation", "evaluation_delta"):
        for suffix in ("tex", "csv", "md"):
            assert f"{table}.{suffix}" in names
    for figure in (
        "failure_share",
        "group_types",
        "rescue_rgr",
        "variance_ratio",
        "accuracy",
        "reward",
        "eval_accuracy",
    ):
        assert_valid_figure_files(tmp_path, figure)
    assert report.figure_engine == "matplotlib" and report.notices == []

    latex = (tmp_path / "evaluation.tex").read_text()
    assert "\\toprule" in latex and "\\bottomrule" in latex
    # Best of each column over every row, the paper's included: Qwen3-VL-8B + CARE leads MathVista.
    assert "care @ step\\_20 & 75.00 &  &  & 63.00 &  &  & 69.00 & 2 \\\\" in latex
    # A 2-task macro (69.00) is not compared with the paper's 6-task macros.
    assert "\\textbf{82.10}" in latex and "\\textbf{62.15} & 6 \\\\" in latex
    rows = {row["row"]: row for row in csv.DictReader((tmp_path / "evaluation.csv").open())}
    assert float(rows["grpo @ step_20"]["MathVista"]) == pytest.approx(70.0)
    assert float(rows["paper: Qwen2.5-VL-7B-Instruct + CARE"]["macro"]) == 50.57
    delta = {row["row"]: row for row in csv.DictReader((tmp_path / "evaluation_delta.csv").open())}
    assert float(delta["care @ step_20"]["MathVista"]) == pytest.approx(0.3)
    assert "| care " in (tmp_path / "smoothness.md").read_text()


def test_without_a_browser_figures_fall_back_to_matplotlib_and_say_so(
    two_runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "find_browser", lambda: None)
    frame, _ = data.steps_of_runs({"care": two_runs[0]})
    paths, engine, notices = export.write_figures(
        {"accuracy": figures.smoothed_metric_figure(frame, "acc/mean", 0.6)}, tmp_path
    )
    assert engine == "matplotlib"
    assert notices and notices[0].startswith("no Chrome/Chromium found for kaleido")
    assert [p.name for p in paths] == ["accuracy.png", "accuracy.pdf", "accuracy.svg"]
    assert_valid_figure_files(tmp_path, "accuracy")
    with pytest.raises(RuntimeError, match="no Chrome/Chromium found"):
        export.write_figures(
            {"accuracy": figures.line_figure(frame, ["acc/mean"], title="a", y_title="b")},
            tmp_path,
            engine="kaleido",
        )


@pytest.mark.skipif(not HAS_BROWSER, reason="no chromium for kaleido: apt-get install -y chromium")
def test_kaleido_with_chromium_writes_png_pdf_svg(two_runs: list[Path], tmp_path: Path) -> None:
    frame, _ = data.steps_of_runs({"care": two_runs[0], "grpo": two_runs[1]})
    paths, engine, notices = export.write_figures(
        {"failure_share": figures.signal_figures(frame, 0.6)["failure_share"]},
        tmp_path,
        engine="kaleido",
    )
    assert engine == "kaleido" and notices == []
    assert len(paths) == 3
    assert_valid_figure_files(tmp_path, "failure_share")
    with Image.open(tmp_path / "failure_share.png") as image:
        assert image.size == (
            export.FIGURE_WIDTH * export.PNG_SCALE,
            export.FIGURE_HEIGHT * export.PNG_SCALE,
        )


def test_care_export_cli_writes_files_and_rejects_a_non_run(
    two_runs: list[Path], tmp_path: Path
) -> None:
    runner = CliRunner()
    result = runner.invoke(
        care_cli,
        ["export", str(two_runs[0]), "--out", str(tmp_path / "out"), "--engine", "matplotlib"],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 33 files" in result.output and "(figures: matplotlib)" in result.output
    assert (tmp_path / "out" / "smoothness.tex").read_text().count("\\toprule") == 1
    bad = runner.invoke(care_cli, ["export", str(tmp_path), "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 2
    assert "not a run folder (no meta.json or steps.jsonl)" in bad.output


def test_care_dashboard_refuses_a_missing_runs_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(care_cli, ["dashboard", "--runs", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "is not a folder" in result.output
    bad_port = CliRunner().invoke(care_cli, ["dashboard", "--runs", str(tmp_path), "--port", "0"])
    assert bad_port.exit_code == 2 and "--port must be in 1..65535" in bad_port.output


def test_run_labels_stay_unique(tmp_path: Path) -> None:
    labels = export.run_labels([tmp_path / "a" / "x", tmp_path / "b" / "x", tmp_path / "c" / "y"])
    assert sorted(labels) == ["a/x", "b/x", "y"]


def test_find_browser_honours_browser_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "chrome"
    fake.write_text("")
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    assert export.find_browser() == str(fake)
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "missing"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert export.find_browser() is None
    assert shutil.which("chromium", path=str(tmp_path)) is None


def test_export_of_runs_the_real_trainer_wrote(fast_demo, tmp_path: Path) -> None:
    """The demo's CARE and GRPO runs of seed 0 (`care demo --fast`, conftest's `fast_demo`):
    every table and figure is written without a warning, with the numbers the logs hold."""
    out, _ = fast_demo
    runs = [out / "demo_fast_seed0_care", out / "demo_fast_seed0_grpo"]
    data.clear_cache()
    report = export.export_runs(runs, tmp_path, engine="matplotlib", formats=("png",))
    assert report.warnings == [] and report.figure_engine == "matplotlib"
    names = {path.name for path in report.files}
    for table in ("signal_summary", "smoothness", "compare"):
        assert {f"{table}.tex", f"{table}.csv", f"{table}.md"} <= names
    assert {"failure_share.png", "group_types.png", "accuracy.png", "reward.png"} <= names
    rows = {row["run"]: row for row in csv.DictReader((tmp_path / "signal_summary.csv").open())}
    assert set(rows) == {run.name for run in runs}
    for run in runs:
        logged = [
            record["signal/failure_share_seq"]
            for record in RunReader(run).steps
            if "signal/failure_share_seq" in record
        ]
        assert len(logged) == 3  # steps 1..3; step 0 holds validation only
        exported = float(rows[run.name]["signal/failure_share_seq"])
        assert exported == pytest.approx(sum(logged) / len(logged), abs=5e-4)
