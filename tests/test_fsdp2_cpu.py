"""FSDP2 training with two CPU processes (gloo), through accelerate's FSDP2 preparation.

accelerate runs FSDP on GPUs only, but its FSDP2 preparation works on CPU processes once its
state says FSDP (``care.train.fsdp2``), so the real trainer runs sharded here: every decoder
layer and vision block is its own shard unit, as in ``configs/accelerate/fsdp_*.yaml``. One
launch per estimator (``tests/fsdp_run.py``) trains two steps with a checkpoint after each,
resumes from step 1, and starts the vLLM engine (a recording stand-in) from the sharded policy.

What the launches catch (each failed before its fix):

* the first rollout crashed: transformers' ``generate`` ran the image encoder before any forward
  through the whole model, so a vision block became FSDP root;
* ``generate`` under FSDP was a collective (``synced_gpus``): processes that generate a
  different number of times (here ``1 + rank`` real calls per engine call) hung;
* DAPO refills advanced each process's sampler on its own: prompts went to two processes or to
  none, and the checkpoint kept only the main process's cursor;
* the vLLM engine of an in-code policy found no ``config.json`` on process 1 (``save_pretrained``
  writes on rank 0 only), and every process's engine would have started on GPU 0.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from fsdp_run import ROOT, record_run, torchrun
from safetensors.torch import load_file
from tiny_run import tiny_config

from care.train.sampler import PromptSampler

N_TRAIN = 12
PROMPTS_PER_STEP = 4
SEED = 5
# Positions in the first epoch's prompt order whose groups are mixed (one right, three wrong).
CARE_MIXED = (0, 2, 3, 4, 6)
# DAPO: one process draws p0..p3 and keeps p1, refills from p4..p7 (keeps p4, p5) and from
# p8..p11 (keeps p8): 4 groups after 2 rounds. Two processes: process 0 gets p0, p2 (none
# varied) and process 1 p1, p3; after round 1 process 1 is full (p1, p5) and process 0 still
# needs a group, so only process 0 samples round 2 — the same 4 groups, in the same updates.
DAPO_MIXED = (1, 4, 5, 8)


def _epoch_order() -> list[int]:
    return PromptSampler(N_TRAIN, seed=SEED).next_batch(N_TRAIN)


def _config(data_dir: Path, out_dir: Path, name: str, estimator: str) -> Path:
    cfg = tiny_config(
        data_dir,
        out_dir,
        name,
        algo={"estimator": estimator},
        # A huge clip threshold leaves the gradients as computed, so they compare directly.
        optim={"lr": 1e-3, "grad_clip": 1e6},
        train={
            "steps": 2,
            "prompts_per_step": PROMPTS_PER_STEP,
            "mini_batch_prompts": 2,
            "micro_batch_rows": 4,
            "save_every": 1,
            "device": "cpu",
        },
    )
    path = out_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _hash(params: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(params):
        digest.update(name.encode())
        digest.update(params[name].float().numpy().tobytes())
    return digest.hexdigest()


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _steps(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL log without their wall-clock fields."""
    return [
        {k: v for k, v in record.items() if k != "time" and not k.startswith("time/")}
        for record in _records(path)
    ]


SCENARIOS = {"care": CARE_MIXED, "dapo": DAPO_MIXED}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from care.data.synth import write_synthetic_dataset

    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, seed=3, n_train=N_TRAIN, n_test=4, image_size=56)
    return out


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory) -> dict[str, dict]:
    """Both estimators' two-process FSDP2 runs (one launch) and their one-process references."""
    order = _epoch_order()
    arguments, found = [], {}
    for estimator, positions in SCENARIOS.items():
        out = tmp_path_factory.mktemp(f"fsdp_{estimator}")
        mixed = sorted(order[k] for k in positions)
        two_config = _config(data_dir, out, "two", estimator)
        arguments += [str(two_config), str(out / "two_rec"), json.dumps(mixed)]
        found[estimator] = {"out": out, "mixed": mixed}
    torchrun(ROOT / "tests" / "fsdp_run.py", *arguments)
    for estimator, run in found.items():
        out = run["out"]
        one_config = _config(data_dir, out, "one", estimator)
        run["one"] = record_run(one_config, out / "one_rec", set(run["mixed"]), fsdp=False)
        run["ranks"] = [
            torch.load(out / "two_rec" / f"rank{r}.pt", weights_only=False) for r in (0, 1)
        ]
    return found


