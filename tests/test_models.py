"""Every framework's models must be the same architecture, built from one spec."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, PROJECT_ROOT, model_config, model_inputs
from fwbench.config import compose_config, group_options
from fwbench.errors import ConfigError
from fwbench.models.architecture import flatten_size, flops_per_sample, layer_specs
from fwbench.frameworks import registry
from fwbench.frameworks.registry import FRAMEWORKS

MODEL_NAMES = group_options(CONFIG_DIR, "model")

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
BATCH = 3
# Trainable parameters. Keras' "simple MNIST convnet": 320 + 18,496 + 16,010.
KNOWN_PARAMETER_COUNTS = {
    "convnet": 34_826,
    # The CIFAR ResNet-18 as published (torchvision's block layout, 3x3 stem, 10 classes).
    "resnet18": 11_173_962,
    # 20,000 x 128 tokens + 256 x 128 positions + 2 x 198,272 per encoder layer + 258 logits.
    "transformer": 2_989_570,
    # 20,000 x 128 tokens + 4 x 128 x (128 + 128) + 4 x 128 gate biases + 258 logits.
    "lstm": 2_691_842,
    # (943 + 1,682) x (8 + 32) embeddings + 2,080 + 528 + 136 tower + 34 logits.
    "ncf": 107_778,
}
# 28 -conv3-> 26 -pool-> 13 -conv3-> 11 -pool-> 5; 16 filters * 5 * 5.
LENET_FLATTEN = 400


def torch_param_count(model):
    """Trainable parameters, counted the way Keras' trainable weights are."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def torch_logits(model, x):
    from fwbench.frameworks.torch import to_torch

    with torch.no_grad():
        return model.eval()(to_torch(x, torch.device("cpu"))).numpy()


def keras_param_count(model):
    from fwbench.frameworks.keras_arm import trainable_parameters

    return trainable_parameters(model)


# Each framework's model, its trainable parameter count and its logits for the preprocessed input.
PARAMETER_COUNT = {
    "tf": keras_param_count,
    "tf_native": lambda model: model.parameter_count,
    "torch": torch_param_count,
    "jax": lambda model: model.parameter_count,
}
LOGITS = {
    "tf": lambda model, x: np.asarray(model(x, training=False)),
    "tf_native": lambda model, x: model(x).numpy(),
    "torch": torch_logits,
    "jax": lambda model, x: np.asarray(model(x)),
}


# The arms that share this test process; the Keras arms on torch and JAX need a process of their own.
IN_PROCESS = registry.sharing_a_process(FRAMEWORKS)
OWN_PROCESS = sorted(set(FRAMEWORKS) - set(IN_PROCESS))
KERAS_PROBE = """
import json, sys
import numpy as np
from conftest import model_inputs
from fwbench.frameworks import registry
module = registry.load(sys.argv[1])
from fwbench.frameworks.keras_arm import trainable_parameters
counts, shapes = {}, {}
for name in sys.argv[2].split(","):
    model_cfg, input_shape, num_classes, x = model_inputs(name, 3)
    model = module.build_model(model_cfg, input_shape, num_classes)
    counts[name] = trainable_parameters(model)
    logits = model(x, training=False)
    shapes[name] = [list(module.keras.ops.convert_to_numpy(logits).shape), num_classes]
print(json.dumps({"backend": module.keras.backend.backend(), "counts": counts, "shapes": shapes}))
"""


def build(framework: str, name: str):
    model_cfg, input_shape, num_classes, _ = model_inputs(name, BATCH)
    return registry.load(framework).build_model(model_cfg, input_shape, num_classes)


def test_every_arm_of_this_process_has_a_parameter_count_and_logits_here():
    assert set(PARAMETER_COUNT) == set(LOGITS) == set(IN_PROCESS)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_counts_match(name):
    counts = {framework: PARAMETER_COUNT[framework](build(framework, name)) for framework in IN_PROCESS}
    assert len(set(counts.values())) == 1, counts


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shapes_are_logits_per_class(name):
    _, _, num_classes, x = model_inputs(name, BATCH)
    for framework in IN_PROCESS:
        assert LOGITS[framework](build(framework, name), x).shape == (BATCH, num_classes), framework


@pytest.mark.parametrize("name", sorted(KNOWN_PARAMETER_COUNTS))
def test_models_have_their_published_parameter_counts(name):
    for framework in IN_PROCESS:
        assert PARAMETER_COUNT[framework](build(framework, name)) == KNOWN_PARAMETER_COUNTS[name], framework


@pytest.mark.parametrize("framework", OWN_PROCESS)
def test_keras_on_other_backends_builds_the_same_models(framework):
    """Keras on torch and on JAX, each in a process of its own: the parameter counts of the torch models."""
    result = subprocess.run([sys.executable, "-c", KERAS_PROBE, framework, ",".join(MODEL_NAMES)],
                            capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT / "tests",
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "tests")})
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["backend"] == registry.spec(framework).keras_backend
    assert probe["counts"] == {name: PARAMETER_COUNT["torch"](build("torch", name)) for name in MODEL_NAMES}
    for name, (shape, num_classes) in probe["shapes"].items():
        assert shape == [3, num_classes], name


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
    ([{"convolution": {"filters": 8}}], "layer 0 has kind 'convolution': accepted are conv, conv_bn, residual"),
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
    model_cfg, input_shape, num_classes, _ = model_inputs(name, 1)
    assert flops_per_sample(model_cfg, input_shape, num_classes) > 0


