"""Entry point: `python -m src.tune [GROUP=OPTION ...] [KEY=VALUE ...]`, an Optuna study over conf/search_space/.

Each trial is one training run (src.runner.run_training), recorded in MLflow as a child of the
study's run (src.study_run). The pruner receives each epoch's val_error as the epoch ends and can stop
the trial's training process there. The study lives in its own SQLite file, so rerunning the same
command after an interruption resumes it. At the end the best trial is written as an experiment
preset that `python -m src.train experiment=tuned_<dataset>_<backend>` uses directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import sys
from pathlib import Path

import hydra
import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from src.config import RULES, ConfigError, config_id, validate_config
from src.data.sources import DatasetError, locate_dataset
from src.paths import REPOSITORY_ROOT
from src.runner import JobPosition, RunFailed, RuntimeMissing, run_training, runtime_python
from src.search_space import suggest, training_config, tuned_experiment, validate_search_space
from src.study_run import StudyRun
from src.supervisor import raise_terminated
from src.tracking import open_experiment, resolve_tracking_uri
from src.train import CONFIG_DIR, EXIT_INVALID_INPUT, run_command_line

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="tune")
def main(cfg: DictConfig) -> None:
    # A job stopped with SIGTERM records its trial and study runs like Ctrl-C does.
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        run_study(cfg)
    except (ConfigError, DatasetError, RuntimeMissing) as error:
        # Raised before any trial trains: the message without a traceback.
        sys.stderr.write("Error: {}\n".format(error))
        sys.exit(EXIT_INVALID_INPUT)


def run_study(cfg: DictConfig) -> optuna.Study:
    """Run the study's missing trials, record them in MLflow, write the best trial's preset, return the study."""
    space = cfg.search_space
    base = training_config(cfg, space, {})
    _validate(cfg, base)
    sampler = _instantiate(cfg.tune.sampler, "tune.sampler")
    pruner = _instantiate(cfg.tune.pruner, "tune.pruner")

    study_name = cfg.tune.study_name or default_study_name(cfg, base)
    storage = cfg.tune.storage or default_storage()
    if storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction="minimize",
        load_if_exists=True,
    )
    _fail_abandoned_trials(study)

    client, experiment_id = open_experiment(resolve_tracking_uri(base.tracking.uri), base.tracking.experiment_name)
    settings = OmegaConf.create({"training": OmegaConf.to_container(base, resolve=True), "tune": _study_settings(cfg)})
    study_run = StudyRun.open(client, experiment_id, study_name, storage, settings)

    finished = len(study.get_trials(deepcopy=False, states=_FINISHED))
    remaining = max(cfg.tune.trials - finished, 0)
    log.info("Study %s in %s: %d trials finished, %d to run.", study_name, storage, finished, remaining)

    started: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        started.append(trial.number)
        return _run_trial(trial, cfg, study_name, study_run)

    try:
        study.optimize(
            objective,
            n_trials=remaining,
            catch=(RunFailed,),
            callbacks=[lambda _study, frozen_trial: study_run.mark_trial(frozen_trial)],
        )
    except BaseException as error:
        # Optuna marks the interrupted trial FAIL before it re-raises, but calls no callback for it.
        if started:
            study_run.mark_trial(study.trials[started[-1]])
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        client.set_tag(study_run.run_id, "mlflow.note.content", "Stopped: rerun the same command to resume.")
        study_run.close(study, status, extra_files=[])
        raise

    preset = _write_best_preset(cfg, study, space)
    study_run.close(study, "FINISHED", extra_files=[preset] if preset else [])
    _report(study, study_run, preset)
    return study


_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _validate(cfg: DictConfig, base: DictConfig) -> None:
    """Check everything a trial needs before the study or any run is created."""
    is_valid, expected = RULES["repeats"]  # the same rule: a whole number >= 1
    if not is_valid(cfg.tune.trials):
        raise ConfigError("tune.trials={} is invalid: expected {}.".format(cfg.tune.trials, expected))
    validate_config(base)
    validate_search_space(cfg.search_space, base)
    runtime_python(base)
    locate_dataset(base.dataset, base.cache_dir)


def _instantiate(node: DictConfig, key: str):
    try:
        return hydra.utils.instantiate(node)
    except InstantiationException as error:
        raise ConfigError(
            "{} could not be built: {}. Set {}._target_ to an Optuna class, with arguments it accepts.".format(
                key, error, key
            )
        ) from error


def _study_settings(cfg: DictConfig) -> dict:
    """Return what shapes the trials besides the training config: search space, sampler and pruner."""
    return {
        "search_space": OmegaConf.to_container(cfg.search_space, resolve=True),
        "sampler": OmegaConf.to_container(cfg.tune.sampler, resolve=True),
        "pruner": OmegaConf.to_container(cfg.tune.pruner, resolve=True),
    }


def default_study_name(cfg: DictConfig, base: DictConfig) -> str:
    """Return `<dataset>-<backend>-<hash>`, the hash covering every setting that shapes a trial."""
    identity = {"config_id": config_id(base), "seed": base.seed, **_study_settings(cfg)}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:10]
    return "{}-{}-{}".format(base.dataset.name, base.backend.name, digest)


def default_storage() -> str:
    """Return the suite's Optuna store, a SQLite file beside the MLflow store."""
    return "sqlite:///{}".format(REPOSITORY_ROOT / "mlruns" / "optuna.db")


