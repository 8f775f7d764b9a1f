"""The lmms-eval harness end to end: the real ``python -m lmms_eval`` CLI runs ``care_vlm`` on the
fixture benchmarks, ``care eval`` writes, skips, redoes and fails as documented, and the results
table's numbers match hand computations.

The checkpoint is a "scripted" tiny Qwen2.5-VL: its decoder layers add nothing to the residual
stream and its token embeddings chain ``"\\n" → "Answer: B" → <|im_end|>``, so greedy decoding
answers "Answer: B" to every question. Its accuracy on a split is then the share of gold "B"
rows, which the tests count by hand from the fixture files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import torch
from fixtures.benchmarks import write_fixtures
from pydantic import ValidationError
from typer.testing import CliRunner

from care.cli import app
from care.models.tiny_config import TinyVLMConfig
from care.models.tokenizer import train_tiny_bpe_tokenizer
from care.models.vlm import build_tiny_vlm, save_policy
from care.prompts import SYSTEM_PROMPT, build_messages, render_prompt
from care.rollout.base import SamplingParams
from care.stats import wilson_interval
from evaluation.benchmarks import PAPER_BENCHMARKS
from evaluation.model import CareVLM, cut_at_stop_strings, resolve_sampling
from evaluation.results import (
    BenchmarkResult,
    build_table,
    load_results,
    mean_std,
    to_csv,
    to_markdown,
)
from evaluation.runner import (
    DEFAULT_INCLUDE_PATH,
    EvalError,
    EvalSettings,
    benchmarks_of,
    default_out_dir,
    lmms_eval_command,
)

SCRIPTED_REPLY = "Answer: B"
ROOT = Path(__file__).resolve().parents[1]


def scripted_vlm(reply: str):
    """A tiny VLM whose greedy reply to any prompt ending in "\\n" is `reply`, then <|im_end|>.

    With o_proj and down_proj zeroed, the last position's final hidden state is
    RMSNorm(embedding of the last token), and the tied output layer scores token j by
    ``E[j] · E[current]``. Chain token i gets ``3**i * (u_i + u_{i+1}) / sqrt(2)`` (u: unit
    vectors), so the next chain token scores 1.5× the current one and every other token ~0.
    """
    tokenizer = train_tiny_bpe_tokenizer()
    model, processor = build_tiny_vlm(
        tokenizer,
        shape=TinyVLMConfig(
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            num_kv_heads=1,
            intermediate_size=64,
            vision_hidden_size=16,
        ),
        image_size=56,
        seed=0,
    )
    text_model = model.model.language_model
    chain = [
        tokenizer("\n", add_special_tokens=False)["input_ids"][-1],
        *tokenizer(reply, add_special_tokens=False)["input_ids"],
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
    ]
    assert len(set(chain)) == len(chain) < text_model.config.hidden_size
    basis = torch.eye(text_model.config.hidden_size)
    with torch.no_grad():
        for layer in text_model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        for position, token in enumerate(chain):
            direction = (basis[position] + basis[position + 1]) / 2**0.5
            text_model.embed_tokens.weight[token] = 3.0**position * direction
    return model, processor


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("benchmarks")
    write_fixtures(root, rows_per_task=20, seed=0)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run") / "checkpoints" / "step_3"
    model, processor = scripted_vlm(SCRIPTED_REPLY)
    save_policy(model, processor, folder)
    return folder


@pytest.fixture(scope="module")
def care_vlm(checkpoint):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model only slows down when threads fight for the CPUs
    yield CareVLM(pretrained=str(checkpoint), batch_size=2, device="cpu", max_new_tokens=16)
    torch.set_num_threads(threads)


@pytest.fixture
def quiet_env(tmp_path, monkeypatch) -> dict[str, str]:
    """One torch thread (the shared CPUs thrash otherwise) and private HF caches."""
    settings = {
        "OMP_NUM_THREADS": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets"),
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CARE_SYNTH_DIR", raising=False)
    monkeypatch.delenv("CARE_DATA_ROOT", raising=False)
    return {**os.environ, **settings}


def synth_gold_b(data_root: Path, limit: int) -> int:
    rows = [json.loads(line) for line in (data_root / "care_synth" / "test.jsonl").open()]
    return sum(row["answer"] == "B" for row in rows[:limit])


# ---------------------------------------------------------------- the real lmms-eval CLI


@pytest.mark.slow
def test_lmms_eval_cli_runs_care_vlm_on_fixture_tasks(data_root, checkpoint, tmp_path, quiet_env):
    vision_file = data_root / "MMMU" / "MMMU_Pro" / "vision" / "test-00000-of-00001.parquet"
    vision_answers = pq.read_table(vision_file).column("answer").to_pylist()

    def discriminates(limit: int) -> bool:  # the scripted "B" is right on some items, not all
        vision_b = sum(answer == "B" for answer in vision_answers[:limit])
        return 0 < synth_gold_b(data_root, limit) < limit and 0 < vision_b < limit

    # the fewest items (at least 8) on which both accuracies discriminate, whatever the generator
    limit = next(n for n in range(8, len(vision_answers) + 1) if discriminates(n))
    vision_gold_b = sum(answer == "B" for answer in vision_answers[:limit])
    synth_b = synth_gold_b(data_root, limit)
    env = {
        **quiet_env,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "CARE_DATA_ROOT": str(data_root),
    }
    command = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "care_vlm",
        "--model_args",
        f"pretrained={checkpoint},max_new_tokens=16",
        "--tasks",
        "care_synth,care_mmmu_pro_vis",
        "--include_path",
        str(ROOT / "benchmarks_cfg"),
        "--batch_size",
        "4",
        "--limit",
        str(limit),
        "--log_samples",
        "--output_path",
        str(tmp_path / "out"),
    ]
    completed = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    (results_file,) = (tmp_path / "out").rglob("*_results.json")
    results = json.loads(results_file.read_text())
    assert results["results"]["care_synth"]["acc,none"] == pytest.approx(synth_b / limit)
    assert results["results"]["care_mmmu_pro_vis"]["acc,none"] == pytest.approx(
        vision_gold_b / limit
    )
    assert results["results"]["care_synth"]["fmt,none"] == 0.0  # no <think>/<answer> tags
    for task in ("care_synth", "care_mmmu_pro_vis"):
        (samples_file,) = results_file.parent.glob(f"*_samples_{task}.jsonl")
        samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
        assert len(samples) == limit
        assert {sample["filtered_resps"] for sample in samples} == {SCRIPTED_REPLY}
        assert {sample["extracted"] for sample in samples} == {"B"}
        assert [sample["acc"] for sample in samples] == [
            float(sample["target"] == "B") for sample in samples
        ]


# ---------------------------------------------------------------- care_vlm in process


def test_care_vlm_is_registered_through_the_entry_point():
    from lmms_eval.models import get_model

    assert get_model("care_vlm") is CareVLM
    assert CareVLM.is_simple is False


def _instances(messages_by_doc: list[list[dict]], gen_kwargs: dict) -> list[SimpleNamespace]:
    """lmms-eval chat requests: args = (ctx, doc_to_messages, gen_kwargs, doc_id, task, split)."""

    def doc_to_messages(doc):
        return doc["messages"]

    return [
        SimpleNamespace(args=("ctx", doc_to_messages, dict(gen_kwargs), doc_id, "t", "test"))
        for doc_id in range(len(messages_by_doc))
    ]


def _with_image(messages: list[dict], image) -> list[dict]:
    for item in messages[1]["content"]:
        if item["type"] == "image":
            item["url"] = image
    return messages


def test_care_vlm_renders_the_training_prompt_and_batches_in_order(care_vlm, monkeypatch):
    from PIL import Image

    images = [Image.new("RGB", (64, 64), colour) for colour in ("red", "green", "blue")]
    questions = ["How many circles?", "Which is larger?", "What colour is it?"]
    choices = [None, ["3", "5"], None]
    docs = [
        {"messages": _with_image(build_messages(q, c, num_images=1), image)}
        for q, c, image in zip(questions, choices, images, strict=True)
    ]
    care_vlm.task_dict = {"t": {"test": docs}}
    requests = _instances(
        [doc["messages"] for doc in docs], {"until": ["wer:"], "max_new_tokens": 12}
    )
    calls = []
    generate = care_vlm.engine.generate

    def spy(rollout_requests, params):
        calls.append((list(rollout_requests), params))
        return generate(rollout_requests, params)

    monkeypatch.setattr(care_vlm.engine, "generate", spy)
    results = care_vlm.generate_until(requests)

    # batch_size=2: two engine calls, [doc 0, doc 1] then [doc 2], greedy with 12 new tokens.
    assert [len(batch) for batch, _ in calls] == [2, 1]
    assert calls[0][1] == SamplingParams(temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=12)
    sent = [request for batch, _ in calls for request in batch]
    for request, question, choice, image in zip(sent, questions, choices, images, strict=True):
        expected = render_prompt(care_vlm.processor, build_messages(question, choice, num_images=1))
        assert request.prompt == expected
        assert request.prompt.count(SYSTEM_PROMPT) == 1
        assert [im.getpixel((0, 0)) for im in request.images] == [image.getpixel((0, 0))]
    # "Answer: B" cut before the stop string "wer:"; its 6 tokens + <|im_end|> were decoded.
    assert [result.text for result in results] == ["Ans"] * 3
    assert [result.token_counts.output_tokens for result in results] == [7] * 3


def test_care_vlm_refuses_messages_without_the_training_prompt(care_vlm):
    from PIL import Image

    plain = [
        {
            "role": "user",
            "content": [
                {"type": "image", "url": Image.new("RGB", (8, 8))},
                {"type": "text", "text": "Hi"},
            ],
        }
    ]
    care_vlm.task_dict = {"t": {"test": [{"messages": plain}]}}
    with pytest.raises(
        ValueError,
        match=r"t\[test\]\[0\]: the task's doc_to_messages must return care.prompts.build_messages",
    ):
        care_vlm.generate_until(_instances([plain], {"max_new_tokens": 4}))


def test_care_vlm_does_not_score_likelihoods_or_multiple_rounds(care_vlm):
    with pytest.raises(NotImplementedError, match="does not score log-likelihoods"):
        care_vlm.loglikelihood([])
    with pytest.raises(NotImplementedError, match="multi-round"):
        care_vlm.generate_until_multi_round([])


def test_care_vlm_rejects_unknown_model_args_and_engines(checkpoint):
    with pytest.raises(ValueError, match=r"unknown model args \['temprature'\]"):
        CareVLM(pretrained=str(checkpoint), temprature=0.5)
    with pytest.raises(ValueError, match=r"engine must be one of \['hf', 'vllm'\], got 'sglang'"):
        CareVLM(pretrained=str(checkpoint), engine="sglang")
    try:
        import vllm  # noqa: F401
    except ImportError:
        # Without vLLM the engine says how to get it instead of failing deep inside.
        with pytest.raises(ImportError, match="pip install vllm"):
            CareVLM(pretrained=str(checkpoint), engine="vllm")
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        CareVLM(pretrained=str(checkpoint), max_new_tokens=0)


def test_sampling_settings_come_from_gen_kwargs_then_model_args_then_defaults():
    params, until = resolve_sampling(
        {"max_new_tokens": 64, "until": "</s>"}, {"temperature": 0.7, "max_new_tokens": 9}
    )
    assert params == SamplingParams(temperature=0.7, top_p=1.0, top_k=0, max_new_tokens=64)
    assert until == ["</s>"]
    params, until = resolve_sampling({}, None)
    assert (params.temperature, params.max_new_tokens, until) == (0.0, 1024, [])
    # do_sample: false (what the task YAMLs say) keeps decoding greedy whatever the model args.
    params, _ = resolve_sampling({"do_sample": False, "temperature": 0}, {"temperature": 1.0})
    assert params.greedy
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['max_tokens'\]"):
        resolve_sampling({"max_tokens": 5})
    with pytest.raises(ValueError, match="num_beams must be 1"):
        resolve_sampling({"num_beams": 4})
    with pytest.raises(ValueError, match="do_sample is true but the temperature is 0"):
        resolve_sampling({"do_sample": True, "temperature": 0})


def test_stop_strings_cut_before_the_earliest_match():
    assert (
        cut_at_stop_strings("<answer>1</answer>\n\nmore<|im_end|>", ["<|im_end|>", "\n\n"])
        == "<answer>1</answer>"
    )
    assert cut_at_stop_strings("no stop here", ["</s>"]) == "no stop here"


# ---------------------------------------------------------------- results table


def test_results_table_macro_average_and_seed_spread_match_hand_computation():
    table = build_table(
        [
            BenchmarkResult("care_mathvista", {0: 0.50, 1: 0.60, 2: 0.70}, n=10),
            BenchmarkResult("care_mmmu", {0: 0.20, 1: 0.20, 2: 0.50}, n=20),
            BenchmarkResult("care_synth", {0: 0.80, 1: 0.90, 2: 1.00}, n=30),
        ]
    )
    # care_mmmu: mean 0.30, std sqrt((0.01 + 0.01 + 0.04) / 2) = 0.173205.
    assert table.rows[1].mean == pytest.approx(0.30)
    assert table.rows[1].std == pytest.approx(0.1732051, abs=1e-7)
    # The macro is the paper's: care_synth is no paper benchmark and stays out of it. Per-seed
    # macros (0.5 + 0.2) / 2 = 0.35, 0.40, 0.60 → mean 0.45, std sqrt(0.035 / 2) = 0.132288.
    assert table.macro.mean == pytest.approx(0.45)
    assert table.macro.std == pytest.approx(0.1322876, abs=1e-7)
    assert table.macro.n == 30
    assert table.macro.label == "macro average (2 of 6)"
    # Three sampled seeds: mean ± t(0.975, 2) · std / sqrt(3) = 4.303 · std / 1.732, clipped to
    # [0, 1]; the macro: 0.45 ± 4.303 · 0.132288 / 1.732 = [0.1214, 0.7786].
    assert to_markdown(table).splitlines() == [
        "| benchmark              |   n | seeds |  accuracy (%) | 95 % interval |",
        "|:-----------------------|----:|------:|--------------:|--------------:|",
        "| care_mathvista         |  10 |     3 | 60.00 ± 10.00 |  [35.2, 84.8] |",
        "| care_mmmu              |  20 |     3 | 30.00 ± 17.32 |   [0.0, 73.0] |",
        "| care_synth             |  30 |     3 | 90.00 ± 10.00 | [65.2, 100.0] |",
        "| macro average (2 of 6) |  30 |     3 | 45.00 ± 13.23 |  [12.1, 77.9] |",
    ]
    assert (
        to_csv(table).splitlines()[-1]
        == "macro average (2 of 6),30,0 1 2,45.0000,13.2288,12.1379,77.8621"
    )
    six = build_table(
        [BenchmarkResult(task, {0: 0.5}) for task in PAPER_BENCHMARKS]
        + [BenchmarkResult("care_synth", {0: 1.0})]
    )
    assert (six.macro.label, six.macro.mean) == ("macro average", 0.5)


def test_results_table_with_one_seed_or_mismatched_seeds():
    single = build_table(
        [BenchmarkResult("care_mmmu", {0: 0.451}), BenchmarkResult("care_synth", {0: 0.25})]
    )
    assert single.macro.mean == pytest.approx(0.451) and single.macro.std is None
    assert (
        to_markdown(single).splitlines()[-1]
        == "| macro average (1 of 6) |     |     1 |        45.10 |               |"
    )
    # One greedy run of 100 items, 45 right: Wilson [0.356, 0.548]; a macro over that one
    # benchmark is the benchmark, interval included.
    greedy = build_table([BenchmarkResult("care_mmmu", {0: 0.45}, n=100)])
    assert to_markdown(greedy).splitlines()[2:] == [
        "| care_mmmu              | 100 |     1 |        45.00 |  [35.6, 54.8] |",
        "| macro average (1 of 6) | 100 |     1 |        45.00 |  [35.6, 54.8] |",
    ]
    # Over two benchmarks it is the normal interval of a mean of proportions:
    # 0.45 ± 1.96 · sqrt(0.45 · 0.55 / 100 + 0.25 · 0.75 / 40) / 2.
    pair = build_table(
        [
            BenchmarkResult("care_mmmu", {0: 0.45}, n=100),
            BenchmarkResult("care_mathvista", {0: 0.25}, n=40),
        ]
    )
    half = 1.959964 * (0.45 * 0.55 / 100 + 0.25 * 0.75 / 40) ** 0.5 / 2
    assert pair.macro.interval.low == pytest.approx(0.35 - half)
    # At an accuracy of 0 a single benchmark's macro keeps Wilson's width, not [0, 0].
    zero = build_table([BenchmarkResult("care_synth", {0: 0.0}, n=12)])
    assert zero.macro.interval == wilson_interval(0, 12) and zero.macro.interval.high > 0.2
    alone = build_table([BenchmarkResult("care_synth", {0: 0.25})])
    assert (alone.macro.label, alone.macro.mean) == ("macro average (care_synth)", 0.25)
    mixed = build_table([BenchmarkResult("a", {0: 0.5}), BenchmarkResult("b", {0: 0.5, 1: 0.7})])
    assert mixed.macro is None
    assert mean_std([0.4]) == (0.4, None)
    with pytest.raises(ValueError, match="accuracy of seed 0 must be a fraction in"):
        BenchmarkResult("a", {0: 45.1})
    with pytest.raises(ValueError, match="name a benchmark twice"):
        build_table([BenchmarkResult("a", {0: 0.5}), BenchmarkResult("a", {0: 0.4})])


# ---------------------------------------------------------------- care eval


def test_benchmarks_expand_suites_but_keep_mathverse_whole():
    assert benchmarks_of(["care_six", "care_synth"]) == [
        "care_mathvista",
        "care_mathverse",
        "care_mathvision",
        "care_mmmu",
        "care_mmmu_pro_std",
        "care_mmmu_pro_vis",
        "care_synth",
    ]
    with pytest.raises(EvalError, match="unknown task or group 'mmmu'"):
        benchmarks_of(["mmmu"])


def test_default_out_dir_is_the_run_folders_eval_folder(tmp_path):
    assert (
        default_out_dir(tmp_path / "run" / "checkpoints" / "step_7")
        == tmp_path / "run" / "eval" / "step_7"
    )
    with pytest.raises(EvalError, match="pass --out DIR"):
        default_out_dir(tmp_path / "Qwen2.5-VL-7B")


def test_lmms_eval_command_has_no_response_cache_and_names_the_task_folder(checkpoint, data_root):
    settings = EvalSettings(
        checkpoint=checkpoint, data_root=data_root, seeds=(3,), limit=5, max_new_tokens=32
    )
    command = lmms_eval_command(settings, "care_synth", 3, Path("/out"))
    assert command[1:5] == ["-m", "lmms_eval", "--model", "care_vlm"]
    assert command[command.index("--include_path") + 1] == str(DEFAULT_INCLUDE_PATH)
    assert command[command.index("--seed") + 1] == "3,3,3,3"
    assert command[command.index("--gen_kwargs") + 1] == "max_new_tokens=32"
    assert "seed=3" in command[command.index("--model_args") + 1].split(",")
    assert command[command.index("--process_docs_parallel") + 1] == "1"
    assert "--log_samples" in command and "--use_cache" not in command
    vllm = lmms_eval_command(replace(settings, engine="vllm"), "care_synth", 3, Path("/out"))
    assert "engine=vllm" in vllm[vllm.index("--model_args") + 1].split(",")


def test_care_eval_refuses_an_unknown_engine_before_running(checkpoint, data_root, quiet_env):
    result = CliRunner().invoke(
        app,
        ["eval", "--checkpoint", str(checkpoint), "--tasks", "care_synth"]
        + ["--data-root", str(data_root), "--engine", "sglang", "--out", "/nonexistent/out"],
    )
    assert result.exit_code == 2
    assert "engine must be one of ['hf', 'vllm'], got 'sglang'" in result.stderr


@pytest.mark.slow
def test_care_eval_writes_results_skips_finished_and_fails_loudly(
    checkpoint, data_root, tmp_path, quiet_env
):
    # A private copy of the synthetic split: the test breaks one of its images later.
    root = tmp_path / "data"
    shutil.copytree(data_root / "care_synth", root / "care_synth")
    limit = 6
    expected = synth_gold_b(root, limit) / limit
    args = [
        "eval",
        "--checkpoint",
        str(checkpoint),
        "--tasks",
        "care_synth",
        "--data-root",
        str(root),
    ]
    args += ["--limit", str(limit), "--batch-size", "4", "--max-new-tokens", "16"]
    runner = CliRunner()

    # Several seeds need sampled decoding (greedy ones are refused); the scripted model's
    # logits are so far apart that sampling at 0.7 still gives its one reply.
    sampled = ["--temperature", "0.7"]
    first = runner.invoke(app, [*args, "--seeds", "0,1", *sampled])
    assert first.exit_code == 0, first.output
    out = checkpoint.parent.parent / "eval" / "step_3"
    summary = json.loads((out / "care_synth.json").read_text())
    assert summary["accuracy"] == pytest.approx(expected)
    assert summary["accuracy_std"] == 0.0  # both seeds give the scripted answer
    assert summary["verify_counts"] == {
        "ok": 2 * limit,
        "no_answer": 0,
        "unparsable": 0,
        "timeout": 0,
    }
    # The scripted reply "Answer: B" is right where the gold is B, a wrong option elsewhere,
    # and never in the <think>/<answer> format.
    assert summary["error_types"]["format only"] == synth_gold_b(root, limit)
    assert summary["error_types"]["wrong option"] == limit - synth_gold_b(root, limit)
    assert summary["n"] == limit and summary["seeds"] == [0, 1]
    assert summary["prompt_version"] == "care-prompt-v1"
    assert set(summary["per_seed"]) == {"0", "1"}
    # Two seeds with the same accuracy: the t interval has no width.
    assert summary["accuracy_interval"] == [pytest.approx(expected)] * 2
    interval = f"[{100 * expected:.1f}, {100 * expected:.1f}]"
    records = [
        json.loads(line) for line in (out / "care_synth_samples.jsonl").read_text().splitlines()
    ]
    assert len(records) == 2 * limit
    assert {record["response"] for record in records} == {SCRIPTED_REPLY}
    assert {record["extracted"] for record in records} == {"B"}
    assert sum(record["acc"] for record in records) == 2 * synth_gold_b(root, limit)
    assert [record["seed"] for record in records] == [0] * limit + [1] * limit
    row = f"| care_synth | {limit} | 2 | {100 * expected:.2f} ± 0.00 | {interval} |"
    # The table pads its columns; compare with single spaces.
    assert row in [" ".join(line.split()) for line in first.stdout.splitlines()]
    assert row in [" ".join(line.split()) for line in (out / "results.md").read_text().splitlines()]
    record = json.loads((out / "lmms_eval" / "care_synth" / "seed_1" / "run.json").read_text())
    assert record["status"] == "ok"
    assert record["env"] == {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CARE_DATA_ROOT": str(root.resolve()),
    }
    record_times = {
        seed: (out / "lmms_eval" / "care_synth" / f"seed_{seed}" / "run.json").stat().st_mtime_ns
        for seed in (0, 1)
    }

    again = runner.invoke(app, [*args, "--seeds", "0,1", *sampled, "--csv"])
    assert again.exit_code == 0, again.output
    assert again.stderr.count("finished earlier, skipped") == 2
    assert f"care_synth,{limit},0 1,{100 * expected:.4f},0.0000," in again.stdout
    for seed, mtime in record_times.items():
        assert (
            out / "lmms_eval" / "care_synth" / f"seed_{seed}" / "run.json"
        ).stat().st_mtime_ns == mtime
    assert load_results(out, ["care_synth"])[0].accuracy_by_seed == {0: expected, 1: expected}

    # Row 1's image becomes unreadable: --force re-runs seed 0, lmms-eval itself exits 0 with an
    # error, and care eval reports the failure with exit code 1 and drops the stale summary.
    (root / "care_synth" / "images" / "test-000001.png").write_bytes(b"not an image")
    broken = runner.invoke(app, [*args, "--seeds", "0", "--force"])
    assert broken.exit_code == 1, broken.output
    assert "finished earlier" not in broken.stderr
    assert "lmms-eval exited 0 but wrote 0 results files" in broken.stderr
    assert "test-000001.png: cannot read image" in broken.stderr
    record = json.loads((out / "lmms_eval" / "care_synth" / "seed_0" / "run.json").read_text())
    assert (record["status"], record["returncode"]) == ("failed", 0)
    assert not (out / "care_synth.json").exists()


def test_care_eval_without_a_data_root_names_the_expected_columns(checkpoint, tmp_path, quiet_env):
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--checkpoint",
            str(checkpoint),
            "--tasks",
            "care_synth,care_mmmu_pro_vis",
            "--data-root",
            str(tmp_path / "nowhere"),
        ],
    )
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
    assert (
        "care_mmmu_pro_vis: <data-root>/MMMU/MMMU_Pro, columns ['id', 'image', 'options', 'answer', 'subject']"
        in result.stderr
    )
    assert (
        "care_synth: <data-root>/care_synth/test.jsonl, columns ['id', 'images', 'question', 'answer', 'answer_type']"
        in result.stderr
    )


def test_care_eval_with_wrong_columns_fails_before_lmms_eval_runs(
    checkpoint, data_root, tmp_path, quiet_env
):
    source = data_root / "MMMU" / "MMMU_Pro" / "vision" / "test-00000-of-00001.parquet"
    broken = tmp_path / "data" / "MMMU" / "MMMU_Pro" / "vision" / source.name
    broken.parent.mkdir(parents=True)
    table = pq.read_table(source)
    pq.write_table(
        table.rename_columns(
            ["choices" if name == "options" else name for name in table.column_names]
        ),
        broken,
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--checkpoint",
            str(checkpoint),
            "--tasks",
            "care_mmmu_pro_vis",
            "--data-root",
            str(tmp_path / "data"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1
    assert "lacks column(s) ['options']" in result.stderr
    assert "expected columns: ['id', 'image', 'options', 'answer', 'subject']" in result.stderr
    assert not (out / "lmms_eval").exists()


def test_several_seeds_with_greedy_decoding_are_refused_and_sampled_seeds_reach_the_sampler(
    checkpoint, data_root, tmp_path
):
    from evaluation.runner import EvalSettings, _validated, lmms_eval_command

    one = EvalSettings(checkpoint, data_root, ("care_synth",), seeds=(0,), out_dir=tmp_path)
    with pytest.raises(ValidationError, match="greedy decoding give identical answers"):
        dataclasses.replace(one, seeds=(0, 1))
    with pytest.raises(ValidationError, match="greedy decoding"):
        dataclasses.replace(one, seeds=(0, 1), temperature=0.0)
    sampled = _validated(dataclasses.replace(one, seeds=(0, 1), temperature=0.7))
    for seed in sampled.seeds:
        command = lmms_eval_command(sampled, "care_synth", seed, tmp_path)
        model_args = command[command.index("--model_args") + 1].split(",")
        assert f"seed={seed}" in model_args
        assert command[command.index("--gen_kwargs") + 1] == "temperature=0.7,do_sample=True"
    # care_vlm turns the model seed into each chunk's sampling seed: seed * 100003 + chunk.
    from care.rollout.base import SamplingParams
    from evaluation.model import _with_seed

    params = SamplingParams(temperature=0.7, max_new_tokens=8, n=1)
    assert [_with_seed(params, seed, 2).seed for seed in (0, 1)] == [2, 100_005]
    with pytest.raises(
        ValidationError, match=r"verify_time_limit\n  Input should be greater than 0"
    ):
        dataclasses.replace(sampled, verify_time_limit=0)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"seeds": (0, -1)}, "seeds.1: Input should be greater than or equal to 0 (got -1)"),
        ({"seeds": (2, 2), "temperature": 0.7}, "seeds must not repeat, got (2, 2)"),
        ({"seeds": ()}, "seeds: Tuple should have at least 1 item"),
        ({"limit": 0}, "limit: Input should be greater than or equal to 1 (got 0)"),
        ({"batch_size": True}, "batch_size: Input should be a valid integer (got True)"),
        ({"max_new_tokens": 2.5}, "max_new_tokens: Input should be a valid integer (got 2.5)"),
        ({"temperature": -0.5}, "temperature: Input should be greater than or equal to 0"),
        ({"top_p": 1.5}, "top_p: Input should be less than or equal to 1 (got 1.5)"),
        ({"verify_time_limit": 31}, "verify_time_limit: Input should be less than or equal to 30"),
        ({"engine": "sglang"}, "engine: engine must be one of ['hf', 'vllm'], got 'sglang'"),
    ],
)
def test_bad_eval_settings_are_refused_when_built_naming_the_field(fields, named):
    from evaluation.runner import EvalSettings, settings_error

    with pytest.raises(ValidationError) as raised:
        EvalSettings(Path("ckpt"), Path("data"), **fields)
    error = settings_error(raised.value)
    assert isinstance(error, EvalError)
    assert str(error).startswith("invalid evaluation settings:\n  ")
    assert named in str(error)


def test_benchmark_accuracy_interval_and_verdict_counts():
    from evaluation.runner import accuracy_interval, verify_counts

    one = accuracy_interval([(45, 100)])
    assert (round(one.low, 3), round(one.high, 3)) == (0.356, 0.548)
    seeds = accuracy_interval([(50, 100), (60, 100), (70, 100)])
    assert (round(seeds.low, 3), round(seeds.high, 3)) == (0.352, 0.848)
    records = [{"verify_status": s} for s in ("ok", "timeout", "ok", "no_answer")]
    assert verify_counts(records) == {"ok": 2, "no_answer": 1, "unparsable": 0, "timeout": 1}
    with pytest.raises(ValueError, match="doc_id 7: verify_status None"):
        verify_counts([{"task": "care_synth", "doc_id": 7}])
