"""One run, start to finish: check inputs, open an MLflow run, train in a child process, record.

The Hydra job (this process) is the only one that talks to MLflow. The training process reports
each epoch as it finishes and this module logs it at once, so the MLflow UI follows a live run.
Whatever happens to the training process, the MLflow run ends FINISHED, FAILED or KILLED with the
epochs it completed, its times and the reason. The exception is a SIGKILL of this process itself,
which leaves the run RUNNING in MLflow; the orphaned training process then fails at its next report.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import mlflow
from mlflow.entities import Metric, Param, RunTag
from omegaconf import DictConfig, OmegaConf

from src import environment
from src.config import config_id, config_label, flatten, plain_config, validate_config
from src.data.sources import locate_dataset
from src.epoch_choice import resolve_auto_epochs
from src.paths import REPOSITORY_ROOT, suite_cache_root
from src.plots import plot_learning_curve
from src.spark_record import log_spark_report
from src.supervisor import WorkerResult, interrupt_source, run_worker
from src.tracking import open_experiment, resolve_tracking_uri
from src.worker import EXIT_GPU_UNAVAILABLE

log = logging.getLogger(__name__)

RUNTIME_PYTHONS = {"modern": Path(sys.executable), "legacy": REPOSITORY_ROOT / ".venv-legacy" / "bin" / "python"}
RUNTIME_INSTALL_HINTS = {"legacy": "bash scripts/setup.sh --no-run"}


class RunFailed(RuntimeError):
    """A run that did not finish; it is recorded in MLflow as FAILED or KILLED with the reason."""


class RuntimeMissing(RuntimeError):
    """The Python environment a backend needs is not installed."""


class StopRequested(Exception):
    """Raised when an `on_epoch` callback requests a stop; its message is the reason."""


# Called with each epoch report; returns None to go on, or the reason for stopping the run now.
EpochCallback = Callable[[dict], "str | None"]


@dataclass
class JobPosition:
    """Position of a run in its sweep, for progress lines."""

    number: int = 1
    total: int | None = None
    multirun: bool = False

    def describe(self) -> str:
        return "{}/{}".format(self.number, self.total) if self.total else str(self.number)


@dataclass
class RunRecord:
    """Reports of the training process, gathered for the end-of-run record."""

    history: list[dict] = field(default_factory=list)
    runtime: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    model_summary: str = ""
    finished: dict | None = None
    error: dict | None = None
    worker_pid: int | None = None
    # Set when an `on_epoch` callback stopped the run.
    stop_reason: str = ""


def run_training(
    cfg: DictConfig,
    position: JobPosition | None = None,
    on_epoch: EpochCallback | None = None,
    tags: dict[str, str] | None = None,
    on_run: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Train the configured model once, record it in MLflow and return its final metrics.

    `on_epoch` sees each epoch's report after it is logged; when it returns a reason, the training
    process is killed and the run ends KILLED with that reason, and its metrics are returned
    without an error. `tags` are added to the run's tags when it is created, after the suite's own,
    and `on_run` is called with the new run's ID.
    Raises ConfigError, DatasetError or RuntimeMissing before any MLflow run exists, and
    RunFailed after the run has been recorded as FAILED or KILLED.
    """
    position = position or JobPosition()
    # Before validation, which accepts only a whole number of epochs.
    epochs_selected_by = resolve_auto_epochs(cfg)
    validate_config(cfg)
    python = runtime_python(cfg)
    located = locate_dataset(cfg.dataset, cfg.cache_dir)

    tracking_uri = resolve_tracking_uri(cfg.tracking.uri)
    client, experiment_id = open_experiment(tracking_uri, cfg.tracking.experiment_name)
    label = config_label(cfg)
    run_id = _open_run(client, experiment_id, cfg, label, located.source, position, tags or {})
    if epochs_selected_by:
        client.set_tag(run_id, "epochs_selected_by", epochs_selected_by)
    log.info("[%s] %s seed=%s: MLflow run %s in %s", position.describe(), label, cfg.seed, run_id, tracking_uri)
    if on_run is not None:
        on_run(run_id)

    record = RunRecord()
    with tempfile.TemporaryDirectory(prefix="run-") as scratch:
        scratch_dir = Path(scratch)
        result = WorkerResult()
        try:
            _log_inputs(client, run_id, cfg, located.as_dict(), scratch_dir)
            result = _train_in_child(
                client, run_id, cfg, python, located.as_dict(), record, position, scratch_dir, on_epoch
            )
        except StopRequested as stop:
            record.stop_reason = str(stop)
            return _finish(client, run_id, cfg, label, record, getattr(stop, "worker_result", result), scratch_dir)
        except KeyboardInterrupt as interrupt:
            result = getattr(interrupt, "worker_result", result)
            result.interrupted = True
            result.interrupted_by = result.interrupted_by or interrupt_source(interrupt)
            _finish(client, run_id, cfg, label, record, result, scratch_dir)
            raise
        except BaseException as error:
            record.error = record.error or {"kind": type(error).__name__, "message": str(error), "traceback": ""}
            _finish(client, run_id, cfg, label, record, result, scratch_dir)
            raise
        return _finish(client, run_id, cfg, label, record, result, scratch_dir)


