"""Hydra's basic sweeper, with the seed sweep added by default and every job validated up front.

`python -m src.train -m dataset=mnist,fmnist` must run ten repeats (seeds 0 .. repeats-1) of each
configuration without the user typing the seeds, while `-m seed=0,1,2` keeps full control. And a
bad value anywhere in the sweep (`-m epochs=10,-1`) must stop the sweep before its first job
trains, not halfway through.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from src.config import RULES, ConfigError, validate_config
from src.epoch_choice import resolve_auto_epochs
from src.runner import RuntimeMissing, runtime_python

log = logging.getLogger(__name__)

# Read by src.train to print "job N of TOTAL"; the basic launcher runs jobs in this process.
JOB_COUNT_VARIABLE = "KBS_SWEEP_JOB_COUNT"


class RepeatsSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None, params: dict | None = None, blocks: list | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        # Each block is a mapping KEY: VALUES swept as a product of its own. The sweep runs the blocks one
        # after the other, so that a table whose rows have different seed counts is one command.
        self.blocks = [dict(block) for block in blocks or []]
        self._block_jobs: list[list[str]] | None = None

    def sweep(self, arguments: list[str]) -> Any:
        if self.blocks:
            self._block_jobs = [job for block in self.blocks for job in self._jobs_of_block(block, arguments)]
            return super().sweep(arguments)
        return super().sweep(self._with_seed_sweep(arguments))

    def split_arguments(self, overrides: Any, max_batch_size: int | None) -> list[list[list[str]]]:
        if self._block_jobs is None:
            return BasicSweeper.split_arguments(overrides, max_batch_size)
        return list(self.split_overrides_to_chunks(self._block_jobs, max_batch_size))

    def _jobs_of_block(self, block: dict, arguments: list[str]) -> list[list[str]]:
        # The command line comes last, so that `-m epochs=1` or `seed=0` override every block.
        block_arguments = ["{}={}".format(key, value) for key, value in block.items()]
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(self._with_seed_sweep([*block_arguments, *arguments]))
        return BasicSweeper.split_arguments(overrides, None)[0]

    def _with_seed_sweep(self, arguments: list[str]) -> list[str]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(arguments)
        keys = {override.get_key_element() for override in overrides}
        if any(override.get_key_element() == "repeats" and override.is_sweep_override() for override in overrides):
            _stop(
                "repeats cannot be swept: it sets how many seeds each configuration runs. "
                "Sweep seed instead (-m seed=0,1,2)."
            )

        if "seed" not in keys:
            repeats = self.config.repeats
            is_valid, expected = RULES["repeats"]
            if not is_valid(repeats):
                _stop("repeats={} is invalid: expected {}.".format(repeats, expected))
            arguments = [*arguments, "seed=range(0,{})".format(repeats)]
        return arguments

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose and validate every job of the batch; stop the sweep on the first bad one."""
        loader = self.hydra_context.config_loader
        for overrides in batch:
            job_config = loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))
            try:
                resolve_auto_epochs(job_config)
                validate_config(job_config)
                runtime_python(job_config)
            except (ConfigError, RuntimeMissing) as error:
                _stop("{}\n(in the job with overrides: {})".format(error, " ".join(overrides)))
        os.environ[JOB_COUNT_VARIABLE] = str(len(batch))
        log.info("Sweep of %d jobs validated; starting.", len(batch))


def _stop(message: str) -> None:
    # A user error, not a crash: print it plainly instead of Hydra's traceback.
    sys.stderr.write("Error: {}\n".format(message))
    sys.exit(2)
