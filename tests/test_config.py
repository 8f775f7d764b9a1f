"""The training config: no silent settings. A KL term without a reference model is an error
naming both fields; a resumed run may change only the settings that keep the resume exact."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from care.cli import app
from care.config import (
    RESUME_SAFE_FIELDS,
    ConfigChange,
    ConfigError,
    config_changes,
    config_from_dict,
    resume_config_changes,
)


def test_kl_coef_without_a_reference_model_is_an_error_naming_both_fields():
    # GRPO's KL coefficient 1e-2 is filled in from the estimator: it counts too.
    with pytest.raises(ConfigError) as error:
        config_from_dict({"model": {"reference_model": False}}, source="run.yaml")
    message = str(error.value)
    assert message.startswith("run.yaml: invalid configuration")
    assert "loss.kl_coef=0.01 needs model.reference_model=true" in message
    assert "set loss.kl_coef=0" in message
    assert "{'model'" not in message  # the input mapping is not dumped into the message
    with pytest.raises(ConfigError, match=r"loss\.kl_coef=0\.05 needs model\.reference_model"):
        config_from_dict({"model": {"reference_model": False}, "loss": {"kl_coef": 0.05}})


def test_no_kl_term_may_go_without_a_reference_model():
    explicit = config_from_dict({"model": {"reference_model": False}, "loss": {"kl_coef": 0}})
    assert explicit.loss.kl_coef == 0.0 and explicit.model.reference_model is False
    # DAPO trains without KL by definition.
    dapo = config_from_dict({"model": {"reference_model": False}, "algo": {"estimator": "dapo"}})
    assert dapo.loss.kl_coef == 0.0


def test_care_train_refuses_kl_without_a_reference_model_with_exit_code_2(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"model": {"reference_model": False}}))
    result = CliRunner().invoke(app, ["train", "-c", str(path)])
    assert result.exit_code == 2
    assert "loss.kl_coef=0.01 needs model.reference_model=true" in result.output


def test_config_changes_lists_each_changed_leaf_in_config_order():
    old = {"train": {"steps": 4, "device": "cpu"}, "optim": {"betas": [0.9, 0.999]}}
    new = {"train": {"steps": 6, "device": "cpu"}, "optim": {"betas": [0.9, 0.95]}, "x": {"y": 1}}
    assert config_changes(old, new) == [
        ConfigChange("train.steps", 4, 6),
        ConfigChange("optim.betas", [0.9, 0.999], [0.9, 0.95]),  # a list compares whole
        ConfigChange("x.y", None, 1, added=True),  # not in the old config
    ]
    assert config_changes(new, new) == []
    change = ConfigChange("train.steps", 4, 6)
    assert change.describe() == "train.steps: 4 → 6"
    assert change.record(2) == {"field": "train.steps", "old": 4, "new": 6, "step": 2}


def _config(**sections):
    base = {"train": {"steps": 4, "prompts_per_step": 2, "mini_batch_prompts": 1}}
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return config_from_dict(base)


def test_resume_may_change_length_cadence_location_and_unread_sections():
    checkpoint = _config().to_dict()
    changed = _config(
        run={"name": "moved", "out_dir": "elsewhere"},
        data={"test_files": ["held_out.jsonl"]},
        train={"steps": 9, "save_every": 3, "keep_checkpoints": 5, "log_samples_every": 0},
        sft={"steps": 50},
    )
    changes = resume_config_changes(checkpoint, changed, checkpoint_step=2)
    assert [c.field for c in changes] == [
        "run.name",
        "run.out_dir",
        "data.test_files",
        "train.steps",
        "train.save_every",
        "train.keep_checkpoints",
        "train.log_samples_every",
        "sft.steps",
    ]
    assert all(c.resume_safe for c in changes)
    assert changes[3] == ConfigChange("train.steps", 4, 9)
    assert resume_config_changes(checkpoint, _config(), checkpoint_step=4) == []


@pytest.mark.parametrize(
    ("sections", "named"),
    [
        ({"algo": {"estimator": "grpo"}}, "algo.estimator: 'care' → 'grpo'"),
        ({"model": {"image_size": 56}}, "model.image_size: 112 → 56"),
        ({"data": {"train_files": ["other.jsonl"]}}, "data.train_files: [] → ['other.jsonl']"),
        ({"rollout": {"n": 16}}, "rollout.n: 8 → 16"),
        ({"loss": {"clip_high": 0.28}}, "loss.clip_high: 0.3 → 0.28"),
        ({"optim": {"lr": 1e-5}}, "optim.lr: 1e-06 → 1e-05"),
        ({"train": {"micro_batch_rows": 4}}, "train.micro_batch_rows: 8 → 4"),
        ({"train": {"device": "cpu"}}, "train.device: 'auto' → 'cpu'"),
        ({"run": {"seed": 1}}, "run.seed: 0 → 1"),
    ],
)
def test_resume_refuses_a_change_that_breaks_exact_resume_naming_the_field(sections, named):
    checkpoint = _config().to_dict()
    with pytest.raises(ConfigError) as error:
        resume_config_changes(checkpoint, _config(**sections), checkpoint_step=2)
    message = str(error.value)
    assert message.startswith("--resume from step 2: these fields differ")
    assert named in message
    assert "start a new run" in message


def test_resume_names_every_refused_field_and_not_the_allowed_ones():
    checkpoint = _config().to_dict()
    changed = _config(rollout={"n": 16, "temperature": 0.7}, train={"steps": 8})
    with pytest.raises(ConfigError) as error:
        resume_config_changes(checkpoint, changed, checkpoint_step=2)
    listed = [line.strip() for line in str(error.value).splitlines() if line.startswith("  ")]
    assert listed == ["rollout.n: 8 → 16", "rollout.temperature: 1.0 → 0.7"]


def test_resume_accepts_a_setting_newer_than_the_checkpoint_at_its_default_only():
    # A checkpoint written before model.gradient_checkpointing existed.
    checkpoint = _config().to_dict()
    del checkpoint["model"]["gradient_checkpointing"]
    changes = resume_config_changes(checkpoint, _config(), checkpoint_step=2)
    assert changes == [ConfigChange("model.gradient_checkpointing", None, False, added=True)]
    assert changes[0].record(2) == {
        "field": "model.gradient_checkpointing",
        "old": None,
        "new": False,
        "step": 2,
    }
    with pytest.raises(ConfigError, match=r"model\.gradient_checkpointing: None → True"):
        resume_config_changes(
            checkpoint, _config(model={"gradient_checkpointing": True}), checkpoint_step=2
        )


def test_resume_refuses_fewer_steps_than_the_checkpoint_holds():
    with pytest.raises(ConfigError, match=r"train\.steps=3 is below the checkpoint's step 4"):
        resume_config_changes(_config().to_dict(), _config(train={"steps": 3}), checkpoint_step=4)


def test_every_resume_safe_field_exists_in_the_config():
    fields = set(_flatten_keys(_config().to_dict()))
    for safe in RESUME_SAFE_FIELDS:
        assert safe in fields or any(key.startswith(safe + ".") for key in fields), safe


def _flatten_keys(data: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        keys.extend(_flatten_keys(value, path) if isinstance(value, dict) else [path])
    return keys
