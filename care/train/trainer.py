"""The reference RL trainer for CARE and its baselines.

One step reads as the method::

    rollout → verify → old log-probs + rationale embeddings (one forward) → hard negatives
    → RGR repairs → advantages → update → log → checkpoint

Every phase is timed (``time/<phase>`` in ``steps.jsonl``), every step writes the run-log
records of ``docs/run_format.md``, and a checkpoint holds everything needed to continue the run
bit for bit (``--resume``). Multi-process training goes through ``accelerate`` (DDP on CPU or
GPU; FSDP through an accelerate config): each process takes its share of the step's prompts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

from care.algo.grpo import dynamic_sampling_keep
from care.algo.losses import kl_loss, policy_loss
from care.algo.registry import AdvantageBatch, Estimator, EstimatorResult, get_estimator
from care.algo.spans import RegionMasks, region_masks
from care.algo.token_weights import region_token_advantages, uniform_token_advantages
from care.config import ConfigChange, TrainConfig, resume_config_changes
from care.data import DataError, Example, load_examples
from care.metrics.signal import batch_summary, step_signal_metrics
from care.models.policy import collate, policy_forward
from care.models.vlm import save_policy
from care.prompts import build_messages, build_repair_prefix, protocol_texts, render_prompt
from care.rollout.base import RolloutRequest, SamplingParams
from care.runlog import GroupRecord, HardNegative, RgrRecord, RunWriter, SampleRecord
from care.train import lockstep
from care.train.batch import Row, StepBatch
from care.train.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    restore_rng,
    restore_saved_precision,
    save_checkpoint,
)
from care.train.fsdp2 import load_full_optimizer_state
from care.train.policy_setup import build_or_load_policy, context_token_budget, make_engine
from care.train.prompt_budget import over_budget
from care.train.sampler import PromptSampler
from care.train.timing import PhaseTimer
from care.train.trackers import open_trackers, require_trackers
from care.verify import reward as verdict_reward
from care.verify import score, status_fractions

# The reference code decodes repairs with these (docs/algorithm.md section 4, algo.rgr.sampling: reference).
_REFERENCE_RGR_SAMPLING = {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 512}


def task_corpus(examples: Sequence[Example]) -> list[str]:
    """Text the tiny tokenizer learns its merges from: the protocol's fixed text (system prompt,
    tags, option layout, repair cue) and each example's question, options, answer and rationale
    in the response layout. BPE keeps a merge only when its pair occurs at least twice, so the
    protocol text is listed twice."""
    texts = protocol_texts() * 2 + ["system\nuser\nassistant\n"] * 2  # the chat roles
    for ex in examples:
        texts.append(ex.question)
        texts.extend(ex.choices or ())
        solution = ex.extra.get("solution") if ex.extra else None
        texts.append(f"<think>\n{solution or ''}\n</think>\n<answer>{ex.answer}</answer>")
    return texts


def step_seed(seed: int, step: int, stream: int) -> int:
    """A sampling seed that depends only on (run seed, step, stream): resume-safe."""
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1)[0] & 0x7FFFFFFF)


class Trainer:
    """Runs ``cfg.train.steps`` RL steps of the configured estimator.

    Args:
        cfg: the validated config.
        resume: continue from the newest checkpoint in the run folder. ``cfg`` may differ from
            the checkpoint's config only in `care.config.RESUME_SAFE_FIELDS` (else ConfigError
            naming each field); ``config_changes`` lists those differences, also recorded in
            meta.json.
        accelerator: an ``accelerate.Accelerator`` (one is made when None).
        progress: show a progress bar on the main process.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        resume: bool = False,
        accelerator: Accelerator | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.estimator: Estimator = get_estimator(cfg.algo.estimator)
        self.care_cfg = cfg.algo.care.to_care_config()
        device = cfg.train.device
        # "auto" on a machine without CUDA is CPU too: without cpu=True, processes started by
        # torchrun there would not join a process group and would each train alone.
        on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        self.accelerator = accelerator or Accelerator(cpu=on_cpu)
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.is_main = self.accelerator.is_main_process
        fsdp = self.accelerator.distributed_type == DistributedType.FSDP
        if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not fsdp:
            raise ValueError(
                f"the accelerate config asks for FSDP, but with train.device={device!r} "
                f"accelerate set up {self.accelerator.distributed_type.value} instead: accelerate "
                "runs FSDP on GPUs only. On CPU launch with configs/accelerate/ddp_cpu_2proc.yaml"
            )
        if fsdp and not self.accelerator.is_fsdp2:
            raise ValueError(
                "accelerate config: FSDP version 1 is not supported by the trainer (rollout and "
                "checkpoints need FSDP2's unshard and full state dicts); set fsdp_version: 2"
            )
        self.progress = progress and self.is_main and "console" in cfg.train.loggers
        require_trackers(cfg.train.loggers)  # a missing extra fails now, not after model loading
        if cfg.train.mini_batch_prompts % self.world:
            raise ValueError(
                f"train.mini_batch_prompts={cfg.train.mini_batch_prompts} must be divisible by "
                f"the number of processes ({self.world})"
            )
        self.run_dir = cfg.run_dir
        if not cfg.data.train_files:
            raise ValueError("data.train_files is empty: give at least one training file")

        self.examples: list[Example] = []
        self.skipped_rows = 0
        for path in cfg.data.train_files:
            loaded = load_examples(path, on_bad_row=cfg.data.on_bad_row)
            self.examples.extend(loaded.examples)
            self.skipped_rows += len(loaded.skipped)
        # Held-out files are checked now rather than hours into the run, when first evaluated.
        self.test_examples = [
            example
            for path in cfg.data.test_files
            for example in load_examples(path, on_bad_row=cfg.data.on_bad_row).examples
        ]
        self._image_cache: dict[int, list[Any]] = {}
        # The validation split, scored greedily every train.eval_every steps (val/acc).
        self.val_examples = [
            example
            for path in cfg.data.val_files
            for example in load_examples(path, on_bad_row=cfg.data.on_bad_row).examples
        ]

        device = self.accelerator.device
        resume_from = latest_checkpoint(self.run_dir) if resume else None
        if resume and resume_from is None:
            raise FileNotFoundError(f"--resume: no checkpoint under {self.run_dir / 'checkpoints'}")
        state = load_trainer_state(resume_from[1]) if resume_from is not None else None
        # Settings changed since the checkpoint: recorded in meta.json (and printed by the CLI);
        # a change that breaks exact resume raises here, before any model is built.
        self.config_changes: list[ConfigChange] = []
        if state is not None:
            self.config_changes = resume_config_changes(state["config"], cfg, int(state["step"]))
        model_cfg = cfg.model
        if resume_from is not None:
            model_cfg = model_cfg.model_copy(update={"path": str(resume_from[1])})
        corpus = task_corpus(self.examples)
        policy, self.processor = build_or_load_policy(
            model_cfg, seed=cfg.run.seed, device=device, corpus=corpus
        )
        if resume_from is not None:
            # FSDP with bf16 mixed precision saves float32 master weights; loading them as
            # model.dtype would round them.
            restore_saved_precision(policy, resume_from[1])
        self._drop_over_budget_examples()
        self.sampler = PromptSampler(len(self.examples), seed=cfg.run.seed)
        policy.train()
        if cfg.model.gradient_checkpointing:
            policy.gradient_checkpointing_enable()
        self.reference = None
        if cfg.loss.kl_coef and cfg.model.reference_model:
            # The reference is always the run's starting policy, also after a resume.
            self.reference, _ = build_or_load_policy(
                cfg.model, seed=cfg.run.seed, device=device, corpus=corpus
            )
            self.reference.eval().requires_grad_(False)

        optimizer = torch.optim.AdamW(
            policy.parameters(),
            lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay,
            betas=cfg.optim.betas,
        )
        warmup = cfg.optim.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda update: min(1.0, (update + 1) / warmup) if warmup else 1.0
        )
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(
            policy, optimizer, scheduler
        )
        self.policy = self.accelerator.unwrap_model(self.model)
        if self.accelerator.is_fsdp2:
            self._initialise_fsdp_root()
        self.tokenizer = self.processor.tokenizer
        self.engine = make_engine(
            self.policy, self.processor, cfg.rollout, max_model_len=context_token_budget(cfg)
        )
        self.suppress_ids = list(getattr(self.engine, "suppress_token_ids", []))
        self.loss_cfg = cfg.loss.to_policy_loss_config(norm_length=cfg.rollout.max_new_tokens)
        self.start_step = 0
        if state is not None:
            if self.accelerator.is_fsdp2:
                # Saved whole (see save): the main process reads it and broadcasts it, and each
                # process keeps its shard.
                load_full_optimizer_state(
                    self.model,
                    self.optimizer.optimizer,
                    state["optimizer"] if self.is_main else None,
                    is_main=self.is_main,
                )
            else:
                self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.sampler.load_state_dict(state["sampler"])
            restore_rng(state["rng"])
            self.start_step = int(state["step"])
        self.writer: RunWriter | None = None
        if self.is_main:
            if resume_from is not None:
                self.writer = RunWriter.resume(
                    self.run_dir,
                    last_step=self.start_step,
                    config_changes=[c.record(self.start_step) for c in self.config_changes],
                )
            else:
                self.writer = RunWriter.create(self.run_dir, cfg.to_dict(), seed=cfg.run.seed)
            # Tracker mirrors see each step record once the run folder has it (docs/trackers.md).
            resumed_at = self.start_step if resume_from is not None else None
            try:
                trackers = open_trackers(
                    cfg.train.loggers, self.run_dir, cfg.to_dict(), cfg.run.name,
                    resumed_at=resumed_at,
                )  # fmt: skip
            except BaseException:
                self.writer.finish("crashed")
                raise
            self.writer.add_observer(trackers)
        sync = torch.cuda.synchronize if device.type == "cuda" else None
        self.timer = PhaseTimer(sync)

    # ------------------------------------------------------------------------------------------
    # The loop

    def fit(self) -> Path:
        """Train to ``cfg.train.steps``; returns the run folder."""
        cfg = self.cfg
        steps = range(self.start_step + 1, cfg.train.steps + 1)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.train.steps, initial=self.start_step, desc=cfg.algo.estimator)
        every = cfg.train.eval_every
        try:
            if every and self.start_step == 0 and self.writer is not None:
                # Step 0: the starting policy, before any update, so a curve starts where
                # training did.
                self.writer.log_step(0, self.validate())
            elif every and self.start_step == 0:
                self.validate()  # every process takes its share of the split
            for step in steps:
                metrics = self.train_step(step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        reward=f"{metrics.get('reward/mean', float('nan')):.3f}",
                        acc=f"{metrics.get('acc/mean', float('nan')):.3f}",
                        fail_share=f"{metrics.get('signal/failure_share_seq', float('nan')):.2f}",
                    )
                last = step == cfg.train.steps
                if last or (cfg.train.save_every and step % cfg.train.save_every == 0):
                    self.save(step)
        except BaseException:
            if self.writer is not None:
                self.writer.finish("crashed")
            raise
        finally:
            if bar is not None:
                bar.close()
        if self.writer is not None:
            self.writer.finish("finished")
        return self.run_dir

    def train_step(self, step: int) -> dict[str, float]:
        """One step of rollout → … → update; logs its records and returns the step metrics."""
        self.timer.reset()
        with self._full_weights():
            with self.timer("rollout"):
                batch, dapo_stats, rows_count = self._rollout_with_filter(step)
            with self.timer("old_logp_embed"):
                self._old_logprobs_and_embeddings(batch, range(len(batch)))
            with self.timer("advantage"):
                first = self._advantages(batch) if self.estimator.uses_rgr else None
            if self.estimator.uses_rgr and self.cfg.algo.rgr.enable:
                with self.timer("rgr"):
                    self._rgr(batch, first, step)
        with self.timer("advantage"):
            result = self._advantages(batch)
            self._token_advantages(batch, result)
        with self.timer("update"):
            if dapo_stats.get("dapo/kept_groups") == 0.0:
                # DAPO found no group with reward variance on any process: an update would only
                # apply weight decay and stale momentum, so the step is logged and skipped.
                update_metrics = {"update/skipped": 1.0}
            else:
                update_metrics = self._update(batch, rows_count=rows_count)
        self.engine.sync_weights(self.policy)
        with self.timer("log"):
            metrics = self._log(step, batch, result, update_metrics, dapo_stats)
        every = self.cfg.train.eval_every
        if every and (step % every == 0 or step == self.cfg.train.steps):
            with self.timer("validate"):
                metrics.update(self.validate())
        # The step record is written last so its timings include the log phase itself.
        metrics.update(self.timer.metrics())
        if self.writer is not None:
            self.writer.log_step(step, metrics)
        return metrics

    def validate(self) -> dict[str, float]:
        """Greedy accuracy of the current policy on ``data.val_files``, with the training prompt
        template and verifier: ``val/acc``, ``val/acc/<family>`` and ``val/acc/difficulty_<k>``
        (from each row's ``family`` and ``difficulty`` fields, when it has them), ``val/fmt`` and
        ``val/n``. Each process scores its share of the split; the main process returns the
        totals (the others an empty dict).

        Example: 600 rows, 300 counting of which 150 right and 300 bar_chart of which 90 right
        → ``{"val/acc": 0.4, "val/acc/counting": 0.5, "val/acc/bar_chart": 0.3, ...}``.
        """
        mine = list(range(self.rank, len(self.val_examples), self.world))
        params = SamplingParams(
            temperature=0.0, max_new_tokens=self.cfg.rollout.max_new_tokens, n=1
        )
        outcomes: list[tuple[str | None, Any, float, float]] = []
        was_training = self.model.training
        self.model.eval()
        with self._full_weights():
            for start in range(0, len(mine), self.cfg.rollout.batch_rows):
                chunk = [self.val_examples[i] for i in mine[start : start + self.cfg.rollout.batch_rows]]
                requests = [
                    RolloutRequest(prompt=self._prompt_for(ex), images=ex.load_images())
                    for ex in chunk
                ]
                for ex, samples in zip(chunk, self.engine.generate(requests, params), strict=True):
                    verdict = score(
                        samples[0].text,
                        ex.answer,
                        ex.choices,
                        ex.answer_type,
                        truncated=samples[0].finish_reason == "length",
                        time_limit=self.cfg.algo.reward.verify_time_limit,
                    )
                    extra = ex.extra or {}
                    outcomes.append(
                        (extra.get("family"), extra.get("difficulty"), verdict.acc, verdict.fmt)
                    )
        if was_training:
            self.model.train()
        gathered = gather_object([outcomes]) if self.world > 1 else [outcomes]
        if not self.is_main:
            return {}
        everything = [item for part in gathered for item in part]
        return _validation_metrics(everything)

    def _initialise_fsdp_root(self) -> None:
        """One text-only, no-grad forward through the whole model on every process.

        FSDP2 makes the first module that runs forward its root. transformers' generate()
        (>= 5.18) encodes the images before any forward through the whole model, so a vision
        block would become root and the next forward fail ("FSDP state has already been lazily
        initialized"). Registering generate() as an FSDP forward method does not do: it nests
        root forwards, and the outer one reshards the root's parameters after every call.
        """
        token = torch.tensor(
            [[self.processor.tokenizer.pad_token_id]], device=self.accelerator.device
        )
        with torch.no_grad():
            self.model(input_ids=token, use_cache=False)
        # The root (and the units of tied weights) keep their parameters unsharded after
        # forward; the optimizer, and loading its state on resume, work on the shards.
        from torch.distributed.fsdp import FSDPModule

        for module in self.model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()

    @contextmanager
    def _full_weights(self) -> Iterator[None]:
        """Whole weights on every process for rollout and no-grad scoring.

        Under FSDP2 the shards are gathered once here and kept through every forward: the
        processes generate different numbers of tokens and score different numbers of rows, so
        per-forward all-gathers would deadlock. DDP and one process hold whole weights already.
        """
        if not self.accelerator.is_fsdp2:
            yield
            return
        from torch.distributed.fsdp import FSDPModule

        sharded = [m for m in self.model.modules() if isinstance(m, FSDPModule)]
        for module in sharded:
            module.unshard()
        self.model.set_reshard_after_forward(False)
        try:
            yield
        finally:
            for module in sharded:
                module.reshard()
            reshard = self.accelerator.state.fsdp_plugin.reshard_after_forward
            self.model.set_reshard_after_forward(reshard)
            # FSDP keeps the root unsharded after forward (its default): the backward needs it.
            self.model.set_reshard_after_forward(False, recurse=False)

    def _drop_over_budget_examples(self) -> None:
        """Apply ``data.max_prompt_tokens`` (and, for vLLM, its image limit) to every training
        example: bad rows under ``data.on_bad_row`` (``skip`` counts them in
        ``data/skipped_rows``)."""
        cfg = self.cfg
        limit = cfg.rollout.vllm.limit_images_per_prompt if cfg.rollout.engine == "vllm" else None
        bad = over_budget(
            self.examples,
            self.processor,
            self._prompt_for,
            max_prompt_tokens=cfg.data.max_prompt_tokens,
            max_images=limit,
        )
        if not bad:
            return
        if cfg.data.on_bad_row == "error":
            listed = "\n  ".join(str(item) for item in bad[:20])
            more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise DataError(
                f"{len(bad)} training example(s) exceed the prompt limits (set "
                f"data.on_bad_row: skip to leave them out):\n  {listed}{more}"
            )
        dropped = {id(item.example) for item in bad}
        self.examples = [example for example in self.examples if id(example) not in dropped]
        self.skipped_rows += len(bad)
        if not self.examples:
            raise DataError("every training example exceeds the prompt limits; nothing to train")

    # ------------------------------------------------------------------------------------------
    # Rollout and verification

    def _prompt_for(self, example: Example) -> str:
        messages = build_messages(example.question, example.choices, num_images=len(example.images))
        return render_prompt(self.processor, messages)

    def _images_for(self, index: int) -> list[Any]:
        if index not in self._image_cache:
            self._image_cache[index] = self.examples[index].load_images()
        return self._image_cache[index]

    def _rollout_groups(self, indices: list[int], step: int, stream: int) -> StepBatch:
        cfg = self.cfg
        examples = [self.examples[i] for i in indices]
        requests = [
            RolloutRequest(prompt=self._prompt_for(ex), images=self._images_for(i))
            for i, ex in zip(indices, examples, strict=True)
        ]
        params = SamplingParams(
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens,
            n=cfg.rollout.n,
            seed=step_seed(cfg.run.seed, step, stream * self.world + self.rank),
        )
        outputs = self.engine.generate(requests, params)
        batch = StepBatch(examples=examples)
        for group, (request, samples) in enumerate(zip(requests, outputs, strict=True)):
            for index, out in enumerate(samples):
                batch.rows.append(
                    Row(
                        group=group,
                        prompt=request.prompt,
                        images=list(request.images),
                        prefix="",
                        response_ids=list(out.response_ids),
                        text=out.text,
                        sampler_logprobs=list(out.logprobs),
                        finish_reason=out.finish_reason,
                        index_in_group=index,
                    )
                )
        self._verify(batch, batch.rows)
        return batch

    def _verify(self, batch: StepBatch, rows: Sequence[Row]) -> None:
        weight = self.cfg.algo.reward.format_weight
        for row in rows:
            ex = batch.examples[row.group]
            verdict = score(
                row.prefix + row.text,
                ex.answer,
                ex.choices,
                ex.answer_type,
                truncated=row.finish_reason == "length",
                time_limit=self.cfg.algo.reward.verify_time_limit,
            )
            row.verdict = verdict
            row.reward = verdict_reward(verdict, weight)

    def _local_prompt_indices(self, count: int) -> list[int]:
        """This process's share of the next ``count`` prompts (all processes draw the same list)."""
        indices = self.sampler.next_batch(count)
        return indices[self.rank :: self.world]

    def _rollout_with_filter(self, step: int) -> tuple[StepBatch, dict[str, float], bool]:
        """Sample the step's groups; DAPO drops zero-variance groups and refills from new prompts.

        Returns ``(batch, dapo stats, rows count)``: the stats sum over every process, and
        ``rows count`` is False where DAPO kept no group on this process (its rows then only
        keep it in step with the others).

        Refill rounds run in lockstep: while ANY process still lacks groups, every process
        draws the round's prompts, so the sampler cursor (and the checkpoint, which holds the
        main process's) stays the same on all of them and no prompt goes to two processes. A
        process that is already full leaves its share of the round unsampled
        (``dapo/passed_prompts``), as one process leaves the groups beyond its target.
        """
        cfg = self.cfg
        batch = self._rollout_groups(
            self._local_prompt_indices(cfg.train.prompts_per_step), step, 0
        )
        if not self.estimator.dynamic_sampling:
            return batch, {}, True
        wanted = cfg.train.prompts_per_step // self.world
        kept = self._keep_varied_groups(batch)
        rounds, drawn, passed = 0, len(batch.examples), 0
        while rounds < cfg.algo.dapo.max_refill_rounds and lockstep.any_process(
            len(kept.examples) < wanted, self.accelerator
        ):
            rounds += 1
            indices = self._local_prompt_indices(cfg.train.prompts_per_step)
            if len(kept.examples) >= wanted:
                passed += len(indices)
                continue
            more = self._rollout_groups(indices, step, rounds)
            drawn += len(more.examples)
            kept = _concat_groups(kept, self._keep_varied_groups(more), limit=wanted)
        kept_here = len(kept.examples)
        totals = lockstep.sum_over_processes([kept_here, drawn, passed], self.accelerator)
        stats = {
            "dapo/kept_groups": totals[0],
            "dapo/drawn_groups": totals[1],
            "dapo/passed_prompts": totals[2],
            "dapo/refill_rounds": float(rounds),
        }
        if not kept.rows:
            # Nothing varied: keep the first draw (its advantages are all zero) so every
            # process still steps in lockstep; train_step skips the update when no process kept any.
            kept = batch
        return kept, stats, kept_here > 0

    def _keep_varied_groups(self, batch: StepBatch) -> StepBatch:
        rewards = torch.tensor([row.reward for row in batch.rows])
        groups = batch.column("group", torch.long)
        keep = dynamic_sampling_keep(rewards, groups, self.cfg.algo.dapo.variance_tolerance)
        kept_groups = sorted(
            {row.group for row, k in zip(batch.rows, keep.tolist(), strict=True) if k}
        )
        return _select_groups(batch, kept_groups)

    # ------------------------------------------------------------------------------------------
    # Old log-probs, rationale embeddings, spans

    def _micro_batches(self, rows: Sequence[int]) -> list[list[int]]:
        size = self.cfg.train.micro_batch_rows
        rows = list(rows)
        return [rows[i : i + size] for i in range(0, len(rows), size)]

    def _collate(self, batch: StepBatch, rows: Sequence[int]):
        selected = [batch.rows[i] for i in rows]
        device = self.accelerator.device
        policy_batch = collate(
            self.processor,
            [row.prompt for row in selected],
            [row.images for row in selected],
            [row.response_ids for row in selected],
            assistant_prefixes=[row.prefix for row in selected],
        )
        return policy_batch.to(device)

    def _old_logprobs_and_embeddings(self, batch: StepBatch, rows: Sequence[int]) -> None:
        """Old log-probs AND rationale embeddings of ``rows`` in one forward (no grad); also the
        tag regions of each response. Results land in ``batch.per_row``."""
        rows = list(rows)
        if not rows:
            return
        want_embeddings = self.estimator.needs_embeddings
        for chunk in self._micro_batches(rows):
            policy_batch = self._collate(batch, chunk)
            regions = region_masks(
                self.tokenizer, policy_batch.response_ids.cpu(), policy_batch.response_mask.cpu()
            )
            out = policy_forward(
                self.policy,
                policy_batch,
                want_embeddings=want_embeddings,
                think_mask=regions.think_mask.to(policy_batch.response_ids.device),
                temperature=self._logprob_temperature,
                suppress_token_ids=self.suppress_ids,
            )
            ref = None
            if self.reference is not None:
                ref = policy_forward(
                    self.reference,
                    policy_batch,
                    want_embeddings=False,
                    temperature=self._logprob_temperature,
                    suppress_token_ids=self.suppress_ids,
                ).token_logprobs
            self._store_rows(
                batch, chunk, policy_batch, regions, out.token_logprobs, out.embeddings, ref
            )

    @property
    def _logprob_temperature(self) -> float:
        # Greedy rollouts have no temperature; score them under the plain distribution.
        return self.cfg.rollout.temperature or 1.0

    def _store_rows(
        self,
        batch: StepBatch,
        rows: list[int],
        policy_batch: Any,
        regions: RegionMasks,
        old_logp: torch.Tensor,
        embeddings: torch.Tensor | None,
        ref_logp: torch.Tensor | None,
    ) -> None:
        store = batch.per_row
        mask = policy_batch.response_mask.cpu()
        for k, row in enumerate(rows):
            length = int(mask[k].sum())
            entry = {
                "old_logp": old_logp[k, :length].detach().cpu(),
                "think_mask": regions.think_mask[k, :length],
                "answer_mask": regions.answer_mask[k, :length],
                "think_len": int(regions.think_len[k]),
                "answer_len": int(regions.answer_len[k]),
                "embedding": None if embeddings is None else embeddings[k].detach().cpu(),
                "ref_logp": None if ref_logp is None else ref_logp[k, :length].detach().cpu(),
            }
            store[row] = entry

    # ------------------------------------------------------------------------------------------
    # RGR

    def _rgr(self, batch: StepBatch, first: EstimatorResult, step: int) -> None:
        """Repair the nearest hard negative of every anchored group and append the repairs."""
        cfg = self.cfg
        assert first.care is not None
        sources = first.care.rgr_sources().tolist()
        if not sources:
            return
        rgr = cfg.algo.rgr
        if rgr.sampling == "reference":
            sampling = dict(_REFERENCE_RGR_SAMPLING)
        else:
            sampling = {
                "temperature": cfg.rollout.temperature,
                "top_p": cfg.rollout.top_p,
                "max_new_tokens": cfg.rollout.max_new_tokens,
            }
        if rgr.max_new_tokens is not None:
            sampling["max_new_tokens"] = rgr.max_new_tokens
        prefixes = [build_repair_prefix(batch.rows[src].text) for src in sources]
        requests = [
            RolloutRequest(
                prompt=batch.rows[src].prompt,
                images=batch.rows[src].images,
                assistant_prefix=prefix,
            )
            for src, prefix in zip(sources, prefixes, strict=True)
        ]
        params = SamplingParams(
            n=1, seed=step_seed(cfg.run.seed, step, 1_000 + self.rank), **sampling
        )
        outputs = self.engine.generate(requests, params)
        new_rows = []
        for src, prefix, samples in zip(sources, prefixes, outputs, strict=True):
            out = samples[0]
            source = batch.rows[src]
            row = Row(
                group=source.group,
                prompt=source.prompt,
                images=source.images,
                prefix=prefix if rgr.train_on == "continuation" else "",
                response_ids=list(out.response_ids),
                text=out.text,
                sampler_logprobs=list(out.logprobs),
                finish_reason=out.finish_reason,
                reflected_from=src,
            )
            new_rows.append(row)
        # The verdict always reads the whole repaired response (repair context + continuation).
        weight = cfg.algo.reward.format_weight
        for row, prefix in zip(new_rows, prefixes, strict=True):
            ex = batch.examples[row.group]
            row.verdict = score(
                prefix + row.text,
                ex.answer,
                ex.choices,
                ex.answer_type,
                truncated=row.finish_reason == "length",
                time_limit=cfg.algo.reward.verify_time_limit,
            )
            row.reward = verdict_reward(row.verdict, weight)
        start = len(batch.rows)
        batch.rows.extend(new_rows)
        self._old_logprobs_and_embeddings(batch, range(start, len(batch.rows)))

    # ------------------------------------------------------------------------------------------
    # Advantages

    def _advantages(self, batch: StepBatch) -> EstimatorResult:
        per_row = batch.per_row
        n = len(batch.rows)
        reflected = batch.column("reflected_from", torch.long)
        embeddings = None
        if self.estimator.needs_embeddings:
            # An RGR row is never an anchor or negative candidate; it carries its source's
            # embedding only so the tensor is dense.
            embeddings = torch.stack(
                [
                    per_row[i]["embedding"]
                    if reflected[i] < 0
                    else per_row[int(reflected[i])]["embedding"]
                    for i in range(n)
                ]
            )
        advantage_batch = AdvantageBatch(
            rewards=torch.tensor([row.reward for row in batch.rows], dtype=torch.float32),
            correct=batch.verdict_column("acc"),
            group_index=batch.column("group", torch.long),
            think_len=torch.tensor([per_row[i]["think_len"] for i in range(n)]),
            answer_len=torch.tensor([per_row[i]["answer_len"] for i in range(n)]),
            embeddings=embeddings,
            old_logprob_sum=torch.stack([per_row[i]["old_logp"].sum() for i in range(n)]).float(),
            reflected_from=reflected if bool((reflected >= 0).any()) else None,
            response_len=torch.tensor([len(row.response_ids) for row in batch.rows]),
        )
        return self.estimator.advantages(advantage_batch, self.care_cfg)

    def _token_advantages(self, batch: StepBatch, result: EstimatorResult) -> None:
        per_row = batch.per_row
        correct = batch.verdict_column("acc")
        for i in range(len(batch.rows)):
            entry = per_row[i]
            length = entry["old_logp"].shape[0]
            seq_adv = result.advantages[i : i + 1].float()
            mask = torch.ones(1, length, dtype=torch.bool)
            if self.cfg.algo.token_weighting == "region":
                token_adv = region_token_advantages(
                    seq_adv,
                    correct[i : i + 1],
                    entry["think_mask"][None],
                    entry["answer_mask"][None],
                    mask,
                    gamma_pos=self.cfg.algo.gamma_pos,
                )
            else:
                token_adv = uniform_token_advantages(seq_adv, mask)
            entry["token_adv"] = token_adv[0]

    # ------------------------------------------------------------------------------------------
    # Update

    def _mini_batches(self, batch: StepBatch) -> list[list[int]]:
        """Rows split into the step's optimizer updates by prompt group (RGR rows with theirs)."""
        n_updates = self.cfg.train.prompts_per_step // self.cfg.train.mini_batch_prompts
        groups = sorted({row.group for row in batch.rows})
        parts = np.array_split(np.array(groups, dtype=int), n_updates)
        out = []
        for part in parts:
            chosen = set(part.tolist())
            out.append([i for i, row in enumerate(batch.rows) if row.group in chosen])
        return out

    def _mini_batch_plan(self, batch: StepBatch, rows: list[int]) -> tuple[float, float, int]:
        """``(pg_denominator, kl_denominator, micro_batch_count)`` of one mini-batch spread over
        the processes (one gather).

        DDP and FSDP average gradients over processes, so each process divides its loss sums by
        the MEAN of the processes' denominators: the average of the processes' gradients is then
        the gradient of the whole mini-batch's mean, as one process would compute it, also when
        the processes hold different numbers of tokens or rows. The micro-batch count is the
        busiest process's, so every process runs the same number of passes.
        """
        per_row = batch.per_row
        local = [
            self._denominator(per_row, rows, self.cfg.loss.count_zero_adv_rows),
            self._denominator(per_row, rows, True),
            float(len(self._micro_batch_parts(batch, rows))),
        ]
        plan = torch.tensor([local], dtype=torch.float64, device=self.accelerator.device)
        if self.world > 1:
            plan = self.accelerator.gather(plan)
        return float(plan[:, 0].mean()), float(plan[:, 1].mean()), int(plan[:, 2].max())

    def _micro_batch_parts(self, batch: StepBatch, rows: list[int]) -> list[list[int]]:
        """``rows`` in micro-batches of at most ``micro_batch_rows``, ordinary rows and RGR
        repairs apart, each in length order.

        A micro-batch is padded to its longest context + response, and a repair's context holds
        the prompt plus the failed reasoning and the repair cue: one repair among ordinary rows
        pads all of them (measured: +50 % update time for +5 % rows)."""
        size = self.cfg.train.micro_batch_rows
        parts: list[list[int]] = []
        for repairs in (False, True):
            subset = sorted(
                (i for i in rows if bool(batch.rows[i].prefix) == repairs),
                key=lambda i: (len(batch.rows[i].prefix), len(batch.rows[i].response_ids)),
            )
            if subset:
                count = math.ceil(len(subset) / size)
                parts.extend(p.tolist() for p in np.array_split(np.array(subset, dtype=int), count))
        return parts

    def _equal_micro_batches(
        self, batch: StepBatch, rows: list[int], count: int
    ) -> list[list[int]]:
        """This process's micro-batches padded with empty ones to exactly ``count``: DDP
        all-reduces on the synced backward and FSDP all-gathers in every forward, so every
        process must run the same number of passes."""
        parts = self._micro_batch_parts(batch, rows)
        return parts + [[] for _ in range(count - len(parts))]

    def _update(self, batch: StepBatch, *, rows_count: bool = True) -> dict[str, float]:
        """The step's optimizer updates; returns the loss metrics of all processes' rows.

        ``rows_count=False`` (DAPO kept no group on this process): the rows only keep this
        process in step with the others and add nothing to the gradient or its denominators.
        """
        cfg = self.cfg
        per_row = batch.per_row
        totals: dict[str, float] = {}
        weights_seen: dict[str, float] = {}
        grad_norms, entropies, rates = [], [], []
        self.model.train()
        for _ in range(cfg.train.ppo_epochs):
            for mini in self._mini_batches(batch):
                mini = mini if rows_count else []
                pg_denominator, kl_denominator, count = self._mini_batch_plan(batch, mini)
                if count == 0:
                    continue  # no process has rows in this mini-batch: all skip it together
                micro_batches = self._equal_micro_batches(batch, mini, count)
                for index, micro in enumerate(micro_batches):
                    # A process with nothing left in this mini-batch still joins the collectives,
                    # with a zero-weight pass over its first row.
                    padding = not micro
                    counted = micro
                    micro = micro or [0]
                    policy_batch = self._collate(batch, micro)
                    device = policy_batch.response_ids.device
                    length = policy_batch.response_ids.shape[1]
                    old_logp = _pad_stack([per_row[i]["old_logp"] for i in micro], length).to(
                        device
                    )
                    token_adv = _pad_stack([per_row[i]["token_adv"] for i in micro], length).to(
                        device
                    )
                    answer_mask = _pad_stack(
                        [per_row[i]["answer_mask"] for i in micro], length, dtype=torch.bool
                    ).to(device)
                    sync = index == len(micro_batches) - 1
                    context = self.accelerator.no_sync(self.model) if not sync else nullcontext()
                    with context:
                        out = policy_forward(
                            self.model,
                            policy_batch,
                            want_embeddings=False,
                            requires_grad=True,
                            want_entropy=True,
                            temperature=self._logprob_temperature,
                            suppress_token_ids=self.suppress_ids,
                        )
                        mask = policy_batch.response_mask
                        pg = policy_loss(
                            out.token_logprobs,
                            old_logp,
                            token_adv,
                            mask,
                            self.loss_cfg,
                            answer_mask,
                        )
                        pg_weight = self._micro_share(
                            per_row, counted, pg_denominator, cfg.loss.count_zero_adv_rows
                        )
                        loss = pg.loss * pg_weight
                        metrics = dict(pg.metrics)
                        if self.reference is not None:
                            ref_logp = _pad_stack(
                                [per_row[i]["ref_logp"] for i in micro], length
                            ).to(device)
                            kl = kl_loss(
                                out.token_logprobs,
                                ref_logp,
                                mask,
                                estimator=cfg.loss.kl_estimator,
                                aggregation=self.loss_cfg.aggregation,
                                norm_length=self.loss_cfg.norm_length,
                            )
                            kl_weight = self._micro_share(per_row, counted, kl_denominator, True)
                            loss = loss + cfg.loss.kl_coef * kl.loss * kl_weight
                            metrics.update(kl.metrics)
                        self.accelerator.backward(loss)
                    if padding:
                        continue
                    tokens = float(mask.sum())
                    entropies.append((float((out.entropy * mask).sum()), tokens))
                    for key, value in metrics.items():
                        if value is None or (isinstance(value, float) and math.isnan(value)):
                            continue
                        totals[key] = totals.get(key, 0.0) + value * tokens
                        weights_seen[key] = weights_seen.get(key, 0.0) + tokens
                grad_norm = self.accelerator.clip_grad_norm_(
                    self.model.parameters(), cfg.optim.grad_clip
                )
                grad_norms.append(float(grad_norm))
                # The rate this update applies (the scheduler moves it on right after).
                rates.append(float(self.optimizer.param_groups[0]["lr"]))
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        entropy_sum = sum(e for e, _ in entropies)
        entropy_tokens = sum(t for _, t in entropies)
        if self.world > 1:
            # The logged losses describe every process's rows, not only the main process's.
            parts = gather_object([(totals, weights_seen, entropy_sum, entropy_tokens)])
            totals, weights_seen, entropy_sum, entropy_tokens = {}, {}, 0.0, 0.0
            for part_totals, part_weights, part_entropy, part_tokens in parts:
                for key, value in part_totals.items():
                    totals[key] = totals.get(key, 0.0) + value
                    weights_seen[key] = weights_seen.get(key, 0.0) + part_weights[key]
                entropy_sum += part_entropy
                entropy_tokens += part_tokens
        metrics = {key: totals[key] / weights_seen[key] for key in totals}
        metrics["grad_norm"] = float(np.mean(grad_norms)) if grad_norms else float("nan")
        metrics["entropy"] = entropy_sum / entropy_tokens if entropy_tokens else float("nan")
        # The mean rate of the step's updates (they differ only while a warm-up is running).
        metrics["lr"] = float(np.mean(rates)) if rates else float("nan")
        return metrics

    def _denominator(
        self, per_row: dict[int, dict[str, Any]], rows: list[int], count_zero: bool
    ) -> float:
        """Tokens (token_mean) or rows (sequence means) that ``rows`` contribute to a mean."""
        total = 0.0
        for i in rows:
            entry = per_row[i]
            n_tokens = entry["old_logp"].shape[0]
            if n_tokens == 0:
                continue
            if not count_zero and not bool((entry["token_adv"] != 0).any()):
                continue
            total += n_tokens if self.loss_cfg.aggregation == "token_mean" else 1.0
        return total

    def _micro_share(
        self,
        per_row: dict[int, dict[str, Any]],
        rows: list[int],
        denominator: float,
        count_zero: bool,
    ) -> float:
        """This micro-batch's share of the mini-batch denominator: the factor that turns its
        micro-batch mean into its part of the mini-batch mean."""
        if denominator == 0:
            return 0.0
        return self._denominator(per_row, rows, count_zero) / denominator

    # ------------------------------------------------------------------------------------------
    # Logging and checkpoints

    def _log(
        self,
        step: int,
        batch: StepBatch,
        result: EstimatorResult,
        update_metrics: dict[str, float],
        dapo_stats: dict[str, float],
    ) -> dict[str, float]:
        rgr_on = self.estimator.uses_rgr and bool(self.cfg.algo.rgr.enable)
        payload = _row_payload(step, batch, result, self.rank, rgr_on)
        gathered = gather_object([payload]) if self.world > 1 else [payload]
        metrics: dict[str, float] = {}
        if self.is_main:
            merged = _merge_payloads(gathered)
            metrics.update(
                _step_metrics(
                    merged, self.care_cfg.rescue_enable and self.estimator.needs_embeddings
                )
            )
            metrics.update(update_metrics)
            metrics.update(dapo_stats)
            metrics["data/skipped_rows"] = float(self.skipped_rows)
            assert self.writer is not None
            self.writer.log_groups(step, merged["groups"])
            every = self.cfg.train.log_samples_every
            if every and step % every == 0:
                self.writer.log_samples(step, merged["samples"])
        return metrics

    def save(self, step: int) -> Path | None:
        """Write ``checkpoints/step_<step>`` (main process) and wait for every process."""
        path = None
        model_state = None
        if self.accelerator.is_fsdp2:
            # Every process takes part in gathering the shards into whole tensors on the main one.
            model_state = self.accelerator.get_state_dict(self.model)
            optimizer_state = get_optimizer_state_dict(
                self.model,
                self.optimizer.optimizer,
                options=StateDictOptions(full_state_dict=True, cpu_offload=True),
            )
        else:
            optimizer_state = self.optimizer.state_dict()
        if self.is_main:
            state = {
                "optimizer": optimizer_state,
                "scheduler": self.scheduler.state_dict(),
                "sampler": self.sampler.state_dict(),
                "config": self.cfg.to_dict(),
            }
            path = save_checkpoint(
                self.run_dir,
                step,
                save_model=lambda folder: self._save_model(folder, model_state),
                trainer_state=state,
                keep=self.cfg.train.keep_checkpoints,
            )
        self.accelerator.wait_for_everyone()
        return path

    def _save_model(self, folder: Path, model_state: dict[str, torch.Tensor] | None) -> None:
        if model_state is None:
            save_policy(self.policy, self.processor, folder)
            return
        self.policy.save_pretrained(str(folder), state_dict=model_state)
        self.processor.save_pretrained(str(folder))


