"""Small stand-ins for the six benchmarks (and the synthetic split), in their public schemas.

`write_fixtures` writes, under a data root laid out as the hub repositories are, parquet files
with exactly the public columns, column types and hub file names of each benchmark (the
``huggingface`` schema metadata included, so ``datasets`` decodes image columns as images),
with images drawn by PIL. A user's real local copy and these fixtures go through the same code.

Each benchmark's first rows are fixed "anchor" problems whose gold answers the tests know by
heart (multiple choice and free form, MMMU rows with images in several columns and image
options, MathVerse's five versions, MathVista's precision rows); the remaining rows vary with
the seed. Same seed, same bytes.

>>> written = write_fixtures("/tmp/care-fixtures")        # doctest: +SKIP
>>> written["care_mathvista"]                             # doctest: +SKIP
['/tmp/care-fixtures/AI4Math/MathVista/data/testmini-00000-of-00001.parquet']
"""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from care.data.synth import write_synthetic_dataset
from care.prompts import CHOICE_LETTERS
from evaluation.tasks import EXPECTED_COLUMNS, MATHVERSE_VERSIONS, SYNTH_FOLDER

MARKER_FILE = "CARE_FIXTURES.json"
"""Written into the data root; `write_fixtures` only overwrites a root that holds it (or is empty)."""
MIN_ROWS = 10
IMAGE_SIZE = 96
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "orange": (245, 140, 20),
    "purple": (140, 60, 180),
}
SHAPES = ("circle", "square", "triangle")
MMMU_SUBJECTS = ("Math", "Physics", "Art")

