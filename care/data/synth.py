"""Synthetic visual-reasoning problems with verifiable answers, rendered with PIL.

Four families, each at difficulty 1..3 (see docs/data_format.md for what each level changes):

- `counting`   — "How many red circles are in the image?" among distractor shapes and colours;
- `bar_chart`  — "What is the value of the green bar?" on a chart with gridlines and tick labels;
- `comparison` — "Which is longer, the red line or the blue line?" / which shape has the larger
  area (always multiple choice);
- `arithmetic` — "What is the sum of the numbers in the image?" (also differences and products).

Every problem keeps its `scene`: a JSON description of what was drawn, from which the answer can
be recomputed, and a `solution`: a short templated rationale built from the scene (what a
supervised warm start imitates inside `<think>`; see `care.data.sft.sft_target`). Everything is
drawn from one `random.Random` per problem, keyed by (generator version, seed, split, attempt),
so a seed gives byte-identical images on every run.

>>> rows = generate_split(2, seed=0)                  # doctest: +SKIP
>>> rows[0]["question"], rows[0]["answer"]            # doctest: +SKIP
('How many blue squares are in the image?', '3')
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, features

from care.data.dataset import CHOICE_LETTERS

GENERATOR_VERSION = "2"
"""Bumped whenever the same seed would write different files (other problems, or new fields).

It is part of every problem's random key, so a bump also redraws the problems. "2" added
`solution` to every row and `cell` to each number of an arithmetic scene.
"""

FAMILIES: tuple[str, ...] = ("counting", "bar_chart", "comparison", "arithmetic")
DIFFICULTIES: tuple[int, ...] = (1, 2, 3)
MIN_IMAGE_SIZE = 56
MAX_IMAGE_SIZE = 1024

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 140, 20),
}
"""Fill colours of shapes, bars and lines; drawn without anti-aliasing, so pixels are exact."""

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
GRIDLINE = (205, 205, 205)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")


@dataclass(frozen=True)
class SynthMix:
    """What a synthetic split is made of.

    families: relative weight of each family; difficulty: relative weight of each level 1..3;
    multiple_choice_share: chance that a problem with an integer answer is asked as multiple
    choice (4 options) instead of free form (`comparison` is always multiple choice).
    """

    families: Mapping[str, float]
    difficulty: Mapping[int, float]
    multiple_choice_share: float


DEMO_MIX = SynthMix(
    families={"counting": 0.3, "bar_chart": 0.2, "comparison": 0.25, "arithmetic": 0.25},
    difficulty={1: 0.4, 2: 0.4, 3: 0.2},
    multiple_choice_share=0.4,
)
"""The demo's default mix, aimed at a tiny CPU model that should learn the task only partly.

