"""The frameworks fwbench compares: what is known of each without importing it, and its module.

A framework is three things (docs/frameworks.md has the recipe):
- its module, fwbench.frameworks.<name>: everything that imports the
  framework (configure and read back, the training adapter, the bench hooks,
  export and reload, the MLflow flavour); imported by `load` only, so a job
  imports its own framework and no other;
- its FrameworkSpec below: what the DAG, the bench grid and the report need
  while the framework is not imported (modes, packages, names);
- its config file, config/framework/<name>.yaml (`framework=<name>`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

from fwbench.errors import ConfigError


@dataclass(frozen=True)
class FrameworkSpec:
    name: str  # the config name: config/framework/<name>.yaml and fwbench.frameworks.<name>
    display_name: str  # how the report names it
    modes: tuple[str, ...]  # bench execution modes the module's apply_mode knows
    default_mode: str  # the mode a user gets without asking
    packages: tuple[str, ...]  # distributions whose versions every result records
    export_format: str | None  # the deployable format its export() writes; None: no export of its own
    # The adapter's stop poll after step i comes after step i - poll_lag (fwbench.bench.timing.StepClock).
    poll_lag: int
    # Figure style: Okabe-Ito colour plus hatch, marker and line style, so frameworks differ without colour.
    style: dict = field(default_factory=dict)
    # The Keras backend the arm runs Keras on (None: no Keras). A process holds one Keras backend,
    # so arms with different ones never share a process (fwbench.frameworks.keras_backend).
    keras_backend: str | None = None

    @property
    def module(self) -> str:
        return f"{__package__}.{self.name}"


FRAMEWORKS = {
    spec.name: spec
    for spec in (
        FrameworkSpec(
            name="tf",
            display_name="TensorFlow",
            # eager = `run_eagerly=True`, graph = tf.function without XLA, xla = `jit_compile=True`;
            # Keras `fit` traces a tf.function by default.
            modes=("eager", "graph", "xla"),
            default_mode="graph",
            packages=("tensorflow", "tensorflow-cpu", "keras"),
            export_format="tf_saved_model",
            # Keras calls on_train_batch_end after the step it closes has run.
            poll_lag=0,
            style={"color": "#E69F00", "hatch": "//", "marker": "o", "linestyle": "-"},
            keras_backend="tensorflow",
        ),
        FrameworkSpec(
            name="tf_native",
            display_name="TensorFlow (native)",
            # eager = the step as Python, graph = tf.function, xla = tf.function(jit_compile=True);
            # a tf.Module model and a GradientTape step, no Keras.
            modes=("eager", "graph", "xla"),
            default_mode="graph",
            # TensorFlow imports Keras itself (tf.keras), so its version is recorded; the arm calls none of it.
            packages=("tensorflow", "tensorflow-cpu", "keras"),
            export_format="tf_saved_model",
            # Its loop polls before it runs step i, so the poll follows step i - 1.
            poll_lag=1,
            style={"color": "#D55E00", "hatch": "xx", "marker": "^", "linestyle": "-."},
        ),
        FrameworkSpec(
            name="torch",
            display_name="PyTorch",
            # eager = plain modules, compile = `torch.compile`.
            modes=("eager", "compile"),
            default_mode="eager",
            packages=("torch",),
            export_format="torch_export_pt2",
            # The torch loop polls before it runs step i, so the poll follows step i - 1.
            poll_lag=1,
            style={"color": "#0072B2", "hatch": "", "marker": "s", "linestyle": "--"},
        ),
        FrameworkSpec(
            name="jax",
            display_name="JAX (Flax)",
            # jit = the whole training step under `jax.jit` (Flax Linen model, Optax optimizer).
            modes=("jit",),
            default_mode="jit",
            packages=("jax", "jaxlib", "flax", "optax"),
            export_format="jax_export",
            # Its loop polls before it dispatches step i; the clock waits for step i - 1 (sync).
            poll_lag=1,
            style={"color": "#009E73", "hatch": "..", "marker": "D", "linestyle": ":"},
        ),
        FrameworkSpec(
            name="keras_torch",
            display_name="Keras on PyTorch",
            # eager = Keras' torch trainer as it runs by default; compile = jit_compile=True (torch.compile).
            modes=("eager", "compile"),
            default_mode="eager",
            packages=("torch", "keras"),
            # Keras' SavedModel export needs the TensorFlow or JAX backend; torch's format is the torch arm's.
            export_format=None,
            # Keras calls on_train_batch_end after the step it closes has run.
            poll_lag=0,
            style={"color": "#56B4E9", "hatch": "\\\\", "marker": "v", "linestyle": "--"},
            keras_backend="torch",
        ),
        FrameworkSpec(
            name="keras_jax",
            display_name="Keras on JAX",
            # jit = jit_compile=True, Keras' default on JAX (its train step under jax.jit).
            modes=("jit",),
            default_mode="jit",
            packages=("jax", "jaxlib", "keras"),
            # The deployable JAX format is the jax arm's jax.export.
            export_format=None,
            poll_lag=0,
            style={"color": "#CC79A7", "hatch": "++", "marker": "P", "linestyle": ":"},
            keras_backend="jax",
        ),
    )
}


def spec(name: str) -> FrameworkSpec:
    """The spec of a framework; one line naming the bad name and the accepted ones."""
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise ConfigError(f"unknown framework {name!r}: accepted are {', '.join(FRAMEWORKS)}") from None


def load(name: str) -> ModuleType:
    """The framework's module, imported now (seconds for TensorFlow or torch)."""
    return importlib.import_module(spec(name).module)


def sharing_a_process(names) -> list[str]:
    """The arms among `names` that can be imported into one process: those on no Keras backend or on TensorFlow's."""
    return [name for name in names if spec(name).keras_backend in (None, "tensorflow")]


def display_name(name: str) -> str:
    """How the report names a framework; an unknown name as it is."""
    return FRAMEWORKS[name].display_name if name in FRAMEWORKS else name
