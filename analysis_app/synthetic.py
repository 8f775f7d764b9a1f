"""Generated run folders with known numbers, for the dashboard's tests and its benchmark.

`write_synthetic_run` writes a complete run (config, meta, steps, groups, samples, evaluation
results and a tiny training-data file with images) through `care.runlog.RunWriter`, so the folder
is exactly what the trainer writes. The values are deterministic functions of the step and the
group index, so a test can state what a page must show.

Group templates (G = 4, by ``group_id % 4``):

- 0: mixed, one correct (rollout 2 = anchor), hard negatives 0 (d = 0.08) and 3 (d = 0.24),
  RGR repairs rollout 0 and passes on even steps; advantages [0, 0, 2, -0.5].
- 1: all wrong, rescued with pseudo-anchor 1; pseudo-negatives 0, 3, 2.
- 2: all correct: no signal.
- 3: mixed, two correct (anchor 1), hard negatives 2 (d = 0.12) and 0 (d = 0.30), RGR repairs
  rollout 2 and always fails.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from care.runlog import RunWriter

GROUP_SIZE = 4


@dataclass(frozen=True)
class SyntheticRun:
    """Where the generated run is and the numbers a test can check against."""

    run_dir: Path
    data_file: Path
    steps: int
    groups_per_step: int
    last_accuracy: float


def accuracy_curve(steps: np.ndarray, seed: int, lift: float) -> np.ndarray:
    """acc/mean at each step: a saturating rise plus a deterministic wiggle, in [0, 1].

    Example: ``accuracy_curve(np.array([1]), 0, 0.5)`` -> about ``[0.21]``.
    """
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 0.02, size=steps.size)
    rise = 0.2 + lift * (1.0 - np.exp(-steps / max(steps.size / 4.0, 1.0)))
    return np.clip(rise + noise, 0.0, 1.0)


def _step_metrics(steps: np.ndarray, seed: int, lift: float, rgr: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    accuracy = accuracy_curve(steps, seed, lift)
    size = steps.size
    failure_share = np.clip(0.35 + 0.05 * np.sin(steps / 7.0) + rng.normal(0, 0.01, size), 0, 1)
    mixed = np.clip(0.5 + rng.normal(0, 0.03, size), 0, 1)
    all_wrong = np.clip((1 - mixed) * (1 - accuracy), 0, 1)
    metrics = {
        "signal/failure_share_seq": failure_share,
        "signal/failure_share_seq_no_rgr": failure_share - (0.03 if rgr else 0.0),
        "signal/failure_share_token": failure_share + 0.02,
        "signal/failure_share_token_no_rgr": failure_share + 0.02 - (0.03 if rgr else 0.0),
        "groups/all_correct_frac": 1 - mixed - all_wrong,
        "groups/all_wrong_frac": all_wrong,
        "groups/mixed_frac": mixed,
        "groups/with_signal_frac": mixed + all_wrong,
        "rescue/triggered_frac": all_wrong,
        "rescue/impossible_frac": np.zeros(size),
        "rgr/triggered": np.full(size, 2.0 if rgr else 0.0),
        "rgr/passed": (steps % 2 == 0).astype(np.float64) if rgr else np.zeros(size),
        "adv/var_ratio_neg_pos": 0.25 + 0.05 * np.cos(steps / 5.0),
        "reward/mean": accuracy,
        "acc/mean": accuracy,
        "format/mean": np.clip(accuracy + 0.3, 0, 1),
        "response_len/mean": 180.0 - 20.0 * accuracy,
        "loss/pg": rng.normal(0, 0.01, size),
        "loss/clipfrac": np.abs(rng.normal(0.02, 0.005, size)),
        "loss/kl": np.abs(rng.normal(0.001, 0.0002, size)),
        "grad_norm": np.abs(rng.normal(0.5, 0.05, size)),
        "entropy": 1.2 - 0.3 * accuracy,
    }
    if rgr:
        metrics["rgr/pass_rate"] = metrics["rgr/passed"] / 2.0
    return metrics


def _group_record(step: int, group_id: int, prompt_id: str, rgr: bool) -> dict[str, Any]:
    kind = group_id % 4
    record: dict[str, Any] = {
        "group_id": group_id,
        "prompt_id": prompt_id,
        "G": GROUP_SIZE,
        "rescued": False,
        "pseudo_anchor": None,
        "rescue_impossible": False,
    }
    no_repair = {
        "triggered": False,
        "passed": None,
        "source_index": None,
        "source_len": None,
        "repair_len": None,
    }
    if kind == 0:
        record.update(
            n_correct=1,
            anchor_index=2,
            hard_negatives=[{"index": 0, "distance": 0.08}, {"index": 3, "distance": 0.24}],
            advantages=[0.0, 0.0, 2.0, -0.5],
            rewards=[0.0, 0.0, 1.0, 0.0],
            correct=[False, False, True, False],
            rgr={
                "triggered": True,
                "passed": step % 2 == 0,
                "source_index": 0,
                "source_len": 40,
                "repair_len": 12,
            },
        )
    elif kind == 1:
        record.update(
            n_correct=0,
            anchor_index=None,
            hard_negatives=[
                {"index": 0, "distance": 0.02},
                {"index": 3, "distance": 0.05},
                {"index": 2, "distance": 0.07},
            ],
            rescued=True,
            pseudo_anchor=1,
            advantages=[-0.3333, 2.0, -0.3333, -0.3333],
            rewards=[0.0, 0.0, 0.0, 0.0],
            correct=[False, False, False, False],
            rgr=no_repair,
        )
    elif kind == 2:
        record.update(
            n_correct=4,
            anchor_index=0,
            hard_negatives=[],
            advantages=[0.0, 0.0, 0.0, 0.0],
            rewards=[1.0, 1.0, 1.0, 1.0],
            correct=[True, True, True, True],
            rgr=no_repair,
        )
    else:
        record.update(
            n_correct=2,
            anchor_index=1,
            hard_negatives=[{"index": 2, "distance": 0.12}, {"index": 0, "distance": 0.30}],
            advantages=[-0.5, 2.0, 0.0, 0.0],
            rewards=[0.0, 1.0, 0.0, 1.0],
            correct=[False, True, False, True],
            rgr={
                "triggered": True,
                "passed": False,
                "source_index": 2,
                "source_len": 55,
                "repair_len": 20,
            },
        )
    record["k_prime"] = len(record["hard_negatives"])
    if not rgr:
        record["rgr"] = None
    return record


def _response(step: int, group_id: int, index: int, correct: bool) -> str:
    verdict = "right" if correct else "wrong"
    return f"s{step} g{group_id} r{index}: counting the shapes ({verdict}). \\boxed{{{index + 1}}}"


def _sample_records(
    step: int, groups: list[dict[str, Any]], questions: dict[str, str]
) -> list[dict[str, Any]]:
    records = []
    for group in groups:
        for index in range(group["G"]):
            records.append(
                {
                    "group_id": group["group_id"],
                    "index": index,
                    "prompt_id": group["prompt_id"],
                    "question": questions[group["prompt_id"]],
                    "response": _response(step, group["group_id"], index, group["correct"][index]),
                    "repair_prefix": None,
                    "reflected_from": -1,
                    "reward": group["rewards"][index],
                    "correct": group["correct"][index],
                    "advantage": group["advantages"][index],
                }
            )
    for group in groups:
        repair = group.get("rgr")
        if not repair or not repair["triggered"]:
            continue
        source = repair["source_index"]
        source_row = group["group_id"] * GROUP_SIZE + source
        records.append(
            {
                "group_id": group["group_id"],
                "index": source,
                "prompt_id": group["prompt_id"],
                "question": questions[group["prompt_id"]],
                "response": f"repair s{step} g{group['group_id']}: recount gives \\boxed{{3}}",
                "repair_prefix": records[source_row]["response"] + " Wait, let me re-check.",
                "reflected_from": source_row,
                "reward": 1.0 if repair["passed"] else 0.0,
                "correct": bool(repair["passed"]),
                "advantage": 0.5 if repair["passed"] else -0.25,
            }
        )
    return records


def write_training_data(folder: Path, n_prompts: int) -> tuple[Path, dict[str, str]]:
    """A data file of `n_prompts` rows (ids "train-000000"...) with one small PNG each."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    questions = {}
    lines = []
    for number in range(n_prompts):
        prompt_id = f"train-{number:06d}"
        image_name = f"images/{prompt_id}.png"
        colour = (40 * number % 256, 120, 255 - 30 * number % 256)
        Image.new("RGB", (32, 32), colour).save(folder / image_name)
        question = f"How many squares are in image {number}?"
        questions[prompt_id] = question
        row = {"id": prompt_id, "images": [image_name], "question": question, "answer": "3"}
        lines.append(json.dumps(row))
    data_file = folder / "train.jsonl"
    data_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data_file, questions


