"""What every entry point in scripts/ shares: Hydra overrides from argv, one-line errors.

An entry point is `run_app(app)` over a plain function `app(cfg)`, so the same
function is what tests call directly.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fwbench.config import compose_config
from fwbench.errors import FwbenchError, Interrupted

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 3

USAGE = """usage: {prog} [--cfg] [KEY=VALUE ...]

Hydra overrides, for example: framework=torch model=lenet seed=3 trainer.epochs=2
experiment=smoke. --cfg prints the resolved config and exits."""


def default_config_dir() -> Path:
    """config/ beside scripts/, as Hydra's config_path='../config' would find it."""
    return Path(sys.argv[0]).resolve().parent.parent / "config"


def run_app(app: Callable[[DictConfig], object], argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if "-h" in argv or "--help" in argv:
        print(USAGE.format(prog=Path(sys.argv[0]).name))
        return
    print_config = "--cfg" in argv
    overrides = [arg for arg in argv if arg != "--cfg"]
    try:
        cfg = compose_config(default_config_dir(), overrides)
        if print_config:
            print(OmegaConf.to_yaml(cfg, resolve=True))
            return
        app(cfg)
    except FwbenchError as error:
        print(f"fwbench: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except Interrupted as error:
        print(f"fwbench: {error}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    exit_without_teardown()


def exit_without_teardown() -> None:
    """Exit 0 at once, skipping the interpreter's teardown of every loaded module.

    Tearing down TensorFlow, torch and MLflow takes seconds per process, and the
    pipeline starts dozens (bench/README.md). A job has closed everything it
    wrote by the time its app returns; what is left in the logging handlers and
    the standard streams is flushed here first. Exit handlers still run: only
    module and object finalization is skipped.
    """
    import atexit

    atexit._run_exitfuncs()  # noqa: SLF001 - the exit handlers a normal exit would run
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
