"""JAX with Flax Linen and Optax: everything the `jax` arm does that imports JAX.

- runtime: JAX's (fwbench.frameworks.jax_runtime: the CPUs XLA may use, the
  seed its PRNG keys derive from, precision, reading them back);
- the model: a Flax Linen module over the shared layer spec (Linen, not NNX:
  a pure `apply(variables, x)` is what `jax.jit` and `jax.export` take as is);
- the training adapter: one `jax.jit`-compiled step (loss, gradient, Optax
  update of the 'params' collection, new 'batch_stats' from the forward pass)
  over arrays put on the device once per epoch;
- evaluation and export: the variables (parameters and batch norm's running
  statistics) as Flax msgpack beside the model's config; `jax.export`
  serialises the inference function with its variables and a symbolic batch
  size (StableHLO, loadable without Flax or this package);
- the bench hooks: its one mode, `jit` (JAX's eager op-by-op dispatch is a
  debugging aid, not a way anyone trains);
- the MLflow flavour: MLflow has none for JAX, so the exported function is
  logged as a pyfunc model.

Initialisers are Flax's defaults (LeCun normal kernels, zero biases),
deliberately not matched to Keras' or torch's, as those two are not matched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fwbench.errors import ConfigError
from fwbench.frameworks.batches import epoch_batches, predict_batched
from fwbench.frameworks.jax_runtime import (  # the runtime half of the interface, shared with keras_jax
    applied_threads,
    compile_cache_note,
    configure,
    configured_seed,
    determinism_enabled,
    device,
    device_peak_mb,
    gpu_build,
    has_gpu,
    prepare_process,
    reset_device_peak,
    tf32_flags,
)
from fwbench.models.architecture import (
    LSTM,
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
    layer_specs,
)

# The interface (docs/frameworks.md), defined here or in jax_runtime.
__all__ = [
    "configure", "applied_threads", "version", "gpu_build", "tf32_flags", "determinism_enabled", "has_gpu",
    "build_model", "Adapter", "load_logits_fn", "export", "prepare_process", "before_build", "apply_mode",
    "mixed_precision_policy", "sync", "predictor", "reset_device_peak", "device_peak_mb", "compile_cache_note",
    "mlflow_model",
]

PARAMS_FILE = "params.msgpack"
CHECKPOINT_FILE = "state.msgpack"
EXPORT_FILE = "model.jax_exported"
# What the last dispatched training step returns (at most one entry): sync() waits for it.
_last_step: list = []


def version() -> str:
    return f"jax {jax.__version__}, jaxlib {jax.lib.__version__}, flax {flax.__version__}, optax {optax.__version__}"


# ---------------------------------------------------------------- model


class LinenModel(nn.Module):
    """The layer spec as a Linen module: the model's input (NHWC images, int ids) in, logits out."""

    layers: tuple

    @nn.compact
    def __call__(self, x, train: bool = False):
        for layer in self.layers:
            x = linen_layer(layer, x, train)
        return x


def linen_layer(layer, x, train: bool):
    """One spec layer on `x`; shapes are read off `x` itself (channels, sequence length)."""
    if isinstance(layer, Conv):
        return nn.relu(conv(layer.filters, layer.kernel, layer.stride, layer.padding, use_bias=True)(x))
    if isinstance(layer, ConvBN):
        x = conv(layer.filters, layer.kernel, layer.stride, layer.kernel // 2, use_bias=False)(x)
        return nn.relu(batch_norm(layer, train)(x))
    if isinstance(layer, Residual):
        return ResidualBlock(layer)(x, train)
    if isinstance(layer, MaxPool):
        window = (layer.size, layer.size)
        return nn.max_pool(x, window, strides=window, padding="VALID")
    if isinstance(layer, GlobalAvgPool):
        return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
    if isinstance(layer, Flatten):
        # (H, W, C) order, as Keras flattens NHWC.
        return x.reshape((x.shape[0], -1))
    if isinstance(layer, Dense):
        out = nn.Dense(layer.units)(x)
        return nn.relu(out) if layer.activation == "relu" else out
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.rate, deterministic=not train)(x)
    if isinstance(layer, Embedding):
        return TokenEmbedding(layer)(x)
    if isinstance(layer, Encoder):
        return EncoderLayer(layer)(x)
    if isinstance(layer, LSTM):
        # The hidden state after the last position: outputs[:, t] is h_t.
        return nn.RNN(nn.OptimizedLSTMCell(layer.units))(x)[:, -1]
    if isinstance(layer, NCF):
        return NeuMF(layer)(x)
    raise TypeError(f"unsupported layer spec {layer!r}")


