"""Input conventions declared by weight sets: pixels <-> network input.

Pixels are f32[..., H, W, 3] RGB in [0, 255] (uint8 values as floats). Two conventions:

* ``caffe`` (Oxford VGG, Keras): RGB -> BGR, then subtract the BGR mean (103.939, 116.779, 123.68).
* ``torchvision``: divide by 255, subtract mean (0.485, 0.456, 0.406), divide by std
  (0.229, 0.224, 0.225), RGB order.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from stylejax.errors import StylejaxError

CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)
TORCHVISION_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
TORCHVISION_STD = np.array([0.229, 0.224, 0.225], np.float32)
CONVENTIONS = ("caffe", "torchvision")


def check_convention(name: str) -> str:
    if name not in CONVENTIONS:
        raise StylejaxError(f"unknown preprocessing {name!r}; known: {', '.join(CONVENTIONS)}")
    return name


def _per_channel(values: np.ndarray, like) -> np.ndarray:
    """A per-channel constant f32[3] shaped [1, ..., 1, 3] to match ``like``'s rank (explicit
    broadcasting, so the code also runs under ``jax_numpy_rank_promotion="raise"``)."""
    return values.reshape((1,) * (jnp.ndim(like) - 1) + (3,))


def preprocess(pixels, convention: str):
    """RGB pixels in [0, 255] -> network input under ``convention`` (same shape)."""
    check_convention(convention)
    pixels = jnp.asarray(pixels, jnp.float32)
    if convention == "caffe":
        return pixels[..., ::-1] - _per_channel(CAFFE_BGR_MEAN, pixels)
    return (pixels / 255.0 - _per_channel(TORCHVISION_MEAN, pixels)) / _per_channel(TORCHVISION_STD, pixels)


def deprocess(x, convention: str):
    """Inverse of :func:`preprocess`: network input -> RGB pixels in [0, 255] (not clipped)."""
    check_convention(convention)
    x = jnp.asarray(x, jnp.float32)
    if convention == "caffe":
        return (x + _per_channel(CAFFE_BGR_MEAN, x))[..., ::-1]
    return (x * _per_channel(TORCHVISION_STD, x) + _per_channel(TORCHVISION_MEAN, x)) * 255.0
