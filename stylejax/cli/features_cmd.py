"""``stylejax features``: save a network's activations for one image."""

from __future__ import annotations

import argparse
import io

import jax
import numpy as np

from stylejax import models
from stylejax.activations import features
from stylejax.cli import preflight
from stylejax.cli.common import add_weights_args, load_weights, name_list, positive_int
from stylejax.images import atomic_write, check_output, fit_longest, read_image
from stylejax.memory import activation_floats


def register(sub) -> None:
    p = sub.add_parser(
        "features", help="save the activations of chosen layers for an image (.npz)",
        description="Run IMAGE through the network and save each requested layer's activations "
                    "(post-ReLU for conv layers, NHWC, batch 1) under the layer's name in a compressed .npz "
                    "file. neural-style's reluB_C names are accepted for the post-ReLU convB_C.")
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
    preflight.readable(args.image, "an image file")
    out = check_output(args.output, [args.image], suffixes=[".npz"])
    backbone = models.get(args.arch)
    layers = backbone.canonical(args.layers)
    head = preflight.image_size(args.image)
    if head is not None:
        width, height = head if args.size is None else fit_longest(*head, args.size)
        preflight.check_side(args.arch, layers, height, width,
                             what=f"{args.image} at {'its own size' if args.size is None else f'--size {args.size}'}",
                             advice="use a larger --size")
        ratio = min(width, height) / max(width, height)
        # forward activations (f32) and the saved copies of the requested ones
        per_pixel = 4 * 2 * activation_floats(args.arch, layers)
        preflight.check_pixels(width * height, per_pixel, option="--size", size=max(width, height),
                               side_of=lambda px: (px / ratio) ** 0.5)
    pixels = read_image(args.image, args.size)
    w = load_weights(args)
    acts = jax.jit(features, static_argnames=("layers", "pooling"))(w, pixels[None], tuple(layers),
                                                                     pooling=args.pooling)
    arrays = {asked: np.asarray(acts[name]) for asked, name in zip(args.layers, layers)}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write(out, lambda f: f.write(buffer.getvalue()))
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())
    print(f"wrote {out}: {shapes}")