# ----------------------------------------------------------------------------------------------
# Helpers (pure functions of a step's rows)


def _validation_metrics(outcomes: Sequence[tuple[str | None, Any, float, float]]) -> dict[str, float]:
    """``val/*`` metrics from (family, difficulty, acc, fmt) per validation row."""
    metrics = {
        "val/acc": float(np.mean([acc for _, _, acc, _ in outcomes])),
        "val/fmt": float(np.mean([fmt for _, _, _, fmt in outcomes])),
        "val/n": float(len(outcomes)),
    }
    for position, name in ((0, "val/acc/{}"), (1, "val/acc/difficulty_{}")):
        groups: dict[Any, list[float]] = {}
        for outcome in outcomes:
            if outcome[position] is not None:
                groups.setdefault(outcome[position], []).append(outcome[2])
        for key in sorted(groups, key=str):
            metrics[name.format(key)] = float(np.mean(groups[key]))
    return metrics


def _pad_stack(
    values: list[torch.Tensor], length: int, dtype: torch.dtype | None = None
) -> torch.Tensor:
    dtype = dtype or values[0].dtype
    out = torch.zeros(len(values), length, dtype=dtype)
    for i, value in enumerate(values):
        out[i, : value.shape[0]] = value.to(dtype)
    return out


def _select_groups(batch: StepBatch, groups: list[int]) -> StepBatch:
    remap = {old: new for new, old in enumerate(groups)}
    out = StepBatch(examples=[batch.examples[g] for g in groups])
    for row in batch.rows:
        if row.group in remap:
            out.rows.append(_regroup(row, remap[row.group]))
    return out


