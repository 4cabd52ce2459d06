"""Native TensorFlow 2, no Keras: a tf.Module model and a GradientTape training step.

What the `tf` arm does with Keras' `fit`, written with TensorFlow alone, so the
report can tell TensorFlow's cost from Keras': variables in a `tf.Module`,
the forward pass in `tf.nn` ops, the loss, the gradient and the optimizer
update in one step function. The bench modes choose how that step runs:
eager = a Python function, op by op; graph = `tf.function`; xla =
`tf.function(jit_compile=True)`. Inference runs through the same wrapper.

Parity with the Keras arm: the same layer spec (fwbench.models.architecture),
Keras' default initialisers, the same loss (sparse softmax cross entropy, mean
over the batch), and Adam / SGD updates written as Keras writes them. Dropout
draws stateless masks from (epoch seed, step, layer), so a resumed run repeats
the masks an uninterrupted one would draw.

Initialisers, as Keras' defaults: Glorot uniform kernels with Keras' fans
(a convolution's times its window; an attention projection's those of d -> d),
zero biases, the LSTM's recurrent kernel orthogonal and its forget-gate bias
one (unit_forget_bias), embeddings uniform in [-0.05, 0.05], norm gammas one
and betas zero, batch norm's moving mean zero and moving variance one.

Batch norm's moving statistics are non-trainable variables, updated by
assignment inside the step (so inside its tf.function and XLA cluster too) and
saved in the checkpoint and the SavedModel; the parameter count is of the
trainable variables only, as Keras' count_params.

The trained model is a SavedModel with a `serve` signature (the model's input
dtype: float32 images, int32 token ids or (user, item) indices; batch size free),
which evaluate and export load with `tf.saved_model.load`; the checkpoint is a
`tf.train.Checkpoint` of the model and the optimizer.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fwbench.errors import ConfigError
from fwbench.frameworks.batches import epoch_batches, predict_batched
from fwbench.frameworks.tf_runtime import (  # the runtime half of the interface, shared with tf
    applied_threads,
    compile_cache_note,
    configure_runtime as configure,
    determinism_enabled,
    device,
    device_peak_mb,
    gpu_build,
    has_gpu,
    prepare_process,
    reload_saved_model,
    reset_device_peak,
    sync,
    tf32_flags,
)
from fwbench.models.architecture import (
    LSTM,
    LSTM_GATES,
    NCF,
    Conv,
    ConvBN,
    Dense,
    Dropout,
    Embedding,
    Encoder,
    Flatten,
    GlobalAvgPool,
    MaxPool,
    Residual,
    has_projection_shortcut,
    input_dtype,
    layer_shapes,
)

# After tf_runtime, which imports TensorFlow with JAX refused (Keras, which TensorFlow imports, would load it).
import tensorflow as tf  # noqa: E402

# The interface (docs/frameworks.md), defined here or in tf_runtime.
__all__ = [
    "configure", "applied_threads", "version", "gpu_build", "tf32_flags", "determinism_enabled", "has_gpu",
    "build_model", "Adapter", "load_logits_fn", "export", "prepare_process", "before_build", "apply_mode",
    "mixed_precision_policy", "sync", "predictor", "reset_device_peak", "device_peak_mb", "compile_cache_note",
    "mlflow_model",
]

CHECKPOINT_PREFIX = "state"
MODEL_DIR = "saved_model"
ADAM_BETAS = (0.9, 0.999)  # Keras' and torch's defaults
# A dropout mask's seed is (epoch seed, step * stride + layer index): distinct for every step and layer.
DROPOUT_SEED_STRIDE = 1024


def version() -> str:
    return f"tensorflow {tf.__version__}"


# ---------------------------------------------------------------- model

# A layer draws several initial tensors: the k-th one's op seed is layer index + k * stride,
# so the first (the only one of conv and dense layers) keeps the op seed the layer index gives it.
OP_SEED_STRIDE = 1000
# Keras' Embedding initialiser: uniform in [-0.05, 0.05].
EMBEDDING_LIMIT = 0.05


def keras_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras' fan-in and fan-out of a kernel: the last two axes, times the product of the others."""
    receptive_field = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def glorot_uniform(shape: tuple[int, ...], op_seed: int) -> tf.Tensor:
    """Keras' default kernel initialiser; op seed plus the global seed (configure) make it repeatable."""
    fan_in, fan_out = keras_fans(shape)
    limit = float(np.sqrt(6.0 / (fan_in + fan_out)))
    return tf.random.uniform(shape, -limit, limit, seed=op_seed)


