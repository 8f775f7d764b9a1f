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

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from care.algo.grpo import dynamic_sampling_keep
from care.algo.registry import AdvantageBatch, Estimator, EstimatorResult, get_estimator
from care.algo.spans import region_masks
from care.algo.token_weights import region_token_advantages, uniform_token_advantages
from care.config import ConfigChange, TrainConfig, resume_config_changes
from care.data import Example, load_split
from care.models.policy import collate, policy_forward
from care.prompts import build_messages, build_repair_prefix, render_prompt
from care.rollout.base import RolloutRequest, SamplingParams
from care.runlog import RunWriter
from care.train import fsdp2, lockstep, step_log, update, validation
from care.train.batch import Row, StepBatch
from care.train.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    restore_saved_precision,
    restore_training_state,
    save_checkpoint,
    save_model_files,
)
from care.train.policy_setup import (
    build_or_load_policy,
    context_token_budget,
    make_accelerator,
    make_engine,
    make_optimizer,
    task_corpus,
)
from care.train.projection import project_rationales
from care.train.prompt_budget import drop_over_budget
from care.train.sampler import PromptSampler
from care.train.timing import PhaseTimer
from care.train.trackers import open_run_log, require_trackers
from care.verify import Verdict, score
from care.verify import reward as verdict_reward