def _open_run(
    client, experiment_id: str, cfg: DictConfig, label: str, data_source: str, position: JobPosition, extra_tags: dict
) -> str:
    """Create the run, or adopt the one `mlflow run` started for this process (MLFLOW_RUN_ID).

    A multirun under `mlflow run` gets one run per job instead, each a child of the project's run.
    """
    run_name = "{}-seed{}".format(label.replace("/", "-"), cfg.seed)
    tags = _initial_tags(cfg, label, data_source)
    project_run = os.environ.get("MLFLOW_RUN_ID")
    if project_run and not position.multirun:
        tags["mlflow.runName"] = run_name
        client.log_batch(project_run, tags=[RunTag(key, value) for key, value in tags.items()])
        return project_run
    if project_run:
        tags["mlflow.parentRunId"] = project_run
    tags.update(extra_tags)
    run_name = tags.get("mlflow.runName", run_name)  # `extra_tags` may name the run
    return client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


def runtime_python(cfg: DictConfig) -> Path:
    """Return the interpreter of the backend's runtime, or raise RuntimeMissing naming the install command."""
    runtime = cfg.backend.runtime
    python = RUNTIME_PYTHONS.get(runtime)
    if python is None:
        raise RuntimeMissing(
            "backend.runtime={} is not a runtime; choose one of: {}.".format(runtime, ", ".join(RUNTIME_PYTHONS))
        )
    if not python.exists():
        raise RuntimeMissing(
            "backend={} needs the {} runtime, but {} does not exist. Install it with `{}`, which "
            "needs a Python 3.7 for the legacy runtime (pyenv install 3.7.16, or uv python install 3.7).".format(
                cfg.backend.name, runtime, python, RUNTIME_INSTALL_HINTS.get(runtime, "bash scripts/setup.sh")
            )
        )
    return python


def _initial_tags(cfg: DictConfig, label: str, data_source: str) -> dict[str, str]:
    hydra_cfg = hydra.core.hydra_config.HydraConfig.get() if hydra.core.hydra_config.HydraConfig.initialized() else None
    git = environment.git_state(REPOSITORY_ROOT)
    tags = {
        "config_id": config_id(cfg),
        "config_name": label,
        "dataset": cfg.dataset.name,
        "backend": cfg.backend.name,
        "device": cfg.device.name,
        "topology": cfg.topology.name,
        "model": cfg.model.name,
        "seed": str(cfg.seed),
        "runtime": cfg.backend.runtime,
        "data_source": data_source,
        "cpu": environment.cpu_description(),
        "gpu": environment.nvidia_gpus(),
        "mlflow.source.name": "src.train",
        "mlflow.source.type": "LOCAL",
        "version.mlflow": mlflow.__version__,
        "version.hydra": hydra.__version__,
    }
    if git:
        tags["mlflow.source.git.commit"] = git["commit"]
        tags["git_dirty"] = git["dirty"]
    if hydra_cfg is not None:
        tags["hydra.overrides"] = " ".join(hydra_cfg.overrides.task)
        tags["hydra.output_dir"] = hydra_cfg.runtime.output_dir
    # The training process's environment, not this one's, because the runner adds thread settings.
    worker_variables = environment.thread_environment(_worker_environment(cfg))
    tags.update({"env." + name: value for name, value in worker_variables.items()})
    return tags


