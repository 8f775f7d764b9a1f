"""What one training step logs: each process's rows as plain data (per-row lists for the step
metrics, typed group and sample records for ``groups.jsonl`` and ``samples.jsonl``), the merge
of every process's part into one batch view, and the step metrics computed from it.

The records' checks run when they are built here, so a malformed record stops the step before
anything is written (docs/run_format.md)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from care.algo.registry import EstimatorResult
from care.metrics.signal import batch_summary, step_signal_metrics
from care.runlog import GroupRecord, HardNegative, RgrRecord, SampleRecord
from care.train import lockstep
from care.train.batch import StepBatch
from care.train.projection import project_rationales
from care.verify import status_fractions


def log_step_rows(
    step: int,
    batch: StepBatch,
    result: EstimatorResult,
    *,
    rank: int,
    rgr_enabled: bool,
    rescue_enabled: bool,
    with_samples: bool,
    projection_seed: int,
    accelerator: Any,
    writer: Any,
) -> dict[str, float]:
    """Gather every process's rows of the step, write its group records (and, ``with_samples``,
    its sample records) through the main process's ``writer``, and return the step metrics
    computed from the rows (an empty dict on the other processes). Every process must call this.

    The rationale embeddings, when the estimator computed them, are logged as their fixed
    random projection (care.train.projection, seeded with ``projection_seed``).
    """
    projected = None
    if batch.embeddings is not None:
        projected = project_rationales(batch.embeddings, projection_seed)
    payload = row_payload(
        step, batch, result, rank, rgr_enabled, projected, with_samples=with_samples
    )
    gathered = lockstep.gather_from_processes(payload, accelerator)
    if not accelerator.is_main_process:
        return {}
    merged = merge_payloads(gathered)
    metrics = step_metrics(merged, rescue_enabled)
    writer.log_groups(step, merged["groups"])
    if with_samples:
        writer.log_samples(step, merged["samples"])
    return metrics


def row_payload(
    step: int,
    batch: StepBatch,
    result: EstimatorResult,
    rank: int,
    rgr_enabled: bool,
    projected: torch.Tensor | None = None,
    with_samples: bool = True,
) -> dict[str, Any]:
    """Everything the logs need about this process's rows: per-row lists for the step metrics,
    and the step's typed group and sample records (``care.runlog.GroupRecord``/``SampleRecord``,
    whose checks run here, so a malformed record stops the step before anything is written).

    projected: float ``[N, PROJECTION_DIM]`` projected rationale embedding of every row
    (``care.train.projection.project_rationales``), or None when the estimator has none.
    with_samples: build the sample records (the rollout texts); False on a step that writes none
    (``train.log_samples_every``), so their texts are neither checked nor gathered.
    """
    rows = batch.rows
    care = result.care
    vectors = projected.tolist() if projected is not None else None
    advantages = result.advantages.tolist()
    # One pass over the rows: each group's sampled rows and its repairs, in row order.
    members: list[list[int]] = [[] for _ in batch.examples]
    repairs: list[list[int]] = [[] for _ in batch.examples]
    for i, row in enumerate(rows):
        (members if row.reflected_from < 0 else repairs)[row.group].append(i)
    payload: dict[str, Any] = {
        "rank": rank,
        "group": [row.group for row in rows],
        "reflected_from": [row.reflected_from for row in rows],
        "advantages": advantages,
        "token_abs_sum": batch.token_adv.abs().sum(dim=1).tolist(),
        "correct": [bool(row.verdict.acc) for row in rows],
        "format": [bool(row.verdict.fmt) for row in rows],
        "verdict": [row.verdict for row in rows],
        "reward": [row.reward for row in rows],
        "response_len": [len(row.response_ids) for row in rows],
        "rescued": care.rescued.tolist() if care is not None else [False] * len(rows),
        "groups": [
            group_record(
                step, batch, result, group, members[group], repairs[group], rgr_enabled, vectors
            )
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
                advantage=advantages[i],
                finish_reason=row.finish_reason,
            )
            for i, row in enumerate(rows)
            if with_samples
        ],
    }
    return payload


def group_record(
    step: int,
    batch: StepBatch,
    result: EstimatorResult,
    group: int,
    members: list[int],
    repair: list[int],
    rgr_enabled: bool,
    vectors: list[list[float]] | None = None,
) -> GroupRecord:
    """The groups.jsonl record of one prompt group of this process's batch: ``members`` are the
    group's sampled rows, ``repair`` its RGR rows (row indices into ``batch.rows``), ``vectors``
    every row's projected rationale embedding (None without embeddings)."""
    rows = batch.rows
    care = result.care
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
        # The rollouts in group order, then the repair (at most one per group).
        projection=None if vectors is None else [vectors[i] for i in members + repair],
        **fields,
    )


def merge_payloads(payloads: list[dict[str, Any]]) -> dict[str, Any]:
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


def step_metrics(merged: dict[str, Any], rescue_enabled: bool) -> dict[str, float]:
    """The step's signal metrics (``care.metrics.signal``) and batch summary from the merged rows;
    the summary counts sampled rows only, the verifier status fractions every verified row."""
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
