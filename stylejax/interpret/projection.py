"""Project one hidden unit back to pixel space: Zeiler & Fergus deconvnet and guided backprop.

Both methods are the ordinary reverse-mode derivative of a forward pass in which the ReLU's
backward rule is replaced (Springenberg et al. 2015, sec. 3.4):

* plain gradient:   ``dx = g * (x > 0)``
* deconvnet:        ``dx = relu(g)``                 (ZF: "rectify" the reconstruction)
* guided backprop:  ``dx = g * (x > 0) * (g > 0)``

Everything else comes for free from ``jax.vjp``: max pooling's VJP routes the signal through
the forward max "switches" (unpooling), a convolution's VJP is the transposed convolution with
the same kernels (biases drop out). So any forward written as a chain of jax ops that takes a
``relu`` function can be projected (:func:`projection_of`); :func:`stylejax.activations.features`
takes one, so VGG, AlexNet and ResNets all project (:func:`project_unit`).

Shapes: pixels are RGB f32/u8[H, W, 3] in [0, 255]; projections are f32[H, W, 3] in the same
pixel space (the derivative is taken through the weights' preprocessing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from stylejax import models
from stylejax.activations import feature_shapes, features
from stylejax.errors import StylejaxError
from stylejax.models.layers import Layer
from stylejax.weights import Weights

Method = Literal["deconvnet", "guided", "gradient"]
Relu = Callable[[jax.Array], jax.Array]
METHODS: tuple[str, ...] = ("deconvnet", "guided", "gradient")


# ----------------------------------------------------------------------------- modified ReLUs
@jax.custom_vjp
def deconv_relu(x: jax.Array) -> jax.Array:
    """ReLU whose backward pass rectifies the incoming signal: ``dx = relu(g)`` (ZF 2014)."""
    return jax.nn.relu(x)


def _deconv_fwd(x):
    return jax.nn.relu(x), None


def _deconv_bwd(_, g):
    return (jax.nn.relu(g),)


deconv_relu.defvjp(_deconv_fwd, _deconv_bwd)


@jax.custom_vjp
def guided_relu(x: jax.Array) -> jax.Array:
    """ReLU whose backward pass keeps only positive signal where the unit was on:
    ``dx = g * (x > 0) * (g > 0)`` (Springenberg et al. 2015)."""
    return jax.nn.relu(x)


def _guided_fwd(x):
    return jax.nn.relu(x), x > 0


def _guided_bwd(on, g):
    return (jnp.where(on & (g > 0), g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_fwd, _guided_bwd)

RELUS: dict[str, Relu] = {"deconvnet": deconv_relu, "guided": guided_relu, "gradient": jax.nn.relu}


def check_method(method: str) -> str:
    if method not in RELUS:
        raise StylejaxError(f"unknown projection method {method!r}; use one of {', '.join(METHODS)}")
    return method


# ----------------------------------------------------------------------------- forward
def layer_info(arch: str, layer: str) -> Layer:
    """The :class:`Layer` called ``layer`` of ``arch`` (errors list the valid names)."""
    backbone = models.get(arch)
    backbone.check_layers([layer])
    return next(item for item in backbone.layers if item.name == layer)


# ----------------------------------------------------------------------------- projections
def projection_of(forward: Callable[[jax.Array, Relu], jax.Array], pixels: jax.Array,
                  unit: jax.Array | int, y: jax.Array | int, x: jax.Array | int,
                  method: Method = "deconvnet") -> jax.Array:
    """Project unit ``(y, x, unit)`` of ``forward``'s output back to its input (pure, jittable).

    Args:
      forward: ``forward(pixels, relu) -> f32[h, w, C]``, any chain of jax ops that uses ``relu``
        for its rectifiers (e.g. :func:`stylejax.activations.features` at one layer).
      pixels: f32[H, W, 3] input of ``forward``.
      unit, y, x: channel and position in the output map (ints or traced int scalars).
      method: ``deconvnet``, ``guided`` or ``gradient`` (plain saliency).

    Returns:
      f32[H, W, 3]: the backward signal started from a one-hot map holding the unit's own
      activation (so it scales with how strongly the unit fired; zero if it did not).
    """
    relu = RELUS[check_method(method)]
    act, back = jax.vjp(lambda p: forward(p, relu), pixels)
    onehot = jnp.zeros_like(act).at[y, x, unit].set(act[y, x, unit])
    (signal,) = back(onehot)
    return signal


def project_unit(w: Weights, pixels: jax.Array, layer: str, unit: jax.Array | int, y: jax.Array | int,
                 x: jax.Array | int, method: Method = "deconvnet") -> jax.Array:
    """Projection of unit ``(y, x, unit)`` of ``layer`` for one image f32[H, W, 3] (RGB 0-255)
    -> f32[H, W, 3]. Pure: jit it with a traced unit and position, vmap it over images."""
    return projection_of(lambda p, relu: features(w, p, layer, relu=relu)[layer], pixels, unit, y, x, method)


@partial(jax.jit, static_argnames=("layer", "method"))
def _project_batch(w: Weights, pixels, units, ys, xs, *, layer: str, method: str) -> jax.Array:
    return jax.vmap(lambda img, unit, y, x: project_unit(w, img, layer, unit, y, x, method))(pixels, units, ys, xs)


def _check_positions(w: Weights, shape: tuple[int, ...], layer: str,
                     units: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> None:
    info = layer_info(w.arch, layer)
    h, w_, _ = feature_shapes(w, tuple(shape[1:3]), layer)[layer]
    for name, values, limit in (("unit", units, info.channels), ("y", ys, h), ("x", xs, w_)):
        bad = values[(values < 0) | (values >= limit)]
        if bad.size:
            raise StylejaxError(f"{name} {int(bad[0])} out of range for {layer} "
                                f"({limit} {'channels' if name == 'unit' else 'positions'}: 0..{limit - 1})")


def project_batch(w: Weights, pixels, layer: str, units: Sequence[int], ys: Sequence[int],
                  xs: Sequence[int], method: Method = "deconvnet") -> jax.Array:
    """Many projections in one vmapped, compiled call.

    Args:
      w: weight set (a VGG-style chain).
      pixels: u8/f32[N, H, W, 3] RGB in [0, 255] (repeat an image to project several units of it).
      layer: layer name; units, ys, xs: int[N] channel and position in that layer's map.
      method: ``deconvnet`` (Zeiler & Fergus), ``guided`` (guided backprop) or ``gradient``.

    Returns:
      f32[N, H, W, 3] projections in pixel space; use :func:`to_picture` to display one.
    """
    check_method(method)
    pixels = jnp.asarray(pixels, jnp.float32)
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise StylejaxError(f"expected pixels of shape [N, H, W, 3], got {tuple(pixels.shape)}")
    units, ys, xs = (np.asarray(v, np.int32).reshape(-1) for v in (units, ys, xs))
    if not (len(units) == len(ys) == len(xs) == pixels.shape[0]):
        raise StylejaxError(f"need one unit, y and x per image: {pixels.shape[0]} images, "
                            f"{len(units)} units, {len(ys)} ys, {len(xs)} xs")
    _check_positions(w, pixels.shape, layer, units, ys, xs)
    return _project_batch(w, pixels, jnp.asarray(units), jnp.asarray(ys), jnp.asarray(xs), layer=layer,
                          method=method)


def project(w: Weights, pixels, layer: str, unit: int, y: int, x: int,
            method: Method = "deconvnet") -> jax.Array:
    """Project one unit ``(y, x, unit)`` of ``layer`` for one image u8/f32[H, W, 3] -> f32[H, W, 3]."""
    pixels = jnp.asarray(pixels, jnp.float32)
    if pixels.ndim != 3:
        raise StylejaxError(f"expected pixels of shape [H, W, 3], got {tuple(pixels.shape)}")
    return project_batch(w, pixels[None], layer, [unit], [y], [x], method)[0]


def to_picture(projection, eps: float = 1e-12) -> np.ndarray:
    """Display a projection f32[H, W, 3] as u8[H, W, 3]: zero -> mid grey, scaled by max |value|.

    ``128 + 127 * p / max|p|``; an all-zero projection is flat grey.
    """
    p = np.asarray(projection, np.float32)
    scale = float(np.max(np.abs(p))) if p.size else 0.0
    if scale <= eps or not np.isfinite(scale):
        return np.full(p.shape, 128, np.uint8)
    return np.clip(np.rint(128.0 + 127.0 * p / scale), 0, 255).astype(np.uint8)


__all__ = ["METHODS", "deconv_relu", "guided_relu", "layer_info",
           "project", "project_batch", "project_unit", "projection_of", "to_picture"]