def _log_inputs(client, run_id: str, cfg: DictConfig, located: dict, scratch_dir: Path) -> None:
    params = [Param(key, value[:6000]) for key, value in flatten(plain_config(cfg)).items()]
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start : start + 100])

    config_file = scratch_dir / "config.yaml"
    config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    dataset_file = scratch_dir / "dataset.json"
    dataset_file.write_text(json.dumps(located, indent=2))
    client.log_artifact(run_id, str(config_file))
    client.log_artifact(run_id, str(dataset_file))
    client.set_tag(run_id, "dataset_sha256", json.dumps(located["sha256"], sort_keys=True))


def _train_in_child(client, run_id, cfg, python, located, record, position, scratch_dir, on_epoch) -> WorkerResult:
    progress = _progress_mode(cfg, position)
    spec_file = scratch_dir / "spec.json"
    spec_file.write_text(json.dumps({"config": plain_config(cfg), "dataset": located, "progress": progress}))

    # Keras prints the progress of single runs. Spark runs train outside Keras' fit(), so the
    # parent prints their epoch lines.
    echo_epochs = progress == "none" or cfg.topology.name != "single"

    def on_report(report: dict) -> None:
        _handle_report(client, run_id, cfg, report, record, position, echo_epochs=echo_epochs)
        if on_epoch is not None and report["event"] == "epoch":
            reason = on_epoch(report)
            if reason:
                raise StopRequested(reason)

    def on_start(pid: int) -> None:
        record.worker_pid = pid
        client.set_tag(run_id, "worker_pid", str(pid))

    with open(scratch_dir / "worker.log", "w") as worker_log:
        return run_worker(
            [str(python), "-m", "src.worker", str(spec_file)],
            env=_worker_environment(cfg),
            cwd=REPOSITORY_ROOT,
            stdout=None if progress in ("bar", "line") else worker_log,
            stderr=worker_log,
            on_report=on_report,
            on_start=on_start,
        )


def _progress_mode(cfg: DictConfig, position: JobPosition) -> str:
    if position.multirun:
        return "none"
    if cfg.progress == "auto":
        return "bar" if sys.stdout.isatty() else "line"
    return cfg.progress


def _worker_environment(cfg: DictConfig) -> dict[str, str]:
    env = dict(os.environ)
    env["KERAS_BACKEND"] = cfg.backend.keras_backend
    env["PYTHONHASHSEED"] = str(cfg.seed)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPOSITORY_ROOT)
    if cfg.device.name == "cpu":
        # Hides every CUDA device from the backend, so that no kernel can land on a GPU.
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    if cfg.threads.intra_op:
        env["TF_NUM_INTRAOP_THREADS"] = str(cfg.threads.intra_op)
        # Theano's own loops and OpenBLAS take their thread count from here.
        env["OMP_NUM_THREADS"] = str(cfg.threads.intra_op)
    if cfg.threads.inter_op:
        env["TF_NUM_INTEROP_THREADS"] = str(cfg.threads.inter_op)
    if cfg.backend.keras_backend == "theano":
        env["THEANO_FLAGS"] = _theano_flags(cfg)
    if cfg.backend.keras_backend == "jax":
        # Only the requested platform: with cuda, a machine without a GPU gets no CPU fallback.
        env["JAX_PLATFORMS"] = "cuda" if cfg.device.name == "gpu" else "cpu"
    return env


