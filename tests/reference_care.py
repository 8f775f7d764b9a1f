"""A plain, per-group, loop-by-loop CARE reference (docs/algorithm.md sections 2-4).

Written to be obviously correct rather than fast: the vectorised ``care_advantages`` is checked
against it in the property tests, and ``bench/bench_advantages.py`` times it as the baseline a
direct port of the paper's description would give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from care.algo.care import CareConfig


@dataclass
class ReferenceResult:
    advantages: list[float]
    is_anchor: list[bool]
    negative_rank: list[int]
    rescued: list[bool]
    k_prime: list[int]


def _farthest_first(candidates: list[int], first: int, count: int, dist) -> list[int]:
    picks = [first]
    while len(picks) < count:
        best_score, best = None, None
        for c in candidates:
            if c in picks:
                continue
            score = min(dist(c, p) for p in picks)
            if best_score is None or score > best_score:
                best_score, best = score, c
        picks.append(best)
    return picks


def reference_care(
    rewards: list[float],
    correct: list[bool],
    group_index: list[int],
    think_len: list[int],
    answer_len: list[int],
    embeddings: list[list[float]] | np.ndarray,
    old_logprob_sum: list[float],
    reflected_from: list[int] | None,
    cfg: CareConfig,
    response_len: list[int] | None = None,
) -> ReferenceResult:
    batch = len(rewards)
    refl = reflected_from if reflected_from is not None else [-1] * batch
    replaced_by = {refl[i]: i for i in range(batch) if refl[i] >= 0}
    adv = [0.0] * batch
    is_anchor = [False] * batch
    negative_rank = [-1] * batch
    rescued = [False] * batch
    k_prime = [0] * batch

    groups: dict[int, list[int]] = {}
    for i in range(batch):
        if refl[i] < 0:
            groups.setdefault(group_index[i], []).append(i)

    emb = np.asarray(embeddings, dtype=np.float64)

    def dist(a: int, b: int) -> float:
        return 1.0 - float(np.dot(emb[a], emb[b]))

    for rows in groups.values():
        positives = [i for i in rows if correct[i]]
        failures = [i for i in rows if not correct[i]]
        rescue = False
        if positives and failures:
            anchor = min(positives, key=lambda i: (think_len[i], answer_len[i], i))
            pool = sorted(failures, key=lambda j: (dist(j, anchor), j))[: cfg.M]
            kp = min(cfg.K, len(failures))
            negatives = _farthest_first(pool, pool[0], kp, lambda a, b: dist(a, b))
        elif not positives and cfg.rescue_enable and len(failures) >= 2:
            rescue = True

            def score(i: int) -> float:
                if cfg.rescue_anchor == "mean":
                    return old_logprob_sum[i] / max(response_len[i], 1)
                return old_logprob_sum[i]

            anchor = max(failures, key=lambda i: (score(i), -i))
            others = [j for j in failures if j != anchor]
            kp = min(cfg.K, len(failures) - 1)
            first = max(others, key=lambda j: (dist(j, anchor), -j))
            negatives = _farthest_first(others, first, kp, lambda a, b: dist(a, b))
        else:
            continue

        members = [anchor] + [replaced_by.get(j, j) for j in negatives]
        reflected = [False] + [j in replaced_by for j in negatives]
        if rescue:
            values = [cfg.rescue_delta] + [-cfg.rescue_delta / kp] * kp
        else:
            values = [rewards[m] for m in members]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        result = []
        for pos, (m, v) in enumerate(zip(members, values, strict=True)):
            raw = (v - mean) / (std + cfg.eps)
            positive_role = pos == 0 or (reflected[pos] and correct[m])
            if positive_role:
                a = raw
            else:
                a = -(cfg.reflection_scale if reflected[pos] else cfg.s) * abs(raw)
            if cfg.equalize:
                a *= math.sqrt(cfg.K / kp)
            if rescue and not cfg.rescue_normalize:
                a = v
            result.append(a)
        for pos, m in enumerate(members):
            adv[m] = result[pos]
            if pos > 0:
                negative_rank[m] = pos - 1
        is_anchor[anchor] = True
        for i in rows + [replaced_by[j] for j in negatives if j in replaced_by]:
            rescued[i] = rescue
            k_prime[i] = kp
    return ReferenceResult(adv, is_anchor, negative_rank, rescued, k_prime)
