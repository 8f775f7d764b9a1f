"""The training config: no silent settings. Every field is read by code; a KL term without a
reference model is an error naming both fields; a resumed run may change only the settings that
keep the resume exact; the 7B configs say what the paper trained with; image and prompt budgets
reach the processor, the vLLM engine and the data.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from pydantic import BaseModel
from tiny_run import recording_vllm_modules, tiny_config
from typer.testing import CliRunner

from care.algo.care import CareConfig
from care.algo.registry import estimator_names, get_estimator
from care.cli import app
from care.config import (
    RESUME_SAFE_FIELDS,
    ConfigChange,
    ConfigError,
    TrainConfig,
    config_changes,
    config_from_dict,
    load_config,
    resume_config_changes,
)
from care.data import DataError

ROOT = Path(__file__).resolve().parents[1]
SEVEN_B = sorted((ROOT / "configs").glob("qwen2_5_vl_7b_*.yaml"))


# ------------------------------------------------------------------------------------------------
# Contradicting settings and changes on --resume


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


def test_resume_may_change_vllms_memory_share_and_sync_chunks():
    checkpoint = _config().to_dict()
    changed = _config(rollout={"vllm": {"gpu_memory_utilization": 0.3, "sync_chunk_mb": 256}})
    assert resume_config_changes(checkpoint, changed, checkpoint_step=2) == [
        ConfigChange("rollout.vllm.gpu_memory_utilization", 0.4, 0.3),
        ConfigChange("rollout.vllm.sync_chunk_mb", 1024, 256),
    ]


@pytest.mark.parametrize(
    ("sections", "named"),
    [
        # Cuts rollouts and repairs short when below the run's context budget.
        ({"rollout": {"vllm": {"max_model_len": 4096}}}, "rollout.vllm.max_model_len: None → 4096"),
        # Decides which rows are bad rows, so which examples the sampler draws from.
        (
            {"rollout": {"vllm": {"limit_images_per_prompt": 2}}},
            "rollout.vllm.limit_images_per_prompt: 1 → 2",
        ),
        ({"rollout": {"engine": "vllm"}}, "rollout.engine: 'hf' → 'vllm'"),
        # How many vision tokens an image becomes.
        ({"model": {"path": "/ckpt", "max_pixels": 1003520}}, "model.max_pixels: None → 1003520"),
        ({"model": {"path": "/ckpt", "min_pixels": 200704}}, "model.min_pixels: None → 200704"),
    ],
)
def test_resume_refuses_vllms_limits_and_the_image_budget(sections, named):
    checkpoint = _config(model={"path": "/ckpt"}).to_dict()
    changed = _config(**{"model": {"path": "/ckpt"}, **sections})
    with pytest.raises(ConfigError) as error:
        resume_config_changes(checkpoint, changed, checkpoint_step=2)
    listed = [line.strip() for line in str(error.value).splitlines() if line.startswith("  ")]
    assert listed == [named]


def test_a_checkpoint_from_before_the_vllm_settings_resumes_at_their_defaults():
    checkpoint = _config().to_dict()
    del checkpoint["rollout"]["vllm"]
    del checkpoint["model"]["min_pixels"], checkpoint["model"]["max_pixels"]
    changes = resume_config_changes(checkpoint, _config(), checkpoint_step=2)
    assert [(c.field, c.old, c.new, c.added) for c in changes] == [
        ("model.min_pixels", None, None, True),
        ("model.max_pixels", None, None, True),
        ("rollout.vllm.gpu_memory_utilization", None, 0.4, True),
        ("rollout.vllm.max_model_len", None, None, True),
        ("rollout.vllm.limit_images_per_prompt", None, 1, True),
        ("rollout.vllm.sync_chunk_mb", None, 1024, True),
    ]
    with pytest.raises(ConfigError, match=r"rollout\.vllm\.limit_images_per_prompt: None → 2"):
        resume_config_changes(
            checkpoint,
            _config(rollout={"vllm": {"limit_images_per_prompt": 2}}),
            checkpoint_step=2,
        )


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


# ------------------------------------------------------------------------------------------------
# Every field does something


def _fields(model: type[BaseModel], section: str = "") -> list[tuple[str, str, str]]:
    """``(dotted path, owning section name, owning class name)`` of every leaf field."""
    found = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        path = f"{section}.{name}" if section else name
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.extend(_fields(annotation, path))
        else:
            found.append((path, section.rsplit(".", 1)[-1], model.__name__))
    return found


def _attribute_reads() -> dict[str, set[str]]:
    """For every attribute name read in ``care/`` (``X.name`` in a load), what X was: the
    attribute before it (``cfg.data`` → ``data``), a variable name, ``self:<Class>``, or
    ``type:<Class>`` for a function parameter annotated with that class (``cfg: CareConfig``)."""
    reads: dict[str, set[str]] = {}

    class Reads(ast.NodeVisitor):
        def __init__(self) -> None:
            self.classes: list[str] = []
            self.typed: list[dict[str, set[str]]] = [{}]

        def visit_ClassDef(self, node: ast.ClassDef) -> None:
            self.classes.append(node.name)
            self.generic_visit(node)
            self.classes.pop()

        def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
            args = node.args
            typed = dict(self.typed[-1])
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if arg.annotation is not None:
                    typed[arg.arg] = {
                        part.id for part in ast.walk(arg.annotation) if isinstance(part, ast.Name)
                    }
            self.typed.append(typed)
            self.generic_visit(node)
            self.typed.pop()

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Attribute(self, node: ast.Attribute) -> None:
            if isinstance(node.ctx, ast.Load):
                owner = node.value
                if isinstance(owner, ast.Attribute):
                    reads.setdefault(node.attr, set()).add(owner.attr)
                elif isinstance(owner, ast.Name):
                    name = owner.id
                    if name == "self" and self.classes:
                        name = f"self:{self.classes[-1]}"
                    reads.setdefault(node.attr, set()).add(name)
                    for cls in self.typed[-1].get(owner.id, ()):
                        reads[node.attr].add(f"type:{cls}")
            self.generic_visit(node)

    for path in (ROOT / "care").rglob("*.py"):
        Reads().visit(ast.parse(path.read_text(encoding="utf-8")))
    return reads


def _unread(model: type[BaseModel]) -> list[str]:
    """Fields of `model` no code in ``care/`` reads. A field counts as read where code loads
    ``<section>.<field>`` (cfg.data.max_prompt_tokens), reads it off a variable named after its
    section (rgr.enable, model_cfg.path), inside the section's own class off self
    (CareConfig.reflection_scale), or off a parameter annotated with the section's class
    (``cfg: CareConfig`` in care_advantages)."""
    reads = _attribute_reads()
    unread = []
    for path, section, owner_class in _fields(model):
        owners = reads.get(path.rsplit(".", 1)[-1], set())
        if not any(
            o == section
            or o.startswith(section)
            or o in (f"self:{owner_class}", f"type:{owner_class}")
            for o in owners
        ):
            unread.append(path)
    return unread


def test_every_config_field_is_read_by_some_code():
    assert _unread(TrainConfig) == []
    walked = {path for path, _, _ in _fields(TrainConfig)}
    assert {
        "algo.care.rescue_delta",
        "rollout.vllm.sync_chunk_mb",
        "model.tiny.num_heads",
    } <= walked


def test_the_field_walk_flags_fields_nothing_reads():
    class DataSection(BaseModel):  # a section named like the real one
        train_files: list[str] = []
        never_read_anywhere: int = 0

    class Probe(BaseModel):
        data: DataSection = DataSection()

    assert _unread(Probe) == ["data.never_read_anywhere"]


@pytest.mark.parametrize("path", SEVEN_B, ids=lambda p: p.stem)
def test_7b_configs_sample_with_vllm_under_explicit_budgets(path):
    from care.train.policy_setup import context_token_budget

    raw = yaml.safe_load(path.read_text())
    cfg = load_config(path)
    assert cfg.rollout.engine == "vllm"
    assert "image_size" not in raw["model"]  # a tiny-model setting, refused with a path
    assert cfg.model.max_pixels == 1280 * 28 * 28 and cfg.model.min_pixels == 256 * 28 * 28
    assert cfg.data.max_prompt_tokens == 2048 and cfg.rollout.max_new_tokens == 2048
    assert (cfg.rollout.n, cfg.train.prompts_per_step, cfg.train.mini_batch_prompts) == (
        8,
        512,
        128,
    )
    assert cfg.rollout.vllm.limit_images_per_prompt == 1
    assert 0 < cfg.rollout.vllm.gpu_memory_utilization <= 0.4
    rgr = cfg.algo.rgr.enable
    assert context_token_budget(cfg) == (6208 if rgr else 4096)
    # The fallback the file describes: the transformers engine.
    assert "engine: hf" in path.read_text()


def test_image_settings_that_the_model_would_ignore_are_errors():
    with pytest.raises(ConfigError, match="min_pixels/max_pixels apply to a checkpoint"):
        config_from_dict({"model": {"max_pixels": 1003520}})
    with pytest.raises(ConfigError, match="min_pixels=5000 must not exceed max_pixels=4000"):
        config_from_dict({"model": {"path": "/ckpt", "min_pixels": 5000, "max_pixels": 4000}})
    # What a run folder stores (every default filled in) loads again.
    saved = config_from_dict({"model": {"path": "/ckpt", "max_pixels": 1003520}}).to_dict()
    assert config_from_dict(saved).model.max_pixels == 1003520
    with pytest.raises(ConfigError, match="rollout.vllm.gpu_memory_utilization"):
        config_from_dict({"rollout": {"vllm": {"gpu_memory_utilization": 0}}})


def test_context_budget_covers_prompt_response_and_the_rgr_repair():
    from care.train.policy_setup import context_token_budget

    def budget(**sections: Any) -> int:
        return context_token_budget(config_from_dict(sections))

    base = {"data": {"max_prompt_tokens": 1000}, "rollout": {"max_new_tokens": 300}}
    assert budget(algo={"estimator": "grpo"}, **base) == 1300
    # CARE: prompt + failed reasoning (<= a response) + repair cue + the repair itself.
    assert budget(algo={"estimator": "care"}, **base) == 1000 + 300 + 64 + 300
    reference = {"estimator": "care", "rgr": {"sampling": "reference"}}
    assert budget(algo=reference, **base) == 1000 + 300 + 64 + 512
    capped = {"estimator": "care", "rgr": {"max_new_tokens": 100}}
    assert budget(algo=capped, **base) == 1000 + 300 + 64 + 100


def test_repair_cue_fits_its_token_allowance(qwen_tokenizer):
    from care.prompts import REPAIR_CUE, build_repair_prefix
    from care.train.policy_setup import REPAIR_CUE_TOKENS

    reasoning = "<think>\nThe area is 3 * 4 = 13."
    prefix = build_repair_prefix(reasoning + "\n</think>\n<answer>13</answer>")
    added = len(qwen_tokenizer.encode(prefix)) - len(qwen_tokenizer.encode(reasoning))
    assert len(qwen_tokenizer.encode(REPAIR_CUE)) <= added <= REPAIR_CUE_TOKENS


# ------------------------------------------------------------------------------------------------
# Prompt and image budgets


def _tiny_processor(image_size: int | None = None, **pixels: int):
    from care.models.tokenizer import train_tiny_bpe_tokenizer
    from care.models.vlm import build_processor

    return build_processor(train_tiny_bpe_tokenizer(), image_size=image_size, **pixels)


def _png(tmp_path: Path, width: int, height: int) -> Path:
    path = tmp_path / f"{width}x{height}.png"
    Image.new("RGB", (width, height), (200, 30, 30)).save(path)
    return path


@pytest.mark.parametrize(("width", "height"), [(56, 56), (200, 100), (500, 333), (30, 900)])
def test_prompt_tokens_count_the_vision_tokens_the_processor_produces(tmp_path, width, height):
    from care.models.policy import encode_context
    from care.train.prompt_budget import image_size_of, prompt_tokens

    processor = _tiny_processor(min_pixels=28 * 28, max_pixels=224 * 224)
    path = _png(tmp_path, width, height)
    prompt = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Count.<|im_end|>\n"
    assert image_size_of(path) == (height, width)
    assert image_size_of(path.read_bytes()) == (height, width)
    encoded = encode_context(processor, prompt, [Image.open(path).convert("RGB")])
    assert prompt_tokens(processor, prompt, [(height, width)]) == len(encoded.input_ids)


def test_a_pixel_budget_shrinks_a_checkpoints_images(tmp_path):
    from care.config import ModelSection
    from care.models.policy import encode_context
    from care.models.tiny_config import TinyVLMConfig
    from care.models.tokenizer import train_tiny_bpe_tokenizer
    from care.models.vlm import build_tiny_vlm, save_policy
    from care.train.policy_setup import build_or_load_policy

    model, processor = build_tiny_vlm(
        train_tiny_bpe_tokenizer(),
        shape=TinyVLMConfig(hidden_size=32, num_layers=1, intermediate_size=64),
        max_pixels=448 * 448,
        seed=0,
    )
    save_policy(model, processor, tmp_path / "ckpt")
    image = Image.new("RGB", (448, 448))
    prompt = "<|vision_start|><|image_pad|><|vision_end|>"

    def vision_tokens(section: ModelSection) -> int:
        _, loaded = build_or_load_policy(section, seed=0, device="cpu")
        return len(encode_context(loaded, prompt, [image]).input_ids) - 2

    assert vision_tokens(ModelSection(path=str(tmp_path / "ckpt"))) == 256
    budget = ModelSection(path=str(tmp_path / "ckpt"), max_pixels=64 * 28 * 28)
    assert vision_tokens(budget) == 64
    # image_size sets the tiny model's images; with a checkpoint it must describe its processor
    # (the demo's SFT checkpoint of the tiny model does), else it would be silently ignored.
    with pytest.raises(ValueError, match=r"model.image_size=448 does not describe the processor"):
        vision_tokens(ModelSection(path=str(tmp_path / "ckpt"), image_size=448))
    square, square_processor = build_tiny_vlm(
        train_tiny_bpe_tokenizer(),
        shape=TinyVLMConfig(hidden_size=32, num_layers=1, intermediate_size=64),
        image_size=56,
        seed=0,
    )
    save_policy(square, square_processor, tmp_path / "square")
    assert vision_tokens(ModelSection(path=str(tmp_path / "square"), image_size=56)) == 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from care.data.synth import write_synthetic_dataset

    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, seed=3, n_train=6, n_test=2, image_size=56)
    return out


def test_a_prompt_over_max_prompt_tokens_is_a_bad_row(data_dir, tmp_path):
    from care.train.trainer import Trainer

    rows = [json.loads(line) for line in (data_dir / "train.jsonl").read_text().splitlines()]
    rows[2]["question"] += " Think about every object twice." * 40
    rows[4]["question"] += " Think about every object twice." * 40
    rows = [{**row, "images": [str(data_dir / image) for image in row["images"]]} for row in rows]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = tiny_config(data_dir, tmp_path, "budget", data={"max_prompt_tokens": 300})
    cfg["data"]["train_files"] = [str(train)]
    with pytest.raises(DataError) as raised:
        Trainer(config_from_dict(cfg), progress=False)
    message = str(raised.value)
    assert "2 training example(s) exceed the prompt limits" in message
    assert f"{train}:line 3 (id '{rows[2]['id']}'): prompt has" in message
    assert f"{train}:line 5" in message and "> data.max_prompt_tokens=300" in message
    cfg["data"]["on_bad_row"] = "skip"
    trainer = Trainer(config_from_dict(cfg), progress=False)
    assert [ex.id for ex in trainer.examples] == [rows[i]["id"] for i in (0, 1, 3, 5)]
    assert trainer.skipped_rows == 2 and trainer.sampler.num_items == 4


def test_more_images_than_vllm_takes_is_a_bad_row(tmp_path):
    from care.data import Example, RowSource
    from care.train.prompt_budget import over_budget

    processor = _tiny_processor(image_size=56)
    source = RowSource(tmp_path / "train.jsonl", 7, "line")
    image = _png(tmp_path, 56, 56)
    two = Example("two", (image, image), "Compare.", "A", "text", None, source)
    one = Example("one", (image,), "Count.", "A", "text", None, source)
    found = over_budget(
        [one, two], processor, lambda ex: ex.question, max_prompt_tokens=999, max_images=1
    )
    assert [str(item) for item in found] == [
        f"{source} (id 'two'): 2 images > rollout.vllm.limit_images_per_prompt=1"
    ]
    assert (
        over_budget([one, two], processor, lambda ex: "", max_prompt_tokens=999, max_images=None)
        == []
    )
    broken = Example("broken", (tmp_path / "missing.png",), "Count.", "A", "text", None, source)
    with pytest.raises(DataError, match=r"train.jsonl:line 7:images\[0\]: cannot read image"):
        over_budget([broken], processor, lambda ex: "", max_prompt_tokens=999, max_images=None)


def test_trainer_starts_vllm_with_the_runs_context_budget(data_dir, tmp_path, monkeypatch):
    import sys

    from care.train.policy_setup import context_token_budget
    from care.train.trainer import Trainer

    calls: list[dict[str, Any]] = []
    for name, module in recording_vllm_modules(calls).items():
        monkeypatch.setitem(sys.modules, name, module)
    cfg = config_from_dict(
        tiny_config(data_dir, tmp_path, "vllm", rollout={"engine": "vllm", "max_new_tokens": 8})
    )
    Trainer(cfg, progress=False)
    options = calls[0]["options"]
    assert options["max_model_len"] == context_token_budget(cfg) == 1024 + 8 + 64 + 8
    assert options["limit_mm_per_prompt"] == {"image": 1}
    assert options["mm_processor_kwargs"] == {"min_pixels": 56 * 56, "max_pixels": 56 * 56}
    assert "distributed_executor_backend" not in options  # one process: vLLM's own executor


def test_a_bad_held_out_file_stops_the_run_before_training(data_dir, tmp_path):
    from care.train.trainer import Trainer

    bad = tmp_path / "test.jsonl"
    bad.write_text('{"id": "t1", "images": [], "question": "Q?"}\n')
    cfg = tiny_config(data_dir, tmp_path, "held_out", data={"test_files": [str(bad)]})
    with pytest.raises(DataError, match=rf"{bad}.*line 1.*answer"):
        Trainer(config_from_dict(cfg), progress=False)
    assert not (tmp_path / "held_out").exists()


# ------------------------------------------------------------------------------------------------
# One declaration per setting: the algorithm's classes are the YAML sections, and the estimator
# fills in what the user left unset before validation


@pytest.mark.parametrize("name", estimator_names())
def test_unset_settings_take_the_estimators_values(name):
    est = get_estimator(name)
    cfg = config_from_dict({"algo": {"estimator": name}})
    assert {key: getattr(cfg.loss, key) for key in est.loss_defaults} == dict(est.loss_defaults)
    assert cfg.algo.token_weighting == est.token_weighting
    assert cfg.algo.rgr.enable is est.uses_rgr
    # Null means "the estimator decides" too, except for dual_clip, where it switches it off.
    nulls = {key: None for key in est.loss_defaults if key != "dual_clip"}
    written = config_from_dict(
        {
            "algo": {"estimator": name, "token_weighting": None, "rgr": {"enable": None}},
            "loss": nulls,
        }
    )
    assert written == cfg
    assert config_from_dict({"algo": {"estimator": name}, "loss": {"dual_clip": None}}).loss == (
        cfg.loss.model_copy(update={"dual_clip": None})
    )


def test_explicit_settings_win_over_the_estimators_values():
    cfg = config_from_dict(
        {
            "algo": {"estimator": "dapo", "token_weighting": "region"},
            "loss": {"clip_high": 0.25, "kl_coef": 0.02, "aggregation": "seq_mean_token_mean"},
        }
    )
    assert (cfg.loss.clip_high, cfg.loss.kl_coef, cfg.loss.aggregation) == (
        0.25,
        0.02,
        "seq_mean_token_mean",
    )
    assert cfg.loss.clip_low == 0.2 and cfg.algo.token_weighting == "region"
    care = config_from_dict({"algo": {"rgr": {"enable": False}, "token_weighting": "uniform"}})
    assert care.algo.rgr.enable is False and care.algo.token_weighting == "uniform"


def test_rgr_for_an_estimator_without_it_and_an_unknown_estimator_are_errors():
    with pytest.raises(ConfigError, match=r"algo\.rgr\.enable=true but estimator 'grpo'"):
        config_from_dict({"algo": {"estimator": "grpo", "rgr": {"enable": True}}})
    with pytest.raises(ConfigError) as error:
        config_from_dict({"algo": {"estimator": "ppo"}}, source="run.yaml")
    assert f"algo: estimator 'ppo' is unknown; allowed: {', '.join(estimator_names())}" in str(
        error.value
    )


def test_the_care_section_is_the_care_config_the_algorithm_takes():
    cfg = config_from_dict(
        {"algo": {"care": {"K": 2, "M": 3, "rescue": {"enable": False, "anchor": "mean"}}}}
    )
    assert type(cfg.algo.care) is CareConfig
    assert cfg.algo.care == CareConfig(K=2, M=3, rescue_enable=False, rescue_anchor="mean")
    # The run folder keeps the file's nested layout, and reading it back gives the same run.
    saved = cfg.to_dict()
    assert saved["algo"]["care"]["rescue"] == {
        "enable": False,
        "delta": 0.1,
        "normalize": True,
        "anchor": "mean",
    }
    assert "rescue_enable" not in saved["algo"]["care"]
    assert config_from_dict(saved) == cfg


@pytest.mark.parametrize(
    ("care", "named"),
    [
        ({"rescue": {"delta": -1.0}}, "algo.care.rescue.delta: Input should be greater than 0"),
        ({"rescue": {"enabel": False}}, "algo.care: rescue: unknown key(s) enabel; allowed: "),
        ({"rescue": "off"}, "algo.care: rescue must be a mapping of enable, delta"),
        ({"K": 4, "M": 2}, "algo.care: CareConfig.M=2 must be >= K=4"),
        ({"k": 4}, "algo.care.k: unknown key"),
    ],
)
def test_a_bad_care_setting_names_its_yaml_path(care, named):
    with pytest.raises(ConfigError) as error:
        config_from_dict({"algo": {"care": care}}, source="run.yaml")
    assert named in str(error.value)


def test_the_loss_section_is_the_policy_loss_config_the_loss_takes():
    from care.algo.losses import PolicyLossConfig

    cfg = config_from_dict({"loss": {"clip_low": 0.1, "norm_length": 512}})
    assert type(cfg.loss) is PolicyLossConfig
    assert cfg.loss == PolicyLossConfig(clip_low=0.1, norm_length=512)
    with pytest.raises(ConfigError, match=r"loss\.dual_clip: Input should be greater than 1"):
        config_from_dict({"loss": {"dual_clip": 0.5}})


def test_a_checkpoint_from_before_the_algorithms_classes_became_sections_resumes():
    # The settings the loss and the tiny model took as arguments only, before their classes
    # became the config's sections.
    checkpoint = _config().to_dict()
    del checkpoint["loss"]["norm_length"], checkpoint["loss"]["log_ratio_clamp"]
    del checkpoint["model"]["tiny"]["vision_num_heads"]
    del checkpoint["model"]["tiny"]["initializer_range"]
    changes = resume_config_changes(checkpoint, _config(), checkpoint_step=2)
    assert [(c.field, c.new, c.added) for c in changes] == [
        ("model.tiny.vision_num_heads", 2, True),
        ("model.tiny.initializer_range", 0.02, True),
        ("loss.norm_length", None, True),
        ("loss.log_ratio_clamp", 20.0, True),
    ]
    with pytest.raises(ConfigError, match=r"model\.tiny\.initializer_range: None → 0\.2"):
        resume_config_changes(
            checkpoint, _config(model={"tiny": {"initializer_range": 0.2}}), checkpoint_step=2
        )


def test_the_trainer_uses_the_configs_own_objects(data_dir, tmp_path):
    from care.train.trainer import Trainer

    cfg = config_from_dict(
        tiny_config(data_dir, tmp_path, "dr_grpo", algo={"estimator": "dr_grpo"})
    )
    trainer = Trainer(cfg, progress=False)
    assert trainer.care_cfg is cfg.algo.care
    # Dr. GRPO's constant divisor: rollout.max_new_tokens (8 in tiny_config), the longest
    # response a rollout may have, unless the config names one.
    assert trainer.loss_cfg == cfg.loss.model_copy(update={"norm_length": 8})
    named = config_from_dict(
        tiny_config(
            data_dir,
            tmp_path,
            "dr_grpo_256",
            algo={"estimator": "dr_grpo"},
            loss={"norm_length": 256},
        )
    )
    assert Trainer(named, progress=False).loss_cfg is named.loss


def test_the_tiny_section_is_the_shape_build_tiny_vlm_takes():
    from care.models.tiny_config import TinyVLMConfig

    cfg = config_from_dict({"model": {"tiny": {"hidden_size": 32, "intermediate_size": 64}}})
    assert cfg.model.tiny == TinyVLMConfig(hidden_size=32, intermediate_size=64)
    with pytest.raises(ConfigError) as error:
        config_from_dict({"model": {"tiny": {"hidden_size": 60, "num_heads": 8}}})
    assert "model.tiny: hidden_size (60) must be divisible by num_heads (8)" in str(error.value)
    with pytest.raises(ConfigError, match=r"model\.tiny\.num_layers: Input should be greater"):
        config_from_dict({"model": {"tiny": {"num_layers": 0}}})
