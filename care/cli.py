"""The ``care`` command line.

Each concern keeps its own sub-app next to its code and is mounted here, so this file stays a
table of contents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import care

app = typer.Typer(
    name="care",
    help="Train, evaluate and analyse vision-language models with CARE and its baselines.",
    no_args_is_help=True,
    add_completion=False,
)


def _mount_sub_apps() -> None:
    from care.data.cli import data_app
    from care.imports.cli import import_app

    app.add_typer(data_app, name="data", help="Synthesise and validate datasets.")
    app.add_typer(
        import_app,
        name="import",
        help="Turn runs trained elsewhere (verl, TRL, ...) into run folders.",
    )


_mount_sub_apps()


@app.command()
def version() -> None:
    """Print the care-suite version."""
    typer.echo(care.__version__)


@app.command()
def estimators() -> None:
    """List the registered advantage estimators and what defines each."""
    from care.algo.registry import estimator_names, get_estimator

    for name in estimator_names():
        est = get_estimator(name)
        loss = ", ".join(f"{key}={value}" for key, value in est.loss_defaults.items())
        typer.echo(f"{name:12s} {est.summary}")
        typer.echo(f"{'':12s} token weighting: {est.token_weighting}; loss: {loss}")


ConfigPath = Annotated[Path, typer.Option("--config", "-c", help="YAML config file.")]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field: --set train.steps=10 (repeatable)."),
]


def _load(config: Path, overrides: list[str] | None):
    from care.config import ConfigError, load_config

    try:
        return load_config(config, overrides or [])
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err


@app.command()
def train(
    config: ConfigPath,
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option(help="Continue from the newest checkpoint.")] = False,
) -> None:
    """Train with the configured estimator (launch with `accelerate launch -m care.cli train`
    for several processes)."""
    from care.config import ConfigError
    from care.train.trainer import Trainer

    cfg = _load(config, overrides)
    try:
        trainer = Trainer(cfg, resume=resume)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err
    if trainer.is_main:
        for change in trainer.config_changes:
            typer.echo(
                f"resume from step {trainer.start_step}: {change.describe()} "
                "(recorded in meta.json)",
                err=True,
            )
    run_dir = trainer.fit()
    typer.echo(f"run folder: {run_dir}")


@app.command()
def sft(config: ConfigPath, overrides: Overrides = None) -> None:
    """Supervised warm start on rows with a `solution`; prints the checkpoint folder."""
    from care.train.sft import run_sft

    cfg = _load(config, overrides)
    folder = run_sft(cfg)
    typer.echo(f"checkpoint: {folder}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where data and runs go.")] = Path("runs"),
    fast: Annotated[
        bool,
        typer.Option(
            help="A seconds-long run of the whole loop for tests: too small to learn, so its "
            "accuracies say nothing about the method."
        ),
    ] = False,
    seeds: Annotated[
        str,
        typer.Option(
            help="Comma-separated seeds, e.g. 0,1,2; each changes the data, the warm start and "
            "the RL sampling, and several add a mean over seeds with its interval."
        ),
    ] = "0",
    report: Annotated[
        bool,
        typer.Option(
            help="Train nothing: read the finished seeds back from --out and print their report "
            "(e.g. after running seeds as separate jobs)."
        ),
    ] = False,
    threads: Annotated[
        int,
        typer.Option(
            min=1,
            help="CPU threads for training and evaluation. A seed reproduces its numbers only "
            "at the same count (float sums are split per thread); docs/demo.md used 1.",
        ),
    ] = 1,
) -> None:
    """Synthetic task + tiny model: SFT warm start, then GRPO vs CARE, evaluated and compared."""
    from care.demo import (
        format_report,
        load_seed,
        recorded_threads,
        run_demo,
        summary_file,
        write_summary,
    )
    from care.runlog import RunLogError

    try:
        seed_list = [int(part) for part in seeds.split(",") if part.strip()]
    except ValueError as error:
        raise typer.BadParameter(f"{seeds!r} is not a comma-separated list of integers") from error
    if report:
        try:
            results = [load_seed(out, seed=seed, fast=fast) for seed in seed_list]
        except (FileNotFoundError, RunLogError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=2) from error
        try:
            known_threads = recorded_threads(out, fast=fast)
        except ValueError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=2) from error
        write_summary(out, results, fast=fast, threads=known_threads)
    else:
        results = run_demo(
            out, seeds=seed_list, fast=fast, progress=not fast, echo=typer.echo, threads=threads
        )
    typer.echo("")
    typer.echo(format_report(results))
    if fast:
        typer.echo(
            "--fast checks the loop end to end on a few dozen rows and steps; it is too small "
            "to learn. `care demo` (no --fast) is the run whose gains mean something."
        )
        typer.echo("")
    typer.echo("runs:")
    for result in results:
        for model in result.models:
            typer.echo(f"  seed {result.seed} {model.name:18s} {model.run_dir}")
    typer.echo("")
    typer.echo(f"summary:        {summary_file(out, fast=fast)}")
    typer.echo(f"browse them:    care dashboard --runs {out}")
    typer.echo(f"inspect a run:  care inspect {results[-1].models[-1].run_dir}")


@app.command("eval")
def eval_checkpoint(
    checkpoint: Annotated[Path, typer.Option(help="Model folder, e.g. <run>/checkpoints/step_N.")],
    tasks: Annotated[
        str, typer.Option(help="Comma-separated tasks or groups (care_six, care_synth, ...).")
    ] = "care_six",
    data_root: Annotated[
        Path | None,
        typer.Option(
            help="Folder with the benchmarks as <owner>/<name>/ (default: $CARE_DATA_ROOT)."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="First N documents of each task.")] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated evaluation seeds.")] = "0",
    force: Annotated[bool, typer.Option(help="Redo benchmarks that already finished.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: <run>/eval/<checkpoint-name>).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Questions decoded together.")] = 8,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Override the tasks' max_new_tokens.")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Override the tasks' temperature (0 = greedy).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: auto).")] = None,
    dtype: Annotated[str, typer.Option(help="auto, bfloat16, float16 or float32.")] = "auto",
    engine: Annotated[
        str, typer.Option(help="Rollout engine: hf (transformers) or vllm (needs vLLM).")
    ] = "hf",
    csv: Annotated[bool, typer.Option("--csv", help="Print the table as CSV.")] = False,
    verify_time_limit: Annotated[
        float | None,
        typer.Option(
            help="Seconds math-verify may spend on one answer (default 0.3); rows that run out "
            "are counted as timeouts in each benchmark's summary."
        ),
    ] = None,
) -> None:
    """Score a checkpoint on the benchmarks through lmms-eval (offline) and print the table;
    exits 1 when any benchmark fails, 2 on bad arguments or data."""
    import os

    from pydantic import ValidationError

    from evaluation.runner import EvalError, EvalSettings, parse_seeds, run_eval, settings_error
    from evaluation.tasks import DATA_ROOT_ENV

    try:
        root = data_root or (
            Path(os.environ[DATA_ROOT_ENV]) if os.environ.get(DATA_ROOT_ENV) else None
        )
        if root is None:
            raise EvalError(
                f"give --data-root DIR (or set {DATA_ROOT_ENV}): the folder holding the benchmarks"
            )
        try:
            settings = EvalSettings(
                checkpoint=checkpoint,
                data_root=root,
                tasks=tuple(name.strip() for name in tasks.split(",") if name.strip()),
                seeds=parse_seeds(seeds),
                limit=limit,
                out_dir=out,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                engine=engine,
                device=device,
                dtype=dtype,
                force=force,
                verify_time_limit=verify_time_limit,
            )
        except ValidationError as error:
            raise settings_error(error) from None
        report = run_eval(settings, echo=lambda line: typer.echo(line, err=True))
    except EvalError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err
    typer.echo(report.csv() if csv and report.table is not None else report.markdown())
    typer.echo(f"results: {report.out_dir}", err=True)
    if not report.ok:
        for benchmark, reason in report.failures.items():
            typer.echo(f"failed: {benchmark}: {reason}", err=True)
        raise typer.Exit(code=1)


@app.command("compare")
def compare_command(
    a: Annotated[Path, typer.Argument(help="Baseline: an eval output folder or a checkpoint.")],
    b: Annotated[Path, typer.Argument(help="Compared with A: the same kinds of path.")],
    items_csv: Annotated[
        Path | None,
        typer.Option(
            "--items-csv", help="Where the per-item diff goes (default: <B>/compare.csv)."
        ),
    ] = None,
    resamples: Annotated[int, typer.Option(help="Paired-bootstrap resamples.")] = 10_000,
) -> None:
    """B - A per benchmark and macro: paired-bootstrap 95 % interval, exact McNemar p (Holm
    across benchmarks), fixed/broken/both right/both wrong; writes the per-item diff as CSV."""
    from evaluation import compare

    try:
        rows, pairs = compare.compare_folders(
            a, b, resamples=resamples, note=lambda line: typer.echo(f"note: {line}", err=True)
        )
        csv_path = items_csv or compare.results_folder(b) / "compare.csv"
    except (compare.CompareError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err
    typer.echo(compare.to_markdown(rows), nl=False)
    csv_path.write_text(compare.items_csv(pairs), encoding="utf-8")
    typer.echo(f"per-item diff: {csv_path}", err=True)


@app.command("errors")
def errors_command(
    paths: Annotated[
        list[Path], typer.Argument(help="Eval output folders or evaluated checkpoints.")
    ],
) -> None:
    """Count each benchmark's items by error type (rule-based, docs/statistics.md) per path."""
    from evaluation import compare, taxonomy

    counts = {}
    try:
        for path in paths:
            items = compare.load_items(compare.results_folder(path))
            counts[str(path)] = {
                benchmark: dict.fromkeys(taxonomy.ERROR_TYPES, 0) for benchmark in items
            }
            for benchmark, rows in items.items():
                for item in rows:
                    counts[str(path)][benchmark][item.error] += 1
    except (compare.CompareError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err
    typer.echo(taxonomy.taxonomy_markdown(counts), nl=False)


@app.command("inspect")
def inspect_run(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder (holds meta.json and steps.jsonl).")
    ],
) -> None:
    """Summarise a run folder and report every corrupt log line (and every malformed record)
    with file:line."""
    from care.runlog import SCHEMA_VERSION, RunLogError, RunReader

    try:
        run = RunReader(run_dir, on_corrupt="warn")
        meta, steps, groups = run.meta, run.steps, run.groups
        rollouts = sum(len(run.samples(step)) for step in run.sample_steps)
    except RunLogError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from err
    estimator = run.config.get("algo", {}).get("estimator", "?") if run.config else "?"
    typer.echo(f"run:       {run_dir}")
    version = meta.get("schema_version", "?")
    read_as = f", read as {SCHEMA_VERSION}" if version != SCHEMA_VERSION else ""
    typer.echo(f"status:    {meta.get('status', '?')}  (schema {version}{read_as})")
    typer.echo(f"estimator: {estimator}")
    typer.echo(f"steps:     {len(steps)} logged, last step {steps[-1]['step'] if steps else '-'}")
    mixed = sum(0 < group.n_correct < group.G for group in groups)
    all_wrong = sum(group.n_correct == 0 for group in groups)
    repairs = sum(group.rgr is not None and group.rgr.triggered for group in groups)
    typer.echo(
        f"groups:    {len(groups)} records ({mixed} mixed, {all_wrong} all wrong, "
        f"{len(groups) - mixed - all_wrong} all correct; {sum(g.rescued for g in groups)} "
        f"rescued, {repairs} RGR repairs)"
    )
    typer.echo(f"samples:   {rollouts} rollout texts in {len(run.sample_steps)} steps")
    for warning in run.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if run.warnings:
        raise typer.Exit(code=2)


