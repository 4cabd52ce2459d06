"""Keras 3, whatever its backend: what the three Keras arms (tf, keras_torch, keras_jax) share.

The model builder over the shared spec (fwbench.models.architecture), the
training adapter (Keras `fit` on in-memory arrays), the saved .keras model,
precision policy, the mode switches, batch inference and the MLflow flavour.
The arm module selects the backend (fwbench.frameworks.keras_backend) before
it imports this one, and adds its backend's runtime, device and export.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np

from fwbench.models.architecture import (
    LSTM, NCF, Conv, ConvBN, Dense, Dropout, Embedding, Encoder, Flatten, GlobalAvgPool, Layer, MaxPool, Residual,
    has_projection_shortcut, input_dtype, layer_shapes,
)

MODEL_FILE = "model.keras"
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}


# ---------------------------------------------------------------- model


@keras.saving.register_keras_serializable(package="fwbench")
class PositionEmbedding(keras.layers.Layer):
    """A learned vector per position, added to the token embeddings (Keras has no such layer)."""

    def __init__(self, length: int, dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.length, self.dim = length, dim

    def build(self, input_shape) -> None:
        # Keras' Embedding initialiser: uniform in [-0.05, 0.05].
        self.embeddings = self.add_weight(shape=(self.length, self.dim), initializer="uniform", name="embeddings")

    def call(self, x):
        return x + self.embeddings

    def get_config(self) -> dict:
        return {**super().get_config(), "length": self.length, "dim": self.dim}


@keras.saving.register_keras_serializable(package="fwbench")
class NeuMF(keras.layers.Layer):
    """architecture.NCF: (N, 2) (user, item) indices to the GMF and MLP towers' outputs, concatenated."""

    def __init__(self, users: int, items: int, gmf_dim: int, mlp: list[int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.users, self.items, self.gmf_dim, self.mlp = users, items, gmf_dim, list(mlp)
        self.gmf_users = keras.layers.Embedding(users, gmf_dim)
        self.gmf_items = keras.layers.Embedding(items, gmf_dim)
        self.mlp_users = keras.layers.Embedding(users, self.mlp[0] // 2)
        self.mlp_items = keras.layers.Embedding(items, self.mlp[0] // 2)
        self.tower = [keras.layers.Dense(units, activation="relu") for units in self.mlp[1:]]

    def call(self, x):
        users, items = x[:, 0], x[:, 1]
        gmf = self.gmf_users(users) * self.gmf_items(items)
        mlp = keras.ops.concatenate([self.mlp_users(users), self.mlp_items(items)], axis=-1)
        for dense in self.tower:
            mlp = dense(mlp)
        return keras.ops.concatenate([gmf, mlp], axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "users": self.users, "items": self.items, "gmf_dim": self.gmf_dim,
                "mlp": self.mlp}


def conv(x, filters: int, kernel: int, stride: int, padding: int, use_bias: bool, activation: str | None):
    """Convolution with `padding` zeros on every side. Keras' "same" pads only after the input when the
    stride is 2, unlike torch: it is used only where it pads symmetrically (stride 1, odd kernel)."""
    if stride == 1 and 2 * padding == kernel - 1:
        mode = "same"
    else:
        mode = "valid"
        if padding:
            x = keras.layers.ZeroPadding2D(padding)(x)
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding=mode, use_bias=use_bias,
                               activation=activation)(x)


def conv_bn(x, filters: int, kernel: int, stride: int, spec):
    """Convolution without bias (kernel // 2 zeros on every side), then batch norm with the spec's constants."""
    x = conv(x, filters, kernel, stride, kernel // 2, use_bias=False, activation=None)
    return keras.layers.BatchNormalization(momentum=spec.bn_momentum, epsilon=spec.bn_epsilon)(x)


def residual(x, layer: Residual, in_shape: tuple[int, ...]):
    """ResNet's basic block (architecture.Residual)."""
    body = keras.layers.ReLU()(conv_bn(x, layer.filters, 3, layer.stride, layer))
    body = conv_bn(body, layer.filters, 3, 1, layer)
    shortcut = conv_bn(x, layer.filters, 1, layer.stride, layer) if has_projection_shortcut(layer, in_shape) else x
    return keras.layers.ReLU()(keras.layers.Add()([body, shortcut]))


def encoder(x, layer: Encoder, dim: int):
    """architecture.Encoder: post-norm self-attention and ReLU feed-forward, biases everywhere, no dropout."""
    attention = keras.layers.MultiHeadAttention(num_heads=layer.heads, key_dim=dim // layer.heads, use_bias=True)
    x = keras.layers.LayerNormalization(epsilon=layer.epsilon)(keras.layers.Add()([x, attention(x, x)]))
    feed_forward = keras.layers.Dense(dim)(keras.layers.Dense(layer.ff, activation="relu")(x))
    return keras.layers.LayerNormalization(epsilon=layer.epsilon)(keras.layers.Add()([x, feed_forward]))


def embedding(x, layer: Embedding, length: int):
    x = keras.layers.Embedding(layer.vocab, layer.dim)(x)
    return PositionEmbedding(length, layer.dim)(x) if layer.positions else x


def apply_layer(layer: Layer, x, in_shape: tuple[int, ...]):
    """One spec applied to `x` with the equivalent Keras layers."""
    if isinstance(layer, Conv):
        return conv(x, layer.filters, layer.kernel, layer.stride, layer.padding, use_bias=True, activation="relu")
    if isinstance(layer, ConvBN):
        return keras.layers.ReLU()(conv_bn(x, layer.filters, layer.kernel, layer.stride, layer))
    if isinstance(layer, Residual):
        return residual(x, layer, in_shape)
    if isinstance(layer, MaxPool):
        return keras.layers.MaxPooling2D(layer.size)(x)
    if isinstance(layer, GlobalAvgPool):
        pooling = keras.layers.GlobalAveragePooling2D if len(in_shape) == 3 else keras.layers.GlobalAveragePooling1D
        return pooling()(x)
    if isinstance(layer, Flatten):
        # Flattens NHWC in (H, W, C) order; PyTorch flattens (C, H, W).
        # The feature order differs, the parameter counts do not.
        return keras.layers.Flatten()(x)
    if isinstance(layer, Dense):
        return keras.layers.Dense(layer.units, activation=layer.activation)(x)
    if isinstance(layer, Dropout):
        return keras.layers.Dropout(layer.rate)(x)
    if isinstance(layer, Embedding):
        return embedding(x, layer, in_shape[0])
    if isinstance(layer, Encoder):
        return encoder(x, layer, in_shape[-1])
    if isinstance(layer, LSTM):
        # Keras' LSTM: gates i, f, c, o, one bias; the last hidden state (return_sequences=False).
        return keras.layers.LSTM(layer.units)(x)
    if isinstance(layer, NCF):
        return NeuMF(layer.users, layer.items, layer.gmf_dim, list(layer.mlp))(x)
    raise TypeError(f"unsupported layer spec {layer!r}")


def build_model(model_cfg, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """The model of `model_cfg` (config/model) for inputs of `input_shape` (images NHWC), returning logits
    (the loss applies the softmax).

    Weights use Keras' default initialisers, deliberately not matched to PyTorch's.
    """
    inputs = keras.Input(shape=tuple(input_shape), dtype=input_dtype(model_cfg))
    x = inputs
    for layer, in_shape, _ in layer_shapes(model_cfg, input_shape, num_classes):
        x = apply_layer(layer, x, in_shape)
    return keras.Model(inputs, x, name=str(model_cfg.name))


def trainable_parameters(model: keras.Model) -> int:
    """Trainable parameters, as torch counts them (count_params adds batch norm's moving statistics)."""
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


# ---------------------------------------------------------------- training adapter


def make_optimizer(trainer_cfg) -> keras.optimizers.Optimizer:
    if trainer_cfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=trainer_cfg.lr, epsilon=trainer_cfg.adam_epsilon)
    return keras.optimizers.SGD(learning_rate=trainer_cfg.lr, momentum=trainer_cfg.momentum)


def compile_model(model: keras.Model, trainer_cfg) -> keras.Model:
    model.compile(
        optimizer=make_optimizer(trainer_cfg),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


# The logs of the last training step Keras reported (at most one entry): a backend that
# dispatches asynchronously (JAX) makes its clock wait for them (keras_jax.sync).
last_step_logs: list = []


class _StopWhen(keras.callbacks.Callback):
    """Ends `fit` after the current batch once `should_stop()` turns true (SIGTERM, or the bench's clock)."""

    def __init__(self, should_stop) -> None:
        super().__init__()
        self.should_stop = should_stop

    def on_train_batch_end(self, batch, logs=None) -> None:
        last_step_logs[:] = [logs]
        if self.should_stop():
            self.model.stop_training = True


class Adapter:
    """The training loop's view of Keras: `fit` on in-memory arrays (each Keras arm subclasses it)."""

    framework = ""  # the arm's name, set by its subclass

    def __init__(self, model_cfg, input_shape, num_classes: int, trainer_cfg) -> None:
        self.trainer_cfg = trainer_cfg
        self.model = compile_model(build_model(model_cfg, tuple(input_shape), num_classes), trainer_cfg)

    @property
    def parameter_count(self) -> int:
        return trainable_parameters(self.model)

    @property
    def device(self) -> str:
        """Where the backend runs the model: "cuda" or "cpu" (each arm asks its backend)."""
        raise NotImplementedError

    def reseed(self, seed: int) -> None:
        keras.utils.set_random_seed(seed)
        # Dropout draws from its layer's own SeedGenerator, whose state neither
        # set_random_seed nor the .keras archive restores: restart it from the
        # epoch seed, so an epoch's masks depend on (seed, epoch) alone, as in torch.
        for index, layer in enumerate(self.model.layers):
            generator = getattr(layer, "seed_generator", None)
            if generator is not None:
                layer_seed = np.random.SeedSequence([seed, index]).generate_state(1)[0]
                dtype = np.dtype(generator.state.dtype)
                # uint32 on TensorFlow (the seed as drawn), int32 on torch: brought into the dtype's range.
                layer_seed = int(layer_seed) % (int(np.iinfo(dtype).max) + 1)
                generator.state.assign(np.array([layer_seed, 0], dtype=dtype))

    def train_epoch(self, x: np.ndarray, y: np.ndarray, order: np.ndarray | None, should_stop) -> tuple[float, float]:
        """One epoch over x[order] (order None: x is already in training order, and is not copied)."""
        # Ordering the arrays ourselves (shuffle=False) gives Keras the same batches as PyTorch.
        xs, ys = (x, y) if order is None else (x[order], y[order])
        result = self.model.fit(
            xs, ys, batch_size=self.trainer_cfg.batch_size, epochs=1,
            shuffle=False, verbose=0, callbacks=[_StopWhen(should_stop)],
        )
        return float(result.history["loss"][-1]), float(result.history["accuracy"][-1])

    def predict_logits(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        return np.asarray(self.model.predict(x, batch_size=batch_size, verbose=0))

    def save_checkpoint(self, directory: Path) -> None:
        # The .keras archive holds weights and optimizer state (dropout's seed state is reset by reseed).
        self.model.save(Path(directory) / MODEL_FILE)

    def load_checkpoint(self, directory: Path) -> None:
        self.model = keras.models.load_model(Path(directory) / MODEL_FILE)
        # A loaded model's loss and metrics are built at its first `fit`, from a batch that `fit` draws
        # through a fresh data iterator; on the torch backend that iterator (a DataLoader) takes a seed
        # from torch's global generator, which Dropout's unseeded masks also draw from, after `reseed`.
        # A resumed epoch would then get other masks than the uninterrupted run. Build them here, from
        # one untrained evaluation batch, before the epoch reseeds.
        inputs = np.zeros((1, *self.model.input_shape[1:]), dtype=self.model.inputs[0].dtype)
        self.model.test_on_batch(inputs, np.zeros((1,), dtype=np.int64))

    def save_model(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = Path(directory) / MODEL_FILE
        self.model.save(path)
        return path


# ---------------------------------------------------------------- evaluation and export


def load_logits(model_dir: Path):
    """The saved model as a function (NHWC arrays, batch size) -> logits.

    The .keras archive holds the architecture: the model config and shapes are not needed.
    """
    model = keras.models.load_model(Path(model_dir) / MODEL_FILE)
    return lambda x, batch_size: np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


# ---------------------------------------------------------------- bench hooks


def before_build(precision: str) -> str:
    """Keras reads the dtype policy when layers are built: set it first. Returns the policy."""
    policy = POLICIES[precision]
    keras.mixed_precision.set_global_policy(policy)
    return policy


def mixed_precision_policy(bench_policy: str) -> str:
    """The dtype policy in force, read back from Keras (before_build set it)."""
    return keras.mixed_precision.global_policy().name


def set_mode_switches(adapter, run_eagerly: bool, jit_compile: bool) -> None:
    """The two switches Keras reads when it builds its train and predict functions (at the first call)."""
    adapter.model.run_eagerly = run_eagerly
    adapter.model.jit_compile = jit_compile


def predictor(adapter) -> Callable[[np.ndarray], np.ndarray]:
    """NumPy in, NumPy out, through the model's predict function in the job's mode.

    `predict_on_batch` is Keras' call for one batch; it returns NumPy, so the
    result is on the host (synchronized) when it returns.
    """
    return adapter.model.predict_on_batch


# ---------------------------------------------------------------- MLflow


def mlflow_model(model: keras.Model, example: np.ndarray):
    """(flavour, its keyword arguments, the model's output on the example) for MLflow's Model.log."""
    return keras_flavor(), {"model": model}, model.predict(example, verbose=0)


def keras_flavor():
    """mlflow.keras, creating the model directory first: its save_model writes the input
    example before it makes the directory (mlflow/mlflow#16183, still open in 3.17)."""
    import mlflow.keras

    def save_model(path, **kwargs):
        Path(path).mkdir(parents=True, exist_ok=True)
        mlflow.keras.save_model(path=path, **kwargs)

    return SimpleNamespace(__name__=mlflow.keras.__name__, save_model=save_model)
