"""Whole-step cost of CARE against GRPO in the reference trainer, measured inside ONE run.

What runs: the synthetic visual task and the tiny Qwen2.5-VL-architecture model of
``configs/demo_fast.yaml`` (``--config`` picks another), with the paper's group size G = 8, a
64-token response budget and 8 prompts a step (``BENCH_OVERRIDES``), warm-started by a short SFT
(``care.train.sft.run_sft``) so responses have the think/answer layout, realistic length and a
few correct answers (RGR only repairs groups that have an anchor). Then one
:class:`~care.train.trainer.Trainer` per estimator — ``grpo``, ``care_no_rgr`` (CARE without
RGR) and ``care`` — all built from the same config, seed, data and warm-start weights; only
``algo.estimator`` differs (each estimator then fills in its own defaults: RGR on/off, token
weighting — printed below the config).

Method (why the comparison is fair):

- Rollouts are seeded by (run seed, step) and prompts come from a seeded sampler, so two
  trainers draw the same prompts and decode the same responses as long as their weights match.
  Weights diverge after an update, so before EVERY timed step each trainer is reset to the same
  starting point: warm-start weights, fresh optimizer and scheduler state, the prompt sampler's
  position for that step and the same global RNG state. Step k of every estimator therefore sees
  the same prompts and the same rollouts. This is checked — the token ids of every rollout are
  compared across estimators and repeats — and the script stops if they differ.
- Step 1 is a warm-up (allocator, lazy init, first-call caches) and stays out of the numbers.
  Steps 2…N+1 are timed; each draws new prompts, so the medians span several batches.
- The machine is shared, and another process can stall any phase. Each step is therefore run
  ``--repeats`` times per estimator from the same reset state (identical work), and each phase
  keeps its fastest repeat: the least-disturbed time of that work. A step's time is the sum of
  its phases so kept. Inside a step the estimators run interleaved, in an order that rotates
  from repeat to repeat, so a slow moment of the machine does not land on one estimator only.
- The phase times are the trainer's own timers (``care/train/timing.py``), read after the step
  so the ``log`` phase counts too. Repeats log to the run folders under running record numbers.

Reported: the median over the timed steps of each phase, and CARE/GRPO ratios of (a) the full
step and (b) the step without the rollout phase. Each ratio is the median of the per-step ratios
(both sides of a pair ran the same batch, so noise between batches cancels; this one is checked
against the target) and, in brackets, the ratio of the times summed over all timed steps (what a
run's wall clock sees, but more exposed to a single disturbed step). The rollout is the same work
for every estimator and dominates the step, so (b) is the stricter view of what CARE adds; the
targets are stated on (a). The RGR phase (the repairs, decoded as one batched ``generate`` call
with one row per repair, plus the repairs' old-log-prob forward) is printed on its own, with the
number of repairs.

Targets (issue "Reference trainer", item 10): full-step ratio CARE/GRPO <= 1.10 without RGR
(the rationale embeddings ride on the old-log-prob forward, so the extra cost is the advantage
computation) and <= 1.35 with RGR.

One torch thread by default: the tiny model gains nothing from a second thread, and on a shared
CPU threads that wait for each other add stalls far larger than the differences measured here
(seen here: a step about 5x slower with 2 threads under load). Both sides of every ratio run
with the same setting.

Usage (about 2 minutes on 2 CPU cores)::

    .venv/bin/python bench/bench_step.py [--steps 6] [--repeats 3] [--sft-steps 300]
        [--threads 1] [--device cpu|cuda] [--config configs/demo_fast.yaml] [--set KEY=VALUE]
        [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from care.config import TrainConfig, load_config  # noqa: E402
from care.data.synth import write_synthetic_dataset  # noqa: E402
from care.rollout.base import RolloutOutput, RolloutRequest, SamplingParams  # noqa: E402
from care.runlog import GroupRecord, RunWriter, SampleRecord  # noqa: E402
from care.train.sft import run_sft  # noqa: E402
from care.train.trainer import Trainer  # noqa: E402

ESTIMATORS = ("grpo", "care_no_rgr", "care")
# The paper's group size (G = 8, so K = 4 hard negatives can exist) and a response budget that
# holds a whole warm-started answer (SFT targets are 48-72 tiny-BPE tokens).
BENCH_OVERRIDES = (
    "rollout.n=8",
    "rollout.max_new_tokens=64",
    "train.prompts_per_step=8",
    "train.mini_batch_prompts=4",
    "train.micro_batch_rows=64",
    "sft.batch_rows=16",
    # Held-out validation is not part of a training step's cost (and the bench has no val split).
    "train.eval_every=0",
)
PHASES = ("rollout", "old_logp_embed", "advantage", "rgr", "update", "log")
TARGETS = {"care_no_rgr": 1.10, "care": 1.35}
BATCH_FACTS = ("acc/mean", "groups/mixed_frac", "groups/all_wrong_frac")


class RecordingEngine:
    """Wraps a rollout engine and keeps what it returned, split into ordinary rollouts and RGR
    repairs (a repair request carries an assistant prefix), so the script can check that every
    estimator decoded the same responses and count the repairs."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.suppress_token_ids = list(getattr(engine, "suppress_token_ids", []))
        self.rollout_ids: list[list[int]] = []
        self.repairs = 0
        self.repair_seconds = 0.0

    def clear(self) -> None:
        self.rollout_ids = []
        self.repairs = 0
        self.repair_seconds = 0.0

    def generate(
        self, requests: Sequence[RolloutRequest], params: SamplingParams
    ) -> list[list[RolloutOutput]]:
        start = time.perf_counter()
        outputs = self.engine.generate(requests, params)
        seconds = time.perf_counter() - start
        if any(request.assistant_prefix for request in requests):
            self.repairs += len(requests)
            self.repair_seconds += seconds
        else:
            self.rollout_ids.extend(
                list(out.response_ids) for samples in outputs for out in samples
            )
        return outputs

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.engine.sync_weights(model)