def orthogonal(rows: int, cols: int, op_seed: int) -> tf.Tensor:
    """Keras' Orthogonal (gain 1): Q of a normal matrix's QR, its signs fixed by R's diagonal."""
    tall = tf.random.normal((max(rows, cols), min(rows, cols)), seed=op_seed)
    q, r = tf.linalg.qr(tall)
    q *= tf.sign(tf.linalg.diag_part(r))
    return q if rows >= cols else tf.transpose(q)


class OpSeeds:
    """The op seeds of one layer's initial tensors, in the order they are drawn."""

    def __init__(self, index: int) -> None:
        self.index, self.drawn = index, 0

    def __call__(self) -> int:
        seed = self.index + self.drawn * OP_SEED_STRIDE
        self.drawn += 1
        return seed


def embedding_table(rows: int, dim: int, seeds: OpSeeds, name: str) -> tf.Variable:
    return tf.Variable(tf.random.uniform((rows, dim), -EMBEDDING_LIMIT, EMBEDDING_LIMIT, seed=seeds()), name=name)


class Affine(tf.Module):
    """x @ kernel + bias on the last axis (vectors and sequences alike), then ReLU if asked."""

    def __init__(self, features: int, units: int, seeds: OpSeeds, activation: str | None = None) -> None:
        super().__init__()
        self.activation = activation
        self.kernel = tf.Variable(glorot_uniform((features, units), seeds()), name="kernel")
        self.bias = tf.Variable(tf.zeros((units,)), name="bias")

    @property
    def weights(self) -> list[tf.Variable]:
        return [self.kernel, self.bias]

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        out = tf.matmul(x, self.kernel) + self.bias
        return tf.nn.relu(out) if self.activation == "relu" else out


class Conv2D(tf.Module):
    """Convolution with `padding` zeros on every side of H and W (symmetric, unlike "SAME" at stride 2),
    then ReLU if asked."""

    def __init__(self, channels: int, filters: int, kernel: int, stride: int, padding: int, use_bias: bool,
                 seeds: OpSeeds, activation: str | None = None) -> None:
        super().__init__()
        self.stride, self.activation = stride, activation
        self.padding = "VALID" if padding == 0 else [[0, 0], [padding, padding], [padding, padding], [0, 0]]
        self.kernel = tf.Variable(glorot_uniform((kernel, kernel, channels, filters), seeds()), name="kernel")
        self.bias = tf.Variable(tf.zeros((filters,)), name="bias") if use_bias else None

    @property
    def weights(self) -> list[tf.Variable]:
        return [self.kernel] if self.bias is None else [self.kernel, self.bias]

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        out = tf.nn.conv2d(x, self.kernel, strides=self.stride, padding=self.padding)
        if self.bias is not None:
            out += self.bias
        return tf.nn.relu(out) if self.activation == "relu" else out


