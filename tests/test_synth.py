"""Synthetic generator: answers recomputed from the drawn scene and the pixels, grid-aligned blocks,
image size per difficulty, determinism, disjoint train / val / test splits."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from care.data import CHOICE_LETTERS, Example, load_examples, sft_target
from care.data.cli import data_app, parse_mix
from care.data.synth import (
    COLOURS,
    DEMO_MIX,
    GENERATOR_VERSION,
    generate_split,
    solution_for,
    write_synthetic_dataset,
)

ALL_LEVELS = [1, 2, 3]
WHITE = (255, 255, 255)
COLOUR_OF_RGB = {rgb: name for name, rgb in COLOURS.items()}


def gold_value(row: dict[str, Any]) -> str:
    """The gold answer as text: the chosen option for multiple choice, else the answer itself."""
    if row["answer_type"] == "multiple_choice":
        return row["choices"][CHOICE_LETTERS.index(row["answer"])]
    return row["answer"]


def family_rows(family: str, n: int = 300, seed: int = 11, **kwargs: Any) -> list[dict[str, Any]]:
    return generate_split(n, seed, families=[family], difficulty_mix=ALL_LEVELS, **kwargs)


def cell_centre_colours(image: Any, grid: int) -> list[str | None]:
    """The colour name at the centre pixel of every grid cell, row by row (None when white).

    Reads the image only: the cell size is the image side over the grid size.
    """
    pixels = np.asarray(image)
    cell = pixels.shape[0] // grid
    names: list[str | None] = []
    for index in range(grid * grid):
        row, column = divmod(index, grid)
        rgb = tuple(int(v) for v in pixels[row * cell + cell // 2, column * cell + cell // 2])
        names.append(None if rgb == WHITE else COLOUR_OF_RGB[rgb])
    return names


def pixel_count(row: dict[str, Any]) -> int:
    """How many blocks the image shows: cells whose centre pixel is coloured."""
    return sum(
        name is not None for name in cell_centre_colours(row["image"], row["difficulty"] + 1)
    )


def render_from_scene(scene: dict[str, Any]) -> np.ndarray:
    """The image the scene describes, painted with numpy: white, then one solid box per block.

    A scattered block fills its cell less `margin_px` on every side; a bar fills the bottom
    `height` cells of its column the same way.
    """
    grid, cell, margin = scene["grid"], scene["cell_px"], scene["margin_px"]
    canvas = np.full((grid * cell, grid * cell, 3), 255, dtype=np.uint8)

    def paint(column: int, row: int, colour: str) -> None:
        top, left = row * cell + margin, column * cell + margin
        canvas[top : (row + 1) * cell - margin, left : (column + 1) * cell - margin] = COLOURS[
            colour
        ]

    for block in scene.get("blocks", []):
        row, column = divmod(block["cell"], grid)
        paint(column, row, block["colour"])
    for bar in scene.get("bars", []):
        for row in range(grid - bar["height"], grid):
            paint(bar["column"], row, bar["colour"])
    return canvas


def test_difficulty_sets_the_grid_and_the_image_grows_with_it() -> None:
    for image_size, sides in {112: (56, 84, 112), 224: (112, 168, 224), 56: (28, 42, 56)}.items():
        rows = generate_split(60, 3, difficulty_mix=ALL_LEVELS, image_size=image_size)
        assert {row["difficulty"] for row in rows} == {1, 2, 3}
        for row in rows:
            grid = row["difficulty"] + 1
            assert (row["scene"]["grid"], row["scene"]["cell_px"]) == (grid, image_size // 4)
            side = sides[row["difficulty"] - 1]
            assert row["image"].size == (side, side) and row["image"].mode == "RGB"


def test_every_image_is_exactly_the_blocks_its_scene_lists() -> None:
    # Pixel-exact: white background, solid boxes, no anti-aliasing, nothing else drawn.
    for image_size in (112, 224):
        rows = generate_split(120, 8, difficulty_mix=ALL_LEVELS, image_size=image_size)
        assert {row["family"] for row in rows} == {
            "counting",
            "bar_chart",
            "comparison",
            "arithmetic",
        }
        for row in rows:
            assert np.array_equal(np.asarray(row["image"]), render_from_scene(row["scene"]))


def test_blocks_sit_inside_their_cell_with_the_margins_of_the_28_px_design() -> None:
    (counting,) = generate_split(1, 4, families=["counting"], difficulty_mix=[3])
    scene = counting["scene"]
    assert (scene["cell_px"], scene["margin_px"]) == (28, 3)
    pixels = np.asarray(counting["image"])
    block = scene["blocks"][0]
    row, column = divmod(block["cell"], 4)
    colour = COLOURS[block["colour"]]
    # Block [x*28+3, y*28+3, x*28+24, y*28+24]: pixels 3..24 of the cell coloured, 0..2 and
    # 25..27 white, so each block covers one 28 px vision patch and no other.
    left, top = column * 28, row * 28
    assert np.all(pixels[top + 3 : top + 25, left + 3 : left + 25] == colour)
    for inside_edge in (0, 2, 25, 27):
        assert tuple(pixels[top + inside_edge, left + 14]) == WHITE
        assert tuple(pixels[top + 14, left + inside_edge]) == WHITE

    (bars,) = generate_split(1, 4, families=["bar_chart"], difficulty_mix=[3])
    assert (bars["scene"]["cell_px"], bars["scene"]["margin_px"]) == (28, 2)
    bar = bars["scene"]["bars"][0]
    bar_pixels = np.asarray(bars["image"])[:, bar["column"] * 28 : bar["column"] * 28 + 28]
    coloured_rows = np.nonzero(np.all(bar_pixels[:, 14] == COLOURS[bar["colour"]], axis=-1))[0]
    # Bottom-up blocks [x*28+2, r*28+2, x*28+25, r*28+25] for r = 3, 2, ...: 24 px each.
    expected = [r * 28 + offset for r in range(4 - bar["height"], 4) for offset in range(2, 26)]
    assert coloured_rows.tolist() == expected
    assert np.all(bar_pixels[:, 2:26][coloured_rows] != WHITE)
    assert np.all(bar_pixels[:, [0, 1, 26, 27]] == WHITE)

    (large,) = generate_split(1, 4, families=["counting"], difficulty_mix=[3], image_size=224)
    assert (large["scene"]["cell_px"], large["scene"]["margin_px"]) == (56, 6)


def test_counting_answer_is_the_number_of_blocks_in_the_scene_and_in_the_pixels() -> None:
    rows = family_rows("counting")
    for row in rows:
        grid, blocks = row["scene"]["grid"], row["scene"]["blocks"]
        assert row["question"] == "How many blocks are in the image?"
        assert gold_value(row) == str(len(blocks)) == str(pixel_count(row))
        cells = [block["cell"] for block in blocks]
        assert cells == sorted(set(cells)) and all(0 <= c < grid * grid for c in cells)
        centres = cell_centre_colours(row["image"], grid)
        assert [(i, name) for i, name in enumerate(centres) if name] == [
            (block["cell"], block["colour"]) for block in blocks
        ]
    counts = {
        level: {int(r["answer"]) for r in rows if r["difficulty"] == level} for level in ALL_LEVELS
    }
    # k is uniform over 1..grid², so every count shows up in 300 rows.
    assert counts[1] == set(range(1, 5)) and counts[2] == set(range(1, 10))
    assert counts[3] <= set(range(1, 17)) and len(counts[3]) >= 14


def test_bar_chart_answer_is_the_sum_of_the_bar_heights_read_off_the_pixels() -> None:
    rows = family_rows("bar_chart")
    bar_numbers = set()
    for row in rows:
        scene, grid = row["scene"], row["difficulty"] + 1
        bars = scene["bars"]
        bar_numbers.add(len(bars))
        assert row["question"] == "What do the bars add up to?"
        assert 1 <= len(bars) <= min(3, grid)
        assert len({bar["column"] for bar in bars}) == len(bars)
        assert len({bar["colour"] for bar in bars}) == len(bars)
        assert all(1 <= bar["height"] <= grid for bar in bars)
        assert gold_value(row) == str(sum(bar["height"] for bar in bars))
        # From the pixels: every coloured cell belongs to a bar, each column's coloured cells
        # stand on the bottom row without gaps, and their number is the bar's height.
        centres = np.array(cell_centre_colours(row["image"], grid), dtype=object).reshape(
            grid, grid
        )
        read_total = 0
        for column in range(grid):
            filled = [name for name in centres[:, column] if name is not None]
            read_total += len(filled)
            assert list(centres[grid - len(filled) :, column]) == filled
            assert len(set(filled)) <= 1
        assert read_total == int(gold_value(row))
    assert bar_numbers == {1, 2, 3}


def test_comparison_is_yes_exactly_when_the_blocks_outnumber_m() -> None:
    rows = family_rows("comparison")
    golds = []
    for row in rows:
        scene, grid = row["scene"], row["difficulty"] + 1
        count, m = len(scene["blocks"]), scene["m"]
        assert row["answer_type"] == "multiple_choice" and row["choices"] == ["yes", "no"]
        assert row["question"] == f"Are there more blocks than {m}?"
        assert 1 <= m <= grid * grid - 1 and m != count
        assert count == pixel_count(row)
        golds.append(gold_value(row))
        assert gold_value(row) == ("yes" if count > m else "no")
        assert row["answer"] == ("A" if count > m else "B")
    # Both verdicts are common, so always answering one of them scores well below 100 %.
    assert 0.3 < golds.count("yes") / len(golds) < 0.7


def test_arithmetic_works_the_operation_of_its_level_on_the_block_count() -> None:
    rows = family_rows("arithmetic")
    operations = {level: set() for level in ALL_LEVELS}
    for row in rows:
        scene, grid = row["scene"], row["difficulty"] + 1
        count, m, operation = len(scene["blocks"]), scene["m"], scene["operation"]
        operations[row["difficulty"]].add(operation)
        assert count == pixel_count(row) and count <= grid * grid
        if operation == "sum":
            assert 1 <= m <= 9 and count >= 1
            question, answer = f"How many blocks would there be with {m} more?", count + m
        elif operation == "difference":
            assert 1 <= m <= count - 1
            question, answer = f"How many blocks are left after removing {m}?", count - m
        else:
            assert 2 <= m <= 5
            question = f"How many points are the blocks worth at {m} points each?"
            answer = count * m
        assert (row["question"], gold_value(row)) == (question, str(answer))
    assert operations == {
        1: {"sum"},
        2: {"sum", "difference"},
        3: {"sum", "difference", "product"},
    }


PLANS = {
    "counting": "I count the blocks.",
    "bar_chart": "I add up the heights of the bars.",
}
OPERATION_WORDS = {"sum": "add", "difference": "take away", "product": "multiply by"}


def test_every_solution_is_its_family_plan_and_never_holds_the_result() -> None:
    rows = generate_split(400, 21, difficulty_mix=ALL_LEVELS, multiple_choice_share=0.5)
    for row in rows:
        scene = row["scene"]
        if row["family"] in PLANS:
            expected = PLANS[row["family"]]
        elif row["family"] == "comparison":
            expected = f"I count the blocks and compare the count with {scene['m']}."
        else:
            words = OPERATION_WORDS[scene["operation"]]
            expected = f"I count the blocks and {words} {scene['m']}."
        assert row["solution"] == expected == solution_for(row)
        # The result is decided in the answer span alone: no option letter, and the only number
        # is the question's own operand.
        assert "option" not in row["solution"] and "\n" not in row["solution"]
        numbers = re.findall(r"\d+", row["solution"])
        assert numbers in ([], [str(scene.get("m"))]), row
    assert {row["answer_type"] for row in rows} == {"integer", "multiple_choice"}


def test_solution_for_rebuilds_worked_examples_of_every_family() -> None:
    blocks = [{"cell": cell, "colour": "red"} for cell in (0, 3, 5)]
    examples = [
        ({"family": "counting", "scene": {"blocks": blocks}}, "I count the blocks."),
        (
            {"family": "bar_chart", "scene": {"bars": [{"height": 2}, {"height": 4}]}},
            "I add up the heights of the bars.",
        ),
        (
            {
                "family": "comparison",
                "answer_type": "multiple_choice",
                "choices": ["yes", "no"],
                "answer": "B",
                "scene": {"blocks": blocks, "m": 7},
            },
            "I count the blocks and compare the count with 7.",
        ),
        (
            {"family": "arithmetic", "scene": {"blocks": blocks, "operation": "product", "m": 4}},
            "I count the blocks and multiply by 4.",
        ),
        (
            {
                "family": "arithmetic",
                "scene": {"blocks": blocks, "operation": "difference", "m": 2},
            },
            "I count the blocks and take away 2.",
        ),
    ]
    for row, expected in examples:
        assert solution_for(row) == expected


def test_multiple_choice_share_switches_integer_problems_between_formats() -> None:
    integer_families = ["counting", "bar_chart", "arithmetic"]
    free = generate_split(60, 1, families=integer_families, multiple_choice_share=0.0)
    choice = generate_split(200, 1, families=integer_families, multiple_choice_share=1.0)
    assert {row["answer_type"] for row in free} == {"integer"}
    assert all("choices" not in row for row in free)
    assert {row["answer_type"] for row in choice} == {"multiple_choice"}
    letters = set()
    for row in choice:
        options = [int(option) for option in row["choices"]]
        answer = int(gold_value(row))
        letters.add(row["answer"])
        assert len(options) == 4 == len(set(options)) and min(options) >= 1
        # Near misses: within 2 of the answer, or up to 4 above it when the answer is 1 or 2.
        reach = 2 if answer >= 3 else 4
        assert all(0 < abs(option - answer) <= reach for option in options if option != answer)
    assert letters == {"A", "B", "C", "D"}


def test_same_seed_gives_byte_identical_images_and_rows() -> None:
    first = generate_split(25, 123, difficulty_mix=ALL_LEVELS)
    second = generate_split(25, 123, difficulty_mix=ALL_LEVELS)
    other = generate_split(25, 124, difficulty_mix=ALL_LEVELS)

    def fingerprint(rows: list[dict[str, Any]]) -> list[tuple]:
        return [
            (
                r["id"],
                r["question"],
                r["answer"],
                r.get("choices"),
                r["solution"],
                r["image"].tobytes(),
            )
            for r in rows
        ]

    assert fingerprint(first) == fingerprint(second)
    assert sum(a != b for a, b in zip(fingerprint(first), fingerprint(other), strict=True)) >= 20


def test_excluded_hashes_are_never_drawn_again() -> None:
    rows = generate_split(10, 5, split="test")
    excluded = frozenset(row["content_hash"] for row in rows[:4])
    redrawn = generate_split(6, 5, split="test", exclude_hashes=excluded)
    assert excluded.isdisjoint(row["content_hash"] for row in redrawn)
    # The draw sequence is the same; only the excluded problems are stepped over.
    assert [r["content_hash"] for r in redrawn] == [r["content_hash"] for r in rows[4:]]


def test_a_mix_with_too_few_distinct_problems_stops_with_an_error() -> None:
    # Level-1 bar charts: one bar (2 columns x 4 colours x 2 heights = 16) or two (12 ordered
    # colour pairs x 4 height pairs = 48), so 64 distinct images in all.
    rows = generate_split(64, 0, families=["bar_chart"], difficulty_mix=[1])
    assert len({row["content_hash"] for row in rows}) == 64
    with pytest.raises(ValueError, match="could only draw 64 distinct problems of 65 requested"):
        generate_split(65, 0, families=["bar_chart"], difficulty_mix=[1])


def test_bad_generator_arguments_name_the_argument(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="families has unknown entry 'maze'"):
        generate_split(1, 0, families=["maze"])
    with pytest.raises(ValueError, match="difficulty_mix has unknown entry 4"):
        generate_split(1, 0, difficulty_mix={4: 1.0})
    with pytest.raises(ValueError, match="image_size must be between 56 and 1024"):
        generate_split(1, 0, image_size=20)
    with pytest.raises(ValueError, match="image_size must be a multiple of 4.*got 114"):
        generate_split(1, 0, image_size=114)
    with pytest.raises(ValueError, match="multiple_choice_share must be in"):
        generate_split(1, 0, multiple_choice_share=1.5)
    with pytest.raises(ValueError, match="n_val must be a non-negative integer, got -1"):
        write_synthetic_dataset(tmp_path / "x", seed=0, n_train=1, n_test=1, n_val=-1)
    assert not (tmp_path / "x").exists()


def test_solution_for_rejects_rows_it_cannot_explain() -> None:
    with pytest.raises(ValueError, match="row family must be one of"):
        solution_for({"family": "maze", "scene": {}})
    with pytest.raises(ValueError, match="scene has no 'm' field"):
        solution_for({"family": "comparison", "scene": {"blocks": []}})
    with pytest.raises(ValueError, match="scene operation must be sum, difference or product"):
        solution_for({"family": "arithmetic", "scene": {"blocks": [], "m": 1, "operation": "x"}})
    with pytest.raises(ValueError, match="scene has no 'bars' field"):
        solution_for({"family": "bar_chart", "scene": {"blocks": []}})


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("synth") / "demo"
    write_synthetic_dataset(out_dir, seed=3, n_train=2000, n_test=300, n_val=200)
    return out_dir


def test_writing_the_splits_writes_one_image_per_example(written: Path) -> None:
    names = [path.name for path in (written / "images").glob("*.png")]
    assert len(names) == 2500
    assert sum(name.startswith("val-") for name in names) == 200
    assert "val-000199.png" in names and "test-000299.png" in names


def test_written_dataset_reads_back_through_load_examples(written: Path) -> None:
    meta = json.loads((written / "synth_meta.json").read_text())
    train = load_examples(written / "train.jsonl")
    test = load_examples(written / "test.jsonl")
    val = load_examples(written / "val.jsonl")

    assert (len(train), len(test), len(val)) == (2000, 300, 200)
    assert {split: meta["splits"][split]["n"] for split in meta["splits"]} == {
        "train": 2000,
        "test": 300,
        "val": 200,
    }
    assert meta["seed"] == 3 and meta["generator_version"] == GENERATOR_VERSION == "4"
    assert (
        meta["families"]
        == dict(DEMO_MIX.families)
        == {
            "counting": 0.25,
            "bar_chart": 0.25,
            "comparison": 0.25,
            "arithmetic": 0.25,
        }
    )
    assert meta["difficulty_mix"] == {"1": 0.3, "2": 0.35, "3": 0.35}
    assert meta["multiple_choice_share"] == 0.0
    for split, examples in (("train", train), ("val", val)):
        counted: dict[str, int] = {}
        for example in examples:
            counted[example.extra["family"]] = counted.get(example.extra["family"], 0) + 1
        assert counted == meta["splits"][split]["family"]
    assert [example.id for example in val[:2]] == ["val-000000", "val-000001"]
    val_lines = (written / "val.jsonl").read_text().splitlines()
    assert json.loads(val_lines[-1])["images"] == ["images/val-000199.png"]
    first_row = json.loads((written / "train.jsonl").read_text().splitlines()[0])
    example = train[0]
    assert (example.id, example.answer, example.answer_type) == (
        first_row["id"],
        first_row["answer"],
        first_row["answer_type"],
    )
    assert example.extra["scene"] == first_row["scene"]
    assert example.extra["solution"] == first_row["solution"]
    assert sft_target(example) == (
        f"<think>\n{first_row['solution']}\n</think>\n<answer>{first_row['answer']}</answer>"
    )
    # Images read back at the size of their level, and show what the scene says.
    for example in val[:30]:
        (image,) = example.load_images()
        side = 28 * (example.extra["difficulty"] + 1)
        assert (image.mode, image.size) == ("RGB", (side, side))
        assert np.array_equal(np.asarray(image), render_from_scene(example.extra["scene"]))


def test_test_val_and_train_splits_share_no_question_and_image(written: Path) -> None:
    def hashes(split: str) -> list[str]:
        digests = []
        for example in load_examples(written / f"{split}.jsonl", check_images=False):
            digest = hashlib.sha256(example.question.encode())
            digest.update(example.load_images()[0].tobytes())
            digests.append(digest.hexdigest())
        return digests

    train, test, val = hashes("train"), hashes("test"), hashes("val")
    assert (len(set(train)), len(set(test)), len(set(val))) == (2000, 300, 200)
    assert set(train).isdisjoint(test) and set(train).isdisjoint(val) and set(val).isdisjoint(test)


def test_the_val_split_is_optional_and_drawn_after_the_test_split(tmp_path: Path) -> None:
    plain = write_synthetic_dataset(tmp_path / "plain", seed=9, n_train=30, n_test=10)
    with_val = write_synthetic_dataset(tmp_path / "val", seed=9, n_train=30, n_test=10, n_val=5)
    assert plain.val_path is None and not (tmp_path / "plain" / "val.jsonl").exists()
    assert "val" not in plain.meta["splits"]
    assert with_val.val_path == tmp_path / "val" / "val.jsonl"
    assert with_val.meta["splits"]["val"]["n"] == 5
    # Asking for a val split leaves the test split as it was.
    assert plain.test_path.read_bytes() == with_val.test_path.read_bytes()
    # Overwriting without a val split removes the old one and its images.
    write_synthetic_dataset(tmp_path / "val", seed=9, n_train=30, n_test=10, overwrite=True)
    assert not (tmp_path / "val" / "val.jsonl").exists()
    assert not list((tmp_path / "val" / "images").glob("val-*.png"))
    with pytest.raises(ValueError, match=r"already holds a dataset \(train.jsonl\)"):
        write_synthetic_dataset(tmp_path / "val", seed=9, n_train=30, n_test=10, n_val=5)


def test_same_seed_writes_identical_files(tmp_path: Path) -> None:
    first = write_synthetic_dataset(tmp_path / "a", seed=9, n_train=30, n_test=10, n_val=4)
    second = write_synthetic_dataset(tmp_path / "b", seed=9, n_train=30, n_test=10, n_val=4)
    for name in ["train.jsonl", "test.jsonl", "val.jsonl", "synth_meta.json"]:
        assert (first.out_dir / name).read_bytes() == (second.out_dir / name).read_bytes()
    png_bytes = sorted(p.read_bytes() for p in (first.out_dir / "images").iterdir())
    assert len(png_bytes) == 44
    assert png_bytes == sorted(p.read_bytes() for p in (second.out_dir / "images").iterdir())
    with pytest.raises(ValueError, match="already holds a dataset"):
        write_synthetic_dataset(tmp_path / "a", seed=9, n_train=30, n_test=10)


def test_synth_command_writes_the_dataset_and_prints_the_table(tmp_path: Path) -> None:
    out_dir = tmp_path / "cli"
    args = ["synth", "--out", str(out_dir), "--seed", "1", "--train", "40", "--test", "12"]
    args += ["--val", "6", "--image-size", "96", "--families", "counting,bar_chart"]
    args += ["--difficulty", "1,2"]
    result = CliRunner().invoke(data_app, args)

    assert result.exit_code == 0, result.output
    meta = json.loads((out_dir / "synth_meta.json").read_text())
    assert meta["families"] == {"counting": 1.0, "bar_chart": 1.0}
    assert set(meta["splits"]["train"]["difficulty"]) <= {"1", "2"}
    train_table = meta["splits"]["train"]["family_difficulty"]
    line = (
        "  counting"
        + " " * 4
        + "".join(f"{train_table['counting'].get(level, 0):>9}" for level in ["1", "2", "3"])
    )
    assert line in result.output
    assert "train: 40 problems" in result.output and "test: 12 problems" in result.output
    assert "val: 6 problems" in result.output
    assert f"wrote {out_dir / 'train.jsonl'}" in result.output
    assert str(out_dir / "val.jsonl") in result.output
    sizes = {
        ex.extra["difficulty"]: ex.load_images()[0].size
        for ex in load_examples(out_dir / "val.jsonl")
    }
    assert all(size == (24 * (level + 1),) * 2 for level, size in sizes.items())

    for bad_args, message in (
        (["--families", "maze"], "unknown entry 'maze'"),
        (["--image-size", "98"], "image_size must be a multiple of 4"),
    ):
        bad = CliRunner().invoke(data_app, ["synth", "--out", str(tmp_path / "x"), *bad_args])
        assert bad.exit_code == 2
        assert message in bad.output


def test_parse_mix_reads_names_and_weights() -> None:
    assert parse_mix("counting:2,arithmetic", ("counting", "arithmetic"), "--families") == {
        "counting": 2.0,
        "arithmetic": 1.0,
    }
    assert parse_mix("3,1:0.5", (1, 2, 3), "--difficulty") == {3: 1.0, 1: 0.5}


def test_sft_target_lays_out_think_then_answer_exactly() -> None:
    row = {"id": "r1", "answer": 13, "solution": "I count 4 blocks. 4 + 9 = 13."}
    assert sft_target(row) == (
        "<think>\nI count 4 blocks. 4 + 9 = 13.\n</think>\n<answer>13</answer>"
    )
    choice_row = {"id": "r2", "answer": "blue", "choices": ["red", "blue"], "solution": "x."}
    assert sft_target(choice_row) == "<think>\nx.\n</think>\n<answer>B</answer>"
    generated = generate_split(1, 0, multiple_choice_share=1.0, families=["counting"])[0]
    assert sft_target(generated) == (
        f"<think>\n{generated['solution']}\n</think>\n<answer>{generated['answer']}</answer>"
    )


def test_sft_target_rejects_rows_without_a_usable_solution(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="row 'r1' has no 'solution' field"):
        sft_target({"id": "r1", "answer": "3"})
    with pytest.raises(ValueError, match="solution must be a non-empty string"):
        sft_target({"id": "r1", "answer": "3", "solution": "  "})
    with pytest.raises(ValueError, match=r"only the rationale text.*'</think>'"):
        sft_target({"id": "r1", "answer": "3", "solution": "3.</think>"})
    with pytest.raises(ValueError, match="answer is empty"):
        sft_target({"id": "r1", "answer": " ", "solution": "3."})
    with pytest.raises(ValueError, match="answer: 'C' is neither a letter A..B"):
        sft_target({"id": "r1", "answer": "C", "choices": ["x", "y"], "solution": "3."})
    data = tmp_path / "plain.jsonl"
    data.write_text(json.dumps({"id": "p1", "images": [], "question": "q?", "answer": "3"}) + "\n")
    (example,) = load_examples(data)
    assert isinstance(example, Example)
    with pytest.raises(ValueError, match="example 'p1' .* has no 'solution' field"):
        sft_target(example)
