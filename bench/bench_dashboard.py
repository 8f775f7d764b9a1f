"""Dashboard speed on a long run: 20,000 steps and 160,000 group records.

Generates the run (through care.runlog.RunWriter, as the trainer writes it), then times

- load: steps.jsonl + groups.jsonl into the dashboard's frames (analysis_app.data);
- signal page (builders): the four Training-signal figures + the summary table, serialised to
  JSON as Streamlit sends them;
- signal page (AppTest): the whole page script run by Streamlit's AppTest, as a browser would
  trigger it;

each cold (empty cache, first parse) and warm (cache hit: the files are unchanged). The issue's
budget is load + signal page <= 2 s warm.

    .venv/bin/python bench/bench_dashboard.py [--steps 20000] [--groups-per-step 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the run-folder builder lives with the tests

from fixtures.runs import write_synthetic_run  # noqa: E402

from analysis_app import data, figures, tables  # noqa: E402

SIGNAL_PAGE = ROOT / "analysis_app" / "pages" / "training_signal.py"
BUDGET_WARM_S = 2.0


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--groups-per-step", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoothing", type=float, default=0.6)
    parser.add_argument("--out", type=Path, default=None, help="Keep the run here (default: temp).")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = args.out if args.out is not None else Path(scratch)
        run_dir = root / "long_run"
        start = time.perf_counter()
        write_synthetic_run(
            run_dir, steps=args.steps, groups_per_step=args.groups_per_step, sample_every=1000
        )
        generated = time.perf_counter() - start
        sizes = {
            name: (run_dir / name).stat().st_size / 1e6 for name in ("steps.jsonl", "groups.jsonl")
        }
        print(
            f"run: {args.steps} steps, {args.steps * args.groups_per_step} group records "
            f"(steps.jsonl {sizes['steps.jsonl']:.1f} MB, groups.jsonl {sizes['groups.jsonl']:.1f} MB), "
            f"generated in {generated:.1f} s"
        )

        results: dict[str, list[float]] = {key: [] for key in ("builders", "apptest")}
        cold: dict[str, list[float]] = {key: [] for key in ("builders", "apptest")}
        for _ in range(args.repeats):
            data.clear_cache()
            cold["builders"].append(load_and_build(run_dir, args.smoothing))
            results["builders"].append(load_and_build(run_dir, args.smoothing))
            data.clear_cache()
            cold["apptest"].append(apptest_signal_page(root, run_dir.name))
            results["apptest"].append(apptest_signal_page(root, run_dir.name))

        print(f"{'measurement':44s} {'cold (s)':>9s} {'warm (s)':>9s}   (median of {args.repeats})")
        labels = {
            "builders": "load + signal figures/table (builders)",
            "apptest": "load + signal page (Streamlit AppTest)",
        }
        for key, label in labels.items():
            cold_median = statistics.median(cold[key])
            warm_median = statistics.median(results[key])
            print(f"{label:44s} {cold_median:9.2f} {warm_median:9.2f}")
        worst_warm = max(statistics.median(values) for values in results.values())
        verdict = "within" if worst_warm <= BUDGET_WARM_S else "OVER"
        print(f"warm budget {BUDGET_WARM_S:.1f} s: {verdict} ({worst_warm:.2f} s)")


if __name__ == "__main__":
    main()
