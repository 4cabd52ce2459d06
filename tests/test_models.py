"""Every framework's models must be the same architecture, built from one spec."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import CONFIG_DIR, PROJECT_ROOT, model_config
from fwbench.config import compose_config, group_options
from fwbench.errors import ConfigError
from fwbench.models.architecture import flatten_size, flops_per_sample, layer_specs
from fwbench.frameworks import registry
from fwbench.frameworks.registry import FRAMEWORKS

MODEL_NAMES = group_options(CONFIG_DIR, "model")

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
BATCH = 3
# Keras' "simple MNIST convnet": 320 + 18,496 + 16,010 parameters.
CONVNET_PARAMS = 34_826
# 28 -conv3-> 26 -pool-> 13 -conv3-> 11 -pool-> 5; 16 filters * 5 * 5.
LENET_FLATTEN = 400


def torch_param_count(model):
    """Trainable parameters, counted the way Keras' count_params does."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def torch_logits(model, nhwc):
    with torch.no_grad():
        return model.eval()(torch.from_numpy(nhwc).permute(0, 3, 1, 2)).numpy()


# Each framework's model, its parameter count and its logits for NHWC input, as its builder returns them.
PARAMETER_COUNT = {
    "tf": lambda model: model.count_params(),
    "tf_native": lambda model: model.parameter_count,
    "torch": torch_param_count,
    "jax": lambda model: model.parameter_count,
}
LOGITS = {
    "tf": lambda model, nhwc: np.asarray(model(nhwc, training=False)),
    "tf_native": lambda model, nhwc: model(nhwc).numpy(),
    "torch": torch_logits,
    "jax": lambda model, nhwc: np.asarray(model(nhwc)),
}


# The arms that share this test process; the Keras arms on torch and JAX need a process of their own.
IN_PROCESS = registry.sharing_a_process(FRAMEWORKS)
OWN_PROCESS = sorted(set(FRAMEWORKS) - set(IN_PROCESS))
KERAS_PROBE = """
import json, sys
import numpy as np
from conftest import model_config
from fwbench.frameworks import registry
module = registry.load(sys.argv[1])
counts, shapes = {}, {}
for name in sys.argv[2].split(","):
    model = module.build_model(model_config(name), (28, 28, 1), 10)
    counts[name] = int(model.count_params())
    logits = model(np.zeros((3, 28, 28, 1), np.float32), training=False)
    shapes[name] = list(module.keras.ops.convert_to_numpy(logits).shape)
print(json.dumps({"backend": module.keras.backend.backend(), "counts": counts, "shapes": shapes}))
"""


def build(framework: str, name: str):
    return registry.load(framework).build_model(model_config(name), INPUT_SHAPE, NUM_CLASSES)


def test_every_arm_of_this_process_has_a_parameter_count_and_logits_here():
    assert set(PARAMETER_COUNT) == set(LOGITS) == set(IN_PROCESS)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_counts_match(name):
    counts = {framework: PARAMETER_COUNT[framework](build(framework, name)) for framework in IN_PROCESS}
    assert len(set(counts.values())) == 1, counts


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shapes_are_logits_per_class(name):
    rng = np.random.default_rng(0)
    nhwc = rng.random((BATCH, *INPUT_SHAPE), dtype=np.float32)
    for framework in IN_PROCESS:
        assert LOGITS[framework](build(framework, name), nhwc).shape == (BATCH, NUM_CLASSES), framework


def test_convnet_has_keras_example_parameter_count():
    for framework in IN_PROCESS:
        assert PARAMETER_COUNT[framework](build(framework, "convnet")) == CONVNET_PARAMS, framework


@pytest.mark.parametrize("framework", OWN_PROCESS)
def test_keras_on_other_backends_builds_the_same_models(framework):
    """Keras on torch and on JAX, each in a process of its own: the parameter counts of the torch models."""
    result = subprocess.run([sys.executable, "-c", KERAS_PROBE, framework, ",".join(MODEL_NAMES)],
                            capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT / "tests",
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "tests")})
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["backend"] == registry.spec(framework).keras_backend
    assert probe["counts"] == {name: PARAMETER_COUNT["torch"](build("torch", name)) for name in MODEL_NAMES}
    assert set(map(tuple, probe["shapes"].values())) == {(3, NUM_CLASSES)}


def test_lenet_flatten_size_is_computed():
    assert flatten_size(model_config("lenet"), INPUT_SHAPE, NUM_CLASSES) == LENET_FLATTEN


def test_unknown_model_name_is_a_config_error():
    with pytest.raises(ConfigError) as excinfo:
        compose_config(CONFIG_DIR, ["model=resnet50"])
    message = str(excinfo.value)
    assert "\n" not in message
    assert "resnet50" in message
    for accepted in MODEL_NAMES:
        assert accepted in message


@pytest.mark.parametrize("layers, fragment", [
    ([{"convolution": {"filters": 8}}], "layer 0 has kind 'convolution': accepted are conv, maxpool"),
    ([{"flatten": {}}, {"dense": {"width": 8}}], "layer 1 (dense) has parameters ['width']: accepted are units"),
    ([{"flatten": {}, "logits": {}}], "layer 0 is"),
])
def test_a_bad_layer_in_a_model_config_is_one_line_naming_what_is_accepted(layers, fragment):
    with pytest.raises(ConfigError) as excinfo:
        layer_specs({"name": "custom", "layers": layers}, NUM_CLASSES)
    assert "\n" not in str(excinfo.value)
    assert fragment in str(excinfo.value)


def test_every_model_is_described_by_its_config_alone():
    """The layer list of config/model/<name>.yaml is what both builders walk."""
    convnet = model_config("convnet")
    assert [type(layer).__name__ for layer in layer_specs(convnet, NUM_CLASSES)] == [
        "Conv", "MaxPool", "Conv", "MaxPool", "Flatten", "Dropout", "Dense"]
    assert layer_specs(convnet, NUM_CLASSES)[-1].units == NUM_CLASSES


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_flops_per_sample_is_positive(name):
    assert flops_per_sample(model_config(name), INPUT_SHAPE, NUM_CLASSES) > 0


def test_linear_flops_are_one_dense_layer():
    pixels = INPUT_SHAPE[0] * INPUT_SHAPE[1] * INPUT_SHAPE[2]
    assert flops_per_sample(model_config("linear"), INPUT_SHAPE, NUM_CLASSES) == 2 * pixels * NUM_CLASSES
