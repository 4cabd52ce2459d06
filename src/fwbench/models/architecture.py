"""A model is a list of layer specs read from its config (config/model/<name>.yaml).

Both frameworks build a model by walking the same list, so the architectures
are identical by construction and there is one place to read them. Shapes are
tracked as (height, width, channels) for image stages and (features,) after
Flatten; convolutions use valid padding and stride 1, pooling uses floor
division (both frameworks' defaults).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fwbench.errors import ConfigError

# A multiply-add is counted as two floating-point operations.
FLOPS_PER_MULTIPLY_ADD = 2


@dataclass(frozen=True)
class Conv:
    """2-D convolution, valid padding, stride 1, ReLU activation."""

    filters: int
    kernel: int


@dataclass(frozen=True)
class MaxPool:
    """Max pooling with stride equal to the window size."""

    size: int


@dataclass(frozen=True)
class Flatten:
    """Turns an image stage into a feature vector."""


@dataclass(frozen=True)
class Dense:
    """Fully connected layer; activation is "relu" or None (logits)."""

    units: int
    activation: str | None = None


@dataclass(frozen=True)
class Dropout:
    """Dropout, active only in training mode."""

    rate: float


Layer = Conv | MaxPool | Flatten | Dense | Dropout

# The layer kinds a model config may list; `logits` is the last dense layer, one unit per class.
LAYER_KINDS = {"conv": Conv, "maxpool": MaxPool, "flatten": Flatten, "dense": Dense, "dropout": Dropout,
               "logits": Dense}


def layer_specs(model_cfg: Mapping, num_classes: int) -> list[Layer]:
    """The layers of `model_cfg.layers`, each a one-key mapping `{kind: {parameters}}`."""
    layers = []
    for position, entry in enumerate(model_cfg["layers"]):
        layers.append(_layer(model_cfg["name"], position, entry, num_classes))
    return layers


def _layer(model: str, position: int, entry: Mapping, num_classes: int) -> Layer:
    where = f"model {model!r} layer {position}"
    if not isinstance(entry, Mapping) or len(entry) != 1:
        raise ConfigError(f"{where} is {entry!r}: accepted is one mapping {{kind: {{parameters}}}}")
    (kind, parameters), = entry.items()
    if kind not in LAYER_KINDS:
        raise ConfigError(f"{where} has kind {kind!r}: accepted are {', '.join(LAYER_KINDS)}")
    parameters = dict(parameters or {})
    if kind == "logits":
        parameters = {"units": num_classes, **parameters}
    try:
        return LAYER_KINDS[kind](**parameters)
    except TypeError:
        fields = ", ".join(LAYER_KINDS[kind].__dataclass_fields__) or "none"
        raise ConfigError(f"{where} ({kind}) has parameters {sorted(parameters)}: accepted are {fields}") from None


def output_shape(layer: Layer, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape after `layer`, so flatten sizes are computed, never written in."""
    if isinstance(layer, Conv):
        height, width, _ = shape
        return (height - layer.kernel + 1, width - layer.kernel + 1, layer.filters)
    if isinstance(layer, MaxPool):
        height, width, channels = shape
        return (height // layer.size, width // layer.size, channels)
    if isinstance(layer, Flatten):
        size = 1
        for dim in shape:
            size *= dim
        return (size,)
    if isinstance(layer, Dense):
        return (layer.units,)
    return shape  # Dropout keeps the shape.


def layer_shapes(model_cfg: Mapping, input_shape: tuple[int, ...], num_classes: int
                 ) -> list[tuple[Layer, tuple[int, ...], tuple[int, ...]]]:
    """(layer, input shape, output shape) for every layer; the builders need the inputs."""
    shape = tuple(input_shape)
    walked = []
    for layer in layer_specs(model_cfg, num_classes):
        out = output_shape(layer, shape)
        walked.append((layer, shape, out))
        shape = out
    return walked


def flatten_size(model_cfg: Mapping, input_shape: tuple[int, ...], num_classes: int) -> int:
    """Features after the Flatten layer."""
    for layer, _, out in layer_shapes(model_cfg, input_shape, num_classes):
        if isinstance(layer, Flatten):
            return out[0]
    raise ConfigError(f"model {model_cfg['name']!r} has no flatten layer: accepted are models with one")


def layer_flops(layer: Layer, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of one layer; only conv and dense count.

    Activations, pooling, dropout and biases are ignored: they are a small,
    framework-dependent fraction of the work and would blur the comparison.
    """
    if isinstance(layer, Conv):
        height, width, filters = out_shape
        in_channels = in_shape[-1]
        macs = layer.kernel * layer.kernel * in_channels * filters * height * width
        return FLOPS_PER_MULTIPLY_ADD * macs
    if isinstance(layer, Dense):
        return FLOPS_PER_MULTIPLY_ADD * in_shape[0] * layer.units
    return 0


def flops_per_sample(model_cfg: Mapping, input_shape: tuple[int, ...], num_classes: int) -> int:
    """Analytic forward-pass FLOPs for one sample, the same for both frameworks.

    Computed from the shared spec rather than profiled, so throughput numbers
    from TensorFlow and PyTorch are divided by the same amount of work.
    """
    return sum(
        layer_flops(layer, in_shape, out_shape)
        for layer, in_shape, out_shape in layer_shapes(model_cfg, input_shape, num_classes)
    )
