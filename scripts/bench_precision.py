"""Effect of ``--precision bfloat16`` on the final objective and step time of a transfer.

Both runs' final images are scored by the same float32 objective. Usage:
    python scripts/bench_precision.py [--size 96] [--iters 40]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from stylejax import losses, transfer, weights
from stylejax.images import read_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"


def score(w, s: transfer.Settings, content: np.ndarray, style: np.ndarray, image: np.ndarray) -> float:
    """J of ``image`` under the float32 version of ``s``'s objective."""
    s = transfer.validate(dataclasses.replace(s, precision="float32"), w.arch, 1)
    weights_l = tuple(losses.default_layer_weights(s.style_layers, None).values())
    obj = transfer.Objective(w.arch, w.preprocessing, s.content_layer, s.style_layers, weights_l,
                             s.content_weight, s.style_weight)
    c = content[None].astype(np.float32)
    targets, _ = transfer._scale_targets(w, obj, s, c, [style], (1.0,), s.size)
    return float(transfer.evaluate(w.params, jnp.asarray(image[None], jnp.float32), targets, obj=obj)["total"][0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--iters", type=int, default=40)
    args = p.parse_args()
    w = weights.load("vgg16", progress=None)
    content = read_image(DATA / "tubingen.jpg", args.size)
    style = read_image(DATA / "starry_night.jpg", args.size)
    for opt in ("adam", "lbfgs"):
        for precision in ("float32", "bfloat16"):
            s = transfer.Settings(size=args.size, iters=args.iters, optimizer=opt, style_weight=10.0,
                                  precision=precision)
            r = transfer.transfer(w, content, [style], s)
            j = score(w, s, content, style, r.images[0])
            print(f"{opt:6s} {precision:9s} J(float32 score)={j:.4e}  s/iter={r.s_per_iter:.3f}")


if __name__ == "__main__":
    main()
