"""One architecture description shared by the Keras and PyTorch builders.

Both frameworks are built by walking the same list of layer specs returned by
`layer_specs`, so the architectures are identical by construction and there is
one place to read them. Shapes are tracked as (height, width, channels) for
image stages and (features,) after Flatten; convolutions use valid padding and
stride 1, pooling uses floor division (both frameworks' defaults).
"""

from __future__ import annotations

from dataclasses import dataclass

from fwbench.errors import ConfigError

MODEL_NAMES = ("linear", "mlp", "lenet", "convnet")

# Shared hyper-parameters, named so the architectures below read as a table.
KERNEL_SIZE = 3
POOL_SIZE = 2
MLP_HIDDEN_UNITS = 128
LENET_CONV_FILTERS = (6, 16)
LENET_DENSE_UNITS = (120, 84)
CONVNET_CONV_FILTERS = (32, 64)
CONVNET_DROPOUT_RATE = 0.5

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


def check_model_name(name: str) -> None:
    """Fail early with one line so a typo in the config is obvious."""
    if name not in MODEL_NAMES:
        raise ConfigError(
            f"unknown model {name!r}; accepted: {', '.join(MODEL_NAMES)}"
        )


def layer_specs(
    name: str, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> list[Layer]:
    """Return the architecture `name` as a list of layer specs.

    `input_shape` is accepted for a uniform signature with the builders; the
    specs themselves do not depend on it (sizes follow from `output_shape`).
    """
    check_model_name(name)
    if name == "linear":
        return [Flatten(), Dense(num_classes)]
    if name == "mlp":
        return [Flatten(), Dense(MLP_HIDDEN_UNITS, "relu"), Dense(num_classes)]
    if name == "lenet":
        first, second = LENET_CONV_FILTERS
        hidden_a, hidden_b = LENET_DENSE_UNITS
        return [
            Conv(first, KERNEL_SIZE),
            MaxPool(POOL_SIZE),
            Conv(second, KERNEL_SIZE),
            MaxPool(POOL_SIZE),
            Flatten(),
            Dense(hidden_a, "relu"),
            Dense(hidden_b, "relu"),
            Dense(num_classes),
        ]
    # convnet: the Keras "simple MNIST convnet" example.
    first, second = CONVNET_CONV_FILTERS
    return [
        Conv(first, KERNEL_SIZE),
        MaxPool(POOL_SIZE),
        Conv(second, KERNEL_SIZE),
        MaxPool(POOL_SIZE),
        Flatten(),
        Dropout(CONVNET_DROPOUT_RATE),
        Dense(num_classes),
    ]


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


def layer_shapes(
    name: str, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> list[tuple[Layer, tuple[int, ...], tuple[int, ...]]]:
    """(layer, input shape, output shape) for every layer; the builders need the inputs."""
    shape = tuple(input_shape)
    walked = []
    for layer in layer_specs(name, input_shape, num_classes):
        out = output_shape(layer, shape)
        walked.append((layer, shape, out))
        shape = out
    return walked


def flatten_size(
    name: str, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> int:
    """Features after the Flatten layer (every model has exactly one)."""
    for layer, _, out in layer_shapes(name, input_shape, num_classes):
        if isinstance(layer, Flatten):
            return out[0]
    raise ConfigError(f"model {name!r} has no Flatten layer; accepted: models with one")


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


def flops_per_sample(
    name: str, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> int:
    """Analytic forward-pass FLOPs for one sample, the same for both frameworks.

    Computed from the shared spec rather than profiled, so throughput numbers
    from TensorFlow and PyTorch are divided by the same amount of work.
    """
    return sum(
        layer_flops(layer, in_shape, out_shape)
        for layer, in_shape, out_shape in layer_shapes(name, input_shape, num_classes)
    )


__all__ = [
    "MODEL_NAMES",
    "Conv",
    "MaxPool",
    "Flatten",
    "Dense",
    "Dropout",
    "check_model_name",
    "layer_specs",
    "layer_shapes",
    "output_shape",
    "flatten_size",
    "flops_per_sample",
]
