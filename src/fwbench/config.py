"""Compose the Hydra config tree, validate it, and derive the experiment grid and paths.

Snakemake (rules/common.smk), the entry points in scripts/ and the tests all go
through `compose_config`, so one invalid value fails the same way everywhere:
one line naming the key, the bad value and what is accepted.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from fwbench.bench.grid import INFER_BATCH_CHOICES, MODES, PRECISIONS, bench_frameworks, check_mode, check_settings
from fwbench.data.synthetic import INPUT_KINDS, sample_shape, split_counts
from fwbench.errors import ConfigError
from fwbench.models.architecture import NCF, Embedding, layer_shapes, layer_specs

OPTIMIZERS = ("adam", "sgd")
# The --config key that carries space-separated Hydra overrides.
OVERRIDES_KEY = "overrides"


def config_groups(config_dir: Path) -> list[str]:
    """The config groups: the folders of the config tree (`model=...`, `bench=...`)."""
    return sorted(p.name for p in Path(config_dir).iterdir() if p.is_dir())


def group_options(config_dir: Path, group: str) -> list[str]:
    """The choices Hydra accepts for a config group: the YAML files in its folder."""
    return sorted(p.stem for p in (Path(config_dir) / group).glob("*.yaml"))


def overrides_from_mapping(values: Mapping[str, object], prefix: str = "") -> list[str]:
    """Turn Snakemake's `--config` dictionary into Hydra override strings.

    Snakemake accepts only identifiers as --config keys (no dots), so Hydra's
    dotted overrides travel in one key: `--config overrides="trainer.epochs=2 seed=1"`.
    Plain keys (`experiment=smoke`) and nested YAML (`'trainer={epochs: 2}'`) work too.
    """
    overrides = []
    for key, value in values.items():
        if not prefix and key == OVERRIDES_KEY:
            overrides += shlex.split(str(value))
        elif isinstance(value, Mapping):
            overrides += overrides_from_mapping(value, prefix=f"{prefix}{key}.")
        elif isinstance(value, (list, tuple)):
            overrides.append(f"{prefix}{key}=[" + ",".join(str(v) for v in value) + "]")
        else:
            overrides.append(f"{prefix}{key}={value}")
    return overrides


def compose_config(config_dir: Path, overrides: Iterable[str] = ()) -> DictConfig:
    """Compose config.yaml with Hydra overrides, give the model its own dataset where the experiment
    names one (experiment.model_datasets), merge the per-model recipe, validate.

    `experiment.dataset` is set to the experiment's dataset (`dataset=`), which names the
    experiment's own files (bench, MLflow parent run) in every job, whatever dataset its model reads,
    and `experiment.synthetic` to whether that dataset is synthetic.
    """
    config_dir = Path(config_dir).resolve()
    overrides = list(overrides)
    _check_group_choices(config_dir, overrides)
    cfg = _compose(config_dir, overrides)
    experiment_dataset, experiment_synthetic = str(cfg.dataset.name), cfg.dataset.get("synthetic", False)
    model_datasets = _resolved_model_datasets(cfg, config_dir)
    own = model_datasets.get(str(cfg.model.name))
    if own is not None:
        cfg = _compose(config_dir, [*overrides, f"dataset={own['name']}"])
    OmegaConf.set_struct(cfg, False)
    cfg.experiment.dataset = experiment_dataset
    cfg.experiment.synthetic = experiment_synthetic
    cfg.experiment.model_datasets = model_datasets
    if own is not None:
        cfg.dataset.synthetic = own["synthetic"]
    OmegaConf.set_struct(cfg, True)
    cfg = _apply_model_recipe(cfg, _overridden_trainer_keys(overrides))
    cfg = _apply_model_bench_settings(cfg)
    validate_config(cfg, config_dir)
    return cfg


def _compose(config_dir: Path, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        try:
            return compose(config_name="config", overrides=overrides)
        except HydraException as error:
            top_level_keys = list(compose(config_name="config").keys())
            raise ConfigError(_one_line_hydra_error(error, overrides, top_level_keys)) from None


# ---------------------------------------------------------------- a model's own dataset


def _resolved_model_datasets(cfg: DictConfig, config_dir: Path) -> dict[str, dict]:
    """experiment.model_datasets checked, `synthetic: auto` resolved: {model: {name, synthetic (bool)}}.

    `auto` is real data where every file the dataset downloads is already at hand (its raw
    directory or a file:// mirror), synthetic elsewhere; the files do not change during a run
    (a synthetic dataset downloads nothing), so every job of a run resolves it alike.
    """
    resolved = {}
    for model, entry in (cfg.experiment.get("model_datasets") or {}).items():
        key = f"experiment.model_datasets.{model}"
        if not isinstance(entry, Mapping) or set(entry.keys()) != {"name", "synthetic"}:
            raise ConfigError(f"{key}={entry!r} is invalid: accepted is {{name: <dataset>, synthetic: true|false|auto}}")
        _check_choice(f"{key}.name", entry["name"], group_options(config_dir, "dataset"))
        synthetic = entry["synthetic"]
        if synthetic == "auto":
            dataset_cfg = OmegaConf.load(Path(config_dir) / "dataset" / f"{entry['name']}.yaml")
            synthetic = not data_at_hand(dataset_cfg, Path(cfg.paths.data) / str(entry["name"]) / "raw")
        if not isinstance(synthetic, bool):
            raise ConfigError(f"{key}.synthetic={entry['synthetic']!r} is invalid: accepted are true, false, auto")
        resolved[str(model)] = {"name": str(entry["name"]), "synthetic": synthetic}
    return resolved


def data_at_hand(dataset_cfg, raw: Path) -> bool:
    """Whether every file the dataset downloads is already in `raw` or in one of its file:// mirrors."""
    places = [Path(raw)] + [Path(str(mirror).removeprefix("file://")) for mirror in dataset_cfg.get("mirrors") or []
                            if str(mirror).startswith("file://")]
    files = [str(spec["name"]) for spec in (dataset_cfg.get("files") or {}).values()]
    return all(any((place / name).is_file() for place in places) for name in files)


def dataset_of(cfg: DictConfig, model: str) -> str:
    """The name of the dataset `model` reads in this experiment: its own (model_datasets) or the experiment's."""
    own = cfg.experiment.model_datasets.get(model)
    return str(own["name"]) if own is not None else str(cfg.experiment.dataset)


def is_synthetic(cfg: DictConfig, model: str) -> bool:
    """Whether `model` reads synthetic data here (its own dataset's flag, else the experiment's dataset's)."""
    own = cfg.experiment.model_datasets.get(model)
    return bool(own["synthetic"]) if own is not None else bool(cfg.experiment.synthetic)


def _overridden_trainer_keys(overrides: list[str]) -> set[str]:
    """The trainer keys set on the command line (`trainer.epochs=2`): they win over a per-model recipe."""
    keys = set()
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        if key.startswith("trainer."):
            keys.add(key.removeprefix("trainer."))
    return keys


def _check_group_choices(config_dir: Path, overrides: list[str]) -> None:
    """Reject `model=foo` before Hydra does, with a one-line message listing the choices."""
    groups = config_groups(config_dir)
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key in groups:
            options = group_options(config_dir, key)
            if value not in options:
                raise ConfigError(
                    f"unknown {key} '{value}' in override '{override}': accepted are {', '.join(options)}"
                )


def _one_line_hydra_error(error: Exception, overrides: list[str], top_level_keys: list[str]) -> str:
    message = " ".join(str(error).split())
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        if f"'{key}'" in message and ("not in struct" in message or "Could not override" in message):
            return (
                f"unknown override key '{key}' in '{override}': it is not in the config tree "
                f"(top-level keys: {', '.join(top_level_keys)})"
            )
    return f"invalid overrides {overrides}: {message}"


# The bench keys a model may set for its own processes (bench.model_settings): how long a process
# measures, never which processes the grid holds.
MODEL_BENCH_KEYS = ("windows", "warmup_steps", "latency_warmup_calls", "latency_calls", "inference_calls",
                    "infer_batch_size")


def _apply_model_bench_settings(cfg: DictConfig) -> DictConfig:
    """Merge bench.model_settings[<model>] over bench: a large model's processes measure fewer windows and
    calls (a ResNet-18 step takes seconds on a CPU), the same in every arm."""
    settings = (cfg.bench.get("model_settings") or {}).get(cfg.model.name)
    if settings:
        if not isinstance(settings, Mapping):
            raise ConfigError(f"bench.model_settings.{cfg.model.name}={settings!r} is invalid: accepted is a "
                              f"mapping of {', '.join(MODEL_BENCH_KEYS)}")
        unknown = sorted(set(settings.keys()) - set(MODEL_BENCH_KEYS))
        if unknown:
            raise ConfigError(f"unknown key '{unknown[0]}' in bench.model_settings.{cfg.model.name}: accepted are "
                              f"{', '.join(MODEL_BENCH_KEYS)}")
        OmegaConf.set_struct(cfg, False)
        cfg.bench = OmegaConf.merge(cfg.bench, settings)
        OmegaConf.set_struct(cfg, True)
    return cfg


def _apply_model_recipe(cfg: DictConfig, keep: set[str]) -> DictConfig:
    """Merge experiment.model_trainer[<model>] over trainer, except the keys in `keep`
    (given on the command line): the article trains each model its own way."""
    recipe = cfg.experiment.get("model_trainer", {}).get(cfg.model.name)
    if recipe:
        trainer_keys = set(cfg.trainer.keys())
        unknown = sorted(set(recipe.keys()) - trainer_keys)
        if unknown:
            raise ConfigError(
                f"unknown trainer key '{unknown[0]}' in experiment.model_trainer.{cfg.model.name}: "
                f"accepted are {', '.join(sorted(trainer_keys))}"
            )
        recipe = {key: value for key, value in recipe.items() if key not in keep}
        OmegaConf.set_struct(cfg, False)
        cfg.trainer = OmegaConf.merge(cfg.trainer, recipe)
        OmegaConf.set_struct(cfg, True)
    return cfg


def validate_config(cfg: DictConfig, config_dir: Path) -> None:
    """Check every value the pipeline relies on; raise ConfigError naming the first bad one."""
    _check_positive_number("trainer.lr", cfg.trainer.lr)
    for key in ("batch_size", "epochs", "eval_batch_size"):
        _check_positive_int(f"trainer.{key}", cfg.trainer[key])
    _check_choice("trainer.optimizer", cfg.trainer.optimizer, OPTIMIZERS)
    momentum = cfg.trainer.momentum
    if not isinstance(momentum, (int, float)) or isinstance(momentum, bool) or not 0 <= momentum < 1:
        raise ConfigError(f"trainer.momentum={momentum!r} is invalid: accepted is a number in [0, 1)")
    _check_positive_int("threads", cfg.threads)
    _check_non_negative_int("seed", cfg.seed)
    _check_positive_int("dataset.val_size", cfg.dataset.val_size)
    _check_targets(cfg.dataset)
    for key, group in (("frameworks", "framework"), ("models", "model")):
        values = cfg.experiment[key]
        if not values:
            raise ConfigError(f"experiment.{key} is empty: list at least one of {', '.join(group_options(config_dir, group))}")
        for value in values:
            _check_choice(f"experiment.{key}", value, group_options(config_dir, group))
    if not cfg.experiment.seeds:
        raise ConfigError("experiment.seeds is empty: list at least one non-negative integer seed")
    for seed in cfg.experiment.seeds:
        _check_non_negative_int("experiment.seeds", seed)
    for key in ("speed_margin", "memory_margin", "accuracy_margin", "confidence"):
        value = cfg.claims[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
            raise ConfigError(f"claims.{key}={value!r} is invalid: accepted is a number in (0, 1), e.g. 0.05")
    _check_positive_number("tracking.system_metrics_interval_s", cfg.tracking.system_metrics_interval_s)
    _check_bench(cfg, config_dir)
    layer_specs(cfg.model, cfg.dataset.num_classes)  # a bad layer in config/model fails here, not in a job
    _check_model_inputs(cfg, config_dir)
    synthetic = cfg.dataset.get("synthetic", False)
    if not isinstance(synthetic, bool):
        raise ConfigError(f"dataset.synthetic={synthetic!r} is invalid: accepted are true, false")
    if synthetic:
        split_counts(cfg.dataset)  # a dataset without its real split sizes cannot be imitated



def _check_targets(dataset_cfg: DictConfig) -> None:
    """The time-to-target lists: a bad one would fail only once a training run has ended."""
    for key in ("accuracy_targets", "hit_ratio_targets"):
        targets = dataset_cfg.get(key, [])
        if not isinstance(targets, Sequence) or isinstance(targets, str) or not all(
                isinstance(target, (int, float)) and not isinstance(target, bool) and 0 < target <= 1
                for target in targets):
            raise ConfigError(f"dataset.{key}={targets!r} is invalid: accepted is a list of numbers in (0, 1]")
    if "hit_ratio_targets" in dataset_cfg:
        _check_positive_int("dataset.hit_ratio_k", dataset_cfg.get("hit_ratio_k"))


def model_input_kind(config_dir: Path, name: str) -> str:
    """The input kind config/model/<name>.yaml takes (image when it does not say)."""
    return OmegaConf.load(Path(config_dir) / "model" / f"{name}.yaml").get("input", "image")


def _check_model_inputs(cfg: DictConfig, config_dir: Path) -> None:
    """Every model of the run takes its dataset's kind of input (images, token ids, user-item pairs)."""
    names = dict.fromkeys([cfg.model.name, *cfg.experiment.models, *(cfg.bench.get("models") or [])])
    for name in names:
        dataset_cfg = _dataset_config(cfg, config_dir, dataset_of(cfg, name))
        given = dataset_cfg.get("input", "image")
        _check_choice(f"dataset {dataset_cfg.name}'s input", given, INPUT_KINDS)
        model_input = model_input_kind(config_dir, name)
        if model_input != given:
            fitting = [option for option in group_options(config_dir, "model")
                       if model_input_kind(config_dir, option) == given]
            raise ConfigError(f"model {name!r} takes {model_input} input but dataset {dataset_cfg.name!r} gives "
                              f"{given}: accepted models for it are {', '.join(fitting) or 'none yet'} "
                              f"(or give the model a dataset of its own: experiment.model_datasets)")
        _check_model_fits_dataset(OmegaConf.load(Path(config_dir) / "model" / f"{name}.yaml"), dataset_cfg)


def _dataset_config(cfg: DictConfig, config_dir: Path, name: str) -> DictConfig:
    """The composed dataset (overrides applied) where it is this one, else its config file."""
    if name == cfg.dataset.name:
        return cfg.dataset
    return OmegaConf.load(Path(config_dir) / "dataset" / f"{name}.yaml")


# A model's size that must equal its dataset's: (layer kind, the layer's field, the dataset's key).
SIZES_FROM_DATASET = ((Embedding, "vocab", "vocab_size"), (NCF, "users", "num_users"), (NCF, "items", "num_items"))


def _check_model_fits_dataset(model_cfg: DictConfig, dataset_cfg: DictConfig) -> None:
    """Embedding tables as large as the dataset's ids, and every layer's output of positive size."""
    layers = layer_shapes(model_cfg, sample_shape(dataset_cfg), dataset_cfg.num_classes)
    for layer, _, out_shape in layers:
        for kind, field, key in SIZES_FROM_DATASET:
            if isinstance(layer, kind) and getattr(layer, field) != dataset_cfg[key]:
                raise ConfigError(f"model {model_cfg.name!r} has {field}={getattr(layer, field)} but dataset "
                                  f"{dataset_cfg.name!r} has {key}={dataset_cfg[key]}: accepted is "
                                  f"{field}={dataset_cfg[key]} (config/model/{model_cfg.name}.yaml)")
        if min(out_shape) < 1:
            raise ConfigError(f"model {model_cfg.name!r} cannot take the inputs of dataset {dataset_cfg.name!r}, shape "
                              f"{sample_shape(dataset_cfg)}: its {type(layer).__name__} layer's output would be "
                              f"{out_shape}; accepted are datasets with larger inputs")


def _check_bench(cfg: DictConfig, config_dir: Path) -> None:
    """The bench group: modes the frameworks have, counts > 0, models of the config tree."""
    bench = cfg.bench
    for framework, modes in bench.modes.items():
        for mode in modes:
            check_mode(framework, mode)
    listed = bench.get("frameworks")
    if listed is not None and not listed:
        raise ConfigError("bench.frameworks is empty: list at least one framework, or null for experiment.frameworks")
    for framework in listed or []:
        _check_choice("bench.frameworks", framework, group_options(config_dir, "framework"))
    for framework in bench_frameworks(cfg):
        if not bench.modes.get(framework):
            raise ConfigError(
                f"bench.modes.{framework} is empty or missing: list at least one of {', '.join(MODES[framework])}"
            )
    for key in ("replicates", "windows", "warmup_steps", "window_steps", "latency_warmup_calls", "latency_calls",
                "inference_calls", "window_steps_batch_size", "max_window_steps"):
        _check_positive_int(f"bench.{key}", bench[key])
    for key in ("replicate", "schedule_seed"):
        _check_non_negative_int(f"bench.{key}", bench[key])
    for model, entry in (bench.get("model_window_steps") or {}).items():
        _check_model_window_steps(f"bench.model_window_steps.{model}", entry)
    for model, entry in (bench.get("model_modes") or {}).items():
        _check_model_modes(f"bench.model_modes.{model}", entry)
    models = group_options(config_dir, "model")
    for model in bench.get("models") or []:
        if model not in models:
            raise ConfigError(f"bench.models has {model!r}: accepted are {', '.join(models)}")
    if bench.control_model not in models:
        raise ConfigError(f"bench.control_model={bench.control_model!r} is invalid: accepted are "
                          f"{', '.join(models)} (a model the bench measures, or it has no A/A control)")
    _check_choice("bench.precision", bench.precision, PRECISIONS)
    _check_choice("bench.infer_batch_size", bench.infer_batch_size, INFER_BATCH_CHOICES)
    check_settings(cfg, cores=None)  # the cores a job may have are the workflow's to check (rules/common.smk)
    for key in ("tf32", "deterministic"):
        if not isinstance(bench[key], bool):
            raise ConfigError(f"bench.{key}={bench[key]!r} is invalid: accepted are true, false")


def _check_model_window_steps(key: str, entry: object) -> None:
    """An integer > 0, or framework -> mode -> integer > 0 with modes the framework has."""
    if not isinstance(entry, Mapping):
        _check_positive_int(key, entry)
        return
    for framework, modes in entry.items():
        if framework not in MODES or not isinstance(modes, Mapping):
            raise ConfigError(
                f"{key}.{framework}={modes!r} is invalid: accepted is an integer > 0, or a mapping "
                f"from {' or '.join(MODES)} to modes and integers > 0"
            )
        for mode, steps in modes.items():
            check_mode(framework, mode)
            _check_positive_int(f"{key}.{framework}.{mode}", steps)


def _check_model_modes(key: str, entry: object) -> None:
    """framework -> a list of the framework's modes."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{key}={entry!r} is invalid: accepted is a mapping from {' or '.join(MODES)} to modes")
    for framework, modes in entry.items():
        if framework not in MODES or isinstance(modes, (str, Mapping)) or not modes:
            raise ConfigError(f"{key}.{framework}={modes!r} is invalid: accepted is a framework of "
                              f"{', '.join(MODES)} with a list of its modes")
        for mode in modes:
            check_mode(framework, mode)


def _check_positive_number(key: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{key}={value!r} is invalid: accepted is a number > 0")


def _check_positive_int(key: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{key}={value!r} is invalid: accepted is an integer > 0")


def _check_non_negative_int(key: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{key}={value!r} is invalid: accepted is an integer >= 0")


def _check_choice(key: str, value: object, accepted: Iterable[str]) -> None:
    accepted = list(accepted)
    if value not in accepted:
        raise ConfigError(f"{key}={value!r} is invalid: accepted are {', '.join(accepted)}")


def trained_models(cfg: DictConfig) -> list[str]:
    """experiment.models less those on synthetic data: benched, never trained (their accuracy would mean nothing)."""
    return [model for model in cfg.experiment.models if not is_synthetic(cfg, model)]


def experiment_grid(cfg: DictConfig) -> list[tuple[str, str, int]]:
    """Every (framework, model, seed) training job the experiment asks for; the report needs one at least."""
    if not trained_models(cfg):
        raise ConfigError(f"every model of experiment.models ({', '.join(cfg.experiment.models)}) reads synthetic "
                          "data, which is benched but never trained: accepted is at least one model on real data "
                          "(dataset.synthetic=false, or synthetic: false in experiment.model_datasets)")
    return [
        (framework, model, int(seed))
        for framework in cfg.experiment.frameworks
        for model in trained_models(cfg)
        for seed in cfg.experiment.seeds
    ]


def run_path(cfg: DictConfig, dataset: str, framework: str, model: str, seed) -> Path:
    """A training run's directory under the dataset it reads (placeholders work: Snakemake passes wildcards)."""
    return Path(cfg.paths.results) / cfg.experiment.name / dataset / "train" / framework / model / f"seed{seed}"


def run_dir(cfg: DictConfig, framework: str, model: str, seed: int) -> Path:
    """Where one training run writes its history, model and checkpoint."""
    return run_path(cfg, dataset_of(cfg, model), framework, model, seed)


# Where preprocess writes a dataset's arrays: the real data's, or synthetic arrays of its shapes.
PROCESSED, SYNTHETIC = "processed", "synthetic"


def raw_path(cfg: DictConfig, dataset: str, file: str) -> Path:
    """A raw file of a dataset (placeholders work: Snakemake passes wildcards)."""
    return Path(cfg.paths.data) / dataset / "raw" / file


def processed_path(cfg: DictConfig, dataset: str, kind: str) -> Path:
    """A dataset's preprocessed arrays, `kind` PROCESSED or SYNTHETIC (placeholders work)."""
    return Path(cfg.paths.data) / dataset / kind


def raw_dir(cfg: DictConfig) -> Path:
    return raw_path(cfg, cfg.dataset.name, "")


def processed_dir(cfg: DictConfig) -> Path:
    """The preprocessed arrays; synthetic ones (dataset.synthetic=true) apart, never mistaken for the real ones."""
    return processed_path(cfg, cfg.dataset.name, SYNTHETIC if cfg.dataset.get("synthetic") else PROCESSED)


def report_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.reports) / cfg.experiment.name

