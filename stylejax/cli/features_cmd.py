"""``stylejax features``: save a network's activations for one image."""

from __future__ import annotations

import argparse
import io

import jax
import numpy as np

from stylejax import models
from stylejax.activations import features
from stylejax.cli.common import add_weights_args, load_weights, name_list, positive_int
from stylejax.images import atomic_write, check_output, read_image


def register(sub) -> None:
    p = sub.add_parser(
        "features", help="save the activations of chosen layers for an image (.npz)",
        description="Run IMAGE through the network and save each requested layer's activations "
                    "(post-ReLU for conv layers, NHWC, batch 1) under the layer's name in an .npz file.")
    p.add_argument("image", metavar="IMAGE", help="input image (any format Pillow reads)")
    p.add_argument("--layers", type=name_list, required=True, metavar="L1,L2",
                   help="comma-separated layer names, e.g. conv1_1,conv4_2,pool5")
    add_weights_args(p)
    p.add_argument("--size", type=positive_int, default=None, metavar="N",
                   help="resize so the longest side is N pixels (default: the image's own size)")
    p.add_argument("--pooling", choices=("max", "avg"), default="max",
                   help="max (as trained, default) or avg pooling")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz", help="output .npz file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    out = check_output(args.output, [args.image], suffixes=[".npz"])
    backbone = models.get(args.arch)
    backbone.check_layers(args.layers)
    pixels = read_image(args.image, args.size)
    w = load_weights(args)
    acts = jax.jit(features, static_argnames=("layers", "pooling"))(w, pixels[None], tuple(args.layers),
                                                                     pooling=args.pooling)
    arrays = {name: np.asarray(value) for name, value in acts.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(out, lambda f: f.write(buffer.getvalue()))
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())
    print(f"wrote {out}: {shapes}")
