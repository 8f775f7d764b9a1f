"""Reading rollouts written by other trainers, one training step at a time.

Two inputs (docs/import.md):

- a **verl rollout dump**: the folder ``trainer.rollout_data_dir`` points to, one
  ``<step>.jsonl`` per step, one line per rollout with ``input`` (the decoded prompt), ``output``
  (the decoded response), ``score``, ``step``, in recent versions ``gts`` (the ground truth), plus
  the reward function's extra keys (e.g. ``acc``). The rollouts of one prompt share ``input``.
- the **generic rollout schema**: JSONL or parquet rows with ``step``, ``prompt_id``,
  ``response``, ``reward`` and optionally ``correct``, ``answer``, ``answer_type``, ``prompt``,
  rows of one step together and steps increasing (TRL or a home-grown trainer).

Both yield `StepRollouts`: the valid rollouts of one step and a "<file>:<line>: <problem>" warning
for every line that was left out. Only one step is held at a time, so memory does not grow with
the number of steps. A problem with the input as a whole (no step files, a step that comes back
after a later one) is an `ImportInputError`.
"""

from __future__ import annotations

import gc
import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from care.runlog.reader import parse_record

VERL_FIELDS = ("input", "output", "score", "step", "gts", "acc")
"""The keys of a verl dump line this importer reads; every other key is kept as it is."""
GENERIC_FIELDS = ("step", "prompt_id", "response", "reward", "correct", "answer", "answer_type")
GENERIC_FIELDS_OPTIONAL_TEXT = ("prompt",)
_VERL_STEP_FILE = re.compile(r"(\d+)\.jsonl")
_GENERIC_SUFFIXES = (".jsonl", ".parquet")
_PARQUET_BATCH_ROWS = 4096


class ImportInputError(ValueError):
    """The input cannot be imported as a whole; the message names the file (and line)."""


class BadLine(ValueError):
    """One line or row cannot be used; its message is the problem, without the location."""


@dataclass(frozen=True, slots=True)
class Rollout:
    """One rollout as the importer needs it, whatever wrote it.

    prompt_key: what groups rollouts within a step (verl: the prompt text; generic: prompt_id).
    prompt_id: the id written to the records (verl: a hash of the prompt text, stable across
        steps; generic: the given id).
    prompt: the prompt text, or None.
    response: the decoded response.
    reward: the reward the trainer used (verl ``score``, generic ``reward``).
    given_correct: the source's own correctness flag (verl ``acc``, generic ``correct``), or None.
    answers: gold answers to check the response against (verl ``gts``, generic ``answer``);
        empty when there is none.
    answer_type: the verifier's answer type, or None to infer it.
    extra: every other key of the line, kept for the sample records.
    where: "<file>:<line>" (parquet: "<file>:row <n>").
    """

    prompt_key: str
    prompt_id: str | int
    prompt: str | None
    response: str
    reward: float
    given_correct: bool | None
    answers: tuple[str, ...]
    answer_type: str | None
    extra: dict[str, Any]
    where: str


@dataclass
class StepRollouts:
    """The rollouts of one step and what was left out of it.

    warnings: "<file>:<line>: <problem>" for each skipped line.
    notes: counts of values that were ignored but did not cost the line, e.g.
        ``{"acc is not a correctness flag (0/1 or bool), ignored": 3}``.
    time: when the step was trained, where the input tells (a verl step file's modification
        time: verl writes it at the end of the step); None otherwise.
    """

    step: int
    time: float | None = None
    rollouts: list[Rollout] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)


def prompt_hash(text: str) -> str:
    """A short stable id for a prompt text: the same prompt gets the same id at every step.

    Example: ``prompt_hash("What is 2+2?")`` -> a 12-character hex string, the same every call.
    """
    return hashlib.blake2b(text.encode("utf-8"), digest_size=6).hexdigest()


