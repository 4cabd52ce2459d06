"""Keras 3 builders that walk the shared spec in `fwbench.models`.

Inputs are NHWC (batch, height, width, channels), Keras' default layout.
The models output logits (no softmax); the loss applies it. Weights use
Keras' default initialisers, deliberately not matched to PyTorch's.
"""

from __future__ import annotations

import keras

from fwbench.models import Conv, Dense, Dropout, Flatten, MaxPool, Layer, layer_specs


def keras_layer(layer: Layer) -> keras.layers.Layer:
    """Translate one spec into the equivalent Keras layer."""
    if isinstance(layer, Conv):
        return keras.layers.Conv2D(
            layer.filters, layer.kernel, padding="valid", activation="relu"
        )
    if isinstance(layer, MaxPool):
        return keras.layers.MaxPooling2D(layer.size)
    if isinstance(layer, Flatten):
        # Flattens NHWC in (H, W, C) order; PyTorch flattens (C, H, W).
        # The feature order differs, the parameter counts do not.
        return keras.layers.Flatten()
    if isinstance(layer, Dense):
        return keras.layers.Dense(layer.units, activation=layer.activation)
    if isinstance(layer, Dropout):
        return keras.layers.Dropout(layer.rate)
    raise TypeError(f"unsupported layer spec {layer!r}")


def build_keras_model(
    name: str, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Build model `name` for NHWC inputs of `input_shape`, returning logits."""
    specs = layer_specs(name, input_shape, num_classes)
    layers = [keras.Input(shape=tuple(input_shape))]
    layers += [keras_layer(layer) for layer in specs]
    return keras.Sequential(layers, name=name)
