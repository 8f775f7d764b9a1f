"""What the care_* task YAMLs name with ``!function utils.<name>``: every such name is written
out below, so a search for a name a YAML uses finds where it is made.

lmms-eval executes this file (by path, as a fresh module) for every ``!function`` tag when it
loads a task config in full, and takes the named attribute — any attribute, not only functions.
Three kinds of names live here:

- ``<task>_doc_to_messages`` / ``_doc_to_text`` / ``_doc_to_target`` / ``_process_results``
  (and ``_process_docs`` where rows are filtered or rewritten): one-argument wrappers around
  ``evaluation.tasks``, which holds every rule. The five MathVerse versions share
  care_mathverse's (one schema, one file) and differ only in their ``_process_docs``.
- ``<task>_dataset_path`` / ``<task>_dataset_kwargs`` (listed in `DATA_ATTRIBUTES`): computed
  on lookup (``__getattr__``) from $CARE_DATA_ROOT (care_synth: $CARE_SYNTH_DIR first) through
  ``evaluation.tasks.check_columns``, so a missing root, missing files or wrong columns fail
  when the task loads, with a message naming the file, the missing and the expected columns.
  They cannot be plain values: this file runs for every tag of every task, and one benchmark's
  missing data must not break loading another.
- ``found_rate``, ``judged_rate``: the aggregations of the ``extracted`` and ``verify_status``
  metrics.

Example: ``care_mathvista_dataset_kwargs`` with ``CARE_DATA_ROOT=/data`` →
``{"data_files": {"testmini": ["/data/AI4Math/MathVista/data/testmini-00000-of-00001.parquet"]}}``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from evaluation import tasks
from evaluation.benchmarks import MATHVERSE_VERSIONS

DocFunction = Callable[[Any], Any]


def _doc_function(task: str, function: Callable[[str, Any], Any]) -> DocFunction:
    """``function(task, doc)`` as the one-argument ``doc`` function lmms-eval calls."""

    def bound(doc: Any) -> Any:
        return function(task, doc)

    bound.__name__ = bound.__qualname__ = f"{task}_{function.__name__}"
    bound.__doc__ = f"evaluation.tasks.{function.__name__} for {task}."
    return bound


def _results_function(task: str) -> Callable[[Any, list[str]], dict[str, Any]]:
    """``tasks.process_results(task, doc, results)`` as lmms-eval's ``(doc, results)``."""

    def bound(doc: Any, results: list[str]) -> dict[str, Any]:
        return tasks.process_results(task, doc, results)

    bound.__name__ = bound.__qualname__ = f"{task}_process_results"
    bound.__doc__ = f"evaluation.tasks.process_results for {task}."
    return bound


def _version_filter(task: str) -> Callable[[Any], Any]:
    """process_docs of a MathVerse version: the rows whose problem_version is that version."""
    version = MATHVERSE_VERSIONS[task]

    def process_docs(dataset: Any) -> Any:
        # input_columns keeps the filter from decoding every image.
        return dataset.filter(lambda value: value == version, input_columns="problem_version")

    process_docs.__name__ = process_docs.__qualname__ = f"{task}_process_docs"
    return process_docs


def found_rate(extracted: list[str | None]) -> float:
    """Aggregation of the ``extracted`` metric: share of rows where an answer was found."""
    return tasks.found_rate(extracted)


def judged_rate(statuses: list[str]) -> float:
    """Aggregation of the ``verify_status`` metric: share of rows whose answer was judged."""
    return tasks.judged_rate(statuses)


# --- care_mathvista
care_mathvista_doc_to_messages = _doc_function("care_mathvista", tasks.doc_to_messages)
care_mathvista_doc_to_text = _doc_function("care_mathvista", tasks.doc_to_text)
care_mathvista_doc_to_target = _doc_function("care_mathvista", tasks.doc_to_target)
care_mathvista_process_results = _results_function("care_mathvista")

# --- care_mathverse: the five version tasks read one file and share these row functions; each
# keeps its own rows with its process_docs.
care_mathverse_doc_to_messages = _doc_function("care_mathverse", tasks.doc_to_messages)
care_mathverse_doc_to_text = _doc_function("care_mathverse", tasks.doc_to_text)
care_mathverse_doc_to_target = _doc_function("care_mathverse", tasks.doc_to_target)
care_mathverse_process_results = _results_function("care_mathverse")
care_mathverse_text_dominant_process_docs = _version_filter("care_mathverse_text_dominant")
care_mathverse_text_lite_process_docs = _version_filter("care_mathverse_text_lite")
care_mathverse_vision_intensive_process_docs = _version_filter("care_mathverse_vision_intensive")
care_mathverse_vision_dominant_process_docs = _version_filter("care_mathverse_vision_dominant")
care_mathverse_vision_only_process_docs = _version_filter("care_mathverse_vision_only")

