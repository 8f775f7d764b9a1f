"""Tracker mirrors: every step record of the run folder also goes to TensorBoard, W&B or MLflow.

The run folder stays the source of truth. A `TrackerMirror` observes the run's `RunWriter`
(`care.runlog.RunObserver`): it sees a step record only once the record is on disk and sends
every numeric metric under the same name, plus the step's group-type counts, to each tracker
listed in ``train.loggers``. The resolved config goes along once, at the start.

Each tracker is an optional extra (``pip install -c constraints.txt 'care-suite[wandb]'``); a
missing one is an error naming the extra before training starts. Nothing here reaches the network
unless the tracker is told to: W&B honours ``WANDB_MODE`` (``offline`` writes the run to disk),
MLflow writes to a file store inside the run folder unless ``MLFLOW_TRACKING_URI`` names another.

Where the trackers write, inside the run folder::

    trackers/tensorboard/      TensorBoard event files
    trackers/wandb/            W&B's own folder (offline runs: wandb/offline-run-*)
    trackers/mlruns/           MLflow file store (when MLFLOW_TRACKING_URI is not set)

Example::

    writer = RunWriter.create(run_dir, cfg.to_dict(), seed=0)
    mirror = open_trackers(["tensorboard"], run_dir, cfg.to_dict(), "demo", resumed_at=None)
    writer.add_observer(mirror)
    writer.log_groups(1, groups)            # remembered: 3 all correct, 1 mixed
    writer.log_step(1, {"acc/mean": 0.8})   # TensorBoard gets acc/mean = 0.8 and
                                            # groups/all_correct_count = 3, groups/mixed_count = 1 …
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from care.runlog import TRACKERS_DIR, GroupRecord, RunWriter

if TYPE_CHECKING:
    from care.config import TrainConfig

logger = logging.getLogger(__name__)

TRACKER_EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
"""Tracker name -> the care-suite extra that installs it."""

DEFAULT_PROJECT = "care-suite"
"""W&B project and MLflow experiment when WANDB_PROJECT / MLFLOW_EXPERIMENT_NAME are not set."""

GROUP_COUNT_METRICS = (
    "groups/count",
    "groups/all_correct_count",
    "groups/all_wrong_count",
    "groups/mixed_count",
)
"""The group-type counts a mirror adds to each step (steps.jsonl holds the fractions)."""

_MLFLOW_BATCH_METRICS = 1000
_MLFLOW_BATCH_PARAMS = 100
_MLFLOW_PARAM_CHARS = 6000


class TrackerError(RuntimeError):
    """A tracker listed in train.loggers cannot be used; the message says what to do."""


class _Backend(Protocol):
    name: str

    def log(self, step: int, values: Mapping[str, float], walltime: float) -> None: ...

    def close(self, status: str) -> None: ...


def _missing_extra(tracker: str, error: ImportError) -> TrackerError:
    extra = TRACKER_EXTRAS[tracker]
    return TrackerError(
        f"train.loggers lists {tracker!r}, but its package is not installed ({error}); install "
        f"the extra: pip install -c constraints.txt 'care-suite[{extra}]'"
    )


def group_type_counts(records: Sequence[GroupRecord]) -> dict[str, float]:
    """How many of a step's group records are all correct, all wrong or mixed.

    A group is typed by its ordinary rollouts (``n_correct`` of ``G``), as
    `care.metrics.signal.group_type_fractions` types them.

    Example: records with (n_correct, G) = (4, 4), (0, 4), (1, 4) ->
    ``{"groups/count": 3.0, "groups/all_correct_count": 1.0, "groups/all_wrong_count": 1.0,
    "groups/mixed_count": 1.0}``.
    """
    all_correct = all_wrong = mixed = 0
    for record in records:
        if record.n_correct == 0:
            all_wrong += 1
        elif record.n_correct == record.G:
            all_correct += 1
        else:
            mixed += 1
    return {
        "groups/count": float(len(records)),
        "groups/all_correct_count": float(all_correct),
        "groups/all_wrong_count": float(all_wrong),
        "groups/mixed_count": float(mixed),
    }


def numeric_metrics(record: Mapping[str, Any]) -> tuple[dict[str, float], list[str]]:
    """The step record's finite numbers as floats, and the names of the metrics left out.

    ``step`` and ``time`` are not metrics; bools become 0/1. Null (a NaN or inf the writer
    stored as null) has no value to mirror; a string cannot be a scalar in any tracker.

    Example: ``{"step": 3, "time": 1.0, "acc/mean": 0.5, "rgr/pass_rate": None, "tag": "x"}``
    -> ``({"acc/mean": 0.5}, ["rgr/pass_rate", "tag"])``.
    """
    values: dict[str, float] = {}
    left_out: list[str] = []
    for key, value in record.items():
        if key in ("step", "time"):
            continue
        if isinstance(value, bool | int | float) and math.isfinite(float(value)):
            values[key] = float(value)
        else:
            left_out.append(key)
    return values, left_out


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b.c": "value"} (MLflow params are flat strings).

    Example: ``flatten_config({"algo": {"estimator": "care", "care": {"K": 4}}})`` ->
    ``{"algo.estimator": "care", "algo.care.K": "4"}``.
    """
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = "null" if value is None else str(value)
    return flat


