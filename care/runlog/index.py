"""Reading long run logs fast: step records through pyarrow, group records through a step index.

At the paper's scale a run logs 200 steps × 512 groups: groups.jsonl holds 102,400 records
(about 50 MB), and parsing every one of them to show one step's groups costs seconds. Two
readers avoid that, both as tolerant as `care.runlog.read_jsonl` (a half-written last line is
dropped and flagged; any other bad line is a ``"<file>:<line>: <problem>"`` warning):

- `read_table`: a whole JSON-lines file as a pyarrow table, parsed by pyarrow's multithreaded
  reader (steps.jsonl: one flat record per step). None when pyarrow refuses the file (a corrupt
  line, a column whose type changes between lines): the caller then reads it line by line with
  `read_jsonl`, which names the bad line.
- `StepIndex`: where each step's records are in a JSON-lines file, found from each line's
  leading ``{"step":N`` (what `RunWriter` writes first) without parsing the rest: numpy finds
  the line ends and reads the N of all lines at once, and a step's records are parsed when asked
  for, once. A line that does not start that way is parsed whole.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from care.runlog.layout import RunLogError
from care.runlog.reader import parse_record
from care.runlog.records import RecordError

_STEP_PREFIX = b'{"step":'


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise RunLogError(f"{path}: file not found") from None
    except OSError as error:
        raise RunLogError(f"{path}: cannot read file ({error.strerror or error})") from None


def _complete_part(data: bytes, int_field: str) -> tuple[bytes, bool] | None:
    """`data` without a half-written last line, and whether one was dropped.

    A last line without its newline is kept when it is a whole record (as `read_jsonl` keeps
    it); None when it is something `read_jsonl` would have to describe.
    """
    cut = data.rfind(b"\n") + 1
    tail = data[cut:]
    if not tail.strip():
        return data, False
    try:
        text = tail.decode("utf-8")
    except UnicodeDecodeError:
        return data[:cut], True
    record, problem, parsed = parse_record(text, int_field)
    if not parsed:
        return data[:cut], True
    return (data, False) if problem is None else None


@dataclass(frozen=True)
class ArrowRead:
    """A JSON-lines file read whole by pyarrow.

    table: one row per record, one column per field (first-seen order).
    truncated_tail: a half-written last line was dropped.
    """

    table: Any
    truncated_tail: bool = False


def read_table(path: str | os.PathLike[str], int_field: str = "step") -> ArrowRead | None:
    """The records of a JSON-lines file as a pyarrow table, when pyarrow can read it as is.

    Every record must hold an int `int_field`. Returns None when pyarrow refuses the file, or
    a record lacks `int_field` or holds a non-int there: `read_jsonl` then reads it line by line
    and says which line is bad. RunLogError when the file cannot be read.

    Example: a steps.jsonl of 20,000 steps × 25 metrics → a 20,000-row table in about 0.2 s
    (`read_jsonl` and a pandas frame: about 0.8 s).
    """
    import pyarrow as pa
    import pyarrow.json as pa_json

    path = Path(path)
    complete = _complete_part(_read_bytes(path), int_field)
    if complete is None:
        return None
    data, truncated = complete
    if not data.strip():
        return ArrowRead(pa.table({int_field: pa.array([], pa.int64())}), truncated)
    try:
        table = pa_json.read_json(io.BytesIO(data))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if int_field not in table.column_names:
        return None
    column = table.column(int_field)
    if not pa.types.is_integer(column.type) or column.null_count:
        return None
    return ArrowRead(table, truncated)


class StepIndex:
    """The records of a JSON-lines file by step, each step parsed on first request.

    Build one with `StepIndex.open(path)`. A step whose records appear in two separate blocks
    (a hand-merged log; the writer never does this) keeps its last block. With ``convert``
    (e.g. ``care.runlog.json_parser("group", version)``) each parsed record is turned into its
    typed record when its step is parsed; a line it refuses (RecordError) becomes a warning.

    Attributes:
        path: the file.
        warnings: ``"<file>:<line>: <problem>"`` for every bad line found so far (lines whose
            step cannot be read at once; lines of a step when that step is first parsed).
        truncated_tail: a half-written last line was dropped.

    Example::

        groups = StepIndex.open("runs/a/groups.jsonl")
        groups.steps            # [1, 2, ..., 200]
        groups.of_step(200)     # the 512 group records of step 200, parsed now
        typed = StepIndex.open("runs/a/groups.jsonl", convert=json_parser("group"))
        typed.of_step(200)[0].anchor_index
    """

    def __init__(
        self,
        path: Path,
        data: bytes,
        bounds: tuple[Any, Any],
        blocks: dict[int, Any],
        warnings: list[str],
        truncated_tail: bool,
        int_field: str,
        convert: Callable[[Any], Any] | None = None,
    ) -> None:
        self.path = path
        self.warnings = warnings
        self.truncated_tail = truncated_tail
        self._data = data
        self._starts, self._ends = bounds  # byte offsets of each line, int64 [lines]
        self._blocks = blocks  # step -> line numbers (0-based), int64 [records of the step]
        self._int_field = int_field
        self._convert = convert
        self._parsed: dict[int, list[dict[str, Any]]] = {}
        # Streamlit serves sessions from threads that share the cached index.
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        int_field: str = "step",
        convert: Callable[[Any], Any] | None = None,
    ) -> StepIndex:
        """Index `path` by its records' `int_field` (an empty index for an empty file).

        The lines and their leading steps are found with numpy over the file's bytes, so
        opening costs a few passes over memory, not one Python iteration per line; only lines
        that do not start ``{"step":N,`` are parsed here. RunLogError when the file cannot be
        read.
        """
        import numpy as np

        path = Path(path)
        data = _read_bytes(path)
        starts, ends = _line_bounds(data)
        steps, read = _leading_ints(data, starts, ends, b'{"' + int_field.encode() + b'":')
        keep = np.ones(starts.size, dtype=bool)
        warnings: list[str] = []
        truncated_tail = False
        # The last line lacks its newline when the writer was killed: a record only if whole.
        tail = starts.size - 1 if data and not data.endswith(b"\n") else -1
        to_read = np.flatnonzero(~read).tolist()
        if tail >= 0 and read[tail]:
            to_read.append(tail)
        for number in to_read:
            line = data[starts[number] : ends[number]]
            if not line.strip():
                keep[number] = False
                continue
            step, problem, parsed = _step_of_whole_line(line, int_field)
            if problem is None:
                steps[number] = step
                continue
            keep[number] = False
            if number == tail and not parsed:
                truncated_tail = True  # killed mid-write: expected, not corruption
            else:
                warnings.append(f"{path}:{number + 1}: {problem}")
        numbers = np.flatnonzero(keep)
        kept_steps = steps[numbers]
        # Runs of one step; a later run of a step replaces an earlier one (last block wins).
        cuts = (np.flatnonzero(np.diff(kept_steps)) + 1).tolist()
        blocks: dict[int, Any] = {}
        for first, stop in zip([0, *cuts], [*cuts, numbers.size], strict=True):
            if stop > first:
                blocks[int(kept_steps[first])] = numbers[first:stop]
        return cls(path, data, (starts, ends), blocks, warnings, truncated_tail, int_field, convert)

    @classmethod
    def empty(
        cls,
        path: str | os.PathLike[str],
        int_field: str = "step",
        convert: Callable[[Any], Any] | None = None,
    ) -> StepIndex:
        """An index with no records (a run that logged no such file, e.g. an SFT run)."""
        import numpy as np

        nothing = np.zeros(0, dtype=np.int64)
        return cls(Path(path), b"", (nothing, nothing), {}, [], False, int_field, convert)

    @property
    def steps(self) -> list[int]:
        """Steps with records, ascending."""
        return sorted(self._blocks)

    def __len__(self) -> int:
        """Records indexed (lines whose step was read)."""
        return sum(len(numbers) for numbers in self._blocks.values())

    def of_step(self, step: int) -> list[dict[str, Any]]:
        """The records of `step` in file order ([] when it has none); a bad line among them
        becomes a warning and is left out."""
        with self._lock:
            cached = self._parsed.get(step)
            if cached is not None:
                return cached
            records = []
            numbers = self._blocks.get(step)
            for number in [] if numbers is None else numbers.tolist():
                record, problem = self._parse(number)
                if problem is None:
                    records.append(record)
                else:
                    self.warnings.append(f"{self.path}:{number + 1}: {problem}")
            self._parsed[step] = records
            return records

    def _parse(self, number: int) -> tuple[Any, str | None]:
        try:
            text = self._data[self._starts[number] : self._ends[number]].decode("utf-8")
        except UnicodeDecodeError:
            return None, "invalid UTF-8"
        record, problem, _ = parse_record(text, self._int_field)
        if problem is None and self._convert is not None:
            try:
                record = self._convert(record)
            except RecordError as error:
                return None, error.detail
        return record, problem


def _line_bounds(data: bytes) -> tuple[Any, Any]:
    """Start and end byte offsets of every line (without its newline), int64 ``[lines]``.

    A file ending in a newline has no empty last line; a last line without one is included.

    Example: ``_line_bounds(b"ab\\ncd")`` → ``([0, 3], [2, 5])``.
    """
    import numpy as np

    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    starts = np.concatenate(([0], newlines + 1)).astype(np.int64)
    ends = np.concatenate((newlines, [len(data)])).astype(np.int64)
    if starts[-1] == len(data):
        starts, ends = starts[:-1], ends[:-1]
    return starts, ends


_MAX_DIGITS = 18  # any int64 step; longer numbers are left to the whole-line parse


def _leading_ints(data: bytes, starts: Any, ends: Any, prefix: bytes) -> tuple[Any, Any]:
    """N of every line that starts ``<prefix>N,`` or ``<prefix>N}`` (N plain digits, no sign or
    leading zero), read from the bytes of all lines at once.

    Returns ``(values, read)``: int64 and bool ``[lines]``; ``read`` False where the line does
    not start that way, so the caller parses it whole.

    Example: lines ``{"step":12,"a":1}`` and ``{"a":1,"step":3}`` with prefix ``{"step":`` →
    ``([12, 0], [True, False])``.
    """
    import numpy as np

    buffer = np.frombuffer(data, dtype=np.uint8)
    count = starts.size
    if count == 0 or buffer.size == 0:
        return np.zeros(count, dtype=np.int64), np.zeros(count, dtype=bool)
    width = len(prefix) + _MAX_DIGITS + 1
    offsets = starts[:, None] + np.arange(width)  # [lines, width]
    inside = offsets < ends[:, None]
    window = np.where(inside, buffer[np.minimum(offsets, buffer.size - 1)], 0)
    read = (window[:, : len(prefix)] == np.frombuffer(prefix, dtype=np.uint8)).all(axis=1)
    digits = window[:, len(prefix) :].astype(np.int64) - ord("0")
    is_digit = (digits >= 0) & (digits <= 9)
    length = np.argmin(is_digit, axis=1)  # first non-digit; 0 when all are digits (too long)
    after = np.take_along_axis(window[:, len(prefix) :], length[:, None], axis=1)[:, 0]
    read &= (length > 0) & np.isin(after, np.frombuffer(b",}", dtype=np.uint8))
    read &= (digits[:, 0] != 0) | (length == 1)  # JSON has no leading zeros
    positions = np.arange(_MAX_DIGITS + 1)
    powers = np.where(
        positions < length[:, None], 10 ** np.maximum(length[:, None] - 1 - positions, 0), 0
    )
    values = (np.where(is_digit, digits, 0) * powers).sum(axis=1)
    return np.where(read, values, 0), read


def _step_of_whole_line(line: bytes, int_field: str) -> tuple[Any, str | None, bool]:
    """(step, problem, parsed) of a line read whole."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid UTF-8", False
    record, problem, parsed = parse_record(text, int_field)
    return (record[int_field] if problem is None else None), problem, parsed
