"""Entry point: `python -m src.reproduce RUN_ID`, rerun a recorded run from its logged config and compare.

The new run trains from the run's `config.yaml` artifact (the resolved config, seed included) into
the same store and experiment, tagged `reproduces=RUN_ID`. Then every per-epoch metric except the
epoch time, and the final test metrics, are compared epoch by epoch. The comparison is printed
and logged on the new run as `reproduction.json`, with the largest absolute difference as the
metric `reproduction_max_abs_difference`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from src import environment
from src.config import ConfigError
from src.data.sources import DatasetError
from src.paths import REPOSITORY_ROOT
from src.runner import RunFailed, RuntimeMissing, run_training
from src.supervisor import interrupt_source, raise_terminated
from src.tracking import connect, resolve_tracking_uri
from src.train import EXIT_INTERRUPT_CODES, EXIT_INVALID_INPUT

log = logging.getLogger(__name__)

# Per-epoch metrics that a seeded rerun can repeat; epoch_time_s measures the machine, not the model.
EPOCH_METRICS = ("val_error", "val_loss", "train_error", "train_loss")
FINAL_METRICS = ("test_error", "test_loss", "best_val_error", "epochs_completed")


class ReproductionError(ValueError):
    """The run to reproduce cannot be found or has no logged config."""


def reproduce(run_id: str, tracking_uri: str) -> dict:
    """Train `run_id`'s logged config again, log the comparison on the new run and return it."""
    client = connect(tracking_uri)
    try:
        original = client.get_run(run_id)
    except MlflowException as error:
        raise ReproductionError(
            "run {} was not found in {}: {}. Check the run ID, and the store with --tracking-uri.".format(
                run_id, tracking_uri, error.message
            )
        ) from None

    cfg = _logged_config(run_id, tracking_uri)
    cfg.tracking.uri = tracking_uri
    cfg.tracking.experiment_name = client.get_experiment(original.info.experiment_id).name
    _warn_about_code_changes(original.data.tags)

    new_run: list[str] = []
    tags = {"reproduces": run_id, "mlflow.runName": "reproduce-{}".format(original.info.run_name)}
    run_training(cfg, tags=tags, on_run=new_run.append)

    comparison = compare_runs(client, run_id, new_run[0])
    _log_comparison(client, new_run[0], comparison)
    return comparison


def _logged_config(run_id: str, tracking_uri: str) -> DictConfig:
    # One small file: MLflow's download progress bar would only clutter the comparison printed below.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="reproduce-") as scratch:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="config.yaml", dst_path=scratch, tracking_uri=tracking_uri
            )
        except (MlflowException, OSError) as error:
            raise ReproductionError(
                "run {} has no readable config.yaml artifact ({}), so it cannot be rerun. Only runs "
                "of `python -m src.train` log one.".format(run_id, error)
            ) from None
        cfg = OmegaConf.load(path)
    cfg.pop("hydra", None)
    return cfg


def _warn_about_code_changes(tags: dict) -> None:
    """Warn when the code differs from the code that trained the original run, a likely cause of differences."""
    current = environment.git_state(REPOSITORY_ROOT)
    recorded = tags.get("mlflow.source.git.commit")
    if recorded and current and recorded != current["commit"]:
        log.warning("The run was trained at commit %s; this checkout is at %s.", recorded, current["commit"])
    if tags.get("git_dirty") == "True" or current.get("dirty") == "True":
        log.warning("The run or this checkout has uncommitted changes, so the code may differ.")


def compare_runs(client, original_id: str, new_id: str) -> dict:
    """Return, metric by metric and epoch by epoch, the original value, the new one and the difference."""
    comparison: dict = {"original_run": original_id, "new_run": new_id, "epochs": {}, "final": {}}
    largest = 0.0
    for name in EPOCH_METRICS:
        before = {point.step: point.value for point in client.get_metric_history(original_id, name)}
        after = {point.step: point.value for point in client.get_metric_history(new_id, name)}
        rows = []
        for step in sorted(set(before) | set(after)):
            row = {"epoch": step, "original": before.get(step), "new": after.get(step)}
            if step in before and step in after:
                row["difference"] = after[step] - before[step]
                largest = max(largest, abs(row["difference"]))
            rows.append(row)
        comparison["epochs"][name] = rows

    original_metrics = client.get_run(original_id).data.metrics
    new_metrics = client.get_run(new_id).data.metrics
    for name in FINAL_METRICS:
        if name in original_metrics and name in new_metrics:
            difference = new_metrics[name] - original_metrics[name]
            largest = max(largest, abs(difference))
            comparison["final"][name] = {
                "original": original_metrics[name],
                "new": new_metrics[name],
                "difference": difference,
            }

    unmatched = [row for rows in comparison["epochs"].values() for row in rows if "difference" not in row]
    comparison["max_abs_difference"] = largest
    comparison["identical"] = largest == 0.0 and not unmatched
    return comparison


def _log_comparison(client, run_id: str, comparison: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="reproduce-") as scratch:
        path = Path(scratch) / "reproduction.json"
        path.write_text(json.dumps(comparison, indent=2))
        client.log_artifact(run_id, str(path))
    now = int(time.time() * 1000)
    client.log_batch(
        run_id, metrics=[Metric("reproduction_max_abs_difference", comparison["max_abs_difference"], now, 0)]
    )
    client.set_tag(run_id, "reproduction.identical", str(comparison["identical"]))


def format_comparison(comparison: dict) -> str:
    """Return the comparison as text: one line per metric and epoch, then the final metrics and a verdict."""
    lines = ["{:<16} {:>5} {:>12} {:>12} {:>12}".format("metric", "epoch", "original", "new", "difference")]
    for name, rows in comparison["epochs"].items():
        for row in rows:
            lines.append(
                "{:<16} {:>5} {:>12} {:>12} {:>12}".format(
                    name, row["epoch"], _number(row["original"]), _number(row["new"]), _number(row.get("difference"))
                )
            )
    for name, values in comparison["final"].items():
        lines.append(
            "{:<16} {:>5} {:>12} {:>12} {:>12}".format(
                name, "end", _number(values["original"]), _number(values["new"]), _number(values["difference"])
            )
        )
    verdict = "identical" if comparison["identical"] else "different"
    lines.append(
        "Run {} reproduces {}: {} (largest absolute difference {:.3g}).".format(
            comparison["new_run"], comparison["original_run"], verdict, comparison["max_abs_difference"]
        )
    )
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "missing" if value is None else "{:.6f}".format(value)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="ID of the MLflow run to rerun")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=(
            "tracking URI of the store that contains the run "
            "(default: MLFLOW_TRACKING_URI, else the suite's mlruns/mlflow.db)"
        ),
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    signal.signal(signal.SIGTERM, raise_terminated)

    try:
        comparison = reproduce(arguments.run_id, resolve_tracking_uri(arguments.tracking_uri))
    except (ReproductionError, ConfigError, DatasetError, RuntimeMissing) as error:
        sys.stderr.write("Error: {}\n".format(error))
        return EXIT_INVALID_INPUT
    except RunFailed as error:
        sys.stderr.write("Error: {}\n".format(error))
        return 1
    except KeyboardInterrupt as interrupt:
        source = interrupt_source(interrupt)
        sys.stderr.write("Stopped by {}. The new run is recorded in MLflow as KILLED.\n".format(source))
        return EXIT_INTERRUPT_CODES[source]
    print(format_comparison(comparison))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
