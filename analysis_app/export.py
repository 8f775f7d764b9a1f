"""`care export RUN... --out DIR`: the dashboard's tables and figures as files for a paper.

Tables go out as LaTeX (booktabs, best value bold), CSV and Markdown; figures as PNG, PDF and SVG.
The evaluation table carries 95 % intervals, marks against ``--baseline`` and a provenance footer
(`analysis_app.evaluation_table`).
Figures are rendered by kaleido, which drives a Chrome/Chromium binary (Debian's ``chromium``
works offline). Without a browser, or when kaleido fails, the same plotly figures are redrawn
with matplotlib and the report says so — never a silent change of look.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import plotly.graph_objects as go

from analysis_app import data, evaluation_table, figures, seeds, tables
from care.runlog import RunLogError

FIGURE_FORMATS = ("png", "pdf", "svg")
FIGURE_WIDTH = 900
FIGURE_HEIGHT = 450
PNG_SCALE = 2
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

Engine = Literal["auto", "kaleido", "matplotlib"]


@dataclass
class ExportReport:
    """What `export_runs` wrote: files, the figure engine used, notices for the user."""

    files: list[Path] = field(default_factory=list)
    figure_engine: str = ""
    notices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_browser() -> str | None:
    """The Chrome/Chromium kaleido can drive: ``$BROWSER_PATH`` if it exists, else the first of
    `BROWSER_NAMES` on PATH; None when there is none."""
    configured = os.environ.get("BROWSER_PATH")
    if configured and Path(configured).is_file():
        return configured
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _write_with_kaleido(
    named: dict[str, go.Figure],
    out_dir: Path,
    formats: Sequence[str],
    browser: str,
    notices: list[str],
) -> list[Path]:
    """Every figure in every format through kaleido, in one batch.

    plotly's batch writer does not raise when kaleido fails a render (kaleido returns the error
    and plotly drops it; seen once under load: no PNG, no error). The batch writes into a fresh
    folder beside `out_dir`; a file it did not write is rendered again on its own, with a
    notice; one still missing raises, naming it, and leaves `out_dir` as it was. The files
    then replace those of an earlier export.
    """
    import plotly.io as pio

    # kaleido (choreographer) honours BROWSER_PATH; set it so it never tries to download Chrome.
    os.environ.setdefault("BROWSER_PATH", browser)
    batch_figures, paths, scales = [], [], []
    for name, figure in named.items():
        for extension in formats:
            batch_figures.append(figure)
            paths.append(out_dir / f"{name}.{extension}")
            scales.append(PNG_SCALE if extension == "png" else 1)
    size = {"width": FIGURE_WIDTH, "height": FIGURE_HEIGHT}
    with tempfile.TemporaryDirectory(prefix=".kaleido-", dir=out_dir) as folder:
        staged = [Path(folder) / path.name for path in paths]
        pio.write_images(batch_figures, staged, scale=scales, **size)
        missed = [i for i, path in enumerate(staged) if not _has_bytes(path)]
        if missed:
            notices.append(
                f"kaleido did not write {', '.join(paths[i].name for i in missed)} in its "
                "batch; rendered again one by one"
            )
            for i in missed:
                pio.write_image(batch_figures[i], staged[i], scale=scales[i], **size)
            still = [str(paths[i]) for i in missed if not _has_bytes(staged[i])]
            if still:
                raise RuntimeError(f"kaleido wrote no file for: {', '.join(still)}")
        for source, path in zip(staged, paths, strict=True):
            os.replace(source, path)
    return paths


def _has_bytes(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _write_with_matplotlib(
    named: dict[str, go.Figure], out_dir: Path, formats: Sequence[str]
) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = []
    for name, figure in named.items():
        mpl_figure = figures.to_matplotlib(figure)
        try:
            for extension in formats:
                path = out_dir / f"{name}.{extension}"
                mpl_figure.savefig(path, format=extension, dpi=200 if extension == "png" else None)
                paths.append(path)
        finally:
            plt.close(mpl_figure)
    return paths


def write_figures(
    named: dict[str, go.Figure],
    out_dir: Path,
    *,
    formats: Sequence[str] = FIGURE_FORMATS,
    engine: Engine = "auto",
) -> tuple[list[Path], str, list[str]]:
    """Write each figure as ``<out_dir>/<name>.<format>``.

    engine "auto": kaleido when a browser is found, else matplotlib; a kaleido failure falls
    back to matplotlib too. "kaleido" fails loudly instead of falling back.

    Returns:
        (paths written, engine used, notices to print).
    """
    unknown = [f for f in formats if f not in FIGURE_FORMATS]
    if unknown:
        raise ValueError(f"formats: {unknown} not supported; choose from {FIGURE_FORMATS}")
    if engine not in ("auto", "kaleido", "matplotlib"):
        raise ValueError(f"engine must be 'auto', 'kaleido' or 'matplotlib', got {engine!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not named:
        return [], "none", []
    notices: list[str] = []
    if engine in ("auto", "kaleido"):
        browser = find_browser()
        if browser is None:
            message = (
                "no Chrome/Chromium found for kaleido (install Debian's chromium: "
                "apt-get install -y chromium); figures drawn with matplotlib instead"
            )
            if engine == "kaleido":
                raise RuntimeError(message)
            notices.append(message)
        else:
            try:
                paths = _write_with_kaleido(named, out_dir, formats, browser, notices)
                return paths, "kaleido", notices
            except Exception as error:  # kaleido raises many types (browser crash, timeout).
                if engine == "kaleido":
                    raise
                notices.append(
                    f"kaleido could not render with {browser} ({type(error).__name__}: {error}); "
                    "figures drawn with matplotlib instead"
                )
    return _write_with_matplotlib(named, out_dir, formats), "matplotlib", notices


def _write_table(
    frame: pd.DataFrame,
    out_dir: Path,
    name: str,
    caption: str,
    digits: int = 3,
    best: dict[str, tables.Direction] | None = None,
) -> list[Path]:
    paths = [out_dir / f"{name}.tex", out_dir / f"{name}.csv", out_dir / f"{name}.md"]
    latex = tables.to_latex(frame, best, digits=digits, caption=caption, label=f"tab:{name}")
    paths[0].write_text(latex, encoding="utf-8")
    paths[1].write_text(tables.to_csv(frame), encoding="utf-8")
    markdown = tables.to_markdown(frame, best, digits=digits)
    paths[2].write_text(markdown, encoding="utf-8")
    return paths


def _write_evaluation_table(table: evaluation_table.IntervalTable, out_dir: Path) -> list[Path]:
    paths = [out_dir / f"evaluation.{suffix}" for suffix in ("tex", "csv", "md")]
    caption = "Accuracy (%) per benchmark and macro average, with 95 % intervals"
    latex = evaluation_table.to_latex(table, caption=caption, label="tab:evaluation")
    paths[0].write_text(latex, encoding="utf-8")
    paths[1].write_text(evaluation_table.to_csv(table), encoding="utf-8")
    paths[2].write_text(evaluation_table.to_markdown(table), encoding="utf-8")
    return paths


def run_labels(run_dirs: Sequence[Path]) -> dict[str, Path]:
    """Short unique labels for run folders: the folder name, with parents added on a clash.

    Example: [a/x, b/x, c/y] -> {"a/x": ..., "b/x": ..., "y": ...}.
    """
    resolved = [Path(p).resolve() for p in run_dirs]
    depth = {path: 1 for path in resolved}
    while True:
        labels = {path: "/".join(path.parts[-depth[path] :]) for path in resolved}
        counts: dict[str, int] = {}
        for label in labels.values():
            counts[label] = counts.get(label, 0) + 1
        clashing = [p for p in resolved if counts[labels[p]] > 1 and depth[p] < len(p.parts)]
        if not clashing:
            return {labels[path]: path for path in resolved}
        for path in clashing:
            depth[path] += 1


def write_seed_group_smoothness(
    smoothness: pd.DataFrame, runs: dict[str, Path], out_dir: Path
) -> tuple[list[Path], list[str]]:
    """``smoothness_seeds.{tex,csv,md}`` when two or more of `runs` differ only by seed
    (`analysis_app.seeds`): the `smoothness` table of the runs (`tables.smoothness_table`) with
    each seed group's mean and ± 95 % rows
    (`tables.seed_group_smoothness_table`, nothing bold: a half-width is no score). Nothing
    otherwise. Returns the files written and a warning for each unreadable config.
    """
    configs, warnings = data.configs_of_runs(runs)
    groups = seeds.several(seeds.seed_groups(configs))
    if not groups:
        return [], warnings
    table = tables.seed_group_smoothness_table(smoothness, groups)
    caption = "Training smoothness per run and per seed group (mean and 95 % half-width)"
    return _write_table(table, out_dir, "smoothness_seeds", caption, digits=4, best={}), warnings


def export_runs(
    run_dirs: Sequence[Path],
    out_dir: Path,
    *,
    smoothing: float = 0.6,
    engine: Engine = "auto",
    formats: Sequence[str] = FIGURE_FORMATS,
    paper_reference: Path | None = None,
    baseline: str | None = None,
) -> ExportReport:
    """Write every table and figure of the given runs into `out_dir`.

    Tables: signal_summary, smoothness, smoothness_seeds (runs that differ only by seed),
    compare (two or more runs), evaluation and
    evaluation_delta (runs with evaluation results). Figures: failure_share, group_types,
    rescue_rgr, variance_ratio (when logged), accuracy and reward (raw faint under the EMA),
    eval_accuracy (when evaluated). `baseline` (a run label, i.e. its folder name, or a row
    label "run @ checkpoint") is the checkpoint the evaluation table marks differences from.

    Raises:
        ValueError: no runs given, a path that is no run folder (named), a `baseline` that is
            no evaluated run, or an evaluation summary with a bad field (file and field named).
    """
    if not run_dirs:
        raise ValueError("run_dirs: give at least one run folder")
    for path in run_dirs:
        if not Path(path).is_dir() or not (
            (Path(path) / "meta.json").is_file() or (Path(path) / "steps.jsonl").is_file()
        ):
            raise ValueError(f"run {path}: not a run folder (no meta.json or steps.jsonl)")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ExportReport()
    runs = run_labels(run_dirs)
    try:
        steps, warnings = data.steps_of_runs(runs)
        evaluation, eval_warnings = data.eval_of_runs(runs)
    except RunLogError as error:
        raise ValueError(str(error)) from error
    report.warnings.extend(warnings + eval_warnings)
    if baseline is not None:
        # Checked before any file is written.
        if not len(evaluation):
            raise ValueError(f"baseline {baseline!r}: none of the runs has evaluation results")
        baseline = evaluation_table.resolve_baseline(baseline, evaluation)
    try:
        paper: data.PaperReference | None = data.load_paper_reference(paper_reference)
    except ValueError as error:
        paper = None
        report.notices.append(f"paper reference not loaded ({error}); evaluation tables without it")

    report.files += _write_table(
        tables.signal_summary_table(steps),
        out_dir,
        "signal_summary",
        "Learning-signal metrics, mean over training steps",
    )
    smoothness = tables.smoothness_table(steps)
    report.files += _write_table(
        smoothness,
        out_dir,
        "smoothness",
        "Training smoothness (lower is smoother)",
        digits=4,
    )
    seed_files, seed_warnings = write_seed_group_smoothness(smoothness, runs, out_dir)
    report.files += seed_files
    report.warnings += seed_warnings
    if len(runs) > 1:
        compare = tables.compare_table(
            steps, ["acc/mean", "reward/mean", "signal/failure_share_seq"], smoothing=smoothing
        ).set_index(["metric", "run"])
        compare.index = [f"{metric} · {run}" for metric, run in compare.index]
        compare.index.name = "metric · run"
        report.files += _write_table(compare, out_dir, "compare", "Runs compared", digits=4)
    if len(evaluation):
        intervals = evaluation_table.interval_table(evaluation, runs, paper, baseline)
        report.files += _write_evaluation_table(intervals, out_dir)
        report.notices += evaluation_table.untested_notes(intervals)
        table = intervals.estimate
        if paper is not None:
            estimator = data.estimator_of(
                data.load_config(next(iter(runs.values()))),
                data.load_steps(next(iter(runs.values()))),
            )
            reference = tables.default_paper_row(paper, estimator)
            delta = tables.eval_delta_table(table, reference)
            if delta.shape[1]:
                report.files += _write_table(
                    delta,
                    out_dir,
                    "evaluation_delta",
                    f"Difference to {reference} (points)",
                    digits=2,
                )

    named = figures.signal_figures(steps, smoothing, logged_only=True)
    for metric, name in (("acc/mean", "accuracy"), ("reward/mean", "reward")):
        if figures.has_metrics(steps, [metric]):
            named[name] = figures.smoothed_metric_figure(steps, metric, smoothing)
    if len(evaluation):
        macros = tables.checkpoint_macros(evaluation)
        named["eval_accuracy"] = figures.eval_accuracy_figure(evaluation, macros)
    paths, engine_used, notices = write_figures(named, out_dir, formats=formats, engine=engine)
    report.files += paths
    report.figure_engine = engine_used
    report.notices += notices
    return report
