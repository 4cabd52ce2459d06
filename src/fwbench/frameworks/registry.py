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
    export_format: str  # the deployable format its export() writes
    # The adapter's stop poll after step i comes after step i - poll_lag (fwbench.bench.timing.StepClock).
    poll_lag: int
    # Figure style: Okabe-Ito colour plus hatch, marker and line style, so frameworks differ without colour.
    style: dict = field(default_factory=dict)

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


def display_name(name: str) -> str:
    """How the report names a framework; an unknown name as it is."""
    return FRAMEWORKS[name].display_name if name in FRAMEWORKS else name
