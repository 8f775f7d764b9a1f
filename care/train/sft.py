"""Supervised warm start (``care sft``): teach the policy the answer format before RL.

Targets are ``<think>\\n{solution}\\n</think>\\n<answer>{answer}</answer>`` followed by the stop
token, built from each row's ``solution`` (``care.data.sft_target``), trained with token-level
cross-entropy on the response only, through the same prompt template, collate and forward as the
RL trainer. The result is a run folder with a Hugging Face checkpoint that RL runs start from
(``model.path``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from care.config import TrainConfig
from care.data import load_split, sft_target
from care.models.policy import collate, policy_forward
from care.models.vlm import save_policy, stop_token_ids
from care.prompts import build_messages, render_prompt
from care.runlog import RunWriter
from care.train.checkpoint import save_checkpoint
from care.train.policy_setup import build_or_load_policy, resolve_device, task_corpus
from care.train.sampler import PromptSampler


def run_sft(cfg: TrainConfig, *, progress: bool = True) -> Path:
    """Run ``cfg.sft.steps`` supervised updates; returns the final checkpoint folder."""
    if cfg.sft.steps < 1:
        raise ValueError("sft.steps must be >= 1 for a warm-start run")
    if not cfg.data.train_files:
        raise ValueError("data.train_files is empty: give at least one training file")
    examples, _ = load_split(cfg.data.train_files, cfg.data.on_bad_row)
    targets = [sft_target(ex) for ex in examples]  # raises naming the row without a solution
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.run.seed)
    model, processor = build_or_load_policy(
        cfg.model, seed=cfg.run.seed, device=device, corpus=task_corpus(examples)
    )
    tokenizer = processor.tokenizer
    stop = stop_token_ids(processor)[0]
    prompts = [
        render_prompt(processor, build_messages(ex.question, ex.choices, num_images=len(ex.images)))
        for ex in examples
    ]
    responses = [
        tokenizer(target, add_special_tokens=False)["input_ids"] + [stop] for target in targets
    ]
    images: dict[int, list] = {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.sft.lr, weight_decay=0.0)
    sampler = PromptSampler(len(examples), seed=cfg.run.seed)
    model.train()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.sft.steps, desc="sft")
    with RunWriter.create(cfg.run_dir, cfg.to_dict(), seed=cfg.run.seed) as writer:
        for step in range(1, cfg.sft.steps + 1):
            chosen = sampler.next_batch(cfg.sft.batch_rows)
            for i in chosen:
                if i not in images:
                    images[i] = examples[i].load_images()
            batch = collate(
                processor,
                [prompts[i] for i in chosen],
                [images[i] for i in chosen],
                [responses[i] for i in chosen],
            ).to(device)
            out = policy_forward(model, batch, want_embeddings=False, requires_grad=True)
            mask = batch.response_mask
            loss = -(out.token_logprobs * mask).sum() / mask.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            token_acc = float((out.token_logprobs.detach().exp() > 0.5)[mask].float().mean())
            writer.log_step(
                step,
                {
                    "sft/loss": loss.item(),
                    "sft/token_p_gt_half": token_acc,
                    "grad_norm": float(grad_norm),
                },
            )
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
        if bar is not None:
            bar.close()
        model.eval()
        folder = save_checkpoint(
            cfg.run_dir,
            cfg.sft.steps,
            save_model=lambda out_dir: save_policy(model, processor, out_dir),
            trainer_state={"kind": "sft"},
            keep=1,
        )
    return folder
