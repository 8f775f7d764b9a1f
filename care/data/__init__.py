"""Datasets: validated rows from JSONL or parquet, and the synthetic visual-reasoning generator."""

from care.data.dataset import (
    ANSWER_TYPES,
    CHOICE_LETTERS,
    IMAGE_PLACEHOLDER,
    BadRow,
    DataError,
    Example,
    FieldProblem,
    LoadedDataset,
    RowSource,
    infer_answer_type,
    load_examples,
    load_split,
    normalise_choice_answer,
)
from care.data.sft import sft_target
from care.data.synth import (
    DEMO_MIX,
    FAMILIES,
    GENERATOR_VERSION,
    SynthDataset,
    SynthMix,
    generate_split,
    solution_for,
    write_synthetic_dataset,
)

__all__ = [
    "ANSWER_TYPES",
    "CHOICE_LETTERS",
    "DEMO_MIX",
    "FAMILIES",
    "GENERATOR_VERSION",
    "IMAGE_PLACEHOLDER",
    "BadRow",
    "DataError",
    "Example",
    "FieldProblem",
    "LoadedDataset",
    "RowSource",
    "SynthDataset",
    "SynthMix",
    "generate_split",
    "infer_answer_type",
    "load_examples",
    "load_split",
    "normalise_choice_answer",
    "sft_target",
    "solution_for",
    "write_synthetic_dataset",
]