def _fail_abandoned_trials(study: optuna.Study) -> None:
    """Mark trials left RUNNING by a killed session as FAIL, so that the study does not count them.

    NOTE: this assumes one `python -m src.tune` per study at a time; a second session started while
    the first trains would fail the first one's running trial.
    """
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        log.warning("Trial %d was left running by an earlier session; marking it failed.", trial.number)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)


def _run_trial(trial: optuna.Trial, cfg: DictConfig, study_name: str, study_run: StudyRun) -> float:
    """Train one trial and return its last epoch's val_error; raise TrialPruned when the pruner stopped it."""
    trial_cfg = training_config(cfg, cfg.search_space, suggest(trial, cfg.search_space))
    last_report: dict = {}
    pruned: list[str] = []

    def on_epoch(report: dict) -> str | None:
        last_report.update(report)
        trial.report(report["val_error"], step=report["epoch"])
        if not trial.should_prune():
            return None
        pruned.append(
            "pruned by {} at epoch {}: val_error {:.4f}".format(
                type(trial.study.pruner).__name__, report["epoch"], report["val_error"]
            )
        )
        return pruned[-1]

    def remember_run(run_id: str) -> None:
        trial.set_user_attr("mlflow_run_id", run_id)

    position = JobPosition(number=trial.number + 1, total=None, multirun=True)
    tags = study_run.trial_tags(study_name, trial.number)
    run_training(trial_cfg, position, on_epoch=on_epoch, tags=tags, on_run=remember_run)
    if pruned:
        raise optuna.TrialPruned(pruned[-1])
    return last_report["val_error"]


def _write_best_preset(cfg: DictConfig, study: optuna.Study, space: DictConfig) -> Path | None:
    """Write the best complete trial as conf/experiment/tuned_<dataset>_<backend>.yaml; None without one."""
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        log.warning("No trial of study %s completed, so no tuned config was written.", study.study_name)
        return None
    best = study.best_trial
    best_cfg = training_config(cfg, space, best.params)
    name = "tuned_{}_{}".format(best_cfg.dataset.name, best_cfg.backend.name)
    folder = Path(cfg.tune.config_dir or CONFIG_DIR) / "experiment"
    overrides = " ".join(HydraConfig.get().overrides.task) if HydraConfig.initialized() else ""
    header = "\n".join(
        [
            "The best trial of Optuna study {} ({}), written by `python -m src.tune {}`.".format(
                study.study_name, cfg.tune.storage or "mlruns/optuna.db", overrides
            ),
            "Trial {}: val_error {:.4f} on the {} split after {} epochs, dataset.limit={}, seed={}.".format(
                best.number,
                best.value,
                best_cfg.validation.split,
                best_cfg.epochs,
                best_cfg.dataset.limit,
                best_cfg.seed,
            ),
            "Train it: python -m src.train experiment={} -m".format(name),
        ]
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "{}.yaml".format(name)
    path.write_text(tuned_experiment(best_cfg, cfg.tune.tuned_model_name, header))
    return path


def _report(study: optuna.Study, study_run: StudyRun, preset: Path | None) -> None:
    pruned = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)))
    log.info(
        "Study %s: %d trials, %d pruned; MLflow study run %s.",
        study.study_name,
        len(study.trials),
        pruned,
        study_run.run_id,
    )
    if preset is not None:
        log.info("Best trial %d: val_error %.4f with %s", study.best_trial.number, study.best_value, study.best_params)
        log.info("Wrote %s. Train it with: python -m src.train experiment=%s -m", preset, preset.stem)


if __name__ == "__main__":
    run_command_line(sys.argv, hydra_main=main, stop_note="Rerun the same command to resume the study.")
