"""How well the logged 32-number projection keeps the geometry of real rationale embeddings.

What runs: the synthetic visual task and the tiny Qwen2.5-VL-architecture model of
``configs/demo.yaml`` (hidden size 96, G = 8; ``--config`` picks another), warm-started by a
short SFT (``care.train.sft.run_sft``) so responses have the think/answer layout, then
``--steps`` CARE steps of the reference trainer. At each step's log phase the script keeps the
rationale embeddings the trainer computed (``[N, H]``, L2-normalised) and the projections it
logged (``care.train.projection.project_rationales``: ``[N, 32]``, 4 decimals).

Reported, over the ordinary rollouts of all steps together (the points the failure map clusters):

- the relative error ``|d' − d| / d`` of the pairwise cosine distances (``d`` between two
  embeddings, ``d'`` between their logged projections): median, 95th percentile, maximum; and the
  Spearman rank correlation of ``d'`` with ``d``;
- the same with the unrounded projection, which shows what the 4-decimal rounding adds;
- over ``--matrix-draws`` other seeds of the matrix on the same embeddings (one run is one
  draw), the median and the worst draw of those figures, for the logged (orthonormalised)
  matrix and for the plain Gaussian one it comes from (``care.train.projection.gaussian_matrix``,
  scikit-learn's GaussianRandomProjection).

And per group, whether CARE would have chosen the same hard negatives from the projections: the
selection (nearest-M pool, then farthest-first, ``care_advantages``) is recomputed on the
ordinary rows with the embeddings, where it must equal what the trainer chose (else exit status
1), and with the logged projections in their place. Printed: the share of groups whose first
pick is unchanged (for an anchored group: the nearest failure, the one RGR repairs), whose
picked set is unchanged, and whose ordered selection is unchanged.

Last, the size of the run's groups.jsonl with and without the ``projection`` field (the same
records, written as the run writer writes them). ``--size-of RUN_DIR ...`` prints only that, for
existing runs (e.g. those of ``care demo``).

Usage (about 3 minutes on 2 CPU cores)::

    .venv/bin/python bench/bench_projection.py [--steps 4] [--sft-steps 300] [--seed 0]
        [--matrix-draws 20] [--config configs/demo.yaml] [--threads 1] [--set KEY=VALUE]
        [--out DIR]
    .venv/bin/python bench/bench_projection.py --size-of runs/demo_fast_seed0_care
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from care.algo.registry import AdvantageBatch  # noqa: E402
from care.config import TrainConfig, load_config  # noqa: E402
from care.data.synth import write_synthetic_dataset  # noqa: E402
from care.runlog import GROUPS_FILE  # noqa: E402
from care.runlog.values import encode_line  # noqa: E402
from care.train.batch import StepBatch  # noqa: E402
from care.train.projection import (  # noqa: E402
    gaussian_matrix,
    project_rationales,
    projection_distortion,
    projection_matrix,
)
from care.train.sft import run_sft  # noqa: E402
from care.train.trainer import Trainer  # noqa: E402

BENCH_OVERRIDES = ("train.save_every=0", "train.eval_every=0", "sft.batch_rows=16")


@dataclass
class Kept:
    """What the script keeps from each step: embeddings and logged projections of the ordinary
    rows, and for every group with K' > 0 its pick order under both."""

    embeddings: list[np.ndarray] = field(default_factory=list)
    projected: list[np.ndarray] = field(default_factory=list)
    unrounded: list[np.ndarray] = field(default_factory=list)
    picks: list[tuple[bool, list[int], list[int]]] = field(default_factory=list)


def ordinary_selection(trainer: Trainer, batch: StepBatch, embeddings: torch.Tensor) -> Any:
    """CARE's selection on the ordinary rows (no RGR rows) with `embeddings` ``[N_ordinary, D]``:
    the estimator's CareOutput."""
    rows = [i for i, row in enumerate(batch.rows) if row.reflected_from < 0]
    index = torch.tensor(rows)
    advantage_batch = AdvantageBatch(
        rewards=batch.column("reward", torch.float32)[index],
        correct=batch.verdict_column("acc")[index],
        group_index=batch.column("group", torch.long)[index],
        think_len=batch.think_len[index],
        answer_len=batch.answer_len[index],
        embeddings=embeddings,
        old_logprob_sum=batch.old_logp_sum.float()[index],
        response_len=batch.response_len[index],
    )
    return trainer.estimator.advantages(advantage_batch, trainer.care_cfg).care


