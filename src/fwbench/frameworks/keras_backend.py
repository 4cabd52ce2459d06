"""Which backend Keras 3 runs on: chosen per process, before Keras is imported.

Keras reads KERAS_BACKEND once, when it is first imported; a process can hold
one Keras backend only. The Keras arms (tf, keras_torch, keras_jax) call
`import_keras_for`, so a job runs on its own arm's backend
(its FrameworkSpec's keras_backend) whatever the environment says.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

from fwbench.errors import ConfigError
from fwbench.runtime import imports_refused

BACKEND_VARIABLE = "KERAS_BACKEND"


def import_keras_for(arm: str) -> ModuleType:
    """Keras, imported on the arm's backend; one line if Keras is already loaded on another.

    Keras' Orbax callback imports JAX whenever it is installed (0.75 s and its
    memory, measured here): an arm on another backend imports Keras with JAX
    refused, which Keras takes as JAX being absent.
    """
    from fwbench.frameworks.registry import spec

    backend = spec(arm).keras_backend
    loaded = sys.modules.get("keras")
    if loaded is not None:
        current = loaded.backend.backend()
        if current != backend:
            raise ConfigError(
                f"Keras is already imported on backend {current!r} in this process: the arm on backend "
                f"{backend!r} needs a process of its own (the pipeline runs each job in one)"
            )
        return loaded
    os.environ[BACKEND_VARIABLE] = backend
    refused = () if backend == "jax" else ("jax",)
    with imports_refused(refused):
        return importlib.import_module("keras")
