"""`python -m src.compare` on runs logged to a real temporary MLflow store with known values.

These runs are written directly with the MLflow client, so that Table 1 and the grouping rules
are checked on exact numbers without training. The end-to-end test trains real runs.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from conftest import EXPERIMENT, compose_config, runs_in
from mlflow.entities import Metric, Param

from src import compare, report
from src.config import ConfigError
from src.epoch_choice import resolve_auto_epochs
from src.run_groups import is_comparison_run
from src.tracking import open_experiment


def log_run(
    client, experiment_id, *, config_id, backend, seed, metrics, curve=(), status="FINISHED", start_time=None, **tags
):
    """Create one finished training run the way src.runner tags it, with the given final metrics."""
    values = {"dataset": "mnist", "device": "cpu", "topology": "single", "model": "paper_cnn", **tags}
    run_tags = {
        "config_id": config_id,
        "config_name": "{}/{}/{}/{}".format(values["dataset"], backend, values["device"], values["topology"]),
        "backend": backend,
        "seed": str(seed),
        **values,
    }
    run = client.create_run(
        experiment_id, run_name="{}-seed{}".format(config_id, seed), tags=run_tags, start_time=start_time
    )
    params = {"seed": str(seed), "epochs": str(len(curve) or 1), "dataset.limit": "null", "backend.name": backend}
    points = [Metric(name, float(value), 0, 0) for name, value in metrics.items()]
    points += [Metric("val_error", float(value), 0, step) for step, value in enumerate(curve, start=1)]
    client.log_batch(run.info.run_id, metrics=points, params=[Param(key, value) for key, value in params.items()])
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def read_csv(path: Path) -> list[dict]:
    with open(path) as stream:
        return list(csv.DictReader(stream))


@pytest.fixture
def store(tracking_uri: str):
    client, experiment_id = open_experiment(tracking_uri, EXPERIMENT)
    return client, experiment_id


def spark_metrics(total_s: float, task_ms: float, gc_ms: float, test_error: float) -> dict:
    return {
        "spark_total_time_s": total_s,
        "spark_task_time_median_ms": task_ms,
        "spark_gc_time_median_ms": gc_ms,
        "spark_tasks": 20,
        "spark_executors": 5,
        "spark_cores": 20,
        "test_error": test_error,
        "user_time_s": 10.0,
        "system_time_s": 1.0,
        "total_time_s": total_s,
    }


def test_table1_reads_spark_metrics(store, tracking_uri: str, tmp_path: Path, capsys):
    client, experiment_id = store
    for seed, (total, gc, error) in enumerate([(3000.0, 80.0, 0.007), (3120.0, 84.0, 0.008)]):
        metrics = spark_metrics(total, 2_460_000.0, gc, error)
        log_run(
            client, experiment_id, config_id="t5x4", backend="theano", seed=seed, topology="spark_5x4", metrics=metrics
        )
    for seed, total in enumerate([480.0, 520.0]):
        metrics = spark_metrics(total, 417_000.0, 81.0, 0.0075)
        log_run(
            client,
            experiment_id,
            config_id="f5x4",
            backend="tensorflow1",
            seed=seed,
            topology="spark_5x4",
            metrics=metrics,
        )

    output = tmp_path / "out"
    assert compare.main(["tracking_uri=" + tracking_uri, "--output", str(output)]) == 0

    rows = {row["backend"]: row for row in read_csv(output / "distributed.csv")}
    theano = rows["theano"]
    assert theano["layout"] == "spark_5x4"
    assert theano["runs"] == "2"
    assert float(theano["total_min"]) == pytest.approx(51.0)
    assert float(theano["task_min"]) == pytest.approx(41.0)
    assert float(theano["gc_ms"]) == pytest.approx(82.0)
    assert float(theano["eval_error"]) == pytest.approx(0.0075)
    assert float(theano["cores"]) == pytest.approx(20.0)
    assert float(theano["paper_total_min"]) == pytest.approx(50.0)
    assert float(theano["paper_gc_ms"]) == pytest.approx(80.0)
    assert float(rows["tensorflow1"]["total_min"]) == pytest.approx(500.0 / 60)
    assert float(rows["tensorflow1"]["paper_total_min"]) == pytest.approx(8.29)

    printed = capsys.readouterr().out
    assert "Distributed (the study's Table 1)" in printed
    assert "spark_5x4" in printed
    assert "| mnist | spark_5x4 | theano | 2 | 51 | 50 | 41 | 41 | 82 | 80 |" in (output / "comparison.md").read_text()


def test_pairs_compare_backends_of_same_setting(store, tracking_uri: str, tmp_path: Path):
    client, experiment_id = store
    for seed, total in enumerate([10.0, 12.0, 14.0]):
        log_run(client, experiment_id, config_id="a", backend="tensorflow", seed=seed, metrics={"total_time_s": total})
    for seed, total in enumerate([20.0, 21.0, 22.0, 23.0, 24.0]):
        log_run(client, experiment_id, config_id="b", backend="theano", seed=seed, metrics={"total_time_s": total})
    # Same backend as "a" on another topology: not paired with anything.
    log_run(client, experiment_id, config_id="c", backend="tensorflow", seed=0, topology="other", metrics={})

    output = tmp_path / "out"
    assert compare.main(["tracking_uri=" + tracking_uri, "--output", str(output), "--no-record"]) == 0

    pairs = read_csv(output / "pairs.csv")
    assert {(row["backend_a"], row["backend_b"]) for row in pairs} == {("tensorflow", "theano")}
    total = next(row for row in pairs if row["metric"] == "total_time_s")
    assert float(total["mean_a"]) == pytest.approx(12.0)
    assert float(total["mean_b"]) == pytest.approx(22.0)
    assert float(total["ratio_a_b"]) == pytest.approx(12.0 / 22.0)
    assert float(total["ratio_ci95_low"]) < 12.0 / 22.0 < float(total["ratio_ci95_high"])
    assert float(total["welch_p"]) < 0.01

    summary = read_csv(output / "summary.csv")
    row = next(row for row in summary if row["config_id"] == "a" and row["metric"] == "total_time_s")
    assert row["n"] == "3"
    assert float(row["variance"]) == pytest.approx(4.0)
    assert float(row["trimmed_mean"]) == pytest.approx(12.0)
    assert not any(is_comparison_run(run) for run in runs_in(tracking_uri))


def test_skipped_runs_are_counted_not_compared(store, tracking_uri: str, tmp_path: Path, capsys):
    client, experiment_id = store
    log_run(client, experiment_id, config_id="a", backend="tensorflow", seed=0, metrics={"total_time_s": 5.0})
    log_run(
        client,
        experiment_id,
        config_id="a",
        backend="tensorflow",
        seed=1,
        metrics={"total_time_s": 99.0},
        status="FAILED",
    )
    log_run(client, experiment_id, config_id="a", backend="tensorflow", seed=2, metrics={}, status="KILLED")

    output = tmp_path / "out"
    assert compare.main(["tracking_uri=" + tracking_uri, "--output", str(output)]) == 0

    assert "1 FINISHED training runs compared" in capsys.readouterr().out
    (row,) = [row for row in read_csv(output / "summary.csv") if row["metric"] == "total_time_s"]
    assert float(row["mean"]) == pytest.approx(5.0)
    (comparison,) = [run for run in runs_in(tracking_uri) if is_comparison_run(run)]
    assert comparison.data.params["skipped_runs"] == "1 FAILED, 1 KILLED"
    assert comparison.data.params["training_runs"] == "1"


def test_labels_tell_groups_apart(store, tracking_uri: str, tmp_path: Path):
    client, experiment_id = store
    log_run(client, experiment_id, config_id="id1", backend="tensorflow", seed=0, metrics={}, model="paper_cnn")
    log_run(client, experiment_id, config_id="id2", backend="tensorflow", seed=0, metrics={}, model="paper_cnn")
    log_run(client, experiment_id, config_id="id3", backend="tensorflow", seed=0, metrics={}, model="tuned_cnn")

    output = tmp_path / "out"
    # Options between the KEY=VALUE settings, as well as after them.
    arguments = ["tracking_uri=" + tracking_uri, "--no-record", "backend=tensorflow", "--output", str(output)]
    assert compare.main(arguments) == 0

    labels = {row["configuration"] for row in read_csv(output / "overview.csv")}
    assert labels == {
        "mnist/tensorflow/cpu/single paper_cnn [id1]",
        "mnist/tensorflow/cpu/single paper_cnn [id2]",
        "mnist/tensorflow/cpu/single tuned_cnn",
    }


def test_epoch_selection_is_recorded_and_resolved(store, tracking_uri: str, tmp_path: Path):
    client, experiment_id = store
    curves = [[0.5, 0.2, 0.11, 0.10, 0.12], [0.5, 0.2, 0.13, 0.10, 0.12]]
    for seed, curve in enumerate(curves):
        log_run(client, experiment_id, config_id="a", backend="theano", seed=seed, metrics={}, curve=curve)

    assert compare.main(["tracking_uri=" + tracking_uri, "--output", str(tmp_path / "out")]) == 0

    (comparison,) = [run for run in runs_in(tracking_uri) if is_comparison_run(run)]
    # Mean curve 0.5, 0.2, 0.12, 0.10, 0.12 with sd 0 at the best epoch 4: the rule picks 4.
    assert comparison.data.tags["epochs_selected.mnist.theano"] == "4"
    artifacts = {item.path for item in client.list_artifacts(comparison.info.run_id)}
    assert {"report.html", "comparison.md", "summary.csv", "compared_runs.csv", "figures"} <= artifacts
    figures = {item.path for item in client.list_artifacts(comparison.info.run_id, "figures")}
    assert "figures/val_error_mnist_cpu_single_all_epochs.png" in figures

    cfg = compose_config(["backend=theano", "epochs=auto", "tracking.uri=" + tracking_uri])
    assert resolve_auto_epochs(cfg) == comparison.info.run_id
    assert cfg.epochs == 4


def test_epoch_selection_ignores_spark_runs(store, tracking_uri: str, tmp_path: Path):
    client, experiment_id = store
    # Two single-machine repeats, 3 epochs: the rule picks epoch 2 (sd 0.02 at the best epoch 3).
    for seed, curve in enumerate([[0.5, 0.12, 0.10], [0.5, 0.12, 0.12]]):
        log_run(client, experiment_id, config_id="single", backend="tensorflow", seed=seed, metrics={}, curve=curve)
    # One longer Spark trial, best at epoch 4: it must not decide the count.
    spark_curve = [0.6, 0.4, 0.3, 0.2]
    log_run(
        client,
        experiment_id,
        config_id="spark",
        backend="tensorflow",
        seed=0,
        metrics={},
        curve=spark_curve,
        topology="spark_local",
    )
    # A Spark-only backend gets no selection at all.
    log_run(
        client,
        experiment_id,
        config_id="k",
        backend="theano",
        seed=0,
        metrics={},
        curve=spark_curve,
        topology="spark_local",
    )

    output = tmp_path / "out"
    assert compare.main(["tracking_uri=" + tracking_uri, "--output", str(output)]) == 0

    (comparison,) = [run for run in runs_in(tracking_uri) if is_comparison_run(run)]
    assert comparison.data.tags["epochs_selected.mnist.tensorflow"] == "2"
    assert "epochs_selected.mnist.theano" not in comparison.data.tags
    chosen = {row["topology"] for row in read_csv(output / "epochs.csv") if row["chosen"] == "True"}
    assert chosen == {"single"}


def test_rerun_of_a_seed_counts_once(store, tracking_uri: str, tmp_path: Path, capsys):
    client, experiment_id = store
    # Seed 0 twice (a rerun, started later) and seed 1 once.
    old, newest, _ = [
        log_run(
            client,
            experiment_id,
            config_id="a",
            backend="tensorflow",
            seed=seed,
            metrics={"total_time_s": total},
            start_time=start_time,
        )
        for seed, total, start_time in [(0, 5.0, 1000), (0, 7.0, 2000), (1, 9.0, 3000)]
    ]

    output = tmp_path / "out"
    assert compare.main(["tracking_uri=" + tracking_uri, "--output", str(output)]) == 0

    printed = capsys.readouterr().out
    assert "2 FINISHED training runs compared" in printed
    assert "skipped: 1 superseded" in printed
    (row,) = [row for row in read_csv(output / "summary.csv") if row["metric"] == "total_time_s"]
    assert row["n"] == "2"
    assert float(row["mean"]) == pytest.approx(8.0)

    (comparison,) = [run for run in runs_in(tracking_uri) if is_comparison_run(run)]
    assert comparison.data.params["skipped_runs"] == "1 superseded"
    listing = Path(client.download_artifacts(comparison.info.run_id, "compared_runs.csv", str(tmp_path)))
    statuses = {row["run_id"]: row["status"] for row in read_csv(listing)}
    assert statuses[old] == "superseded"
    assert statuses[newest] == "compared"
    assert len(statuses) == 3


def test_auto_epochs_without_selection_names_the_fix(store, tracking_uri: str):
    cfg = compose_config(["backend=tensorflow", "epochs=auto", "tracking.uri=" + tracking_uri])

    with pytest.raises(ConfigError, match=re.escape("python -m src.compare dataset=mnist backend=tensorflow")):
        resolve_auto_epochs(cfg)


def test_unknown_filter_is_rejected(tracking_uri: str, capsys):
    assert compare.main(["colour=red", "tracking_uri=" + tracking_uri]) == 2
    assert "Error: colour is not a filter; choose one of: dataset, backend" in capsys.readouterr().err


def test_missing_store_is_reported(tmp_path: Path, capsys):
    uri = "sqlite:///{}".format(tmp_path / "none" / "mlflow.db")

    assert compare.main(["tracking_uri=" + uri]) == 2
    assert "Error: no MLflow store at" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_no_matching_runs_creates_no_comparison(store, tracking_uri: str, capsys):
    client, experiment_id = store
    log_run(client, experiment_id, config_id="a", backend="tensorflow", seed=0, metrics={"total_time_s": 1.0})

    assert compare.main(["tracking_uri=" + tracking_uri, "dataset=cifar10"]) == 2
    error = capsys.readouterr().err
    assert "no FINISHED training runs in experiment 'paper-cnn-backends' match filters dataset=cifar10" in error
    assert "dataset has: mnist" in error
    assert not any(is_comparison_run(run) for run in runs_in(tracking_uri))


def test_report_numbers_avoid_exponent_form():
    assert report._format(100.0, 2) == "100"
    assert report._format(1234.5, 2) == "1234"
    assert report._format(0.0075, 2) == "0.0075"
    assert report._format(51.0, 2) == "51"
