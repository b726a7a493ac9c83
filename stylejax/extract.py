"""Features of pixel images under a weight set: preprocessing + the backbone, jit-compiled."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp

from stylejax import models
from stylejax.preprocessing import preprocess
from stylejax.weights import Weights


@partial(jax.jit, static_argnames=("arch", "convention", "layers", "pooling"))
def _features_jit(params, pixels, *, arch: str, convention: str, layers: tuple[str, ...], pooling: str):
    return models.get(arch).features(params, preprocess(pixels, convention), layers, pooling=pooling)


def extract_features(w: Weights, pixels, layers: Sequence[str], *, pooling: str = "max") -> dict[str, jax.Array]:
    """Activations of f32/u8[N, H, W, 3] RGB pixels (0-255) at ``layers`` under weight set ``w``."""
    pixels = jnp.asarray(pixels, jnp.float32)
    return _features_jit(w.params, pixels, arch=w.arch, convention=w.preprocessing,
                         layers=tuple(layers), pooling=pooling)
