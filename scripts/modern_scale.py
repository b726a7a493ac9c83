"""Measurements behind ``--preset modern``'s mapping (docs/transfer.md, "The modern preset").

1. The two input conventions: Caffe's network input over crowsonkb's (ImageNet-normalised) per
   channel, and the difference of their means in pixels.
2. Per style/content layer of the built-in VGG16, on real images at 256 px: the activation RMS in
   this project's units, and RMS(a(x)) / RMS(a(x) with the network's input divided by k), which
   is k at every layer for a bias-free ReLU network (positively homogeneous).
3. The TV mapping on real images at 512 px: gamma Jtv over crowsonkb's nine-point TV (1 for
   smooth images, 2/3 at the Nyquist checkerboard).

    python scripts/modern_scale.py [IMAGE ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import stylejax
from stylejax.images import read_image, resize_longest
from stylejax.models import vgg
from stylejax.preprocessing import CAFFE_BGR_MEAN, TORCHVISION_MEAN, TORCHVISION_STD, preprocess
from stylejax.style import config, crowsonkb
from stylejax.style.transfer import loss_weights, spec_of

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv4_2", "conv5_1")


def tv9(y: np.ndarray) -> float:
    """crowsonkb's TVLoss of y f64[H, W, C] in [0, 1] (replicate padding, nine-point stencil)."""
    p = np.pad(y, ((1, 1), (1, 1), (0, 0)), mode="edge")
    d1 = np.mean((p[1:-1, 2:] - p[1:-1, 1:-1]) ** 2) / 3
    d2 = np.mean((p[2:, 1:-1] - p[1:-1, 1:-1]) ** 2) / 3
    d3 = np.mean((p[1:, 1:] - p[:-1, :-1]) ** 2) / 12
    d4 = np.mean((p[1:, :-1] - p[:-1, 1:]) ** 2) / 12
    return 2 * (d1 + d2 + d3 + d4)


def main(paths: list[str]) -> None:
    k = crowsonkb.ACTIVATION_SCALE["caffe"]
    print("input ratio 255*std per channel (R, G, B):", np.round(255 * TORCHVISION_STD, 2), f"mean k = {k:.2f}")
    print("Caffe mean - 255*torchvision mean (R, G, B) px:", np.round(CAFFE_BGR_MEAN[::-1] - 255 * TORCHVISION_MEAN, 3))
    w = stylejax.load_weights("vgg16")
    rms, ratio = {l: [] for l in LAYERS}, {l: [] for l in LAYERS}
    s = config.validate(config.resolve("modern", style_loss="gram"), "vgg16", 1)
    spec = spec_of(s)
    for path in paths:
        img = np.asarray(resize_longest(read_image(path), 256), np.float32)
        net_in = preprocess(jnp.asarray(img)[None], "caffe")
        a = vgg.features(w.params, net_in, LAYERS)
        b = vgg.features(w.params, net_in / k, LAYERS)
        for l in LAYERS:
            ra, rb = float(jnp.sqrt(jnp.mean(a[l] ** 2))), float(jnp.sqrt(jnp.mean(b[l] ** 2)))
            rms[l].append(ra)
            ratio[l].append(ra / max(rb, 1e-30))
        big = np.asarray(resize_longest(read_image(path), 512), np.float64)
        lw = loss_weights(w, spec, s, big.shape[:2])
        jtv = 0.5 * np.sum((big[:-1, :-1] - big[:-1, 1:]) ** 2 + (big[:-1, :-1] - big[1:, :-1]) ** 2)
        print(f"{Path(path).name} {big.shape[1]}x{big.shape[0]}: gamma Jtv / (2 TV9) = "
              f"{float(lw.tv) * jtv / (2.0 * tv9(big / 255.0)):.4f}")
    print("layer    RMS (this project's units)    RMS ratio at input / k  (k for a homogeneous net)")
    for l in LAYERS:
        print(f"{l:8s} {np.mean(rms[l]):10.3f}    {np.mean(ratio[l]):8.2f}")


if __name__ == "__main__":
    shared = ROOT.parent / "shared" / "data" / "images"
    default = [str(shared / n) for n in ("tubingen.jpg", "golden_gate.jpg", "starry_night.jpg", "the_scream.jpg")]
    main(sys.argv[1:] or [p for p in default if Path(p).exists()] or
         [str(ROOT / "stylejax" / "assets" / n) for n in ("chelsea.jpg", "starry_night.jpg")])
