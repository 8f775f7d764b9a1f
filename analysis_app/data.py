"""Loading run folders for the dashboard and the exporter: tolerant, cached, plain data out.

Every loader reads through `care.runlog` (so a truncated last line is dropped silently and a
corrupt line becomes a "<file>:<line>: <problem>" warning instead of an error) and caches its
result under (kind, path, size, mtime): a log that grows gets a new key and is read again, an
unchanged one costs one ``stat``. Nothing here imports Streamlit, so the exporter and the tests
use the same functions as the pages.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import yaml

from care.runlog import (
    CONFIG_FILE,
    EVAL_DIR,
    GROUPS_FILE,
    META_FILE,
    SCHEMA_VERSION,
    STEPS_FILE,
    RunLogError,
    SampleRecord,
    json_parser,
    list_runs,
    read_jsonl,
    read_meta,
    sample_file,
)
from care.runlog.index import StepIndex, read_table
from care.runlog.layout import SAMPLES_DIR, sample_step_of
from care.runlog.records import note_migration
from evaluation.benchmarks import BENCHMARKS, MacroAverage, macro_average
from evaluation.compare import BenchmarkComparison, Item, compare_folders
from evaluation.runner import RUN_RECORD
from evaluation.tasks import (
    DATA_ROOT_ENV,
    doc_images,
    doc_to_target,
    load_task_docs,
    resolve_task_files,
)

RUNS_DIR_ENV = "CARE_RUNS_DIR"
"""Environment variable naming the folder the dashboard lists runs under."""

DEFAULT_RUNS_DIR = "runs"

PAPER_REFERENCE_FILE = (
    Path(__file__).resolve().parents[1] / "benchmarks_cfg" / "paper_reference.yaml"
)
"""The paper's table, shipped with the repository."""

_CACHE_SIZE = 256
_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# cache


