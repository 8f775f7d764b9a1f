"""The care_* benchmark tasks on fixtures in the public schemas: file resolution, column checks,
prompts (the training prompt with the images attached) and scores (the training verifier) against
hand-labelled responses, the task YAMLs, and the paper's reference numbers."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from fixtures.benchmarks import MARKER_FILE, write_fixtures
from PIL import Image

from care.data import load_examples
from care.prompts import PROMPT_VERSION, SYSTEM_PROMPT, build_messages
from evaluation import benchmarks, tasks

CONFIG_DIR = Path(__file__).resolve().parents[1] / "benchmarks_cfg"
THINK = "<think>counting carefully</think>\n"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("benchmarks")
    write_fixtures(root, rows_per_task=20, seed=0)
    return root


@pytest.fixture(scope="module")
def docs(data_root: Path) -> dict[str, list[dict[str, Any]]]:
    return {task: tasks.load_task_docs(task, data_root) for task in benchmarks.TASKS}


def by_key(rows: list[dict[str, Any]], key: str, value: str) -> dict[str, Any]:
    (row,) = [row for row in rows if row[key] == value]
    return row


def verdict(task: str, doc: dict[str, Any], response: str) -> tuple[float, float]:
    metrics = tasks.process_results(task, doc, [response])
    return metrics["acc"], metrics["fmt"]


def accuracies(task: str, doc: dict[str, Any], responses: list[str]) -> list[float]:
    return [tasks.process_results(task, doc, [r])["acc"] for r in responses]


def user_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(item["text"] for item in messages[1]["content"] if item["type"] == "text")


def image_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in messages[1]["content"] if item["type"] == "image"]


# ---------------------------------------------------------------- fixtures and files


def test_fixture_files_have_exactly_the_public_columns_and_hub_names(data_root: Path) -> None:
    expected_files = {
        "care_mathvista": ["AI4Math/MathVista/data/testmini-00000-of-00001.parquet"],
        "care_mathverse": ["AI4Math/MathVerse/testmini.parquet"],
        "care_mathvision": ["MathLLMs/MathVision/data/test-00000-of-00001.parquet"],
        "care_mmmu": [
            f"MMMU/MMMU/{s}/validation-00000-of-00001.parquet" for s in ("Art", "Math", "Physics")
        ],
        "care_mmmu_pro_std": ["MMMU/MMMU_Pro/standard (10 options)/test-00000-of-00001.parquet"],
        "care_mmmu_pro_vis": ["MMMU/MMMU_Pro/vision/test-00000-of-00001.parquet"],
    }
    for task, relative in expected_files.items():
        resolved = tasks.check_columns(task, data_root)
        assert resolved["format"] == "parquet"
        assert resolved["files"] == [str(data_root / name) for name in relative]
        for file_name in resolved["files"]:
            schema = pq.read_schema(file_name)
            assert schema.names == list(benchmarks.BENCHMARKS[task].columns), file_name
            features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
            assert list(features) == list(benchmarks.BENCHMARKS[task].columns)
    image_struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    mathvista = pq.read_schema(data_root / expected_files["care_mathvista"][0])
    assert mathvista.field("decoded_image").type == image_struct
    assert mathvista.field("choices").type == pa.list_(pa.string())
    assert mathvista.field("precision").type == pa.float64()
    mmmu = pq.read_schema(data_root / expected_files["care_mmmu"][0])
    assert mmmu.field("options").type == pa.string()
    assert mmmu.field("image_7").type == image_struct


def test_fixtures_hold_twenty_rows_per_task_and_every_layout(docs: dict[str, list[dict]]) -> None:
    for task in ("care_mathvista", "care_mathverse", "care_mathvision", "care_mmmu"):
        assert len(docs[task]) == 20, task
    assert len(docs["care_mmmu_pro_std"]) == len(docs["care_mmmu_pro_vis"]) == 20
    assert len(docs["care_synth"]) == 20
    for version_task, version in benchmarks.MATHVERSE_VERSIONS.items():
        assert [row["problem_version"] for row in docs[version_task]] == [version] * 4
    mathverse_types = {row["question_type"] for row in docs["care_mathverse"]}
    assert mathverse_types == {"multi-choice", "free-form"}
    mathvista_types = {(r["question_type"], r["answer_type"]) for r in docs["care_mathvista"]}
    assert mathvista_types == {
        ("multi_choice", "text"),
        ("free_form", "float"),
        ("free_form", "integer"),
        ("free_form", "text"),
        ("free_form", "list"),
    }
    filled = [sum(row[f"image_{k}"] is not None for k in range(1, 8)) for row in docs["care_mmmu"]]
    assert min(filled) == 1 and max(filled) == 3  # image_4…image_7 stay None
    assert {
        len(tasks.parse_options(row["options"], "options")) for row in docs["care_mmmu_pro_std"]
    } == {10}


def test_fixtures_are_deterministic_by_seed(tmp_path: Path) -> None:
    first = write_fixtures(tmp_path / "a", rows_per_task=10, seed=3)
    again = write_fixtures(tmp_path / "b", rows_per_task=10, seed=3)
    other = write_fixtures(tmp_path / "c", rows_per_task=10, seed=4)

    def contents(written: dict[str, list[str]], task: str) -> list[bytes]:
        return [Path(name).read_bytes() for name in written[task]]

    for task in first:
        assert contents(first, task) == contents(again, task), task
    assert contents(first, "care_mmmu_pro_vis") != contents(other, "care_mmmu_pro_vis")


def test_write_fixtures_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "AI4Math").mkdir()
    with pytest.raises(ValueError, match="did not write"):
        write_fixtures(tmp_path)
    with pytest.raises(ValueError, match="rows_per_task must be >= 10"):
        write_fixtures(tmp_path / "fresh", rows_per_task=5)
    write_fixtures(tmp_path / "fresh", rows_per_task=10)
    assert (tmp_path / "fresh" / MARKER_FILE).is_file()
    write_fixtures(tmp_path / "fresh", rows_per_task=10, seed=1)  # its own folder: overwritten


def test_wrong_columns_error_names_file_missing_and_expected_columns(
    data_root: Path, tmp_path: Path
) -> None:
    source = data_root / "AI4Math/MathVista/data/testmini-00000-of-00001.parquet"
    broken = tmp_path / "AI4Math/MathVista/data/testmini-00000-of-00001-abc.parquet"
    broken.parent.mkdir(parents=True)
    pq.write_table(pq.read_table(source).drop_columns(["decoded_image", "precision"]), broken)
    with pytest.raises(ValueError) as raised:
        tasks.check_columns("care_mathvista", tmp_path)
    message = str(raised.value)
    assert str(broken) in message
    assert "lacks column(s) ['decoded_image', 'precision']" in message
    assert "expected columns: ['pid', 'question', 'image', 'decoded_image'" in message


def test_missing_data_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        tasks.resolve_task_files("care_mmmu", tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"huggingface-cli download MMMU/MMMU_Pro"):
        tasks.resolve_task_files("care_mmmu_pro_vis", tmp_path)
    with pytest.raises(ValueError, match="unknown task 'care_mmlu'"):
        tasks.resolve_task_files("care_mmlu", tmp_path)
    monkeypatch.delenv(tasks.DATA_ROOT_ENV, raising=False)
    monkeypatch.delenv(tasks.SYNTH_DIR_ENV, raising=False)
    with pytest.raises(ValueError, match="CARE_DATA_ROOT is not set"):
        tasks.data_root_from_env("care_mathvista")
    monkeypatch.setenv(tasks.SYNTH_DIR_ENV, "/synth")
    assert tasks.data_root_from_env("care_synth") == "/synth"


def test_save_to_disk_arrow_files_are_read_when_no_parquet(data_root: Path, tmp_path: Path) -> None:
    table = pq.read_table(data_root / "MMMU/MMMU_Pro/vision/test-00000-of-00001.parquet")
    arrow_file = tmp_path / "MMMU/MMMU_Pro/vision/test/data-00000-of-00001.arrow"
    arrow_file.parent.mkdir(parents=True)
    with pa.OSFile(str(arrow_file), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    resolved = tasks.check_columns("care_mmmu_pro_vis", tmp_path)
    assert resolved["format"] == resolved["dataset_path"] == "arrow"
    assert resolved["dataset_kwargs"] == {"data_files": {"test": [str(arrow_file)]}}
    rows = tasks.load_task_docs("care_mmmu_pro_vis", tmp_path, limit=3)
    assert [row["answer"] for row in rows] == [doc["answer"] for doc in table.to_pylist()[:3]]


def test_expand_tasks_flattens_groups() -> None:
    assert tasks.expand_tasks(["care_six"])[:2] == [
        "care_mathvista",
        "care_mathverse_text_dominant",
    ]
    assert len(tasks.expand_tasks(["care_six", "care_mathvista", "care_synth"])) == 11


# ---------------------------------------------------------------- prompts


def test_every_row_gets_the_training_prompt_with_its_images(docs: dict[str, list[dict]]) -> None:
    for task, rows in docs.items():
        for doc in rows:
            problem = tasks.task_problem(task, doc)
            messages = tasks.doc_to_messages(task, doc)
            plain, images = tasks.split_images(messages)
            choices = None if problem.prompt_choices is None else list(problem.prompt_choices)
            assert plain == build_messages(problem.question, choices, len(images)), (task, doc)
            assert len(images) >= 1
            assert all(isinstance(image, Image.Image) and image.mode == "RGB" for image in images)
            assert all("url" in item for item in image_items(messages))
            assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
            no_media = {k: v for k, v in doc.items() if "image" not in k}
            if task != "care_synth":  # lmms-eval's context string needs no image column
                assert tasks.doc_to_text(task, no_media) == tasks.doc_to_text(task, doc)


def test_synthetic_rows_get_exactly_the_demo_evaluation_prompt(
    docs: dict[str, list[dict]], data_root: Path
) -> None:
    examples = load_examples(data_root / "care_synth" / "test.jsonl").examples
    for doc, example in zip(docs["care_synth"], examples, strict=True):
        plain, images = tasks.split_images(tasks.doc_to_messages("care_synth", doc))
        expected = build_messages(example.question, example.choices, len(example.images))
        assert plain == expected
        assert [image.tobytes() for image in images] == [
            image.tobytes() for image in example.load_images()
        ]
        assert tasks.doc_to_target("care_synth", doc) == example.answer


def test_mathvista_prompt_lists_letters_and_states_units_and_precision(
    docs: dict[str, list[dict]],
) -> None:
    rows = docs["care_mathvista"]
    choice_row = by_key(rows, "pid", "1")
    assert "Options:\nA. 2\nB. 3\nC. 4\nD. 5" in user_text(
        tasks.doc_to_messages("care_mathvista", choice_row)
    )
    assert tasks.doc_to_target("care_mathvista", choice_row) == "C"  # gold "4" is option C
    precise = tasks.doc_to_text("care_mathvista", by_key(rows, "pid", "2"))
    assert precise.endswith("Answer with a number rounded to 2 decimal places.")
    unit = tasks.doc_to_text("care_mathvista", by_key(rows, "pid", "4"))
    assert "How long is the green bar? (Unit: cm)" in unit
    assert unit.endswith("rounded to 1 decimal place.")


def test_mathverse_choices_move_to_the_options_block_and_vision_only_has_no_text(
    docs: dict[str, list[dict]],
) -> None:
    dominant = docs["care_mathverse_text_dominant"][0]
    text = user_text(tasks.doc_to_messages("care_mathverse_text_dominant", dominant))
    assert "Choices:" not in text
    assert "Options:\nA. 30°\nB. 45°\nC. 60°\nD. 90°" in text
    vision_only = docs["care_mathverse_vision_only"][0]
    assert vision_only["question"] == ""
    messages = tasks.doc_to_messages("care_mathverse_vision_only", vision_only)
    assert [item["type"] for item in messages[1]["content"]] == ["image", "text"]
    assert user_text(messages) == tasks.VISION_ONLY_INSTRUCTION


def test_mathvision_image_tokens_are_dropped_and_the_image_comes_first(
    docs: dict[str, list[dict]],
) -> None:
    row = by_key(docs["care_mathvision"], "id", "1")
    assert "<image1>" in row["question"]
    messages = tasks.doc_to_messages("care_mathvision", row)
    assert [item["type"] for item in messages[1]["content"]] == ["image", "text"]
    assert "<image" not in user_text(messages)
    assert "E. 5" in user_text(messages)


def test_mmmu_images_go_where_the_question_and_options_name_them(
    docs: dict[str, list[dict]],
) -> None:
    rows = docs["care_mmmu"]
    two_images = by_key(rows, "id", "validation_Physics_1")
    assert two_images["image_3"] is None
    layout = [
        (item["type"], item.get("text"))
        for item in tasks.doc_to_messages("care_mmmu", two_images)[1]["content"]
    ]
    assert layout == [
        ("text", "How many squares are in"),
        ("image", None),
        ("text", "and"),
        ("image", None),
        ("text", "together?"),
    ]
    image_options = tasks.doc_to_messages("care_mmmu", by_key(rows, "id", "validation_Art_1"))
    kinds = [item["type"] for item in image_options[1]["content"]]
    assert kinds == ["text", "image", "text", "image", "text", "image", "text"]
    assert image_options[1]["content"][2]["text"] == "B."
    untokened = tasks.doc_to_messages("care_mmmu", by_key(rows, "id", "validation_Physics_2"))
    assert [item["type"] for item in untokened[1]["content"]] == ["image", "text"]


def test_mmmu_pro_prompts(docs: dict[str, list[dict]]) -> None:
    standard = tasks.doc_to_text(
        "care_mmmu_pro_std", by_key(docs["care_mmmu_pro_std"], "id", "test_Math_1")
    )
    assert "J. 9" in standard
    vision = tasks.doc_to_messages(
        "care_mmmu_pro_vis", by_key(docs["care_mmmu_pro_vis"], "id", "test_Math_1")
    )
    assert [item["type"] for item in vision[1]["content"]] == ["image", "text"]
    assert user_text(vision) == tasks.VISION_CHOICE_INSTRUCTION


# ---------------------------------------------------------------- scores of hand-labelled responses


def test_mathvista_choice_and_free_form_with_precision(docs: dict[str, list[dict]]) -> None:
    rows = docs["care_mathvista"]
    choice = by_key(rows, "pid", "1")  # options 2, 3, 4, 5; gold "4" = C
    assert verdict("care_mathvista", choice, THINK + "<answer>C</answer>") == (1.0, 1.0)
    assert verdict("care_mathvista", choice, "<answer>4</answer>") == (1.0, 0.0)
    assert verdict("care_mathvista", choice, THINK + "<answer>B</answer>") == (0.0, 1.0)
    ratio = by_key(rows, "pid", "2")  # gold 1.45, precision 2
    assert accuracies(
        "care_mathvista",
        ratio,
        ["<answer>1.45</answer>", "<answer>1.450</answer>", "Answer: 1.45", "<answer>1.5</answer>"]
        + ["<answer>1.46</answer>", "<answer>1.454</answer>"],
    ) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    length = by_key(rows, "pid", "4")  # gold 2.5 cm, precision 1
    assert accuracies(
        "care_mathvista",
        length,
        ["<answer>2.5 cm</answer>", "<answer>2.50</answer>", "<answer>25</answer>"],
    ) == [1.0, 1.0, 0.0]
    assert accuracies(
        "care_mathvista", by_key(rows, "pid", "3"), ["<answer>6</answer>", "<answer>7</answer>"]
    ) == [1.0, 0.0]
    assert accuracies(
        "care_mathvista",
        by_key(rows, "pid", "5"),
        ["<answer>Green.</answer>", "<answer>red</answer>"],
    ) == [1.0, 0.0]
    assert accuracies(
        "care_mathvista",
        by_key(rows, "pid", "6"),
        ["<answer>[3, 8]</answer>", "<answer>[3, 9]</answer>"],
    ) == [1.0, 0.0]


def test_mathverse_versions_including_vision_only(docs: dict[str, list[dict]]) -> None:
    for task in benchmarks.MATHVERSE_VERSIONS:
        choice, free = docs[task][0], docs[task][1]  # gold C (= 60°), gold 12
        assert accuracies(
            task,
            choice,
            [
                "<answer>C</answer>",
                "<answer>(C) 60°</answer>",
                "<answer>60°</answer>",
                "<answer>B</answer>",
            ],
        ) == [1.0, 1.0, 1.0, 0.0], task
        assert accuracies(
            task, free, ["<answer>12</answer>", "<answer>12.0</answer>", "<answer>13</answer>"]
        ) == [1.0, 1.0, 0.0], task


def test_mathvision_letters_and_values(docs: dict[str, list[dict]]) -> None:
    rows = docs["care_mathvision"]
    choice = by_key(rows, "id", "1")  # options 1..5, gold C (three dots)
    assert accuracies(
        "care_mathvision",
        choice,
        ["<answer>C</answer>", "<answer>3</answer>", "<answer>D</answer>"],
    ) == [1.0, 1.0, 0.0]
    free = by_key(rows, "id", "2")  # gold 7
    assert accuracies(
        "care_mathvision", free, ["\\boxed{7}", "<answer>7</answer>", "<answer>E</answer>"]
    ) == [1.0, 1.0, 0.0]


def test_mmmu_letters_option_text_and_list_answers(docs: dict[str, list[dict]]) -> None:
    rows = docs["care_mmmu"]
    choice = by_key(rows, "id", "validation_Math_1")  # options 2, 3, 4, 5; gold B
    assert accuracies(
        "care_mmmu", choice, ["<answer>B</answer>", "<answer>3</answer>", "<answer>A</answer>"]
    ) == [1.0, 1.0, 0.0]
    assert (
        tasks.process_results("care_mmmu", choice, ["no answer at all"])["acc"] == 0.0
    )  # never guessed
    assert accuracies(
        "care_mmmu",
        by_key(rows, "id", "validation_Physics_1"),
        ["<answer>12</answer>", "<answer>11</answer>"],
    ) == [1.0, 0.0]
    listed = by_key(rows, "id", "validation_Math_2")  # gold ['3/7', '0.429']
    assert accuracies(
        "care_mmmu",
        listed,
        [
            "<answer>3/7</answer>",
            "<answer>0.429</answer>",
            "<answer>\\frac{3}{7}</answer>",
            "<answer>0.5</answer>",
        ],
    ) == [1.0, 1.0, 1.0, 0.0]
    colour = by_key(rows, "id", "validation_Physics_2")  # options orange, blue, green, purple
    assert accuracies(
        "care_mmmu",
        colour,
        ["<answer>Orange</answer>", "<answer>A</answer>", "<answer>blue</answer>"],
    ) == [1.0, 1.0, 0.0]


def test_mmmu_pro_standard_ten_options(docs: dict[str, list[dict]]) -> None:
    row = by_key(docs["care_mmmu_pro_std"], "id", "test_Math_1")  # options 0..9, gold F (= 5)
    assert accuracies(
        "care_mmmu_pro_std",
        row,
        ["<answer>F</answer>", "<answer>5</answer>", "<answer>E</answer>", "<answer>J</answer>"],
    ) == [1.0, 1.0, 0.0, 0.0]


def test_mmmu_pro_vision_answer_cue_parentheses_and_option_text(
    docs: dict[str, list[dict]],
) -> None:
    row = by_key(docs["care_mmmu_pro_vis"], "id", "test_Math_1")  # options 0..9, gold B (= 1)
    assert verdict("care_mmmu_pro_vis", row, THINK + "<answer>Answer: B</answer>") == (1.0, 1.0)
    assert verdict("care_mmmu_pro_vis", row, "Answer: B") == (1.0, 0.0)
    assert accuracies(
        "care_mmmu_pro_vis",
        row,
        [
            "<answer>(B)</answer>",
            "The answer is (B).",
            "<answer>1</answer>",
            "<answer>B. 1</answer>",
            "<answer>A or B</answer>",
            "<answer>2</answer>",
            "<answer>(C)</answer>",
        ],
    ) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_synthetic_rows_score_with_their_gold(docs: dict[str, list[dict]]) -> None:
    for doc in docs["care_synth"]:
        gold = doc["answer"]
        assert verdict("care_synth", doc, f"{THINK}<answer>{gold}</answer>") == (1.0, 1.0)
        assert verdict("care_synth", doc, f"{THINK}<answer>wrong</answer>")[0] == 0.0


def test_process_results_reports_the_extracted_answer_and_rejects_bad_input(
    docs: dict[str, list[dict]],
) -> None:
    row = docs["care_mmmu_pro_vis"][0]
    assert tasks.process_results("care_mmmu_pro_vis", row, [THINK + "<answer> B </answer>"]) == {
        "acc": 1.0,
        "fmt": 1.0,
        "extracted": "B",
        "verify_status": "ok",
    }
    nothing = tasks.process_results("care_mmmu_pro_vis", row, ["nothing"])
    assert (nothing["extracted"], nothing["verify_status"]) == (None, "no_answer")
    assert tasks.found_rate(["B", None, "7", "x"]) == 0.75
    assert tasks.judged_rate(["ok", "timeout", "ok", "no_answer"]) == 0.5
    with pytest.raises(ValueError, match="non-empty list of responses"):
        tasks.process_results("care_mmmu_pro_vis", row, [])
    with pytest.raises(ValueError, match="non-empty list of responses"):
        tasks.process_results("care_mmmu_pro_vis", row, "B")


# ---------------------------------------------------------------- the registry


def test_registry_holds_one_consistent_record_per_task() -> None:
    records = benchmarks.BENCHMARKS
    assert list(records) == list(benchmarks.TASKS)
    assert all(records[task].task == task for task in records)
    assert {record.rule for record in records.values()} == set(tasks.ROW_RULES)
    assert benchmarks.GROUPS["care_six"] == benchmarks.PAPER_BENCHMARKS
    assert benchmarks.GROUPS["care_mathverse"] == tuple(benchmarks.MATHVERSE_VERSIONS)
    assert benchmarks.MATHVERSE_VERSIONS["care_mathverse_vision_only"] == "Vision Only"
    versions = [records[task] for task in benchmarks.MATHVERSE_VERSIONS]
    assert {(r.repo, r.columns, r.rule) for r in versions} == {
        (records["care_mathverse"].repo, records["care_mathverse"].columns, "mathverse")
    }
    # The paper's sizes: 788 problems x 5 versions = 3,940 MathVerse rows.
    assert sum(r.rows for r in versions) == records["care_mathverse"].rows == 3940
    assert [records[t].name for t in benchmarks.PAPER_BENCHMARKS] == [
        "MathVista",
        "MathVerse",
        "MATH-Vision",
        "MMMU",
        "MMMU-Pro standard",
        "MMMU-Pro vision",
    ]
    assert records["care_mmmu_pro_vis"].config == "vision"
    assert records["care_mmmu_pro_std"].answer_types == ("multiple_choice",)
    assert all(r.scoring and r.answer_types for r in records.values())
    with pytest.raises(ValueError, match="unknown task 'care_mmlu'; known tasks"):
        benchmarks.get_benchmark("care_mmlu")


def test_macro_average_takes_the_papers_six_when_present_else_every_task() -> None:
    partial = benchmarks.macro_average(
        {"care_mathvista": 0.75, "care_synth": 0.125, "care_mmmu": 0.5}
    )
    assert partial.value == 0.625 and partial.tasks == ("care_mathvista", "care_mmmu")
    assert not partial.complete
    six = dict.fromkeys(benchmarks.PAPER_BENCHMARKS, 0.5) | {"care_mathvista": 0.8}
    full = benchmarks.macro_average({**six, "care_synth": 0.0})
    assert full.value == pytest.approx(0.55) and full.complete  # (0.8 + 5 x 0.5) / 6
    assert benchmarks.macro_average({"care_synth": 0.25}).tasks == ("care_synth",)
    # A MathVerse version on its own is not the benchmark: no paper task, so all tasks count.
    versions = benchmarks.macro_average({"care_mathverse_text_lite": 0.5, "care_synth": 1.0})
    assert versions.value == 0.75
    assert benchmarks.macro_average({"care_mmmu": float("nan")}) is None
    assert benchmarks.macro_average({"care_mmmu": float("nan"), "care_synth": 0.5}).value == 0.5


# ---------------------------------------------------------------- task YAMLs


def _load_utils_like_lmms_eval() -> Any:
    """benchmarks_cfg/utils.py executed by path as a fresh module, as lmms-eval's !function does."""
    spec = importlib.util.spec_from_file_location("utils", CONFIG_DIR / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _FunctionTag:
    def __init__(self, name: str) -> None:
        self.name = name


def _read_yaml(path: Path) -> dict[str, Any]:
    loader = type("TagLoader", (yaml.SafeLoader,), {})
    loader.add_constructor(
        "!function", lambda load, node: _FunctionTag(load.construct_scalar(node))
    )
    with path.open(encoding="utf-8") as handle:
        config = yaml.load(handle, Loader=loader)  # noqa: S506 - SafeLoader subclass
    if "include" in config:
        base = _read_yaml(path.parent / config.pop("include"))
        config = {**base, **config}
    return config


def test_every_task_yaml_resolves_against_the_data_root(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tasks.DATA_ROOT_ENV, str(data_root))
    monkeypatch.delenv(tasks.SYNTH_DIR_ENV, raising=False)
    utils = _load_utils_like_lmms_eval()
    configs = {path.stem: _read_yaml(path) for path in sorted(CONFIG_DIR.glob("*.yaml"))}
    configs.pop("paper_reference")
    task_configs = {name: c for name, c in configs.items() if "group" not in c}
    assert set(task_configs) == set(benchmarks.TASKS) - {"care_mathverse"}
    for name, config in task_configs.items():
        assert config["task"] == name
        assert config["reasoning_tags"] == "none"
        assert config["output_type"] == "generate_until"
        assert "<|im_end|>" in config["generation_kwargs"]["until"]
        assert config["generation_kwargs"]["max_new_tokens"] >= 128
        assert config["metadata"]["prompt_version"] == PROMPT_VERSION
        assert [m["metric"] for m in config["metric_list"]] == [
            "acc",
            "fmt",
            "extracted",
            "verify_status",
        ]
        for key, value in config.items():
            if isinstance(value, _FunctionTag):
                assert getattr(utils, value.name.removeprefix("utils.")) is not None, (name, key)
        resolved = tasks.check_columns(name, data_root)
        assert (
            getattr(utils, config["dataset_path"].name.removeprefix("utils.")) == resolved["format"]
        )
        kwargs = getattr(utils, config["dataset_kwargs"].name.removeprefix("utils."))
        assert kwargs == {"data_files": {config["test_split"]: resolved["files"]}}
        assert config["test_split"] == benchmarks.BENCHMARKS[name].split
    groups = {name: c for name, c in configs.items() if "group" in c}
    assert {name: tuple(c["task"]) for name, c in groups.items()} == benchmarks.GROUPS
    weighted = {name: c["aggregate_metric_list"][0]["weight_by_size"] for name, c in groups.items()}
    assert weighted == {"care_mathverse": True, "care_six": False}


def test_yaml_functions_filter_versions_and_fix_synthetic_paths(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tasks.DATA_ROOT_ENV, str(data_root))
    utils = _load_utils_like_lmms_eval()

    class Rows:
        """The two `datasets.Dataset` methods the process_docs functions call."""

        def __init__(self, rows: list[dict[str, Any]]) -> None:
            self.rows = rows

        def filter(self, keep: Any, input_columns: str) -> Rows:
            return Rows([row for row in self.rows if keep(row[input_columns])])

        def map(self, change: Any, input_columns: str) -> Rows:
            return Rows([{**row, **change(row[input_columns])} for row in self.rows])

    mathverse = tasks.load_task_docs("care_mathverse", data_root)
    kept = utils.care_mathverse_vision_only_process_docs(Rows(mathverse)).rows
    assert [row["sample_index"] for row in kept] == ["5", "10", "15", "20"]
    raw = [
        json.loads(line) for line in (data_root / "care_synth/test.jsonl").read_text().splitlines()
    ]
    fixed = utils.care_synth_process_docs(Rows(raw)).rows
    assert fixed[0]["images"] == [str(data_root / "care_synth" / raw[0]["images"][0])]
    doc = by_key(tasks.load_task_docs("care_mmmu_pro_vis", data_root), "id", "test_Math_1")
    assert utils.care_mmmu_pro_vis_process_results(doc, ["<answer>B</answer>"])["acc"] == 1.0
    assert utils.care_mmmu_pro_vis_doc_to_target(doc) == "B"
    assert utils.found_rate([None, "A"]) == 0.5
    monkeypatch.setenv(tasks.DATA_ROOT_ENV, str(data_root / "missing"))
    with pytest.raises(ValueError, match="does not exist"):
        utils.care_mmmu_dataset_kwargs  # noqa: B018 - the lookup itself must fail


def test_task_yamls_load_in_lmms_eval(
    data_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lmms_tasks = pytest.importorskip("lmms_eval.tasks")
    for name, value in {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets"),
        tasks.DATA_ROOT_ENV: str(data_root),
    }.items():
        monkeypatch.setenv(name, value)
    manager = lmms_tasks.TaskManager(include_path=str(CONFIG_DIR), include_defaults=False)
    assert set(manager.all_tasks) == (set(benchmarks.TASKS) - {"care_mathverse"}) | set(
        benchmarks.GROUPS
    )
    task_dict = lmms_tasks.get_task_dict(["care_six", "care_synth"], manager, "chat")
    leaves = {}
    for value in task_dict.values():
        if isinstance(value, dict):
            for inner in value.values():
                leaves.update(inner if isinstance(inner, dict) else {inner.config.task: inner})
        else:
            leaves[value.config.task] = value
    assert set(leaves) == set(tasks.expand_tasks(["care_six", "care_synth"]))
    for name, task in leaves.items():
        assert type(task).__name__ == "ConfigurableMessagesTask"
        docs = task.test_docs()
        assert len(docs) == (4 if name in benchmarks.MATHVERSE_VERSIONS else 20), name
        messages = task.doc_to_messages(docs[0])
        plain, images = tasks.split_images(messages)
        assert plain == tasks.split_images(tasks.doc_to_messages(name, docs[0]))[0]
        assert images and all(isinstance(image, Image.Image) for image in images)
        gold = tasks.doc_to_target(name, docs[0])
        response = f"{THINK}<answer>{gold}</answer>"
        assert task.process_results(docs[0], [response])["acc"] == 1.0, name


# ---------------------------------------------------------------- paper reference


def test_paper_reference_macro_is_the_mean_of_the_six() -> None:
    reference = yaml.safe_load((CONFIG_DIR / "paper_reference.yaml").read_text(encoding="utf-8"))
    order = reference["benchmark_order"]
    assert order == ["mathvista", "mathverse", "mathvision", "mmmu", "mmmu_pro_std", "mmmu_pro_vis"]
    assert [reference["benchmarks"][key] for key in order] == list(benchmarks.PAPER_BENCHMARKS)
    checked = 0
    for row in reference["main_table"]:
        scores = [row["scores"][key] for key in order]
        if row["macro"] is None:
            assert None in scores
            continue
        assert abs(statistics.mean(scores) - row["macro"]) <= 0.005 + 1e-9, row["model"]
        by_task = {
            reference["benchmarks"][key]: score / 100
            for key, score in zip(order, scores, strict=True)
        }
        macro = benchmarks.macro_average(by_task)
        assert macro.complete and abs(100 * macro.value - row["macro"]) <= 0.005 + 1e-9
        checked += 1
    assert checked == 6
    care = next(r for r in reference["main_table"] if r["model"] == "Qwen2.5-VL-7B-Instruct + CARE")
    assert care["scores"]["mathvista"] == 74.7 and care["macro"] == 50.57
    assert reference["rgr_repair_success"] == {
        "repair_cue": 76.6,
        "plain_resample": 19.3,
        "random": 12.8,
    }
    ablation = {(a["base"], a["variant"]): a["macro"] for a in reference["ablations"]["rgr"]}
    assert ablation[("Qwen2.5-VL-7B-Instruct", "care_without_rgr")] == 49.85
    assert ablation[("Qwen2.5-VL-3B-Instruct", "grpo")] == 38.83
    setup = reference["training_setup"]
    assert (setup["group_size"], setup["hard_negatives"], setup["s"], setup["seeds"]) == (
        8,
        4,
        0.5,
        5,
    )
