"""The same seed run twice on the CPU gives identical metrics in each framework.

TensorFlow (both arms) runs with op determinism on (tf.config.experimental.enable_op_determinism),
PyTorch with torch.use_deterministic_algorithms(True), JAX as XLA runs on the CPU (no
switch needed there); dropout masks come from seeded keys in every arm; the sample order of
every epoch is a function of (seed, epoch). The convnet is used because its
dropout is the RNG-dependent case.
"""

from __future__ import annotations

import json

import pytest

from conftest import redirected_paths, run_script
from fwbench.frameworks.registry import FRAMEWORKS


def train_history(base, results_name: str, framework: str, seed: int) -> list[dict]:
    paths = [p for p in redirected_paths(base) if not p.startswith("paths.results")]
    results = base / results_name
    run = run_script(
        "train", "experiment=smoke", f"framework={framework}", "model=convnet", f"seed={seed}",
        "trainer.epochs=2", f"paths.results={results}", *paths,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    history_file = next(results.rglob("history.json"))
    return json.loads(history_file.read_text())["history"]


def metrics_only(history: list[dict]) -> list[tuple]:
    return [(e["train_loss"], e["train_accuracy"], e["val_loss"], e["val_accuracy"]) for e in history]


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_same_seed_gives_identical_metrics(smoke_data, framework):
    first = train_history(smoke_data, f"det-{framework}-a", framework, seed=0)
    second = train_history(smoke_data, f"det-{framework}-b", framework, seed=0)
    assert metrics_only(first) == metrics_only(second)
    other_seed = train_history(smoke_data, f"det-{framework}-c", framework, seed=1)
    assert metrics_only(other_seed) != metrics_only(first)
