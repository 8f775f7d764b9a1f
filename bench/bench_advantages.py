"""Advantage and token-weighting throughput, measured as ratios inside ONE run.

Batch (the paper's step size): 512 prompts × 8 rollouts, rationale embeddings of dimension 3584
(Qwen2.5-VL-7B hidden size), P(correct) = 0.4, and 10 % of the groups forced all-wrong so the
rescue path runs. Timed, median of ``--repeats`` runs each:

- ``care_advantages`` (vectorised, this project);
- GRPO's group z-score written the way EasyR1 and verl write it: a dict of per-prompt lists
  filled and read by per-element Python loops;
- the plain per-group CARE reference from ``tests/reference_care.py``.

Targets (issue "Foundation"): CARE no slower than that GRPO loop, and at least 10× faster than
the per-group reference. Before any timing, CARE's advantages must equal the reference's to
``MAX_DIFF``; otherwise the script exits with status 1. Then span detection + region-weighted token advantages are timed on
4,096 responses of 2,048 tokens with the real (offline-rebuilt) Qwen2.5 vocabulary.

Usage::

    .venv/bin/python bench/bench_advantages.py [--device cpu|cuda] [--repeats 7] [--skip-spans]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the per-group reference lives with the tests

from reference_care import reference_care  # noqa: E402

from care.algo.care import CareConfig, care_advantages  # noqa: E402

MAX_DIFF = 1e-5
"""Largest |CARE - per-group reference| accepted before timing (float32 against float64, the
tests' tolerance); a larger one stops the script with exit status 1."""


def make_batch(
    prompts: int,
    rollouts: int,
    dim: int,
    p_correct: float,
    all_wrong: float,
    seed: int,
    shuffle: bool,
):
    gen = torch.Generator().manual_seed(seed)
    batch = prompts * rollouts
    group_index = torch.arange(prompts).repeat_interleave(rollouts)
    correct = torch.rand(batch, generator=gen) < p_correct
    wrong_groups = torch.randperm(prompts, generator=gen)[: int(round(all_wrong * prompts))]
    correct[torch.isin(group_index, wrong_groups)] = False
    # A trainer lays each prompt's rollouts side by side; "shuffled" is the any-order worst case.
    perm = torch.randperm(batch, generator=gen) if shuffle else torch.arange(batch)
    return {
        "rewards": correct.float()[perm],
        "correct": correct[perm],
        "group_index": group_index[perm],
        "think_len": torch.randint(50, 800, (batch,), generator=gen)[perm],
        "answer_len": torch.randint(1, 30, (batch,), generator=gen)[perm],
        "embeddings": torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen), dim=1),
        "old_logprob_sum": -torch.rand(batch, generator=gen)[perm] * 300,
    }


def grpo_python_loop(scores: torch.Tensor, index: list[int], eps: float = 1e-6) -> torch.Tensor:
    """GRPO outcome advantage as EasyR1 / verl compute it: per-element loops over a dict."""
    scores = scores.clone()
    id2score: dict[int, list[torch.Tensor]] = defaultdict(list)
    id2mean, id2std = {}, {}
    for i in range(scores.shape[0]):
        id2score[index[i]].append(scores[i])
    for idx, values in id2score.items():
        if len(values) == 1:
            id2mean[idx], id2std[idx] = torch.tensor(0.0), torch.tensor(1.0)
        else:
            stacked = torch.stack(values)
            id2mean[idx], id2std[idx] = torch.mean(stacked), torch.std(stacked)
    for i in range(scores.shape[0]):
        scores[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + eps)
    return scores