@pytest.fixture(scope="module")
def care_runs(runs) -> dict:
    return runs["care"]


@pytest.fixture(scope="module")
def dapo_runs(runs) -> dict:
    return runs["dapo"]


def _assert_one_process_gradient(runs: dict) -> None:
    ranks, one = runs["ranks"], runs["one"]
    two_grads, one_grads = ranks[0]["first_grads"], one["first_grads"]
    assert two_grads.keys() == one_grads.keys() and len(one_grads) > 10
    for name in one_grads:
        torch.testing.assert_close(two_grads[name], one_grads[name], rtol=1e-4, atol=1e-7)
    norm = torch.sqrt(sum(g.double().pow(2).sum() for g in one_grads.values()))
    assert float(norm) > 1e-3  # the comparison is about a gradient that is not zero


def _assert_checkpoint_and_resume(runs: dict) -> None:
    ranks, out = runs["ranks"], runs["out"]
    # Whole weights agree on both processes, and the main process saved exactly those.
    assert _hash(ranks[0]["params"]) == _hash(ranks[1]["params"])
    saved = load_file(out / "two_rec" / "straight_step_2" / "model.safetensors")
    for name, value in ranks[0]["params"].items():
        if name in saved:
            assert torch.equal(saved[name], value), name
    assert len(saved) >= len(ranks[0]["params"]) - 1  # a tied head may be stored once
    # Resuming from the step-1 checkpoint trains step 2 to the same bits and the same records.
    for rank in ranks:
        assert _hash(rank["resumed_params"]) == _hash(rank["params"])
    resumed = load_file(out / "two" / "checkpoints" / "step_2" / "model.safetensors")
    assert resumed.keys() == saved.keys()
    assert all(torch.equal(resumed[name], saved[name]) for name in saved)
    for name in ("steps.jsonl", "groups.jsonl"):
        assert _steps(out / "two" / name) == _steps(out / "two_rec" / f"straight_{name}")


@pytest.mark.slow
def test_fsdp2_care_with_rgr_matches_one_process_and_resumes_bit_identically(care_runs):
    ranks, one = care_runs["ranks"], care_runs["one"]
    assert [r["world"] for r in ranks] == [2, 2] and one["world"] == 1
    # The weights really were sharded, and the processes called generate() 1 and 2 times per
    # engine call: without synced_gpus=False they would have waited for each other forever.
    assert all(r["sharded_params"] > 10 for r in ranks) and one["sharded_params"] == 0
    assert [r["real_generate_calls"] for r in ranks] == [
        r["engine_calls"] * (1 + r["rank"]) for r in ranks
    ]
    assert ranks[0]["real_generate_calls"] != ranks[1]["real_generate_calls"]
    _assert_one_process_gradient(care_runs)
    _assert_checkpoint_and_resume(care_runs)
    two_steps = _steps(care_runs["out"] / "two_rec" / "straight_steps.jsonl")
    one_steps = _steps(care_runs["out"] / "one" / "steps.jsonl")
    assert [s["rgr/triggered"] for s in two_steps] == [s["rgr/triggered"] for s in one_steps]
    assert one_steps[0]["rgr/triggered"] == 3 and one_steps[1]["rgr/triggered"] == 2
    for key in ("loss/pg", "loss/kl", "entropy", "acc/mean"):
        assert two_steps[0][key] == pytest.approx(one_steps[0][key], rel=1e-4, abs=1e-7), key


