"""The run-folder format: writer and reader shared by the trainer, evaluation and dashboard."""

from care.runlog.index import StepIndex, read_table
from care.runlog.layout import (
    CONFIG_FILE,
    EVAL_DIR,
    GROUPS_FILE,
    IMPORT_FILE,
    META_FILE,
    RUN_STATUSES,
    SAMPLES_DIR,
    SCHEMA_VERSION,
    STEPS_FILE,
    TRACKERS_DIR,
    RunExistsError,
    RunLogError,
    list_runs,
    sample_file,
)
from care.runlog.reader import JsonlResult, RunReader, read_jsonl, read_meta
from care.runlog.values import to_json_value
from care.runlog.writer import RunObserver, RunWriter

__all__ = [
    "CONFIG_FILE",
    "EVAL_DIR",
    "GROUPS_FILE",
    "IMPORT_FILE",
    "META_FILE",
    "RUN_STATUSES",
    "SAMPLES_DIR",
    "SCHEMA_VERSION",
    "STEPS_FILE",
    "TRACKERS_DIR",
    "JsonlResult",
    "RunExistsError",
    "RunLogError",
    "RunObserver",
    "RunReader",
    "RunWriter",
    "StepIndex",
    "list_runs",
    "read_jsonl",
    "read_meta",
    "read_table",
    "sample_file",
    "to_json_value",
]