def write_synthetic_run(
    run_dir: Path,
    *,
    steps: int = 30,
    groups_per_step: int = 4,
    estimator: str = "care",
    seed: int = 0,
    lift: float = 0.5,
    sample_every: int = 10,
    eval_results: dict[int, dict[str, float]] | None = None,
    data_dir: Path | None = None,
    status: str = "finished",
    model_path: str = "Qwen/Qwen2.5-VL-7B-Instruct",
) -> SyntheticRun:
    """Write a run folder with `steps` steps and ``steps × groups_per_step`` group records.

    eval_results: checkpoint step -> {task: accuracy fraction}; written as
        ``eval/step_<N>/<task>.json`` summaries in the evaluation code's layout.
    status: "finished", "crashed" or "running" (the run is then left open, as a live one).

    Example: ``write_synthetic_run(tmp / "a", steps=3)`` writes steps 1..3 and 12 group records.
    """
    run_dir = Path(run_dir)
    data_dir = Path(data_dir) if data_dir is not None else run_dir.parent / "data"
    n_prompts = 8
    data_file, questions = write_training_data(data_dir, n_prompts)
    rgr = estimator == "care"
    config = {
        "run": {"name": run_dir.name, "seed": seed},
        "model": {"path": model_path},
        "data": {"train_files": [str(data_file)]},
        "rollout": {"n": GROUP_SIZE},
        "algo": {"estimator": estimator, "rgr": {"enable": rgr}},
        "train": {"steps": steps, "prompts_per_step": groups_per_step},
    }
    step_numbers = np.arange(1, steps + 1)
    metrics = _step_metrics(step_numbers, seed, lift, rgr)
    columns = {name: values.tolist() for name, values in metrics.items()}
    writer = RunWriter.create(run_dir, config, seed)
    start_time = 1_700_000_000.0
    for position, step in enumerate(step_numbers.tolist()):
        row = {name: values[position] for name, values in columns.items()}
        writer.log_step(step, row, timestamp=start_time + 10.0 * step)
        groups = [
            _group_record(
                step, group_id, f"train-{(step * groups_per_step + group_id) % n_prompts:06d}", rgr
            )
            for group_id in range(groups_per_step)
        ]
        writer.log_groups(step, groups)
        if sample_every and step % sample_every == 0:
            writer.log_samples(step, _sample_records(step, groups, questions))
    writer.finish("crashed" if status == "crashed" else "finished")
    if status == "running":
        # A live run: meta.json as the writer leaves it while training (no end time yet).
        meta_path = run_dir / "meta.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta.update(status="running", end_time=None)
        meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    for checkpoint, tasks in (eval_results or {}).items():
        folder = run_dir / "eval" / f"step_{checkpoint}"
        folder.mkdir(parents=True, exist_ok=True)
        for task, accuracy in tasks.items():
            summary = {
                "task": task,
                "n": 100,
                "accuracy": accuracy,
                "format_rate": 1.0,
                "prompt_version": "care-prompt-v1",
            }
            (folder / f"{task}.json").write_text(json.dumps(summary, indent=2) + "\n")
    last = float(metrics["acc/mean"][-1]) if steps else math.nan
    return SyntheticRun(run_dir, data_file, steps, groups_per_step, last)