# The reference code decodes repairs with these (docs/algorithm.md section 4, algo.rgr.sampling: reference).
_REFERENCE_RGR_SAMPLING = {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 512}


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
        # Held-out files are checked now rather than hours into the run, when first evaluated;
        # the validation split is scored greedily every train.eval_every steps (val/acc).
        self.test_examples, _ = load_split(cfg.data.test_files, cfg.data.on_bad_row)
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
            kept = kept.concat_groups(self._keep_varied_groups(more), limit=wanted)
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
        return batch.select_groups(kept_groups)

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
        """Old log-probs AND rationale embeddings of ``rows`` in one forward (no grad), the
        reference log-probs when there is a reference model, and the tag regions of each
        response: the batch's forward columns."""
        want_embeddings = self.estimator.needs_embeddings
        for chunk in self._micro_batches(rows):
            policy_batch = self._collate(batch, chunk)
            response_ids = policy_batch.response_ids.cpu()
            response_mask = policy_batch.response_mask.cpu()
            regions = region_masks(self.tokenizer, response_ids, response_mask)
            out = policy_forward(
                self.policy,
                policy_batch,
                want_embeddings=want_embeddings,
                think_mask=regions.think_mask.to(policy_batch.response_ids.device),
                temperature=self._logprob_temperature,
                suppress_token_ids=self.suppress_ids,
            )
            ref_logp = None
            if self.reference is not None:
                ref_logp = policy_forward(
                    self.reference,
                    policy_batch,
                    want_embeddings=False,
                    temperature=self._logprob_temperature,
                    suppress_token_ids=self.suppress_ids,
                ).token_logprobs
            old_logp = out.token_logprobs.detach().cpu()
            batch.store(
                chunk,
                old_logp=old_logp,
                ref_logp=ref_logp,
                think_mask=regions.think_mask,
                answer_mask=regions.answer_mask,
                think_len=regions.think_len,
                answer_len=regions.answer_len,
                # Each row's own tokens only: the sum an unpadded row would give.
                old_logp_sum=torch.stack(
                    [old_logp[k, : int(response_mask[k].sum())].sum() for k in range(len(chunk))]
                ),
                embeddings=out.embeddings,
            )

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
        new_rows = [
            Row.sampled(
                samples[0],
                group=batch.rows[src].group,
                prompt=batch.rows[src].prompt,
                images=batch.rows[src].images,
                prefix=prefix if rgr.train_on == "continuation" else "",
                reflected_from=src,
            )
            for src, prefix, samples in zip(sources, prefixes, outputs, strict=True)
        ]
        # The verdict always reads the whole repaired response (repair context + continuation).
        self._verify(
            batch, new_rows, [p + row.text for p, row in zip(prefixes, new_rows, strict=True)]
        )
        self._old_logprobs_and_embeddings(batch, batch.append_rows(new_rows))

    # ------------------------------------------------------------------------------------------
    # Advantages

    def _advantages(self, batch: StepBatch) -> EstimatorResult:
        reflected = batch.column("reflected_from", torch.long)
        embeddings = batch.embeddings
        if embeddings is not None:
            # An RGR row is never an anchor or negative candidate; it carries its source's
            # embedding only so the tensor is dense.
            embeddings = embeddings[
                torch.where(reflected >= 0, reflected, torch.arange(len(batch)))
            ]
        advantage_batch = AdvantageBatch(
            rewards=batch.column("reward", torch.float32),
            correct=batch.verdict_column("acc"),
            group_index=batch.column("group", torch.long),
            think_len=batch.think_len,
            answer_len=batch.answer_len,
            embeddings=embeddings,
            old_logprob_sum=batch.old_logp_sum.float(),
            reflected_from=reflected if bool((reflected >= 0).any()) else None,
            response_len=batch.response_len,
        )
        return self.estimator.advantages(advantage_batch, self.care_cfg)

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
        """The step's optimizer updates (care.train.update); returns the loss metrics of every
        process's rows.

        ``rows_count=False`` (DAPO kept no group on this process): the rows only keep this
        process in step with the others and add nothing to the gradient or its denominators.
        """
        cfg = self.cfg
        updates = cfg.train.prompts_per_step // cfg.train.mini_batch_prompts
        token_mean = self.loss_cfg.aggregation == "token_mean"
        meter = update.LossMeter()
        grad_norms, rates = [], []
        self.model.train()
        for _ in range(cfg.train.ppo_epochs):
            for rows in update.mini_batches(batch, updates):
                rows = rows if rows_count else []
                micro = update.micro_batches(batch, rows, cfg.train.micro_batch_rows)
                plan = lockstep.mini_batch_plan(
                    update.loss_denominator(
                        batch, rows, token_mean=token_mean, count_zero=cfg.loss.count_zero_adv_rows
                    ),
                    update.loss_denominator(batch, rows, token_mean=token_mean, count_zero=True),
                    len(micro),
                    self.accelerator,
                )
                if plan.passes == 0:
                    continue  # no process has rows in this update: all skip it together
                for index, part in enumerate(lockstep.pad_passes(micro, plan.passes)):
                    synced = index == plan.passes - 1
                    with nullcontext() if synced else self.accelerator.no_sync(self.model):
                        loss, metrics, entropy, mask = self._micro_batch_loss(batch, part, plan)
                        self.accelerator.backward(loss)
                    if part:  # an empty part is a zero-weight pass over row 0
                        meter.add(metrics, entropy, mask)
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
        metrics = meter.means(self.accelerator)
        metrics["grad_norm"] = float(np.mean(grad_norms)) if grad_norms else float("nan")
        # The mean rate of the step's updates (they differ only while a warm-up is running).
        metrics["lr"] = float(np.mean(rates)) if rates else float("nan")
        return metrics

    def _micro_batch_loss(
        self, batch: StepBatch, rows: list[int], plan: lockstep.MiniBatchPlan
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor]:
        """Forward ``rows`` with grad: ``(loss, metrics, entropy [B, L], response mask)``.
        No rows: a pass over row 0 with weight zero (it keeps the collectives in step)."""
        cfg = self.cfg
        token_mean = self.loss_cfg.aggregation == "token_mean"
        policy_batch = self._collate(batch, rows or [0])
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
        length = mask.shape[1]

        def column(name: str) -> torch.Tensor:
            return getattr(batch, name)[rows or [0], :length].to(mask.device)

        def share(denominator: float, count_zero: bool) -> float:
            if denominator == 0:
                return 0.0
            part = update.loss_denominator(
                batch, rows, token_mean=token_mean, count_zero=count_zero
            )
            return part / denominator

        loss, metrics = update.micro_batch_loss(
            out.token_logprobs,
            column("old_logp"),
            column("token_adv"),
            mask,
            column("answer_mask"),
            self.loss_cfg,
            pg_weight=share(plan.pg_denominator, cfg.loss.count_zero_adv_rows),
            ref_logp=column("ref_logp") if self.reference is not None else None,
            kl_coef=cfg.loss.kl_coef,
            kl_estimator=cfg.loss.kl_estimator,
            kl_weight=share(plan.kl_denominator, True),
        )
        return loss, metrics, out.entropy, mask

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
        projected = None
        if batch.embeddings is not None:
            projected = project_rationales(batch.embeddings, self.cfg.run.seed)
        every = self.cfg.train.log_samples_every
        with_samples = bool(every) and step % every == 0
        payload = step_log.row_payload(
            step, batch, result, self.rank, rgr_on, projected, with_samples=with_samples
        )
        gathered = lockstep.gather_from_processes(payload, self.accelerator)
        metrics: dict[str, float] = {}
        if self.is_main:
            merged = step_log.merge_payloads(gathered)
            metrics.update(
                step_log.step_metrics(
                    merged, self.care_cfg.rescue_enable and self.estimator.needs_embeddings
                )
            )
            metrics.update(update_metrics)
            metrics.update(dapo_stats)
            metrics["data/skipped_rows"] = float(self.skipped_rows)
            assert self.writer is not None
            self.writer.log_groups(step, merged["groups"])
            if with_samples:
                self.writer.log_samples(step, merged["samples"])
        return metrics

    def save(self, step: int) -> Path | None:
        """Write ``checkpoints/step_<step>`` (main process) and wait for every process."""
        path = None
        model_state, optimizer_state = fsdp2.whole_state(
            self.model, self.optimizer, self.accelerator
        )
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
                save_model=lambda folder: save_model_files(
                    self.policy, self.processor, folder, model_state
                ),
                trainer_state=state,
                keep=self.cfg.train.keep_checkpoints,
            )
        self.accelerator.wait_for_everyone()
        return path


# ----------------------------------------------------------------------------------------------
# Helpers (pure functions of a step's rows)
