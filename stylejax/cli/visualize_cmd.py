"""``stylejax visualize``: synthesise images that excite chosen units (activation maximisation)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stylejax import models
from stylejax.cli import preflight
from stylejax.cli.common import (
    add_weights_args,
    load_weights,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    progress_bar,
    write_json,
)
from stylejax.errors import StylejaxError
from stylejax.images import check_output, same_file, write_image
from stylejax.interpret.scan import parse_units
from stylejax.memory import activation_floats

EPILOG = """\
examples:
  stylejax visualize --layer conv3_1 --units 0:8 -o conv3_1.png
  stylejax visualize --layer conv4_1 --units 12 --objective neuron --steps 256 -o n.png
  stylejax visualize --layer conv5_1 --units 33 --objective diversity --batch 4 -o div.png
  stylejax visualize --layer conv5_3 --units 100 --redirected-relu -o deep.png

Defaults follow Lucid's render_vis: 512 Adam steps at lr 0.05 on a 128 px image held as a
1/f-scaled Fourier spectrum with decorrelated colour and a sigmoid, under random pad 12,
jitter 8, scale 0.9..1.1, rotation -10..10 degrees and jitter 4 at every step.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "visualize", help="synthesise images that maximally excite units (feature visualisation)",
        description="Optimise an image from noise so that it excites each requested unit of LAYER\n"
                    "(channel mean, centre neuron, or a diverse batch), with the regularisers of\n"
                    "Lucid/Lucent, and save all units side by side in one labelled grid. All units\n"
                    "are optimised together in one vmapped, jit-compiled step.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layer", required=True, metavar="L", help="layer name, e.g. conv3_1, conv4_2, pool5")
    p.add_argument("--units", required=True, metavar="A:B|I,J,..",
                   help="channels to visualise: a half-open range A:B like a Python slice, or a "
                        "comma-separated list, e.g. 0:8 or 5,7,40 (as in `stylejax patches`)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png",
                   help="grid image: one column per unit, one row per batch image (.png/.jpg)")
    p.add_argument("--objective", choices=("channel", "neuron", "diversity"), default="channel",
                   help="channel: mean of the channel's map (default); neuron: its centre position; "
                        "diversity: channel minus a penalty on the pairwise cosine similarity of "
                        "the batch's Gram matrices (Lucid's diversity, needs --batch >= 2)")
    p.add_argument("--steps", type=positive_int, default=512, metavar="N", help="Adam steps (default: 512)")
    p.add_argument("--lr", type=positive_float, default=0.05, metavar="LR",
                   help="Adam learning rate (default: 0.05)")
    p.add_argument("--size", type=positive_int, default=128, metavar="PX",
                   help="side of the square image in pixels (default: 128; at least 16)")
    p.add_argument("--batch", type=positive_int, default=1, metavar="B",
                   help="images per unit, each from its own noise (default: 1)")
    p.add_argument("--diversity-weight", type=nonnegative_float, default=100.0, metavar="W",
                   help="weight of the diversity penalty (default: 100, as in Lucid's tutorial; "
                        "VGG's activations are large, so at conv3_1 100 barely changes the batch "
                        "and ~1000 gives distinct images at half the activation)")
    p.add_argument("--decay-power", type=nonnegative_float, default=1.0, metavar="P",
                   help="spectrum scaled by 1/freq**P; 0 makes pixel-like white noise (default: 1)")
    p.add_argument("--no-transforms", dest="transforms", action="store_false",
                   help="skip the random pad/jitter/scale/rotate (images turn to high-frequency noise)")
    p.add_argument("--redirected-relu", action="store_true",
                   help="Lucid's redirected ReLU gradient for the first 16 steps, so units that "
                        "start switched off (common in deep layers) can still be reached")
    p.add_argument("--seed", type=nonnegative_int, default=0, metavar="S",
                   help="random seed; unit u always gets the key fold_in(key(S), u) (default: 0)")
    p.add_argument("--steps-per-call", type=positive_int, default=1, metavar="K",
                   help="optimisation steps per compiled call (default: 1, fastest to compile on CPU)")
    p.add_argument("--report", default=None, metavar="R.json",
                   help="JSON report: settings, objective per unit, timing (default: OUT with .json)")
    add_weights_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def grid_picture(images: np.ndarray, labels: list[str], gap: int = 2) -> np.ndarray:
    """u8[U, B, S, S, 3] -> one u8 picture: units as columns under a label strip, batch as rows."""
    from PIL import Image, ImageDraw, ImageFont

    n_units, batch, size = images.shape[0], images.shape[1], images.shape[2]
    strip = 14
    height = strip + batch * size + (batch - 1) * gap
    width = n_units * size + (n_units - 1) * gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for u in range(n_units):
        x = u * (size + gap)
        label = labels[u]
        while len(label) > 1 and draw.textlength(label, font=font) > size:
            label = label.split(":", 1)[-1] if ":" in label else label[:-1]
        draw.text((x + 1, 1), label, fill=(0, 0, 0), font=font)
        for b in range(batch):
            canvas.paste(Image.fromarray(images[u, b]), (x, strip + b * (size + gap)))
    return np.asarray(canvas)


