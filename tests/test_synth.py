"""Synthetic generator: answers recomputed from the drawn scene (and pixels), determinism, splits."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from care.data import CHOICE_LETTERS, Example, load_examples, sft_target
from care.data.cli import data_app, parse_mix
from care.data.synth import (
    COLOURS,
    GENERATOR_VERSION,
    generate_split,
    solution_for,
    write_synthetic_dataset,
)

ALL_LEVELS = [1, 2, 3]


def gold_value(row: dict[str, Any]) -> str:
    """The gold answer as text: the chosen option for multiple choice, else the answer itself."""
    if row["answer_type"] == "multiple_choice":
        return row["choices"][CHOICE_LETTERS.index(row["answer"])]
    return row["answer"]


def family_rows(family: str, n: int = 90, seed: int = 11) -> list[dict[str, Any]]:
    return generate_split(n, seed, families=[family], difficulty_mix=ALL_LEVELS)


def components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """4-connected components of a boolean mask, by breadth-first flood fill."""
    seen = np.zeros_like(mask, dtype=bool)
    found = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        queue, pixels = deque([start]), []
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                inside = 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]
                if inside and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        found.append(pixels)
    return found


def shape_of_component(pixels: list[tuple[int, int]]) -> str:
    """Classify a filled blob by how much of its bounding box it covers (1, pi/4, 1/2)."""
    ys, xs = zip(*pixels, strict=True)
    box_area = (max(ys) - min(ys) + 1) * (max(xs) - min(xs) + 1)
    fill = len(pixels) / box_area
    return "square" if fill > 0.92 else "circle" if fill > 0.64 else "triangle"


def test_counting_answer_matches_a_recount_of_the_scene() -> None:
    rows = family_rows("counting")
    assert {row["difficulty"] for row in rows} == {1, 2, 3}
    for row in rows:
        target = row["scene"]["target"]
        recount = sum(
            obj["colour"] == target["colour"] and obj["shape"] == target["shape"]
            for obj in row["scene"]["objects"]
        )
        assert gold_value(row) == str(recount)
        assert (
            row["question"] == f"How many {target['colour']} {target['shape']}s are in the image?"
        )


def test_counting_answer_matches_the_rendered_pixels() -> None:
    for row in family_rows("counting", n=30, seed=4):
        pixels = np.asarray(row["image"])
        target = row["scene"]["target"]
        mask = np.all(pixels == COLOURS[target["colour"]], axis=-1)
        blobs = components(mask)
        same_colour = [o for o in row["scene"]["objects"] if o["colour"] == target["colour"]]
        assert len(blobs) == len(same_colour)
        counted = sum(shape_of_component(blob) == target["shape"] for blob in blobs)
        assert gold_value(row) == str(counted)


def test_bar_chart_answer_is_the_asked_bar_and_bar_heights_show_the_values() -> None:
    for row in family_rows("bar_chart", n=60):
        scene = row["scene"]
        asked = [bar for bar in scene["bars"] if bar["colour"] == scene["asked"]]
        assert len(asked) == 1
        assert gold_value(row) == str(asked[0]["value"])
        pixels = np.asarray(row["image"])
        for bar in scene["bars"]:
            x_centre = (bar["box"][0] + bar["box"][2]) // 2
            column = np.all(pixels[:, x_centre] == COLOURS[bar["colour"]], axis=-1)
            read_value = column.sum() / scene["unit_px"]
            assert abs(read_value - bar["value"]) < 0.5
            assert 1 <= bar["value"] <= scene["max_value"]


def test_comparison_gold_is_the_longer_line_or_larger_area() -> None:
    rows = family_rows("comparison", n=90)
    kinds = {row["scene"]["kind"] for row in rows}
    assert kinds == {"lines", "areas"}
    for row in rows:
        assert row["answer_type"] == "multiple_choice"
        scene = row["scene"]
        if scene["kind"] == "lines":
            sizes = {
                line["colour"]: math.dist(line["start"], line["end"]) for line in scene["lines"]
            }
        else:
            sizes = {}
            for shape in scene["shapes"]:
                side = shape["box"][2] - shape["box"][0] + 1
                factor = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}[shape["shape"]]
                sizes[shape["colour"]] = factor * side * side
        assert sorted(row["choices"]) == sorted(sizes)
        assert gold_value(row) == max(sizes, key=sizes.get)


def test_arithmetic_answer_is_the_operation_on_the_drawn_numbers() -> None:
    rows = family_rows("arithmetic", n=90)
    operations = {row["scene"]["operation"] for row in rows}
    assert operations == {"sum", "difference", "product"}
    for row in rows:
        values = [number["value"] for number in row["scene"]["numbers"]]
        expected = {
            "sum": sum(values),
            "difference": max(values) - min(values),
            "product": math.prod(values),
        }[row["scene"]["operation"]]
        assert gold_value(row) == str(expected)
        boxes = [number["box"] for number in row["scene"]["numbers"]]
        for box in boxes:  # every number is drawn fully inside the image
            assert 0 <= box[0] < box[2] <= 112 and 0 <= box[1] < box[3] <= 112


def test_difficulty_levels_change_counts_ranges_and_closeness() -> None:
    def by_level(family: str) -> dict[int, list[dict[str, Any]]]:
        rows = generate_split(150, 2, families=[family], difficulty_mix=ALL_LEVELS)
        return {level: [r for r in rows if r["difficulty"] == level] for level in ALL_LEVELS}

    counting = by_level("counting")
    max_objects = {
        lv: max(len(r["scene"]["objects"]) for r in rows) for lv, rows in counting.items()
    }
    assert max_objects[1] <= 5 < max_objects[3] <= 13
    bars = by_level("bar_chart")
    assert {lv: {r["scene"]["max_value"] for r in rows} for lv, rows in bars.items()} == {
        1: {5},
        2: {10},
        3: {20},
    }
    assert {len(r["scene"]["bars"]) for r in bars[3]} <= {4, 5}
    comparison = by_level("comparison")
    for level, (low, high) in {1: (1.5, 2.0), 3: (1.05, 1.2)}.items():
        for row in comparison[level]:
            if row["scene"]["kind"] == "lines":
                lengths = sorted((line["length"] for line in row["scene"]["lines"]), reverse=True)
                assert low - 0.1 < lengths[0] / lengths[1] < high + 0.1


def test_multiple_choice_share_switches_integer_problems_between_formats() -> None:
    free = generate_split(40, 1, families=["counting", "arithmetic"], multiple_choice_share=0.0)
    choice = generate_split(40, 1, families=["counting", "arithmetic"], multiple_choice_share=1.0)
    assert {row["answer_type"] for row in free} == {"integer"}
    assert all("choices" not in row for row in free)
    assert {row["answer_type"] for row in choice} == {"multiple_choice"}
    for row in choice:
        assert len(row["choices"]) == 4 == len(set(row["choices"]))
        assert row["answer"] in "ABCD"
        assert all(int(option) >= 0 for option in row["choices"])


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


def test_bad_generator_arguments_name_the_argument() -> None:
    with pytest.raises(ValueError, match="families has unknown entry 'maze'"):
        generate_split(1, 0, families=["maze"])
    with pytest.raises(ValueError, match="difficulty_mix has unknown entry 4"):
        generate_split(1, 0, difficulty_mix={4: 1.0})
    with pytest.raises(ValueError, match="image_size must be between 56 and 1024"):
        generate_split(1, 0, image_size=20)
    with pytest.raises(ValueError, match="multiple_choice_share must be in"):
        generate_split(1, 0, multiple_choice_share=1.5)
    assert generate_split(1, 0, image_size=224)[0]["image"].size == (224, 224)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    out_dir = tmp_path_factory.mktemp("synth") / "demo"
    write_synthetic_dataset(out_dir, seed=3, n_train=2000, n_test=300)
    return out_dir, 0.0


def test_writing_2000_examples_writes_one_image_per_example(written: tuple[Path, float]) -> None:
    out_dir, _ = written
    assert len(list((out_dir / "images").glob("*.png"))) == 2300


def test_written_dataset_reads_back_through_load_examples(written: tuple[Path, float]) -> None:
    out_dir, _ = written
    meta = json.loads((out_dir / "synth_meta.json").read_text())
    train = load_examples(out_dir / "train.jsonl")
    test = load_examples(out_dir / "test.jsonl")

    assert (len(train), len(test)) == (2000, 300)
    assert meta["splits"]["train"]["n"] == 2000
    assert sum(meta["splits"]["test"]["family"].values()) == 300
    assert meta["seed"] == 3 and meta["generator_version"] == GENERATOR_VERSION == "2"
    counted = {}
    for example in train:
        counted[example.extra["family"]] = counted.get(example.extra["family"], 0) + 1
    assert counted == meta["splits"]["train"]["family"]
    first_row = json.loads((out_dir / "train.jsonl").read_text().splitlines()[0])
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
    assert all(isinstance(ex.extra["solution"], str) and ex.extra["solution"] for ex in train)
    (image,) = example.load_images()
    assert (image.mode, image.size) == ("RGB", (112, 112))


def test_train_and_test_splits_share_no_question_and_image(written: tuple[Path, float]) -> None:
    out_dir, _ = written

    def hashes(split: str) -> list[str]:
        digests = []
        for example in load_examples(out_dir / f"{split}.jsonl", check_images=False):
            digest = hashlib.sha256(example.question.encode())
            digest.update(example.load_images()[0].tobytes())
            digests.append(digest.hexdigest())
        return digests

    train, test = hashes("train"), hashes("test")
    assert len(set(test)) == 300
    assert set(train).isdisjoint(test)


def test_same_seed_writes_identical_files(tmp_path: Path) -> None:
    first = write_synthetic_dataset(tmp_path / "a", seed=9, n_train=30, n_test=10)
    second = write_synthetic_dataset(tmp_path / "b", seed=9, n_train=30, n_test=10)
    for name in ["train.jsonl", "test.jsonl", "synth_meta.json", "images/train-000029.png"]:
        assert (first.out_dir / name).read_bytes() == (second.out_dir / name).read_bytes()
    png_bytes = sorted(p.read_bytes() for p in (first.out_dir / "images").iterdir())
    assert png_bytes == sorted(p.read_bytes() for p in (second.out_dir / "images").iterdir())
    with pytest.raises(ValueError, match="already holds a dataset"):
        write_synthetic_dataset(tmp_path / "a", seed=9, n_train=30, n_test=10)


def test_synth_command_writes_the_dataset_and_prints_the_table(tmp_path: Path) -> None:
    out_dir = tmp_path / "cli"
    args = ["synth", "--out", str(out_dir), "--seed", "1", "--train", "40", "--test", "12"]
    args += ["--image-size", "96", "--families", "counting,bar_chart", "--difficulty", "1,2"]
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
    assert f"wrote {out_dir / 'train.jsonl'}" in result.output
    assert load_examples(out_dir / "test.jsonl")[0].load_images()[0].size == (96, 96)

    bad = CliRunner().invoke(
        data_app, ["synth", "--out", str(tmp_path / "x"), "--families", "maze"]
    )
    assert bad.exit_code == 2
    assert "unknown entry 'maze'" in bad.output


def test_parse_mix_reads_names_and_weights() -> None:
    assert parse_mix("counting:2,arithmetic", ("counting", "arithmetic"), "--families") == {
        "counting": 2.0,
        "arithmetic": 1.0,
    }
    assert parse_mix("3,1:0.5", (1, 2, 3), "--difficulty") == {3: 1.0, 1: 0.5}


def solution_body(row: dict[str, Any]) -> str:
    """The rationale without its closing option sentence, after checking that sentence.

    A multiple-choice solution must end by naming the gold letter; a free-form one has none.
    """
    solution = row["solution"]
    if row["answer_type"] == "multiple_choice":
        suffix = f" That is option {row['answer']}."
        assert solution.endswith(suffix)
        return solution[: -len(suffix)]
    assert "option" not in solution
    return solution


def test_counting_solution_states_the_recount_and_ends_with_it() -> None:
    rows = family_rows("counting")
    assert {row["answer_type"] for row in rows} == {"integer", "multiple_choice"}
    for row in rows:
        target = row["scene"]["target"]
        colour, shape = target["colour"], target["shape"]
        recount = sum(
            obj["colour"] == colour and obj["shape"] == shape for obj in row["scene"]["objects"]
        )
        seen = f"{recount} {colour} {shape}" + ("" if recount == 1 else "s")
        verb = "is" if recount == 1 else "are"
        assert solution_body(row) == (
            f"I look for {colour} {shape}s. I see {seen}. So there {verb} {recount}."
        )
        assert gold_value(row) == str(recount)


def test_bar_chart_solution_reads_the_asked_bar_between_its_gridlines() -> None:
    rows = family_rows("bar_chart")
    off_grid = 0
    for row in rows:
        scene = row["scene"]
        (value,) = [bar["value"] for bar in scene["bars"] if bar["colour"] == scene["asked"]]
        body = solution_body(row)
        assert body.startswith(f"I find the {scene['asked']} bar. ")
        assert body.endswith(f"So the value is {value}.") and gold_value(row) == str(value)
        between = re.search(r"It ends between (\d+) and (\d+), at (\d+)\.", body)
        if between is None:
            assert f"It reaches {value}." in body and value % scene["grid_step"] == 0
        else:
            off_grid += 1
            below, above, read = (int(group) for group in between.groups())
            assert below < read == value < above == below + scene["grid_step"]
            assert below % scene["grid_step"] == 0
    assert off_grid > 0


MEASURE = re.compile(r"(\w+) (line|circle|square|triangle) (?:is |covers )?(\d+(?:\.\d+)?) px")


def test_comparison_solution_measures_each_option_and_names_the_largest() -> None:
    rows = family_rows("comparison")
    first_named_is_not_gold = 0
    for row in rows:
        scene = row["scene"]
        if scene["kind"] == "lines":
            sizes = {
                line["colour"]: math.dist(line["start"], line["end"]) for line in scene["lines"]
            }
        else:
            sizes = {}
            for shape in scene["shapes"]:
                side = shape["box"][2] - shape["box"][0] + 1
                factor = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}[shape["shape"]]
                sizes[shape["colour"]] = factor * side * side
        body = solution_body(row)
        stated = MEASURE.findall(body)
        assert sorted(colour for colour, _, _ in stated) == sorted(row["choices"])
        for colour, noun, size in stated:
            assert abs(float(size) - sizes[colour]) <= 0.5
            if scene["kind"] == "areas":
                assert noun == next(s["shape"] for s in scene["shapes"] if s["colour"] == colour)
        gold = gold_value(row)
        verdict = {2: "line is longer", 3: "line is the longest"}[len(sizes)]
        ending = (
            f"The {gold} {verdict}." if scene["kind"] == "lines" else f"The {gold} one is larger."
        )
        assert body.endswith(" " + ending)
        first_named_is_not_gold += stated[0][0] != gold
        assert len(body.split()) < 40
    # Listed in reading order, so the order of mention does not give the answer away.
    assert first_named_is_not_gold > 10


def test_comparison_solution_keeps_decimals_when_rounding_would_tie() -> None:
    row = {
        "family": "comparison",
        "answer_type": "multiple_choice",
        "choices": ["red", "blue"],
        "answer": "A",
        "scene": {
            "kind": "lines",
            "lines": [
                {"colour": "blue", "start": [5, 10], "end": [45, 10], "length": 39.6},
                {"colour": "red", "start": [5, 40], "end": [45, 40], "length": 40.4},
            ],
        },
    }
    assert solution_for(row) == (
        "The blue line is 39.6 px long, the red line 40.4 px. The red line is longer. "
        "That is option A."
    )


def test_arithmetic_solution_lists_the_numbers_in_reading_order_and_works_the_sum() -> None:
    rows = family_rows("arithmetic")
    for row in rows:
        scene = row["scene"]
        values = [n["value"] for n in sorted(scene["numbers"], key=lambda n: n["cell"])]
        listed, working = solution_body(row).split(". ", 1)
        assert (
            listed == "The numbers are " + ", ".join(map(str, values[:-1])) + f" and {values[-1]}"
        )
        left, result = working.removesuffix(".").split(" = ")
        assert result == gold_value(row)
        symbol = {"sum": " + ", "difference": " - ", "product": " * "}[scene["operation"]]
        terms = [int(term) for term in left.split(symbol)]
        if scene["operation"] == "difference":
            assert terms == [max(values), min(values)]
        else:
            assert terms == values
        assert {" + ": sum, " - ": lambda t: t[0] - t[1], " * ": math.prod}[symbol](terms) == int(
            result
        )


def test_every_solution_is_short_and_holds_no_response_tags() -> None:
    rows = generate_split(200, 21, difficulty_mix=ALL_LEVELS, multiple_choice_share=0.5)
    lengths = [len(row["solution"].split()) for row in rows]
    assert max(lengths) < 40 and min(lengths) >= 8
    assert not any("<" in row["solution"] or "\n" in row["solution"] for row in rows)
    assert all(solution_for(row) == row["solution"] for row in rows)


def test_sft_target_lays_out_think_then_answer_exactly() -> None:
    row = {"id": "r1", "answer": 13, "solution": "The numbers are 4, 7 and 2. 4 + 7 + 2 = 13."}
    assert sft_target(row) == (
        "<think>\nThe numbers are 4, 7 and 2. 4 + 7 + 2 = 13.\n</think>\n<answer>13</answer>"
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


def test_solution_for_rejects_rows_it_cannot_explain() -> None:
    with pytest.raises(ValueError, match="row family must be one of"):
        solution_for({"family": "maze", "scene": {}})
    row = generate_split(1, 0, multiple_choice_share=1.0, families=["counting"])[0]
    with pytest.raises(ValueError, match="needs choices and an answer letter"):
        solution_for({**row, "answer": "E"})