def pick_orders(care: Any, groups: torch.Tensor) -> dict[int, list[int]]:
    """group -> its ordinary rows in pick order (nearest first)."""
    orders: dict[int, list[tuple[int, int]]] = {}
    for row in torch.nonzero(care.picked_rank >= 0).flatten().tolist():
        orders.setdefault(int(groups[row]), []).append((int(care.picked_rank[row]), row))
    return {group: [row for _, row in sorted(picks)] for group, picks in orders.items()}


def keep_step(trainer: Trainer, batch: StepBatch, result: Any, kept: Kept) -> None:
    """Record one step (called from the trainer's log phase, before it logs)."""
    ordinary = torch.tensor([row.reflected_from < 0 for row in batch.rows])
    embeddings = batch.embeddings[ordinary]
    projected = project_rationales(embeddings, trainer.cfg.run.seed)
    kept.embeddings.append(embeddings.numpy())
    kept.projected.append(projected.numpy())
    seed, hidden_size = trainer.cfg.run.seed, embeddings.shape[1]
    kept.unrounded.append((embeddings.double() @ projection_matrix(seed, hidden_size)).numpy())
    groups = batch.column("group", torch.long)[ordinary]
    with_embeddings = pick_orders(ordinary_selection(trainer, batch, embeddings), groups)
    trained = pick_orders(result.care, batch.column("group", torch.long))
    if with_embeddings != trained:
        print("FAIL: the selection recomputed on the ordinary rows differs from the trainer's")
        sys.exit(1)
    unit = torch.nn.functional.normalize(projected.float(), dim=1)
    with_projection = pick_orders(ordinary_selection(trainer, batch, unit), groups)
    rescued = result.care.rescued[ordinary]
    for group, order in with_embeddings.items():
        anchored = not bool(rescued[groups == group].any())
        kept.picks.append((anchored, order, with_projection.get(group, [])))


def print_distortion(kept: Kept) -> None:
    embeddings = np.concatenate(kept.embeddings)
    print(f"rollouts: {len(embeddings)} (hidden size {embeddings.shape[1]} -> 32)")
    for name, projected in (
        ("logged (4 decimals)", np.concatenate(kept.projected)),
        ("unrounded", np.concatenate(kept.unrounded)),
    ):
        measured = projection_distortion(embeddings, projected)
        print(
            f"{name:>20}: relative error of cosine distances median {measured['median']:.3f}, "
            f"p95 {measured['p95']:.3f}, max {measured['max']:.3f}; Spearman "
            f"{measured['spearman']:.4f} over {int(measured['pairs'])} pairs "
            f"({int(measured['identical_pairs'])} identical; median cosine distance "
            f"{measured['median_distance']:.3f})"
        )


def print_draws(kept: Kept, draws: int) -> None:
    """The distortion figures over `draws` seeds of each kind of matrix (unrounded)."""
    embeddings = np.concatenate(kept.embeddings).astype(np.float64)
    hidden_size = embeddings.shape[1]
    kinds = {
        "orthonormalised": lambda seed: projection_matrix(seed, hidden_size).numpy(),
        "plain Gaussian": lambda seed: gaussian_matrix(seed, hidden_size),
    }
    for name, matrix in kinds.items():
        runs = [
            projection_distortion(embeddings, embeddings @ matrix(seed)) for seed in range(draws)
        ]
        median = {key: float(np.median([run[key] for run in runs])) for key in runs[0]}
        print(
            f"{name:>20} over {draws} draws: median of the medians {median['median']:.3f} "
            f"(worst {max(run['median'] for run in runs):.3f}), of the p95s {median['p95']:.3f} "
            f"(worst {max(run['p95'] for run in runs):.3f}), Spearman {median['spearman']:.4f} "
            f"(worst {min(run['spearman'] for run in runs):.4f})"
        )


