"""SWAG softmax smoothing: hand-computed values, invariances, jit/grad/vmap, entropy increase."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stylejax.errors import StylejaxError
from stylejax.swag import swag


def test_hand_computed():
    x = np.zeros((1, 1, 2, 2), np.float32)
    x[0, 0, 0, 0] = np.log(2.0)  # values e^x: 2, 1, 1, 1 -> /5
    np.testing.assert_allclose(np.asarray(swag(jnp.asarray(x))).ravel(), [0.4, 0.2, 0.2, 0.2], rtol=1e-6)
    # temperature 2: e^(x/2) = sqrt 2, 1, 1, 1
    s = np.sqrt(2.0)
    np.testing.assert_allclose(np.asarray(swag(jnp.asarray(x), 2.0)).ravel(),
                               np.array([s, 1, 1, 1]) / (s + 3), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(swag(jnp.asarray(x), rescale=True)).ravel(), [1.6, 0.8, 0.8, 0.8], rtol=1e-6)


def test_against_numpy_per_image(rng):
    x = rng.normal(size=(3, 5, 4, 6)).astype(np.float32) * 10
    ours = np.asarray(swag(jnp.asarray(x), 0.7))
    for n in range(3):
        z = x[n].astype(np.float64) / 0.7
        e = np.exp(z - z.max())
        np.testing.assert_allclose(ours[n], e / e.sum(), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(ours.sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    # shift invariant per image, stable for large activations
    np.testing.assert_allclose(np.asarray(swag(jnp.asarray(x + 100.0), 0.7)), ours, rtol=1e-4, atol=1e-9)


def test_composes_with_jit_grad_vmap(rng):
    x = jnp.asarray(rng.normal(size=(2, 3, 3, 4)).astype(np.float32))
    target = jnp.asarray(rng.random((2, 3, 3, 4)).astype(np.float32))

    def loss(a, tau):
        return jnp.sum((swag(a, tau) - target / target.sum()) ** 2)

    g = jax.jit(jax.grad(loss))(x, 1.5)
    eps = 1e-3
    e = np.zeros(x.shape, np.float32)
    e[1, 2, 0, 3] = eps
    fd = (loss(x + e, 1.5) - loss(x - e, 1.5)) / (2 * eps)
    assert float(g[1, 2, 0, 3]) == pytest.approx(float(fd), rel=2e-2, abs=1e-6)
    v = jax.vmap(lambda a: swag(a[None], 1.5)[0])(x)
    np.testing.assert_allclose(np.asarray(v), np.asarray(swag(x, 1.5)), rtol=1e-6)


def test_raises_entropy_of_peaky_maps():
    """The point of SWAG: a sparse, peaky post-ReLU map of ResNet-like magnitude (a few O(1-10)
    values, zeros elsewhere) gets a flatter, higher-entropy distribution; a higher tau flattens more."""
    x = np.zeros((1, 8, 8, 16), np.float32)
    x[0, 3, 4, 5] = 6.0
    x[0, 1, 1, 1] = 2.0
    x[0, 5, 2, 9] = 1.0

    def entropy(p):
        p = np.asarray(p, np.float64).ravel()
        p = p[p > 0] / p.sum()
        return -(p * np.log(p)).sum()

    plain = entropy(x)  # the activations themselves, normalised
    assert entropy(swag(jnp.asarray(x), 10.0)) > entropy(swag(jnp.asarray(x), 1.0)) > plain


def test_bad_arguments():
    with pytest.raises(StylejaxError, match="positive"):
        swag(jnp.zeros((1, 2, 2, 3)), 0.0)
    with pytest.raises(StylejaxError, match="shape"):
        swag(jnp.zeros((2, 3)))