# --------------------------------------------------------------------------------------------
# backends


class TensorBoardBackend:
    """Scalars through torch's SummaryWriter; the config as a text summary at step 0.

    On a resume, events from the resumed step on are purged (``purge_step``): TensorBoard then
    shows the re-trained steps once, as the run folder does.
    """

    name = "tensorboard"

    def __init__(self, folder: Path, config: Mapping[str, Any], resumed_at: int | None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise _missing_extra(self.name, error) from None
        self.folder = folder
        purge = None if resumed_at is None else resumed_at + 1
        self._writer = SummaryWriter(log_dir=str(folder), purge_step=purge)
        text = yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)
        # Indented by four spaces: TensorBoard renders text summaries as Markdown.
        self._writer.add_text("config", "".join(f"    {line}\n" for line in text.splitlines()), 0)

    def log(self, step: int, values: Mapping[str, float], walltime: float) -> None:
        for key, value in values.items():
            self._writer.add_scalar(key, value, global_step=step, walltime=walltime)
        # A step takes seconds to minutes; flushing each one lets TensorBoard follow a live run.
        self._writer.flush()

    def close(self, status: str) -> None:
        self._writer.close()


class WandbBackend:
    """One W&B run per start of the trainer (a resume starts a new one in the same group).

    Offline with ``WANDB_MODE=offline``: the run lands in ``trackers/wandb/wandb/offline-run-*``
    and ``wandb sync`` uploads it later.
    """

    name = "wandb"

    def __init__(
        self, folder: Path, config: Mapping[str, Any], run_name: str, resumed_at: int | None
    ) -> None:
        try:
            import wandb
        except ImportError as error:
            raise _missing_extra(self.name, error) from None
        folder.mkdir(parents=True, exist_ok=True)
        display = run_name if resumed_at is None else f"{run_name} (resumed at step {resumed_at})"
        try:
            self._run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
                name=display,
                group=run_name,
                dir=str(folder),
                config=dict(config),
                reinit="create_new",
            )
        except Exception as error:  # wandb raises its own types, e.g. for a missing login
            raise TrackerError(
                f"wandb could not start a run ({type(error).__name__}: {error}); without "
                "network, set WANDB_MODE=offline"
            ) from error

    def log(self, step: int, values: Mapping[str, float], walltime: float) -> None:
        self._run.log(dict(values), step=step)

    def close(self, status: str) -> None:
        self._run.finish(exit_code=0 if status == "finished" else 1)


