"""Optical flow, the consistency mask, the warp and the temporal loss on real images moved by
known amounts; the warp and loss against float64 numpy written from their definitions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stylejax import temporal
from stylejax.errors import StylejaxError
from stylejax.images import read_image
from tests.conftest import data_path


@pytest.fixture(scope="module")
def photo():
    return read_image(data_path("images", "tubingen.jpg"), 200)  # u8[150, 200, 3]


def _pan(photo, dx, dy, h=96, w=128):
    """Two crops; the second shows at x what the first shows at x + (dx, dy)."""
    return photo[10:10 + h, 20:20 + w], photo[10 + dy:10 + dy + h, 20 + dx:20 + dx + w]


@pytest.mark.parametrize("method", temporal.FLOW_METHODS)
def test_flow_recovers_a_known_shift_both_ways(photo, method):
    a, b = _pan(photo, 4, 2)
    forward = temporal.optical_flow(a, b, method)
    backward = temporal.optical_flow(b, a, method)
    assert forward.shape == (96, 128, 2) and forward.dtype == np.float32
    for flow, image, expect in ((forward, a, (-4, -2)), (backward, b, (4, 2))):
        inner = flow[8:-8, 8:-8].reshape(-1, 2)
        np.testing.assert_allclose(np.median(inner, 0), expect, atol=0.05)
        gy, gx = np.gradient(image.mean(-1))
        textured = (np.hypot(gx, gy)[8:-8, 8:-8] > 10).reshape(-1)  # flat sky has no defined flow
        assert textured.mean() > 0.3
        assert np.mean(np.linalg.norm(inner[textured] - expect, axis=1) < 0.25) > 0.9


def test_mask_marks_pixels_from_outside_the_previous_frame(photo):
    prev, cur = _pan(photo, 4, 2)
    c = temporal.consistency_mask(temporal.optical_flow(cur, prev), temporal.optical_flow(prev, cur))
    assert c.shape == (96, 128) and set(np.unique(c)) <= {0.0, 1.0}
    assert (c[:, -4:] == 0).all() and (c[-2:, :] == 0).all()  # came into view this frame
    assert c[4:-8, 4:-8].mean() > 0.97


def test_mask_marks_a_disocclusion_behind_a_moving_patch(photo):
    background = photo[:96, :128]
    patch = read_image(data_path("images", "starry_night.jpg"), 100)[:32, :32]
    prev, cur = background.copy(), background.copy()
    prev[30:62, 40:72] = patch
    cur[30:62, 46:78] = patch  # the patch moves 6 px right and uncovers a strip behind it
    c = temporal.consistency_mask(temporal.optical_flow(cur, prev), temporal.optical_flow(prev, cur))
    assert c[32:60, 41:46].mean() < 0.2  # the uncovered strip
    assert c[34:58, 50:74].mean() > 0.95 and c[70:90, 90:120].mean() > 0.95  # patch and far background


def _bilinear64(image, flow):
    """image(x + flow(x)) with coordinates clamped to the image, float64, one pixel at a time."""
    h, w = image.shape[:2]
    out = np.zeros(image.shape, np.float64)
    for i in range(h):
        for j in range(w):
            x = min(max(j + float(flow[i, j, 0]), 0.0), w - 1.0)
            y = min(max(i + float(flow[i, j, 1]), 0.0), h - 1.0)
            x0, y0 = min(int(np.floor(x)), w - 2), min(int(np.floor(y)), h - 2)
            fx, fy = x - x0, y - y0
            out[i, j] = ((1 - fy) * ((1 - fx) * image[y0, x0] + fx * image[y0, x0 + 1])
                         + fy * ((1 - fx) * image[y0 + 1, x0] + fx * image[y0 + 1, x0 + 1]))
    return out


def test_warp_matches_float64_bilinear_and_moves_a_real_crop(photo, rng):
    img = photo[:24, :32].astype(np.float32)
    flow = rng.uniform(-5, 5, (24, 32, 2)).astype(np.float32)
    got = np.asarray(jax.jit(temporal.warp)(img, flow))
    np.testing.assert_allclose(got, _bilinear64(img.astype(np.float64), flow), atol=2e-3)
    prev, cur = _pan(photo, 4, 2)
    moved = np.asarray(temporal.warp(prev.astype(np.float32), np.full((96, 128, 2), (4.0, 2.0), np.float32)))
    np.testing.assert_array_equal(moved[:-2, :-4], cur[:-2, :-4].astype(np.float32))


def test_temporal_loss_value_and_gradient_against_numpy(rng):
    x = rng.uniform(0, 255, (12, 10, 3))
    t = rng.uniform(0, 255, (12, 10, 3))
    c = (rng.uniform(size=(12, 10)) > 0.3).astype(np.float64)
    expect = np.sum(c[..., None] * (x - t) ** 2)
    f32 = [jnp.asarray(v, jnp.float32) for v in (x, t, c)]
    np.testing.assert_allclose(float(temporal.temporal_loss(*f32)), expect, rtol=1e-5)
    grad = np.asarray(jax.grad(temporal.temporal_loss)(*f32))
    np.testing.assert_allclose(grad, 2 * c[..., None] * (x - t), rtol=1e-4, atol=1e-3)


def test_flicker_is_zero_for_a_perfect_pan_and_grows_with_noise(photo, rng):
    clip = np.stack([photo[10:58, 4 * t:4 * t + 64] for t in range(4)])
    assert temporal.flicker(clip, (4, 0)) == 0.0
    noisy = np.clip(clip + rng.normal(0, 10, clip.shape), 0, 255).astype(np.uint8)
    assert 5 < temporal.flicker(noisy, (4, 0)) < 15


@pytest.mark.parametrize("method", temporal.FLOW_METHODS)
def test_frames_under_the_flow_minimum_are_refused_and_any_shape_at_it_works(photo, method):
    """DIS crashed the process on a frame 8-15 px high and 40 or more wide; the mask's gradient
    failed on 1 px frames after Farneback."""
    need = temporal.MIN_FLOW_SIDE[method]
    thin = photo[:need - 1, :64]
    with pytest.raises(StylejaxError, match=f"needs at least {need} px on the shorter side"):
        temporal.optical_flow(thin, thin, method)
    for a, b in ((photo[:need, :200], photo[2:need + 2, :200]), (photo[:, :need], photo[:, 2:need + 2])):
        back, fwd = temporal.optical_flow(b, a, method), temporal.optical_flow(a, b, method)
        assert np.isfinite(back).all() and temporal.consistency_mask(back, fwd).shape == a.shape[:2]


def test_bad_inputs_are_refused():
    a = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(StylejaxError, match="differ in size"):
        temporal.optical_flow(a, np.zeros((16, 12, 3), np.uint8))
    with pytest.raises(StylejaxError, match="u8"):
        temporal.optical_flow(a.astype(np.float32), a)
    with pytest.raises(StylejaxError, match="unknown flow method"):
        temporal.optical_flow(a, a, "deepflow")
    with pytest.raises(StylejaxError, match="f32"):
        temporal.consistency_mask(np.zeros((16, 16, 2)), np.zeros((16, 12, 2)))
    with pytest.raises(ValueError, match="warp needs"):
        temporal.warp(jnp.zeros((16, 16, 3)), jnp.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match="temporal_loss needs"):
        temporal.temporal_loss(jnp.zeros((4, 4, 3)), jnp.zeros((4, 4, 3)), jnp.zeros((4, 3)))


def test_engine_objective_adds_the_term_with_a_traced_weight(vgg16, photo):
    """J with Spec.temporal = J without + lambda_t * sum c (x - w)^2 (numpy), for two lambda_t
    values through one compiled function."""
    from stylejax.style import objective

    spec = objective.Spec(("conv1_2",), ("conv1_1",), temporal=True)
    plain = objective.Spec(("conv1_2",), ("conv1_1",))
    content = jnp.asarray(photo[:16, :16], jnp.float32)
    style = jnp.asarray(photo[40:56, 60:76], jnp.float32)
    x = jnp.asarray(photo[2:18, 3:19], jnp.float32)
    image = np.asarray(photo[1:17, 1:17], np.float64)
    mask = (np.arange(16 * 16).reshape(16, 16) % 3 > 0).astype(np.float64)
    targets = objective.targets(vgg16, plain, content, [style], jnp.ones((1,), jnp.float32))
    with_t = {**targets, "temporal": {"image": jnp.asarray(image, jnp.float32), "mask": jnp.asarray(mask, jnp.float32)}}
    total = jax.jit(lambda lw, t: objective.loss_terms(vgg16, spec, lw, x, t)[1])
    base = float(objective.loss_terms(vgg16, plain, objective.LossWeights.of(1.0, 10.0, 0.0, [1.0]), x, targets)[0])
    jt = np.sum(mask[..., None] * (np.asarray(x, np.float64) - image) ** 2)
    for lam in (0.5, 3.0):
        terms = total(objective.LossWeights.of(1.0, 10.0, 0.0, [1.0], temporal=lam), with_t)
        np.testing.assert_allclose(float(terms["temporal"]), jt, rtol=1e-5)
        np.testing.assert_allclose(float(terms["total"]), base + lam * jt, rtol=1e-5)
    assert total._cache_size() == 1
