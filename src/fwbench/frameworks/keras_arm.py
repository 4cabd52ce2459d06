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

from fwbench.models.architecture import Conv, Dense, Dropout, Flatten, Layer, MaxPool, layer_specs

MODEL_FILE = "model.keras"
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}


# ---------------------------------------------------------------- model


def keras_layer(layer: Layer) -> keras.layers.Layer:
    """Translate one spec into the equivalent Keras layer."""
    if isinstance(layer, Conv):
        return keras.layers.Conv2D(layer.filters, layer.kernel, padding="valid", activation="relu")
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


def build_model(model_cfg, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """The model of `model_cfg` (config/model) for NHWC inputs of `input_shape`, returning logits (the loss applies the softmax).

    Weights use Keras' default initialisers, deliberately not matched to PyTorch's.
    """
    layers = [keras.Input(shape=tuple(input_shape))]
    layers += [keras_layer(layer) for layer in layer_specs(model_cfg, num_classes)]
    return keras.Sequential(layers, name=str(model_cfg.name))


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
        return int(self.model.count_params())

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
        inputs = np.zeros((1, *self.model.input_shape[1:]), dtype=np.float32)
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
