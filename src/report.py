"""The comparison as files: Markdown and CSV tables, PNG figures, and one self-contained HTML report."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; set before pyplot is imported
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from src.comparison import ComparisonTables
from src.run_groups import RunGroup
from src.stats import summarize

# The reproduced study plotted the mean validation error over its first 50 epochs and over all 200.
SHORT_CURVE_EPOCHS = 50
TIMES = ("user_time_s", "system_time_s", "total_time_s")
# A Spark run's user and system time cover the driver process only, so its panel draws the Spark
# application's times instead: executor run time summed over tasks, and SparkContext start to stop.
SPARK_TIMES = ("spark_task_time_total_s", "spark_total_time_s", "total_time_s")
TIME_LABELS = {
    "spark_task_time_total_s": "spark_task_time_total_s (executors, summed over tasks)",
    "spark_total_time_s": "spark_total_time_s (Spark application wall time)",
}


@dataclass
class ReportContext:
    """Origin of the report's runs: experiment, store, filters, run counts."""

    experiment: str
    tracking_uri: str
    filters: str
    created: str
    runs_counted: int
    skipped: str


def pairs_display(pairs: pd.DataFrame) -> pd.DataFrame:
    """Return the backend pairs with the ratio, its interval and p in one readable cell each."""
    if pairs.empty:
        return pairs
    return pd.DataFrame(
        {
            "dataset": pairs["dataset"],
            "setting": pairs["setting"],
            "A": pairs["backend_a"],
            "B": pairs["backend_b"],
            "metric": pairs["metric"],
            "mean A": [_format(value) for value in pairs["mean_a"]],
            "mean B": [_format(value) for value in pairs["mean_b"]],
            "A/B [95 % CI]": [
                "{} [{}, {}]".format(_format(ratio, 3), _format(low, 3), _format(high, 3))
                for ratio, low, high in zip(
                    pairs["ratio_a_b"], pairs["ratio_ci95_low"], pairs["ratio_ci95_high"], strict=True
                )
            ],
            "Welch p": [_format(value, 4) for value in pairs["welch_p"]],
        }
    )


def distributed_display(table: pd.DataFrame) -> pd.DataFrame:
    """Return Table 1 in the study's columns (conf/paper_results.yaml) with ours beside them, errors in percent."""
    if table.empty:
        return table
    return pd.DataFrame(
        {
            "dataset": table["dataset"],
            "layout": table["layout"],
            "backend": table["backend"],
            "runs": table["runs"],
            "total min": [_format(value, 2) for value in table["total_min"]],
            "paper total min": [_format(value, 2) for value in table["paper_total_min"]],
            "per-core min": [_format(value, 2) for value in table["task_min"]],
            "paper per-core min": [_format(value, 2) for value in table["paper_task_min"]],
            "per-task GC ms": [_format(value, 2) for value in table["gc_ms"]],
            "paper per-task ms": [_format(value, 2) for value in table["paper_gc_ms"]],
            "eval error %": [_format(value * 100, 2) for value in table["eval_error"]],
            "paper eval error %": [_format(value * 100, 2) for value in table["paper_eval_error"]],
        }
    )


