"""Dataset rows (JSONL or parquet) loaded into typed, validated `Example`s.

The row layout is the one EasyR1 users already have: `id`, `images`, `question`, `answer`,
optional `choices` and `answer_type`; any other field is kept in `Example.extra`. Every bad row is
reported with its file, its row and the field at fault (see docs/data_format.md).
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

ANSWER_TYPES: tuple[str, ...] = ("multiple_choice", "integer", "number", "text", "math")
"""Every allowed `answer_type`; the verifier picks its comparison by this name."""

IMAGE_PLACEHOLDER = "<image>"
"""Marks where an image goes in `question`; when any is present their count must match `images`."""

CHOICE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""Multiple-choice options are lettered in order: option 0 is "A"."""

KNOWN_FIELDS = ("id", "images", "question", "answer", "choices", "answer_type")
REQUIRED_FIELDS = ("id", "images", "question", "answer")
MAX_LISTED_PROBLEMS = 20

_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
# "(B)", "B.", "B)" are common spellings of a gold letter in existing datasets.
_DECORATED_LETTER = re.compile(r"\(?([A-Z])[.)]?")

ImageSource = Path | bytes
"""One image of an example: a resolved file path, or the encoded file bytes (PNG, JPEG, ...)."""

RowUnit = Literal["line", "row"]
"""How a row is counted: JSONL `line` numbers start at 1, parquet `row` indices start at 0."""


class DataError(ValueError):
    """A dataset has bad rows (or an example's image cannot be read). `bad_rows` lists them all."""

    def __init__(self, message: str, bad_rows: Sequence[BadRow] = ()) -> None:
        super().__init__(message)
        self.bad_rows: list[BadRow] = list(bad_rows)


