"""`python -m src.reproduce`: a recorded tensorflow CPU run, trained again from its logged config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPOSITORY_ROOT, run_cli, runs_in
from mlflow.tracking import MlflowClient


def _reproduce(arguments: list[str], env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "src.reproduce", *arguments]
    return subprocess.run(command, cwd=REPOSITORY_ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_tensorflow_cpu_run_reproduces_exactly(cli_env, tmp_path: Path, tracking_uri: str):
    trained = run_cli(["dataset.limit=1000", "epochs=2", "seed=3"], cli_env, tmp_path)
    assert trained.returncode == 0, trained.stderr
    (original,) = runs_in(tracking_uri)

    result = _reproduce([original.info.run_id], cli_env)

    assert result.returncode == 0, result.stderr
    assert "reproduces {}: identical (largest absolute difference 0)".format(original.info.run_id) in result.stdout
    original_run, new_run = runs_in(tracking_uri)
    assert new_run.data.tags["reproduces"] == original.info.run_id
    assert new_run.data.tags["reproduction.identical"] == "True"
    assert new_run.data.metrics["reproduction_max_abs_difference"] == 0.0
    assert new_run.data.params["seed"] == "3"
    assert new_run.data.tags["config_id"] == original_run.data.tags["config_id"]

    client = MlflowClient(tracking_uri=tracking_uri)
    for metric in ("val_error", "val_loss", "train_loss"):
        before = [(point.step, point.value) for point in client.get_metric_history(original.info.run_id, metric)]
        after = [(point.step, point.value) for point in client.get_metric_history(new_run.info.run_id, metric)]
        assert after == before, metric
        assert len(after) == 2, metric

    comparison_file = client.download_artifacts(new_run.info.run_id, "reproduction.json", str(tmp_path))
    comparison = json.loads(Path(comparison_file).read_text())
    assert [row["epoch"] for row in comparison["epochs"]["val_error"]] == [1, 2]
    assert comparison["final"]["test_error"]["difference"] == 0.0


def test_unknown_run_names_the_fix(cli_env, tracking_uri: str):
    result = _reproduce(["0123456789abcdef0123456789abcdef"], cli_env)

    assert result.returncode == 2
    assert "Error: run 0123456789abcdef0123456789abcdef was not found in {}".format(tracking_uri) in result.stderr
    assert "--tracking-uri" in result.stderr
    assert "Traceback" not in result.stderr
