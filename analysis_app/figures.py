"""Figure builders: a data frame in, a plotly figure out — the same object in the app and the paper.

Step frames are "wide": one row per (run, step) with columns ``run``, ``step`` and one column per
metric (as `analysis_app.data.steps_of_runs` returns). Each builder draws every run that has the
metric; colour says which run, line dash says which metric. Runs that differ only by seed can be
drawn as one seed group: their mean curve in a 95 % band (`line_figure`). Long curves are thinned
for drawing by keeping each bucket's lowest and highest point, so spikes stay visible (smoothing
is computed on the full series first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from care.metrics.smoothness import debiased_ema
from care.stats import mean_interval

MAX_POINTS = 2000
"""Points drawn per curve; more are thinned by `decimate` (the data are not changed)."""

RUN_COLOURS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
)
METRIC_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
RAW_OPACITY = 0.25
BAND_OPACITY = 0.2
"""Opacity of a seed group's 95 % band under its mean curve."""

METRIC_LABELS = {
    "signal/failure_share_seq": "failure share (seq)",
    "signal/failure_share_seq_no_rgr": "failure share (seq, without RGR repairs)",
    "signal/failure_share_token": "failure share (token)",
    "signal/failure_share_token_no_rgr": "failure share (token, without RGR repairs)",
    "groups/all_correct_frac": "all correct",
    "groups/all_wrong_frac": "all wrong",
    "groups/mixed_frac": "mixed",
    "groups/with_signal_frac": "with signal",
    "rescue/triggered_frac": "rescue rate",
    "rescue/impossible_frac": "rescue impossible",
    "rgr/pass_rate": "RGR pass rate",
    "rgr/triggered": "RGR repairs",
    "rgr/passed": "RGR repairs passed",
    "adv/var_ratio_neg_pos": "Var(A<0) / Var(A>0)",
    "adv/energy_ratio_neg_pos": "E[A²|A<0] / E[A²|A>0]",
    "acc/mean": "training accuracy",
    "val/acc": "held-out accuracy (greedy)",
    "reward/mean": "reward",
    "grad_norm": "grad norm",
    "loss/kl": "KL",
}

FAILURE_SHARE_METRICS = (
    "signal/failure_share_seq",
    "signal/failure_share_seq_no_rgr",
    "signal/failure_share_token",
    "signal/failure_share_token_no_rgr",
)
GROUP_TYPE_METRICS = (
    "groups/all_correct_frac",
    "groups/all_wrong_frac",
    "groups/mixed_frac",
    "groups/with_signal_frac",
)
RESCUE_RGR_METRICS = ("rescue/triggered_frac", "rescue/impossible_frac", "rgr/pass_rate")
VARIANCE_RATIO_METRICS = ("adv/var_ratio_neg_pos", "adv/energy_ratio_neg_pos")


@dataclass(frozen=True)
class SignalFigure:
    """One figure of the Training-signal page (and of the export): its metrics and titles."""

    metrics: tuple[str, ...]
    title: str
    y_title: str


SIGNAL_FIGURES: dict[str, SignalFigure] = {
    "failure_share": SignalFigure(
        FAILURE_SHARE_METRICS, "Failure-signal share of the advantage magnitude", "share"
    ),
    "group_types": SignalFigure(GROUP_TYPE_METRICS, "Prompt groups by type", "fraction of groups"),
    "rescue_rgr": SignalFigure(RESCUE_RGR_METRICS, "All-negative rescue and RGR", "rate"),
    "variance_ratio": SignalFigure(
        VARIANCE_RATIO_METRICS, "Advantage variance ratio, negatives over positives", "ratio"
    ),
}
"""The learning-signal figures by export file name, in page order: the one list the page, the
export and the summary table read."""

SIGNAL_METRICS: tuple[str, ...] = tuple(
    metric for figure in SIGNAL_FIGURES.values() for metric in figure.metrics
)
"""Every metric a learning-signal figure draws."""