def test_resnet18_flops_are_the_published_half_gigamac():
    """The CIFAR ResNet-18 is about 0.56 G multiply-adds per image (555 M in the convolutions)."""
    model_cfg, input_shape, num_classes, _ = model_inputs("resnet18", 1)
    assert 0.55e9 < flops_per_sample(model_cfg, input_shape, num_classes) / 2 < 0.56e9


def test_the_models_span_three_orders_of_magnitude_of_flops():
    flops = [flops_per_sample(*model_inputs(name, 1)[:3]) for name in MODEL_NAMES]
    assert max(flops) / min(flops) >= 1e3


def test_linear_flops_are_one_dense_layer():
    pixels = INPUT_SHAPE[0] * INPUT_SHAPE[1] * INPUT_SHAPE[2]
    assert flops_per_sample(model_config("linear"), INPUT_SHAPE, NUM_CLASSES) == 2 * pixels * NUM_CLASSES


# ---------------------------------------------------------------- equal outputs for copied weights
# Keras (the tf arm) and torch, given the same weights, must compute the same function: the layers
# whose defaults differ between the frameworks (LSTM biases and gate layout, attention projections,
# norm epsilons, batch norm momentum/epsilon, stride-2 padding) are set explicitly by the spec.


def keras_layers_of(model, kind: str) -> list:
    return [layer for layer in model.layers if type(layer).__name__ == kind]


def copy_dense(keras_dense, linear) -> None:
    kernel, bias = keras_dense.get_weights()
    linear.weight.copy_(torch.from_numpy(kernel.T))
    linear.bias.copy_(torch.from_numpy(bias))


def copy_layer_norm(keras_norm, norm) -> None:
    gamma, beta = keras_norm.get_weights()
    norm.weight.copy_(torch.from_numpy(gamma))
    norm.bias.copy_(torch.from_numpy(beta))


def copy_attention(keras_attention, attention) -> None:
    """Keras keeps query/key/value kernels as (dim, heads, head_dim); torch stacks them as one (3 dim, dim)."""
    weights = keras_attention.get_weights()  # q kernel, q bias, k kernel, k bias, v kernel, v bias, out kernel, out bias
    dim = weights[0].shape[0]
    kernels = [weights[i].reshape(dim, dim).T for i in (0, 2, 4)]
    biases = [weights[i].reshape(dim) for i in (1, 3, 5)]
    attention.in_proj_weight.copy_(torch.from_numpy(np.concatenate(kernels)))
    attention.in_proj_bias.copy_(torch.from_numpy(np.concatenate(biases)))
    attention.out_proj.weight.copy_(torch.from_numpy(weights[6].reshape(dim, dim).T))
    attention.out_proj.bias.copy_(torch.from_numpy(weights[7]))


def assert_same_logits(keras_model, torch_model, x) -> None:
    expected = LOGITS["tf"](keras_model, x)
    assert np.allclose(torch_logits(torch_model, x), expected, atol=1e-4, rtol=1e-4), \
        np.abs(torch_logits(torch_model, x) - expected).max()


@torch.no_grad()
def test_lstm_computes_the_same_function_in_keras_and_torch():
    _, _, _, x = model_inputs("lstm", BATCH)
    keras_model, torch_model = build("tf", "lstm"), build("torch", "lstm")
    embedding, lstm, logits = torch_model
    embedding.tokens.weight.copy_(torch.from_numpy(keras_layers_of(keras_model, "Embedding")[0].get_weights()[0]))
    kernel, recurrent, bias = keras_layers_of(keras_model, "LSTM")[0].get_weights()
    lstm.lstm.weight_ih_l0.copy_(torch.from_numpy(kernel.T))  # gates i, f, c (g), o in both
    lstm.lstm.weight_hh_l0.copy_(torch.from_numpy(recurrent.T))
    lstm.lstm.bias_ih_l0.copy_(torch.from_numpy(bias))
    copy_dense(keras_layers_of(keras_model, "Dense")[-1], logits)
    assert not lstm.lstm.bias_hh_l0.requires_grad and not lstm.lstm.bias_hh_l0.any()
    assert_same_logits(keras_model, torch_model, x)