Level 1 is learnable (few, large objects; small numbers), level 3 mostly is not, and multiple
choice (2-4 options) keeps a guessing floor, so after a warm start most prompt groups are mixed
or all wrong: the regime where CARE's anchors, hard negatives and rescue have work to do.
"""


@dataclass
class SynthDataset:
    """What `write_synthetic_dataset` wrote: the two split files and the metadata it recorded."""

    out_dir: Path
    train_path: Path
    test_path: Path
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Drawn:
    """One family's output before the answer format is chosen.

    Integer families set `integer_answer` (and `near_misses`: plausible wrong values for
    multiple-choice options); always-multiple-choice families set `options` and `gold_option`.
    """

    question: str
    image: Image.Image
    scene: dict[str, Any]
    integer_answer: int | None = None
    near_misses: tuple[int, ...] = ()
    options: tuple[str, ...] | None = None
    gold_option: int | None = None


def generate_split(
    n: int,
    seed: int,
    families: Mapping[str, float] | Sequence[str] = DEMO_MIX.families,
    difficulty_mix: Mapping[int, float] | Sequence[int] = DEMO_MIX.difficulty,
    image_size: int = 112,
    *,
    multiple_choice_share: float = DEMO_MIX.multiple_choice_share,
    split: str = "train",
    exclude_hashes: frozenset[str] | set[str] = frozenset(),
) -> list[dict[str, Any]]:
    """`n` distinct problems, each a row dict plus its rendered image.

    Each row holds `id` ("<split>-000000", ...), `question`, `answer` (a letter for multiple
    choice, else the integer as text), `answer_type`, `choices` (multiple choice only), `family`,
    `difficulty`, `scene` (what was drawn), `solution` (a short rationale, see `solution_for`),
    `image` (a PIL RGB image) and `content_hash` (of the question and the pixels). Problems
    whose hash is in `exclude_hashes` or already in the split are drawn again, so splits can be
    made disjoint.

    >>> rows = generate_split(3, seed=7, families=["counting"], difficulty_mix=[1])
    >>> [row["family"] for row in rows], rows[0]["image"].size
    (['counting', 'counting', 'counting'], (112, 112))
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    _check_image_size(image_size)
    if not 0.0 <= multiple_choice_share <= 1.0:
        raise ValueError(f"multiple_choice_share must be in [0, 1], got {multiple_choice_share!r}")
    family_names, family_weights = _weights(families, FAMILIES, "families")
    levels, level_weights = _weights(difficulty_mix, DIFFICULTIES, "difficulty_mix")

    rows: list[dict[str, Any]] = []
    seen = set(exclude_hashes)
    # Small mixes (e.g. level 1 counting only) have few distinct problems; stop rather than spin.
    max_attempts = 50 * n + 100
    attempt = 0
    while len(rows) < n:
        if attempt >= max_attempts:
            raise ValueError(
                f"could only draw {len(rows)} distinct problems of {n} requested for split "
                f"{split!r} from families {family_names} at difficulties {levels}; "
                "ask for fewer or widen the mix"
            )
        rng = random.Random(f"care-synth/{GENERATOR_VERSION}/{seed}/{split}/{attempt}")
        attempt += 1
        family = rng.choices(family_names, weights=family_weights)[0]
        difficulty = rng.choices(levels, weights=level_weights)[0]
        row = _draw_problem(rng, family, difficulty, image_size, multiple_choice_share)
        if row["content_hash"] in seen:
            continue
        seen.add(row["content_hash"])
        row["id"] = f"{split}-{len(rows):06d}"
        rows.append(row)
    return rows


