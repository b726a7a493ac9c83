"""The style-transfer objective against hand-computed values, numpy and finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stylejax import losses

A = np.array([[[1.0, 2.0]], [[3.0, 4.0]]], np.float32)  # h=2, w=1, C=2


def test_gram_hand_computed():
    # G = sum_ij a_ijk a_ijk': [[1+9, 2+12], [2+12, 4+16]]
    np.testing.assert_array_equal(losses.gram(A), [[10.0, 14.0], [14.0, 20.0]])
    np.testing.assert_array_equal(losses.normalized_gram(A), [[5.0, 7.0], [7.0, 10.0]])
    empty = np.zeros((1, 0, 3), np.float32)  # a layer with no positions (image smaller than its pools)
    np.testing.assert_array_equal(losses.normalized_gram(empty), np.zeros((3, 3)))
    batched = losses.gram(np.stack([A, 2 * A]))
    np.testing.assert_array_equal(batched[1], 4 * np.array([[10.0, 14.0], [14.0, 20.0]]))


def test_content_loss_hand_computed():
    a = np.array([[[1.0, 2.0, 3.0]]], np.float32)
    t = np.array([[[0.0, 0.0, 1.0]]], np.float32)
    assert float(losses.content_loss(a, t)) == pytest.approx(0.5 * (1 + 4 + 4))


def test_style_layer_loss_equal_sizes_is_the_formula(rng):
    h, w, c = 3, 4, 5
    s, g = rng.random((h, w, c)).astype(np.float32), rng.random((h, w, c)).astype(np.float32)
    gs = np.einsum("ijk,ijl->kl", s.astype(np.float64), s)
    gg = np.einsum("ijk,ijl->kl", g.astype(np.float64), g)
    want = np.sum((gs - gg) ** 2) / (h * w * c) ** 2  # ||G(S) - G(G)||^2 / (nH nW nC)^2
    got = losses.style_layer_loss(g, losses.normalized_gram(s))
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_style_layer_loss_hand_computed_different_sizes():
    # style: A (M_S = 2) -> G/M = [[5, 7], [7, 10]]; generated: one position [1, 1] -> [[1, 1], [1, 1]]
    g = np.ones((1, 1, 2), np.float32)
    want = ((5 - 1) ** 2 + 2 * (7 - 1) ** 2 + (10 - 1) ** 2) / 2**2
    assert float(losses.style_layer_loss(g, losses.normalized_gram(A))) == pytest.approx(want)


def test_style_loss_layer_weights():
    acts = {"a": np.ones((1, 1, 2), np.float32), "b": np.zeros((1, 1, 1), np.float32)}
    targets = {"a": np.zeros((2, 2), np.float32), "b": np.full((1, 1), 3.0, np.float32)}
    # Js[a] = 4 / 4 = 1; Js[b] = 9 / 1 = 9
    assert float(losses.style_loss(acts, targets, {"a": 0.5, "b": 0.5})) == pytest.approx(5.0)
    assert float(losses.style_loss(acts, targets, {"a": 2.0, "b": 0.0})) == pytest.approx(2.0)
    assert losses.default_layer_weights(["a", "b"]) == {"a": 0.5, "b": 0.5}
    assert losses.default_layer_weights(["a", "b"], [1, 3]) == {"a": 1.0, "b": 3.0}
    with pytest.raises(ValueError):
        losses.default_layer_weights(["a", "b"], [1.0])


def test_tv_loss_hand_computed():
    x = np.array([[0.0, 1.0], [2.0, 4.0]], np.float32)[:, :, None]
    # only the corner (0, 0): dx = 0 - 1, dy = 0 - 2 -> 1/2 (1 + 4)
    assert float(losses.tv_loss(x)) == pytest.approx(2.5)
    assert float(losses.tv_loss(np.full((5, 6, 3), 7.0, np.float32))) == 0.0


def test_tv_gradient_is_jcjohnson_tvloss(rng):
    x = rng.random((5, 6, 3)).astype(np.float32)
    grad = np.asarray(jax.grad(losses.tv_loss)(x))
    # TVLoss:updateGradInput of jcjohnson/neural-style (CHW there, HWC here)
    x_diff = x[:-1, :-1] - x[:-1, 1:]
    y_diff = x[:-1, :-1] - x[1:, :-1]
    want = np.zeros_like(x)
    want[:-1, :-1] += x_diff + y_diff
    want[:-1, 1:] -= x_diff
    want[1:, :-1] -= y_diff
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-6)


def test_total_loss():
    assert float(losses.total_loss(2.0, 3.0, 5.0, 10.0, 100.0, 0.1)) == pytest.approx(320.5)
    assert float(losses.total_loss(2.0, 3.0, 5.0, 10.0, 100.0)) == pytest.approx(320.0)


def _fd_check(fn, x, eps=1e-6, n=12, seed=0):
    """Central differences in float64 on ``n`` random coordinates vs jax.grad."""
    g = np.asarray(jax.grad(fn)(x))
    r = np.random.default_rng(seed)
    for idx in zip(*[r.integers(0, s, n) for s in x.shape]):
        e = np.zeros(x.shape)
        e[idx] = eps
        fd = (float(fn(x + e)) - float(fn(x - e))) / (2 * eps)
        assert g[idx] == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_gradients_match_finite_differences(rng):
    with jax.enable_x64(True):
        s = jnp.asarray(rng.random((4, 3, 5)))
        t_gram = losses.normalized_gram(s)
        target = jnp.asarray(rng.random((2, 3, 5)))
        x = rng.random((2, 3, 5))
        _fd_check(lambda a: losses.style_layer_loss(a, t_gram), x)
        _fd_check(lambda a: losses.content_loss(a, target), x)
        _fd_check(losses.tv_loss, rng.random((4, 5, 3)))
        _fd_check(lambda a: losses.total_loss(losses.content_loss(a, target),
                                              losses.style_layer_loss(a, t_gram),
                                              losses.tv_loss(a), 0.7, 3.0, 0.2), x)


def test_gram_derivatives_forward_and_reverse(rng):
    """The Gram's custom JVP: one-product reverse mode and forward mode equal the plain einsum's."""
    plain = lambda a: jnp.einsum("...hwk,...hwl->...kl", a, a)  # noqa: E731
    with jax.enable_x64(True):
        a, t = jnp.asarray(rng.random((2, 3, 4, 5))), jnp.asarray(rng.random((2, 3, 4, 5)))
        ct = jnp.asarray(rng.random((2, 5, 5)))  # not symmetric: both halves of the cotangent count
        np.testing.assert_allclose(losses.gram(a), plain(a), rtol=1e-12)
        np.testing.assert_allclose(jax.vjp(losses.gram, a)[1](ct)[0], jax.vjp(plain, a)[1](ct)[0], rtol=1e-12)
        np.testing.assert_allclose(jax.jvp(losses.gram, (a,), (t,))[1], jax.jvp(plain, (a,), (t,))[1], rtol=1e-12)
        np.testing.assert_allclose(jax.hessian(lambda x: jnp.sum(losses.gram(x) ** 2))(a[0, :1, :2]),
                                   jax.hessian(lambda x: jnp.sum(plain(x) ** 2))(a[0, :1, :2]), rtol=1e-10)


def test_style_gradient_closed_form(rng):
    # dJs/da_ijk = 4 / (M C^2) * sum_k' a_ijk' (G(a)/M - T)_k'k   (M = h w)
    a = rng.random((3, 2, 4)).astype(np.float64)
    t = rng.random((4, 4))
    t = t + t.T
    with jax.enable_x64(True):
        got = np.asarray(jax.grad(losses.style_layer_loss)(a, t))
    m, c = 6, 4
    diff = np.einsum("ijk,ijl->kl", a, a) / m - t
    want = 4.0 / (m * c**2) * np.einsum("ijk,kl->ijl", a, diff)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_normalized_term_value_and_l1_gradient(rng):
    a = jnp.asarray(rng.random((3, 3, 4)).astype(np.float32))
    t = jnp.asarray(rng.random((3, 3, 4)).astype(np.float32))
    plain = losses.content_loss(a, t)
    assert float(losses.normalized_term(losses.content_loss, a, t)) == pytest.approx(float(plain))
    g = jax.grad(lambda v: 7.0 * losses.normalized_term(losses.content_loss, v, t))(a)
    raw = jax.grad(losses.content_loss)(a, t)
    # L1-normalised, then scaled by the weight (as jcjohnson's -normalize_gradients)
    np.testing.assert_allclose(g, 7.0 * raw / (np.abs(raw).sum() + 1e-8), rtol=1e-5)
    assert float(jnp.abs(g).sum()) == pytest.approx(7.0, rel=1e-5)
    # and it composes with jit and vmap
    f = jax.jit(jax.vmap(jax.grad(lambda v, tt: losses.normalized_term(losses.style_layer_loss, v, tt))))
    out = f(jnp.stack([a, 2 * a]), jnp.stack([losses.normalized_gram(t)] * 2))
    np.testing.assert_allclose(np.abs(np.asarray(out)).sum(axis=(1, 2, 3)), [1.0, 1.0], rtol=1e-5)


def test_jcjohnson_mapping(rng):
    """alpha Jc + beta lambda Js equals jcjohnson's w_c MSE(a, p) + w_s MSE(G/(CHW), T)."""
    h, w, c = 4, 5, 6
    hs, ws = 3, 7
    a, p = rng.random((h, w, c)), rng.random((h, w, c))
    s = rng.random((hs, ws, c))
    wc, wsty = 5.0, 100.0
    mse_content = wc * np.mean((a - p) ** 2)
    g_a = np.einsum("ijk,ijl->kl", a, a) / (c * h * w)
    t = np.einsum("ijk,ijl->kl", s, s) / (c * hs * ws)
    mse_style = wsty * np.mean((g_a - t) ** 2)
    alpha, beta, lam = 2 * wc / (c * h * w), wsty, 1.0 / c**2
    with jax.enable_x64(True):
        ours = alpha * losses.content_loss(a, p) + beta * lam * losses.style_layer_loss(a, losses.normalized_gram(s))
    assert float(ours) == pytest.approx(mse_content + mse_style, rel=1e-10)