def _format(value, digits: int = 4) -> str:
    """Return a number with `digits` significant digits, NaN and None as "-", anything else as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        text = "{:.{}g}".format(value, digits)
        # `g` switches to exponent form once the integer part has more digits than `digits` (100 -> 1e+02).
        return "{:.0f}".format(value) if "e+" in text else text
    return str(value)


def markdown_table(table: pd.DataFrame) -> str:
    """Return a GitHub-flavoured Markdown table; numbers keep their display form."""
    if table.empty:
        return "(none)\n"
    header = "| " + " | ".join(str(column) for column in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    lines = [header, rule]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_format(value).replace("|", "\\|") for value in row) + " |")
    return "\n".join(lines) + "\n"


def draw_figures(groups: list[RunGroup], tables: ComparisonTables, folder: Path) -> list[Path]:
    """Draw, per dataset, device and topology: the time bars and the mean validation-error curves."""
    folder.mkdir(parents=True, exist_ok=True)
    panels: dict[tuple[str, str, str], list[RunGroup]] = {}
    for group in groups:
        panels.setdefault((group.tag("dataset"), group.tag("device"), group.tag("topology")), []).append(group)

    selected = {}
    if not tables.epochs.empty:
        selected = dict(zip(tables.epochs["configuration"], tables.epochs["selected_epochs"], strict=True))

    paths = []
    for key, members in panels.items():
        stem = "_".join(key)
        paths.append(_draw_time_bars(members, "/".join(key), folder / "times_{}.png".format(stem)))
        with_curves = [group for group in members if group.label in tables.curves]
        if not with_curves:
            continue
        longest = max(len(tables.curves[group.label][0]) for group in with_curves)
        if longest > SHORT_CURVE_EPOCHS:
            path = folder / "val_error_{}_{}epochs.png".format(stem, SHORT_CURVE_EPOCHS)
            paths.append(_draw_curves(with_curves, tables, selected, "/".join(key), SHORT_CURVE_EPOCHS, path))
        path = folder / "val_error_{}_all_epochs.png".format(stem)
        paths.append(_draw_curves(with_curves, tables, selected, "/".join(key), longest, path))
    return paths


def _draw_time_bars(groups: list[RunGroup], title: str, path: Path) -> Path:
    """Bars of mean times per configuration, with the 95 % interval as error bars.

    Single-machine panels draw user, system and total time. Panels of Spark runs draw SPARK_TIMES.
    """
    spark = any(group.values("spark_total_time_s") for group in groups)
    metrics = SPARK_TIMES if spark else TIMES
    summary_rows = []
    for group in groups:
        for metric in metrics:
            values = group.values(metric)
            mean = sum(values) / len(values) if values else math.nan
            summary_rows.append((group.label, metric, mean, _half_width(values)))

    figure, axis = plt.subplots(figsize=(max(6, 2.2 * len(groups)), 4))
    width = 0.8 / len(metrics)
    for offset, metric in enumerate(metrics):
        rows = [row for row in summary_rows if row[1] == metric]
        positions = [index + (offset - 1) * width for index in range(len(rows))]
        means = [row[2] for row in rows]
        # A time cannot be negative, but a t interval of 2 or 3 runs often reaches below zero, so the
        # lower bar stops at zero. The CSV files keep the unclipped interval.
        lower = [min(row[3], row[2]) if not math.isnan(row[2]) else 0.0 for row in rows]
        upper = [row[3] for row in rows]
        axis.bar(positions, means, width, yerr=[lower, upper], capsize=3, label=TIME_LABELS.get(metric, metric))
    axis.set_xticks(range(len(groups)))
    axis.set_xticklabels([group.label for group in groups], rotation=15, ha="right", fontsize=8)
    axis.set_ylabel("seconds (mean of runs, 95 % CI)")
    axis.set_title("Training times: {}".format(title))
    axis.legend()
    axis.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _half_width(values: list[float]) -> float:
    summary = summarize(values)
    return 0.0 if math.isnan(summary.ci_high) else summary.ci_high - summary.mean


def _draw_curves(groups, tables: ComparisonTables, selected: dict, title: str, epochs: int, path: Path) -> Path:
    """Mean validation error per epoch with a one-standard-deviation band; the chosen epoch count marked."""
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for group in groups:
        means, stds, _ = tables.curves[group.label]
        steps = list(range(1, min(epochs, len(means)) + 1))
        shown_means = means[: len(steps)]
        shown_stds = [0.0 if math.isnan(value) else value for value in stds[: len(steps)]]

        line = axis.plot(steps, shown_means, marker="." if len(steps) <= 60 else None, label=group.label)[0]
        lower = [mean - std for mean, std in zip(shown_means, shown_stds, strict=True)]
        upper = [mean + std for mean, std in zip(shown_means, shown_stds, strict=True)]
        axis.fill_between(steps, lower, upper, color=line.get_color(), alpha=0.2)

        chosen = selected.get(group.label)
        if chosen and chosen <= len(steps):
            axis.axvline(chosen, color=line.get_color(), linestyle="--", linewidth=1)
            axis.annotate(
                "{} epochs".format(chosen),
                (chosen, shown_means[chosen - 1]),
                textcoords="offset points",
                xytext=(4, 8),
                color=line.get_color(),
                fontsize=8,
            )

    axis.set_xlabel("epoch")
    axis.set_ylabel("validation error (mean ± 1 sd)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_title("Validation error, epochs 1 to {}: {}".format(epochs, title))
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_tables(tables: ComparisonTables, folder: Path) -> list[Path]:
    """Write every table as CSV with full precision."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("summary", "overview", "pairs", "distributed", "epochs"):
        path = folder / "{}.csv".format(name)
        getattr(tables, name).to_csv(path, index=False)
        written.append(path)
    return written