def write_synthetic_dataset(
    out_dir: str | Path,
    seed: int,
    n_train: int,
    n_test: int,
    families: Mapping[str, float] | Sequence[str] = DEMO_MIX.families,
    difficulty_mix: Mapping[int, float] | Sequence[int] = DEMO_MIX.difficulty,
    image_size: int = 112,
    *,
    multiple_choice_share: float = DEMO_MIX.multiple_choice_share,
    overwrite: bool = False,
) -> SynthDataset:
    """Write `train.jsonl`, `test.jsonl`, `images/<id>.png` and `synth_meta.json` under `out_dir`.

    Rows follow the dataset format (`images` holds "images/<id>.png", relative to the file), so
    `load_examples` reads them back; `family`, `difficulty`, `scene` and `solution` land in
    `Example.extra`.
    The test split is drawn first and the training split never repeats one of its
    (question, image) pairs. An existing dataset in `out_dir` is an error unless `overwrite`.
    """
    out_dir = Path(out_dir)
    train_path, test_path = out_dir / "train.jsonl", out_dir / "test.jsonl"
    meta_path, image_dir = out_dir / "synth_meta.json", out_dir / "images"
    existing = [p for p in (train_path, test_path, meta_path) if p.exists()]
    if existing and not overwrite:
        raise ValueError(
            f"out_dir {out_dir} already holds a dataset ({existing[0].name}); "
            "pass overwrite=True or choose another folder"
        )
    if overwrite and image_dir.is_dir():
        # Only images this generator names, so unrelated files in the folder survive.
        for stale in [*image_dir.glob("train-*.png"), *image_dir.glob("test-*.png")]:
            stale.unlink()
    common = dict(
        families=families,
        difficulty_mix=difficulty_mix,
        image_size=image_size,
        multiple_choice_share=multiple_choice_share,
    )
    test_rows = generate_split(n_test, seed, split="test", **common)
    train_rows = generate_split(
        n_train,
        seed,
        split="train",
        exclude_hashes=frozenset(row["content_hash"] for row in test_rows),
        **common,
    )

    image_dir.mkdir(parents=True, exist_ok=True)
    for path, rows in ((train_path, train_rows), (test_path, test_rows)):
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                image_name = f"images/{row['id']}.png"
                row["image"].save(out_dir / image_name, format="PNG")
                handle.write(json.dumps(_file_row(row, image_name)) + "\n")

    family_names, family_weights = _weights(families, FAMILIES, "families")
    levels, level_weights = _weights(difficulty_mix, DIFFICULTIES, "difficulty_mix")
    meta = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "image_size": image_size,
        "families": dict(zip(family_names, family_weights, strict=True)),
        "difficulty_mix": {str(k): w for k, w in zip(levels, level_weights, strict=True)},
        "multiple_choice_share": multiple_choice_share,
        "splits": {"train": summarise(train_rows), "test": summarise(test_rows)},
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return SynthDataset(out_dir=out_dir, train_path=train_path, test_path=test_path, meta=meta)


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts of a split per family, difficulty, answer type, and family × difficulty.

    >>> summarise([{"family": "counting", "difficulty": 1, "answer_type": "integer"}])["family"]
    {'counting': 1}
    """
    per_pair: dict[str, dict[str, int]] = {}
    for row in rows:
        cell = per_pair.setdefault(row["family"], {})
        cell[str(row["difficulty"])] = cell.get(str(row["difficulty"]), 0) + 1
    return {
        "n": len(rows),
        "family": dict(sorted(Counter(row["family"] for row in rows).items())),
        "difficulty": dict(sorted(Counter(str(row["difficulty"]) for row in rows).items())),
        "answer_type": dict(sorted(Counter(row["answer_type"] for row in rows).items())),
        "family_difficulty": {
            name: dict(sorted(c.items())) for name, c in sorted(per_pair.items())
        },
    }


def solution_for(row: Mapping[str, Any]) -> str:
    """A short step-by-step rationale for a synthetic row, built from its `scene` alone.

    One fixed template per family, so a tiny model can imitate it in a supervised warm start:
    name what to look at, state the quantities read off the scene, then the conclusion, which
    is the answer. Multiple-choice rows end by naming the option ("That is option B.").
    Needs `family`, `scene`, `answer_type` and, for multiple choice, `choices` and `answer`
    (the letter).

    >>> solution_for({"family": "arithmetic", "answer_type": "integer", "scene": {
    ...     "operation": "sum", "numbers": [{"value": 4, "cell": 0}, {"value": 7, "cell": 5}]}})
    'The numbers are 4 and 7. 4 + 7 = 11.'
    """
    family = row.get("family")
    if family not in SOLUTION_WRITERS:
        raise ValueError(f"row family must be one of {list(SOLUTION_WRITERS)}, got {family!r}")
    scene = row.get("scene")
    if not isinstance(scene, Mapping):
        raise ValueError(f"row scene must be a mapping (what was drawn), got {scene!r}")
    steps = SOLUTION_WRITERS[family](scene)
    if row.get("answer_type") == "multiple_choice":
        choices, letter = row.get("choices"), row.get("answer")
        if (
            not choices
            or not isinstance(letter, str)
            or letter not in CHOICE_LETTERS[: len(choices)]
        ):
            raise ValueError(
                f"a multiple-choice row needs choices and an answer letter among them, got "
                f"choices={choices!r}, answer={letter!r}"
            )
        steps.append(f"That is option {letter}.")
    return " ".join(steps)


def _file_row(row: Mapping[str, Any], image_name: str) -> dict[str, Any]:
    file_row = {
        "id": row["id"],
        "images": [image_name],
        "question": row["question"],
        "answer": row["answer"],
        "answer_type": row["answer_type"],
    }
    if "choices" in row:
        file_row["choices"] = row["choices"]
    file_row.update(
        family=row["family"],
        difficulty=row["difficulty"],
        scene=row["scene"],
        solution=row["solution"],
    )
    return file_row


def _check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise ValueError(f"image_size must be an integer, got {image_size!r}")
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} px, got {image_size}"
        )


def _weights(
    mix: Mapping[Any, float] | Sequence[Any], allowed: Sequence[Any], name: str
) -> tuple[list[Any], list[float]]:
    """Names and weights of a mix given as {name: weight} or as a list of equally weighted names."""
    if isinstance(mix, str):
        raise ValueError(f"{name} must be a list or a mapping, got the string {mix!r}")
    items = list(mix.items()) if isinstance(mix, Mapping) else [(key, 1.0) for key in mix]
    if not items:
        raise ValueError(f"{name} is empty; allowed entries: {list(allowed)}")
    for key, weight in items:
        if key not in allowed:
            raise ValueError(f"{name} has unknown entry {key!r}; allowed: {list(allowed)}")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ValueError(f"{name}[{key!r}] must be a non-negative number, got {weight!r}")
    if len({key for key, _ in items}) != len(items):
        raise ValueError(f"{name} names an entry twice: {[key for key, _ in items]}")
    kept = [(key, float(weight)) for key, weight in items if weight > 0]
    if not kept:
        raise ValueError(f"{name} has no positive weight: {dict(items)}")
    return [key for key, _ in kept], [weight for _, weight in kept]


def _draw_problem(
    rng: random.Random, family: str, difficulty: int, size: int, multiple_choice_share: float
) -> dict[str, Any]:
    drawn = FAMILY_DRAWERS[family](rng, difficulty, size)
    row: dict[str, Any] = {"question": drawn.question}
    if drawn.options is not None and drawn.gold_option is not None:
        row.update(
            answer=CHOICE_LETTERS[drawn.gold_option],
            answer_type="multiple_choice",
            choices=list(drawn.options),
        )
    elif drawn.integer_answer is not None:
        if rng.random() < multiple_choice_share:
            options = _integer_options(rng, drawn.integer_answer, drawn.near_misses)
            row.update(
                answer=CHOICE_LETTERS[options.index(drawn.integer_answer)],
                answer_type="multiple_choice",
                choices=[str(value) for value in options],
            )
        else:
            row.update(answer=str(drawn.integer_answer), answer_type="integer")
    else:
        raise AssertionError(f"family {family!r} returned neither an answer nor options")
    digest = hashlib.sha256(drawn.question.encode("utf-8"))
    digest.update(drawn.image.tobytes())
    row.update(
        family=family,
        difficulty=difficulty,
        scene=drawn.scene,
        image=drawn.image,
        content_hash=digest.hexdigest(),
    )
    row["solution"] = solution_for(row)
    return row


def _integer_options(
    rng: random.Random, answer: int, near_misses: Sequence[int], n_options: int = 4
) -> list[int]:
    """`n_options` distinct non-negative integers holding `answer`, in random order.

    Wrong options come from the family's near misses and from answer ± 1..3 (a list, never a
    set, so the draw does not depend on hash order).
    """
    pool: list[int] = []
    for value in [*near_misses, answer - 1, answer + 1, answer - 2, answer + 2, answer + 3]:
        if value >= 0 and value != answer and value not in pool:
            pool.append(value)
    options = [*rng.sample(pool, n_options - 1), answer]
    rng.shuffle(options)
    return options


@lru_cache(maxsize=32)
def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font needs FreeType for sizes; the fixed bitmap font is the fallback.
    if features.check("freetype2"):
        return ImageFont.load_default(size=size_px)
    return ImageFont.load_default()


def _canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"  # crisp text: exact ink colour, no anti-aliased fringe
    return image, draw


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, box: Sequence[int], colour: tuple[int, int, int]
) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=colour)
    elif shape == "square":
        draw.rectangle([x0, y0, x1, y1], fill=colour)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}; allowed: {SHAPES}")


def _shape_area(shape: str, side: float) -> float:
    """Area of a shape drawn in a side×side box (the triangle's base and height are the side)."""
    return {
        "square": side * side,
        "circle": math.pi * side * side / 4,
        "triangle": side * side / 2,
    }[shape]


def _side_for_area(shape: str, area: float) -> float:
    return math.sqrt(area / _shape_area(shape, 1.0))


def _draw_counting(rng: random.Random, difficulty: int, size: int) -> _Drawn:
    """Count one colour-and-shape kind among distractors placed in distinct cells of a 4×4 grid.

    Level 1: 1-3 targets, 1-2 distractors that differ in both colour and shape.
    Level 2: 1-5 targets, 2-4 distractors that share the colour or the shape.
    Level 3: 0-7 targets, 3-6 distractors (mostly sharing one attribute), smaller shapes.
    """
    colour_names = list(COLOURS)
    target_colour, target_shape = rng.choice(colour_names), rng.choice(SHAPES)
    n_target = rng.randint(*{1: (1, 3), 2: (1, 5), 3: (0, 7)}[difficulty])
    n_distractors = rng.randint(*{1: (1, 2), 2: (2, 4), 3: (3, 6)}[difficulty])
    other_colours = [c for c in colour_names if c != target_colour]
    other_shapes = [s for s in SHAPES if s != target_shape]

    kinds = [(target_colour, target_shape)] * n_target
    for _ in range(n_distractors):
        if difficulty == 1 or (difficulty == 3 and rng.random() < 0.25):
            kinds.append((rng.choice(other_colours), rng.choice(other_shapes)))
        elif rng.random() < 0.5:
            kinds.append((target_colour, rng.choice(other_shapes)))
        else:
            kinds.append((rng.choice(other_colours), target_shape))
    rng.shuffle(kinds)

    grid = 4
    cell = size // grid
    margin = 2  # inside each cell, so neighbouring shapes are at least 2*margin px apart
    low, high = {1: (0.6, 0.8), 2: (0.5, 0.75), 3: (0.4, 0.7)}[difficulty]
    image, draw = _canvas(size)
    objects = []
    for cell_index, (colour, shape) in zip(
        rng.sample(range(grid * grid), len(kinds)), kinds, strict=True
    ):
        side = max(6, min(cell - 2 * margin, round(cell * rng.uniform(low, high))))
        x0 = (cell_index % grid) * cell + rng.randint(margin, cell - margin - side)
        y0 = (cell_index // grid) * cell + rng.randint(margin, cell - margin - side)
        box = [x0, y0, x0 + side - 1, y0 + side - 1]
        _draw_shape(draw, shape, box, COLOURS[colour])
        objects.append({"shape": shape, "colour": colour, "box": box})

    count = sum(1 for o in objects if o["colour"] == target_colour and o["shape"] == target_shape)
    same_colour = sum(1 for o in objects if o["colour"] == target_colour)
    same_shape = sum(1 for o in objects if o["shape"] == target_shape)
    return _Drawn(
        question=f"How many {target_colour} {target_shape}s are in the image?",
        image=image,
        scene={
            "kind": "shapes",
            "target": {"colour": target_colour, "shape": target_shape},
            "objects": objects,
        },
        integer_answer=count,
        near_misses=(same_colour, same_shape, len(objects)),
    )


def _draw_bar_chart(rng: random.Random, difficulty: int, size: int) -> _Drawn:
    """Read one bar's value off a chart with a labelled y axis.

    Level 1: 2-3 bars, values 1-5, a labelled gridline at every unit.
    Level 2: 3-4 bars, values 1-10, gridlines every unit, labels every 2.
    Level 3: 4-5 bars, values 1-20, gridlines and labels every 5 (values between gridlines).
    """
    n_bars = rng.randint(*{1: (2, 3), 2: (3, 4), 3: (4, 5)}[difficulty])
    max_value, grid_step, label_step = {1: (5, 1, 1), 2: (10, 1, 2), 3: (20, 5, 5)}[difficulty]
    colours = rng.sample(list(COLOURS), n_bars)
    values = [rng.randint(1, max_value) for _ in range(n_bars)]
    asked = rng.randrange(n_bars)

    font_px = max(8, size // 11)
    font = _font(font_px)
    left, right = round(size * 0.22), size - max(3, size // 28)
    top, baseline = max(4, size // 14), size - max(4, size // 14)
    unit_px = (baseline - top) / max_value

    image, draw = _canvas(size)
    for tick in range(0, max_value + 1, grid_step):
        y = baseline - round(tick * unit_px)
        if tick:
            draw.line([(left, y), (right, y)], fill=GRIDLINE, width=1)
        if tick % label_step == 0:
            # Right-aligned against the axis, centred on the gridline, measured by hand because
            # the bitmap fallback font has no text anchors.
            x_min, y_min, x_max, y_max = draw.textbbox((0, 0), str(tick), font=font)
            draw.text((left - 3 - x_max, y - (y_min + y_max) / 2), str(tick), fill=INK, font=font)
    draw.line([(left, top), (left, baseline)], fill=INK, width=1)
    draw.line([(left, baseline), (right, baseline)], fill=INK, width=1)

    slot = (right - left - 2) / n_bars
    bar_width = max(4, round(slot * 0.6))
    bars = []
    for index, (colour, value) in enumerate(zip(colours, values, strict=True)):
        x0 = left + 2 + round(index * slot + (slot - bar_width) / 2)
        height = round(value * unit_px)
        box = [x0, baseline - height, x0 + bar_width - 1, baseline - 1]
        draw.rectangle(box, fill=COLOURS[colour])
        bars.append({"colour": colour, "value": value, "box": box})

    answer = values[asked]
    others = tuple(v for i, v in enumerate(values) if i != asked)
    return _Drawn(
        question=f"What is the value of the {colours[asked]} bar?",
        image=image,
        scene={
            "kind": "bar_chart",
            "max_value": max_value,
            "grid_step": grid_step,
            "label_step": label_step,
            "baseline_y": baseline,
            "unit_px": unit_px,
            "asked": colours[asked],
            "bars": bars,
        },
        integer_answer=answer,
        near_misses=(*others, answer + grid_step, answer - grid_step),
    )


def _draw_comparison(rng: random.Random, difficulty: int, size: int) -> _Drawn:
    """Pick the longer line or the larger shape (multiple choice over colour names).

    Length ratio longest / next: level 1 1.5-2.0 (2 horizontal lines), level 2 1.2-1.4
    (2 slanted lines), level 3 1.08-1.18 (3 lines at any angle). Area ratio: level 1 1.6-2.2
    and level 2 1.25-1.5 (two shapes of one kind), level 3 1.15-1.3 (two different kinds).
    """
    if rng.random() < 0.5:
        return _draw_line_comparison(rng, difficulty, size)
    return _draw_area_comparison(rng, difficulty, size)


def _draw_line_comparison(rng: random.Random, difficulty: int, size: int) -> _Drawn:
    n_lines = 3 if difficulty == 3 else 2
    ratio = rng.uniform(*{1: (1.5, 2.0), 2: (1.2, 1.4), 3: (1.08, 1.18)}[difficulty])
    width = 2 if difficulty == 3 else 3
    margin = max(4, size // 18)
    max_length = 0.85 * (size - 2 * margin)
    lengths = [rng.uniform(0.6, 1.0) * max_length]
    lengths.append(lengths[0] / ratio)
    if n_lines == 3:
        lengths.append(lengths[1] / rng.uniform(1.05, 1.4))
    colours = rng.sample(list(COLOURS), n_lines)
    bands = rng.sample(range(n_lines), n_lines)
    band_height = size / n_lines

    image, draw = _canvas(size)
    lines = []
    for colour, length, band in zip(colours, lengths, bands, strict=True):
        room = band_height - 2 * margin - width
        steepest = math.asin(min(1.0, max(0.0, room) / length))
        limit = {1: 0.0, 2: min(math.radians(25), steepest), 3: steepest}[difficulty]
        angle = rng.uniform(-limit, limit)
        dx, dy = length * math.cos(angle), length * math.sin(angle)
        x_start = rng.uniform(margin, size - margin - dx)
        y_mid = (
            band * band_height + band_height / 2 + rng.uniform(-1, 1) * max(0.0, room - abs(dy)) / 2
        )
        start = [round(x_start), round(y_mid - dy / 2)]
        end = [round(x_start + dx), round(y_mid + dy / 2)]
        draw.line([tuple(start), tuple(end)], fill=COLOURS[colour], width=width)
        drawn_length = math.dist(start, end)
        lines.append({"colour": colour, "start": start, "end": end, "length": drawn_length})

    options = [line["colour"] for line in lines]
    rng.shuffle(options)
    longest = max(lines, key=lambda line: line["length"])["colour"]
    if n_lines == 2:
        question = f"Which is longer, the {options[0]} line or the {options[1]} line?"
    else:
        question = "Which line is the longest?"
    return _Drawn(
        question=question,
        image=image,
        scene={"kind": "lines", "width": width, "lines": lines},
        options=tuple(options),
        gold_option=options.index(longest),
    )


def _draw_area_comparison(rng: random.Random, difficulty: int, size: int) -> _Drawn:
    ratio = rng.uniform(*{1: (1.6, 2.2), 2: (1.25, 1.5), 3: (1.15, 1.3)}[difficulty])
    if difficulty == 3:
        big_shape, small_shape = rng.sample(SHAPES, 2)
    else:
        big_shape = small_shape = rng.choice(SHAPES)
    margin = max(4, size // 18)
    max_side = size // 2 - 2 * margin
    big_side = rng.uniform(0.7, 1.0) * max_side
    small_side = _side_for_area(small_shape, _shape_area(big_shape, big_side) / ratio)
    # Scaling both sides by one factor keeps the area ratio.
    shrink = min(1.0, max_side / max(big_side, small_side))
    sides = {"big": round(big_side * shrink), "small": round(small_side * shrink)}
    colours = rng.sample(list(COLOURS), 2)
    big_on_left = rng.random() < 0.5

    image, draw = _canvas(size)
    shapes = []
    for which, shape, colour in (
        ("big", big_shape, colours[0]),
        ("small", small_shape, colours[1]),
    ):
        side = sides[which]
        half = 0 if (which == "big") == big_on_left else 1
        x0 = half * (size // 2) + rng.randint(margin, size // 2 - margin - side)
        y0 = rng.randint(margin, size - margin - side)
        box = [x0, y0, x0 + side - 1, y0 + side - 1]
        _draw_shape(draw, shape, box, COLOURS[colour])
        shapes.append(
            {"shape": shape, "colour": colour, "box": box, "area": _shape_area(shape, side)}
        )
    shapes.sort(key=lambda s: s["box"][0])

    options = [shape["colour"] for shape in shapes]
    rng.shuffle(options)
    larger = max(shapes, key=lambda s: s["area"])["colour"]
    return _Drawn(
        question=f"Which shape has the larger area, the {options[0]} one or the {options[1]} one?",
        image=image,
        scene={"kind": "areas", "shapes": shapes},
        options=tuple(options),
        gold_option=options.index(larger),
    )


def _draw_arithmetic(rng: random.Random, difficulty: int, size: int) -> _Drawn:
    """Compute with the numbers written in the image (one number per cell of a 3×3 grid).

    Level 1: sum of two numbers 1-9. Level 2: sum of three numbers 1-20, or larger minus smaller
    of two. Level 3: sum of four numbers 1-50, product of two numbers 2-12, or a difference of
    two numbers 10-99.
    """
    if difficulty == 1:
        operation, numbers = "sum", [rng.randint(1, 9) for _ in range(2)]
    elif difficulty == 2:
        operation = rng.choice(["sum", "difference"])
        numbers = [rng.randint(1, 20) for _ in range(3 if operation == "sum" else 2)]
    else:
        operation = rng.choice(["sum", "product", "difference"])
        if operation == "sum":
            numbers = [rng.randint(1, 50) for _ in range(4)]
        elif operation == "product":
            numbers = [rng.randint(2, 12) for _ in range(2)]
        else:
            numbers = [rng.randint(10, 99) for _ in range(2)]

    if operation == "sum":
        answer = sum(numbers)
        question = "What is the sum of the numbers in the image?"
        near_misses = tuple(answer - n for n in numbers) + (answer + 10, answer - 10)
    elif operation == "difference":
        answer = max(numbers) - min(numbers)
        question = "What is the larger number in the image minus the smaller one?"
        near_misses = (sum(numbers), answer + 10, answer - 10)
    else:
        answer = numbers[0] * numbers[1]
        question = "What is the product of the two numbers in the image?"
        near_misses = (sum(numbers), answer + numbers[0], answer - numbers[1])

    grid = 3
    cell = size // grid
    font = _font(max(8, round(cell * 0.55)))
    image, draw = _canvas(size)
    placed = []
    for cell_index, value in zip(
        rng.sample(range(grid * grid), len(numbers)), numbers, strict=True
    ):
        text = str(value)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        slack_x = max(0, cell - (right - left) - 2)
        slack_y = max(0, cell - (bottom - top) - 2)
        x = (cell_index % grid) * cell + 1 + rng.randint(0, slack_x) - left
        y = (cell_index // grid) * cell + 1 + rng.randint(0, slack_y) - top
        draw.text((x, y), text, fill=INK, font=font)
        placed.append(
            {
                "value": value,
                "cell": cell_index,
                "box": list(draw.textbbox((x, y), text, font=font)),
            }
        )
    return _Drawn(
        question=question,
        image=image,
        scene={"kind": "numbers", "operation": operation, "numbers": placed},
        integer_answer=answer,
        near_misses=near_misses,
    )


FAMILY_DRAWERS: dict[str, Callable[[random.Random, int, int], _Drawn]] = {
    "counting": _draw_counting,
    "bar_chart": _draw_bar_chart,
    "comparison": _draw_comparison,
    "arithmetic": _draw_arithmetic,
}


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _distinct_numbers(values: Sequence[float]) -> list[str]:
    """`values` rounded to whole numbers, or to more decimals when rounding would make the
    largest one equal to another (so a rationale never says "54 and 54 ... the first is longer").

    >>> _distinct_numbers([54.2, 38.9]), _distinct_numbers([40.4, 39.6, 12.0])
    (['54', '39'], ['40.4', '39.6', '12.0'])
    """
    largest = max(values)
    for decimals in range(3):
        texts = [f"{value:.{decimals}f}" for value in values]
        top = f"{largest:.{decimals}f}"
        if sum(text == top for text in texts) == sum(value == largest for value in values):
            return texts
    return [f"{value:.3f}" for value in values]


def _counting_solution(scene: Mapping[str, Any]) -> list[str]:
    colour, shape = scene["target"]["colour"], scene["target"]["shape"]
    count = sum(obj["colour"] == colour and obj["shape"] == shape for obj in scene["objects"])
    return [
        f"I look for {colour} {shape}s.",
        f"I see {_plural(count, f'{colour} {shape}')}.",
        f"So there {'is' if count == 1 else 'are'} {count}.",
    ]


def _bar_chart_solution(scene: Mapping[str, Any]) -> list[str]:
    asked = scene["asked"]
    (value,) = [bar["value"] for bar in scene["bars"] if bar["colour"] == asked]
    step = scene["grid_step"]
    if value % step == 0:
        reading = f"It reaches {value}."
    else:
        # Off-grid values (level 3) are read between the two gridlines around the bar's top.
        below = value - value % step
        reading = f"It ends between {below} and {below + step}, at {value}."
    return [f"I find the {asked} bar.", reading, f"So the value is {value}."]


def _comparison_solution(scene: Mapping[str, Any]) -> list[str]:
    # Listed in reading order (lines top to bottom, shapes left to right), never longest first,
    # so the order of mention gives nothing away.
    if scene["kind"] == "lines":
        lines = sorted(scene["lines"], key=lambda line: line["start"][1] + line["end"][1])
        names = [f"{line['colour']} line" for line in lines]
        sizes = [line["length"] for line in lines]
        first_verb, last_suffix = "is", " long"
        verdict = "line is longer" if len(sizes) == 2 else "line is the longest"
    else:
        shapes = sorted(scene["shapes"], key=lambda shape: shape["box"][0])
        names = [f"{shape['colour']} {shape['shape']}" for shape in shapes]
        sizes = [shape["area"] for shape in shapes]
        first_verb, last_suffix = "covers", ""
        verdict = "one is larger"
    colours = [name.split(" ")[0] for name in names]
    texts = _distinct_numbers(sizes)
    measured = [f"The {names[0]} {first_verb} {texts[0]} px{last_suffix}"]
    measured += [f"the {name} {text} px" for name, text in zip(names[1:], texts[1:], strict=True)]
    winner = colours[max(range(len(sizes)), key=sizes.__getitem__)]
    return [", ".join(measured) + ".", f"The {winner} {verdict}."]


def _arithmetic_solution(scene: Mapping[str, Any]) -> list[str]:
    # Reading order (row by row through the 3×3 grid), as a person would list them.
    values = [number["value"] for number in sorted(scene["numbers"], key=lambda n: n["cell"])]
    listed = ", ".join(str(v) for v in values[:-1]) + f" and {values[-1]}"
    operation = scene["operation"]
    if operation == "sum":
        working = " + ".join(str(v) for v in values) + f" = {sum(values)}"
    elif operation == "difference":
        working = f"{max(values)} - {min(values)} = {max(values) - min(values)}"
    elif operation == "product":
        working = " * ".join(str(v) for v in values) + f" = {math.prod(values)}"
    else:
        raise ValueError(f"scene operation must be sum, difference or product, got {operation!r}")
    return [f"The numbers are {listed}.", f"{working}."]


SOLUTION_WRITERS: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "counting": _counting_solution,
    "bar_chart": _bar_chart_solution,
    "comparison": _comparison_solution,
    "arithmetic": _arithmetic_solution,
}
"""Per family: the rationale's sentences, from the scene (the option sentence is added after)."""
