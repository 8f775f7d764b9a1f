"""Run-folder format: round trips, strict JSON values, corruption handling, crash and resume."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import care
from care.runlog import (
    PROJECTION_DIM,
    SCHEMA_VERSION,
    GroupRecord,
    HardNegative,
    RecordError,
    RgrRecord,
    RunExistsError,
    RunLogError,
    RunReader,
    RunWriter,
    SampleRecord,
    StepIndex,
    StepRecord,
    json_parser,
    list_runs,
    read_jsonl,
    read_table,
    sample_file,
    to_json_value,
)

CONFIG = {
    "estimator": "care",
    "rollout": {"group_size": 4, "temperature": 1.0},
    "rgr": {"enable": True, "max_tokens": 256},
    "lr": 1.0e-6,
}


def group_record(group_id: int, n_correct: int = 2) -> dict:
    """A well-formed groups.jsonl record (without "step") of G = 4 whose first `n_correct`
    rollouts are correct; a mixed group has anchor 0, hard negatives 2 and 3 and a failed
    repair of rollout 3, an all-correct or all-wrong one none of these."""
    correct = [index < n_correct for index in range(4)]
    mixed = 0 < n_correct < 4
    no_repair = {
        "triggered": False, "passed": None, "source_index": None, "source_len": None,
        "repair_len": None, "reward": None, "advantage": None,
    }  # fmt: skip
    repair = {
        "triggered": True, "passed": False, "source_index": 3, "source_len": 40,
        "repair_len": 12, "reward": 0.0, "advantage": -0.25,
    }  # fmt: skip
    return {
        "group_id": group_id,
        "prompt_id": f"geo-{group_id}",
        "G": 4,
        "n_correct": n_correct,
        "anchor_index": 0 if mixed else None,
        "hard_negatives": [{"index": 2, "distance": 0.125}, {"index": 3, "distance": 0.5}]
        if mixed
        else [],
        "k_prime": 2 if mixed else 0,
        "rescued": False,
        "pseudo_anchor": None,
        "rescue_impossible": False,
        "rgr": repair if mixed else no_repair,
        "advantages": [1.0 if flag else -0.75 for flag in correct] if mixed else [0.0] * 4,
        "rewards": [float(flag) for flag in correct],
        "correct": correct,
        "projection": None,
    }


def sample_record(group_id: int, index: int) -> dict:
    return {
        "group_id": group_id,
        "index": index,
        "prompt_id": f"geo-{group_id}",
        "response": f"<think>angle {index}</think> \\boxed{{{index}}} ∠",
        "reward": float(index % 2),
        "correct": index % 2 == 1,
        "question": "Find the angle.",
    }


def log_training_step(writer: RunWriter, step: int) -> None:
    """One step's worth of logs, with values that depend on the step only (deterministic)."""
    writer.log_step(
        step,
        {"signal/failure_share_seq": step / 10, "acc/mean": 0.5, "loss/kl": 0.01 * step},
        timestamp=1000.0 + step,
    )
    writer.log_groups(step, [group_record(0, n_correct=step % 5), group_record(1)])
    writer.log_samples(step, [sample_record(0, 0), sample_record(0, 1)])


def written_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# -- round trip -----------------------------------------------------------------------------------