def _concat_groups(first: StepBatch, second: StepBatch, limit: int) -> StepBatch:
    room = max(0, limit - len(first.examples))
    second = _select_groups(second, list(range(min(room, len(second.examples)))))
    offset = len(first.examples)
    out = StepBatch(examples=first.examples + second.examples, rows=list(first.rows))
    out.rows.extend(_regroup(row, row.group + offset) for row in second.rows)
    return out


def _regroup(row: Row, group: int) -> Row:
    fields = {**row.__dict__, "group": group}
    return Row(**fields)


def _row_payload(
    step: int, batch: StepBatch, result: EstimatorResult, rank: int, rgr_enabled: bool
) -> dict[str, Any]:
    """Everything the logs need about this process's rows: per-row lists for the step metrics,
    and the step's typed group and sample records (``care.runlog.GroupRecord``/``SampleRecord``,
    whose checks run here, so a malformed record stops the step before anything is written)."""
    per_row = batch.per_row
    care = result.care
    rows = batch.rows
    payload: dict[str, Any] = {
        "rank": rank,
        "group": [row.group for row in rows],
        "reflected_from": [row.reflected_from for row in rows],
        "advantages": result.advantages.tolist(),
        "token_abs_sum": [float(per_row[i]["token_adv"].abs().sum()) for i in range(len(rows))],
        "correct": [bool(row.verdict.acc) for row in rows],
        "format": [bool(row.verdict.fmt) for row in rows],
        "verdict": [row.verdict for row in rows],
        "reward": [row.reward for row in rows],
        "response_len": [len(row.response_ids) for row in rows],
        "rescued": care.rescued.tolist() if care is not None else [False] * len(rows),
        "groups": [
            _group_record(step, batch, result, group, rgr_enabled)
            for group in range(len(batch.examples))
        ],
        "samples": [
            SampleRecord(
                step=step,
                group_id=row.group,
                index=row.index_in_group,
                prompt_id=batch.examples[row.group].id,
                question=batch.examples[row.group].question,
                response=row.text,
                repair_prefix=row.prefix or None,
                reflected_from=row.reflected_from,
                reward=float(row.reward),
                correct=bool(row.verdict.acc),
                format=bool(row.verdict.fmt),
                extracted=row.verdict.extracted,
                advantage=float(result.advantages[i]),
                finish_reason=row.finish_reason,
            )
            for i, row in enumerate(rows)
        ],
    }
    return payload


