"""Tracker mirrors: each tracker's output is read back with its own reader and must hold every
step metric of steps.jsonl under the same name, the group-type counts and the run config.

Readers: TensorBoard's EventAccumulator, the W&B offline run file (``run-*.wandb``, scanned with
wandb's own DataStore and record protobuf), MLflow's client on the file store. Each test skips,
saying which extra to install, when its tracker is not installed.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from fixtures.runs import plain_group

from care.config import config_from_dict
from care.runlog import RunReader, RunWriter
from care.train import trackers
from care.train.trackers import (
    TrackerError,
    TrackerMirror,
    group_type_counts,
    numeric_metrics,
    open_trackers,
    require_trackers,
)

CONFIG = {"run": {"name": "mirror"}, "algo": {"estimator": "care", "care": {"K": 4}}}
# Step 1: groups all correct, mixed, mixed; step 2: all wrong, mixed, all correct.
GROUPS = {
    step: [plain_group(step, group_id, n_correct) for group_id, n_correct in enumerate(counts)]
    for step, counts in ((1, (4, 1, 3)), (2, (0, 2, 4)))
}
METRICS = {
    1: {"acc/mean": 0.5, "signal/failure_share_seq": 0.25, "rgr/pass_rate": float("nan")},
    2: {"acc/mean": 0.5, "signal/failure_share_seq": 0.4, "rgr/pass_rate": 1.0},
}
COUNTS = {
    1: {"groups/count": 3.0, "groups/all_correct_count": 1.0, "groups/all_wrong_count": 0.0}
    | {"groups/mixed_count": 2.0},
    2: {"groups/count": 3.0, "groups/all_correct_count": 1.0, "groups/all_wrong_count": 1.0}
    | {"groups/mixed_count": 1.0},
}


def need(module: str, extra: str) -> None:
    pytest.importorskip(
        module, reason=f"the {extra} extra is not installed: pip install -e '.[{extra}]'"
    )


@pytest.fixture
def offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))


def write_mirrored_run(run_dir: Path, loggers: list[str]) -> list[dict[str, Any]]:
    """Two steps through RunWriter with the trackers attached; returns steps.jsonl's records."""
    writer = RunWriter.create(run_dir, CONFIG, seed=0)
    writer.add_observer(open_trackers(loggers, run_dir, CONFIG, "mirror", resumed_at=None))
    for step in (1, 2):
        writer.log_groups(step, GROUPS[step])
        writer.log_step(step, METRICS[step], timestamp=1_700_000_000.0 + step)
    writer.finish()
    return RunReader(run_dir).steps


