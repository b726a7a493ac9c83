"""Style statistics, the W2 distance and its matrix square root against independent float64 references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from stylejax import style_stats as ss


def _acts(rng, h=5, w=6, c=4, scale=3.0):
    return np.maximum(rng.normal(0.5, scale, (h, w, c)), 0.0)


def _w2_numpy(a_g, a_s, eps=1e-4):
    """Reference W2 in float64 from raw activations, square roots by scipy.linalg.sqrtm."""
    fg, fs = a_g.reshape(-1, a_g.shape[-1]), a_s.reshape(-1, a_s.shape[-1])
    mg, ms = fg.mean(0), fs.mean(0)
    cg = fg.T @ fg / len(fg) - np.outer(mg, mg) + eps * np.eye(len(mg))
    cs = fs.T @ fs / len(fs) - np.outer(ms, ms) + eps * np.eye(len(ms))
    rs = np.real(scipy.linalg.sqrtm(cs))
    cross = np.real(scipy.linalg.sqrtm(rs @ cg @ rs))
    return np.mean((mg - ms) ** 2) + np.trace(cs + cg - 2 * cross) / len(mg)


def test_moments_match_brute_force(rng):
    a = _acts(rng)
    m = rng.uniform(0, 1, a.shape[:2])
    got = ss.moments(jnp.asarray(a, jnp.float32))
    flat = a.reshape(-1, 4)
    np.testing.assert_allclose(got.mean, flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(got.second, flat.T @ flat / len(flat), rtol=1e-5)
    got = ss.moments(jnp.asarray(a, jnp.float32), jnp.asarray(m, jnp.float32))
    wts = m.reshape(-1)
    np.testing.assert_allclose(got.mean, wts @ flat / wts.sum(), rtol=1e-5)
    np.testing.assert_allclose(got.second, (flat * wts[:, None]).T @ flat / wts.sum(), rtol=1e-5)


def test_sqrtm_matches_scipy_in_float64(rng):
    x = rng.normal(size=(7, 30))
    a = x @ x.T / 30 + 1e-3 * np.eye(7)
    with jax.enable_x64(True):
        got = np.asarray(ss.sqrtm_psd(jnp.asarray(a, jnp.float64)))
    ref = np.real(scipy.linalg.sqrtm(a))
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got @ got, a, rtol=1e-10, atol=1e-12)


def test_sqrtm_derivative_matches_finite_differences(rng):
    x = rng.normal(size=(6, 20))
    a = x @ x.T / 20 + 0.05 * np.eye(6)
    d = rng.normal(size=(6, 6))
    d = d + d.T
    wts = rng.normal(size=(6, 6))
    with jax.enable_x64(True):
        f = lambda m: jnp.sum(jnp.asarray(wts) * ss.sqrtm_psd(m))  # noqa: E731
        a64, d64 = jnp.asarray(a), jnp.asarray(d)
        _, jvp = jax.jvp(ss.sqrtm_psd, (a64,), (d64,))
        grad = jax.grad(f)(a64)
    h = 1e-6
    fd_jvp = (np.real(scipy.linalg.sqrtm(a + h * d)) - np.real(scipy.linalg.sqrtm(a - h * d))) / (2 * h)
    np.testing.assert_allclose(np.asarray(jvp), fd_jvp, rtol=1e-6, atol=1e-8)
    fd_dir = (np.sum(wts * np.real(scipy.linalg.sqrtm(a + h * d)))
              - np.sum(wts * np.real(scipy.linalg.sqrtm(a - h * d)))) / (2 * h)
    np.testing.assert_allclose(np.sum(np.asarray(grad) * d), fd_dir, rtol=1e-6)


def test_w2_matches_float64_reference(rng):
    a_g, a_s = _acts(rng), _acts(rng, h=7, w=3, scale=5.0)
    with jax.enable_x64(True):
        target = ss.w2_target(ss.moments(jnp.asarray(a_s)))
        got = float(ss.w2_distance(ss.moments(jnp.asarray(a_g)), target))
    assert got == pytest.approx(_w2_numpy(a_g, a_s), rel=1e-9)
    # float32, as the transfer runs it
    target = ss.w2_target(ss.moments(jnp.asarray(a_s, jnp.float32)))
    got32 = float(ss.w2_distance(ss.moments(jnp.asarray(a_g, jnp.float32)), target))
    assert got32 == pytest.approx(_w2_numpy(a_g, a_s), rel=1e-4)


def test_w2_of_one_channel_is_the_gaussian_closed_form(rng):
    # 1-D Gaussians: W2^2 = (m1 - m2)^2 + (s1 - s2)^2 with s^2 = var + eps
    g, s = rng.normal(2, 3, (40, 1, 1)), rng.normal(-1, 0.5, (30, 1, 1))
    with jax.enable_x64(True):
        got = float(ss.w2_distance(ss.moments(jnp.asarray(g)), ss.w2_target(ss.moments(jnp.asarray(s)))))
    ref = (g.mean() - s.mean()) ** 2 + (np.sqrt(g.var() + 1e-4) - np.sqrt(s.var() + 1e-4)) ** 2
    assert got == pytest.approx(ref, rel=1e-10)


def test_w2_gradient_matches_finite_differences(rng):
    a_g, a_s = _acts(rng, c=5), _acts(rng, c=5, scale=2.0)
    with jax.enable_x64(True):
        target = ss.w2_target(ss.moments(jnp.asarray(a_s)))
        f = lambda a: ss.w2_distance(ss.moments(a), target)  # noqa: E731
        grad = np.asarray(jax.grad(f)(jnp.asarray(a_g)))
    d = rng.normal(size=a_g.shape) * (a_g > 0)  # stay on the positive side of the ReLU data
    h = 1e-6
    fd = (_w2_numpy(a_g + h * d, a_s) - _w2_numpy(a_g - h * d, a_s)) / (2 * h)
    assert np.sum(grad * d) == pytest.approx(fd, rel=1e-6)


def test_w2_of_style_with_itself_is_zero_and_gradient_finite(rng):
    a = jnp.asarray(_acts(rng, c=8), jnp.float32)
    target = ss.w2_target(ss.moments(a))
    value, grad = jax.value_and_grad(lambda x: ss.w2_distance(ss.moments(x), target))(a)
    assert abs(float(value)) < 1e-3 * float(jnp.trace(target.cov)) / 8
    assert np.all(np.isfinite(np.asarray(grad)))


def test_gram_distance_is_the_seed_style_layer_loss(rng):
    from stylejax import losses

    a_g, a_s = jnp.asarray(_acts(rng), jnp.float32), jnp.asarray(_acts(rng, h=3), jnp.float32)
    got = ss.gram_distance(ss.moments(a_g), ss.moments(a_s).second)
    ref = losses.style_layer_loss(a_g, losses.normalized_gram(a_s))
    assert float(got) == pytest.approx(float(ref), rel=1e-6)


def test_mask_of_ones_equals_no_mask(rng):
    a = jnp.asarray(_acts(rng), jnp.float32)
    plain, ones = ss.moments(a), ss.moments(a, jnp.ones(a.shape[:2]))
    np.testing.assert_allclose(ones.mean, plain.mean, rtol=1e-6)
    np.testing.assert_allclose(ones.second, plain.second, rtol=1e-6)
    target = ss.w2_target(ss.moments(jnp.asarray(_acts(rng), jnp.float32)))
    assert float(ss.w2_distance(ones, target)) == pytest.approx(float(ss.w2_distance(plain, target)), rel=1e-5)


def test_complementary_masks_add_up_to_no_mask(rng):
    a = jnp.asarray(_acts(rng, h=8, w=8), jnp.float32)
    m = jnp.asarray(rng.uniform(0, 1, (8, 8)), jnp.float32)
    left, right = ss.moments(a, m), ss.moments(a, 1 - m)
    ml = float(jnp.mean(m))
    both = ss.blend([left, right], [ml, 1 - ml])
    plain = ss.moments(a)
    np.testing.assert_allclose(both.mean, plain.mean, rtol=1e-5)
    np.testing.assert_allclose(both.second, plain.second, rtol=1e-5)


def test_blend_is_the_mixture_of_positions(rng):
    a, b = _acts(rng, h=4, w=5), _acts(rng, h=6, w=5, scale=1.0)
    mix = ss.blend([ss.moments(jnp.asarray(a)), ss.moments(jnp.asarray(b))], [20 / 50, 30 / 50])
    pooled = ss.moments(jnp.asarray(np.concatenate([a, b], axis=0)))
    np.testing.assert_allclose(mix.mean, pooled.mean, rtol=1e-5)
    np.testing.assert_allclose(mix.second, pooled.second, rtol=1e-5)


def test_area_resize_matches_opencv_inter_area(rng):
    import cv2

    m = rng.uniform(0, 1, (37, 50)).astype(np.float32)
    for h, w in ((9, 12), (18, 25), (37, 50), (5, 7)):
        ref = cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA)
        np.testing.assert_allclose(np.asarray(ss.area_resize(m, h, w)), ref, atol=1e-5, err_msg=f"{h}x{w}")


def test_zero_mass_mask_gives_zeros_not_nan(rng):
    a = jnp.asarray(_acts(rng), jnp.float32)
    got = ss.moments(a, jnp.zeros(a.shape[:2]))
    assert np.all(np.asarray(got.mean) == 0) and np.all(np.asarray(got.second) == 0)


def test_nuclear_norm_and_its_derivative_match_numpy(rng):
    a = rng.normal(size=(6, 6))
    d = rng.normal(size=(6, 6))
    with jax.enable_x64(True):
        value, jvp = jax.jvp(ss.nuclear_norm, (jnp.asarray(a),), (jnp.asarray(d),))
        grad = np.asarray(jax.grad(ss.nuclear_norm)(jnp.asarray(a)))
    nuc = lambda m: np.linalg.svd(m, compute_uv=False).sum()  # noqa: E731
    h = 1e-6
    fd = (nuc(a + h * d) - nuc(a - h * d)) / (2 * h)
    assert float(value) == pytest.approx(nuc(a), rel=1e-12)
    assert float(jvp) == pytest.approx(fd, rel=1e-6)
    assert np.sum(grad * d) == pytest.approx(fd, rel=1e-6)


def test_w2_cross_term_is_accurate_in_float32_for_wide_spectra(rng):
    # covariances spanning 1e-4 .. 1e7 (as VGG's conv4_1): the cross term's eigenvalues span the square
    vecs = np.linalg.qr(rng.normal(size=(64, 64)))[0]
    spectrum = np.geomspace(1e-4, 1e7, 64)
    second_s = (vecs * spectrum) @ vecs.T
    second_g = (vecs * spectrum[::-1] ** 0.5) @ vecs.T + 0.1 * second_s
    mean = np.zeros(64)
    ref = np.trace(second_s + second_g) / 64
    rs = np.real(scipy.linalg.sqrtm(second_s))
    ref -= 2 * np.trace(np.real(scipy.linalg.sqrtm(rs @ second_g @ rs))) / 64
    f32 = lambda m: jnp.asarray(m, jnp.float32)  # noqa: E731
    got = float(ss.w2_distance(ss.Moments(f32(mean), f32(second_g)), ss.w2_target(ss.Moments(f32(mean), f32(second_s)),
                                                                                       eps=0.0), eps=0.0))
    assert got == pytest.approx(ref, rel=1e-4)
