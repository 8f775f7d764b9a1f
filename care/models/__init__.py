"""Model-side building blocks: offline tokenizers, the tiny VLM, policy loading and forward.

Exports load lazily: ``import care.models.tokenizer`` should not pay for importing the
transformers vision-language model code.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "ForwardOutput": "policy",
    "PolicyBatch": "policy",
    "collate": "policy",
    "encode_context": "policy",
    "policy_forward": "policy",
    "Qwen2_5_VLImageProcessor": "vlm",
    "TinyVLMConfig": "tiny_config",
    "build_processor": "vlm",
    "build_tiny_vlm": "vlm",
    "load_policy": "vlm",
    "load_processor": "vlm",
    "save_policy": "vlm",
    "stop_token_ids": "vlm",
    "vision_token_ids": "vlm",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'care.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module_name}", __name__), name)
