"""AlexNet (torchvision's single-tower layout) as a pure function: ``features(params, x, layers)``.

Krizhevsky, Sutskever & Hinton (NIPS 2012) in the form of torchvision's ``alexnet``, i.e. the
"one weird trick" variant (Krizhevsky 2014): 64-192-384-256-256 channels, no LRN, one tower.

Layer names: ``conv1`` ... ``conv5`` (post-ReLU) and ``pool1``, ``pool2``, ``pool5``
(3x3 stride-2 pools, floor mode). ``params`` is ``{"conv1": {"kernel": f32[11, 11, 3, 64] (HWIO),
"bias": f32[64]}, ...}``; torchvision's ``features.{0,3,6,8,10}`` map to ``conv1`` ... ``conv5``.
Inputs are NHWC, preprocessed with the torchvision convention.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from stylejax.errors import StylejaxError
from stylejax.models.layers import Layer
from stylejax.models.vgg import Pooling, check_layers

ARCH = "alexnet"

#: The spatial layers, in forward order (conv layers include their ReLU).
LAYERS: tuple[Layer, ...] = (
    Layer("conv1", "conv", 11, 4, 2, 64),
    Layer("pool1", "pool", 3, 2, 0, 64),
    Layer("conv2", "conv", 5, 1, 2, 192),
    Layer("pool2", "pool", 3, 2, 0, 192),
    Layer("conv3", "conv", 3, 1, 1, 384),
    Layer("conv4", "conv", 3, 1, 1, 256),
    Layer("conv5", "conv", 3, 1, 1, 256),
    Layer("pool5", "pool", 3, 2, 0, 256),
)

#: torchvision ``features.{index}`` of each conv layer.
TORCHVISION_INDEX: dict[str, int] = {"conv1": 0, "conv2": 3, "conv3": 6, "conv4": 8, "conv5": 10}


def layer_table() -> tuple[Layer, ...]:
    """The layer table of AlexNet."""
    return LAYERS


def param_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """Shapes of every parameter: kernel (k, k, Cin, Cout) HWIO and bias (Cout,)."""
    shapes, cin = {}, 3
    for layer in LAYERS:
        if layer.kind == "conv":
            shapes[layer.name] = {"kernel": (layer.kernel, layer.kernel, cin, layer.channels),
                                  "bias": (layer.channels,)}
            cin = layer.channels
    return shapes


def _conv_relu(x: jax.Array, p: Mapping[str, jax.Array], layer: Layer,
               relu: Callable[[jax.Array], jax.Array]) -> jax.Array:
    pad = ((layer.padding, layer.padding),) * 2
    y = jax.lax.conv_general_dilated(
        x, p["kernel"].astype(x.dtype), window_strides=(layer.stride, layer.stride), padding=pad,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return relu(y + p["bias"].astype(x.dtype).reshape(1, 1, 1, -1))


def _pool(x: jax.Array, layer: Layer, pooling: Pooling) -> jax.Array:
    window = (1, layer.kernel, layer.kernel, 1)
    strides = (1, layer.stride, layer.stride, 1)
    if pooling == "max":
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, "VALID")
    summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, "VALID")
    return summed / float(layer.kernel * layer.kernel)


def features(params: Mapping[str, Mapping[str, jax.Array]], x: jax.Array,
             layers: Sequence[str], *, pooling: Pooling = "max",
             relu: Callable[[jax.Array], jax.Array] = jax.nn.relu) -> dict[str, jax.Array]:
    """Activations of AlexNet at the named layers.

    Args:
      params: AlexNet parameter pytree (see :func:`param_shapes`).
      x: f32[N, H, W, 3] preprocessed images (torchvision convention); H, W >= 63 so that
        ``pool5`` is non-empty (224 gives conv1 55x55, pool5 6x6).
      layers: layer names, e.g. ``("conv1", "pool5")``; static under jit.
      pooling: ``"max"`` (the trained network) or ``"avg"`` (3x3/2 average, for synthesis).
      relu: the rectifier after each conv (e.g. a deconvnet/guided-backprop ReLU).

    Returns:
      ``{name: f32[N, h, w, C]}``; conv outputs are post-ReLU. Computation stops after the
      deepest requested layer.
    """
    if pooling not in ("max", "avg"):
        raise StylejaxError(f"unknown pooling {pooling!r}; use 'max' or 'avg'")
    wanted = check_layers(LAYERS, layers)
    deepest = max(i for i, layer in enumerate(LAYERS) if layer.name in wanted)
    out: dict[str, jax.Array] = {}
    for layer in LAYERS[: deepest + 1]:
        if layer.kind == "conv":
            x = _conv_relu(x, params[layer.name], layer, relu)
        else:
            x = _pool(x, layer, pooling)
        if layer.name in wanted:
            out[layer.name] = x
    return out