def conv(filters: int, kernel: int, stride: int, padding: int, use_bias: bool) -> nn.Conv:
    # Explicit symmetric padding: "SAME" with stride 2 would pad only after, unlike the spec.
    return nn.Conv(filters, (kernel, kernel), strides=(stride, stride), padding=((padding, padding),) * 2,
                   use_bias=use_bias)


def batch_norm(layer: ConvBN | Residual, train: bool) -> nn.BatchNorm:
    # Flax's momentum is the spec's (Keras') convention: moving = m * moving + (1 - m) * batch.
    return nn.BatchNorm(use_running_average=not train, momentum=layer.bn_momentum, epsilon=layer.bn_epsilon)


class ResidualBlock(nn.Module):
    """ResNet's basic block (architecture.Residual)."""

    layer: Residual

    @nn.compact
    def __call__(self, x, train: bool):
        layer = self.layer
        out = conv(layer.filters, 3, layer.stride, 1, use_bias=False)(x)
        out = nn.relu(batch_norm(layer, train)(out))
        out = conv(layer.filters, 3, 1, 1, use_bias=False)(out)
        out = batch_norm(layer, train)(out)
        shortcut = x
        if has_projection_shortcut(layer, x.shape[1:]):
            shortcut = batch_norm(layer, train)(conv(layer.filters, 1, layer.stride, 0, use_bias=False)(x))
        return nn.relu(out + shortcut)


class TokenEmbedding(nn.Module):
    """Token ids (N, L) to (N, L, dim), plus a learned vector per position if the spec asks."""

    layer: Embedding

    @nn.compact
    def __call__(self, ids):
        out = nn.Embed(self.layer.vocab, self.layer.dim, name="tokens")(ids)
        if self.layer.positions:
            length = ids.shape[1]
            out = out + nn.Embed(length, self.layer.dim, name="positions")(jnp.arange(length))
        return out


class EncoderLayer(nn.Module):
    """A post-norm Transformer encoder layer (architecture.Encoder): no mask, no dropout."""

    layer: Encoder

    @nn.compact
    def __call__(self, x):
        dim = x.shape[-1]
        attention = nn.MultiHeadDotProductAttention(
            num_heads=self.layer.heads, qkv_features=dim, out_features=dim, use_bias=True, deterministic=True)
        # Flax's default LayerNorm epsilon (1e-6) is not the spec's: set it.
        x = nn.LayerNorm(epsilon=self.layer.epsilon)(x + attention(x))
        hidden = nn.relu(nn.Dense(self.layer.ff)(x))
        return nn.LayerNorm(epsilon=self.layer.epsilon)(x + nn.Dense(dim)(hidden))


class NeuMF(nn.Module):
    """NeuMF's GMF and MLP towers on (user, item) index pairs, their outputs concatenated."""

    layer: NCF

    @nn.compact
    def __call__(self, pairs):
        layer = self.layer
        users, items = pairs[:, 0], pairs[:, 1]
        gmf = nn.Embed(layer.users, layer.gmf_dim, name="gmf_user")(users) * \
            nn.Embed(layer.items, layer.gmf_dim, name="gmf_item")(items)
        half = layer.mlp[0] // 2
        mlp = jnp.concatenate([nn.Embed(layer.users, half, name="mlp_user")(users),
                               nn.Embed(layer.items, half, name="mlp_item")(items)], axis=-1)
        for units in layer.mlp[1:]:
            mlp = nn.relu(nn.Dense(units)(mlp))
        return jnp.concatenate([gmf, mlp], axis=-1)


