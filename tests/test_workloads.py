"""Experiments over several workloads: a model may read a dataset of its own (experiment.model_datasets),
real or synthetic, and be benched in modes of its own (bench.model_modes)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import CONFIG_DIR
from fwbench.bench.grid import bench_grid
from fwbench.config import compose_config, dataset_of, experiment_grid, processed_dir, run_dir, trained_models
from fwbench.data.download import download_dataset
from fwbench.errors import ConfigError

# Two models of their own datasets beside the experiment's image models.
OWN_DATASETS = ["experiment.models=[mlp,lstm,ncf]", "bench.models=null",
                "+experiment.model_datasets={lstm: {name: imdb, synthetic: true}, "
                "ncf: {name: movielens_100k, synthetic: false}}"]


def compose(*overrides: str):
    return compose_config(CONFIG_DIR, [*OWN_DATASETS, *overrides])


def test_a_job_of_a_model_with_a_dataset_of_its_own_composes_that_dataset():
    job = compose("model=lstm")
    assert (job.dataset.name, job.dataset.synthetic) == ("imdb", True)
    assert job.experiment.dataset == "fashion_mnist"  # the experiment's: its bench files, its MLflow parent run
    assert processed_dir(job).parts[-2:] == ("imdb", "synthetic")
    assert compose("model=ncf").dataset.name == "movielens_100k"
    assert compose("model=mlp").dataset.name == "fashion_mnist"


def test_run_directories_are_under_the_dataset_each_model_reads():
    cfg = compose()
    assert dataset_of(cfg, "lstm") == "imdb" and dataset_of(cfg, "mlp") == "fashion_mnist"
    assert run_dir(cfg, "tf", "ncf", 0).parts[-5] == "movielens_100k"
    assert run_dir(compose("model=ncf"), "tf", "ncf", 0) == run_dir(cfg, "tf", "ncf", 0)


def test_a_model_on_synthetic_data_is_benched_but_never_trained():
    cfg = compose()
    assert trained_models(cfg) == ["mlp", "ncf"]
    assert {model for _, model, _ in experiment_grid(cfg)} == {"mlp", "ncf"}
    assert "lstm" in {variant[1] for variant in bench_grid(cfg)}


def test_synthetic_auto_is_real_data_only_where_every_file_is_at_hand(tmp_path):
    auto = ["experiment.models=[mlp,lstm]", "bench.models=null", "+experiment.model_datasets={lstm: {name: imdb, synthetic: auto}}",
            f"paths.data={tmp_path}", "model=lstm"]
    assert compose_config(CONFIG_DIR, auto).dataset.synthetic is True
    raw = tmp_path / "imdb" / "raw"
    raw.mkdir(parents=True)
    (raw / "aclImdb_v1.tar.gz").write_bytes(b"at hand; verified when preprocess reads it")
    cfg = compose_config(CONFIG_DIR, auto)
    assert cfg.dataset.synthetic is False
    assert trained_models(cfg) == ["mlp", "lstm"]


@pytest.mark.parametrize("entry, message", [
    ("{lstm: imdb}", "experiment.model_datasets.lstm='imdb' is invalid: accepted is {name: <dataset>, "
                     "synthetic: true|false|auto}"),
    ("{lstm: {name: imbd, synthetic: true}}", "experiment.model_datasets.lstm.name='imbd' is invalid: accepted are "
                                              "cifar10, digits"),
    ("{lstm: {name: imdb, synthetic: maybe}}", "experiment.model_datasets.lstm.synthetic='maybe' is invalid: "
                                               "accepted are true, false, auto"),
    ("{lstm: {name: cifar10, synthetic: true}}", "model 'lstm' takes tokens input but dataset 'cifar10' gives image"),
])
def test_a_bad_model_dataset_is_one_line_naming_what_is_accepted(entry, message):
    with pytest.raises(ConfigError) as caught:
        compose_config(CONFIG_DIR, ["experiment.models=[mlp,lstm]", "bench.models=null", f"+experiment.model_datasets={entry}"])
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_model_of_another_input_without_a_dataset_of_its_own_is_refused():
    with pytest.raises(ConfigError, match="model 'lstm' takes tokens input but dataset 'fashion_mnist' gives image"):
        compose_config(CONFIG_DIR, ["experiment.models=[mlp,lstm]", "bench.models=null"])


def test_model_modes_bench_a_model_in_its_own_modes_only():
    cfg = compose("+bench.model_modes={lstm: {tf: [graph], torch: [eager]}}", "bench.frameworks=[tf,torch,jax]")
    lstm = {(framework, mode) for framework, model, mode, *_ in bench_grid(cfg) if model == "lstm"}
    assert lstm == {("tf", "graph"), ("torch", "eager")}
    mlp = {(framework, mode) for framework, model, mode, *_ in bench_grid(cfg) if model == "mlp"}
    assert mlp == {("tf", "eager"), ("tf", "graph"), ("tf", "xla"), ("torch", "eager"), ("torch", "compile"),
                   ("jax", "jit")}


@pytest.mark.parametrize("entry, message", [
    ("{lstm: [graph]}", "bench.model_modes.lstm=['graph'] is invalid: accepted is a mapping from"),
    ("{lstm: {tf: [jit]}}", "'jit'"),
    ("{lstm: {mxnet: [eager]}}", "bench.model_modes.lstm.mxnet=['eager'] is invalid"),
])
def test_bad_model_modes_are_one_line(entry, message):
    with pytest.raises(ConfigError) as caught:
        compose(f"+bench.model_modes={entry}")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_download_job_fetches_the_one_file_it_names_and_refuses_another(tmp_path):
    cfg = compose_config(CONFIG_DIR, [])
    with pytest.raises(ConfigError, match="download_file='x.gz' is not a file of dataset 'fashion_mnist': "
                                          "accepted are train-images-idx3-ubyte.gz"):
        download_dataset(cfg.dataset, tmp_path, only="x.gz")
    assert list(tmp_path.iterdir()) == []


def test_model_settings_change_how_long_that_models_processes_measure_and_nothing_else():
    settings = "+bench.model_settings={lstm: {windows: 2, infer_batch_size: train}}"
    lstm, mlp = compose(settings, "model=lstm"), compose(settings, "model=mlp")
    assert (lstm.bench.windows, lstm.bench.infer_batch_size) == (2, "train")
    assert (mlp.bench.windows, mlp.bench.infer_batch_size) == (5, "eval")
    assert bench_grid(lstm) == bench_grid(mlp)


@pytest.mark.parametrize("entry, message", [
    ("{lstm: {replicates: 1}}", "unknown key 'replicates' in bench.model_settings.lstm: accepted are windows, "
                                "warmup_steps"),
    ("{lstm: {windows: 0}}", "bench.windows=0 is invalid: accepted is an integer > 0"),
])
def test_bad_model_settings_are_one_line(entry, message):
    with pytest.raises(ConfigError) as caught:
        compose(f"+bench.model_settings={entry}", "model=lstm")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_run_whose_every_model_reads_synthetic_data_is_refused_before_any_job(tmp_path):
    from conftest import redirected_paths, run_snakemake

    overrides = " ".join([*redirected_paths(tmp_path), "dataset=cifar10", "dataset.synthetic=true",
                          "bench.models=null", "experiment.models=[convnet]"])
    result = run_snakemake("-n", "--config", f"overrides={overrides}", cwd=tmp_path)
    assert result.returncode != 0
    assert "every model of experiment.models (convnet) reads synthetic data" in result.stdout + result.stderr
    with pytest.raises(ConfigError, match="benched but never trained"):
        experiment_grid(compose_config(CONFIG_DIR, ["dataset=cifar10", "dataset.synthetic=true", "model=convnet"]))


# ---------------------------------------------------------------- time to a hit-ratio target


class RankingAdapter:
    """A stand-in adapter over (user, item) rows: after epoch e, users 0 .. e-1 rank their held-out item
    (item 0) first and the others last, so the hit ratio @ 1 grows by one user per epoch."""

    def __init__(self) -> None:
        self.epochs = 0

    def reseed(self, seed: int) -> None:
        pass

    def train_epoch(self, x, y, order, should_stop) -> tuple[float, float]:
        self.epochs += 1
        return 1.0, 0.5

    def predict_logits(self, x, batch_size: int):
        held_out, learned = x[:, 1] == 0, x[:, 0] < self.epochs
        interacted = np.where(held_out, np.where(learned, 1.0, -1.0), 0.0)
        return np.stack([np.zeros(len(x)), interacted], axis=1).astype(np.float32)

    def save_checkpoint(self, directory) -> None:
        pass


def test_a_ranking_split_is_scored_after_every_epoch_and_gives_the_time_to_each_hit_ratio_target(tmp_path):
    from omegaconf import OmegaConf

    from fwbench.training.loop import RankingCheck, fit, time_to_target

    users, candidates = 4, 3
    ranking = np.array([(user, item) for user in range(users) for item in range(candidates)], dtype=np.int32)
    data = {split: (ranking[:4], np.zeros(4, np.int64)) for split in ("train", "val")}
    history = fit(RankingAdapter(), data, OmegaConf.create({"epochs": 3, "eval_batch_size": 8}), 0, tmp_path,
                  RankingCheck(ranking, candidates, k=1))

    assert [record.hit_ratio for record in history] == [0.25, 0.5, 0.75]
    # Which epoch's recorded training time is taken (the second's), whatever that time is: no speed asserted.
    assert time_to_target(history, "hit_ratio", [0.5, 1.0]) == {"0.5": history[1].elapsed_s, "1": None}
    without = fit(RankingAdapter(), data, OmegaConf.create({"epochs": 1, "eval_batch_size": 8}), 0, tmp_path / "b")
    assert without[0].hit_ratio is None and time_to_target(without, "hit_ratio", [0.5]) == {"0.5": None}


def test_the_report_tells_a_target_not_reached_from_a_target_the_dataset_does_not_set():
    from fwbench.reporting.build import time_to_accuracy_section
    from fwbench.reporting.tables import training_table

    def run(model: str, seed: int, accuracy: dict, hit_ratio: dict | None = None) -> dict:
        history = {"history": [{"epoch_time_s": 1.0}], "final": {"val_accuracy": 0.9}, "parameter_count": 1,
                   "device": "cpu", "time_to_accuracy_s": accuracy}
        if hit_ratio is not None:
            history.update(hit_ratio_k=10, time_to_hit_ratio_s=hit_ratio)
        metrics = {"test_accuracy": 0.9, "test_loss": 0.3, "test_hit_ratio_at_10": 0.7}
        return {"framework": "torch", "model": model, "seed": seed, "history": history, "metrics": metrics}

    training = training_table([run("mlp", 0, {"0.85": 4.0}), run("mlp", 1, {"0.85": 6.0}),
                               run("ncf", 0, {"0.85": None}, {"0.65": 12.0}), run("ncf", 1, {"0.85": None},
                                                                                {"0.65": None})])
    table = time_to_accuracy_section(training, ["mlp", "ncf"]).tables[0]

    assert table.header == ["model", "framework", "val acc ≥ 0.85", "test HR@10 ≥ 0.65"]
    assert table.rows == [["mlp", "PyTorch", "5.0 s (2/2 seeds)", "no target"],
                          ["ncf", "PyTorch", "not reached (0/2)", "12.0 s (1/2 seeds)"]]
    assert training["test_hit_ratio_at_10"].tolist() == [0.7] * 4


def movielens_like_archive(path, users: int, items: int, per_user: int, rng):
    """ml-100k.zip with the real counts and `per_user` ratings per user, most of them on a few popular items
    (so that a model learns to rank within two epochs); returns the archive and its number of ratings."""
    from test_datasets import ratings_file, write_zip

    popularity = 1.0 / np.arange(1, items + 1) ** 1.5
    rows = []
    for user in range(1, users + 1):
        rated = rng.choice(items, per_user, replace=False, p=popularity / popularity.sum()) + 1
        rows += [(user, item, 4, stamp) for stamp, item in enumerate(rated.tolist())]
    return write_zip(path, {"ml-100k/u.data": ratings_file(rows)}), len(rows)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["tf", "torch"])
def test_ncf_trains_on_movielens_with_its_hit_ratio_after_every_epoch_and_evaluates(framework, tmp_path):
    """The pipeline's steps on a generated ml-100k.zip: download, preprocess, train, evaluate."""
    import json

    from conftest import redirected_paths, run_script
    from test_datasets import sha256_of

    served, ratings = movielens_like_archive(tmp_path / "mirror" / "ml-100k.zip", 943, 1682, 12,
                                             np.random.default_rng(0))
    sha256 = sha256_of(served)
    overrides = [*redirected_paths(tmp_path), "experiment.models=[ncf]", "bench.models=null", "model=ncf",
                 "dataset=movielens_100k", f"dataset.mirrors=[{served.parent.as_uri()}/]",
                 f"dataset.files.archive.sha256={sha256}", f"dataset.ratings_count={ratings}",
                 "dataset.hit_ratio_targets=[0.5,1.0]", "trainer.epochs=2", "trainer.batch_size=256",
                 f"framework={framework}", "seed=0", "threads=1"]
    for step in ("download", "preprocess", "train", "evaluate"):
        result = run_script(step, *overrides)
        assert result.returncode == 0, f"{step}: {result.stderr[-3000:]}"

    run = run_dir(compose_config(CONFIG_DIR, overrides), framework, "ncf", 0)
    history = json.loads((run / "history.json").read_text())
    hit_ratios = [epoch["hit_ratio"] for epoch in history["history"]]
    assert len(hit_ratios) == 2 and all(0 <= value <= 1 for value in hit_ratios)
    # The recorded training time of the first epoch at HR@10 >= 0.5, whatever it is: no speed asserted.
    reached = next(epoch["elapsed_s"] for epoch in history["history"] if epoch["hit_ratio"] >= 0.5)
    assert history["hit_ratio_k"] == 10
    assert history["time_to_hit_ratio_s"] == {"0.5": reached, "1": None}
    metrics = json.loads((run / "metrics.json").read_text())
    # Evaluate reloads the saved model and scores the same split: the same users are hits (a float tie
    # broken the other way may move one).
    assert abs(metrics["test_hit_ratio_at_10"] - hit_ratios[-1]) <= 1 / 943