def run(args: argparse.Namespace) -> None:
    from stylejax.interpret import param
    from stylejax.interpret.projection import layer_info
    from stylejax.interpret.synthesis import (
        Settings,
        check_settings,
        settings_dict,
        visualize,
    )

    out = check_output(args.output, [], suffixes=[".png", ".jpg", ".jpeg"])
    report = Path(args.report) if args.report else out.with_suffix(".json")
    if same_file(report, out):
        raise StylejaxError(f"--report {report} is the output image; give the report its own .json name")
    check_output(report, [out], suffixes=[".json"], what="report")
    args.layer = models.get(args.arch).canonical([args.layer])[0]
    info = layer_info(args.arch, args.layer)
    args.units = parse_units(args.units, info.channels, args.layer)
    # the layer's map is non-empty on the untransformed image (where the objective is reported;
    # the transforms' canvas is 12 px larger); the synthesis needs param.MIN_SIZE in any case
    need = preflight.min_side(args.arch, [args.layer])
    if args.size < max(need, param.MIN_SIZE):
        raise StylejaxError(f"--size {args.size} is too small for "
                            f"{args.layer if need > param.MIN_SIZE else 'the transforms'}: use at least "
                            f"{max(need, param.MIN_SIZE)}")
    images = len(args.units) * args.batch
    # per image pixel: the forward activations kept for the backward pass and their gradients,
    # the transforms' intermediate images, the spectrum and Adam's two moments (f32)
    per_pixel = 4 * (4 * activation_floats(args.arch, [args.layer]) + 16) * images
    preflight.check_pixels(args.size ** 2, per_pixel, option="--size", size=args.size)
    s = Settings(layer=args.layer, objective=args.objective, steps=args.steps, lr=args.lr,
                 size=args.size, batch=args.batch, diversity_weight=args.diversity_weight,
                 decay_power=args.decay_power, transforms=args.transforms,
                 redirected_relu=args.redirected_relu)
    w = load_weights(args)
    check_settings(w, s, args.units)

    with progress_bar(args.steps, f"visualize {args.layer} x{len(args.units)}", unit="step",
                      quiet=args.quiet) as bar:
        result = visualize(w, args.units, s, seed=args.seed, chunk=args.steps_per_call,
                           progress=bar.update)
    picture = grid_picture(result.images, [f"{args.layer}:{u}" for u in result.units])
    write_image(out, picture)
    units = [{"unit": u, "objective_initial": float(result.objective_initial[i]),
              "objective_final": float(result.objective_final[i]),
              "gram_similarity_final": float(result.diversity[i]),
              "history": [round(float(v), 5) for v in result.history[i]]}
             for i, u in enumerate(result.units)]
    write_json(report, {
        "command": "visualize", "arch": w.arch, "weights": w.name, "seed": args.seed,
        "settings": settings_dict(s), "output": str(out), "grid": "columns: units; rows: batch",
        "seconds_first_call": round(result.first_call_seconds, 3),
        "seconds_other_steps": round(result.seconds, 3),
        "seconds_per_step": round(result.seconds_per_step, 4) if result.timed_steps else None,
        "units": units})
    finals = ", ".join(f"{u['unit']}: {u['objective_initial']:.3g} -> {u['objective_final']:.3g}"
                       for u in units)
    print(f"wrote {out} and {report} ({result.first_call_seconds:.1f}s compile + first step, "
          f"{result.seconds:.1f}s other steps); "
          f"{s.objective} objective {finals}")
