"""What an evaluation ran with, recorded in its ``<benchmark>.json`` when it is written, so that
an exported table can say it without asking today's environment.

`evaluation.runner` adds the ``provenance`` block (`environment`, `data_record`, then the
decoding facts of `max_new_tokens_of` and the verifier budget):

    "provenance": {
      "suite_version": "0.1.0",
      "suite_commit": "cebdc532c7c8…",   # git rev-parse HEAD of the source tree; null: no git
      "suite_commit_dirty": false,        # that tree had uncommitted changes (null: no git)
      "lmms_eval_version": "0.7.3",       # the installed package lmms-eval ran from
      "prompt_version": "care-prompt-v1",
      "max_new_tokens": 2048,             # as lmms-eval's task config decoded (overrides applied)
      "verify_time_limit_s": 0.3,         # the verifier's budget per answer, default resolved
      "data_sha256": "9c1f…",             # one digest over the files listed below
      "data_files": ["AI4Math/MathVista/data/testmini-00000-of-00001.parquet"]
    }

`Provenance.from_summary` reads the block back; a fact an older summary lacks is None and
reads "not recorded" (`Provenance.facts`).

    >>> Provenance.from_summary({"task": "care_synth"}, "x.json").facts()["prompt"]
    'not recorded'
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import care
from care.prompts import PROMPT_VERSION

REPO_ROOT = Path(__file__).resolve().parents[1]
NOT_RECORDED = "not recorded"
HASH_PREFIX = 12
"""Hex digits of a digest shown in tables (48 bits: a clash between two data versions is
out of the question)."""

FACTS = ("suite", "lmms-eval", "prompt", "max new tokens", "verifier budget")
"""The footer's facts of every evaluation, in order; the data digest is per benchmark."""


def suite_commit(root: Path = REPO_ROOT) -> tuple[str | None, bool | None]:
    """(``git rev-parse HEAD`` of `root`, whether tracked files differ from it); (None, None)
    when `root` is no git checkout (an installed package) or git is missing."""
    try:
        commit = _git(root, "rev-parse", "HEAD")
        changes = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(changes)


