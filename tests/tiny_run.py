"""What the trainer, distributed and vLLM tests share: the tiny-model training config, a small
multiple-choice data set written in the test, a scripted rollout engine and a recording stand-in
for vLLM."""

from __future__ import annotations

import json
import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from care.models.tiny_config import SMALLEST_SHAPE
from care.runlog import GroupRecord


def tiny_config(data_dir: Path, out_dir: Path, name: str, **sections) -> dict:
    cfg = {
        "run": {"name": name, "out_dir": str(out_dir), "seed": 5},
        "model": {
            "image_size": 56,
            "tiny": dict(SMALLEST_SHAPE),
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


def scripted_groups(engine: Any, requests: list, n: int, mixed: set[int]) -> list:
    """Scripted outputs of the multi-process test engines: for each request, ``n`` samples of
    its example (``engine._example_index``); a repair request gets a correct continuation, an
    example in ``mixed`` one correct and ``n - 1`` wrong rollouts, any other ``n`` correct ones."""
    out = []
    for request in requests:
        index = engine._example_index(request)
        answer = engine.trainer.examples[index].answer
        samples = []
        for sample in range(n):
            if request.assistant_prefix:
                text = f"Fixed it.\n</think>\n<answer>{answer}</answer>"
            elif sample == 0 or index not in mixed:
                text = f"<think>\nchecked {sample}\n</think>\n<answer>{answer}</answer>"
            else:
                text = f"<think>\nguess {sample}\n</think>\n<answer>zzz{sample}</answer>"
            samples.append(scripted_output(engine.tokenizer, engine.stop, text))
        out.append(samples)
    return out


def failure_share_of(groups: list[GroupRecord]) -> float:
    """``signal/failure_share_seq`` recomputed from a step's ``groups.jsonl`` records: the
    |advantage| of failed rollouts plus that of every RGR repair (a failed repair is a failure,
    a passed one got its credit from a failure), over all |advantage|; 0.0 without any."""
    failed = total = 0.0
    for group in groups:
        for advantage, correct in zip(group.advantages, group.correct, strict=True):
            total += abs(advantage)
            failed += 0.0 if correct else abs(advantage)
        repair = group.rgr
        if repair is not None and repair.triggered:
            total += abs(repair.advantage)
            failed += abs(repair.advantage)
    return failed / total if total else 0.0


class ScriptedEngine:
    """Returns scripted responses (a test double for the sampler): ``script(question, answer,
    sample, is_repair) -> text``. Old log-probs are recomputed by the trainer, so the sampler
    log-probs are dummies. ``calls`` holds the questions of every ``generate`` call in order, so
    a script can tell the rounds of a step apart (``len(engine.calls) - 1``)."""

    def __init__(self, processor, questions_to_answers, script):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.answers = questions_to_answers
        self.script = script
        self.suppress_token_ids: list[int] = []
        self.stop = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.calls: list[list[str]] = []

    def _question(self, prompt: str) -> str:
        return next(q for q in self.answers if q in prompt)

    def generate(self, requests, params):
        self.calls.append([self._question(request.prompt) for request in requests])
        out = []
        for request, question in zip(requests, self.calls[-1], strict=True):
            samples = []
            for sample in range(params.n):
                text = self.script(
                    question, self.answers[question], sample, bool(request.assistant_prefix)
                )
                samples.append(scripted_output(self.tokenizer, self.stop, text))
            out.append(samples)
        return out

    def sync_weights(self, model):
        return None


CHOICE_COLOURS = ("red", "green", "blue", "yellow")
_RGB = {
    "red": (220, 30, 30),
    "green": (30, 180, 60),
    "blue": (40, 60, 220),
    "yellow": (230, 210, 40),
}


def choice_question(index: int, format_hint: bool = False) -> str:
    """Question text of row ``index``; the colon keeps "Item 1:" from matching "Item 12:".

    ``format_hint`` spells out the reply layout in the question. The tiny tokenizer learns its
    merges from the rows' text only, so with the hint the tags become a few tokens each and a
    reply takes 19 tokens instead of 35 (the cost of a real training run halves).
    """
    question = f"Item {index}: which colour fills the square?"
    if format_hint:
        question += " Reply <think> ok </think> <answer> letter </answer>."
    return question


def write_choice_dataset(
    out_dir: Path,
    n_rows: int,
    answer_of: Callable[[int], str],
    name: str = "train",
    format_hint: bool = False,
) -> Path:
    """``<out_dir>/<name>.jsonl``: ``n_rows`` four-option questions about a square of one colour
    (56 x 56 PNG each), gold letter ``answer_of(index)`` (the image shows that option's colour),
    and the ``solution`` "ok" for SFT targets (the shortest reasoning). Independent of the
    synthetic task generator, so the trainer tests pin their own data."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "images").mkdir(exist_ok=True)
    lines = []
    for index in range(n_rows):
        letter = answer_of(index)
        colour = CHOICE_COLOURS["ABCD".index(letter)]
        image = f"images/{name}-{index}.png"
        Image.new("RGB", (56, 56), _RGB[colour]).save(out_dir / image)
        row = {
            "id": f"{name}-{index}",
            "images": [image],
            "question": choice_question(index, format_hint),
            "choices": list(CHOICE_COLOURS),
            "answer": letter,
            "solution": "ok",
        }
        lines.append(json.dumps(row))
    path = out_dir / f"{name}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


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
