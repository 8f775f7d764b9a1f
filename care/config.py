"""Typed, validated training configuration.

One YAML file describes a run. Every field is documented here, unknown keys are errors, and a
bad value names the field, the value and what is allowed. Batch sizes say what they count:
*prompts* (each yields ``rollout.n`` completions) or *rows* (completions).

Loss settings left unset (``null``) take the defaults that define the chosen estimator in its
paper (``care.algo.registry``); the run folder stores the config with every default filled in,
so a run can be reproduced from its ``config.yaml`` alone.

Example::

    cfg = load_config("configs/demo.yaml", overrides=["algo.estimator=grpo", "train.steps=4"])
    cfg.loss.clip_high   # 0.3 (GRPO/CARE) or 0.28 (DAPO), filled in from the estimator
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from care.algo.care import CareConfig
from care.algo.losses import PolicyLossConfig
from care.algo.registry import estimator_names, get_estimator
from care.models.tiny_config import TinyVLMConfig


class ConfigError(ValueError):
    """A configuration file or override that does not validate; the message names each field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunSection(_Section):
    name: str = Field("run", description="Run folder name under out_dir.")
    out_dir: str = Field("runs", description="Folder that holds run folders.")
    seed: int = Field(0, description="Seed for data order, sampling and model init.")


class ModelSection(_Section):
    path: str | None = Field(
        None, description="Local Hugging Face checkpoint folder; null builds the tiny model."
    )
    tokenizer: Literal["tiny_bpe", "qwen2_5"] = Field(
        "tiny_bpe", description="Tokenizer of the tiny model (ignored when path is set)."
    )
    tiny: TinyVLMConfig = Field(
        default_factory=TinyVLMConfig,
        description="Shape of the tiny model: care.models.tiny_config.TinyVLMConfig, the class "
        "build_tiny_vlm takes.",
    )
    dtype: Literal["float32", "bfloat16", "auto"] = Field("float32", description="Weights dtype.")
    image_size: int | None = Field(
        112,
        ge=28,
        description="Tiny model: images are resized to this square size; null keeps each image's "
        "own size within 56x56..112x112 px (a multiple of 28 px per side). A checkpoint keeps "
        "its processor's pixel budget (set min_pixels/max_pixels); a non-default image_size must "
        "then match it (e.g. a tiny model's checkpoint).",
    )
    min_pixels: int | None = Field(
        None,
        ge=784,
        description="Checkpoint only: smaller images are enlarged to at least this many pixels "
        "(null: the checkpoint's preprocessor setting).",
    )
    max_pixels: int | None = Field(
        None,
        ge=784,
        description="Checkpoint only: larger images are shrunk to at most this many pixels; one "
        "vision token covers 28x28 px, so 1280*28*28 caps an image at 1280 tokens (null: the "
        "checkpoint's preprocessor setting, up to ~16k tokens for Qwen2.5-VL).",
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    reference_model: bool = Field(
        True,
        description="Load a frozen reference copy for the KL term; false only with "
        "loss.kl_coef=0 (saves the copy's memory).",
    )

    @model_validator(mode="after")
    def _image_settings_fit_the_model(self) -> ModelSection:
        # A setting the chosen model ignores would silently change nothing (image_size with a
        # checkpoint is checked against its processor when it is loaded).
        if not self.path and (self.min_pixels is not None or self.max_pixels is not None):
            raise ValueError(
                "min_pixels/max_pixels apply to a checkpoint (model.path); the tiny model takes "
                "image_size"
            )
        if (
            self.min_pixels is not None
            and self.max_pixels is not None
            and self.min_pixels > self.max_pixels
        ):
            raise ValueError(
                f"min_pixels={self.min_pixels} must not exceed max_pixels={self.max_pixels}"
            )
        return self


class DataSection(_Section):
    train_files: list[str] = Field(
        default_factory=list, description="JSONL/parquet training files."
    )
    test_files: list[str] = Field(
        default_factory=list, description="Held-out files for evaluation."
    )
    val_files: list[str] = Field(
        default_factory=list,
        description="Held-out validation files scored greedily during training (train.eval_every).",
    )
    on_bad_row: Literal["error", "skip"] = Field("error", description="What a bad row does.")
    max_prompt_tokens: int = Field(
        1024,
        ge=16,
        description="Longest prompt in tokens, vision tokens included; a longer example is a bad "
        "row (on_bad_row), found before training starts.",
    )


class VllmSection(_Section):
    gpu_memory_utilization: float = Field(
        0.4,
        gt=0.0,
        le=1.0,
        description="Share of each GPU's memory vLLM takes (weights + KV cache) next to training.",
    )
    max_model_len: int | None = Field(
        None,
        ge=16,
        description="Longest context vLLM serves, in tokens (null: data.max_prompt_tokens plus "
        "the longest response, RGR repair contexts included).",
    )
    limit_images_per_prompt: int = Field(
        1,
        ge=0,
        description="Most images one prompt holds (vLLM reserves memory for that many); a "
        "training row with more is a bad row.",
    )
    sync_chunk_mb: int = Field(
        1024, ge=1, description="Most MiB of weights gathered and loaded into vLLM at once."
    )


class RolloutSection(_Section):
    engine: Literal["hf", "vllm"] = Field(
        "hf", description="Rollout engine: hf (in-process transformers) or vllm (colocated vLLM)."
    )
    n: int = Field(8, ge=1, description="Rollouts per prompt (G).")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(2048, ge=1, description="Longest response, in tokens.")
    batch_rows: int = Field(
        64,
        ge=1,
        description="Completions generated per call of the hf engine (vLLM schedules its own).",
    )
    vllm: VllmSection = Field(default_factory=VllmSection)


class RgrSection(_Section):
    enable: bool = Field(
        description="Run Reflection-Guided Resampling (null or unset: the estimator decides, "
        "filled in by the algo section)."
    )
    train_on: Literal["continuation", "response"] = Field(
        "continuation",
        description="Train the repair as a continuation of its repair context, or as a response "
        "to the original prompt (the reference code).",
    )
    sampling: Literal["rollout", "reference"] = Field(
        "rollout",
        description="Decode the repair like the rollouts (paper) or with the reference code's "
        "temperature 0.6 / top_p 0.95 / 512 tokens.",
    )
    max_new_tokens: int | None = Field(
        None, ge=1, description="Repair length cap (null: rollout.max_new_tokens, or 512)."
    )


class RewardSection(_Section):
    format_weight: float = Field(0.0, ge=0.0, le=1.0, description="w in (1-w)·acc + w·fmt.")
    verify_time_limit: float = Field(
        0.3,
        gt=0.0,
        le=30.0,
        description="Seconds math-verify may spend on one answer; an answer that runs out is "
        "scored wrong and counted in verify/timeout_frac.",
    )


class DapoSection(_Section):
    variance_tolerance: float = Field(1e-8, ge=0.0, description="Groups with var <= this drop.")
    max_refill_rounds: int = Field(3, ge=0, description="Extra rollout rounds to refill a batch.")


class AlgoSection(_Section):
    estimator: str = Field("care", description=f"One of: {', '.join(estimator_names())}.")
    care: CareConfig = Field(
        default_factory=CareConfig,
        description="CARE's advantage settings: care.algo.care.CareConfig, the class the "
        "algorithm takes (its rescue_* settings nest under rescue).",
    )
    rgr: RgrSection
    token_weighting: Literal["region", "uniform"] = Field(
        description="Token advantages (null or unset: the estimator decides)."
    )
    gamma_pos: float = Field(0.005, ge=0.0, description="Think-token weight of a positive.")
    reward: RewardSection = Field(default_factory=RewardSection)
    dapo: DapoSection = Field(default_factory=DapoSection)

    @model_validator(mode="before")
    @classmethod
    def _estimator_decides_unset_fields(cls, data: Any) -> Any:
        # token_weighting and rgr.enable left unset (or null) take the estimator's values before
        # validation, so the validated section is never patched; what the user wrote stays.
        if not isinstance(data, dict):
            return data
        name = data.get("estimator", cls.model_fields["estimator"].default)
        if not isinstance(name, str) or name not in estimator_names():
            raise ValueError(
                f"estimator {name!r} is unknown; allowed: {', '.join(estimator_names())}"
            )
        est = get_estimator(name)
        data = dict(data)
        if data.get("token_weighting") is None:
            data["token_weighting"] = est.token_weighting
        rgr = {} if data.get("rgr") is None else data["rgr"]
        if isinstance(rgr, dict) and rgr.get("enable") is None:
            data["rgr"] = {**rgr, "enable": est.uses_rgr}
        return data

    @model_validator(mode="after")
    def _rgr_only_where_the_estimator_runs_it(self) -> AlgoSection:
        if self.rgr.enable and not get_estimator(self.estimator).uses_rgr:
            raise ValueError(
                f"algo.rgr.enable=true but estimator {self.estimator!r} does not run RGR "
                "(use 'care', or 'care_no_rgr' for the ablation)"
            )
        return self


class OptimSection(_Section):
    lr: float = Field(1e-6, gt=0.0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-2, ge=0.0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    grad_clip: float = Field(1.0, gt=0.0, description="Max global grad norm.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up, in optimizer updates.")


class TrainSection(_Section):
    steps: int = Field(1, ge=1, description="Training steps (one rollout batch each).")
    prompts_per_step: int = Field(512, ge=1, description="Prompts per step (x rollout.n rows).")
    mini_batch_prompts: int = Field(128, ge=1, description="Prompts per optimizer update.")
    micro_batch_rows: int = Field(8, ge=1, description="Completions per forward/backward.")
    ppo_epochs: int = Field(1, ge=1, description="Passes over each step's batch.")
    save_every: int = Field(0, ge=0, description="Checkpoint every N steps (0: only at the end).")
    keep_checkpoints: int = Field(2, ge=1, description="Newest resumable checkpoints kept.")
    log_samples_every: int = Field(1, ge=0, description="Write rollout texts every N steps.")
    eval_every: int = Field(
        0,
        ge=0,
        description="Score the policy greedily on data.val_files before the first step and every "
        "N steps (val/acc in steps.jsonl; 0: never).",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N.")
    loggers: list[Literal["console", "tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["console"],
        description="Where step metrics also go: console (progress bar), tensorboard, wandb, "
        "mlflow (docs/trackers.md); the run folder is always written.",
    )

    @field_validator("loggers")
    @classmethod
    def _loggers_once(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"each logger may be listed once; repeated: {', '.join(repeated)}")
        return value

    @model_validator(mode="after")
    def _mini_batch_divides(self) -> TrainSection:
        if self.prompts_per_step % self.mini_batch_prompts != 0:
            raise ValueError(
                f"mini_batch_prompts={self.mini_batch_prompts} must divide "
                f"prompts_per_step={self.prompts_per_step}"
            )
        return self


class SftSection(_Section):
    steps: int = Field(0, ge=0, description="Supervised warm-start updates (0: none).")
    lr: float = Field(1e-3, gt=0.0, description="SFT learning rate.")
    batch_rows: int = Field(16, ge=1, description="Examples per SFT update.")


class TrainConfig(_Section):
    """A whole run: what to train, on what, with which estimator, for how long."""

    run: RunSection = Field(default_factory=RunSection)
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    rollout: RolloutSection = Field(default_factory=RolloutSection)
    algo: AlgoSection = Field(default_factory=AlgoSection)
    loss: PolicyLossConfig = Field(
        default_factory=PolicyLossConfig,
        description="Policy-loss settings: care.algo.losses.PolicyLossConfig, the class the loss "
        "takes; unset fields take the estimator's values.",
    )
    optim: OptimSection = Field(default_factory=OptimSection)
    train: TrainSection = Field(default_factory=TrainSection)
    sft: SftSection = Field(default_factory=SftSection)

    @model_validator(mode="before")
    @classmethod
    def _estimator_fills_unset_loss_fields(cls, data: Any) -> Any:
        # Loss fields the user did not write (or wrote as null) take the values that define the
        # estimator in its paper (Estimator.loss_defaults) before validation; an explicit value
        # wins, and an explicit dual_clip: null is kept (it switches the dual clip off).
        if not isinstance(data, dict):
            return data
        algo = {} if data.get("algo") is None else data["algo"]
        loss = {} if data.get("loss") is None else data["loss"]
        if not isinstance(algo, dict) or not isinstance(loss, dict):
            return data  # the section's own validation names the problem
        name = algo.get("estimator", AlgoSection.model_fields["estimator"].default)
        if not isinstance(name, str) or name not in estimator_names():
            return data  # AlgoSection refuses the name, listing the known ones
        filled = dict(loss)
        for key, value in get_estimator(name).loss_defaults.items():
            if key not in filled or (filled[key] is None and key != "dual_clip"):
                filled[key] = value
        return {**data, "loss": filled}

    @model_validator(mode="after")
    def _kl_needs_reference(self) -> TrainConfig:
        # The estimator filled kl_coef in before validation: GRPO's default 1e-2 counts too.
        if self.loss.kl_coef and not self.model.reference_model:
            raise ValueError(
                f"loss.kl_coef={self.loss.kl_coef} needs model.reference_model=true (the KL "
                "term is measured against the frozen reference); set loss.kl_coef=0 to train "
                "without the KL term, or model.reference_model=true"
            )
        return self

    @model_validator(mode="after")
    def _validation_needs_files(self) -> TrainConfig:
        if self.train.eval_every and not self.data.val_files:
            raise ValueError(
                f"train.eval_every={self.train.eval_every} needs data.val_files (the held-out "
                "validation split to score); set data.val_files or train.eval_every=0"
            )
        if self.data.val_files and not self.train.eval_every:
            raise ValueError(
                "data.val_files is set but train.eval_every=0, so it would never be scored; set "
                "train.eval_every=N or drop data.val_files"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run.name

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (what ``config.yaml`` in the run folder holds)."""
        return self.model_dump(mode="json")


def _format_errors(err: ValidationError, source: str) -> str:
    return "\n".join([f"{source}: invalid configuration", *validation_error_lines(err)])


def validation_error_lines(err: ValidationError) -> list[str]:
    """One indented line per field pydantic refused: where (dotted), why, and the value given
    (a cross-field check names its fields in its own message). Used for config files and for
    ``care eval``'s settings.

    Example: ``["  train.steps: Input should be greater than or equal to 1 (got 0)"]``.
    """
    lines = []
    for item in err.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        kind = item["type"]
        if kind == "extra_forbidden":
            lines.append(f"  {where}: unknown key (value {item.get('input')!r})")
        elif kind == "value_error":
            # A check across fields: its message names them and their values; the input is the
            # whole section (or file), too long to repeat.
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"  {where}: {message}" if item["loc"] else f"  {message}")
        else:
            lines.append(f"  {where}: {item['msg']} (got {item.get('input')!r})")
    return lines


def _apply_override(data: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected key.path=value")
    path, raw = override.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else None
    node = data
    parts = path.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(
    data: dict[str, Any], source: str = "<config>", overrides: list[str] | None = None
) -> TrainConfig:
    """Validate a config mapping (plus ``key.path=value`` overrides) into a :class:`TrainConfig`."""
    data = dict(data or {})
    for override in overrides or []:
        _apply_override(data, override)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config file; relative data paths stay relative to the current directory."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return config_from_dict(data or {}, source=str(path), overrides=overrides)


# ----------------------------------------------------------------------------------------------
# Changed settings on --resume

RESUME_SAFE_FIELDS: tuple[str, ...] = (
    "run.name",
    "run.out_dir",
    "data.test_files",
    "train.steps",
    "train.save_every",
    "train.keep_checkpoints",
    "train.log_samples_every",
    "train.eval_every",
    "data.val_files",
    "sft",
    "rollout.vllm.gpu_memory_utilization",
    "rollout.vllm.sync_chunk_mb",
)
"""Config fields (or whole sections) a resumed run may change: where the run folder lives, how
long it trains, how often it checkpoints, logs samples and scores the validation split, what
the RL steps never read (held-out and validation files, the warm-start section), and how much memory vLLM takes and in what pieces it
receives the weights (the way out of an out-of-memory stop). Every other field changes what a
step computes (the model, the data and its order, the estimator, sampling, batch shapes, the
loss, the optimizer, the device's arithmetic, vLLM's context and image limits), so a run
resumed with it changed would not continue the run that wrote the checkpoint; such a change is
refused (`resume_config_changes`)."""


@dataclass(frozen=True)
class ConfigChange:
    """One config field whose value differs from the checkpoint's config on ``--resume``.

    ``added``: the checkpoint's config has no such field (it was written before the setting
    existed); ``old`` is then None.
    """

    field: str
    old: Any
    new: Any
    added: bool = False

    @property
    def resume_safe(self) -> bool:
        return any(
            self.field == safe or self.field.startswith(safe + ".") for safe in RESUME_SAFE_FIELDS
        )

    def describe(self) -> str:
        """``"train.steps: 4 → 6"``."""
        return f"{self.field}: {self.old!r} → {self.new!r}"

    def record(self, step: int) -> dict[str, Any]:
        """The ``meta.json`` entry: field, old, new and the checkpoint step it applies after."""
        return {"field": self.field, "old": self.old, "new": self.new, "step": step}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[ConfigChange]:
    """The leaf fields whose values differ between two resolved configs (``to_dict()`` form),
    in the order of ``new``; lists (files, betas) compare as whole values.

    Example::

        config_changes({"train": {"steps": 4, "device": "cpu"}},
                       {"train": {"steps": 6, "device": "cpu"}})
        → [ConfigChange(field="train.steps", old=4, new=6)]
    """
    before, after = _flatten(old), _flatten(new)
    changes = [
        ConfigChange(key, before.get(key), value, added=key not in before)
        for key, value in after.items()
        if key not in before or before[key] != value
    ]
    changes.extend(
        ConfigChange(key, value, None) for key, value in before.items() if key not in after
    )
    return changes


def resume_config_changes(
    checkpoint_config: dict[str, Any], cfg: TrainConfig, checkpoint_step: int
) -> list[ConfigChange]:
    """The settings ``cfg`` changes relative to the config that wrote the checkpoint of
    ``checkpoint_step``; raises :class:`ConfigError` naming every field whose change would break
    exact resume (anything outside `RESUME_SAFE_FIELDS`), or when ``train.steps`` falls below
    the checkpoint's step. A field the checkpoint's config lacks (a setting added to care-suite
    after the run started) is accepted at its default, the value that keeps the older behaviour.

    Example: resuming a run checkpointed at step 2 with ``--set train.steps=6`` →
    ``[ConfigChange("train.steps", 4, 6)]``; with ``--set rollout.n=16`` → ConfigError
    ``"... rollout.n: 8 → 16 ..."``.
    """
    changes = config_changes(checkpoint_config, cfg.to_dict())
    defaults = _flatten(
        TrainConfig.model_validate({"algo": {"estimator": cfg.algo.estimator}}).to_dict()
    )
    refused = [
        change
        for change in changes
        if not change.resume_safe and not (change.added and change.new == defaults[change.field])
    ]
    if refused:
        lines = "\n".join(f"  {change.describe()}" for change in refused)
        raise ConfigError(
            f"--resume from step {checkpoint_step}: these fields differ from the config that "
            f"wrote the checkpoint and change what a step computes, so the run could not "
            f"continue exactly:\n{lines}\nRestore them, or start a new run (another run.name). "
            f"Fields a resume may change: {', '.join(RESUME_SAFE_FIELDS)}"
        )
    if cfg.train.steps < checkpoint_step:
        raise ConfigError(
            f"--resume: train.steps={cfg.train.steps} is below the checkpoint's step "
            f"{checkpoint_step}; give train.steps >= {checkpoint_step}"
        )
    return changes