def _git(root: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return completed.stdout.strip()


def environment() -> dict[str, Any]:
    """The facts that hold for every benchmark of one ``care eval``: suite version and commit,
    the lmms-eval version (the subprocess runs this interpreter's package) and the prompt
    version."""
    commit, dirty = suite_commit()
    try:
        lmms_eval_version: str | None = importlib.metadata.version("lmms_eval")
    except importlib.metadata.PackageNotFoundError:
        lmms_eval_version = None
    return {
        "suite_version": care.__version__,
        "suite_commit": commit,
        "suite_commit_dirty": dirty,
        "lmms_eval_version": lmms_eval_version,
        "prompt_version": PROMPT_VERSION,
    }


def data_files(resolved: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Every file the evaluation reads for a benchmark's tasks (`evaluation.tasks.check_columns`
    results): the data files, and for JSON-lines data (care_synth) the images its rows name."""
    files: set[Path] = set()
    for entry in resolved:
        for name in entry["files"]:
            files.add(Path(name))
            if entry["format"] == "json":
                files.update(_images_named(Path(name)))
    return sorted(files)


def _images_named(rows_file: Path) -> list[Path]:
    """The images the rows of a JSON-lines data file name (paths relative to its folder)."""
    lines = rows_file.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [rows_file.parent / image for row in rows for image in row["images"]]


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def data_record(resolved: Sequence[Mapping[str, Any]], data_root: Path) -> dict[str, Any]:
    """``data_sha256`` (sha256 over each file's name and sha256, in name order) and
    ``data_files`` (names relative to `data_root`; absolute for a file outside it).

    Example: care_synth with ``test.jsonl`` and two images → ``{"data_sha256": "…",
    "data_files": ["images/test-000000.png", "images/test-000001.png", "test.jsonl"]}``.
    """
    root = Path(data_root).resolve()
    named = sorted((_relative(path, root), path) for path in data_files(resolved))
    digest = hashlib.sha256()
    for name, path in named:
        digest.update(f"{name}\0{file_sha256(path)}\n".encode())
    return {"data_sha256": digest.hexdigest(), "data_files": [name for name, _ in named]}


def _relative(path: Path, root: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)


def max_new_tokens_of(results: Mapping[str, Any], tasks: Sequence[str], path: Path) -> int:
    """The ``max_new_tokens`` lmms-eval decoded `tasks` with: its results file's task configs
    (``configs.<task>.generation_kwargs``), which hold ``--gen_kwargs`` overrides.

    ValueError naming `path` when a task's config lacks it or two tasks of one benchmark differ.
    """
    values = set()
    for task in tasks:
        try:
            values.add(int(results["configs"][task]["generation_kwargs"]["max_new_tokens"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{path}: configs.{task}.generation_kwargs.max_new_tokens missing or not an int "
                f"({error!r})"
            ) from error
    if len(values) != 1:
        raise ValueError(f"{path}: the tasks {list(tasks)} decoded with max_new_tokens {values}")
    return values.pop()


@dataclass(frozen=True)
class Provenance:
    """The provenance of one benchmark's evaluation as its summary file records it; None where
    it does not. `recorded` says whether the file has a ``provenance`` block at all (a block
    with a null commit means the source was no git checkout; no block means not recorded)."""

    recorded: bool
    suite_version: str | None = None
    suite_commit: str | None = None
    suite_commit_dirty: bool | None = None
    lmms_eval_version: str | None = None
    prompt_version: str | None = None
    max_new_tokens: int | None = None
    verify_time_limit_s: float | None = None
    data_sha256: str | None = None

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], path: str | Path) -> Provenance:
        """The provenance `summary` (the JSON of `path`) records. Without a block, only the
        fields older summaries already had: top-level ``prompt_version`` and a numeric
        ``verify_time_limit`` (null there meant "the verifier's default", value unrecorded).

        ValueError naming the file and the field when a recorded value has the wrong type.
        """
        block = summary.get("provenance")
        if block is None:
            return cls(
                recorded=False,
                prompt_version=_typed(summary, "prompt_version", str, path),
                verify_time_limit_s=_typed(summary, "verify_time_limit", float, path),
            )
        if not isinstance(block, Mapping):
            raise ValueError(f"{path}: field 'provenance' must be an object, got {block!r}")
        return cls(
            recorded=True,
            suite_version=_typed(block, "suite_version", str, path, "provenance."),
            suite_commit=_typed(block, "suite_commit", str, path, "provenance."),
            suite_commit_dirty=_typed(block, "suite_commit_dirty", bool, path, "provenance."),
            lmms_eval_version=_typed(block, "lmms_eval_version", str, path, "provenance."),
            prompt_version=_typed(block, "prompt_version", str, path, "provenance."),
            max_new_tokens=_typed(block, "max_new_tokens", int, path, "provenance."),
            verify_time_limit_s=_typed(block, "verify_time_limit_s", float, path, "provenance."),
            data_sha256=_typed(block, "data_sha256", str, path, "provenance."),
        )

    def suite_text(self) -> str:
        """``"care-suite 0.1.0 @ cebdc532c7c8"`` (``+ uncommitted changes`` when the tree had
        them), the version alone when the source was no git checkout, or "not recorded"."""
        if not self.recorded or self.suite_version is None:
            return NOT_RECORDED
        if self.suite_commit is None:
            return f"care-suite {self.suite_version} (no git checkout: version only)"
        dirty = " + uncommitted changes" if self.suite_commit_dirty else ""
        return f"care-suite {self.suite_version} @ {self.suite_commit[:HASH_PREFIX]}{dirty}"

    def facts(self) -> dict[str, str]:
        """Each of `FACTS` as the footer prints it; "not recorded" where the file lacks it.

        Example: a current summary → ``{"suite": "care-suite 0.1.0 @ cebdc532c7c8",
        "lmms-eval": "0.7.3", "prompt": "care-prompt-v1", "max new tokens": "24",
        "verifier budget": "0.3 s"}``.
        """
        return {
            "suite": self.suite_text(),
            "lmms-eval": _text(self.lmms_eval_version),
            "prompt": _text(self.prompt_version),
            "max new tokens": _text(self.max_new_tokens),
            "verifier budget": _text(self.verify_time_limit_s, suffix=" s"),
        }

    def data_text(self) -> str:
        """The data digest's first `HASH_PREFIX` hex digits, or "not recorded"."""
        return NOT_RECORDED if self.data_sha256 is None else self.data_sha256[:HASH_PREFIX]


def _text(value: object, suffix: str = "") -> str:
    if value is None:
        return NOT_RECORDED
    if isinstance(value, float):
        return f"{value:g}{suffix}"
    return f"{value}{suffix}"


def _typed(
    record: Mapping[str, Any], field: str, kind: type, path: str | Path, prefix: str = ""
) -> Any:
    """``record[field]`` when it is a `kind` (an int also passes as a float), None when it is
    absent or null; ValueError naming the file and the field otherwise."""
    value = record.get(field)
    if value is None:
        return None
    numeric = kind is float and isinstance(value, int) and not isinstance(value, bool)
    if (isinstance(value, bool) and kind is not bool) or not (isinstance(value, kind) or numeric):
        raise ValueError(
            f"{path}: field '{prefix}{field}' must be {kind.__name__} or null, got {value!r}"
        )
    return float(value) if kind is float else value
