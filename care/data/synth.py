"""Synthetic visual-reasoning problems with verifiable answers: solid blocks on a grid, drawn with PIL.

The demo's tiny vision tower turns each 28×28 px patch of a 112 px image into one vision token,
and it can tell a patch holding a large solid block from a white one, but not read digits or
compare lengths. So every problem is a few solid squares, each filling one grid cell that lines
up with one vision token, and the difficulty is the grid's size: level d draws a (d+1)×(d+1)
grid, so the image itself grows (56, 84, 112 px at the default size) and holds more blocks.
Every question is about k, the number of blocks drawn (never where they are):

- `counting`   — "How many blocks are in the image?";
- `bar_chart`  — "What do the bars add up to?" (1-3 stacked bars, k = the sum of their heights);
- `comparison` — "Are there more blocks than 5?" (always multiple choice: yes / no);
- `arithmetic` — "How many blocks would there be with 3 more?" (also removing some, and products).

Every problem keeps its `scene`: a JSON description of what was drawn, from which the answer can
be recomputed, and a `solution`: a short templated rationale built from the scene (what a
supervised warm start imitates inside `<think>`; see `care.data.sft.sft_target`). Everything is
drawn from one `random.Random` per problem, keyed by (generator version, seed, split, attempt),
so a seed gives byte-identical images on every run.

>>> rows = generate_split(2, seed=0)                  # doctest: +SKIP
>>> rows[0]["question"], rows[0]["answer"], rows[0]["solution"]  # doctest: +SKIP
('How many blocks are in the image?', '3', 'I count 3 blocks.')
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from care.data.dataset import CHOICE_LETTERS

GENERATOR_VERSION = "4"
"""Bumped whenever the same seed would write different files (other problems, or new fields).

It is part of every problem's random key, so a bump also redraws the problems. "2" added
`solution` to every row; "3" replaced shapes, charts, lines and digits by grid-aligned blocks;
"4" took the result out of the rationale: it is in the answer alone (`solution_for`).
"""

FAMILIES: tuple[str, ...] = ("counting", "bar_chart", "comparison", "arithmetic")
DIFFICULTIES: tuple[int, ...] = (1, 2, 3)
MIN_IMAGE_SIZE = 56
MAX_IMAGE_SIZE = 1024
GRID_AT_LEVEL_3 = 4
"""Cells per side at the hardest level; `image_size` is split into this many cells."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
}
"""Block colours; drawn without anti-aliasing, so every block pixel is exactly one of these."""

BACKGROUND = (255, 255, 255)
BLOCK_MARGIN_AT_28 = 3
"""White gap (px) between a scattered block and its cell's edge, for a 28 px cell (scaled)."""
BAR_MARGIN_AT_28 = 2
"""The same for the blocks of a bar: a bar reads as one column of nearly touching blocks."""

ARITHMETIC_OPERATIONS: dict[int, tuple[str, ...]] = {
    1: ("sum",),
    2: ("sum", "difference"),
    3: ("sum", "difference", "product"),
}
"""Operations an arithmetic problem may ask for, per difficulty level."""


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
    families={"counting": 0.25, "bar_chart": 0.25, "comparison": 0.25, "arithmetic": 0.25},
    difficulty={1: 0.3, 2: 0.35, 3: 0.35},
    multiple_choice_share=0.0,
)
"""The demo's default mix, made for a tiny CPU model that should learn the task only partly.

After a short warm start the tiny model counts the blocks only partly, so at temperature 1 its
prompt groups come out mixed (some rollouts right) or all wrong: the groups on which CARE's
anchors, hard negatives and rescue act. Levels 2 and 3 (more blocks, more cells to look at)
weigh a little more, since that is where there is most to learn. Integer answers are free
form, so the only guessing floor is comparison's yes / no.
"""


@dataclass
class SynthDataset:
    """What `write_synthetic_dataset` wrote: the split files and the metadata it recorded.

    `val_path` is None unless a validation split was asked for (`n_val > 0`).
    """

    out_dir: Path
    train_path: Path
    test_path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    val_path: Path | None = None


