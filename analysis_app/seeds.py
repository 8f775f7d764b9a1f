"""Runs that differ only by seed, found from their configs, to be drawn and tabulated as one.

Two runs are seeds of one group when their resolved configs (``config.yaml``) are equal once
what only names or places a run is left out:

- the fields `IGNORED_FIELDS`: ``run.seed`` (what differs), ``run.name`` and ``run.out_dir``
  (where the run folder is; a run's folder is ``<run.out_dir>/<run.name>``);
- inside every other text value, the run's own seed written as ``seed<N>``, ``seed_<N>`` or
  ``seed-<N>``: a file made per seed, such as the demo's ``data_fast_seed0/train.jsonl`` or its
  warm start ``demo_fast_seed0_sft/checkpoints/step_10``, is what that seed produced, so
  ``…seed0…`` in one run and ``…seed1…`` in the other compare equal.

Every other field must be equal: another estimator, step count, learning rate or data file
keeps runs apart. A run without a config or without an integer ``run.seed`` stays on its own,
as does a run whose seed its group already has (a copy, not another seed).

>>> groups = seed_groups({"a_seed0": {"run": {"seed": 0}, "lr": 1},
...                       "a_seed1": {"run": {"seed": 1}, "lr": 1}, "b": {"run": {"seed": 0}}})
>>> [(group.label, group.runs, group.seeds) for group in groups]
[('a_seed* (2 seeds)', ('a_seed0', 'a_seed1'), (0, 1)), ('b', ('b',), (0,))]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from care.config import config_changes

IGNORED_FIELDS = ("run.seed", "run.name", "run.out_dir")
"""Config fields that may differ between the seeds of one group."""
SEED_PLACEHOLDER = "seed*"


@dataclass(frozen=True)
class SeedGroup:
    """Runs that differ only by seed, in the order they were given, and their seeds.

    label: the runs' common name with the seed replaced by ``seed*`` and the number of seeds
        (``"demo_fast_seed*_grpo (2 seeds)"``); a run alone is its name.
    """

    label: str
    runs: tuple[str, ...]
    seeds: tuple[int, ...]


def seed_of(config: Mapping[str, Any]) -> int | None:
    """``run.seed`` of a config, None when it has none (or not an integer)."""
    run = config.get("run")
    seed = run.get("seed") if isinstance(run, Mapping) else None
    return seed if type(seed) is int else None


def without_seed(value: Any, seed: int) -> Any:
    """`value` (a config or any part of it) with the seed named in its text replaced.

    Example: ``without_seed({"files": ["data_seed3/train.jsonl"]}, 3)`` ->
    ``{"files": ["data_seed*/train.jsonl"]}``; ``seed30`` stays when the seed is 3.
    """
    if isinstance(value, str):
        return re.sub(rf"seed[_-]?{seed}(?!\d)", SEED_PLACEHOLDER, value)
    if isinstance(value, Mapping):
        return {key: without_seed(item, seed) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [without_seed(item, seed) for item in value]
    return value


def differing_fields(a: Mapping[str, Any], b: Mapping[str, Any]) -> set[str]:
    """The leaf fields (``"algo.estimator"``) whose values differ between two configs, each
    with its own seed replaced (`without_seed`), less `IGNORED_FIELDS`; a field only one has
    differs too.

    Example: configs equal but for ``run.seed`` and ``optim.lr`` -> ``{"optim.lr"}``.
    """
    plain_a = without_seed(a, seed_of(a)) if seed_of(a) is not None else a
    plain_b = without_seed(b, seed_of(b)) if seed_of(b) is not None else b
    # config_changes lists fields only one side has, too (as added or removed).
    return {change.field for change in config_changes(plain_a, plain_b)} - set(IGNORED_FIELDS)


def seed_groups(configs: Mapping[str, Mapping[str, Any]]) -> list[SeedGroup]:
    """Every run of `configs` (run name -> its config) in one group, groups in the order of
    their first run; see the module docstring for when runs share one.

    Example: demo_fast_seed0_grpo and demo_fast_seed1_grpo of ``care demo --fast --seeds 0,1``
    -> one group ``"demo_fast_seed*_grpo (2 seeds)"``.
    """
    members: list[list[str]] = []
    for run in configs:
        home = next((group for group in members if _joins(group, run, configs)), None)
        if home is None:
            members.append([run])
        else:
            home.append(run)
    return [_group(runs, configs) for runs in members]


def _joins(group: Sequence[str], run: str, configs: Mapping[str, Mapping[str, Any]]) -> bool:
    """True when `run` is another seed of `group`: both have seeds, its seed is new to the
    group and its config differs from the group's first run's in ignored fields only."""
    seed = seed_of(configs[run])
    seeds = [seed_of(configs[member]) for member in group]
    return (
        seed is not None
        and None not in seeds
        and seed not in seeds
        and not differing_fields(configs[group[0]], configs[run])
    )


def _group(runs: Sequence[str], configs: Mapping[str, Mapping[str, Any]]) -> SeedGroup:
    seeds = [seed_of(configs[run]) for run in runs]
    known = tuple(seed for seed in seeds if seed is not None)
    if len(runs) == 1:
        return SeedGroup(runs[0], tuple(runs), known)
    names = {without_seed(run, seed) for run, seed in zip(runs, known, strict=True)}
    common = names.pop() if len(names) == 1 else " + ".join(runs)
    return SeedGroup(f"{common} ({len(runs)} seeds)", tuple(runs), known)


def several(groups: Sequence[SeedGroup]) -> dict[str, tuple[str, ...]]:
    """Label -> runs of the groups of two or more seeds (what the figures and tables draw as
    one; a group of one is just its run)."""
    return {group.label: group.runs for group in groups if len(group.runs) > 1}