BOUNDED_METRICS = frozenset(
    {
        *FAILURE_SHARE_METRICS,
        *GROUP_TYPE_METRICS,
        *RESCUE_RGR_METRICS,
        "acc/mean",
        "val/acc",
        "format/mean",
    }
)
"""Metrics that are fractions: their axis is fixed to [0, 1] so runs and pages compare by eye."""
UNIT_RANGE = (-0.02, 1.02)

ROLE_COLOURS = {
    "anchor": "#2ca02c",
    "pseudo-anchor": "#ff7f0e",
    "hard negative": "#d62728",
    "correct": "#98df8a",
    "wrong": "#c7c7c7",
    "RGR repair": "#9467bd",
    "other failure": "#c7c7c7",
    "other correct": "#98df8a",
}


ACCURACY_METRICS = ("acc/mean", "val/acc")
"""Training accuracy (the step's sampled rollouts) beside the held-out validation accuracy
(greedy, every ``train.eval_every`` steps): a rising training curve with a flat held-out one
is memorisation, not learning."""


def accuracy_figure(
    frame: pd.DataFrame,
    smoothing: float = 0.0,
    seed_groups: Mapping[str, Sequence[str]] | None = None,
) -> go.Figure:
    """Training and held-out accuracy over steps for every run (or seed group) in `frame`
    (step 0 of the held-out curve is the starting policy)."""
    return line_figure(
        frame,
        list(ACCURACY_METRICS),
        title="Accuracy: training rollouts and held-out validation",
        y_title="accuracy",
        smoothing=smoothing,
        seed_groups=seed_groups,
    )


def metric_label(metric: str) -> str:
    """Readable name of a logged metric key (the key itself when it has none)."""
    return METRIC_LABELS.get(metric, metric)


