"""`care import`: verl rollout dumps and the generic rollout schema become run folders whose
records hold the group types, GRPO advantages, failure-signal share and verifier agreement.

The dumps come from `tests/fixtures/verl_dumps.py`, written in verl's format with known numbers:
prompt p at step s has (p + s) % (n + 1) correct rollouts out of n, so with 4 prompts × 4
rollouts step 1 has group sizes of correct 1, 2, 3, 4 (3 mixed, 1 all correct) and step 2 has
2, 3, 4, 0 (2 mixed, 1 all correct, 1 all wrong). Binary rewards make the failure share of any
step with a mixed group exactly 0.5.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from fixtures.verl_dumps import (
    as_generic_rows,
    gold,
    group_types,
    n_correct,
    prompt_text,
    write_verl_dump,
)
from typer.testing import CliRunner

from care.cli import app
from care.imports import (
    ImportInputError,
    ImportOptions,
    RolloutFiles,
    VerlDump,
    import_run,
)
from care.imports.sources import prompt_hash
from care.runlog import RunExistsError, RunReader

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

PROMPTS, N = 4, 4


def import_verl(dump: Path, out: Path, **options) -> tuple[RunReader, dict]:
    import_run(VerlDump(dump), out, ImportOptions(**options))
    return RunReader(out), json.loads((out / "import.json").read_text())


def steps_by_number(run: RunReader) -> dict[int, dict]:
    return {record["step"]: record for record in run.steps}


# ---------------------------------------------------------------------------------------------
# verl dumps


def test_verl_dump_becomes_groups_with_their_types_advantages_and_failure_share(
    tmp_path: Path,
) -> None:
    dump = write_verl_dump(tmp_path / "dump", steps=3, prompts=PROMPTS, n=N, shuffle=True)
    run, report = import_verl(dump, tmp_path / "run")
    steps = steps_by_number(run)
    assert sorted(steps) == [1, 2, 3]
    for step, record in steps.items():
        for key, value in group_types(step, PROMPTS, N).items():
            assert record[key] == pytest.approx(value), (step, key)
        assert record["signal/failure_share_seq"] == pytest.approx(0.5)
        correct = sum(n_correct(step, p, N) for p in range(PROMPTS))
        assert record["acc/mean"] == pytest.approx(correct / (PROMPTS * N))
        assert record["import/rollouts"] == PROMPTS * N
        assert record["import/groups"] == PROMPTS
        assert record["import/correct_verifier_frac"] == 1.0  # gts, no acc
        assert record["verify/agreement"] == 1.0
        # Not computed without embeddings: left out rather than logged as zeros.
        assert "rescue/triggered_frac" not in record and "rgr/pass_rate" not in record
    # Step 2: prompt 2 has all 4 correct, prompt 3 none: two of four groups carry no signal.
    assert steps[2]["groups/zero_signal_frac"] == pytest.approx(0.5)
    groups = [g for g in run.groups if g.step == 1]
    by_prompt = {g.prompt_id: g for g in groups}
    assert set(by_prompt) == {prompt_hash(prompt_text(p)) for p in range(PROMPTS)}
    group = by_prompt[prompt_hash(prompt_text(0))]  # 1 correct of 4
    assert group.G == 4 and group.n_correct == 1
    assert sorted(group.advantages) == pytest.approx([-0.5, -0.5, -0.5, 1.5], abs=1e-5)
    assert group.correct_source == "verifier"
    assert group.not_computed == ("hard_negatives", "rescue")
    assert group.hard_negatives == () and group.rgr is None
    samples = run.samples(1)
    assert len(samples) == PROMPTS * N
    sample = next(s for s in samples if s.group_id == group.group_id and s.correct)
    assert sample.answers == (str(gold(1, 0)),)
    assert sample.verifier_correct is True and sample.extracted == str(gold(1, 0))
    assert sample.dump == {"pred": str(gold(1, 0))}
    assert sample.source_line.startswith(f"{dump / '1.jsonl'}:")
    assert run.config["import"]["format"] == "verl"
    assert run.meta["status"] == "finished"
    assert report["rollouts"] == 3 * PROMPTS * N and report["skipped_lines"] == 0


def test_correctness_comes_from_acc_then_the_verifier_then_the_score(tmp_path: Path) -> None:
    cases = {
        "acc": (dict(gts=True, acc=True), {}, "given"),
        "gts": (dict(gts=True, acc=False), {}, "verifier"),
        "score": (dict(gts=False, acc=False), {}, "reward"),
        "no_verify": (dict(gts=True, acc=False), {"verify": False}, "reward"),
    }
    for name, (dump_options, import_options, source) in cases.items():
        dump = write_verl_dump(tmp_path / name, steps=1, prompts=PROMPTS, n=N, **dump_options)
        run, report = import_verl(dump, tmp_path / f"run_{name}", **import_options)
        assert {g.correct_source for g in run.groups} == {source}, name
        assert run.steps[0][f"import/correct_{source}_frac"] == 1.0, name
        assert report["correct_sources"][source] == PROMPTS * N, name
        # Every source agrees on these honest rewards: the types do not depend on the source.
        assert run.steps[0]["groups/mixed_frac"] == pytest.approx(0.75), name
    # acc and a gold answer: the verifier still checks, for the agreement.
    acc_run = RunReader(tmp_path / "run_acc")
    assert acc_run.steps[0]["verify/checked"] == PROMPTS * N


def test_a_reward_that_accepts_wrong_answers_shows_as_disagreement_with_the_verifier(
    tmp_path: Path,
) -> None:
    # Prompt 1's wrong rollouts score 1.0; at step 1 it has (1 + 1) % 5 = 2 of 4 correct.
    dump = write_verl_dump(tmp_path / "dump", steps=1, prompts=PROMPTS, n=N, reward_bug_prompts={1})
    run, report = import_verl(dump, tmp_path / "run")
    record = run.steps[0]
    assert record["verify/checked"] == 16
    assert record["verify/source_only_correct_frac"] == pytest.approx(2 / 16)
    assert record["verify/verifier_only_correct_frac"] == 0.0
    assert record["verify/agreement"] == pytest.approx(14 / 16)
    assert report["verify_agreement"] == pytest.approx(14 / 16)
    # Correctness comes from the verifier: the bugged group is mixed, though all its rewards
    # are 1 (so GRPO gives it no signal at all).
    bugged = next(g for g in run.groups if g.prompt_id == prompt_hash(prompt_text(1)))
    assert bugged.n_correct == 2 and bugged.rewards == (1.0,) * 4
    assert bugged.advantages == (0.0,) * 4


def test_a_malformed_line_is_named_with_file_and_line_and_the_rest_is_kept(
    tmp_path: Path,
) -> None:
    dump = write_verl_dump(tmp_path / "dump", steps=2, prompts=PROMPTS, n=N, shuffle=False)
    path = dump / "2.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = '{"input": "half a line\n'
    bad_score = json.loads(lines[5])
    bad_score["score"] = "high"
    lines[5] = json.dumps(bad_score) + "\n"
    path.write_text("".join(lines))
    run, report = import_verl(dump, tmp_path / "run")
    assert report["warnings"] == [
        f"{path}:3: invalid JSON (Unterminated string starting at at column 11)",
        f"{path}:6: 'score' must be a number, got 'high'",
    ]
    steps = steps_by_number(run)
    assert steps[1]["import/skipped_lines"] == 0
    assert steps[2]["import/skipped_lines"] == 2
    assert steps[2]["import/rollouts"] == PROMPTS * N - 2
    # Unshuffled, lines 3 and 6 are rollouts of prompt 0 and prompt 1: two groups of 3.
    assert steps[2]["import/groups_off_size"] == 2
    assert sorted(g.G for g in run.groups if g.step == 2) == [3, 3, 4, 4]


def test_step_files_with_a_missing_key(tmp_path: Path) -> None:
    dump = write_verl_dump(tmp_path / "dump", steps=3, prompts=PROMPTS, n=N)
    # Step 2 from an older verl: no gts, so correctness falls back to the score.
    older = [json.loads(line) for line in (dump / "2.jsonl").read_text().splitlines()]
    (dump / "2.jsonl").write_text(
        "".join(json.dumps({k: v for k, v in line.items() if k != "gts"}) + "\n" for line in older)
    )
    # Step 3 lost its responses: every line is skipped, and the step has no records.
    broken = [json.loads(line) for line in (dump / "3.jsonl").read_text().splitlines()]
    (dump / "3.jsonl").write_text(
        "".join(
            json.dumps({k: v for k, v in line.items() if k != "output"}) + "\n" for line in broken
        )
    )
    run, report = import_verl(dump, tmp_path / "run")
    steps = steps_by_number(run)
    assert sorted(steps) == [1, 2]
    assert steps[1]["import/correct_verifier_frac"] == 1.0
    assert steps[2]["import/correct_reward_frac"] == 1.0
    assert steps[2]["verify/checked"] == 0 and steps[2]["verify/agreement"] is None
    assert report["empty_steps"] == [3]
    assert report["skipped_lines"] == PROMPTS * N
    assert report["warnings"][0] == f"{dump / '3.jsonl'}:1: missing key 'output'"


def test_a_line_whose_step_disagrees_with_its_file_is_skipped(tmp_path: Path) -> None:
    dump = write_verl_dump(tmp_path / "dump", steps=1, prompts=PROMPTS, n=N, shuffle=False)
    lines = (dump / "1.jsonl").read_text().splitlines()
    moved = json.loads(lines[0])
    moved["step"] = 7
    lines[0] = json.dumps(moved)
    (dump / "1.jsonl").write_text("\n".join(lines) + "\n")
    (dump / "notes.txt").write_text("not a step file")
    _, report = import_verl(dump, tmp_path / "run")
    assert report["warnings"] == [f"{dump / '1.jsonl'}:1: 'step' is 7 but the file holds step 1"]
    assert report["ignored_files"] == ["notes.txt"]


def test_dump_folders_that_cannot_be_imported_say_why(tmp_path: Path) -> None:
    with pytest.raises(ImportInputError, match="not a folder"):
        VerlDump(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportInputError, match=r"no verl step files \(<step>.jsonl"):
        VerlDump(tmp_path / "empty")
    dump = write_verl_dump(tmp_path / "dump", steps=1, prompts=1, n=2)
    shutil.copy(dump / "1.jsonl", dump / "01.jsonl")
    with pytest.raises(ImportInputError, match="step 1 again"):
        VerlDump(dump)


# Measured in a fresh interpreter: tracemalloc's peak counts every allocation of the process, and
# inside the whole suite it depended on what ran before (one run under load: 81 KB for 20 steps,
# 170 KB for 200; a fresh process: 394 KB and 450 KB, to within 0.1 % on every run).
_PEAKS_SCRIPT = """
import json, sys, tracemalloc
from pathlib import Path
from care.imports.convert import import_run
from care.imports.sources import VerlDump
from fixtures.verl_dumps import write_verl_dump
root, prompts, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
write_verl_dump(root / "warm", steps=1, prompts=prompts, n=n)
import_run(VerlDump(root / "warm"), root / "run_warm")  # imports and caches first
peaks = {}
for steps in (20, 200):
    dump = write_verl_dump(root / f"dump{steps}", steps=steps, prompts=prompts, n=n,
                           filler_chars=200)
    tracemalloc.start()
    report = import_run(VerlDump(dump), root / f"run{steps}")
    peaks[steps] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert report.steps == steps and report.rollouts == steps * prompts * n, report
