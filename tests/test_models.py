"""The Keras and PyTorch models must be the same architecture, built from one spec."""

import numpy as np
import pytest
import torch

from conftest import CONFIG_DIR, model_config
from fwbench.config import compose_config, group_options
from fwbench.errors import ConfigError
from fwbench.models.architecture import flatten_size, flops_per_sample, layer_specs
from fwbench.frameworks.tf import build_model as build_keras_model
from fwbench.frameworks.torch import build_model as build_torch_model

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


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_counts_match(name):
    keras_model = build_keras_model(model_config(name), INPUT_SHAPE, NUM_CLASSES)
    torch_model = build_torch_model(model_config(name), INPUT_SHAPE, NUM_CLASSES)
    assert keras_model.count_params() == torch_param_count(torch_model)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shapes_are_logits_per_class(name):
    rng = np.random.default_rng(0)
    nhwc = rng.random((BATCH, *INPUT_SHAPE), dtype=np.float32)
    keras_model = build_keras_model(model_config(name), INPUT_SHAPE, NUM_CLASSES)
    torch_model = build_torch_model(model_config(name), INPUT_SHAPE, NUM_CLASSES).eval()
    keras_out = keras_model(nhwc, training=False)
    with torch.no_grad():
        torch_out = torch_model(torch.from_numpy(nhwc).permute(0, 3, 1, 2))
    assert tuple(keras_out.shape) == (BATCH, NUM_CLASSES)
    assert tuple(torch_out.shape) == (BATCH, NUM_CLASSES)


def test_convnet_has_keras_example_parameter_count():
    keras_model = build_keras_model(model_config("convnet"), INPUT_SHAPE, NUM_CLASSES)
    torch_model = build_torch_model(model_config("convnet"), INPUT_SHAPE, NUM_CLASSES)
    assert keras_model.count_params() == CONVNET_PARAMS
    assert torch_param_count(torch_model) == CONVNET_PARAMS


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
