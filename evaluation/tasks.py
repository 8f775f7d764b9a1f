"""The care_* benchmark tasks: where each benchmark's local copy lives, whether its columns
are right, and how one row becomes the project's prompt and the project's verdict.

What each benchmark IS (hub repository, files, columns, split, answer types, scoring notes)
is its record in `evaluation.benchmarks.BENCHMARKS`; this module holds what is DONE with it.
Every task reads a LOCAL copy of a public benchmark in its public schema, under a data root laid
out as the hub repositories are (``<data-root>/<owner>/<name>/…``, exactly what
``huggingface-cli download <owner>/<name> --repo-type dataset --local-dir
<data-root>/<owner>/<name>`` gives), either as the hub's parquet files or as a ``datasets``
``save_to_disk`` folder. `resolve_task_files` finds the files, `check_columns` checks them
against the record's ``columns`` before anything is loaded.

A row becomes ``care.prompts.build_messages(question, choices, num_images)`` — the training
prompt — with each ``{"type": "image"}`` item carrying the PIL image under ``"url"`` (see
`doc_to_messages`), and a response is scored by ``care.verify.score`` — the trainer's reward
check — in `process_results`. What differs per benchmark is only how a row gives the question,
the options, the images and the gold answer: the record's ``rule`` names its function in
`ROW_RULES`. benchmarks_cfg/README.md lists those rules and where they differ from the official
scorers.

>>> task_problem("care_mmmu_pro_vis", {"id": "1", "answer": "B", "options": "['3', '5']"}).score_choices
('3', '5')
"""

from __future__ import annotations

import ast
import copy
import io
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from care.prompts import CHOICE_LETTERS, build_messages, format_question
from care.verify import Verdict, gold_letters, score
from evaluation.benchmarks import (
    BENCHMARKS,
    GROUPS,
    MMMU_IMAGE_COLUMNS,
    SYNTH_FOLDER,
    get_benchmark,
)

DATA_ROOT_ENV = "CARE_DATA_ROOT"
VERIFY_TIME_LIMIT_ENV = "CARE_VERIFY_TIME_LIMIT"
"""Seconds math-verify may spend on one answer when scoring (``care eval --verify-time-limit``);
unset: the verifier's default."""
"""Environment variable the task YAMLs read the data root from (see benchmarks_cfg/README.md)."""
SYNTH_DIR_ENV = "CARE_SYNTH_DIR"
"""Optional: the folder `write_synthetic_dataset` wrote, for care_synth only."""


VISION_ONLY_INSTRUCTION = "Answer the question shown in the image."
VISION_CHOICE_INSTRUCTION = (
    "The image shows a question and its options. Answer with the option's letter."
)

_IMAGE_TOKEN = re.compile(r"<image (\d+)>")
_MATHVISION_IMAGE_TOKEN = re.compile(r"<image\d*>")
_CHOICES_HEADER = re.compile(r"^[ \t]*Choices?[ \t]*:[ \t]*$", re.I | re.M)
_OPTION_LINE = re.compile(r"[ \t]*\(?([A-Z])\)?[ \t]*[:.．、)][ \t]*(.*\S)[ \t]*")
_SINGLE_LETTER = re.compile(r"[A-Z]")


# ---------------------------------------------------------------- files and columns


def data_root_from_env(task: str) -> str:
    """The data root for `task` from the environment: $CARE_SYNTH_DIR (care_synth only, when
    set), else $CARE_DATA_ROOT; ValueError naming the variable when it is unset.

    Example: with ``CARE_DATA_ROOT=/data``, ``data_root_from_env("care_mmmu")`` → ``"/data"``.
    """
    get_benchmark(task)
    if task == "care_synth" and os.environ.get(SYNTH_DIR_ENV):
        return os.environ[SYNTH_DIR_ENV]
    root = os.environ.get(DATA_ROOT_ENV)
    if not root:
        raise ValueError(
            f"{task}: environment variable {DATA_ROOT_ENV} is not set; point it at the folder "
            "holding the benchmarks as <data-root>/<owner>/<name>/… (e.g. "
            f"{DATA_ROOT_ENV}=/data so MathVista is /data/AI4Math/MathVista), or run "
            "`care eval --data-root DIR`"
        )
    return root


