"""Spark topologies end to end: real local clusters on MNIST subsets, checked against the MLflow store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPOSITORY_ROOT, compose_config, run_cli, runs_in, start_module
from mlflow.tracking import MlflowClient

from src.config import ConfigError, config_id, validate_config
from src.distributed import master_url, partition_count, subtract_mean_change

# Two executor JVMs of one core each: the mechanics of local-cluster at a fraction of 5 x 4's cost.
SMALL_CLUSTER = ["topology=spark_5x4", "topology.executors=2", "topology.cores_per_executor=1"]
SPARK_METRICS = (
    "spark_total_time_s",
    "spark_task_time_median_ms",
    "spark_gc_time_median_ms",
    "spark_tasks",
    "spark_executors",
    "spark_cores",
)
EXECUTOR_CLASS = "CoarseGrainedExecutorBackend"


def metric_steps(tracking_uri: str, run_id: str, metric: str) -> list[int]:
    return [point.step for point in MlflowClient(tracking_uri=tracking_uri).get_metric_history(run_id, metric)]


def spark_details(tracking_uri: str, run_id: str, tmp_path: Path) -> dict:
    client = MlflowClient(tracking_uri=tracking_uri)
    return json.loads(Path(client.download_artifacts(run_id, "spark.json", str(tmp_path))).read_text())


def descendants(root: int) -> dict[int, str]:
    """Return {pid: command line} of every living descendant of `root`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))

    found: dict[int, str] = {}
    pending = list(children.get(root, []))
    while pending:
        pid = pending.pop()
        try:
            found[pid] = Path("/proc", str(pid), "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        pending.extend(children.get(pid, []))
    return found


def is_alive(pid: int) -> bool:
    try:
        state = Path("/proc", str(pid), "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_round_subtracts_mean_of_changes():
    weights = [np.array([1.0, 2.0], dtype=np.float32), np.array([[10.0]], dtype=np.float32)]
    changes = [
        [np.array([0.2, 0.0], dtype=np.float32), np.array([[1.0]], dtype=np.float32)],
        [np.array([0.4, 0.6], dtype=np.float32), np.array([[3.0]], dtype=np.float32)],
    ]

    updated = subtract_mean_change(weights, changes)

    np.testing.assert_allclose(updated[0], [0.7, 1.7], rtol=1e-6)
    np.testing.assert_allclose(updated[1], [[8.0]], rtol=1e-6)
    assert updated[0].dtype == np.float32


@pytest.mark.parametrize(
    ("overrides", "url", "partitions"),
    [
        (["topology=spark_5x4"], "local-cluster[5,4,512]", 20),
        (["topology=spark_4x5", "topology.executor_memory_mb=768"], "local-cluster[4,5,768]", 20),
        (["topology=spark_local", "topology.partitions=3"], "local[4]", 3),
        # Validation connects to a spark:// master, so this one is a socket the test listens on.
        (["topology=spark_cluster", "topology.master=spark://127.0.0.1:{port}"], "spark://127.0.0.1:{port}", 20),
    ],
)
def test_topology_gives_master_and_partitions(overrides, url, partitions):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        url = url.format(port=port)
        cfg = compose_config([override.format(port=port) for override in overrides])
        validate_config(cfg)
    topology = dict(cfg.topology)

    assert master_url(topology) == url
    assert partition_count(topology) == partitions


def test_local_master_rejects_several_executors():
    with pytest.raises(ConfigError) as raised:
        validate_config(compose_config(["topology=spark_local", "topology.executors=3"]))

    assert "topology.executors=3 is invalid with topology.master=local" in str(raised.value)


def test_layouts_have_distinct_config_ids():
    ids = {config_id(compose_config(["topology={}".format(name)])) for name in ("single", "spark_5x4", "spark_4x5")}
    assert len(ids) == 3


@pytest.mark.slow
def test_local_cluster_run_records_spark_metrics(cli_env, tmp_path: Path, tracking_uri: str):
    result = run_cli([*SMALL_CLUSTER, "dataset.limit=2000", "epochs=2"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr
    # Keras prints no progress on Spark, so the parent prints one line per epoch.
    assert "epoch 1/2: val_error" in result.stdout + result.stderr
    assert "epoch 2/2: val_error" in result.stdout + result.stderr

    [run] = runs_in(tracking_uri)
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["config_name"] == "mnist/tensorflow/cpu/spark_5x4"
    assert run.data.tags["spark.master"] == "local-cluster[2,1,512]"
    for metric in ("val_error", "train_error", "epoch_time_s", "spark_job_time_s", "driver_time_s"):
        assert metric_steps(tracking_uri, run_id, metric) == [1, 2], metric
    for name in SPARK_METRICS:
        assert name in run.data.metrics, name
    assert run.data.metrics["spark_executors"] == 2
    assert run.data.metrics["spark_cores"] == 2
    # One task per partition for caching the data, then one per partition and epoch.
    assert run.data.metrics["spark_tasks"] == 2 + 2 * 2
    assert run.data.metrics["spark_failed_tasks"] == 0
    assert run.data.metrics["spark_task_time_median_ms"] > 0
    assert run.data.metrics["spark_gc_time_median_ms"] >= 0
    assert 0 < run.data.metrics["test_error"] < 0.95

    details = spark_details(tracking_uri, run_id, tmp_path)
    assert [stage["description"] for stage in details["stages"]] == [
        "cache training data",
        "train epoch 1",
        "train epoch 2",
    ]
    assert len(details["tasks"]) == 6
    assert all(task["status"] == "SUCCESS" for task in details["tasks"])
    assert all(task["executor_run_time_ms"] > 0 for task in details["tasks"])


@pytest.mark.slow
def test_legacy_runtime_trains_on_spark(cli_env, tmp_path: Path, tracking_uri: str):
    # tensorflow1 rather than theano: the same Keras 2.2.5 and Elephas 0.4.5 code without minutes of C compilation.
    overrides = [
        "backend=tensorflow1",
        "topology=spark_local",
        "topology.cores_per_executor=2",
        "dataset.limit=2000",
        "epochs=2",
    ]
    result = run_cli(overrides, cli_env, tmp_path)
    assert result.returncode == 0, result.stderr

    [run] = runs_in(tracking_uri)
    assert run.info.status == "FINISHED"
    assert run.data.tags["version.keras"] == "2.2.5"
    assert run.data.tags["spark.spark_version"].startswith("3.4.")
    assert run.data.tags["spark.master"] == "local[2]"
    assert metric_steps(tracking_uri, run.info.run_id, "val_error") == [1, 2]
    assert run.data.metrics["spark_cores"] == 2
    assert run.data.metrics["spark_tasks"] == 2 + 2 * 2
    assert run.data.tags["config_name"] == "mnist/tensorflow1/cpu/spark_local"
    assert 0 < run.data.metrics["test_error"] < 0.95


@pytest.mark.slow
def test_killed_executor_leaves_consistent_record(cli_env, tmp_path: Path, created_store: str):
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "src.train",
            *SMALL_CLUSTER,
            "dataset.limit=2000",
            "epochs=2",
            "hydra.run.dir={}".format(tmp_path / "hydra-run"),
        ],
        cwd=REPOSITORY_ROOT,
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: dict[int, str] = {}
    killed = None
    try:
        deadline = time.monotonic() + 300
        while killed is None and time.monotonic() < deadline and job.poll() is None:
            seen.update(descendants(job.pid))
            runs = runs_in(created_store)
            if runs and metric_steps(created_store, runs[0].info.run_id, "val_error"):
                executors = [pid for pid, command in descendants(job.pid).items() if EXECUTOR_CLASS in command]
                if executors:
                    killed = executors[0]
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.5)
        assert killed is not None, "no executor JVM found among the run's processes after its first epoch"
        _, stderr = job.communicate(timeout=400)
    finally:
        if job.poll() is None:
            job.kill()

    [run] = runs_in(created_store)
    epochs = metric_steps(created_store, run.info.run_id, "val_error")
    assert run.data.metrics["epochs_completed"] == len(epochs)
    assert run.data.metrics["spark_executors_lost"] >= 1
    lost = [
        executor
        for executor in spark_details(created_store, run.info.run_id, tmp_path)["executors"]
        if not executor["active"]
    ]
    assert lost
    assert all(executor["remove_reason"] for executor in lost)
    if run.info.status == "FINISHED":
        assert job.returncode == 0, stderr
        assert epochs == [1, 2]
        assert run.data.metrics["spark_executors"] == 2  # the standalone master replaced the lost one
    else:
        assert run.info.status == "FAILED"
        assert job.returncode == 1
        assert run.data.tags["failure_reason"]

    # The Spark JVMs and the executors' Python workers stop with the run.
    deadline = time.monotonic() + 20
    while any(is_alive(pid) for pid in seen) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [command for pid, command in seen.items() if is_alive(pid)] == []


@pytest.mark.slow
def test_ctrl_c_stops_cluster_with_record(cli_env, tmp_path: Path, created_store: str):
    arguments = [*SMALL_CLUSTER, "dataset.limit=2000", "epochs=3", "hydra.run.dir={}".format(tmp_path / "hydra-run")]
    # The run's scratch folder is made under TMPDIR, so that the test can check that it goes.
    scratch_parent = tmp_path / "tmp"
    scratch_parent.mkdir()
    job = start_module("src.train", arguments, dict(cli_env, TMPDIR=str(scratch_parent)))
    seen: dict[int, str] = {}
    try:
        # Ctrl-C once the first epoch is logged, so that the second epoch's Spark job is running.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and job.poll() is None:
            seen.update(descendants(job.pid))
            runs = runs_in(created_store)
            if runs and metric_steps(created_store, runs[0].info.run_id, "val_error"):
                break
            time.sleep(0.5)
        assert job.poll() is None, job.stdout.read()
        seen.update(descendants(job.pid))
        os.kill(job.pid, signal.SIGINT)
        output, _ = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()

    assert job.returncode == 130, output
    [run] = runs_in(created_store)
    assert run.info.status == "KILLED"
    assert run.data.tags["failure_reason"].startswith("interrupted by"), run.data.tags["failure_reason"]
    assert "exit_code" in run.data.tags
    assert run.data.tags["exit_code"] != "-9", "the training process had to be killed"
    assert "spark.metrics_error" not in run.data.tags
    for name in ("spark_total_time_s", "spark_tasks", "spark_executors", "spark_cores"):
        assert name in run.data.metrics, name
    details = spark_details(created_store, run.info.run_id, tmp_path)
    assert details["stages"][0]["description"] == "cache training data"

    # The Spark JVMs and the executors' Python workers stop with the run, and its scratch folder goes.
    deadline = time.monotonic() + 20
    while any(is_alive(pid) for pid in seen) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [command for pid, command in seen.items() if is_alive(pid)] == []
    assert list(scratch_parent.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["topology=spark_5x4", "topology.executor_memory_mb=256"], "topology.executor_memory_mb=256 is invalid"),
        (["topology=spark_cluster"], "topology.master=null is invalid"),
        (["topology=spark_cluster", "topology.master=spark://host"], "topology.master=spark://host is invalid"),
        (
            ["topology=spark_5x4", "dataset.limit=3000"],
            "splits 3000 training samples into 20 partitions of 150 or fewer, not more than batch_size=200",
        ),
        (
            ["topology=spark_4x5", "dataset.limit=4200", "validation.split=holdout"],
            "splits 3780 training samples into 20 partitions of 189 or fewer",
        ),
        (["topology=spark_4x5", "topology.partitions=400"], "Raise dataset.limit so that at least 80400 samples"),
        (
            ["topology=spark_cluster", "topology.master=spark://127.0.0.1:1"],
            "topology.master=spark://127.0.0.1:1 is not reachable (127.0.0.1:1: Connection refused)",
        ),
    ],
)
def test_bad_topology_fails_before_any_run(overrides, expected, cli_env, tmp_path: Path, tracking_uri: str):
    result = run_cli(overrides, cli_env, tmp_path)

    assert result.returncode == 2
    assert expected in result.stderr
    assert runs_in(tracking_uri) == []


