"""Deconvnet and guided-backprop projections: hand cases, gradients, receptive fields, torch."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import data_path

from stylejax import models
from stylejax.errors import StylejaxError
from stylejax.images import read_image
from stylejax.activations import features
from stylejax.interpret.projection import (
    project,
    project_batch,
    projection_of,
    to_picture,
)
from stylejax.preprocessing import CAFFE_BGR_MEAN, preprocess

# Published receptive fields of VGG16 (size, jump, centre of the first unit), e.g. Araujo et al.
# 2019 "Computing receptive fields of CNNs": conv1_1 3, conv2_1 10, conv3_1 24.
RF = {"conv1_1": (3, 1, 0.0), "conv2_1": (10, 2, 0.5), "conv3_1": (24, 4, 1.5)}


def rf_box(layer: str, y: int, x: int, h: int, w: int):
    size, jump, start = RF[layer]
    half = (size - 1) / 2
    cy, cx = start + jump * y, start + jump * x
    return (max(0, int(cy - half)), min(h - 1, int(cy + half)),
            max(0, int(cx - half)), min(w - 1, int(cx + half)))


@pytest.fixture(scope="module")
def image48():
    return read_image(data_path("images", "tubingen.jpg"), 48)


def _act(w, pixels, layer):
    return np.asarray(features(w, pixels, layer)[layer])


@pytest.mark.parametrize("y,x", [(10, 20), (0, 0), (35, 47)])
def test_deconvnet_conv1_1_is_the_filter_at_the_position(vgg16, image48, y, x):
    act = _act(vgg16, image48, "conv1_1")
    unit = int(np.argmax(act[y, x]))
    a = act[y, x, unit]
    assert a > 0
    got = np.asarray(project(vgg16, image48, "conv1_1", unit, y, x, "deconvnet"))
    kernel = np.asarray(vgg16.params["conv1_1"]["kernel"])[:, :, :, unit]  # [3, 3, BGR]
    h, w = image48.shape[:2]
    expected = np.zeros((h + 2, w + 2, 3), np.float32)  # padded canvas, offset 1
    expected[y:y + 3, x:x + 3] = a * kernel[:, :, ::-1]  # caffe input is BGR -> RGB pixels
    expected = expected[1:-1, 1:-1]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # Guided backprop at the first layer is the same thing (the only ReLU is the unit's own).
    guided = np.asarray(project(vgg16, image48, "conv1_1", unit, y, x, "guided"))
    np.testing.assert_allclose(guided, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def _positive_weights(vgg16, seed=0):
    """VGG16 shapes with kernels >= 0 and biases > 0: every ReLU passes on bright images."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, p in vgg16.params.items():
        k = p["kernel"]
        fan_in = k.shape[0] * k.shape[1] * k.shape[2]
        kernel = np.abs(rng.standard_normal(k.shape, np.float32)) / fan_in
        params[name] = {"kernel": jnp.asarray(kernel), "bias": jnp.full(p["bias"].shape, 0.1)}
    return dataclasses.replace(vgg16, params=params)


def test_guided_equals_gradient_when_all_relus_pass(vgg16, rng):
    w = _positive_weights(vgg16)
    pixels = rng.uniform(200, 255, (32, 32, 3)).astype(np.float32)  # caffe input > 0 everywhere
    x_pre = preprocess(pixels, "caffe")
    assert float(x_pre.min()) > 0
    layer, unit, y, x = "conv3_1", 5, 3, 4

    def unit_value(p):
        return features(w, p, layer)[layer][y, x, unit]

    a = unit_value(pixels)
    grad = np.asarray(a * jax.grad(unit_value)(jnp.asarray(pixels)))
    assert np.abs(grad).max() > 0
    for method in ("guided", "deconvnet", "gradient"):
        got = np.asarray(project(w, pixels, layer, unit, y, x, method))
        np.testing.assert_allclose(got, grad, rtol=1e-5, atol=1e-6 * np.abs(grad).max())


def test_methods_differ_on_real_weights(vgg16, image48):
    y, x = 5, 6
    unit = int(np.argmax(_act(vgg16, image48, "conv3_1")[y, x]))
    got = {m: np.asarray(project(vgg16, image48, "conv3_1", unit, y, x, m))
           for m in ("deconvnet", "guided", "gradient")}
    for a, b in (("deconvnet", "guided"), ("guided", "gradient"), ("deconvnet", "gradient")):
        rel = np.abs(got[a] - got[b]).max() / np.abs(got[b]).max()
        assert rel > 0.05, (a, b, rel)


@pytest.mark.parametrize("layer,positions", [
    ("conv1_1", [(0, 0), (20, 30), (35, 47)]),
    ("conv2_1", [(0, 0), (10, 12), (17, 23)]),
    ("conv3_1", [(0, 0), (5, 6), (8, 11)]),
])
def test_support_is_the_receptive_field(vgg16, image48, layer, positions):
    h, w = image48.shape[:2]
    act = _act(vgg16, image48, layer)
    ys, xs = zip(*positions)
    units = [int(np.argmax(act[y, x])) for y, x in positions]
    for method in ("deconvnet", "guided"):
        proj = np.asarray(project_batch(vgg16, np.repeat(image48[None], len(positions), 0),
                                        layer, units, ys, xs, method))
        for p, (y, x) in zip(proj, positions):
            y0, y1, x0, x1 = rf_box(layer, y, x, h, w)
            mask = np.zeros((h, w), bool)
            mask[y0:y1 + 1, x0:x1 + 1] = True
            nonzero = np.abs(p).sum(-1) > 0
            assert nonzero.any()
            assert not nonzero[~mask].any(), (method, layer, y, x)
            if method == "deconvnet":  # the signal reaches the whole box: the RF is tight
                rows, cols = np.nonzero(nonzero)
                assert (rows.min(), rows.max(), cols.min(), cols.max()) == (y0, y1, x0, x1)


