"""Import throughput: `care import verl` on a generated verl rollout dump, in rollouts per second.

The dump is written in verl's format by `tests/fixtures/verl_dumps.py` (``--steps`` steps ×
``--prompts`` prompts × ``--n`` rollouts, responses padded to about ``--response-chars``
characters of reasoning, ``acc`` and ``gts`` on every line, lines shuffled as verl's batch
balancing leaves them). Timed in one run, interleaved, each the fastest of ``--repeats``:

- parse: read every step file and ``json.loads`` every line: the floor of any importer;
- import --no-verify: the whole import (groups, GRPO advantages, signal metrics, the run folder's
  three record types written through RunWriter), correctness from ``acc``;
- import: the same with this suite's verifier re-checking every response against ``gts``.

It prints the rollouts per second of each and their ratios to the parse floor. Before timing,
the import's per-step group types, failure-signal share and accuracy must equal a plain
per-group reference computed from the dump (dicts and loops, as verl and EasyR1 write GRPO),
to 1e-9, else the script exits with status 1.

    .venv/bin/python bench/bench_import.py [--steps 40] [--prompts 64] [--n 8]
        [--response-chars 1000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the dump builder lives with the tests

from fixtures.verl_dumps import write_verl_dump  # noqa: E402

from care.imports import ImportOptions, VerlDump, import_run  # noqa: E402
from care.runlog import RunReader  # noqa: E402

TOLERANCE = 1e-9


def parse_floor(dump: Path) -> int:
    """Every line of every step file parsed; returns the number of rollouts."""
    count = 0
    for path in sorted(dump.glob("*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                json.loads(line)
                count += 1
    return count


def reference_step(path: Path) -> dict[str, float]:
    """Group types, failure share and accuracy of one step file, group by group in plain Python."""
    groups: dict[str, list[tuple[float, bool]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        groups.setdefault(record["input"], []).append((record["score"], bool(record["acc"])))
    failure = total = 0.0
    kinds = {"all_correct": 0, "all_wrong": 0, "mixed": 0}
    correct_count = rows = 0
    for members in groups.values():
        rewards = [reward for reward, _ in members]
        mean = sum(rewards) / len(rewards)
        variance = sum((r - mean) ** 2 for r in rewards) / max(len(rewards) - 1, 1)
        for reward, correct in members:
            advantage = 0.0 if len(members) < 2 else (reward - mean) / (math.sqrt(variance) + 1e-6)
            total += abs(advantage)
            failure += abs(advantage) if not correct else 0.0
        n_correct = sum(correct for _, correct in members)
        kind = (
            "all_wrong"
            if n_correct == 0
            else "all_correct"
            if n_correct == len(members)
            else "mixed"
        )
        kinds[kind] += 1
        correct_count += n_correct
        rows += len(members)
    result = {f"groups/{kind}_frac": count / len(groups) for kind, count in kinds.items()}
    result["signal/failure_share_seq"] = failure / total if total > 0 else 0.0
    result["acc/mean"] = correct_count / rows
    return result


def check_against_reference(dump: Path, run_dir: Path) -> list[str]:
    problems = []
    steps = {record["step"]: record for record in RunReader(run_dir).steps}
    for step, path in VerlDump(dump).step_files:
        for key, expected in reference_step(path).items():
            got = steps[step].get(key)
            if got is None or abs(got - expected) > TOLERANCE:
                problems.append(f"step {step} {key}: import {got}, reference {expected}")
    return problems


def timed(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--response-chars", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"dump: {args.steps} steps × {args.prompts} prompts × {args.n} rollouts, "
        f"~{args.response_chars} reasoning characters a response"
    )
    with tempfile.TemporaryDirectory(prefix="bench_import_") as folder:
        base = Path(folder)
        dump = write_verl_dump(
            base / "dump",
            steps=args.steps,
            prompts=args.prompts,
            n=args.n,
            acc=True,
            filler_chars=args.response_chars,
        )
        size = sum(path.stat().st_size for path in dump.iterdir())
        rollouts = args.steps * args.prompts * args.n
        print(f"dump size: {size / 2**20:.1f} MiB, {rollouts:,} rollouts")

        import_run(VerlDump(dump), base / "checked", ImportOptions(verify=False))
        problems = check_against_reference(dump, base / "checked")
        if problems:
            print("FAIL: the import differs from the per-group reference:")
            for problem in problems[:20]:
                print(f"  {problem}")
            return 1
        print(f"check: {args.steps} steps equal the per-group reference (to {TOLERANCE:g})")

        runs = {
            "parse (floor)": lambda: parse_floor(dump),
            "import --no-verify": lambda: import_run(
                VerlDump(dump), base / "fast", ImportOptions(verify=False, overwrite=True)
            ),
            "import (verifier on)": lambda: import_run(
                VerlDump(dump), base / "full", ImportOptions(verify=True, overwrite=True)
            ),
        }
        best = {name: math.inf for name in runs}
        for _ in range(args.repeats):
            for name, function in runs.items():
                best[name] = min(best[name], timed(function))

    floor = best["parse (floor)"]
    print(f"{'':22s} {'seconds':>8s} {'rollouts/s':>11s} {'× parse time':>13s}")
    for name, seconds in best.items():
        print(f"{name:22s} {seconds:8.2f} {rollouts / seconds:11,.0f} {seconds / floor:13.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
