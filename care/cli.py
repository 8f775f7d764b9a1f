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

    app.add_typer(data_app, name="data", help="Synthesise and validate datasets.")


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
    from care.train.trainer import Trainer

    cfg = _load(config, overrides)
    run_dir = Trainer(cfg, resume=resume).fit()
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
    fast: Annotated[bool, typer.Option(help="A seconds-long version for tests.")] = False,
    seed: Annotated[int, typer.Option(help="Training seed (the data stay the same).")] = 0,
) -> None:
    """Synthetic task + tiny model: SFT warm start, then GRPO vs CARE, evaluated and compared."""
    from care.demo import format_table, run_demo

    rows = run_demo(out, fast=fast, seed=seed)
    typer.echo("")
    typer.echo(format_table(rows))
    typer.echo("")
    typer.echo("runs:")
    for row in rows:
        typer.echo(f"  {row.estimator:18s} {row.run_dir}")
    typer.echo("")
    typer.echo(f"inspect a run:  care inspect {rows[-1].run_dir}")


@app.command("inspect")
def inspect_run(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (holds meta.json and steps.jsonl).")],
) -> None:
    """Summarise a run folder and report every corrupt log line with file:line."""
    from care.runlog import RunLogError, RunReader

    try:
        run = RunReader(run_dir, on_corrupt="warn")
        meta, steps, groups = run.meta, run.steps, run.groups
    except RunLogError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from err
    estimator = run.config.get("algo", {}).get("estimator", "?") if run.config else "?"
    typer.echo(f"run:       {run_dir}")
    typer.echo(f"status:    {meta.get('status', '?')}  (schema {meta.get('schema_version', '?')})")
    typer.echo(f"estimator: {estimator}")
    typer.echo(f"steps:     {len(steps)} logged, last step {steps[-1]['step'] if steps else '-'}")
    typer.echo(f"groups:    {len(groups)} records")
    for warning in run.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if run.warnings:
        raise typer.Exit(code=2)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # `python -m care.cli` (used by `accelerate launch -m care.cli`)
    main()
