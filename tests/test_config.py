"""Invalid configs fail while the DAG is built, with one line naming key, value and what is accepted."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import CONFIG_DIR, PROJECT_ROOT, project_env, run_snakemake
from fwbench.bench.grid import bench_frameworks, bench_only_frameworks, bench_schedule
from fwbench.config import compose_config, experiment_grid, run_dir
from fwbench.errors import ConfigError

BAD_OVERRIDES = [
    (["model=resnet"], "unknown model 'resnet'", "convnet, lenet, linear, lstm, mlp, ncf, resnet18, transformer"),
    (["dataset=cifar"], "unknown dataset 'cifar'", "cifar10, digits, fashion_mnist, imdb, mnist, movielens_100k"),
    (["framework=mxnet"], "unknown framework 'mxnet'", "jax, keras_jax, keras_torch, tf, tf_native, torch"),
    (["experiment=huge"], "unknown experiment 'huge'", "article, backends, default, scale, smoke"),
    (["trainer.lr=0"], "trainer.lr=0", "a number > 0"),
    (["trainer.lr=-0.1"], "trainer.lr=-0.1", "a number > 0"),
    (["trainer.batch_size=0"], "trainer.batch_size=0", "an integer > 0"),
    (["trainer.batch_size=-8"], "trainer.batch_size=-8", "an integer > 0"),
    (["trainer.epochs=0"], "trainer.epochs=0", "an integer > 0"),
    (["trainer.epochs=2.5"], "trainer.epochs=2.5", "an integer > 0"),
    (["trainer.optimizer=rmsprop"], "trainer.optimizer='rmsprop'", "adam, sgd"),
    (["experiment.models=[mlp,vgg]"], "experiment.models='vgg'", "convnet, lenet, linear, lstm, mlp, ncf, resnet18, transformer"),
    (["experiment.frameworks=[tf,mxnet]"], "experiment.frameworks='mxnet'", "jax, keras_jax, keras_torch, tf, tf_native, torch"),
    (["bench.frameworks=[tf,mxnet]"], "bench.frameworks='mxnet'", "jax, keras_jax, keras_torch, tf, tf_native, torch"),
    (["bench.frameworks=[]"], "bench.frameworks is empty", "null for experiment.frameworks"),
    (["colour=blue"], "unknown override key 'colour'", "top-level keys"),
    (["trainer.lrate=0.1"], "unknown override key 'trainer.lrate'", "top-level keys"),
    (["tracking.system_metrics_interval_s=0"], "tracking.system_metrics_interval_s=0", "a number > 0"),
    (["dataset.accuracy_targets=0.85"], "dataset.accuracy_targets=0.85", "a list of numbers in (0, 1]"),
    (["dataset.accuracy_targets=[0.85,85]"], "dataset.accuracy_targets=[0.85, 85]", "a list of numbers in (0, 1]"),
    (["dataset=movielens_100k", "dataset.hit_ratio_targets=[high]"], "dataset.hit_ratio_targets=['high']", "a list of numbers in (0, 1]"),
    (["dataset=movielens_100k", "dataset.hit_ratio_k=0"], "dataset.hit_ratio_k=0", "an integer > 0"),
]


@pytest.mark.parametrize("overrides, names, accepted", BAD_OVERRIDES)
def test_invalid_config_is_one_clear_line(overrides, names, accepted):
    with pytest.raises(ConfigError) as caught:
        compose_config(CONFIG_DIR, overrides)
    message = str(caught.value)
    assert "\n" not in message
    assert names in message
    assert accepted in message


def test_an_unknown_key_lists_the_top_level_keys_of_the_config_tree_itself():
    """Not a hand-typed list that goes stale when a group is added."""
    with pytest.raises(ConfigError) as caught:
        compose_config(CONFIG_DIR, ["colour=blue"])
    listed = str(caught.value).split("top-level keys: ", 1)[1].rstrip(")").split(", ")
    assert listed == list(compose_config(CONFIG_DIR).keys())
    assert {"bench", "tracking", "claims"} <= set(listed)


def test_default_experiment_grid_is_4_models_x_2_frameworks_x_3_seeds():
    cfg = compose_config(CONFIG_DIR)
    grid = experiment_grid(cfg)
    assert len(grid) == 24
    assert {framework for framework, _, _ in grid} == {"tf", "torch"}
    assert {model for _, model, _ in grid} == {"linear", "mlp", "lenet", "convnet"}
    assert cfg.dataset.name == "fashion_mnist"


def test_arms_experiment_is_the_default_grid_with_four_arms():
    default, arms = compose_config(CONFIG_DIR), compose_config(CONFIG_DIR, ["experiment=arms"])
    assert list(arms.experiment.frameworks) == ["tf", "tf_native", "torch", "jax"]
    assert len(experiment_grid(arms)) == 48
    # The same bench as default's: default benches the four arms and trains tf and torch.
    assert bench_frameworks(arms) == bench_frameworks(default) == list(arms.experiment.frameworks)
    assert bench_only_frameworks(default) == ["tf_native", "jax"] and bench_only_frameworks(arms) == []
    assert bench_schedule(arms) == bench_schedule(default)
    # Everything but the name and the arms is the default's: the same models, seeds and recipes.
    for key in ("models", "seeds", "model_trainer"):
        assert arms.experiment[key] == default.experiment[key]


def test_article_recipes_apply_per_model():
    lenet = compose_config(CONFIG_DIR, ["experiment=article", "model=lenet"])
    assert (lenet.trainer.optimizer, lenet.trainer.lr, lenet.trainer.momentum) == ("sgd", 0.001, 0.9)
    assert (lenet.trainer.epochs, lenet.trainer.batch_size) == (10, 32)
    mlp = compose_config(CONFIG_DIR, ["experiment=article", "model=mlp"])
    assert (mlp.trainer.optimizer, mlp.trainer.epochs, mlp.trainer.batch_size) == ("adam", 5, 32)
    linear = compose_config(CONFIG_DIR, ["experiment=article", "model=linear"])
    assert (linear.trainer.optimizer, linear.trainer.lr) == ("sgd", 0.1)
    assert mlp.dataset.name == "mnist"
    on_fashion = compose_config(CONFIG_DIR, ["experiment=article", "dataset=fashion_mnist"])
    assert on_fashion.dataset.name == "fashion_mnist"


def test_a_command_line_trainer_key_wins_over_the_model_recipe():
    recipe = compose_config(CONFIG_DIR, ["model=convnet"])
    convnet = recipe.experiment.model_trainer.convnet
    assert (recipe.trainer.lr, recipe.trainer.epochs) == (convnet.lr, convnet.epochs) == (0.004, 2)
    overridden = compose_config(CONFIG_DIR, ["model=convnet", "trainer.epochs=1"])
    assert (overridden.trainer.lr, overridden.trainer.epochs) == (0.004, 1)


def test_run_dir_matches_for_pipeline_and_hand_runs():
    by_hand = compose_config(CONFIG_DIR, ["framework=torch", "model=lenet", "seed=3"])
    assert run_dir(by_hand, "torch", "lenet", 3) == run_dir(by_hand, by_hand.framework.name, by_hand.model.name, by_hand.seed)
    assert str(run_dir(by_hand, "torch", "lenet", 3)).endswith("default/fashion_mnist/train/torch/lenet/seed3")


@pytest.mark.parametrize("bad, expected", [
    ("overrides=trainer.lr=-1", "trainer.lr=-1 is invalid: accepted is a number > 0"),
    ("trainer={batch_size: 0}", "trainer.batch_size=0 is invalid: accepted is an integer > 0"),
    ("model=resnet", "unknown model 'resnet'"),
    ("colour=blue", "unknown override key 'colour'"),
])
def test_snakemake_rejects_bad_config_before_any_job(tmp_path, bad, expected):
    result = run_snakemake("-n", "--config", bad, cwd=tmp_path)
    assert result.returncode != 0
    error_lines = [line for line in (result.stdout + result.stderr).splitlines() if "fwbench: invalid config" in line]
    assert len(error_lines) == 1, result.stdout + result.stderr
    assert expected in error_lines[0]
    assert not (tmp_path / "results").exists()


def test_snakemake_config_keys_become_hydra_overrides():
    from fwbench.config import overrides_from_mapping

    overrides = overrides_from_mapping(
        {"experiment": "smoke", "overrides": "trainer.epochs=2 seed=1", "trainer": {"lr": "0.1"}}
    )
    assert overrides == ["experiment=smoke", "trainer.epochs=2", "seed=1", "trainer.lr=0.1"]


FAST_EXIT_APP = """
import atexit, logging, sys
from pathlib import Path
from fwbench.cli import run_app

def app(cfg):
    atexit.register(lambda: marker.write_text("exit handler ran"))
    logging.getLogger("app").info("last log line of the app")
    sys.stdout.write("unflushed stdout, no newline")

marker = Path(sys.argv[1])
sys.argv = ["scripts/app.py"]  # run_app finds config/ beside scripts/
run_app(app, [])
"""


def test_a_finished_job_exits_0_with_its_output_flushed_and_exit_handlers_run(tmp_path):
    """run_app skips the interpreter's teardown (seconds per TF/torch job), not the job's output."""
    marker = tmp_path / "atexit.txt"
    env = project_env()
    env.pop("PYTHONUNBUFFERED", None)  # buffered, as stdout into a job log is
    result = subprocess.run(
        [sys.executable, "-c", FAST_EXIT_APP, str(marker)],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "unflushed stdout, no newline"
    assert "last log line of the app" in result.stderr
    assert marker.read_text() == "exit handler ran"
