"""tf_native's hand-written layers against Keras' layers holding the same weights, and batch norm's state.

The native arm writes convolution padding, batch norm, attention and the LSTM in tf.nn ops; Keras'
layers are the reference the spec (fwbench.models.architecture) follows, so each is compared on a
small input with the weights copied across.
"""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from fwbench.frameworks import registry
from fwbench.models.architecture import LSTM, Conv, ConvBN, Encoder

native = registry.load("tf_native")
tf = native.tf
keras = pytest.importorskip("keras")

TOLERANCE = 1e-5
TRAINER = OmegaConf.create({"optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "adam_epsilon": 1e-7,
                            "batch_size": 8, "epochs": 1, "eval_batch_size": 16})


def normal(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_symmetric_padding_with_stride_matches_zero_padding_then_a_valid_convolution():
    conv = native.layer_module(Conv(filters=4, kernel=3, stride=2, padding=1), (9, 9, 3), 0)
    conv.bias.assign(tf.fill((4,), 0.1))
    reference = keras.Sequential([keras.Input((9, 9, 3)), keras.layers.ZeroPadding2D(1),
                                  keras.layers.Conv2D(4, 3, strides=2, activation="relu")])
    reference.layers[-1].set_weights([conv.kernel.numpy(), conv.bias.numpy()])
    x = normal(2, 9, 9, 3)
    np.testing.assert_allclose(conv(tf.constant(x)).numpy(), reference(x).numpy(), atol=TOLERANCE)


def test_batch_norm_matches_keras_in_training_and_eval_and_moves_its_statistics_as_keras_does():
    spec = ConvBN(filters=4, kernel=3, stride=2)
    block = native.layer_module(spec, (9, 9, 3), 0)
    conv = keras.layers.Conv2D(4, 3, strides=2, use_bias=False)
    norm = keras.layers.BatchNormalization(momentum=spec.bn_momentum, epsilon=spec.bn_epsilon)
    conv.build((None, 11, 11, 3))
    conv.set_weights([block.conv.kernel.numpy()])

    def reference(x, training):
        return tf.nn.relu(norm(conv(keras.layers.ZeroPadding2D(1)(x)), training=training)).numpy()

    for step in range(3):
        x = normal(4, 9, 9, 3, seed=step) * 2 + 1  # statistics far from the initial (0, 1)
        np.testing.assert_allclose(block(tf.constant(x), True).numpy(), reference(x, True), atol=TOLERANCE)
    np.testing.assert_allclose(block.norm.moving_mean.numpy(), norm.moving_mean.numpy(), atol=TOLERANCE)
    np.testing.assert_allclose(block.norm.moving_variance.numpy(), norm.moving_variance.numpy(), atol=TOLERANCE)
    x = normal(2, 9, 9, 3, seed=9)
    np.testing.assert_allclose(block(tf.constant(x), False).numpy(), reference(x, False), atol=TOLERANCE)


def test_encoder_matches_keras_attention_layer_norm_and_feed_forward():
    length, dim, heads, ff = 7, 16, 4, 32
    encoder = native.layer_module(Encoder(heads=heads, ff=ff), (length, dim), 0)
    for weight in encoder.weights:  # biases and norm parameters away from their zero / one start
        weight.assign_add(tf.constant(normal(*weight.shape, seed=1) * 0.1))
    x = normal(2, length, dim)
    attention = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=dim // heads)
    attention(x, x)
    native_attention, split = encoder.attention, (dim, heads, dim // heads)
    attention.set_weights([
        *(array for projection in (native_attention.query, native_attention.key, native_attention.value)
          for array in (projection.kernel.numpy().reshape(split), projection.bias.numpy().reshape(split[1:]))),
        native_attention.output.kernel.numpy().reshape(heads, dim // heads, dim), native_attention.output.bias.numpy(),
    ])
    norms = [keras.layers.LayerNormalization(epsilon=1e-5) for _ in range(2)]
    expand, contract = keras.layers.Dense(ff, activation="relu"), keras.layers.Dense(dim)
    for layer, features, weights in (
        (norms[0], dim, encoder.attention_norm.weights), (norms[1], dim, encoder.feed_forward_norm.weights),
        (expand, dim, encoder.expand.weights), (contract, ff, encoder.contract.weights),
    ):
        layer.build((None, length, features))
        layer.set_weights([w.numpy() for w in weights])
    expected = norms[0](x + attention(x, x))
    expected = norms[1](expected + contract(expand(expected)))
    np.testing.assert_allclose(encoder(tf.constant(x)).numpy(), expected.numpy(), atol=TOLERANCE)


def test_lstm_matches_keras_lstm_and_starts_with_its_forget_bias_and_orthogonal_recurrent_kernel():
    lstm = native.layer_module(LSTM(units=6), (11, 5), 0)
    np.testing.assert_array_equal(lstm.bias.numpy().reshape(4, 6), np.repeat([[0.0], [1.0], [0.0], [0.0]], 6, 1))
    recurrent = lstm.recurrent_kernel.numpy()
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(6), atol=TOLERANCE)
    lstm.bias.assign_add(tf.constant(normal(24) * 0.3))
    reference = keras.layers.LSTM(6)
    reference.build((None, 11, 5))
    reference.set_weights([w.numpy() for w in lstm.weights])
    x = normal(3, 11, 5)
    for forward in (lstm, tf.function(lstm)):
        np.testing.assert_allclose(forward(tf.constant(x)).numpy(), reference(x).numpy(), atol=TOLERANCE)


@pytest.mark.parametrize("mode", ["graph", "xla"])
def test_a_compiled_step_moves_the_statistics_which_checkpoint_and_saved_model_keep(mode, tmp_path):
    model_cfg = OmegaConf.create({"name": "tiny_resnet", "input": "image", "layers": [
        {"conv_bn": {"filters": 4}}, {"residual": {"filters": 8, "stride": 2}}, {"global_avgpool": {}},
        {"logits": {}}]})
    adapter = native.Adapter(model_cfg, (8, 8, 3), 3, TRAINER)
    native.apply_mode(adapter, mode, "fp32")
    x, y = normal(16, 8, 8, 3) * 2 + 1, np.arange(16) % 3
    adapter.train_epoch(x, y, None, lambda: False)
    moving = [v for v in adapter.model.variables if not v.trainable]
    assert len(moving) == 4 * 2  # the stem's, the block's two and its projection's: mean and variance each
    assert all(not np.allclose(v.numpy(), 0.0) and not np.allclose(v.numpy(), 1.0) for v in moving)

    adapter.save_checkpoint(tmp_path)
    restored = native.Adapter(model_cfg, (8, 8, 3), 3, TRAINER)
    restored.load_checkpoint(tmp_path)
    expected = adapter.predict_logits(x, 8)
    np.testing.assert_allclose(restored.predict_logits(x, 8), expected, atol=TOLERANCE)  # graph mode vs `mode`
    predict, _ = native.load_logits_fn(adapter.save_model(tmp_path / "model").parent, model_cfg, (8, 8, 3), 3)
    np.testing.assert_allclose(predict(x, 8), expected, atol=TOLERANCE)


def test_the_serve_signature_takes_int32_index_pairs_of_any_batch_size(tmp_path):
    model_cfg = OmegaConf.create({"name": "tiny_ncf", "input": "user_item", "layers": [
        {"ncf": {"users": 5, "items": 7, "gmf_dim": 2, "mlp": [4, 3]}}, {"logits": {}}]})
    adapter = native.Adapter(model_cfg, (2,), 2, TRAINER)
    assert adapter.parameter_count == (5 + 7) * 2 + (5 + 7) * 2 + (4 * 3 + 3) + (2 + 3) * 2 + 2
    adapter.save_model(tmp_path)
    loaded = tf.saved_model.load(str(tmp_path / native.MODEL_DIR))
    (spec,) = loaded.signatures["serving_default"].structured_input_signature[1].values()
    assert spec.dtype == tf.int32 and spec.shape.as_list() == [None, 2]
    pairs = np.array([[0, 6], [4, 0], [2, 3]], np.int32)
    np.testing.assert_allclose(loaded.serve(tf.constant(pairs)).numpy(), adapter.predict_logits(pairs, 2),
                               atol=TOLERANCE)