def resolve_task_files(task: str, data_root: str | Path) -> dict[str, Any]:
    """The local files of `task` under `data_root`, and the lmms-eval loading arguments for them.

    Returns a dict with ``task``, ``split``, ``format`` ("parquet", "arrow" or "json"),
    ``folder`` (the repository folder), ``files`` (sorted absolute paths), ``dataset_path`` and
    ``dataset_kwargs`` (what the task YAML passes to ``datasets.load_dataset``:
    ``{"data_files": {split: files}}``) and ``problem_version`` (MathVerse subtasks).
    Parquet files of the hub layout win over a ``save_to_disk`` folder. ValueError when the
    root or the files are missing, naming the paths searched.

    Example: with ``/data/AI4Math/MathVista/data/testmini-00000-of-00001.parquet`` on disk,
    ``resolve_task_files("care_mathvista", "/data")["dataset_kwargs"]`` →
    ``{"data_files": {"testmini": ["/data/AI4Math/MathVista/data/testmini-00000-of-00001.parquet"]}}``.
    """
    source = get_benchmark(task)
    if isinstance(data_root, str) and not data_root.strip():
        raise ValueError(f"{task}: data_root is empty; give the folder holding the benchmarks")
    root = Path(data_root).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"{task}: data root {root} does not exist or is not a folder")
    if task == "care_synth":
        return _resolve_synth(root)
    folder = root / source.repo
    for file_format, patterns in (
        ("parquet", source.parquet_patterns),
        ("arrow", source.arrow_patterns),
    ):
        files = sorted({path.resolve() for pattern in patterns for path in folder.glob(pattern)})
        files = [path for path in files if path.is_file()]
        if files:
            names = [str(path) for path in files]
            return {
                "task": task,
                "split": source.split,
                "format": file_format,
                "folder": str(folder),
                "files": names,
                "dataset_path": file_format,
                "dataset_kwargs": {"data_files": {source.split: names}},
                "problem_version": source.problem_version,
            }
    searched = ", ".join(
        str(folder / p) for p in (*source.parquet_patterns, *source.arrow_patterns)
    )
    raise ValueError(
        f"{task}: no {source.repo} files (split {source.split!r}) under {root}; searched "
        f"{searched}. Download the public copy with `huggingface-cli download {source.repo} "
        f"--repo-type dataset --local-dir {folder}` (or save_to_disk the split there)"
    )


def check_columns(task: str, data_root: str | Path) -> dict[str, Any]:
    """`resolve_task_files`, after checking every file has the record's ``columns``.

    Only file schemas are read (parquet footers, arrow stream headers; for care_synth each
    JSONL row). ValueError naming the file, the missing columns and the expected ones.

    Example: a MathVista parquet without ``decoded_image`` →
    ``ValueError("care_mathvista: …/testmini-….parquet lacks column(s) ['decoded_image']; expected
    columns: ['pid', 'question', …]")``.
    """
    resolved = resolve_task_files(task, data_root)
    expected = list(BENCHMARKS[task].columns)
    for file_name in resolved["files"]:
        if resolved["format"] == "json":
            _check_jsonl_rows(task, Path(file_name), expected)
            continue
        present = set(_file_columns(Path(file_name), resolved["format"]))
        missing = [column for column in expected if column not in present]
        if missing:
            raise ValueError(
                f"{task}: {file_name} lacks column(s) {missing}; expected columns: {expected} "
                f"(the public schema of {BENCHMARKS[task].repo}); found: {sorted(present)}"
            )
    return resolved


