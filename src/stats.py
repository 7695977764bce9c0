"""Statistics of repeated runs: summaries, backend-against-backend tests and the epoch-count rule.

Pure functions on plain sequences of numbers, so that tests can check them on values with known results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Summary:
    """Mean, spread and 95 % confidence interval of one metric over the repeats of a configuration.

    `variance` and `std` are the sample estimates (ddof=1), NaN for a single run. The interval is
    Student's t interval of the mean. `trimmed_mean` drops the fastest and the slowest run (one
    each), the way MLPerf scores repeated runs. It needs at least 3 runs and is NaN below that.
    """

    n: int
    mean: float
    variance: float
    std: float
    ci_low: float
    ci_high: float
    trimmed_mean: float


@dataclass(frozen=True)
class Comparison:
    """Group A against group B on one metric: ratio of means with a bootstrap interval, Welch's t-test."""

    mean_a: float
    mean_b: float
    ratio: float
    ratio_ci_low: float
    ratio_ci_high: float
    t_statistic: float
    p_value: float


def summarize(values: Sequence[float]) -> Summary:
    """Summarize the values of one metric over repeated runs; NaN fields where n is too small."""
    data = np.asarray(values, dtype=float)
    n = len(data)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)

    mean = float(data.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan, math.nan, math.nan)

    variance = float(data.var(ddof=1))
    std = math.sqrt(variance)
    half_width = float(scipy_stats.t.ppf((1 + CONFIDENCE) / 2, df=n - 1)) * std / math.sqrt(n)
    trimmed = float(np.sort(data)[1:-1].mean()) if n >= 3 else math.nan
    return Summary(n, mean, variance, std, mean - half_width, mean + half_width, trimmed)


def welch_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Return Welch's t statistic and two-sided p-value for equal means; NaN with fewer than 2 runs a side.

    Welch's test does not assume equal variances, which two backends' timings rarely have.
    Two samples without any spread (identical errors, for example) give NaN as well.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2 or (a.var() == 0 and b.var() == 0):
        return math.nan, math.nan
    result = scipy_stats.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def bootstrap_ratio(a: Sequence[float], b: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """Return mean(a) / mean(b) and its 95 % percentile-bootstrap interval.

    Each resample draws the runs of A and of B independently, with replacement. The percentile
    method is used because BCa needs jackknife estimates that 2 or 3 runs cannot give. With so few
    runs the interval is too narrow rather than too wide; the fixed seed makes reports repeatable.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0 or b.mean() == 0:
        return math.nan, math.nan, math.nan
    ratio = float(a.mean() / b.mean())
    if len(a) < 2 or len(b) < 2:
        return ratio, math.nan, math.nan

    generator = np.random.default_rng(seed)
    means_a = generator.choice(a, size=(BOOTSTRAP_RESAMPLES, len(a)), replace=True).mean(axis=1)
    means_b = generator.choice(b, size=(BOOTSTRAP_RESAMPLES, len(b)), replace=True).mean(axis=1)
    valid = means_b != 0
    ratios = means_a[valid] / means_b[valid]
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return ratio, float(low), float(high)


def compare(a: Sequence[float], b: Sequence[float], seed: int = 0) -> Comparison:
    """Compare one metric of group A against group B."""
    ratio, low, high = bootstrap_ratio(a, b, seed=seed)
    t_statistic, p_value = welch_test(a, b)
    mean_a = float(np.mean(a)) if len(a) else math.nan
    mean_b = float(np.mean(b)) if len(b) else math.nan
    return Comparison(mean_a, mean_b, ratio, low, high, t_statistic, p_value)


def mean_curve(curves: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the mean, the standard deviation (ddof=1) and the run count at each epoch.

    Curves may differ in length (a run stopped early): each epoch averages the runs that reached it.
    The standard deviation is NaN where only one run reached the epoch.
    """
    length = max((len(curve) for curve in curves), default=0)
    padded = np.full((len(curves), length), np.nan)
    for row, curve in enumerate(curves):
        padded[row, : len(curve)] = curve

    counts = np.sum(~np.isnan(padded), axis=0)
    means = np.array([np.nanmean(padded[:, epoch]) for epoch in range(length)])
    stds = np.array(
        [np.nanstd(padded[:, epoch], ddof=1) if counts[epoch] >= 2 else math.nan for epoch in range(length)]
    )
    return means, stds, counts


def select_epoch_count(means: Sequence[float], stds: Sequence[float]) -> int:
    """Return the epoch count (1-based) that the one-standard-deviation rule picks from a mean curve.

    The rule: find the epoch with the lowest mean validation error, then take the first epoch whose
    mean is at most that lowest mean plus the runs' standard deviation at that best epoch. After that
    epoch the mean improves by less than the seed-to-seed spread, so the repeats cannot show that
    longer training helps. Without a spread (one run), the rule returns the best epoch.
    """
    means = np.asarray(means, dtype=float)
    if len(means) == 0 or np.all(np.isnan(means)):
        raise ValueError("select_epoch_count needs a curve with at least one epoch")
    best = int(np.nanargmin(means))
    spread = float(stds[best]) if not math.isnan(float(stds[best])) else 0.0
    threshold = means[best] + spread
    return int(np.flatnonzero(means <= threshold)[0]) + 1
