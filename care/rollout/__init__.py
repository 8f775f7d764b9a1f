"""Rollout engines: n sampled responses per prompt (with images) → token ids, text, log-probs."""

from .base import RolloutEngine, RolloutOutput, RolloutRequest, SamplingParams
from .hf import HFRolloutEngine

__all__ = [
    "HFRolloutEngine",
    "RolloutEngine",
    "RolloutOutput",
    "RolloutRequest",
    "SamplingParams",
]
