"""The framework boundary: everything framework-specific is in fwbench.frameworks, found through its registry."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import pytest

from conftest import CONFIG_DIR, PROJECT_ROOT
from fwbench.errors import ConfigError
from fwbench.frameworks import registry
from fwbench.frameworks.registry import FRAMEWORKS

SOURCE = PROJECT_ROOT / "src" / "fwbench"
FRAMEWORKS_DIR = SOURCE / "frameworks"
FRAMEWORK_PACKAGES = ("tensorflow", "keras", "torch", "jax", "flax", "optax")
NAME_COMPARISON = re.compile(r"""[!=]= ["'](%s)["']""" % "|".join(FRAMEWORKS))
# Modules of frameworks/ that are not a framework: shared helpers and the registry.
HELPER_MODULES = {"__init__", "registry", "batches", "tf_runtime", "jax_runtime", "keras_arm", "keras_backend"}
# What every framework module offers (docs/frameworks.md lists what each does).
INTERFACE = (
    "configure", "applied_threads", "version", "gpu_build", "tf32_flags", "determinism_enabled", "has_gpu",
    "build_model", "Adapter", "load_logits_fn", "export", "prepare_process", "before_build", "apply_mode",
    "mixed_precision_policy", "sync", "predictor", "reset_device_peak", "device_peak_mb", "compile_cache_note",
    "mlflow_model",
)


def code_files():
    """The package's modules outside frameworks/, the scripts and the rules."""
    package = [p for p in SOURCE.rglob("*.py") if FRAMEWORKS_DIR not in p.parents]
    return package + sorted((PROJECT_ROOT / "scripts").glob("*.py")) + sorted((PROJECT_ROOT / "rules").glob("*.smk"))


def module_level_imports(tree: ast.Module):
    """Top-level names imported by statements that run at import time (not inside a function or class)."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            pending += [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]


def imported_modules(tree: ast.Module):
    """Every fwbench module imported anywhere in a file, functions included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_no_framework_name_is_compared_outside_the_framework_modules():
    found = [f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()}"
             for path in code_files()
             for number, line in enumerate(path.read_text().splitlines(), start=1)
             if NAME_COMPARISON.search(line)]
    assert found == []


def test_no_module_outside_frameworks_imports_a_framework_at_module_level():
    found = [f"{path.relative_to(PROJECT_ROOT)} imports {name}"
             for path in code_files() if path.suffix == ".py"
             for name in module_level_imports(ast.parse(path.read_text()))
             if name in FRAMEWORK_PACKAGES]
    assert found == []


@pytest.mark.parametrize("importer, imported", [("export.py", "fwbench.training"), ("training", "fwbench.export")])
def test_export_and_training_do_not_import_each_other(importer, imported):
    target = SOURCE / importer
    paths = [target] if target.is_file() else sorted(target.rglob("*.py"))
    found = [f"{path.name} imports {name}" for path in paths for name in imported_modules(ast.parse(path.read_text()))
             if name == imported or name.startswith(imported + ".")]
    assert found == []


def test_every_framework_has_one_config_file_and_one_module():
    configs = {path.stem for path in (CONFIG_DIR / "framework").glob("*.yaml")}
    modules = {path.stem for path in FRAMEWORKS_DIR.glob("*.py")} - HELPER_MODULES
    assert configs == set(FRAMEWORKS) == modules
    assert all(spec.default_mode in spec.modes for spec in FRAMEWORKS.values())


def test_an_unknown_framework_is_one_line_naming_the_accepted_ones():
    with pytest.raises(ConfigError, match=r"^unknown framework 'mxnet': accepted are tf, tf_native, torch, jax, "
                                          r"keras_torch, keras_jax$"):
        registry.spec("mxnet")


# Each module in a process of its own: it must offer the interface and load no other framework.
INTERFACE_PROBE = """
import json, sys
from fwbench.frameworks import registry
module = registry.load(sys.argv[1])
print(json.dumps({"missing": [name for name in sys.argv[2].split(",") if not hasattr(module, name)],
                  "loaded": sorted(name for name in sys.argv[3].split(",") if name in sys.modules)}))
"""


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_a_framework_module_offers_the_interface_and_imports_no_other_framework(framework):
    others = {name for other in FRAMEWORKS if other != framework for name in FRAMEWORKS[other].packages}
    others = sorted(others & set(FRAMEWORK_PACKAGES) - set(FRAMEWORKS[framework].packages))
    # An arm without a deployable format of its own has no export.
    interface = [name for name in INTERFACE if name != "export" or FRAMEWORKS[framework].export_format]
    result = subprocess.run([sys.executable, "-c", INTERFACE_PROBE, framework, ",".join(interface), ",".join(others)],
                            capture_output=True, text=True, check=True, timeout=300)
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe == {"missing": [], "loaded": []}


DAG_IMPORTS_PROBE = """
import json, sys
import fwbench.config, fwbench.bench.grid, fwbench.bench.outputs, fwbench.tracking.runs
print(json.dumps(sorted(name for name in sys.argv[1].split(",") if name in sys.modules)))
"""


def test_what_the_snakefile_imports_loads_no_framework_and_no_pandas():
    """rules/common.smk imports these to build the DAG: every Snakemake start pays for what they load."""
    heavy = (*FRAMEWORK_PACKAGES, "pandas", "mlflow")
    result = subprocess.run([sys.executable, "-c", DAG_IMPORTS_PROBE, ",".join(heavy)],
                            capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
