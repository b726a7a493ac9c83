"""Print size: the tiled objective and gradient equal the untiled ones on the real VGG16.

The untiled objective is itself checked against float64 PyTorch references elsewhere
(test_transfer, test_w2_masks); here the tiled one must reproduce it to 1e-4 relative at odd
sizes whose tiles do not divide the image, for max and avg pooling, the Gram and W2 losses,
region masks, TV and luminance-only; a halo one stride short must not.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from stylejax.cli import main
from stylejax.errors import StylejaxError
from stylejax.images import read_image, resize_longest
from stylejax.style import objective, tiling
from stylejax.style.objective import LossWeights, Spec
from stylejax.style.transfer import transfer

from conftest import data_path

SHALLOW = (("conv2_2",), ("conv1_1", "conv2_1", "conv3_1"))
DEEP = (("conv4_2",), ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"))


def _image(name: str, size: int) -> np.ndarray:
    return np.asarray(resize_longest(read_image(data_path("images", name)), size)).astype(np.float32)


@pytest.fixture(scope="module")
def pair():
    """tubingen f32[70, 93, 3] (content) and starry_night f32[50, 80, 3] (style), pixels 0-255."""
    return _image("tubingen.jpg", 93), _image("starry_night.jpg", 80)


def _untiled(w, spec, lw, x, t):
    return jax.jit(jax.value_and_grad(lambda v: objective.loss_terms(w, spec, lw, v, t), has_aux=True))(x)


def _tiled(w, spec, lw, x, t, grid):
    return jax.jit(lambda v: tiling.value_and_grad(w, spec, lw, v, t, grid))(x)


def _close(a, b, what: str, rtol: float = 1e-4) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    err = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
    assert err <= rtol, f"{what}: relative error {err:.2e}"
    return err


def _noisy(image: np.ndarray, seed: int = 0) -> jnp.ndarray:
    return jnp.asarray(image + np.random.default_rng(seed).normal(0, 20, image.shape).astype(np.float32))


@pytest.mark.parametrize("pooling, style_loss", [("max", "gram"), ("avg", "w2"), ("avg", "gram")])
def test_tiled_objective_and_gradient_equal_untiled(vgg16, pair, pooling, style_loss):
    content, style = pair
    spec = Spec(*SHALLOW, pooling=pooling, style_loss=style_loss)
    lw = LossWeights.of(1.0, 1e3, 1e-2, [0.5, 0.3, 0.2])
    grid = tiling.plan(vgg16.arch, spec.layers, content.shape[:2], 16)
    style_grid = tiling.plan(vgg16.arch, spec.style_layers, style.shape[:2], 16)
    assert grid.n == 15 and grid.shape[0] % grid.tile and grid.shape[1] % grid.tile   # tiles do not divide it

    whole = objective.targets(vgg16, spec, jnp.asarray(content), [jnp.asarray(style)], jnp.ones(1))
    tiled = jax.jit(lambda c, s: tiling.targets(vgg16, spec, c, [s], jnp.ones(1), None, grid, [style_grid])
                    )(content, style)
    _close(tiled["content"]["conv2_2"], whole["content"]["conv2_2"], "content target")
    for l in spec.style_layers:
        for k in whole["style"][l]:
            _close(tiled["style"][l][k], whole["style"][l][k], f"style target {l} {k}")

    x = _noisy(content)
    (j0, terms0), g0 = _untiled(vgg16, spec, lw, x, whole)
    (j1, terms1), g1 = _tiled(vgg16, spec, lw, x, whole, grid)
    for k in terms0:
        _close(terms1[k], terms0[k], k)
    _close(g1, g0, "gradient")


def test_default_layers_with_masks_and_luminance(vgg16):
    """The default layers (conv5_1: stride 16, halo 64) on four windows, two styles under
    complementary masks, W2, TV and the luminance variable."""
    content = _image("golden_gate.jpg", 200)
    styles = [_image("starry_night.jpg", 90), _image("the_scream.jpg", 90)]
    spec = Spec(*DEEP, style_loss="w2", luminance=True)
    lw = LossWeights.of(1.0, 1e4, 1e-2, [0.2] * 5)
    h, w_ = content.shape[:2]
    left = np.clip((np.arange(w_)[None, :] - w_ / 2 + 8) / 16, 0, 1) * np.ones((h, 1))
    masks = jnp.asarray(np.stack([1 - left, left]), jnp.float32)
    grid = tiling.plan(vgg16.arch, spec.layers, (h, w_), 16)
    assert grid.n == 4 and grid.halo == 64
    t = objective.targets(vgg16, spec, jnp.asarray(content), [jnp.asarray(s) for s in styles], jnp.ones(2) / 2, masks)
    x = jnp.asarray(content @ np.float32([0.299, 0.587, 0.114]))[..., None] + 3.0
    (j0, terms0), g0 = _untiled(vgg16, spec, lw, x, t)
    (j1, terms1), g1 = _tiled(vgg16, spec, lw, x, t, grid)
    for k in terms0:
        _close(terms1[k], terms0[k], k)
    _close(g1, g0, "gradient")


def test_a_halo_one_stride_short_is_wrong(vgg16, pair, monkeypatch):
    """The check can fail: with too little context the core positions near a seam are wrong."""
    content, style = pair
    spec = Spec(*SHALLOW)
    lw = LossWeights.of(1.0, 1e3, 0.0, [1 / 3] * 3)
    stride, halo = tiling.geometry(vgg16.arch, spec.layers)
    monkeypatch.setattr(tiling, "geometry", lambda arch, layers: (stride, halo - stride))
    grid = tiling.plan(vgg16.arch, spec.layers, content.shape[:2], 16)
    t = objective.targets(vgg16, spec, jnp.asarray(content), [jnp.asarray(style)], jnp.ones(1))
    x = _noisy(content, 1)
    (_, _), g0 = _untiled(vgg16, spec, lw, x, t)
    (_, _), g1 = _tiled(vgg16, spec, lw, x, t, grid)
    with pytest.raises(AssertionError):
        _close(g1, g0, "gradient", rtol=1e-3)


@pytest.mark.parametrize("shape", [(70, 93), (271, 513), (2172, 2896), (16, 700), (129, 129)])
@pytest.mark.parametrize("tile", [16, 100, 512])
def test_plan_partitions_the_image_with_aligned_windows_of_one_shape(shape, tile):
    grid = tiling.plan("vgg16", DEEP[0] + DEEP[1], shape, tile)
    owner = np.zeros(shape, np.int32)
    for (ay, ax), (y0, y1, x0, x1) in zip(grid.origins, grid.cores):
        assert ay % grid.stride == 0 and ax % grid.stride == 0
        assert ay + grid.window[0] <= shape[0] and ax + grid.window[1] <= shape[1]
        # the core lies inside its window with a full halo, except where the window meets the border
        assert y0 == 0 or y0 - ay >= grid.halo
        assert y1 == shape[0] or ay + grid.window[0] - y1 >= grid.halo
        assert x0 == 0 or x0 - ax >= grid.halo
        assert x1 == shape[1] or ax + grid.window[1] - x1 >= grid.halo
        assert all(v % grid.stride == 0 or v in shape for v in (y0, y1, x0, x1))
        owner[y0:y1, x0:x1] += 1
    assert (owner == 1).all()


def test_transfer_with_tiles_follows_the_untiled_run(vgg16):
    content = np.asarray(resize_longest(read_image(data_path("images", "tubingen.jpg")), 160))
    style = np.asarray(resize_longest(read_image(data_path("images", "starry_night.jpg")), 160))
    kw = dict(weights=vgg16, size=160, iters=3, optimizer="lbfgs", style_weight=1e3)
    a = transfer(content, style, **kw)
    b = transfer(content, style, tile=16, **kw)
    n = tiling.plan(vgg16.arch, DEEP[0] + DEEP[1], content.shape[:2], 16).n
    assert n > 1 and a.memory["tiles"] == 1 and b.memory["tiles"] == n and b.per_scale[-1]["tiles"] == n
    np.testing.assert_allclose(b.history, a.history, rtol=1e-4)
    np.testing.assert_allclose(b.loss["total"], a.loss["total"], rtol=1e-4)
    assert b.memory["peak_rss_gib"] > 0


def test_the_plan_tiles_and_cuts_the_history_to_the_budget():
    spec = Spec(*DEEP)
    shape = (2172, 2896)
    plan = tiling.choose("vgg16", spec, shape, optimizer="lbfgs", lbfgs_memory=100, max_memory=6.0)
    assert plan.grid is not None and plan.grid.n > 1 and plan.estimate <= 6 * 2**30
    assert 1 <= plan.lbfgs_memory < 100
    untiled = tiling.estimate("vgg16", spec, shape, optimizer="adam")
    assert untiled > 25 * 2**30  # about 30 GiB untiled
    small = tiling.choose("vgg16", spec, (256, 256), optimizer="adam", max_memory=6.0)
    assert small.grid is None and small.lbfgs_memory == 100
    with pytest.raises(StylejaxError, match="even with the smallest tiles"):
        tiling.choose("vgg16", spec, shape, optimizer="adam", max_memory=1.1)


def test_refusals(vgg16, pair):
    content, style = pair
    u8 = content.astype(np.uint8)
    for bad, match in [(dict(tile=0), "tile must be an integer"), (dict(tile=2.5), "tile must be an integer"),
                       (dict(max_memory=-1.0), "max_memory"), (dict(max_memory=float("nan")), "max_memory")]:
        with pytest.raises(StylejaxError, match=match):
            transfer(u8, style.astype(np.uint8), weights=vgg16, size=48, iters=1, **bad)
    with pytest.raises(StylejaxError, match="swag"):
        transfer(u8, style.astype(np.uint8), weights=vgg16, size=93, iters=1, tile=16, swag=1.0)


def test_cli_tile_and_16_bit_output(tmp_path, capsys):
    content, style = data_path("images", "tubingen.jpg"), data_path("images", "starry_night.jpg")
    for name in ("out.png", "out.tif"):
        out = tmp_path / name
        assert main(["transfer", str(content), str(style), "--size", "100", "--iters", "2", "--optimizer", "adam",
                     "--content-layers", "conv2_2", "--style-layers", "conv1_1,conv2_1,conv3_1",
                     "--tile", "16", "--output-depth", "16", "--quiet", "-o", str(out)]) == 0
        import cv2

        img = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint16 and img.shape == (75, 100, 3)
        assert len(np.unique(img)) > 256  # more levels than 8 bits hold
        report = json.loads(out.with_suffix(".json").read_text())
        n = tiling.plan("vgg16", SHALLOW[0] + SHALLOW[1], (75, 100), 16).n
        assert n > 1 and report["tiles"] == n and report["output_depth"] == 16 and report["memory"]["tile"] == 16
    assert main(["transfer", str(content), str(style), "--output-depth", "16", "-o", str(tmp_path / "o.jpg")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("stylejax: error: --output-depth 16 needs a .png")
    assert not (tmp_path / "o.jpg").exists()
    Image.open(tmp_path / "out.png").verify()
