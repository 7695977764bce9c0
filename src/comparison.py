"""The comparison tables, built from grouped runs: per configuration, backend pairs, Table 1, epoch counts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import pandas as pd
import yaml

from src import stats
from src.paths import REPOSITORY_ROOT
from src.run_groups import RunGroup

PAPER_RESULTS = REPOSITORY_ROOT / "conf" / "paper_results.yaml"

# Per-run metrics summarized for every configuration: the three times and the final errors.
SUMMARY_METRICS = ("user_time_s", "system_time_s", "total_time_s", "val_error", "test_error")

# Metrics that distributed runs log, read by Table 1.
SPARK_TOTAL = "spark_total_time_s"
SPARK_METRICS = (
    SPARK_TOTAL,
    "spark_task_time_median_ms",
    "spark_gc_time_median_ms",
    "spark_tasks",
    "spark_executors",
    "spark_cores",
)


# Topology whose runs decide the epoch count recorded for `epochs=auto`.
SELECTING_TOPOLOGY = "single"


@dataclass
class ComparisonTables:
    """Every table of one comparison, and the mean curves the figures and the epoch rule use."""

    summary: pd.DataFrame
    overview: pd.DataFrame
    pairs: pd.DataFrame
    distributed: pd.DataFrame
    epochs: pd.DataFrame
    curves: dict[str, tuple]


def load_paper_results(path: Path = PAPER_RESULTS) -> dict[str, list[dict]]:
    with open(path) as stream:
        return yaml.safe_load(stream)


def paper_row(group: RunGroup, rows: list[dict]) -> dict | None:
    """Return the row of conf/paper_results.yaml whose every `match` entry equals the group's tag or param."""
    for row in rows:
        if all(_recorded_value(group, key) == str(expected) for key, expected in row["match"].items()):
            return row
    return None


def _recorded_value(group: RunGroup, key: str) -> str | None:
    if key in ("dataset", "backend", "device", "topology", "model"):
        return group.tag(key)
    return group.params.get(key)


def build_comparison(groups: list[RunGroup], paper: dict[str, list[dict]]) -> ComparisonTables:
    curves = {group.label: stats.mean_curve(group.curves) for group in groups if group.curves}
    return ComparisonTables(
        summary=summary_table(groups, paper.get("single_machine", [])),
        overview=overview_table(groups, paper.get("single_machine", [])),
        pairs=pairs_table(groups),
        distributed=distributed_table(groups, paper.get("distributed", [])),
        epochs=epoch_table(groups, curves),
        curves=curves,
    )


def _identity_columns(group: RunGroup) -> dict[str, str]:
    return {
        "config": group.label,
        "config_id": group.config_id,
        "dataset": group.tag("dataset"),
        "backend": group.tag("backend"),
        "device": group.tag("device"),
        "topology": group.tag("topology"),
        "model": group.tag("model"),
        "epochs": group.params.get("epochs", ""),
        "train_samples": group.tag("data.train_samples"),
    }


def summary_table(groups: list[RunGroup], paper_rows: list[dict]) -> pd.DataFrame:
    """Return one row per configuration and metric: n, mean, variance, std, 95 % CI, trimmed mean, paper."""
    rows = []
    for group in groups:
        paper = paper_row(group, paper_rows) or {}
        for metric in SUMMARY_METRICS:
            summary = stats.summarize(group.values(metric))
            rows.append(
                {
                    **_identity_columns(group),
                    "metric": metric,
                    "n": summary.n,
                    "mean": summary.mean,
                    "variance": summary.variance,
                    "std": summary.std,
                    "ci95_low": summary.ci_low,
                    "ci95_high": summary.ci_high,
                    "trimmed_mean": summary.trimmed_mean,
                    "paper": paper.get(metric, math.nan),
                }
            )
    return pd.DataFrame(rows)


def overview_table(groups: list[RunGroup], paper_rows: list[dict]) -> pd.DataFrame:
    """Return the readable table: one row per configuration, each cell `mean ± 95 % CI half-width`."""
    rows = []
    for group in groups:
        paper = paper_row(group, paper_rows) or {}
        row = {
            "configuration": group.label,
            "runs": len(group.runs),
            "epochs": group.params.get("epochs", ""),
            "samples": group.tag("data.train_samples"),
        }
        for metric in SUMMARY_METRICS:
            summary = stats.summarize(group.values(metric))
            digits = 4 if metric.endswith("error") else 1
            row[metric] = _mean_and_interval(summary, digits)
        row["total_time_s trimmed"] = _number(stats.summarize(group.values("total_time_s")).trimmed_mean, 1)
        row["paper total_time_s"] = _number(paper.get("total_time_s", math.nan), 2)
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_and_interval(summary: stats.Summary, digits: int) -> str:
    if summary.n == 0:
        return "-"
    if math.isnan(summary.ci_high):
        return "{:.{}f}".format(summary.mean, digits)
    return "{:.{}f} ± {:.{}f}".format(summary.mean, digits, summary.ci_high - summary.mean, digits)


