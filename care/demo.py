"""``care demo``: the whole loop on a CPU, offline, from nothing.

Per seed:

1. synthesise the visual-reasoning task (train / validation / test splits, rendered with PIL);
2. build a tiny random Qwen2.5-VL-architecture model and warm-start it with a short SFT;
3. train GRPO and CARE from that same warm start with the same budget and settings, scoring the
   validation split greedily every ``train.eval_every`` steps (``val/acc`` in ``steps.jsonl``);
4. evaluate the warm start and both final checkpoints on the test split through the lmms-eval
   harness (task ``care_synth``: the training prompt template and verifier, greedy), and the
   warm start once more with every test image replaced by a blank one (does the image matter?);
5. report each model's accuracy (per difficulty too), each RL gain over the warm start and the
   CARE - GRPO difference with 95 % paired-bootstrap intervals over the test items, and, with
   several seeds, the mean over seeds with a Student-t interval.

What a seed changes: the synthetic data (which problems and images), the tiny model's
initialisation and the SFT batch order, and the RL runs' prompt order and sampling. Within one
seed GRPO and CARE share all of them, so their difference is paired item by item.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from care.config import TrainConfig, load_config
from care.data.synth import write_synthetic_dataset
from care.metrics.smoothness import smoothness_summary
from care.runlog import RunReader
from care.stats import Interval, mean_interval, paired_bootstrap, wilson_interval

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
WARM_START = "sft (warm start)"


# One thread by default: the tiny model gains little from more, and a seed's numbers then do
# not depend on how many cores the machine has (see cpu_threads).
DEMO_THREADS = 1
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class DemoSize:
    """The demo's config file and split sizes (the test split decides how small a difference
    the intervals can show: at 600 items a paired interval is a few points wide)."""

    config: str
    n_train: int
    n_val: int
    n_test: int
    image_size: int


SIZES = {
    "full": DemoSize("demo.yaml", n_train=8000, n_val=200, n_test=600, image_size=112),
    "fast": DemoSize("demo_fast.yaml", n_train=48, n_val=8, n_test=12, image_size=56),
}


@dataclass
class ModelResult:
    """One evaluated model of one seed: its per-item test scores (in test-file order) and, for
    an RL run, what its training logged."""

    name: str
    run_dir: Path
    checkpoint: Path
    scores: np.ndarray
    training: dict[str, float] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float(self.scores.mean())


@dataclass
class SeedResult:
    """Everything one seed produced: the warm start, the RL runs, the blank-image check."""

    seed: int
    data_dir: Path
    difficulties: np.ndarray
    models: list[ModelResult]
    blank_scores: np.ndarray

    def model(self, name: str) -> ModelResult:
        return next(m for m in self.models if m.name == name)

    def gain(self, name: str) -> Interval:
        """``name``'s accuracy minus the warm start's, paired by test item."""
        return paired_bootstrap(self.model(WARM_START).scores, self.model(name).scores)

    def blank_drop(self) -> Interval:
        """Warm-start accuracy with blank images minus with the real ones (negative: the image
        carries what the answers need)."""
        return paired_bootstrap(self.model(WARM_START).scores, self.blank_scores)


def _config(size: DemoSize, overrides: list[str]) -> TrainConfig:
    return load_config(CONFIG_DIR / size.config, overrides)


def _blank_test_split(data_dir: Path) -> Path:
    """A copy of the test split whose every image is white (same size): ``<data>/blank/``."""
    blank = data_dir / "blank"
    (blank / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for line in (data_dir / "test.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        names = []
        for position, image in enumerate(row["images"]):
            with Image.open(data_dir / image) as source:
                size = source.size
            name = f"images/{row['id']}-{position}.png"
            Image.new("RGB", size, (255, 255, 255)).save(blank / name)
            names.append(name)
        lines.append(json.dumps({**row, "images": names}))
    (blank / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return blank


def _evaluate(checkpoint: Path, data_dir: Path, cfg: TrainConfig, out_dir: Path) -> np.ndarray:
    """Per-item greedy accuracy of ``checkpoint`` on ``data_dir/test.jsonl`` through the
    lmms-eval harness (task care_synth: the training prompt template and verifier), in
    test-file order. Results land in ``out_dir``."""
    from evaluation.runner import EvalSettings, run_eval

    report = run_eval(
        EvalSettings(
            checkpoint=checkpoint,
            data_root=data_dir,
            tasks=("care_synth",),
            out_dir=out_dir,
            max_new_tokens=cfg.rollout.max_new_tokens,
            batch_size=cfg.rollout.batch_rows,
            device="cpu",
            dtype="float32",
            force=True,
        ),
        echo=lambda line: None,
    )
    if not report.ok:
        raise RuntimeError(f"evaluation of {checkpoint} failed: {report.failures}")
    return _scores_from_samples(report.out_dir, data_dir)


def _scores_from_samples(eval_dir: Path, data_dir: Path) -> np.ndarray:
    """Per-item accuracy from ``eval_dir/care_synth_samples.jsonl``, in the order of
    ``data_dir/test.jsonl`` (lmms-eval's doc_id is the row index; each answer is checked)."""
    samples_file = eval_dir / "care_synth_samples.jsonl"
    if not samples_file.is_file():
        raise FileNotFoundError(f"{samples_file}: no evaluation samples (did this run finish?)")
    answers = [
        json.loads(line)["answer"]
        for line in (data_dir / "test.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    scores = np.full(len(answers), np.nan)
    for line in samples_file.read_text(encoding="utf-8").splitlines():
        sample = json.loads(line)
        doc = int(sample["doc_id"])
        if not 0 <= doc < len(answers) or str(sample["answer"]) != str(answers[doc]):
            raise RuntimeError(
                f"{samples_file}: doc_id {doc} does not match row {doc} of "
                f"{data_dir / 'test.jsonl'}"
            )
        scores[doc] = float(sample["acc"])
    if np.isnan(scores).any():
        missing = int(np.isnan(scores).sum())
        raise RuntimeError(f"{samples_file}: {missing} test items have no score")
    return scores


def _mean(steps: Sequence[dict[str, Any]], key: str) -> float:
    values = [s[key] for s in steps if s.get(key) is not None]
    return float(np.mean(values)) if values else math.nan


def _training_summary(run_dir: Path) -> dict[str, float]:
    """What the demo table shows of a run's log: its failure-signal share, rescue and RGR rates,
    smoothness, training accuracy over the first and last 10 steps, and the validation curve's
    first and last points."""
    records = RunReader(run_dir).steps
    steps = [s for s in records if s.get("acc/mean") is not None]
    validation = [s["val/acc"] for s in records if s.get("val/acc") is not None]
    head, tail = steps[: min(10, len(steps))], steps[-min(10, len(steps)) :]
    return {
        "failure_share": _mean(steps, "signal/failure_share_seq"),
        "rescue_rate": _mean(steps, "rescue/triggered_frac"),
        "rgr_pass_rate": _mean(steps, "rgr/pass_rate"),
        "acc_diff_std": smoothness_summary(steps)["smooth/acc_diff_std"],
        "train_acc_first10": _mean(head, "acc/mean"),
        "train_acc_last10": _mean(tail, "acc/mean"),
        "all_wrong_first10": _mean(head, "groups/all_wrong_frac"),
        "mixed_first10": _mean(head, "groups/mixed_frac"),
        "val_acc_start": validation[0] if validation else math.nan,
        "val_acc_end": validation[-1] if validation else math.nan,
    }


def run_seed(
    out: Path,
    *,
    seed: int,
    fast: bool = False,
    estimators: tuple[str, ...] = ("grpo", "care"),
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> SeedResult:
    """One seed of the demo under ``out`` (data in ``out/data_seed<seed>``, runs in
    ``out/demo_seed<seed>_*``)."""
    from care.train.sft import run_sft
    from care.train.trainer import Trainer

    size = SIZES["fast" if fast else "full"]
    out = Path(out)
    tag = f"demo{'_fast' if fast else ''}_seed{seed}"
    data_dir = out / f"data{'_fast' if fast else ''}_seed{seed}"
    if not (data_dir / "test.jsonl").is_file():
        echo(f"[seed {seed}] writing the synthetic task to {data_dir}")
        write_synthetic_dataset(
            data_dir,
            seed=seed,
            n_train=size.n_train,
            n_test=size.n_test,
            n_val=size.n_val,
            image_size=size.image_size,
        )
    blank_dir = _blank_test_split(data_dir)
    difficulties = _test_difficulties(data_dir)
    common = [
        f"run.out_dir={out}",
        f"run.seed={seed}",
        f"data.train_files=[{data_dir / 'train.jsonl'}]",
        f"data.test_files=[{data_dir / 'test.jsonl'}]",
        f"data.val_files=[{data_dir / 'val.jsonl'}]",
    ]
    sft_cfg = _config(size, [*common, f"run.name={tag}_sft"])
    echo(f"[seed {seed}] SFT warm start ({sft_cfg.sft.steps} steps)")
    warm_start = run_sft(sft_cfg, progress=progress)
    models = [
        ModelResult(
            WARM_START,
            sft_cfg.run_dir,
            warm_start,
            _evaluate(warm_start, data_dir, sft_cfg, sft_cfg.run_dir / "eval" / warm_start.name),
        )
    ]
    blank_scores = _evaluate(
        warm_start, blank_dir, sft_cfg, sft_cfg.run_dir / "eval" / f"{warm_start.name}_blank"
    )
    for estimator in estimators:
        cfg = _config(
            size,
            [
                *common,
                f"run.name={tag}_{estimator}",
                f"algo.estimator={estimator}",
                f"model.path={warm_start}",
            ],
        )
        echo(f"[seed {seed}] {estimator}: {cfg.train.steps} RL steps from the warm start")
        run_dir = Trainer(cfg, progress=progress).fit()
        final = run_dir / "checkpoints" / f"step_{cfg.train.steps}"
        scores = _evaluate(final, data_dir, cfg, run_dir / "eval" / final.name)
        models.append(ModelResult(estimator, run_dir, final, scores, _training_summary(run_dir)))
    return SeedResult(seed, data_dir, difficulties, models, blank_scores)


def _test_difficulties(data_dir: Path) -> np.ndarray:
    return np.array(
        [
            json.loads(line)["difficulty"]
            for line in (data_dir / "test.jsonl").read_text(encoding="utf-8").splitlines()
        ]
    )


def load_seed(
    out: Path, *, seed: int, fast: bool = False, estimators: tuple[str, ...] = ("grpo", "care")
) -> SeedResult:
    """A finished seed read back from ``out`` (its runs, their lmms-eval samples and the
    blank-image evaluation), without training or evaluating anything: ``care demo --report``.

    Raises FileNotFoundError or RunLogError naming the first missing file or run folder (a seed
    that did not finish).
    """
    out = Path(out)
    tag = f"demo{'_fast' if fast else ''}_seed{seed}"
    data_dir = out / f"data{'_fast' if fast else ''}_seed{seed}"
    sft_dir = out / f"{tag}_sft"
    sft_steps = RunReader(sft_dir).config["sft"]["steps"]
    warm_start = sft_dir / "checkpoints" / f"step_{sft_steps}"
    models = [
        ModelResult(
            WARM_START,
            sft_dir,
            warm_start,
            _scores_from_samples(sft_dir / "eval" / warm_start.name, data_dir),
        )
    ]
    blank_scores = _scores_from_samples(
        sft_dir / "eval" / f"{warm_start.name}_blank", data_dir / "blank"
    )
    for estimator in estimators:
        run_dir = out / f"{tag}_{estimator}"
        final = run_dir / "checkpoints" / f"step_{RunReader(run_dir).config['train']['steps']}"
        scores = _scores_from_samples(run_dir / "eval" / final.name, data_dir)
        models.append(ModelResult(estimator, run_dir, final, scores, _training_summary(run_dir)))
    return SeedResult(seed, data_dir, _test_difficulties(data_dir), models, blank_scores)


def run_demo(
    out: Path,
    *,
    seeds: Sequence[int] = (0,),
    fast: bool = False,
    estimators: tuple[str, ...] = ("grpo", "care"),
    progress: bool = True,
    echo: Callable[[str], None] = print,
    threads: int = DEMO_THREADS,
) -> list[SeedResult]:
    """Every seed of the demo with ``threads`` CPU threads (training and the lmms-eval
    subprocesses); writes ``out/demo[_fast]_summary.json`` with what the report prints, per seed
    and across seeds."""
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    with cpu_threads(threads):
        results = [
            run_seed(out, seed=seed, fast=fast, estimators=estimators, progress=progress, echo=echo)
            for seed in seeds
        ]
    write_summary(out, results, fast=fast, threads=threads)
    return results


@contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Run the body with ``count`` torch threads, in this process and in the subprocesses it
    starts (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``); the previous settings come back after.

    The thread count is part of what a seed reproduces: torch splits a float reduction into one
    partial sum per thread, so another count rounds differently, and over hundreds of SFT and
    RL updates the runs part ways (seed 0's warm start: 57.7 % with one thread, 47.3 % with two).
    """
    if count < 1:
        raise ValueError(f"threads must be >= 1, got {count}")
    previous = torch.get_num_threads()
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    torch.set_num_threads(count)
    os.environ.update({name: str(count) for name in _THREAD_VARIABLES})
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def summary_file(out: Path, *, fast: bool = False) -> Path:
    return Path(out) / f"demo{'_fast' if fast else ''}_summary.json"


def recorded_threads(out: Path, *, fast: bool = False) -> int | None:
    """The thread count the summary already in ``out`` records (None without one): what
    ``care demo --report`` keeps when it writes the summary again from finished runs."""
    path = summary_file(out, fast=fast)
    if not path.is_file():
        return None
    try:
        threads = json.loads(path.read_text(encoding="utf-8")).get("threads")
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{path}: not a demo summary ({error})") from error
    return threads if isinstance(threads, int) else None


def write_summary(
    out: Path, results: Sequence[SeedResult], *, fast: bool = False, threads: int | None = None
) -> Path:
    """``out/demo[_fast]_summary.json``: `summary_data` of ``results`` and the CPU threads the
    runs trained with (None when not known here: ``care demo --report`` reads finished runs)."""
    path = summary_file(out, fast=fast)
    data = {"threads": threads, **summary_data(results)}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def _interval_data(interval: Interval) -> dict[str, float]:
    return {"estimate": interval.estimate, "low": interval.low, "high": interval.high}


def summary_data(results: Sequence[SeedResult]) -> dict[str, Any]:
    """The report as plain data: per seed every model's accuracy (overall and per difficulty),
    gain over the warm start and CARE - GRPO with their intervals, the blank-image check and the
    training summaries; across seeds the mean of each with its t-interval."""
    seeds = []
    for result in results:
        rows = []
        for model in result.models:
            hits = int(model.scores.sum())
            row: dict[str, Any] = {
                "model": model.name,
                "run_dir": str(model.run_dir),
                "checkpoint": str(model.checkpoint),
                "n": len(model.scores),
                "accuracy": _interval_data(wilson_interval(hits, len(model.scores))),
                "by_difficulty": {
                    str(level): float(model.scores[result.difficulties == level].mean())
                    for level in sorted(set(result.difficulties.tolist()))
                },
                "training": model.training,
            }
            if model.name != WARM_START:
                row["gain"] = _interval_data(result.gain(model.name))
            rows.append(row)
        entry: dict[str, Any] = {
            "seed": result.seed,
            "data_dir": str(result.data_dir),
            "models": rows,
            "blank_images": {
                "accuracy": float(result.blank_scores.mean()),
                "drop": _interval_data(result.blank_drop()),
            },
        }
        names = [m.name for m in result.models]
        if "grpo" in names and "care" in names:
            entry["care_minus_grpo"] = _interval_data(
                paired_bootstrap(result.model("grpo").scores, result.model("care").scores)
            )
        seeds.append(entry)
    return {"seeds": seeds, "across_seeds": _across_seeds(results)}


def _across_seeds(results: Sequence[SeedResult]) -> dict[str, dict[str, float]]:
    """Mean over seeds with a Student-t interval (NaN bounds with one seed) of every figure."""
    values: dict[str, list[float]] = {}
    for result in results:
        for model in result.models:
            values.setdefault(f"{model.name} accuracy", []).append(model.accuracy)
            if model.name != WARM_START:
                values.setdefault(f"{model.name} gain", []).append(result.gain(model.name).estimate)
        names = [m.name for m in result.models]
        if "grpo" in names and "care" in names:
            values.setdefault("care - grpo", []).append(
                result.model("care").accuracy - result.model("grpo").accuracy
            )
        values.setdefault("warm start, blank images", []).append(float(result.blank_scores.mean()))
    return {name: _interval_data(mean_interval(v)) for name, v in values.items()}


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def format_report(results: Sequence[SeedResult]) -> str:
    """The demo's printed report (percent points; intervals are 95 %)."""
    lines: list[str] = []
    for result in results:
        levels = sorted(set(result.difficulties.tolist()))
        lines.append(
            f"seed {result.seed}: test accuracy on {len(result.difficulties)} held-out items "
            "(greedy, lmms-eval task care_synth); [95 % interval]: Wilson for accuracy, paired "
            "bootstrap over items for gains"
        )
        level_heads = " | ".join(f"d{level}" for level in levels)
        lines.append(
            f"| run | test acc | {level_heads} | gain vs warm start | val acc start -> end | "
            "failure-signal share | rescue rate | RGR pass rate |"
        )
        lines.append("|---" * (7 + len(levels)) + "|")
        for model in result.models:
            hits = int(model.scores.sum())
            accuracy = wilson_interval(hits, len(model.scores)).format()
            per_level = " | ".join(
                _pct(float(model.scores[result.difficulties == level].mean())) for level in levels
            )
            training = model.training
            if model.name == WARM_START:
                gain, curve, share, rescue, rgr = "-", "-", "-", "-", "-"
            else:
                interval = result.gain(model.name)
                gain = interval.format() + (" *" if interval.excludes_zero() else "")
                curve = f"{_pct(training['val_acc_start'])} -> {_pct(training['val_acc_end'])}"
                share = _pct(training["failure_share"])
                rescue = _pct(training["rescue_rate"])
                rgr = _pct(training["rgr_pass_rate"])
            lines.append(
                f"| {model.name} | {accuracy} | {per_level} | {gain} | {curve} | {share} | "
                f"{rescue} | {rgr} |"
            )
        names = [m.name for m in result.models]
        if "grpo" in names and "care" in names:
            diff = paired_bootstrap(result.model("grpo").scores, result.model("care").scores)
            verdict = "shown" if diff.excludes_zero() else "not shown: the interval holds 0"
            lines.append(f"CARE - GRPO (paired by item): {diff.format()} ({verdict})")
        drop = result.blank_drop()
        lines.append(
            f"blank-image check: the warm start scores {_pct(float(result.blank_scores.mean()))} "
            f"with every test image blank; change {drop.format()}"
        )
        lines.append("(* the interval excludes 0)")
        lines.append("")
    if len(results) > 1:
        lines.append(f"across {len(results)} seeds: mean [95 % Student-t interval over seeds]")
        lines.append("| figure | mean over seeds |")
        lines.append("|---|---|")
        for name, data in _across_seeds(results).items():
            interval = Interval(data["estimate"], data["low"], data["high"], len(results))
            lines.append(f"| {name} | {interval.format()} |")
        lines.append("")
    return "\n".join(lines)