@torch.no_grad()
def test_transformer_computes_the_same_function_in_keras_and_torch():
    _, _, _, x = model_inputs("transformer", BATCH)
    keras_model, torch_model = build("tf", "transformer"), build("torch", "transformer")
    embedding, *encoders = [module for module in torch_model if type(module).__name__ in
                            ("TokenEmbedding", "TransformerEncoderLayer")]
    embedding.tokens.weight.copy_(torch.from_numpy(keras_layers_of(keras_model, "Embedding")[0].get_weights()[0]))
    embedding.positions.copy_(torch.from_numpy(keras_layers_of(keras_model, "PositionEmbedding")[0].get_weights()[0]))
    attentions = keras_layers_of(keras_model, "MultiHeadAttention")
    norms = keras_layers_of(keras_model, "LayerNormalization")
    dense = keras_layers_of(keras_model, "Dense")
    for index, encoder in enumerate(encoders):
        copy_attention(attentions[index], encoder.self_attn)
        copy_layer_norm(norms[2 * index], encoder.norm1)
        copy_layer_norm(norms[2 * index + 1], encoder.norm2)
        copy_dense(dense[2 * index], encoder.linear1)
        copy_dense(dense[2 * index + 1], encoder.linear2)
    copy_dense(dense[-1], torch_model[-1])
    assert_same_logits(keras_model, torch_model, x)


@torch.no_grad()
def test_a_strided_residual_block_computes_the_same_function_in_keras_and_torch():
    """Stride 2 with a projection shortcut, batch norm in inference mode with non-trivial statistics: the
    padding must be symmetric in both (Keras' "same" would pad only after the input at stride 2)."""
    model_cfg = {"name": "block", "layers": [{"residual": {"filters": 8, "stride": 2}}, {"global_avgpool": {}},
                                             {"logits": {}}]}
    input_shape, classes = (9, 9, 4), 3
    x = np.random.default_rng(0).random((BATCH, *input_shape), dtype=np.float32)
    keras_model = registry.load("tf").build_model(OmegaConf.create(model_cfg), input_shape, classes)
    torch_model = registry.load("torch").build_model(OmegaConf.create(model_cfg), input_shape, classes)
    rng = np.random.default_rng(1)
    # Every batch norm gets the same statistics, so which Keras norm maps to which torch norm does not matter.
    gamma, beta, mean = (rng.normal(size=8).astype(np.float32) for _ in range(3))
    variance = rng.uniform(0.5, 2.0, size=8).astype(np.float32)
    for norm in keras_layers_of(keras_model, "BatchNormalization"):
        norm.set_weights([gamma, beta, mean, variance])
    keras_convs = {tuple(layer.get_weights()[0].shape): layer.get_weights()[0]
                   for layer in keras_layers_of(keras_model, "Conv2D")}
    for module in torch_model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.weight.copy_(torch.from_numpy(keras_convs[tuple(module.weight.permute(2, 3, 1, 0).shape)]
                                                 .transpose(3, 2, 0, 1).copy()))
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor, value in ((module.weight, gamma), (module.bias, beta), (module.running_mean, mean),
                                  (module.running_var, variance)):
                tensor.copy_(torch.from_numpy(value))
    assert len(keras_convs) == 3  # 3x3 4->8, 3x3 8->8, the 1x1 4->8 shortcut
    copy_dense(keras_layers_of(keras_model, "Dense")[-1], torch_model[-1])
    assert_same_logits(keras_model, torch_model, x)


# ---------------------------------------------------------------- the larger models train in every arm
# Each arm in a process of its own, as the pipeline runs it (torch's optimizer imports its compiler
# stack, which must not load into a process that holds TensorFlow).
LARGER_MODELS = ["resnet18", "transformer", "lstm", "ncf"]
TRAIN_PROBE = """
import json, sys, tempfile
from pathlib import Path
import numpy as np
from conftest import CONFIG_DIR, model_inputs
from fwbench.config import compose_config
from fwbench.frameworks import registry
module = registry.load(sys.argv[1])
trainer = compose_config(CONFIG_DIR, ["trainer.batch_size=4"]).trainer
result = {}
for name in sys.argv[2].split(","):
    model_cfg, input_shape, num_classes, x = model_inputs(name, 8)
    y = np.arange(len(x), dtype=np.int64) % num_classes
    adapter = module.Adapter(model_cfg, input_shape, num_classes, trainer)
    loss, _ = adapter.train_epoch(x, y, None, lambda: False)
    logits = adapter.predict_logits(x, 4)
    with tempfile.TemporaryDirectory() as directory:
        adapter.save_model(Path(directory) / "model")
        predict, _ = module.load_logits_fn(Path(directory) / "model", model_cfg, input_shape, num_classes)
        reloaded = predict(x, 4)
    result[name] = {"loss": float(loss), "shape": list(logits.shape), "classes": num_classes,
                    "reload_max_diff": float(np.abs(reloaded - logits).max())}
print(json.dumps(result))
"""


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_every_arm_trains_saves_and_reloads_the_larger_models(framework):
    """A training epoch on their inputs (token ids, (user, item) pairs, batch norm's state), and the saved
    model predicting what the trained one does (batch norm from its running statistics in both)."""
    result = subprocess.run([sys.executable, "-c", TRAIN_PROBE, framework, ",".join(LARGER_MODELS)],
                            capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT / "tests",
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "tests")})
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    for name in LARGER_MODELS:
        assert np.isfinite(probe[name]["loss"]), name
        assert probe[name]["shape"] == [8, probe[name]["classes"]], name
        assert probe[name]["reload_max_diff"] < 1e-4, name
