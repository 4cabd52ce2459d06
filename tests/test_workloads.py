"""Experiments over several workloads: a model may read a dataset of its own (experiment.model_datasets),
real or synthetic, and be benched in modes of its own (bench.model_modes)."""

from __future__ import annotations

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
