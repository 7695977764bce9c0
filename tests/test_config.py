"""The composed config: defaults, value checks, the configuration identity, and bad overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_config, run_cli, runs_in
from omegaconf import OmegaConf

from src.config import KNOWN_KEYS, ConfigError, config_id, config_label, flatten, plain_config, validate_config
from src.train import hoist_switches


def test_defaults_reproduce_the_study():
    cfg = compose_config()

    assert cfg.epochs == 200
    assert cfg.batch_size == 200
    assert cfg.optimizer.name == "adam"
    assert cfg.loss == "categorical_crossentropy"
    assert cfg.validation.split == "test"
    assert cfg.repeats == 10
    assert [layer.type for layer in cfg.model.layers] == [
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Dropout",
        "Flatten",
        "Dense",
        "Dense",
        "Dense",
    ]


def test_output_layer_follows_dataset_classes():
    cfg = compose_config(["dataset=cifar10"])

    assert cfg.model.layers[-1].units == 10
    assert list(cfg.dataset.image_shape) == [32, 32, 3]


def test_quick_preset_changes_only_its_keys():
    default = compose_config()
    quick = compose_config(["experiment=quick"])

    default_values = flatten(plain_config(default))
    quick_values = flatten(plain_config(quick))

    changed = {key for key, value in quick_values.items() if default_values[key] != value}
    assert changed == {"epochs", "repeats", "dataset.limit"}
    assert (quick.epochs, quick.repeats, quick.dataset.limit) == (3, 2, 10000)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("epochs=-1", "epochs=-1 is invalid: expected a whole number >= 1, or auto"),
        ("epochs=2.5", "epochs=2.5 is invalid: expected a whole number >= 1, or auto"),
        ("epochs=atuo", "epochs=atuo is invalid: expected a whole number >= 1, or auto"),
        ("batch_size=0", "batch_size=0 is invalid: expected a whole number >= 1."),
        ("seed=-3", "seed=-3 is invalid: expected a whole number >= 0."),
        ("optimizer.name=adamw", "optimizer.name=adamw is invalid: expected one of: adam, sgd, rmsprop."),
        ("optimizer.learning_rate=0", "optimizer.learning_rate=0 is invalid: expected a number > 0."),
        ("validation.split=train", "validation.split=train is invalid: expected one of: test, holdout."),
        ("validation.fraction=1.5", "validation.fraction=1.5 is invalid: expected a number between 0 and 1"),
        ("dataset.limit=0", "dataset.limit=0 is invalid: expected a whole number >= 1 or null."),
        ("threads.intra_op=0", "threads.intra_op=0 is invalid: expected a whole number >= 1 or null."),
        ("progress=loud", "progress=loud is invalid: expected one of: auto, bar, line, none."),
    ],
)
def test_invalid_value_names_key_value_and_rule(override: str, expected: str):
    with pytest.raises(ConfigError) as raised:
        validate_config(compose_config([override]))

    assert expected in str(raised.value)


def test_every_invalid_key_is_reported_at_once():
    with pytest.raises(ConfigError) as raised:
        validate_config(compose_config(["epochs=0", "batch_size=-2"]))

    assert "epochs=0 is invalid" in str(raised.value)
    assert "batch_size=-2 is invalid" in str(raised.value)


def test_config_id_ignores_seed_and_store():
    base = config_id(compose_config(["seed=0"]))

    assert config_id(compose_config(["seed=7"])) == base
    assert config_id(compose_config(["tracking.uri=sqlite:///elsewhere.db", "dataset.dir=/data"])) == base
    assert config_id(compose_config(["dataset=fmnist"])) != base
    assert config_id(compose_config(["epochs=10"])) != base
    assert config_id(compose_config(["optimizer.learning_rate=0.01"])) != base


def test_config_id_leaves_out_deterministic_at_default():
    cfg = compose_config([])
    without_key = OmegaConf.create({key: value for key, value in plain_config(cfg).items() if key != "deterministic"})

    assert config_id(cfg) == config_id(without_key)
    assert config_id(compose_config(["deterministic=true"])) != config_id(cfg)


def test_config_label_names_the_groups():
    assert config_label(compose_config(["dataset=fmnist"])) == "fmnist/tensorflow/cpu/single"


def test_unknown_dataset_lists_choices(cli_env: dict, tmp_path: Path, tracking_uri: str):
    result = run_cli(["dataset=mnsit"], cli_env, tmp_path)

    assert result.returncode != 0
    assert "Could not find 'dataset/mnsit'" in result.stderr
    for choice in ("mnist", "fmnist", "cifar10"):
        assert "\t{}\n".format(choice) in result.stderr
    assert runs_in(tracking_uri) == []


def test_unknown_key_is_rejected(cli_env: dict, tmp_path: Path):
    result = run_cli(["epoch=10"], cli_env, tmp_path)

    assert result.returncode != 0
    assert "Key 'epoch' is not in struct" in result.stderr


def test_invalid_value_fails_without_traceback(cli_env: dict, tmp_path: Path, tracking_uri: str):
    result = run_cli(["epochs=-1", "batch_size=0"], cli_env, tmp_path)

    assert result.returncode == 2
    assert "epochs=-1 is invalid: expected a whole number >= 1, or auto" in result.stderr
    assert "batch_size=0 is invalid" in result.stderr
    assert "Traceback" not in result.stderr
    assert runs_in(tracking_uri) == []


def test_bad_job_stops_sweep_before_any_run(cli_env: dict, tmp_path: Path, tracking_uri: str):
    result = run_cli(["-m", "epochs=1,-1", "dataset.limit=500"], cli_env, tmp_path)

    assert result.returncode == 2
    assert "epochs=-1 is invalid" in result.stderr
    assert "(in the job with overrides: epochs=-1 dataset.limit=500 seed=0)" in result.stderr
    assert runs_in(tracking_uri) == []


def test_sweeping_repeats_is_rejected(cli_env: dict, tmp_path: Path):
    result = run_cli(["-m", "repeats=2,3"], cli_env, tmp_path)

    assert result.returncode == 2
    assert "repeats cannot be swept" in result.stderr


def test_switch_after_overrides_is_accepted():
    argv = ["train.py", "dataset=fmnist", "-m", "epochs=1", "--cfg", "job"]

    assert hoist_switches(argv) == ["train.py", "-m", "dataset=fmnist", "epochs=1", "--cfg", "job"]


def test_added_unknown_key_is_rejected():
    with pytest.raises(ConfigError) as raised:
        validate_config(compose_config(["+epoch=10"]))

    assert "epoch is not a key of this config" in str(raised.value)


def test_known_keys_match_composed_config():
    assert set(compose_config()) == set(KNOWN_KEYS)


def test_misspelled_preset_is_rejected(cli_env: dict, tmp_path: Path, tracking_uri: str):
    result = run_cli(["experiment=quik"], cli_env, tmp_path)

    assert result.returncode != 0
    assert "Could not find 'experiment/quik'" in result.stderr
    assert "\tquick\n" in result.stderr
    assert runs_in(tracking_uri) == []


def test_unknown_runtime_stops_sweep_before_any_run(cli_env: dict, tmp_path: Path, tracking_uri: str):
    result = run_cli(["-m", "backend.runtime=ancient", "dataset.limit=500", "epochs=1"], cli_env, tmp_path)

    assert result.returncode == 2
    assert "backend.runtime=ancient is not a runtime; choose one of: modern, legacy." in result.stderr
    assert "Traceback" not in result.stderr
    assert runs_in(tracking_uri) == []
