"""What every page shares: the runs root, the view state in the URL, warnings, error guard.

The view lives in the URL query (TensorBoard style), so a link reproduces what someone saw:

- ``run`` (repeated): the selected runs, as paths relative to the runs root;
- ``smoothing``: the EMA weight of the curves, 0 .. 0.99;
- ``group_seeds``: 1 or 0, whether runs that differ only by seed are drawn as one;
- page-specific keys (``browse``, ``step``, ``group``, ``metric``, ``reference``, ``baseline``,
  ``a``, ``b``, ``benchmark``, ``outcome``, ``error``, ``item``).

Every value read from the URL is validated; a bad one is reported on the page and replaced by
the default, never trusted (a run path that leaves the runs root is refused).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from analysis_app import data, figures, seeds


@dataclass(frozen=True)
class PageEntry:
    file: str
    title: str
    icon: str

    @property
    def url_path(self) -> str:
        return self.file.removesuffix(".py")


PAGES_DIR = Path(__file__).resolve().parent / "pages"
PAGES = (
    PageEntry("runs.py", "Runs", ":material/table_rows:"),
    PageEntry("training_signal.py", "Training signal", ":material/show_chart:"),
    PageEntry("smoothness.py", "Smoothness", ":material/waves:"),
    PageEntry("hard_negatives.py", "Hard negatives", ":material/search:"),
    PageEntry("failure_map.py", "Failure map", ":material/scatter_plot:"),
    PageEntry("evaluation.py", "Evaluation", ":material/target:"),
    PageEntry("compare.py", "Compare", ":material/compare_arrows:"),
    PageEntry("compare_checkpoints.py", "Compare checkpoints", ":material/difference:"),
)
SHARED_PARAMS = ("run", "smoothing", "group_seeds")
"""Query keys every page understands; the page links carry them, page-specific keys stay behind."""
ENTRY_SCRIPT = "app.py"

PARAM_RUNS = "run"
PARAM_SMOOTHING = "smoothing"
PARAM_GROUP_SEEDS = "group_seeds"
DEFAULT_SMOOTHING = 0.6
MAX_SMOOTHING = 0.99
DEFAULT_RUN_COUNT = 4
"""Runs selected when the URL names none (the newest-listed first few)."""
MAX_WARNINGS_SHOWN = 20


def runs_root_or_stop() -> Path:
    """The runs root from ``CARE_RUNS_DIR``; stops the page with a message when it is missing."""
    root = data.runs_root()
    if not root.is_dir():
        st.error(
            f"The runs folder `{root}` does not exist. Start the dashboard with "
            f"`care dashboard --runs DIR` or set `{data.RUNS_DIR_ENV}`."
        )
        st.stop()
    return root


def all_runs_or_stop(root: Path) -> list[str]:
    """Names of every run under `root`; stops the page with a hint when there is none."""
    names = data.discover_runs(root)
    if not names:
        st.info(
            f"No runs under `{root.resolve()}` yet. A run is a folder holding `meta.json` or "
            "`steps.jsonl`; `care demo` or `care train` writes one."
        )
        st.stop()
    return names


def _set_param(key: str, values: str | Sequence[str] | None) -> None:
    """Write one query key, only when it changes (each write is a browser history update)."""
    if values is None or (not isinstance(values, str) and len(values) == 0):
        if key in st.query_params:
            del st.query_params[key]
        return
    wanted = [values] if isinstance(values, str) else list(values)
    if st.query_params.get_all(key) != wanted:
        st.query_params[key] = wanted if len(wanted) > 1 else wanted[0]


def url_value(key: str) -> str | None:
    """The query value of `key` (the last one when repeated), None when absent."""
    values = st.query_params.get_all(key)
    return values[-1] if values else None


def select_runs(root: Path, names: list[str], *, label: str = "Runs") -> dict[str, Path]:
    """The sidebar run picker, initialised from and written back to ``?run=...``.

    URL entries that are no run or leave the root are shown as errors and dropped.
    Returns name -> resolved folder of the selected runs, in selection order.
    """
    requested = st.query_params.get_all(PARAM_RUNS)
    valid: list[str] = []
    for name in requested:
        try:
            data.resolve_run(root, name)
        except ValueError as error:
            st.error(f"Ignored a run from the URL: {error}")
            continue
        if name not in valid:
            valid.append(name)
    options = list(dict.fromkeys([*names, *valid]))
    default = valid if requested else options[:DEFAULT_RUN_COUNT]
    selected = st.sidebar.multiselect(label, options, default=default, key="view_runs")
    _set_param(PARAM_RUNS, selected)
    return {name: data.resolve_run(root, name) for name in selected}


def smoothing_slider() -> float:
    """The sidebar smoothing slider, initialised from and written back to ``?smoothing=``."""
    raw = url_value(PARAM_SMOOTHING)
    value = DEFAULT_SMOOTHING
    if raw is not None:
        try:
            parsed = float(raw)
        except ValueError:
            parsed = math.nan
        if math.isfinite(parsed) and 0.0 <= parsed <= MAX_SMOOTHING:
            value = round(parsed, 2)
        else:
            st.warning(
                f"Ignored smoothing={raw!r} from the URL: it must be a number in [0, {MAX_SMOOTHING}]."
            )
    smoothing = st.sidebar.slider(
        "Smoothing (EMA weight)",
        min_value=0.0,
        max_value=MAX_SMOOTHING,
        value=value,
        step=0.01,
        key="view_smoothing",
        help="TensorBoard's debiased exponential moving average; 0 shows the raw curve.",
    )
    _set_param(PARAM_SMOOTHING, f"{smoothing:.2f}")
    return float(smoothing)


def seed_groups_toggle(runs: dict[str, Path]) -> dict[str, tuple[str, ...]]:
    """The selected runs' seed groups to draw as one (`analysis_app.seeds`; name -> runs),
    behind the sidebar toggle "Group seeds" (``?group_seeds=1|0``).

    The toggle appears only when two or more selected runs differ only by seed, and is then on
    unless the URL says 0; a caption names each group's runs and seeds. Off, or without such
    runs: {}.
    """
    configs, warnings = data.configs_of_runs(runs)
    show_warnings(warnings)
    groups = [group for group in seeds.seed_groups(configs) if len(group.runs) > 1]
    if not groups:
        return {}
    raw = url_value(PARAM_GROUP_SEEDS)
    if raw not in (None, "0", "1"):
        st.warning(f"Ignored {PARAM_GROUP_SEEDS}={raw!r} from the URL: it must be 1 or 0.")
    grouped = st.sidebar.toggle(
        "Group seeds",
        value=raw != "0",
        key="view_group_seeds",
        help=(
            "Draw runs whose configs differ only in run.seed, run.name and run.out_dir (and "
            "per-seed paths such as data_seed0/) as one mean curve in a 95 % Student-t band."
        ),
    )
    _set_param(PARAM_GROUP_SEEDS, "1" if grouped else "0")
    if not grouped:
        return {}
    described = "; ".join(_seed_group_text(group) for group in groups)
    st.caption(
        "Seed groups, each drawn as the mean of its runs' curves in a band of the 95 % "
        f"Student-t interval over the runs that logged the step: {described}."
    )
    return seeds.several(groups)


def _seed_group_text(group: seeds.SeedGroup) -> str:
    """``"**a_seed* (2 seeds)**: a_seed0 (seed 0), a_seed1 (seed 1)"``."""
    pairs = zip(group.runs, group.seeds, strict=True)
    return f"**{group.label}**: " + ", ".join(f"{run} (seed {seed})" for run, seed in pairs)


def selected_runs(prompt: str = "Pick one or more runs in the sidebar.") -> dict[str, Path] | None:
    """The runs picked in the sidebar; None, after showing `prompt`, while none is."""
    root = runs_root_or_stop()
    runs = select_runs(root, all_runs_or_stop(root))
    if not runs:
        st.info(prompt)
        return None
    return runs


def browsed_run(prompt: str = "Pick a run in the sidebar.") -> tuple[str, Path] | None:
    """The name and folder of the one run a browsing page shows (``?browse=``), among the
    sidebar's; None, after showing `prompt`, while no run is selected."""
    runs = selected_runs(prompt)
    if runs is None:
        return None
    name = choose("Run", list(runs), param="browse")
    return name, runs[name]


