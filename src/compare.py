"""`python -m src.compare [KEY=VALUE ...] [--output DIR] [--no-record]`: compare the runs in the store.

Groups the FINISHED training runs of one experiment by configuration (`config_id`), prints the
table, and writes Markdown, CSV, PNG and a self-contained HTML report. All of them become the
artifacts of a comparison run in the same experiment, which records the selected epoch counts as tags.

Filters select runs by tag, Hydra-style: `dataset=mnist backend=theano,tensorflow1`. Also
`experiment_name=NAME` (default paper-cnn-backends) and `tracking_uri=URI` (default: as src.train).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient

from src import report
from src.comparison import build_comparison, load_paper_results
from src.epoch_choice import selection_tag
from src.paths import REPOSITORY_ROOT
from src.run_groups import (
    COMPARISON_RUN_TYPE,
    FILTER_TAGS,
    RUN_TYPE_TAG,
    SUPERSEDED,
    RunGroup,
    group_runs,
    is_comparison_run,
    select_runs,
)
from src.tracking import connect, resolve_tracking_uri, ui_command

EXIT_INVALID_INPUT = 2
DEFAULT_EXPERIMENT = "paper-cnn-backends"
SETTINGS = ("experiment_name", "tracking_uri")
# MLflow UI note of the comparison run: the overview table, cut to the size a tag value takes.
NOTE_LIMIT = 5000

log = logging.getLogger(__name__)


class CompareError(ValueError):
    """Input that cannot be compared: a bad filter, a missing store or experiment, no matching runs."""


def parse_arguments(argv: list[str]) -> tuple[dict[str, list[str]], dict[str, str], argparse.Namespace]:
    """Split the command line into tag filters, settings and options; raise CompareError on a bad one."""
    parser = argparse.ArgumentParser(prog="python -m src.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE filters and settings, as described above")
    parser.add_argument(
        "--output", type=Path, help="folder for the files (default: comparisons/<experiment>/<UTC time>/)"
    )
    parser.add_argument(
        "--no-record", action="store_true", help="write the files but create no comparison run in MLflow"
    )
    arguments = parser.parse_intermixed_args(argv)

    filters: dict[str, list[str]] = {}
    settings = {"experiment_name": DEFAULT_EXPERIMENT, "tracking_uri": ""}
    for override in arguments.overrides:
        key, equals, value = override.partition("=")
        if not equals or not key or not value:
            raise CompareError(
                "{} is not KEY=VALUE; for example dataset=mnist or backend=theano,tensorflow1.".format(override)
            )
        if key in SETTINGS:
            settings[key] = value
        elif key in FILTER_TAGS:
            filters[key] = [part for part in value.split(",") if part]
        else:
            raise CompareError(
                "{} is not a filter; choose one of: {}, or the settings {}.".format(
                    key, ", ".join(FILTER_TAGS), ", ".join(SETTINGS)
                )
            )
    return filters, settings, arguments


def open_store(tracking_uri: str, experiment_name: str) -> tuple[MlflowClient, str]:
    """Return a client and the experiment's id; raise CompareError when either is missing."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///") :]).exists():
        raise CompareError("no MLflow store at {}. Train first (python -m src.train -m ...).".format(tracking_uri))
    client = connect(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        names = ", ".join(found.name for found in client.search_experiments()) or "none"
        raise CompareError(
            "experiment_name={} does not exist in {}; the experiments there are: {}.".format(
                experiment_name, tracking_uri, names
            )
        )
    return client, experiment.experiment_id


def all_runs(client: MlflowClient, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def attach_curves(client: MlflowClient, groups: list[RunGroup]) -> None:
    """Read each run's val_error history, ordered by epoch (the step)."""
    for group in groups:
        for run in group.runs:
            points = sorted(client.get_metric_history(run.info.run_id, "val_error"), key=lambda point: point.step)
            if points:
                group.curves.append([point.value for point in points])


def describe_filters(filters: dict[str, list[str]]) -> str:
    return " ".join("{}={}".format(key, ",".join(values)) for key, values in filters.items()) or "none"


def describe_available(runs: list, filters: dict[str, list[str]]) -> str:
    """Name the values that the FINISHED training runs carry for each filtered tag, to spot a misspelled filter."""
    training = [run for run in runs if "config_id" in run.data.tags and not is_comparison_run(run)]
    finished = [run for run in training if run.info.status == "FINISHED"]
    parts = []
    for key in filters:
        values = sorted({run.data.tags[key] for run in finished if key in run.data.tags})
        parts.append("{} has: {}".format(key, ", ".join(values) or "no values"))
    return "; ".join(parts) or "the experiment has no FINISHED training runs"


def describe_skipped(skipped) -> str:
    if not skipped:
        return "none"
    return ", ".join("{} {}".format(count, status) for status, count in sorted(skipped.items()))


def run_comparison(argv: list[str]) -> Path:
    """Compare, write the files and record the comparison run; return the output folder."""
    filters, settings, options = parse_arguments(argv)
    tracking_uri = resolve_tracking_uri(settings["tracking_uri"] or None)
    client, experiment_id = open_store(tracking_uri, settings["experiment_name"])

    runs = all_runs(client, experiment_id)
    selection = select_runs(runs, filters)
    if not selection.finished:
        raise CompareError(
            "no FINISHED training runs in experiment '{}' match filters {} (skipped: {}; {}). Train some with "
            "`python -m src.train -m ...`, or loosen the filters.".format(
                settings["experiment_name"],
                describe_filters(filters),
                describe_skipped(selection.skipped_by_status),
                describe_available(runs, filters),
            )
        )
    groups = group_runs(selection.finished)
    attach_curves(client, groups)
    paper = load_paper_results()
    tables = build_comparison(groups, paper)

    created = datetime.now(UTC)
    output = options.output or REPOSITORY_ROOT / "comparisons" / settings["experiment_name"] / created.strftime(
        "%Y%m%dT%H%M%SZ"
    )
    context = report.ReportContext(
        experiment=settings["experiment_name"],
        tracking_uri=tracking_uri,
        filters=describe_filters(filters),
        created=created.strftime("%Y-%m-%d %H:%M UTC"),
        runs_counted=len(selection.finished),
        skipped=describe_skipped(selection.skipped_by_status),
    )
    sections = report.sections(tables, paper)
    print_tables(context, sections[:4])

    output.mkdir(parents=True, exist_ok=True)
    figures = report.draw_figures(groups, tables, output / "figures")
    report.write_tables(tables, output)
    report.write_markdown(context, sections, output / "comparison.md")
    report.write_html(context, sections, figures, output / "report.html")
    print("\nWrote the tables, {} figures and report.html to {}".format(len(figures), output))

    if not options.no_record:
        run_id = record_comparison(client, experiment_id, context, groups, selection.superseded, tables, output)
        print(
            "Recorded comparison run {} in experiment '{}'. Open it with: {}".format(
                run_id, settings["experiment_name"], ui_command(tracking_uri)
            )
        )
    return output


def print_tables(context: report.ReportContext, report_sections) -> None:
    print(
        "Experiment '{}' at {}: {} FINISHED training runs compared (filters: {}; skipped: {}).".format(
            context.experiment, context.tracking_uri, context.runs_counted, context.filters, context.skipped
        )
    )
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 60):
        for title, explanation, table in report_sections:
            if table.empty:
                continue
            print("\n{}\n{}\n{}".format(title, textwrap.fill(explanation, width=120), table.to_string(index=False)))


def record_comparison(client, experiment_id, context, groups, superseded, tables, output: Path) -> str:
    """Create the comparison run, log what it summarised and its files, and end it FINISHED."""
    tags = {
        RUN_TYPE_TAG: COMPARISON_RUN_TYPE,
        "mlflow.source.name": "src.compare",
        "mlflow.source.type": "LOCAL",
        "compared_configurations": ",".join(group.config_id for group in groups)[:5000],
        "skipped_runs": context.skipped,
        "mlflow.note.content": _note(context, tables)[:NOTE_LIMIT],
    }
    if not tables.epochs.empty:
        for row in tables.epochs[tables.epochs["chosen"]].itertuples():
            tags[selection_tag(row.dataset, row.backend)] = str(row.selected_epochs)
    params = {
        "filters": context.filters,
        "configurations": str(len(groups)),
        "training_runs": str(context.runs_counted),
        "skipped_runs": context.skipped,
    }
    run_name = "comparison-{}".format(context.created.replace(" ", "-").replace(":", ""))
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    try:
        client.log_batch(
            run_id,
            params=[Param(key, value) for key, value in params.items()],
            tags=[RunTag(key, value) for key, value in tags.items()],
        )
        with tempfile.TemporaryDirectory(prefix="compared-runs-") as scratch:
            listing = Path(scratch) / "compared_runs.csv"
            _compared_runs(groups, superseded).to_csv(listing, index=False)
            client.log_artifact(run_id, str(listing))
        client.log_artifacts(run_id, str(output))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def _compared_runs(groups: list[RunGroup], superseded: list) -> pd.DataFrame:
    """List every compared run as "compared" and every older rerun of a seed as "superseded"."""
    rows = [
        {
            "config_id": group.config_id,
            "configuration": group.label,
            "run_id": run.info.run_id,
            "seed": run.data.params.get("seed"),
            "status": "compared",
        }
        for group in groups
        for run in group.runs
    ]
    labels = {group.config_id: group.label for group in groups}
    rows += [
        {
            "config_id": run.data.tags["config_id"],
            "configuration": labels.get(run.data.tags["config_id"], ""),
            "run_id": run.info.run_id,
            "seed": run.data.params.get("seed"),
            "status": SUPERSEDED,
        }
        for run in superseded
    ]
    return pd.DataFrame(rows)


def _note(context: report.ReportContext, tables) -> str:
    return "**Comparison** of {} FINISHED training runs (filters: {}; skipped: {}).\n\n{}".format(
        context.runs_counted, context.filters, context.skipped, report.markdown_table(tables.overview)
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    try:
        run_comparison(sys.argv[1:] if argv is None else argv)
    except CompareError as error:
        sys.stderr.write("Error: {}\n".format(error))
        return EXIT_INVALID_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
