"""Hydra callbacks: tell the user where the results went once the command is done."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.tracking import resolve_tracking_uri, ui_command

log = logging.getLogger(__name__)


class ResultsLocation(Callback):
    """Print the tracking store, the experiment and the command that opens the MLflow UI."""

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._announce(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._announce(config)

    @staticmethod
    def _announce(config: DictConfig) -> None:
        uri = resolve_tracking_uri(config.tracking.uri)
        log.info(
            "Results are in MLflow experiment '%s' at %s. Open them with: %s",
            config.tracking.experiment_name,
            uri,
            ui_command(uri),
        )