class Model:
    """A Linen module and its variables: what build_model returns and the trained model is.

    `variables` is Linen's whole collection dict: 'params' (trained by the optimizer) and, for models
    with batch norm, 'batch_stats' (the running statistics, updated by the training step).
    """

    def __init__(self, module: LinenModel, variables, input_shape: tuple[int, ...], input_dtype: str) -> None:
        self.module, self.variables = module, variables
        self.input_shape, self.input_dtype = tuple(input_shape), input_dtype

    def __call__(self, x) -> jax.Array:
        return self.module.apply(self.variables, x, train=False)

    @property
    def parameter_count(self) -> int:
        """Trainable parameters only: the running statistics of batch norm are not counted."""
        return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(self.variables["params"])))


def build_model(model_cfg, input_shape: tuple[int, ...], num_classes: int, seed: int | None = None) -> Model:
    """The model of `model_cfg` (config/model) for per-sample inputs of `input_shape`, initialised from
    `seed` (default: the configured seed)."""
    module = LinenModel(tuple(layer_specs(model_cfg, num_classes)))
    key = jax.random.key(configured_seed() if seed is None else seed)
    dtype = input_dtype(model_cfg)
    # Zeros are valid token and (user, item) ids too.
    variables = module.init(key, jnp.zeros((1, *input_shape), dtype), train=False)
    return Model(module, variables, input_shape, dtype)


# ---------------------------------------------------------------- training adapter


def make_optimizer(trainer_cfg) -> optax.GradientTransformation:
    if trainer_cfg.optimizer == "adam":
        return optax.adam(trainer_cfg.lr, eps=trainer_cfg.adam_epsilon)
    return optax.sgd(trainer_cfg.lr, momentum=trainer_cfg.momentum or None)


def split_variables(variables) -> tuple[dict, dict]:
    """(the 'params' collection, every other collection: the state the forward pass updates, e.g. 'batch_stats')."""
    state = {name: collection for name, collection in variables.items() if name != "params"}
    return variables["params"], state


def make_train_step(module: LinenModel, optimizer: optax.GradientTransformation):
    """The jit-compiled step: batch gathered from the epoch's arrays, loss, gradient, Optax update.

    `variables` are Linen's collections: the gradient and the Optax update touch 'params' only;
    the other collections (batch norm's 'batch_stats') are mutable in the training forward pass,
    which returns their new values. `carry` is (loss sum, correct count, step): the epoch's running
    sums and the step count, kept on the device, so that a step dispatches one computation and
    nothing else. The dropout key is the epoch's key folded with the step count.
    """

    def step(variables, opt_state, carry, inputs, labels, index, epoch_key):
        loss_sum, correct, step_count = carry
        x, y = inputs[index], labels[index]
        key = jax.random.fold_in(epoch_key, step_count)
        params, state = split_variables(variables)

        def loss_fn(p):
            logits, new_state = module.apply({"params": p, **state}, x, train=True, rngs={"dropout": key},
                                             mutable=list(state))
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, (logits, new_state)

        (loss, (logits, new_state)), gradients = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(gradients, opt_state, params)
        variables = {"params": optax.apply_updates(params, updates), **new_state}
        correct = correct + jnp.sum(jnp.argmax(logits, axis=1) == y)
        return variables, opt_state, (loss_sum + loss * y.shape[0], correct, step_count + 1)

    # Donated: the step's old variables and optimizer state are not kept beside the new ones.
    return jax.jit(step, donate_argnums=(0, 1, 2))


