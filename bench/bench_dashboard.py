"""Dashboard speed: run logs at the paper's scale (new reader vs old), and the signal page.

Part 1, the reader, on a generated paper-scale run: 200 steps × 512 groups × G = 8 rollouts
(the paper's 7B config), 102,400 group records written through care.runlog.RunWriter as the
trainer writes them. Timed cold (empty cache; the files are in the OS page cache for both):

- open: steps.jsonl as the dashboard's frame + groups.jsonl ready to show any step;
- one step's groups: open + the groups of one late step, as the hard-negatives page needs them.

"new" is what the dashboard does (analysis_app.data: steps through pyarrow, groups through the
step index of care.runlog.index, one step's lines parsed into typed GroupRecords); "old" parses
every line (care.runlog.read_jsonl) into plain dicts and slices the groups by step, as the
dashboard did before. Both run in this process, interleaved, and the
new reader's frame and groups must equal the old reader's, or the script exits with status 1.
Budgets: open <= 1.5 s, one step's groups <= 0.3 s after opening (printed, with the ratios).

Part 2, the Training-signal page on a long run (20,000 steps, 160,000 group records): its figure
and table builders, and the whole page under Streamlit's AppTest, cold and warm. Budget:
load + signal page <= 2 s warm.

    .venv/bin/python bench/bench_dashboard.py [--steps 200] [--groups-per-step 512]
        [--group-size 8] [--repeats 3] [--long-steps 20000] [--skip-page]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the run-folder builder lives with the tests

from fixtures.runs import write_synthetic_run  # noqa: E402

from analysis_app import data, figures, tables  # noqa: E402
from care.runlog import GROUPS_FILE, STEPS_FILE, read_jsonl, read_table  # noqa: E402

SIGNAL_PAGE = ROOT / "analysis_app" / "pages" / "training_signal.py"
BUDGET_OPEN_S = 1.5
BUDGET_STEP_S = 0.3
BUDGET_WARM_S = 2.0


# ------------------------------------------------------------------------------------------------
# part 1: the reader


def old_open(run_dir: Path) -> tuple[pd.DataFrame, dict[int, list[dict[str, Any]]]]:
    """Every line of both logs parsed, the groups sliced by step (the reader until now)."""
    steps = read_jsonl(run_dir / STEPS_FILE, "warn", require_int_field="step")
    frame = data.steps_frame_from_records(steps.records)
    by_step: dict[int, list[dict[str, Any]]] = {}
    previous = None
    for record in read_jsonl(run_dir / GROUPS_FILE, "warn", require_int_field="step").records:
        if record["step"] != previous:
            by_step[record["step"]] = []  # a step logged twice keeps its last block
            previous = record["step"]
        by_step[record["step"]].append(record)
    return frame, by_step


def new_open(run_dir: Path) -> tuple[pd.DataFrame, Any]:
    """What the dashboard does: the steps frame and the groups index, from an empty cache."""
    data.clear_cache()
    return data.load_steps(run_dir).frame, data.load_groups(run_dir)


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def bench_reader(run_dir: Path, repeats: int) -> bool:
    """Print old vs new reader times and ratios; False when their results differ."""
    # Imports and first-call set-up stay out of the timings, for both readers.
    read_table(run_dir / STEPS_FILE)
    last_step = int(data.load_steps(run_dir).frame["step"].iloc[-1])
    times: dict[str, list[float]] = {key: [] for key in ("old", "new_open", "new_step")}
    for _ in range(repeats):
        elapsed, (old_frame, old_groups) = timed(lambda: old_open(run_dir))
        times["old"].append(elapsed)
        elapsed, (new_frame, index) = timed(lambda: new_open(run_dir))
        times["new_open"].append(elapsed)
        elapsed, step_groups = timed(lambda index=index: index.of_step(last_step))
        times["new_step"].append(elapsed)

    # Same answer first: a fast wrong reader is worth nothing.
    problems = []
    try:
        pd.testing.assert_frame_equal(new_frame, old_frame)
    except AssertionError as error:
        problems.append(f"steps frame differs: {error}")
    if index.steps != sorted(old_groups):
        problems.append(f"indexed steps differ: {index.steps[:5]}... vs {sorted(old_groups)[:5]}")
    # The new reader gives typed records (care.runlog.GroupRecord); their JSON is the line's.
    for step in {index.steps[0], index.steps[len(index.steps) // 2], last_step}:
        if [group.to_json() for group in index.of_step(step)] != old_groups.get(step):
            problems.append(f"groups of step {step} differ")
    if [group.to_json() for group in step_groups] != old_groups.get(last_step) or index.warnings:
        problems.append(f"groups of step {last_step} differ or warn: {index.warnings[:3]}")

    old = statistics.median(times["old"])
    new_open_s = statistics.median(times["new_open"])
    new_step_s = statistics.median(times["new_step"])
    size = sum((run_dir / name).stat().st_size for name in (STEPS_FILE, GROUPS_FILE)) / 1e6
    print(
        f"reader: {len(old_frame)} steps, {sum(map(len, old_groups.values()))} group records "
        f"({size:.1f} MB), {len(step_groups)} groups in step {last_step}; cold, median of "
        f"{repeats}"
    )
    print(f"{'':34s} {'old (s)':>9s} {'new (s)':>9s} {'old/new':>8s}")
    print(
        f"{'open (steps frame + groups)':34s} {old:9.3f} {new_open_s:9.3f} {old / new_open_s:7.1f}x"
    )
    one_step = new_open_s + new_step_s
    print(
        f"{'one step of groups (incl. open)':34s} {old:9.3f} {one_step:9.3f} {old / one_step:7.1f}x"
    )
    print(f"{'one step of groups, index open':34s} {'':9s} {new_step_s:9.4f}")
    open_verdict = "within" if new_open_s <= BUDGET_OPEN_S else "OVER"
    step_verdict = "within" if new_step_s <= BUDGET_STEP_S else "OVER"
    print(
        f"budget open <= {BUDGET_OPEN_S} s: {open_verdict}; one step <= {BUDGET_STEP_S} s: {step_verdict}"
    )
    if problems:
        print("MISMATCH between the new and the old reader:\n  " + "\n  ".join(problems))
        return False
    print("new reader == old reader: steps frame and the groups of the steps checked")
    return True


# ------------------------------------------------------------------------------------------------
# part 2: the Training-signal page


def load_and_build(run_dir: Path, smoothing: float) -> float:
    """Seconds to load the run and build (and serialise) the signal page's figures and table."""
    start = time.perf_counter()
    runs = {run_dir.name: run_dir}
    steps, _ = data.steps_of_runs(runs)
    data.load_groups(run_dir)
    for figure in figures.signal_figures(steps, smoothing).values():
        figure.to_json()
    tables.signal_summary_table(steps)
    return time.perf_counter() - start