def decimate(
    x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """At most about `max_points` of the finite points, keeping each bucket's min and max.

    NaN points are dropped first (the curves connect over missing steps, as the smoothness
    metrics do). The points are split into ``max_points // 2`` equal buckets of consecutive
    steps; from each the lowest and the highest point are kept, in step order.

    Args:
        x: [T] steps; y: [T] values.

    Example: 10 points, max_points = 4 -> buckets [0..4] and [5..9], their min and max: 4 points.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    x = np.asarray(x)
    y = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(y)
    x, y = x[finite], y[finite]
    size = y.size
    if size <= max_points:
        return x, y
    buckets = max_points // 2
    width = math.ceil(size / buckets)
    padded = np.full(buckets * width, np.nan)
    padded[:size] = y
    table = padded.reshape(buckets, width)
    lowest = np.argmin(np.where(np.isnan(table), np.inf, table), axis=1)
    highest = np.argmax(np.where(np.isnan(table), -np.inf, table), axis=1)
    starts = np.arange(buckets) * width
    keep = np.unique(np.concatenate([starts + lowest, starts + highest]))
    keep = keep[keep < size]
    return x[keep], y[keep]


def _runs_in(frame: pd.DataFrame) -> list[str]:
    if "run" not in frame.columns:
        raise ValueError("frame needs a 'run' column (use analysis_app.data.steps_of_runs)")
    return list(dict.fromkeys(frame["run"].tolist()))


def _series(frame: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    values = pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=np.float64)
    return frame["step"].to_numpy(), values


def _empty_figure(title: str, message: str) -> go.Figure:
    figure = go.Figure()
    figure.update_layout(title=title, template="plotly_white", height=360)
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure


def has_metrics(frame: pd.DataFrame, metrics: Sequence[str]) -> bool:
    """True when any of `metrics` has a finite value in `frame`."""
    for metric in metrics:
        if metric in frame.columns and pd.to_numeric(frame[metric], errors="coerce").notna().any():
            return True
    return False


def line_figure(
    frame: pd.DataFrame,
    metrics: Sequence[str],
    *,
    title: str,
    y_title: str,
    smoothing: float = 0.0,
    show_raw: bool | None = None,
    max_points: int = MAX_POINTS,
    y_range: tuple[float, float] | None = None,
    seed_groups: Mapping[str, Sequence[str]] | None = None,
) -> go.Figure:
    """Curves of `metrics` over steps for every run in `frame`.

    With ``smoothing > 0`` (or ``show_raw=True``) the raw curve is drawn faintly under the
    debiased-EMA curve (`care.metrics.smoothness.debiased_ema`); with 0 only the raw curve is
    drawn, solid. A run without a metric (e.g. no RGR in a GRPO run) simply has no trace.

    A seed group (`seed_groups`: its name -> its runs, see `analysis_app.seeds`) is drawn as
    one curve in place of its runs: per step the mean of the runs' curves (each smoothed as a
    single run's is) over the runs that logged that step, in a band of the 95 % Student-t
    interval over them (`seed_band`).

    Args:
        frame: [rows] with columns run, step and the metrics.
        metrics: metric columns to draw, in legend order.
        smoothing: EMA weight in [0, 1).

    Example: ``line_figure(steps, ["acc/mean"], title="Accuracy", y_title="acc", smoothing=0.6)``
    -> for two runs, 4 traces: raw and smoothed per run; with ``seed_groups={"care (2 seeds)":
    ["care_seed0", "care_seed1"]}`` and those two runs, 3 traces: band low, band high, mean.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    curves = _curves(_runs_in(frame), seed_groups or {})
    draw_raw_faint = smoothing > 0.0 if show_raw is None else show_raw
    several_curves = len(curves) > 1
    figure = go.Figure()
    for position, (curve, runs) in enumerate(curves):
        colour = RUN_COLOURS[position % len(RUN_COLOURS)]
        rows = frame[frame["run"].isin(runs)]
        for metric_position, metric in enumerate(metrics):
            if metric not in rows.columns:
                continue
            label = metric_label(metric)
            style = _CurveStyle(
                name=f"{curve} · {label}" if several_curves else label,
                group=f"{curve}|{metric}",
                colour=colour,
                dash=METRIC_DASHES[metric_position % len(METRIC_DASHES)],
            )
            if len(runs) == 1:
                _add_run_traces(figure, rows, metric, smoothing, draw_raw_faint, max_points, style)
            else:
                band = seed_band(rows, metric, smoothing, max_points)
                _add_band_traces(figure, band, style)
    if not figure.data:
        wanted = ", ".join(metrics)
        return _empty_figure(title, f"no logged values of {wanted}")
    subtitle = f"EMA smoothing {smoothing:.2f}, raw curve faint" if draw_raw_faint else "raw"
    if any(len(runs) > 1 for _, runs in curves):
        subtitle += "; seed groups: mean over seeds, band = 95 % t-interval"
    figure.update_layout(
        title={"text": f"{title}<br><sup>{subtitle}</sup>"},
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 70, "b": 50},
        legend={"orientation": "v", "yanchor": "top", "y": 1.0, "x": 1.02, "font": {"size": 11}},
        hovermode="closest",
    )
    _integer_step_axis(figure, frame["step"])
    figure.update_yaxes(title_text=y_title)
    if y_range is None and set(metrics) <= BOUNDED_METRICS:
        y_range = UNIT_RANGE
    if y_range is not None:
        figure.update_yaxes(range=list(y_range))
    return figure


def _curves(
    runs: Sequence[str], seed_groups: Mapping[str, Sequence[str]]
) -> list[tuple[str, list[str]]]:
    """(name, runs) of every curve, in the order of `runs`: a seed group where its first run
    is, with those of its runs that are in `runs`; every other run alone under its own name.
    A group with one run left is that run."""
    group_of = {run: name for name, members in seed_groups.items() for run in members}
    curves: dict[str, list[str]] = {}
    for run in runs:
        curves.setdefault(group_of.get(run, run), []).append(run)
    return [(name if len(members) > 1 else members[0], members) for name, members in curves.items()]


@dataclass(frozen=True)
class _CurveStyle:
    name: str
    group: str
    colour: str
    dash: str


