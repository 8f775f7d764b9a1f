"""Per-step training metrics and training-smoothness metrics, defined once for every estimator."""

from care.metrics.signal import (
    batch_summary,
    energy_ratio,
    failure_share,
    group_type_fractions,
    rgr_rates,
    step_signal_metrics,
    variance_ratio,
)
from care.metrics.smoothness import (
    debiased_ema,
    detrended_iqr,
    max_drawdown,
    smoothness_summary,
    spike_count,
    step_diff_std,
)

__all__ = [
    "batch_summary",
    "debiased_ema",
    "detrended_iqr",
    "energy_ratio",
    "failure_share",
    "group_type_fractions",
    "max_drawdown",
    "rgr_rates",
    "smoothness_summary",
    "spike_count",
    "step_diff_std",
    "step_signal_metrics",
    "variance_ratio",
]
