"""End to end: `python -m src.train` on real MNIST subsets, checked against what the MLflow store holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPOSITORY_ROOT, run_cli, runs_in, start_module
from mlflow.tracking import MlflowClient

from src.data import catalogue
from src.tracking import open_experiment

pytestmark = pytest.mark.slow

TIMES = ("user_time_s", "system_time_s", "total_time_s", "train_time_s")
PER_EPOCH = ("val_error", "val_loss", "train_error", "train_loss", "epoch_time_s")


def history(tracking_uri: str, run_id: str, metric: str) -> list:
    return MlflowClient(tracking_uri=tracking_uri).get_metric_history(run_id, metric)


def artifact_names(tracking_uri: str, run_id: str) -> set[str]:
    return {item.path for item in MlflowClient(tracking_uri=tracking_uri).list_artifacts(run_id)}


# Library versions each backend must report, as (tag, expected prefix).
BACKEND_VERSIONS = {
    "tensorflow": [("version.keras", "3."), ("version.tensorflow", "2."), ("version.python", "3.11")],
    "tensorflow1": [("version.keras", "2.2.5"), ("version.tensorflow", "1.15."), ("version.python", "3.7")],
    "theano": [("version.keras", "2.2.5"), ("version.theano", "1.0.5"), ("version.python", "3.7")],
    "jax": [("version.keras", "3."), ("version.jax", "0.7."), ("version.python", "3.11"), ("env.JAX_PLATFORMS", "cpu")],
    "torch": [("version.keras", "3."), ("version.torch", "2."), ("version.python", "3.11")],
}
MODERN_BACKENDS = ("tensorflow", "jax", "torch")


@pytest.mark.parametrize("backend", ["tensorflow", "tensorflow1", "theano", "jax", "torch"])
def test_multirun_records_each_repeat(backend, cli_env, tmp_path: Path, tracking_uri: str, theano_compiledir: Path):
    overrides = ["-m", "backend={}".format(backend), "dataset.limit=2000", "epochs=2", "repeats=2"]
    if backend == "theano":
        overrides.append("backend.compiledir={}".format(theano_compiledir))
    result = run_cli(overrides, cli_env, tmp_path)
    assert result.returncode == 0, result.stderr

    runs = runs_in(tracking_uri)
    assert len(runs) == 2
    assert [run.info.status for run in runs] == ["FINISHED", "FINISHED"]
    assert sorted(run.data.params["seed"] for run in runs) == ["0", "1"]
    assert runs[0].data.tags["config_id"] == runs[1].data.tags["config_id"]
    assert runs[0].data.tags["config_name"] == "mnist/{}/cpu/single".format(backend)

    for run in runs:
        run_id = run.info.run_id
        for metric in PER_EPOCH:
            steps = [point.step for point in history(tracking_uri, run_id, metric)]
            assert steps == [1, 2], metric
        for name in TIMES:
            assert run.data.metrics[name] > 0, name
        assert run.data.metrics["total_time_s"] > run.data.metrics["train_time_s"]
        assert 0 < run.data.metrics["test_error"] < 0.9
        assert run.data.metrics["best_val_error"] <= history(tracking_uri, run_id, "val_error")[0].value
        assert run.data.params["epochs"] == "2"
        assert run.data.params["dataset.limit"] == "2000"
        assert run.data.params["model.layers.0.filters"] == "30"
        assert run.data.tags["data.train_samples"] == "2000"
        for tag, prefix in BACKEND_VERSIONS[backend]:
            assert run.data.tags[tag].startswith(prefix), tag
        assert run.data.tags["runtime"] == ("modern" if backend in MODERN_BACKENDS else "legacy")
        assert run.data.tags["keras_backend"] == run.data.params["backend.keras_backend"]
        assert run.data.tags["visible_gpus"] == "none"
        assert "openblas" in run.data.tags["blas"].lower()
        assert "mlflow.source.git.commit" in run.data.tags
        assert json.loads(run.data.tags["dataset_sha256"]) == catalogue.IDX_SHA256["mnist"]
        assert artifact_names(tracking_uri, run_id) >= {
            "config.yaml",
            "dataset.json",
            "environment.json",
            "learning_curve.png",
            "model_summary.txt",
            "worker.log",
        }

    if backend not in MODERN_BACKENDS:
        assert all(run.data.metrics["compile_time_s"] > 0 for run in runs)
    if backend == "theano":
        assert all(run.data.tags["compile_cache"] in ("cold", "warm") for run in runs)
        assert runs[1].data.tags["compile_cache"] == "warm"

    output = result.stdout + result.stderr
    assert "[2/2] mnist/{}/cpu/single seed=1 epoch 2/2: val_error".format(backend) in output
    assert "Results are in MLflow experiment 'paper-cnn-backends' at {}".format(tracking_uri) in output


def test_explicit_seed_sweep_replaces_repeats(cli_env, tmp_path: Path, tracking_uri: str):
    result = run_cli(["-m", "seed=5", "dataset.limit=1000", "epochs=1"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr

    runs = runs_in(tracking_uri)
    assert [run.data.params["seed"] for run in runs] == ["5"]


def test_holdout_validation_keeps_test_split_apart(cli_env, tmp_path: Path, tracking_uri: str):
    result = run_cli(["validation.split=holdout", "dataset.limit=1000", "epochs=1"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr

    (run,) = runs_in(tracking_uri)
    assert run.data.tags["data.train_samples"] == "900"
    assert run.data.tags["data.validation_samples"] == "100"
    assert run.data.tags["data.test_samples"] == "10000"
    assert "test_error" in run.data.metrics


@pytest.mark.parametrize(
    ("backend", "library"), [("tensorflow", "tensorflow 2."), ("jax", "jax 0."), ("torch", "torch 2.")]
)
def test_gpu_request_without_gpu_fails_clearly(backend, library, cli_env, tmp_path: Path, tracking_uri: str):
    result = run_cli(["backend=" + backend, "device=gpu", "dataset.limit=500", "epochs=1"], cli_env, tmp_path)

    assert result.returncode == 1
    assert "device=gpu was requested but backend={} ({}".format(backend, library) in result.stderr
    assert "Traceback" not in result.stderr
    (run,) = runs_in(tracking_uri)
    assert run.info.status == "FAILED"
    assert "sees no GPU" in run.data.tags["failure_reason"]
    assert history(tracking_uri, run.info.run_id, "val_error") == []


def test_training_error_is_recorded_with_traceback(cli_env, tmp_path: Path, tracking_uri: str):
    result = run_cli(["model.layers.0.filters=-3", "dataset.limit=500", "epochs=1"], cli_env, tmp_path)

    assert result.returncode != 0
    (run,) = runs_in(tracking_uri)
    assert run.info.status == "FAILED"
    assert "filters" in run.data.tags["failure_reason"]
    assert "traceback.txt" in artifact_names(tracking_uri, run.info.run_id)


def _start_cli(arguments: list[str], env: dict, tmp_path: Path, name: str = "job") -> subprocess.Popen:
    hydra_dirs = ["hydra.run.dir={}".format(tmp_path / name), "hydra.sweep.dir={}".format(tmp_path / (name + "-sweep"))]
    return start_module("src.train", [*arguments, *hydra_dirs], env)


def _wait_for_epochs(tracking_uri: str, process: subprocess.Popen, epochs: int, timeout: float = 180):
    """Return the first run once it has logged `epochs` epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        runs = runs_in(tracking_uri)
        if runs and len(history(tracking_uri, runs[0].info.run_id, "val_error")) >= epochs:
            return runs[0]
        time.sleep(0.5)
    process.kill()
    pytest.fail("no run reached {} epochs within {} s".format(epochs, timeout))


