"""The one path from pixels to activations: checks, preprocessing, the backbone, dtypes.

Style transfer, the top-K scan, projections, attribution, synthesis and ``stylejax features``
all call :func:`features`. It is a pure function of ``(weights, pixels)``: jit, grad, jvp, vmap
and sharding (explicit mode included) compose with it; ``layers``, ``pooling``, ``conv``,
``precision`` and ``relu`` are static.

The fast convolution path is an explicit choice, ``conv="auto"``: Winograd F(2x2, 3x3) on CPU
for the wide VGG layers (:mod:`stylejax.models.winograd`), about 25 % faster for a style
transfer step. Its limit: it has a custom VJP, so forward-mode autodiff (``jax.jvp``,
``jax.hessian``) is not defined through it. The default ``conv="direct"`` supports everything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stylejax import models
from stylejax.errors import StylejaxError
from stylejax.preprocessing import preprocess
from stylejax.weights import Weights

PRECISIONS = ("float32", "bfloat16")


def layer_tuple(layers: Sequence[str] | str) -> tuple[str, ...]:
    """``"conv1_1"`` or ``["conv1_1", "conv4_2"]`` -> a tuple of names (no repeats, order kept)."""
    if isinstance(layers, str):
        return (layers,)
    try:
        names = tuple(dict.fromkeys(layers))
    except TypeError:
        raise StylejaxError(f"layers must be a name or a sequence of names, got {layers!r}") from None
    if not all(isinstance(name, str) for name in names):
        raise StylejaxError(f"layers must be names (strings), got {list(names)!r}")
    return names


def check_pixels(pixels, what: str = "pixels") -> jax.Array:
    """RGB pixels as float32: f32|f64|f16|bf16 or an integer type (uint8 0-255 values) of shape
    [N, H, W, 3] or [H, W, 3]. Other dtypes (bool, complex) and shapes raise StylejaxError.

    Only dtype and shape are checked (values may be traced); integers are converted by value,
    never by reinterpretation, so u8 pixels give the same activations as their float32 values.
    """
    if not hasattr(pixels, "dtype"):
        pixels = np.asarray(pixels)
    dtype = np.dtype(pixels.dtype)
    if dtype == np.bool_ or not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
                                 or dtype == jnp.bfloat16):
        raise StylejaxError(f"{what} must be a float or integer array of RGB values 0-255, got dtype {dtype}")
    shape = tuple(np.shape(pixels))
    if len(shape) not in (3, 4) or shape[-1] != 3:
        raise StylejaxError(f"{what} must be f32[N, H, W, 3] (a batch) or f32[H, W, 3] (one image) "
                            f"of RGB values 0-255, got shape {shape}")
    return jnp.asarray(pixels).astype(jnp.float32)


def features(weights: Weights, pixels, layers: Sequence[str] | str, *, pooling: str = "max",
             conv: str = "direct", precision: str = "float32",
             relu: Callable[[jax.Array], jax.Array] = jax.nn.relu) -> dict[str, jax.Array]:
    """Activations of RGB ``pixels`` (0-255) at ``layers`` under ``weights``.

    Args:
      weights: a :class:`stylejax.weights.Weights` (a pytree: jit argument or closed over).
      pixels: f32[N, H, W, 3] or f32[H, W, 3] RGB in [0, 255]; integer arrays (u8) are
        converted by value. Preprocessing for the weights (Caffe BGR mean, torchvision mean/std)
        happens inside.
      layers: a layer name or names, e.g. ``("conv1_1", "conv4_2")``.
      pooling: ``"max"`` (as trained) or ``"avg"`` (Gatys et al.).
      conv: ``"direct"`` (default; all transformations) or ``"auto"`` (the fast CPU path, reverse
        mode only; see the module docstring) or ``"winograd"`` (VGG, always Winograd).
      precision: dtype of the network's arithmetic, ``"float32"`` or ``"bfloat16"``; the
        activations are returned as float32 either way.
      relu: the rectifier (projections and synthesis pass ones with modified gradients).

    Returns:
      ``{layer: f32[N, h, w, C]}`` (``f32[h, w, C]`` for one image); conv outputs are post-ReLU.
      The forward stops after the deepest requested layer.
    """
    if precision not in PRECISIONS:
        raise StylejaxError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    x = check_pixels(pixels)
    single = x.ndim == 3
    x = preprocess(x[None] if single else x, weights.preprocessing).astype(precision)
    backbone = models.get(weights.arch)
    acts = backbone.features(weights.params, x, backbone.check_layers(layer_tuple(layers)),
                             pooling=pooling, relu=relu, conv=conv)
    return {name: (a[0] if single else a).astype(jnp.float32) for name, a in acts.items()}


def feature_shapes(weights: Weights, image_shape: tuple[int, int], layers: Sequence[str] | str, *,
                   pooling: str = "max") -> dict[str, tuple[int, int, int]]:
    """``{layer: (h, w, C)}`` for one image of ``image_shape`` = (H, W), without computing anything."""
    x = jax.ShapeDtypeStruct((*image_shape, 3), jnp.float32)
    out = jax.eval_shape(lambda w, v: features(w, v, layers, pooling=pooling), weights, x)
    return {name: tuple(a.shape) for name, a in out.items()}


__all__ = ["PRECISIONS", "check_pixels", "feature_shapes", "features", "layer_tuple"]
