"""Record the Spark metrics that a distributed run's training process reports (its `spark` report)."""

from __future__ import annotations

import time

from mlflow.entities import Metric, RunTag


def log_spark_report(client, run_id: str, report: dict) -> None:
    """Log the run-level Spark metrics at step 0, a few tags, and the stage and task summaries as spark.json."""
    now = int(time.time() * 1000)
    metrics = [Metric(name, float(value), now, 0) for name, value in report["metrics"].items()]
    details = report["details"]
    tags = [
        RunTag("spark." + key, str(details[key]))
        for key in ("master", "application_id", "spark_version")
        if key in details
    ]
    if "error" in details:
        tags.append(RunTag("spark.metrics_error", details["error"][:5000]))
    client.log_batch(run_id, metrics=metrics, tags=tags)
    client.log_dict(run_id, details, "spark.json")