def print_selection(kept: Kept) -> None:
    for label, anchored in (("anchored", True), ("rescued", False)):
        picks = [(a, b) for is_anchored, a, b in kept.picks if is_anchored == anchored]
        if not picks:
            print(f"{label:>9} groups with hard negatives: none")
            continue
        first = np.mean([a[:1] == b[:1] for a, b in picks])
        same_set = np.mean([set(a) == set(b) for a, b in picks])
        same_order = np.mean([a == b for a, b in picks])
        print(
            f"{label:>9} groups with hard negatives: {len(picks)}; from the projection CARE "
            f"keeps the first pick in {first:.0%}, the picked set in {same_set:.0%}, the "
            f"ordered selection in {same_order:.0%}"
        )


def groups_file_sizes(run_dir: Path) -> tuple[int, int]:
    """Bytes of the run's groups.jsonl as written, and with every ``projection`` null."""
    lines = (run_dir / GROUPS_FILE).read_bytes().splitlines(keepends=True)
    without = 0
    for line in lines:
        record = json.loads(line)
        if encode_line(record) != line:
            print(f"FAIL: {run_dir / GROUPS_FILE}: a line is not as the run writer writes it")
            sys.exit(1)
        without += len(encode_line({**record, "projection": None}))
    return sum(map(len, lines)), without


def print_size(run_dir: Path) -> None:
    size, without = groups_file_sizes(run_dir)
    print(
        f"{run_dir}: groups.jsonl {size / 1024:.1f} KiB, {without / 1024:.1f} KiB without "
        f"projections (x{size / without:.2f})"
    )


def bench_config(
    args: argparse.Namespace, data_dir: Path, out_dir: Path, *extra: str
) -> TrainConfig:
    overrides = [
        *BENCH_OVERRIDES,
        f"run.out_dir={out_dir}",
        f"run.seed={args.seed}",
        f"data.train_files=[{data_dir / 'train.jsonl'}]",
        f"train.steps={args.steps}",
        f"train.device={args.device}",
        f"sft.steps={args.sft_steps}",
        "algo.estimator=care",
    ]
    return load_config(args.config, [*overrides, *args.set, *extra])


def measure(args: argparse.Namespace, out_dir: Path) -> None:
    data_dir = out_dir / "data"
    sft_cfg = bench_config(args, data_dir, out_dir, "run.name=sft")
    write_synthetic_dataset(
        data_dir,
        seed=args.seed,
        n_train=args.n_train,
        n_test=8,
        image_size=sft_cfg.model.image_size or 112,  # demo.yaml: native sizes up to 112 px
        overwrite=True,
    )
    start = time.perf_counter()
    checkpoint = run_sft(sft_cfg, progress=False)
    print(f"SFT warm start: {args.sft_steps} steps in {time.perf_counter() - start:.1f} s")
    cfg = bench_config(args, data_dir, out_dir, "run.name=care", f"model.path={checkpoint}")
    trainer = Trainer(cfg, progress=False)
    kept = Kept()
    log_step = trainer._log

    def log_and_keep(step: int, batch: StepBatch, result: Any, *rest: Any) -> Any:
        keep_step(trainer, batch, result, kept)
        return log_step(step, batch, result, *rest)

    trainer._log = log_and_keep  # type: ignore[method-assign]
    start = time.perf_counter()
    run_dir = trainer.fit()
    print(f"{args.steps} CARE steps in {time.perf_counter() - start:.1f} s")
    print_distortion(kept)
    print_draws(kept, args.matrix_draws)
    print_selection(kept)
    print_size(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=4, help="CARE steps measured")
    parser.add_argument("--sft-steps", type=int, default=300, help="SFT warm-start updates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--n-train", type=int, default=200, help="synthetic training problems")
    parser.add_argument(
        "--matrix-draws", type=int, default=20, help="matrix seeds compared on the embeddings"
    )
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    parser.add_argument("--out", type=Path, default=None, help="keep data and runs here")
    parser.add_argument(
        "--size-of", type=Path, nargs="+", default=None, metavar="RUN_DIR",
        help="only print the groups.jsonl size with and without projections of these runs",
    )  # fmt: skip
    args = parser.parse_args()
    if args.size_of:
        for run_dir in args.size_of:
            print_size(run_dir)
        return
    for name in ("steps", "sft_steps", "n_train", "matrix_draws"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {args.device}")
    print(f"config {args.config} (+ {' '.join(args.set) or 'no overrides'})")
    with tempfile.TemporaryDirectory(prefix="bench_projection_") as scratch:
        measure(args, args.out or Path(scratch))


if __name__ == "__main__":
    main()