print(json.dumps(peaks))
"""


def test_a_200_step_dump_imports_in_bounded_memory(tmp_path: Path) -> None:
    """Peak traced Python memory of a 200-step import stays under 2 MiB and within 25 % (plus
    64 KiB) of a 20-step import of the same step size: it does not grow with the steps."""
    tests = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)])}
    done = subprocess.run(
        [sys.executable, "-c", _PEAKS_SCRIPT, str(tmp_path), str(PROMPTS), str(N)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    peaks = {int(k): v for k, v in json.loads(done.stdout.splitlines()[-1]).items()}
    assert peaks[200] < 2 * 2**20, peaks
    assert peaks[200] <= 1.25 * peaks[20] + 64 * 2**10, peaks
    assert len(RunReader(tmp_path / "run200").steps) == 200


# ---------------------------------------------------------------------------------------------
# the generic schema


def write_rows_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def comparable(run: RunReader) -> list[dict]:
    drop = ("time", "response_chars/mean", "response_chars/max")
    return [{k: v for k, v in record.items() if k not in drop} for record in run.steps]


def test_generic_jsonl_and_parquet_import_to_the_same_records_as_the_verl_dump(
    tmp_path: Path,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dump = write_verl_dump(tmp_path / "dump", steps=2, prompts=PROMPTS, n=N, acc=True)
    verl_run, _ = import_verl(dump, tmp_path / "verl_run")
    rows = as_generic_rows(dump)
    jsonl = write_rows_jsonl(tmp_path / "rollouts.jsonl", rows)
    parquet = tmp_path / "rollouts.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet, row_group_size=5)
    for path in (jsonl, parquet):
        out = tmp_path / f"run_{path.suffix[1:]}"
        import_run(RolloutFiles(path), out)
        run = RunReader(out)
        assert comparable(run) == comparable(verl_run), path
        assert {g.correct_source for g in run.groups} == {"given"}
        assert {g.prompt_id for g in run.groups} == {"0", "1", "2", "3"}
        assert run.config["import"]["format"] == "rollouts"
    parquet_sample = RunReader(tmp_path / "run_parquet").samples(1)[0]
    assert parquet_sample.source_line == f"{parquet}:row 1"


def test_generic_rows_out_of_step_order_are_refused_with_the_row(tmp_path: Path) -> None:
    rows = [
        {"step": 2, "prompt_id": "a", "response": "x", "reward": 1.0},
        {"step": 1, "prompt_id": "a", "response": "y", "reward": 0.0},
    ]
    path = write_rows_jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(ImportInputError, match=r"rows.jsonl:2: step 1 comes after step 2"):
        import_run(RolloutFiles(path), tmp_path / "run")


def test_generic_rows_missing_a_field_are_skipped_and_named(tmp_path: Path) -> None:
    rows = [
        {"step": 1, "prompt_id": "a", "response": "<answer>3</answer>", "reward": 1.0},
        {"step": 1, "prompt_id": "a", "response": "<answer>4</answer>"},
        {"step": 1, "prompt_id": "a", "response": "<answer>4</answer>", "reward": 0.0},
        {"step": "one", "prompt_id": "b", "response": "", "reward": 0.0},
    ]
    path = write_rows_jsonl(tmp_path / "rows.jsonl", rows)
    report = import_run(RolloutFiles(path), tmp_path / "run")
    assert report.warnings == [
        f"{path}:2: missing key 'reward'",
        f"{path}:4: 'step' must be an integer >= 0, got 'one'",
    ]
    (group,) = RunReader(tmp_path / "run").groups
    assert group.G == 2 and group.correct == (True, False)
    assert group.correct_source == "reward"


# ---------------------------------------------------------------------------------------------
# the command


def test_care_import_verl_writes_the_run_and_prints_the_throughput(tmp_path: Path) -> None:
    dump = write_verl_dump(tmp_path / "dump", steps=2, prompts=PROMPTS, n=N)
    runner = CliRunner()
    out = tmp_path / "runs" / "verl"
    result = runner.invoke(app, ["import", "verl", str(dump), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "read:         2 steps, 32 rollouts in 8 groups; skipped lines: 0" in result.output
    assert "correct from: given 0, verifier 32, reward 0 (rollouts)" in result.output
    assert "agrees with the source's verdict on 100.0% of 32 rollouts" in result.output
    assert "rollouts/s" in result.output
    assert len(RunReader(out).steps) == 2
    again = runner.invoke(app, ["import", "verl", str(dump), "--out", str(out)])
    assert again.exit_code == 2 and "already holds a run" in again.output
    replaced = runner.invoke(
        app, ["import", "verl", str(dump), "--out", str(out), "--overwrite", "--no-verify"]
    )
    assert replaced.exit_code == 0, replaced.output
    assert RunReader(out).config["import"]["verify"] is False
    missing = runner.invoke(app, ["import", "verl", str(tmp_path / "nope"), "--out", str(out)])
    assert missing.exit_code == 2 and "not a folder" in missing.output


def test_import_refuses_an_existing_run_without_overwrite(tmp_path: Path) -> None:
    dump = write_verl_dump(tmp_path / "dump", steps=1, prompts=1, n=2)
    import_run(VerlDump(dump), tmp_path / "run")
    with pytest.raises(RunExistsError):
        import_run(VerlDump(dump), tmp_path / "run")


# ---------------------------------------------------------------------------------------------
# the dashboard on an imported run

PAGE_FILES = (
    "runs.py",
    "training_signal.py",
    "smoothness.py",
    "hard_negatives.py",
    "evaluation.py",
    "compare.py",
)
IMPORTED_STEPS = 3


@pytest.fixture(scope="module")
def dashboard_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs root with a 3-step verl import (`verl_grpo`) beside a native CARE run (`care`)."""
    pytest.importorskip("streamlit", reason="the dashboard needs the 'app' extra")
    from fixtures.runs import write_synthetic_run

    root = tmp_path_factory.mktemp("dashboard_runs")
    dump = write_verl_dump(
        tmp_path_factory.mktemp("dashboard_dump"), steps=IMPORTED_STEPS, prompts=PROMPTS, n=N
    )
    import_run(VerlDump(dump), root / "verl_grpo")
    write_synthetic_run(
        root / "care",
        steps=6,
        estimator="care",
        eval_results={6: {"care_mathvista": 0.70, "care_mmmu": 0.60}},
    )
    return root


