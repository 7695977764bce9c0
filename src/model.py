"""Build a Keras model from the `model` config group.

The same function serves Keras 3 (modern runtime) and Keras 2.2.5 (paper-era runtime), so it uses
only the functional API and layer arguments both versions accept, and stays importable on
Python 3.7.
"""

from __future__ import annotations

# Layer types a config may name. A fixed list rather than getattr(keras.layers, name), so that a
# config file can only choose among layers this function is known to build identically on both
# Keras versions.
SUPPORTED_LAYERS = ("Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense")


class ModelConfigError(ValueError):
    """A `model.layers` entry that cannot be built."""


def build_model(keras, layers_cfg, input_shape, name: str = "paper_cnn"):
    """Return an uncompiled keras.Model with `input_shape` inputs and the layers in `layers_cfg`.

    `keras` is the imported module, passed in so that the caller chooses the backend before the
    first import. Each entry of `layers_cfg` is a mapping with `type` and the layer's arguments.
    """
    inputs = keras.layers.Input(shape=tuple(input_shape))
    tensor = inputs
    for index, entry in enumerate(layers_cfg):
        arguments = dict(entry)
        layer_type = arguments.pop("type", None)
        if layer_type not in SUPPORTED_LAYERS:
            raise ModelConfigError(
                "model.layers[{}].type={} is not supported; choose one of: {}.".format(
                    index, layer_type, ", ".join(SUPPORTED_LAYERS)
                )
            )
        layer_class = getattr(keras.layers, layer_type)
        try:
            layer = layer_class(name="{}_{}".format(layer_type.lower(), index + 1), **arguments)
        except TypeError as error:
            raise ModelConfigError(
                "model.layers[{}] ({}) has an invalid argument: {}.".format(index, layer_type, error)
            ) from error
        tensor = layer(tensor)
    return keras.models.Model(inputs=inputs, outputs=tensor, name=name)


def model_summary(model) -> str:
    """Return the text `model.summary()` prints."""
    lines = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)
