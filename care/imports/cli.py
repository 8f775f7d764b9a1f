"""``care import``: runs trained elsewhere as run folders (docs/import.md).

    care import verl ckpt/rollout_data_dir --out runs/verl_grpo
    care import rollouts rollouts.parquet --out runs/trl_grpo

Exit status: 0 when the run folder was written (skipped lines are listed on stderr and in
``<run>/import.json``), 2 when the input cannot be imported or the output folder holds a run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

import_app = typer.Typer(no_args_is_help=True, add_completion=False)

SHOWN_WARNINGS = 20

Out = Annotated[Path, typer.Option("--out", help="Run folder to write (e.g. runs/verl_grpo).")]
Verify = Annotated[
    bool,
    typer.Option(
        help="Re-check responses that have a gold answer with this suite's verifier (agreement "
        "with the source's reward; slower)."
    ),
]
AdvantageOption = Annotated[
    str, typer.Option(help="grpo (z-score in the group, verl's default) or dr_grpo (centred).")
]
SamplesEvery = Annotated[
    int, typer.Option(help="Write the rollout texts every N steps (0: never).", min=0)
]
Overwrite = Annotated[bool, typer.Option(help="Replace a run already in --out.")]


def _run(source_kind: str, path: Path, out: Path, options_kwargs: dict) -> None:
    from tqdm.auto import tqdm

    from care.imports import (
        CORRECT_SOURCES,
        ImportInputError,
        ImportOptions,
        RolloutFiles,
        VerlDump,
        import_run,
    )
    from care.runlog import RunExistsError

    try:
        options = ImportOptions(**options_kwargs)
        source = VerlDump(path) if source_kind == "verl" else RolloutFiles(path)
    except (ImportInputError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from error
    total = len(source.step_files) if isinstance(source, VerlDump) else None
    # The bar only on a terminal: in a log file its carriage returns would garble the warnings.
    quiet = not sys.stderr.isatty()
    with tqdm(
        total=total, desc=f"import {source_kind}", unit="step", leave=False, disable=quiet
    ) as bar:
        try:
            report = import_run(source, out, options, on_step=lambda _: bar.update(1))
        except (ImportInputError, RunExistsError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=2) from error
    for warning in report.warnings[:SHOWN_WARNINGS]:
        typer.echo(f"warning: {warning}", err=True)
    if report.skipped_lines > SHOWN_WARNINGS:
        typer.echo(
            f"warning: ... {report.skipped_lines - SHOWN_WARNINGS} more skipped lines "
            f"(listed in {out / 'import.json'})",
            err=True,
        )
    for note, count in sorted(report.notes.items()):
        typer.echo(f"note: {count} × {note}", err=True)
    if report.ignored_files:
        typer.echo(f"note: not step files, ignored: {', '.join(report.ignored_files)}", err=True)
    for step in report.empty_steps:
        typer.echo(f"note: step {step} has no usable rollout; no records written for it", err=True)
    sources = ", ".join(f"{name} {report.correct_sources[name]}" for name in CORRECT_SOURCES)
    typer.echo(f"run folder:   {out}")
    typer.echo(
        f"read:         {report.steps} steps, {report.rollouts} rollouts in {report.groups} "
        f"groups; skipped lines: {report.skipped_lines}"
    )
    typer.echo(f"correct from: {sources} (rollouts)")
    agreement = report.agreement
    typer.echo(
        "verifier:     "
        + (
            f"agrees with the source's verdict on {agreement:.1%} of {report.verify_checked} "
            "rollouts with a gold answer"
            if agreement is not None
            else "not run (no gold answers, or --no-verify)"
        )
    )
    typer.echo(f"zero-signal steps (no group with an advantage): {report.zero_signal_steps}")
    typer.echo(
        f"throughput:   {report.rollouts_per_second:,.0f} rollouts/s ({report.seconds:.2f} s)"
    )
    typer.echo(f"browse it:    care dashboard --runs {out.parent}")


@import_app.command("verl")
def import_verl(
    dump_dir: Annotated[
        Path, typer.Argument(help="verl's trainer.rollout_data_dir: one <step>.jsonl per step.")
    ],
    out: Out,
    verify: Verify = True,
    advantage: AdvantageOption = "grpo",
    samples_every: SamplesEvery = 1,
    overwrite: Overwrite = False,
) -> None:
    """A verl rollout dump (or a fork's in the same format) as a run folder."""
    _run(
        "verl",
        dump_dir,
        out,
        dict(verify=verify, advantage=advantage, samples_every=samples_every, overwrite=overwrite),
    )


@import_app.command("rollouts")
def import_rollouts(
    path: Annotated[
        Path,
        typer.Argument(
            help="JSONL or parquet file (or a folder of them) with step, prompt_id, response, "
            "reward and optionally correct, answer, answer_type, prompt."
        ),
    ],
    out: Out,
    verify: Verify = True,
    advantage: AdvantageOption = "grpo",
    samples_every: SamplesEvery = 1,
    overwrite: Overwrite = False,
) -> None:
    """Rollouts in the generic schema (TRL or any trainer) as a run folder."""
    _run(
        "rollouts",
        path,
        out,
        dict(verify=verify, advantage=advantage, samples_every=samples_every, overwrite=overwrite),
    )