# Hugging Face feature descriptions (the "huggingface" schema metadata of hub parquet files).
_STRING = {"dtype": "string", "_type": "Value"}
_FLOAT = {"dtype": "float64", "_type": "Value"}
_INT = {"dtype": "int64", "_type": "Value"}
_IMAGE = {"_type": "Image"}
_STRINGS = {"feature": _STRING, "_type": "Sequence"}
_IMAGE_ARROW = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def write_fixtures(
    data_root: str | Path, rows_per_task: int = 20, seed: int = 0
) -> dict[str, list[str]]:
    """Write fixture copies of the six benchmarks and the synthetic test split under `data_root`.

    Layout (file names as on the hub):
    ``AI4Math/MathVista/data/testmini-00000-of-00001.parquet``,
    ``AI4Math/MathVerse/testmini.parquet`` (rows_per_task rounded up to whole problems × 5
    versions), ``MathLLMs/MathVision/data/test-00000-of-00001.parquet``,
    ``MMMU/MMMU/<Subject>/validation-00000-of-00001.parquet`` (subjects Math, Physics, Art),
    ``MMMU/MMMU_Pro/standard (10 options)/test-00000-of-00001.parquet``,
    ``MMMU/MMMU_Pro/vision/test-00000-of-00001.parquet`` and ``care_synth/test.jsonl`` (+ images,
    as ``care.data.synth.write_synthetic_dataset`` writes them).

    Returns task → written data files. ValueError for rows_per_task < 10, or a non-empty
    data_root that `write_fixtures` did not write (so a real copy is never overwritten).

    Example: ``write_fixtures(tmp, rows_per_task=20, seed=0)["care_mmmu"]`` → three parquet
    paths, one per subject folder, 20 rows in all.
    """
    if isinstance(rows_per_task, bool) or not isinstance(rows_per_task, int):
        raise ValueError(f"rows_per_task must be an int, got {rows_per_task!r}")
    if rows_per_task < MIN_ROWS:
        raise ValueError(f"rows_per_task must be >= {MIN_ROWS}, got {rows_per_task}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    root = Path(data_root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"data_root {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER_FILE).is_file():
        raise ValueError(
            f"data_root {root} already holds files that write_fixtures did not write (no "
            f"{MARKER_FILE}); give an empty folder so no real benchmark copy is overwritten"
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER_FILE).write_text(
        json.dumps({"rows_per_task": rows_per_task, "seed": seed}) + "\n", encoding="utf-8"
    )

    def rng(task: str) -> random.Random:
        return random.Random(f"care-fixtures/{seed}/{task}")

    written = {
        "care_mathvista": _write_mathvista(root, rows_per_task, rng("mathvista")),
        "care_mathverse": _write_mathverse(root, rows_per_task, rng("mathverse")),
        "care_mathvision": _write_mathvision(root, rows_per_task, rng("mathvision")),
        "care_mmmu": _write_mmmu(root, rows_per_task, rng("mmmu")),
        "care_mmmu_pro_std": _write_mmmu_pro_standard(root, rows_per_task, rng("mmmu_pro_std")),
        "care_mmmu_pro_vis": _write_mmmu_pro_vision(root, rows_per_task, rng("mmmu_pro_vis")),
    }
    synth = write_synthetic_dataset(
        root / SYNTH_FOLDER, seed=seed, n_train=0, n_test=rows_per_task, overwrite=True
    )
    written["care_synth"] = [str(synth.test_path)]
    return written


# ---------------------------------------------------------------- drawing


def draw_image(
    rng: random.Random,
    shapes: Sequence[tuple[str, str]] = (),
    text_lines: Sequence[str] = (),
    size: int = IMAGE_SIZE,
) -> Image.Image:
    """A white RGB canvas with `shapes` ((shape, colour) pairs, placed by `rng`) and text lines.

    Example: ``draw_image(random.Random(0), [("circle", "red")] * 3).size`` → ``(96, 96)``.
    """
    height = size + 12 * len(text_lines)
    image = Image.new("RGB", (size if not text_lines else max(size, 320), height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for line_index, line in enumerate(text_lines):
        draw.text((4, 2 + 12 * line_index), line, fill=(20, 20, 20), font=font)
    top = 12 * len(text_lines)
    cell = max(12, size // 4)
    slots = rng.sample(range(16), min(len(shapes), 16))
    for (shape, colour), slot in zip(shapes, slots, strict=False):
        x0 = (slot % 4) * cell + 2
        y0 = top + (slot // 4) * cell + 2
        box = [x0, y0, x0 + cell - 5, y0 + cell - 5]
        fill = COLOURS[colour]
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon(
                [(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=fill
            )
    return image


def _cell(image: Image.Image, path: str | None = None) -> dict[str, Any]:
    """An image cell as hub parquet files store it: PNG bytes and a file name."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": path}


def _random_shapes(
    rng: random.Random, count: int, shape: str | None = None
) -> list[tuple[str, str]]:
    return [(shape or rng.choice(SHAPES), rng.choice(sorted(COLOURS))) for _ in range(count)]


def _options_around(rng: random.Random, value: int, count: int) -> tuple[list[str], str]:
    """`count` distinct integer options including `value`, shuffled, and the gold letter."""
    pool = [value + offset for offset in range(-count, count + 1) if value + offset >= 0 and offset]
    options = [value, *rng.sample(pool, count - 1)]
    rng.shuffle(options)
    return [str(option) for option in options], CHOICE_LETTERS[options.index(value)]


# ---------------------------------------------------------------- parquet writing


def _write_parquet(
    path: Path, columns: list[tuple[str, dict[str, Any], pa.DataType]], rows: list[dict[str, Any]]
) -> str:
    names = [name for name, _, _ in columns]
    schema = pa.schema(
        [pa.field(name, arrow_type) for name, _, arrow_type in columns],
        metadata={
            "huggingface": json.dumps(
                {"info": {"features": {name: feature for name, feature, _ in columns}}}
            )
        },
    )
    for row in rows:
        if list(row) != names:
            raise ValueError(f"fixture row keys {list(row)} differ from the schema {names}")
    table = pa.Table.from_pylist(rows, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return str(path)


def _check_schema(task: str, columns: list[tuple[str, Any, Any]]) -> None:
    names = [name for name, _, _ in columns]
    if names != EXPECTED_COLUMNS[task]:
        raise ValueError(
            f"{task} fixture columns {names} != EXPECTED_COLUMNS {EXPECTED_COLUMNS[task]}"
        )


# ---------------------------------------------------------------- MathVista

_MATHVISTA_METADATA = pa.struct(
    [
        ("category", pa.string()),
        ("context", pa.string()),
        ("grade", pa.string()),
        ("img_height", pa.int64()),
        ("img_width", pa.int64()),
        ("language", pa.string()),
        ("skills", pa.list_(pa.string())),
        ("source", pa.string()),
        ("split", pa.string()),
        ("task", pa.string()),
    ]
)
_MATHVISTA_COLUMNS = [
    ("pid", _STRING, pa.string()),
    ("question", _STRING, pa.string()),
    ("image", _STRING, pa.string()),
    ("decoded_image", _IMAGE, _IMAGE_ARROW),
    ("choices", _STRINGS, pa.list_(pa.string())),
    ("unit", _STRING, pa.string()),
    ("precision", _FLOAT, pa.float64()),
    ("answer", _STRING, pa.string()),
    ("question_type", _STRING, pa.string()),
    ("answer_type", _STRING, pa.string()),
    (
        "metadata",
        {
            "category": _STRING,
            "context": _STRING,
            "grade": _STRING,
            "img_height": _INT,
            "img_width": _INT,
            "language": _STRING,
            "skills": _STRINGS,
            "source": _STRING,
            "split": _STRING,
            "task": _STRING,
        },
        _MATHVISTA_METADATA,
    ),
    ("query", _STRING, pa.string()),
]


def _mathvista_kinds(rng: random.Random, index: int) -> dict[str, Any]:
    """One MathVista problem: anchors for index < 6, then seed-drawn variants of the same kinds."""
    kind = index % 6
    if kind == 0:
        count = 4 if index == 0 else rng.randint(2, 7)
        shapes = [("circle", rng.choice(sorted(COLOURS))) for _ in range(count)]
        choices = ["2", "3", "4", "5"] if index == 0 else _options_around(rng, count, 4)[0]
        return dict(
            question="How many circles are in the image?",
            shapes=shapes,
            choices=choices,
            answer=str(count),
            question_type="multi_choice",
            answer_type="text",
            precision=None,
            unit="",
        )
    if kind == 1:
        ratio = 1.45 if index == 1 else round(rng.uniform(1.05, 2.95), 2)
        return dict(
            question="What is the ratio of the red bar's height to the blue bar's height?",
            shapes=[("square", "red"), ("square", "blue")],
            choices=None,
            answer=f"{ratio:.2f}",
            question_type="free_form",
            answer_type="float",
            precision=2.0,
            unit="",
        )
    if kind == 2:
        count = 6 if index == 2 else rng.randint(1, 9)
        return dict(
            question="How many squares are in the image?",
            shapes=[("square", rng.choice(sorted(COLOURS))) for _ in range(count)],
            choices=None,
            answer=str(count),
            question_type="free_form",
            answer_type="integer",
            precision=None,
            unit="",
        )
    if kind == 3:
        length = 2.5 if index == 3 else round(rng.uniform(1.0, 9.9), 1)
        return dict(
            question="How long is the green bar?",
            shapes=[("square", "green")],
            choices=None,
            answer=f"{length:.1f}",
            question_type="free_form",
            answer_type="float",
            precision=1.0,
            unit="cm",
        )
    if kind == 4:
        colour = "green" if index == 4 else rng.choice(sorted(COLOURS))
        return dict(
            question="What colour is the triangle?",
            shapes=[("triangle", colour)],
            choices=None,
            answer=colour,
            question_type="free_form",
            answer_type="text",
            precision=None,
            unit="",
        )
    numbers = [3, 8] if index == 5 else sorted(rng.sample(range(1, 10), 2))
    return dict(
        question="List the two numbers in the image from left to right.",
        shapes=[],
        text=" ".join(str(n) for n in numbers),
        choices=None,
        answer=f"[{numbers[0]}, {numbers[1]}]",
        question_type="free_form",
        answer_type="list",
        precision=None,
        unit="",
    )


def _write_mathvista(root: Path, rows_per_task: int, rng: random.Random) -> list[str]:
    _check_schema("care_mathvista", _MATHVISTA_COLUMNS)
    rows = []
    for index in range(rows_per_task):
        problem = _mathvista_kinds(rng, index)
        text = [problem["text"]] if problem.get("text") else []
        image = draw_image(rng, problem["shapes"], text)
        pid = str(index + 1)
        precision = problem["precision"]
        rows.append(
            {
                "pid": pid,
                "question": problem["question"],
                "image": f"images/{pid}.jpg",
                "decoded_image": _cell(image, f"{pid}.png"),
                "choices": problem["choices"],
                "unit": problem["unit"],
                "precision": math.nan if precision is None else precision,
                "answer": problem["answer"],
                "question_type": problem["question_type"],
                "answer_type": problem["answer_type"],
                "metadata": {
                    "category": "math-targeted-vqa",
                    "context": "synthetic scene",
                    "grade": "elementary school",
                    "img_height": image.height,
                    "img_width": image.width,
                    "language": "english",
                    "skills": ["arithmetic reasoning"],
                    "source": "care-fixtures",
                    "split": "testmini",
                    "task": "math word problem",
                },
                "query": f"Question: {problem['question']}",
            }
        )
    path = root / "AI4Math/MathVista/data/testmini-00000-of-00001.parquet"
    return [_write_parquet(path, _MATHVISTA_COLUMNS, rows)]


# ---------------------------------------------------------------- MathVerse

_MATHVERSE_COLUMNS = [
    ("sample_index", _STRING, pa.string()),
    ("problem_index", _STRING, pa.string()),
    ("problem_version", _STRING, pa.string()),
    ("question", _STRING, pa.string()),
    ("image", _IMAGE, _IMAGE_ARROW),
    ("answer", _STRING, pa.string()),
    ("question_type", _STRING, pa.string()),
    (
        "metadata",
        {"split": _STRING, "source": _STRING, "subject": _STRING, "subfield": _STRING},
        pa.struct(
            [
                ("split", pa.string()),
                ("source", pa.string()),
                ("subject", pa.string()),
                ("subfield", pa.string()),
            ]
        ),
    ),
    ("query_wo", _STRING, pa.string()),
    ("query_cot", _STRING, pa.string()),
    ("question_for_eval", _STRING, pa.string()),
]


def _mathverse_problem(rng: random.Random, index: int) -> dict[str, Any]:
    """One MathVerse problem: index 0 is multiple choice (gold C), index 1 free form (gold 12)."""
    if index % 2 == 0:
        angle = 60 if index == 0 else rng.choice([30, 40, 50, 70, 80])
        options = sorted({angle, 30 if angle != 30 else 20, 45, 90})
        while len(options) < 4:
            options = sorted({*options, options[-1] + 15})
        return dict(
            condition=f"In the figure, triangle ABC has angle A = 90° and angle B = {90 - angle}°.",
            ask="Find angle C.",
            choices=[f"{value}°" for value in options],
            answer=CHOICE_LETTERS[options.index(angle)],
            question_type="multi-choice",
        )
    side = 12 if index == 1 else rng.randint(3, 20)
    return dict(
        condition=f"In the figure, the square has perimeter {4 * side}.",
        ask="Find the length of one side.",
        choices=None,
        answer=str(side),
        question_type="free-form",
    )


def _mathverse_texts(problem: dict[str, Any], version: str) -> str:
    """The question text a version shows (Vision Only: none, the image holds it)."""
    choices = problem["choices"]
    choice_block = (
        "\nChoices:\n" + "\n".join(f"{CHOICE_LETTERS[i]}:{c}" for i, c in enumerate(choices))
        if choices
        else ""
    )
    if version == "Vision Only":
        return ""
    if version == "Text Dominant":
        return f"{problem['condition']} The figure shows the triangle with its labels. {problem['ask']}{choice_block}"
    if version == "Text Lite":
        return f"{problem['condition']} {problem['ask']}{choice_block}"
    if version == "Vision Intensive":
        return f"As shown in the figure. {problem['ask']}{choice_block}"
    return f"{problem['ask']}{choice_block}"


def _write_mathverse(root: Path, rows_per_task: int, rng: random.Random) -> list[str]:
    _check_schema("care_mathverse", _MATHVERSE_COLUMNS)
    versions = list(MATHVERSE_VERSIONS.values())
    problems = math.ceil(rows_per_task / len(versions))
    rows = []
    for problem_index in range(problems):
        problem = _mathverse_problem(rng, problem_index)
        full_question = _mathverse_texts(problem, "Text Dominant")
        for version in versions:
            text = _mathverse_texts(problem, version)
            image_lines = (
                [] if version != "Vision Only" else [problem["condition"][:60], problem["ask"]]
            )
            if version == "Vision Only" and problem["choices"]:
                image_lines.append(
                    "  ".join(f"{CHOICE_LETTERS[i]}:{c}" for i, c in enumerate(problem["choices"]))
                )
            image = draw_image(rng, _random_shapes(rng, 3, "triangle"), image_lines)
            instruction = (
                "Please directly answer the question and provide the correct option letter."
                if problem["choices"]
                else "Please directly answer the question and provide the final value."
            )
            sample_index = len(rows) + 1
            rows.append(
                {
                    "sample_index": str(sample_index),
                    "problem_index": str(problem_index + 1),
                    "problem_version": version,
                    "question": text,
                    "image": _cell(image, f"image_{sample_index}.png"),
                    "answer": problem["answer"],
                    "question_type": problem["question_type"],
                    "metadata": {
                        "split": "testmini",
                        "source": "care-fixtures",
                        "subject": "Plane Geometry",
                        "subfield": "Angle" if problem["choices"] else "Length",
                    },
                    "query_wo": f"{instruction}\nQuestion: {text}" if text else instruction,
                    "query_cot": f"Please first conduct reasoning. {instruction}\nQuestion: {text}",
                    "question_for_eval": full_question,
                }
            )
    return [_write_parquet(root / "AI4Math/MathVerse/testmini.parquet", _MATHVERSE_COLUMNS, rows)]


# ---------------------------------------------------------------- MATH-Vision

_MATHVISION_COLUMNS = [
    ("id", _STRING, pa.string()),
    ("question", _STRING, pa.string()),
    ("options", _STRINGS, pa.list_(pa.string())),
    ("image", _STRING, pa.string()),
    ("decoded_image", _IMAGE, _IMAGE_ARROW),
    ("answer", _STRING, pa.string()),
    ("solution", _STRING, pa.string()),
    ("level", _INT, pa.int64()),
    ("subject", _STRING, pa.string()),
]


def _write_mathvision(root: Path, rows_per_task: int, rng: random.Random) -> list[str]:
    _check_schema("care_mathvision", _MATHVISION_COLUMNS)
    rows = []
    for index in range(rows_per_task):
        if index % 2 == 0:
            count = 3 if index == 0 else rng.randint(1, 5)
            options = ["1", "2", "3", "4", "5"]
            question = "<image1>\nHow many dots are in the box?"
            answer = CHOICE_LETTERS[options.index(str(count))]
            shapes = [("circle", "blue")] * count
            solution = f"There are {count} dots."
        else:
            count = 7 if index == 1 else rng.randint(2, 12)
            options = []
            question = "How many triangles are there in total? <image1>"
            answer = str(count)
            shapes = _random_shapes(rng, count, "triangle")
            solution = f"Counting gives {count}."
        image = draw_image(rng, shapes)
        identifier = str(index + 1)
        rows.append(
            {
                "id": identifier,
                "question": question,
                "options": options,
                "image": f"images/{identifier}.jpg",
                "decoded_image": _cell(image, f"{identifier}.png"),
                "answer": answer,
                "solution": solution,
                "level": 1 + index % 5,
                "subject": "counting",
            }
        )
    path = root / "MathLLMs/MathVision/data/test-00000-of-00001.parquet"
    return [_write_parquet(path, _MATHVISION_COLUMNS, rows)]


# ---------------------------------------------------------------- MMMU and MMMU-Pro


def _mmmu_columns(last: str) -> list[tuple[str, Any, pa.DataType]]:
    columns: list[tuple[str, Any, pa.DataType]] = [
        ("id", _STRING, pa.string()),
        ("question", _STRING, pa.string()),
        ("options", _STRING, pa.string()),
        ("explanation", _STRING, pa.string()),
    ]
    columns += [(f"image_{k}", _IMAGE, _IMAGE_ARROW) for k in range(1, 8)]
    columns += [
        ("img_type", _STRING, pa.string()),
        ("answer", _STRING, pa.string()),
        ("topic_difficulty", _STRING, pa.string()),
    ]
    if last == "question_type":
        columns += [("question_type", _STRING, pa.string()), ("subfield", _STRING, pa.string())]
    else:
        columns += [("subject", _STRING, pa.string())]
    return columns


def _mmmu_row(
    identifier: str,
    question: str,
    options: list[str],
    images: dict[int, Image.Image],
    answer: str,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": identifier,
        "question": question,
        "options": repr(options),
        "explanation": "",
    }
    for k in range(1, 8):
        row[f"image_{k}"] = _cell(images[k], f"{identifier}_{k}.png") if k in images else None
    row.update(img_type="['Diagrams']", answer=answer, topic_difficulty="Easy")
    return row


def _mmmu_problem(rng: random.Random, index: int) -> dict[str, Any]:
    """One MMMU problem; index 0-4 are anchors covering every image and answer layout."""
    kind = index % 5
    if kind == 0:
        count = 3 if index == 0 else rng.randint(2, 5)
        return dict(
            question="How many circles are in <image 1>?",
            options=["2", "3", "4", "5"] if index == 0 else _options_around(rng, count, 4)[0],
            images={1: draw_image(rng, [("circle", "red")] * count)},
            count=count,
            question_type="multiple-choice",
        )
    if kind == 1:
        count = 12 if index == 1 else rng.randint(6, 15)
        return dict(
            question="How many squares are in <image 1> and <image 2> together?",
            options=[],
            images={
                1: draw_image(rng, [("square", "blue")] * (count // 2)),
                2: draw_image(rng, [("square", "green")] * (count - count // 2)),
            },
            answer=str(count),
            question_type="open",
        )
    if kind == 2:
        shapes = ["square", "circle", "triangle"]
        if index != 2:
            rng.shuffle(shapes)
        return dict(
            question="Which picture shows a circle?",
            options=["<image 1>", "<image 2>", "<image 3>"],
            images={k + 1: draw_image(rng, [(shape, "purple")]) for k, shape in enumerate(shapes)},
            answer=CHOICE_LETTERS[shapes.index("circle")],
            question_type="multiple-choice",
        )
    if kind == 3:
        return dict(
            question="Give the fraction of shapes in <image 1> that are red.",
            options=[],
            images={1: draw_image(rng, [("circle", "red")] * 3 + [("square", "blue")] * 4)},
            answer="['3/7', '0.429']",
            question_type="open",
        )
    colour = "orange" if index == 4 else rng.choice(sorted(COLOURS))
    others = [c for c in sorted(COLOURS) if c != colour][:3]
    options = [colour, *others]
    if index != 4:
        rng.shuffle(options)
    return dict(
        question="What colour is the shape in the picture?",
        options=options,
        images={1: draw_image(rng, [("square", colour)])},
        answer=CHOICE_LETTERS[options.index(colour)],
        question_type="multiple-choice",
    )


def _write_mmmu(root: Path, rows_per_task: int, rng: random.Random) -> list[str]:
    columns = _mmmu_columns("question_type")
    _check_schema("care_mmmu", columns)
    per_subject: dict[str, list[dict[str, Any]]] = {subject: [] for subject in MMMU_SUBJECTS}
    for index in range(rows_per_task):
        subject = MMMU_SUBJECTS[index % len(MMMU_SUBJECTS)]
        problem = _mmmu_problem(rng, index)
        answer = problem.get("answer")
        if answer is None:
            answer = CHOICE_LETTERS[problem["options"].index(str(problem["count"]))]
        identifier = f"validation_{subject}_{len(per_subject[subject]) + 1}"
        row = _mmmu_row(
            identifier, problem["question"], problem["options"], problem["images"], answer
        )
        row.update(question_type=problem["question_type"], subfield=subject)
        per_subject[subject].append(row)
    return [
        _write_parquet(
            root / f"MMMU/MMMU/{subject}/validation-00000-of-00001.parquet", columns, rows
        )
        for subject, rows in per_subject.items()
    ]


def _ten_options(rng: random.Random, value: int) -> tuple[list[str], str]:
    pool = [v for v in range(max(0, value - 9), value + 10) if v != value]
    options = [value, *rng.sample(pool, 9)]
    rng.shuffle(options)
    return [str(v) for v in options], CHOICE_LETTERS[options.index(value)]


def _write_mmmu_pro_standard(root: Path, rows_per_task: int, rng: random.Random) -> list[str]:
    columns = _mmmu_columns("subject")
    _check_schema("care_mmmu_pro_std", columns)
    rows = []
    for index in range(rows_per_task):
        count = 5 if index == 0 else rng.randint(1, 12)
        if index == 0:
            options, answer = [str(v) for v in range(10)], "F"
        else:
            options, answer = _ten_options(rng, count)
        images = {1: draw_image(rng, [("triangle", "orange")] * count)}
        if index % 3 == 1:
            images[2] = draw_image(rng, _random_shapes(rng, 2))
            question = "<image 1> shows triangles and <image 2> other shapes. How many triangles?"
        else:
            question = "How many triangles are in <image 1>?"
        row = _mmmu_row(f"test_Math_{index + 1}", question, options, images, answer)
        row["subject"] = "Math"
        rows.append(row)
    path = root / "MMMU/MMMU_Pro/standard (10 options)/test-00000-of-00001.parquet"
    return [_write_parquet(path, columns, rows)]


_MMMU_PRO_VISION_COLUMNS = [
    ("id", _STRING, pa.string()),
    ("image", _IMAGE, _IMAGE_ARROW),
    ("options", _STRING, pa.string()),
    ("answer", _STRING, pa.string()),
    ("subject", _STRING, pa.string()),
]


def _write_mmmu_pro_vision(root: Path, rows_per_task: int, rng: random.Random) -> list[str]:
    _check_schema("care_mmmu_pro_vis", _MMMU_PRO_VISION_COLUMNS)
    rows = []
    for index in range(rows_per_task):
        count = 1 if index == 0 else rng.randint(1, 12)
        if index == 0:
            options, answer = [str(v) for v in range(10)], "B"
        else:
            options, answer = _ten_options(rng, count)
        lines = [
            "How many squares are below?",
            "  ".join(f"({CHOICE_LETTERS[i]}) {o}" for i, o in enumerate(options[:5])),
            "  ".join(f"({CHOICE_LETTERS[i + 5]}) {o}" for i, o in enumerate(options[5:])),
        ]
        image = draw_image(rng, [("square", "red")] * count, lines)
        rows.append(
            {
                "id": f"test_Math_{index + 1}",
                "image": _cell(image, f"test_Math_{index + 1}.png"),
                "options": repr(options),
                "answer": answer,
                "subject": "Math",
            }
        )
    path = root / "MMMU/MMMU_Pro/vision/test-00000-of-00001.parquet"
    return [_write_parquet(path, _MMMU_PRO_VISION_COLUMNS, rows)]
