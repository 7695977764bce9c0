"""Entry point: `python -m src.train [GROUP=OPTION ...] [KEY=VALUE ...] [-m]`.

Hydra composes the config from conf/; this module only wires it to src.runner.run_training, which
does the work and returns the run's final metrics.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from hydra_plugins.repeats_sweeper.repeats_sweeper import JOB_COUNT_VARIABLE
from src.config import ConfigError
from src.data.sources import DatasetError
from src.runner import JobPosition, RunFailed, RuntimeMissing, run_training
from src.supervisor import interrupt_source, raise_terminated

# Exit codes beside 0 and Hydra's own 1: invalid input before any run, and the shell's codes for
# a process stopped by SIGINT or SIGTERM.
EXIT_INVALID_INPUT = 2
EXIT_INTERRUPT_CODES = {"Ctrl-C": 130, "SIGTERM": 143}

# Hydra command-line switches that take no value (see `python -m src.train --help`).
VALUELESS_SWITCHES = ("-m", "--multirun", "-r", "--run", "--resolve", "-h", "--help", "--hydra-help", "--version")

# Absolute, so that the config is found also when this module is imported (src.mlproject).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> dict[str, float]:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    total = os.environ.get(JOB_COUNT_VARIABLE)
    position = JobPosition(
        number=(hydra_cfg.job.num or 0) + 1 if multirun else 1,
        total=int(total) if multirun and total else None,
        multirun=multirun,
    )

    # A job stopped with SIGTERM (kill, a scheduler's time limit) records its run like Ctrl-C does.
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        return run_training(cfg, position)
    except (ConfigError, DatasetError, RuntimeMissing, RunFailed) as error:
        if multirun:
            # Hydra records the failed job, goes on with the next one and exits 1 at the end.
            raise
        # A user-facing outcome, not a crash: the message without a traceback. A RunFailed is
        # already recorded in MLflow; the other errors come before any run exists.
        sys.stderr.write("Error: {}\n".format(error))
        sys.exit(1 if isinstance(error, RunFailed) else EXIT_INVALID_INPUT)


def hoist_switches(argv: list[str]) -> list[str]:
    """Move Hydra's value-less switches (-m, --resolve, ...) in front of the overrides.

    Hydra's argument parser takes the overrides as one positional list, so the documented
    `python -m src.train dataset=fmnist -m epochs=1` would leave `epochs=1` unrecognised. Moving
    the switches first makes every position work; options that take a value stay where they are.
    """
    switches = [argument for argument in argv[1:] if argument in VALUELESS_SWITCHES]
    rest = [argument for argument in argv[1:] if argument not in VALUELESS_SWITCHES]
    return [argv[0], *switches, *rest]


def run_command_line(
    argv: list[str],
    hydra_main: Callable[[], Any] | None = None,
    stop_note: str = "A run in progress is recorded in MLflow as KILLED.",
) -> None:
    """Run Hydra on `argv` and turn an interruption into a one-line message and exit code.

    `hydra_main` is the @hydra.main function to run (default: this module's `main`), and
    `stop_note` follows "Stopped by Ctrl-C." in the message.
    """
    sys.argv = hoist_switches(argv)
    try:
        (hydra_main or main)()
    except KeyboardInterrupt as interrupt:
        source = interrupt_source(interrupt)
        sys.stderr.write("Stopped by {}. {}\n".format(source, stop_note))
        sys.exit(EXIT_INTERRUPT_CODES[source])


if __name__ == "__main__":
    run_command_line(sys.argv)
