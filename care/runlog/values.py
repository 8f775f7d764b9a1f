"""Turning logged values into strict JSON: tensors and numpy values to Python, NaN/inf to null."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

# numpy and torch are recognised by module name so that reading or writing a run never has to
# import torch (seconds of start-up for the dashboard).
_ARRAY_MODULES = frozenset({"numpy", "torch"})


class _ConversionError(Exception):
    """Raised deep inside a value; each enclosing container prepends its key on the way out."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.location: list[str] = []


def _convert(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):  # also numpy.float64, a float subclass
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        converted: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _ConversionError(f"key {key!r} is a {type(key).__name__}; keys must be str")
            try:
                converted[key] = _convert(item)
            except _ConversionError as error:
                error.location.insert(0, f".{key}")
                raise
        return converted
    if isinstance(value, (list, tuple)):
        items: list[Any] = []
        for index, item in enumerate(value):
            try:
                items.append(_convert(item))
            except _ConversionError as error:
                error.location.insert(0, f"[{index}]")
                raise
        return items
    if type(value).__module__.partition(".")[0] in _ARRAY_MODULES and hasattr(value, "tolist"):
        # tolist() covers 0-d and n-d tensors/arrays and numpy scalars, on any device and dtype.
        return _convert(value.tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise _ConversionError(
        f"value of type {type(value).__module__}.{type(value).__qualname__} cannot be written "
        "as JSON (allowed: None, bool, int, float, str, list, tuple, dict with str keys, "
        "numpy/torch scalars and arrays, paths)"
    )


def to_json_value(value: Any, what: str = "value") -> Any:
    """`value` as plain JSON-ready Python: tensors/arrays to lists, NaN and ±inf to None.

    `what` names the value in the ValueError raised for keys that are not str or for types that
    JSON cannot hold, e.g. ``"groups record 3"`` -> ``"groups record 3.rgr.passed: ..."``.

    Example: ``to_json_value({"a": torch.tensor([1.0, float("nan")]), "b": np.int64(2)})``
    -> ``{"a": [1.0, None], "b": 2}``.
    """
    try:
        return _convert(value)
    except _ConversionError as error:
        raise ValueError(f"{what}{''.join(error.location)}: {error.problem}") from None


def encode_line(record: dict[str, Any]) -> bytes:
    """One already-converted record as a compact UTF-8 JSON line ending in a newline.

    Example: ``encode_line({"step": 1, "x": 0.5})`` -> ``b'{"step":1,"x":0.5}\\n'``.
    """
    text = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (text + "\n").encode("utf-8")