@app.command()
def dashboard(
    runs: Annotated[Path, typer.Option(help="Folder holding the run folders.")] = Path("runs"),
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8501,
    address: Annotated[
        str, typer.Option(help="Interface to bind; the default keeps it on this machine.")
    ] = "127.0.0.1",
) -> None:
    """Serve the analysis dashboard (Streamlit) over the runs under --runs."""
    import os
    import sys

    if not 1 <= port <= 65535:
        typer.echo(f"error: --port must be in 1..65535, got {port}", err=True)
        raise typer.Exit(code=2)
    if not runs.is_dir():
        typer.echo(f"error: --runs {runs} is not a folder", err=True)
        raise typer.Exit(code=2)
    entry = Path(__file__).resolve().parents[1] / "analysis_app" / "app.py"
    command = [
        sys.executable, "-m", "streamlit", "run", str(entry),
        "--server.address", address,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        # The app draws its own page links (they carry the URL's view state).
        "--client.showSidebarNavigation", "false",
    ]  # fmt: skip
    env = {**os.environ, "CARE_RUNS_DIR": str(runs.resolve())}
    typer.echo(f"dashboard over {runs.resolve()} at http://{address}:{port}")
    # Become the server (no child process): a stop signal reaches Streamlit itself and no
    # orphaned server survives this command.
    sys.stdout.flush()
    os.execve(sys.executable, command, env)


