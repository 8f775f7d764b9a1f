"""``care eval``: a checkpoint through the real lmms-eval CLI, one benchmark and seed at a time.

For each benchmark (a task, or a group that is one benchmark such as ``care_mathverse``; a
suite group such as ``care_six`` expands to its benchmarks) and each seed, the runner

1. checks the local data first (`evaluation.tasks.check_columns`): a missing data root or a
   file with wrong columns stops with an error naming the expected columns;
2. runs ``python -m lmms_eval --model care_vlm --include_path benchmarks_cfg --log_samples``
   in a subprocess, offline (``HF_HUB_OFFLINE=1``, ``HF_DATASETS_OFFLINE=1``), with
   ``CARE_DATA_ROOT`` pointing at the data root and no response cache (lmms-eval's cache keys on
   the model args, not on the weights or the prompt, so it could serve stale answers);
3. decides success itself — lmms-eval's CLI exits 0 even when a task fails — from the exit
   code, the results file and one sample line per evaluated document;
4. records the outcome in ``lmms_eval/<benchmark>/seed_<s>/run.json`` next to lmms-eval's own
   output and log. A later run skips a (benchmark, seed) whose record says ``ok`` under the
   same settings (checkpoint weights, data files, prompt version, limit, generation overrides);
   ``force`` redoes it.

When every seed of a benchmark has succeeded, the runner writes the summary and the per-sample
records (one summary `<task>.json` and `<task>_samples.jsonl` per benchmark), with seeds:

    <out>/<benchmark>.json           task, n, accuracy (mean over seeds), format_rate,
                                     prompt_version, plus accuracy_std, accuracy_interval
                                     (95 %: Wilson for one seed, t over seeds), verify_counts
                                     (rows per verdict status: ok, no_answer, unparsable,
                                     timeout), verify_time_limit, error_types (items of
                                     the first seed per `evaluation.taxonomy` type), seeds,
                                     per_seed, subtasks, checkpoint, limit, provenance
                                     (`evaluation.provenance`: suite version and commit,
                                     lmms-eval version, prompt version, max_new_tokens,
                                     verifier budget, sha256 of the data files read)
    <out>/<benchmark>_samples.jsonl  one line per document and seed: task, seed, doc_id, input,
                                     answer, response, extracted, acc, fmt, verify_status
    <out>/results.md, results.csv    the results table (`evaluation.results`)
    <out>/lmms_eval/<benchmark>/seed_<s>/   lmms-eval's results/samples files, log, run.json

The default ``<out>`` of ``<run>/checkpoints/step_N`` is ``<run>/eval/step_N``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from care.config import validation_error_lines
from care.prompts import PROMPT_VERSION
from care.rollout.factory import ENGINE_NAMES
from care.stats import Interval, mean_interval, wilson_interval
from care.verify import TIME_LIMIT_SECONDS
from evaluation import provenance
from evaluation.benchmarks import BENCHMARKS, GROUPS, SYNTH_FOLDER, TASKS
from evaluation.results import (
    ResultsTable,
    build_table,
    load_results,
    mean_std,
    to_csv,
    to_markdown,
    within_unit,
)
from evaluation.tasks import (
    DATA_ROOT_ENV,
    SYNTH_DIR_ENV,
    VERIFY_TIME_LIMIT_ENV,
    check_columns,
    expand_tasks,
)
from evaluation.taxonomy import type_counts

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INCLUDE_PATH = REPO_ROOT / "benchmarks_cfg"
"""The task YAMLs lmms-eval indexes (``--include_path``)."""
DEFAULT_TASKS = ("care_six",)
RUN_RECORD = "run.json"
LOG_FILE = "lmms_eval.log"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^\w*(Error|Exception)\b.*:|\| ERROR +\|")

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
"""Set for every lmms-eval subprocess: nothing is downloaded, local copies only."""


class EvalError(ValueError):
    """Bad arguments or data found before any evaluation starts (the CLI exits with 2)."""


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))
class EvalSettings:
    """What `run_eval` evaluates and how; each value is checked when the settings are built
    (a pydantic dataclass: a bad value raises ``ValidationError`` naming the field, which the
    CLI reports through `settings_error`), the paths when `run_eval` starts.

    checkpoint: the model folder (``care.models.vlm.load_policy`` loads it).
    data_root: the folder holding the benchmarks as ``<owner>/<name>/…`` (care_synth:
        ``care_synth/test.jsonl`` under it, or the synthetic dataset folder itself).
    tasks: task or group names; suite groups (care_six) expand to their benchmarks.
    seeds: one lmms-eval run per seed (``--seed`` and the model's sampling seed); ints >= 0,
        none repeated, and more than one only with ``temperature > 0`` (greedy decoding gives
        every seed the same answers).
    limit: first ``limit`` documents of each task (lmms-eval ``--limit``), None for all.
    out_dir: where results go; None → `default_out_dir(checkpoint)`.
    batch_size: questions per generate call (lmms-eval ``--batch_size``).
    max_new_tokens, temperature, top_p: override the task YAMLs' generation_kwargs when set.
    engine, device, dtype: care_vlm model args (device None: CUDA when available).
    include_path: the task YAML folder.
    force: redo benchmarks that already finished.
    verify_time_limit: seconds math-verify may spend on one answer, in (0, 30] (None: the
        verifier's default); a row that runs out is wrong and counted as ``timeout`` in the
        summary.
    """

    checkpoint: Path
    data_root: Path
    tasks: tuple[str, ...] = DEFAULT_TASKS
    seeds: tuple[Annotated[int, Field(ge=0, strict=True)], ...] = Field((0,), min_length=1)
    limit: int | None = Field(None, ge=1, strict=True)
    out_dir: Path | None = None
    batch_size: int = Field(8, ge=1, strict=True)
    max_new_tokens: int | None = Field(None, ge=1, strict=True)
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    engine: str = "hf"
    device: str | None = None
    dtype: str = "auto"
    include_path: Path = DEFAULT_INCLUDE_PATH
    force: bool = False
    verify_time_limit: float | None = Field(None, gt=0.0, le=30.0, strict=True)

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if value not in ENGINE_NAMES:
            raise ValueError(f"engine must be one of {list(ENGINE_NAMES)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _seeds_give_different_runs(self) -> EvalSettings:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must not repeat, got {self.seeds!r}")
        if len(self.seeds) > 1 and not (self.temperature or 0) > 0:
            # The task YAMLs decode greedily: every seed would give the same answers and a
            # spread of exactly 0, which reads as certainty it is not.
            raise ValueError(
                f"seeds {list(self.seeds)} with greedy decoding give identical answers (the "
                "seed only reaches the sampler); evaluate one seed (its accuracy carries a "
                "Wilson interval) or sample with --temperature > 0"
            )
        return self

    @property
    def resolved_out_dir(self) -> Path:
        return self.out_dir if self.out_dir is not None else default_out_dir(self.checkpoint)


@dataclass
class EvalReport:
    """What `run_eval` did: benchmarks in order, which (benchmark, seed) ran, were skipped or
    failed (with the reason), and the table of the benchmarks that finished."""

    out_dir: Path
    benchmarks: list[str]
    ran: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, int]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    table: ResultsTable | None = None

    @property
    def ok(self) -> bool:
        return not self.failures

    def markdown(self) -> str:
        table = self.table if self.table is not None else ResultsTable((), None)
        return to_markdown(table, failed=list(self.failures))

    def csv(self) -> str:
        return "" if self.table is None else to_csv(self.table)


def default_out_dir(checkpoint: str | Path) -> Path:
    """``<run>/eval/<name>`` for a checkpoint at ``<run>/checkpoints/<name>``.

    Example: ``default_out_dir("runs/demo_care/checkpoints/step_40")`` →
    ``Path("runs/demo_care/eval/step_40")``. Other folders have no run folder: EvalError
    asking for an explicit output folder.
    """
    folder = Path(checkpoint)
    if folder.parent.name != "checkpoints":
        raise EvalError(
            f"checkpoint {folder} is not inside a run folder (<run>/checkpoints/<name>), so "
            "there is no <run>/eval/ to write to: pass --out DIR"
        )
    return folder.parent.parent / "eval" / folder.name


def benchmarks_of(names: Sequence[str]) -> list[str]:
    """The benchmarks of task/group names: a group that is itself a benchmark's data (it is a
    known task, like care_mathverse) stays whole; other groups (care_six) expand.

    Example: ``benchmarks_of(["care_six", "care_synth"])`` → the six benchmarks, then
    ``"care_synth"``. Unknown names: EvalError listing the known ones.
    """
    if isinstance(names, str) or not names:
        raise EvalError(f"tasks must be a non-empty list of task or group names, got {names!r}")
    benchmarks: list[str] = []
    for name in names:
        if name in GROUPS and name not in TASKS:
            members = benchmarks_of(list(GROUPS[name]))
        elif name in TASKS:
            members = [name]
        else:
            known = sorted({*TASKS, *GROUPS})
            raise EvalError(f"unknown task or group {name!r}; known: {', '.join(known)}")
        benchmarks.extend(member for member in members if member not in benchmarks)
    return benchmarks


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` → ``(0, 1, 2)``; EvalError for anything but comma-separated ints."""
    try:
        return tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError as error:
        raise EvalError(f"--seeds must be comma-separated ints, got {text!r}") from error


def check_data(benchmark: str, data_root: Path) -> list[dict[str, Any]]:
    """`check_columns` for every task of `benchmark`; EvalError naming the expected columns.

    Example: a MathVista copy without ``decoded_image`` → EvalError("care_mathvista: …
    lacks column(s) ['decoded_image']; expected columns: ['pid', 'question', …]").
    """
    resolved = []
    for task in expand_tasks([benchmark]):
        try:
            resolved.append(check_columns(task, data_root))
        except ValueError as error:
            message = str(error)
            if "expected columns" not in message:
                message += f"; expected columns of {task}: {list(BENCHMARKS[task].columns)}"
            raise EvalError(message) from error
    return resolved


def check_data_root(data_root: Path, benchmarks: Sequence[str]) -> None:
    """EvalError when `data_root` is not a folder, saying where each benchmark is read from
    and which columns its files need."""
    if data_root.is_dir():
        return
    lines = [f"data root {data_root} does not exist or is not a folder; it must hold:"]
    for benchmark in benchmarks:
        record = BENCHMARKS[expand_tasks([benchmark])[0]]
        where = record.repo or f"{SYNTH_FOLDER}/test.jsonl"
        lines.append(f"  {benchmark}: <data-root>/{where}, columns {list(record.columns)}")
    raise EvalError("\n".join(lines))


def run_eval(settings: EvalSettings, echo: Callable[[str], None] = print) -> EvalReport:
    """Evaluate `settings.checkpoint` on every benchmark and seed (see the module docstring).

    Returns the report; raises EvalError (before running anything) for a missing checkpoint or
    data root or unknown task names. A benchmark whose data fails the column check, or whose
    lmms-eval run fails, is in ``report.failures``; the others still run.
    """
    settings = _validated(settings)
    benchmarks = benchmarks_of(settings.tasks)
    check_data_root(settings.data_root, benchmarks)
    out_dir = settings.resolved_out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    report = EvalReport(out_dir=out_dir, benchmarks=benchmarks)
    weights = _checkpoint_signature(settings.checkpoint)
    environment = provenance.environment()
    for benchmark in benchmarks:
        try:
            resolved = check_data(benchmark, settings.data_root)
        except EvalError as error:
            report.failures[benchmark] = str(error)
            echo(f"{benchmark}: FAILED before evaluation: {error}")
            continue
        fingerprint = _fingerprint(settings, benchmark, weights, resolved)
        failed = None
        for seed in settings.seeds:
            run_dir = out_dir / "lmms_eval" / benchmark / f"seed_{seed}"
            if not settings.force and _finished(run_dir, fingerprint, seed):
                echo(f"{benchmark} seed {seed}: finished earlier, skipped ({run_dir})")
                report.skipped.append((benchmark, seed))
                continue
            echo(f"{benchmark} seed {seed}: running lmms-eval (log: {run_dir / LOG_FILE})")
            error = _run_lmms_eval(settings, benchmark, seed, run_dir, fingerprint)
            report.ran.append((benchmark, seed))
            if error is not None:
                failed = error
                echo(f"{benchmark} seed {seed}: FAILED: {error}")
        summary_path = out_dir / f"{benchmark}.json"
        if failed is not None:
            report.failures[benchmark] = failed
            summary_path.unlink(missing_ok=True)
            (out_dir / f"{benchmark}_samples.jsonl").unlink(missing_ok=True)
            continue
        facts = {**environment, **provenance.data_record(resolved, settings.data_root)}
        _write_benchmark_outputs(settings, benchmark, out_dir, weights, facts)
    finished = load_results(out_dir, [b for b in benchmarks if b not in report.failures])
    if finished:
        report.table = build_table(finished)
        (out_dir / "results.md").write_text(report.markdown() + "\n", encoding="utf-8")
        (out_dir / "results.csv").write_text(report.csv(), encoding="utf-8")
    return report


def lmms_eval_command(
    settings: EvalSettings, benchmark: str, seed: int, output_path: Path
) -> list[str]:
    """The ``python -m lmms_eval`` command line of one benchmark and seed.

    Example: for care_synth, seed 1, limit 5 → ``[python, "-m", "lmms_eval", "--model",
    "care_vlm", "--model_args", "pretrained=/ckpt,engine=hf,seed=1,dtype=auto", "--tasks",
    "care_synth", …, "--seed", "1,1,1,1", "--limit", "5"]``.
    """
    model_args = [
        f"pretrained={settings.checkpoint}",
        f"engine={settings.engine}",
        f"seed={seed}",
        f"dtype={settings.dtype}",
    ]
    if settings.device is not None:
        model_args.append(f"device={settings.device}")
    command = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "care_vlm",
        "--model_args",
        ",".join(model_args),
        "--tasks",
        benchmark,
        "--include_path",
        str(settings.include_path),
        "--batch_size",
        str(settings.batch_size),
        "--output_path",
        str(output_path),
        "--log_samples",
        # Score on the main thread, in order: the verifier's time limit then uses its signal
        # timer instead of a profile hook, which lmms-eval's scoring threads can lose inside
        # import callbacks (seen: one MathVision row scored for 17 s instead of 0.5 s).
        "--process_docs_parallel",
        "1",
        "--seed",
        ",".join([str(seed)] * 4),
        "--verbosity",
        "INFO",
    ]
    if settings.limit is not None:
        command += ["--limit", str(settings.limit)]
    gen_kwargs = _gen_kwargs_override(settings)
    if gen_kwargs:
        command += ["--gen_kwargs", gen_kwargs]
    return command


