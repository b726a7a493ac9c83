"""Winograd F(2x2, 3x3) convolution against XLA's direct convolution; the VGG fast path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stylejax import models
from stylejax.errors import StylejaxError
from stylejax.models import vgg, winograd
from stylejax.preprocessing import preprocess


def _direct(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


def _rel(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def _case(rng, n, h, w, c, d):
    x = jnp.asarray(rng.standard_normal((n, h, w, c)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((3, 3, c, d)) / np.sqrt(9 * c), jnp.float32)
    return x, k


def test_empty_input_gives_empty_output(rng):
    x, k = _case(rng, 1, 0, 3, 8, 4)
    assert winograd.conv3x3(x, k).shape == (1, 0, 3, 4)
    assert jax.grad(lambda x: jnp.sum(winograd.conv3x3(x, k)))(x).shape == x.shape


@pytest.mark.parametrize("tile, tol", [(2, 5e-6), (4, 5e-5)])
@pytest.mark.parametrize("shape", [(1, 1, 1, 3, 5), (2, 7, 9, 16, 24), (3, 12, 10, 32, 8)])
def test_values_and_gradients_match_direct_conv(rng, shape, tile, tol):
    x, k = _case(rng, *shape)
    assert _rel(winograd.conv3x3(x, k, tile), _direct(x, k)) < tol
    loss = lambda f: (lambda x, k: jnp.sum(jnp.sin(f(x, k))))  # noqa: E731
    gx, gk = jax.grad(loss(lambda x, k: winograd.conv3x3(x, k, tile)), argnums=(0, 1))(x, k)
    rx, rk = jax.grad(loss(_direct), argnums=(0, 1))(x, k)
    assert _rel(gx, rx) < tol and _rel(gk, rk) < 5e-6


def test_chunks_and_bands_change_nothing(rng, monkeypatch):
    """Several images per chunk, one image per chunk, bands of tile rows: the same result."""
    x, k = _case(rng, 5, 13, 11, 8, 8)
    whole = winograd.conv3x3(x, k)
    grad = jax.grad(lambda x: jnp.sum(winograd.conv3x3(x, k) ** 2))(x)
    for budget in (8 * 7 * 6 * 2, 8 * 7 * 6, 8 * 6 * 2, 8):  # 2 images, 1 image, 2-row bands, 1-row bands
        monkeypatch.setattr(winograd, "MAX_TRANSFORMED", budget * 16)
        np.testing.assert_allclose(winograd.conv3x3(x, k), whole, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(winograd.conv3x3(x, k) ** 2))(x), grad,
                                   rtol=1e-5, atol=1e-5)
    assert _rel(whole, _direct(x, k)) < 5e-6


def test_jit_and_vmap(rng):
    x, k = _case(rng, 4, 8, 8, 8, 4)
    batched = jax.jit(winograd.conv3x3)(x, k)
    mapped = jax.vmap(lambda xi: winograd.conv3x3(xi[None], k)[0])(x)
    np.testing.assert_allclose(mapped, batched, rtol=1e-6, atol=1e-6)


def test_pays_only_for_wide_layers():
    assert not winograd.pays(64, 64) and not winograd.pays(3, 64) and not winograd.pays(64, 128)
    assert winograd.pays(256, 256) and winograd.pays(128, 256)


def test_vgg_fast_path_equals_direct(vgg16, rng):
    """conv='auto' (the transfer and scan path) equals XLA's conv in values and image gradients."""
    x = jnp.asarray(preprocess(rng.uniform(0, 255, (1, 36, 36, 3)), "caffe"), jnp.float32)
    layers = ("conv1_1", "conv3_1", "conv4_2", "conv5_1")

    def f(img, conv):
        acts = vgg.features(vgg16.params, img, layers, conv=conv)
        return sum(jnp.sum(jnp.square(a)) for a in acts.values()), acts

    (v_direct, a_direct), g_direct = jax.value_and_grad(f, has_aux=True)(x, "direct")
    for conv in ("auto", "winograd"):
        (v, acts), g = jax.value_and_grad(f, has_aux=True)(x, conv)
        for name in layers:
            assert _rel(acts[name], a_direct[name]) < 1e-5, (conv, name)
        assert float(v) == pytest.approx(float(v_direct), rel=1e-5)
        assert _rel(g, g_direct) < 1e-4
    with pytest.raises(StylejaxError, match="VGG family"):
        models.get("alexnet").features({}, x, ("conv1",), conv="winograd")


def test_direct_path_keeps_forward_mode(vgg16, rng):
    x = jnp.asarray(preprocess(rng.uniform(0, 255, (1, 16, 16, 3)), "caffe"), jnp.float32)
    f = lambda img: vgg.features(vgg16.params, img, ("conv3_1",))["conv3_1"]  # noqa: E731
    _, tangent = jax.jvp(f, (x,), (jnp.ones_like(x),))
    assert tangent.shape == (1, 4, 4, 256)


def test_unknown_conv_is_a_clear_error(vgg16):
    with pytest.raises(StylejaxError, match="unknown conv"):
        vgg.features(vgg16.params, jnp.zeros((1, 8, 8, 3)), ("conv1_1",), conv="fft")
