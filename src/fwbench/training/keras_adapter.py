"""TensorFlow/Keras side of the training loop: Keras 3 `fit` on in-memory arrays."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from fwbench.models.keras_models import build_keras_model

MODEL_FILE = "model.keras"


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


class KerasAdapter:
    framework = "tf"

    def __init__(self, model_name: str, input_shape, num_classes: int, trainer_cfg) -> None:
        self.trainer_cfg = trainer_cfg
        self.model = compile_model(build_keras_model(model_name, tuple(input_shape), num_classes), trainer_cfg)

    @property
    def parameter_count(self) -> int:
        return int(self.model.count_params())

    @property
    def device(self) -> str:
        return keras_device()

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


def keras_device() -> str:
    """Where TensorFlow places the model's ops: the first GPU when it sees one."""
    import tensorflow as tf

    return "cuda" if tf.config.list_logical_devices("GPU") else "cpu"


def load_keras_logits_fn(model_dir: Path):
    """The saved model as a function from NHWC arrays to logits (for evaluate), and its device."""
    model = keras.models.load_model(Path(model_dir) / MODEL_FILE)
    return lambda x, batch_size: np.asarray(model.predict(x, batch_size=batch_size, verbose=0)), keras_device()