def _run_lmms_eval(
    settings: EvalSettings, benchmark: str, seed: int, run_dir: Path, fingerprint: dict[str, Any]
) -> str | None:
    """Run one benchmark and seed; None on success, else why it failed."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    output_path = run_dir / "output"
    command = lmms_eval_command(settings, benchmark, seed, output_path)
    env = {**os.environ, **OFFLINE_ENV, DATA_ROOT_ENV: str(settings.data_root)}
    # --data-root decides for every task, care_synth included.
    env.pop(SYNTH_DIR_ENV, None)
    env.pop(VERIFY_TIME_LIMIT_ENV, None)
    if settings.verify_time_limit is not None:
        env[VERIFY_TIME_LIMIT_ENV] = str(settings.verify_time_limit)
    log_path = run_dir / LOG_FILE
    with log_path.open("w", encoding="utf-8") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        # The run folder as working directory: lmms-eval's stray files land there, and a
        # stale source-tree .egg-info cannot hide this package's entry points.
        completed = subprocess.run(
            command, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    error = _check_lmms_output(benchmark, output_path, completed.returncode, log_path)
    record = {
        "status": "ok" if error is None else "failed",
        "benchmark": benchmark,
        "seed": seed,
        "returncode": completed.returncode,
        "error": error,
        "command": command,
        "env": {**OFFLINE_ENV, DATA_ROOT_ENV: env[DATA_ROOT_ENV]},
        "fingerprint": fingerprint,
    }
    (run_dir / RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return error


def _check_lmms_output(
    benchmark: str, output_path: Path, returncode: int, log_path: Path
) -> str | None:
    if returncode != 0:
        return f"lmms-eval exited with code {returncode}: {_log_error(log_path)}"
    results_files = sorted(output_path.rglob("*_results.json"))
    if len(results_files) != 1:
        return (
            f"lmms-eval exited 0 but wrote {len(results_files)} results files (expected 1), so "
            f"the evaluation failed: {_log_error(log_path)}"
        )
    results = json.loads(results_files[0].read_text(encoding="utf-8"))
    tasks = expand_tasks([benchmark])
    missing = [task for task in (benchmark, *tasks) if task not in results.get("results", {})]
    if missing:
        return f"lmms-eval's results lack {missing}: {_log_error(log_path)}"
    for task in tasks:
        samples = sorted(results_files[0].parent.glob(f"*_samples_{task}.jsonl"))
        expected = results.get("n-samples", {}).get(task, {}).get("effective")
        count = 0
        if samples:
            with samples[0].open(encoding="utf-8") as handle:
                count = sum(1 for line in handle if line.strip())
        if not samples or count != expected:
            return f"{task}: lmms-eval logged {count} samples but evaluated {expected} (see {log_path})"
    return None


def _log_error(log_path: Path) -> str:
    """The last error line of an lmms-eval log (ANSI colours removed) and where the log is."""
    lines = [
        _ANSI.sub("", line)
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    ]
    errors = [line.strip() for line in lines if _ERROR_LINE.search(line)]
    reason = errors[-1] if errors else "no error line found"
    return f"{reason} (full log: {log_path})"


def _finished(run_dir: Path, fingerprint: dict[str, Any], seed: int) -> bool:
    record_path = run_dir / RUN_RECORD
    if not record_path.is_file():
        return False
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return (
        record.get("status") == "ok"
        and record.get("seed") == seed
        and record.get("fingerprint") == fingerprint
        and any((run_dir / "output").rglob("*_results.json"))
    )


def _write_benchmark_outputs(
    settings: EvalSettings, benchmark: str, out_dir: Path, weights: str, facts: dict[str, Any]
) -> None:
    """``<benchmark>.json`` and ``<benchmark>_samples.jsonl`` from every seed's lmms-eval output.

    `facts`: `evaluation.provenance`'s environment and data record; the decoding length (from
    lmms-eval's task configs) and the verifier budget complete the ``provenance`` block.
    """
    tasks = expand_tasks([benchmark])
    per_seed: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    max_new_tokens: set[int] = set()
    for seed in settings.seeds:
        output = out_dir / "lmms_eval" / benchmark / f"seed_{seed}" / "output"
        results_file = next(output.rglob("*_results.json"))
        lmms_results = json.loads(results_file.read_text(encoding="utf-8"))
        max_new_tokens.add(provenance.max_new_tokens_of(lmms_results, tasks, results_file))
        results = lmms_results["results"]
        n_by_task = {}
        for task in tasks:
            samples_file = next(results_file.parent.glob(f"*_samples_{task}.jsonl"))
            task_records = [
                _sample_record(task, seed, json.loads(line))
                for line in samples_file.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
            n_by_task[task] = len(task_records)
            records.extend(task_records)
        seed_records = [record for record in records if record["seed"] == seed]
        per_seed[str(seed)] = {
            "accuracy": float(results[benchmark]["acc,none"]),
            "format_rate": float(results[benchmark]["fmt,none"]),
            "n": sum(n_by_task.values()),
            "correct": sum(record["acc"] for record in seed_records),
            "verify_counts": verify_counts(seed_records),
            "subtasks": {
                task: {"accuracy": float(results[task]["acc,none"]), "n": n_by_task[task]}
                for task in tasks
                if task != benchmark
            },
        }
    if len(max_new_tokens) != 1:
        # A seed skipped as finished may predate an edit of the task YAML.
        raise EvalError(
            f"{benchmark}: the seeds decoded with different max_new_tokens "
            f"{sorted(max_new_tokens)}; rerun with --force"
        )
    accuracy, accuracy_std = mean_std([entry["accuracy"] for entry in per_seed.values()])
    interval = accuracy_interval([(entry["correct"], entry["n"]) for entry in per_seed.values()])
    format_rate, _ = mean_std([entry["format_rate"] for entry in per_seed.values()])
    summary = {
        "task": benchmark,
        "n": per_seed[str(settings.seeds[0])]["n"],
        "accuracy": accuracy,
        "format_rate": format_rate,
        "prompt_version": PROMPT_VERSION,
        "accuracy_std": accuracy_std,
        "accuracy_interval": [interval.low, interval.high],
        "interval_method": "wilson" if len(per_seed) == 1 else "t over seeds",
        "verify_counts": {
            status: sum(entry["verify_counts"][status] for entry in per_seed.values())
            for status in VERIFY_COUNTED
        },
        "verify_time_limit": settings.verify_time_limit,
        "error_types": type_counts(
            [record for record in records if record["seed"] == settings.seeds[0]]
        ),
        "seeds": list(settings.seeds),
        "per_seed": per_seed,
        "checkpoint": str(settings.checkpoint),
        "checkpoint_signature": weights,
        "limit": settings.limit,
        "provenance": {
            **facts,
            "max_new_tokens": max_new_tokens.pop(),
            "verify_time_limit_s": TIME_LIMIT_SECONDS
            if settings.verify_time_limit is None
            else settings.verify_time_limit,
        },
    }
    (out_dir / f"{benchmark}.json").write_text(
        json.dumps(summary, indent=2) + "\n", encoding="utf-8"
    )
    with (out_dir / f"{benchmark}_samples.jsonl").open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def _sample_record(task: str, seed: int, sample: dict[str, Any]) -> dict[str, Any]:
    """One per-sample line: lmms-eval's logged sample reduced to what the project reads."""
    response = sample.get("resps", sample.get("filtered_resps"))
    while isinstance(response, list) and len(response) == 1:
        response = response[0]
    return {
        "task": task,
        "seed": seed,
        "doc_id": sample.get("doc_id"),
        "input": sample.get("input"),
        "answer": sample.get("target"),
        "response": response,
        "extracted": sample.get("extracted"),
        "acc": bool(sample.get("acc")),
        "fmt": bool(sample.get("fmt")),
        "verify_status": sample.get("verify_status"),
    }


