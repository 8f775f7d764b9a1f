"""Names of the files inside a run folder, the schema version, and the errors of the run log.

A run folder looks like this (see docs/run_format.md for every field)::

    <run_dir>/
        config.yaml        resolved config, written once at start
        meta.json          versions, seed, host, start/end time, status
        steps.jsonl        one record per training step
        groups.jsonl       one record per prompt group per step
        samples/step_00000012.jsonl   rollout texts of step 12
        eval/              evaluation results, written by evaluation code
        trackers/          local output of the tracker mirrors (TensorBoard, W&B, MLflow)
        import.json        what `care import` read and skipped (imported runs only)
"""

from __future__ import annotations

import os
from pathlib import Path

SCHEMA_VERSION = 3
"""Version of the run-folder format this code writes; readers accept this version and older."""

PROJECTION_DIM = 32
"""Coordinates of a rollout's projected rationale embedding in ``groups.jsonl`` (``projection``)."""

CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
STEPS_FILE = "steps.jsonl"
GROUPS_FILE = "groups.jsonl"
SAMPLES_DIR = "samples"
EVAL_DIR = "eval"
TRACKERS_DIR = "trackers"
IMPORT_FILE = "import.json"

RUN_STATUSES = ("running", "finished", "crashed")

_SAMPLE_PREFIX = "step_"
_SAMPLE_SUFFIX = ".jsonl"


class RunLogError(Exception):
    """A run folder or one of its files is missing, unreadable or malformed."""


class RunExistsError(RunLogError, FileExistsError):
    """`RunWriter.create` was pointed at a folder that already holds a run."""


def sample_file(run_dir: str | os.PathLike[str], step: int) -> Path:
    """Path of the rollout-sample file of `step`.

    Example: ``sample_file("runs/a", 12)`` -> ``Path("runs/a/samples/step_00000012.jsonl")``.
    """
    return Path(run_dir) / SAMPLES_DIR / f"{_SAMPLE_PREFIX}{step:08d}{_SAMPLE_SUFFIX}"


def sample_step_of(path: Path) -> int | None:
    """The step encoded in a sample file name, or None when the name is not a sample file's.

    Example: ``sample_step_of(Path("step_00000012.jsonl"))`` -> ``12``;
    ``sample_step_of(Path("notes.txt"))`` -> ``None``.
    """
    name = path.name
    if not (name.startswith(_SAMPLE_PREFIX) and name.endswith(_SAMPLE_SUFFIX)):
        return None
    digits = name[len(_SAMPLE_PREFIX) : -len(_SAMPLE_SUFFIX)]
    return int(digits) if digits.isdigit() else None


def is_run_dir(path: Path) -> bool:
    """True when `path` holds a run: a meta.json or a steps.jsonl."""
    return (path / META_FILE).is_file() or (path / STEPS_FILE).is_file()


def list_runs(root: str | os.PathLike[str], max_depth: int = 3) -> list[Path]:
    """Run folders at `root` or below it, at most `max_depth` levels down, sorted by path.

    `root` itself counts when it is a run. The search does not descend into a run folder (its
    samples/ and eval/ are not runs) nor into hidden folders such as .git.

    Example: with runs/a/meta.json and runs/sweep/b/steps.jsonl,
    ``list_runs("runs")`` -> ``[Path("runs/a"), Path("runs/sweep/b")]``.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise ValueError(f"list_runs: root {str(root_path)!r} is not an existing folder")
    if max_depth < 0:
        raise ValueError(f"list_runs: max_depth must be >= 0, got {max_depth}")
    found: list[Path] = []
    frontier = [root_path]
    for depth in range(max_depth + 1):
        next_frontier: list[Path] = []
        for folder in frontier:
            if is_run_dir(folder):
                found.append(folder)
                continue
            if depth == max_depth:
                continue
            try:
                children = [
                    child
                    for child in folder.iterdir()
                    if child.is_dir() and not child.name.startswith(".")
                ]
            except OSError:
                # An unreadable folder (permissions, vanished mid-scan) simply holds no runs.
                continue
            next_frontier.extend(children)
        frontier = next_frontier
    return sorted(found)