def test_batch_equals_single_projections(vgg16, image48):
    units, ys, xs = [3, 70, 200], [1, 4, 8], [2, 7, 11]
    images = np.stack([image48, image48[::-1], image48[:, ::-1]])
    batch = np.asarray(project_batch(vgg16, images, "conv3_1", units, ys, xs, "guided"))
    for i in range(3):
        one = np.asarray(project(vgg16, images[i], "conv3_1", units[i], ys[i], xs[i], "guided"))
        np.testing.assert_allclose(batch[i], one, rtol=1e-5, atol=1e-6 * (np.abs(one).max() + 1e-12))


def test_projection_of_any_forward():
    """The generic entry point works for a hand-written forward: y = relu(w * relu(x))."""
    forward = lambda p, relu: relu(-2.0 * relu(p))
    x = jnp.array([[[1.0, -1.0, 3.0]]])  # [1, 1, 3]
    # Unit 0 is relu(-2) = 0: nothing to project. Positive values through a negative weight:
    f2 = lambda p, relu: relu(2.0 * relu(p) - 1.0)
    assert np.all(np.asarray(projection_of(forward, x, 0, 0, 0, "deconvnet")) == 0)
    np.testing.assert_allclose(projection_of(f2, x, 2, 0, 0, "deconvnet"), [[[0, 0, 10.0]]])
    np.testing.assert_allclose(projection_of(f2, x, 0, 0, 0, "guided"), [[[2.0, 0, 0]]])


def _torch_reference(params, pixels, layer, unit, y, x, method):
    torch = pytest.importorskip("torch")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _torch_projection(torch, params, pixels, layer, unit, y, x, method)
    finally:
        torch.set_default_dtype(old)


def _torch_projection(torch, params, pixels, layer, unit, y, x, method):

    class Deconv(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.clamp(min=0)

        @staticmethod
        def backward(ctx, g):
            return g.clamp(min=0)

    from torch_reference import GuidedReLU  # imports torch: only once it is known to be installed

    relu = {"deconvnet": Deconv.apply, "guided": GuidedReLU.apply}[method]
    img = torch.tensor(np.asarray(pixels, np.float64), requires_grad=True)
    mean = torch.tensor(CAFFE_BGR_MEAN.astype(np.float64))
    t = (img.flip(-1) - mean).permute(2, 0, 1)[None]  # caffe: BGR minus mean, NCHW
    for item in models.get("vgg16").layers:
        if item.kind == "conv":
            k = torch.tensor(np.asarray(params[item.name]["kernel"], np.float64)).permute(3, 2, 0, 1)
            b = torch.tensor(np.asarray(params[item.name]["bias"], np.float64))
            t = relu(torch.nn.functional.conv2d(t, k, b, padding=1))
        else:
            t = torch.nn.functional.max_pool2d(t, 2, 2)
        if item.name == layer:
            break
    onehot = torch.zeros_like(t)
    onehot[0, unit, y, x] = t[0, unit, y, x].detach()
    t.backward(onehot)
    return img.grad.numpy()


@pytest.mark.parametrize("method", ["deconvnet", "guided"])
def test_matches_torch_autograd_function(vgg16, method):
    pixels = read_image(data_path("images", "tubingen.jpg"), 64)
    act = _act(vgg16, pixels, "conv3_1")
    y, x = act.shape[0] // 2, act.shape[1] // 2
    unit = int(np.argmax(act[y, x]))
    ours = np.asarray(project(vgg16, pixels, "conv3_1", unit, y, x, method))
    ref = _torch_reference(vgg16.params, pixels, "conv3_1", unit, y, x, method)
    assert np.abs(ref).max() > 0
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel < 1e-4, rel


def test_to_picture():
    p = np.zeros((4, 5, 3), np.float32)
    assert np.all(to_picture(p) == 128)
    p[1, 2, 0], p[3, 3, 1] = 2.0, -4.0
    pic = to_picture(p)
    assert pic.dtype == np.uint8 and pic.shape == (4, 5, 3)
    assert pic[3, 3, 1] == 1 and pic[1, 2, 0] == 192 and pic[0, 0, 0] == 128


def test_bad_requests(vgg16, image48):
    with pytest.raises(StylejaxError, match="valid layers: conv1_1"):
        project(vgg16, image48, "conv9_9", 0, 0, 0)
    with pytest.raises(StylejaxError, match="unit 64 out of range"):
        project(vgg16, image48, "conv1_1", 64, 0, 0)
    with pytest.raises(StylejaxError, match="y 10 out of range"):
        project(vgg16, image48, "conv3_1", 0, 10, 0)
    with pytest.raises(StylejaxError, match="unknown projection method"):
        project(vgg16, image48, "conv1_1", 0, 0, 0, method="lrp")
    with pytest.raises(StylejaxError, match="one unit, y and x per image"):
        project_batch(vgg16, image48[None], "conv1_1", [0, 1], [0], [0])
