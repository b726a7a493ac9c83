"""Attribution maps against float64 PyTorch references written from primitives, on real images."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

import torch_reference as ref
from conftest import data_path
from stylejax.errors import StylejaxError
from stylejax.images import read_image
from stylejax.interpret import attribution as A

LAYER, AT = "conv2_2", "conv1_2"
WINDOW, STRIDE, STEPS = 8, 6, 16
BASELINE_RGB = np.array([123.68, 116.779, 103.939])  # the Caffe BGR mean, in RGB order


@pytest.fixture(scope="module")
def image():
    """golden_gate.jpg at 36 x 48. (On tubingen.jpg's flat 8-bit sky, neighbours that tie exactly
    in float64 differ by an ulp in float32, and max pooling sends a path point's gradient to the
    other pixel: IG then differs from the float64 reference by 1.3e-3 of its peak at one pixel,
    a tie-breaking difference rather than an error.)"""
    return read_image(data_path("images", "golden_gate.jpg"), 48)


@pytest.fixture(scope="module")
def torch_weights(vgg16):
    return ref.oihw(vgg16.params)


def _t(pixels, torch_weights, unit, layer=LAYER, guided=False):
    """Reference T for f64[N, H, W, 3] pixels (a tensor, so gradients can flow)."""
    acts = ref.run(ref.VGG16, torch_weights, ref.caffe_input(pixels), stop=layer, guided=guided)
    return ref.target(acts[layer], unit)


def _grad(pixels: np.ndarray, torch_weights, unit, guided=False) -> np.ndarray:
    x = torch.tensor(np.asarray(pixels, np.float64), requires_grad=True)
    _t(x if x.ndim == 4 else x[None], torch_weights, unit, guided=guided).sum().backward()
    return x.grad.numpy()


@pytest.fixture(scope="module")
def unit(image, torch_weights):
    """The conv2_2 channel with the largest response to the image (chosen by the reference)."""
    x = ref.caffe_input(torch.tensor(image[None], dtype=torch.float64))
    a = ref.run(ref.VGG16, torch_weights, x, stop=LAYER)[LAYER][0]
    return int(a.amax(dim=(1, 2)).argmax())


def _close(got, want, frac=1e-3):
    err = np.abs(np.asarray(got, np.float64) - want).max()
    peak = np.abs(want).max()
    assert peak > 0 and err <= frac * peak, (err, peak, err / peak)
    return err / peak


def _run(vgg16, image, method, unit, **kw):
    return A.attribute(vgg16, image, A.Settings(method, LAYER, unit, **kw))


def test_target_and_baseline(vgg16, image, unit, torch_weights):
    r = _run(vgg16, image, "saliency", unit)
    want = float(_t(torch.tensor(image[None], dtype=torch.float64), torch_weights, unit)[0])
    base = float(_t(torch.tensor(np.broadcast_to(BASELINE_RGB, image.shape)[None].copy()), torch_weights, unit)[0])
    assert want > 0
    np.testing.assert_allclose([r.target, r.baseline], [want, base], rtol=1e-4, atol=1e-4 * want)
    np.testing.assert_allclose(np.asarray(A.baseline_pixel("caffe")), BASELINE_RGB, rtol=1e-6)


def test_occlusion_matches_reference(vgg16, image, unit, torch_weights):
    r = _run(vgg16, image, "occlusion", unit, window=WINDOW, stride=STRIDE, chunk=8)  # 35 images, 5 chunks
    h, w = image.shape[:2]
    rows, cols = (h - WINDOW) // STRIDE + 1, (w - WINDOW) // STRIDE + 1
    assert r.map.shape == (rows, cols) == (5, 7)
    images = np.repeat(image[None].astype(np.float64), rows * cols, 0)
    for n, (i, j) in enumerate(np.ndindex(rows, cols)):
        images[n, i * STRIDE:i * STRIDE + WINDOW, j * STRIDE:j * STRIDE + WINDOW] = BASELINE_RGB
    with torch.no_grad():
        t0 = _t(torch.tensor(image[None], dtype=torch.float64), torch_weights, unit)[0]
        want = (t0 - _t(torch.tensor(images), torch_weights, unit)).numpy().reshape(rows, cols)
    rel = _close(r.map, want)
    print(f"occlusion error / peak {rel:.2e}")
    assert r.heat.shape == (h, w) and r.heat.min() >= 0


def _reference_cam(image, torch_weights, unit):
    x = ref.caffe_input(torch.tensor(image[None], dtype=torch.float64))
    a = ref.run(ref.VGG16, torch_weights, x, stop=AT)[AT].detach().requires_grad_(True)
    t = ref.target(ref.run(ref.VGG16, torch_weights, a, start=AT, stop=LAYER)[LAYER], unit)
    t.sum().backward()
    weights = a.grad.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * a).sum(dim=1))[0].detach()


def test_gradcam_matches_reference(vgg16, image, unit, torch_weights):
    r = _run(vgg16, image, "gradcam", unit, at=AT)
    want = _reference_cam(image, torch_weights, unit).numpy()
    assert r.map.shape == want.shape == (36, 48) and r.at == AT
    rel = _close(r.map, want)
    print(f"gradcam error / peak {rel:.2e}")


def test_guided_gradcam_matches_reference(vgg16, image, unit, torch_weights):
    r = _run(vgg16, image, "guided-gradcam", unit, at=AT)
    cam = _reference_cam(image, torch_weights, unit)
    up = torch.nn.functional.interpolate(cam[None, None], size=image.shape[:2], mode="bilinear",
                                         align_corners=False)[0, 0].numpy()
    guided = _grad(image, torch_weights, unit, guided=True)
    plain = _grad(image, torch_weights, unit)
    assert np.abs(guided - plain).max() > 0.05 * np.abs(plain).max()  # guided backprop is not the gradient
    rel = _close(r.map, guided * up[..., None])
    print(f"guided-gradcam error / peak {rel:.2e}")


def test_integrated_gradients_matches_reference_and_completeness(vgg16, image, unit, torch_weights):
    r = _run(vgg16, image, "ig", unit, steps=STEPS, chunk=8)
    x0 = np.broadcast_to(BASELINE_RGB, image.shape)
    path = np.stack([x0 + m / STEPS * (image - x0) for m in range(1, STEPS + 1)])
    want = (image - x0) * _grad(path, torch_weights, unit).mean(axis=0)
    rel = _close(r.map, want)
    print(f"IG error / peak {rel:.2e}")
    # Completeness: the sum of the map is T(x) - T(x0), up to the Riemann sum's error.
    total = r.map.sum(dtype=np.float64)
    gap = abs(total - (r.target - r.baseline)) / abs(r.target - r.baseline)
    print(f"IG completeness gap / (T(x) - T(x0)) at {STEPS} steps: {gap:.2e}")
    assert gap < 5e-3
    np.testing.assert_allclose(r.extra["completeness_gap"], total - (r.target - r.baseline), rtol=1e-9)


def test_saliency_and_smoothgrad_match_reference(vgg16, image, unit, torch_weights):
    r = _run(vgg16, image, "saliency", unit)
    print(f"saliency error / peak {_close(r.map, _grad(image, torch_weights, unit)):.2e}")
    s = _run(vgg16, image, "smoothgrad", unit, samples=4, noise=0.1, seed=3, chunk=2)
    eps = 255.0 * 0.1 * np.asarray(jax.random.normal(jax.random.key(3), (4, *image.shape)), np.float64)
    print(f"smoothgrad error / peak {_close(s.map, _grad(image + eps, torch_weights, unit).mean(axis=0)):.2e}")
    zero = _run(vgg16, image, "smoothgrad", unit, samples=4, noise=0.0, chunk=2)  # noise is traced: no recompile
    np.testing.assert_allclose(zero.map, r.map, rtol=1e-5, atol=1e-7 * np.abs(r.map).max())


def test_another_unit_reuses_the_compiled_code(vgg16, image, unit):
    _run(vgg16, image, "gradcam", unit, at=AT)
    before = A.gradcam._cache_size()
    other = _run(vgg16, image, "gradcam", (unit + 1) % 128, at=AT)
    assert A.gradcam._cache_size() == before
    assert other.unit == (unit + 1) % 128
    _run(vgg16, image, "occlusion", unit, window=WINDOW, stride=STRIDE, chunk=8)
    before = A.occlusion_chunk._cache_size()
    wide = _run(vgg16, image, "occlusion", (unit + 1) % 128, window=12, stride=12, chunk=8)  # window is traced too
    assert A.occlusion_chunk._cache_size() == before and wide.map.shape == (3, 4)


@pytest.mark.parametrize("settings,needle", [
    (dict(method="occlusion", layer=LAYER, unit=128), "unit 128 is outside conv2_2"),
    (dict(method="saliency", layer=LAYER, unit=-1), "unit must be an integer >= 0"),
    (dict(method="saliency", layer="conv9_9", unit=0), "unknown layer 'conv9_9'"),
    (dict(method="occlusion", layer=LAYER, unit=0, window=40), "window 40 is larger than the 36x48 image"),
    (dict(method="occlusion", layer=LAYER, unit=0, stride=0), "stride must be an integer >= 1"),
    (dict(method="occlusion", layer=LAYER, unit=0, window=0), "window must be an integer >= 1"),
    (dict(method="ig", layer=LAYER, unit=0, steps=0), "steps must be an integer >= 1"),
    (dict(method="ig", layer=LAYER, unit=0, steps=-3), "steps must be an integer >= 1"),
    (dict(method="smoothgrad", layer=LAYER, unit=0, samples=0), "samples must be an integer >= 1"),
    (dict(method="smoothgrad", layer=LAYER, unit=0, noise=float("nan")), "noise must be a finite number"),
    (dict(method="lime", layer=LAYER, unit=0), "unknown attribution method 'lime'"),
    (dict(method="gradcam", layer=LAYER, unit=0, at="pool1"), "must be a conv layer"),
    (dict(method="gradcam", layer="conv1_2", unit=0, at="conv2_1"), "comes after the target layer"),
    (dict(method="saliency", layer="fc8", unit=0), "tumour"),
    (dict(method="saliency", layer="pool5", unit=0), "too small for pool5"),
])
def test_bad_input_is_one_clear_error(vgg16, settings, needle):
    pixels = np.zeros((36, 48, 3), np.uint8) if settings["layer"] != "pool5" else np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(StylejaxError, match=None) as info:
        A.attribute(vgg16, pixels, A.Settings(**settings))
    assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_pixels(vgg16):
    for pixels, needle in ((np.zeros((8, 8)), "got shape (8, 8)"), (np.zeros((2, 36, 48, 3)), "one image"),
                           (np.full((36, 48, 3), np.nan), "finite"), (np.zeros((36, 48, 3), bool), "dtype bool")):
        with pytest.raises(StylejaxError, match=None) as info:
            A.attribute(vgg16, pixels, A.Settings("saliency", LAYER, 0))
        assert needle in str(info.value)


def test_occlusion_grid_and_heat_by_hand():
    offsets = A.occlusion_offsets(7, 9, 3, 2)  # rows (7-3)//2+1 = 3, cols (9-3)//2+1 = 4
    assert offsets.shape == (12, 2) and offsets[:5].tolist() == [[0, 0], [0, 2], [0, 4], [0, 6], [2, 0]]
    m = np.zeros((3, 4))
    m[0, 0], m[0, 1], m[2, 3] = 4.0, 2.0, -1.0
    heat = A.occlusion_heat(m, 7, 9, 3, 2)
    assert heat[0, 0] == 4.0 and heat[0, 2] == 3.0  # column 2 lies in windows (0, 0) and (0, 1)
    assert heat.min() == 0.0  # negative M is clipped
    assert heat[:, 8].max() == 0.0 and heat[6].max() == 0.0