def _group_record(
    step: int, batch: StepBatch, result: EstimatorResult, group: int, rgr_enabled: bool
) -> GroupRecord:
    """The groups.jsonl record of one prompt group of this process's batch."""
    rows = batch.rows
    care = result.care
    members = [i for i, row in enumerate(rows) if row.group == group and row.reflected_from < 0]
    repair = [i for i, row in enumerate(rows) if row.group == group and row.reflected_from >= 0]
    position = {row_index: k for k, row_index in enumerate(members)}
    fields: dict[str, Any] = {
        "anchor_index": None,
        "hard_negatives": (),
        "k_prime": 0,
        "rescued": False,
        "pseudo_anchor": None,
        "rescue_impossible": False,
        "rgr": None,
    }
    if care is not None and members:
        anchors = [i for i in members if bool(care.is_anchor[i])]
        rescued = bool(care.rescued[members[0]])
        picked = sorted(
            (int(care.picked_rank[i]), i) for i in members if int(care.picked_rank[i]) >= 0
        )
        fields.update(
            anchor_index=position[anchors[0]] if anchors and not rescued else None,
            hard_negatives=tuple(
                HardNegative(position[i], float(care.anchor_distance[i])) for _, i in picked
            ),
            k_prime=int(care.k_prime[members[0]]),
            rescued=rescued,
            pseudo_anchor=position[anchors[0]] if anchors and rescued else None,
            rescue_impossible=bool(care.rescue_impossible[members[0]]),
        )
    if rgr_enabled and care is not None:
        if repair:
            r = repair[0]
            source = rows[r].reflected_from
            fields["rgr"] = RgrRecord(
                triggered=True,
                passed=bool(rows[r].verdict.acc),
                source_index=position[source],
                source_len=len(rows[source].response_ids),
                repair_len=len(rows[r].response_ids),
                reward=float(rows[r].reward),
                advantage=float(result.advantages[r]),
            )
        else:
            fields["rgr"] = RgrRecord(triggered=False)
    return GroupRecord(
        step=step,
        group_id=group,
        prompt_id=batch.examples[group].id,
        G=len(members),
        n_correct=sum(bool(rows[i].verdict.acc) for i in members),
        advantages=[float(result.advantages[i]) for i in members],
        rewards=[float(rows[i].reward) for i in members],
        correct=[bool(rows[i].verdict.acc) for i in members],
        **fields,
    )


