"""Effect of ``--precision bfloat16`` on the final objective and step time of a transfer.

Both runs' final images are scored by the same float32 objective. Usage:
    python scripts/bench_precision.py [--size 96] [--iters 40]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import stylejax
from stylejax.images import read_image
from stylejax.style.transfer import loss_weights, spec_of

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"


def score(w: stylejax.Weights, options: stylejax.Options, content: np.ndarray, style: np.ndarray,
          image: np.ndarray) -> float:
    """J of ``image`` under the float32 version of the objective the run ``options`` optimised."""
    s = dataclasses.replace(options, precision="float32")
    spec = spec_of(s)
    lw = loss_weights(w, spec, s, image.shape[:2])

    @jax.jit
    def total(w, lw, c, st, x):
        targets = stylejax.style_targets(w, spec, c, [st], jnp.ones((1,)))
        return stylejax.loss_terms(w, spec, lw, x, targets)[0]

    return float(total(w, lw, *(jnp.asarray(a, jnp.float32) for a in (content, style, image))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--iters", type=int, default=40)
    args = p.parse_args()
    w = stylejax.load_weights("vgg16")
    content = read_image(DATA / "tubingen.jpg", args.size)
    style = read_image(DATA / "starry_night.jpg", args.size)
    for opt in ("adam", "lbfgs"):
        for precision in ("float32", "bfloat16"):
            r = stylejax.transfer(content, style, weights=w, size=args.size, iters=args.iters, optimizer=opt,
                                  style_weight=10.0, precision=precision)
            j = score(w, r.options, content, style, r.image)
            print(f"{opt:6s} {precision:9s} J(float32 score)={j:.4e}  s/iter={r.s_per_iter:.3f}")


if __name__ == "__main__":
    main()
