"""The Optuna study: search-space checks, and a small real study that is interrupted, resumed and used."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import REPOSITORY_ROOT, compose_config, run_cli, runs_in, start_module
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from src.config import ConfigError, config_id
from src.search_space import training_config, validate_search_space

TUNING_EXPERIMENT = "paper-cnn-tuning"


def compose_tune(overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(REPOSITORY_ROOT / "conf"), version_base="1.3"):
        return compose(config_name="tune", overrides=overrides or [])


def test_tune_config_scores_on_holdout():
    cfg = compose_tune(["dataset=fmnist"])

    assert cfg.validation.split == "holdout"
    assert cfg.tracking.experiment_name == TUNING_EXPERIMENT
    assert cfg.tune.tuned_model_name == "paper_cnn_tuned"
    assert cfg.dataset.name == "fmnist"


def test_search_space_sets_config_keys():
    cfg = compose_tune()
    values = {"conv1_filters": 48, "dropout": 0.25, "learning_rate": 0.003, "batch_size": 64}

    trial_cfg = training_config(cfg, cfg.search_space, values)

    assert trial_cfg.model.layers[0].filters == 48
    assert trial_cfg.model.layers[4].rate == 0.25
    assert trial_cfg.optimizer.learning_rate == 0.003
    assert trial_cfg.batch_size == 64
    assert trial_cfg.model.layers[-1].units == 10
    assert "tune" not in trial_cfg
    assert "search_space" not in trial_cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search_space.dropout.key=model.layers.4.ratio", "search_space.dropout.key=model.layers.4.ratio is not a key"),
        ("search_space.dropout.type=uniform", "search_space.dropout.type=uniform is invalid"),
        ("search_space.dense1_units.low=512", "low=512 and high=256: expected two numbers with low < high"),
        ("search_space.learning_rate.low=0", "search_space.learning_rate.low=0 is invalid with log: true"),
        ("search_space.batch_size.choices=[]", "search_space.batch_size.choices is missing or empty"),
    ],
)
def test_invalid_search_space_names_entry(override, message):
    cfg = compose_tune([override])

    with pytest.raises(ConfigError) as raised:
        validate_search_space(cfg.search_space, training_config(cfg, cfg.search_space, {}))
    assert message in str(raised.value)


def test_invalid_trials_fails_before_study(cli_env, tmp_path: Path, tracking_uri: str):
    result = _run_tune(["tune.trials=0", "tune.storage=sqlite:///{}".format(tmp_path / "optuna.db")], cli_env, tmp_path)

    assert result.returncode == 2
    assert "Error: tune.trials=0 is invalid" in result.stderr
    assert not (tmp_path / "optuna.db").exists()
    assert runs_in(tracking_uri, TUNING_EXPERIMENT) == []


def _tune_arguments(arguments: list[str], tmp_path: Path, name: str) -> list[str]:
    return [*arguments, "hydra.run.dir={}".format(tmp_path / name)]


def _run_tune(arguments: list[str], env: dict, tmp_path: Path, name: str = "tune") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "src.tune", *_tune_arguments(arguments, tmp_path, name)]
    return subprocess.run(command, cwd=REPOSITORY_ROOT, env=env, capture_output=True, text=True, timeout=900)


def _trial_runs(tracking_uri: str) -> list:
    return [run for run in runs_in(tracking_uri, TUNING_EXPERIMENT) if run.data.tags.get("optuna.role") == "trial"]


def _interrupt_in_second_trial(arguments: list[str], env: dict, tracking_uri: str) -> tuple[int, str]:
    """Start the study, send Ctrl-C once the second trial trains, and return the exit code and output.

    The signal waits for the trial's training process (its `worker_pid` tag): sent while the job
    still writes the run's inputs, a KeyboardInterrupt can land in a SQLAlchemy weakref callback,
    where Python prints it and drops it.
    """
    process = start_module("src.tune", arguments, env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        second = [run for run in _trial_runs(tracking_uri) if run.data.tags["optuna.trial_number"] == "1"]
        if second and "worker_pid" in second[0].data.tags:
            break
        time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("the second trial's training process did not start within 300 s")
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


@pytest.mark.slow
@pytest.mark.usefixtures("created_store")
def test_study_resumes_prunes_and_writes_preset(cli_env, tmp_path: Path, tracking_uri: str):
    storage = "sqlite:///{}".format(tmp_path / "optuna.db")
    config_dir = tmp_path / "conf"
    arguments = [
        "dataset.limit=500",
        "epochs=2",
        "tune.trials=3",
        "tune.storage={}".format(storage),
        "tune.config_dir={}".format(config_dir),
        # Prunes every trial that is not the best so far at its epoch, once one trial has finished.
        # The seeded TPE sampler and the repeatable CPU kernels make the trial sequence the same each time.
        "tune.pruner._target_=optuna.pruners.PercentilePruner",
        "+tune.pruner.percentile=1.0",
        "tune.pruner.n_startup_trials=1",
        "tune.pruner.n_warmup_steps=0",
    ]

    exit_code, output = _interrupt_in_second_trial(_tune_arguments(arguments, tmp_path, "first"), cli_env, tracking_uri)

    assert exit_code == 130, output
    assert "Rerun the same command to resume the study." in output
    (study_run,) = [run for run in runs_in(tracking_uri, TUNING_EXPERIMENT) if run.data.tags["optuna.role"] == "study"]
    assert study_run.info.status == "KILLED"
    interrupted = [run for run in _trial_runs(tracking_uri) if run.data.tags["optuna.trial_number"] == "1"]
    assert [run.info.status for run in interrupted] == ["KILLED"]
    assert interrupted[0].data.tags["optuna.state"] == "FAIL"

    result = _run_tune(arguments, cli_env, tmp_path, "second")
    assert result.returncode == 0, result.stderr

    study_name = study_run.data.tags["optuna.study"]
    study = optuna.load_study(study_name=study_name, storage=storage)
    states = [trial.state for trial in study.trials]
    assert states[1] == optuna.trial.TrialState.FAIL
    assert sum(state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for state in states) == 3
    assert optuna.trial.TrialState.PRUNED in states

    client = MlflowClient(tracking_uri=tracking_uri)
    study_runs = [run for run in runs_in(tracking_uri, TUNING_EXPERIMENT) if run.data.tags["optuna.role"] == "study"]
    assert [run.info.run_id for run in study_runs] == [study_run.info.run_id]
    assert client.get_run(study_run.info.run_id).info.status == "FINISHED"

    trials = _trial_runs(tracking_uri)
    assert len(trials) == len(study.trials)
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == study_run.info.run_id
        number = int(run.data.tags["optuna.trial_number"])
        assert run.data.tags["optuna.state"] == study.trials[number].state.name
        if study.trials[number].state == optuna.trial.TrialState.PRUNED:
            assert run.info.status == "KILLED"
            assert "pruned by PercentilePruner at epoch 1" in run.data.tags["failure_reason"]
            assert run.data.metrics["epochs_completed"] == 1

    finished_study = client.get_run(study_run.info.run_id)
    assert finished_study.data.tags["best_trial"] == str(study.best_trial.number)
    assert finished_study.data.metrics["best_val_error"] == study.best_value
    artifacts = {item.path for item in client.list_artifacts(study_run.info.run_id)}
    assert artifacts >= {
        "optimization_history.png",
        "param_importances.png",
        "best_params.json",
        "trials.csv",
        "tuned_mnist_tensorflow.yaml",
    }

    preset = config_dir / "experiment" / "tuned_mnist_tensorflow.yaml"
    assert preset.read_text().startswith("# @package _global_\n")
    written = yaml.safe_load(preset.read_text())
    assert written["model"]["name"] == "paper_cnn_tuned"
    assert written["model"]["layers"][0]["filters"] == study.best_params["conv1_filters"]
    assert written["batch_size"] == study.best_params["batch_size"]
    assert written["optimizer"]["learning_rate"] == study.best_params["learning_rate"]

    overrides = ["experiment=tuned_mnist_tensorflow", "dataset.limit=500", "epochs=1"]
    trained = run_cli(["--config-dir", str(config_dir), *overrides], cli_env, tmp_path)
    assert trained.returncode == 0, trained.stderr
    (tuned_run,) = runs_in(tracking_uri)
    assert tuned_run.info.status == "FINISHED"
    assert tuned_run.data.tags["model"] == "paper_cnn_tuned"
    assert tuned_run.data.params["model.layers.2.filters"] == str(study.best_params["conv2_filters"])
    assert tuned_run.data.params["validation.split"] == "test"
    assert tuned_run.data.tags["config_id"] != config_id(compose_config(["dataset.limit=500", "epochs=1"]))
    assert written["model"]["layers"][-1]["units"] == "${dataset.num_classes}"
