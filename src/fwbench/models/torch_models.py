"""PyTorch builders that walk the shared spec in `fwbench.models`.

The models take NCHW float tensors (batch, channels, height, width), e.g.
(N, 1, 28, 28); the data loader transposes the NHWC arrays it shares with
Keras. `input_shape` stays NHWC here so both builders take the same
arguments. The models output logits (no softmax). Weights use PyTorch's
default initialisers, deliberately not matched to Keras'.
"""

from __future__ import annotations

from torch import nn

from fwbench.models import Conv, Dense, Dropout, Flatten, MaxPool, Layer, layer_shapes


def torch_layers(layer: Layer, in_shape: tuple[int, ...]) -> list[nn.Module]:
    """Translate one spec into PyTorch modules; `in_shape` gives input sizes.

    PyTorch needs the input channels/features explicitly, Keras infers them,
    so the builder passes the walked shape in.
    """
    if isinstance(layer, Conv):
        in_channels = in_shape[-1]
        return [nn.Conv2d(in_channels, layer.filters, layer.kernel), nn.ReLU()]
    if isinstance(layer, MaxPool):
        return [nn.MaxPool2d(layer.size)]
    if isinstance(layer, Flatten):
        # Flattens NCHW in (C, H, W) order; Keras flattens (H, W, C).
        # The feature order differs, the parameter counts do not.
        return [nn.Flatten()]
    if isinstance(layer, Dense):
        modules: list[nn.Module] = [nn.Linear(in_shape[0], layer.units)]
        if layer.activation == "relu":
            modules.append(nn.ReLU())
        elif layer.activation is not None:
            raise TypeError(f"unsupported activation {layer.activation!r}")
        return modules
    if isinstance(layer, Dropout):
        return [nn.Dropout(layer.rate)]
    raise TypeError(f"unsupported layer spec {layer!r}")


def build_torch_model(
    name: str, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> nn.Module:
    """Build model `name` for NCHW inputs (input_shape given as NHWC), returning logits."""
    modules: list[nn.Module] = []
    for layer, in_shape, _ in layer_shapes(name, input_shape, num_classes):
        modules += torch_layers(layer, in_shape)
    return nn.Sequential(*modules)

