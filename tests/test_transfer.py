"""Style transfer on the real VGG16 at tiny sizes: the objective, the loop, batching, colour."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stylejax import color
from stylejax.activations import features
from stylejax.errors import StylejaxError
from stylejax.images import resize_longest
from stylejax.style import config, objective
from stylejax.style.loop import evaluate
from stylejax.style.objective import LossWeights
from stylejax.style.transfer import _scale_targets, spec_of, transfer, transfer_batch


@pytest.fixture(scope="module")
def images():
    r = np.random.default_rng(1)
    yy, xx = np.mgrid[0:24, 0:32]
    content = np.stack([xx * 8, yy * 10, 128 + 60 * np.sin(xx / 3.0)], -1).clip(0, 255).astype(np.uint8)
    style = r.integers(0, 256, (20, 20, 3)).astype(np.uint8)
    return content, style


FAST = config.Options(size=32, iters=4, style_weight=10.0, optimizer="lbfgs")


def extract_features(w, x, layers):
    return features(w, x, layers)


def _targets(w, s, c, style, size=32):
    s = config.validate(s, w.arch, 1)
    spec = spec_of(s)
    return spec, _scale_targets(w, spec, s, c, [style], jnp.ones((1,)), size)


def test_objective_terms_match_numpy_losses(vgg16, images):
    content, style = images
    c = content[None].astype(np.float32)
    spec, targets = _targets(vgg16, FAST, c, style)
    lam_all = (0.1, 0.2, 0.3, 0.2, 0.2)
    lw = LossWeights.of(2.0, 3.0, 0.5, lam_all)
    x = c + np.random.default_rng(0).normal(0, 20, c.shape).astype(np.float32)
    terms = evaluate(vgg16, lw, jnp.asarray(x), targets, spec=spec)
    # independent composition: features -> numpy float64 losses
    fx = {k: np.asarray(v[0], np.float64) for k, v in extract_features(vgg16, x, spec.layers).items()}
    content_layer = spec.content_layers[0]
    fc = extract_features(vgg16, c, [content_layer])[content_layer][0]
    style_32 = np.asarray(resize_longest(style, 32))  # the style is resized to style_scale * size
    fs = extract_features(vgg16, style_32[None], spec.style_layers)
    jc = 0.5 * np.sum((fx[content_layer] - np.asarray(fc, np.float64)) ** 2)
    js = 0.0
    for lam, l in zip(lam_all, spec.style_layers):
        a, sa = fx[l], np.asarray(fs[l][0], np.float64)
        g = np.einsum("ijk,ijl->kl", a, a) / (a.shape[0] * a.shape[1])
        t = np.einsum("ijk,ijl->kl", sa, sa) / (sa.shape[0] * sa.shape[1])
        js += lam * np.sum((g - t) ** 2) / a.shape[-1] ** 2
    d = x[0].astype(np.float64)
    tv = 0.5 * np.sum((d[:-1, :-1] - d[:-1, 1:]) ** 2 + (d[:-1, :-1] - d[1:, :-1]) ** 2)
    assert float(terms["content"][0]) == pytest.approx(jc, rel=1e-4)
    assert float(terms["style"][0]) == pytest.approx(js, rel=1e-3)
    assert float(terms["tv"][0]) == pytest.approx(tv, rel=1e-5)
    assert float(terms["total"][0]) == pytest.approx(2 * jc + 3 * js + 0.5 * tv, rel=1e-3)


def test_lbfgs_and_adam_decrease_the_objective(vgg16, images):
    content, style = images
    for opt, lr in (("lbfgs", None), ("adam", None), ("gd", 1e-6)):
        r = transfer(content, style, weights=vgg16, options=FAST, optimizer=opt, iters=6, lr=lr)
        assert r.image.shape == (24, 32, 3) and r.image.dtype == np.uint8
        assert r.iterations == 6 and not r.interrupted and not r.diverged
        assert r.loss["total"] < 0.7 * r.history[0], opt  # history[0]: J at the start
        assert r.s_per_iter > 0 and r.seconds > 0
        assert set(r.loss) >= {"total", "content", "style", "tv"}


def test_batch_is_vmapped_independent_runs(vgg16, images):
    content, style = images
    other = np.ascontiguousarray(content[::-1, ::-1])
    s = dataclasses.replace(FAST, optimizer="adam", iters=3)
    batch = transfer_batch(np.stack([content, other]), [style], weights=vgg16, options=s)
    alone = [transfer(c, [style], weights=vgg16, options=s) for c in (content, other)]
    for b in range(2):
        assert batch.losses[b]["total"] == pytest.approx(alone[b].loss["total"], rel=1e-3)
        assert np.abs(batch.images[b].astype(int) - alone[b].image).max() <= 2


def test_random_init_is_seeded(vgg16, images):
    content, style = images
    s = dataclasses.replace(FAST, init="random", iters=2)
    a = transfer(content, style, weights=vgg16, options=s)
    b = transfer(content, style, weights=vgg16, options=s)
    c = transfer(content, style, weights=vgg16, options=s, seed=1)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.loss["total"] != c.loss["total"]


def test_multiscale_blend_and_options(vgg16, images):
    content, style = images
    gray_style = np.repeat(style[..., :1], 3, -1)
    s = dataclasses.replace(FAST, scales=(16, 32), iters=2, style_blend=(3.0, 1.0), normalize_gradients=True,
                            tv_weight=1e-3, pooling="avg", style_scale=0.5, match_histogram=True)
    r = transfer(content, [style, gray_style], weights=vgg16, options=s)
    assert r.images.shape == (1, 24, 32, 3)
    assert [p["shape"] for p in r.per_scale] == [[12, 16], [24, 32]]
    assert r.iterations == 4 and np.isfinite(r.loss["total"])


def test_luminance_only_and_original_colors_keep_content_chroma(vgg16, images):
    content, style = images
    chroma = np.asarray(color.rgb_to_yiq(content.astype(np.float32)))[..., 1:]
    for flag in ("luminance_only", "original_colors"):
        r = transfer(content, style, weights=vgg16, options=FAST, iters=3, **{flag: True})
        out = np.asarray(color.rgb_to_yiq(r.image.astype(np.float32)))
        # chroma is the content's up to u8 rounding and clipping of saturated pixels
        assert np.median(np.abs(out[..., 1:] - chroma)) < 1.0, flag
        assert np.abs(out[..., 0] - np.asarray(color.luminance(content.astype(np.float32)))[..., 0]).mean() > 0.5


def test_interrupt_returns_best_so_far(vgg16, images):
    content, style = images

    def callback(p):
        assert p.image().shape == (24, 32, 3) and p.total == 50
        if p.done == 3:
            raise KeyboardInterrupt

    r = transfer(content, style, weights=vgg16, options=FAST, iters=50, callback=callback)
    assert r.interrupted and r.iterations == 3
    assert r.images.shape == (1, 24, 32, 3)
    assert r.loss["total"] <= min(r.history) * (1 + 1e-5)


def test_classic_weights_mapping(vgg16):
    spec = spec_of(config.validate(FAST, "vgg16", 1))
    alpha, beta, lam = objective.neural_style_weights(vgg16, spec, (384, 512), 5.0, 100.0)
    assert alpha == pytest.approx(2 * 5 / (512 * 48 * 64))
    assert beta == 100.0
    assert lam == pytest.approx((1 / 64**2, 1 / 128**2, 1 / 256**2, 1 / 512**2, 1 / 512**2))


def test_validate_refuses_bad_settings():
    for bad in (dict(iters=0), dict(content_weight=float("nan")), dict(style_weight=-1.0),
                dict(tv_weight=float("inf")), dict(content_layers=("conv9_9",)), dict(style_layers=("nope",)),
                dict(style_blend=(1.0,)), dict(style_layer_weights=(1.0, 2.0)), dict(lr=0.0),
                dict(style_scale=0.0), dict(optimizer="sgd"), dict(luminance_only=True, original_colors=True),
                dict(seed=-1), dict(size=True), dict(pooling="min")):
        with pytest.raises(StylejaxError):
            config.validate(dataclasses.replace(FAST, **bad), "vgg16", 2)


def test_match_color_gives_content_statistics(rng):
    style = rng.random((30, 40, 3)).astype(np.float32) * np.array([200, 50, 20], np.float32)
    content = rng.random((20, 20, 3)).astype(np.float32) @ np.array([[100, 20, 0], [0, 80, 30], [10, 0, 90]],
                                                                    np.float32) + 40
    out = np.asarray(color.match_color(style, content), np.float64).reshape(-1, 3)
    c = content.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(out.mean(0), c.mean(0), atol=0.05)
    np.testing.assert_allclose(np.cov(out, rowvar=False), np.cov(c, rowvar=False), rtol=1e-3, atol=0.05)


def test_yiq_round_trip_and_luminance_match(rng):
    x = rng.random((5, 6, 3)).astype(np.float32) * 255
    np.testing.assert_allclose(color.yiq_to_rgb(color.rgb_to_yiq(x)), x, atol=1e-3)
    assert float(color.luminance(np.full((1, 1, 3), 100.0, np.float32))[0, 0, 0]) == pytest.approx(100.0, rel=1e-5)
    y = color.match_luminance(jnp.asarray(x[..., :1]), jnp.asarray(x[..., 1:2] * 0.5 + 10))
    assert float(jnp.mean(y)) == pytest.approx(float(np.mean(x[..., 1] * 0.5 + 10)), rel=1e-4)
    assert float(jnp.std(y)) == pytest.approx(float(np.std(x[..., 1] * 0.5)), rel=1e-4)


def test_step_is_one_jitted_call_that_composes_with_grad(vgg16, images):
    # the objective is differentiable end to end and jit/vmap compose (no host callbacks inside)
    content, style = images
    spec, targets = _targets(vgg16, FAST, content[None].astype(np.float32), style)
    t0 = jax.tree.map(lambda a: a[0], targets)
    lw = LossWeights.of(1.0, 10.0, 0.0, (0.2,) * 5)
    f = jax.jit(jax.grad(lambda v: objective.loss_terms(vgg16, spec, lw, v, t0)[0]))
    text = f.lower(jnp.asarray(content, jnp.float32)).as_text()
    assert "callback" not in text
    g = np.asarray(f(jnp.asarray(content, jnp.float32) + 1.0))
    assert g.shape == content.shape and np.isfinite(g).all() and np.abs(g).sum() > 0


def test_swag_smooths_activations_before_the_losses(vgg16, images):
    """With swag=tau the losses see softmax(a / tau) * (h w C) of each layer (Wang et al. 2021)."""
    content, style = images
    c = content[None].astype(np.float32)
    spec, targets = _targets(vgg16, dataclasses.replace(FAST, swag=2.0), c, style)
    x = np.random.default_rng(3).uniform(0, 255, c.shape).astype(np.float32)
    terms = evaluate(vgg16, LossWeights.of(1.0, 1.0, 0.0, (0.2,) * 5), jnp.asarray(x), targets, spec=spec)
    content_layer = spec.content_layers[0]

    def smooth(a):
        a = np.asarray(a, np.float64)
        e = np.exp((a - a.max()) / 2.0)
        return e / e.sum() * a.size

    fx = smooth(extract_features(vgg16, x, [content_layer])[content_layer][0])
    fc = smooth(extract_features(vgg16, c, [content_layer])[content_layer][0])
    expected = 0.5 * np.sum((fx - fc) ** 2)
    assert expected > 1.0
    assert float(terms["content"][0]) == pytest.approx(expected, rel=1e-3)
    result = transfer(content, style, weights=vgg16, options=FAST, swag=2.0)
    assert result.loss["total"] < float(terms["total"][0]) * 10 and np.isfinite(result.loss["total"])
    with pytest.raises(StylejaxError, match="swag"):
        config.validate(dataclasses.replace(FAST, swag=-1.0), "vgg16", 1)


def test_batch_shards_over_two_devices_with_identical_results(vgg16, images, tmp_path):
    """transfer_batch on 2 forced host devices equals the single-device run."""
    import subprocess
    import sys

    content, style = images
    contents = np.stack([content, content[::-1]])
    np.savez(tmp_path / "in.npz", contents=contents, style=style)
    code = (
        "import sys, numpy as np, jax\n"
        "import stylejax\n"
        "d = np.load(sys.argv[1])\n"
        "r = stylejax.transfer_batch(d['contents'], d['style'], size=32, iters=3, optimizer='adam')\n"
        "np.savez(sys.argv[2], images=r.images, loss=[l['total'] for l in r.losses], devices=len(jax.devices()))\n")
    import os

    runs = {}
    for n in (1, 2):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
        out = tmp_path / f"out{n}.npz"
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "in.npz"), str(out)], env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[n] = np.load(out)
    assert int(runs[2]["devices"]) == 2
    np.testing.assert_allclose(runs[2]["loss"], runs[1]["loss"], rtol=1e-4)
    assert np.abs(runs[2]["images"].astype(int) - runs[1]["images"].astype(int)).max() <= 1


def test_bfloat16_precision_runs_and_stays_close(vgg16, images):
    content, style = images
    r32 = transfer(content, style, weights=vgg16, options=FAST, optimizer="adam")
    r16 = transfer(content, style, weights=vgg16, options=FAST, optimizer="adam", precision="bfloat16")
    assert np.isfinite(r16.loss["total"])
    assert r16.loss["total"] == pytest.approx(r32.loss["total"], rel=0.1)
    with pytest.raises(StylejaxError, match="precision"):
        config.validate(dataclasses.replace(FAST, precision="float8"), "vgg16", 1)
