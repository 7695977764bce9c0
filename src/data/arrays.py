"""Turn a located dataset into the arrays a Keras model trains on.

Runs inside the training process, so it must stay importable on Python 3.7 with NumPy 1.18.
"""

from __future__ import annotations

import numpy as np

from src.data.formats import DataFormatError, load_cifar10_binary, load_idx


class Splits:
    """Training, validation and test arrays: images float32 in [0, 1] (N, H, W, C), labels int64."""

    def __init__(self, x_train, y_train, x_val, y_val, x_test, y_test, validation_is_test):
        self.x_train, self.y_train = x_train, y_train
        self.x_val, self.y_val = x_val, y_val
        self.x_test, self.y_test = x_test, y_test
        self.validation_is_test = validation_is_test


def load_raw(located: dict) -> tuple:
    """Return ((train_images, train_labels), (test_images, test_labels)) as uint8 arrays."""
    if located["format"] == "idx":
        files = located["files"]
        train = (load_idx(files["train_images"]), load_idx(files["train_labels"]))
        test = (load_idx(files["test_images"]), load_idx(files["test_labels"]))
    else:
        train, test, _ = load_cifar10_binary(located["files"]["archive"])

    for split, (images, labels) in (("training", train), ("test", test)):
        if len(images) != len(labels):
            raise DataFormatError(
                "The {} {} split has {} images but {} labels; the files do not belong together.".format(
                    located["name"], split, len(images), len(labels)
                )
            )
    return train, test


def build_splits(
    located: dict, image_shape, limit=None, validation_split: str = "test", holdout_fraction: float = 0.1
) -> Splits:
    """Load, scale and split a dataset as the run's config specifies.

    `limit` keeps the first N training samples; with validation_split="holdout" the last
    `holdout_fraction` of those becomes the validation set and the test split stays unseen.
    """
    (train_images, train_labels), (test_images, test_labels) = load_raw(located)

    if limit is not None:
        train_images, train_labels = train_images[:limit], train_labels[:limit]

    x_train = _to_float(train_images, image_shape)
    x_test = _to_float(test_images, image_shape)
    y_train = train_labels.astype(np.int64)
    y_test = test_labels.astype(np.int64)

    if validation_split == "test":
        return Splits(x_train, y_train, x_test, y_test, x_test, y_test, validation_is_test=True)

    held_out = max(1, round(len(x_train) * holdout_fraction))
    if held_out >= len(x_train):
        raise ValueError(
            "validation.fraction={} leaves no training samples out of {}; lower it or raise dataset.limit.".format(
                holdout_fraction, len(x_train)
            )
        )
    return Splits(
        x_train[:-held_out],
        y_train[:-held_out],
        x_train[-held_out:],
        y_train[-held_out:],
        x_test,
        y_test,
        validation_is_test=False,
    )


def _to_float(images, image_shape):
    count = images.shape[0]
    expected = tuple(image_shape)
    if images.size != count * int(np.prod(expected)):
        raise DataFormatError(
            "Images have shape {}, which does not fit the configured dataset.image_shape {}.".format(
                images.shape[1:], list(expected)
            )
        )
    return (images.reshape((count, *expected)).astype(np.float32)) / np.float32(255.0)