def median_seconds(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up (allocator, lazy init)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_advantages(device: str, repeats: int) -> None:
    cfg = CareConfig()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    grouped = make_batch(512, 8, 3584, 0.4, 0.10, seed=0, shuffle=False)
    shuffled = make_batch(512, 8, 3584, 0.4, 0.10, seed=0, shuffle=True)
    on_device = {
        name: {k: v.to(device) for k, v in batch.items()}
        for name, batch in (("grouped", grouped), ("shuffled", shuffled))
    }

    def run_care(order: str):
        return care_advantages(**on_device[order], cfg=cfg)

    index = shuffled["group_index"].tolist()

    def run_grpo_loop():
        return grpo_python_loop(shuffled["rewards"], index)

    reference_inputs = dict(
        rewards=shuffled["rewards"].tolist(),
        correct=shuffled["correct"].tolist(),
        group_index=index,
        think_len=shuffled["think_len"].tolist(),
        answer_len=shuffled["answer_len"].tolist(),
        embeddings=shuffled["embeddings"].numpy(),
        old_logprob_sum=shuffled["old_logprob_sum"].tolist(),
        reflected_from=None,
        cfg=cfg,
    )

    def run_reference():
        return reference_care(**reference_inputs)

    # The same per-group math driven one group at a time through torch: what a direct port of
    # the per-group description into a trainer costs (one small kernel launch chain per prompt).
    group_rows = [
        torch.nonzero(on_device["grouped"]["group_index"] == g).flatten() for g in range(512)
    ]

    def run_per_group_torch():
        batch = on_device["grouped"]
        return [
            care_advantages(**{k: v[rows] for k, v in batch.items()}, cfg=cfg).advantages
            for rows in group_rows
        ]

    # Same answer first: a fast wrong kernel is worth nothing.
    out = run_care("shuffled")
    ref = run_reference()
    max_diff = float(np.max(np.abs(out.advantages.cpu().numpy() - np.array(ref.advantages))))
    if not max_diff <= MAX_DIFF:
        print(f"MISMATCH: max |care - reference| = {max_diff:.2e} > {MAX_DIFF:.0e}; not timed")
        sys.exit(1)
    rescued_groups = int(out.rescued.sum().item()) // 8

    t_grouped = median_seconds(lambda: run_care("grouped"), repeats, sync)
    t_shuffled = median_seconds(lambda: run_care("shuffled"), repeats, sync)
    t_loop = median_seconds(run_grpo_loop, repeats, lambda: None)
    t_ref = median_seconds(run_reference, max(3, repeats // 2), lambda: None)
    t_per_group = median_seconds(run_per_group_torch, max(3, repeats // 2), sync)
    print(
        f"batch: 512 prompts x 8 rollouts, D=3584, P(correct)=0.4, rescued groups={rescued_groups}"
    )
    print(f"device: {device}; torch threads: {torch.get_num_threads()}; repeats: {repeats}")
    print(f"max |care - reference| = {max_diff:.2e} (must be <= {MAX_DIFF:.0e})")
    print(f"care_advantages, grouped rows (trainer layout)  median {t_grouped * 1e3:9.2f} ms")
    print(f"care_advantages, shuffled rows (any order)      median {t_shuffled * 1e3:9.2f} ms")
    print(f"GRPO z-score, per-element Python loop (verl)    median {t_loop * 1e3:9.2f} ms")
    print(f"CARE per-group reference (tests, numpy dots)    median {t_ref * 1e3:9.2f} ms")
    print(f"CARE one group at a time through torch          median {t_per_group * 1e3:9.2f} ms")
    print(
        f"ratio GRPO loop / CARE grouped                  {t_loop / t_grouped:9.1f}x  (target >= 1)"
    )
    print(
        f"ratio GRPO loop / CARE shuffled                 {t_loop / t_shuffled:9.1f}x  (target >= 1)"
    )
    print(
        f"ratio per-group reference / CARE grouped        {t_ref / t_grouped:9.1f}x  (target >= 10)"
    )
    print(
        f"ratio per-group reference / CARE shuffled       {t_ref / t_shuffled:9.1f}x  (target >= 10)"
    )
    print(f"ratio one-group-at-a-time / CARE grouped        {t_per_group / t_grouped:9.1f}x")


def bench_spans(device: str, repeats: int, responses: int, length: int) -> None:
    from care.algo.spans import region_masks
    from care.algo.token_weights import region_token_advantages
    from care.models.tokenizer import load_qwen2_5_tokenizer

    tokenizer = load_qwen2_5_tokenizer()
    texts = [
        "<think>\nThe bar for March reaches 12, April reaches 7. So the difference is 12 - 7 = 5.",
        "<think>\n面积是 3 × 4 = 12 cm², then add the triangle.</think>\n<answer>18</answer>",
        "Counting the red circles: 1, 2, 3.</think><answer>(B)</answer>",
        "<think>Compare lengths: AB > CD.</think>\n<answer>AB</answer><|im_end|>",
    ]
    pieces = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    filler = tokenizer(" and then we check the value again", add_special_tokens=False)["input_ids"]
    rows = []
    gen = np.random.default_rng(0)
    for i in range(responses):
        head = pieces[i % len(pieces)]
        # Put the template at a random place in a long response so spans land everywhere.
        body = (filler * (length // len(filler) + 1))[: int(gen.integers(0, length - len(head)))]
        ids = (body + head)[:length]
        rows.append(ids + [tokenizer.pad_token_id] * (length - len(ids)))
    response_ids = torch.tensor(rows)
    response_mask = response_ids != tokenizer.pad_token_id
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    seq_adv = torch.randn(responses, device=device)
    positive = seq_adv > 0

    def run_spans():
        return region_masks(tokenizer, response_ids, response_mask)

    masks = run_spans()
    t_spans = median_seconds(run_spans, max(1, repeats // 3), lambda: None)
    think, answer, resp = (
        masks.think_mask.to(device),
        masks.answer_mask.to(device),
        response_mask.to(device),
    )

    def run_weights():
        return region_token_advantages(seq_adv, positive, think, answer, resp)

    t_weights = median_seconds(run_weights, repeats, sync)
    tokens = responses * length
    print(f"spans: {responses} responses x {length} tokens (real Qwen2.5 vocabulary)")
    print(
        f"region_masks (byte table + tag search) median {t_spans * 1e3:9.1f} ms "
        f"({tokens / t_spans / 1e6:.1f} M tokens/s); think spans found: "
        f"{int(masks.has_think.sum())}/{responses}"
    )
    print(f"region_token_advantages ({device})      median {t_weights * 1e3:9.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-spans", action="store_true")
    parser.add_argument("--span-responses", type=int, default=4096)
    parser.add_argument("--span-length", type=int, default=2048)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: torch's default)"
    )
    args = parser.parse_args()
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    if args.threads > 0:
        # On a shared CPU, threads waiting for each other cost more than the work measured
        # (seen: care_advantages 0.056 s with 1 thread, 0.67 s with 2 under a load of 7.8).
        torch.set_num_threads(args.threads)
    bench_advantages(args.device, args.repeats)
    if not args.skip_spans:
        bench_spans(args.device, args.repeats, args.span_responses, args.span_length)


if __name__ == "__main__":
    main()
