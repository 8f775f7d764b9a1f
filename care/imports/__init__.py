"""Runs trained elsewhere as run folders: verl rollout dumps and a generic rollout schema.

    >>> from care.imports import VerlDump, import_run
    >>> report = import_run(VerlDump("verl_ckpt/rollouts"), "runs/verl_grpo")
    >>> report.steps, report.rollouts_per_second
    (200, 21000.0)

`care import verl DIR --out RUN` and `care import rollouts PATH --out RUN` do the same from the
command line; docs/import.md describes the inputs and what the run folder then holds.
"""

from care.imports.convert import (
    CORRECT_SOURCES,
    NOT_COMPUTED,
    ImportOptions,
    ImportReport,
    analyse_step,
    group_record,
    import_run,
    sample_record,
    step_record,
)
from care.imports.sources import (
    ImportInputError,
    Rollout,
    RolloutFiles,
    StepRollouts,
    VerlDump,
)

__all__ = [
    "CORRECT_SOURCES",
    "NOT_COMPUTED",
    "ImportInputError",
    "ImportOptions",
    "ImportReport",
    "Rollout",
    "RolloutFiles",
    "StepRollouts",
    "VerlDump",
    "analyse_step",
    "group_record",
    "import_run",
    "sample_record",
    "step_record",
]
