"""The Keras and PyTorch models must be the same architecture, built from one spec."""

import numpy as np
import pytest
import torch

from fwbench.errors import ConfigError
from fwbench.models import MODEL_NAMES, flatten_size, flops_per_sample, layer_specs
from fwbench.models.keras_models import build_keras_model
from fwbench.models.torch_models import build_torch_model

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
    keras_model = build_keras_model(name, INPUT_SHAPE, NUM_CLASSES)
    torch_model = build_torch_model(name, INPUT_SHAPE, NUM_CLASSES)
    assert keras_model.count_params() == torch_param_count(torch_model)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shapes_are_logits_per_class(name):
    rng = np.random.default_rng(0)
    nhwc = rng.random((BATCH, *INPUT_SHAPE), dtype=np.float32)
    keras_model = build_keras_model(name, INPUT_SHAPE, NUM_CLASSES)
    torch_model = build_torch_model(name, INPUT_SHAPE, NUM_CLASSES).eval()
    keras_out = keras_model(nhwc, training=False)
    with torch.no_grad():
        torch_out = torch_model(torch.from_numpy(nhwc).permute(0, 3, 1, 2))
    assert tuple(keras_out.shape) == (BATCH, NUM_CLASSES)
    assert tuple(torch_out.shape) == (BATCH, NUM_CLASSES)


def test_convnet_has_keras_example_parameter_count():
    keras_model = build_keras_model("convnet", INPUT_SHAPE, NUM_CLASSES)
    torch_model = build_torch_model("convnet", INPUT_SHAPE, NUM_CLASSES)
    assert keras_model.count_params() == CONVNET_PARAMS
    assert torch_param_count(torch_model) == CONVNET_PARAMS


def test_lenet_flatten_size_is_computed():
    assert flatten_size("lenet", INPUT_SHAPE, NUM_CLASSES) == LENET_FLATTEN


@pytest.mark.parametrize(
    "build", [layer_specs, flops_per_sample, build_keras_model, build_torch_model]
)
def test_unknown_model_name_is_a_config_error(build):
    with pytest.raises(ConfigError) as excinfo:
        build("resnet50")
    message = str(excinfo.value)
    assert "\n" not in message
    assert "resnet50" in message
    for accepted in MODEL_NAMES:
        assert accepted in message


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_flops_per_sample_is_positive(name):
    assert flops_per_sample(name, INPUT_SHAPE, NUM_CLASSES) > 0


def test_linear_flops_are_one_dense_layer():
    pixels = INPUT_SHAPE[0] * INPUT_SHAPE[1] * INPUT_SHAPE[2]
    assert flops_per_sample("linear", INPUT_SHAPE, NUM_CLASSES) == 2 * pixels * NUM_CLASSES