@dataclass(frozen=True)
class RowSource:
    """Where a row came from. JSONL rows count `line`s from 1, parquet rows count `row`s from 0.

    >>> str(RowSource(Path("d/train.jsonl"), 3, "line"))
    'd/train.jsonl:line 3'
    """

    file: Path
    row: int
    unit: RowUnit

    def __str__(self) -> str:
        return f"{self.file}:{self.unit} {self.row}"


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with one field of a row, e.g. `FieldProblem("answer", "is empty")`."""

    field: str
    reason: str


@dataclass(frozen=True)
class BadRow:
    """A row that failed validation, with every problem found in it (at least one).

    `field` and `reason` are those of the first problem; `lines()` gives one
    `file:line N:field: reason` line per problem.
    """

    source: RowSource
    problems: tuple[FieldProblem, ...]

    @property
    def field(self) -> str:
        return self.problems[0].field

    @property
    def reason(self) -> str:
        return self.problems[0].reason

    def lines(self) -> list[str]:
        return [f"{self.source}:{p.field}: {p.reason}" for p in self.problems]


@dataclass(frozen=True)
class Example:
    """One validated row. Images stay on disk (or as bytes) until `load_images()` is called.

    `answer` is normalised: for multiple choice it is always the letter of the gold option
    ("A" for `choices[0]`). `source` says which file and row the example came from.

    >>> ex = Example("q1", (), "What is 2+3?", "5", "integer", None, RowSource(Path("x.jsonl"), 1, "line"))
    >>> ex.answer_type, ex.load_images()
    ('integer', [])
    """

    id: str
    images: tuple[ImageSource, ...]
    question: str
    answer: str
    answer_type: str
    choices: tuple[str, ...] | None
    source: RowSource
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def load_images(self) -> list[Image.Image]:
        """Decode every image as an RGB `PIL.Image`, in row order.

        Raises `DataError` naming the row and the image index when one cannot be read.
        """
        loaded = []
        for index, image_source in enumerate(self.images):
            try:
                loaded.append(_open_rgb(image_source))
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                raise DataError(
                    f"{self.source}:images[{index}]: cannot read image: {error}"
                ) from error
        return loaded


@dataclass
class LoadedDataset:
    """The result of `load_examples`: the good examples and the bad rows that were skipped."""

    path: Path
    examples: list[Example]
    skipped: list[BadRow]

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]


def infer_answer_type(answer: str, choices: Sequence[str] | None = None) -> str:
    """The `answer_type` of a row that does not give one.

    choices → multiple_choice; an integer literal → integer; a decimal or scientific literal →
    number; anything else → text.

    >>> infer_answer_type("12"), infer_answer_type("-0.5"), infer_answer_type("x^2")
    ('integer', 'number', 'text')
    >>> infer_answer_type("B", ["cat", "dog"])
    'multiple_choice'
    """
    if choices is not None:
        return "multiple_choice"
    stripped = answer.strip()
    if _INTEGER.fullmatch(stripped):
        return "integer"
    if _NUMBER.fullmatch(stripped):
        return "number"
    return "text"


def normalise_choice_answer(answer: str, choices: Sequence[str]) -> str:
    """The letter of the gold option, from a gold given as a letter or as the option's text.

    Accepted letters: "B", "(B)", "B.", "B)" (upper case, within the options). Otherwise the
    answer must equal one option's text (surrounding whitespace ignored). A letter that is also
    the text of a *different* option is ambiguous and rejected.

    >>> normalise_choice_answer("(B)", ["cat", "dog"]), normalise_choice_answer("dog", ["cat", "dog"])
    ('B', 'B')
    """
    stripped = answer.strip()
    texts = [choice.strip() for choice in choices]
    text_index = texts.index(stripped) if stripped in texts else None
    letter_match = _DECORATED_LETTER.fullmatch(stripped)
    letter_index = None
    if letter_match is not None:
        candidate = CHOICE_LETTERS.index(letter_match.group(1))
        if candidate < len(choices):
            letter_index = candidate
    if letter_index is not None:
        if text_index is not None and text_index != letter_index:
            raise ValueError(
                f"{answer!r} is ambiguous: it is the letter of option {CHOICE_LETTERS[letter_index]}"
                f" and the text of option {CHOICE_LETTERS[text_index]}"
            )
        return CHOICE_LETTERS[letter_index]
    if text_index is not None:
        return CHOICE_LETTERS[text_index]
    last = CHOICE_LETTERS[len(choices) - 1]
    raise ValueError(
        f"{answer!r} is neither a letter A..{last} nor the text of one of the {len(choices)} choices"
    )


def load_examples(
    path: str | Path,
    on_bad_row: Literal["error", "skip"] = "error",
    check_images: bool = True,
) -> LoadedDataset:
    """Read and validate a `.jsonl` or `.parquet` dataset.

    Image paths are resolved relative to the data file's folder. With `check_images`, every
    image file is opened and its header verified (not fully decoded); without it, images are not
    touched at all until `Example.load_images()`.

    on_bad_row="error" raises `DataError` listing every bad row (the message shows the first
    problems and a count); "skip" leaves them out and returns them in `LoadedDataset.skipped`.

    >>> ds = load_examples("data/train.jsonl", on_bad_row="skip")  # doctest: +SKIP
    >>> len(ds.examples), len(ds.skipped)                          # doctest: +SKIP
    (998, 2)
    """
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows: Iterator[tuple[int, Any, FieldProblem | None]] = _jsonl_rows(path)
        unit: RowUnit = "line"
    elif suffix == ".parquet":
        rows = _parquet_rows(path)
        unit = "row"
    else:
        raise ValueError(f"dataset file {path} must end in .jsonl or .parquet, not {suffix!r}")

    image_dir = path.absolute().parent
    examples: list[Example] = []
    bad_rows: list[BadRow] = []
    first_row_of_id: dict[str, int] = {}
    for row_number, row, parse_problem in rows:
        source = RowSource(path, row_number, unit)
        if parse_problem is not None:
            bad_rows.append(BadRow(source, (parse_problem,)))
            continue
        example_id, example, problems = _validate_row(row, source, image_dir, check_images)
        if example_id is not None:
            # Rows are counted once per id even when bad: an id should name one row in the file.
            first = first_row_of_id.setdefault(example_id, row_number)
            if first != row_number:
                problems.append(
                    FieldProblem("id", f"duplicate id {example_id!r} (first at {unit} {first})")
                )
        if problems or example is None:
            bad_rows.append(BadRow(source, tuple(problems)))
        else:
            examples.append(example)

    if bad_rows and on_bad_row == "error":
        raise DataError(_bad_rows_message(path, bad_rows, len(examples) + len(bad_rows)), bad_rows)
    return LoadedDataset(path=path, examples=examples, skipped=bad_rows)


def _bad_rows_message(path: Path, bad_rows: Sequence[BadRow], n_rows: int) -> str:
    lines = [line for bad_row in bad_rows for line in bad_row.lines()]
    shown = lines[:MAX_LISTED_PROBLEMS]
    message = [f"{path}: {len(bad_rows)} bad rows out of {n_rows}:"]
    message += [f"  {line}" for line in shown]
    if len(lines) > len(shown):
        message.append(f"  ... and {len(lines) - len(shown)} more problems")
    message.append("(pass on_bad_row='skip' to drop bad rows)")
    return "\n".join(message)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any, FieldProblem | None]]:
    with path.open("r", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line), None
            except json.JSONDecodeError as error:
                yield line_number, None, FieldProblem("<json>", f"invalid JSON: {error.msg}")


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any, FieldProblem | None]]:
    try:
        import pyarrow.parquet as parquet
    except ImportError as error:
        raise ImportError(
            f"reading {path} needs pyarrow: pip install -c constraints.txt pyarrow"
        ) from error
    table = parquet.read_table(path)
    for row_index, row in enumerate(table.to_pylist()):
        yield row_index, row, None


def _validate_row(
    row: Any, source: RowSource, image_dir: Path, check_images: bool
) -> tuple[str | None, Example | None, list[FieldProblem]]:
    """Check one parsed row: its id (when readable), the example (when valid), every problem."""
    if not isinstance(row, dict):
        return (
            None,
            None,
            [FieldProblem("<row>", f"must be a JSON object, got {type(row).__name__}")],
        )
    problems: list[FieldProblem] = []
    # Parquet columns are nullable: a null in an optional column means "not given".
    for name in REQUIRED_FIELDS:
        if row.get(name) is None:
            problems.append(FieldProblem(name, "missing required field"))

    example_id = _text_field(row, "id", problems, allow_empty=False)
    question = _text_field(row, "question", problems, allow_empty=True)
    answer = _text_field(row, "answer", problems, allow_empty=False)
    images = _image_sources(row.get("images"), image_dir, check_images, problems)
    choices = _choices(row.get("choices"), problems)

    answer_type = row.get("answer_type")
    if answer_type is not None and answer_type not in ANSWER_TYPES:
        problems.append(
            FieldProblem(
                "answer_type", f"unknown answer_type {answer_type!r}; allowed: {ANSWER_TYPES}"
            )
        )
        answer_type = None
    elif answer_type is None and answer is not None:
        answer_type = infer_answer_type(answer, choices)

    if answer is not None and answer_type is not None:
        answer = _check_answer(answer, answer_type, choices, problems)

    if question is not None and images is not None:
        # Count the row's entries, not the readable ones: an unreadable image is its own problem.
        n_images = len(row["images"])
        n_placeholders = question.count(IMAGE_PLACEHOLDER)
        if n_placeholders and n_placeholders != n_images:
            problems.append(
                FieldProblem(
                    "question",
                    f"has {n_placeholders} {IMAGE_PLACEHOLDER} placeholders but the row has "
                    f"{n_images} images",
                )
            )

    if problems:
        return example_id, None, problems
    extra = {key: value for key, value in row.items() if key not in KNOWN_FIELDS}
    example = Example(
        id=example_id,
        images=tuple(images or ()),
        question=question or "",
        answer=answer or "",
        answer_type=answer_type or "text",
        choices=choices,
        source=source,
        extra=extra,
    )
    return example_id, example, problems


def _text_field(
    row: dict, name: str, problems: list[FieldProblem], allow_empty: bool
) -> str | None:
    """A string field; integers (common for ids and numeric answers) are taken as their text."""
    value = row.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        problems.append(FieldProblem(name, f"must be a string, got {type(value).__name__}"))
        return None
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(FieldProblem(name, f"must be a string, got the float {value}"))
        return None
    text = value if isinstance(value, str) else str(value)
    if not allow_empty and not text.strip():
        problems.append(FieldProblem(name, "is empty"))
        return None
    return text


def _choices(value: Any, problems: list[FieldProblem]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        problems.append(
            FieldProblem("choices", f"must be a list of strings, got {type(value).__name__}")
        )
        return None
    if not 2 <= len(value) <= len(CHOICE_LETTERS):
        problems.append(
            FieldProblem(
                "choices", f"must hold 2 to {len(CHOICE_LETTERS)} options, got {len(value)}"
            )
        )
        return None
    seen: dict[str, int] = {}
    for index, option in enumerate(value):
        if not isinstance(option, str) or not option.strip():
            problems.append(
                FieldProblem(f"choices[{index}]", f"must be a non-empty string, got {option!r}")
            )
            return None
        first = seen.setdefault(option.strip(), index)
        if first != index:
            problems.append(
                FieldProblem(
                    f"choices[{index}]", f"repeats option {CHOICE_LETTERS[first]} ({option!r})"
                )
            )
            return None
    return tuple(value)


def _check_answer(
    answer: str, answer_type: str, choices: tuple[str, ...] | None, problems: list[FieldProblem]
) -> str:
    """Normalise a multiple-choice gold to its letter; check numeric golds parse."""
    if answer_type == "multiple_choice":
        if choices is None:
            problems.append(FieldProblem("choices", "required when answer_type is multiple_choice"))
            return answer
        try:
            return normalise_choice_answer(answer, choices)
        except ValueError as error:
            problems.append(FieldProblem("answer", str(error)))
            return answer
    if choices is not None:
        problems.append(FieldProblem("answer_type", f"is {answer_type!r} but the row has choices"))
    elif answer_type == "integer" and not _INTEGER.fullmatch(answer.strip()):
        problems.append(FieldProblem("answer", f"{answer!r} is not an integer"))
    elif answer_type == "number" and not _NUMBER.fullmatch(answer.strip()):
        problems.append(FieldProblem("answer", f"{answer!r} is not a number"))
    return answer


def _image_sources(
    value: Any, image_dir: Path, check_images: bool, problems: list[FieldProblem]
) -> list[ImageSource] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        problems.append(FieldProblem("images", f"must be a list, got {type(value).__name__}"))
        return None
    sources: list[ImageSource] = []
    for index, item in enumerate(value):
        name = f"images[{index}]"
        image_source = _image_source(item, image_dir)
        if isinstance(image_source, FieldProblem):
            problems.append(FieldProblem(name, image_source.reason))
            continue
        if check_images:
            failure = _verify_image(image_source)
            if failure is not None:
                problems.append(FieldProblem(name, failure))
                continue
        sources.append(image_source)
    return sources


def _image_source(item: Any, image_dir: Path) -> ImageSource | FieldProblem:
    # Hugging Face `Image` features store {"bytes": ..., "path": ...}; bytes win when both are set.
    if isinstance(item, dict):
        data, file_name = item.get("bytes"), item.get("path")
        if data is not None:
            item = data
        elif file_name is not None:
            item = file_name
        else:
            return FieldProblem("", "image dict has neither 'bytes' nor 'path'")
    if isinstance(item, bytes | bytearray):
        if not item:
            return FieldProblem("", "image bytes are empty")
        return bytes(item)
    if isinstance(item, str):
        if not item.strip():
            return FieldProblem("", "image path is empty")
        return image_dir / item
    return FieldProblem("", f"must be a path string or image bytes, got {type(item).__name__}")


def _verify_image(image_source: ImageSource) -> str | None:
    """None when the image header decodes; otherwise why not (without decoding all pixels)."""
    if isinstance(image_source, Path) and not image_source.is_file():
        return f"image file {image_source} does not exist"
    try:
        opened = (
            Image.open(io.BytesIO(image_source))
            if isinstance(image_source, bytes)
            else Image.open(image_source)
        )
        with opened as image:
            image.verify()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        what = "image bytes" if isinstance(image_source, bytes) else f"image file {image_source}"
        return f"{what} cannot be decoded: {error}"
    return None


def _open_rgb(image_source: ImageSource) -> Image.Image:
    stream = io.BytesIO(image_source) if isinstance(image_source, bytes) else image_source
    with Image.open(stream) as image:
        return image.convert("RGB")


def load_split(paths: Sequence[str | Path], on_bad_row: str) -> tuple[list[Example], int]:
    """The examples of ``paths`` in order, and how many bad rows ``on_bad_row: skip`` left out."""
    examples: list[Example] = []
    skipped = 0
    for path in paths:
        loaded = load_examples(path, on_bad_row=on_bad_row)
        examples.extend(loaded.examples)
        skipped += len(loaded.skipped)
    return examples, skipped