def _theano_flags(cfg: DictConfig) -> str:
    """Return THEANO_FLAGS: float32, OpenBLAS and the suite's compile cache.

    Without a BLAS to link, Theano 1.0.5 falls back to a much slower NumPy path for matrix
    products. THEANO_FLAGS the user set override these, except `device`.
    """
    compiledir = cfg.backend.get("compiledir") or str(suite_cache_root() / "theano")
    flags = ["floatX=float32", "blas.ldflags=-lopenblas", "base_compiledir={}".format(compiledir)]
    if os.environ.get("THEANO_FLAGS"):
        flags.append(os.environ["THEANO_FLAGS"])
    # Last, so that `device` in the config decides even when the user's flags name a device.
    flags.append("device={}".format("cuda" if cfg.device.name == "gpu" else "cpu"))
    return ",".join(flags)


def _handle_report(client, run_id, cfg, report, record, position, echo_epochs) -> None:
    event = report["event"]
    if event == "epoch":
        record.history.append(report)
        step = report["epoch"]
        now = int(time.time() * 1000)
        names = ("val_error", "val_loss", "train_error", "train_loss", "epoch_time_s")
        # Spark runs add the epoch's Spark job time and the driver's time outside it.
        names += tuple(name for name in ("spark_job_time_s", "driver_time_s") if name in report)
        client.log_batch(run_id, metrics=[Metric(name, float(report[name]), now, step) for name in names])
        if echo_epochs:
            log.info(
                "[%s] %s seed=%s epoch %d/%d: val_error %.4f, val_loss %.4f, %.1f s",
                position.describe(),
                config_label(cfg),
                cfg.seed,
                step,
                cfg.epochs,
                report["val_error"],
                report["val_loss"],
                report["epoch_time_s"],
            )
    elif event == "runtime":
        record.runtime = report
        tags = {"version." + name: str(version) for name, version in report["versions"].items()}
        tags["version.python"] = report["python"]
        tags["keras_backend"] = report["keras_backend"]
        tags["visible_gpus"] = ", ".join(report["gpus"]) or "none"
        tags["threads.intra_op"] = str(report["threads"]["intra_op"])
        tags["threads.inter_op"] = str(report["threads"]["inter_op"])
        tags["blas"] = str(report["blas"])[:5000]
        client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
    elif event == "data":
        record.data = report
        sizes = ("train_samples", "validation_samples", "test_samples")
        client.log_batch(run_id, tags=[RunTag("data." + key, str(report[key])) for key in sizes])
    elif event == "model":
        record.model_summary = report["summary"]
        client.set_tag(run_id, "model_parameters", str(report["parameters"]))
    elif event == "compiled":
        # Keras 2 builds its functions ahead of training. On Theano this is the C compilation.
        tags = [RunTag("compile_cache", report["cache"])] if "cache" in report else []
        if "new_modules" in report:
            tags.append(RunTag("compile_new_modules", str(report["new_modules"])))
        metric = Metric("compile_time_s", float(report["compile_time_s"]), int(time.time() * 1000), 0)
        client.log_batch(run_id, metrics=[metric], tags=tags)
    elif event == "spark":
        log_spark_report(client, run_id, report)
    elif event == "finished":
        record.finished = report
    elif event == "error":
        record.error = report


def _finish(client, run_id, cfg, label, record, result: WorkerResult, scratch_dir: Path) -> dict[str, float]:
    """Log the outcome, the times and the artifacts, end the MLflow run, and raise if it failed."""
    metrics = _final_metrics(record, result)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(name, value, now, 0) for name, value in metrics.items()])
    _log_artifacts(client, run_id, cfg, label, record, result, scratch_dir)

    status, reason = _outcome(record, result)
    if reason:
        client.set_tag(run_id, "failure_reason", reason[:5000])
        client.set_tag(run_id, "mlflow.note.content", "**{}**: {}".format(status, reason[:5000]))
    client.set_tag(run_id, "exit_code", str(result.exit_code))
    client.set_terminated(run_id, status=status)

    if record.stop_reason:
        log.info("Run %s (%s seed=%s) ended %s: %s", run_id, label, cfg.seed, status, reason)
        return metrics
    if status != "FINISHED":
        log.error("Run %s (%s seed=%s) ended %s: %s", run_id, label, cfg.seed, status, reason)
        if not result.interrupted:
            raise RunFailed("Run {} ({} seed={}) ended {}: {}".format(run_id, label, cfg.seed, status, reason))
        return metrics

    log.info(
        "Run %s finished: val_error %.4f after %d epochs, test_error %.4f; user %.1f s, system %.1f s, total %.1f s",
        run_id,
        record.history[-1]["val_error"],
        len(record.history),
        metrics["test_error"],
        metrics["user_time_s"],
        metrics["system_time_s"],
        metrics["total_time_s"],
    )
    return metrics


