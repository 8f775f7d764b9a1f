"""The failure map: where a group's rollouts lie, and which kinds of failure training produces.

Both views read the ``projection`` of the group records (docs/run_format.md): each rollout's
rationale embedding, projected to 32 numbers by one random matrix per run, so points of every
step share one space.

- One group: its rollouts (and RGR repair) in 2-D by PCA fitted on that group's points, each
  marked by its role in CARE's selection (`group_map`).
- Across training: the failed rollouts of every step clustered into failure modes by k-means
  (`failure_modes`); each mode's share of the step's failures (`mode_shares`), and how often
  CARE picked a mode's failures as hard negatives, used them as pseudo-anchors or repaired them
  (`mode_table`).

scikit-learn does the PCA and k-means. Nothing here imports Streamlit; the page draws what these
functions return, and the tests call them on runs the trainer wrote.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from analysis_app import data
from care.runlog import GROUPS_FILE, PROJECTION_DIM, GroupRecord, StepIndex

ANCHOR = "anchor"
PSEUDO_ANCHOR = "pseudo-anchor"
HARD_NEGATIVE = "hard negative"
OTHER_FAILURE = "other failure"
"""A failure CARE did not pick (the record does not say which were in the nearest-M pool)."""
OTHER_CORRECT = "other correct"
REPAIR = "RGR repair"

DEFAULT_MODES = 4
MAX_FIT_POINTS = 20_000
"""k-means is fitted on at most this many failures (an even subsample) and assigns all."""


# --------------------------------------------------------------------------------------------
# one group


@dataclass(frozen=True)
class GroupMap:
    """One group's rollouts in 2-D.

    points: one row per rollout, then the repair: columns ``point`` ("#i" or "repair"),
        ``rollout`` (index, -1 for the repair), ``role`` (anchor, pseudo-anchor, hard negative,
        other failure, other correct, RGR repair), ``pick`` (hard-negative pick order 1.., NaN
        otherwise), ``repaired`` (RGR repaired this rollout), ``correct``, ``advantage``, ``x``,
        ``y`` (the first two principal components).
    explained: the share of the points' variance each axis holds; None when all points coincide.
    """

    points: pd.DataFrame
    explained: tuple[float, float] | None


def _roles(group: GroupRecord) -> list[str]:
    roles = [OTHER_CORRECT if flag else OTHER_FAILURE for flag in group.correct]
    for negative in group.hard_negatives:
        roles[negative.index] = HARD_NEGATIVE
    if group.anchor_index is not None:
        roles[group.anchor_index] = ANCHOR
    if group.pseudo_anchor is not None:
        roles[group.pseudo_anchor] = PSEUDO_ANCHOR
    return roles


def _plane(vectors: np.ndarray) -> tuple[np.ndarray, tuple[float, float] | None]:
    """``[n, D]`` points -> ``([n, 2]`` PCA coordinates, explained variance shares)``; zeros and
    None when the points have no spread (one point, or identical rationales)."""
    centred = vectors - vectors.mean(axis=0)
    if len(vectors) < 2 or not np.any(np.abs(centred) > 0):
        return np.zeros((len(vectors), 2)), None
    components = min(2, len(vectors))
    pca = PCA(n_components=components, svd_solver="full")
    plane = np.zeros((len(vectors), 2))
    plane[:, :components] = pca.fit_transform(vectors)
    ratios = list(pca.explained_variance_ratio_) + [0.0] * (2 - components)
    return plane, (float(ratios[0]), float(ratios[1]))


def group_map(group: GroupRecord) -> GroupMap | None:
    """The 2-D map of one group record; None when it has no ``projection`` (a run without
    rationale embeddings: GRPO and the other baselines, imports, schema version < 3).

    Example: anchor 2, hard negatives [0, 3], a failed repair of rollout 0 -> roles
    ``["hard negative", "other failure", "anchor", "hard negative", "RGR repair"]``, picks
    ``[1, NaN, NaN, 2, NaN]``.
    """
    if group.projection is None:
        return None
    roles = _roles(group)
    picks = {negative.index: rank for rank, negative in enumerate(group.hard_negatives, start=1)}
    repair = group.rgr if group.rgr is not None and group.rgr.triggered else None
    rows = [
        {
            "point": f"#{index}",
            "rollout": index,
            "role": roles[index],
            "pick": float(picks.get(index, math.nan)),
            "repaired": repair is not None and repair.source_index == index,
            "correct": group.correct[index],
            "advantage": group.advantages[index],
        }
        for index in range(group.G)
    ]
    if repair is not None:
        rows.append(
            {
                "point": "repair",
                "rollout": -1,
                "role": REPAIR,
                "pick": math.nan,
                "repaired": False,
                "correct": bool(repair.passed),
                "advantage": repair.advantage,
            }
        )
    plane, explained = _plane(np.asarray(group.projection, dtype=np.float64))
    frame = pd.DataFrame(rows).assign(x=plane[:, 0], y=plane[:, 1])
    frame["advantage"] = pd.to_numeric(frame["advantage"]).astype(float)
    return GroupMap(frame, explained)


# --------------------------------------------------------------------------------------------
# across training


@dataclass(frozen=True)
class FailurePoints:
    """Every failed rollout with a projection, over all steps of a run.

    frame: one row per failure: ``step``, ``group_id``, ``rollout``, ``picked`` (CARE chose it as
        a (pseudo-)negative), ``pseudo_anchor`` (it anchored a rescued group), ``repaired`` (RGR
        repaired it), ``repair_passed`` (that repair passed; False when not repaired).
    vectors: float ``[len(frame), PROJECTION_DIM]`` their projections, in the same order.
    groups: group records read; groups_without: those that had no projection (skipped).
    """

    frame: pd.DataFrame
    vectors: np.ndarray
    groups: int
    groups_without: int

    @property
    def has_projections(self) -> bool:
        """Some group record of the run holds a projection."""
        return self.groups_without < self.groups

    def __len__(self) -> int:
        return len(self.frame)


_POINT_COLUMNS = [
    "step",
    "group_id",
    "rollout",
    "picked",
    "pseudo_anchor",
    "repaired",
    "repair_passed",
]


def failure_points(groups: Sequence[GroupRecord]) -> FailurePoints:
    """The failed rollouts of `groups` (any steps) with their projections.

    Example: a group with correct [F, F, T, F], hard negatives [0, 3] and a passed repair of 0
    gives three rows: rollout 0 (picked, repaired, passed), 1 (neither), 3 (picked).
    """
    rows: list[tuple[int, int, int, bool, bool, bool, bool]] = []
    vectors: list[Sequence[float]] = []
    without = total = 0
    for group in groups:
        total += 1
        if group.projection is None:
            without += 1
            continue
        picked = {negative.index for negative in group.hard_negatives}
        repair = group.rgr if group.rgr is not None and group.rgr.triggered else None
        for index, correct in enumerate(group.correct):
            if correct:
                continue
            repaired = repair is not None and repair.source_index == index
            rows.append(
                (
                    group.step,
                    group.group_id,
                    index,
                    index in picked,
                    index == group.pseudo_anchor,
                    repaired,
                    repaired and bool(repair.passed),
                )
            )
            vectors.append(group.projection[index])
    frame = pd.DataFrame(rows, columns=_POINT_COLUMNS)
    array = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), PROJECTION_DIM)
    return FailurePoints(frame, array, total, without)


def load_failure_points(run_dir: Path) -> tuple[FailurePoints, list[str]]:
    """`failure_points` of every step of a run's groups.jsonl (cached by the file's size and
    mtime), and the warnings of lines that could not be read."""
    index: StepIndex = data.load_groups(run_dir)
    key = data.file_key(Path(run_dir) / GROUPS_FILE)

    def read() -> FailurePoints:
        return failure_points([group for step in index.steps for group in index.of_step(step)])

    points = read() if key is None else data.CACHE.get_or_load(("failure_points", *key), read)
    return points, list(index.warnings)


@dataclass(frozen=True)
class FailureModes:
    """k-means clusters of the failures: ``labels`` ``[n]`` (0 = the largest mode), ``centres``
    ``[k, PROJECTION_DIM]`` in the same order."""

    labels: np.ndarray
    centres: np.ndarray

    @property
    def k(self) -> int:
        return len(self.centres)

    def names(self) -> list[str]:
        return [f"mode {number}" for number in range(1, self.k + 1)]


def failure_modes(
    points: FailurePoints, k: int, seed: int = 0, max_fit: int = MAX_FIT_POINTS
) -> FailureModes:
    """Cluster the failures into `k` modes with k-means (seeded, so a rerun gives the same modes).

    k-means is fitted on every failure, or on an even subsample of `max_fit` of them, and then
    assigns every failure to its nearest centre. Modes are numbered by size, largest first.

    Raises:
        ValueError: when `k` < 1 or there are fewer failures than modes.
    """
    if k < 1:
        raise ValueError(f"the number of failure modes must be >= 1, got {k}")
    if len(points) < k:
        raise ValueError(f"{len(points)} failures cannot form {k} failure modes")
    stride = max(1, math.ceil(len(points) / max_fit))
    model = KMeans(n_clusters=k, n_init=4, random_state=seed)
    model.fit(points.vectors[::stride])
    raw = model.predict(points.vectors)
    order = np.argsort(-np.bincount(raw, minlength=k), kind="stable")
    relabel = np.empty(k, dtype=np.int64)
    relabel[order] = np.arange(k)
    return FailureModes(relabel[raw], model.cluster_centers_[order])


def load_failure_modes(run_dir: Path, points: FailurePoints, k: int) -> FailureModes:
    """`failure_modes` of a run's `points` (from `load_failure_points`), cached with the run's
    groups.jsonl, so a page rerun does not fit k-means again."""
    key = data.file_key(Path(run_dir) / GROUPS_FILE)
    if key is None:
        return failure_modes(points, k)
    return data.CACHE.get_or_load(("failure_modes", *key, k), lambda: failure_modes(points, k))


def mode_shares(points: FailurePoints, modes: FailureModes) -> pd.DataFrame:
    """Each mode's share of the step's failures: one row per step, one column per mode
    (rows sum to 1).

    Example: a step with failures in modes [0, 1, 1] -> ``{"mode 1": 1/3, "mode 2": 2/3}``.
    """
    counts = pd.crosstab(points.frame["step"].to_numpy(), modes.labels)
    counts = counts.reindex(columns=range(modes.k), fill_value=0)
    counts.columns = modes.names()
    return counts.div(counts.sum(axis=1), axis=0).rename_axis("step")


def mode_table(points: FailurePoints, modes: FailureModes) -> pd.DataFrame:
    """One row per failure mode: its size and share of all failures, how often CARE picked its
    failures as hard negatives (rate within the mode, and the mode's share of all picks), how
    often one anchored a rescued group as its pseudo-anchor, how often RGR repaired them, and how
    often those repairs passed (NaN without a repair).

    Example: mode 1 with 4 failures, 2 picked, 1 of them repaired and passed ->
    ``failures 4, picked as hard negative 0.5, repaired 0.25, RGR pass rate 1.0``.
    """
    frame = points.frame.assign(mode=modes.labels)
    total_picks = max(int(frame["picked"].sum()), 1)
    rows = []
    for number, name in enumerate(modes.names()):
        members = frame[frame["mode"] == number]
        repaired = int(members["repaired"].sum())
        rows.append(
            {
                "mode": name,
                "failures": len(members),
                "share of failures": len(members) / len(frame),
                "picked as hard negative": float(members["picked"].mean()),
                "share of picks": float(members["picked"].sum()) / total_picks,
                "pseudo-anchor": float(members["pseudo_anchor"].mean()),
                "repaired by RGR": float(members["repaired"].mean()),
                "RGR pass rate": float(members["repair_passed"].sum()) / repaired
                if repaired
                else math.nan,
            }
        )
    return pd.DataFrame(rows)


def mode_examples(
    points: FailurePoints, modes: FailureModes, logged_steps: Sequence[int]
) -> list[tuple[int, int, int] | None]:
    """Per mode, the (step, group_id, rollout) of the failure nearest its centre among the
    steps whose rollout texts were logged; None when no failure of the mode has a text."""
    logged = points.frame["step"].isin(list(logged_steps)).to_numpy()
    distance = np.linalg.norm(points.vectors - modes.centres[modes.labels], axis=1)
    examples: list[tuple[int, int, int] | None] = []
    for number in range(modes.k):
        candidates = np.flatnonzero((modes.labels == number) & logged)
        if not candidates.size:
            examples.append(None)
            continue
        row = points.frame.iloc[candidates[np.argmin(distance[candidates])]]
        examples.append((int(row["step"]), int(row["group_id"]), int(row["rollout"])))
    return examples


def example_responses(
    run_dir: Path, examples: Sequence[tuple[int, int, int] | None]
) -> tuple[list[str | None], list[str]]:
    """The logged response text of each example (None where there is none), and the warnings
    of sample lines that could not be read."""
    texts: list[str | None] = []
    warnings: list[str] = []
    for example in examples:
        if example is None:
            texts.append(None)
            continue
        step, group_id, rollout = example
        samples = data.load_samples(run_dir, step)
        warnings.extend(samples.warnings)
        texts.append(
            next(
                (
                    sample.response
                    for sample in samples.records
                    if sample.group_id == group_id and sample.index == rollout
                ),
                None,
            )
        )
    return texts, warnings
