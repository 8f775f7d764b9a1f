"""The reference trainer on the tiny model: every estimator steps and logs; CARE's rescue and RGR
records carry the right numbers; a SIGKILLed run resumes to the same weights and records."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import ScriptedEngine, failure_share_of, tiny_config, write_choice_dataset
from typer.testing import CliRunner

from care.cli import app
from care.config import config_from_dict
from care.data import DataError
from care.data.synth import write_synthetic_dataset
from care.runlog import RunReader
from care.train.projection import project_rationales
from care.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, seed=3, n_train=24, n_test=8, image_size=56)
    return out


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "dapo", "gspo", "care", "care_no_rgr"])
def test_every_estimator_trains_and_logs_the_step_metrics(data_dir, tmp_path, estimator):
    cfg = config_from_dict(
        tiny_config(data_dir, tmp_path, estimator, algo={"estimator": estimator})
    )
    run_dir = Trainer(cfg, progress=False).fit()
    run = RunReader(run_dir)
    assert [record["step"] for record in run.steps] == [1, 2]
    assert run.config["algo"]["estimator"] == estimator
    first = run.steps[0]
    for key in (
        "signal/failure_share_seq",
        "signal/failure_share_token",
        "groups/all_wrong_frac",
        "acc/mean",
        "time/rollout",
        "time/update",
    ):
        assert key in first, key
    groups = run.groups
    step_groups = [g for g in groups if g.step == 1]
    # The random tiny model never answers right in 8 tokens: every group is all wrong, so GRPO's
    # advantages are all zero and DAPO keeps no group (the estimators learning from real signal
    # are tested in test_estimators_learn.py).
    assert all(g.n_correct == 0 for g in step_groups)
    assert first["groups/all_wrong_frac"] == 1.0
    skipped = first.get("update/skipped") == 1.0
    # Only DAPO skips an update, and only when no group of the step has any reward variance:
    # here after the first draw and its three refill rounds of two prompts each.
    assert skipped == (estimator == "dapo")
    if estimator == "dapo":
        assert first["dapo/kept_groups"] == 0 and first["dapo/refill_rounds"] == 3
        assert first["dapo/drawn_groups"] == 8
        assert "loss/pg" not in first and "lr" not in first
        assert "loss/kl" not in first  # DAPO trains without a KL term
    else:
        for key in ("loss/pg", "loss/clipfrac", "grad_norm", "entropy"):
            assert math.isfinite(first[key]), key
        assert first["lr"] == pytest.approx(1e-3)
        # low_var_kl is never negative, and the policy starts at the reference: after at most
        # one of the step's two updates it is still close to it.
        assert 0.0 <= first["loss/kl"] < 0.05
    # The logged failure share is the one the group records give: |advantage| of failures
    # (every RGR repair counts: a failed one is a failure, a passed one got its credit from
    # one) over all |advantage|, 0 when there is no advantage at all.
    assert first["signal/failure_share_seq"] == pytest.approx(failure_share_of(step_groups))
    # Two steps of two prompts (DAPO, keeping nothing, logs its first draw).
    assert len(groups) == 4 and all(g.G == 4 for g in groups)
    # Only CARE computes rationale embeddings, so only its groups carry their projections.
    if estimator in ("care", "care_no_rgr"):
        assert all(
            len(g.projection) == g.G + (g.rgr is not None and g.rgr.triggered) for g in groups
        )
    else:
        assert all(g.projection is None for g in groups)
    checkpoint = run_dir / "checkpoints" / "step_2"
    assert (checkpoint / "model.safetensors").is_file()
    assert (checkpoint / "trainer_state.pt").is_file()


def test_care_step_logs_a_rescue_and_a_passed_repair_as_a_second_positive(data_dir, tmp_path):
    # The scripted engine tells prompts apart by question text, and synthetic questions repeat
    # ("How many blocks are in the image?"), so train on the first row of each question only.
    unique, seen = [], set()
    for line in (data_dir / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["question"] not in seen:
            seen.add(row["question"])
            unique.append({**row, "images": [str(data_dir / name) for name in row["images"]]})
    assert len(unique) >= 2
    train_file = tmp_path / "unique_questions.jsonl"
    train_file.write_text("".join(json.dumps(row) + "\n" for row in unique))
    cfg = config_from_dict(
        tiny_config(
            data_dir,
            tmp_path,
            "scripted",
            data={"train_files": [str(train_file)]},
            train={"steps": 1, "prompts_per_step": 2, "mini_batch_prompts": 2},
        )
    )
    trainer = Trainer(cfg, progress=False)
    answers = {ex.question: ex.answer for ex in trainer.examples}
    first_question = {}

    def script(question, answer, sample, is_repair):
        # The first question seen gets one correct rollout (an anchored group whose repair
        # passes); the second gets none (rescue).
        first_question.setdefault("q", question)
        correct = f"<think>\nchecked\n</think>\n<answer>{answer}</answer>"
        wrong = f"<think>\nguess {sample}\n</think>\n<answer>zzz{sample}</answer>"
        if is_repair:
            return f"Fixed it.\n</think>\n<answer>{answer}</answer>"
        if question == first_question["q"] and sample == 0:
            return correct
        return wrong

    trainer.engine = ScriptedEngine(trainer.processor, answers, script)
    logged = {}
    log_step = trainer._log

    def keep_rows(step, batch, result, *rest):
        logged["embeddings"] = batch.embeddings.clone()
        logged["rows"] = [(row.group, row.reflected_from) for row in batch.rows]
        return log_step(step, batch, result, *rest)

    trainer._log = keep_rows
    trainer.fit()
    run = RunReader(cfg.run_dir)
    anchored, rescued = sorted(run.groups, key=lambda g: g.rescued)
    # Each group's projection: its rollouts' rows in order, then its repair's row.
    projected = project_rationales(logged["embeddings"], cfg.run.seed).tolist()
    for group in run.groups:
        rows = [i for i, (g, source) in enumerate(logged["rows"]) if g == group.group_id]
        order = [i for i in rows if logged["rows"][i][1] < 0] + [
            i for i in rows if logged["rows"][i][1] >= 0
        ]
        assert group.projection == tuple(tuple(projected[i]) for i in order)
    assert len(anchored.projection) == 5 and len(rescued.projection) == 4
    assert anchored.n_correct == 1 and anchored.anchor_index == 0
    assert anchored.k_prime == 3
    assert anchored.rgr.triggered and anchored.rgr.passed
    source = anchored.rgr.source_index
    assert source == anchored.hard_negatives[0].index
    # S = {anchor, repair, two failures}: rewards [1, 1, 0, 0] → ±1 z-scores, negatives × s,
    # everything × sqrt(K/K') = sqrt(4/3).
    scale = math.sqrt(4 / 3)
    assert anchored.advantages[0] == pytest.approx(scale, abs=1e-4)
    assert anchored.rgr.advantage == pytest.approx(scale, abs=1e-4)
    assert anchored.advantages[source] == 0.0
    others = [a for i, a in enumerate(anchored.advantages) if i not in (0, source)]
    assert others == pytest.approx([-0.5 * scale] * 2, abs=1e-4)

    assert rescued.n_correct == 0 and rescued.rescued
    assert rescued.pseudo_anchor is not None and rescued.anchor_index is None
    assert rescued.advantages[rescued.pseudo_anchor] == pytest.approx(2.0, abs=1e-3)
    assert rescued.rgr.triggered is False
    step = run.steps[0]
    assert step["rgr/triggered"] == 1 and step["rgr/passed"] == 1
    assert step["rescue/triggered_frac"] == 0.5
    # The passed repair's credit comes from a failure: it counts in the RGR reading only.
    assert step["signal/failure_share_seq"] > step["signal/failure_share_seq_no_rgr"]


def test_bad_training_row_stops_the_run_with_file_line_and_field(data_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    rows = (data_dir / "train.jsonl").read_text().splitlines()
    broken = json.loads(rows[1])
    broken["answer"] = ""
    rows[1] = json.dumps(broken)
    bad.write_text("\n".join(rows) + "\n")
    for row in rows:
        for image in json.loads(row)["images"]:
            target = tmp_path / image
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(data_dir / image)
    cfg = config_from_dict(tiny_config(data_dir, tmp_path, "bad", data={"train_files": [str(bad)]}))
    with pytest.raises(DataError, match=r"bad\.jsonl.*line 2.*answer"):
        Trainer(cfg, progress=False)
    skipping = config_from_dict(
        tiny_config(
            data_dir,
            tmp_path,
            "skip",
            data={"train_files": [str(bad)], "on_bad_row": "skip"},
            train={"steps": 1},
        )
    )
    run_dir = Trainer(skipping, progress=False).fit()
    assert RunReader(run_dir).steps[0]["data/skipped_rows"] == 1


def _records_without_time(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out.append({k: v for k, v in record.items() if k != "time" and not k.startswith("time/")})
    return out


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(data_dir, tmp_path):
    base = tiny_config(data_dir, tmp_path, "straight", train={"steps": 4, "save_every": 1})
    config_path = tmp_path / "cfg.json"
    config_path.write_text(json.dumps(base))
    import yaml

    yaml_path = tmp_path / "cfg.yaml"
    yaml_path.write_text(yaml.safe_dump(base))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "care.cli", "train", "-c", str(yaml_path)]
    subprocess.run(command, check=True, env=env, cwd=ROOT, capture_output=True)

    killed = command + ["--set", "run.name=killed"]
    process = subprocess.Popen(
        killed, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    steps_file = tmp_path / "killed" / "steps.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if steps_file.exists() and len(steps_file.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    logged = len(steps_file.read_text().splitlines())
    assert logged < 4
    subprocess.run(killed + ["--resume"], check=True, env=env, cwd=ROOT, capture_output=True)

    straight, resumed = tmp_path / "straight", tmp_path / "killed"
    for name in ("steps.jsonl", "groups.jsonl"):
        assert _records_without_time(resumed / name) == _records_without_time(straight / name)
    weights_a = load_file(straight / "checkpoints" / "step_4" / "model.safetensors")
    weights_b = load_file(resumed / "checkpoints" / "step_4" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
    assert RunReader(resumed).meta["status"] == "finished"
    assert len(RunReader(resumed).meta["resumes"]) == 1


def test_resume_records_allowed_setting_changes_and_refuses_one_that_breaks_exactness(
    data_dir, tmp_path
):
    import yaml

    config_path = tmp_path / "cfg.yaml"
    config_path.write_text(
        yaml.safe_dump(
            tiny_config(
                data_dir, tmp_path, "changed", algo={"estimator": "grpo"}, train={"save_every": 1}
            )
        )
    )
    run_dir = tmp_path / "changed"
    runner = CliRunner()

    def train(*extra: str):
        return runner.invoke(app, ["train", "-c", str(config_path), *extra])

    assert train().exit_code == 0
    resumed = train("--set", "train.steps=3", "--set", "train.log_samples_every=0", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resume from step 2: train.steps: 2 → 3 (recorded in meta.json)" in resumed.output
    assert "resume from step 2: train.log_samples_every: 1 → 0 (recorded in meta.json)" in (
        resumed.output
    )
    run = RunReader(run_dir)
    assert run.meta["resumes"][-1]["config_changes"] == [
        {"field": "train.steps", "old": 2, "new": 3, "step": 2},
        {"field": "train.log_samples_every", "old": 1, "new": 0, "step": 2},
    ]
    assert [record["step"] for record in run.steps] == [1, 2, 3]
    assert run.sample_steps == [1, 2]  # the new cadence holds from step 3 on
    assert run.config["train"]["steps"] == 2  # config.yaml keeps the values the run started with

    # A change of what a step computes is refused before anything is written.
    refused = train("--set", "train.steps=4", "--set", "rollout.n=8", "--resume")
    assert refused.exit_code == 2
    assert "--resume from step 3: these fields differ" in refused.output
    listed = [line.strip() for line in refused.output.splitlines() if line.startswith("  ")]
    assert listed == ["rollout.n: 4 → 8"]
    after = RunReader(run_dir)
    assert len(after.meta["resumes"]) == 1 and after.meta["status"] == "finished"
    assert [record["step"] for record in after.steps] == [1, 2, 3]
    estimator = train("--set", "train.steps=4", "--set", "algo.estimator=dr_grpo", "--resume")
    assert estimator.exit_code == 2 and "algo.estimator: 'grpo' → 'dr_grpo'" in estimator.output

    # The next resume compares with the checkpoint's config (3 steps, no samples), not with
    # config.yaml: only train.steps changes again.
    again = train("--set", "train.steps=4", "--set", "train.log_samples_every=0", "--resume")
    assert again.exit_code == 0, again.output
    meta = RunReader(run_dir).meta
    assert [entry["config_changes"] for entry in meta["resumes"]][-1] == [
        {"field": "train.steps", "old": 3, "new": 4, "step": 3}
    ]
    assert len(meta["resumes"]) == 2


@pytest.mark.parametrize(
    ("prompts_per_step", "expected"),
    [
        # One update per step: update u runs at lr * min(1, (u + 1) / 4).
        (1, [0.25e-3, 0.5e-3, 0.75e-3, 1e-3]),
        # Two updates per step: the mean of their rates, (1/4 + 2/4) / 2, then (3/4 + 1) / 2.
        (2, [0.375e-3, 0.875e-3, 1e-3, 1e-3]),
    ],
)
def test_logged_lr_is_the_rate_of_the_steps_updates_during_warm_up(
    tmp_path, prompts_per_step, expected
):
    data = write_choice_dataset(tmp_path / "data", 2, lambda index: "A")
    cfg = config_from_dict(
        tiny_config(
            tmp_path / "data",
            tmp_path,
            "warmup",
            algo={"estimator": "grpo"},
            data={"train_files": [str(data)]},
            optim={"lr": 1e-3, "warmup_steps": 4},
            train={"steps": 4, "prompts_per_step": prompts_per_step, "mini_batch_prompts": 1},
        )
    )
    trainer = Trainer(cfg, progress=False)
    answers = {ex.question: ex.answer for ex in trainer.examples}

    def script(question, answer, sample, is_repair):
        return f"<think>\nlook\n</think>\n<answer>{'A' if sample == 0 else 'B'}</answer>"

    trainer.engine = ScriptedEngine(trainer.processor, answers, script)
    trainer.fit()
    assert [record["lr"] for record in RunReader(cfg.run_dir).steps] == pytest.approx(expected)


def test_a_verifier_timeout_during_training_is_counted_in_the_step_record(tmp_path, monkeypatch):
    from tiny_run import ScriptedEngine

    from care.verify import mathexpr

    data = tmp_path / "numbers"
    write_choice_dataset(data, 4, lambda index: "A")
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    for row in rows:  # numeric golds, so an expression answer goes to math-verify
        row.pop("choices")
        row["answer"] = "2"
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = config_from_dict(
        tiny_config(
            data,
            tmp_path,
            "timeouts",
            algo={"estimator": "grpo", "reward": {"verify_time_limit": 0.05}},
            train={"steps": 1, "prompts_per_step": 2, "mini_batch_prompts": 2},
        )
    )
    trainer = Trainer(cfg, progress=False)

    def script(question, answer, sample, is_repair):
        if sample == 0:
            return "<think>\nhalf of four\n</think>\n<answer>\\frac{4}{2}</answer>"
        if sample == 1:
            return "<think>\nstill thinking"
        return f"<think>\nok\n</think>\n<answer>{answer}</answer>"

    parse_once = mathexpr._parse

    def slow_parse(text):
        time.sleep(0.3)  # a busy machine: longer than the 0.05 s budget
        return parse_once(text)

    monkeypatch.setattr(mathexpr, "_parse", slow_parse)
    mathexpr._parse_gold_cached.cache_clear()
    answers = {ex.question: ex.answer for ex in trainer.examples}
    trainer.engine = ScriptedEngine(trainer.processor, answers, script)
    trainer.fit()
    mathexpr._parse_gold_cached.cache_clear()
    step = RunReader(cfg.run_dir).steps[0]
    # Per prompt: one right answer lost to the timeout, one without an answer, two right.
    assert step["verify/timeout_frac"] == 0.25
    assert step["verify/no_answer_frac"] == 0.25
    assert step["verify/truncated_frac"] == 0.0
    assert step["acc/mean"] == 0.5
    assert RunReader(cfg.run_dir).config["algo"]["reward"]["verify_time_limit"] == 0.05