@pytest.mark.slow
def test_fsdp2_dapo_refills_keep_every_process_on_one_prompt_cursor(dapo_runs):
    ranks, one = dapo_runs["ranks"], dapo_runs["one"]
    # Process 0 needed two refill rounds, process 1 one: both still drew both rounds' prompts,
    # so their cursors (and the checkpoint's) equal one process's after every step.
    assert ranks[0]["samplers"] == ranks[1]["samplers"] == one["samplers"]
    assert ranks[0]["samplers"][1] == {"epoch": 1, "position": 0}
    assert ranks[0]["resumed_samplers"] == {2: ranks[0]["samplers"][2]}
    state = torch.load(
        dapo_runs["out"] / "two_rec" / "straight_step_2" / "trainer_state.pt", weights_only=False
    )
    assert state["sampler"] == ranks[1]["samplers"][2]

    two_steps = _steps(dapo_runs["out"] / "two_rec" / "straight_steps.jsonl")
    one_steps = _steps(dapo_runs["out"] / "one" / "steps.jsonl")
    groups = _records(dapo_runs["out"] / "two_rec" / "straight_groups.jsonl")
    one_groups = _records(dapo_runs["out"] / "one" / "groups.jsonl")
    step1 = [g["prompt_id"] for g in groups if g["step"] == 1]
    assert len(step1) == len(set(step1)) == 4  # no prompt trained twice
    assert set(step1) == {g["prompt_id"] for g in one_groups if g["step"] == 1}
    first = two_steps[0]
    assert first["dapo/kept_groups"] == one_steps[0]["dapo/kept_groups"] == 4.0
    assert first["dapo/refill_rounds"] == one_steps[0]["dapo/refill_rounds"] == 2.0
    # One process samples all 12 prompts; two sample 10 and pass over process 1's share of
    # round 2 (2 prompts), which one process would have sampled and dropped.
    assert (one_steps[0]["dapo/drawn_groups"], one_steps[0]["dapo/passed_prompts"]) == (12, 0)
    assert (first["dapo/drawn_groups"], first["dapo/passed_prompts"]) == (10, 2)
    assert ranks[0]["real_generate_calls"] != ranks[1]["real_generate_calls"]
    _assert_one_process_gradient(dapo_runs)
    _assert_checkpoint_and_resume(dapo_runs)


@pytest.mark.slow
def test_vllm_engine_of_a_sharded_in_code_policy_starts_on_every_process(care_runs):
    from care.config import load_config
    from care.rollout.vllm import sync_unit
    from care.train.policy_setup import context_token_budget

    cfg = load_config(care_runs["out"] / "two.yaml", [])
    folders = set()
    for rank in care_runs["ranks"]:
        vllm = rank["vllm"]
        folders.add(vllm["folder"])
        # Every process wrote its own folder (save_pretrained writes on rank 0 only) ...
        assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= set(
            vllm["files"]
        )
        # ... holding the whole weights of the sharded policy (the tied head once).
        params = rank["params"]
        assert "lm_head.weight" not in params  # tied to the input embeddings
        assert set(vllm["saved"]) == set(params)
        assert all(torch.equal(vllm["saved"][name], params[name]) for name in vllm["saved"])
        # Its engine joins the job through vLLM's external launcher, on the GPU of LOCAL_RANK.
        options = vllm["options"]
        assert options["distributed_executor_backend"] == "external_launcher"
        assert vllm["env"] == {
            "RANK": str(rank["rank"]),
            "LOCAL_RANK": str(rank["rank"]),
            "WORLD_SIZE": "2",
        }
        # The memory settings reach vLLM: the tiny processor's pixel budget, one image per
        # prompt, the longest context of the run (prompt + response + RGR repair).
        assert options["mm_processor_kwargs"] == {"min_pixels": 56 * 56, "max_pixels": 56 * 56}
        assert options["limit_mm_per_prompt"] == {"image": 1}
        assert options["max_model_len"] == context_token_budget(cfg) == 1024 + 8 + 64 + 8
        assert options["gpu_memory_utilization"] == 0.4
        # A sync of the sharded policy gathers and loads it in chunks of whole blocks.
        chunks = vllm["reload_chunks"]
        assert len(chunks) > 3
        synced = sorted(name for chunk in chunks for name in chunk)
        assert synced == sorted([*params, "lm_head.weight"])
        units = [[sync_unit(name) for name in chunk] for chunk in chunks]
        for earlier, later in zip(units, units[1:], strict=False):
            assert not set(earlier) & set(later)  # no block split across chunks
        assert (vllm["weight_version"], vllm["weight_version_after_sync"]) == (1, 2)
    assert len(folders) == 2


@pytest.mark.slow
def test_fsdp2_resume_keeps_a_parameter_without_gradient_without_optimizer_state(care_runs):
    # torch's whole-state loader refuses such a checkpoint ("Missing optimizer state for
    # parameter ..."), and with strict=False it would give the parameter a fresh state whose
    # step count then differs from the uninterrupted run's.
    for rank in care_runs["ranks"]:
        check = rank["unused_parameter_resume"]
        assert check["states_after_load"] == 2 and check["bit_identical"]
    assert care_runs["ranks"][0]["unused_parameter_resume"]["saved_states"] == [
        "first.bias",
        "first.weight",
    ]


@pytest.mark.slow
def test_transformers_engine_refuses_sharded_weights_instead_of_hanging(care_runs):
    for rank in care_runs["ranks"]:
        assert "FSDP-sharded" in rank["sharded_generate"]
