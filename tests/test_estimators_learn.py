"""The update learns, for every estimator: with scripted rollouts, one update raises the
log-probability of the rewarded answer and moves probability from every penalised response to the
rewarded one (measured through the real policy forward); DAPO keeps varied groups, refills and merges with the counts it logs; and
a short real run on an easy variant raises the training reward by more than its noise."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_run import ScriptedEngine, tiny_config, write_choice_dataset

from care.config import config_from_dict
from care.models.policy import collate, policy_forward
from care.prompts import build_messages, build_repair_prefix, render_prompt
from care.runlog import RunReader
from care.train.sft import run_sft
from care.train.trainer import Trainer

ESTIMATORS = ["grpo", "dr_grpo", "dapo", "gspo", "care", "care_no_rgr"]

# One mixed group: rollout 0 answers A (right), rollouts 1-3 answer B, C, D (wrong), with the same
# reasoning, so the responses differ only in what the reward judges.
RIGHT = "<think>\nlook\n</think>\n<answer>A</answer>"
WRONG = [RIGHT.replace(">A<", f">{letter}<") for letter in "BCD"]
REPAIR = "Fixed: 1\n</think>\n<answer>A</answer>"


def response_logprobs(
    trainer: Trainer, texts: list[str], prefix: str = ""
) -> tuple[list[float], list[float]]:
    """``(whole, answer)`` per response to the trainer's first example: the summed
    log-probability of the response plus its stop token, and that of its answer letter (the one
    token between ``<answer>`` and ``</answer>``), through the prompt template, collate and
    forward the trainer trains with."""
    example = trainer.examples[0]
    processor, tokenizer = trainer.processor, trainer.processor.tokenizer
    prompt = render_prompt(
        processor, build_messages(example.question, example.choices, len(example.images))
    )
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    responses = [tokenizer(text, add_special_tokens=False)["input_ids"] + [stop] for text in texts]
    letters = []
    for text, ids in zip(texts, responses, strict=True):
        head = text[: text.index("</answer>") - 1]
        position = len(tokenizer(head, add_special_tokens=False)["input_ids"])
        assert tokenizer.decode(ids[position]) == text[len(head)]  # the letter is one token
        letters.append(position)
    images = example.load_images()
    batch = collate(
        processor,
        [prompt] * len(texts),
        [images] * len(texts),
        responses,
        assistant_prefixes=[prefix] * len(texts),
    )
    with torch.no_grad():
        out = policy_forward(
            trainer.policy, batch, want_embeddings=False, suppress_token_ids=trainer.suppress_ids
        )
    whole = (out.token_logprobs * batch.response_mask).sum(dim=1).tolist()
    answer = [float(out.token_logprobs[row, position]) for row, position in enumerate(letters)]
    return whole, answer


@pytest.fixture(scope="module")
def one_row(tmp_path_factory):
    out = tmp_path_factory.mktemp("one_row")
    write_choice_dataset(out, 1, lambda index: "A")
    return out


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_one_update_moves_probability_from_each_penalised_response_to_the_rewarded_one(
    one_row, tmp_path, estimator
):
    cfg = config_from_dict(
        tiny_config(
            one_row,
            tmp_path,
            estimator,
            algo={"estimator": estimator},
            data={"train_files": [str(one_row / "train.jsonl")]},
            train={"steps": 1, "prompts_per_step": 1, "mini_batch_prompts": 1},
        )
    )
    trainer = Trainer(cfg, progress=False)
    answers = {ex.question: ex.answer for ex in trainer.examples}

    def script(question, answer, sample, is_repair):
        if is_repair:
            return REPAIR
        return RIGHT if sample == 0 else WRONG[sample - 1]

    trainer.engine = ScriptedEngine(trainer.processor, answers, script)
    texts = [RIGHT, *WRONG]
    prefixes = {i: build_repair_prefix(WRONG[i - 1]) for i in (1, 2, 3)}
    before, before_answer = response_logprobs(trainer, texts)
    before_repairs = {i: response_logprobs(trainer, [REPAIR], p)[0][0] for i, p in prefixes.items()}
    trainer.fit()
    after, after_answer = response_logprobs(trainer, texts)
    after_repairs = {i: response_logprobs(trainer, [REPAIR], p)[0][0] for i, p in prefixes.items()}

    run = RunReader(cfg.run_dir)
    (group,) = run.groups
    assert group.correct == (True, False, False, False)
    advantages = group.advantages
    # The rollouts the update pushes down: every failure, except (CARE with RGR) the failure
    # whose repair replaced it in the subgroup, which gets advantage 0.
    penalised = [1, 2, 3]
    if estimator == "care":
        source = group.rgr.source_index
        assert group.rgr.passed and advantages[source] == 0.0
        penalised.remove(source)
    assert advantages[0] > 0
    assert all(advantages[i] < 0 for i in penalised)
    step = run.steps[0]
    assert "update/skipped" not in step and step["grad_norm"] > 0

    # What one AdamW update does and does not promise. Its first step moves every weight by about
    # lr in the sign of the weight's gradient: a direction that raises the advantage-weighted
    # log-likelihood as a whole, not each response's log-probability on its own. (In the linear
    # regime, lr 1e-5, GRPO's step here lowered the rewarded response by 5e-4 nats and raised
    # the penalised answer C by 3e-4.) What it does for every estimator: the rewarded answer
    # becomes more likely, and the rewarded response gains on every penalised one, as a whole
    # and on the answer. 0.01 nats is far above float noise (1e-6) and below the smallest gain
    # seen (0.07); advantages of the wrong sign, or none, fail it.
    change = [a - b for a, b in zip(after, before, strict=True)]
    answer_change = [a - b for a, b in zip(after_answer, before_answer, strict=True)]
    assert answer_change[0] > 0.01, (
        f"rewarded answer: {before_answer[0]:.4f} → {after_answer[0]:.4f}"
    )
    for i in penalised:
        assert change[0] - change[i] > 0.01, f"response {i}: {change[i]:+.4f} vs {change[0]:+.4f}"
        assert answer_change[0] - answer_change[i] > 0.01, (
            f"answer {i}: {answer_change[i]:+.4f} vs {answer_change[0]:+.4f}"
        )
    if estimator == "care":
        # The passed repair is a second positive: its continuation after the repair context
        # of its source becomes more likely too.
        repair_rise = after_repairs[source] - before_repairs[source]
        assert repair_rise > 0.01, f"repair: {before_repairs[source]:.4f} → +{repair_rise:.4f}"


# DAPO: each round of a step draws prompts_per_step = 4 prompts; the script decides per round and
# position whether a group is mixed (rollouts 0-1 right, 2-3 wrong) or uniform (all right / all
# wrong, zero reward variance). Expected: (kept, drawn, refill rounds, kept (round, position)).
DAPO_SCENARIOS = {
    "refill twice and merge the first of the last round": (
        [["mixed", "mixed", "right", "wrong"], ["wrong", "mixed", "right", "right"],
         ["mixed", "wrong", "mixed", "right"]],
        (4, 12, 2, [(0, 0), (0, 1), (1, 1), (2, 0)]),
    ),
    "first draw is enough": (
        [["mixed", "mixed", "mixed", "mixed"]],
        (4, 4, 0, [(0, 0), (0, 1), (0, 2), (0, 3)]),
    ),
    "nothing varies in any round: the update is skipped": (
        [["right", "wrong", "wrong", "right"]] * 4,
        (0, 16, 3, []),
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def sixteen_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("sixteen_rows")
    write_choice_dataset(out, 16, lambda index: "ABCD"[index % 4])
    return out


@pytest.mark.parametrize("scenario", list(DAPO_SCENARIOS))
def test_dapo_keeps_varied_groups_refills_and_merges_with_logged_counts(
    sixteen_rows, tmp_path, scenario
):
    rounds, (kept, drawn, refills, kept_at) = DAPO_SCENARIOS[scenario]
    cfg = config_from_dict(
        tiny_config(
            sixteen_rows,
            tmp_path,
            "dapo",
            algo={"estimator": "dapo", "dapo": {"max_refill_rounds": 3}},
            data={"train_files": [str(sixteen_rows / "train.jsonl")]},
            train={"steps": 1, "prompts_per_step": 4, "mini_batch_prompts": 2},
        )
    )
    trainer = Trainer(cfg, progress=False)
    answers = {ex.question: ex.answer for ex in trainer.examples}
    ids = {ex.question: ex.id for ex in trainer.examples}

    def script(question, answer, sample, is_repair):
        kind = rounds[len(engine.calls) - 1][engine.calls[-1].index(question)]
        right = kind == "right" or (kind == "mixed" and sample < 2)
        return f"<think>\nlook {sample}\n</think>\n<answer>{answer if right else 'none'}</answer>"

    engine = trainer.engine = ScriptedEngine(trainer.processor, answers, script)
    weights_before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    trainer.fit()

    run = RunReader(cfg.run_dir)
    step = run.steps[0]
    assert step["dapo/kept_groups"] == kept
    assert step["dapo/drawn_groups"] == drawn
    assert step["dapo/refill_rounds"] == refills
    assert [len(call) for call in engine.calls] == [4] * (refills + 1)
    # Every round drew new prompts from the data order: 16 rows, no prompt twice.
    drawn_questions = [q for call in engine.calls for q in call]
    assert len(set(drawn_questions)) == drawn
    assert trainer.sampler.state_dict() == {"epoch": drawn // 16, "position": drawn % 16}
    changed = any(
        not torch.equal(weights_before[k], v) for k, v in trainer.policy.state_dict().items()
    )
    if kept == 0:
        # No group with variance: logged, the update skipped, the weights untouched.
        assert step["update/skipped"] == 1.0 and "loss/pg" not in step
        assert not changed
        assert all(a == 0.0 for g in run.groups for a in g.advantages)
    else:
        assert "update/skipped" not in step and changed
        # The merged batch: the kept groups in draw order, renumbered 0..kept-1, each
        # [1, 1, 0, 0] with GRPO advantages ±0.5 / std, Bessel std sqrt(1/3) → ±0.866.
        groups = sorted(run.groups, key=lambda g: g.group_id)
        assert [g.group_id for g in groups] == list(range(kept))
        assert [g.prompt_id for g in groups] == [ids[engine.calls[r][p]] for r, p in kept_at]
        half = 0.5 / math.sqrt(1 / 3)
        for g in groups:
            assert g.correct == (True, True, False, False)
            assert g.advantages == pytest.approx([half, half, -half, -half], abs=1e-5)
        assert step["groups/mixed_frac"] == 1.0


# ----------------------------------------------------------------------------------------------
# A real run: sampling, verifying and updating, on a task whose reward is quickly learnable.


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: a second intra-op thread only adds synchronisation (three times slower
    measured on a shared 2-core machine), and one thread makes the float sums, hence the whole
    run, the same everywhere."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def easy_warm_start(tmp_path_factory, one_thread) -> tuple[Path, Path]:
    """``(easy data folder, SFT checkpoint)``: SFT teaches the reply format on rows whose gold
    letter is random, so the warm start answers A about a quarter of the time or less; the easy
    variant relabels every row to A, a reward RL can find in a few dozen steps."""
    out = tmp_path_factory.mktemp("easy")
    letters = np.random.default_rng(0).choice(list("ABCD"), size=32)
    write_choice_dataset(out / "sft", 32, lambda index: str(letters[index]), format_hint=True)
    write_choice_dataset(out / "easy", 32, lambda index: "A", format_hint=True)
    sft = tiny_config(
        out / "sft",
        out,
        "sft",
        data={"train_files": [str(out / "sft" / "train.jsonl")]},
        sft={"steps": 60, "lr": 1e-2, "batch_rows": 16},
    )
    return out / "easy", run_sft(config_from_dict(sft), progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["grpo", "care"])
def test_training_reward_rises_by_more_than_its_noise_on_an_easy_variant(
    easy_warm_start, tmp_path, estimator
):
    data_dir, warm_start = easy_warm_start
    steps, k = 20, 5
    cfg = config_from_dict(
        tiny_config(
            data_dir,
            tmp_path,
            estimator,
            algo={"estimator": estimator},
            model={"path": str(warm_start)},
            data={"train_files": [str(data_dir / "train.jsonl")]},
            rollout={"n": 8, "max_new_tokens": 24, "batch_rows": 64},
            optim={"lr": 3e-3},
            train={
                "steps": steps,
                "prompts_per_step": 4,
                "mini_batch_prompts": 4,
                "micro_batch_rows": 64,
                "log_samples_every": 0,
            },
        )
    )
    Trainer(cfg, progress=False).fit()
    accuracy = np.array([record["acc/mean"] for record in RunReader(cfg.run_dir).steps])
    assert accuracy.shape == (steps,)
    first, last = accuracy[:k], accuracy[-k:]
    gain = last.mean() - first.mean()
    # Standard error of the difference of the two k-step means, from the steps' own spread.
    noise = math.sqrt(first.var(ddof=1) / k + last.var(ddof=1) / k)
    assert gain > 3 * noise, f"{estimator}: {first.round(2)} → {last.round(2)}"
    # The warm start does not already know the relabelled answer: 4 options, so chance is 0.25
    # (measured 0.34 over the first 5 steps with the protocol-aware tokenizer).
    assert first.mean() < 0.45
