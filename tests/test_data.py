"""Dataset rows: loading, answer types, multiple-choice normalisation and bad-row reporting."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from care.data import (
    DataError,
    infer_answer_type,
    load_examples,
    normalise_choice_answer,
)
from care.data.cli import data_app


def png_bytes(colour: tuple[int, int, int] = (200, 10, 10), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (8, 6), colour)
    (image.convert(mode) if mode != "RGB" else image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def good_row(row_id: str = "r0", **changes: object) -> dict:
    row = {"id": row_id, "images": ["img/a.png"], "question": "<image>How many?", "answer": "3"}
    row.update(changes)
    return row


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "sub"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "a.png").write_bytes(png_bytes((200, 10, 10)))
    (folder / "img" / "gray.png").write_bytes(png_bytes((90, 90, 90), mode="L"))
    (folder / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return folder


def test_relative_image_paths_resolve_against_the_data_file_not_the_cwd(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_file = write_jsonl(
        data_dir / "train.jsonl",
        [good_row("r0"), good_row("r1", images=["img/gray.png", "img/a.png"], question="Q")],
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    relative_file = Path("..") / data_file.relative_to(tmp_path)

    dataset = load_examples(relative_file)

    assert [ex.id for ex in dataset] == ["r0", "r1"]
    assert dataset.skipped == []
    assert dataset[0].images[0].resolve() == (data_dir / "img" / "a.png").resolve()
    gray, red = dataset[1].load_images()
    assert (gray.mode, gray.size, gray.getpixel((0, 0))) == ("RGB", (8, 6), (90, 90, 90))
    assert red.getpixel((3, 3)) == (200, 10, 10)
    assert (dataset[0].source.row, dataset[0].source.unit) == (1, "line")


@pytest.mark.parametrize(
    ("answer", "choices", "expected"),
    [
        ("12", None, "integer"),
        ("-3", None, "integer"),
        ("2.5", None, "number"),
        ("1e-3", None, "number"),
        (".5", None, "number"),
        ("x^2 + 1", None, "text"),
        ("Paris", None, "text"),
        ("B", ["cat", "dog"], "multiple_choice"),
    ],
)
def test_answer_type_is_inferred_from_the_gold_answer(
    answer: str, choices: list[str] | None, expected: str
) -> None:
    assert infer_answer_type(answer, choices) == expected


@pytest.mark.parametrize(
    ("answer", "letter"),
    [("B", "B"), ("(C)", "C"), ("A.", "A"), ("dog", "B"), ("  bird ", "C")],
)
def test_multiple_choice_gold_is_normalised_to_its_letter(answer: str, letter: str) -> None:
    assert normalise_choice_answer(answer, ["cat", "dog", "bird"]) == letter


def test_multiple_choice_gold_that_names_two_options_is_rejected() -> None:
    with pytest.raises(ValueError, match="ambiguous"):
        normalise_choice_answer("A", ["B", "A"])
    # A letter that is also its own option's text is consistent, not ambiguous.
    assert normalise_choice_answer("B", ["A", "B"]) == "B"


def test_row_fields_are_typed_normalised_and_extras_kept(data_dir: Path) -> None:
    rows = [
        good_row("mc", answer="dog", choices=["cat", "dog"], source_set="geo3k", level=2),
        good_row("num", answer=2.5),
        good_row(7, answer="x+1", answer_type="math"),
    ]
    dataset = load_examples(write_jsonl(data_dir / "rows.jsonl", rows))

    mc, number, math_row = dataset.examples
    assert (mc.answer, mc.answer_type, mc.choices) == ("B", "multiple_choice", ("cat", "dog"))
    assert dict(mc.extra) == {"source_set": "geo3k", "level": 2}
    assert (number.answer, number.answer_type) == ("2.5", "number")
    assert (math_row.id, math_row.answer_type) == ("7", "math")


# (mutation of a good row, field named in the error, words of the reason)
BAD_ROW_CASES = [
    ({"answer": None}, "answer", "missing required field"),
    ({"answer": "  "}, "answer", "is empty"),
    ({"answer": ["3"]}, "answer", "must be a string, got list"),
    ({"id": None}, "id", "missing required field"),
    ({"question": {"text": "q"}}, "question", "must be a string, got dict"),
    ({"images": "img/a.png"}, "images", "must be a list, got str"),
    ({"images": ["img/missing.png"]}, "images[0]", "does not exist"),
    ({"images": ["img/broken.png"]}, "images[0]", "cannot be decoded"),
    ({"images": [3]}, "images[0]", "must be a path string or image bytes"),
    ({"answer_type": "essay"}, "answer_type", "unknown answer_type 'essay'"),
    ({"answer_type": "integer", "answer": "three"}, "answer", "'three' is not an integer"),
    ({"answer_type": "multiple_choice"}, "choices", "required when answer_type is multiple_choice"),
    ({"choices": ["x", "y"], "answer": "Q"}, "answer", "neither a letter A..B"),
    ({"choices": ["x", "x"], "answer": "A"}, "choices[1]", "repeats option A"),
    ({"choices": ["x", "y"], "answer_type": "text"}, "answer_type", "but the row has choices"),
    ({"question": "<image><image> compare"}, "question", "has 2 <image> placeholders"),
]


@pytest.mark.parametrize(("change", "field", "reason"), BAD_ROW_CASES)
def test_each_bad_row_kind_names_file_line_and_field(
    data_dir: Path, change: dict, field: str, reason: str
) -> None:
    data_file = write_jsonl(data_dir / "bad.jsonl", [good_row("ok"), good_row("bad", **change)])

    with pytest.raises(DataError) as raised:
        load_examples(data_file)

    (bad_row,) = raised.value.bad_rows
    assert (bad_row.source.file, bad_row.source.row, bad_row.field) == (data_file, 2, field)
    assert reason in bad_row.reason
    assert f"{data_file}:line 2:{field}: " in str(raised.value)


def test_invalid_json_duplicate_ids_and_non_objects_are_bad_rows(data_dir: Path) -> None:
    data_file = write_jsonl(
        data_dir / "mixed.jsonl",
        [good_row("a"), '{"id": "b", "answer": ', good_row("a"), "", "[1, 2]", good_row("c")],
    )
    dataset = load_examples(data_file, on_bad_row="skip")

    assert [ex.id for ex in dataset] == ["a", "c"]
    reported = [(b.source.row, b.field) for b in dataset.skipped]
    # Line 4 is blank and skipped silently; line numbers still count it.
    assert reported == [(2, "<json>"), (3, "id"), (5, "<row>")]
    assert "duplicate id 'a' (first at line 1)" in dataset.skipped[1].reason


def test_error_mode_lists_every_bad_row_and_caps_the_message(data_dir: Path) -> None:
    rows = [good_row(f"r{i}", answer="" if i % 2 else "4") for i in range(60)]
    data_file = write_jsonl(data_dir / "many.jsonl", rows)

    with pytest.raises(DataError) as raised:
        load_examples(data_file)

    assert [b.source.row for b in raised.value.bad_rows] == list(range(2, 61, 2))
    message = str(raised.value)
    assert message.startswith(f"{data_file}: 30 bad rows out of 60:")
    assert message.count(":answer: is empty") == 20
    assert "... and 10 more problems" in message


def test_skip_mode_drops_bad_rows_and_reports_all_their_problems(data_dir: Path) -> None:
    rows = [
        good_row("a"),
        good_row("b", answer="", answer_type="essay"),
        good_row("c", images=["img/missing.png"]),
        good_row("d"),
    ]
    dataset = load_examples(write_jsonl(data_dir / "skip.jsonl", rows), on_bad_row="skip")

    assert [ex.id for ex in dataset] == ["a", "d"]
    assert len(dataset.skipped) == 2
    assert [(p.field, p.reason) for p in dataset.skipped[0].problems] == [
        ("answer", "is empty"),
        (
            "answer_type",
            "unknown answer_type 'essay'; allowed: "
            "('multiple_choice', 'integer', 'number', 'text', 'math')",
        ),
    ]
    assert dataset.skipped[1].lines() == [
        f"{data_dir / 'skip.jsonl'}:line 3:images[0]: image file "
        f"{(data_dir / 'img' / 'missing.png').absolute()} does not exist"
    ]


def test_without_image_checks_a_missing_image_fails_at_load_images(data_dir: Path) -> None:
    data_file = write_jsonl(data_dir / "lazy.jsonl", [good_row("a", images=["img/missing.png"])])

    dataset = load_examples(data_file, check_images=False)

    assert len(dataset) == 1
    with pytest.raises(DataError, match=r"lazy\.jsonl:line 1:images\[0\]: cannot read image"):
        dataset[0].load_images()


def test_parquet_rows_with_bytes_and_hf_image_dicts_round_trip(data_dir: Path) -> None:
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    red, gray = png_bytes((200, 10, 10)), png_bytes((90, 90, 90), mode="L")
    image_type = pyarrow.list_(
        pyarrow.struct([("bytes", pyarrow.binary()), ("path", pyarrow.string())])
    )
    table = pyarrow.table(
        {
            "id": ["p0", "p1", "p2"],
            "images": pyarrow.array(
                [
                    [{"bytes": red, "path": "ignored.png"}],
                    [{"bytes": b"garbage", "path": None}],
                    [{"bytes": None, "path": "img/gray.png"}, {"bytes": gray, "path": None}],
                ],
                type=image_type,
            ),
            "question": ["What colour?", "Q", "<image> vs <image>"],
            "answer": ["A", "1", "same"],
            "choices": [["red", "blue"], None, None],
            "answer_type": [None, None, "text"],
        }
    )
    data_file = data_dir / "train.parquet"
    parquet.write_table(table, data_file)

    dataset = load_examples(data_file, on_bad_row="skip")

    assert [ex.id for ex in dataset] == ["p0", "p2"]
    (bad_row,) = dataset.skipped
    assert (bad_row.source.row, bad_row.source.unit, bad_row.field) == (1, "row", "images[0]")
    assert bad_row.lines()[0].startswith(
        f"{data_file}:row 1:images[0]: image bytes cannot be decoded"
    )
    first, second = dataset.examples
    assert (first.answer, first.answer_type, first.choices) == (
        "A",
        "multiple_choice",
        ("red", "blue"),
    )
    assert first.images == (red,)
    assert [image.getpixel((0, 0)) for image in second.load_images()] == [(90, 90, 90)] * 2


def test_ten_thousand_rows_load_without_touching_images(tmp_path: Path) -> None:
    rows = [
        {"id": f"r{i}", "images": [f"img/{i}.png"], "question": "How many?", "answer": str(i % 9)}
        for i in range(10_000)
    ]
    data_file = write_jsonl(tmp_path / "big.jsonl", rows)

    dataset = load_examples(data_file, check_images=False)  # the image files do not exist

    assert len(dataset) == 10_000
    assert dataset[9_999].answer == str(9_999 % 9)


def test_bad_arguments_are_rejected_with_the_argument_named(tmp_path: Path) -> None:
    data_file = write_jsonl(tmp_path / "a.jsonl", [good_row()])
    with pytest.raises(ValueError, match="on_bad_row must be 'error' or 'skip'"):
        load_examples(data_file, on_bad_row="ignore")  # type: ignore[arg-type]
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("id\n")
    with pytest.raises(ValueError, match=r"must end in \.jsonl or \.parquet"):
        load_examples(csv_file)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_examples(tmp_path / "nope.jsonl")


def test_validate_command_lists_bad_rows_and_sets_the_exit_code(data_dir: Path) -> None:
    data_file = write_jsonl(
        data_dir / "v.jsonl", [good_row("a"), good_row("b", answer=""), good_row("c")]
    )
    runner = CliRunner()

    strict = runner.invoke(data_app, ["validate", str(data_file)])
    lenient = runner.invoke(data_app, ["validate", str(data_file), "--skip-bad"])

    assert strict.exit_code == 1
    assert f"{data_file}:line 2:answer: is empty" in strict.output
    assert f"{data_file}: 2 good rows, 1 bad rows" in strict.output
    assert lenient.exit_code == 0
    assert f"{data_file}: 2 good rows, 1 bad rows" in lenient.output
    clean = write_jsonl(data_dir / "clean.jsonl", [good_row("a")])
    assert runner.invoke(data_app, ["validate", str(clean)]).exit_code == 0