def selected_steps(
    *, min_runs: int = 1, prompt: str = "Pick one or more runs in the sidebar."
) -> tuple[dict[str, Path], pd.DataFrame, float] | None:
    """The sidebar's runs and smoothing, and the selected runs' steps (load warnings shown);
    None, after showing `prompt`, while fewer than `min_runs` runs are selected."""
    root = runs_root_or_stop()
    names = all_runs_or_stop(root)
    runs = select_runs(root, names)
    smoothing = smoothing_slider()
    if len(runs) < min_runs:
        st.info(prompt)
        return None
    steps, warnings = data.steps_of_runs(runs)
    show_warnings(warnings)
    return runs, steps, smoothing


def numeric_metrics(steps: pd.DataFrame) -> list[str]:
    """The step columns that hold at least one logged value (identifiers left out)."""
    return [
        column
        for column in steps.columns
        if column not in ("run", "step", "time") and figures.has_metrics(steps, [column])
    ]


def choose(
    label: str,
    options: Sequence[str],
    *,
    param: str,
    default: str | None = None,
    where: str = "main",
) -> str:
    """A selectbox whose choice lives in ``?<param>=``; a URL value not among `options` is
    reported and replaced by `default` (or the first option)."""
    options = list(options)
    raw = url_value(param)
    fallback = default if default in options else options[0]
    initial = fallback
    if raw is not None:
        if raw in options:
            initial = raw
        else:
            st.warning(f"Ignored {param}={raw!r} from the URL: not one of the choices here.")
    container = st.sidebar if where == "sidebar" else st
    choice = container.selectbox(label, options, index=options.index(initial), key=f"view_{param}")
    _set_param(param, choice)
    return str(choice)


