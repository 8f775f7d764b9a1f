"""What the care_* task YAMLs name with ``!function utils.<name>``.

lmms-eval executes this file (by path, as a fresh module) for every ``!function`` tag when it
loads a task config in full, and takes the named attribute — any attribute, not only functions.
Two kinds of names live here:

- ``<task>_dataset_path`` / ``<task>_dataset_kwargs``: computed on lookup (``__getattr__``) from
  $CARE_DATA_ROOT (care_synth: $CARE_SYNTH_DIR first) through
  ``evaluation.tasks.check_columns``, so a missing root, missing files or wrong columns fail
  when the task loads, with a message naming the file, the missing and the expected columns.
- ``<task>_doc_to_messages`` / ``_doc_to_text`` / ``_doc_to_target`` / ``_process_results``
  (and ``_process_docs`` where rows are filtered or rewritten): one-argument wrappers around
  ``evaluation.tasks``, which holds every rule.

Example: ``care_mathvista_dataset_kwargs`` with ``CARE_DATA_ROOT=/data`` →
``{"data_files": {"testmini": ["/data/AI4Math/MathVista/data/testmini-00000-of-00001.parquet"]}}``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from evaluation import tasks

_DATA_ATTRIBUTES = ("_dataset_path", "_dataset_kwargs")


def __getattr__(name: str) -> Any:
    for suffix in _DATA_ATTRIBUTES:
        task = name.removesuffix(suffix)
        if task != name and task in tasks.TASKS:
            resolved = tasks.check_columns(task, tasks.data_root_from_env(task))
            return resolved["dataset_path" if suffix == "_dataset_path" else "dataset_kwargs"]
    raise AttributeError(f"benchmarks_cfg/utils.py has no attribute {name!r}")


def found_rate(extracted: list[str | None]) -> float:
    """Aggregation of the ``extracted`` metric: share of rows where an answer was found."""
    return tasks.found_rate(extracted)


def _bind_doc_function(task: str, function: Callable[[str, Any], Any]) -> Callable[[Any], Any]:
    def bound(doc: Any) -> Any:
        return function(task, doc)

    return _named(bound, task, function)


def _bind_process_results(task: str) -> Callable[[Any, list[str]], dict[str, Any]]:
    def bound(doc: Any, results: list[str]) -> dict[str, Any]:
        return tasks.process_results(task, doc, results)

    return _named(bound, task, tasks.process_results)


def _named(
    bound: Callable[..., Any], task: str, function: Callable[..., Any]
) -> Callable[..., Any]:
    bound.__name__ = bound.__qualname__ = f"{task}_{function.__name__}"
    bound.__doc__ = f"evaluation.tasks.{function.__name__} for {task}."
    return bound


def _mathverse_version_filter(task: str) -> Callable[[Any], Any]:
    version = tasks.MATHVERSE_VERSIONS[task]

    def process_docs(dataset: Any) -> Any:
        # input_columns keeps the filter from decoding every image.
        return dataset.filter(lambda value: value == version, input_columns="problem_version")

    process_docs.__name__ = f"{task}_process_docs"
    return process_docs


def care_synth_process_docs(dataset: Any) -> Any:
    """care_synth rows with image paths made absolute against the dataset folder."""
    folder = Path(
        tasks.resolve_task_files("care_synth", tasks.data_root_from_env("care_synth"))["folder"]
    )
    return dataset.map(
        lambda images: {"images": [str(folder / image) for image in images]},
        input_columns="images",
    )


# One set of row functions per task; the YAMLs name them as utils.<task>_<function>.
for _task in tasks.TASKS:
    for _function in (tasks.doc_to_messages, tasks.doc_to_text, tasks.doc_to_target):
        globals()[f"{_task}_{_function.__name__}"] = _bind_doc_function(_task, _function)
    globals()[f"{_task}_process_results"] = _bind_process_results(_task)
for _task in tasks.MATHVERSE_VERSIONS:
    globals()[f"{_task}_process_docs"] = _mathverse_version_filter(_task)