def _add_run_traces(
    figure: go.Figure,
    rows: pd.DataFrame,
    metric: str,
    smoothing: float,
    draw_raw_faint: bool,
    max_points: int,
    style: _CurveStyle,
) -> None:
    """One run's curve of `metric`: the raw curve faint (when asked) under the smoothed one."""
    steps, values = _series(rows, metric)
    if not np.isfinite(values).any():
        return
    if draw_raw_faint:
        raw_x, raw_y = decimate(steps, values, max_points)
        figure.add_trace(
            go.Scatter(
                x=raw_x,
                y=raw_y,
                mode="lines",
                name=f"{style.name} (raw)",
                legendgroup=style.group,
                showlegend=False,
                opacity=RAW_OPACITY,
                line={"color": style.colour, "width": 1, "dash": style.dash},
                hovertemplate=f"{style.name} raw<br>step %{{x}}: %{{y:.4g}}<extra></extra>",
            )
        )
    shown = debiased_ema(values, smoothing) if smoothing > 0.0 else values
    line_x, line_y = decimate(steps, shown, max_points)
    figure.add_trace(
        go.Scatter(
            x=line_x,
            y=line_y,
            mode="lines",
            name=style.name,
            legendgroup=style.group,
            line={"color": style.colour, "width": 2, "dash": style.dash},
            connectgaps=True,
            hovertemplate=f"{style.name}<br>step %{{x}}: %{{y:.4g}}<extra></extra>",
        )
    )


@dataclass(frozen=True)
class SeedBand:
    """A seed group's curve: at each drawn step, the mean over the runs that logged it, the
    95 % Student-t interval (NaN where only one did) and how many runs that is."""

    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    runs: np.ndarray


def seed_band(
    rows: pd.DataFrame, metric: str, smoothing: float = 0.0, max_points: int = MAX_POINTS
) -> SeedBand:
    """The mean curve of `metric` over the runs in `rows` with its 95 % band.

    Each run's curve is smoothed on its own (`debiased_ema`, as when it is drawn alone), then
    at each step the curves of the runs that logged the step are averaged and given
    `care.stats.mean_interval` (mean ± t·sd/√n). The mean curve is thinned by `decimate` first,
    so the intervals are computed at the drawn steps only.

    Example: two runs with raw values 0.2 and 0.4 at step 3 (smoothing 0) -> mean 0.3, band
    0.3 ± 12.71 · 0.1414 / √2 = [-0.971, 1.571], runs 2.
    """
    curves = {}
    for run, run_rows in rows.groupby("run", sort=False):
        steps, values = _series(run_rows, metric)
        smoothed = debiased_ema(values, smoothing) if smoothing > 0.0 else values
        curves[run] = pd.Series(smoothed, index=steps)
    table = pd.DataFrame(curves).sort_index()
    steps, mean = decimate(table.index.to_numpy(), table.mean(axis=1).to_numpy(), max_points)
    values = table.loc[steps].to_numpy()
    intervals = [mean_interval(row[np.isfinite(row)]) for row in values]
    return SeedBand(
        steps=steps,
        mean=mean,
        low=np.array([interval.low for interval in intervals]),
        high=np.array([interval.high for interval in intervals]),
        runs=np.array([interval.n for interval in intervals]),
    )


def _add_band_traces(figure: go.Figure, band: SeedBand, style: _CurveStyle) -> None:
    """A seed group's band (its lower edge, then its upper edge filled down to it) and its
    mean curve; the hover says over how many runs each point is averaged."""
    if band.steps.size == 0:
        return
    red, green, blue = (int(style.colour[i : i + 2], 16) for i in (1, 3, 5))
    for edge, values in (("low", band.low), ("high", band.high)):
        figure.add_trace(
            go.Scatter(
                x=band.steps,
                y=values,
                mode="lines",
                name=f"{style.name} 95 % band ({edge})",
                legendgroup=style.group,
                showlegend=False,
                line={"color": style.colour, "width": 0},
                fill="tonexty" if edge == "high" else None,
                fillcolor=f"rgba({red}, {green}, {blue}, {BAND_OPACITY})",
                hoverinfo="skip",
            )
        )
    figure.add_trace(
        go.Scatter(
            x=band.steps,
            y=band.mean,
            customdata=band.runs,
            mode="lines",
            name=style.name,
            legendgroup=style.group,
            line={"color": style.colour, "width": 2, "dash": style.dash},
            connectgaps=True,
            hovertemplate=(
                f"{style.name}<br>step %{{x}}: %{{y:.4g}} (mean of %{{customdata}} runs)"
                "<extra></extra>"
            ),
        )
    )