VERIFY_COUNTED = ("ok", "no_answer", "unparsable", "timeout")
"""The verdict statuses a benchmark summary counts. lmms-eval hands the scorer the text only,
not whether generation stopped at the token limit, so ``truncated`` is not among them."""


def verify_counts(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many per-sample records had each verdict status (`VERIFY_COUNTED`); a record without
    a known status (lmms-eval output of an older task config) raises, naming its doc_id.

    Example: statuses ok, timeout, ok → ``{"ok": 2, "no_answer": 0, "unparsable": 0,
    "timeout": 1}``.
    """
    counts = dict.fromkeys(VERIFY_COUNTED, 0)
    for record in records:
        status = record.get("verify_status")
        if status not in counts:
            raise EvalError(
                f"{record.get('task')} doc_id {record.get('doc_id')}: verify_status {status!r} "
                f"is not one of {list(VERIFY_COUNTED)} (rerun with --force)"
            )
        counts[status] += 1
    return counts


def accuracy_interval(correct_of_n: Sequence[tuple[int, int]]) -> Interval:
    """95 % interval of a benchmark's accuracy from each seed's (right, items).

    One run (greedy decoding): the Wilson interval of right / items. Several seeds (sampled
    decoding): the Student-t interval of the per-seed accuracies, which is what varies.

    Example: ``accuracy_interval([(45, 100)])`` → 0.45 [0.356, 0.548];
    ``accuracy_interval([(50, 100), (60, 100), (70, 100)])`` → 0.6 [0.352, 0.848] (clipped
    to [0, 1] where few seeds overshoot).
    """
    if not correct_of_n:
        raise ValueError("correct_of_n must hold at least one (right, items) pair")
    if len(correct_of_n) == 1:
        right, items = correct_of_n[0]
        return wilson_interval(right, items)
    return within_unit(mean_interval([right / items for right, items in correct_of_n]))


def _gen_kwargs_override(settings: EvalSettings) -> str:
    parts = []
    if settings.max_new_tokens is not None:
        parts.append(f"max_new_tokens={settings.max_new_tokens}")
    if settings.temperature is not None:
        parts.append(f"temperature={settings.temperature}")
        parts.append(f"do_sample={settings.temperature > 0}")
    if settings.top_p is not None:
        parts.append(f"top_p={settings.top_p}")
    return ",".join(parts)


def _fingerprint(
    settings: EvalSettings, benchmark: str, weights: str, resolved: list[dict[str, Any]]
) -> dict[str, Any]:
    """What a finished run must match to be skipped: same weights, data, prompt and settings."""
    data_files = sorted({file for entry in resolved for file in entry["files"]})
    return {
        "benchmark": benchmark,
        "checkpoint": str(settings.checkpoint),
        "checkpoint_signature": weights,
        "data_signature": _files_signature([Path(file) for file in data_files]),
        "prompt_version": PROMPT_VERSION,
        "limit": settings.limit,
        "gen_kwargs": _gen_kwargs_override(settings),
        "engine": settings.engine,
        "dtype": settings.dtype,
        "include_path": str(settings.include_path),
        "verify_time_limit": settings.verify_time_limit,
    }


def _checkpoint_signature(checkpoint: Path) -> str:
    files = [path for path in sorted(checkpoint.iterdir()) if path.is_file()]
    return _files_signature(files)


def _files_signature(files: Sequence[Path]) -> str:
    """Hash of names, sizes and modification times: changes whenever a file is rewritten."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def settings_error(error: ValidationError) -> EvalError:
    """An `EvalError` naming each field of `EvalSettings` that did not validate, with its value.

    Example: ``EvalSettings(ckpt, root, seeds=(0, -1))`` → ``"invalid evaluation settings:
    seeds.1: Input should be greater than or equal to 0 (got -1)"``.
    """
    return EvalError("\n".join(["invalid evaluation settings:", *validation_error_lines(error)]))


def _validated(settings: EvalSettings) -> EvalSettings:
    """`settings` with its paths resolved, after checking what only the file system can tell
    (the values were checked when the settings were built)."""
    checkpoint = Path(settings.checkpoint).expanduser().resolve()
    if not (checkpoint / "config.json").is_file():
        raise EvalError(f"checkpoint {checkpoint} is not a model folder (no config.json)")
    if "," in str(checkpoint):
        raise EvalError(
            f"checkpoint path {checkpoint} contains a comma, which lmms-eval's --model_args cannot carry"
        )
    include_path = Path(settings.include_path).expanduser().resolve()
    if not include_path.is_dir():
        raise EvalError(f"include_path {include_path} (the task YAML folder) does not exist")
    out_dir = settings.out_dir
    if out_dir is None:
        out_dir = default_out_dir(checkpoint)
    return dataclasses.replace(
        settings,
        checkpoint=checkpoint,
        data_root=Path(settings.data_root).expanduser().resolve(),
        include_path=include_path,
        out_dir=Path(out_dir).expanduser().resolve(),
    )
