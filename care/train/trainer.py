"""The reference RL trainer for CARE and its baselines.

One step reads as the method; each phase's details live in a module of ``care.train``::

    rollout + verify          (the rollout engine; DAPO's refills: dapo)
    → old log-probs + rationale embeddings, one forward        (forward)
    → hard negatives → RGR repairs (rgr) → advantages, token advantages  (care.algo)
    → update                  (update; what processes must agree on: lockstep)
    → log (step_log) → checkpoint (checkpoint)

The step's rows travel as one columnar :class:`care.train.batch.StepBatch`. Every phase is
timed (``time/<phase>`` in ``steps.jsonl``), every step writes the run-log records of
``docs/run_format.md``, and a checkpoint holds everything needed to continue the run bit for
bit (``--resume``). Multi-process training goes through ``accelerate`` (DDP on CPU or GPU; FSDP
through an accelerate config): each process takes its share of the step's prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from care.algo.registry import Estimator, EstimatorResult, get_estimator
from care.algo.token_weights import region_token_advantages, uniform_token_advantages
from care.config import ConfigChange, TrainConfig, resume_config_changes
from care.data import Example, load_split
from care.prompts import build_messages, render_prompt
from care.rollout.base import RolloutRequest, SamplingParams
from care.runlog import RunWriter
from care.train import dapo, forward, fsdp2, lockstep, rgr, step_log, update, validation
from care.train.batch import Row, StepBatch
from care.train.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    restore_saved_precision,
    restore_training_state,
    save_training_state,
)
from care.train.policy_setup import (
    build_or_load_policy,
    context_token_budget,
    make_accelerator,
    make_engine,
    make_optimizer,
    task_corpus,
)
from care.train.prompt_budget import drop_over_budget
from care.train.sampler import PromptSampler
from care.train.timing import PhaseTimer
from care.train.trackers import open_run_log, require_trackers
from care.verify import Verdict, score
from care.verify import reward as verdict_reward


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
        self.care_cfg = cfg.algo.care
        self.accelerator = make_accelerator(cfg.train.device, accelerator)
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.is_main = self.accelerator.is_main_process
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

        self.examples, self.skipped_rows = load_split(cfg.data.train_files, cfg.data.on_bad_row)
        # Held-out files are checked now rather than hours into the run, when first evaluated.
        # Training never reads the test split; the validation split is scored greedily every
        # train.eval_every steps (val/acc).
        load_split(cfg.data.test_files, cfg.data.on_bad_row)
        self.val_examples, _ = load_split(cfg.data.val_files, cfg.data.on_bad_row)
        self._image_cache: dict[int, list[Any]] = {}

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
        # data.max_prompt_tokens (and, for vLLM, its image limit): skipped rows are counted.
        vllm_images = cfg.rollout.vllm.limit_images_per_prompt
        kept = drop_over_budget(
            self.examples,
            self.processor,
            self._prompt_for,
            max_prompt_tokens=cfg.data.max_prompt_tokens,
            max_images=vllm_images if cfg.rollout.engine == "vllm" else None,
            on_bad_row=cfg.data.on_bad_row,
        )
        self.skipped_rows += len(self.examples) - len(kept)
        self.examples = kept
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

        optimizer, scheduler = make_optimizer(policy, cfg)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(
            policy, optimizer, scheduler
        )
        self.policy = self.accelerator.unwrap_model(self.model)
        if self.accelerator.is_fsdp2:
            fsdp2.initialise_root(
                self.model, self.processor.tokenizer.pad_token_id, self.accelerator.device
            )
        self.tokenizer = self.processor.tokenizer
        self.engine = make_engine(
            self.policy, self.processor, cfg.rollout, max_model_len=context_token_budget(cfg)
        )
        # Dr. GRPO divides token sums by the longest response a rollout may have, unless the
        # config names another length.
        self.loss_cfg = (
            cfg.loss
            if cfg.loss.norm_length is not None
            else cfg.loss.model_copy(update={"norm_length": cfg.rollout.max_new_tokens})
        )
        self.start_step = 0
        if state is not None:
            self.start_step = restore_training_state(
                state, self.model, self.optimizer, self.scheduler, self.sampler, self.accelerator
            )
        self.writer: RunWriter | None = None
        if self.is_main:
            self.writer = open_run_log(
                cfg,
                resumed_at=self.start_step if resume_from is not None else None,
                config_changes=[c.record(self.start_step) for c in self.config_changes],
            )
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
        totals (the others an empty dict); care.train.validation has the details.
        """
        mine = self.val_examples[self.rank :: self.world]
        was_training = self.model.training
        self.model.eval()
        with self._full_weights():
            outcomes = validation.greedy_outcomes(
                self.engine,
                mine,
                self._prompt_for,
                self._judge,
                batch_rows=self.cfg.rollout.batch_rows,
                max_new_tokens=self.cfg.rollout.max_new_tokens,
            )
        if was_training:
            self.model.train()
        gathered = lockstep.gather_from_processes(outcomes, self.accelerator)
        if not self.is_main:
            return {}
        return validation.validation_metrics([item for part in gathered for item in part])

    def _full_weights(self):
        return fsdp2.full_weights(self.model, self.accelerator)

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
            batch.rows.extend(
                Row.sampled(
                    out, group=group, prompt=request.prompt, images=request.images, index_in_group=k
                )
                for k, out in enumerate(samples)
            )
        self._verify(batch, batch.rows, [row.text for row in batch.rows])
        return batch

    def _judge(self, example: Example, text: str, finish_reason: str) -> Verdict:
        """The verifier's verdict on a whole response (repair context included)."""
        return score(
            text,
            example.answer,
            example.choices,
            example.answer_type,
            truncated=finish_reason == "length",
            time_limit=self.cfg.algo.reward.verify_time_limit,
        )

    def _verify(self, batch: StepBatch, rows: Sequence[Row], texts: Sequence[str]) -> None:
        """Verdict and reward of each row, judged on ``texts`` (the whole responses)."""
        weight = self.cfg.algo.reward.format_weight
        for row, text in zip(rows, texts, strict=True):
            row.verdict = self._judge(batch.examples[row.group], text, row.finish_reason)
            row.reward = verdict_reward(row.verdict, weight)

    def _local_prompt_indices(self, count: int) -> list[int]:
        """This process's share of the next ``count`` prompts (all processes draw the same list)."""
        indices = self.sampler.next_batch(count)
        return indices[self.rank :: self.world]

    def _rollout_with_filter(self, step: int) -> tuple[StepBatch, dict[str, float], bool]:
        """Sample the step's groups; DAPO keeps the groups whose rewards vary and refills from
        new prompts (care.train.dapo: ``(batch, dapo stats, rows count)``)."""
        count = self.cfg.train.prompts_per_step
        batch = self._rollout_groups(self._local_prompt_indices(count), step, 0)
        if not self.estimator.dynamic_sampling:
            return batch, {}, True
        return dapo.refill_varied_groups(
            batch,
            next_prompts=lambda: self._local_prompt_indices(count),
            rollout=lambda indices, stream: self._rollout_groups(indices, step, stream),
            wanted=count // self.world,
            dapo=self.cfg.algo.dapo,
            accelerator=self.accelerator,
        )

    # ------------------------------------------------------------------------------------------
    # Old log-probs, rationale embeddings, spans

    def _collate(self, batch: StepBatch, rows: Sequence[int]):
        return forward.collate_rows(self.processor, batch, rows, self.accelerator.device)

    def _old_logprobs_and_embeddings(self, batch: StepBatch, rows: Sequence[int]) -> None:
        """Old log-probs AND rationale embeddings of ``rows`` in one forward (no grad), the
        reference log-probs when there is a reference model, and the tag regions of each
        response: the batch's forward columns, ``train.micro_batch_rows`` rows at a time."""
        rows, size = list(rows), self.cfg.train.micro_batch_rows
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            columns = forward.forward_columns(
                self.policy,
                self.reference,
                self.tokenizer,
                self._collate(batch, chunk),
                want_embeddings=self.estimator.needs_embeddings,
                temperature=self._logprob_temperature,
                suppress_token_ids=self.suppress_ids,
            )
            batch.store(chunk, **columns)

    @property
    def suppress_ids(self) -> list[int]:
        """What the current engine never samples: log-probs are scored with the same ids
        suppressed (read from the engine each time, so a replaced engine is followed)."""
        return list(self.engine.suppress_token_ids)

    @property
    def _logprob_temperature(self) -> float:
        # Greedy rollouts have no temperature; score them under the plain distribution.
        return self.cfg.rollout.temperature or 1.0

    # ------------------------------------------------------------------------------------------
    # RGR

    def _rgr(self, batch: StepBatch, first: EstimatorResult, step: int) -> None:
        """Repair the nearest hard negative of every anchored group and append the repairs."""
        assert first.care is not None
        sources = first.care.rgr_sources().tolist()
        if not sources:
            return
        seed = step_seed(self.cfg.run.seed, step, 1_000 + self.rank)
        params = rgr.repair_sampling(self.cfg.algo.rgr, self.cfg.rollout, seed)
        new_rows, responses = rgr.sample_repairs(
            self.engine, batch, sources, params, train_on=self.cfg.algo.rgr.train_on
        )
        # The verdict always reads the whole repaired response (repair context + continuation).
        self._verify(batch, new_rows, responses)
        self._old_logprobs_and_embeddings(batch, batch.append_rows(new_rows))

    # ------------------------------------------------------------------------------------------
    # Advantages

    def _advantages(self, batch: StepBatch) -> EstimatorResult:
        return self.estimator.advantages(batch.advantage_batch(), self.care_cfg)

    def _token_advantages(self, batch: StepBatch, result: EstimatorResult) -> None:
        """Every row's token advantages in one call: the ``token_adv`` column."""
        seq_adv = result.advantages.float()
        if self.cfg.algo.token_weighting == "region":
            token_adv = region_token_advantages(
                seq_adv,
                batch.verdict_column("acc"),
                batch.think_mask,
                batch.answer_mask,
                batch.response_mask,
                gamma_pos=self.cfg.algo.gamma_pos,
            )
        else:
            token_adv = uniform_token_advantages(seq_adv, batch.response_mask)
        batch.token_adv = token_adv

    # ------------------------------------------------------------------------------------------
    # Update

    def _update(self, batch: StepBatch, *, rows_count: bool = True) -> dict[str, float]:
        """The step's optimizer updates (care.train.update); returns the loss metrics."""
        return update.run_updates(
            batch,
            partial(self._forward_with_grad, batch),
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            accelerator=self.accelerator,
            train=self.cfg.train,
            loss_cfg=self.loss_cfg,
            grad_clip=self.cfg.optim.grad_clip,
            with_reference=self.reference is not None,
            rows_count=rows_count,
        )

    def _forward_with_grad(self, batch: StepBatch, rows: list[int]):
        """``(token log-probs, entropy, response mask)`` of ``rows`` under the trained model."""
        return forward.grad_forward(
            self.model,
            self._collate(batch, rows),
            temperature=self._logprob_temperature,
            suppress_token_ids=self.suppress_ids,
        )

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
        """Write the step's group (and sample) records; returns the step's metrics on the main
        process (an empty dict on the others)."""
        every = self.cfg.train.log_samples_every
        metrics = step_log.log_step_rows(
            step,
            batch,
            result,
            rank=self.rank,
            rgr_enabled=self.estimator.uses_rgr and bool(self.cfg.algo.rgr.enable),
            rescue_enabled=self.care_cfg.rescue_enable and self.estimator.needs_embeddings,
            with_samples=bool(every) and step % every == 0,
            projection_seed=self.cfg.run.seed,
            accelerator=self.accelerator,
            writer=self.writer,
        )
        if self.is_main:
            metrics.update(update_metrics)
            metrics.update(dapo_stats)
            metrics["data/skipped_rows"] = float(self.skipped_rows)
        return metrics

    def save(self, step: int) -> Path | None:
        """Write ``checkpoints/step_<step>`` (main process) and wait for every process."""
        return save_training_state(
            self.run_dir,
            step,
            model=self.model,
            policy=self.policy,
            processor=self.processor,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            sampler=self.sampler,
            config=self.cfg.to_dict(),
            keep=self.cfg.train.keep_checkpoints,
            accelerator=self.accelerator,
        )