@app.command("export")
def export_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders to export.")],
    out: Annotated[Path, typer.Option(help="Folder for the tables and figures.")],
    smoothing: Annotated[float, typer.Option(help="EMA weight of the curves, in [0, 1).")] = 0.6,
    engine: Annotated[
        str,
        typer.Option(help="Figure engine: auto (kaleido, else matplotlib), kaleido, matplotlib."),
    ] = "auto",
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Mark evaluation cells that differ from this run's last evaluated checkpoint "
            "(its folder name) or from a row 'run @ checkpoint' (McNemar, Holm)."
        ),
    ] = None,
) -> None:
    """Write the runs' tables (LaTeX, CSV, Markdown) and figures (PNG, PDF, SVG) to --out."""
    from analysis_app.export import export_runs

    try:
        report = export_runs(
            run_dirs,
            out,
            smoothing=smoothing,
            engine=engine,  # type: ignore[arg-type]
            baseline=baseline,
        )
    except (ValueError, RuntimeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err
    for notice in report.notices:
        typer.echo(f"note: {notice}")
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"wrote {len(report.files)} files to {out} (figures: {report.figure_engine})")
    for path in report.files:
        typer.echo(f"  {path}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # `python -m care.cli` (used by `accelerate launch -m care.cli`)
    main()
