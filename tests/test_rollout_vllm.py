"""The vLLM rollout engine.

Two halves:

* Unit tests of everything that needs no vLLM: weight-sync bookkeeping, request building,
  sampling settings, output conversion, suppression/stop ids, the install error.
* ``@pytest.mark.vllm`` tests that run vLLM for real. They need a Python with vLLM (default
  ``.venv-vllm/bin/python``, built by ``make vllm-env``; override with ``CARE_VLLM_PYTHON``) and
  are skipped, saying so, without one. They start this file as a script under that Python
  (``python tests/test_rollout_vllm.py OUT_DIR``), which builds a tiny text-only Qwen2 model,
  runs the engine and writes the measured numbers to JSON; the tests assert on those numbers.
  The CPU build of vLLM cannot load Qwen2.5-VL (see docs/vllm.md), hence the text-only model.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from PIL import Image

from care.models.tiny_config import TinyVLMConfig
from care.models.tokenizer import train_tiny_bpe_tokenizer
from care.models.vlm import pixel_budget, stop_token_ids, vision_token_ids
from care.rollout.base import RolloutRequest, SamplingParams
from care.rollout.vllm import (
    INSTALL_HINT,
    VLLMRolloutEngine,
    WeightSyncTracker,
    banned_token_texts,
    build_vllm_prompt,
    canonical_weight_name,
    convert_request_output,
    launcher_options,
    policy_state,
    request_seed,
    resolve_token_sets,
    sync_chunks,
    sync_unit,
    vllm_sampling_kwargs,
    write_policy_folder,
)

REPO = Path(__file__).resolve().parents[1]
PROMPT = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
IMAGE_PROMPT = (
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which shape?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tiny_bpe_tokenizer()


# ----------------------------------------------------------------------------------------------
# Weight-sync bookkeeping


def test_canonical_weight_name_strips_wrapper_components():
    assert (
        canonical_weight_name("module._orig_mod.model.layers.0.mlp.up_proj.weight")
        == "model.layers.0.mlp.up_proj.weight"
    )
    assert (
        canonical_weight_name("model.layers.1._checkpoint_wrapped_module.self_attn.q_proj.bias")
        == "model.layers.1.self_attn.q_proj.bias"
    )
    assert canonical_weight_name("lm_head.weight") == "lm_head.weight"


def test_sync_unit_is_the_block_or_the_module():
    assert sync_unit("model.language_model.layers.3.self_attn.q_proj.weight") == (
        "model.language_model.layers.3"
    )
    assert sync_unit("model.visual.blocks.0.attn.qkv.bias") == "model.visual.blocks.0"
    assert sync_unit("model.language_model.norm.weight") == "model.language_model.norm"
    assert sync_unit("lm_head.weight") == "lm_head"
    assert sync_unit("scale") == "scale"


class _TwoBlockModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.ModuleList(
            [
                torch.nn.ModuleDict(
                    {"q_proj": torch.nn.Linear(3, 3), "k_proj": torch.nn.Linear(3, 3)}
                )
                for _ in range(2)
            ]
        )
        self.lm_head = torch.nn.Linear(3, 5, bias=False)


def test_tracker_sends_everything_first_then_nothing_until_a_change():
    model = _TwoBlockModel()
    tracker = WeightSyncTracker()
    state = policy_state(model)
    assert tracker.plan(state) == list(state)
    assert len(state) == 9
    assert tracker.commit(state) == 1
    assert tracker.plan(policy_state(model)) == []
    assert tracker.version == 1


def test_tracker_widens_an_in_place_change_to_its_whole_block():
    model = _TwoBlockModel()
    tracker = WeightSyncTracker()
    tracker.commit(policy_state(model))
    with torch.no_grad():
        model.layers[1]["q_proj"].weight.add_(1.0)
    assert tracker.plan(policy_state(model)) == [
        "layers.1.q_proj.weight",
        "layers.1.q_proj.bias",
        "layers.1.k_proj.weight",
        "layers.1.k_proj.bias",
    ]


@pytest.mark.parametrize("foreach", [False, True])
def test_tracker_sees_every_tensor_an_optimizer_step_moved(foreach):
    model = _TwoBlockModel()
    model.layers[0].requires_grad_(False)  # a frozen block is never resent
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=0.1, foreach=foreach
    )
    tracker = WeightSyncTracker()
    tracker.commit(policy_state(model))
    model.lm_head(model.layers[1]["q_proj"](torch.ones(2, 3))).sum().backward()
    optimizer.step()
    planned = tracker.plan(policy_state(model))
    assert planned == [
        "layers.1.q_proj.weight",
        "layers.1.q_proj.bias",
        "layers.1.k_proj.weight",
        "layers.1.k_proj.bias",
        "lm_head.weight",
    ]


def test_tracker_resends_a_replaced_tensor_and_everything_after_reset():
    model = _TwoBlockModel()
    tracker = WeightSyncTracker()
    tracker.commit(policy_state(model))
    model.lm_head.weight = torch.nn.Parameter(torch.zeros(5, 3))
    assert tracker.plan(policy_state(model)) == ["lm_head.weight"]
    tracker.reset()
    assert len(tracker.plan(policy_state(model))) == 9


def test_policy_state_strips_a_ddp_style_wrapper_and_refuses_name_clashes():
    class Wrapper(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.module = inner

    model = _TwoBlockModel()
    state = policy_state(Wrapper(model))
    assert list(state) == list(model.state_dict())
    assert torch.equal(state["lm_head.weight"], model.lm_head.weight)

    class Clash(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm_head = torch.nn.Linear(1, 1, bias=False)
            self.module = torch.nn.ModuleDict({"lm_head": torch.nn.Linear(1, 1, bias=False)})

    with pytest.raises(ValueError, match="'lm_head.weight'"):
        policy_state(Clash())


# ----------------------------------------------------------------------------------------------
# Suppression and stop ids


def test_resolve_token_sets_defaults_to_vision_and_stop_tokens(tokenizer):
    suppressed, stops = resolve_token_sets(tokenizer, None, None)
    assert suppressed == vision_token_ids(tokenizer)
    assert len(suppressed) == 5
    assert stops == stop_token_ids(tokenizer)
    assert suppressed == sorted(suppressed)


def test_resolve_token_sets_accepts_the_processor_too(tokenizer):
    from care.models.vlm import build_processor

    assert resolve_token_sets(build_processor(tokenizer), None, [3]) == (
        vision_token_ids(tokenizer),
        [3],
    )


def test_resolve_token_sets_rejects_overlap_empty_stops_and_foreign_ids(tokenizer):
    stop = stop_token_ids(tokenizer)[0]
    with pytest.raises(ValueError, match="overlap"):
        resolve_token_sets(tokenizer, [stop], None)
    with pytest.raises(ValueError, match="at least one"):
        resolve_token_sets(tokenizer, None, [])
    with pytest.raises(ValueError, match="suppress_token_ids holds id 100000"):
        resolve_token_sets(tokenizer, [100000], None)


def test_banned_token_texts_round_trip_to_exactly_the_suppressed_ids(tokenizer):
    ids = vision_token_ids(tokenizer)
    texts = banned_token_texts(tokenizer, ids)
    assert sorted(texts) == sorted(
        ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
    )
    for text, token_id in zip(texts, ids, strict=True):
        assert tokenizer.encode(text, add_special_tokens=False) == [token_id]


def test_banned_token_texts_refuses_a_token_that_does_not_round_trip(tokenizer):
    # A byte-level token starting with a space marker re-tokenises into other ids.
    marked = next(
        token_id
        for token, token_id in tokenizer.get_vocab().items()
        if token.startswith("Ġ")
        and len(token) > 2
        and tokenizer.encode(token, add_special_tokens=False) != [token_id]
    )
    with pytest.raises(ValueError, match=f"suppressed token id {marked}"):
        banned_token_texts(tokenizer, [marked])


# ----------------------------------------------------------------------------------------------
# Sampling settings and requests


def test_request_seeds_are_disjoint_across_requests_and_samples():
    assert request_seed(7, 2, 8) == 7 * 1_000_003 + 16
    assert request_seed(None, 2, 8) is None
    seeds = {request_seed(3, r, 4) + k for r in range(5) for k in range(4)}
    assert len(seeds) == 20


def test_vllm_sampling_kwargs_map_every_setting():
    params = SamplingParams(temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=64, n=4, seed=1)
    kwargs = vllm_sampling_kwargs(
        params, request_index=1, stop_ids=[5, 9], banned_texts=["<|image_pad|>"]
    )
    assert kwargs["n"] == 4
    assert kwargs["temperature"] == 0.7
    assert kwargs["top_p"] == 0.9
    assert kwargs["top_k"] == -1
    assert kwargs["max_tokens"] == 64
    assert kwargs["seed"] == 1_000_003 + 4
    assert kwargs["logprobs"] == 0
    assert kwargs["stop_token_ids"] == [5, 9]
    assert kwargs["ignore_eos"] is True
    assert kwargs["bad_words"] == ["<|image_pad|>"]
    assert kwargs["detokenize"] is False
    assert kwargs["repetition_penalty"] == 1.0
    greedy = vllm_sampling_kwargs(
        SamplingParams(temperature=0.0, top_k=5), request_index=0, stop_ids=[5], banned_texts=[]
    )
    assert greedy["temperature"] == 0.0
    assert greedy["top_k"] == 5
    assert greedy["seed"] is None
    assert greedy["bad_words"] is None


def test_build_vllm_prompt_appends_separately_tokenised_prefix(tokenizer):
    request = RolloutRequest(PROMPT, assistant_prefix="\nLet me re-check.")
    prompt, prefix_ids = build_vllm_prompt(tokenizer, request)
    prompt_ids = tokenizer.encode(PROMPT, add_special_tokens=False)
    assert prefix_ids == tokenizer.encode("\nLet me re-check.", add_special_tokens=False)
    assert prompt == {"prompt_token_ids": prompt_ids + prefix_ids}
    assert len(prefix_ids) > 0


def test_build_vllm_prompt_passes_images_and_checks_placeholders(tokenizer):
    image = Image.new("RGB", (56, 56), (200, 10, 10))
    prompt, prefix_ids = build_vllm_prompt(tokenizer, RolloutRequest(IMAGE_PROMPT, [image]))
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert prompt["prompt_token_ids"].count(image_pad) == 1
    assert prompt["multi_modal_data"]["image"] == [image]
    assert prefix_ids == []
    with pytest.raises(ValueError, match="1 image placeholder"):
        build_vllm_prompt(tokenizer, RolloutRequest(IMAGE_PROMPT, [image, image]))


# ----------------------------------------------------------------------------------------------
# Output conversion


def _completion(index: int, token_ids: list[int], logprobs: list[float]) -> SimpleNamespace:
    entries = [
        {token: SimpleNamespace(logprob=value, rank=1)}
        for token, value in zip(token_ids, logprobs, strict=True)
    ]
    return SimpleNamespace(index=index, token_ids=token_ids, logprobs=entries)


def test_convert_request_output_reads_ids_logprobs_and_finish_reasons(tokenizer):
    stop = stop_token_ids(tokenizer)
    hello = tokenizer.encode("hello", add_special_tokens=False)
    request_output = SimpleNamespace(
        prompt_token_ids=[1, 2, 3, 40, 41],
        outputs=[
            _completion(1, [*hello, 7], [-0.5] * len(hello) + [-2.0]),
            _completion(0, [*hello, stop[0]], [-0.25] * len(hello) + [-0.125]),
        ],
    )
    outputs = convert_request_output(
        request_output, prefix_ids=[40, 41], n=2, stop_ids=stop, tokenizer=tokenizer
    )
    first, second = outputs
    assert first.response_ids == [*hello, stop[0]]
    assert first.logprobs == [-0.25] * len(hello) + [-0.125]
    assert first.finish_reason == "stop"
    assert first.text == "hello"
    assert first.prompt_ids == [1, 2, 3, 40, 41]
    assert first.prefix_ids == [40, 41]
    assert second.finish_reason == "length"
    assert second.logprobs[-1] == -2.0


def test_convert_request_output_refuses_inconsistent_vllm_answers(tokenizer):
    stop = stop_token_ids(tokenizer)
    good = SimpleNamespace(prompt_token_ids=[1, 2], outputs=[_completion(0, [5], [-1.0])])
    with pytest.raises(RuntimeError, match="1 completions for a request, not 2"):
        convert_request_output(good, prefix_ids=[], n=2, stop_ids=stop, tokenizer=tokenizer)
    with pytest.raises(RuntimeError, match="assistant-prefix"):
        convert_request_output(good, prefix_ids=[9], n=1, stop_ids=stop, tokenizer=tokenizer)
    wrong_token = SimpleNamespace(
        prompt_token_ids=[1],
        outputs=[SimpleNamespace(index=0, token_ids=[5], logprobs=[{6: -1.0}])],
    )
    with pytest.raises(RuntimeError, match="sampled token 5"):
        convert_request_output(wrong_token, prefix_ids=[], n=1, stop_ids=stop, tokenizer=tokenizer)
    no_logprobs = SimpleNamespace(
        prompt_token_ids=[1], outputs=[SimpleNamespace(index=0, token_ids=[5], logprobs=None)]
    )
    with pytest.raises(RuntimeError, match="logprobs=0"):
        convert_request_output(no_logprobs, prefix_ids=[], n=1, stop_ids=stop, tokenizer=tokenizer)


# ----------------------------------------------------------------------------------------------
# Construction without vLLM, and selection by config


def test_engine_without_vllm_raises_import_error_naming_the_install(
    tmp_path, tokenizer, monkeypatch
):
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError) as raised:
        VLLMRolloutEngine(tmp_path, tokenizer)
    assert "pip install vllm" in str(raised.value)
    assert "docs/vllm.md" in str(raised.value)
    assert str(raised.value) == INSTALL_HINT


def test_engine_arguments_are_checked_before_vllm_is_imported(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        VLLMRolloutEngine(tmp_path, tokenizer)
    (tmp_path / "config.json").write_text("{}")
    for kwargs, message in (
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": "0.5"}, "gpu_memory_utilization"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
        ({"dtype": "int8"}, "dtype"),
        ({"max_model_len": 0}, "max_model_len"),
        ({"sleep_level": 3}, "sleep_level"),
        ({"limit_images_per_prompt": -1}, "limit_images_per_prompt"),
        ({"sync_chunk_bytes": 0}, "sync_chunk_bytes"),
    ):
        with pytest.raises(ValueError, match=message):
            VLLMRolloutEngine(tmp_path, tokenizer, **kwargs)


def test_config_selects_the_vllm_engine(monkeypatch):
    from care.config import RolloutSection
    from care.train.policy_setup import make_engine

    section = RolloutSection(engine="vllm")
    assert section.engine == "vllm"
    with pytest.raises(ValueError, match="engine"):
        RolloutSection(engine="sglang")
    chosen: dict[str, Any] = {}

    def fake_from_policy(model, processor, **kwargs):
        chosen.update(model=model, processor=processor, **kwargs)
        return "vllm engine"

    monkeypatch.setattr(VLLMRolloutEngine, "from_policy", staticmethod(fake_from_policy))
    assert make_engine("policy", "processor", section, max_model_len=5000) == "vllm engine"
    assert chosen == {
        "model": "policy",
        "processor": "processor",
        "sleep_after_generate": True,
        "gpu_memory_utilization": 0.4,
        "max_model_len": 5000,
        "limit_images_per_prompt": 1,
        "sync_chunk_bytes": 1024 * 2**20,
    }
    # An explicit rollout.vllm.max_model_len wins over the run's derived budget.
    section = RolloutSection(engine="vllm", vllm={"max_model_len": 3000, "sync_chunk_mb": 8})
    make_engine("policy", "processor", section, max_model_len=5000)
    assert (chosen["max_model_len"], chosen["sync_chunk_bytes"]) == (3000, 8 * 2**20)


# ----------------------------------------------------------------------------------------------
# Several training processes, memory settings, chunked syncs (a recording stand-in for vLLM)

LAUNCHER = {
    "RANK": "1",
    "LOCAL_RANK": "1",
    "WORLD_SIZE": "2",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29555",
}


def test_one_process_keeps_vllms_default_executor(monkeypatch):
    for name in LAUNCHER:
        monkeypatch.delenv(name, raising=False)
    assert launcher_options(1) == {}
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert launcher_options(1) == {}


def test_a_multi_process_job_uses_the_external_launcher_or_says_what_is_missing(monkeypatch):
    for name, value in LAUNCHER.items():
        monkeypatch.setenv(name, value)
    # Without it every process's engine would start on GPU 0; vLLM's external launcher reads
    # LOCAL_RANK and puts this process's engine on GPU 1.
    assert launcher_options(1) == {"distributed_executor_backend": "external_launcher"}
    with pytest.raises(ValueError, match="tensor_parallel_size=2 with 2 training processes"):
        launcher_options(2)
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.delenv("MASTER_PORT")
    with pytest.raises(ValueError, match="LOCAL_RANK, MASTER_PORT are not set"):
        launcher_options(1)


@pytest.fixture
def recording_vllm(monkeypatch) -> list[dict[str, Any]]:
    from tiny_run import recording_vllm_modules

    calls: list[dict[str, Any]] = []
    for name, module in recording_vllm_modules(calls).items():
        monkeypatch.setitem(sys.modules, name, module)
    return calls


@pytest.fixture(scope="module")
def tiny_policy(tokenizer):
    from care.models.vlm import build_tiny_vlm

    return build_tiny_vlm(
        tokenizer,
        shape=TinyVLMConfig(hidden_size=32, intermediate_size=64),
        image_size=56,
        seed=0,
    )


def test_engine_settings_reach_vllm_under_a_multi_process_job(
    tmp_path, tiny_policy, recording_vllm, monkeypatch
):
    for name, value in LAUNCHER.items():
        monkeypatch.setenv(name, value)
    model, processor = tiny_policy
    engine = VLLMRolloutEngine.from_policy(
        model,
        processor,
        folder=tmp_path / "policy",
        gpu_memory_utilization=0.3,
        max_model_len=6208,
        limit_images_per_prompt=2,
    )
    options = recording_vllm[0]["options"]
    assert options["distributed_executor_backend"] == "external_launcher"
    assert recording_vllm[0]["env"] == {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}
    assert (options["gpu_memory_utilization"], options["max_model_len"]) == (0.3, 6208)
    assert options["limit_mm_per_prompt"] == {"image": 2}
    # vLLM resizes images with the trainer's pixel budget, so both see the same vision tokens.
    assert options["mm_processor_kwargs"] == {"min_pixels": 56 * 56, "max_pixels": 56 * 56}
    assert engine.weight_version == 1 and recording_vllm[0]["reload_chunks"] == []


def test_a_policy_built_in_code_is_written_whole_with_its_head_tied(tmp_path, tiny_policy):
    from care.models.vlm import load_policy, save_policy

    model, processor = tiny_policy
    folder = write_policy_folder(model, processor, tmp_path / "policy")
    assert {"config.json", "generation_config.json", "model.safetensors"} <= {
        path.name for path in folder.iterdir()
    }
    # The config says what save_pretrained's says (vLLM picks the model class by it).
    reference = save_policy(model, processor, tmp_path / "save_pretrained")
    written = json.loads((folder / "config.json").read_text())
    assert written == json.loads((reference / "config.json").read_text())
    assert written["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    loaded, loaded_processor = load_policy(folder, dtype="float32")
    assert loaded.lm_head.weight is loaded.get_input_embeddings().weight
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert (
        pixel_budget(loaded_processor)
        == pixel_budget(processor)
        == {
            "min_pixels": 56 * 56,
            "max_pixels": 56 * 56,
        }
    )


def test_sync_chunks_hold_whole_blocks_within_the_byte_limit():
    state = {
        "layers.0.a": torch.zeros(2),  # block 0: 8 + 8 bytes
        "layers.0.b": torch.zeros(2),
        "layers.1.a": torch.zeros(4),  # block 1: 16 bytes
        "norm.weight": torch.zeros(1),  # 4 bytes
        "lm_head.weight": torch.zeros(8),  # 32 bytes: over the limit, travels alone
    }
    assert sync_chunks(state, list(state), max_bytes=24) == [
        ["layers.0.a", "layers.0.b"],
        ["layers.1.a", "norm.weight"],
        ["lm_head.weight"],
    ]
    assert sync_chunks(state, ["layers.1.a"], max_bytes=1) == [["layers.1.a"]]
    with pytest.raises(ValueError, match="max_bytes"):
        sync_chunks(state, list(state), max_bytes=0)


def test_sync_sends_changed_blocks_in_bounded_chunks(tmp_path, tokenizer, recording_vllm):
    from care.models.vlm import build_tiny_vlm

    model, processor = build_tiny_vlm(
        tokenizer, shape=TinyVLMConfig(hidden_size=32, intermediate_size=64), seed=1
    )
    state = model.state_dict()
    blocks = [[n for n in state if f".layers.{k}." in n] for k in (0, 1)]
    block_bytes = sum(state[n].numel() * state[n].element_size() for n in blocks[0])
    # Room for one decoder layer but not two: each changed layer is loaded on its own.
    engine = VLLMRolloutEngine.from_policy(
        model, processor, folder=tmp_path / "policy", sync_chunk_bytes=block_bytes * 3 // 2
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".layers." in name:
                param.add_(1.0)
    engine.sync_weights(model)
    assert recording_vllm[0]["reload_chunks"] == blocks
    assert engine.weight_version == 2


def test_one_factory_builds_both_engines_from_a_policy_or_a_checkpoint(tmp_path, monkeypatch):
    from care.models.vlm import build_tiny_vlm, save_policy
    from care.rollout import factory
    from care.rollout.hf import HFRolloutEngine

    model, processor = build_tiny_vlm(train_tiny_bpe_tokenizer(), seed=0)
    engine, same = factory.make_engine("hf", policy=(model, processor), batch_size=3)
    assert isinstance(engine, HFRolloutEngine) and engine.model is model and same is processor
    assert engine.batch_size == 3
    folder = save_policy(model, processor, tmp_path / "ckpt")
    loaded, loaded_processor = factory.make_engine("hf", checkpoint=folder, batch_size=2)
    assert isinstance(loaded, HFRolloutEngine) and loaded.model is not model
    torch.testing.assert_close(
        loaded.model.get_input_embeddings().weight, model.get_input_embeddings().weight
    )
    assert loaded_processor.tokenizer.get_vocab() == processor.tokenizer.get_vocab()

    built: dict[str, Any] = {}

    def fake_engine(path, processor, **kwargs):
        built.update(path=path, processor=processor, **kwargs)
        return "vllm engine"

    # A checkpoint engine for evaluation: vLLM loads the folder, nothing else loads the weights.
    monkeypatch.setattr("care.rollout.vllm.VLLMRolloutEngine", fake_engine)
    engine, _ = factory.make_engine("vllm", checkpoint=folder, batch_size=16, dtype="bfloat16")
    assert engine == "vllm engine" and built["path"] == folder
    assert (built["gpu_memory_utilization"], built["dtype"]) == (0.9, "bfloat16")
    assert built["llm_kwargs"] == {"max_num_seqs": 16} and built["sleep_after_generate"] is False

    with pytest.raises(ValueError, match=r"rollout engine must be one of \['hf', 'vllm'\]"):
        factory.make_engine("sglang", checkpoint=folder)
    with pytest.raises(ValueError, match="exactly one of policy"):
        factory.make_engine("hf")
    with pytest.raises(ValueError, match="exactly one of policy"):
        factory.make_engine("hf", policy=(model, processor), checkpoint=folder)
    with pytest.raises(ValueError, match=r"vllm_kwargs \['max_model_len'\] given for the hf"):
        factory.make_engine("hf", policy=(model, processor), vllm_kwargs={"max_model_len": 8})


# ----------------------------------------------------------------------------------------------
# Real vLLM (a separate environment; see the module docstring)


def _vllm_python() -> Path | None:
    configured = os.environ.get("CARE_VLLM_PYTHON")
    candidate = Path(configured) if configured else REPO / ".venv-vllm" / "bin" / "python"
    return candidate if candidate.is_file() else None


@pytest.fixture(scope="module")
def real_vllm(tmp_path_factory) -> dict[str, Any]:
    python = _vllm_python()
    if python is None:
        pytest.skip(
            "no vLLM environment: `make vllm-env` builds .venv-vllm (or set CARE_VLLM_PYTHON "
            "to a Python with vLLM)"
        )
    out = tmp_path_factory.mktemp("real_vllm")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    finished = subprocess.run(
        [str(python), str(Path(__file__).resolve()), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if finished.returncode != 0:
        pytest.fail(f"the vLLM run failed:\n{finished.stderr[-4000:]}")
    return json.loads((out / "results.json").read_text())


@pytest.mark.vllm
@pytest.mark.slow
def test_real_vllm_returns_processed_logprobs_equal_to_a_transformers_forward(real_vllm):
    sampled = real_vllm["sampled"]
    assert real_vllm["sleep_enabled"] is False  # vLLM has no sleep mode on CPU
    assert sampled["samples_per_request"] == [3, 3]
    assert sampled["response_lengths_ok"] is True
    # Temperature 0.7: processed log-probs (tempered, suppressed) match transformers' to 1e-4;
    # the raw (untempered) distribution differs by far more.
    assert sampled["max_error_vs_processed"] < 1e-4
    assert sampled["max_error_vs_raw"] > 0.05
    assert sampled["same_seed_same_ids"] is True
    assert sampled["distinct_samples"] >= 2


@pytest.mark.vllm
@pytest.mark.slow
def test_real_vllm_greedy_matches_transformers_argmax(real_vllm):
    greedy = real_vllm["greedy"]
    assert greedy["ids_equal"] is True
    assert greedy["max_error_vs_untempered"] < 1e-4


@pytest.mark.vllm
@pytest.mark.slow
def test_real_vllm_sync_loads_new_weights_and_bans_vision_tokens(real_vllm):
    synced = real_vllm["synced"]
    assert synced["version_before"] == 0
    assert synced["version_after_full_sync"] == 1
    assert synced["greedy_unchanged_by_full_sync"] is True
    assert synced["planned_after_lm_head_change"] == ["lm_head.weight"]
    assert synced["version_after"] == 2
    assert synced["version_after_unchanged_sync"] == 2
    # The synced head gives every vision token a logit of ±50·|h| and every other token 0:
    # with the vision tokens banned the rest is uniform, log-prob -log(361) for each token.
    assert synced["allowed_vocab"] == 361
    assert synced["vision_tokens_sampled"] == 0
    assert synced["tokens_sampled"] >= 4
    assert synced["max_logprob_error_vs_uniform"] < 1e-4
    assert synced["planned_restore"] == ["lm_head.weight"]
    assert synced["version_after_restore"] == 3
    assert synced["greedy_restored_after_partial_syncs"] is True


@pytest.mark.vllm
@pytest.mark.slow
def test_real_vllm_continues_an_assistant_prefix(real_vllm):
    prefixed = real_vllm["prefixed"]
    assert prefixed["prefix_ids_equal"] is True
    assert prefixed["prompt_ends_with_prefix"] is True
    assert prefixed["finish_reasons_consistent"] is True


# ----------------------------------------------------------------------------------------------
# The script half: runs under the vLLM environment's Python


def _tiny_text_policy(tokenizer: Any, folder: Path) -> torch.nn.Module:
    """A random Qwen2 causal LM over the tiny BPE (untied head), saved to `folder`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    vocabulary = tokenizer.get_vocab()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        eos_token_id=vocabulary["<|im_end|>"],
        pad_token_id=vocabulary["<|endoftext|>"],
        bos_token_id=None,
        initializer_range=0.2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config).eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return model