def _final_metrics(record: RunRecord, result: WorkerResult) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name in ("user_time_s", "system_time_s", "total_time_s"):
        value = getattr(result, name)
        if value is not None:
            metrics[name] = float(value)
    metrics["epochs_completed"] = float(len(record.history))
    if record.history:
        # The last val_error is already the latest value of its per-epoch history, so only the best is added.
        metrics["best_val_error"] = min(epoch["val_error"] for epoch in record.history)
    if record.runtime:
        metrics["import_time_s"] = float(record.runtime["import_time_s"])
    if record.data:
        metrics["data_load_time_s"] = float(record.data["load_time_s"])
    if record.finished:
        for name in ("train_time_s", "test_error", "test_loss"):
            metrics[name] = float(record.finished[name])
    return metrics


def _outcome(record: RunRecord, result: WorkerResult) -> tuple[str, str]:
    """Return the MLflow status and, unless FINISHED, the reason in words."""
    if record.stop_reason:
        return "KILLED", "stopped after {} epochs: {}".format(len(record.history), record.stop_reason)
    if result.interrupted:
        return "KILLED", "interrupted by {} after {} epochs".format(result.interrupted_by, len(record.history))
    if result.killed_by:
        return "KILLED", (
            "the training process (pid {}) was killed by {} after {} epochs. SIGKILL usually means the "
            "kernel's out-of-memory killer or a manual kill.".format(
                record.worker_pid, result.killed_by, len(record.history)
            )
        )
    if record.error:
        return "FAILED", "{}: {}".format(record.error["kind"], record.error["message"])
    if result.exit_code == EXIT_GPU_UNAVAILABLE:
        return "FAILED", "device=gpu was requested but the backend sees no GPU"
    if result.exit_code != 0:
        return "FAILED", "the training process exited with code {}; see worker.log".format(result.exit_code)
    if record.finished is None:
        return "FAILED", "the training process exited without reporting its results; see worker.log"
    return "FINISHED", ""


def _log_artifacts(client, run_id, cfg, label, record, result, scratch_dir: Path) -> None:
    files = [scratch_dir / "worker.log"]
    if record.model_summary:
        (scratch_dir / "model_summary.txt").write_text(record.model_summary + "\n")
        files.append(scratch_dir / "model_summary.txt")
    if record.error and record.error.get("traceback"):
        (scratch_dir / "traceback.txt").write_text(record.error["traceback"])
        files.append(scratch_dir / "traceback.txt")
    if record.history:
        title = "{} seed={} ({} epochs)".format(label, cfg.seed, len(record.history))
        files.append(plot_learning_curve(record.history, title, scratch_dir / "learning_curve.png"))

    details = {
        "runtime": record.runtime,
        "data": record.data,
        "cpu": environment.cpu_description(),
        "gpu": environment.nvidia_gpus(),
        "worker_environment": environment.thread_environment(_worker_environment(cfg)),
        "git": environment.git_state(REPOSITORY_ROOT),
        "parent_versions": {"python": sys.version.split()[0], "mlflow": mlflow.__version__, "hydra": hydra.__version__},
        "exit_code": result.exit_code,
        "malformed_reports": result.malformed_reports,
    }
    (scratch_dir / "environment.json").write_text(json.dumps(details, indent=2, default=str))
    files.append(scratch_dir / "environment.json")

    for path in files:
        if path.exists():
            client.log_artifact(run_id, str(path))
