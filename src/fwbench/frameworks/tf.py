"""TensorFlow with Keras 3: everything fwbench does that imports TensorFlow or Keras.

- runtime: threads, seeds, TF32, determinism, and reading them back;
- the model builder over the shared spec (fwbench.models.architecture);
- the training adapter: Keras `fit` on in-memory arrays;
- evaluation and export: the saved .keras model, a SavedModel reloaded with
  `tf.saved_model.load` (what TF Serving and the TFLite converters take);
- the bench hooks: modes, precision, sync, inference, device memory;
- the MLflow flavour.

A bench mode only flips the two switches Keras reads when it builds its train
and predict functions (at the first `fit`/`predict_on_batch`): eager =
`run_eagerly=True`; graph = a tf.function without XLA; xla =
`jit_compile=True`. Both are set explicitly: Keras' default
`jit_compile="auto"` means XLA on a GPU and no XLA on a CPU, so "the default"
is not one mode.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import tensorflow as tf

from fwbench.bench.timing import no_sync
from fwbench.errors import ConfigError
from fwbench.models.architecture import Conv, Dense, Dropout, Flatten, Layer, MaxPool, layer_specs
from fwbench.units import BYTES_PER_MIB

MODEL_FILE = "model.keras"
GPU_DEVICE = "GPU:0"
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}


# ---------------------------------------------------------------- runtime


def configure(threads: int, seed: int, tf32: bool, deterministic: bool) -> None:
    """Threads, seeds, determinism and TF32; before TensorFlow runs its first op (it fixes its thread pools then)."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    enable_memory_growth()
    tf.config.experimental.enable_tensor_float_32_execution(tf32)
    keras.utils.set_random_seed(seed)
    set_determinism(deterministic)


def set_determinism(enabled: bool) -> None:
    """TensorFlow op determinism on or off (Keras never XLA-compiles while it is on)."""
    # TensorFlow has a public switch on; the switch off is only in this module.
    from tensorflow.python.framework import config as tf_config

    if enabled:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def enable_memory_growth() -> None:
    """Let TensorFlow allocate GPU memory as it needs it instead of reserving it all.

    Without it TF grabs nearly the whole GPU at start-up and its peak allocation
    says nothing about the model. Must run before TF initializes the GPU.
    """
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def applied_threads() -> dict[str, int]:
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def version() -> str:
    return f"tensorflow {tf.__version__}, keras {keras.__version__}"


def gpu_build() -> dict[str, str]:
    """GPU model, and the CUDA and cuDNN versions TensorFlow was built with; empty strings where none."""
    build = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU")
    model = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "") if gpus else ""
    return {"gpu_model": str(model), "cuda_version": str(build.get("cuda_version", "") or ""),
            "cudnn_version": str(build.get("cudnn_version", "") or "")}


def tf32_flags() -> dict[str, bool]:
    tf32 = bool(tf.config.experimental.tensor_float_32_execution_enabled())
    # One switch covers matmul and convolution in TensorFlow.
    return {"tf32_matmul": tf32, "tf32_conv": tf32}


def determinism_enabled() -> bool:
    # TensorFlow exposes the setter publicly, the getter only here.
    from tensorflow.python.framework import config as tf_config

    return bool(tf_config.is_op_determinism_enabled())


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def device() -> str:
    """Where TensorFlow places the model's ops: the first GPU when it sees one."""
    return "cuda" if tf.config.list_logical_devices("GPU") else "cpu"


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


class _StopWhen(keras.callbacks.Callback):
    """Ends `fit` after the current batch once `should_stop()` turns true (SIGTERM)."""

    def __init__(self, should_stop) -> None:
        super().__init__()
        self.should_stop = should_stop

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.should_stop():
            self.model.stop_training = True