class _FileCache:
    """A small LRU keyed by (kind, path, size, mtime_ns) of the file the value was read from.

    Streamlit reruns a page script on every interaction in the same process, so a module-level
    cache survives reruns; keying on size and mtime makes a growing log refresh by itself.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_load(self, key: Hashable, load: Callable[[], _T]) -> _T:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
        value = load()
        with self._lock:
            self.misses += 1
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = 0
            self.misses = 0


CACHE = _FileCache(_CACHE_SIZE)


def file_key(path: Path) -> tuple[str, int, int] | None:
    """(resolved path, size, mtime_ns) of `path`, or None when it is not a file.

    Example: ``file_key(Path("runs/a/steps.jsonl"))`` -> ``("/abs/runs/a/steps.jsonl", 5120, 17…)``.
    """
    try:
        stat = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def clear_cache() -> None:
    """Forget every cached file (tests and the bench's cold measurement use this)."""
    CACHE.clear()


# --------------------------------------------------------------------------------------------
# runs root and run paths


def runs_root(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """The runs root: ``$CARE_RUNS_DIR`` or ``./runs``.

    Example: with ``CARE_RUNS_DIR=/data/runs`` -> ``Path("/data/runs")``.
    """
    environ = os.environ if environ is None else environ
    return Path(environ.get(RUNS_DIR_ENV) or DEFAULT_RUNS_DIR)


def discover_runs(root: Path) -> list[str]:
    """Names of the runs under `root`: their paths relative to it, "/"-separated, sorted.

    The root itself, when it is a run, is named ".". Raises ValueError when `root` is not a folder.

    Example: runs/a and runs/sweep/b -> ``["a", "sweep/b"]``.
    """
    root = Path(root)
    return [run_name(root, run) for run in list_runs(root)]


def run_name(root: Path, run_dir: Path) -> str:
    """`run_dir` relative to `root`, "/"-separated ("." for the root itself)."""
    relative = Path(run_dir).resolve().relative_to(Path(root).resolve())
    return relative.as_posix() if relative.parts else "."


def resolve_run(root: Path, name: str) -> Path:
    """The run folder called `name` under `root`, refusing anything that leaves the root.

    `name` comes from the URL, so it is untrusted: absolute paths, ".." that climbs out and
    symlinks that point elsewhere are rejected after resolving, as is a folder that is no run.

    Raises:
        ValueError: naming the run and why it cannot be shown.

    Example: ``resolve_run(Path("runs"), "sweep/b")`` -> ``Path("/abs/runs/sweep/b")``;
    ``resolve_run(Path("runs"), "../etc")`` -> ValueError.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"run name must be a non-empty path under the runs root, got {name!r}")
    if "\x00" in name:
        raise ValueError(f"run {name!r}: contains a NUL character")
    root_resolved = Path(root).resolve()
    candidate = Path(name)
    if candidate.is_absolute():
        raise ValueError(f"run {name!r}: must be a path relative to the runs root, not absolute")
    resolved = (root_resolved / candidate).resolve()
    if resolved != root_resolved and root_resolved not in resolved.parents:
        raise ValueError(f"run {name!r}: points outside the runs root {root_resolved}")
    if not resolved.is_dir():
        raise ValueError(f"run {name!r}: no such folder under the runs root {root_resolved}")
    if not ((resolved / META_FILE).is_file() or (resolved / STEPS_FILE).is_file()):
        raise ValueError(f"run {name!r}: folder holds no meta.json or steps.jsonl, so it is no run")
    return resolved


# --------------------------------------------------------------------------------------------
# steps.jsonl


@dataclass(frozen=True)
class StepsLog:
    """steps.jsonl as a frame: one row per step, one float column per numeric metric.

    frame: columns "step" (int), "time" and every metric; None/missing -> NaN. Non-numeric
        metrics keep an object column.
    warnings: "<file>:<line>: <problem>" for every skipped line.
    truncated_tail: the last line was half written (a live or killed run) and was dropped.
    """

    frame: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    truncated_tail: bool = False

    @property
    def metrics(self) -> list[str]:
        """Metric columns (everything except step and time), in first-seen order."""
        return [name for name in self.frame.columns if name not in ("step", "time")]


def _numeric_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with each object column of numbers and None (all None included) as float64 NaN,
    and "step" as int64."""
    for name in frame.columns:
        if frame[name].dtype == object:
            values = frame[name].tolist()
            if all(
                value is None or (isinstance(value, int | float) and not isinstance(value, bool))
                for value in values
            ):
                frame[name] = np.array(
                    [math.nan if value is None else value for value in values], dtype=np.float64
                )
    if "step" in frame.columns:
        frame["step"] = frame["step"].astype(np.int64)
    return frame


def steps_frame_from_records(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One frame from step records parsed line by line (the reader's tolerant path).

    ``pd.DataFrame(records)`` measured 6x faster than building the columns in Python on 20,000
    steps × 25 metrics; only the columns it leaves as object (all None, or mixed) are fixed up.
    """
    return _numeric_columns(pd.DataFrame.from_records(records))


def _read_steps(path: Path) -> StepsLog:
    # pyarrow parses a clean log about 3x faster; a log it refuses (a corrupt line, a column
    # whose type changes) goes line by line, which names every bad line.
    fast = read_table(path, "step")
    if fast is not None:
        frame = _numeric_columns(fast.table.to_pandas())
        warnings: list[str] = []
        truncated = fast.truncated_tail
    else:
        result = read_jsonl(path, "warn", require_int_field="step")
        records = result.records
        frame = (
            steps_frame_from_records(records)
            if records
            else pd.DataFrame({"step": pd.Series(dtype=np.int64)})
        )
        warnings, truncated = list(result.warnings), result.truncated_tail
    if len(frame) and not frame["step"].is_monotonic_increasing:
        # The writer refuses out-of-order steps; a hand-merged log may not. Plots need order.
        frame = frame.sort_values("step", kind="stable").reset_index(drop=True)
    return StepsLog(frame, warnings, truncated)


def load_steps(run_dir: Path) -> StepsLog:
    """steps.jsonl of `run_dir` (cached by path, size, mtime); an empty log when there is none.

    Example: a run with steps 1..3 -> ``load_steps(run).frame["step"].tolist() == [1, 2, 3]``.
    """
    path = Path(run_dir) / STEPS_FILE
    key = file_key(path)
    if key is None:
        return StepsLog(pd.DataFrame({"step": pd.Series(dtype=np.int64)}))
    return CACHE.get_or_load(("steps", *key), lambda: _read_steps(path))


# --------------------------------------------------------------------------------------------
# groups.jsonl


def _schema_version(run_dir: Path) -> int:
    """The run's schema version (meta.json, cached); the current one when meta.json is missing
    or unreadable (the run list reports that problem). An older version is logged once."""
    try:
        version = load_meta(run_dir)["schema_version"]
    except RunLogError:
        return SCHEMA_VERSION
    if version < SCHEMA_VERSION:
        note_migration(run_dir, version)
    return version


def load_groups(run_dir: Path) -> StepIndex:
    """groups.jsonl of `run_dir` indexed by step (cached); empty when the run has none (SFT).

    Opening reads only each line's leading step; ``.of_step(step)`` parses that step's records
    on first use into `GroupRecord`s (`care.runlog.index.StepIndex`; a run of an older schema
    version is migrated), so a paper-scale log of 102,400 groups opens in a fraction of a
    second and the hard-negatives page parses 512 records, not all of them. A line that is not
    a well-formed group record becomes a warning naming its file, line and field.
    """
    path = Path(run_dir) / GROUPS_FILE
    key = file_key(path)
    convert = json_parser("group", _schema_version(Path(run_dir)))
    if key is None:
        return StepIndex.empty(path, convert=convert)
    return CACHE.get_or_load(("groups", *key), lambda: StepIndex.open(path, convert=convert))


# --------------------------------------------------------------------------------------------
# samples


def sample_steps(run_dir: Path) -> list[int]:
    """Steps with a sample file, ascending."""
    folder = Path(run_dir) / SAMPLES_DIR
    if not folder.is_dir():
        return []
    found = (sample_step_of(path) for path in folder.iterdir())
    return sorted(step for step in found if step is not None)


@dataclass(frozen=True)
class SamplesLog:
    records: list[SampleRecord]
    warnings: list[str] = field(default_factory=list)


def load_samples(run_dir: Path, step: int) -> SamplesLog:
    """Rollout records of `step` as `SampleRecord`s (cached); empty when that step has no
    sample file. A malformed line is left out with a "<file>:<line>: ..." warning."""
    path = sample_file(run_dir, step)
    key = file_key(path)
    if key is None:
        return SamplesLog([])

    def read() -> SamplesLog:
        result = read_jsonl(
            path,
            "warn",
            require_int_field="step",
            convert=json_parser("sample", _schema_version(Path(run_dir))),
        )
        return SamplesLog(result.records, list(result.warnings))

    return CACHE.get_or_load(("samples", *key), read)


# --------------------------------------------------------------------------------------------
# meta and config


def load_meta(run_dir: Path) -> dict[str, Any]:
    """meta.json (cached); RunLogError when missing or malformed."""
    path = Path(run_dir) / META_FILE
    key = file_key(path)
    if key is None:
        raise RunLogError(f"{path}: file not found")
    return CACHE.get_or_load(("meta", *key), lambda: read_meta(run_dir))


def load_config(run_dir: Path) -> dict[str, Any]:
    """config.yaml (cached); {} when the run has none, RunLogError when it is malformed."""
    path = Path(run_dir) / CONFIG_FILE
    key = file_key(path)
    if key is None:
        return {}

    def read() -> dict[str, Any]:
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise RunLogError(f"{path}: cannot read config ({error})") from None
        if config is None:
            return {}
        if not isinstance(config, dict):
            raise RunLogError(f"{path}: expected a mapping, got {type(config).__name__}")
        return config

    return CACHE.get_or_load(("config", *key), read)


def configs_of_runs(runs: dict[str, Path]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each run's config.yaml by run name ({} for a run without one) and a warning for each
    that cannot be read (that run then counts as having none).

    Example: runs {"a": ..., "b": ...}, b without config.yaml -> ``({"a": {...}, "b": {}}, [])``.
    """
    configs: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for name, path in runs.items():
        try:
            configs[name] = load_config(path)
        except RunLogError as error:
            configs[name] = {}
            warnings.append(str(error))
    return configs, warnings


def import_info(config: dict[str, Any]) -> dict[str, Any] | None:
    """The ``import`` section of a run made by ``care import`` (format, source, what could not
    be computed), or None for a run this suite trained.

    Example: a run imported from a verl dump -> ``{"format": "verl", "source": "/dumps/r1",
    "not_computed": ["hard_negatives", "rescue"], ...}``.
    """
    section = config.get("import")
    return section if isinstance(section, dict) else None


def not_computed_note(config: dict[str, Any]) -> str | None:
    """Why an imported run has no hard negatives, rescue or RGR records; None for other runs."""
    info = import_info(config)
    if info is None:
        return None
    missing = info.get("not_computed") or ["hard_negatives", "rescue"]
    return (
        f"imported from a {info.get('format', '?')} rollout dump: "
        f"{', '.join(str(name).replace('_', ' ') for name in missing)} need the rollouts' "
        "reasoning embeddings (and the rescue old-policy log-probabilities), which a dump does "
        "not hold, and RGR is CARE's own resampling, so none of them is computed"
    )


def estimator_of(config: dict[str, Any], steps: StepsLog) -> str:
    """The run's estimator; "sft" for a supervised warm start, which logs sft/* metrics only;
    "<format> import" for a run made by ``care import`` (its trainer's estimator is unknown).

    The SFT run's config still carries the default ``algo.estimator``, so the logged metrics
    decide: a run whose steps hold ``sft/loss`` and no ``acc/mean`` trained no RL estimator.
    """
    info = import_info(config)
    if info is not None:
        return f"{info.get('format', '?')} import"
    columns = set(steps.frame.columns)
    if "sft/loss" in columns and "acc/mean" not in columns:
        return "sft"
    algo = config.get("algo")
    estimator = algo.get("estimator") if isinstance(algo, dict) else None
    return str(estimator) if estimator else "?"


def model_of(config: dict[str, Any]) -> str:
    """What the run trained: model.path, or "tiny (random init)" for the in-code test model;
    "not recorded" for an imported run (a rollout dump does not name its model)."""
    if import_info(config) is not None:
        return "not recorded (imported)"
    model = config.get("model")
    if not isinstance(model, dict):
        return "?"
    if model.get("path"):
        return str(model["path"])
    if model.get("tiny"):
        return "tiny (random init)"
    return "?"


# --------------------------------------------------------------------------------------------
# evaluation results


EVAL_COLUMNS = ["checkpoint", "checkpoint_step", "task", "n", "accuracy", "format_rate"]


@dataclass(frozen=True)
class EvalLog:
    """Every ``eval/<checkpoint>/<task>.json`` summary of a run, one row each.

    frame columns: checkpoint (folder name), checkpoint_step (int from "step_N", else NaN),
    task, n, accuracy (fraction), format_rate (fraction or NaN).
    """

    frame: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def _checkpoint_step(name: str) -> float:
    digits = name.rsplit("_", 1)[-1]
    return float(int(digits)) if digits.isdigit() else math.nan


def _summary_accuracy(summary: dict[str, Any]) -> float | None:
    """``accuracy``, or the mean of ``per_seed[*].accuracy`` for a multi-seed summary."""
    accuracy = summary.get("accuracy")
    if isinstance(accuracy, int | float) and not isinstance(accuracy, bool):
        return float(accuracy)
    per_seed = summary.get("per_seed")
    if isinstance(per_seed, dict) and per_seed:
        values = [entry.get("accuracy") for entry in per_seed.values() if isinstance(entry, dict)]
        numbers = [
            float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        if numbers:
            return sum(numbers) / len(numbers)
    return None


def _read_eval_summary(path: Path) -> dict[str, Any] | str:
    """The row of one summary file, or a warning text."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        return f"{path}: cannot read ({error})"
    except json.JSONDecodeError as error:
        return f"{path}:{error.lineno}: invalid JSON ({error.msg})"
    if not isinstance(summary, dict):
        return f"{path}: expected a JSON object, got {type(summary).__name__}"
    accuracy = _summary_accuracy(summary)
    if accuracy is None:
        return f"{path}: no numeric 'accuracy' (nor per_seed accuracies)"
    task = summary.get("task") if isinstance(summary.get("task"), str) else path.stem
    n = summary.get("n")
    format_rate = summary.get("format_rate")
    return {
        "task": task,
        "n": float(n) if isinstance(n, int | float) and not isinstance(n, bool) else math.nan,
        "accuracy": accuracy,
        "format_rate": float(format_rate)
        if isinstance(format_rate, int | float) and not isinstance(format_rate, bool)
        else math.nan,
    }


def load_eval(run_dir: Path) -> EvalLog:
    """All evaluation summaries of `run_dir`, sorted by checkpoint step then task.

    ``<task>_samples.jsonl`` files are per-example records, not summaries, and are skipped.
    """
    folder = Path(run_dir) / EVAL_DIR
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    if folder.is_dir():
        for checkpoint in sorted(p for p in folder.iterdir() if p.is_dir()):
            for path in sorted(checkpoint.glob("*.json")):
                key = file_key(path)
                if key is None:
                    continue
                row = CACHE.get_or_load(("eval", *key), lambda p=path: _read_eval_summary(p))
                if isinstance(row, str):
                    warnings.append(row)
                    continue
                rows.append(
                    {
                        "checkpoint": checkpoint.name,
                        "checkpoint_step": _checkpoint_step(checkpoint.name),
                        **row,
                    }
                )
    frame = pd.DataFrame(rows, columns=EVAL_COLUMNS)
    if len(frame):
        frame = frame.sort_values(["checkpoint_step", "checkpoint", "task"], kind="stable")
        frame = frame.reset_index(drop=True)
    return EvalLog(frame, warnings)


# --------------------------------------------------------------------------------------------
# paper reference


@dataclass(frozen=True)
class PaperReference:
    """The paper's main table.

    benchmarks: key -> {"task": care task name, "name": the registry's display name}, in the
        paper's order.
    rows: one row per model line: columns "model", "base", "method", one per benchmark key (in %,
        NaN when not reported) and "macro".
    """

    benchmarks: dict[str, dict[str, str]]
    rows: pd.DataFrame

    def key_of_task(self) -> dict[str, str]:
        """care task name -> benchmark key (care_mathvista -> mathvista)."""
        return {info["task"]: key for key, info in self.benchmarks.items()}


def load_paper_reference(path: Path | None = None) -> PaperReference:
    """Read benchmarks_cfg/paper_reference.yaml (or `path`).

    Raises ValueError naming the file and the field when it is not in the expected shape.
    """
    path = Path(path) if path is not None else PAPER_REFERENCE_FILE
    key = file_key(path)
    if key is None:
        raise ValueError(f"paper reference {path}: file not found")
    return CACHE.get_or_load(("paper", *key), lambda: _read_paper_reference(path))


def _read_paper_reference(path: Path) -> PaperReference:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"paper reference {path}: cannot read ({error})") from None
    if not isinstance(document, dict):
        raise ValueError(f"paper reference {path}: expected a mapping at the top")
    raw_benchmarks = document.get("benchmarks")
    if not isinstance(raw_benchmarks, dict) or not raw_benchmarks:
        raise ValueError(f"paper reference {path}: 'benchmarks' must map keys to care tasks")
    order = document.get("benchmark_order") or list(raw_benchmarks)
    benchmarks: dict[str, dict[str, str]] = {}
    for bench_key in order:
        task = raw_benchmarks.get(bench_key)
        if task not in BENCHMARKS:
            raise ValueError(
                f"paper reference {path}: benchmarks.{bench_key} must name a care task of "
                f"evaluation/benchmarks.py, got {task!r}"
            )
        benchmarks[bench_key] = {"task": task, "name": BENCHMARKS[task].name}
    table = document.get("main_table")
    if not isinstance(table, list):
        raise ValueError(f"paper reference {path}: 'main_table' must be a list of rows")
    rows = []
    for position, entry in enumerate(table):
        if not isinstance(entry, dict) or not isinstance(entry.get("scores"), dict):
            raise ValueError(f"paper reference {path}: main_table[{position}] needs 'scores'")
        row: dict[str, Any] = {
            "model": str(entry.get("model", f"row {position}")),
            "base": str(entry.get("base", "")),
            "method": str(entry.get("method", "")),
        }
        for bench_key in benchmarks:
            value = entry["scores"].get(bench_key)
            row[bench_key] = float(value) if value is not None else math.nan
        macro = entry.get("macro")
        row["macro"] = float(macro) if macro is not None else math.nan
        rows.append(row)
    return PaperReference(benchmarks, pd.DataFrame(rows))


# --------------------------------------------------------------------------------------------
# training data (prompt images for the hard-negatives page)


def load_examples_by_id(data_file: Path) -> dict[str, Any]:
    """id -> `care.data.Example` of a training data file (cached); bad rows are left out.

    Images are not opened here (``check_images=False``): only the one shown is decoded.
    """
    from care.data import load_examples

    path = Path(data_file)
    key = file_key(path)
    if key is None:
        raise ValueError(f"data file {path}: not found")

    def read() -> dict[str, Any]:
        loaded = load_examples(path, on_bad_row="skip", check_images=False)
        return {example.id: example for example in loaded.examples}

    return CACHE.get_or_load(("examples", *key), read)


def find_example(config: dict[str, Any], prompt_id: Any) -> tuple[Any | None, str | None]:
    """The training example of `prompt_id` through the run's ``data.train_files``.

    Returns (example, None) when found, else (None, why not) — a missing data file is normal for
    a run copied from another machine, so it is a message, not an error.
    """
    if import_info(config) is not None:
        return None, "an imported run keeps only the prompt text of its rollout dump"
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    files = data.get("train_files") or []
    if isinstance(files, str):
        files = [files]
    if not files:
        return None, "the run's config lists no data.train_files"
    problems = []
    for name in files:
        try:
            examples = load_examples_by_id(Path(name))
        except (ValueError, OSError) as error:
            problems.append(str(error))
            continue
        example = examples.get(str(prompt_id))
        if example is not None:
            return example, None
    if problems:
        return None, "; ".join(problems)
    return None, f"prompt {prompt_id!r} is in none of {', '.join(map(str, files))}"


# --------------------------------------------------------------------------------------------
# run overview


@dataclass(frozen=True)
class RunSummary:
    """One line of the Runs page."""

    name: str
    path: Path
    estimator: str
    model: str
    steps: int
    last_step: int | None
    last_accuracy: float
    eval_macro: float
    status: str
    last_log_time: float
    warnings: list[str]


def macro_of(eval_frame: pd.DataFrame) -> dict[str, MacroAverage]:
    """`evaluation.benchmarks.macro_average` of each checkpoint's task accuracies, by checkpoint
    in the frame's order (checkpoints with no finite accuracy are left out).

    Example: care_mathvista 0.5, care_mmmu 0.7, care_synth 0.1 at step_10 ->
    ``macro_of(frame)["step_10"].value == 0.6`` over the two paper benchmarks.
    """
    result: dict[str, MacroAverage] = {}
    for checkpoint, rows in eval_frame.groupby("checkpoint", sort=False):
        macro = macro_average(dict(zip(rows["task"], rows["accuracy"], strict=True)))
        if macro is not None:
            result[str(checkpoint)] = macro
    return result


def last_value(frame: pd.DataFrame, column: str) -> float:
    """The last non-NaN value of `column` (NaN when the column is missing or empty)."""
    if column not in frame.columns:
        return math.nan
    values = pd.to_numeric(frame[column], errors="coerce").dropna()
    return float(values.iloc[-1]) if len(values) else math.nan


def summarise_run(root: Path, run_dir: Path) -> RunSummary:
    """Everything the Runs page shows about one run; never raises for a damaged run.

    A run whose meta.json or config cannot be read is listed with status "unreadable" and the
    reason among its warnings.
    """
    name = run_name(root, run_dir)
    warnings: list[str] = []
    try:
        status = str(load_meta(run_dir).get("status", "?"))
    except RunLogError as error:
        status = "unreadable"
        warnings.append(str(error))
    try:
        config = load_config(run_dir)
    except RunLogError as error:
        config = {}
        warnings.append(str(error))
    steps = load_steps(run_dir)
    warnings.extend(steps.warnings)
    evaluation = load_eval(run_dir)
    warnings.extend(evaluation.warnings)
    macros = list(macro_of(evaluation.frame).values())
    frame = steps.frame
    return RunSummary(
        name=name,
        path=run_dir,
        estimator=estimator_of(config, steps),
        model=model_of(config),
        steps=len(frame),
        last_step=int(frame["step"].iloc[-1]) if len(frame) else None,
        last_accuracy=last_value(frame, "acc/mean"),
        eval_macro=macros[-1].value if macros else math.nan,
        status=status,
        last_log_time=last_value(frame, "time"),
        warnings=warnings,
    )


def steps_of_runs(runs: dict[str, Path]) -> tuple[pd.DataFrame, list[str]]:
    """The steps of several runs stacked, with a leading "run" column, and all their warnings.

    Example: runs {"a": ..., "b": ...} with 3 and 2 steps -> a 5-row frame, run = a,a,a,b,b.
    """
    frames = []
    warnings: list[str] = []
    for name, path in runs.items():
        log = load_steps(path)
        warnings.extend(log.warnings)
        frame = log.frame
        frames.append(frame.assign(run=name)[["run", *frame.columns]])
    if not frames:
        return pd.DataFrame(
            {"run": pd.Series(dtype=object), "step": pd.Series(dtype=np.int64)}
        ), warnings
    return pd.concat(frames, ignore_index=True, sort=False), warnings


def eval_of_runs(runs: dict[str, Path]) -> tuple[pd.DataFrame, list[str]]:
    """The evaluation rows of several runs stacked, with a leading "run" column."""
    frames = []
    warnings: list[str] = []
    for name, path in runs.items():
        log = load_eval(path)
        warnings.extend(log.warnings)
        if len(log.frame):
            frames.append(log.frame.assign(run=name)[["run", *EVAL_COLUMNS]])
    if not frames:
        return pd.DataFrame(columns=["run", *EVAL_COLUMNS]), warnings
    return pd.concat(frames, ignore_index=True), warnings


# --------------------------------------------------------------------------------------------
# checkpoint comparison (per-item evaluation records)


def evaluated_checkpoints(runs: dict[str, Path]) -> dict[str, Path]:
    """``"<run> @ <checkpoint>"`` -> evaluation folder, for every ``<run>/eval/<checkpoint>``
    that holds per-item records (``<benchmark>_samples.jsonl``), in run order and then by
    checkpoint step (folders named otherwise, such as ``step_10_blank``, after their step).

    Example: runs {"care": runs/care} evaluated at step_10 and step_30 ->
    ``{"care @ step_10": runs/care/eval/step_10, "care @ step_30": runs/care/eval/step_30}``.
    """
    found: dict[str, Path] = {}
    for name, run_dir in runs.items():
        folder = Path(run_dir) / EVAL_DIR
        if not folder.is_dir():
            continue
        evaluated = [p for p in folder.iterdir() if p.is_dir() and any(p.glob("*_samples.jsonl"))]
        for checkpoint in sorted(evaluated, key=_checkpoint_order):
            found[f"{name} @ {checkpoint.name}"] = checkpoint
    return found


def _checkpoint_order(folder: Path) -> tuple[int, str]:
    """step_10 < step_10_blank < step_30: the first number in the name, then the name."""
    digits = "".join(c if c.isdigit() else " " for c in folder.name).split()
    return (int(digits[0]) if digits else -1, folder.name)


@dataclass(frozen=True)
class CheckpointComparison:
    """`evaluation.compare.compare_folders` of two evaluation folders: its rows (per benchmark,
    then the macro row), every item pair (A's item, B's item) and what it left out."""

    rows: list[BenchmarkComparison]
    pairs: list[tuple[Item, Item]]
    notes: list[str]


def compare_checkpoints(a: Path, b: Path) -> CheckpointComparison:
    """A and B compared item by item (`evaluation.compare.compare_folders`, the numbers of
    ``care compare A B``), cached by both folders' per-item files (path, size, mtime).

    Raises:
        CompareError: the folders share no benchmark or score different items; its message
            says which.
    """
    samples = [path for folder in (a, b) for path in sorted(Path(folder).glob("*_samples.jsonl"))]
    key = ("compare", str(a), str(b), *(file_key(path) for path in samples))

    def read() -> CheckpointComparison:
        notes: list[str] = []
        rows, pairs = compare_folders(a, b, note=notes.append)
        return CheckpointComparison(rows, pairs, notes)

    return CACHE.get_or_load(key, read)


def eval_data_root(eval_dir: Path, benchmark: str) -> tuple[Path | None, str | None]:
    """The data root an evaluation read `benchmark` from (the ``CARE_DATA_ROOT`` its first
    seed's ``lmms_eval/<benchmark>/seed_<s>/run.json`` records), or None and why not.

    Example: the demo's warm start on blank images -> ``(Path("out/data_fast_seed0/blank"),
    None)``.
    """
    seeds = sorted((Path(eval_dir) / "lmms_eval" / benchmark).glob(f"seed_*/{RUN_RECORD}"))
    if not seeds:
        return None, f"{eval_dir} keeps no lmms_eval/{benchmark}/seed_*/{RUN_RECORD}"
    try:
        record = json.loads(seeds[0].read_text(encoding="utf-8"))
        root = record["env"][DATA_ROOT_ENV]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        return None, f"{seeds[0]}: no readable env.{DATA_ROOT_ENV} ({error})"
    return Path(root), None


def _task_docs(task: str, root: Path) -> list[dict[str, Any]]:
    """`evaluation.tasks.load_task_docs`, cached by the task's data files."""
    files = resolve_task_files(task, root)["files"]
    key = ("docs", task, str(root), *(file_key(Path(name)) for name in files))
    return CACHE.get_or_load(key, lambda: load_task_docs(task, root))


def item_images(eval_dir: Path, item: Item) -> tuple[list[Any], str | None]:
    """The prompt images of one evaluated item as PIL images, read from the data its
    evaluation used (`eval_data_root`; lmms-eval's doc_id is the row's position), and None;
    or [] and why none is shown (data moved or changed since, no image in the row).

    The row is checked against the record first: a row whose gold answer is not the
    record's is not the item that was scored, so its image is not shown.
    """
    root, problem = eval_data_root(eval_dir, item.benchmark)
    if root is None:
        return [], problem
    try:
        docs = _task_docs(item.task, root)
    except (OSError, ValueError) as error:
        return [], f"the evaluation's data under {root} cannot be read ({error})"
    position = int(item.doc_id) if str(item.doc_id).isdigit() else -1
    if not 0 <= position < len(docs):
        return [], f"doc_id {position} is no row of {item.task} under {root} ({len(docs)} rows)"
    doc = docs[position]
    gold = doc_to_target(item.task, doc)
    if item.answer is not None and str(gold) != str(item.answer):
        return [], (
            f"row {position} of {item.task} under {root} has the gold answer {gold!r}, the "
            f"record {item.answer!r}: the data changed after the evaluation"
        )
    try:
        images = doc_images(item.task, doc)
    except (OSError, ValueError) as error:
        return [], str(error)
    return images, None if images else "this item has no image"
