"""Evaluation throughput of ``care_vlm``: samples per second at batch 1 vs batched, in ONE run.

The requests are what lmms-eval hands the model for ``care_synth``: the fixture split's rows
(``tests/fixtures/benchmarks.py``), turned into the training prompt by the task's own
``doc_to_messages`` and decoded through `evaluation.model.CareVLM.generate_until` (the HF
rollout engine). The model is the tiny random-weight Qwen2.5-VL, which never emits the stop
token early, so every sample decodes exactly ``--max-new-tokens`` tokens and both settings do
the same work. One untimed warm-up call precedes each timed pass. Decoding is greedy, so both
settings must return the same responses; the script exits with status 1 when they do not.
One torch thread by default:
on a shared CPU, threads that wait for each other slow batch 1 down far more than batch 16
(seen here: 88x with 2 threads under load, 7.4x with 1), which would overstate the ratio.

Usage::

    .venv/bin/python bench/bench_eval.py [--samples 32] [--batch-size 16] [--max-new-tokens 64]
        [--device cpu|cuda] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the benchmark fixtures live with the tests

from fixtures.benchmarks import write_fixtures  # noqa: E402

from care.models.tokenizer import train_tiny_bpe_tokenizer  # noqa: E402
from care.models.vlm import build_tiny_vlm, save_policy  # noqa: E402
from evaluation.model import CareVLM  # noqa: E402
from evaluation.tasks import doc_to_messages, load_task_docs  # noqa: E402

TASK = "care_synth"


def requests_for(docs: list[dict], max_new_tokens: int) -> list[SimpleNamespace]:
    """lmms-eval chat requests (ctx, doc_to_messages, gen_kwargs, doc_id, task, split)."""

    def task_doc_to_messages(doc: dict) -> list[dict]:
        return doc_to_messages(TASK, doc)

    gen_kwargs = {"until": ["<|im_end|>"], "max_new_tokens": max_new_tokens, "do_sample": False}
    return [
        SimpleNamespace(args=("", task_doc_to_messages, dict(gen_kwargs), index, TASK, "test"))
        for index in range(len(docs))
    ]


def samples_per_second(model: CareVLM, requests: list[SimpleNamespace]) -> tuple[float, list[str]]:
    """Samples per second of one timed pass (after an untimed warm-up) and the responses."""
    model.generate_until(requests[: model.batch_size])  # warm-up, untimed
    start = time.perf_counter()
    results = model.generate_until(requests)
    elapsed = time.perf_counter() - start
    if len(results) != len(requests):
        raise RuntimeError(f"{len(results)} responses for {len(requests)} requests")
    return len(requests) / elapsed, [result.text for result in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: torch's default)"
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        data_root = Path(scratch) / "data"
        write_fixtures(data_root, rows_per_task=args.samples, seed=0)
        docs = load_task_docs(TASK, data_root, limit=args.samples)
        model, processor = build_tiny_vlm(train_tiny_bpe_tokenizer(), image_size=112, seed=0)
        checkpoint = save_policy(model, processor, Path(scratch) / "tiny")
        requests = requests_for(docs, args.max_new_tokens)
        rates, responses = {}, {}
        for batch_size in (1, args.batch_size):
            care_vlm = CareVLM(
                pretrained=str(checkpoint), batch_size=batch_size, device=args.device
            )
            care_vlm.task_dict = {TASK: {"test": docs}}
            rates[batch_size], responses[batch_size] = samples_per_second(care_vlm, requests)

    print(
        f"care_vlm on {TASK}: {len(docs)} samples, {args.max_new_tokens} new tokens each, "
        f"device {args.device}, torch threads {torch.get_num_threads()}"
    )
    for batch_size, rate in rates.items():
        print(f"  batch {batch_size:3d}: {rate:8.2f} samples/s")
    print(f"  batched / batch 1: {rates[args.batch_size] / rates[1]:.2f}x")
    # Greedy decoding: batching may change the speed, never the answers.
    pairs = zip(responses[1], responses[args.batch_size], strict=True)
    differ = [index for index, (alone, batched) in enumerate(pairs) if alone != batched]
    if differ:
        print(f"MISMATCH: batched responses differ from batch 1 for requests {differ[:10]}")
        sys.exit(1)
    print(f"  responses: batched == batch 1 for all {len(requests)} requests (greedy)")


if __name__ == "__main__":
    main()
