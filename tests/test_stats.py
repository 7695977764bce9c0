"""The statistics of src.stats on samples whose results are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t as student

from src import stats


def test_summary_of_known_sample():
    summary = stats.summarize([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])

    assert summary.n == 8
    assert summary.mean == pytest.approx(5.0)
    assert summary.variance == pytest.approx(32 / 7)
    assert summary.std == pytest.approx(math.sqrt(32 / 7))
    # t(0.975, 7) = 2.364624
    half_width = 2.364624 * math.sqrt(32 / 7) / math.sqrt(8)
    assert summary.ci_low == pytest.approx(5.0 - half_width, rel=1e-5)
    assert summary.ci_high == pytest.approx(5.0 + half_width, rel=1e-5)
    # Without the 2 and the 9: (4 + 4 + 4 + 5 + 5 + 7) / 6
    assert summary.trimmed_mean == pytest.approx(29 / 6)


def test_summary_of_two_runs_has_no_trimmed_mean():
    summary = stats.summarize([1.0, 3.0])

    assert summary.mean == pytest.approx(2.0)
    assert summary.variance == pytest.approx(2.0)
    # t(0.975, 1) = 12.7062
    assert summary.ci_high == pytest.approx(2.0 + 12.7062047 * 1.0, rel=1e-6)
    assert math.isnan(summary.trimmed_mean)


def test_summary_of_one_run_has_no_spread():
    summary = stats.summarize([3.5])

    assert summary.n == 1
    assert summary.mean == 3.5
    assert math.isnan(summary.std)
    assert math.isnan(summary.ci_low)


def test_summary_of_no_runs_is_empty():
    summary = stats.summarize([])

    assert summary.n == 0
    assert math.isnan(summary.mean)


def test_welch_matches_hand_computation():
    a = [10.0, 12.0, 14.0]  # mean 12, variance 4
    b = [20.0, 21.0, 22.0, 23.0, 24.0]  # mean 22, variance 2.5
    t_statistic, p_value = stats.welch_test(a, b)

    standard_error = math.sqrt(4 / 3 + 2.5 / 5)
    assert t_statistic == pytest.approx((12 - 22) / standard_error)
    # Welch-Satterthwaite degrees of freedom, then the two-sided t tail.
    dof = (4 / 3 + 2.5 / 5) ** 2 / ((4 / 3) ** 2 / 2 + (2.5 / 5) ** 2 / 4)
    assert p_value == pytest.approx(2 * student.sf(abs(t_statistic), dof))
    assert p_value < 0.01


def test_welch_needs_two_runs_a_side():
    assert all(math.isnan(value) for value in stats.welch_test([1.0], [2.0, 3.0]))


def test_welch_of_identical_constant_samples_is_nan():
    assert all(math.isnan(value) for value in stats.welch_test([0.5, 0.5], [0.5, 0.5]))


def test_bootstrap_ratio_of_constant_samples_is_exact():
    ratio, low, high = stats.bootstrap_ratio([6.0, 6.0, 6.0], [3.0, 3.0])

    assert ratio == pytest.approx(2.0)
    assert low == pytest.approx(2.0)
    assert high == pytest.approx(2.0)


def test_bootstrap_ratio_interval_contains_ratio():
    rng = np.random.default_rng(1)
    a = rng.normal(20.0, 1.0, size=10)
    b = rng.normal(10.0, 1.0, size=10)
    ratio, low, high = stats.bootstrap_ratio(a, b)

    assert ratio == pytest.approx(a.mean() / b.mean())
    assert low < ratio < high
    assert 1.7 < low
    assert high < 2.3


def test_bootstrap_ratio_is_repeatable():
    assert stats.bootstrap_ratio([1.0, 2.0, 4.0], [2.0, 3.0]) == stats.bootstrap_ratio([1.0, 2.0, 4.0], [2.0, 3.0])


def test_mean_curve_handles_unequal_lengths():
    means, stds, counts = stats.mean_curve([[0.5, 0.3, 0.2], [0.7, 0.5]])

    assert means.tolist() == pytest.approx([0.6, 0.4, 0.2])
    assert stds[0] == pytest.approx(math.sqrt(0.02))
    assert math.isnan(stds[2])
    assert counts.tolist() == [2, 2, 1]


@pytest.mark.parametrize(
    ("means", "stds", "expected"),
    [
        # Lowest mean 0.10 at epoch 5 with spread 0.02: epoch 3 (0.115) is the first within 0.12.
        ([0.50, 0.20, 0.115, 0.11, 0.10, 0.105], [0.05, 0.03, 0.02, 0.02, 0.02, 0.02], 3),
        # No spread: the best epoch itself.
        ([0.5, 0.3, 0.2, 0.25], [math.nan] * 4, 3),
        # Steadily falling curve with a tiny spread: the last epoch.
        ([0.4, 0.3, 0.2, 0.1], [0.001] * 4, 4),
        # A wide spread at the best epoch reaches back to the first epoch.
        ([0.2, 0.15, 0.1], [0.0, 0.0, 0.2], 1),
    ],
)
def test_epoch_count_rule_on_known_curves(means, stds, expected):
    assert stats.select_epoch_count(means, stds) == expected


def test_epoch_count_rule_rejects_empty_curve():
    with pytest.raises(ValueError, match="at least one epoch"):
        stats.select_epoch_count([], [])
