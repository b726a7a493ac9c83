"""Region masks in a real run: two paintings on complementary halves of a real photo.

Each half of the result must be much closer (mask-weighted W2, float64 from the activations) to
its own style than to the other one; an unmasked blend of the two is about equally far from both.
"""

from __future__ import annotations

import numpy as np

from stylejax.activations import features
from stylejax.images import read_image, resize_longest
from stylejax.style.transfer import transfer

from conftest import data_path

SIZE = 64
#: the layers up to 256 channels keep the run short on a CPU (W2 needs an eigh and an SVD per layer)
LAYERS = ("conv1_1", "conv2_1", "conv3_1")


def _image(name: str) -> np.ndarray:
    return np.asarray(resize_longest(read_image(data_path("images", name)), SIZE))


def _area(m: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    return cv2.resize(m.astype(np.float64), (w, h), interpolation=cv2.INTER_AREA)


def _stats(a: np.ndarray, m: np.ndarray | None = None):
    f = a.reshape(-1, a.shape[-1]).astype(np.float64)
    wts = np.ones(len(f)) if m is None else m.reshape(-1)
    return wts @ f / wts.sum(), (f * wts[:, None]).T @ f / wts.sum()


def _sqrt_psd(a):
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.maximum(vals, 0.0))) @ vecs.T


def _w2(g, s, eps=1e-4):
    c = len(g[0])
    cg = g[1] - np.outer(g[0], g[0]) + eps * np.eye(c)
    cs = s[1] - np.outer(s[0], s[0]) + eps * np.eye(c)
    rs = _sqrt_psd(cs)
    return np.mean((g[0] - s[0]) ** 2) + np.trace(cs + cg - 2 * _sqrt_psd(rs @ cg @ rs)) / c


def region_ratios(vgg16, image, styles, masks) -> list[float]:
    """Per region r: sum_l W2_l(region r of image, style r) / sum_l W2_l(region r, the other style)."""
    acts = {k: np.asarray(v) for k, v in features(vgg16, image.astype(np.float32), LAYERS).items()}
    style_acts = [{k: np.asarray(v) for k, v in features(vgg16, s.astype(np.float32), LAYERS).items()} for s in styles]
    ratios = []
    for r, m in enumerate(masks):
        d = [sum(_w2(_stats(acts[l], _area(m, *acts[l].shape[:2])), _stats(sa[l])) for l in LAYERS)
             for sa in style_acts]
        ratios.append(d[r] / d[1 - r])
    return ratios


def test_complementary_masks_put_each_style_on_its_half(vgg16):
    content = _image("tubingen.jpg")
    styles = [_image("starry_night.jpg"), _image("the_scream.jpg")]
    left = np.zeros(content.shape[:2], np.float32)
    left[:, : content.shape[1] // 2] = 1.0
    masks = [left, 1.0 - left]
    result = transfer(content, styles, weights=vgg16, style_masks=[(m * 255).astype(np.uint8) for m in masks],
                      style_loss="w2", style_layers=LAYERS, optimizer="adam", lr=4.0, iters=30,
                      content_weight=1.0, style_weight=1e5, size=SIZE)
    assert result.objective["style_loss"] == "w2"
    assert [m["coverage"] for m in result.objective["style_masks"]] == [0.5, 0.5]
    ratios = region_ratios(vgg16, result.image, styles, masks)
    start = region_ratios(vgg16, content, styles, masks)
    print("own/other W2 per half:", ratios, "at the content:", start)
    assert max(ratios) <= 0.6, ratios
