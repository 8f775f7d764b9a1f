"""Tiny-model training config and test doubles shared by trainer, distributed and vLLM tests."""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any


def tiny_config(data_dir: Path, out_dir: Path, name: str, **sections) -> dict:
    cfg = {
        "run": {"name": name, "out_dir": str(out_dir), "seed": 5},
        "model": {
            "image_size": 56,
            "tiny": {
                "hidden_size": 32,
                "num_layers": 1,
                "num_heads": 2,
                "num_kv_heads": 1,
                "intermediate_size": 64,
                "vision_hidden_size": 16,
            },
        },
        "data": {"train_files": [str(data_dir / "train.jsonl")]},
        "rollout": {"n": 4, "max_new_tokens": 8, "batch_rows": 16},
        "algo": {"estimator": "care"},
        "optim": {"lr": 1e-3},
        "train": {
            "steps": 2,
            "prompts_per_step": 2,
            "mini_batch_prompts": 1,
            "micro_batch_rows": 3,
            "device": "cpu",
        },
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def scripted_output(tokenizer, stop_id: int, text: str):
    """A RolloutOutput for a scripted response (test double for a sampler): the text's ids plus
    the stop token; dummy sampler log-probs, since the trainer recomputes old log-probs itself."""
    from care.rollout.base import RolloutOutput

    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [stop_id]
    return RolloutOutput(
        prompt_ids=[], response_ids=ids, text=text, logprobs=[-1.0] * len(ids), finish_reason="stop"
    )


def recording_vllm_modules(records: list[dict[str, Any]]) -> dict[str, types.ModuleType]:
    """A stand-in ``vllm`` package (``sys.modules`` entries): ``vllm.LLM`` records its folder,
    options, the launcher variables it would read, and the names of every weight reload."""
    vllm = types.ModuleType("vllm")
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(
        is_sleep_mode_available=lambda: False, device_type="cpu"
    )

    class LLM:
        def __init__(self, model: str, **options: Any) -> None:
            folder = Path(model)
            self.record = {
                "folder": str(folder),
                "files": sorted(path.name for path in folder.iterdir()),
                "options": options,
                "env": {
                    name: os.environ.get(name) for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE")
                },
                "reload_chunks": [],
            }
            records.append(self.record)

        def collective_rpc(self, method: str, kwargs: dict[str, Any]) -> None:
            assert method == "reload_weights"
            self.record["reload_chunks"].append([name for name, _ in kwargs["weights_iterator"]])

        def reset_prefix_cache(self) -> None:
            return None

    vllm.LLM = LLM
    vllm.SamplingParams = dict
    vllm.__version__ = "recording stand-in"
    vllm.platforms = platforms
    return {"vllm": vllm, "vllm.platforms": platforms}
