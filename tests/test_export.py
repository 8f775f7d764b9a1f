"""`care export`: tables as LaTeX/CSV/Markdown and figures as PNG/PDF/SVG that are valid files."""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("plotly", reason="exports need the 'app' extra: pip install -e '.[app]'")

from fixtures.runs import write_synthetic_run  # noqa: E402
from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import care  # noqa: E402
from analysis_app import data, evaluation_table, export, figures, tables  # noqa: E402
from care.cli import app as care_cli  # noqa: E402
from care.prompts import PROMPT_VERSION  # noqa: E402
from care.runlog import RunReader  # noqa: E402
from care.stats import holm, mcnemar_exact, wilson_interval  # noqa: E402
from care.verify import TIME_LIMIT_SECONDS  # noqa: E402
from evaluation import provenance  # noqa: E402
from evaluation.provenance import REPO_ROOT  # noqa: E402
from evaluation.results import macro_interval  # noqa: E402

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
    # Summaries without per-item samples (n = 100): Wilson intervals of 75/100 and 63/100, and
    # the normal interval of their mean; no baseline, so no marks.
    cells = [
        f"{100 * i.estimate:.2f} {{\\scriptsize [{100 * i.low:.1f}, {100 * i.high:.1f}]}}"
        for i in (
            wilson_interval(75, 100),
            wilson_interval(63, 100),
            macro_interval([0.75, 0.63], [100, 100]),
        )
    ]
    # Best of each column over every row, the paper's included: Qwen3-VL-8B + CARE leads MathVista.
    row = f"care @ step\\_20 & {cells[0]} &  &  & {cells[1]} &  &  & {cells[2]} & 2 \\\\"
    assert row in latex
    # A 2-task macro (69.00) is not compared with the paper's 6-task macros.
    assert "\\textbf{82.10}" in latex and "\\textbf{62.15} & 6 \\\\" in latex
    assert "No baseline chosen" in latex and "prompt: care-prompt-v1" in latex
    rows = evaluation_rows(tmp_path)
    assert float(rows["grpo @ step_20", "MathVista"]["estimate"]) == pytest.approx(70.0)
    assert float(rows["paper: Qwen2.5-VL-7B-Instruct + CARE", "macro"]["estimate"]) == 50.57
    assert rows["paper: Qwen2.5-VL-7B-Instruct + CARE", "macro"]["low"] == ""
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


class DroppingWriter:
    """Stands in for plotly.io's image writers: writes bytes to each path except those it is
    told to drop, as kaleido's batch does when a render fails (plotly drops the error)."""

    def __init__(self, drop_in_batch: set[str], drop_alone: set[str] = frozenset()) -> None:
        self.drop_in_batch, self.drop_alone = drop_in_batch, drop_alone
        self.alone: list[str] = []

    def write_images(self, figures, paths, **_) -> None:
        for path in paths:
            if Path(path).name not in self.drop_in_batch:
                Path(path).write_bytes(b"image")

    def write_image(self, figure, path, **_) -> None:
        self.alone.append(Path(path).name)
        if Path(path).name not in self.drop_alone:
            Path(path).write_bytes(b"image")


def test_a_file_kaleido_silently_skips_is_rendered_again_or_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import plotly.io as pio

    named = {"failure_share": figures.go.Figure(), "reward": figures.go.Figure()}
    writer = DroppingWriter({"reward.png"})
    monkeypatch.setattr(pio, "write_images", writer.write_images)
    monkeypatch.setattr(pio, "write_image", writer.write_image)
    notices: list[str] = []
    paths = export._write_with_kaleido(named, tmp_path, ("png", "svg"), "chromium", notices)
    assert all(path.read_bytes() == b"image" for path in paths) and len(paths) == 4
    assert writer.alone == ["reward.png"]
    assert notices == ["kaleido did not write reward.png in its batch; rendered again one by one"]
    # A file kaleido never writes is named, and an earlier export's figures stay as they were.
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "reward.png").write_bytes(b"old")
    writer = DroppingWriter({"reward.png"}, drop_alone={"reward.png"})
    monkeypatch.setattr(pio, "write_images", writer.write_images)
    monkeypatch.setattr(pio, "write_image", writer.write_image)
    with pytest.raises(RuntimeError, match=r"kaleido wrote no file for: .*earlier/reward\.png"):
        export._write_with_kaleido(named, earlier, ("png",), "chromium", [])
    assert sorted(p.name for p in earlier.iterdir()) == ["reward.png"]
    assert (earlier / "reward.png").read_bytes() == b"old"


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