def test_round_trip_restores_config_meta_steps_groups_and_samples(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "care_seed3"
    with RunWriter.create(run_dir, CONFIG, seed=3) as writer:
        log_training_step(writer, 1)
        log_training_step(writer, 2)

    run = RunReader(run_dir)
    assert run.config == CONFIG
    assert list(yaml.safe_load((run_dir / "config.yaml").read_text()).keys()) == list(CONFIG)

    meta = run.meta
    assert meta["schema_version"] == SCHEMA_VERSION == 3
    assert meta["care_suite_version"] == care.__version__
    assert meta["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert meta["torch_version"] == torch.__version__
    assert meta["seed"] == 3
    assert meta["status"] == "finished"
    assert meta["resumes"] == []
    start = datetime.fromisoformat(meta["start_time"])
    end = datetime.fromisoformat(meta["end_time"])
    assert start.utcoffset() == UTC.utcoffset(None)
    assert start <= end
    assert isinstance(meta["host"], str) and meta["host"]

    assert run.steps == [
        {"step": 1, "time": 1001.0, "signal/failure_share_seq": 0.1, "acc/mean": 0.5,
         "loss/kl": 0.01},
        {"step": 2, "time": 1002.0, "signal/failure_share_seq": 0.2, "acc/mean": 0.5,
         "loss/kl": 0.02},
    ]  # fmt: skip
    assert len(run.groups) == 4
    assert run.groups[0].to_json() == {"step": 1, **group_record(0, n_correct=1)}
    assert run.groups[3] == GroupRecord.from_json({"step": 2, **group_record(1)})
    assert run.groups[0].rgr == RgrRecord(True, False, 3, 40, 12, 0.0, -0.25)
    first_line = json.loads(written_lines(run_dir / "groups.jsonl")[0])
    assert list(first_line) == ["step", *group_record(0)]

    expected_sample = SampleRecord(step=2, **sample_record(0, 1))
    assert run.samples(2)[1] == expected_sample
    assert run.samples(2)[1].response.endswith("∠")
    # Every sample line holds every field, those its writer did not know as null.
    sample_line = json.loads(written_lines(sample_file(run_dir, 2))[1])
    assert sample_line["finish_reason"] is None and sample_line["reflected_from"] == -1
    assert run.samples(7) == []
    assert run.sample_steps == [1, 2]
    assert sample_file(run_dir, 2) == run_dir / "samples" / "step_00000002.jsonl"
    assert run.warnings == []


def test_optional_files_missing_give_empty_lists_and_required_files_name_themselves(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    RunWriter.create(run_dir, CONFIG, seed=0).finish()
    (run_dir / "groups.jsonl").unlink()
    run = RunReader(run_dir)
    assert run.steps == [] and run.groups == [] and run.samples(0) == []

    (run_dir / "config.yaml").unlink()
    with pytest.raises(RunLogError, match=r"config\.yaml: file not found"):
        _ = run.config
    (run_dir / "meta.json").write_text("{not json")
    with pytest.raises(RunLogError, match=r"meta\.json: invalid JSON"):
        _ = RunReader(run_dir).meta
    (run_dir / "meta.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(RunLogError, match="newer than this care-suite reads"):
        _ = RunReader(run_dir).meta


# -- values ---------------------------------------------------------------------------------------


def test_nan_and_infinities_are_written_as_null_in_strict_json(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with RunWriter.create(run_dir, CONFIG, seed=0) as writer:
        writer.log_step(0, {"loss/pg": math.nan, "grad_norm": math.inf, "loss/kl": -math.inf,
                            "acc/mean": 0.25}, timestamp=5.0)  # fmt: skip
        nan_advantages = [1.0, float("nan"), np.float32("inf"), -0.75]
        writer.log_groups(0, [{**group_record(0), "advantages": nan_advantages}])

    steps_line = written_lines(run_dir / "steps.jsonl")[0]
    assert "NaN" not in steps_line and "Infinity" not in steps_line
    assert json.loads(steps_line) == {
        "step": 0, "time": 5.0, "loss/pg": None, "grad_norm": None, "loss/kl": None,
        "acc/mean": 0.25,
    }  # fmt: skip
    groups_line = written_lines(run_dir / "groups.jsonl")[0]
    assert '"advantages":[1.0,null,null,-0.75]' in groups_line
    assert RunReader(run_dir).groups[0].advantages == (1.0, None, None, -0.75)


def test_tensors_and_numpy_values_become_python_values() -> None:
    converted = to_json_value(
        {
            "scalar_tensor": torch.tensor(0.5),
            "grad_tensor": torch.tensor([1.5, -2.0], requires_grad=True),
            "bf16": torch.tensor(2.0, dtype=torch.bfloat16),
            "int_tensor": torch.tensor([[1, 2], [3, 4]]),
            "np_float": np.float32(0.25),
            "np_int": np.int64(7),
            "np_bool": np.bool_(True),
            "np_array": np.array([0.5, np.nan]),
            "tuple": (1, torch.tensor(3)),
        }
    )
    assert converted == {
        "scalar_tensor": 0.5,
        "grad_tensor": [1.5, -2.0],
        "bf16": 2.0,
        "int_tensor": [[1, 2], [3, 4]],
        "np_float": 0.25,
        "np_int": 7,
        "np_bool": True,
        "np_array": [0.5, None],
        "tuple": [1, 3],
    }
    assert type(converted["np_int"]) is int and type(converted["np_bool"]) is bool


def test_non_str_keys_and_unknown_types_are_rejected_with_their_location() -> None:
    with pytest.raises(ValueError, match=r"record\.rgr: key 1 is a int; keys must be str"):
        to_json_value({"rgr": {1: True}}, "record")
    with pytest.raises(ValueError, match=r"record\.hard_negatives\[1\]: value of type .*set"):
        to_json_value({"hard_negatives": [0, {2}]}, "record")


def test_writer_validates_steps_and_records(tmp_path: Path) -> None:
    with RunWriter.create(tmp_path / "run", CONFIG, seed=0) as writer:
        writer.log_step(3, {"acc/mean": torch.tensor(0.5)})
        with pytest.raises(ValueError, match="greater than the last logged step 3"):
            writer.log_step(3, {})
        with pytest.raises(ValueError, match="step must be an int"):
            writer.log_step(True, {})
        with pytest.raises(ValueError, match="must not contain the key 'step'"):
            writer.log_step(4, {"step": 4})
        with pytest.raises(ValueError, match="step record: field 'adv': must be a number"):
            writer.log_step(4, {"adv": torch.tensor([1.0, 2.0])})
        with pytest.raises(ValueError, match=r"record 1: field 'step' is 2 but .* step 4"):
            writer.log_groups(4, [group_record(0), {**group_record(1), "step": 2}])
        with pytest.raises(ValueError, match="records must be a list of GroupRecords or dicts"):
            writer.log_groups(4, group_record(0))
        writer.log_groups(4, [{**group_record(0), "step": np.int64(4)}])
    # A rejected batch writes nothing, not even its valid first record.
    assert [group.to_json() for group in RunReader(tmp_path / "run").groups] == [
        {"step": 4, **group_record(0)}
    ]


# -- reading damaged files ------------------------------------------------------------------------


def test_truncated_last_line_is_dropped_silently_and_complete_tail_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "steps.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "acc/me')
    result = read_jsonl(path)
    assert result.records == [{"step": 1}, {"step": 2}]
    assert result.truncated_tail is True
    assert result.warnings == []

    path.write_text('{"step": 1}\n{"step": 2}')
    result = read_jsonl(path)
    assert result.records == [{"step": 1}, {"step": 2}]
    assert result.truncated_tail is False

    # A half-written multi-byte character at the tail is a truncation too, not corruption.
    path.write_bytes('{"step": 1}\n{"response": "∠'.encode()[:-1])
    assert read_jsonl(path).records == [{"step": 1}]


def test_corrupt_middle_line_raises_with_file_and_line_number(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with RunWriter.create(run_dir, CONFIG, seed=0) as writer:
        for step in range(4):
            writer.log_step(step, {"acc/mean": 0.5})
    lines = written_lines(run_dir / "steps.jsonl")
    lines[2] = lines[2][:-5]
    (run_dir / "steps.jsonl").write_text("\n".join(lines) + "\n")

    with pytest.raises(RunLogError, match=r"steps\.jsonl:3: invalid JSON") as caught:
        _ = RunReader(run_dir).steps
    assert str(run_dir / "steps.jsonl") in str(caught.value)

    good = json.dumps({"step": 0, **group_record(0)})
    (run_dir / "groups.jsonl").write_text(f'{good}\n[1, 2]\n{{"group_id": 4}}\n')
    with pytest.raises(RunLogError, match=r"groups\.jsonl:2: expected a JSON object, got list"):
        read_jsonl(run_dir / "groups.jsonl")
    with pytest.raises(RunLogError, match=r"groups\.jsonl:2: expected a JSON object"):
        _ = RunReader(run_dir).groups
    (run_dir / "groups.jsonl").write_text(f'{good}\n{{"group_id": 4}}\n')
    with pytest.raises(RunLogError, match=r"groups\.jsonl:2: field 'step' is missing"):
        _ = RunReader(run_dir).groups


def test_warn_mode_skips_bad_lines_and_describes_them(tmp_path: Path) -> None:
    path = tmp_path / "steps.jsonl"
    path.write_bytes(
        b'{"step": 0, "time": 1}\n{"step": 1, "time": 2}\n{"step": 2,,}\n"text"\n\xff\xfe\n'
        b'{"step": 5, "time": 3}\n'
    )
    result = read_jsonl(path, on_corrupt="warn")
    assert [record["step"] for record in result.records] == [0, 1, 5]
    assert result.warnings == [
        f"{path}:3: invalid JSON (Expecting property name enclosed in double quotes at column 12)",
        f"{path}:4: expected a JSON object, got str",
        f"{path}:5: invalid UTF-8",
    ]
    run = RunReader(tmp_path, on_corrupt="warn")
    assert [record["step"] for record in run.steps] == [0, 1, 5]
    assert len(run.warnings) == 3 and run.warnings[0].startswith(f"{path}:3: ")
    with pytest.raises(ValueError, match="on_corrupt must be one of"):
        read_jsonl(path, on_corrupt="ignore")  # type: ignore[arg-type]


# -- fast readers: pyarrow tables and the step index ------------------------------------------


def _written_run(tmp_path: Path, steps: int = 5, groups: int = 3) -> Path:
    run_dir = tmp_path / "run"
    with RunWriter.create(run_dir, CONFIG, seed=0) as writer:
        for step in range(1, steps + 1):
            writer.log_step(step, {"acc/mean": step / 10, "rgr/pass_rate": None, "note": "x"})
            writer.log_groups(step, [group_record(g, n_correct=step % 4) for g in range(groups)])
    return run_dir


def test_read_table_gives_the_records_read_jsonl_gives(tmp_path: Path) -> None:
    run_dir = _written_run(tmp_path)
    path = run_dir / "steps.jsonl"
    read = read_table(path)
    assert read is not None and read.truncated_tail is False
    assert read.table.to_pylist() == read_jsonl(path).records
    assert read.table.column("step").to_pylist() == [1, 2, 3, 4, 5]
    with path.open("a") as handle:
        handle.write('{"step": 6, "acc/me')  # killed mid-write
    read = read_table(path)
    assert read.truncated_tail is True and read.table.num_rows == 5
    path.write_text('{"step": 1}\n{"step": 2}')  # a whole last record without its newline
    assert read_table(path).table.column("step").to_pylist() == [1, 2]
    path.write_text("")
    assert read_table(path).table.num_rows == 0


@pytest.mark.parametrize(
    ("text", "bad_lines"),
    [
        ('{"step": 1}\n{oops\n{"step": 3}\n', 1),  # a corrupt line
        ('{"step": 1, "a": true}\n{"step": 2, "a": 1}\n', 0),  # a column changes type
        ('{"step": 1}\n{"a": 2}\n', 1),  # a record without a step
        ('{"step": 1.5}\n', 1),  # a step that is no int
        ('{"step": 1}\n[1, 2]\n', 1),  # not an object
    ],
)
def test_read_table_leaves_anything_unclean_to_the_line_reader(
    tmp_path: Path, text: str, bad_lines: int
) -> None:
    path = tmp_path / "steps.jsonl"
    path.write_text(text)
    assert read_table(path) is None
    # The line reader reads what it can and names each bad line.
    assert len(read_jsonl(path, "warn", require_int_field="step").warnings) == bad_lines


def test_step_index_returns_each_steps_records_as_the_full_read_does(tmp_path: Path) -> None:
    path = _written_run(tmp_path) / "groups.jsonl"
    index = StepIndex.open(path)
    everything = read_jsonl(path).records
    assert index.steps == [1, 2, 3, 4, 5] and len(index) == 15
    for step in index.steps:
        assert index.of_step(step) == [r for r in everything if r["step"] == step]
    assert index.of_step(step) is index.of_step(step)  # parsed once
    assert index.of_step(99) == [] and index.warnings == [] and not index.truncated_tail
    assert StepIndex.empty(tmp_path / "none.jsonl").steps == []


def test_step_index_is_as_tolerant_as_the_line_reader(tmp_path: Path) -> None:
    path = tmp_path / "groups.jsonl"
    path.write_bytes(
        b'{"step":1,"group_id":0}\n'
        b'{"step":1,"group_id":1,,}\n'  # corrupt after a readable step: found when parsed
        b'{"group_id":2,"step":1}\n'  # another key order: read whole, still step 1
        b"\n"
        b'{"group_id":3}\n'  # no step at all: found when opening
        b"\xff\xfe\n"
        b'{"step":2,"group_id":0}\n'
        b'{"step":2,"group_id":1,"resp'  # killed mid-write
    )
    index = StepIndex.open(path)
    assert index.steps == [1, 2] and index.truncated_tail is True
    assert index.warnings == [f"{path}:5: field 'step' is missing", f"{path}:6: invalid UTF-8"]
    assert [r["group_id"] for r in index.of_step(1)] == [0, 2]
    assert index.warnings[-1] == (
        f"{path}:2: invalid JSON (Expecting property name enclosed in double quotes at column 24)"
    )
    assert index.of_step(2) == [{"step": 2, "group_id": 0}]


def test_step_index_reads_a_leading_step_only_as_json_would(tmp_path: Path) -> None:
    path = tmp_path / "groups.jsonl"
    path.write_bytes(
        b'{"step":0,"g":0}\n'  # zero
        b'{"step":7}\n'  # nothing after the step
        b'{"step": 7, "g": 2}\n'  # spaces: read whole, same step
        b'{"step":123456789012345678,"g":3}\n'  # 18 digits: read from the prefix
        b'{"step":1234567890123456789,"g":4}\n'  # 19 digits: read whole
        b'{"step":07,"g":5}\n'  # a leading zero is not JSON
        b'{"step":-1,"g":6}\n'  # a sign: read whole (the writer never logs one)
    )
    index = StepIndex.open(path)
    assert index.steps == [-1, 0, 7, 123456789012345678, 1234567890123456789]
    assert [r.get("g") for r in index.of_step(7)] == [None, 2]
    assert index.of_step(1234567890123456789) == [{"step": 1234567890123456789, "g": 4}]
    assert index.warnings == [f"{path}:6: invalid JSON (Expecting ',' delimiter at column 10)"]


def test_step_index_keeps_the_last_block_of_a_step_logged_twice(tmp_path: Path) -> None:
    path = tmp_path / "groups.jsonl"
    lines = [{"step": 1, "g": 0}, {"step": 2, "g": 0}, {"step": 1, "g": 9}, {"step": 1, "g": 8}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    index = StepIndex.open(path)
    assert [r["g"] for r in index.of_step(1)] == [9, 8]
    assert index.steps == [1, 2]


# -- lifecycle ------------------------------------------------------------------------------------


def test_exception_inside_with_marks_the_run_crashed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="out of memory"):
        with RunWriter.create(run_dir, CONFIG, seed=0) as writer:
            writer.log_step(0, {"acc/mean": 0.5})
            raise RuntimeError("out of memory")
    meta = RunReader(run_dir).meta
    assert meta["status"] == "crashed"
    # finish() stamped the crash: an ISO UTC time, not before the start.
    end = datetime.fromisoformat(meta["end_time"])
    assert end.tzinfo is not None and end >= datetime.fromisoformat(meta["start_time"])
    assert writer.closed
    with pytest.raises(RunLogError, match="the writer is finished"):
        writer.log_step(1, {})


def test_create_refuses_an_existing_run_unless_overwrite(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with RunWriter.create(run_dir, CONFIG, seed=0) as writer:
        log_training_step(writer, 1)
    with pytest.raises(RunExistsError, match="already holds a run"):
        RunWriter.create(run_dir, CONFIG, seed=1)
    orphan_dir = tmp_path / "orphan"
    (orphan_dir / "samples").mkdir(parents=True)
    with pytest.raises(RunExistsError, match="holds samples of an earlier run"):
        RunWriter.create(orphan_dir, CONFIG, seed=1)
    assert RunReader(run_dir).meta["seed"] == 0

    with RunWriter.create(run_dir, {"lr": 2e-6}, seed=1, overwrite=True) as writer:
        writer.log_step(0, {"acc/mean": 1.0}, timestamp=1.0)
    run = RunReader(run_dir)
    assert run.meta["seed"] == 1
    assert run.config == {"lr": 2e-6}
    assert run.steps == [{"step": 0, "time": 1.0, "acc/mean": 1.0}]
    assert run.groups == [] and run.sample_steps == []


def test_resume_cuts_every_file_back_to_last_step_and_matches_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    reference_dir = tmp_path / "uninterrupted"
    with RunWriter.create(reference_dir, CONFIG, seed=0) as writer:
        for step in range(1, 7):
            log_training_step(writer, step)

    run_dir = tmp_path / "resumed"
    writer = RunWriter.create(run_dir, CONFIG, seed=0)
    for step in range(1, 6):
        log_training_step(writer, step)
    # Killed while writing step 5's groups: leave a half line, no finish().
    with open(run_dir / "groups.jsonl", "ab") as groups_file:
        groups_file.write(b'{"step":5,"group_id":2,"adv')

    resumed = RunWriter.resume(run_dir, last_step=3)
    run = RunReader(run_dir)
    assert [record["step"] for record in run.steps] == [1, 2, 3]
    assert [record.step for record in run.groups] == [1, 1, 2, 2, 3, 3]
    assert run.sample_steps == [1, 2, 3]
    assert run.meta["status"] == "running" and run.meta["end_time"] is None
    assert [entry["last_step"] for entry in run.meta["resumes"]] == [3]
    assert resumed.last_step == 3

    with resumed:
        for step in range(4, 7):
            log_training_step(resumed, step)

    reference = RunReader(reference_dir)
    run = RunReader(run_dir)
    assert run.steps == reference.steps
    assert run.groups == reference.groups
    assert all(run.samples(step) == reference.samples(step) for step in range(1, 7))
    assert (run_dir / "steps.jsonl").read_bytes() == (reference_dir / "steps.jsonl").read_bytes()
    assert run.meta["status"] == "finished"


def test_resume_restores_the_newline_after_a_complete_unterminated_record(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with RunWriter.create(run_dir, CONFIG, seed=0) as writer:
        writer.log_step(0, {"acc/mean": 0.5}, timestamp=1.0)
    steps_path = run_dir / "steps.jsonl"
    steps_path.write_bytes(steps_path.read_bytes().rstrip(b"\n"))
    with RunWriter.resume(run_dir, last_step=0) as writer:
        writer.log_step(1, {"acc/mean": 0.75}, timestamp=2.0)
    assert [record["step"] for record in RunReader(run_dir).steps] == [0, 1]


def test_resume_records_the_changed_settings_in_its_meta_entry(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with RunWriter.create(run_dir, CONFIG, seed=0) as writer:
        writer.log_step(1, {"acc/mean": 0.5})
    changes = [{"field": "train.steps", "old": 4, "new": 8, "step": 1}]
    with RunWriter.resume(run_dir, last_step=1, config_changes=changes) as writer:
        writer.log_step(2, {"acc/mean": 0.5})
    with RunWriter.resume(run_dir, last_step=2):
        pass
    resumes = RunReader(run_dir).meta["resumes"]
    assert [entry["config_changes"] for entry in resumes] == [changes, []]
    assert [entry["last_step"] for entry in resumes] == [1, 2]
    # config.yaml keeps the values the run started with.
    assert RunReader(run_dir).config == CONFIG
    with pytest.raises(ValueError, match=r"config_changes\[0\]\.new: "):
        RunWriter.resume(run_dir, last_step=2, config_changes=[{"new": object()}])


def test_resume_of_a_folder_without_meta_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunLogError, match=r"meta\.json: file not found"):
        RunWriter.resume(tmp_path, last_step=0)


KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from care.runlog import RunWriter

    run_dir, n_lines = sys.argv[1], int(sys.argv[2])
    writer = RunWriter.create(run_dir, {"lr": 1e-6}, seed=0)
    for step in range(n_lines):
        writer.log_step(step, {"acc/mean": step / 10})
    # Start the next line but never finish it, as if killed inside write().
    with open(os.path.join(run_dir, "steps.jsonl"), "ab", buffering=0) as steps_file:
        steps_file.write(b'{"step":%d,"time":1' % n_lines)
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_records_flushed_before_sigkill_are_all_read_back(tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    n_lines = 7
    repo_root = Path(__file__).resolve().parents[1]
    environment = {**os.environ, "PYTHONPATH": str(repo_root)}
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(run_dir), str(n_lines)],
        stdout=subprocess.PIPE,
        env=environment,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    result = read_jsonl(run_dir / "steps.jsonl")
    assert result.truncated_tail is True
    assert [record["step"] for record in result.records] == list(range(n_lines))
    assert [record["acc/mean"] for record in result.records] == [s / 10 for s in range(n_lines)]
    assert RunReader(run_dir).meta["status"] == "running"

    with RunWriter.resume(run_dir, last_step=n_lines - 1) as writer:
        writer.log_step(n_lines, {"acc/mean": 1.0})
    assert [record["step"] for record in RunReader(run_dir).steps] == list(range(n_lines + 1))


def test_list_runs_finds_run_folders_up_to_depth_three(tmp_path: Path) -> None:
    for relative in ("a", "sweep/lr1/seed0", "sweep/lr2/seed0", "deep/x/y/z"):
        (tmp_path / relative).mkdir(parents=True)
    (tmp_path / "a" / "meta.json").write_text("{}")
    (tmp_path / "sweep/lr1/seed0/steps.jsonl").write_text("")
    (tmp_path / "sweep/lr2/seed0/meta.json").write_text("{}")
    (tmp_path / "deep/x/y/z/meta.json").write_text("{}")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "meta.json").write_text("{}")
    (tmp_path / "a" / "eval").mkdir()
    (tmp_path / "a" / "eval" / "meta.json").write_text("{}")

    assert list_runs(tmp_path) == [
        tmp_path / "a",
        tmp_path / "sweep/lr1/seed0",
        tmp_path / "sweep/lr2/seed0",
    ]
    assert list_runs(tmp_path / "a") == [tmp_path / "a"]
    with pytest.raises(ValueError, match="not an existing folder"):
        list_runs(tmp_path / "missing")


# -- typed records --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"G": None}, "field 'G': must be an int, got None"),
        ({"anchor_index": "0"}, "field 'anchor_index': must be an int or null, got '0'"),
        ({"anchor_index": 4}, "field 'anchor_index': is 4, outside the group's G = 4"),
        ({"anchor_index": 2}, "field 'anchor_index': rollout 2 is not correct"),
        ({"n_correct": 3}, "field 'n_correct': is 3 but 'correct' holds 2 true"),
        ({"k_prime": 1}, "field 'k_prime': is 1 but hard_negatives holds 2"),
        ({"rewards": [1.0, 1.0, 0.0]}, "field 'rewards': has 3 entries, G is 4"),
        ({"correct": [True, True, False, 0]}, r"field 'correct\[3\]': must be true or false"),
        ({"pseudo_anchor": 1}, "field 'pseudo_anchor': must be null when rescued is false"),
        ({"colour": "red"}, "field 'colour': is not a field of a group record"),
        (
            {"hard_negatives": [{"index": 2}]},
            r"field 'hard_negatives\[0\]\.distance': is missing",
        ),
        (
            {"rgr": {**group_record(0)["rgr"], "source_index": 0}},
            "field 'rgr.source_index': rollout 0 is correct; only failures are repaired",
        ),
        (
            {"rgr": {**group_record(0)["rgr"], "repair_len": None}},
            "field 'rgr.repair_len': must be set when triggered",
        ),
    ],
)
def test_writer_rejects_a_malformed_group_record_naming_the_field(
    tmp_path: Path, change: dict, message: str
) -> None:
    with RunWriter.create(tmp_path / "run", CONFIG, seed=0) as writer:
        with pytest.raises(
            RecordError, match=rf"log_groups\(step=1\) record 1: group record: {message}"
        ):
            writer.log_groups(1, [group_record(0), {**group_record(1), **change}])
    assert (tmp_path / "run" / "groups.jsonl").read_text() == ""


def test_writer_rejects_malformed_sample_and_step_records_naming_the_field(tmp_path: Path) -> None:
    with RunWriter.create(tmp_path / "run", CONFIG, seed=0) as writer:
        missing = {key: value for key, value in sample_record(0, 0).items() if key != "reward"}
        with pytest.raises(
            RecordError, match="record 0: sample record: field 'reward': is missing"
        ):
            writer.log_samples(1, [missing])
        with pytest.raises(RecordError, match="sample record: field 'image': is not a field"):
            writer.log_samples(1, [{**sample_record(0, 0), "image": "a.png"}])
        with pytest.raises(
            RecordError, match="record 1: sample record: field 'reward': is missing"
        ):
            writer.log_samples(1, [SampleRecord(1, 0, 0, "p", "text", 1.0, True), missing])
        with pytest.raises(RecordError, match="field 'index': is -1 with reflected_from -1"):
            writer.log_samples(1, [{**sample_record(0, 0), "index": -1}])
        with pytest.raises(RecordError, match="field 'index': is 2 with reflected_from 5"):
            writer.log_samples(1, [{**sample_record(0, 2), "reflected_from": 5}])
        with pytest.raises(ValueError, match="must be a SampleRecord or a dict, got a GroupRecord"):
            writer.log_samples(1, [GroupRecord.from_json({"step": 1, **group_record(0)})])
        with pytest.raises(ValueError, match="record 0: field 'step' is 2 but .* step 1"):
            writer.log_samples(1, [SampleRecord(2, 0, 0, "p", "text", 1.0, True)])
        with pytest.raises(RecordError, match="step record: field 'note': must be a number, bool"):
            writer.log_step(1, {"note": {"a": 1}})
    with pytest.raises(RecordError, match="sample record: field 'reward': must be a finite"):
        SampleRecord(1, 0, 0, "p", "text", math.nan, True)
    assert not (tmp_path / "run" / "samples").exists()


def test_reader_names_file_line_and_field_of_a_malformed_record(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with RunWriter.create(run_dir, CONFIG, seed=0) as writer:
        log_training_step(writer, 1)
    good = written_lines(run_dir / "groups.jsonl")[0]
    bad = good.replace('"anchor_index":0', '"anchor_index":"0"')
    (run_dir / "groups.jsonl").write_text(f"{good}\n{bad}\n")
    expected = (
        f"{run_dir / 'groups.jsonl'}:2: group record: field 'anchor_index': must be an int or "
        "null, got '0'"
    )
    with pytest.raises(RunLogError) as caught:
        _ = RunReader(run_dir).groups
    assert str(caught.value) == expected
    run = RunReader(run_dir, on_corrupt="warn")
    assert len(run.groups) == 1 and run.warnings == [expected]
    index = StepIndex.open(run_dir / "groups.jsonl", convert=json_parser("group"))
    assert [group.group_id for group in index.of_step(1)] == [0] and index.warnings == [expected]


def projection_of(entries: int) -> list[list[float]]:
    """`entries` distinct projected vectors of PROJECTION_DIM numbers, 4 decimals like the log."""
    return [
        [round(0.01 * entry + 0.001 * k, 4) for k in range(PROJECTION_DIM)]
        for entry in range(entries)
    ]


def test_a_projection_has_g_entries_plus_the_repair_and_round_trips(tmp_path: Path) -> None:
    mixed = {**group_record(0), "projection": projection_of(5)}  # G = 4 and a triggered repair
    wrong = {**group_record(1, n_correct=0), "projection": projection_of(4)}  # no repair
    with RunWriter.create(tmp_path / "run", CONFIG, seed=0) as writer:
        writer.log_groups(1, [mixed, wrong, group_record(2)])
    groups = RunReader(tmp_path / "run").groups
    assert [len(group.projection or ()) for group in groups] == [5, 4, 0]
    assert groups[0].projection[4] == tuple(projection_of(5)[4])  # the repair's, last
    assert groups[0].projection[1][31] == 0.041 and groups[2].projection is None
    assert groups[0].to_json()["projection"] == projection_of(5)
    line = (tmp_path / "run" / "groups.jsonl").read_text().splitlines()[2]
    assert line.endswith('"projection":null}')  # written even when there is none


@pytest.mark.parametrize(
    ("projection", "message"),
    [
        (projection_of(4), r"field 'projection': has 4 entries, expected 5"),
        (projection_of(6), r"field 'projection': has 6 entries, expected 5"),
        (
            [*projection_of(4), [0.5] * 31],
            r"field 'projection\[4\]': has 31 coordinates, a projection has 32",
        ),
        (
            [*projection_of(2), [0.1] * 5 + [None] + [0.1] * 26, *projection_of(2)],
            r"field 'projection\[2\]\[5\]': must be a number, got None",
        ),
        ([*projection_of(4), "0.5"], r"field 'projection\[4\]': must be a list, got '0.5'"),
        ({"rollouts": []}, r"field 'projection': must be a list"),
    ],
)
def test_writer_rejects_a_malformed_projection_naming_the_field(
    tmp_path: Path, projection: object, message: str
) -> None:
    with RunWriter.create(tmp_path / "run", CONFIG, seed=0) as writer:
        with pytest.raises(RecordError, match=rf"record 0: group record: {message}"):
            writer.log_groups(1, [{**group_record(0), "projection": projection}])
    assert (tmp_path / "run" / "groups.jsonl").read_text() == ""


def test_a_non_finite_projection_is_refused_by_the_record() -> None:
    vectors = projection_of(5)
    vectors[3][7] = math.nan
    with pytest.raises(
        RecordError, match=r"field 'projection\[3\]\[7\]': must be a finite number, got nan"
    ):
        GroupRecord.from_json({"step": 1, **group_record(0), "projection": vectors})


def test_records_round_trip_through_json_in_the_documented_field_order() -> None:
    record = GroupRecord.from_json({"step": 3, **group_record(1)})
    assert record.to_json() == {"step": 3, **group_record(1)}
    assert list(record.to_json()) == ["step", *group_record(1)]
    assert record.hard_negatives[0] == HardNegative(2, 0.125)
    imported = GroupRecord.from_json(
        {"step": 3, **group_record(1), "correct_source": "reward", "not_computed": ["rescue"]}
    )
    assert imported.not_computed == ("rescue",) and imported.to_json()["correct_source"] == "reward"
    sample = SampleRecord.from_json({"step": 3, **sample_record(0, 1)})
    assert SampleRecord.from_json(sample.to_json()) == sample
    assert sample.reflected_from == -1 and not sample.is_repair and sample.answers == ()
    step = StepRecord(3, 10, {"acc/mean": 0.5, "loss/kl": math.inf})
    assert step.to_json() == {"step": 3, "time": 10.0, "acc/mean": 0.5, "loss/kl": None}
    assert StepRecord.from_json(step.to_json()) == step


def _version_1_run(run_dir: Path) -> None:
    """A run folder as schema version 1 left it: repairs without reward and advantage (as the
    synthetic runs and imports wrote them; the trainer added them to triggered repairs only),
    and a sample with a free field version 2 no longer has."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    meta = {
        "schema_version": 1, "care_suite_version": "0.1.0", "python_version": "3.11.9",
        "torch_version": None, "transformers_version": None, "git_commit": None, "seed": 0,
        "start_time": "2026-01-31T14:05:09.123+00:00", "host": "old", "status": "finished",
        "end_time": "2026-01-31T15:05:09.123+00:00", "resumes": [],
    }  # fmt: skip
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    (run_dir / "steps.jsonl").write_text('{"step":1,"time":5.0,"acc/mean":0.5}\n')
    old_repair = {
        "triggered": True, "passed": False, "source_index": 3, "source_len": 40, "repair_len": 12
    }  # fmt: skip
    old_no_repair = {key: None for key in old_repair} | {"triggered": False}
    groups = [
        {"step": 1, **group_record(0), "rgr": old_repair},
        {"step": 1, **group_record(1, n_correct=4), "rgr": old_no_repair},
        {"step": 1, **group_record(2), "rgr": None},
    ]
    (run_dir / "groups.jsonl").write_text("".join(json.dumps(g) + "\n" for g in groups))
    (run_dir / "samples").mkdir()
    old_sample = {"step": 1, **sample_record(0, 1), "image": "images/geo.png"}
    # A repair as the hand-built runs logged it: under the repaired rollout's index.
    old_repair_sample = {"step": 1, **sample_record(0, 3), "reflected_from": 3}
    sample_file(run_dir, 1).write_text(
        json.dumps(old_sample) + "\n" + json.dumps(old_repair_sample) + "\n"
    )


def test_a_version_1_run_opens_through_the_migration_with_one_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "old_run"
    _version_1_run(run_dir)
    with caplog.at_level(logging.WARNING, logger="care.runlog"):
        run = RunReader(run_dir)
        groups = run.groups
        samples = run.samples(1)
        _ = RunReader(run_dir).groups  # the same folder again: no second message
    assert run.schema_version == 1 and run.warnings == []
    assert [group.rgr.reward if group.rgr else "off" for group in groups] == [None, None, "off"]
    assert groups[0].rgr.triggered and groups[0].rgr.source_index == 3
    assert samples == [
        SampleRecord(step=1, **sample_record(0, 1)),  # "image" left out
        SampleRecord(step=1, **{**sample_record(0, 3), "index": -1, "reflected_from": 3}),
    ]
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert str(run_dir) in messages[0]
    assert "schema version 1, read as version 3" in messages[0]
    # The folder itself is not rewritten, and a version-1 run is never appended to.
    assert '"reward"' not in (run_dir / "groups.jsonl").read_text()
    with pytest.raises(RunLogError, match="schema_version 1 differs from 3"):
        RunWriter.resume(run_dir, 1)


def test_a_version_2_run_reads_without_projections_and_is_never_appended_to(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "v2_run"
    with RunWriter.create(run_dir, CONFIG, seed=0) as writer:
        log_training_step(writer, 1)
    meta = json.loads((run_dir / "meta.json").read_text())
    (run_dir / "meta.json").write_text(json.dumps({**meta, "schema_version": 2}))
    lines = (run_dir / "groups.jsonl").read_text().splitlines()
    assert all(line.endswith(',"projection":null}') for line in lines)
    old = [line.removesuffix(',"projection":null}') + "}" for line in lines]  # as version 2 wrote
    (run_dir / "groups.jsonl").write_text("".join(line + "\n" for line in old))
    with caplog.at_level(logging.WARNING, logger="care.runlog"):
        run = RunReader(run_dir)
        groups = run.groups
    assert run.schema_version == 2 and [group.projection for group in groups] == [None, None]
    assert "schema version 2, read as version 3" in caplog.records[0].getMessage()
    with pytest.raises(RunLogError, match="schema_version 2 differs from 3"):
        RunWriter.resume(run_dir, 1)