class BatchNorm(tf.Module):
    """Batch norm over every axis but the channels; the moving statistics are variables, not trained."""

    def __init__(self, channels: int, momentum: float, epsilon: float) -> None:
        super().__init__()
        self.momentum, self.epsilon = momentum, epsilon
        self.gamma = tf.Variable(tf.ones((channels,)), name="gamma")
        self.beta = tf.Variable(tf.zeros((channels,)), name="beta")
        self.moving_mean = tf.Variable(tf.zeros((channels,)), trainable=False, name="moving_mean")
        self.moving_variance = tf.Variable(tf.ones((channels,)), trainable=False, name="moving_variance")

    @property
    def weights(self) -> list[tf.Variable]:
        return [self.gamma, self.beta]

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        if training:
            mean, variance = tf.nn.moments(x, axes=list(range(x.shape.rank - 1)))  # biased variance, as Keras
            self._update_moving(tf.stop_gradient(mean), tf.stop_gradient(variance))
        else:
            mean, variance = self.moving_mean, self.moving_variance
        return tf.nn.batch_normalization(x, mean, variance, self.beta, self.gamma, self.epsilon)

    def _update_moving(self, mean: tf.Tensor, variance: tf.Tensor) -> None:
        # Keras' convention: moving = momentum * moving + (1 - momentum) * batch statistic.
        self.moving_mean.assign(self.momentum * self.moving_mean + (1.0 - self.momentum) * mean)
        self.moving_variance.assign(self.momentum * self.moving_variance + (1.0 - self.momentum) * variance)


