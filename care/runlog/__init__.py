"""The run-folder format: writer and reader shared by the trainer, evaluation and dashboard."""

from care.runlog.index import StepIndex, read_table
from care.runlog.layout import (
    CONFIG_FILE,
    EVAL_DIR,
    GROUPS_FILE,
    IMPORT_FILE,
    META_FILE,
    PROJECTION_DIM,
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
from care.runlog.reader import JsonlResult, RunReader, read_jsonl, read_meta, run_schema_version
from care.runlog.records import (
    GroupRecord,
    HardNegative,
    RecordError,
    RgrRecord,
    SampleRecord,
    StepRecord,
    json_parser,
    migrate_json,
)
from care.runlog.values import to_json_value
from care.runlog.writer import RunObserver, RunWriter

__all__ = [
    "CONFIG_FILE",
    "EVAL_DIR",
    "GROUPS_FILE",
    "IMPORT_FILE",
    "META_FILE",
    "PROJECTION_DIM",
    "RUN_STATUSES",
    "SAMPLES_DIR",
    "SCHEMA_VERSION",
    "STEPS_FILE",
    "TRACKERS_DIR",
    "GroupRecord",
    "HardNegative",
    "JsonlResult",
    "RecordError",
    "RgrRecord",
    "RunExistsError",
    "RunLogError",
    "RunObserver",
    "RunReader",
    "RunWriter",
    "SampleRecord",
    "StepRecord",
    "StepIndex",
    "json_parser",
    "list_runs",
    "migrate_json",
    "read_jsonl",
    "read_meta",
    "read_table",
    "run_schema_version",
    "sample_file",
    "to_json_value",
]