@pytest.mark.usefixtures("created_store")
def test_killed_worker_keeps_epochs_and_sweep_continues(cli_env, tmp_path: Path, tracking_uri: str):
    process = _start_cli(["-m", "seed=0,1", "dataset.limit=1000", "epochs=15"], cli_env, tmp_path)
    first = _wait_for_epochs(tracking_uri, process, epochs=2)

    os.kill(int(first.data.tags["worker_pid"]), signal.SIGKILL)
    output, _ = process.communicate(timeout=300)

    assert process.returncode != 0
    killed, survivor = runs_in(tracking_uri)
    assert killed.info.status == "KILLED"
    assert "killed by SIGKILL" in killed.data.tags["failure_reason"]
    assert 2 <= len(history(tracking_uri, killed.info.run_id, "val_error")) < 15
    assert killed.data.metrics["total_time_s"] > 0
    assert survivor.info.status == "FINISHED", output
    assert len(history(tracking_uri, survivor.info.run_id, "val_error")) == 15


@pytest.mark.usefixtures("created_store")
def test_ctrl_c_marks_run_killed(cli_env, tmp_path: Path, tracking_uri: str):
    process = _start_cli(["dataset.limit=1000", "epochs=50"], cli_env, tmp_path)
    _wait_for_epochs(tracking_uri, process, epochs=1)

    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=120)

    assert process.returncode == 130
    assert "Stopped by Ctrl-C." in output
    assert "Traceback" not in output
    (run,) = runs_in(tracking_uri)
    assert run.info.status == "KILLED"
    assert run.data.tags["failure_reason"].startswith("interrupted by Ctrl-C")
    assert 1 <= len(history(tracking_uri, run.info.run_id, "val_error")) < 50
    assert "learning_curve.png" in artifact_names(tracking_uri, run.info.run_id)