# --- care_mathvision
care_mathvision_doc_to_messages = _doc_function("care_mathvision", tasks.doc_to_messages)
care_mathvision_doc_to_text = _doc_function("care_mathvision", tasks.doc_to_text)
care_mathvision_doc_to_target = _doc_function("care_mathvision", tasks.doc_to_target)
care_mathvision_process_results = _results_function("care_mathvision")

# --- care_mmmu
care_mmmu_doc_to_messages = _doc_function("care_mmmu", tasks.doc_to_messages)
care_mmmu_doc_to_text = _doc_function("care_mmmu", tasks.doc_to_text)
care_mmmu_doc_to_target = _doc_function("care_mmmu", tasks.doc_to_target)
care_mmmu_process_results = _results_function("care_mmmu")

# --- care_mmmu_pro_std
care_mmmu_pro_std_doc_to_messages = _doc_function("care_mmmu_pro_std", tasks.doc_to_messages)
care_mmmu_pro_std_doc_to_text = _doc_function("care_mmmu_pro_std", tasks.doc_to_text)
care_mmmu_pro_std_doc_to_target = _doc_function("care_mmmu_pro_std", tasks.doc_to_target)
care_mmmu_pro_std_process_results = _results_function("care_mmmu_pro_std")

# --- care_mmmu_pro_vis
care_mmmu_pro_vis_doc_to_messages = _doc_function("care_mmmu_pro_vis", tasks.doc_to_messages)
care_mmmu_pro_vis_doc_to_text = _doc_function("care_mmmu_pro_vis", tasks.doc_to_text)
care_mmmu_pro_vis_doc_to_target = _doc_function("care_mmmu_pro_vis", tasks.doc_to_target)
care_mmmu_pro_vis_process_results = _results_function("care_mmmu_pro_vis")

# --- care_synth
care_synth_doc_to_messages = _doc_function("care_synth", tasks.doc_to_messages)
care_synth_doc_to_text = _doc_function("care_synth", tasks.doc_to_text)
care_synth_doc_to_target = _doc_function("care_synth", tasks.doc_to_target)
care_synth_process_results = _results_function("care_synth")


def care_synth_process_docs(dataset: Any) -> Any:
    """care_synth rows with image paths made absolute against the dataset folder."""
    folder = Path(
        tasks.resolve_task_files("care_synth", tasks.data_root_from_env("care_synth"))["folder"]
    )
    return dataset.map(
        lambda images: {"images": [str(folder / image) for image in images]},
        input_columns="images",
    )


DATA_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "care_mathvista_dataset_path": ("care_mathvista", "dataset_path"),
    "care_mathvista_dataset_kwargs": ("care_mathvista", "dataset_kwargs"),
    "care_mathverse_dataset_path": ("care_mathverse", "dataset_path"),
    "care_mathverse_dataset_kwargs": ("care_mathverse", "dataset_kwargs"),
    "care_mathvision_dataset_path": ("care_mathvision", "dataset_path"),
    "care_mathvision_dataset_kwargs": ("care_mathvision", "dataset_kwargs"),
    "care_mmmu_dataset_path": ("care_mmmu", "dataset_path"),
    "care_mmmu_dataset_kwargs": ("care_mmmu", "dataset_kwargs"),
    "care_mmmu_pro_std_dataset_path": ("care_mmmu_pro_std", "dataset_path"),
    "care_mmmu_pro_std_dataset_kwargs": ("care_mmmu_pro_std", "dataset_kwargs"),
    "care_mmmu_pro_vis_dataset_path": ("care_mmmu_pro_vis", "dataset_path"),
    "care_mmmu_pro_vis_dataset_kwargs": ("care_mmmu_pro_vis", "dataset_kwargs"),
    "care_synth_dataset_path": ("care_synth", "dataset_path"),
    "care_synth_dataset_kwargs": ("care_synth", "dataset_kwargs"),
}
"""YAML name → (task, key of `evaluation.tasks.check_columns`' result) for the data attributes,
which `__getattr__` computes on every lookup."""


def __getattr__(name: str) -> Any:
    if name in DATA_ATTRIBUTES:
        task, key = DATA_ATTRIBUTES[name]
        return tasks.check_columns(task, tasks.data_root_from_env(task))[key]
    raise AttributeError(f"benchmarks_cfg/utils.py has no attribute {name!r}")
