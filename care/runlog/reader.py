"""Reading run folders: tolerant of a truncated last line, loud (or warning) about anything else."""

from __future__ import annotations

import gc
import json
import json.scanner
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml

from care.runlog.layout import (
    CONFIG_FILE,
    GROUPS_FILE,
    META_FILE,
    SAMPLES_DIR,
    SCHEMA_VERSION,
    STEPS_FILE,
    RunLogError,
    sample_file,
    sample_step_of,
)
from care.runlog.records import (
    GroupRecord,
    RecordError,
    SampleRecord,
    json_parser,
    note_migration,
)

# The decoder's value scanner, called directly: it skips json.loads' per-call type and whitespace
# checks, which is 10-15% of the time on a long groups.jsonl.
_SCAN_VALUE = json.scanner.make_scanner(json.JSONDecoder())

OnCorrupt = Literal["raise", "warn"]
_ON_CORRUPT_CHOICES = ("raise", "warn")


def _read_text(path: Path) -> str:
    """A whole UTF-8 file; a missing or unreadable one is a RunLogError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunLogError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RunLogError(f"{path}: cannot read file ({error})") from None


@dataclass(frozen=True)
class JsonlResult:
    """What `read_jsonl` found in one file.

    records: the JSON objects, in file order.
    warnings: "<path>:<line>: <problem>" for every line skipped in "warn" mode.
    truncated_tail: the last line had no newline and did not parse, so it was dropped (the writer
        was killed while writing it).
    """

    records: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    truncated_tail: bool = False


@dataclass(frozen=True)
class _ScannedLines:
    """Parsed lines of a file with their raw text, as the resume rewrite needs."""

    records: list[dict[str, Any]]
    raw_lines: list[str]
    warnings: list[str]
    truncated_tail: bool


def _check_on_corrupt(on_corrupt: str) -> None:
    if on_corrupt not in _ON_CORRUPT_CHOICES:
        raise ValueError(f"on_corrupt must be one of {_ON_CORRUPT_CHOICES}, got {on_corrupt!r}")


def _split_lines(data: bytes) -> list[str | None]:
    """Lines of `data` as text; None for a line that is not valid UTF-8."""
    try:
        return data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        pass
    # Rare path: decode line by line so one bad line does not hide the good ones.
    lines: list[str | None] = []
    for raw in data.split(b"\n"):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(None)
    return lines


def _scan(
    path: Path,
    on_corrupt: str,
    require_int_field: str | None,
    keep_raw: bool,
    convert: Callable[[Any], Any] | None = None,
) -> _ScannedLines:
    _check_on_corrupt(on_corrupt)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunLogError(f"{path}: file not found") from None
    except OSError as error:
        raise RunLogError(f"{path}: cannot read file ({error.strerror or error})") from None

    # Parsing creates millions of small dicts and lists; each allocation burst would trigger a
    # cyclic-GC pass over everything parsed so far. JSON values cannot form cycles, so pausing
    # the collector makes reading a long run about twice as fast at no risk.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse_lines(path, data, on_corrupt, require_int_field, keep_raw, convert)
    finally:
        if gc_was_enabled:
            gc.enable()


def parse_record(line: str, require_int_field: str | None = None) -> tuple[Any, str | None, bool]:
    """One JSON-lines line as ``(record, problem, parsed)``.

    problem is None for a good record, else what is wrong with the line; parsed says whether
    the line was JSON at all (a line that is not is the only kind a killed writer leaves
    behind at the end of a file).

    Example: ``parse_record('{"step": 3}', "step")`` -> ``({"step": 3}, None, True)``;
    ``parse_record('{"step": 3', "step")[1:]`` -> ``("invalid JSON (...)", False)``.
    """
    try:
        record, end = _SCAN_VALUE(line, 0)
        if end != len(line) and not line[end:].isspace():
            raise ValueError("extra data")
    except (StopIteration, ValueError):
        # Only a line the fast scanner rejects pays for a second, message-giving parse.
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            return None, f"invalid JSON ({error.msg} at column {error.colno})", False
    if type(record) is not dict:
        return record, f"expected a JSON object, got {type(record).__name__}", True
    if require_int_field is not None:
        if require_int_field not in record:
            return record, f"field {require_int_field!r} is missing", True
        if type(record[require_int_field]) is not int:
            value = record[require_int_field]
            return record, f"field {require_int_field!r} must be an int, got {value!r}", True
    return record, None, True


def _parse_lines(
    path: Path,
    data: bytes,
    on_corrupt: str,
    require_int_field: str | None,
    keep_raw: bool,
    convert: Callable[[Any], Any] | None = None,
) -> _ScannedLines:
    lines = _split_lines(data)
    # After split, the last element is "" when the file ends with a newline; anything else there
    # is a line whose newline never reached the disk: the only place a half-written line can be.
    tail_index = len(lines) - 1
    records: list[dict[str, Any]] = []
    raw_lines: list[str] = []
    warnings: list[str] = []
    truncated_tail = False

    for index, line in enumerate(lines):
        if line is None:
            record, problem, parsed = None, "invalid UTF-8", False
        elif not line or line.isspace():
            continue
        else:
            record, problem, parsed = parse_record(line, require_int_field)
            if problem is None and convert is not None:
                try:
                    record = convert(record)
                except RecordError as error:
                    problem = error.detail
        if problem is None:
            records.append(record)
            if keep_raw:
                raw_lines.append(line)  # type: ignore[arg-type]
            continue
        if index == tail_index and not parsed:
            # Killed mid-write: the half line is expected, not corruption.
            truncated_tail = True
            continue
        message = f"{path}:{index + 1}: {problem}"
        if on_corrupt == "raise":
            raise RunLogError(message)
        warnings.append(message)

    return _ScannedLines(records, raw_lines, warnings, truncated_tail)


def read_jsonl(
    path: str | os.PathLike[str],
    on_corrupt: OnCorrupt = "raise",
    *,
    require_int_field: str | None = None,
    convert: Callable[[Any], Any] | None = None,
) -> JsonlResult:
    """All JSON objects of a JSON-lines file.

    A last line without a trailing newline that does not parse is a truncated tail: dropped and
    flagged, never an error. A last line without newline that parses is a complete record and is
    kept. Blank lines are ignored. Any other bad line (not JSON, not an object, invalid UTF-8, or
    lacking an int `require_int_field`) raises RunLogError "<path>:<line>: <problem>" in "raise"
    mode, or is skipped and described in `warnings` in "warn" mode. With `convert` (e.g.
    ``json_parser("sample")``) each object is replaced by what it returns; a RecordError it
    raises makes the line a bad line, described with the record kind and field.

    Example: a file holding ``{"step": 1}\\n{"step": 2}\\n{"st`` ->
    ``JsonlResult(records=[{"step": 1}, {"step": 2}], warnings=[], truncated_tail=True)``.
    """
    scanned = _scan(Path(path), on_corrupt, require_int_field, keep_raw=False, convert=convert)
    return JsonlResult(scanned.records, scanned.warnings, scanned.truncated_tail)


class RunReader:
    """Read-only view of one run folder; each file is parsed once, on first access.

    Group and sample lines are parsed into `GroupRecord` and `SampleRecord` (a line that is not
    a well-formed record is a corrupt line: "<file>:<line>: group record: field ...");
    step lines stay dicts, checked to be well-formed step records. A run of an older schema
    version is migrated while it is read (logged once per folder, see `note_migration`).

    Example::

        run = RunReader("runs/care_qwen2vl_seed0")
        accuracy = [record["acc/mean"] for record in run.steps]
        run.groups[0].anchor_index
        run.samples(12)  # rollouts of step 12, [] when none were logged
    """

    def __init__(self, run_dir: str | os.PathLike[str], on_corrupt: OnCorrupt = "raise") -> None:
        _check_on_corrupt(on_corrupt)
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise RunLogError(f"{self.run_dir}: run folder does not exist")
        self.on_corrupt: OnCorrupt = on_corrupt
        self._warnings: list[str] = []
        self._samples: dict[int, list[SampleRecord]] = {}

    @property
    def warnings(self) -> list[str]:
        """Lines skipped so far in "warn" mode, as "<path>:<line>: <problem>"."""
        return list(self._warnings)

    @cached_property
    def config(self) -> dict[str, Any]:
        """The resolved config the run was started with."""
        path = self.run_dir / CONFIG_FILE
        text = _read_text(path)
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise RunLogError(f"{path}: invalid YAML ({error})") from None
        if not isinstance(config, dict):
            raise RunLogError(f"{path}: expected a mapping, got {type(config).__name__}")
        return config

    @cached_property
    def meta(self) -> dict[str, Any]:
        """meta.json: versions, seed, host, times, status; refuses schema versions newer than ours."""
        return read_meta(self.run_dir)

    @cached_property
    def schema_version(self) -> int:
        """The schema version the run was written with (this code's when meta.json is absent,
        as in a folder holding only logs)."""
        return run_schema_version(self.run_dir)

    @cached_property
    def steps(self) -> list[dict[str, Any]]:
        """One record per training step, in the order written: ``{"step", "time", **metrics}``."""
        return self._read_optional(self.run_dir / STEPS_FILE, "step")

    @cached_property
    def groups(self) -> list[GroupRecord]:
        """One record per prompt group per step; [] when the run logged none."""
        return self._read_optional(self.run_dir / GROUPS_FILE, "group")

    @cached_property
    def sample_steps(self) -> list[int]:
        """Steps that have a sample file, ascending."""
        folder = self.run_dir / SAMPLES_DIR
        if not folder.is_dir():
            return []
        steps = (sample_step_of(path) for path in folder.iterdir())
        return sorted(step for step in steps if step is not None)

    def samples(self, step: int) -> list[SampleRecord]:
        """Rollout records of `step`; [] when that step has no sample file."""
        if type(step) is not int:
            raise ValueError(f"step must be an int, got {step!r}")
        if step not in self._samples:
            self._samples[step] = self._read_optional(sample_file(self.run_dir, step), "sample")
        return self._samples[step]

    def _read_optional(self, path: Path, kind: str) -> list[Any]:
        if not path.is_file():
            return []
        scanned = _scan(
            path,
            self.on_corrupt,
            "step",
            keep_raw=False,
            convert=json_parser(kind, self.schema_version),
        )
        self._warnings.extend(scanned.warnings)
        return scanned.records


def run_schema_version(run_dir: str | os.PathLike[str]) -> int:
    """The schema version of `run_dir` from its meta.json (checked by `read_meta`); this code's
    version when there is no meta.json. An older version is logged once per folder, since the
    caller is about to read the run through the migration.

    Example: ``run_schema_version("runs/a")`` -> ``2``.
    """
    if not (Path(run_dir) / META_FILE).is_file():
        return SCHEMA_VERSION
    version = read_meta(run_dir)["schema_version"]
    if version < SCHEMA_VERSION:
        note_migration(run_dir, version)
    return version


def read_meta(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """meta.json of `run_dir`, checked to be an object with a schema_version we can read.

    Example: ``read_meta("runs/a")["status"]`` -> ``"finished"``.
    """
    path = Path(run_dir) / META_FILE
    text = _read_text(path)
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as error:
        raise RunLogError(
            f"{path}: invalid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None
    if type(meta) is not dict:
        raise RunLogError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("schema_version")
    if type(version) is not int:
        raise RunLogError(f"{path}: schema_version must be an int, got {version!r}")
    if version > SCHEMA_VERSION:
        raise RunLogError(
            f"{path}: schema_version {version} is newer than this care-suite reads "
            f"({SCHEMA_VERSION}); upgrade care-suite to read this run"
        )
    return meta