def choose_many(
    label: str, options: Sequence[str], *, param: str, default: Sequence[str]
) -> list[str]:
    """A multiselect whose choices live in the repeated ``?<param>=``; unknown URL values are
    reported and dropped."""
    options = list(options)
    requested = st.query_params.get_all(param)
    unknown = [value for value in requested if value not in options]
    if unknown:
        st.warning(f"Ignored {param}={unknown} from the URL: not among the choices here.")
    initial = [value for value in requested if value in options] if requested else None
    if not initial:
        initial = [value for value in default if value in options]
    chosen = st.multiselect(label, options, default=initial, key=f"view_{param}")
    _set_param(param, chosen)
    return list(chosen)


def choose_int(label: str, options: Sequence[int], *, param: str, where: str = "main") -> int:
    """`choose` for integer choices (steps, group ids)."""
    texts = [str(option) for option in options]
    return int(choose(label, texts, param=param, where=where))


def show_warnings(warnings: Sequence[str]) -> None:
    """Corrupt lines and unreadable files, as "file:line: problem", in one warning box."""
    unique = list(dict.fromkeys(warnings))
    if not unique:
        return
    shown = unique[:MAX_WARNINGS_SHOWN]
    more = len(unique) - len(shown)
    lines = "\n".join(f"- `{warning}`" for warning in shown)
    tail = f"\n- … and {more} more" if more else ""
    st.warning(f"Skipped {len(unique)} unreadable line(s) or file(s):\n{lines}{tail}")


def show_table(
    frame: pd.DataFrame,
    *,
    digits: int = 3,
    signed: bool = False,
    hide_index: bool = False,
    column_config: dict | None = None,
    key: str | None = None,
    formats: Mapping[str, str] | None = None,
) -> None:
    """A data frame with fixed decimals and "–" for missing values (Streamlit writes "None");
    `formats` gives some float columns their own pattern (p-values: ``"{:.3g}"``)."""
    formats = formats or {}
    numeric = [
        c for c in frame.columns if pd.api.types.is_float_dtype(frame[c]) and c not in formats
    ]
    pattern = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    styled = frame.style.format(pattern, subset=numeric, na_rep="–")
    for column, column_pattern in formats.items():
        styled = styled.format(column_pattern, subset=[column], na_rep="–")
    st.dataframe(styled, hide_index=hide_index, column_config=column_config, key=key)


def _under_dashboard() -> bool:
    """True when the page runs inside the app (not alone, as under AppTest): links need it."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    context = get_script_run_ctx()
    main_script = getattr(context, "main_script_path", None) if context is not None else None
    return bool(main_script) and Path(main_script).name == ENTRY_SCRIPT


def _draw_page_links(container: object) -> None:
    shared = {key: st.query_params.get_all(key) for key in SHARED_PARAMS if key in st.query_params}
    query = {key: values if len(values) > 1 else values[0] for key, values in shared.items()}
    with container:  # type: ignore[attr-defined]
        st.markdown("**CARE dashboard**")
        for page in PAGES:
            st.page_link(f"pages/{page.file}", label=page.title, icon=page.icon, query_params=query)
        st.divider()


def run_page(title: str, body: Callable[[], None]) -> None:
    """Render a page: its title, then `body`; an unexpected error becomes a message, never a
    traceback (Streamlit's stop/rerun signals are BaseExceptions and pass through).

    Inside the dashboard the page links are drawn at the top of the sidebar, after `body` ran,
    so they carry the query the page has just written (selected runs, smoothing).
    """
    st.set_page_config(page_title=f"{title} · CARE", layout="wide")
    links = st.sidebar.container() if _under_dashboard() else None
    st.title(title)
    try:
        body()
    except Exception as error:  # the page must stay usable whatever a run folder holds
        st.error(f"This page could not be drawn: {type(error).__name__}: {error}")
    finally:
        if links is not None:
            _draw_page_links(links)