class MlflowBackend:
    """One MLflow run per start of the trainer, through the client API (no global active run).

    The tracking URI is ``MLFLOW_TRACKING_URI`` when set, else a file store in
    ``trackers/mlruns``; MLflow 3 keeps its file store behind ``MLFLOW_ALLOW_FILE_STORE``,
    which is set for this process in that case (and logged). The config goes in as flat params
    and, whole, as the artifact ``config.yaml``.
    """

    name = "mlflow"

    def __init__(
        self,
        folder: Path,
        config: Mapping[str, Any],
        run_name: str,
        resumed_at: int | None,
        config_file: Path | None,
    ) -> None:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            folder.mkdir(parents=True, exist_ok=True)
            uri = folder.resolve().as_uri()
            if "MLFLOW_ALLOW_FILE_STORE" not in os.environ:
                logger.info("mlflow: file store %s; setting MLFLOW_ALLOW_FILE_STORE=true", uri)
                os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError as error:
            raise _missing_extra(self.name, error) from None
        self._metric_type = Metric
        self.tracking_uri = uri
        experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_PROJECT
        tags = {"care.run_name": run_name}
        if resumed_at is not None:
            tags["care.resumed_at"] = str(resumed_at)
        try:
            self._client = MlflowClient(tracking_uri=uri)
            experiment = self._client.get_experiment_by_name(experiment_name)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else self._client.create_experiment(experiment_name)
            )
            run = self._client.create_run(experiment_id, run_name=run_name, tags=tags)
        except Exception as error:  # MlflowException, or a connection error for a server URI
            raise TrackerError(
                f"mlflow could not start a run at {uri} ({type(error).__name__}: {error})"
            ) from error
        self.run_id = run.info.run_id
        params = []
        for key, value in flatten_config(config).items():
            if len(value) > _MLFLOW_PARAM_CHARS:
                logger.warning(
                    "mlflow: param %s cut to %d characters (the whole config is the artifact "
                    "config.yaml)",
                    key,
                    _MLFLOW_PARAM_CHARS,
                )
                value = value[:_MLFLOW_PARAM_CHARS]
            params.append(Param(key, value))
        for start in range(0, len(params), _MLFLOW_BATCH_PARAMS):
            self._client.log_batch(self.run_id, params=params[start : start + _MLFLOW_BATCH_PARAMS])
        if config_file is not None and config_file.is_file():
            self._client.log_artifact(self.run_id, str(config_file))

    def log(self, step: int, values: Mapping[str, float], walltime: float) -> None:
        milliseconds = int(walltime * 1000)
        metrics = [
            self._metric_type(key, value, milliseconds, step) for key, value in values.items()
        ]
        for start in range(0, len(metrics), _MLFLOW_BATCH_METRICS):
            self._client.log_batch(
                self.run_id, metrics=metrics[start : start + _MLFLOW_BATCH_METRICS]
            )

    def close(self, status: str) -> None:
        self._client.set_terminated(self.run_id, "FINISHED" if status == "finished" else "FAILED")


# --------------------------------------------------------------------------------------------
# the observer


class TrackerMirror:
    """A `RunObserver` that mirrors each written step record to its trackers.

    A tracker that fails mid-run (a full disk, a lost connection) is reported, counted in
    `failures` and dropped; training and the run folder go on. Metrics that are null or
    not numbers are left out and listed once in a log message.
    """

    def __init__(self, backends: Sequence[_Backend]) -> None:
        self.backends: list[_Backend] = list(backends)
        self.failures: dict[str, str] = {}
        self._counts: dict[str, float] = {}
        self._counted_step: int | None = None
        self._reported_left_out: set[str] = set()

    def on_groups(self, step: int, records: list[GroupRecord]) -> None:
        counts = group_type_counts(records)
        if self._counted_step == step:  # a step's groups may arrive in several calls
            counts = {key: self._counts[key] + value for key, value in counts.items()}
        self._counts, self._counted_step = counts, step

    def on_step(self, step: int, record: dict[str, Any]) -> None:
        values, left_out = numeric_metrics(record)
        if self._counted_step == step:
            values.update(self._counts)
        fresh = sorted(set(left_out) - self._reported_left_out)
        if fresh:
            self._reported_left_out.update(fresh)
            logger.info("trackers: not mirrored (null or not a number): %s", ", ".join(fresh))
        walltime = float(record.get("time") or 0.0)
        for backend in list(self.backends):
            try:
                backend.log(step, values, walltime)
            except Exception as error:  # a tracker must not stop the training it watches
                self._drop(backend, f"step {step}: {type(error).__name__}: {error}")

    def on_finish(self, status: str) -> None:
        for backend in list(self.backends):
            try:
                backend.close(status)
            except Exception as error:
                self._drop(backend, f"close: {type(error).__name__}: {error}")

    def _drop(self, backend: _Backend, reason: str) -> None:
        self.backends.remove(backend)
        self.failures[backend.name] = reason
        logger.warning(
            "trackers: %s failed and is no longer mirrored (%s); the run folder has every step",
            backend.name,
            reason,
        )