def make_forward(module: LinenModel):
    """The jit-compiled inference function (variables, x) -> logits: batch norm uses its running averages."""
    return jax.jit(lambda variables, x: module.apply(variables, x, train=False))


class Adapter:
    """The training loop's view of JAX: a jit-compiled step over device arrays."""

    framework = "jax"

    def __init__(self, model_cfg, input_shape, num_classes: int, trainer_cfg) -> None:
        self.trainer_cfg = trainer_cfg
        self.model = build_model(model_cfg, tuple(input_shape), num_classes)
        self.optimizer = make_optimizer(trainer_cfg)
        self.opt_state = self.optimizer.init(self.model.variables["params"])
        self.step_count = 0
        self.epoch_key = jax.random.key(0)
        self.step = make_train_step(self.model.module, self.optimizer)
        self.forward = make_forward(self.model.module)

    @property
    def parameter_count(self) -> int:
        return self.model.parameter_count

    @property
    def device(self) -> str:
        return device()

    def reseed(self, seed: int) -> None:
        # Only dropout draws random numbers in training: key (epoch seed) folded with the step count.
        self.epoch_key = jax.random.key(seed)

    def train_epoch(self, x: np.ndarray, y: np.ndarray, order: np.ndarray | None, should_stop) -> tuple[float, float]:
        """One epoch over x[order] (order None: x is already in training order); polls before each step."""
        inputs, labels = jax.device_put(x), jax.device_put(y.astype(np.int32))
        # int32: JAX computes in 32 bits unless told otherwise, and the index is an argument of the step.
        order = (np.arange(len(x)) if order is None else order).astype(np.int32)
        batch_size = self.trainer_cfg.batch_size
        carry = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), jnp.asarray(self.step_count, jnp.int32))
        variables, opt_state, seen = self.model.variables, self.opt_state, 0
        for index in epoch_batches(order, batch_size, jax.device_put):
            if should_stop():
                break
            variables, opt_state, carry = self.step(variables, opt_state, carry, inputs, labels, index,
                                                    self.epoch_key)
            _last_step[:] = [carry]
            self.step_count += 1
            seen += int(index.shape[0])
        self.model.variables, self.opt_state = variables, opt_state
        seen = max(seen, 1)
        # Reading the sums waits for the last step (JAX dispatches asynchronously).
        return float(carry[0]) / seen, int(carry[1]) / seen

    def predict_logits(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        return predict_batched(lambda batch: np.asarray(self.forward(self.model.variables, batch)), x, batch_size)

    def save_checkpoint(self, directory: Path) -> None:
        # The variables hold batch norm's running statistics beside the parameters: both resume.
        state = {"variables": self.model.variables, "opt_state": self.opt_state, "step_count": self.step_count}
        (Path(directory) / CHECKPOINT_FILE).write_bytes(flax.serialization.to_bytes(state))

    def load_checkpoint(self, directory: Path) -> None:
        template = {"variables": self.model.variables, "opt_state": self.opt_state, "step_count": 0}
        state = flax.serialization.from_bytes(template, (Path(directory) / CHECKPOINT_FILE).read_bytes())
        self.model.variables, self.opt_state = state["variables"], state["opt_state"]
        self.step_count = int(state["step_count"])

    def save_model(self, directory: Path) -> Path:
        """The model's variables (parameters and batch norm statistics) as Flax msgpack."""
        directory.mkdir(parents=True, exist_ok=True)
        path = Path(directory) / PARAMS_FILE
        path.write_bytes(flax.serialization.to_bytes(self.model.variables))
        return path


# ---------------------------------------------------------------- evaluation and export


def load_trained_model(model_dir: Path, model_cfg, input_shape, num_classes: int) -> Model:
    """The saved variables (parameters and batch norm statistics) restored into the architecture of `model_cfg`."""
    model = build_model(model_cfg, tuple(input_shape), num_classes, seed=0)
    model.variables = flax.serialization.from_bytes(model.variables, (Path(model_dir) / PARAMS_FILE).read_bytes())
    return model


def load_logits_fn(model_dir: Path, model_cfg, input_shape, num_classes: int):
    """The saved model as a function (input arrays, batch size) -> logits, and its device."""
    model = load_trained_model(model_dir, model_cfg, input_shape, num_classes)
    forward = jax.jit(lambda x: model(x))
    return lambda x, batch_size: predict_batched(lambda b: np.asarray(forward(b)), x, batch_size), device()


def exported_function(model: Model):
    """`jax.export` of the inference function, weights and batch norm statistics included, for any batch size."""
    batch, = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, *model.input_shape), jnp.dtype(model.input_dtype))
    return jax.export.export(jax.jit(lambda x: model(x)))(spec)