def test_mlflow_run_entry_point_logs_into_project_run(cli_env, tmp_path: Path, tracking_uri: str):
    # Created by the suite first, so that the experiment keeps its artifacts beside the temporary
    # store: an experiment that `mlflow run` creates puts them in ./mlruns of the repository.
    open_experiment(tracking_uri, "paper-cnn-backends")
    env = dict(cli_env, PATH="{}:{}".format(Path(sys.executable).parent, cli_env["PATH"]))
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "run",
        str(REPOSITORY_ROOT),
        "-P",
        "overrides=dataset.limit=500 epochs=1 hydra.run.dir={}".format(tmp_path / "hydra-run"),
        "--env-manager",
        "local",
        "--experiment-name",
        "paper-cnn-backends",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr

    (run,) = runs_in(tracking_uri)
    assert run.info.status == "FINISHED"
    assert "dataset.limit=500 epochs=1" in run.data.params["overrides"]
    assert run.data.params["dataset.limit"] == "500"
    assert len(history(tracking_uri, run.info.run_id, "val_error")) == 1
    assert run.info.artifact_uri.startswith((tmp_path / "store").as_uri())


@pytest.mark.usefixtures("created_store")
def test_sigterm_marks_run_killed(cli_env, tmp_path: Path, tracking_uri: str):
    process = _start_cli(["dataset.limit=1000", "epochs=50"], cli_env, tmp_path)
    _wait_for_epochs(tracking_uri, process, epochs=1)

    process.terminate()
    output, _ = process.communicate(timeout=120)

    assert process.returncode == 143
    assert "Stopped by SIGTERM." in output
    (run,) = runs_in(tracking_uri)
    assert run.info.status == "KILLED"
    assert run.data.tags["failure_reason"].startswith("interrupted by SIGTERM")
    assert run.data.metrics["epochs_completed"] >= 1


def _write_small_cifar10(folder: Path, records: int) -> None:
    """Six batches in the CIFAR-10 binary layout, with random pixels and cycling labels."""
    generator = np.random.default_rng(0)
    folder.mkdir(parents=True)
    names = ["data_batch_{}.bin".format(index) for index in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        labels = np.arange(records, dtype=np.uint8) % 10
        pixels = generator.integers(0, 256, size=(records, 3072), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels[:, None], pixels], axis=1).tobytes())


def test_cifar10_layout_trains_end_to_end(cli_env, tmp_path: Path, tracking_uri: str):
    folder = tmp_path / "cifar" / "cifar-10-batches-bin"
    _write_small_cifar10(folder, records=40)

    result = run_cli(["dataset=cifar10", "dataset.dir={}".format(folder.parent), "epochs=1"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr

    (run,) = runs_in(tracking_uri)
    assert run.data.tags["data.train_samples"] == "200"
    assert run.data.tags["data.test_samples"] == "40"
    assert run.data.tags["config_name"] == "cifar10/tensorflow/cpu/single"


def test_missing_dataset_fails_before_any_run(cli_env, tmp_path: Path, tracking_uri: str):
    result = run_cli(["dataset.dir={}".format(tmp_path / "nowhere")], cli_env, tmp_path)

    assert result.returncode == 2
    assert "does not hold the mnist dataset" in result.stderr
    assert "Traceback" not in result.stderr
    assert runs_in(tracking_uri) == []


def test_theano_runs_share_fresh_compile_cache(cli_env, tmp_path: Path):
    """Two Theano runs started together on an empty compile cache: both compile and finish."""
    compiledir = tmp_path / "theano-cache"
    stores = [tmp_path / "store-a", tmp_path / "store-b"]
    processes = []
    for index, store in enumerate(stores):
        env = dict(cli_env, MLFLOW_TRACKING_URI="sqlite:///{}".format(store / "mlflow.db"))
        arguments = [
            "backend=theano",
            "backend.compiledir={}".format(compiledir),
            "dataset.limit=500",
            "epochs=1",
            "seed={}".format(index),
        ]
        processes.append(_start_cli(arguments, env, tmp_path, name="job-{}".format(index)))

    outputs = [process.communicate(timeout=900)[0] for process in processes]

    for process, output, store in zip(processes, outputs, stores, strict=True):
        assert process.returncode == 0, output
        (run,) = runs_in("sqlite:///{}".format(store / "mlflow.db"))
        assert run.info.status == "FINISHED"
        assert run.data.metrics["compile_time_s"] > 0
    assert any(path.name.startswith("compiledir_") for path in compiledir.iterdir())