def expected_values(steps: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """What every tracker must hold: the finite metrics of steps.jsonl plus the group counts."""
    return {record["step"]: numeric_metrics(record)[0] | COUNTS[record["step"]] for record in steps}


def tensorboard_scalars(folder: Path) -> tuple[dict[int, dict[str, float]], str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    by_step: dict[int, dict[str, float]] = {}
    for tag in events.Tags()["scalars"]:
        for event in events.Scalars(tag):
            by_step.setdefault(event.step, {})[tag] = event.value
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    return by_step, config_text


def wandb_offline_run(folder: Path) -> tuple[dict[str, Any], dict[int, dict[str, float]]]:
    """(config, history by step) of the one offline run under `folder`, from its .wandb file."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    def items(update: Any) -> dict[str, Any]:
        # A flat key arrives as `key` or as a one-part `nested_key`, depending on the version.
        return {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in update}

    (path,) = sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))
    store = datastore.DataStore()
    store.open_for_scan(str(path))
    config: dict[str, Any] = {}
    history: dict[int, dict[str, float]] = {}
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update(items(record.run.config.update))
        elif kind == "config":
            config.update(items(record.config.update))
        elif kind == "history":
            logged = items(record.history.item)
            history[record.history.step.num] = {
                key: value for key, value in logged.items() if not key.startswith("_")
            }
    return config, history


# ---------------------------------------------------------------------------------------------
# the pieces


def test_group_type_counts_types_groups_by_correct_out_of_g() -> None:
    assert group_type_counts(GROUPS[1]) == COUNTS[1]
    assert group_type_counts(GROUPS[2]) == COUNTS[2]
    assert group_type_counts([]) == {key: 0.0 for key in trackers.GROUP_COUNT_METRICS}


def test_numeric_metrics_keeps_finite_numbers_and_names_what_it_leaves_out() -> None:
    values, left_out = numeric_metrics(
        {"step": 3, "time": 1.0, "acc/mean": 0.5, "update/skipped": True, "x": None, "tag": "a"}
    )
    assert values == {"acc/mean": 0.5, "update/skipped": 1.0}
    assert left_out == ["x", "tag"]


def test_flatten_config_gives_dotted_string_params() -> None:
    assert trackers.flatten_config(CONFIG) == {
        "run.name": "mirror",
        "algo.estimator": "care",
        "algo.care.K": "4",
    }


def test_loggers_default_to_console_and_refuse_unknown_or_repeated_names() -> None:
    assert config_from_dict({}).train.loggers == ["console"]
    with pytest.raises(ValueError, match="train.loggers.0: Input should be 'console'"):
        config_from_dict({"train": {"loggers": ["neptune"]}})
    with pytest.raises(ValueError, match="repeated: wandb"):
        config_from_dict({"train": {"loggers": ["wandb", "wandb"]}})


def test_a_missing_tracker_package_is_an_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_find_spec = trackers.importlib.util.find_spec
    monkeypatch.setattr(
        trackers.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "mlflow" else real_find_spec(name, *args),
    )
    require_trackers(["console"])  # console needs nothing
    with pytest.raises(TrackerError) as error:
        open_trackers(["console", "mlflow"], tmp_path, CONFIG, "mirror", resumed_at=None)
    assert "train.loggers lists 'mlflow'" in str(error.value)
    assert "pip install -c constraints.txt 'care-suite[mlflow]'" in str(error.value)
    assert not (tmp_path / "trackers").exists()


class Exploding:
    name = "exploding"

    def log(self, step: int, values: Any, walltime: float) -> None:
        raise OSError("disk full")

    def close(self, status: str) -> None:
        raise AssertionError("a dropped tracker is not closed again")


class Recording:
    name = "recording"

    def __init__(self) -> None:
        self.logged: list[tuple[int, dict[str, float]]] = []
        self.closed_with: str | None = None

    def log(self, step: int, values: Any, walltime: float) -> None:
        self.logged.append((step, dict(values)))

    def close(self, status: str) -> None:
        self.closed_with = status


def test_a_failing_tracker_is_dropped_and_counted_while_the_run_folder_goes_on(
    tmp_path: Path,
) -> None:
    recording = Recording()
    mirror = TrackerMirror([Exploding(), recording])
    writer = RunWriter.create(tmp_path / "run", CONFIG, seed=0)
    writer.add_observer(mirror)
    for step in (1, 2):
        writer.log_groups(step, GROUPS[step])
        writer.log_step(step, METRICS[step])
    writer.finish()
    assert [record["step"] for record in RunReader(tmp_path / "run").steps] == [1, 2]
    assert list(mirror.failures) == ["exploding"]
    assert mirror.failures["exploding"] == "step 1: OSError: disk full"
    assert [step for step, _ in recording.logged] == [1, 2]
    assert recording.logged[0][1]["groups/mixed_count"] == 2.0
    assert "rgr/pass_rate" not in recording.logged[0][1]  # NaN is null on disk: no value
    assert recording.logged[1][1]["rgr/pass_rate"] == 1.0
    assert recording.closed_with == "finished"


# ---------------------------------------------------------------------------------------------
# each tracker read back with its own reader


def test_tensorboard_holds_every_step_metric_the_group_counts_and_the_config(
    tmp_path: Path,
) -> None:
    need("tensorboard", "tensorboard")
    steps = write_mirrored_run(tmp_path / "run", ["console", "tensorboard"])
    scalars, config_text = tensorboard_scalars(tmp_path / "run" / "trackers" / "tensorboard")
    expected = expected_values(steps)
    assert sorted(scalars) == [1, 2]
    for step, values in expected.items():
        assert set(scalars[step]) == set(values)
        for key, value in values.items():
            assert scalars[step][key] == pytest.approx(value, rel=1e-6), (step, key)
    assert "estimator: care" in config_text


def test_wandb_offline_run_holds_every_step_metric_the_group_counts_and_the_config(
    tmp_path: Path, offline_wandb: None
) -> None:
    need("wandb", "wandb")
    steps = write_mirrored_run(tmp_path / "run", ["wandb"])
    config, history = wandb_offline_run(tmp_path / "run" / "trackers" / "wandb")
    assert config["algo"] == {"estimator": "care", "care": {"K": 4}}
    assert history == expected_values(steps)


def test_mlflow_file_store_holds_every_step_metric_the_group_counts_and_the_params(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need("mlflow", "mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    steps = write_mirrored_run(tmp_path / "run", ["mlflow"])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "run" / "trackers" / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("care-suite").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["algo.estimator"] == "care"
    assert run.data.params["algo.care.K"] == "4"
    expected = expected_values(steps)
    for key in {key for values in expected.values() for key in values}:
        history = client.get_metric_history(run.info.run_id, key)
        logged = {metric.step: metric.value for metric in history}
        assert logged == {step: values[key] for step, values in expected.items() if key in values}
    artifacts = [item.path for item in client.list_artifacts(run.info.run_id)]
    assert artifacts == ["config.yaml"]


def test_resumed_run_shows_each_step_once_in_tensorboard(tmp_path: Path) -> None:
    need("tensorboard", "tensorboard")
    run_dir = tmp_path / "run"
    write_mirrored_run(run_dir, ["tensorboard"])  # steps 1 and 2
    # Resume from a checkpoint at step 1: step 2 is trained again, with another value.
    writer = RunWriter.resume(run_dir, last_step=1)
    writer.add_observer(open_trackers(["tensorboard"], run_dir, CONFIG, "mirror", resumed_at=1))
    writer.log_groups(2, GROUPS[2])
    writer.log_step(2, {**METRICS[2], "acc/mean": 0.75})
    writer.finish()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "trackers" / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("acc/mean")] == [(1, 0.5), (2, 0.75)]


# ---------------------------------------------------------------------------------------------
# the trainer's hook


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from care.data.synth import write_synthetic_dataset

    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, seed=3, n_train=24, n_test=8, image_size=56)
    return out


def mlflow_history(folder: Path) -> tuple[Any, dict[int, dict[str, float]]]:
    """(run info and params, metrics by step) of the one MLflow run in the file store `folder`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=folder.as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("care-suite").experiment_id])
    by_step: dict[int, dict[str, float]] = {}
    for key in run.data.metrics:
        for metric in client.get_metric_history(run.info.run_id, key):
            by_step.setdefault(metric.step, {})[key] = metric.value
    return run, by_step