def sections(tables: ComparisonTables, paper: dict) -> list[tuple[str, str, pd.DataFrame]]:
    """Return the report's sections in order: title, explanation, table."""
    epochs = tables.epochs
    return [
        (
            "Configurations",
            "Mean ± half-width of the 95 % t interval over the FINISHED runs of each configuration "
            "(runs that share a config_id). val_error is the last epoch's. 'trimmed' drops the fastest "
            "and the slowest run. 'paper' is the study's number where the configuration matches it.",
            tables.overview,
        ),
        (
            "Backend against backend",
            "Pairs of configurations that differ only in the backend. A/B is the ratio of means with a "
            "percentile-bootstrap 95 % interval; Welch p tests equal means without assuming equal "
            "variances. A p above 0.05, or an interval that contains 1, is no evidence of a difference.",
            pairs_display(tables.pairs),
        ),
        (
            "Epoch count",
            "The first epoch whose mean validation error is within one standard deviation (across runs, at "
            "the best epoch) of the lowest mean. 'chosen' rows are recorded for `epochs=auto`.",
            epochs,
        ),
        (
            "Distributed (the study's Table 1)",
            "Configurations whose runs logged Spark metrics; means over runs, the paper's values beside ours.",
            distributed_display(tables.distributed),
        ),
        (
            "All statistics",
            "Per configuration and metric: n, mean, sample variance and standard deviation, 95 % t "
            "interval, trimmed mean, and the paper's value.",
            tables.summary,
        ),
        (
            "The paper's single-machine numbers",
            "As transcribed in conf/paper_results.yaml: full training set, 200 epochs, 10 runs.",
            _paper_table(paper.get("single_machine", [])),
        ),
    ]


def _paper_table(rows: list[dict]) -> pd.DataFrame:
    flat = []
    for row in rows:
        entry = {key: value for key, value in row["match"].items()}
        entry.update({key: value for key, value in row.items() if key != "match"})
        flat.append(entry)
    return pd.DataFrame(flat)


def write_markdown(context: ReportContext, report_sections, path: Path) -> Path:
    lines = [
        "# Comparison of experiment '{}'".format(context.experiment),
        "",
        "Store: `{}`. Filters: {}. Created {}.".format(context.tracking_uri, context.filters, context.created),
        "FINISHED training runs compared: {}. Skipped: {}.".format(context.runs_counted, context.skipped),
        "",
    ]
    for title, explanation, table in report_sections:
        lines += ["## " + title, "", explanation, "", markdown_table(table)]
    path.write_text("\n".join(lines))
    return path


def write_html(context: ReportContext, report_sections, figures: list[Path], path: Path) -> Path:
    """Write one HTML file with the tables and the figures embedded, so that it opens offline."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Comparison: {}</title>".format(html.escape(context.experiment)),
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:13px;margin-bottom:1em}"
        "th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}"
        "img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}</style></head><body>",
        "<h1>Comparison of experiment '{}'</h1>".format(html.escape(context.experiment)),
        "<p>Store: <code>{}</code>. Filters: {}. Created {}.<br>FINISHED training runs compared: {}. "
        "Skipped: {}.</p>".format(
            html.escape(context.tracking_uri),
            html.escape(context.filters),
            html.escape(context.created),
            context.runs_counted,
            html.escape(context.skipped),
        ),
    ]
    for title, explanation, table in report_sections:
        parts.append("<h2>{}</h2><p>{}</p>".format(html.escape(title), html.escape(explanation)))
        if table.empty:
            parts.append("<p>(none)</p>")
        else:
            display = table.map(_format)
            parts.append(display.to_html(index=False, escape=True, border=0))
    parts.append("<h2>Figures</h2>")
    for figure in figures:
        encoded = base64.b64encode(figure.read_bytes()).decode("ascii")
        parts.append(
            "<figure><img alt='{0}' src='data:image/png;base64,{1}'><figcaption>{0}</figcaption></figure>".format(
                html.escape(figure.name), encoded
            )
        )
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path