def expand_tasks(names: Sequence[str]) -> list[str]:
    """Leaf tasks of task/group names, in order, without repeats.

    Example: ``expand_tasks(["care_mathverse", "care_synth"])`` → the five MathVerse versions,
    then ``"care_synth"``.
    """
    if isinstance(names, str):
        raise ValueError(f"names must be a list of task or group names, got the string {names!r}")
    leaves: list[str] = []
    for name in names:
        if name in GROUPS:
            members = expand_tasks(list(GROUPS[name]))
        else:
            get_benchmark(name)
            members = [name]
        leaves.extend(member for member in members if member not in leaves)
    return leaves


def load_task_docs(task: str, data_root: str | Path, limit: int | None = None) -> list[dict]:
    """The rows of `task` as the task functions see them, read with pyarrow (no `datasets`).

    Image cells stay as the files store them (``{"bytes": …, "path": …}``); the task functions
    accept those as well as the PIL images lmms-eval decodes. MathVerse subtasks keep their
    version's rows; care_synth image paths become absolute (`synth_process_rows`).

    Example: ``load_task_docs("care_mmmu_pro_vis", "/data", limit=2)`` → two dicts with keys
    id, image, options, answer, subject.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or an int >= 0, got {limit!r}")
    resolved = check_columns(task, data_root)
    rows: list[dict] = []
    for file_name in resolved["files"]:
        rows.extend(_read_rows(Path(file_name), resolved["format"]))
    if task == "care_synth":
        rows = synth_process_rows(rows, Path(resolved["folder"]))
    version = resolved["problem_version"]
    if version is not None:
        rows = [row for row in rows if row["problem_version"] == version]
    return rows if limit is None else rows[:limit]


def synth_process_rows(rows: Sequence[Mapping[str, Any]], folder: Path) -> list[dict]:
    """care_synth rows with `images` made absolute against the dataset `folder`.

    Example: ``synth_process_rows([{"images": ["images/test-000000.png"], …}], Path("/d"))`` →
    ``[{"images": ["/d/images/test-000000.png"], …}]``.
    """
    processed = []
    for row in rows:
        images = row.get("images")
        if not isinstance(images, list | tuple):
            raise ValueError(f"care_synth row {row.get('id')!r}: images must be a list of paths")
        processed.append({**row, "images": [str(folder / image) for image in images]})
    return processed


def _resolve_synth(root: Path) -> dict[str, Any]:
    candidates = [root / "test.jsonl", root / SYNTH_FOLDER / "test.jsonl"]
    for path in candidates:
        if path.is_file():
            return {
                "task": "care_synth",
                "split": "test",
                "format": "json",
                "folder": str(path.parent),
                "files": [str(path)],
                "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": [str(path)]}},
                "problem_version": None,
            }
    raise ValueError(
        f"care_synth: no synthetic test split under {root}; searched "
        f"{', '.join(str(p) for p in candidates)} (write one with "
        "care.data.synth.write_synthetic_dataset, or set CARE_SYNTH_DIR to its folder)"
    )


def _file_columns(path: Path, file_format: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if file_format == "parquet":
            return list(pq.read_schema(path).names)
        with pa.memory_map(str(path), "r") as source:
            try:
                return list(pa.ipc.open_stream(source).schema.names)
            except pa.ArrowInvalid:
                source.seek(0)
                return list(pa.ipc.open_file(source).schema.names)
    except (OSError, pa.ArrowInvalid) as error:
        raise ValueError(f"cannot read the schema of {path}: {error}") from error


def _check_jsonl_rows(task: str, path: Path, expected: list[str]) -> None:
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{task}: {path}:line {line_number} is not JSON: {error}"
                ) from None
            missing = [column for column in expected if column not in row]
            if missing:
                raise ValueError(
                    f"{task}: {path}:line {line_number} lacks column(s) {missing}; expected "
                    f"columns: {expected} (rows as care.data.synth.write_synthetic_dataset "
                    "writes them)"
                )


def _read_rows(path: Path, file_format: str) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if file_format == "json":
        with path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    if file_format == "parquet":
        return pq.read_table(path).to_pylist()
    with pa.memory_map(str(path), "r") as source:
        try:
            table = pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            table = pa.ipc.open_file(source).read_all()
    return table.to_pylist()


# ---------------------------------------------------------------- rows → problems


@dataclass(frozen=True)
class TaskProblem:
    """One benchmark row in the project's terms.

    question: prompt text; ``<image>`` placeholders (if any) mark where images go.
    prompt_choices: options listed in the prompt (None: free form, or options only in the image).
    image_sources: where each prompt image comes from, in prompt order: column names, or file
        paths for care_synth. None: every non-empty ``image_1…image_7`` cell, in column order
        (MMMU rows whose text references no image).
    answer: gold answer given to ``score`` (a letter for multiple choice).
    answer_type: ``score``'s answer type, or None to let it infer.
    score_choices: option texts ``score`` reads letters and option text against.
    alternatives: further accepted gold answers (MMMU open questions with a list of answers).
    """

    question: str
    prompt_choices: tuple[str, ...] | None
    image_sources: tuple[str, ...] | None
    answer: str
    answer_type: str | None
    score_choices: tuple[str, ...] | None
    alternatives: tuple[str, ...] = ()


def task_problem(task: str, doc: Mapping[str, Any]) -> TaskProblem:
    """The `TaskProblem` of one row of `task` (images are not touched, so rows without their
    image columns — lmms-eval's no-media copies — work too).

    Example: a MathVista row with ``choices=["3", "5"]`` and ``answer="5"`` →
    ``TaskProblem(question=…, prompt_choices=("3", "5"), image_sources=("decoded_image",),
    answer="B", answer_type="multiple_choice", score_choices=("3", "5"))``.
    """
    rule = ROW_RULES[get_benchmark(task).rule]
    if not isinstance(doc, Mapping):
        raise ValueError(
            f"{task}: doc must be a mapping (one dataset row), got {type(doc).__name__}"
        )
    return rule(task, doc)


def doc_to_text(task: str, doc: Mapping[str, Any]) -> str:
    """The user text of the prompt (``format_question``), without images: lmms-eval's context
    string for logs and caches.

    Example: a MathVision row "Which shape? <image1>" with options ["a", "b"] →
    ``"Which shape?\\n\\nOptions:\\nA. a\\nB. b\\n\\nAnswer with the option's letter from the
    given choices."``.
    """
    problem = task_problem(task, doc)
    return format_question(problem.question, _as_list(problem.prompt_choices))


def doc_images(task: str, doc: Mapping[str, Any]) -> list[Image.Image]:
    """The prompt images of one row as RGB PIL images, in prompt order.

    ValueError naming the row and the column when an image is missing or unreadable.
    """
    problem = task_problem(task, doc)
    row_id = _row_id(doc)
    sources = problem.image_sources
    if sources is None:
        sources = tuple(column for column in MMMU_IMAGE_COLUMNS if _has_image(doc.get(column)))
    images = []
    for source in sources:
        if task == "care_synth":
            images.append(to_pil(source, f"{task} row {row_id} image {source}"))
            continue
        if source not in doc or not _has_image(doc[source]):
            raise ValueError(
                f"{task} row {row_id}: image column {source!r} is empty or missing, but the "
                "question refers to it"
            )
        images.append(to_pil(doc[source], f"{task} row {row_id} column {source}"))
    return images


def doc_to_messages(task: str, doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The chat messages of one row: ``build_messages(question, choices, num_images)`` with the
    PIL image of each ``{"type": "image"}`` item under ``"url"`` (lmms-eval's chat convention).

    Removing the ``"url"`` keys (`split_images`) gives exactly the training prompt's messages.

    Example: an MMMU-Pro vision row →
    ``[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content":
    [{"type": "image", "url": <PIL.Image>}, {"type": "text", "text": VISION_CHOICE_INSTRUCTION}]}]``.
    """
    problem = task_problem(task, doc)
    images = doc_images(task, doc)
    messages = build_messages(problem.question, _as_list(problem.prompt_choices), len(images))
    pending = iter(images)
    for item in messages[1]["content"]:
        if item.get("type") == "image":
            item["url"] = next(pending)
    return messages


def split_images(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """`doc_to_messages` output → (the messages without ``"url"`` keys, the images in order).

    The first element is what ``care.prompts.render_prompt`` takes; the second goes to the
    processor with the rendered prompt.

    Example: ``split_images([{"role": "user", "content": [{"type": "image", "url": img},
    {"type": "text", "text": "Hi"}]}])`` → ``([{"role": "user", "content": [{"type": "image"},
    {"type": "text", "text": "Hi"}]}], [img])``.
    """
    if not isinstance(messages, list):
        raise ValueError(f"messages must be a list of chat messages, got {type(messages).__name__}")
    plain: list[dict[str, Any]] = []
    images: list[Any] = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            plain.append(dict(message))
            continue
        items = []
        for item in content:
            if item.get("type") == "image":
                if "url" in item:
                    images.append(item["url"])
                items.append({key: value for key, value in item.items() if key != "url"})
            else:
                items.append(copy.copy(item))
        plain.append({**message, "content": items})
    return plain, images


def score_problem(problem: TaskProblem, response: str) -> Verdict:
    """``care.verify.score`` of `response` against the row's gold (or any alternative gold).

    Example: gold "B" with score_choices ("3", "5") → ``score_problem(p, "Answer: 5").acc`` is
    True.
    """
    choices = _as_list(problem.score_choices)
    budget = verify_time_limit()
    verdict = score(response, problem.answer, choices, problem.answer_type, time_limit=budget)
    for alternative in problem.alternatives:
        if verdict.acc:
            break
        candidate = score(response, alternative, choices, problem.answer_type, time_limit=budget)
        if candidate.acc:
            verdict = candidate
    return verdict


def verify_time_limit() -> float | None:
    """The scoring budget from $CARE_VERIFY_TIME_LIMIT (None when unset); ValueError naming the
    variable for anything but seconds > 0.

    Example: ``CARE_VERIFY_TIME_LIMIT=2`` → 2.0.
    """
    text = os.environ.get(VERIFY_TIME_LIMIT_ENV, "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"{VERIFY_TIME_LIMIT_ENV}={text!r}: must be a number of seconds > 0")
    return seconds


def process_results(task: str, doc: Mapping[str, Any], results: Sequence[str]) -> dict[str, Any]:
    """lmms-eval's per-row metrics: ``acc`` and ``fmt`` (0.0 or 1.0) from ``care.verify.score``
    of the first response, ``extracted`` (the answer ``score`` compared, or None) and
    ``verify_status`` (`care.verify.Verdict.status`: ok, no_answer, unparsable, timeout).

    Example: ``process_results("care_mmmu_pro_vis", row_with_gold_B, ["<think>…</think>
    <answer>B</answer>"])`` → ``{"acc": 1.0, "fmt": 1.0, "extracted": "B", "verify_status": "ok"}``.
    """
    if isinstance(results, str) or not isinstance(results, Sequence) or not results:
        raise ValueError(f"{task}: results must be a non-empty list of responses, got {results!r}")
    response = results[0]
    if not isinstance(response, str):
        raise ValueError(f"{task}: results[0] must be the response string, got {response!r}")
    verdict = score_problem(task_problem(task, doc), response)
    return {
        "acc": float(verdict.acc),
        "fmt": float(verdict.fmt),
        "extracted": verdict.extracted,
        "verify_status": verdict.status,
    }


def doc_to_target(task: str, doc: Mapping[str, Any]) -> str:
    """The gold answer as scored (MathVista's option text becomes its letter)."""
    return task_problem(task, doc).answer


def found_rate(extracted: Sequence[str | None]) -> float:
    """Share of rows where an answer was found (aggregation of the ``extracted`` metric).

    Example: ``found_rate(["B", None, "7", "x"])`` → 0.75.
    """
    if not extracted:
        return 0.0
    return sum(value is not None for value in extracted) / len(extracted)


def judged_rate(statuses: Sequence[str]) -> float:
    """Share of rows whose answer was judged (``verify_status`` ok); 0.0 for no rows.

    Example: ``judged_rate(["ok", "timeout", "ok", "no_answer"])`` → 0.5.
    """
    if not statuses:
        return 0.0
    return sum(status == "ok" for status in statuses) / len(statuses)


def to_pil(value: Any, where: str) -> Image.Image:
    """An image cell as an RGB PIL image: a PIL image, ``{"bytes", "path"}``, bytes or a path.

    Example: ``to_pil({"bytes": png_bytes, "path": None}, "row 3").size`` → the PNG's size.
    """
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, Mapping):
            if value.get("bytes"):
                image = Image.open(io.BytesIO(value["bytes"]))
            elif value.get("path"):
                image = Image.open(value["path"])
            else:
                raise ValueError("the cell has neither bytes nor a path")
        elif isinstance(value, bytes | bytearray):
            image = Image.open(io.BytesIO(value))
        elif isinstance(value, str | Path) and str(value):
            image = Image.open(value)
        else:
            raise ValueError(f"unsupported image cell of type {type(value).__name__}")
        return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{where}: cannot read image: {error}") from error


# ---------------------------------------------------------------- per-benchmark rules


def _mathvista_problem(task: str, doc: Mapping[str, Any]) -> TaskProblem:
    pid = _row_id(doc)
    question = _required_text(doc, "question", f"{task} row {pid}")
    unit = doc.get("unit")
    if isinstance(unit, str) and unit.strip():
        question = f"{question} (Unit: {unit.strip()})"
    answer = _required_text(doc, "answer", f"{task} row {pid}")
    if doc.get("question_type") == "multi_choice":
        choices = _string_list(doc.get("choices"), f"{task} row {pid} choices")
        if not choices:
            raise ValueError(f"{task} row {pid}: multi_choice row without choices")
        letters = gold_letters(answer, choices)
        if len(letters) != 1:
            raise ValueError(f"{task} row {pid}: answer {answer!r} names several options")
        return TaskProblem(
            question,
            tuple(choices),
            ("decoded_image",),
            next(iter(letters)),
            "multiple_choice",
            tuple(choices),
        )
    answer_kind = doc.get("answer_type")
    hints = {
        "integer": "Answer with an integer.",
        "list": "Answer with a Python list, e.g. [1, 2, 3].",
    }
    answer_types = {"integer": "integer", "float": "number", "list": "math", "text": "text"}
    if answer_kind not in answer_types:
        raise ValueError(
            f"{task} row {pid}: answer_type {answer_kind!r} is not one of {list(answer_types)}"
        )
    hint = hints.get(answer_kind)
    if answer_kind == "float":
        places = _precision_places(doc.get("precision"))
        hint = (
            "Answer with a decimal number"
            if places is None
            else f"Answer with a number rounded to {places} decimal place{'s' * (places != 1)}"
        ) + "."
    if hint is not None:
        question = f"{question}\n{hint}"
    return TaskProblem(question, None, ("decoded_image",), answer, answer_types[answer_kind], None)


def _mathverse_problem(task: str, doc: Mapping[str, Any]) -> TaskProblem:
    row = f"{task} row {_row_id(doc)}"
    answer = _required_text(doc, "answer", row)
    text = doc.get("question") or ""
    if not isinstance(text, str):
        raise ValueError(f"{row}: question must be a string, got {text!r}")
    multiple_choice = doc.get("question_type") == "multi-choice"
    stem, options = split_choices(text) if multiple_choice else (text.strip(), None)
    question = stem if stem else VISION_ONLY_INSTRUCTION
    prompt_choices = tuple(options) if options else None
    score_choices = None
    answer_type = None
    if multiple_choice and _SINGLE_LETTER.fullmatch(answer.strip()):
        answer_type = "multiple_choice"
        full_text = doc.get("question_for_eval") or text
        _, eval_options = split_choices(full_text if isinstance(full_text, str) else "")
        if eval_options and CHOICE_LETTERS.index(answer.strip()) < len(eval_options):
            score_choices = tuple(eval_options)
    return TaskProblem(question, prompt_choices, ("image",), answer, answer_type, score_choices)


def _mathvision_problem(task: str, doc: Mapping[str, Any]) -> TaskProblem:
    row = f"{task} row {_row_id(doc)}"
    raw_question = _required_text(doc, "question", row)
    question = _MATHVISION_IMAGE_TOKEN.sub(" ", raw_question)
    question = re.sub(r"[ \t]{2,}", " ", question).strip() or VISION_ONLY_INSTRUCTION
    answer = _required_text(doc, "answer", row)
    options = _string_list(doc.get("options"), f"{row} options")
    if options:
        return TaskProblem(
            question, tuple(options), ("decoded_image",), answer, "multiple_choice", tuple(options)
        )
    return TaskProblem(question, None, ("decoded_image",), answer, None, None)


def _mmmu_problem(task: str, doc: Mapping[str, Any]) -> TaskProblem:
    row = f"{task} row {_row_id(doc)}"
    raw_question = _required_text(doc, "question", row)
    options = parse_options(doc.get("options"), f"{row} options")
    multiple_choice = bool(options) and doc.get("question_type", "multiple-choice") != "open"
    texts = [raw_question, *(options if multiple_choice else [])]
    placed, columns = _place_image_tokens(texts)
    question, placed_options = placed[0], placed[1:]
    answer = _required_text(doc, "answer", row)
    image_sources = tuple(columns) if columns else None
    if multiple_choice:
        return TaskProblem(
            question,
            tuple(placed_options),
            image_sources,
            answer,
            "multiple_choice",
            tuple(options),
        )
    accepted = _answer_list(answer)
    return TaskProblem(question, None, image_sources, accepted[0], None, None, tuple(accepted[1:]))


def _mmmu_pro_vision_problem(task: str, doc: Mapping[str, Any]) -> TaskProblem:
    row = f"{task} row {_row_id(doc)}"
    answer = _required_text(doc, "answer", row)
    options = parse_options(doc.get("options"), f"{row} options")
    score_choices = tuple(options) if options else None
    return TaskProblem(
        VISION_CHOICE_INSTRUCTION, None, ("image",), answer, "multiple_choice", score_choices
    )


def _synth_problem(task: str, doc: Mapping[str, Any]) -> TaskProblem:
    row = f"{task} row {_row_id(doc)}"
    question = _required_text(doc, "question", row)
    answer = _required_text(doc, "answer", row)
    choices = doc.get("choices")
    choice_list = None if choices is None else _string_list(choices, f"{row} choices")
    images = doc.get("images") or []
    if not isinstance(images, list | tuple) or not all(isinstance(p, str) for p in images):
        raise ValueError(f"{row}: images must be a list of paths, got {images!r}")
    answer_type = doc.get("answer_type")
    return TaskProblem(
        question,
        tuple(choice_list) if choice_list else None,
        tuple(images),
        answer,
        answer_type if isinstance(answer_type, str) else None,
        tuple(choice_list) if choice_list else None,
    )


ROW_RULES: dict[str, Callable[[str, Mapping[str, Any]], TaskProblem]] = {
    "mathvista": _mathvista_problem,
    "mathverse": _mathverse_problem,
    "mathvision": _mathvision_problem,
    "mmmu": _mmmu_problem,
    "mmmu_pro_vision": _mmmu_pro_vision_problem,
    "synth": _synth_problem,
}
"""Row rule name (a benchmark record's ``rule``) → ``rule(task, row) -> TaskProblem``; tasks that
share a schema share a rule (the five MathVerse versions, MMMU and MMMU-Pro standard)."""


def split_choices(text: str) -> tuple[str, list[str] | None]:
    """A MathVerse question split into its stem and the options of its last "Choices:" block.

    Options are lines "A:…", "A.…", "(A) …" lettered A, B, C… in order up to the end of the
    text; anything else leaves the text whole (stem = text, options None).

    Example: ``split_choices("Find x.\\nChoices:\\nA:30°\\nB:60°")`` → ``("Find x.", ["30°",
    "60°"])``.
    """
    headers = list(_CHOICES_HEADER.finditer(text))
    if not headers:
        return text.strip(), None
    header = headers[-1]
    options: list[str] = []
    for line in text[header.end() :].splitlines():
        if not line.strip():
            continue
        match = _OPTION_LINE.fullmatch(line)
        if match is None or match[1] != CHOICE_LETTERS[len(options)]:
            return text.strip(), None
        options.append(match[2].strip())
    if not options:
        return text.strip(), None
    return text[: header.start()].strip(), options


def parse_options(value: Any, where: str) -> list[str]:
    """MMMU's ``options`` cell (a Python list literal as text, e.g. "['1', '2']") as a list.

    Example: ``parse_options("['$6', '$7']", "row")`` → ``["$6", "$7"]``;
    ``parse_options("[]", "row")`` → ``[]``.
    """
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return _string_list(value, where)
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be a list literal string, got {type(value).__name__}")
    if not value.strip():
        return []
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError) as error:
        raise ValueError(f"{where}: {value[:80]!r} is not a Python list literal: {error}") from None
    if not isinstance(parsed, list | tuple):
        raise ValueError(f"{where}: {value[:80]!r} is not a list")
    return [str(option) for option in parsed]


def _place_image_tokens(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """MMMU ``<image k>`` tokens → ``<image>`` placeholders at each image's first mention.

    Returns the rewritten texts and the image columns in placeholder order; a later mention of
    the same image becomes the text "image k".
    """
    seen: list[str] = []

    def place(match: re.Match[str]) -> str:
        column = f"image_{match[1]}"
        if column in seen:
            return f"image {match[1]}"
        if column not in MMMU_IMAGE_COLUMNS:
            raise ValueError(f"{match[0]!r} refers to {column}, but MMMU rows hold image_1…image_7")
        seen.append(column)
        return "<image>"

    return [_IMAGE_TOKEN.sub(place, text) for text in texts], seen


def _answer_list(answer: str) -> list[str]:
    """An MMMU open answer: "['24/7', '3.43']" → both; anything else → [answer]."""
    stripped = answer.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            parsed = ast.literal_eval(stripped)
        except (ValueError, SyntaxError):
            return [stripped]
        accepted = [str(item).strip() for item in parsed if str(item).strip()]
        if isinstance(parsed, list) and accepted:
            return accepted
    return [stripped]


def _precision_places(precision: Any) -> int | None:
    if isinstance(precision, int | float) and not isinstance(precision, bool):
        if math.isfinite(precision) and precision >= 0:
            return int(precision)
    return None


def _required_text(doc: Mapping[str, Any], column: str, where: str) -> str:
    value = doc.get(column)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: column {column!r} must be a non-empty string, got {value!r}")
    return value.strip()


def _string_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"{where}: must be a list of strings, got {value!r}")
    items = [str(item) for item in value]
    if any(not item.strip() for item in items):
        raise ValueError(f"{where}: options must be non-empty strings, got {items!r}")
    return items


def _has_image(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, Mapping):
        return bool(value.get("bytes") or value.get("path"))
    if isinstance(value, str):
        return bool(value.strip())
    return True


def _row_id(doc: Mapping[str, Any]) -> str:
    for key in ("pid", "id", "sample_index"):
        if doc.get(key) is not None:
            return str(doc[key])
    return "?"


def _as_list(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)
