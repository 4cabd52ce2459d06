"""Native TensorFlow 2, no Keras: a tf.Module model and a GradientTape training step.

What the `tf` arm does with Keras' `fit`, written with TensorFlow alone, so the
report can tell TensorFlow's cost from Keras': variables in a `tf.Module`,
the forward pass in `tf.nn` ops, the loss, the gradient and the optimizer
update in one step function. The bench modes choose how that step runs:
eager = a Python function, op by op; graph = `tf.function`; xla =
`tf.function(jit_compile=True)`. Inference runs through the same wrapper.

Parity with the Keras arm: the same layer spec, Keras' default initialisers
(Glorot uniform kernels, zero biases), the same loss (sparse softmax cross
entropy, mean over the batch), and Adam / SGD updates written as Keras
writes them. Dropout draws stateless masks from (epoch seed, step, layer), so
a resumed run repeats the masks an uninterrupted one would draw.

The trained model is a SavedModel with a `serve` signature (batch size free),
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
from fwbench.models.architecture import Conv, Dense, Dropout, Flatten, MaxPool, layer_shapes

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


def glorot_uniform(shape: tuple[int, ...], fan_in: int, fan_out: int, op_seed: int) -> tf.Tensor:
    """Keras' default kernel initialiser; op seed plus the global seed (configure) make it repeatable."""
    limit = float(np.sqrt(6.0 / (fan_in + fan_out)))
    return tf.random.uniform(shape, -limit, limit, seed=op_seed)


class NativeModel(tf.Module):
    """The model of one layer spec as TensorFlow variables and `tf.nn` ops, NHWC in, logits out."""

    def __init__(self, model_cfg, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__(name=str(model_cfg.name))
        self.input_shape = tuple(int(size) for size in input_shape)
        self.layers = []  # (spec, kernel, bias): kernel and bias None for layers without weights
        for index, (layer, in_shape, _) in enumerate(layer_shapes(model_cfg, self.input_shape, num_classes)):
            self.layers.append((layer, *self._weights(layer, in_shape, index)))
        self.weights = [w for _, kernel, bias in self.layers if kernel is not None for w in (kernel, bias)]

    @staticmethod
    def _weights(layer, in_shape: tuple[int, ...], index: int):
        if isinstance(layer, Conv):
            shape = (layer.kernel, layer.kernel, in_shape[-1], layer.filters)
            fan_in, fan_out = layer.kernel * layer.kernel * in_shape[-1], layer.kernel * layer.kernel * layer.filters
            units = layer.filters
        elif isinstance(layer, Dense):
            shape, fan_in, fan_out, units = (in_shape[0], layer.units), in_shape[0], layer.units, layer.units
        else:
            return None, None
        kernel = tf.Variable(glorot_uniform(shape, fan_in, fan_out, op_seed=index), name=f"kernel_{index}")
        return kernel, tf.Variable(tf.zeros((units,)), name=f"bias_{index}")

    @property
    def parameter_count(self) -> int:
        return int(sum(np.prod(w.shape) for w in self.weights))

    def __call__(self, x: tf.Tensor, training: bool = False, dropout_seed: tf.Tensor | None = None) -> tf.Tensor:
        for index, (layer, kernel, bias) in enumerate(self.layers):
            x = self._apply(layer, kernel, bias, x, training, dropout_seed, index)
        return x

    @staticmethod
    def _apply(layer, kernel, bias, x, training, dropout_seed, index):
        if isinstance(layer, Conv):
            return tf.nn.relu(tf.nn.conv2d(x, kernel, strides=1, padding="VALID") + bias)
        if isinstance(layer, MaxPool):
            return tf.nn.max_pool2d(x, layer.size, strides=layer.size, padding="VALID")
        if isinstance(layer, Flatten):
            # (H, W, C) order, as Keras flattens NHWC.
            return tf.reshape(x, (tf.shape(x)[0], -1))
        if isinstance(layer, Dense):
            out = tf.matmul(x, kernel) + bias
            return tf.nn.relu(out) if layer.activation == "relu" else out
        if isinstance(layer, Dropout):
            if not training:
                return x
            seed = tf.stack([dropout_seed[0], dropout_seed[1] * DROPOUT_SEED_STRIDE + index])
            return tf.nn.experimental.stateless_dropout(x, layer.rate, seed=seed)
        raise TypeError(f"unsupported layer spec {layer!r}")


def build_model(model_cfg, input_shape: tuple[int, ...], num_classes: int) -> NativeModel:
    """The model of `model_cfg` (config/model) for NHWC inputs of `input_shape`, returning logits."""
    return NativeModel(model_cfg, input_shape, num_classes)


# ---------------------------------------------------------------- optimizers


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
        for gradient, weight, m, v in zip(gradients, weights, self.m, self.v):
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
        for gradient, weight, velocity in zip(gradients, weights, self.velocity):
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
    """What is saved: the model's variables and one inference function, `serve` (NHWC float32, any batch size).

    `serve` is also the restored object's `__call__`, so the loaded SavedModel is callable as
    `loaded(x)` (what MLflow's TensorFlow flavour calls) as well as `loaded.serve(x)`.
    """

    def __init__(self, model: NativeModel) -> None:
        super().__init__(name=f"{model.name}_serving")
        self.model = model
        spec = tf.TensorSpec((None, *model.input_shape), tf.float32, name="inputs")
        self.serve = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        self.__call__ = self.serve


def save_serving_model(model: NativeModel, path: Path) -> None:
    """A SavedModel whose `serve` function (and default signature) takes NHWC float32 arrays."""
    shutil.rmtree(path, ignore_errors=True)
    serving = ServingModule(model)
    tf.saved_model.save(serving, str(path), signatures={"serving_default": serving.serve})


# ---------------------------------------------------------------- evaluation and export


def load_logits_fn(model_dir: Path, model_cfg, input_shape, num_classes: int):
    """The saved model as a function (NHWC arrays, batch size) -> logits, and its device."""
    loaded = tf.saved_model.load(str(Path(model_dir) / MODEL_DIR))
    return lambda x, batch_size: predict_batched(lambda b: loaded.serve(tf.constant(b)).numpy(), x, batch_size), device()


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
    output = serving.serve(tf.constant(example)).numpy()
    return mlflow.tensorflow, {"model": serving}, output