@dataclass
class _Drawn:
    """One family's output before the answer format is chosen.

    Integer families set `integer_answer`; always-multiple-choice families set `options` and
    `gold_option` (the index of the right option).
    """

    question: str
    image: Image.Image
    scene: dict[str, Any]
    integer_answer: int | None = None
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

    `image_size` is the side of a difficulty-3 image (4×4 cells); levels 1 and 2 draw 2×2 and
    3×3 cells of the same size, so their images are half and three quarters as wide.
    Each row holds `id` ("<split>-000000", ...), `question`, `answer` (a letter for multiple
    choice, else the integer as text), `answer_type`, `choices` (multiple choice only), `family`,
    `difficulty`, `scene` (what was drawn), `solution` (a short rationale, see `solution_for`),
    `image` (a PIL RGB image) and `content_hash` (of the question and the pixels). Problems
    whose hash is in `exclude_hashes` or already in the split are drawn again, so splits can be
    made disjoint.

    >>> rows = generate_split(3, seed=7, families=["counting"], difficulty_mix=[1])
    >>> [row["family"] for row in rows], rows[0]["image"].size
    (['counting', 'counting', 'counting'], (56, 56))
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
    # Small mixes (level 1 counting has 624 distinct images) run out; stop rather than spin.
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
    n_val: int = 0,
    overwrite: bool = False,
) -> SynthDataset:
    """Write `train.jsonl`, `test.jsonl`, `images/<id>.png` and `synth_meta.json` under `out_dir`,
    and `val.jsonl` (ids "val-000000", ...) when `n_val > 0`.

    Rows follow the dataset format (`images` holds "images/<id>.png", relative to the file), so
    `load_examples` reads them back; `family`, `difficulty`, `scene` and `solution` land in
    `Example.extra`.
    The test split is drawn first, then the validation split, then the training split, and none
    repeats a (question, image) pair of one drawn before it. An existing dataset in `out_dir` is
    an error unless `overwrite`.
    """
    for name, value in (("n_train", n_train), ("n_test", n_test), ("n_val", n_val)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    out_dir = Path(out_dir)
    train_path, test_path = out_dir / "train.jsonl", out_dir / "test.jsonl"
    val_path = out_dir / "val.jsonl"
    meta_path, image_dir = out_dir / "synth_meta.json", out_dir / "images"
    existing = [p for p in (train_path, test_path, val_path, meta_path) if p.exists()]
    if existing and not overwrite:
        raise ValueError(
            f"out_dir {out_dir} already holds a dataset ({existing[0].name}); "
            "pass overwrite=True or choose another folder"
        )
    if overwrite:
        # Only files this generator names, so unrelated files in the folder survive; a val split
        # of an earlier run goes too, or it would sit beside splits it was not drawn against.
        val_path.unlink(missing_ok=True)
        if image_dir.is_dir():
            for split in ("train", "test", "val"):
                for stale in image_dir.glob(f"{split}-*.png"):
                    stale.unlink()
    common = dict(
        families=families,
        difficulty_mix=difficulty_mix,
        image_size=image_size,
        multiple_choice_share=multiple_choice_share,
    )
    test_rows = generate_split(n_test, seed, split="test", **common)
    drawn = {row["content_hash"] for row in test_rows}
    val_rows = generate_split(n_val, seed, split="val", exclude_hashes=frozenset(drawn), **common)
    drawn.update(row["content_hash"] for row in val_rows)
    train_rows = generate_split(
        n_train, seed, split="train", exclude_hashes=frozenset(drawn), **common
    )

    splits = [(train_path, train_rows), (test_path, test_rows)]
    if n_val > 0:
        splits.append((val_path, val_rows))
    image_dir.mkdir(parents=True, exist_ok=True)
    for path, rows in splits:
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                image_name = f"images/{row['id']}.png"
                row["image"].save(out_dir / image_name, format="PNG")
                handle.write(json.dumps(_file_row(row, image_name)) + "\n")

    family_names, family_weights = _weights(families, FAMILIES, "families")
    levels, level_weights = _weights(difficulty_mix, DIFFICULTIES, "difficulty_mix")
    summaries = {"train": summarise(train_rows), "test": summarise(test_rows)}
    if n_val > 0:
        summaries["val"] = summarise(val_rows)
    meta = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "image_size": image_size,
        "families": dict(zip(family_names, family_weights, strict=True)),
        "difficulty_mix": {str(k): w for k, w in zip(levels, level_weights, strict=True)},
        "multiple_choice_share": multiple_choice_share,
        "splits": summaries,
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return SynthDataset(
        out_dir=out_dir,
        train_path=train_path,
        test_path=test_path,
        meta=meta,
        val_path=val_path if n_val > 0 else None,
    )


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
    """A short rationale for a synthetic row: the plan that turns what the image shows into the
    answer, in words, without the result.

    One fixed template per family (and operation), so a tiny model can imitate it in a
    supervised warm start. The rationale never states the count, the sum or the option: the one
    thing read off the image is decided in the answer span. That is where CARE's default region
    weighting puts its credit (answer tokens weigh 1, rationale tokens 0.005 on a positive and 0
    on a negative), so GRPO and CARE both train the tokens that decide the reward. With the count
    written in the rationale (generator version 3), CARE could not correct a miscount: from one
    warm start it gained 0.2 points on the test split where GRPO gained 6.3 and CARE with uniform
    token weights 6.2 (docs/demo.md). Needs `family` and `scene`.

    >>> solution_for({"family": "arithmetic", "answer_type": "integer", "scene": {
    ...     "operation": "sum", "m": 3, "blocks": [{"cell": 0, "colour": "red"}] * 4}})
    'I count the blocks and add 3.'
    """
    family = row.get("family")
    if family not in SOLUTION_WRITERS:
        raise ValueError(f"row family must be one of {list(SOLUTION_WRITERS)}, got {family!r}")
    scene = row.get("scene")
    if not isinstance(scene, Mapping):
        raise ValueError(f"row scene must be a mapping (what was drawn), got {scene!r}")
    return SOLUTION_WRITERS[family](scene)


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
    if image_size % GRID_AT_LEVEL_3:
        raise ValueError(
            f"image_size must be a multiple of {GRID_AT_LEVEL_3} (the level-3 grid's cells per "
            f"side, so every cell has the same whole number of px), got {image_size}"
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
    rng: random.Random, family: str, difficulty: int, image_size: int, multiple_choice_share: float
) -> dict[str, Any]:
    grid = difficulty + 1
    cell = image_size // GRID_AT_LEVEL_3
    drawn = FAMILY_DRAWERS[family](rng, difficulty, grid, cell)
    row: dict[str, Any] = {"question": drawn.question}
    if drawn.options is not None and drawn.gold_option is not None:
        row.update(
            answer=CHOICE_LETTERS[drawn.gold_option],
            answer_type="multiple_choice",
            choices=list(drawn.options),
        )
    elif drawn.integer_answer is not None:
        if rng.random() < multiple_choice_share:
            options = _integer_options(rng, drawn.integer_answer)
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


def _integer_options(rng: random.Random, answer: int, n_options: int = 4) -> list[int]:
    """`n_options` distinct positive integers holding `answer`, in random order.

    The wrong options are near misses, answer ± 1 and ± 2 (every answer of this task is at
    least 1, so smaller ones are dropped and answer + 3, + 4 fill in); a list, never a set, so
    the draw does not depend on hash order.

    >>> options = _integer_options(random.Random(0), 1)
    >>> len(set(options)), 1 in options, min(options)
    (4, True, 1)
    """
    candidates = [answer - 1, answer + 1, answer - 2, answer + 2, answer + 3, answer + 4]
    pool = [value for value in candidates if value >= 1][:n_options]
    options = [*rng.sample(pool, n_options - 1), answer]
    rng.shuffle(options)
    return options


def _margin(cell: int, margin_at_28: int) -> int:
    """A margin given for a 28 px cell, scaled to `cell` px: `_margin(56, 3)` → 6."""
    return round(margin_at_28 * cell / 28)


def _block_box(column: int, row: int, cell: int, margin: int) -> list[int]:
    """Inclusive pixel box of the block in grid cell (column, row).

    >>> _block_box(1, 2, 28, 3)
    [31, 59, 52, 80]
    """
    return [
        column * cell + margin,
        row * cell + margin,
        (column + 1) * cell - 1 - margin,
        (row + 1) * cell - 1 - margin,
    ]


def _canvas(grid: int, cell: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (grid * cell, grid * cell), BACKGROUND)
    return image, ImageDraw.Draw(image)


def _scattered_blocks(
    rng: random.Random, count: int, grid: int, cell: int
) -> tuple[Image.Image, dict[str, Any]]:
    """`count` blocks of random colours in distinct random cells, and the scene that says so.

    Cells are numbered row by row (`cell = row * grid + column`); the scene lists the blocks in
    that reading order.
    """
    cells = sorted(rng.sample(range(grid * grid), count))
    colour_names = list(COLOURS)
    blocks = [{"cell": index, "colour": rng.choice(colour_names)} for index in cells]
    margin = _margin(cell, BLOCK_MARGIN_AT_28)
    image, draw = _canvas(grid, cell)
    for block in blocks:
        row, column = divmod(block["cell"], grid)
        draw.rectangle(_block_box(column, row, cell, margin), fill=COLOURS[block["colour"]])
    scene = {"grid": grid, "cell_px": cell, "margin_px": margin, "blocks": blocks}
    return image, scene


def _draw_counting(rng: random.Random, difficulty: int, grid: int, cell: int) -> _Drawn:
    """Count 1..grid² scattered blocks."""
    count = rng.randint(1, grid * grid)
    image, scene = _scattered_blocks(rng, count, grid, cell)
    return _Drawn(
        question="How many blocks are in the image?",
        image=image,
        scene=scene,
        integer_answer=count,
    )


def _draw_bar_chart(rng: random.Random, difficulty: int, grid: int, cell: int) -> _Drawn:
    """Add up 1..min(3, grid) bars: columns of 1..grid blocks standing on the bottom row, each bar
    in its own colour and column."""
    n_bars = rng.randint(1, min(3, grid))
    columns = rng.sample(range(grid), n_bars)
    colours = rng.sample(list(COLOURS), n_bars)
    heights = [rng.randint(1, grid) for _ in range(n_bars)]
    margin = _margin(cell, BAR_MARGIN_AT_28)
    image, draw = _canvas(grid, cell)
    bars = []
    for column, colour, height in sorted(zip(columns, colours, heights, strict=True)):
        for row in range(grid - height, grid):
            draw.rectangle(_block_box(column, row, cell, margin), fill=COLOURS[colour])
        bars.append({"column": column, "height": height, "colour": colour})
    return _Drawn(
        question="What do the bars add up to?",
        image=image,
        scene={"grid": grid, "cell_px": cell, "margin_px": margin, "bars": bars},
        integer_answer=sum(heights),
    )


def _draw_comparison(rng: random.Random, difficulty: int, grid: int, cell: int) -> _Drawn:
    """Are the 1..grid² scattered blocks more than m? m is another count in 1..grid²-1, never
    the block count itself, so the answer is never a tie (yes / no, always multiple choice)."""
    count = rng.randint(1, grid * grid)
    image, scene = _scattered_blocks(rng, count, grid, cell)
    thresholds = [value for value in range(1, grid * grid) if value != count]
    threshold = rng.choice(thresholds) if thresholds else 0
    scene["m"] = threshold
    return _Drawn(
        question=f"Are there more blocks than {threshold}?",
        image=image,
        scene=scene,
        options=("yes", "no"),
        gold_option=0 if count > threshold else 1,
    )


def _draw_arithmetic(rng: random.Random, difficulty: int, grid: int, cell: int) -> _Drawn:
    """Count the scattered blocks, then add m (all levels), remove m (levels 2-3) or multiply by
    m points each (level 3)."""
    operation = rng.choice(ARITHMETIC_OPERATIONS[difficulty])
    # Removing needs at least two blocks, so that one is removed and one is left.
    count = rng.randint(2 if operation == "difference" else 1, grid * grid)
    image, scene = _scattered_blocks(rng, count, grid, cell)
    if operation == "sum":
        m = rng.randint(1, 9)
        question, answer = f"How many blocks would there be with {m} more?", count + m
    elif operation == "difference":
        m = rng.randint(1, count - 1)
        question, answer = f"How many blocks are left after removing {m}?", count - m
    else:
        m = rng.randint(2, 5)
        question = f"How many points are the blocks worth at {m} points each?"
        answer = count * m
    scene.update(operation=operation, m=m)
    return _Drawn(question=question, image=image, scene=scene, integer_answer=answer)


FAMILY_DRAWERS: dict[str, Callable[[random.Random, int, int, int], _Drawn]] = {
    "counting": _draw_counting,
    "bar_chart": _draw_bar_chart,
    "comparison": _draw_comparison,
    "arithmetic": _draw_arithmetic,
}
"""Per family: draw a problem from (rng, difficulty, grid cells per side, cell px)."""


def _scene_field(scene: Mapping[str, Any], name: str) -> Any:
    if name not in scene:
        raise ValueError(f"scene has no {name!r} field; it holds {sorted(scene)}")
    return scene[name]


def _counting_solution(scene: Mapping[str, Any]) -> str:
    _scene_field(scene, "blocks")
    return "I count the blocks."


def _bar_chart_solution(scene: Mapping[str, Any]) -> str:
    _scene_field(scene, "bars")
    return "I add up the heights of the bars."


def _comparison_solution(scene: Mapping[str, Any]) -> str:
    _scene_field(scene, "blocks")
    return f"I count the blocks and compare the count with {_scene_field(scene, 'm')}."


_OPERATION_WORDS = {"sum": "add", "difference": "take away", "product": "multiply by"}


def _arithmetic_solution(scene: Mapping[str, Any]) -> str:
    _scene_field(scene, "blocks")
    m, operation = _scene_field(scene, "m"), _scene_field(scene, "operation")
    if operation not in _OPERATION_WORDS:
        raise ValueError(f"scene operation must be sum, difference or product, got {operation!r}")
    return f"I count the blocks and {_OPERATION_WORDS[operation]} {m}."


SOLUTION_WRITERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "counting": _counting_solution,
    "bar_chart": _bar_chart_solution,
    "comparison": _comparison_solution,
    "arithmetic": _arithmetic_solution,
}
"""Per family: the rationale (the plan, never the result), from the scene."""
