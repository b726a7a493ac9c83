"""Activation maximisation: parameterisation, transforms, objectives, the vmapped optimisation, CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from stylejax.cli import main
from stylejax.errors import StylejaxError
from stylejax.interpret import param
from stylejax.interpret.synthesis import (
    Settings,
    check_settings,
    gram_similarity,
    redirected_relu,
    visualize,
)


# ----------------------------------------------------------------------------- parameterisation
def _numpy_fft_image(spectrum: np.ndarray, h: int, w: int) -> np.ndarray:
    """Independent numpy version of Lucid's fft_image + to_valid_rgb(decorrelate, sigmoid)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    freqs = np.sqrt(fx ** 2 + fy ** 2)
    scale = np.sqrt(w * h) / np.maximum(freqs, 1.0 / max(w, h))
    img = np.fft.irfft2(scale * (spectrum[0] + 1j * spectrum[1]), s=(h, w)).transpose(0, 2, 3, 1) / 4
    m = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    m = m / np.linalg.norm(m, axis=0).max()
    return 1 / (1 + np.exp(-(img @ m.T)))


@pytest.mark.parametrize("h,w", [(32, 32), (17, 24), (20, 15)])
def test_fft_image_shape_range_determinism_and_numpy_reference(h, w):
    key = jax.random.key(3)
    spec = param.fft_init(key, 2, h, w)
    assert spec.shape == (2, 2, 3, h, w // 2 + 1)
    to_rgb = jax.jit(param.fft_to_rgb, static_argnums=(1, 2))
    img = np.asarray(to_rgb(spec, h, w))
    assert img.shape == (2, h, w, 3) and img.dtype == np.float32
    assert img.min() > 0 and img.max() < 1 and img.std() > 1e-3
    np.testing.assert_array_equal(img, np.asarray(to_rgb(param.fft_init(key, 2, h, w), h, w)))
    other = np.asarray(to_rgb(param.fft_init(jax.random.key(4), 2, h, w), h, w))
    assert np.abs(other - img).max() > 1e-3
    np.testing.assert_allclose(img, _numpy_fft_image(np.asarray(spec, np.float64), h, w), atol=2e-6)
    zero = np.asarray(to_rgb(jnp.zeros_like(spec), h, w))
    np.testing.assert_allclose(zero, 0.5)


def test_spectrum_scale_is_one_over_frequency():
    s = param.spectrum_scale(64, 64)
    f = param.rfft2d_freqs(64, 64)
    assert s[0, 0] == pytest.approx(64 * 64)  # the DC bin is clamped at 1 / max(h, w)
    np.testing.assert_allclose(s[1:, 1:] * f[1:, 1:], 64.0, rtol=1e-5)


# ----------------------------------------------------------------------------- transforms
def test_transforms_keep_shapes_and_are_keyed():
    img = jax.random.uniform(jax.random.key(0), (40, 40, 3))
    transform = jax.jit(param.random_transform)
    for i in range(4):
        out = transform(jax.random.key(i), img)
        assert out.shape == (52, 52, 3)
        assert float(out.min()) >= 0 and float(out.max()) <= 1
    a = transform(jax.random.key(7), img)
    np.testing.assert_array_equal(a, transform(jax.random.key(7), img))
    batch = jax.vmap(param.random_transform)(jax.random.split(jax.random.key(1), 3),
                                             jnp.stack([img] * 3))
    assert batch.shape == (3, 52, 52, 3)
    # Gradients flow back to every pixel through the resampling.
    g = jax.jit(jax.grad(lambda x: jnp.sum(transform(jax.random.key(2), x) ** 2)))(img)
    assert g.shape == img.shape and float(jnp.abs(g).sum()) > 0


def _t(j1, j2, scale=1.0, angle=0.0):
    return {"jitter1": jnp.array(j1, jnp.float32), "jitter2": jnp.array(j2, jnp.float32),
            "scale": jnp.float32(scale), "angle": jnp.float32(angle)}


def test_transform_geometry_by_hand():
    img = np.random.default_rng(0).uniform(size=(20, 20, 3)).astype(np.float32)
    # Crops adding up to the padding: the image itself at the top left, padding colour elsewhere.
    out = np.asarray(param.apply_transform(jnp.asarray(img), _t((8, 8), (4, 4))))
    np.testing.assert_allclose(out[:20, :20], img, atol=1e-6)
    np.testing.assert_allclose(out[20:], 0.5)
    # Pure translation by the jitters: offsets (3, 5) and (1, 2) shift by 12 - 4 - 3 = 8 rows ...
    out = np.asarray(param.apply_transform(jnp.asarray(img), _t((3, 5), (1, 2))))
    np.testing.assert_allclose(out[8:28, 5:25], img, atol=1e-6)
    # Centred (j1 = 4, j2 = 2): a quarter turn is np.rot90 about the centre; zoom keeps the centre.
    out = np.asarray(param.apply_transform(jnp.asarray(img), _t((4, 4), (2, 2), 1.0, np.pi / 2)))
    np.testing.assert_allclose(out[6:26, 6:26], np.rot90(img, k=1), atol=1e-5)
    big = np.asarray(param.apply_transform(jnp.asarray(img), _t((4, 4), (2, 2), 2.0, 0.0)))
    # Output pixel 16 is 0.5 px from the centre 15.5 -> 0.25 px from the input centre 9.5: 9.75.
    expected = (0.0625 * img[9, 9] + 0.1875 * img[9, 10] + 0.1875 * img[10, 9] + 0.5625 * img[10, 10])
    np.testing.assert_allclose(big[16, 16], expected, atol=1e-5)


# ----------------------------------------------------------------------------- pieces
def test_gram_similarity_by_hand():
    a = jnp.ones((1, 2, 2, 3))
    assert float(gram_similarity(jnp.concatenate([a, a]))) == pytest.approx(1.0)
    e0 = jnp.zeros((1, 1, 1, 2)).at[..., 0].set(1.0)
    e1 = jnp.zeros((1, 1, 1, 2)).at[..., 1].set(3.0)
    assert float(gram_similarity(jnp.concatenate([e0, e1]))) == pytest.approx(0.0)
    three = jnp.concatenate([a, a, 2 * a])  # all pairs similar: 6 ordered pairs / 3
    assert float(gram_similarity(three)) == pytest.approx(2.0)


def test_redirected_relu_gradient():
    x = jnp.array([[-1.0, -2.0], [1.0, -3.0]])  # entry 0 all off, entry 1 half on
    g = jnp.array([[-0.5, 0.7], [0.2, -0.4]])    # cotangent of a minimised loss
    _, back = jax.vjp(lambda t: redirected_relu(t, jnp.float32(1)), x)
    np.testing.assert_allclose(back(g)[0], [[-0.5, 0.0], [0.2, 0.0]])
    _, back = jax.vjp(lambda t: redirected_relu(t, jnp.float32(0)), x)
    np.testing.assert_allclose(back(g)[0], [[0.0, 0.0], [0.2, 0.0]])
    np.testing.assert_allclose(redirected_relu(x, jnp.float32(1)), jax.nn.relu(x))


# ----------------------------------------------------------------------------- optimisation
def test_objective_increases_strongly_and_redirected_relu_revives_a_dead_unit(vgg16):
    s = Settings(layer="conv2_1", steps=20, size=64)
    r = visualize(vgg16, [3, 10, 50], s, seed=0)
    assert r.images.shape == (3, 1, 64, 64, 3) and r.images.dtype == np.uint8
    assert r.history.shape == (3, 20)
    live, dead = slice(0, 2), 2
    assert np.all(r.objective_initial[live] > 0)
    assert np.all(r.objective_final[live] > 5 * r.objective_initial[live]), r.objective_final
    assert np.all(r.history[live, -1] > 5 * r.history[live, 0])
    # Unit 50 starts switched off everywhere: no gradient reaches the image, it never moves.
    assert r.objective_initial[dead] == 0 and np.all(r.history[dead] == 0)
    revived = visualize(vgg16, [3, 10, 50], replace(s, redirected_relu=True), seed=0)
    assert revived.objective_final[dead] > 1.0
    assert np.all(revived.objective_final[live] > 5 * revived.objective_initial[live])


def test_vmapped_units_equal_single_runs(vgg16):
    s = Settings(layer="conv1_2", steps=3, size=32, batch=2, objective="diversity")
    together = visualize(vgg16, [5, 7, 40], s, seed=11)
    for i, unit in enumerate([5, 7, 40]):
        alone = visualize(vgg16, [unit], s, seed=11)
        np.testing.assert_allclose(together.history[i], alone.history[0], rtol=1e-4)
        np.testing.assert_allclose(together.objective_final[i], alone.objective_final[0], rtol=1e-4)
        assert np.abs(together.images[i].astype(int) - alone.images[0]).max() <= 1
    assert np.abs(together.images[0].astype(int) - together.images[1]).max() > 10


def test_bad_settings(vgg16):
    with pytest.raises(StylejaxError, match="valid layers: conv1_1, conv1_2"):
        check_settings(vgg16, Settings(layer="conv6_1"), [0])
    with pytest.raises(StylejaxError, match=r"unit 128 out of range for conv2_1 \(128 channels"):
        check_settings(vgg16, Settings(layer="conv2_1"), [1, 128])
    with pytest.raises(StylejaxError, match="unit -1 out of range"):
        check_settings(vgg16, Settings(layer="conv2_1"), [-1])
    with pytest.raises(StylejaxError, match="steps must be a positive integer"):
        check_settings(vgg16, Settings(layer="conv2_1", steps=0), [0])
    with pytest.raises(StylejaxError, match="too small for the transforms"):
        check_settings(vgg16, Settings(layer="conv2_1", size=8), [0])
    with pytest.raises(StylejaxError, match="too small for pool5"):  # 1 x 1 on the canvas, empty on the image
        check_settings(vgg16, Settings(layer="pool5", size=20), [0])
    with pytest.raises(StylejaxError, match="diversity objective needs a batch of at least 2"):
        check_settings(vgg16, Settings(layer="conv2_1", objective="diversity"), [0])
    with pytest.raises(StylejaxError, match="lr must be"):
        check_settings(vgg16, Settings(layer="conv2_1", lr=float("nan")), [0])
    with pytest.raises(StylejaxError, match="unknown objective"):
        check_settings(vgg16, Settings(layer="conv2_1", objective="max"), [0])


# ----------------------------------------------------------------------------- CLI
def test_cli_writes_grid_and_report(vgg16, tmp_path, capsys):
    out, report = tmp_path / "v.png", tmp_path / "r.json"
    # The settings of the test above: the compiled step is reused from jit's cache.
    code = main(["visualize", "--layer", "conv1_2", "--units", "5,7,40", "--steps", "3", "--size", "32",
                 "--objective", "diversity", "--batch", "2", "--seed", "11", "-o", str(out),
                 "--report", str(report), "--quiet"])
    assert code == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape == (14 + 2 * 32 + 2, 3 * 32 + 2 * 2, 3)
    data = json.loads(report.read_text())
    assert data["settings"]["objective"] == "diversity" and data["settings"]["steps"] == 3
    assert [u["unit"] for u in data["units"]] == [5, 7, 40]
    assert all(len(u["history"]) == 3 for u in data["units"])
    assert all(np.isfinite(u["objective_final"]) for u in data["units"])
    assert data["seconds_first_call"] > 0 and data["seconds_per_step"] > 0 and data["seed"] == 11
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--layer", "conv9_1", "--units", "0"], "unknown layer 'conv9_1'; valid layers: conv1_1"),
    (["--layer", "conv1_1", "--units", "64"], "unit 64 is outside conv1_1"),
    (["--layer", "conv1_1", "--units", "60:70"], "unit 64 is outside conv1_1"),
    (["--layer", "conv1_1", "--units", "0", "--size", "10"], "too small for the transforms"),
    (["--layer", "conv1_1", "--units", "0", "--objective", "diversity"], "needs a batch of at least 2"),
    (["--layer", "conv1_1", "--units", "x"], "expected"),
    (["--layer", "conv1_1", "--units", "0", "--steps", "0"], "positive integer"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, argv, message):
    out = tmp_path / "v.png"
    try:
        code = main(["visualize", *argv, "-o", str(out)])
    except SystemExit as exc:  # argparse type errors exit 2
        code = exc.code
    assert code != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not out.with_suffix(".json").exists()
