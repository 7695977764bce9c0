"""The tuning search space of conf/search_space/: check it, sample it with Optuna, apply it to a config."""

from __future__ import annotations

from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from src.config import ConfigError

PARAMETER_TYPES = ("int", "float", "categorical")
# Keys of conf/tune.yaml that are not part of a training config.
TUNING_KEYS = ("tune", "search_space", "hydra")
# Marks a key that OmegaConf.select did not find, since None is a valid value.
_MISSING = object()


def validate_search_space(space: DictConfig, cfg: DictConfig) -> None:
    """Raise ConfigError listing every search-space entry that cannot be sampled or applied to `cfg`."""
    problems = []
    for name, entry in space.items():
        prefix = "search_space.{}".format(name)
        key = entry.get("key")
        if not key or OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            problems.append("{}.key={} is not a key of the training config.".format(prefix, key))
        kind = entry.get("type")
        if kind not in PARAMETER_TYPES:
            expected = ", ".join(PARAMETER_TYPES)
            problems.append("{}.type={} is invalid: expected one of: {}.".format(prefix, kind, expected))
        elif kind == "categorical":
            if not entry.get("choices"):
                problems.append("{}.choices is missing or empty: a categorical parameter needs a list.".format(prefix))
        elif not _is_range(entry.get("low"), entry.get("high")):
            problems.append(
                "{} has low={} and high={}: expected two numbers with low < high.".format(
                    prefix, entry.get("low"), entry.get("high")
                )
            )
        elif entry.get("log") and entry.get("low") <= 0:
            problems.append("{}.low={} is invalid with log: true: expected a number > 0.".format(prefix, entry.low))

    if not space:
        problems.append("search_space is empty: the study needs at least one parameter to vary.")
    if problems:
        problems.append("Fix it in conf/search_space/ or on the command line (search_space.NAME.KEY=VALUE).")
        raise ConfigError("\n".join(problems))


def _is_range(low: Any, high: Any) -> bool:
    numbers = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in (low, high))
    return numbers and low < high


def suggest(trial, space: DictConfig) -> dict[str, Any]:
    """Draw one value per parameter from `trial` (an optuna.Trial), keyed by parameter name."""
    values = {}
    for name, entry in space.items():
        if entry.type == "categorical":
            values[name] = trial.suggest_categorical(name, list(entry.choices))
        elif entry.type == "int":
            values[name] = trial.suggest_int(
                name, entry.low, entry.high, step=entry.get("step") or 1, log=bool(entry.get("log"))
            )
        else:
            values[name] = trial.suggest_float(name, entry.low, entry.high, log=bool(entry.get("log")))
    return values


def training_config(cfg: DictConfig, space: DictConfig, values: dict[str, Any]) -> DictConfig:
    """Return the training config of one trial: `cfg` without the tuning keys, with `values` set."""
    data = OmegaConf.to_container(cfg, resolve=False)
    for key in TUNING_KEYS:
        data.pop(key, None)
    trial_cfg = OmegaConf.create(data)
    for name, value in values.items():
        OmegaConf.update(trial_cfg, space[name].key, value, merge=False)
    return trial_cfg


def tuned_experiment(trial_cfg: DictConfig, model_name: str, header: str) -> str:
    """Return the text of an experiment preset that sets the network, optimizer and batch size of `trial_cfg`.

    The layers keep their interpolations (the output layer's `${dataset.num_classes}`), so the
    preset also works with another dataset of the same image shape.
    """
    model = OmegaConf.to_container(trial_cfg.model, resolve=False)
    model["name"] = model_name
    preset = {
        "model": model,
        "optimizer": OmegaConf.to_container(trial_cfg.optimizer, resolve=True),
        "batch_size": trial_cfg.batch_size,
    }
    comment = "".join("# {}\n".format(line) if line else "#\n" for line in header.splitlines())
    return "# @package _global_\n" + comment + yaml.safe_dump(preset, sort_keys=False, default_flow_style=None)
