"""Writing run folders so that a crash at any instant leaves a readable, resumable run.

Every JSON line goes to disk with a single write() on an unbuffered file, so a process killed at
any moment leaves complete lines plus at most one half line, which the reader drops. meta.json and
config.yaml are replaced atomically (temp file + os.replace), so they are either old or new, never
half written. `RunWriter.resume` cuts every log back to the last checkpointed step, which makes a
killed-and-resumed run log exactly the records of an uninterrupted one.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol, TypeVar

import yaml

from care import __version__ as care_suite_version
from care.runlog.layout import (
    CONFIG_FILE,
    EVAL_DIR,
    GROUPS_FILE,
    IMPORT_FILE,
    META_FILE,
    SAMPLES_DIR,
    SCHEMA_VERSION,
    STEPS_FILE,
    TRACKERS_DIR,
    RunExistsError,
    RunLogError,
    is_run_dir,
    sample_file,
    sample_step_of,
)
from care.runlog.reader import _scan, read_meta
from care.runlog.records import GroupRecord, RecordError, SampleRecord, StepRecord
from care.runlog.values import encode_line, to_json_value

_RESERVED_STEP_KEYS = ("step", "time")
_FINAL_STATUSES = ("finished", "crashed")


class RunObserver(Protocol):
    """Told about each record once it is on disk; the tracker mirrors are observers
    (`care.train.trackers`). Group records arrive as the checked `GroupRecord`s whose lines
    were written; a step record as its line's JSON object, "step" first."""

    def on_groups(self, step: int, records: list[GroupRecord]) -> None: ...

    def on_step(self, step: int, record: dict[str, Any]) -> None: ...

    def on_finish(self, status: str) -> None: ...


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _package_version(name: str) -> str | None:
    module = sys.modules.get(name)
    if module is not None and isinstance(getattr(module, "__version__", None), str):
        return module.__version__
    try:
        # Metadata instead of import: importing torch only to read its version costs seconds.
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """HEAD of the git working tree around the current directory, or None outside a repo."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=os.getcwd(),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = completed.stdout.strip()
    return commit if completed.returncode == 0 and commit else None


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` by `data` so that readers and crashes see the old or the new file, never a mix."""
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as temp_file:
            temp_file.write(data)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _meta_bytes(meta: dict[str, Any]) -> bytes:
    return (json.dumps(meta, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def _check_step(step: Any, what: str) -> int:
    if type(step) is not int:
        raise ValueError(f"{what}: step must be an int, got {step!r} ({type(step).__name__})")
    if step < 0:
        raise ValueError(f"{what}: step must be >= 0, got {step}")
    return step


def _record_for_step(step: int, record: Any, what: str) -> dict[str, Any]:
    """`record` converted to JSON values with "step" first; a "step" it carries must equal `step`."""
    if not isinstance(record, Mapping):
        raise ValueError(f"{what} must be a dict, got {type(record).__name__}")
    converted = to_json_value(record, what)
    if "step" in converted:
        carried = converted["step"]
        if type(carried) is not int or carried != step:
            raise ValueError(
                f"{what}: field 'step' is {carried!r} but the records are logged for step {step}"
            )
    return {"step": step, **converted}


_Typed = TypeVar("_Typed", GroupRecord, SampleRecord)


def _typed_record(step: int, record: Any, record_type: type[_Typed], what: str) -> _Typed:
    """`record` as a checked `record_type` of `step`: a typed record is taken as it is (its step
    must be `step`), a dict is converted and checked field by field (RecordError names the
    field)."""
    if isinstance(record, record_type):
        if record.step != step:
            raise ValueError(
                f"{what}: field 'step' is {record.step} but the records are logged for step {step}"
            )
        return record
    if isinstance(record, (GroupRecord, SampleRecord, StepRecord)):
        raise ValueError(
            f"{what} must be a {record_type.__name__} or a dict, got a {type(record).__name__}"
        )
    return record_type.from_json(_record_for_step(step, record, what), where=what)


def _cut_after(path: Path, last_step: int) -> list[dict[str, Any]]:
    """Drop records with step > last_step (and a half-written tail) from a JSONL file, atomically.

    Returns the records kept. A missing file is created empty.
    """
    if not path.exists():
        path.touch()
        return []
    scanned = _scan(path, "raise", require_int_field="step", keep_raw=True)
    kept_records: list[dict[str, Any]] = []
    kept_lines: list[str] = []
    for record, line in zip(scanned.records, scanned.raw_lines, strict=True):
        if record["step"] <= last_step:
            kept_records.append(record)
            kept_lines.append(line)
    new_data = "".join(line + "\n" for line in kept_lines).encode("utf-8")
    # Rewriting also restores the newline after a complete final record, so appends start clean.
    if new_data != path.read_bytes():
        _write_atomic(path, new_data)
    return kept_records


def _remove_run_files(run_dir: Path) -> None:
    for name in (CONFIG_FILE, META_FILE, STEPS_FILE, GROUPS_FILE, IMPORT_FILE):
        (run_dir / name).unlink(missing_ok=True)
    for name in (SAMPLES_DIR, EVAL_DIR, TRACKERS_DIR):
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)


class RunWriter:
    """Appends a training run's logs to its run folder. Build one with `create` or `resume`.

    Example::

        with RunWriter.create("runs/demo", config={"lr": 1e-6}, seed=0) as run:
            run.log_step(1, {"signal/failure_share_seq": 0.42, "acc/mean": 0.5})
            run.log_groups(1, [{"group_id": 0, "prompt_id": "geo-17", "G": 8, ...}])
            run.log_samples(1, [{"group_id": 0, "index": 0, "response": "...", ...}])
        # leaving the block sets meta.json status to "finished" ("crashed" on an exception)
    """

    def __init__(
        self, run_dir: Path, meta: dict[str, Any], last_step: int | None, fsync: bool
    ) -> None:
        self.run_dir = run_dir
        self._meta = meta
        self._last_step = last_step
        self._fsync = fsync
        self._closed = False
        self._observers: list[RunObserver] = []
        self._steps_file: BinaryIO = open(run_dir / STEPS_FILE, "ab", buffering=0)
        self._groups_file: BinaryIO = open(run_dir / GROUPS_FILE, "ab", buffering=0)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        run_dir: str | os.PathLike[str],
        config: Mapping[str, Any],
        seed: int,
        *,
        overwrite: bool = False,
        fsync: bool = False,
    ) -> RunWriter:
        """Start a new run in `run_dir`: write config.yaml and meta.json (status "running").

        Refuses (RunExistsError) when the folder already holds a run, i.e. a meta.json or
        steps.jsonl (or a groups.jsonl or samples/ left by one), unless `overwrite=True`, which
        deletes that run's files (config.yaml, meta.json, steps.jsonl, groups.jsonl, samples/,
        eval/, trackers/, import.json) and nothing else. `fsync=True`
        forces every logged line to disk, not only to the OS.
        """
        run_path = Path(run_dir)
        if not isinstance(config, Mapping):
            raise ValueError(f"config must be a dict, got {type(config).__name__}")
        if type(seed) is not int:
            raise ValueError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
        if run_path.exists() and not run_path.is_dir():
            raise ValueError(f"run_dir {str(run_path)!r} exists and is not a folder")
        if is_run_dir(run_path) and not overwrite:
            raise RunExistsError(
                f"{run_path} already holds a run ({META_FILE} or {STEPS_FILE} present); "
                "pass overwrite=True to replace it, or use RunWriter.resume to continue it"
            )
        if not overwrite:
            leftovers = [name for name in (GROUPS_FILE, SAMPLES_DIR) if (run_path / name).exists()]
            if leftovers:
                raise RunExistsError(
                    f"{run_path} holds {', '.join(leftovers)} of an earlier run; pass "
                    "overwrite=True to delete them, or pick another folder"
                )
        plain_config = to_json_value(config, "config")
        run_path.mkdir(parents=True, exist_ok=True)
        if overwrite:
            _remove_run_files(run_path)
        config_text = yaml.safe_dump(plain_config, sort_keys=False, allow_unicode=True)
        _write_atomic(run_path / CONFIG_FILE, config_text.encode("utf-8"))
        meta: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "care_suite_version": care_suite_version,
            "python_version": platform.python_version(),
            "torch_version": _package_version("torch"),
            "transformers_version": _package_version("transformers"),
            "git_commit": _git_commit(),
            "seed": seed,
            "start_time": _utc_now(),
            "host": socket.gethostname(),
            "status": "running",
            "end_time": None,
            "resumes": [],
        }
        _write_atomic(run_path / META_FILE, _meta_bytes(meta))
        return cls(run_path, meta, last_step=None, fsync=fsync)

    @classmethod
    def resume(
        cls,
        run_dir: str | os.PathLike[str],
        last_step: int,
        *,
        fsync: bool = False,
        config_changes: Sequence[Mapping[str, Any]] = (),
    ) -> RunWriter:
        """Reopen a run for appending after a checkpoint taken at `last_step`.

        Every record with step > last_step is dropped from steps.jsonl, groups.jsonl and the
        sample files (sample files of later steps are deleted), as is a half-written last line;
        each changed file is replaced atomically, so a crash during resume leaves it resumable.
        meta.json gets status "running", end_time null and an entry in "resumes", whose
        "config_changes" lists `config_changes` (``{"field", "old", "new", "step"}`` each: the
        settings the resumed run changed; config.yaml keeps the values the run started with).
        """
        run_path = Path(run_dir)
        if type(last_step) is not int:
            raise ValueError(f"last_step must be an int, got {last_step!r}")
        changes = to_json_value(list(config_changes), "config_changes")
        if not run_path.is_dir():
            raise RunLogError(f"{run_path}: run folder does not exist, nothing to resume")
        meta = read_meta(run_path)
        if meta["schema_version"] != SCHEMA_VERSION:
            raise RunLogError(
                f"{run_path / META_FILE}: schema_version {meta['schema_version']} differs from "
                f"{SCHEMA_VERSION}; appending would mix formats in one run"
            )
        kept_steps = _cut_after(run_path / STEPS_FILE, last_step)
        _cut_after(run_path / GROUPS_FILE, last_step)
        samples_dir = run_path / SAMPLES_DIR
        if samples_dir.is_dir():
            for path in sorted(samples_dir.iterdir()):
                file_step = sample_step_of(path)
                if file_step is None:
                    continue
                if file_step > last_step:
                    path.unlink()
                else:
                    _cut_after(path, last_step)
        meta["status"] = "running"
        meta["end_time"] = None
        meta.setdefault("resumes", []).append(
            {
                "time": _utc_now(),
                "last_step": last_step,
                "host": socket.gethostname(),
                "config_changes": changes,
            }
        )
        _write_atomic(run_path / META_FILE, _meta_bytes(meta))
        resumed_last = max((record["step"] for record in kept_steps), default=None)
        return cls(run_path, meta, last_step=resumed_last, fsync=fsync)

    # -- state -------------------------------------------------------------------------------

    @property
    def last_step(self) -> int | None:
        """Step of the last record in steps.jsonl, None before the first."""
        return self._last_step

    @property
    def closed(self) -> bool:
        """True once `finish` ran; logging is refused after that."""
        return self._closed

    @property
    def meta(self) -> dict[str, Any]:
        """A copy of the meta.json content as last written."""
        return copy.deepcopy(self._meta)

    def add_observer(self, observer: RunObserver) -> None:
        """Call `observer` after every groups and step record is written, and at `finish`.

        The run folder stays the source of truth: an observer sees a record only once the
        record is on disk, so a failing observer never costs a line of the run log.
        """
        self._check_open()
        self._observers.append(observer)

    # -- logging -----------------------------------------------------------------------------

    def log_step(
        self, step: int, metrics: Mapping[str, Any], *, timestamp: float | None = None
    ) -> None:
        """Append {"step", "time", **metrics} to steps.jsonl.

        `metrics` is flat: str keys (e.g. "signal/failure_share_seq") to scalars (numbers, bools,
        strings, None, 0-d tensors). Steps must increase from call to call. `timestamp` defaults
        to time.time().
        """
        self._check_open()
        what = f"log_step(step={step})"
        _check_step(step, what)
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(
                f"{what}: step must be greater than the last logged step {self._last_step}; "
                "steps.jsonl holds one record per step in increasing order"
            )
        if not isinstance(metrics, Mapping):
            raise ValueError(f"{what}: metrics must be a dict, got {type(metrics).__name__}")
        for reserved in _RESERVED_STEP_KEYS:
            if reserved in metrics:
                raise ValueError(
                    f"{what}: metrics must not contain the key {reserved!r}; the writer sets it"
                )
        converted = to_json_value(metrics, f"{what} metrics")
        if timestamp is None:
            timestamp = time.time()
        elif (
            isinstance(timestamp, bool)
            or not isinstance(timestamp, (int, float))
            or not math.isfinite(timestamp)
        ):
            raise ValueError(f"{what}: timestamp must be a finite number, got {timestamp!r}")
        try:
            typed = StepRecord(step, float(timestamp), converted)
        except RecordError as error:
            raise error.located(what) from None
        record = typed.to_json()
        self._append(self._steps_file, encode_line(record))
        self._last_step = step
        for observer in self._observers:
            observer.on_step(step, record)

    def log_groups(self, step: int, records: Sequence[GroupRecord | Mapping[str, Any]]) -> None:
        """Append one groups.jsonl line per prompt-group record of `step` (docs/run_format.md).

        Each record is a `GroupRecord` of `step` or a dict of its fields (the "step" field may
        be left out; one it has must equal `step`). Every record is checked before any is
        written: a malformed one raises RecordError (a ValueError) naming the record and field,
        and nothing of the call reaches the file.
        """
        self._check_open()
        what = f"log_groups(step={step})"
        _check_step(step, what)
        typed = self._typed_records(step, records, GroupRecord, what)
        for record in typed:
            self._append(self._groups_file, encode_line(record.to_json()))
        for observer in self._observers:
            observer.on_groups(step, typed)

    def log_samples(self, step: int, records: Sequence[SampleRecord | Mapping[str, Any]]) -> None:
        """Append rollout records of `step` to samples/step_<step:08d>.jsonl, one line each.

        Records are `SampleRecord`s or dicts of their fields, checked as in `log_groups`.
        """
        self._check_open()
        what = f"log_samples(step={step})"
        _check_step(step, what)
        typed = self._typed_records(step, records, SampleRecord, what)
        lines = [encode_line(record.to_json()) for record in typed]
        if not lines:
            return
        path = sample_file(self.run_dir, step)
        path.parent.mkdir(exist_ok=True)
        with open(path, "ab", buffering=0) as sample_handle:
            for line in lines:
                self._append(sample_handle, line)

    def finish(self, status: str = "finished") -> None:
        """Close the logs and record `status` ("finished" or "crashed") and end_time in meta.json."""
        if status not in _FINAL_STATUSES:
            raise ValueError(f"status must be one of {_FINAL_STATUSES}, got {status!r}")
        self._check_open()
        self._closed = True
        try:
            self._steps_file.close()
            self._groups_file.close()
        finally:
            self._meta["status"] = status
            self._meta["end_time"] = _utc_now()
            _write_atomic(self.run_dir / META_FILE, _meta_bytes(self._meta))
        for observer in self._observers:
            observer.on_finish(status)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._closed:
            self.finish("crashed" if exc_type is not None else "finished")

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RunLogError(f"{self.run_dir}: the writer is finished; use RunWriter.resume")

    @staticmethod
    def _typed_records(
        step: int, records: Any, record_type: type[_Typed], what: str
    ) -> list[_Typed]:
        if isinstance(records, (Mapping, str, bytes)) or not isinstance(records, Sequence):
            raise ValueError(
                f"{what}: records must be a list of {record_type.__name__}s or dicts, "
                f"got {type(records).__name__}"
            )
        return [
            _typed_record(step, record, record_type, f"{what} record {index}")
            for index, record in enumerate(records)
        ]

    def _append(self, handle: BinaryIO, line: bytes) -> None:
        # Unbuffered file: each write() below is one system call, so the line reaches the OS in
        # one piece; the loop only matters for the partial writes POSIX allows in theory.
        remaining = memoryview(line)
        while remaining:
            written = handle.write(remaining)
            remaining = remaining[written:]
        if self._fsync:
            os.fsync(handle.fileno())