# --------------------------------------------------------------------------------------------
# the evaluation table: intervals, marks against a baseline, provenance footer

PROVENANCE = {
    "suite_version": "0.1.0",
    "suite_commit": "0123456789abcdef0123456789abcdef01234567",
    "suite_commit_dirty": False,
    "lmms_eval_version": "0.7.3",
    "prompt_version": "care-prompt-v1",
    "max_new_tokens": 2048,
    "verify_time_limit_s": 0.3,
    "data_sha256": "a" * 64,
    "data_files": ["data.parquet"],
}


def write_evaluation(folder: Path, verdicts: dict[str, list[bool]], provenance=PROVENANCE) -> None:
    """A ``care eval`` output folder by hand: per task a summary with one seed and its samples."""
    folder.mkdir(parents=True, exist_ok=True)
    for task, flags in verdicts.items():
        right = sum(flags)
        summary = {
            "task": task,
            "n": len(flags),
            "accuracy": right / len(flags),
            "prompt_version": "care-prompt-v1",
            "seeds": [0],
            "per_seed": {"0": {"accuracy": right / len(flags), "n": len(flags), "correct": right}},
        }
        if provenance is not None:
            summary["provenance"] = provenance
        (folder / f"{task}.json").write_text(json.dumps(summary))
        lines = [
            json.dumps({"task": task, "seed": 0, "doc_id": i, "acc": ok, "answer": "B"})
            for i, ok in enumerate(flags)
        ]
        (folder / f"{task}_samples.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def marked_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """base, strong and weak runs evaluated at step_3 on the same 40 MathVista and 40 MMMU
    items. MathVista: the same verdicts everywhere. MMMU: base right on 0-19; strong fixes 12
    and breaks 2 (McNemar p = 0.0129, Holm x2 = 0.026: marked); weak fixes 10 and breaks 2
    (p = 0.0386 below 0.05, but Holm x2 = 0.077: not marked)."""
    root = tmp_path_factory.mktemp("marked")
    base = [i < 20 for i in range(40)]
    mmmu = {
        "base": base,
        "strong": [i < 18 or 20 <= i < 32 for i in range(40)],
        "weak": [i < 18 or 20 <= i < 30 for i in range(40)],
    }
    runs = {}
    for name, flags in mmmu.items():
        run = write_synthetic_run(root / name, steps=3).run_dir
        write_evaluation(run / "eval" / "step_3", {"care_mathvista": base, "care_mmmu": flags})
        runs[name] = run
    return runs


def evaluation_rows(folder: Path) -> dict[tuple[str, str], dict[str, str]]:
    rows = csv.DictReader((folder / "evaluation.csv").open(encoding="utf-8"))
    return {(row["row"], row["benchmark"]): row for row in rows}


def body_lines(latex: str) -> dict[str, str]:
    """The tabular's body lines of a LaTeX table by row label (escaped as in the file)."""
    body = latex.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
    return {line.split(" & ", 1)[0]: line for line in body.splitlines()}


def test_the_mark_follows_the_holm_corrected_mcnemar_test(
    marked_runs: dict[str, Path], tmp_path: Path
) -> None:
    data.clear_cache()
    export.export_runs(
        list(marked_runs.values()), tmp_path, engine="matplotlib", formats=("png",),
        baseline="base",
    )  # fmt: skip
    rows = evaluation_rows(tmp_path)
    strong, weak = rows["strong @ step_3", "MMMU"], rows["weak @ step_3", "MMMU"]
    assert float(strong["p_value"]) == pytest.approx(2 * 106 / 2**14, rel=1e-5)
    assert float(strong["p_holm"]) == pytest.approx(2 * 2 * 106 / 2**14, rel=1e-5)
    assert strong["significant"] == "1" and float(strong["difference"]) == pytest.approx(25.0)
    # Significant alone (p < 0.05) but not after Holm's correction across the two benchmarks.
    assert float(weak["p_value"]) == pytest.approx(2 * 79 / 2**12, rel=1e-5)
    assert 2 * 79 / 2**12 < 0.05
    assert float(weak["p_holm"]) == pytest.approx(holm([1.0, 2 * 79 / 2**12])[1], rel=1e-5)
    assert weak["significant"] == "0"
    assert rows["strong @ step_3", "MathVista"]["significant"] == "0"
    assert rows["base @ step_3", "MMMU"]["significant"] == ""  # the baseline is not tested
    macro = rows["strong @ step_3", "macro"]
    assert float(macro["difference"]) == pytest.approx(12.5)
    assert macro["p_holm"] == "" and macro["tasks"] == "care_mathvista care_mmmu"
    assert macro["significant"] == str(int(float(macro["difference_low"]) > 0))

    latex = (tmp_path / "evaluation.tex").read_text(encoding="utf-8")
    lines = body_lines(latex)
    wilson = wilson_interval(30, 40)
    # Best MMMU of the three runs (bold), its Wilson interval, marked.
    strong_cell = (
        f"\\textbf{{75.00}} {{\\scriptsize [{100 * wilson.low:.1f}, {100 * wilson.high:.1f}]}}"
    )
    assert f"{strong_cell}$^{{\\dagger}}$" in lines["strong @ step\\_3"]
    marked = sum(row["significant"] == "1" for row in rows.values())
    assert sum(line.count("$^{\\dagger}$") for line in lines.values()) == marked
    weak_wilson = wilson_interval(28, 40)
    weak_cell = f"{{\\scriptsize [{100 * weak_wilson.low:.1f}, {100 * weak_wilson.high:.1f}]}} &"
    assert f"70.00 {weak_cell}" in lines["weak @ step\\_3"]  # MMMU: no mark after Holm
    assert "differs from the baseline base @ step\\_3: exact McNemar p-value" in latex
    assert "Holm-corrected across the benchmarks" in latex
    markdown = (tmp_path / "evaluation.md").read_text(encoding="utf-8")
    assert markdown.count("†") == marked + 1  # the cells and the note saying what it means


def test_a_macro_of_one_benchmark_is_marked_as_that_benchmark(tmp_path: Path) -> None:
    """MMMU alone, 9 items fixed and 2 broken of 40: McNemar p = 0.065, not marked, although
    the paired bootstrap's interval of the difference excludes 0; the macro average, which is
    MMMU, must not say otherwise."""
    verdicts = {
        "base": [i < 20 for i in range(40)],
        "nine": [i < 18 or 20 <= i < 29 for i in range(40)],
    }
    runs = []
    for name, flags in verdicts.items():
        run = write_synthetic_run(tmp_path / name, steps=3).run_dir
        write_evaluation(run / "eval" / "step_3", {"care_mmmu": flags})
        runs.append(run)
    data.clear_cache()
    out = tmp_path / "out"
    export.export_runs(runs, out, engine="matplotlib", formats=("png",), baseline="base")
    rows = evaluation_rows(out)
    mmmu, macro = rows["nine @ step_3", "MMMU"], rows["nine @ step_3", "macro"]
    assert float(mmmu["p_holm"]) == pytest.approx(2 * 67 / 2**11, rel=1e-5)
    assert float(macro["difference_low"]) > 0  # the bootstrap alone would have marked it
    assert mmmu["significant"] == macro["significant"] == "0"
    assert "\\dagger}$ &" not in (out / "evaluation.tex").read_text(encoding="utf-8")


def test_without_a_baseline_there_are_no_marks_and_the_footer_says_so(
    marked_runs: dict[str, Path], tmp_path: Path
) -> None:
    data.clear_cache()
    export.export_runs(list(marked_runs.values()), tmp_path, engine="matplotlib", formats=("png",))
    latex = (tmp_path / "evaluation.tex").read_text(encoding="utf-8")
    assert "\\dagger" not in latex
    assert "No baseline chosen: no significance marks." in latex
    assert {row["significant"] for row in evaluation_rows(tmp_path).values()} == {""}
    assert not re.search(r"\b(None|nan|NaN|<NA>)\b", latex)


def test_a_baseline_that_is_no_evaluated_run_is_refused(
    marked_runs: dict[str, Path], tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        care_cli,
        ["export", str(marked_runs["strong"]), "--out", str(tmp_path), "--engine", "matplotlib"]
        + ["--baseline", "grpo"],
    )
    assert result.exit_code == 2
    assert "baseline 'grpo' is neither an evaluated run (['strong'])" in result.output
    assert list(tmp_path.iterdir()) == []  # refused before any table was written


def test_a_provenance_field_of_the_wrong_type_is_an_error_naming_file_and_field(
    tmp_path: Path,
) -> None:
    run = write_synthetic_run(tmp_path / "run", steps=3).run_dir
    write_evaluation(
        run / "eval" / "step_3",
        {"care_synth": [True, False]},
        {**PROVENANCE, "max_new_tokens": "2k"},
    )
    data.clear_cache()
    with pytest.raises(ValueError) as caught:
        export.export_runs([run], tmp_path / "out", engine="matplotlib", formats=("png",))
    message = str(caught.value)
    assert str(run / "eval" / "step_3" / "care_synth.json") in message
    assert "field 'provenance.max_new_tokens' must be int or null, got '2k'" in message


def samples_of(folder: Path) -> dict[str, bool]:
    """doc_id -> verdict of a care_synth evaluation, read from its samples file."""
    lines = (folder / "care_synth_samples.jsonl").read_text(encoding="utf-8").splitlines()
    return {str(record["doc_id"]): bool(record["acc"]) for record in map(json.loads, lines)}


def data_digest(data_root: Path) -> tuple[str, list[str]]:
    """sha256 over each file's name and sha256: test.jsonl and the images its rows name."""
    rows = [json.loads(line) for line in (data_root / "test.jsonl").read_text().splitlines()]
    names = sorted({"test.jsonl", *(image for row in rows for image in row["images"])})
    digest = hashlib.sha256()
    for name in names:
        digest.update(
            f"{name}\0{hashlib.sha256((data_root / name).read_bytes()).hexdigest()}\n".encode()
        )
    return digest.hexdigest(), names


def test_demo_evaluations_record_their_provenance(fast_demo) -> None:
    """What `care eval` ran with, checked against independent sources: git, the installed
    lmms-eval, lmms-eval's own task config, the run's config and the data files' bytes."""
    out, _ = fast_demo
    run = out / "demo_fast_seed0_care"
    recorded = json.loads((run / "eval" / "step_3" / "care_synth.json").read_text())["provenance"]
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert recorded["suite_version"] == care.__version__ and recorded["suite_commit"] == head
    assert recorded["lmms_eval_version"] == importlib.metadata.version("lmms_eval")
    assert recorded["prompt_version"] == PROMPT_VERSION
    assert recorded["verify_time_limit_s"] == TIME_LIMIT_SECONDS  # care eval gave no budget
    lmms = json.loads(
        next((run / "eval" / "step_3" / "lmms_eval").rglob("*_results.json")).read_text()
    )
    decoded = lmms["configs"]["care_synth"]["generation_kwargs"]["max_new_tokens"]
    assert (
        recorded["max_new_tokens"] == decoded == data.load_config(run)["rollout"]["max_new_tokens"]
    )
    assert (recorded["data_sha256"], recorded["data_files"]) == data_digest(out / "data_fast_seed0")
    blank = json.loads(
        (out / "demo_fast_seed0_sft" / "eval" / "step_10_blank" / "care_synth.json").read_text()
    )["provenance"]
    assert blank["data_sha256"] == data_digest(out / "data_fast_seed0" / "blank")[0]
    assert blank["data_sha256"] != recorded["data_sha256"]


def test_demo_evaluation_table_has_the_samples_intervals_marks_and_recorded_provenance(
    fast_demo, tmp_path: Path
) -> None:
    """The seed-0 SFT, GRPO and CARE runs against the SFT checkpoint: each interval is Wilson's
    of the samples file, each mark the McNemar test of the paired samples (one benchmark: Holm
    leaves p as it is), the blank-image evaluation is not compared (other data), and the footer
    prints what the result files recorded."""
    out, _ = fast_demo
    runs = [out / f"demo_fast_seed0_{name}" for name in ("sft", "grpo", "care")]
    data.clear_cache()
    report = export.export_runs(
        runs, tmp_path, engine="matplotlib", formats=("png",), baseline="demo_fast_seed0_sft"
    )
    rows = evaluation_rows(tmp_path)
    latex = (tmp_path / "evaluation.tex").read_text(encoding="utf-8")
    lines = body_lines(latex)
    baseline = samples_of(out / "demo_fast_seed0_sft" / "eval" / "step_10")
    checked = 0
    for run in runs:
        for folder in sorted((run / "eval").iterdir()):
            label = f"{run.name} @ {folder.name}"
            verdicts = samples_of(folder)
            wilson = wilson_interval(sum(verdicts.values()), len(verdicts))
            row = rows[label, "care_synth"]
            assert float(row["low"]) == pytest.approx(100 * wilson.low, rel=1e-5, abs=1e-9)
            assert float(row["high"]) == pytest.approx(100 * wilson.high, rel=1e-5)
            bounds = f"{{\\scriptsize [{100 * wilson.low:.1f}, {100 * wilson.high:.1f}]}}"
            assert bounds in lines[tables.latex_escape(label)]
            if folder.name.endswith("blank") or label == "demo_fast_seed0_sft @ step_10":
                assert row["significant"] == ""
                continue
            ids = sorted(baseline)
            p = mcnemar_exact([baseline[i] for i in ids], [verdicts[i] for i in ids])
            assert float(row["p_holm"]) == pytest.approx(p, rel=1e-5)
            assert row["significant"] == str(int(p < 0.05))
            # The macro of care_synth alone is care_synth: the same test, the same mark.
            assert rows[label, "macro"]["significant"] == row["significant"]
            assert ("\\dagger" in lines[tables.latex_escape(label)]) == (p < 0.05)
            checked += 1
    assert checked == 2
    assert any("step_10_blank: care_synth: evaluated on other data" in n for n in report.notices)
    assert "Not compared: demo\\_fast\\_seed0\\_sft @ step\\_10\\_blank" in latex

    recorded = json.loads((runs[2] / "eval" / "step_3" / "care_synth.json").read_text())
    facts = recorded["provenance"]
    dirty = " + uncommitted changes" if facts["suite_commit_dirty"] else ""
    expected = [
        f"suite: care-suite {facts['suite_version']} @ {facts['suite_commit'][:12]}{dirty}",
        f"lmms-eval: {facts['lmms_eval_version']}",
        f"prompt: {facts['prompt_version']}",
        f"max new tokens: {facts['max_new_tokens']}",
        f"verifier budget: {facts['verify_time_limit_s']:g} s",
    ]
    footer = latex.split("Provenance: ", 1)[1]
    for fact in expected:
        assert tables.latex_escape(fact) in footer
    blank = json.loads((runs[0] / "eval" / "step_10_blank" / "care_synth.json").read_text())[
        "provenance"
    ]["data_sha256"]
    digests = (
        f"care_synth {facts['data_sha256'][:12]} (demo_fast_seed0_sft @ step_10, "
        f"demo_fast_seed0_grpo @ step_3, demo_fast_seed0_care @ step_3); "
        f"{blank[:12]} (demo_fast_seed0_sft @ step_10_blank)"
    )
    assert tables.latex_escape(digests) in footer
    assert (
        rows["demo_fast_seed0_care @ step_3", "care_synth"]["data_sha256"] == facts["data_sha256"]
    )


def test_an_old_result_without_provenance_exports_with_not_recorded(
    fast_demo, tmp_path: Path
) -> None:
    """A GRPO result written before provenance was recorded (its block removed; the top-level
    prompt_version and a null verify_time_limit stay, as older summaries had them)."""
    out, _ = fast_demo
    runs = []
    for name in ("care", "grpo"):
        copy = tmp_path / f"demo_fast_seed0_{name}"
        shutil.copytree(
            out / f"demo_fast_seed0_{name}", copy, ignore=shutil.ignore_patterns("checkpoints")
        )
        runs.append(copy)
    old_path = runs[1] / "eval" / "step_3" / "care_synth.json"
    old = json.loads(old_path.read_text())
    del old["provenance"]
    old_path.write_text(json.dumps(old))
    facts = json.loads((runs[0] / "eval" / "step_3" / "care_synth.json").read_text())["provenance"]
    data.clear_cache()
    export.export_runs(
        runs,
        tmp_path / "out",
        engine="matplotlib",
        formats=("png",),
        baseline="demo_fast_seed0_care",
    )
    markdown = (tmp_path / "out" / "evaluation.md").read_text(encoding="utf-8")
    new, old_row = "(demo_fast_seed0_care @ step_3)", "not recorded (demo_fast_seed0_grpo @ step_3)"
    assert f"- lmms-eval: {facts['lmms_eval_version']} {new}; {old_row}" in markdown.splitlines()
    assert f"- max new tokens: {facts['max_new_tokens']} {new}; {old_row}" in markdown.splitlines()
    assert "- prompt: care-prompt-v1" in markdown.splitlines()
    data_line = f"- data sha256 (first 12 hex digits): care_synth {facts['data_sha256'][:12]} {new}; {old_row}"
    assert data_line in markdown.splitlines()
    row = evaluation_rows(tmp_path / "out")["demo_fast_seed0_grpo @ step_3", "care_synth"]
    assert (row["suite_commit"], row["max_new_tokens"], row["prompt_version"]) == (
        "",
        "",
        "care-prompt-v1",
    )
    assert row["significant"] in ("0", "1")  # still compared: the unknown digest does not block it


def test_provenance_of_a_tree_without_git_is_the_version_alone(tmp_path: Path) -> None:
    assert provenance.suite_commit(tmp_path) == (None, None)
    facts = provenance.Provenance.from_summary(
        {"provenance": {**PROVENANCE, "suite_commit": None, "suite_commit_dirty": None}}, "s.json"
    )
    assert facts.suite_text() == "care-suite 0.1.0 (no git checkout: version only)"
    dirty = provenance.Provenance.from_summary(
        {"provenance": {**PROVENANCE, "suite_commit_dirty": True}}, "s.json"
    )
    assert dirty.suite_text() == "care-suite 0.1.0 @ 0123456789ab + uncommitted changes"
    assert dirty.facts()["verifier budget"] == "0.3 s"


def test_max_new_tokens_is_read_from_lmms_evals_task_configs() -> None:
    def config(tokens: object) -> dict:
        return {"generation_kwargs": {"max_new_tokens": tokens, "until": ["<|im_end|>"]}}

    results = {"configs": {"care_synth": config(24)}}
    assert provenance.max_new_tokens_of(results, ["care_synth"], Path("r.json")) == 24
    versions = {"configs": {"a": config(2048), "b": config(1024)}}
    with pytest.raises(ValueError, match=r"r.json: the tasks \['a', 'b'\] decoded with"):
        provenance.max_new_tokens_of(versions, ["a", "b"], Path("r.json"))
    with pytest.raises(ValueError, match=r"r.json: configs.care_synth.generation_kwargs"):
        provenance.max_new_tokens_of({"configs": {}}, ["care_synth"], Path("r.json"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"task": "care_mmmu", "n": 10, "accuracy": "high"}', "field 'accuracy' must be a number"),
        ('{"task": "care_mmmu", "per_seed": {"0": 0.5}}', "field 'per_seed' must map each seed"),
        ('{"task": "care_mmmu", "n": 10, "accuracy": 45.0}', "must be a fraction in [0, 1]"),
        ('{"task": 3, "accuracy": 0.5}', "field 'task' must be the benchmark's name"),
        ('{"task": "care_mmmu", "accuracy": 0.5, "provenance": []}', "'provenance' must be an"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_bad_evaluation_summary_is_an_error_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "care_mmmu.json"
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        evaluation_table.read_summary(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert str(caught.value).count(str(path)) == 1