def _integer_step_axis(figure: go.Figure, steps: pd.Series, title: str = "step") -> None:
    """Steps are integers: on a short run, tick every step instead of at 1.5, 2.5, ..."""
    figure.update_xaxes(title_text=title)
    finite = pd.to_numeric(steps, errors="coerce").dropna()
    if len(finite) and finite.max() - finite.min() <= 12:
        figure.update_xaxes(dtick=1)


def smoothed_metric_figure(
    frame: pd.DataFrame,
    metric: str,
    smoothing: float,
    seed_groups: Mapping[str, Sequence[str]] | None = None,
) -> go.Figure:
    """One metric per run: the raw curve faint under its debiased EMA (always both); a seed
    group's mean curve in its 95 % band."""
    return line_figure(
        frame,
        [metric],
        title=metric_label(metric),
        y_title=metric,
        smoothing=smoothing,
        show_raw=True,
        seed_groups=seed_groups,
    )


def signal_figures(
    frame: pd.DataFrame,
    smoothing: float = 0.0,
    *,
    logged_only: bool = False,
    seed_groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, go.Figure]:
    """The `SIGNAL_FIGURES`, built from `frame`, by export file name.

    logged_only: leave out a figure none of whose metrics any run logged (a GRPO run has no
        rescue or RGR rate); otherwise such a figure says so on an empty plot.
    seed_groups: drawn as one mean curve in a 95 % band each (`line_figure`).

    Example: ``signal_figures(steps)["failure_share"]`` draws each run's four failure shares.
    """
    return {
        name: line_figure(
            frame,
            spec.metrics,
            title=spec.title,
            y_title=spec.y_title,
            smoothing=smoothing,
            seed_groups=seed_groups,
        )
        for name, spec in SIGNAL_FIGURES.items()
        if not logged_only or has_metrics(frame, spec.metrics)
    }


def eval_accuracy_figure(eval_frame: pd.DataFrame, macros: pd.DataFrame | None = None) -> go.Figure:
    """Accuracy (%) per checkpoint step: one line per (run, task), the macro average dashed.

    Args:
        eval_frame: columns run, checkpoint_step, task, accuracy (fraction).
        macros: optional columns run, checkpoint_step, macro (fraction).
    """
    title = "Evaluation accuracy per checkpoint"
    if eval_frame.empty:
        return _empty_figure(title, "no evaluation results")
    runs = list(dict.fromkeys(eval_frame["run"].tolist()))
    tasks = list(dict.fromkeys(eval_frame["task"].tolist()))
    figure = go.Figure()
    for run_position, run in enumerate(runs):
        colour = RUN_COLOURS[run_position % len(RUN_COLOURS)]
        for task_position, task in enumerate(tasks):
            rows = eval_frame[(eval_frame["run"] == run) & (eval_frame["task"] == task)]
            rows = rows.sort_values("checkpoint_step")
            if rows.empty:
                continue
            figure.add_trace(
                go.Scatter(
                    x=rows["checkpoint_step"],
                    y=100.0 * rows["accuracy"],
                    mode="lines+markers",
                    name=f"{run} · {task}",
                    line={
                        "color": colour,
                        "dash": METRIC_DASHES[(task_position + 1) % len(METRIC_DASHES)],
                    },
                    marker={"size": 8},
                )
            )
        if macros is not None and len(tasks) > 1:
            rows = macros[macros["run"] == run].sort_values("checkpoint_step")
            if len(rows):
                figure.add_trace(
                    go.Scatter(
                        x=rows["checkpoint_step"],
                        y=100.0 * rows["macro"],
                        mode="lines+markers",
                        name=f"{run} · macro average",
                        line={"color": colour, "width": 4},
                        marker={"size": 10, "symbol": "diamond"},
                    )
                )
    figure.update_layout(
        title=title,
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        legend={"orientation": "v", "yanchor": "top", "y": 1.0, "x": 1.02, "font": {"size": 11}},
    )
    _integer_step_axis(figure, eval_frame["checkpoint_step"], "checkpoint step")
    figure.update_yaxes(title_text="accuracy (%)", range=[-2, 102])
    return figure