def export(model_dir: Path, target: Path, sample: np.ndarray, model_cfg, num_classes: int):
    """The serialised jax.export artifact, deserialised with `jax.export.deserialize` and called.

    Returns (path, load seconds, first-prediction seconds at batch 1, a batch predict function).
    """
    model = load_trained_model(model_dir, model_cfg, sample.shape[1:], num_classes)
    target.mkdir(parents=True, exist_ok=True)
    archive = target / EXPORT_FILE
    archive.write_bytes(exported_function(model).serialize())
    start = time.perf_counter()
    loaded = jax.export.deserialize(bytearray(archive.read_bytes()))
    load_time = time.perf_counter() - start

    def predict(batch: np.ndarray) -> np.ndarray:
        # The exported function takes exactly its input dtype (int32 ids, float32 images).
        return np.asarray(loaded.call(np.asarray(batch, dtype=model.input_dtype)))

    start = time.perf_counter()
    predict(sample[:1])
    first_prediction = time.perf_counter() - start
    return target, load_time, first_prediction, predict


# ---------------------------------------------------------------- bench hooks


def before_build(precision: str) -> str:
    """The JAX arm computes in float32 only (no mixed-precision policy written for it)."""
    if precision != "fp32":
        raise ConfigError(f"bench.precision={precision!r} is not available for framework 'jax': accepted is fp32")
    return "float32"


def mixed_precision_policy(bench_policy: str) -> str:
    return bench_policy


def apply_mode(adapter: Adapter, mode: str, precision: str) -> None:
    """One mode, `jit`: the adapter's step and forward are jit-compiled already."""


def sync() -> Callable[[], None]:
    """JAX dispatches asynchronously, on the CPU too: a clock read waits for the last step dispatched."""
    return wait_for_last_step


def wait_for_last_step() -> None:
    if _last_step:
        jax.block_until_ready(_last_step.pop())


def predictor(adapter: Adapter) -> Callable[[np.ndarray], np.ndarray]:
    """NumPy in, NumPy out through the jit-compiled forward; np.asarray waits for the result."""
    return lambda x: np.asarray(adapter.forward(adapter.model.variables, x))


# ---------------------------------------------------------------- MLflow


def mlflow_model(model: Model, example: np.ndarray):
    """(flavour, its keyword arguments, the model's output on the example).

    MLflow has no JAX flavour: the serialised jax.export function is logged as a
    pyfunc model, which needs jax (not Flax, not this package) to load.
    """
    import mlflow.pyfunc

    class ExportedJax(mlflow.pyfunc.PythonModel):
        def __init__(self, serialized: bytes, dtype: str) -> None:
            self.serialized, self.dtype = serialized, dtype

        def load_context(self, context) -> None:
            self.exported = jax.export.deserialize(bytearray(self.serialized))

        def predict(self, context, model_input, params=None):
            # The exported function takes exactly its input dtype (int32 ids, float32 images).
            return np.asarray(self.exported.call(np.asarray(model_input, dtype=self.dtype)))

    python_model = ExportedJax(bytes(exported_function(model).serialize()), model.input_dtype)
    return mlflow.pyfunc, {"python_model": python_model}, np.asarray(model(example))