def test_a_training_run_mirrored_to_tensorboard_offline_wandb_and_mlflow_reads_back_from_each(
    data_dir: Path, tmp_path: Path, offline_wandb: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    need("tensorboard", "tensorboard")
    need("wandb", "wandb")
    need("mlflow", "mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the mirror sets it; undone after
    from tiny_run import tiny_config

    from care.train.trainer import Trainer

    loggers = ["console", "tensorboard", "wandb", "mlflow"]
    cfg = config_from_dict(tiny_config(data_dir, tmp_path, "mirrored", train={"loggers": loggers}))
    trainer = Trainer(cfg, progress=False)
    run_dir = trainer.fit()
    run = RunReader(run_dir)
    assert [record["step"] for record in run.steps] == [1, 2]
    by_step = {}
    for record in run.steps:
        values, _ = numeric_metrics(record)
        step_groups = [g for g in run.groups if g.step == record["step"]]
        by_step[record["step"]] = values | group_type_counts(step_groups)
    for values in by_step.values():
        assert values["groups/count"] == 2.0  # two prompts a step
        assert (
            values["groups/all_correct_count"]
            + values["groups/all_wrong_count"]
            + values["groups/mixed_count"]
            == 2.0
        )
        assert "acc/mean" in values and "signal/failure_share_seq" in values
    scalars, config_text = tensorboard_scalars(run_dir / "trackers" / "tensorboard")
    config, history = wandb_offline_run(run_dir / "trackers" / "wandb")
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"  # set by the mirror for its file store
    mlflow_run, mlflow_metrics = mlflow_history(run_dir / "trackers" / "mlruns")
    assert sorted(scalars) == sorted(history) == sorted(mlflow_metrics) == [1, 2]
    for step, values in by_step.items():
        assert history[step] == values
        assert set(scalars[step]) == set(values) == set(mlflow_metrics[step])
        for key, value in values.items():
            # TensorBoard stores float32; MLflow's file store keeps the float's repr.
            assert math.isclose(scalars[step][key], value, rel_tol=1e-6, abs_tol=1e-12), key
            assert mlflow_metrics[step][key] == pytest.approx(value, rel=1e-12), key
    assert config["algo"]["estimator"] == "care"
    assert config["train"]["loggers"] == loggers
    assert "estimator: care" in config_text
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["algo.estimator"] == "care"
