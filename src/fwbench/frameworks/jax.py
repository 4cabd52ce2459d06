"""JAX with Flax Linen and Optax: everything the `jax` arm does that imports JAX.

- runtime: JAX's (fwbench.frameworks.jax_runtime: the CPUs XLA may use, the
  seed its PRNG keys derive from, precision, reading them back);
- the model: a Flax Linen module over the shared layer spec (Linen, not NNX:
  a pure `apply(params, x)` is what `jax.jit` and `jax.export` take as is);
- the training adapter: one `jax.jit`-compiled step (loss, gradient, Optax
  update) over arrays put on the device once per epoch;
- evaluation and export: the parameters as Flax msgpack beside the model's
  config; `jax.export` serialises the inference function with its weights and
  a symbolic batch size (StableHLO, loadable without Flax or this package);
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
from fwbench.models.architecture import Conv, Dense, Dropout, Flatten, MaxPool, layer_specs

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
    """The layer spec as a Linen module: NHWC in, logits out."""

    layers: tuple

    @nn.compact
    def __call__(self, x, train: bool = False):
        for layer in self.layers:
            x = linen_layer(layer, x, train)
        return x


def linen_layer(layer, x, train: bool):
    if isinstance(layer, Conv):
        return nn.relu(nn.Conv(layer.filters, (layer.kernel, layer.kernel), padding="VALID")(x))
    if isinstance(layer, MaxPool):
        window = (layer.size, layer.size)
        return nn.max_pool(x, window, strides=window, padding="VALID")
    if isinstance(layer, Flatten):
        # (H, W, C) order, as Keras flattens NHWC.
        return x.reshape((x.shape[0], -1))
    if isinstance(layer, Dense):
        out = nn.Dense(layer.units)(x)
        return nn.relu(out) if layer.activation == "relu" else out
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.rate, deterministic=not train)(x)
    raise TypeError(f"unsupported layer spec {layer!r}")


class Model:
    """A Linen module and its parameters: what build_model returns and the trained model is."""

    def __init__(self, module: LinenModel, params, input_shape: tuple[int, ...]) -> None:
        self.module, self.params, self.input_shape = module, params, tuple(input_shape)

    def __call__(self, x) -> jax.Array:
        return self.module.apply(self.params, x, train=False)

    @property
    def parameter_count(self) -> int:
        return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(self.params)))


def build_model(model_cfg, input_shape: tuple[int, ...], num_classes: int, seed: int | None = None) -> Model:
    """The model of `model_cfg` (config/model) for NHWC inputs of `input_shape`, initialised from `seed`
    (default: the configured seed)."""
    module = LinenModel(tuple(layer_specs(model_cfg, num_classes)))
    key = jax.random.key(configured_seed() if seed is None else seed)
    params = module.init(key, jnp.zeros((1, *input_shape), jnp.float32), train=False)
    return Model(module, params, input_shape)


# ---------------------------------------------------------------- training adapter


def make_optimizer(trainer_cfg) -> optax.GradientTransformation:
    if trainer_cfg.optimizer == "adam":
        return optax.adam(trainer_cfg.lr, eps=trainer_cfg.adam_epsilon)
    return optax.sgd(trainer_cfg.lr, momentum=trainer_cfg.momentum or None)


def make_train_step(module: LinenModel, optimizer: optax.GradientTransformation):
    """The jit-compiled step: batch gathered from the epoch's arrays, loss, gradient, Optax update.

    `carry` is (loss sum, correct count, step): the epoch's running sums and the step count, kept on
    the device, so that a step dispatches one computation and nothing else. The dropout key is the
    epoch's key folded with the step count.
    """

    def step(params, opt_state, carry, inputs, labels, index, epoch_key):
        loss_sum, correct, step_count = carry
        x, y = inputs[index], labels[index]
        key = jax.random.fold_in(epoch_key, step_count)

        def loss_fn(p):
            logits = module.apply(p, x, train=True, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

        (loss, logits), gradients = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(gradients, opt_state, params)
        params = optax.apply_updates(params, updates)
        correct = correct + jnp.sum(jnp.argmax(logits, axis=1) == y)
        return params, opt_state, (loss_sum + loss * y.shape[0], correct, step_count + 1)

    # Donated: the step's old parameters and optimizer state are not kept beside the new ones.
    return jax.jit(step, donate_argnums=(0, 1, 2))


class Adapter:
    """The training loop's view of JAX: a jit-compiled step over device arrays."""

    framework = "jax"

    def __init__(self, model_cfg, input_shape, num_classes: int, trainer_cfg) -> None:
        self.trainer_cfg = trainer_cfg
        self.model = build_model(model_cfg, tuple(input_shape), num_classes)
        self.optimizer = make_optimizer(trainer_cfg)
        self.opt_state = self.optimizer.init(self.model.params)
        self.step_count = 0
        self.epoch_key = jax.random.key(0)
        self.step = make_train_step(self.model.module, self.optimizer)
        self.forward = jax.jit(lambda params, x: self.model.module.apply(params, x, train=False))

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
        params, opt_state, seen = self.model.params, self.opt_state, 0
        for index in epoch_batches(order, batch_size, jax.device_put):
            if should_stop():
                break
            params, opt_state, carry = self.step(params, opt_state, carry, inputs, labels, index, self.epoch_key)
            _last_step[:] = [carry]
            self.step_count += 1
            seen += int(index.shape[0])
        self.model.params, self.opt_state = params, opt_state
        seen = max(seen, 1)
        # Reading the sums waits for the last step (JAX dispatches asynchronously).
        return float(carry[0]) / seen, int(carry[1]) / seen

    def predict_logits(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        return predict_batched(lambda batch: np.asarray(self.forward(self.model.params, batch)), x, batch_size)

    def save_checkpoint(self, directory: Path) -> None:
        state = {"params": self.model.params, "opt_state": self.opt_state, "step_count": self.step_count}
        (Path(directory) / CHECKPOINT_FILE).write_bytes(flax.serialization.to_bytes(state))

    def load_checkpoint(self, directory: Path) -> None:
        template = {"params": self.model.params, "opt_state": self.opt_state, "step_count": 0}
        state = flax.serialization.from_bytes(template, (Path(directory) / CHECKPOINT_FILE).read_bytes())
        self.model.params, self.opt_state, self.step_count = state["params"], state["opt_state"], int(state["step_count"])

    def save_model(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = Path(directory) / PARAMS_FILE
        path.write_bytes(flax.serialization.to_bytes(self.model.params))
        return path


# ---------------------------------------------------------------- evaluation and export


def load_trained_model(model_dir: Path, model_cfg, input_shape, num_classes: int) -> Model:
    """The saved parameters restored into the architecture of `model_cfg`."""
    model = build_model(model_cfg, tuple(input_shape), num_classes, seed=0)
    model.params = flax.serialization.from_bytes(model.params, (Path(model_dir) / PARAMS_FILE).read_bytes())
    return model


def load_logits_fn(model_dir: Path, model_cfg, input_shape, num_classes: int):
    """The saved model as a function (NHWC arrays, batch size) -> logits, and its device."""
    model = load_trained_model(model_dir, model_cfg, input_shape, num_classes)
    forward = jax.jit(lambda x: model(x))
    return lambda x, batch_size: predict_batched(lambda b: np.asarray(forward(b)), x, batch_size), device()


def exported_function(model: Model):
    """`jax.export` of the inference function, weights included, for any batch size."""
    batch, = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, *model.input_shape), jnp.float32)
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
    start = time.perf_counter()
    np.asarray(loaded.call(sample[:1]))
    first_prediction = time.perf_counter() - start
    return target, load_time, first_prediction, lambda batch: np.asarray(loaded.call(batch))


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
    return lambda x: np.asarray(adapter.forward(adapter.model.params, x))


# ---------------------------------------------------------------- MLflow


def mlflow_model(model: Model, example: np.ndarray):
    """(flavour, its keyword arguments, the model's output on the example).

    MLflow has no JAX flavour: the serialised jax.export function is logged as a
    pyfunc model, which needs jax (not Flax, not this package) to load.
    """
    import mlflow.pyfunc

    class ExportedJax(mlflow.pyfunc.PythonModel):
        def __init__(self, serialized: bytes) -> None:
            self.serialized = serialized

        def load_context(self, context) -> None:
            self.exported = jax.export.deserialize(bytearray(self.serialized))

        def predict(self, context, model_input, params=None):
            return np.asarray(self.exported.call(np.asarray(model_input, dtype=np.float32)))

    python_model = ExportedJax(bytes(exported_function(model).serialize()))
    return mlflow.pyfunc, {"python_model": python_model}, np.asarray(model(example))
