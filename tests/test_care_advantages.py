"""care_advantages: worked examples, properties against a per-group reference, errors.

The worked numbers are those of docs/algorithm.md sections 2-4.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_care import reference_care

from care.algo.care import CareConfig, care_advantages
from care.algo.grpo import grpo_advantages
from care.metrics.signal import failure_share


def one_group(
    correct: list[bool],
    *,
    rewards: list[float] | None = None,
    think: list[int] | None = None,
    answer: list[int] | None = None,
    embeddings: torch.Tensor | None = None,
    logprob: list[float] | None = None,
    reflected_from: list[int] | None = None,
    cfg: CareConfig | None = None,
    group_index: list[int] | None = None,
):
    n = len(correct)
    gen = torch.Generator().manual_seed(n)
    if embeddings is None:
        embeddings = torch.nn.functional.normalize(
            torch.randn(n, 16, generator=gen, dtype=torch.float64), dim=1
        )
    return care_advantages(
        torch.tensor(
            rewards if rewards is not None else [float(c) for c in correct], dtype=torch.float64
        ),
        torch.tensor(correct),
        torch.tensor(group_index if group_index is not None else [0] * n),
        torch.tensor(think if think is not None else [10] * n),
        torch.tensor(answer if answer is not None else [3] * n),
        embeddings,
        torch.tensor(logprob if logprob is not None else [-5.0] * n, dtype=torch.float64),
        reflected_from=None if reflected_from is None else torch.tensor(reflected_from),
        cfg=cfg or CareConfig(),
    )


def axis_embeddings(n: int, dim: int = 8) -> torch.Tensor:
    return torch.eye(dim, dtype=torch.float64)[:n]


@pytest.mark.parametrize(
    ("k_prime", "negative"),
    [(1, -1.0), (2, -0.5), (3, -1 / 3), (4, -0.25)],
)
def test_worked_example_anchor_and_negatives_for_k_prime_1_to_4(k_prime, negative):
    out = one_group([True] + [False] * k_prime)
    assert out.advantages[0].item() == pytest.approx(2.0, abs=1e-5)
    assert out.advantages[1:].tolist() == pytest.approx([negative] * k_prime, abs=1e-5)
    assert out.k_prime.tolist() == [k_prime] * (1 + k_prime)
    assert out.is_anchor.tolist() == [True] + [False] * k_prime
    assert sorted(out.negative_rank[1:].tolist()) == list(range(k_prime))


def test_general_formula_anchor_sqrt_k_negative_minus_s_sqrt_k_over_k_prime():
    cfg = CareConfig(K=6, M=8, s=0.3)
    out = one_group([True] + [False] * 3, cfg=cfg)
    assert out.advantages[0].item() == pytest.approx(math.sqrt(6), abs=1e-5)
    assert out.advantages[1:].tolist() == pytest.approx([-0.3 * math.sqrt(6) / 3] * 3, abs=1e-5)


def test_more_failures_than_k_leaves_the_unpicked_failures_and_other_positives_at_zero():
    out = one_group([True, True, False, False, False, False, False, False])
    assert (out.negative_rank >= 0).sum().item() == 4
    unpicked = (out.negative_rank < 0) & ~out.is_anchor
    assert out.advantages[unpicked].abs().max().item() == 0.0
    assert out.is_anchor.tolist()[:2] == [True, False]  # tie on lengths → lowest index


def test_anchor_is_shortest_think_then_shortest_answer_then_lowest_index():
    out = one_group(
        [True, True, True, True, False],
        think=[9, 4, 4, 4, 1],
        answer=[1, 5, 2, 2, 1],
    )
    assert out.is_anchor.tolist() == [False, False, True, False, False]


def test_hard_negatives_come_from_the_nearest_pool_and_are_spread_by_farthest_first():
    # Anchor at e0. Failures: f1..f6 near the anchor (various), f7 far away (outside pool M=6).
    anchor = torch.tensor([1.0, 0.0, 0.0])

    def unit(x, y, z):
        v = torch.tensor([x, y, z], dtype=torch.float64)
        return v / v.norm()

    emb = torch.stack(
        [
            anchor.double(),
            unit(1, 0.10, 0.0),  # 1 nearest
            unit(1, 0.11, 0.0),  # 2 almost a duplicate of 1
            unit(1, 0.0, 0.30),  # 3 different direction
            unit(1, -0.3, 0.0),  # 4 opposite side
            unit(1, 0.2, 0.2),  # 5
            unit(1, -0.2, -0.2),  # 6
            unit(-1, 0.0, 0.0),  # 7 far: not in the pool of 6
        ]
    )
    out = one_group([True] + [False] * 7, embeddings=emb)
    ranks = out.negative_rank.tolist()
    assert ranks[1] == 0  # farthest-first starts from the nearest failure
    assert ranks[7] == -1  # outside the M-pool
    assert ranks[2] == -1  # a near-duplicate of the first pick is never preferred
    assert out.anchor_distance[1].item() == pytest.approx((1 - emb[1] @ emb[0]).item(), abs=1e-9)
    picked = [i for i, r in sorted(enumerate(ranks), key=lambda x: x[1]) if r >= 0]
    # Each later pick maximises its smallest distance to the earlier picks.
    dist = 1 - emb @ emb.T
    pool = [1, 2, 3, 4, 5, 6]
    for step in range(1, 4):
        chosen = picked[:step]
        scores = {c: min(dist[c, p].item() for p in chosen) for c in pool if c not in chosen}
        assert picked[step] == max(scores, key=scores.get)


def test_rgr_passed_repair_becomes_a_second_positive_of_the_subgroup():
    base = one_group([True, False, False, False, False], embeddings=axis_embeddings(5))
    source = base.rgr_sources().tolist()
    assert len(source) == 1
    emb = torch.cat([axis_embeddings(5), axis_embeddings(6)[5:]])
    out = one_group(
        [True, False, False, False, False, True],
        embeddings=emb,
        reflected_from=[-1] * 5 + [source[0]],
    )
    adv = out.advantages.tolist()
    assert adv[0] == pytest.approx(1.2247, abs=1e-4)
    assert adv[5] == pytest.approx(1.2247, abs=1e-4)
    assert adv[source[0]] == 0.0  # the original failure stays in the batch with advantage 0
    others = [a for i, a in enumerate(adv[1:5], start=1) if i != source[0]]
    assert others == pytest.approx([-0.4082] * 3, abs=1e-4)
    assert out.negative_rank[5].item() == 0 and out.negative_rank[source[0]].item() == -1
    assert out.picked_rank[source[0]].item() == 0


def test_rgr_failed_repair_stays_a_negative_scaled_by_s_refl():
    base = one_group([True, False, False, False, False], embeddings=axis_embeddings(5))
    source = base.rgr_sources().item()
    emb = torch.cat([axis_embeddings(5), axis_embeddings(6)[5:]])
    out = one_group(
        [True, False, False, False, False, False],
        embeddings=emb,
        reflected_from=[-1] * 5 + [source],
    )
    adv = out.advantages.tolist()
    assert adv[0] == pytest.approx(2.0, abs=1e-5)
    assert adv[5] == pytest.approx(-0.125, abs=1e-5)
    assert adv[source] == 0.0
    assert sorted(a for i, a in enumerate(adv[1:5], 1) if i != source) == pytest.approx(
        [-0.25] * 3, abs=1e-5
    )


def test_rescue_picks_highest_logprob_failure_as_pseudo_anchor_with_anchor_magnitudes():
    out = one_group(
        [False] * 5, logprob=[-9.0, -2.0, -7.0, -3.0, -8.0], embeddings=axis_embeddings(5)
    )
    assert out.is_anchor.tolist() == [False, True, False, False, False]
    assert out.rescued.all()
    assert out.advantages[1].item() == pytest.approx(2.0, abs=1e-4)
    assert sorted(out.advantages[[0, 2, 3, 4]].tolist()) == pytest.approx([-0.25] * 4, abs=1e-4)


def test_rescue_mean_logprob_option_divides_by_response_length():
    cfg = CareConfig(rescue_anchor="mean")
    args = dict(
        rewards=torch.zeros(3, dtype=torch.float64),
        correct=torch.tensor([False] * 3),
        group_index=torch.zeros(3, dtype=torch.long),
        think_len=torch.tensor([1, 1, 1]),
        answer_len=torch.tensor([1, 1, 1]),
        embeddings=axis_embeddings(3),
        old_logprob_sum=torch.tensor([-10.0, -4.0, -30.0], dtype=torch.float64),
    )
    by_sum = care_advantages(**args)
    by_mean = care_advantages(**args, cfg=cfg, response_len=torch.tensor([100, 2, 1000]))
    assert by_sum.is_anchor.tolist() == [False, True, False]
    assert by_mean.is_anchor.tolist() == [False, False, True]  # -0.03 per token is the best
    with pytest.raises(ValueError, match="response_len"):
        care_advantages(**args, cfg=cfg)


def test_rescue_without_normalisation_uses_the_raw_pseudo_rewards():
    out = one_group(
        [False] * 4, logprob=[-1.0, -2.0, -3.0, -4.0], cfg=CareConfig(rescue_normalize=False)
    )
    assert out.advantages[0].item() == pytest.approx(0.1)
    assert out.advantages[1:].tolist() == pytest.approx([-0.1 / 3] * 3)


def test_rescue_pseudo_negatives_start_from_the_failure_farthest_from_the_pseudo_anchor():
    emb = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.05], [0.5, 0.5]], dtype=torch.float64), dim=1
    )
    out = one_group(
        [False] * 4, embeddings=emb, logprob=[0.0, -1.0, -1.0, -1.0], cfg=CareConfig(K=2, M=2)
    )
    # Cosine distances to the pseudo-anchor (row 0): row 1 0.006, row 2 1.999, row 3 0.293, so
    # row 2 is picked first. The second pick is the failure farthest from the PICKED negatives
    # (the pseudo-anchor is not one of them): row 1 at 1.987 from row 2 beats row 3 at 1.671.
    assert out.negative_rank.tolist() == [-1, 1, 0, -1]


def test_rescue_impossible_for_a_single_failed_rollout_and_disabled_rescue_gives_zeros():
    out = one_group([False])
    assert out.advantages.tolist() == [0.0]
    assert out.rescue_impossible.tolist() == [True]
    assert not out.rescued.any()
    off = one_group([False] * 3, cfg=CareConfig(rescue_enable=False))
    assert off.advantages.abs().max().item() == 0.0
    assert not off.rescue_impossible.any() and not off.rescued.any()


def test_all_correct_group_gets_all_zeros_and_no_subgroup():
    out = one_group([True] * 5)
    assert out.advantages.abs().max().item() == 0.0
    assert out.k_prime.tolist() == [0] * 5
    assert not out.is_anchor.any()


def test_mixed_group_sizes_in_shuffled_order_match_the_groups_computed_alone():
    correct = [True, False, False, False, True, False, True, True]
    groups = [5, 2, 5, 2, 2, 9, 9, 5]
    emb = torch.nn.functional.normalize(
        torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), dim=1
    )
    together = one_group(correct, embeddings=emb, group_index=groups)
    for g in set(groups):
        rows = [i for i, x in enumerate(groups) if x == g]
        alone = one_group([correct[i] for i in rows], embeddings=emb[rows])
        assert together.advantages[rows].tolist() == pytest.approx(
            alone.advantages.tolist(), abs=1e-12
        )


def test_reflection_errors_name_the_row():
    with pytest.raises(ValueError, match="not a hard negative"):
        one_group([True, False, False], reflected_from=[-1, -1, 0])
    with pytest.raises(ValueError, match="out of range"):
        one_group([True, False, False], reflected_from=[-1, -1, 7])
    with pytest.raises(ValueError, match="group_index"):
        one_group([True, False, False], reflected_from=[-1, -1, 1], group_index=[0, 0, 1])


@pytest.mark.parametrize("field", ["rewards", "embeddings", "old_logprob_sum"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_rejected_with_the_argument_name(field, bad):
    args = dict(
        rewards=torch.tensor([1.0, 0.0]),
        correct=torch.tensor([True, False]),
        group_index=torch.tensor([0, 0]),
        think_len=torch.tensor([1, 1]),
        answer_len=torch.tensor([1, 1]),
        embeddings=torch.eye(2),
        old_logprob_sum=torch.tensor([-1.0, -1.0]),
    )
    args[field] = args[field].clone()
    args[field].view(-1)[1] = bad
    with pytest.raises(ValueError, match=f"{field} has a non-finite value"):
        care_advantages(**args)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="correct must have shape"):
        care_advantages(
            torch.zeros(3),
            torch.zeros(2, dtype=torch.bool),
            torch.zeros(3, dtype=torch.long),
            torch.zeros(3, dtype=torch.long),
            torch.zeros(3, dtype=torch.long),
            torch.eye(3),
            torch.zeros(3),
        )
    with pytest.raises(ValueError, match="embeddings must have shape"):
        care_advantages(
            torch.zeros(3),
            torch.zeros(3, dtype=torch.bool),
            torch.zeros(3, dtype=torch.long),
            torch.zeros(3, dtype=torch.long),
            torch.zeros(3, dtype=torch.long),
            torch.eye(2),
            torch.zeros(3),
        )


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="CareConfig.M"):
        CareConfig(K=4, M=3)
    with pytest.raises(ValueError, match="rescue_anchor"):
        CareConfig(rescue_anchor="max")


def test_empty_batch_gives_empty_output():
    out = care_advantages(
        torch.zeros(0),
        torch.zeros(0, dtype=torch.bool),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, 4),
        torch.zeros(0),
    )
    assert out.advantages.shape == (0,)


# --------------------------------------------------------------------------------------------
# Property tests against the per-group reference.


@st.composite
def batches(draw, with_rgr: bool = True, fixed: dict | None = None, mixed_group: bool = False):
    """Random CARE batches. ``fixed`` pins CareConfig fields (and ``binary``) instead of drawing
    them; ``mixed_group`` makes the first group hold a right and a wrong rollout, so every
    batch has an anchored group."""
    fixed = fixed or {}
    num_groups = draw(st.integers(1, 6))
    sizes = [draw(st.integers(2 if mixed_group and g == 0 else 1, 9)) for g in range(num_groups)]
    seed = draw(st.integers(0, 2**31 - 1))
    binary = fixed.get("binary", None)
    if binary is None:
        binary = draw(st.booleans())
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    group_ids = rng.choice(1000, size=num_groups, replace=False)
    group_index = np.repeat(group_ids, sizes)
    p_correct = draw(st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]))
    correct = rng.random(n) < p_correct
    if mixed_group:
        correct[0], correct[1] = True, False  # rows 0 and 1 belong to the first group
    fmt = rng.random(n) < 0.7
    rewards = correct.astype(float) if binary else 0.9 * correct + 0.1 * fmt
    think = rng.integers(0, 4, n)  # many ties on purpose
    answer = rng.integers(0, 3, n)
    emb = rng.normal(size=(n, 5))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    logprob = -rng.integers(1, 4, n).astype(float)  # ties on purpose
    drawn = {
        "K": st.integers(1, 4),
        "M": st.integers(4, 7),
        "s": st.sampled_from([0.5, 0.25, 1.0]),
        "equalize": st.booleans(),
        "rescue_enable": st.booleans(),
        "rescue_normalize": st.booleans(),
    }
    cfg = CareConfig(
        **{
            name: fixed[name] if name in fixed else draw(strategy)
            for name, strategy in drawn.items()
        }
    )
    # Shuffle the ordinary rows first: tie-breaks follow batch order, so the RGR sources must be
    # picked on the final order of the ordinary rows.
    perm = rng.permutation(n)
    rewards, correct, group_index = rewards[perm], correct[perm], group_index[perm]
    think, answer, emb, logprob = think[perm], answer[perm], emb[perm], logprob[perm]
    reflected = np.full(n, -1)
    if with_rgr and draw(st.booleans()):
        base = reference_care(
            rewards.tolist(),
            correct.tolist(),
            group_index.tolist(),
            think.tolist(),
            answer.tolist(),
            emb.tolist(),
            logprob.tolist(),
            None,
            cfg,
        )
        sources = [i for i in range(n) if base.negative_rank[i] == 0 and not base.rescued[i]]
        extra = len(sources)
        if extra:
            passed = rng.random(extra) < 0.5
            correct = np.concatenate([correct, passed])
            rewards = np.concatenate(
                [rewards, passed.astype(float) if binary else 0.9 * passed + 0.1]
            )
            group_index = np.concatenate([group_index, group_index[sources]])
            think = np.concatenate([think, rng.integers(0, 4, extra)])
            answer = np.concatenate([answer, rng.integers(0, 3, extra)])
            e2 = rng.normal(size=(extra, 5))
            emb = np.concatenate([emb, e2 / np.linalg.norm(e2, axis=1, keepdims=True)])
            logprob = np.concatenate([logprob, -rng.random(extra)])
            reflected = np.concatenate([reflected, np.array(sources)])
    # Interleave the RGR rows at random places, keeping the ordinary rows' relative order.
    total = len(rewards)
    refl_slots = np.sort(rng.choice(total, size=total - n, replace=False))
    ord_slots = np.setdiff1d(np.arange(total), refl_slots)
    perm = np.empty(total, dtype=int)
    perm[ord_slots] = np.arange(n)
    perm[refl_slots] = np.arange(n, total)
    new_pos = np.empty(total, dtype=int)
    new_pos[perm] = np.arange(total)
    reflected = reflected[perm]
    reflected = np.where(reflected >= 0, new_pos[np.maximum(reflected, 0)], -1)
    return dict(
        rewards=rewards[perm],
        correct=correct[perm],
        group_index=group_index[perm],
        think=think[perm],
        answer=answer[perm],
        emb=emb[perm],
        logprob=logprob[perm],
        reflected=reflected,
        cfg=cfg,
        binary=binary,
    )


def run_vectorised(b):
    return care_advantages(
        torch.tensor(b["rewards"], dtype=torch.float64),
        torch.tensor(b["correct"]),
        torch.tensor(b["group_index"]),
        torch.tensor(b["think"]),
        torch.tensor(b["answer"]),
        torch.tensor(b["emb"], dtype=torch.float64),
        torch.tensor(b["logprob"], dtype=torch.float64),
        reflected_from=torch.tensor(b["reflected"]),
        cfg=b["cfg"],
    )


@settings(max_examples=150, deadline=None)
@given(batches())
def test_vectorised_matches_the_per_group_reference(b):
    out = run_vectorised(b)
    ref = reference_care(
        b["rewards"].tolist(),
        b["correct"].tolist(),
        b["group_index"].tolist(),
        b["think"].tolist(),
        b["answer"].tolist(),
        b["emb"].tolist(),
        b["logprob"].tolist(),
        b["reflected"].tolist(),
        b["cfg"],
    )
    assert out.advantages.tolist() == pytest.approx(ref.advantages, abs=1e-9)
    assert out.is_anchor.tolist() == ref.is_anchor
    assert out.negative_rank.tolist() == ref.negative_rank
    assert out.rescued.tolist() == ref.rescued
    assert out.k_prime.tolist() == ref.k_prime


@settings(max_examples=100, deadline=None)
@given(batches())
def test_advantages_are_finite_and_zero_outside_the_subgroup(b):
    out = run_vectorised(b)
    assert torch.isfinite(out.advantages).all()
    outside = ~out.is_anchor & (out.negative_rank < 0)
    assert torch.count_nonzero(out.advantages[outside]) == 0


@settings(max_examples=100, deadline=None)
@given(
    batches(
        with_rgr=False,
        fixed={"binary": True, "equalize": True, "rescue_normalize": True},
        mixed_group=True,
    )
)
def test_binary_anchor_gets_sqrt_k_and_failure_share_is_s_over_one_plus_s(b):
    # Equalisation and normalised rescue are what make these numbers hold; the generator pins
    # them (and binary rewards) and always includes a mixed group, so no example is vacuous.
    cfg = b["cfg"]
    out = run_vectorised(b)
    adv = out.advantages
    correct = torch.tensor(b["correct"])
    group_index = torch.tensor(b["group_index"])
    kinds = []
    for g in torch.unique(group_index):
        rows = group_index == g
        share = failure_share(adv[rows], correct[rows])["signal/failure_share_seq"]
        anchors = out.is_anchor & rows
        if out.rescued[rows].any():
            # All failures: the pseudo-anchor gets +sqrt(K) like a real anchor (the z-score
            # cancels delta), and all of the signal is failure signal.
            kinds.append("rescued")
            assert share == pytest.approx(1.0)
        elif anchors.any():
            kinds.append("anchored")
            assert share == pytest.approx(cfg.s / (1 + cfg.s), abs=1e-5)
        else:
            # All correct, or all wrong with rescue off or impossible: nothing to learn.
            kinds.append("no signal")
            assert torch.count_nonzero(adv[rows]) == 0 and share == 0.0
            continue
        # eps in the std makes the anchor a hair below sqrt(K) (relative error ~ eps / std).
        assert adv[anchors].tolist() == pytest.approx([math.sqrt(cfg.K)], rel=1e-4)
    assert "anchored" in kinds


def test_finite_for_single_rollout_groups_and_equal_rewards():
    out = one_group([True], rewards=[1.0])
    assert out.advantages.tolist() == [0.0]
    # Equal rewards inside a subgroup (format-weighted reward can tie): std 0 → finite zeros.
    out = one_group([True, False], rewards=[0.5, 0.5])
    assert out.advantages.tolist() == [0.0, 0.0]


def test_grpo_failure_share_of_a_mixed_binary_group_is_one_half():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    adv = grpo_advantages(rewards, torch.zeros(5, dtype=torch.long))
    share = failure_share(adv, rewards == 1)["signal/failure_share_seq"]
    assert share == pytest.approx(0.5, abs=1e-6)
