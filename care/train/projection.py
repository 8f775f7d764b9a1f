"""The compact copy of each rollout's rationale embedding that ``groups.jsonl`` keeps.

CARE's rationale embeddings (``[N, H]``, L2-normalised, H = the policy's hidden size) are too
wide to log for every rollout, so each is multiplied by one random matrix of the run
(Johnson–Lindenstrauss): ``p = h @ R``, ``R`` of shape ``[H, PROJECTION_DIM]``. ``R`` starts as
the Gaussian matrix of scikit-learn's GaussianRandomProjection (entries N(0, 1 / PROJECTION_DIM),
`gaussian_matrix`) whose columns are then made orthonormal and scaled by sqrt(H / PROJECTION_DIM)
(`projection_matrix`): squared distances are still kept in expectation, the spread of the error
is smaller (measured on the demo model, H = 96: docs/failure_map.md), and for H <= PROJECTION_DIM
the map is an isometry that keeps every distance exactly. The dashboard can therefore place
rollouts of any step in one space; ``bench/bench_projection.py`` measures how well cosine
distances survive.

``R`` depends only on the run seed and H, so every step and every process uses the same one.
It is drawn from its own numpy generator: the trainer's torch and numpy random streams are not
touched, so a run trains to the same weights with or without the projection.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from care.runlog.layout import PROJECTION_DIM

PROJECTION_DECIMALS = 4
"""Decimals kept in groups.jsonl: coordinates are about N(0, 1/32), so the rounding error
(at most 5e-5 per coordinate) is far below the distances between rationales."""

_PROJECTION_STREAM = 0x70726F6A
"""Mixed into the run seed so R is independent of every other stream drawn from it."""


def gaussian_matrix(seed: int, hidden_size: int) -> np.ndarray:
    """The Gaussian random projection of the run: float64 ``[hidden_size, PROJECTION_DIM]``,
    entries N(0, 1 / PROJECTION_DIM) drawn from ``SeedSequence([seed, stream])``, so the same
    (seed, hidden_size) gives the same matrix on every machine and in every process."""
    if hidden_size < 1:
        raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
    generator = np.random.default_rng(np.random.SeedSequence([seed, _PROJECTION_STREAM]))
    return generator.standard_normal((hidden_size, PROJECTION_DIM)) / np.sqrt(PROJECTION_DIM)


def _orthonormal_columns(matrix: np.ndarray) -> np.ndarray:
    """The Q of ``matrix``'s reduced QR decomposition, signs fixed so it is unique."""
    q, r = np.linalg.qr(matrix)
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


@lru_cache(maxsize=8)
def projection_matrix(seed: int, hidden_size: int) -> torch.Tensor:
    """The run's projection ``R``: float64 ``[hidden_size, PROJECTION_DIM]``.

    `gaussian_matrix` orthonormalised: for H >= PROJECTION_DIM its columns are orthonormal and
    scaled by sqrt(H / PROJECTION_DIM), so ``R.T @ R = H / PROJECTION_DIM · I`` and a random unit
    vector keeps its length in expectation; for H < PROJECTION_DIM its rows are orthonormal,
    ``R @ R.T = I``, and every distance is kept exactly.

    Example: ``projection_matrix(0, 96).shape`` -> ``torch.Size([96, 32])``; two calls return
    equal matrices.
    """
    gaussian = gaussian_matrix(seed, hidden_size)
    if hidden_size >= PROJECTION_DIM:
        matrix = _orthonormal_columns(gaussian) * np.sqrt(hidden_size / PROJECTION_DIM)
    else:
        matrix = _orthonormal_columns(gaussian.T).T
    return torch.from_numpy(np.ascontiguousarray(matrix))


def project_rationales(embeddings: torch.Tensor, seed: int) -> torch.Tensor:
    """Rationale embeddings projected by the run's matrix and rounded for the log.

    Args:
        embeddings: float ``[N, H]``, one rationale embedding per row (no gradient needed).
        seed: the run seed (``run.seed``).

    Returns:
        float64 ``[N, PROJECTION_DIM]``: ``embeddings @ projection_matrix(seed, H)``, rounded to
        PROJECTION_DECIMALS decimals.

    Raises:
        ValueError: when `embeddings` is not 2-D or holds a NaN or infinity.
    """
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be [N, H], got shape {tuple(embeddings.shape)}")
    values = embeddings.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(values).all()):
        rows = torch.nonzero(~torch.isfinite(values).all(dim=1)).flatten().tolist()
        raise ValueError(f"embeddings of rows {rows} are not finite; cannot project them")
    projected = values @ projection_matrix(seed, values.shape[1])
    return torch.round(projected, decimals=PROJECTION_DECIMALS)


def _cosine_distances(vectors: np.ndarray) -> np.ndarray:
    """``1 − cos`` of every pair ``i < j`` of the rows of ``vectors`` ``[N, D]``, as
    ``[N(N−1)/2]``."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    upper = np.triu_indices(len(vectors), k=1)
    return 1.0 - (unit @ unit.T)[upper]


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n−1 of ``values``, tied values sharing their mean rank (Spearman's convention)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    return (starts + (counts - 1) / 2.0)[inverse]


def projection_distortion(
    embeddings: np.ndarray, projected: np.ndarray, min_distance: float = 1e-6
) -> dict[str, float]:
    """How well the projection keeps the pairwise cosine distances of a set of rationales.

    Args:
        embeddings: float ``[N, H]`` rationale embeddings (N >= 3).
        projected: float ``[N, D]`` the same rows projected.
        min_distance: pairs closer than this in the embeddings (identical rationales) have no
            relative error; they count in the rank correlation only.

    Returns:
        ``median``, ``p95`` and ``max`` of ``|d' − d| / d`` over the pairs, with ``d`` the cosine
        distance of two embeddings and ``d'`` that of their projections; ``spearman``, the rank
        correlation of ``d'`` with ``d`` over all pairs; ``median_distance``, the median ``d``
        (what the relative errors are relative to); ``pairs`` and ``identical_pairs``.

    Example: with ``projected = embeddings @ Q`` for an orthogonal ``Q`` every error is 0 and
    ``spearman`` is 1.
    """
    if len(embeddings) != len(projected) or len(embeddings) < 3:
        raise ValueError(
            f"need the same N >= 3 rows in both, got {len(embeddings)} and {len(projected)}"
        )
    original = _cosine_distances(np.asarray(embeddings, dtype=np.float64))
    kept = _cosine_distances(np.asarray(projected, dtype=np.float64))
    apart = original >= min_distance
    if not apart.any():
        raise ValueError("every pair of rows is identical: there is no distance to compare")
    relative = np.abs(kept[apart] - original[apart]) / original[apart]
    ranks_original, ranks_kept = _average_ranks(original), _average_ranks(kept)
    spearman = float(np.corrcoef(ranks_original, ranks_kept)[0, 1])
    return {
        "median": float(np.median(relative)),
        "p95": float(np.quantile(relative, 0.95)),
        "max": float(relative.max()),
        "spearman": spearman,
        "median_distance": float(np.median(original)),
        "pairs": float(original.size),
        "identical_pairs": float((~apart).sum()),
    }