def apptest_signal_page(root: Path, run_name: str) -> float:
    """Seconds for AppTest to run the Training-signal page on the run (includes groups load)."""
    from streamlit.testing.v1 import AppTest

    os.environ[data.RUNS_DIR_ENV] = str(root)
    start = time.perf_counter()
    data.load_groups(root / run_name)
    app = AppTest.from_file(str(SIGNAL_PAGE), default_timeout=120)
    app.query_params["run"] = run_name
    app.run()
    elapsed = time.perf_counter() - start
    if app.exception or app.error:
        problems = [e.value for e in app.exception] + [e.value for e in app.error]
        raise RuntimeError(f"signal page failed: {problems}")
    return elapsed


def bench_signal_page(root: Path, steps: int, repeats: int, smoothing: float) -> None:
    run_dir = root / "long_run"
    start = time.perf_counter()
    write_synthetic_run(run_dir, steps=steps, groups_per_step=8, sample_every=1000)
    print(
        f"long run: {steps} steps, {steps * 8} group records, generated in {time.perf_counter() - start:.1f} s"
    )
    results: dict[str, list[float]] = {key: [] for key in ("builders", "apptest")}
    cold: dict[str, list[float]] = {key: [] for key in ("builders", "apptest")}
    for _ in range(repeats):
        data.clear_cache()
        cold["builders"].append(load_and_build(run_dir, smoothing))
        results["builders"].append(load_and_build(run_dir, smoothing))
        data.clear_cache()
        cold["apptest"].append(apptest_signal_page(root, run_dir.name))
        results["apptest"].append(apptest_signal_page(root, run_dir.name))
    print(f"{'measurement':44s} {'cold (s)':>9s} {'warm (s)':>9s}   (median of {repeats})")
    labels = {
        "builders": "load + signal figures/table (builders)",
        "apptest": "load + signal page (Streamlit AppTest)",
    }
    for key, label in labels.items():
        print(
            f"{label:44s} {statistics.median(cold[key]):9.2f} "
            f"{statistics.median(results[key]):9.2f}"
        )
    worst_warm = max(statistics.median(values) for values in results.values())
    verdict = "within" if worst_warm <= BUDGET_WARM_S else "OVER"
    print(f"warm budget {BUDGET_WARM_S:.1f} s: {verdict} ({worst_warm:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--groups-per-step", type=int, default=512)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long-steps", type=int, default=20_000)
    parser.add_argument("--smoothing", type=float, default=0.6)
    parser.add_argument("--skip-page", action="store_true", help="Only part 1, the reader.")
    parser.add_argument(
        "--out", type=Path, default=None, help="Keep the runs here (default: temp)."
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = args.out if args.out is not None else Path(scratch)
        paper = root / "paper_scale"
        start = time.perf_counter()
        write_synthetic_run(
            paper,
            steps=args.steps,
            groups_per_step=args.groups_per_step,
            group_size=args.group_size,
            sample_every=max(1, args.steps // 4),
        )
        print(
            f"paper-scale run: {args.steps} steps x {args.groups_per_step} groups x "
            f"G = {args.group_size}, generated in {time.perf_counter() - start:.1f} s"
        )
        same = bench_reader(paper, args.repeats)
        if not args.skip_page:
            bench_signal_page(root, args.long_steps, args.repeats, args.smoothing)
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
