"""Checks on a composed config, and the identity shared by the repeats of one configuration.

Hydra already rejects unknown keys and unknown group options (`dataset=mnsit`) with the list of
valid choices. The checks here cover values: each rule names the key, the value it got and what
it accepts, and every rule is checked before any training starts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.topology import topology_problems

OPTIMIZERS = ("adam", "sgd", "rmsprop")
LOSSES = ("categorical_crossentropy",)
VALIDATION_SPLITS = ("test", "holdout")
PROGRESS_MODES = ("auto", "bar", "line", "none")

# Keys that do not change what a run computes, left out of the configuration identity so that the
# repeats of one configuration share it wherever their data, cache and store happen to live.
IDENTITY_EXCLUDED = (
    "seed",
    "repeats",
    "progress",
    "tracking",
    "cache_dir",
    "dataset.dir",
    "dataset.urls",
    # A fact about the dataset that validation reads, not a setting of the run.
    "dataset.train_size",
    "backend.compiledir",
    "topology.driver_host",
)

# Keys added after runs were first recorded, with their defaults. A key at its default is left out
# of the identity. Runs recorded before the key existed then keep their config_id and group with new
# runs of the same settings. Any other value is part of the identity.
IDENTITY_DEFAULTS = {"deterministic": False}


class ConfigError(ValueError):
    """A config value that is out of range or of the wrong type."""


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole_at_least(minimum: int, nullable: bool = False) -> tuple[Callable[[Any], bool], str]:
    description = "a whole number >= {}".format(minimum)
    if nullable:
        description += " or null"
    return (lambda value: (nullable and value is None) or (_is_whole(value) and value >= minimum)), description


def _one_of(choices: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda value: value in choices), "one of: " + ", ".join(choices)


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    # `auto` never reaches this check: src.epoch_choice replaces it first, so a value left here that
    # is not whole was a misspelling of a number or of auto.
    "epochs": (_whole_at_least(1)[0], "a whole number >= 1, or auto (the count python -m src.compare selected)"),
    "batch_size": _whole_at_least(1),
    "seed": _whole_at_least(0),
    "repeats": _whole_at_least(1),
    "loss": _one_of(LOSSES),
    "optimizer.name": _one_of(OPTIMIZERS),
    "optimizer.learning_rate": (lambda value: _is_number(value) and value > 0, "a number > 0"),
    "validation.split": _one_of(VALIDATION_SPLITS),
    "validation.fraction": (lambda value: _is_number(value) and 0 < value < 1, "a number between 0 and 1, exclusive"),
    "dataset.limit": _whole_at_least(1, nullable=True),
    "threads.intra_op": _whole_at_least(1, nullable=True),
    "threads.inter_op": _whole_at_least(1, nullable=True),
    "progress": _one_of(PROGRESS_MODES),
    "deterministic": (lambda value: isinstance(value, bool), "true or false"),
}


# Every top-level key the suite reads: the groups and the keys of conf/config.yaml.
KNOWN_KEYS = frozenset(
    (
        "dataset",
        "backend",
        "device",
        "topology",
        "model",
        "epochs",
        "batch_size",
        "seed",
        "repeats",
        "loss",
        "optimizer",
        "validation",
        "threads",
        "tracking",
        "cache_dir",
        "progress",
        "deterministic",
    )
)


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every key whose value breaks its rule, and every unknown key."""
    problems = [
        "{} is not a key of this config, so nothing would read it (was it added with +{}=...?). "
        "Remove it; `python -m src.train --cfg job` lists the keys.".format(key, key)
        for key in cfg
        if key not in KNOWN_KEYS and key != "hydra"  # a sweep job's config still carries Hydra's own node
    ]
    for key, (is_valid, expected) in RULES.items():
        value = OmegaConf.select(cfg, key)
        if not is_valid(value):
            problems.append("{}={} is invalid: expected {}.".format(key, _show(value), expected))

    problems.extend(topology_problems(cfg))

    if cfg.get("deterministic") is True and OmegaConf.select(cfg, "backend.runtime") == "legacy":
        problems.append(
            "deterministic=true is invalid with backend={}: Keras 2.2.5 has no switch for deterministic "
            "kernels. Use deterministic=false.".format(OmegaConf.select(cfg, "backend.name"))
        )

    if problems:
        problems.append("Fix the override on the command line (KEY=VALUE) or in the experiment preset.")
        raise ConfigError("\n".join(problems))


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value) if value == "" else value
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """Return the resolved config without Hydra's own node, as plain Python values."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    return data


def config_id(cfg: DictConfig) -> str:
    """Return a short hash of every setting that shapes a run's result, the seed excepted."""
    data = plain_config(cfg)
    for dotted in IDENTITY_EXCLUDED:
        _drop(data, dotted.split("."))
    for key, default in IDENTITY_DEFAULTS.items():
        if key in data and data[key] == default:
            del data[key]
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def config_label(cfg: DictConfig) -> str:
    """Return a readable name for the configuration: dataset/backend/device/topology."""
    return "/".join(str(cfg[group].name) for group in ("dataset", "backend", "device", "topology"))


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts and lists into dotted keys, the form MLflow params take."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return {prefix: "null" if data is None else str(data)}

    flat: dict[str, str] = {}
    for key, value in items:
        flat.update(flatten(value, "{}.{}".format(prefix, key) if prefix else str(key)))
    return flat


def _drop(data: dict, path: list[str]) -> None:
    node = data
    for part in path[:-1]:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)
