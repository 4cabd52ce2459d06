"""A model is a list of layer specs read from its config (config/model/<name>.yaml).

Every arm builds a model by walking the same list, so the architectures are
identical by construction and there is one place to read them. Shapes are
tracked per sample: (height, width, channels) for image stages, (length,
features) for sequences, (features,) for vectors; the input is (length,) for
token ids and (2,) for (user, item) index pairs. Convolutions pad `padding`
zeros on every side (symmetric, so a stride-2 convolution sees the same windows
in every framework: TensorFlow's "same" would pad only after), pooling uses
floor division (every framework's default).

Where the frameworks' layers differ by default, the spec sets the value and
every builder passes it explicitly: batch norm's momentum (Keras' convention:
moving = momentum * moving + (1 - momentum) * batch; torch's is 1 - this) and
epsilon, layer norm's epsilon, the LSTM's one bias per gate (torch adds two:
it holds the second at zero, untrained), biases on every attention projection.
What no switch sets: torch's batch norm updates its running variance with the
unbiased batch variance, the other arms with the biased one (a factor n/(n-1),
n = batch x height x width, at least 2,048 at batch 128: under 0.05 %).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fwbench.errors import ConfigError

# A multiply-add is counted as two floating-point operations.
FLOPS_PER_MULTIPLY_ADD = 2
# Gates of an LSTM cell (input, forget, cell candidate, output), in this order in Keras and torch alike.
LSTM_GATES = 4
# The dtype of a model's input, by its input kind (config/model: input).
INPUT_DTYPES = {"image": "float32", "tokens": "int32", "user_item": "int32"}
# The workload a model belongs to, by its input kind: the report groups its tables by it, in this order.
WORKLOADS = {"image": "vision", "tokens": "text", "user_item": "recommendation"}
# Batch norm and layer norm constants set explicitly in every framework (their defaults differ).
BATCH_NORM_MOMENTUM = 0.9
NORM_EPSILON = 1e-5


@dataclass(frozen=True)
class Conv:
    """2-D convolution with bias, `padding` zeros on every side, then ReLU."""

    filters: int
    kernel: int
    stride: int = 1
    padding: int = 0


@dataclass(frozen=True)
class ConvBN:
    """Convolution without bias (padding kernel // 2 on every side), batch norm, ReLU: a ResNet stem."""

    filters: int
    kernel: int = 3
    stride: int = 1
    bn_momentum: float = BATCH_NORM_MOMENTUM
    bn_epsilon: float = NORM_EPSILON


@dataclass(frozen=True)
class Residual:
    """ResNet's basic block: conv3x3(stride)-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.

    The shortcut is the identity, or a 1x1 convolution (no bias, stride) and batch norm where the
    stride or the channel count changes (ResNet's option B).
    """

    filters: int
    stride: int = 1
    bn_momentum: float = BATCH_NORM_MOMENTUM
    bn_epsilon: float = NORM_EPSILON


@dataclass(frozen=True)
class MaxPool:
    """Max pooling with stride equal to the window size."""

    size: int


@dataclass(frozen=True)
class GlobalAvgPool:
    """The mean over every position (an image's height and width, a sequence's length)."""


@dataclass(frozen=True)
class Flatten:
    """Turns an image stage into a feature vector."""


@dataclass(frozen=True)
class Dense:
    """Fully connected layer on a vector; activation is "relu" or None (logits)."""

    units: int
    activation: str | None = None


@dataclass(frozen=True)
class Dropout:
    """Dropout, active only in training mode."""

    rate: float


@dataclass(frozen=True)
class Embedding:
    """Token ids (length,) to vectors (length, dim); `positions` adds a learned embedding per position."""

    vocab: int
    dim: int
    positions: bool = False


@dataclass(frozen=True)
class Encoder:
    """A Transformer encoder layer, post-norm (the original Transformer's order):

    x = LayerNorm(x + MultiHeadSelfAttention(x)); x = LayerNorm(x + Dense(ReLU(Dense(x, ff)), dim)).
    Every projection has a bias; no padding mask (pad tokens are attended to, as in Keras'
    text-classification-with-Transformer example); no dropout inside the layer.
    """

    heads: int
    ff: int
    epsilon: float = NORM_EPSILON


@dataclass(frozen=True)
class LSTM:
    """One LSTM layer (sigmoid gates, tanh cell) over the sequence; its last hidden state out."""

    units: int


@dataclass(frozen=True)
class NCF:
    """NeuMF (He et al., 2017) up to its prediction layer: (user, item) index pairs in.

    GMF: user and item embeddings of `gmf_dim`, multiplied elementwise. MLP: user and item
    embeddings of mlp[0] // 2 each, concatenated, then dense ReLU layers of mlp[1:] units.
    Out: the two towers' outputs concatenated (gmf_dim + mlp[-1] features); a `logits` layer follows.
    """

    users: int
    items: int
    gmf_dim: int = 8
    mlp: tuple[int, ...] = (64, 32, 16, 8)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mlp", tuple(int(units) for units in self.mlp))


Layer = Conv | ConvBN | Residual | MaxPool | GlobalAvgPool | Flatten | Dense | Dropout | Embedding | Encoder | LSTM | NCF

# The layer kinds a model config may list; `logits` is the last dense layer, one unit per class.
LAYER_KINDS = {"conv": Conv, "conv_bn": ConvBN, "residual": Residual, "maxpool": MaxPool,
               "global_avgpool": GlobalAvgPool, "flatten": Flatten, "dense": Dense, "dropout": Dropout,
               "embedding": Embedding, "encoder": Encoder, "lstm": LSTM, "ncf": NCF, "logits": Dense}


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


def input_dtype(model_cfg: Mapping) -> str:
    """"float32" for images, "int32" for token ids and (user, item) indices."""
    return INPUT_DTYPES[str(model_cfg.get("input", "image"))]


def conv_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def output_shape(layer: Layer, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape after `layer`, so flatten sizes are computed, never written in."""
    if isinstance(layer, Conv | ConvBN):
        height, width, _ = shape
        padding = layer.padding if isinstance(layer, Conv) else layer.kernel // 2
        return (conv_size(height, layer.kernel, layer.stride, padding),
                conv_size(width, layer.kernel, layer.stride, padding), layer.filters)
    if isinstance(layer, Residual):
        height, width, _ = shape
        return (conv_size(height, 3, layer.stride, 1), conv_size(width, 3, layer.stride, 1), layer.filters)
    if isinstance(layer, MaxPool):
        height, width, channels = shape
        return (height // layer.size, width // layer.size, channels)
    if isinstance(layer, GlobalAvgPool):
        return (shape[-1],)
    if isinstance(layer, Flatten):
        size = 1
        for dim in shape:
            size *= dim
        return (size,)
    if isinstance(layer, Dense):
        if len(shape) != 1:
            raise ConfigError(f"a dense layer takes a vector, not shape {shape}: put flatten or global_avgpool first")
        return (layer.units,)
    if isinstance(layer, Embedding):
        return (shape[0], layer.dim)
    if isinstance(layer, LSTM):
        return (layer.units,)
    if isinstance(layer, NCF):
        return (layer.gmf_dim + layer.mlp[-1],)
    return shape  # Dropout and Encoder keep the shape.


def has_projection_shortcut(layer: Residual, in_shape: tuple[int, ...]) -> bool:
    """Whether a residual block's shortcut is a 1x1 convolution and batch norm (not the identity)."""
    return layer.stride != 1 or in_shape[-1] != layer.filters


def layer_shapes(model_cfg: Mapping, input_shape: tuple[int, ...], num_classes: int
                 ) -> list[tuple[Layer, tuple[int, ...], tuple[int, ...]]]:
    """(layer, input shape, output shape) for every layer; the builders need the inputs."""
    shape = tuple(int(dim) for dim in input_shape)
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


def conv_flops(kernel: int, in_channels: int, out_shape: tuple[int, ...]) -> int:
    height, width, filters = out_shape
    return FLOPS_PER_MULTIPLY_ADD * kernel * kernel * in_channels * filters * height * width


def layer_flops(layer: Layer, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of one layer: the multiply-adds of convolutions, dense layers and projections,
    attention's two matrix products and the LSTM's gates.

    Activations, pooling, normalisation, dropout, embedding look-ups, biases and the GMF product
    are ignored: they are a small, framework-dependent fraction of the work and would blur the comparison.
    """
    if isinstance(layer, Conv | ConvBN):
        return conv_flops(layer.kernel, in_shape[-1], out_shape)
    if isinstance(layer, Residual):
        flops = conv_flops(3, in_shape[-1], out_shape) + conv_flops(3, layer.filters, out_shape)
        if has_projection_shortcut(layer, in_shape):
            flops += conv_flops(1, in_shape[-1], out_shape)
        return flops
    if isinstance(layer, Dense):
        return FLOPS_PER_MULTIPLY_ADD * in_shape[0] * layer.units
    if isinstance(layer, Encoder):
        length, dim = in_shape
        projections = 4 * dim * dim + 2 * dim * layer.ff  # query, key, value, output; the feed-forward pair
        attention = 2 * length * dim  # scores (q k^T) and their weighted sum of values, per position
        return FLOPS_PER_MULTIPLY_ADD * length * (projections + attention)
    if isinstance(layer, LSTM):
        length, features = in_shape
        return FLOPS_PER_MULTIPLY_ADD * length * LSTM_GATES * layer.units * (features + layer.units)
    if isinstance(layer, NCF):
        return FLOPS_PER_MULTIPLY_ADD * sum(a * b for a, b in zip(layer.mlp, layer.mlp[1:]))
    return 0


def flops_per_sample(model_cfg: Mapping, input_shape: tuple[int, ...], num_classes: int) -> int:
    """Analytic forward-pass FLOPs for one sample, the same for every arm.

    Computed from the shared spec rather than profiled, so every arm's throughput
    is divided by the same amount of work.
    """
    return sum(
        layer_flops(layer, in_shape, out_shape)
        for layer, in_shape, out_shape in layer_shapes(model_cfg, input_shape, num_classes)
    )
