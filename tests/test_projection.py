"""The run's random projection of rationale embeddings: fixed per run, cheap, and close enough to
the embeddings' cosine geometry (docs/failure_map.md has the figures on real rationales)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from care.runlog import PROJECTION_DIM
from care.train.projection import (
    gaussian_matrix,
    project_rationales,
    projection_distortion,
    projection_matrix,
)


def rationales(hidden_size: int, n: int = 240, latent: int = 6) -> torch.Tensor:
    """L2-normalised points that vary along `latent` random directions plus a little noise, so
    their distances spread continuously as those of real rationales do: ``[n, hidden_size]``."""
    generator = torch.Generator().manual_seed(11)
    mixing = torch.randn(latent, hidden_size, generator=generator)
    points = torch.randn(n, latent, generator=generator) @ mixing
    points += 0.3 * torch.randn(n, hidden_size, generator=generator)
    return torch.nn.functional.normalize(points, dim=1)


def test_the_matrix_is_fixed_by_seed_and_hidden_size() -> None:
    first = projection_matrix(3, 96)
    assert first.shape == (96, PROJECTION_DIM) and first.dtype == torch.float64
    projection_matrix.cache_clear()
    assert torch.equal(projection_matrix(3, 96), first)  # rebuilt, not only cached
    assert not torch.equal(projection_matrix(4, 96), first)
    # Orthogonal columns scaled by sqrt(96 / 32): a unit vector keeps its length in expectation.
    assert torch.allclose(first.T @ first, 3.0 * torch.eye(32, dtype=torch.float64))
    # The Gaussian matrix it comes from spans the same columns.
    gaussian = torch.from_numpy(gaussian_matrix(3, 96))
    assert torch.allclose(first @ torch.linalg.lstsq(first, gaussian).solution, gaussian)


def test_at_most_32_dimensions_are_kept_exactly() -> None:
    for hidden_size in (16, 32):
        embeddings = rationales(hidden_size, n=40)
        projected = project_rationales(embeddings, seed=1)
        measured = projection_distortion(embeddings.numpy(), projected.numpy())
        # Only the 4-decimal rounding is left.
        assert measured["max"] < 1e-3 and measured["spearman"] > 0.9999


def test_projecting_leaves_the_training_random_streams_alone() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    projection_matrix.cache_clear()
    project_rationales(rationales(64, n=16), seed=9)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()


def test_projected_rows_are_rounded_to_four_decimals_and_keep_the_row_order() -> None:
    embeddings = rationales(64, n=10)
    projected = project_rationales(embeddings, seed=2)
    assert projected.shape == (10, PROJECTION_DIM)
    assert torch.equal(projected, torch.round(projected * 1e4) / 1e4)
    exact = embeddings.double() @ projection_matrix(2, 64)
    assert torch.allclose(projected, exact, atol=5e-5 + 1e-12)
    assert torch.equal(project_rationales(embeddings[[3, 1]], seed=2), projected[[3, 1]])


def test_non_finite_embeddings_are_refused_naming_the_rows() -> None:
    embeddings = rationales(32, n=6)
    embeddings[4, 0] = float("nan")
    with pytest.raises(ValueError, match=r"embeddings of rows \[4\] are not finite"):
        project_rationales(embeddings, seed=0)
    with pytest.raises(ValueError, match=r"embeddings must be \[N, H\]"):
        project_rationales(embeddings[0], seed=0)


def test_an_isometry_has_no_distortion() -> None:
    embeddings = rationales(48, n=30).numpy()
    rotation, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((48, 48)))
    measured = projection_distortion(embeddings, embeddings @ rotation)
    assert measured["max"] < 1e-9 and measured["spearman"] == pytest.approx(1.0)
    assert measured["pairs"] == 30 * 29 / 2 and measured["identical_pairs"] == 0
    with pytest.raises(ValueError, match="every pair of rows is identical"):
        projection_distortion(embeddings[[0, 0, 0]], embeddings[[0, 0, 0]])


@pytest.mark.parametrize("hidden_size", [96, 3584])
def test_cosine_distances_survive_the_projection(hidden_size) -> None:
    """Johnson–Lindenstrauss at 32 dimensions: a typical distance moves by a tenth of itself,
    one in twenty by more than about 0.4 of itself, and their order is kept well enough for the
    map (measured here: median 0.09, p95 0.33, rank correlation 0.95)."""
    embeddings = rationales(hidden_size)
    projected = project_rationales(embeddings, seed=0)
    measured = projection_distortion(embeddings.numpy(), projected.numpy())
    assert measured["median"] < 0.12
    assert measured["p95"] < 0.45
    assert measured["spearman"] > 0.93