def group_advantages_figure(
    rollouts: pd.DataFrame, title: str = "Advantages in the group"
) -> go.Figure:
    """Bar per rollout of its advantage, coloured by its role in the group.

    Args:
        rollouts: columns rollout (int), role (str), advantage (float), as
            `analysis_app.tables.group_rollouts_table` returns.
    """
    if rollouts.empty:
        return _empty_figure(title, "no rollouts")
    figure = go.Figure()
    for role, rows in rollouts.groupby("role", sort=False):
        base_role = str(role).split(" (")[0]
        base_role = "hard negative" if base_role.startswith("hard negative") else base_role
        figure.add_trace(
            go.Bar(
                x=[f"#{int(r)}" for r in rows["rollout"]],
                y=rows["advantage"],
                name=str(role),
                marker={"color": ROLE_COLOURS.get(base_role, "#7f7f7f")},
            )
        )
    figure.update_layout(
        title=title,
        template="plotly_white",
        height=300,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        barmode="overlay",
    )
    figure.update_xaxes(title_text="rollout", categoryorder="category ascending")
    figure.update_yaxes(title_text="advantage", zeroline=True)
    return figure


def group_map_figure(
    points: pd.DataFrame, title: str = "The group's rationales (PCA of the projections)"
) -> go.Figure:
    """The rollouts of one group (and its RGR repair) in 2-D, one marker colour per role; dotted
    lines join the (pseudo-)anchor to each hard negative, labelled with the pick order, and a
    dashed line joins the repaired failure to its repair.

    Args:
        points: columns point, rollout, role, pick, repaired, correct, advantage, x, y, as
            `analysis_app.failure_map.group_map` returns.
    """
    if points.empty:
        return _empty_figure(title, "no rollouts")
    figure = go.Figure()
    anchors = points[points["role"].isin(["anchor", "pseudo-anchor"])]
    negatives = points[points["pick"].notna()].sort_values("pick")
    for anchor in anchors.itertuples():
        for negative in negatives.itertuples():
            figure.add_trace(
                go.Scatter(
                    x=[anchor.x, negative.x],
                    y=[anchor.y, negative.y],
                    mode="lines",
                    line={"color": "#d62728", "dash": "dot", "width": 1},
                    hoverinfo="skip",
                    showlegend=False,
                )
            )
    repair = points[points["role"] == "RGR repair"]
    source = points[points["repaired"]]
    if len(repair) and len(source):
        figure.add_trace(
            go.Scatter(
                x=[source["x"].iloc[0], repair["x"].iloc[0]],
                y=[source["y"].iloc[0], repair["y"].iloc[0]],
                mode="lines",
                line={"color": ROLE_COLOURS["RGR repair"], "dash": "dash", "width": 1.5},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    for role, rows in points.groupby("role", sort=False):
        labels = [
            str(point) if math.isnan(pick) else f"{point} (pick {int(pick)})"
            for point, pick in zip(rows["point"], rows["pick"], strict=True)
        ]
        figure.add_trace(
            go.Scatter(
                x=rows["x"],
                y=rows["y"],
                mode="markers+text",
                name=str(role),
                text=labels,
                textposition="top center",
                marker={
                    "color": ROLE_COLOURS.get(str(role), "#7f7f7f"),
                    "size": 13,
                    "symbol": ["circle" if flag else "x" for flag in rows["correct"]],
                    "line": {"color": "#333333", "width": 1},
                },
                customdata=np.stack([rows["advantage"].to_numpy()], axis=-1),
                hovertemplate=(
                    "%{text}<br>advantage %{customdata[0]:+.3f}<extra>%{fullData.name}</extra>"
                ),
            )
        )
    figure.update_layout(
        title=title,
        template="plotly_white",
        height=420,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    figure.update_xaxes(title_text="PC 1")
    figure.update_yaxes(title_text="PC 2")
    return figure


def mode_shares_figure(shares: pd.DataFrame, title: str = "Failure modes per step") -> go.Figure:
    """Stacked bars: each failure mode's share of the step's failed rollouts.

    Args:
        shares: index step, one column per mode (rows sum to 1), as
            `analysis_app.failure_map.mode_shares` returns.
    """
    if shares.empty:
        return _empty_figure(title, "no failures with projections")
    figure = go.Figure()
    for position, mode in enumerate(shares.columns):
        figure.add_trace(
            go.Bar(
                x=shares.index,
                y=shares[mode],
                name=str(mode),
                marker={"color": RUN_COLOURS[position % len(RUN_COLOURS)]},
            )
        )
    figure.update_layout(
        title=title,
        template="plotly_white",
        barmode="stack",
        height=360,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    _integer_step_axis(figure, pd.Series(shares.index))
    figure.update_yaxes(title_text="share of the step's failures", range=[0, 1])
    return figure


# --------------------------------------------------------------------------------------------
# matplotlib fallback (no browser for kaleido)

_MATPLOTLIB_DASHES = {
    "solid": "-",
    "dash": "--",
    "dot": ":",
    "dashdot": "-.",
    "longdash": (0, (8, 3)),
    "longdashdot": (0, (8, 3, 2, 3)),
}


def _plain_title(text: Any) -> str:
    if not text:
        return ""
    return str(text).replace("<br>", "\n").replace("<sup>", "").replace("</sup>", "")


def to_matplotlib(figure: go.Figure) -> Any:
    """Redraw a figure from these builders with matplotlib (Agg): lines, markers and bars.

    Used when no Chrome/Chromium is installed for kaleido. Reads the plotly traces, so the
    exported figure shows the same data as the dashboard.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    mpl_figure, axes = plt.subplots(figsize=(8.0, 4.5), dpi=100)
    for trace in figure.data:
        x = list(trace.x) if trace.x is not None else []
        y = [math.nan if v is None else v for v in (trace.y if trace.y is not None else [])]
        label = trace.name if trace.showlegend is not False else None
        if trace.type == "bar":
            colour = trace.marker.color if trace.marker is not None else None
            axes.bar([str(v) for v in x], y, color=colour, label=label)
            continue
        line = trace.line
        colour = line.color if line is not None else None
        dash = _MATPLOTLIB_DASHES.get((line.dash if line is not None else None) or "solid", "-")
        width = (line.width if line is not None and line.width else 1.5) * 0.8
        marker = "o" if trace.mode and "markers" in trace.mode else None
        alpha = trace.opacity if trace.opacity is not None else 1.0
        axes.plot(
            x,
            y,
            color=colour,
            linestyle=dash,
            linewidth=width,
            marker=marker,
            alpha=alpha,
            label=label,
        )
    for annotation in figure.layout.annotations or ():
        axes.text(0.5, 0.5, annotation.text, ha="center", va="center", transform=axes.transAxes)
    layout = figure.layout
    axes.set_title(_plain_title(layout.title.text if layout.title else ""), fontsize=11)
    axes.set_xlabel(layout.xaxis.title.text or "" if layout.xaxis and layout.xaxis.title else "")
    axes.set_ylabel(layout.yaxis.title.text or "" if layout.yaxis and layout.yaxis.title else "")
    if layout.yaxis is not None and layout.yaxis.range is not None:
        axes.set_ylim(*layout.yaxis.range)
    axes.grid(alpha=0.3)
    if any(trace.showlegend is not False for trace in figure.data):
        axes.legend(fontsize=8, loc="best")
    mpl_figure.tight_layout()
    return mpl_figure
