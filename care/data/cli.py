"""`care data ...`: write the synthetic dataset, validate a dataset file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from care.data.dataset import load_examples
from care.data.synth import DEMO_MIX, DIFFICULTIES, FAMILIES, write_synthetic_dataset

data_app = typer.Typer(
    name="data",
    help="Synthetic visual-reasoning data and dataset validation.",
    no_args_is_help=True,
    add_completion=False,
)


def parse_mix(text: str, allowed: tuple[Any, ...], name: str) -> dict[Any, float]:
    """A mix from the command line: "a,b" (equal weights) or "a:2,b:1" (relative weights).

    >>> parse_mix("1:0.5,3", (1, 2, 3), "--difficulty")
    {1: 0.5, 3: 1.0}
    """
    as_int = all(isinstance(value, int) for value in allowed)
    mix: dict[Any, float] = {}
    for part in text.split(","):
        key_text, _, weight_text = part.strip().partition(":")
        try:
            key: Any = int(key_text) if as_int else key_text.strip()
            weight = float(weight_text) if weight_text else 1.0
        except ValueError as error:
            raise typer.BadParameter(
                f"{part!r} is not NAME or NAME:WEIGHT", param_hint=name
            ) from error
        if key not in allowed:
            raise typer.BadParameter(
                f"unknown entry {key_text!r}; allowed: {', '.join(map(str, allowed))}",
                param_hint=name,
            )
        if weight < 0:
            raise typer.BadParameter(f"weight of {key_text!r} is negative", param_hint=name)
        mix[key] = weight
    return mix


@data_app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset into.")],
    seed: Annotated[int, typer.Option(help="Seed; the same seed writes identical files.")] = 0,
    train: Annotated[int, typer.Option("--train", min=0, help="Training problems.")] = 2000,
    test: Annotated[int, typer.Option("--test", min=0, help="Test problems.")] = 200,
    val: Annotated[
        int,
        typer.Option("--val", min=0, help="Validation problems (val.jsonl; 0 writes none)."),
    ] = 0,
    image_size: Annotated[
        int,
        typer.Option(
            help="Side of a level-3 image in px, a multiple of 4 (levels 1, 2: 1/2, 3/4 of it)."
        ),
    ] = 112,
    families: Annotated[
        str | None,
        typer.Option(help=f"Families, 'a,b' or 'a:2,b:1'; any of {', '.join(FAMILIES)}."),
    ] = None,
    difficulty: Annotated[
        str | None, typer.Option(help="Difficulty levels, '1,2,3' or '1:0.4,2:0.4,3:0.2'.")
    ] = None,
    multiple_choice_share: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Share of integer problems asked as multiple choice."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a dataset already in --out.")] = False,
) -> None:
    """Write train.jsonl, test.jsonl, images/ and synth_meta.json, and val.jsonl with --val
    (default mix: DEMO_MIX)."""
    family_mix = parse_mix(families, FAMILIES, "--families") if families else DEMO_MIX.families
    level_mix = (
        parse_mix(difficulty, DIFFICULTIES, "--difficulty") if difficulty else DEMO_MIX.difficulty
    )
    share = (
        DEMO_MIX.multiple_choice_share if multiple_choice_share is None else multiple_choice_share
    )
    try:
        dataset = write_synthetic_dataset(
            out,
            seed,
            train,
            test,
            families=family_mix,
            difficulty_mix=level_mix,
            image_size=image_size,
            multiple_choice_share=share,
            n_val=val,
            overwrite=overwrite,
        )
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error

    for split, summary in dataset.meta["splits"].items():
        typer.echo(f"{split}: {summary['n']} problems")
        levels = [str(level) for level in DIFFICULTIES]
        typer.echo(
            f"  {'family':<12}" + "".join(f"{'level ' + lv:>9}" for lv in levels) + f"{'total':>8}"
        )
        for family, per_level in summary["family_difficulty"].items():
            cells = "".join(f"{per_level.get(lv, 0):>9}" for lv in levels)
            typer.echo(f"  {family:<12}{cells}{sum(per_level.values()):>8}")
        answer_types = ", ".join(f"{k} {v}" for k, v in summary["answer_type"].items())
        typer.echo(f"  answer types: {answer_types}")
    written = [dataset.train_path, dataset.test_path]
    if dataset.val_path is not None:
        written.append(dataset.val_path)
    typer.echo(f"wrote {', '.join(map(str, written))}")
    typer.echo(f"      {dataset.out_dir / 'images'}/, {dataset.out_dir / 'synth_meta.json'}")


@data_app.command("validate")
def validate(
    path: Annotated[Path, typer.Argument(help="A .jsonl or .parquet dataset file.")],
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Report bad rows but exit 0 (as on_bad_row=skip).")
    ] = False,
    check_images: Annotated[
        bool, typer.Option(help="Open every image file to check that it decodes.")
    ] = True,
) -> None:
    """Count the good rows and list every bad row as file:row:field: reason."""
    try:
        dataset = load_examples(path, on_bad_row="skip", check_images=check_images)
    except (FileNotFoundError, ValueError, ImportError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    for bad_row in dataset.skipped:
        for line in bad_row.lines():
            typer.echo(line)
    typer.echo(f"{path}: {len(dataset.examples)} good rows, {len(dataset.skipped)} bad rows")
    if dataset.skipped and not skip_bad:
        raise typer.Exit(1)