class RenumberingWriter:
    """Forwards the trainer's run-log writes under a running record number, so the same step can
    be repeated (the writer wants increasing steps) while every write still happens for real."""

    def __init__(self, writer: RunWriter) -> None:
        self.writer = writer
        self.number = writer.last_step or 0

    def log_step(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.number += 1
        self.writer.log_step(self.number, metrics)

    # The trainer writes a step's group and sample records before its step record, so they
    # belong to the number log_step is about to take; each record carries its step too.
    def log_groups(self, step: int, records: Sequence[GroupRecord]) -> None:
        number = self.number + 1
        self.writer.log_groups(number, [replace(r, step=number) for r in records])

    def log_samples(self, step: int, records: Sequence[SampleRecord]) -> None:
        number = self.number + 1
        self.writer.log_samples(number, [replace(r, step=number) for r in records])

    def finish(self, status: str = "finished") -> None:
        self.writer.finish(status)


@dataclass
class StartingPoint:
    """Everything a step reads that an update changes: weights, optimizer, scheduler, mode."""

    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    training: bool

    @classmethod
    def capture(cls, trainer: Trainer) -> StartingPoint:
        return cls(
            weights={k: v.detach().clone() for k, v in trainer.policy.state_dict().items()},
            optimizer=copy.deepcopy(trainer.optimizer.state_dict()),
            scheduler=copy.deepcopy(trainer.scheduler.state_dict()),
            training=trainer.policy.training,
        )

    def restore(self, trainer: Trainer) -> None:
        trainer.policy.load_state_dict(self.weights)
        trainer.optimizer.load_state_dict(copy.deepcopy(self.optimizer))
        trainer.scheduler.load_state_dict(copy.deepcopy(self.scheduler))
        trainer.policy.train(self.training)


@dataclass
class EstimatorRun:
    """One estimator's trainer and, per timed step, what the bench measured."""

    trainer: Trainer
    engine: RecordingEngine
    start: StartingPoint
    phase_seconds: dict[str, list[float]] = field(default_factory=dict)
    repairs: list[int] = field(default_factory=list)
    repair_decode_seconds: list[float] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    response_tokens: list[float] = field(default_factory=list)
    batch_facts: dict[str, list[float]] = field(default_factory=dict)

    def step_seconds(self, without: tuple[str, ...] = ()) -> list[float]:
        """Per timed step: the sum of its phases (less the ``without`` ones)."""
        kept = [self.phase_seconds[p] for p in PHASES if p not in without]
        return [sum(values) for values in zip(*kept, strict=True)]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bench_config(
    args: argparse.Namespace, data_dir: Path, out_dir: Path, *extra: str
) -> TrainConfig:
    """``--config`` with the bench's overrides, then the ``--set`` ones, then ``extra``."""
    overrides = [
        *BENCH_OVERRIDES,
        f"run.out_dir={out_dir}",
        f"run.seed={args.seed}",
        f"data.train_files=[{data_dir / 'train.jsonl'}]",
        f"train.steps={args.steps + 1}",
        "train.save_every=0",
        f"train.device={args.device}",
        f"sft.steps={args.sft_steps}",
    ]
    return load_config(args.config, [*overrides, *args.set, *extra])


def build_runs(
    args: argparse.Namespace, data_dir: Path, out_dir: Path, checkpoint: Path
) -> dict[str, EstimatorRun]:
    """One trainer per estimator from the same config and warm start; only the estimator differs."""
    runs = {}
    for estimator in ESTIMATORS:
        cfg = bench_config(
            args,
            data_dir,
            out_dir,
            f"run.name=bench_{estimator}",
            f"model.path={checkpoint}",
            f"algo.estimator={estimator}",
        )
        trainer = Trainer(cfg, progress=False)
        engine = RecordingEngine(trainer.engine)
        trainer.engine = engine
        assert trainer.writer is not None
        trainer.writer = RenumberingWriter(trainer.writer)  # type: ignore[assignment]
        runs[estimator] = EstimatorRun(trainer, engine, StartingPoint.capture(trainer))
    return runs


def run_steps(runs: dict[str, EstimatorRun], steps: int, repeats: int) -> None:
    """Step 1 (warm-up) then ``steps`` timed steps, each ``repeats`` times per estimator from the
    same reset state; every run of step k must decode the same rollouts."""
    names = list(runs)
    rng_state = torch.get_rng_state()
    for step in range(1, steps + 2):
        # All trainers hold the same sampler position here (one draw per step, no refills).
        cursor = runs[names[0]].trainer.sampler.state_dict()
        decoded: list[tuple[str, list[list[int]]]] = []
        fastest: dict[str, dict[str, float]] = {name: {} for name in names}
        for repeat in range(repeats if step > 1 else 1):
            shift = (step + repeat) % len(names)
            for name in names[shift:] + names[:shift]:
                run = runs[name]
                run.start.restore(run.trainer)
                run.trainer.sampler.load_state_dict(cursor)
                torch.set_rng_state(rng_state)
                run.engine.clear()
                logged = run.trainer.train_step(step)
                # Read the timer after the step: the returned metrics are assembled inside the
                # "log" phase, so they never include that phase's own time.
                timed = run.trainer.timer.metrics()
                decoded.append((name, run.engine.rollout_ids))
                timed["time/repair_decode"] = run.engine.repair_seconds
                for phase in (*PHASES, "repair_decode"):
                    seconds = timed.get(f"time/{phase}", 0.0)
                    fastest[name][phase] = min(fastest[name].get(phase, seconds), seconds)
                if repeat == 0 and step > 1:
                    run.repairs.append(run.engine.repairs)
                    run.rows.append(len(run.engine.rollout_ids) + run.engine.repairs)
                    run.response_tokens.append(
                        sum(len(ids) for ids in run.engine.rollout_ids)
                        / max(1, len(run.engine.rollout_ids))
                    )
                    for key in BATCH_FACTS:
                        value = logged.get(key)
                        run.batch_facts.setdefault(key, []).append(
                            float("nan") if value is None else float(value)
                        )
        first_name, first_ids = decoded[0]
        for name, ids in decoded[1:]:
            if ids != first_ids:
                raise RuntimeError(
                    f"step {step}: {name} decoded different rollouts than {first_name}; the "
                    "comparison would not be on the same batch (non-deterministic sampling?)"
                )
        if step > 1:
            for name in names:
                for phase in PHASES:
                    runs[name].phase_seconds.setdefault(phase, []).append(fastest[name][phase])
                runs[name].repair_decode_seconds.append(fastest[name]["repair_decode"])
        label = " (warm-up, not counted)" if step == 1 else ""
        print(
            f"  step {step}{label}: {len(decoded)} runs, rollouts identical across all",
            flush=True,
        )


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def print_machine(args: argparse.Namespace, cfg: TrainConfig) -> None:
    print("== machine ==")
    print(f"python {platform.python_version()}, torch {torch.__version__}, {platform.platform()}")
    print(
        f"device: {cfg.train.device}; torch threads: {torch.get_num_threads()} "
        f"(interop {torch.get_num_interop_threads()}); os.cpu_count: {os.cpu_count()}; "
        f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if cfg.train.device.startswith("cuda") and torch.cuda.is_available():
        print(f"gpu: {torch.cuda.get_device_name()}")
    print(
        f"timed steps: {args.steps} after 1 warm-up step, {args.repeats} repeats each; "
        f"SFT warm-start steps: {args.sft_steps}"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")


def print_config(runs: dict[str, EstimatorRun]) -> None:
    print("== config (grpo, resolved) ==")
    base = runs["grpo"].trainer.cfg.to_dict()
    print(json.dumps(base, sort_keys=True))
    flat_base = _flatten(base)
    for name in ESTIMATORS[1:]:
        flat = _flatten(runs[name].trainer.cfg.to_dict())
        diff = {
            key: value
            for key, value in flat.items()
            if flat_base.get(key) != value and not key.startswith("run.")
        }
        print(f"{name} differs only in: {json.dumps(diff, sort_keys=True)}")


def print_report(runs: dict[str, EstimatorRun]) -> None:
    grpo = runs["grpo"]
    print("== phase breakdown: median over timed steps of each phase's fastest repeat, seconds ==")
    print(f"{'phase':<16}" + "".join(f"{name:>14}" for name in ESTIMATORS))
    for phase in PHASES:
        cells = "".join(f"{median(runs[n].phase_seconds[phase]):>14.4f}" for n in ESTIMATORS)
        print(f"{phase:<16}{cells}")
    full = {n: runs[n].step_seconds() for n in ESTIMATORS}
    bare = {n: runs[n].step_seconds(without=("rollout",)) for n in ESTIMATORS}
    print(f"{'step':<16}" + "".join(f"{median(full[n]):>14.4f}" for n in ESTIMATORS))
    print(f"{'step - rollout':<16}" + "".join(f"{median(bare[n]):>14.4f}" for n in ESTIMATORS))
    print(f"{'rows / step':<16}" + "".join(f"{median(runs[n].rows):>14.1f}" for n in ESTIMATORS))
    print(
        f"{'mean resp. toks':<16}"
        + "".join(f"{median(runs[n].response_tokens):>14.1f}" for n in ESTIMATORS)
    )
    facts = grpo.batch_facts
    print(
        "batches (the same for every estimator), per timed step: accuracy "
        f"{[round(v, 3) for v in facts['acc/mean']]}; mixed groups "
        f"{[round(v, 2) for v in facts['groups/mixed_frac']]}; all-wrong groups "
        f"{[round(v, 2) for v in facts['groups/all_wrong_frac']]}"
    )

    care = runs["care"]
    print("== RGR (estimator care) ==")
    print(
        f"repairs per timed step: {care.repairs} (total {sum(care.repairs)}; one decoded row "
        "each, a step's repairs in one batched generate call)"
    )
    print(
        f"RGR phase (decode + the repairs' old-log-prob forward) median "
        f"{median(care.phase_seconds['rgr']):.4f} s "
        f"(mean {statistics.fmean(care.phase_seconds['rgr']):.4f} s); its repair decode alone: "
        f"median {median(care.repair_decode_seconds):.4f} s"
    )

    print(
        "== CARE / GRPO step-time ratios: median of the per-step ratios (same batch in each "
        "pair); in brackets the ratio of the summed times over all timed steps =="
    )
    for name in ("care_no_rgr", "care"):
        run = runs[name]
        target = TARGETS[name]
        readings = {}
        for label, times in (("full step", full), ("without rollout", bare)):
            paired = median([c / g for c, g in zip(times[name], times["grpo"], strict=True)])
            summed = sum(times[name]) / sum(times["grpo"])
            readings[label] = (paired, summed)
        paired, summed = readings["full step"]
        verdict = "meets" if paired <= target else "MISSES"
        print(
            f"{name:<12} full step:       {paired:6.3f} [{summed:6.3f}]  "
            f"target <= {target:.2f}: {verdict}"
        )
        paired, summed = readings["without rollout"]
        print(f"{'':<12} without rollout: {paired:6.3f} [{summed:6.3f}]")
        extra = ", ".join(
            f"{phase} {median(run.phase_seconds[phase]) - median(grpo.phase_seconds[phase]):+.4f}"
            for phase in PHASES
        )
        print(f"{'':<12} median phase seconds minus GRPO's: {extra}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=6, help="timed steps (after 1 warm-up)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each timed step")
    parser.add_argument("--sft-steps", type=int, default=300, help="SFT warm-start updates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: torch's default)"
    )
    parser.add_argument("--n-train", type=int, default=200, help="synthetic training problems")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo_fast.yaml")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    parser.add_argument("--out", type=Path, default=None, help="keep data and runs here")
    args = parser.parse_args()
    for name in ("steps", "repeats", "sft_steps", "n_train"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    transformers.utils.logging.disable_progress_bar()  # one bar per model load drowns the report
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_step_") as scratch:
        out_dir = args.out or Path(scratch)
        data_dir = out_dir / "data"
        sft_cfg = bench_config(args, data_dir, out_dir, "run.name=sft")
        print_machine(args, sft_cfg)
        write_synthetic_dataset(
            data_dir,
            seed=args.seed,
            n_train=args.n_train,
            n_test=8,
            image_size=sft_cfg.model.image_size,
            overwrite=True,
        )
        start = time.perf_counter()
        checkpoint = run_sft(sft_cfg, progress=False)
        print(f"SFT warm start: {args.sft_steps} steps in {time.perf_counter() - start:.1f} s")
        runs = build_runs(args, data_dir, out_dir, checkpoint)
        print_config(runs)
        print("== steps ==")
        start = time.perf_counter()
        run_steps(runs, args.steps, args.repeats)
        print(f"steps took {time.perf_counter() - start:.1f} s")
        print_report(runs)
        for run in runs.values():
            run.trainer.writer.finish("finished")  # type: ignore[union-attr]
    print(f"total wall time: {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
