"""The per-run learning-curve figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines; set before pyplot is imported
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator


def plot_learning_curve(history: list[dict], title: str, path: Path) -> Path:
    """Draw error and loss per epoch, training and validation, into a PNG at `path`."""
    epochs = [record["epoch"] for record in history]
    figure, (error_axis, loss_axis) = plt.subplots(1, 2, figsize=(10, 4))

    error_axis.plot(epochs, [record["train_error"] for record in history], marker=".", label="train_error")
    error_axis.plot(epochs, [record["val_error"] for record in history], marker=".", label="val_error")
    error_axis.set_ylabel("error (1 - accuracy)")
    loss_axis.plot(epochs, [record["train_loss"] for record in history], marker=".", label="train_loss")
    loss_axis.plot(epochs, [record["val_loss"] for record in history], marker=".", label="val_loss")
    loss_axis.set_ylabel("loss")

    for axis in (error_axis, loss_axis):
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
