"""``care demo``: the whole loop on a CPU, offline, from nothing.

1. synthesise the visual-reasoning task (train/test splits, rendered with PIL);
2. build a tiny random Qwen2.5-VL-architecture model and warm-start it with SFT;
3. train GRPO and CARE from that same warm start with the same budget;
4. evaluate the warm start and both final checkpoints on the test split through the lmms-eval
   harness (task ``care_synth``: the training prompt template and verifier);
5. print the comparison table and where everything is.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from care.config import TrainConfig, load_config
from care.data.synth import write_synthetic_dataset
from care.metrics.smoothness import smoothness_summary
from care.runlog import RunReader

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class DemoSize:
    config: str
    n_train: int
    n_test: int


SIZES = {
    "full": DemoSize("demo.yaml", n_train=600, n_test=120),
    "fast": DemoSize("demo_fast.yaml", n_train=48, n_test=12),
}


@dataclass
class DemoRow:
    estimator: str
    run_dir: Path
    test_accuracy: float
    failure_share: float
    rescue_rate: float
    rgr_pass_rate: float
    acc_diff_std: float


def _mean(steps: list[dict[str, Any]], key: str) -> float:
    values = [s[key] for s in steps if s.get(key) is not None]
    return float(np.mean(values)) if values else float("nan")


def _config(size: DemoSize, overrides: list[str]) -> TrainConfig:
    return load_config(CONFIG_DIR / size.config, overrides)


def _evaluate(checkpoint: Path, data_dir: Path, cfg: TrainConfig) -> float:
    """Score ``checkpoint`` on the test split through the lmms-eval harness (task care_synth):
    the same prompt template and verifier as training, greedy decoding. Results land in
    ``<run>/eval/<checkpoint>/``."""
    from evaluation.runner import EvalSettings, run_eval

    report = run_eval(
        EvalSettings(
            checkpoint=checkpoint,
            data_root=data_dir,
            tasks=("care_synth",),
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
    summary = json.loads((report.out_dir / "care_synth.json").read_text())
    return float(summary["accuracy"])


def run_demo(
    out: Path, *, fast: bool = False, seed: int = 0, estimators: tuple[str, ...] = ("grpo", "care")
) -> list[DemoRow]:
    """Run the demo under ``out`` (data in ``out/data``, runs in ``out/demo_seed<seed>_*``)."""
    from care.train.sft import run_sft
    from care.train.trainer import Trainer

    size = SIZES["fast" if fast else "full"]
    out = Path(out)
    data_dir = out / ("data_fast" if fast else "data")
    base = _config(size, [])
    if not (data_dir / "train.jsonl").is_file():
        write_synthetic_dataset(
            data_dir, seed=0, n_train=size.n_train, n_test=size.n_test, image_size=base.model.image_size
        )
    train_file, test_file = data_dir / "train.jsonl", data_dir / "test.jsonl"
    prefix = f"demo{'_fast' if fast else ''}_seed{seed}"
    common = [
        f"run.out_dir={out}",
        f"run.seed={seed}",
        f"data.train_files=[{train_file}]",
        f"data.test_files=[{test_file}]",
    ]
    sft_cfg = _config(size, [*common, f"run.name={prefix}_sft"])
    warm_start = run_sft(sft_cfg, progress=not fast)
    warm_accuracy = _evaluate(warm_start, data_dir, sft_cfg)
    rows = [
        DemoRow("sft (warm start)", sft_cfg.run_dir, warm_accuracy, *([math.nan] * 4))
    ]
    for estimator in estimators:
        cfg = _config(
            size,
            [
                *common,
                f"run.name={prefix}_{estimator}",
                f"algo.estimator={estimator}",
                f"model.path={warm_start}",
            ],
        )
        run_dir = Trainer(cfg, progress=not fast).fit()
        final = run_dir / "checkpoints" / f"step_{cfg.train.steps}"
        accuracy = _evaluate(final, data_dir, cfg)
        steps = RunReader(run_dir).steps
        smooth = smoothness_summary(steps)
        rows.append(
            DemoRow(
                estimator=estimator,
                run_dir=run_dir,
                test_accuracy=accuracy,
                failure_share=_mean(steps, "signal/failure_share_seq"),
                rescue_rate=_mean(steps, "rescue/triggered_frac"),
                rgr_pass_rate=_mean(steps, "rgr/pass_rate"),
                acc_diff_std=smooth["smooth/acc_diff_std"],
            )
        )
    summary = out / f"{prefix}_summary.json"
    summary.write_text(
        json.dumps([{**row.__dict__, "run_dir": str(row.run_dir)} for row in rows], indent=2) + "\n"
    )
    return rows


def _fmt(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def format_table(rows: list[DemoRow]) -> str:
    header = (
        "| run | test acc | failure-signal share | rescue rate | RGR pass rate | acc step-diff std |\n"
        "|---|---|---|---|---|---|"
    )
    lines = [header]
    for row in rows:
        lines.append(
            f"| {row.estimator} | {_fmt(row.test_accuracy)} | {_fmt(row.failure_share)} | "
            f"{_fmt(row.rescue_rate)} | {_fmt(row.rgr_pass_rate)} | {_fmt(row.acc_diff_std)} |"
        )
    return "\n".join(lines)