def test_yarn_without_conf_dir_fails_early(cli_env, tmp_path: Path, tracking_uri: str):
    env = {name: value for name, value in cli_env.items() if name not in ("HADOOP_CONF_DIR", "YARN_CONF_DIR")}
    result = run_cli(["topology=spark_cluster", "topology.master=yarn"], env, tmp_path)

    assert result.returncode == 2
    assert "topology.master=yarn needs HADOOP_CONF_DIR or YARN_CONF_DIR" in result.stderr
    assert runs_in(tracking_uri) == []


def test_missing_java_names_the_fix(cli_env, tmp_path: Path, tracking_uri: str):
    env = dict(cli_env, JAVA_HOME=str(tmp_path / "no-java"))
    result = run_cli(["topology=spark_local"], env, tmp_path)

    assert result.returncode == 2
    assert "JAVA_HOME={} has no bin/java".format(tmp_path / "no-java") in result.stderr
    assert runs_in(tracking_uri) == []


# Prints each job's configuration instead of training, through the suite's own config and sweeper.
JOB_LISTER = """
import hydra

@hydra.main(version_base="1.3", config_path={config_dir!r}, config_name="config")
def main(cfg):
    print("JOB", cfg.dataset.name, cfg.topology.name, cfg.backend.name, cfg.seed, cfg.epochs)

main()
"""


def test_paper_distributed_sweeps_both_blocks(tmp_path: Path):
    lister = tmp_path / "list_jobs.py"
    lister.write_text(JOB_LISTER.format(config_dir=str(REPOSITORY_ROOT / "conf")))
    env = dict(os.environ, PYTHONPATH=str(REPOSITORY_ROOT))
    arguments = ["experiment=paper_distributed", "epochs=1", "hydra.sweep.dir={}".format(tmp_path / "sweep")]

    result = subprocess.run(
        [sys.executable, str(lister), *arguments], cwd=REPOSITORY_ROOT, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    jobs = sorted(tuple(line.split()[1:]) for line in result.stdout.splitlines() if line.startswith("JOB "))
    expected = [
        (dataset, topology, backend, str(seed), "1")
        for dataset, topologies, backends, seeds in (
            ("mnist", ("spark_5x4", "spark_4x5"), ("theano", "tensorflow1"), 4),
            ("fmnist", ("spark_5x4",), ("theano",), 2),
        )
        for topology in topologies
        for backend in backends
        for seed in range(seeds)
    ]
    assert len(jobs) == 18
    assert jobs == sorted(expected)
