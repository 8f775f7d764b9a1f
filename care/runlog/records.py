"""The typed records of a run folder: one class per kind of line the run log holds.

- `StepRecord`: one line of steps.jsonl (the step, its time and the flat scalar metrics).
- `GroupRecord`: one line of groups.jsonl (what CARE did with one prompt group), holding
  `HardNegative` entries and an `RgrRecord`.
- `SampleRecord`: one line of a samples/step_NNNNNNNN.jsonl file (one rollout's text).

Each class has one field list, checks every field when it is built (a frozen dataclass whose
``__post_init__`` checks types, ranges and the fields that must agree with each other) and
converts with ``to_json()`` / ``from_json()``. A missing, unknown or mistyped field raises
`RecordError`, whose message names the record kind and the field, and, when the record came
from a file, the file and line: ``runs/a/groups.jsonl:7: group record: field 'anchor_index':
must be an int or null, got '2'``.

`RunWriter` builds or checks a record before it writes a line, so a malformed record never
reaches the disk; the readers parse lines into these records (`RunReader`, the dashboard's
`StepIndex`), except the dashboard's steps frame, which pyarrow reads column by column.

Runs of older schema versions are read through `migrate_json`, which fills what later versions
added; docs/run_format.md lists the differences.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar

from care.runlog.layout import PROJECTION_DIM, SCHEMA_VERSION

logger = logging.getLogger("care.runlog")

Scalar = None | bool | int | float | str


class RecordError(ValueError):
    """A record with a missing, unknown or mistyped field, or fields that contradict each other.

    kind: "step", "group", "sample", "hard negative" or "rgr".
    field_name: the field at fault, dotted for nested ones (``"rgr.source_index"``,
        ``"hard_negatives[1].distance"``).
    where: where the record came from (``"<file>:<line>"``, or the writer's call), or None.
    """

    def __init__(self, kind: str, field_name: str, problem: str, where: str | None = None):
        self.kind = kind
        self.field_name = field_name
        self.problem = problem
        self.where = where
        text = f"{kind} record: field {field_name!r}: {problem}"
        super().__init__(text if where is None else f"{where}: {text}")

    @property
    def detail(self) -> str:
        """The message without the place: ``"group record: field 'G': ..."``."""
        return f"{self.kind} record: field {self.field_name!r}: {self.problem}"

    def located(self, where: str) -> RecordError:
        """The same error placed at `where` (a file and line, or the writer's call)."""
        return RecordError(self.kind, self.field_name, self.problem, where)

    def inside(self, kind: str, prefix: str) -> RecordError:
        """The error of a nested record, named from the enclosing record's field."""
        return RecordError(kind, f"{prefix}.{self.field_name}", self.problem, self.where)


# --------------------------------------------------------------------------------------------
# field checks: each returns the value in its stored form or raises RecordError


def _int(kind: str, name: str, value: Any, minimum: int | None = None) -> int:
    if type(value) is not int:
        raise RecordError(kind, name, f"must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise RecordError(kind, name, f"must be >= {minimum}, got {value}")
    return value


def _optional_int(kind: str, name: str, value: Any, minimum: int | None = None) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise RecordError(kind, name, f"must be an int or null, got {value!r}")
    return _int(kind, name, value, minimum)


def _bool(kind: str, name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise RecordError(kind, name, f"must be true or false, got {value!r}")
    return value


def _optional_bool(kind: str, name: str, value: Any) -> bool | None:
    if value is not None and type(value) is not bool:
        raise RecordError(kind, name, f"must be true, false or null, got {value!r}")
    return value


def _number(kind: str, name: str, value: Any) -> float:
    kind_of = type(value)
    if kind_of is float:
        if math.isfinite(value):
            return value
        raise RecordError(kind, name, f"must be a finite number, got {value!r}")
    if kind_of is int:
        return float(value)
    raise RecordError(kind, name, f"must be a number, got {value!r}")


def _optional_number(kind: str, name: str, value: Any) -> float | None:
    """A number, or None for one that is unknown or was not finite (NaN is written as null)."""
    kind_of = type(value)
    if kind_of is float:
        return value if math.isfinite(value) else None
    if value is None:
        return None
    if kind_of is int:
        return float(value)
    raise RecordError(kind, name, f"must be a number or null, got {value!r}")


def _str(kind: str, name: str, value: Any) -> str:
    if type(value) is not str:
        raise RecordError(kind, name, f"must be a string, got {value!r}")
    return value


def _optional_str(kind: str, name: str, value: Any) -> str | None:
    if value is not None and type(value) is not str:
        raise RecordError(kind, name, f"must be a string or null, got {value!r}")
    return value


def _prompt_id(kind: str, value: Any) -> str | int:
    if type(value) is str or type(value) is int:
        return value
    raise RecordError(kind, "prompt_id", f"must be a string or an int, got {value!r}")


def _sequence(kind: str, name: str, value: Any) -> Sequence[Any]:
    if isinstance(value, (list, tuple)):
        return value
    raise RecordError(kind, name, f"must be a list, got {value!r}")


_FLOAT_ONLY = {float}
_BOOL_ONLY = {bool}


def _finite_floats(items: Sequence[Any]) -> bool:
    """True when every item is a finite float, checked in C: the sum of finite floats is finite
    unless it overflows, which (like an int, None, NaN or a wrong type) answers False and
    leaves the caller's item-by-item check to name the culprit."""
    if set(map(type, items)) != _FLOAT_ONLY:
        return False
    total = sum(items)
    return total - total == 0.0


def _numbers(kind: str, name: str, value: Any, nullable: bool) -> tuple[float | None, ...]:
    items = _sequence(kind, name, value)
    if _finite_floats(items):
        return tuple(items)
    check = _optional_number if nullable else _number
    # tuple(list), not tuple(generator): a generator's tuple is allocated large and shrunk,
    # so the size-G tuples it frees pile up in CPython's tuple free list instead of being reused.
    return tuple([check(kind, f"{name}[{i}]", item) for i, item in enumerate(items)])


_VECTOR_TYPES = (list, tuple)


def _projection(
    kind: str, name: str, value: Any, entries: int
) -> tuple[tuple[float, ...], ...] | None:
    """`entries` vectors of PROJECTION_DIM finite numbers each, or None (no embeddings)."""
    if value is None:
        return None
    vectors = _sequence(kind, name, value)
    if len(vectors) != entries:
        raise RecordError(kind, name, f"has {len(vectors)} entries, expected {entries}")
    # The usual value, lists or tuples of PROJECTION_DIM finite floats, is checked in one pass;
    # anything else takes the loop below, which names the entry at fault.
    if all(
        type(vector) in _VECTOR_TYPES and len(vector) == PROJECTION_DIM for vector in vectors
    ) and _finite_floats(list(chain.from_iterable(vectors))):
        return tuple(map(tuple, vectors))
    checked = []
    for i, vector in enumerate(vectors):
        coordinates = _sequence(kind, f"{name}[{i}]", vector)
        if len(coordinates) != PROJECTION_DIM:
            raise RecordError(
                kind,
                f"{name}[{i}]",
                f"has {len(coordinates)} coordinates, a projection has {PROJECTION_DIM}",
            )
        checked.append(_numbers(kind, f"{name}[{i}]", coordinates, nullable=False))
    return tuple(checked)


def _bools(kind: str, name: str, value: Any) -> tuple[bool, ...]:
    items = _sequence(kind, name, value)
    if set(map(type, items)) <= _BOOL_ONLY:
        return tuple(items)
    for i, item in enumerate(items):
        if type(item) is not bool:
            raise RecordError(kind, f"{name}[{i}]", f"must be true or false, got {item!r}")
    return tuple(items)


def _strs(kind: str, name: str, value: Any) -> tuple[str, ...]:
    items = _sequence(kind, name, value)
    for i, item in enumerate(items):
        if type(item) is not str:
            raise RecordError(kind, f"{name}[{i}]", f"must be a string, got {item!r}")
    return tuple(items)


def _is_json(value: Any) -> bool:
    """A value `to_json_value` would leave as it is: plain JSON, finite floats, str keys."""
    if value is None or type(value) in (bool, int, str):
        return True
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is list:
        return all(_is_json(item) for item in value)
    if type(value) is dict:
        return all(type(key) is str and _is_json(item) for key, item in value.items())
    return False


def _set(record: Any, name: str, value: Any) -> None:
    object.__setattr__(record, name, value)


def _check_keys(kind: str, data: Any, required: frozenset[str], known: frozenset[str]) -> None:
    if not isinstance(data, Mapping):
        raise RecordError(kind, "(record)", f"must be a JSON object, got {type(data).__name__}")
    keys = data.keys()
    if keys == required:
        return
    for name in sorted(required):  # a fixed order: the same record always names the same field
        if name not in data:
            raise RecordError(kind, name, "is missing")
    for name in keys:
        if name not in known:
            raise RecordError(kind, name, f"is not a field of a {kind} record")


def _from_json(cls: Any, data: Any, where: str | None) -> Any:
    try:
        return cls._build(data)
    except RecordError as error:
        raise error.located(where) if where is not None else error from None


# --------------------------------------------------------------------------------------------
# steps.jsonl


_RESERVED_STEP_KEYS = ("step", "time")


@dataclass(frozen=True)
class StepRecord:
    """One line of steps.jsonl: ``{"step": 12, "time": 1769868309.41, "acc/mean": 0.56, ...}``.

    metrics: flat metric name -> scalar (number, bool, string or null; a NaN is null). The
        names are `care/metrics`' business, not the record's, so any name other than "step" and
        "time" is accepted.
    """

    KIND: ClassVar[str] = "step"

    step: int
    time: float
    metrics: Mapping[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind = self.KIND
        _int(kind, "step", self.step, minimum=0)
        _set(self, "time", _number(kind, "time", self.time))
        if not isinstance(self.metrics, Mapping):
            raise RecordError(kind, "metrics", f"must be a mapping, got {self.metrics!r}")
        metrics: dict[str, Scalar] = {}
        for name, value in self.metrics.items():
            if type(name) is not str:
                raise RecordError(kind, repr(name), "metric names must be strings")
            if name in _RESERVED_STEP_KEYS:
                raise RecordError(kind, name, "is set by the record itself, not a metric")
            if type(value) is float:
                metrics[name] = value if math.isfinite(value) else None
            elif value is None or type(value) in (bool, int, str):
                metrics[name] = value
            else:
                raise RecordError(
                    kind,
                    name,
                    f"must be a number, bool, string or null, got {type(value).__name__} "
                    "(log per-group vectors in groups.jsonl)",
                )
        _set(self, "metrics", metrics)

    def to_json(self) -> dict[str, Any]:
        """``{"step", "time", **metrics}``, "step" first."""
        return {"step": self.step, "time": self.time, **self.metrics}

    @classmethod
    def from_json(cls, data: Any, where: str | None = None) -> StepRecord:
        """The record of one parsed steps.jsonl line; `where` ("<file>:<line>") goes into errors."""
        return _from_json(cls, data, where)

    @classmethod
    def _build(cls, data: Any) -> StepRecord:
        if not isinstance(data, Mapping):
            raise RecordError(
                cls.KIND, "(record)", f"must be a JSON object, got {type(data).__name__}"
            )
        for name in _RESERVED_STEP_KEYS:
            if name not in data:
                raise RecordError(cls.KIND, name, "is missing")
        metrics = {name: value for name, value in data.items() if name not in _RESERVED_STEP_KEYS}
        return cls(data["step"], data["time"], metrics)


# --------------------------------------------------------------------------------------------
# groups.jsonl


@dataclass(frozen=True)
class HardNegative:
    """A selected (pseudo-)negative: its rollout index and its cosine distance to the anchor
    (null when the distance came out NaN)."""

    KIND: ClassVar[str] = "hard negative"

    index: int
    distance: float | None

    def __post_init__(self) -> None:
        _int(self.KIND, "index", self.index, minimum=0)
        _set(self, "distance", _optional_number(self.KIND, "distance", self.distance))

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "distance": self.distance}

    @classmethod
    def _build(cls, data: Any) -> HardNegative:
        _check_keys(cls.KIND, data, _HARD_NEGATIVE_KEYS, _HARD_NEGATIVE_KEYS)
        return cls(data["index"], data["distance"])


_HARD_NEGATIVE_KEYS = frozenset(("index", "distance"))


@dataclass(frozen=True)
class RgrRecord:
    """What Reflection-Guided Resampling did with a group.

    triggered: a repair continuation was decoded. When true every other field is set (reward and
        advantage may be null only in a run migrated from schema version 1, which did not log
        them); when false every other field is null.
    passed: the verifier accepted the repaired answer.
    source_index: the failed rollout that was repaired (the nearest hard negative).
    source_len, repair_len: tokens of that failed response and of the repair continuation.
    reward, advantage: the repaired sample's reward and sequence advantage (it is an extra
        sequence with no slot in the group's lists).
    """

    KIND: ClassVar[str] = "rgr"
    FIELDS: ClassVar[tuple[str, ...]] = (
        "triggered",
        "passed",
        "source_index",
        "source_len",
        "repair_len",
        "reward",
        "advantage",
    )

    triggered: bool
    passed: bool | None = None
    source_index: int | None = None
    source_len: int | None = None
    repair_len: int | None = None
    reward: float | None = None
    advantage: float | None = None

    def __post_init__(self) -> None:
        kind = self.KIND
        if not _bool(kind, "triggered", self.triggered):
            for name in self.FIELDS[1:]:
                if getattr(self, name) is not None:
                    raise RecordError(kind, name, "must be null when triggered is false")
            return
        if self.passed is None:
            raise RecordError(kind, "passed", "must be true or false when triggered")
        _bool(kind, "passed", self.passed)
        for name in ("source_index", "source_len", "repair_len"):
            if getattr(self, name) is None:
                raise RecordError(kind, name, "must be set when triggered")
            _int(kind, name, getattr(self, name), minimum=0)
        _set(self, "reward", _optional_number(kind, "reward", self.reward))
        _set(self, "advantage", _optional_number(kind, "advantage", self.advantage))

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def _build(cls, data: Any) -> RgrRecord:
        _check_keys(cls.KIND, data, _RGR_KEYS, _RGR_KEYS)
        record = object.__new__(cls)  # every field present: filled in, then checked
        record.__dict__.update(data)
        record.__post_init__()
        return record


_RGR_KEYS = frozenset(RgrRecord.FIELDS)


@dataclass(frozen=True)
class GroupRecord:
    """One line of groups.jsonl: what CARE did with one prompt group at one step.

    Every field is described in docs/run_format.md. `advantages`, `rewards` and `correct` hold
    one entry per rollout (length G); rollout indices (anchor, pseudo-anchor, hard negatives,
    the repair's source) lie in 0..G-1. `projection` holds the projected rationale embedding
    (PROJECTION_DIM numbers) of each rollout, then of the RGR repair when one was triggered, or
    is None when the estimator computes no embeddings; a dict without it reads as None.
    `correct_source` and `not_computed` are set only by `care import` and are left out of the
    line when they are at their defaults.
    """

    KIND: ClassVar[str] = "group"
    FIELDS: ClassVar[tuple[str, ...]] = (
        "step",
        "group_id",
        "prompt_id",
        "G",
        "n_correct",
        "anchor_index",
        "hard_negatives",
        "k_prime",
        "rescued",
        "pseudo_anchor",
        "rescue_impossible",
        "rgr",
        "advantages",
        "rewards",
        "correct",
    )
    OPTIONAL_FIELDS: ClassVar[tuple[str, ...]] = ("projection",)
    IMPORT_FIELDS: ClassVar[tuple[str, ...]] = ("correct_source", "not_computed")

    step: int
    group_id: int
    prompt_id: str | int
    G: int
    n_correct: int
    anchor_index: int | None
    hard_negatives: tuple[HardNegative, ...]
    k_prime: int
    rescued: bool
    pseudo_anchor: int | None
    rescue_impossible: bool
    rgr: RgrRecord | None
    advantages: tuple[float | None, ...]
    rewards: tuple[float, ...]
    correct: tuple[bool, ...]
    projection: tuple[tuple[float, ...], ...] | None = None
    correct_source: str | None = None
    not_computed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        kind = self.KIND
        _int(kind, "step", self.step, minimum=0)
        _int(kind, "group_id", self.group_id, minimum=0)
        _prompt_id(kind, self.prompt_id)
        size = _int(kind, "G", self.G, minimum=0)
        advantages = _numbers(kind, "advantages", self.advantages, nullable=True)
        rewards = _numbers(kind, "rewards", self.rewards, nullable=False)
        correct = _bools(kind, "correct", self.correct)
        _set(self, "advantages", advantages)
        _set(self, "rewards", rewards)
        _set(self, "correct", correct)
        for name, values in (
            ("advantages", advantages),
            ("rewards", rewards),
            ("correct", correct),
        ):
            if len(values) != size:
                raise RecordError(kind, name, f"has {len(values)} entries, G is {size}")
        n_correct = _int(kind, "n_correct", self.n_correct, minimum=0)
        if n_correct != sum(correct):
            raise RecordError(
                kind, "n_correct", f"is {n_correct} but 'correct' holds {sum(correct)} true"
            )
        anchor = self._index("anchor_index", self.anchor_index)
        if anchor is not None and not correct[anchor]:
            raise RecordError(kind, "anchor_index", f"rollout {anchor} is not correct")
        negatives = _sequence(kind, "hard_negatives", self.hard_negatives)
        for i, negative in enumerate(negatives):
            if type(negative) is not HardNegative:
                name = f"hard_negatives[{i}]"
                raise RecordError(kind, name, f"must be a HardNegative, got {negative!r}")
            if not 0 <= negative.index < size:  # HardNegative checked it is an int
                self._index(f"hard_negatives[{i}].index", negative.index)
        checked = tuple(negatives)
        if len({negative.index for negative in checked}) != len(checked):
            raise RecordError(kind, "hard_negatives", "names a rollout twice")
        _set(self, "hard_negatives", checked)
        k_prime = _int(kind, "k_prime", self.k_prime, minimum=0)
        if k_prime != len(checked):
            raise RecordError(
                kind, "k_prime", f"is {k_prime} but hard_negatives holds {len(checked)}"
            )
        rescued = _bool(kind, "rescued", self.rescued)
        pseudo = self._index("pseudo_anchor", self.pseudo_anchor)
        if rescued and (n_correct or pseudo is None):
            raise RecordError(
                kind, "rescued", "a rescued group has no correct rollout and a pseudo_anchor"
            )
        if pseudo is not None and not rescued:
            raise RecordError(kind, "pseudo_anchor", "must be null when rescued is false")
        if _bool(kind, "rescue_impossible", self.rescue_impossible) and (rescued or n_correct):
            raise RecordError(
                kind,
                "rescue_impossible",
                "can only be true for a group with no correct rollout that was not rescued",
            )
        if self.rgr is not None:
            if not isinstance(self.rgr, RgrRecord):
                raise RecordError(kind, "rgr", f"must be an RgrRecord or null, got {self.rgr!r}")
            if self.rgr.triggered:
                source = self._index("rgr.source_index", self.rgr.source_index)
                if source is not None and correct[source]:
                    raise RecordError(
                        kind,
                        "rgr.source_index",
                        f"rollout {source} is correct; only failures are repaired",
                    )
        repaired = self.rgr is not None and self.rgr.triggered
        _set(
            self,
            "projection",
            _projection(kind, "projection", self.projection, size + int(repaired)),
        )
        _optional_str(kind, "correct_source", self.correct_source)
        _set(self, "not_computed", _strs(kind, "not_computed", self.not_computed))

    def _index(self, name: str, value: Any) -> int | None:
        index = _optional_int(self.KIND, name, value, minimum=0)
        if index is not None and index >= self.G:
            raise RecordError(self.KIND, name, f"is {index}, outside the group's G = {self.G}")
        return index

    def to_json(self) -> dict[str, Any]:
        """The groups.jsonl object, "step" first; the import fields only when set."""
        data: dict[str, Any] = {
            "step": self.step,
            "group_id": self.group_id,
            "prompt_id": self.prompt_id,
            "G": self.G,
            "n_correct": self.n_correct,
            "anchor_index": self.anchor_index,
            "hard_negatives": [negative.to_json() for negative in self.hard_negatives],
            "k_prime": self.k_prime,
            "rescued": self.rescued,
            "pseudo_anchor": self.pseudo_anchor,
            "rescue_impossible": self.rescue_impossible,
            "rgr": None if self.rgr is None else self.rgr.to_json(),
            "advantages": list(self.advantages),
            "rewards": list(self.rewards),
            "correct": list(self.correct),
            "projection": None
            if self.projection is None
            else [list(vector) for vector in self.projection],
        }
        if self.correct_source is not None:
            data["correct_source"] = self.correct_source
        if self.not_computed:
            data["not_computed"] = list(self.not_computed)
        return data

    @classmethod
    def from_json(cls, data: Any, where: str | None = None) -> GroupRecord:
        """The record of one parsed groups.jsonl line; `where` ("<file>:<line>") goes into errors."""
        return _from_json(cls, data, where)

    @classmethod
    def _build(cls, data: Any) -> GroupRecord:
        _check_keys(cls.KIND, data, _GROUP_KEYS, _GROUP_KNOWN)
        negatives = _sequence(cls.KIND, "hard_negatives", data["hard_negatives"])
        built = []
        for i, negative in enumerate(negatives):
            try:
                built.append(HardNegative._build(negative))
            except RecordError as error:
                raise error.inside(cls.KIND, f"hard_negatives[{i}]") from None
        repair = data["rgr"]
        if repair is not None:
            try:
                repair = RgrRecord._build(repair)
            except RecordError as error:
                raise error.inside(cls.KIND, "rgr") from None
        # Every field is known and present (the optional and import fields get their
        # defaults), so the record is filled in directly and checked by __post_init__ as
        # __init__ would.
        record = object.__new__(cls)
        fields = record.__dict__
        fields.update(_GROUP_DEFAULTS)
        fields.update(data)
        fields["hard_negatives"] = built
        fields["rgr"] = repair
        record.__post_init__()
        return record


_GROUP_KEYS = frozenset(GroupRecord.FIELDS)
_GROUP_DEFAULTS = {"projection": None, "correct_source": None, "not_computed": ()}
_GROUP_KNOWN = _GROUP_KEYS | frozenset(GroupRecord.OPTIONAL_FIELDS + GroupRecord.IMPORT_FIELDS)


# --------------------------------------------------------------------------------------------
# samples/step_NNNNNNNN.jsonl


@dataclass(frozen=True)
class SampleRecord:
    """One line of a sample file: one rollout (or RGR repair) of one step.

    index is the rollout's place in its group (0..G-1); an RGR repair is no rollout of the
    group: index -1, and reflected_from the batch row of the failure it continues.

    The first seven fields are required. The trainer also sets question, repair_prefix,
    reflected_from, format, extracted, advantage and finish_reason; `care import` sets question,
    extracted, advantage, correct_source, answers, verifier_correct, source_line and dump. A
    field a writer does not know keeps its default: null (reflected_from -1, answers empty).
    Every field is written, so each line holds the same keys; `from_json` fills a missing
    optional one with its default.
    """

    KIND: ClassVar[str] = "sample"
    REQUIRED: ClassVar[tuple[str, ...]] = (
        "step",
        "group_id",
        "index",
        "prompt_id",
        "response",
        "reward",
        "correct",
    )

    step: int
    group_id: int
    index: int
    prompt_id: str | int
    response: str
    reward: float
    correct: bool
    question: str | None = None
    repair_prefix: str | None = None
    reflected_from: int = -1
    format: bool | None = None
    extracted: str | None = None
    advantage: float | None = None
    finish_reason: str | None = None
    correct_source: str | None = None
    answers: tuple[str, ...] = ()
    verifier_correct: bool | None = None
    source_line: str | None = None
    dump: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        kind = self.KIND
        _int(kind, "step", self.step, minimum=0)
        _int(kind, "group_id", self.group_id, minimum=0)
        _int(kind, "index", self.index, minimum=-1)
        _prompt_id(kind, self.prompt_id)
        _str(kind, "response", self.response)
        _set(self, "reward", _number(kind, "reward", self.reward))
        _bool(kind, "correct", self.correct)
        _optional_str(kind, "question", self.question)
        _optional_str(kind, "repair_prefix", self.repair_prefix)
        if (_int(kind, "reflected_from", self.reflected_from, minimum=-1) >= 0) != (
            self.index == -1
        ):
            raise RecordError(
                kind,
                "index",
                f"is {self.index} with reflected_from {self.reflected_from}: an RGR repair "
                "(reflected_from >= 0) has index -1, one of the G rollouts its index 0..G-1",
            )
        _optional_bool(kind, "format", self.format)
        _optional_str(kind, "extracted", self.extracted)
        _set(self, "advantage", _optional_number(kind, "advantage", self.advantage))
        _optional_str(kind, "finish_reason", self.finish_reason)
        _optional_str(kind, "correct_source", self.correct_source)
        _set(self, "answers", _strs(kind, "answers", self.answers))
        _optional_bool(kind, "verifier_correct", self.verifier_correct)
        _optional_str(kind, "source_line", self.source_line)
        if self.dump is not None and not (isinstance(self.dump, dict) and _is_json(self.dump)):
            raise RecordError(
                kind,
                "dump",
                f"must be a JSON object (str keys, finite numbers) or null, got {self.dump!r}",
            )

    @property
    def is_repair(self) -> bool:
        """An RGR repair continuation rather than one of the group's G rollouts."""
        return self.reflected_from >= 0

    def to_json(self) -> dict[str, Any]:
        """The sample-file object: every field, "step" first."""
        data = {name: getattr(self, name) for name in _SAMPLE_FIELDS}
        data["answers"] = list(self.answers)
        return data

    @classmethod
    def from_json(cls, data: Any, where: str | None = None) -> SampleRecord:
        """The record of one parsed sample line; `where` ("<file>:<line>") goes into errors."""
        return _from_json(cls, data, where)

    @classmethod
    def _build(cls, data: Any) -> SampleRecord:
        _check_keys(cls.KIND, data, _SAMPLE_REQUIRED, _SAMPLE_KEYS)
        return cls(**data)


_SAMPLE_FIELDS = tuple(item.name for item in fields(SampleRecord))
_SAMPLE_KEYS = frozenset(_SAMPLE_FIELDS)
_SAMPLE_REQUIRED = frozenset(SampleRecord.REQUIRED)

RECORD_TYPES: dict[str, Any] = {"step": StepRecord, "group": GroupRecord, "sample": SampleRecord}


# --------------------------------------------------------------------------------------------
# older schema versions


def migrate_json(kind: str, data: Any, version: int) -> Any:
    """A parsed record of schema `version` in the current version's form (a new dict when
    anything changed; `data` as it is when nothing needed to, or when it is not an object).

    Version 1 -> 2: an ``rgr`` object gets ``reward`` and ``advantage`` when it lacks them
    (null: version 1 logged them only for some repairs, and imports and hand-written runs never);
    a sample loses the free fields version 1 allowed beyond the ones `SampleRecord` lists (the
    trainer and `care import` of version 1 wrote none), and an RGR repair's sample gets index
    -1 (the trainer wrote -1, hand-built runs the repaired rollout's index).

    Version 2 -> 3: a group line has no ``projection``; `GroupRecord` reads a missing one as
    null, so nothing is added here.

    Example: ``migrate_json("group", {..., "rgr": {"triggered": False, "passed": None, ...}},
    1)["rgr"]["reward"]`` -> ``None``.
    """
    if version >= 2 or not isinstance(data, dict):
        return data
    if kind == "group":
        repair = data.get("rgr")
        if isinstance(repair, dict) and ("reward" not in repair or "advantage" not in repair):
            repair = {"reward": None, "advantage": None, **repair}
            data = {**data, "rgr": repair}
        return data
    if kind == "sample":
        if not data.keys() <= _SAMPLE_KEYS:
            data = {name: value for name, value in data.items() if name in _SAMPLE_KEYS}
        repair = data.get("reflected_from")
        if type(repair) is int and repair >= 0 and data.get("index") != -1:
            data = {**data, "index": -1}
    return data


_told_lock = threading.Lock()
_told: set[str] = set()


def note_migration(run_dir: str | os.PathLike[str], version: int) -> bool:
    """Log, once per folder and process, that `run_dir` (schema `version`) is read through the
    migration to the current version; True when this call logged it."""
    key = os.path.abspath(run_dir)
    with _told_lock:
        if key in _told:
            return False
        _told.add(key)
    logger.warning(
        "%s: run written with schema version %d, read as version %d (migrated in memory, the "
        "files are not changed; what that version did not log reads as unknown: RGR reward and "
        "advantage before version 2, rationale projections before version 3)",
        Path(run_dir),
        version,
        SCHEMA_VERSION,
    )
    return True


def _step_checked(data: Any) -> Any:
    StepRecord._build(data)
    return data


def json_parser(kind: str, version: int = SCHEMA_VERSION) -> Any:
    """What a reader applies to each parsed line of a `kind` file written with schema `version`:
    a function from the JSON object to its record that raises RecordError (without a place; the
    reader adds the file and line).

    Group and sample lines become `GroupRecord` and `SampleRecord`; step lines stay the dicts
    they are (a flat metric map, which the dashboard reads as columns) once `StepRecord` found
    them well formed.

    Example: ``json_parser("group")(json.loads(line))`` -> ``GroupRecord(step=3, ...)``.
    """
    if kind == "step":
        return _step_checked
    if kind not in ("group", "sample"):
        raise ValueError(f"kind must be one of {sorted(RECORD_TYPES)}, got {kind!r}")
    build = RECORD_TYPES[kind]._build
    if version >= SCHEMA_VERSION:
        return build
    return lambda data: build(migrate_json(kind, data, version))
