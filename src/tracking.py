"""MLflow tracking URI, experiment and artifact folder of the suite's runs."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import alembic.util
import sqlalchemy.exc
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from src.paths import REPOSITORY_ROOT

# Attempts at opening a store that another process is creating at the same moment.
CONNECT_ATTEMPTS = 5

log = logging.getLogger(__name__)


def default_tracking_uri() -> str:
    """Return the suite's own store, anchored at the repository so that Hydra's output folder does not move it."""
    return "sqlite:///{}".format(REPOSITORY_ROOT / "mlruns" / "mlflow.db")


def resolve_tracking_uri(configured: str | None) -> str:
    """Return `tracking.uri` if set, else MLFLOW_TRACKING_URI, else the suite's own store."""
    if configured:
        return configured
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def artifact_root(tracking_uri: str) -> str | None:
    """Return the artifact folder for a SQLite store: `artifacts/` beside the database file.

    MLflow's own default for a SQLite store is ./mlruns relative to the working directory, which
    would scatter artifacts wherever the command was started. For a tracking server (http) the
    server decides, so None is returned.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri[len("sqlite:///") :])
    return (database.parent / "artifacts").resolve().as_uri()


def connect(tracking_uri: str) -> MlflowClient:
    """Return a client for the store, creating a SQLite store's folder and tables if needed.

    MLflow creates the tables of a new SQLite store on first connection, and two processes doing
    so at once (a sweep and the UI, two sweeps) collide: "table ... already exists", "duplicate
    column", or an Alembic migration that finds its row already updated. The loser retries: by
    then the tables are there.
    """
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    attempt = 1
    while True:
        try:
            return MlflowClient(tracking_uri=tracking_uri)
        except (sqlalchemy.exc.OperationalError, alembic.util.CommandError, MlflowException) as error:
            message = str(error).lower()
            collided = any(sign in message for sign in ("already exists", "duplicate column", "migration"))
            if attempt >= CONNECT_ATTEMPTS or not collided:
                raise
            log.warning("The store %s is being created by another process; retrying: %s", tracking_uri, error)
            time.sleep(attempt)
            attempt += 1


def open_experiment(tracking_uri: str, experiment_name: str) -> tuple[MlflowClient, str]:
    """Return a client for the store and the id of the experiment, creating either if needed."""
    client = connect(tracking_uri)

    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        return client, experiment.experiment_id
    try:
        return client, client.create_experiment(experiment_name, artifact_location=artifact_root(tracking_uri))
    except MlflowException:
        # Another run of a parallel sweep created it between the lookup and the create.
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            raise
        return client, experiment.experiment_id


def ui_command(tracking_uri: str) -> str:
    """Return the shell command that opens the MLflow UI for this store on 127.0.0.1."""
    if tracking_uri.startswith(("http://", "https://")):
        return "open {} in a browser".format(tracking_uri)
    if tracking_uri == default_tracking_uri():
        return "python -m src.ui"
    return "MLFLOW_TRACKING_URI={} python -m src.ui".format(tracking_uri)