def _number(record: dict[str, Any], key: str) -> float:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadLine(f"{key!r} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise BadLine(f"{key!r} must be finite, got {value!r}")
    return float(value)


def _text(record: dict[str, Any], key: str) -> str:
    if key not in record:
        raise BadLine(f"missing key {key!r}")
    value = record[key]
    if not isinstance(value, str):
        raise BadLine(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _flag(value: Any, key: str, notes: Counter[str]) -> bool | None:
    """A correctness flag: a bool or a 0/1 number; anything else is noted and ignored."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    notes[f"{key} is not a correctness flag (0/1 or bool), ignored"] += 1
    return None


def _answers(value: Any, key: str, notes: Counter[str]) -> tuple[str, ...]:
    """Gold answers from a string, a number or a list of them; anything else is noted."""
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    answers = []
    for item in items:
        if isinstance(item, str) and item.strip():
            answers.append(item)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            answers.append(str(item))
        else:
            notes[f"{key} is not a string, a number or a list of them, ignored"] += 1
            return ()
    return tuple(answers)


def verl_rollout(record: dict[str, Any], step: int, where: str, notes: Counter[str]) -> Rollout:
    """One line of a verl ``<step>.jsonl`` as a Rollout.

    Raises BadLine when ``input``, ``output`` or ``score`` is missing or of the wrong type, or
    when ``step`` disagrees with the file's step.

    Example: ``{"input": "Q", "output": "<answer>4</answer>", "score": 1.0, "step": 3,
    "gts": "4", "acc": true}`` at step 3 -> ``Rollout(prompt_key="Q", reward=1.0,
    given_correct=True, answers=("4",), ...)``.
    """
    prompt = _text(record, "input")
    response = _text(record, "output")
    if "score" not in record:
        raise BadLine("missing key 'score'")
    reward = _number(record, "score")
    carried = record.get("step")
    if carried is not None and (type(carried) is not int or carried != step):
        raise BadLine(f"'step' is {carried!r} but the file holds step {step}")
    return Rollout(
        prompt_key=prompt,
        prompt_id=prompt_hash(prompt),
        prompt=prompt,
        response=response,
        reward=reward,
        given_correct=_flag(record.get("acc"), "acc", notes),
        answers=_answers(record.get("gts"), "gts", notes),
        answer_type=None,
        extra={key: value for key, value in record.items() if key not in VERL_FIELDS},
        where=where,
    )


def generic_rollout(record: dict[str, Any], where: str, notes: Counter[str]) -> Rollout:
    """One row of the generic schema as a Rollout (``step`` is checked by the reader).

    Example: ``{"step": 1, "prompt_id": "geo-7", "response": "... 12", "reward": 1.0,
    "correct": true, "answer": "12"}`` -> ``Rollout(prompt_key="geo-7", reward=1.0,
    given_correct=True, answers=("12",), ...)``.
    """
    prompt_id = record.get("prompt_id")
    if "prompt_id" not in record:
        raise BadLine("missing key 'prompt_id'")
    if isinstance(prompt_id, bool) or not isinstance(prompt_id, str | int):
        raise BadLine(f"'prompt_id' must be a string or an integer, got {prompt_id!r}")
    response = _text(record, "response")
    if "reward" not in record:
        raise BadLine("missing key 'reward'")
    reward = _number(record, "reward")
    prompt = record.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise BadLine(f"'prompt' must be a string, got {type(prompt).__name__}")
    answer_type = record.get("answer_type")
    if answer_type is not None and not isinstance(answer_type, str):
        raise BadLine(f"'answer_type' must be a string, got {answer_type!r}")
    known = (*GENERIC_FIELDS, *GENERIC_FIELDS_OPTIONAL_TEXT)
    return Rollout(
        prompt_key=f"{type(prompt_id).__name__}:{prompt_id}",
        prompt_id=prompt_id,
        prompt=prompt,
        response=response,
        reward=reward,
        given_correct=_flag(record.get("correct"), "correct", notes),
        answers=_answers(record.get("answer"), "answer", notes),
        answer_type=answer_type,
        extra={key: value for key, value in record.items() if key not in known},
        where=where,
    )


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(line number, record, problem) for each non-blank line, read as a stream.

    A last line without a newline that does not parse is reported like any other bad line: a
    finished dump has no reason to end in half a line.
    """
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield number, None, "invalid UTF-8"
                continue
            if not line or line.isspace():
                continue
            record, problem, _ = parse_record(line.rstrip("\r\n"))
            yield number, record if problem is None else None, problem


class VerlDump:
    """A verl rollout dump folder: its ``<step>.jsonl`` files in step order.

    Iterating yields one `StepRollouts` per file. Files with other names are not step files;
    they are listed in `ignored` (a validation dump belongs in its own folder).

    Example::

        dump = VerlDump("ckpt/rollouts")         # 1.jsonl, 2.jsonl, ..., 200.jsonl
        for batch in dump:                       # batch.step == 1, 2, ...
            ...
    """

    format = "verl"

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder)
        if not self.path.is_dir():
            raise ImportInputError(f"{self.path}: not a folder (give verl's rollout_data_dir)")
        steps: dict[int, Path] = {}
        self.ignored: list[str] = []
        for path in sorted(self.path.iterdir()):
            match = _VERL_STEP_FILE.fullmatch(path.name)
            if match is None or not path.is_file():
                self.ignored.append(path.name)
                continue
            step = int(match.group(1))
            if step in steps:
                raise ImportInputError(
                    f"{path}: step {step} again (also in {steps[step].name}); one file per step"
                )
            steps[step] = path
        if not steps:
            raise ImportInputError(
                f"{self.path}: no verl step files (<step>.jsonl, written when "
                "trainer.rollout_data_dir is set)"
            )
        self.step_files: list[tuple[int, Path]] = sorted(steps.items())

    def __iter__(self) -> Iterator[StepRollouts]:
        for step, path in self.step_files:
            yield self.read_step(step, path)

    @staticmethod
    def read_step(step: int, path: Path) -> StepRollouts:
        """The rollouts of one step file; every bad line becomes a warning, the rest is kept."""
        batch = StepRollouts(step, time=path.stat().st_mtime)
        # Parsing a step makes many small objects that cannot form cycles (see runlog.reader).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for number, record, problem in _jsonl_records(path):
                where = f"{path}:{number}"
                if record is None:
                    batch.warnings.append(f"{where}: {problem}")
                    continue
                try:
                    batch.rollouts.append(verl_rollout(record, step, where, batch.notes))
                except BadLine as error:
                    batch.warnings.append(f"{where}: {error}")
        finally:
            if gc_was_enabled:
                gc.enable()
        return batch


class RolloutFiles:
    """Rollouts in the generic schema: one JSONL or parquet file, or a folder of them.

    Files are read in name order, rows in file order; the rows of a step must come together
    and steps must increase (a step that comes back after a later one is an ImportInputError
    naming the row). Iterating yields one `StepRollouts` per step.

    Example: rows (step 1 × 8, step 2 × 8) in ``rollouts.jsonl`` -> two StepRollouts.
    """

    format = "rollouts"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.files = sorted(
                p for p in self.path.iterdir() if p.is_file() and p.suffix in _GENERIC_SUFFIXES
            )
            if not self.files:
                raise ImportInputError(f"{self.path}: no .jsonl or .parquet files")
        elif self.path.is_file():
            if self.path.suffix not in _GENERIC_SUFFIXES:
                raise ImportInputError(f"{self.path}: expected a .jsonl or .parquet file")
            self.files = [self.path]
        else:
            raise ImportInputError(f"{self.path}: no such file or folder")
        self.ignored: list[str] = []

    def _rows(self) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
        for path in self.files:
            if path.suffix == ".parquet":
                yield from _parquet_rows(path)
            else:
                for number, record, problem in _jsonl_records(path):
                    yield f"{path}:{number}", record, problem

    def __iter__(self) -> Iterator[StepRollouts]:
        current: StepRollouts | None = None
        pending: list[str] = []  # bad lines before the first valid step
        for where, record, problem in self._rows():
            if record is None:
                (current.warnings if current is not None else pending).append(f"{where}: {problem}")
                continue
            step = record.get("step")
            if type(step) is not int or step < 0:
                message = f"{where}: 'step' must be an integer >= 0, got {step!r}"
                (current.warnings if current is not None else pending).append(message)
                continue
            if current is None or step != current.step:
                if current is not None and step < current.step:
                    raise ImportInputError(
                        f"{where}: step {step} comes after step {current.step}; the rows of a "
                        "step must come together and steps must increase"
                    )
                if current is not None:
                    yield current
                current = StepRollouts(step, warnings=pending)
                pending = []
            try:
                current.rollouts.append(generic_rollout(record, where, current.notes))
            except BadLine as error:
                current.warnings.append(f"{where}: {error}")
        if current is not None:
            yield current
        elif pending:
            raise ImportInputError(f"no valid row in {self.path}; first problem: {pending[0]}")


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    """Rows of a parquet file in batches (never the whole file at once)."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ...
        raise ImportInputError(f"{path}: not a readable parquet file ({error})") from None
    number = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            number += 1
            yield f"{path}:row {number}", row, None