def _merge_payloads(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """One whole-batch view from every process's rows: group ids and row references offset."""
    payloads = sorted(payloads, key=lambda p: p["rank"])
    merged: dict[str, Any] = {key: [] for key in payloads[0] if key != "rank"}
    group_offset = row_offset = 0
    for payload in payloads:
        n_rows = len(payload["group"])
        n_groups = len(payload["groups"])
        for key, values in payload.items():
            if key == "rank":
                continue
            if key == "group":
                values = [g + group_offset for g in values]
            elif key == "reflected_from":
                values = [r + row_offset if r >= 0 else -1 for r in values]
            elif key == "groups":
                values = [replace(v, group_id=v.group_id + group_offset) for v in values]
            elif key == "samples":
                values = [
                    replace(
                        v,
                        group_id=v.group_id + group_offset,
                        reflected_from=v.reflected_from + row_offset
                        if v.reflected_from >= 0
                        else -1,
                    )
                    for v in values
                ]
            merged[key].extend(values)
        group_offset += n_groups
        row_offset += n_rows
    return merged


def _step_metrics(merged: dict[str, Any], rescue_enabled: bool) -> dict[str, float]:
    advantages = torch.tensor(merged["advantages"], dtype=torch.float32)
    correct = torch.tensor(merged["correct"])
    group = torch.tensor(merged["group"])
    reflected = torch.tensor(merged["reflected_from"])
    metrics = step_signal_metrics(
        advantages,
        correct,
        group,
        rescue_enabled=rescue_enabled,
        reflected_from=reflected,
        rescued=torch.tensor(merged["rescued"]),
        token_advantages=torch.tensor(merged["token_abs_sum"])[:, None],
    )
    ordinary = reflected < 0
    metrics.update(
        batch_summary(
            torch.tensor(merged["reward"])[ordinary],
            correct[ordinary],
            torch.tensor(merged["format"])[ordinary],
            torch.tensor(merged["response_len"])[ordinary],
        )
    )
    # Over every verified row, repairs included: a timeout anywhere changed a reward.
    metrics.update(status_fractions(merged["verdict"]))
    return metrics