class ConvNorm(tf.Module):
    """Convolution without bias (kernel // 2 zeros on every side), then batch norm, then ReLU if asked."""

    def __init__(self, channels: int, filters: int, kernel: int, stride: int, spec, seeds: OpSeeds,
                 activation: str | None = None) -> None:
        super().__init__()
        self.activation = activation
        self.conv = Conv2D(channels, filters, kernel, stride, kernel // 2, use_bias=False, seeds=seeds)
        self.norm = BatchNorm(filters, spec.bn_momentum, spec.bn_epsilon)

    @property
    def weights(self) -> list[tf.Variable]:
        return self.conv.weights + self.norm.weights

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        out = self.norm(self.conv(x), training)
        return tf.nn.relu(out) if self.activation == "relu" else out


class ResidualBlock(tf.Module):
    """architecture.Residual: ResNet's basic block, the shortcut a 1x1 ConvNorm where the shape changes."""

    def __init__(self, layer: Residual, in_shape: tuple[int, ...], seeds: OpSeeds) -> None:
        super().__init__()
        channels = in_shape[-1]
        self.first = ConvNorm(channels, layer.filters, 3, layer.stride, layer, seeds, activation="relu")
        self.second = ConvNorm(layer.filters, layer.filters, 3, 1, layer, seeds)
        projected = has_projection_shortcut(layer, in_shape)
        self.shortcut = ConvNorm(channels, layer.filters, 1, layer.stride, layer, seeds) if projected else None

    @property
    def weights(self) -> list[tf.Variable]:
        shortcut = [] if self.shortcut is None else self.shortcut.weights
        return self.first.weights + self.second.weights + shortcut

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        body = self.second(self.first(x, training), training)
        shortcut = x if self.shortcut is None else self.shortcut(x, training)
        return tf.nn.relu(body + shortcut)


class TokenEmbedding(tf.Module):
    """architecture.Embedding: a row per token id, plus a learned row per position if asked."""

    def __init__(self, layer: Embedding, length: int, seeds: OpSeeds) -> None:
        super().__init__()
        self.tokens = embedding_table(layer.vocab, layer.dim, seeds, "tokens")
        self.positions = embedding_table(length, layer.dim, seeds, "positions") if layer.positions else None

    @property
    def weights(self) -> list[tf.Variable]:
        return [self.tokens] if self.positions is None else [self.tokens, self.positions]

    def __call__(self, ids: tf.Tensor) -> tf.Tensor:
        x = tf.gather(self.tokens, ids)
        return x if self.positions is None else x + self.positions


class LayerNorm(tf.Module):
    """Layer norm over the last axis (biased variance, as Keras and torch)."""

    def __init__(self, dim: int, epsilon: float) -> None:
        super().__init__()
        self.epsilon = epsilon
        self.gamma = tf.Variable(tf.ones((dim,)), name="gamma")
        self.beta = tf.Variable(tf.zeros((dim,)), name="beta")

    @property
    def weights(self) -> list[tf.Variable]:
        return [self.gamma, self.beta]

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        return tf.nn.batch_normalization(x, mean, variance, self.beta, self.gamma, self.epsilon)


class SelfAttention(tf.Module):
    """Multi-head scaled dot-product self-attention, every projection d -> d with a bias, no mask.

    Each projection is one (d, d) kernel, its columns split into heads; Keras 3 initialises its
    (d, heads, d // heads) kernels with the fans of (d, d) too.
    """

    def __init__(self, dim: int, heads: int, length: int, seeds: OpSeeds) -> None:
        super().__init__()
        self.heads, self.head_dim, self.length = heads, dim // heads, length
        self.query = Affine(dim, dim, seeds)
        self.key = Affine(dim, dim, seeds)
        self.value = Affine(dim, dim, seeds)
        self.output = Affine(dim, dim, seeds)

    @property
    def weights(self) -> list[tf.Variable]:
        return self.query.weights + self.key.weights + self.value.weights + self.output.weights

    def _split(self, x: tf.Tensor) -> tf.Tensor:
        """(N, L, d) to (N, heads, L, d // heads)."""
        return tf.transpose(tf.reshape(x, (-1, self.length, self.heads, self.head_dim)), (0, 2, 1, 3))

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        # The query is scaled before the product, as Keras does: fewer multiplications than scaling the scores.
        query = self._split(self.query(x)) * (1.0 / float(np.sqrt(self.head_dim)))
        key, value = self._split(self.key(x)), self._split(self.value(x))
        weights = tf.nn.softmax(tf.matmul(query, key, transpose_b=True), axis=-1)
        context = tf.transpose(tf.matmul(weights, value), (0, 2, 1, 3))  # (N, L, heads, d // heads)
        return self.output(tf.reshape(context, (-1, self.length, self.heads * self.head_dim)))


class EncoderLayer(tf.Module):
    """architecture.Encoder: post-norm self-attention, then a ReLU feed-forward, each added to its input."""

    def __init__(self, layer: Encoder, in_shape: tuple[int, ...], seeds: OpSeeds) -> None:
        super().__init__()
        length, dim = in_shape
        self.attention = SelfAttention(dim, layer.heads, length, seeds)
        self.attention_norm = LayerNorm(dim, layer.epsilon)
        self.expand = Affine(dim, layer.ff, seeds, activation="relu")
        self.contract = Affine(layer.ff, dim, seeds)
        self.feed_forward_norm = LayerNorm(dim, layer.epsilon)

    @property
    def weights(self) -> list[tf.Variable]:
        return (self.attention.weights + self.attention_norm.weights + self.expand.weights
                + self.contract.weights + self.feed_forward_norm.weights)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        x = self.attention_norm(x + self.attention(x))
        return self.feed_forward_norm(x + self.contract(self.expand(x)))


class Recurrent(tf.Module):
    """architecture.LSTM: gates (input, forget, cell candidate, output) from one kernel, one recurrent
    kernel and one bias; the last hidden state out. Keras' initialisers: Glorot kernel, orthogonal
    recurrent kernel, zero bias but the forget gate's, which is one (unit_forget_bias)."""

    def __init__(self, layer: LSTM, features: int, seeds: OpSeeds) -> None:
        super().__init__()
        units = self.units = layer.units
        self.kernel = tf.Variable(glorot_uniform((features, LSTM_GATES * units), seeds()), name="kernel")
        self.recurrent_kernel = tf.Variable(orthogonal(units, LSTM_GATES * units, seeds()), name="recurrent_kernel")
        forget_ones = tf.concat([tf.zeros((units,)), tf.ones((units,)), tf.zeros(((LSTM_GATES - 2) * units,))], 0)
        self.bias = tf.Variable(forget_ones, name="bias")

    @property
    def weights(self) -> list[tf.Variable]:
        return [self.kernel, self.recurrent_kernel, self.bias]

    def _cell(self, state: tuple[tf.Tensor, tf.Tensor], projected: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        hidden, cell = state
        gates = projected + tf.matmul(hidden, self.recurrent_kernel)
        input_gate, forget_gate, candidate, output_gate = tf.split(gates, LSTM_GATES, axis=-1)
        cell = tf.sigmoid(forget_gate) * cell + tf.sigmoid(input_gate) * tf.tanh(candidate)
        return tf.sigmoid(output_gate) * tf.tanh(cell), cell

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        # The input's share of every gate at every step in one product; only the recurrence is sequential.
        projected = tf.transpose(tf.matmul(x, self.kernel) + self.bias, (1, 0, 2))  # time-major for tf.scan
        zeros = tf.zeros((tf.shape(x)[0], self.units), x.dtype)
        # tf.scan is one loop op in the graph, where a Python loop would unroll every step into it.
        hidden, _ = tf.scan(self._cell, projected, initializer=(zeros, zeros))
        return hidden[-1]


class NeuMF(tf.Module):
    """architecture.NCF: (N, 2) (user, item) indices to the GMF and MLP towers' outputs, concatenated."""

    def __init__(self, layer: NCF, seeds: OpSeeds) -> None:
        super().__init__()
        half = layer.mlp[0] // 2
        self.gmf_users = embedding_table(layer.users, layer.gmf_dim, seeds, "gmf_users")
        self.gmf_items = embedding_table(layer.items, layer.gmf_dim, seeds, "gmf_items")
        self.mlp_users = embedding_table(layer.users, half, seeds, "mlp_users")
        self.mlp_items = embedding_table(layer.items, half, seeds, "mlp_items")
        widths = (layer.mlp[0], *layer.mlp[1:])
        self.tower = [Affine(features, units, seeds, activation="relu") for features, units in zip(widths, widths[1:])]

    @property
    def weights(self) -> list[tf.Variable]:
        tables = [self.gmf_users, self.gmf_items, self.mlp_users, self.mlp_items]
        return tables + [w for dense in self.tower for w in dense.weights]

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        users, items = x[:, 0], x[:, 1]
        gmf = tf.gather(self.gmf_users, users) * tf.gather(self.gmf_items, items)
        mlp = tf.concat([tf.gather(self.mlp_users, users), tf.gather(self.mlp_items, items)], axis=-1)
        for dense in self.tower:
            mlp = dense(mlp)
        return tf.concat([gmf, mlp], axis=-1)


def layer_module(layer, in_shape: tuple[int, ...], index: int) -> tf.Module | None:
    """The variables and forward pass of one spec; None for the layers without weights."""
    seeds = OpSeeds(index)
    if isinstance(layer, Conv):
        return Conv2D(in_shape[-1], layer.filters, layer.kernel, layer.stride, layer.padding, use_bias=True,
                      seeds=seeds, activation="relu")
    if isinstance(layer, ConvBN):
        return ConvNorm(in_shape[-1], layer.filters, layer.kernel, layer.stride, layer, seeds, activation="relu")
    if isinstance(layer, Residual):
        return ResidualBlock(layer, in_shape, seeds)
    if isinstance(layer, Dense):
        return Affine(in_shape[0], layer.units, seeds, activation=layer.activation)
    if isinstance(layer, Embedding):
        return TokenEmbedding(layer, in_shape[0], seeds)
    if isinstance(layer, Encoder):
        return EncoderLayer(layer, in_shape, seeds)
    if isinstance(layer, LSTM):
        return Recurrent(layer, in_shape[-1], seeds)
    if isinstance(layer, NCF):
        return NeuMF(layer, seeds)
    if isinstance(layer, MaxPool | GlobalAvgPool | Flatten | Dropout):
        return None
    raise TypeError(f"unsupported layer spec {layer!r}")


def apply_stateless(layer, x: tf.Tensor, training: bool, dropout_seed: tf.Tensor | None, index: int) -> tf.Tensor:
    """A layer without weights."""
    if isinstance(layer, MaxPool):
        return tf.nn.max_pool2d(x, layer.size, strides=layer.size, padding="VALID")
    if isinstance(layer, GlobalAvgPool):
        return tf.reduce_mean(x, axis=list(range(1, x.shape.rank - 1)))  # images: H and W; sequences: L
    if isinstance(layer, Flatten):
        # (H, W, C) order, as Keras flattens NHWC.
        return tf.reshape(x, (tf.shape(x)[0], -1))
    if isinstance(layer, Dropout):
        if not training:
            return x
        seed = tf.stack([dropout_seed[0], dropout_seed[1] * DROPOUT_SEED_STRIDE + index])
        return tf.nn.experimental.stateless_dropout(x, layer.rate, seed=seed)
    raise TypeError(f"unsupported layer spec {layer!r}")


class NativeModel(tf.Module):
    """The model of one layer spec as TensorFlow variables and `tf.nn` ops, logits out.

    `weights` are the trainable variables in layer order (what the optimizer updates and the
    parameter count counts); batch norm's moving statistics are tracked variables outside it,
    so the checkpoint and the SavedModel hold them too.
    """

    def __init__(self, model_cfg, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__(name=str(model_cfg.name))
        self.input_shape = tuple(int(size) for size in input_shape)
        self.input_dtype = input_dtype(model_cfg)
        self.layers = []  # (spec, module): module None for layers without weights
        for index, (layer, in_shape, _) in enumerate(layer_shapes(model_cfg, self.input_shape, num_classes)):
            self.layers.append((layer, layer_module(layer, in_shape, index)))

    @property
    def weights(self) -> list[tf.Variable]:
        return [w for _, module in self.layers if module is not None for w in module.weights]

    @property
    def parameter_count(self) -> int:
        return int(sum(np.prod(w.shape) for w in self.weights))

    def __call__(self, x: tf.Tensor, training: bool = False, dropout_seed: tf.Tensor | None = None) -> tf.Tensor:
        for index, (layer, module) in enumerate(self.layers):
            if module is None:
                x = apply_stateless(layer, x, training, dropout_seed, index)
            elif isinstance(layer, ConvBN | Residual):
                x = module(x, training)  # batch norm: the batch's statistics in training, the moving ones otherwise
            else:
                x = module(x)
        return x


def build_model(model_cfg, input_shape: tuple[int, ...], num_classes: int) -> NativeModel:
    """The model of `model_cfg` (config/model) for inputs of `input_shape` (images NHWC), returning logits."""
    return NativeModel(model_cfg, input_shape, num_classes)


# ---------------------------------------------------------------- optimizers


def dense_gradients(gradients) -> list[tf.Tensor]:
    """Embedding look-ups give IndexedSlices gradients; the updates below, as Keras', move every row's
    moments (not only the looked-up rows'), so the gradients are made dense first."""
    return [tf.convert_to_tensor(gradient) for gradient in gradients]


class Adam(tf.Module):
    """Adam as Keras 3 writes it: bias-corrected step size, epsilon added to sqrt(v)."""

    def __init__(self, weights: list[tf.Variable], lr: float, epsilon: float) -> None:
        super().__init__(name="adam")
        self.lr, self.epsilon = lr, epsilon
        self.iterations = tf.Variable(0, dtype=tf.int64, name="iterations")
        self.m = [tf.Variable(tf.zeros_like(w), name=f"m_{i}") for i, w in enumerate(weights)]
        self.v = [tf.Variable(tf.zeros_like(w), name=f"v_{i}") for i, w in enumerate(weights)]

    def apply(self, gradients, weights) -> None:
        beta1, beta2 = ADAM_BETAS
        self.iterations.assign_add(1)
        step = tf.cast(self.iterations, tf.float32)
        alpha = self.lr * tf.sqrt(1.0 - tf.pow(beta2, step)) / (1.0 - tf.pow(beta1, step))
        for gradient, weight, m, v in zip(dense_gradients(gradients), weights, self.m, self.v):
            m.assign_add((gradient - m) * (1.0 - beta1))
            v.assign_add((tf.square(gradient) - v) * (1.0 - beta2))
            weight.assign_sub(alpha * m / (tf.sqrt(v) + self.epsilon))


class SGD(tf.Module):
    """SGD with optional momentum as Keras writes it: velocity = momentum * velocity - lr * gradient."""

    def __init__(self, weights: list[tf.Variable], lr: float, momentum: float) -> None:
        super().__init__(name="sgd")
        self.lr, self.momentum = lr, momentum
        self.iterations = tf.Variable(0, dtype=tf.int64, name="iterations")
        self.velocity = [tf.Variable(tf.zeros_like(w), name=f"velocity_{i}") for i, w in enumerate(weights)]

    def apply(self, gradients, weights) -> None:
        self.iterations.assign_add(1)
        for gradient, weight, velocity in zip(dense_gradients(gradients), weights, self.velocity):
            velocity.assign(self.momentum * velocity - self.lr * gradient)
            weight.assign_add(velocity)


def make_optimizer(trainer_cfg, weights: list[tf.Variable]):
    if trainer_cfg.optimizer == "adam":
        return Adam(weights, float(trainer_cfg.lr), float(trainer_cfg.adam_epsilon))
    return SGD(weights, float(trainer_cfg.lr), float(trainer_cfg.momentum))


# ---------------------------------------------------------------- training adapter


def mean_cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


class Adapter:
    """The training loop's view of native TensorFlow: one step function over pre-loaded tensors."""

    framework = "tf_native"

    def __init__(self, model_cfg, input_shape, num_classes: int, trainer_cfg) -> None:
        self.trainer_cfg = trainer_cfg
        self.model = build_model(model_cfg, tuple(input_shape), num_classes)
        self.optimizer = make_optimizer(trainer_cfg, self.model.weights)
        self.epoch_seed = tf.Variable(0, dtype=tf.int64, name="epoch_seed")
        self.loss_sum = tf.Variable(0.0, dtype=tf.float32, name="loss_sum")
        self.correct = tf.Variable(0, dtype=tf.int64, name="correct")
        self.set_mode("graph")

    def set_mode(self, mode: str) -> None:
        """eager: the step as Python; graph: tf.function; xla: tf.function with XLA (traced at the first call)."""
        if mode == "eager":
            self.step, self.forward = self._step, self._forward
        else:
            compile_xla = mode == "xla"
            self.step = tf.function(self._step, jit_compile=compile_xla)
            self.forward = tf.function(self._forward, jit_compile=compile_xla)

    def _step(self, inputs: tf.Tensor, labels: tf.Tensor, index: tf.Tensor) -> None:
        """One optimizer step on the batch inputs[index]; adds its summed loss and correct count to the epoch's sums.

        The batch is gathered inside the step, so in graph and xla modes it is part of the compiled function.

        The sums stay on the device, in variables, as torch's loop keeps them in tensors: reading a
        result back each step would wait for every step.
        """
        x, y = tf.gather(inputs, index), tf.gather(labels, index)
        seed = tf.stack([self.epoch_seed, self.optimizer.iterations])
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True, dropout_seed=seed)
            loss = mean_cross_entropy(logits, y)
        gradients = tape.gradient(loss, self.model.weights)
        self.optimizer.apply(gradients, self.model.weights)
        self.loss_sum.assign_add(loss * tf.cast(tf.shape(y)[0], tf.float32))
        predicted = tf.argmax(logits, axis=1, output_type=y.dtype)
        self.correct.assign_add(tf.reduce_sum(tf.cast(tf.equal(predicted, y), tf.int64)))

    def _forward(self, x: tf.Tensor) -> tf.Tensor:
        return self.model(x, training=False)

    @property
    def parameter_count(self) -> int:
        return self.model.parameter_count

    @property
    def device(self) -> str:
        return device()

    def reseed(self, seed: int) -> None:
        # Only the dropout masks draw random numbers in training: from (epoch seed, step, layer).
        self.epoch_seed.assign(int(seed))

    def train_epoch(self, x: np.ndarray, y: np.ndarray, order: np.ndarray | None, should_stop) -> tuple[float, float]:
        """One epoch over x[order] (order None: x is already in training order); polls before each step."""
        inputs, labels = tf.constant(x), tf.constant(y)
        order = np.arange(len(x)) if order is None else order
        batch_size = self.trainer_cfg.batch_size
        self.loss_sum.assign(0.0)
        self.correct.assign(0)
        seen = 0
        for index in epoch_batches(order, batch_size, tf.constant):
            if should_stop():
                break
            self.step(inputs, labels, index)
            seen += int(index.shape[0])
        seen = max(seen, 1)
        return float(self.loss_sum.numpy()) / seen, int(self.correct.numpy()) / seen

    def predict_logits(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        return predict_batched(lambda batch: self.forward(tf.constant(batch)).numpy(), x, batch_size)

    def save_checkpoint(self, directory: Path) -> None:
        tf.train.Checkpoint(model=self.model, optimizer=self.optimizer).write(str(Path(directory) / CHECKPOINT_PREFIX))

    def load_checkpoint(self, directory: Path) -> None:
        checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        checkpoint.read(str(Path(directory) / CHECKPOINT_PREFIX)).assert_consumed()

    def save_model(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = Path(directory) / MODEL_DIR
        save_serving_model(self.model, path)
        return path


class ServingModule(tf.Module):
    """What is saved: the model's variables and one inference function, `serve` (the model's input dtype:
    float32 images NHWC or int32 ids; any batch size).

    `serve` is also the restored object's `__call__`, so the loaded SavedModel is callable as
    `loaded(x)` (what MLflow's TensorFlow flavour calls) as well as `loaded.serve(x)`.
    """

    def __init__(self, model: NativeModel) -> None:
        super().__init__(name=f"{model.name}_serving")
        self.model = model
        spec = tf.TensorSpec((None, *model.input_shape), model.input_dtype, name="inputs")
        self.serve = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        self.__call__ = self.serve


def save_serving_model(model: NativeModel, path: Path) -> None:
    """A SavedModel whose `serve` function (and default signature) takes arrays of the model's input."""
    shutil.rmtree(path, ignore_errors=True)
    serving = ServingModule(model)
    tf.saved_model.save(serving, str(path), signatures={"serving_default": serving.serve})


# ---------------------------------------------------------------- evaluation and export


def load_logits_fn(model_dir: Path, model_cfg, input_shape, num_classes: int):
    """The saved model as a function (input arrays, batch size) -> logits, and its device."""
    loaded = tf.saved_model.load(str(Path(model_dir) / MODEL_DIR))
    dtype = input_dtype(model_cfg)  # what the `serve` signature accepts

    def predict(batch: np.ndarray) -> np.ndarray:
        return loaded.serve(tf.constant(batch, dtype=dtype)).numpy()

    return lambda x, batch_size: predict_batched(predict, x, batch_size), device()


def export(model_dir: Path, target: Path, sample: np.ndarray, model_cfg, num_classes: int):
    """The SavedModel written again to `target` from the loaded one, then reloaded and timed like tf's export."""
    loaded = tf.saved_model.load(str(Path(model_dir) / MODEL_DIR))
    shutil.rmtree(target, ignore_errors=True)
    tf.saved_model.save(loaded, str(target), signatures={"serving_default": loaded.serve})
    return reload_saved_model(target, sample)


# ---------------------------------------------------------------- bench hooks


def before_build(precision: str) -> str:
    """The native arm computes in float32 only: bf16 would need a cast in every op, which it does not have."""
    if precision != "fp32":
        raise ConfigError(f"bench.precision={precision!r} is not available for framework 'tf_native': accepted is fp32")
    return "float32"


def mixed_precision_policy(bench_policy: str) -> str:
    return bench_policy


def apply_mode(adapter: Adapter, mode: str, precision: str) -> None:
    adapter.set_mode(mode)


def predictor(adapter: Adapter) -> Callable[[np.ndarray], np.ndarray]:
    """NumPy in, NumPy out, through the step's mode; `.numpy()` waits for the result."""
    return lambda x: adapter.forward(tf.constant(x)).numpy()


# ---------------------------------------------------------------- MLflow


def mlflow_model(model: NativeModel, example: np.ndarray):
    """(flavour, its keyword arguments, the model's output on the example): mlflow.tensorflow takes a tf.Module."""
    import mlflow.tensorflow

    serving = ServingModule(model)
    output = serving.serve(tf.constant(example, dtype=model.input_dtype)).numpy()
    return mlflow.tensorflow, {"model": serving}, output
