"""The MLflow run of one Optuna study: the parent of its trial runs, with the best trial and Optuna's plots.

A resumed study reopens the run it had, found by the `optuna.study` and `optuna.storage` tags.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines; set before pyplot is imported
import matplotlib.pyplot as plt
import optuna
from mlflow.entities import Metric, Param, RunTag
from omegaconf import DictConfig, OmegaConf

from src.config import flatten

log = logging.getLogger(__name__)

# Tags shared by a study run and its trial runs; `optuna.role` distinguishes them.
STUDY_TAG = "optuna.study"
STORAGE_TAG = "optuna.storage"
ROLE_TAG = "optuna.role"
TRIAL_NUMBER_TAG = "optuna.trial_number"
TRIAL_STATE_TAG = "optuna.state"


class StudyRun:
    """The study's MLflow run, created on the first session and reopened by later ones."""

    def __init__(self, client, experiment_id: str, run_id: str):
        self.client = client
        self.experiment_id = experiment_id
        self.run_id = run_id

    @classmethod
    def open(cls, client, experiment_id: str, study_name: str, storage: str, settings: DictConfig) -> StudyRun:
        """Return the study's run, reopened as RUNNING if an earlier session created it, else a new one."""
        found = client.search_runs(
            [experiment_id],
            filter_string="tags.`{}` = '{}' and tags.`{}` = '{}' and tags.`{}` = 'study'".format(
                STUDY_TAG, study_name, STORAGE_TAG, storage, ROLE_TAG
            ),
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            log.info("Resuming the study's MLflow run %s", run_id)
            return cls(client, experiment_id, run_id)

        tags = {STUDY_TAG: study_name, STORAGE_TAG: storage, ROLE_TAG: "study", "mlflow.source.name": "src.tune"}
        run_id = client.create_run(experiment_id, run_name="study-" + study_name, tags=tags).info.run_id
        params = [Param(key, value[:6000]) for key, value in flatten(OmegaConf.to_container(settings)).items()]
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start : start + 100])
        log.info("Created the study's MLflow run %s", run_id)
        return cls(client, experiment_id, run_id)

    def trial_tags(self, study_name: str, trial_number: int) -> dict[str, str]:
        """Return the tags that make a training run a trial run nested under this study run."""
        return {
            "mlflow.parentRunId": self.run_id,
            "mlflow.runName": "trial-{}".format(trial_number),
            STUDY_TAG: study_name,
            ROLE_TAG: "trial",
            TRIAL_NUMBER_TAG: str(trial_number),
        }

    def mark_trial(self, frozen_trial: optuna.trial.FrozenTrial) -> None:
        """Tag the trial's run with the trial's final Optuna state (COMPLETE, PRUNED or FAIL)."""
        run_id = frozen_trial.user_attrs.get("mlflow_run_id")
        if run_id:
            self.client.set_tag(run_id, TRIAL_STATE_TAG, frozen_trial.state.name)

    def close(self, study: optuna.Study, status: str, extra_files: list[Path]) -> None:
        """Log the trial counts, the best trial, the trial table and the plots, then end the run with `status`."""
        trials = study.get_trials(deepcopy=False)
        counts = {state: sum(1 for trial in trials if trial.state == state) for state in optuna.trial.TrialState}
        now = int(time.time() * 1000)
        metrics = [
            Metric("trials_complete", counts[optuna.trial.TrialState.COMPLETE], now, 0),
            Metric("trials_pruned", counts[optuna.trial.TrialState.PRUNED], now, 0),
            Metric("trials_failed", counts[optuna.trial.TrialState.FAIL], now, 0),
        ]
        tags = []
        if counts[optuna.trial.TrialState.COMPLETE]:
            best = study.best_trial
            metrics.append(Metric("best_val_error", best.value, now, 0))
            tags = [RunTag("best_trial", str(best.number))]
            tags.append(RunTag("best_trial_run_id", best.user_attrs.get("mlflow_run_id", "")))
            tags += [RunTag("best." + name, str(value)) for name, value in best.params.items()]
        self.client.log_batch(self.run_id, metrics=metrics, tags=tags)

        with tempfile.TemporaryDirectory(prefix="study-") as scratch:
            for path in [*_study_files(study, Path(scratch)), *extra_files]:
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status=status)


def _study_files(study: optuna.Study, folder: Path) -> list[Path]:
    """Write the trial table, the best parameters and Optuna's matplotlib plots into `folder`."""
    files = []
    table = folder / "trials.csv"
    study.trials_dataframe().to_csv(table, index=False)
    files.append(table)

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if complete:
        best = folder / "best_params.json"
        summary = {"trial": study.best_trial.number, "val_error": study.best_value, "params": study.best_params}
        best.write_text(json.dumps(summary, indent=2))
        files.append(best)

    plots = {
        "optimization_history.png": optuna.visualization.matplotlib.plot_optimization_history,
        "intermediate_values.png": optuna.visualization.matplotlib.plot_intermediate_values,
        "param_importances.png": optuna.visualization.matplotlib.plot_param_importances,
    }
    for name, plot in plots.items():
        path = _save_plot(study, plot, folder / name)
        if path is not None:
            files.append(path)
    return files


def _save_plot(study: optuna.Study, plot, path: Path) -> Path | None:
    """Save one Optuna plot as a PNG, or log why it cannot be drawn (too few trials) and return None."""
    with warnings.catch_warnings():
        # Optuna marks its matplotlib plots experimental; the warning is not about this study.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            axes = plot(study)
        except (ValueError, RuntimeError) as error:
            log.warning("No %s: %s", path.name, error)
            return None
    figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
    figure.set_size_inches(8, 5)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