_TRACKER_MODULES = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
}


def require_trackers(loggers: Sequence[str]) -> None:
    """Raise TrackerError naming the extra for each tracker of `loggers` that is not installed.

    Only looks the packages up (nothing is imported or written), so the trainer can check before
    it spends minutes loading a model.

    Example: ``require_trackers(["console", "wandb"])`` without wandb -> TrackerError
    "train.loggers lists 'wandb', but its package is not installed (...); install the extra:
    pip install -c constraints.txt 'care-suite[wandb]'".
    """
    for name in loggers:
        module = _TRACKER_MODULES.get(name)
        if module is not None and importlib.util.find_spec(module) is None:
            raise _missing_extra(name, ImportError(f"no module named {module!r}"))


def open_trackers(
    loggers: Sequence[str],
    run_dir: Path,
    config: Mapping[str, Any],
    run_name: str,
    *,
    resumed_at: int | None,
) -> TrackerMirror:
    """Start the trackers of ``train.loggers`` ("console" is the progress bar, not a tracker).

    Args:
        loggers: the names from ``train.loggers``.
        run_dir: the run folder; trackers write under ``run_dir/trackers``.
        config: the resolved config (``TrainConfig.to_dict()``).
        run_name: the display name (``run.name``).
        resumed_at: the step the run resumes after, None for a fresh run.

    Raises:
        TrackerError: a tracker's package is missing (naming the extra) or it cannot start.
    """
    require_trackers(loggers)
    root = Path(run_dir) / TRACKERS_DIR
    backends: list[_Backend] = []
    try:
        for name in loggers:
            if name == "console":
                continue
            if name == "tensorboard":
                backends.append(TensorBoardBackend(root / "tensorboard", config, resumed_at))
            elif name == "wandb":
                backends.append(WandbBackend(root / "wandb", config, run_name, resumed_at))
            elif name == "mlflow":
                config_file = Path(run_dir) / "config.yaml"
                backends.append(
                    MlflowBackend(root / "mlruns", config, run_name, resumed_at, config_file)
                )
            else:
                raise TrackerError(
                    f"train.loggers: unknown logger {name!r}; allowed: console, "
                    f"{', '.join(TRACKER_EXTRAS)}"
                )
    except BaseException:
        for backend in backends:  # do not leave a half-started W&B run behind
            backend.close("crashed")
        raise
    return TrackerMirror(backends)


def open_run_log(
    cfg: TrainConfig, *, resumed_at: int | None, config_changes: Sequence[Mapping[str, Any]] = ()
) -> RunWriter:
    """The run folder's writer (a new run, or one resumed after step ``resumed_at`` with the
    settings changed since its checkpoint recorded in meta.json), with the trackers of
    ``train.loggers`` mirroring each step record once the folder has it (docs/trackers.md).
    A tracker that cannot start marks the run crashed before the error propagates."""
    if resumed_at is not None:
        writer = RunWriter.resume(
            cfg.run_dir, last_step=resumed_at, config_changes=list(config_changes)
        )
    else:
        writer = RunWriter.create(cfg.run_dir, cfg.to_dict(), seed=cfg.run.seed)
    try:
        trackers = open_trackers(
            cfg.train.loggers, cfg.run_dir, cfg.to_dict(), cfg.run.name, resumed_at=resumed_at
        )
    except BaseException:
        writer.finish("crashed")
        raise
    writer.add_observer(trackers)
    return writer