def _number(value: float, digits: int) -> str:
    return "-" if value is None or math.isnan(value) else "{:.{}f}".format(value, digits)


def pairs_table(groups: list[RunGroup]) -> pd.DataFrame:
    """Return backend against backend for every two configurations that differ only in the backend.

    Each row: the ratio of means A/B with its bootstrap 95 % interval and Welch's t-test, per metric.
    """
    by_key: dict[tuple, list[RunGroup]] = {}
    for group in groups:
        by_key.setdefault(group.pairing_key(), []).append(group)

    rows = []
    for members in by_key.values():
        ordered = sorted(members, key=lambda group: group.tag("backend"))
        for first, second in combinations(ordered, 2):
            if first.tag("backend") == second.tag("backend"):
                continue
            for metric in SUMMARY_METRICS:
                result = stats.compare(first.values(metric), second.values(metric))
                rows.append(
                    {
                        "dataset": first.tag("dataset"),
                        "device": first.tag("device"),
                        "topology": first.tag("topology"),
                        "setting": "/".join(first.tag(name) for name in ("device", "topology", "model")),
                        "backend_a": first.tag("backend"),
                        "backend_b": second.tag("backend"),
                        "a": first.label,
                        "b": second.label,
                        "metric": metric,
                        "n_a": len(first.values(metric)),
                        "n_b": len(second.values(metric)),
                        "mean_a": result.mean_a,
                        "mean_b": result.mean_b,
                        "ratio_a_b": result.ratio,
                        "ratio_ci95_low": result.ratio_ci_low,
                        "ratio_ci95_high": result.ratio_ci_high,
                        "welch_t": result.t_statistic,
                        "welch_p": result.p_value,
                    }
                )
    return pd.DataFrame(rows)


def distributed_table(groups: list[RunGroup], paper_rows: list[dict]) -> pd.DataFrame:
    """Return the study's Table 1 (distributed runs) for every configuration whose runs logged Spark metrics.

    Times are means over the runs: the application's total time in minutes, the median task
    execution time averaged over stages in minutes ("per core" in the study), the median GC time
    per task in ms ("management time per task"), and the mean test error.
    """
    rows = []
    for group in groups:
        if not group.values(SPARK_TOTAL):
            continue
        paper = paper_row(group, paper_rows) or {}
        total = stats.summarize([value / 60 for value in group.values(SPARK_TOTAL)])
        task = stats.summarize([value / 60000 for value in group.values("spark_task_time_median_ms")])
        gc = stats.summarize(group.values("spark_gc_time_median_ms"))
        error = stats.summarize(group.values("test_error"))
        rows.append(
            {
                "dataset": group.tag("dataset"),
                "layout": group.tag("topology"),
                "backend": group.tag("backend"),
                "configuration": group.label,
                "runs": len(group.runs),
                "epochs": group.params.get("epochs", ""),
                "total_min": total.mean,
                "total_min_std": total.std,
                "task_min": task.mean,
                "task_min_std": task.std,
                "gc_ms": gc.mean,
                "gc_ms_std": gc.std,
                "eval_error": error.mean,
                "eval_error_std": error.std,
                "tasks": stats.summarize(group.values("spark_tasks")).mean,
                "executors": stats.summarize(group.values("spark_executors")).mean,
                "cores": stats.summarize(group.values("spark_cores")).mean,
                "paper_total_min": paper.get("total_min", math.nan),
                "paper_task_min": paper.get("task_min", math.nan),
                "paper_gc_ms": paper.get("gc_ms", math.nan),
                "paper_eval_error": paper.get("eval_error", math.nan),
            }
        )
    return pd.DataFrame(rows)


def epoch_table(groups: list[RunGroup], curves: dict[str, tuple]) -> pd.DataFrame:
    """Return the epoch count the one-standard-deviation rule picks, per configuration.

    `chosen` marks the row recorded for its dataset and backend: among the single-machine
    configurations (topology=single), the one with the longest mean curve, then the most runs, so that
    a short trial does not override a full-length study. The study chose its epoch count from the
    single-machine curves and reused it on Spark, so a Spark run never decides. A dataset and backend
    with Spark runs only gets no chosen row.
    """
    rows = []
    for group in groups:
        if group.label not in curves:
            continue
        means, stds, _ = curves[group.label]
        selected = stats.select_epoch_count(means, stds)
        best = int(means.argmin())
        rows.append(
            {
                "dataset": group.tag("dataset"),
                "backend": group.tag("backend"),
                "topology": group.tag("topology"),
                "configuration": group.label,
                "runs": len(group.runs),
                "epochs_trained": len(means),
                "best_epoch": best + 1,
                "best_mean_val_error": float(means[best]),
                "std_at_best": float(stds[best]),
                "selected_epochs": selected,
                "mean_val_error_at_selected": float(means[selected - 1]),
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table

    single_machine = table[table["topology"] == SELECTING_TOPOLOGY]
    ranked = single_machine.sort_values(["epochs_trained", "runs"], ascending=False)
    chosen = ranked.drop_duplicates(["dataset", "backend"]).index
    table["chosen"] = table.index.isin(chosen)
    return table
