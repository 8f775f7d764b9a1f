"""lmms-eval bridge and evaluation result tables.

`care_vlm_manifest` is what this package's ``lmms_eval.models`` entry point names: lmms-eval
calls it while building its model registry, so ``--model care_vlm`` resolves to
`evaluation.model.CareVLM`. It imports nothing heavy (the registry loads every plugin on
``import lmms_eval.models``).
"""

from __future__ import annotations

from typing import Any


def care_vlm_manifest() -> Any:
    """The ``lmms_eval.models.registry_v2.ModelManifest`` of the ``care_vlm`` chat model.

    Example: ``care_vlm_manifest().chat_class_path`` → ``"evaluation.model.CareVLM"``.
    """
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="care_vlm", chat_class_path="evaluation.model.CareVLM")