class Adapter:
    """The training loop's view of Keras: `fit` on in-memory arrays."""

    framework = "tf"

    def __init__(self, model_cfg, input_shape, num_classes: int, trainer_cfg) -> None:
        self.trainer_cfg = trainer_cfg
        self.model = compile_model(build_model(model_cfg, tuple(input_shape), num_classes), trainer_cfg)

    @property
    def parameter_count(self) -> int:
        return int(self.model.count_params())

    @property
    def device(self) -> str:
        return device()

    def reseed(self, seed: int) -> None:
        keras.utils.set_random_seed(seed)
        # Dropout draws from its layer's own SeedGenerator, whose state neither
        # set_random_seed nor the .keras archive restores: restart it from the
        # epoch seed, so an epoch's masks depend on (seed, epoch) alone, as in torch.
        for index, layer in enumerate(self.model.layers):
            generator = getattr(layer, "seed_generator", None)
            if generator is not None:
                layer_seed = np.random.SeedSequence([seed, index]).generate_state(1)[0]
                generator.state.assign(np.array([layer_seed, 0], dtype=generator.state.dtype))

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

    def save_model(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = Path(directory) / MODEL_FILE
        self.model.save(path)
        return path


# ---------------------------------------------------------------- evaluation and export


def load_logits_fn(model_dir: Path, model_cfg, input_shape, num_classes: int):
    """The saved model as a function (NHWC arrays, batch size) -> logits, and its device.

    The .keras archive holds the architecture: the model config and shapes are not needed.
    """
    model = keras.models.load_model(Path(model_dir) / MODEL_FILE)
    return lambda x, batch_size: np.asarray(model.predict(x, batch_size=batch_size, verbose=0)), device()


def export(model_dir: Path, target: Path, sample: np.ndarray, model_cfg, num_classes: int):
    """A SavedModel via Keras 3's `model.export`, reloaded with `tf.saved_model.load`.

    Returns (path, load seconds, first-prediction seconds at batch 1, a batch predict function).
    """
    model = keras.models.load_model(Path(model_dir) / MODEL_FILE)
    model.export(str(target), format="tf_saved_model", verbose=False)
    start = time.perf_counter()
    loaded = tf.saved_model.load(str(target))
    load_time = time.perf_counter() - start
    start = time.perf_counter()
    np.asarray(loaded.serve(tf.constant(sample[:1])))
    first_prediction = time.perf_counter() - start
    return target, load_time, first_prediction, lambda batch: np.asarray(loaded.serve(tf.constant(batch)))


# ---------------------------------------------------------------- bench hooks


def prepare_process() -> None:
    """Before any op: memory growth on, so the peak allocation means something."""
    enable_memory_growth()


def before_build(precision: str) -> str:
    """Keras reads the dtype policy when layers are built: set it first. Returns the policy."""
    policy = POLICIES[precision]
    keras.mixed_precision.set_global_policy(policy)
    return policy


def mixed_precision_policy(bench_policy: str) -> str:
    """The dtype policy in force, read back from Keras (before_build set it)."""
    return keras.mixed_precision.global_policy().name


def apply_mode(adapter, mode: str, precision: str) -> None:
    """Precision was set before the build (before_build); only the mode switches remain."""
    model = adapter.model
    model.run_eagerly = mode == "eager"
    model.jit_compile = mode == "xla"
    # Keras quietly falls back to no XLA (a layer without XLA support, or op determinism on): refuse instead.
    if bool(model.jit_compile) != (mode == "xla"):
        raise ConfigError(
            f"bench mode 'xla' is not available for model {model.name!r} here: Keras will not XLA-compile it "
            f"(with bench.deterministic=true it never does): accepted is bench.deterministic=false"
        )


def sync() -> Callable[[], None]:
    """On a GPU, wait for queued device work before a clock read."""
    return tf.test.experimental.sync_devices if has_gpu() else no_sync


def predictor(adapter) -> Callable[[np.ndarray], np.ndarray]:
    """NumPy in, NumPy out, through the model's predict function in the job's mode.

    `predict_on_batch` is Keras' call for one batch; it returns NumPy, so the
    result is on the host (synchronized) when it returns.
    """
    return adapter.model.predict_on_batch


def reset_device_peak() -> None:
    if has_gpu():
        tf.config.experimental.reset_memory_stats(GPU_DEVICE)


def device_peak_mb() -> float:
    if not has_gpu():
        return math.nan
    return tf.config.experimental.get_memory_info(GPU_DEVICE)["peak"] / BYTES_PER_MIB


def compile_cache_note() -> str:
    """XLA keeps no compilation cache across processes by default: nothing to report."""
    return ""


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