def _transformers_logprobs(
    model: torch.nn.Module,
    context: list[int],
    response: list[int],
    suppressed: list[int],
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(processed, raw) log-probs of `response` after `context`: processed = suppressed ids at
    -inf, divided by the temperature; raw = the model's untouched distribution."""
    ids = torch.tensor([context + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(context) - 1 : -1].float()
    chosen = torch.tensor(response)[:, None]
    raw = torch.log_softmax(logits, dim=-1).gather(-1, chosen).squeeze(-1)
    banned = logits.clone()
    banned[:, suppressed] = float("-inf")
    processed = torch.log_softmax(banned / max(temperature, 1e-12), dim=-1)
    return processed.gather(-1, chosen).squeeze(-1), raw


def run_real_vllm_checks(out: Path) -> dict[str, Any]:
    tokenizer = train_tiny_bpe_tokenizer()
    folder = out / "tiny_qwen2"
    policy = _tiny_text_policy(tokenizer, folder)
    engine = VLLMRolloutEngine(
        folder, tokenizer, dtype="float32", max_model_len=256, enforce_eager=True, seed=0
    )
    suppressed = engine.suppress_token_ids
    stops = set(engine.stop_token_ids)
    requests = [RolloutRequest(PROMPT), RolloutRequest("<|im_start|>user\nhi<|im_end|>\n")]
    results: dict[str, Any] = {"sleep_enabled": engine.sleep_enabled}

    params = SamplingParams(temperature=0.7, max_new_tokens=6, n=3, seed=11)
    first = engine.generate(requests, params)
    again = engine.generate(requests, params)
    processed_error = raw_error = 0.0
    for outputs in first:
        for sample in outputs:
            processed, raw = _transformers_logprobs(
                policy, sample.prompt_ids, sample.response_ids, suppressed, 0.7
            )
            vllm_values = torch.tensor(sample.logprobs)
            processed_error = max(processed_error, float((vllm_values - processed).abs().max()))
            raw_error = max(raw_error, float((vllm_values - raw).abs().max()))
    results["sampled"] = {
        "samples_per_request": [len(outputs) for outputs in first],
        "response_lengths_ok": all(
            len(s.logprobs) == len(s.response_ids) and 1 <= len(s.response_ids) <= 6
            for outputs in first
            for s in outputs
        ),
        "max_error_vs_processed": processed_error,
        "max_error_vs_raw": raw_error,
        "same_seed_same_ids": [[s.response_ids for s in o] for o in first]
        == [[s.response_ids for s in o] for o in again],
        "distinct_samples": len({tuple(s.response_ids) for s in first[0]}),
    }

    greedy = engine.generate(requests[:1], SamplingParams(temperature=0.0, max_new_tokens=5))[0][0]
    ids = tokenizer.encode(PROMPT, add_special_tokens=False)
    expected = []
    with torch.no_grad():
        for _ in range(len(greedy.response_ids)):
            logits = policy(input_ids=torch.tensor([ids + expected])).logits[0, -1].float()
            logits[suppressed] = float("-inf")
            expected.append(int(logits.argmax()))
    greedy_processed, _ = _transformers_logprobs(
        policy, greedy.prompt_ids, greedy.response_ids, suppressed, 1.0
    )
    results["greedy"] = {
        "ids_equal": greedy.response_ids == expected,
        "max_error_vs_untempered": float(
            (torch.tensor(greedy.logprobs) - greedy_processed).abs().max()
        ),
    }

    version_before = engine.weight_version
    engine.sync_weights(policy)  # nothing synced yet: every tensor goes, through vLLM's reload
    version_full = engine.weight_version
    greedy_after_full_sync = engine.generate(
        requests[:1], SamplingParams(temperature=0.0, max_new_tokens=5)
    )[0][0]
    vision = vision_token_ids(tokenizer)
    original_head = policy.lm_head.weight.detach().clone()
    with torch.no_grad():
        head = policy.lm_head.weight
        head.zero_()
        head[vision] = 50.0 * torch.randn(len(vision), head.shape[1]).sign()
    planned = engine.tracker.plan(policy_state(policy))
    engine.sync_weights(policy)
    version_after = engine.weight_version
    engine.sync_weights(policy)
    version_unchanged = engine.weight_version
    synced = engine.generate(
        requests[:1], SamplingParams(temperature=1.0, max_new_tokens=6, n=4, seed=5)
    )
    tokens = [token for sample in synced[0] for token in sample.response_ids]
    values = [value for sample in synced[0] for value in sample.logprobs]
    # Partial syncs leave the untouched layers as they were: put the old head back (only
    # lm_head travels again) and greedy decoding is what it was before any sync.
    with torch.no_grad():
        policy.lm_head.weight.copy_(original_head)
    planned_restore = engine.tracker.plan(policy_state(policy))
    engine.sync_weights(policy)
    greedy_after_restore = engine.generate(
        requests[:1], SamplingParams(temperature=0.0, max_new_tokens=5)
    )[0][0]
    results["synced"] = {
        "planned_restore": planned_restore,
        "version_after_restore": engine.weight_version,
        "greedy_restored_after_partial_syncs": greedy_after_restore.response_ids
        == greedy.response_ids,
        "version_before": version_before,
        "version_after_full_sync": version_full,
        "greedy_unchanged_by_full_sync": greedy_after_full_sync.response_ids == greedy.response_ids,
        "version_after": version_after,
        "version_after_unchanged_sync": version_unchanged,
        "planned_after_lm_head_change": planned,
        "vision_tokens_sampled": sum(token in vision for token in tokens),
        "tokens_sampled": len(tokens),
        "max_logprob_error_vs_uniform": max(
            abs(value + math.log(len(tokenizer) - len(suppressed))) for value in values
        ),
        "allowed_vocab": len(tokenizer) - len(suppressed),
    }

    prefix = "\nLet me check"
    prefixed = engine.generate(
        [RolloutRequest(PROMPT, assistant_prefix=prefix)],
        SamplingParams(temperature=1.0, max_new_tokens=4, n=2, seed=3),
    )[0]
    prefix_ids = tokenizer.encode(prefix, add_special_tokens=False)
    results["prefixed"] = {
        "prefix_ids_equal": all(s.prefix_ids == prefix_ids for s in prefixed),
        "prompt_ends_with_prefix": all(
            s.prompt_ids[-len(prefix_ids) :] == prefix_ids for s in prefixed
        ),
        "finish_reasons_consistent": all(
            (s.finish_reason == "stop") == (s.response_ids[-1] in stops) for s in prefixed
        ),
    }
    return results


if __name__ == "__main__":
    output_folder = Path(sys.argv[1])
    output_folder.mkdir(parents=True, exist_ok=True)
    measured = run_real_vllm_checks(output_folder)
    (output_folder / "results.json").write_text(json.dumps(measured, indent=2))
    print(json.dumps(measured, indent=2))