def open_page(
    name: str, root: Path, monkeypatch: pytest.MonkeyPatch, **query: str | list[str]
) -> AppTest:
    """`fixtures.pages.open_page` with the dashboard's cache emptied first."""
    from fixtures.pages import open_page as run_page

    from analysis_app import data

    data.clear_cache()
    return run_page(name, root, monkeypatch, **query)


def page_text(app: AppTest) -> str:
    from fixtures.pages import page_texts

    return page_texts(app, ("info", "caption", "markdown", "warning", "error"), separator=" ")


def chart_traces(app: AppTest) -> dict[str, dict[str, list[float]]]:
    """{figure title: {trace name: y values}} of every plotly chart a page drew."""
    charts = {}
    for chart in app.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        title = spec["layout"]["title"]["text"].split("<br>")[0]
        charts[title] = {trace["name"]: plotly_values(trace["y"]) for trace in spec["data"]}
    return charts


def plotly_values(values: list | dict) -> list[float]:
    """Plotly sends numeric arrays as {"dtype", "bdata": base64}; plain lists stay lists."""
    if isinstance(values, list):
        return values
    return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()


def test_training_signal_page_shows_the_imported_runs_group_types_and_failure_share(
    dashboard_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signal = open_page("training_signal.py", dashboard_root, monkeypatch, run="verl_grpo")
    assert not signal.error, [e.value for e in signal.error]
    charts = chart_traces(signal)
    assert set(charts) == {
        "Accuracy: training rollouts and held-out validation",
        "Failure-signal share of the advantage magnitude",
        "Prompt groups by type",
        "Advantage variance ratio, negatives over positives",
    }
    steps = range(1, IMPORTED_STEPS + 1)
    # The faint raw curves are the logged values, one point per imported step.
    shares = charts["Failure-signal share of the advantage magnitude"]
    assert shares["failure share (seq) (raw)"] == pytest.approx([0.5] * IMPORTED_STEPS)
    types = charts["Prompt groups by type"]
    for trace, key in (
        ("all correct (raw)", "groups/all_correct_frac"),
        ("all wrong (raw)", "groups/all_wrong_frac"),
        ("mixed (raw)", "groups/mixed_frac"),
    ):
        expected = [group_types(step, PROMPTS, N)[key] for step in steps]
        assert types[trace] == pytest.approx(expected), trace
    # Correct counts per prompt: step 1 → 1,2,3,4; step 2 → 2,3,4,0; step 3 → 3,4,0,1.
    assert types["mixed (raw)"] == pytest.approx([0.75, 0.5, 0.5])
    assert types["all wrong (raw)"] == pytest.approx([0.0, 0.25, 0.25])
    summary = signal.dataframe[0].value
    assert summary.loc["signal/failure_share_seq", "verl_grpo"] == pytest.approx(0.5)
    assert summary.loc["groups/mixed_frac", "verl_grpo"] == pytest.approx((3 + 2 + 2) / 12)
    assert summary.loc["groups/all_correct_frac", "verl_grpo"] == pytest.approx(0.25)
    assert summary.loc["groups/all_wrong_frac", "verl_grpo"] == pytest.approx(2 / 12)
    assert "rescue rgr: not logged by the selected runs." in [e.value for e in signal.caption]
    info = " ".join(str(e.value) for e in signal.info)
    assert (
        "imported from a verl rollout dump" in info
        and "need the rollouts' reasoning embeddings" in info
    )


def test_hard_negatives_page_says_what_an_import_cannot_compute(
    dashboard_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    browse = open_page("hard_negatives.py", dashboard_root, monkeypatch, run="verl_grpo")
    assert not browse.error, [e.value for e in browse.error]
    text = page_text(browse)
    assert "need the rollouts' reasoning embeddings" in text
    assert "Not computed: the run was imported from a rollout dump." in text
    first_group_answers = next(
        s.answers for s in RunReader(dashboard_root / "verl_grpo").samples(1) if s.group_id == 0
    )
    assert f"**Gold answer:** `{first_group_answers[0]}`" in text  # the dump's gts
    metrics = {m.label: m.value for m in browse.metric}
    assert metrics["K' (negatives used)"] == "not computed"
    assert metrics["rescued"] == "not computed"

    runs = open_page("runs.py", dashboard_root, monkeypatch)
    table = runs.dataframe[0].value.set_index("run")
    assert table.loc["verl_grpo", "estimator"] == "verl import"
    assert table.loc["verl_grpo", "model"] == "not recorded (imported)"
    assert table.loc["verl_grpo", "steps"] == IMPORTED_STEPS


@pytest.mark.parametrize("page_file", PAGE_FILES)
def test_every_dashboard_page_opens_on_an_imported_run_with_a_native_one(
    page_file: str, dashboard_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beside a CARE run every page draws the import too, and none raises or shows an error."""
    app = open_page(page_file, dashboard_root, monkeypatch, run=["verl_grpo", "care"])
    assert not app.error, [e.value for e in app.error]
    traces = {title: " ".join(names) for title, names in chart_traces(app).items()}
    tables = " ".join(frame.value.to_csv() for frame in app.dataframe)
    if page_file == "evaluation.py":
        # The import has no checkpoints to evaluate; the CARE run's results are still drawn.
        assert "No evaluation results for: verl_grpo." in page_text(app)
        assert all("verl_grpo" not in names for names in traces.values())
        assert "care @ step_6,70.0," in tables  # MathVista 0.70 shown in percent
    elif page_file == "hard_negatives.py":
        # One run at a time: the first selected, the import, with its note.
        assert "need the rollouts' reasoning embeddings" in page_text(app)
    else:
        assert "verl_grpo" in tables and "care" in tables, page_file
    if page_file in ("training_signal.py", "smoothness.py", "compare.py"):
        both = [t for t, names in traces.items() if "verl_grpo" in names and "care" in names]
        assert both, (page_file, traces)
    if page_file == "training_signal.py":
        assert len(traces) == 5 and len(both) == 4  # accuracy, shares, group types, ratio
        # Rescue and RGR need embeddings: drawn for the CARE run only.
        assert "verl_grpo" not in traces["All-negative rescue and RGR"]
