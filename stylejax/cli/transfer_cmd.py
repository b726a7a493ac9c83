"""``stylejax transfer`` (Gatys et al. neural style transfer) and ``stylejax demo``."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np

from stylejax import models
from stylejax.activations import PRECISIONS
from stylejax.cli import preflight
from stylejax.cli.common import (add_weights_args, float_list, load_weights, name_list, nonnegative_float,
                                 nonnegative_int, positive_float, positive_int, progress_bar, write_json)
from stylejax.errors import StylejaxError
from stylejax.images import IMAGE_SUFFIXES, SUFFIXES_16, check_output, fit_longest, read_image, same_file, write_image, write_image16
from stylejax.memory import MEMORY_ENV, gib
from stylejax.progress import Progress
from stylejax.style import config, tiling
from stylejax.style.transfer import check_masks, spec_of, transfer_batch

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEMO_CONTENTS = {"chelsea": "chelsea.jpg", "astronaut": "astronaut.jpg"}
DEMO_STYLES = {"starry_night": "starry_night.jpg", "the_scream": "the_scream.jpg", "shipwreck": "shipwreck.jpg",
               "matisse": "woman-with-hat-matisse.jpg", "hubble": "hubble_deep_field.jpg",
               "ihc": "immunohistochemistry.jpg"}
D, CLASSIC = config.DEFAULTS, config.PRESETS["classic"]
MODERN = config.PRESETS["modern"]


def _int_list(text: str) -> list[int]:
    try:
        return [positive_int(item) for item in name_list(text)]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None


def _decay(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a decay between 0 and 1 (exclusive), e.g. 0.99; got {text!r}")
    return value


def _lr_defaults() -> str:
    return ", ".join(f"{name} {lr:g}" for name, lr in config.DEFAULT_LR.items())


def add_transfer_options(p: argparse.ArgumentParser) -> None:
    """The options of :class:`stylejax.style.config.Options` as flags (their dest is the field
    name; defaults are None so that a preset or the Options default applies)."""
    g = p.add_argument_group("size and optimisation")
    g.add_argument("--size", type=positive_int, metavar="N",
                   help=f"longest side of the output in pixels (default {D.size}; classic {CLASSIC['size']}); "
                        "an image already that size is not resized")
    g.add_argument("--iters", type=positive_int, metavar="N",
                   help=f"optimisation iterations (per scale with --scales; default {D.iters}; classic {CLASSIC['iters']})")
    g.add_argument("--optimizer", choices=config.OPTIMIZERS,
                   help=f"lbfgs (default; L-BFGS without line search, step --lr, like torch.optim.LBFGS), "
                        f"adam, or gd (plain gradient descent G <- G - lr grad J)")
    g.add_argument("--lr", type=positive_float, metavar="X",
                   help=f"learning rate / step size in pixel units (default: {_lr_defaults()})")
    g.add_argument("--lbfgs-memory", type=positive_int, metavar="M",
                   help=f"L-BFGS history size (neural-style's -lbfgs_num_correction; default {D.lbfgs_memory})")
    g.add_argument("--init", metavar="content|random|PATH",
                   help="start from the content (default), seeded noise (classic) or an image file")
    g.add_argument("--seed", type=nonnegative_int, metavar="S", help=f"PRNG seed for --init random (default {D.seed})")
    g.add_argument("--scales", type=_int_list, metavar="N1,N2,...",
                   help="coarse-to-fine sizes, e.g. 128,256: optimise at each, upsample, continue; "
                        "the style is re-extracted per scale; the last one is the output size")
    g.add_argument("--pooling", choices=config.POOLINGS,
                   help=f"max (default) or avg pooling (Gatys et al.)")
    g.add_argument("--steps-per-call", type=positive_int, metavar="K",
                   help=f"optimisation steps per compiled call (unrolled; default {D.steps_per_call})")
    g.add_argument("--ema", type=_decay, metavar="DECAY",
                   help="average the iterates (bias-corrected exponential moving average with this decay, "
                        f"e.g. {MODERN['ema']:g}): the output, and each scale's start, is the average "
                        f"(default: off, the best iterate; modern {MODERN['ema']:g})")
    g.add_argument("--min-scale", type=positive_int, metavar="N",
                   help="coarse-to-fine from N px to --size in steps of sqrt(2), as crowsonkb/style-transfer-"
                        f"pytorch (e.g. 128 -> 128,181,256,362,512); --scales wins (modern {MODERN['min_scale']}); "
                        "with adam, its moments are resized and carried to the next scale")
    g.add_argument("--iters-first", type=positive_int, metavar="N",
                   help=f"iterations at the first scale (default --iters; modern {MODERN['iters_first']}, "
                        f"then {MODERN['iters']})")
    t = p.add_argument_group("print size (exact tiling)")
    t.add_argument("--tile", type=positive_int, metavar="N",
                   help="evaluate J and its gradient over tiles with N-pixel cores (rounded to the network's "
                        "stride) and a receptive-field halo: exact, in memory set by the tile (default: tile "
                        "automatically when the untiled step would exceed --max-memory)")
    t.add_argument("--max-memory", type=positive_float, metavar="GiB",
                   help="memory budget for the run in GiB; sets the tile size and the L-BFGS history kept "
                        "(default: 80%% of the memory available)")
    w = p.add_argument_group("objective")
    w.add_argument("--content-weight", type=nonnegative_float, metavar="A",
                   help=f"alpha (default {D.content_weight:g}; classic {CLASSIC['content_weight']:g} in neural-style units)")
    w.add_argument("--style-weight", type=nonnegative_float, metavar="B",
                   help=f"beta (default {D.style_weight:g}; classic {CLASSIC['style_weight']:g} in neural-style units)")
    w.add_argument("--tv-weight", type=nonnegative_float, metavar="G",
                   help=f"gamma, total-variation weight on 0-255 pixels (default {D.tv_weight:g}; "
                        f"classic {CLASSIC['tv_weight']:g})")
    w.add_argument("--content-layers", "--content-layer", type=name_list, metavar="L1,...",
                   help="content layer(s); several add up (default conv4_2)")
    w.add_argument("--style-layers", type=name_list, metavar="L1,L2,...",
                   help="style layers (default conv1_1,conv2_1,conv3_1,conv4_1,conv5_1)")
    w.add_argument("--style-layer-weights", type=float_list, metavar="W1,W2,...",
                   help="lambda per style layer (default 1/len(layers) each)")
    w.add_argument("--style-loss", choices=config.STYLE_LOSSES,
                   help=f"style distance per layer (default {D.style_loss}: the Gram matrices; w2: the "
                        "Wasserstein-2 distance between Gaussian fits of the activations)")
    w.add_argument("--weight-units", choices=config.WEIGHT_UNITS,
                   help="gatys (default): the weights as written above; neural-style: jcjohnson/"
                        "neural-style's -content_weight/-style_weight, mapped exactly (classic); crowsonkb: "
                        "crowsonkb/style-transfer-pytorch's content/style/TV weights, mapped (modern)")
    w.add_argument("--normalize-gradients", action="store_true", default=None,
                   help="L1-normalise each loss term's gradient before weighting (as neural-style)")
    w.add_argument("--precision", choices=PRECISIONS,
                   help="dtype of the network's convolutions (bfloat16 pays on GPU/TPU, not on CPU); "
                        "losses and the image stay float32 (default: float32)")
    w.add_argument("--swag", type=positive_float, nargs="?", const=1.0, metavar="TAU",
                   help="SWAG (Wang et al., CVPR 2021): softmax-smooth each layer's activations with "
                        "temperature TAU (default 1) before the losses; makes ResNet features transfer "
                        "style well. Activations are rescaled to mean 1, so weights stay comparable")
    s = p.add_argument_group("style images and colour")
    s.add_argument("--style-blend", type=float_list, metavar="W1,W2,...",
                   help="blend weights of the style images' statistics (default equal)")
    s.add_argument("--style-scale", type=positive_float, metavar="X",
                   help=f"style image size relative to the output's longest side (default {D.style_scale:g})")
    s.add_argument("--original-colors", action="store_true", default=None,
                   help="keep the content's colours: luminance of the result, chroma of the content")
    s.add_argument("--luminance-only", action="store_true", default=None,
                   help="transfer luminance only (Gatys et al. 2016): optimise Y, then add the content's chroma")
    s.add_argument("--match-histogram", action="store_true", default=None,
                   help="match the style images' colour mean and covariance to the content first")


def options_of(args: argparse.Namespace, preset: str | None = None, base: dict | None = None) -> config.Options:
    """The run's Options: the preset (or ``base`` overrides), then every flag given."""
    given = dict(base or {})
    given.update({name: getattr(args, name) for name in config.option_names()
                  if getattr(args, name, None) is not None})
    return config.resolve(preset, **given)


def register(sub) -> None:
    p = sub.add_parser(
        "transfer", help="neural style transfer (Gatys et al.): CONTENT in the style of STYLE",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Paint CONTENT in the style of one or more STYLE images by minimising\n"
                    "  J = alpha Jc + beta sum_l lambda_l Js[l] + gamma TV\n"
                    "over the pixels of the output (Gatys, Ecker & Bethge 2016). Jc = 1/2 ||a(C) - a(G)||^2 at\n"
                    "the content layer; Js[l] = ||G(S)/M_S - G(G)/M_G||^2 / C^2 with raw Gram matrices G\n"
                    "over M = h*w positions (= ||G(S) - G(G)||^2 / (h w C)^2 at equal sizes).\n\n"
                    f"Defaults ({D.size} px, {D.iters} L-BFGS iterations from the content) take a few minutes on a\n"
                    f"laptop CPU. --preset classic reproduces jcjohnson/neural-style's defaults ({CLASSIC['size']} px,\n"
                    f"{CLASSIC['iters']} iterations, random init, content {CLASSIC['content_weight']:g} / style "
                    f"{CLASSIC['style_weight']:g} / TV {CLASSIC['tv_weight']:g} in its units).\n"
                    f"--preset modern maps crowsonkb/style-transfer-pytorch's defaults ({MODERN['style_loss']} style loss, "
                    "layer weights\n256:64:16:4:1, Adam, iterate average "
                    f"{MODERN['ema']:g}, sqrt(2) scales {MODERN['min_scale']}..{MODERN['size']} px, content "
                    f"{MODERN['content_weight']:g} / TV {MODERN['tv_weight']:g}\nin its units).",
        epilog="examples:\n"
               "  stylejax transfer tubingen.jpg starry_night.jpg -o out.png\n"
               "  stylejax transfer photo.jpg a.jpg b.jpg --style-blend 0.7,0.3 --original-colors -o out.png\n"
               "  stylejax transfer photo.jpg starry.jpg --scales 128,256,512 --iters 200 -o out.png\n"
                "  stylejax transfer photo.jpg a.jpg b.jpg --style-masks left.png,right.png --style-loss w2 -o out.png\n"
                "  stylejax transfer photo.jpg starry.jpg --preset classic -o out.png\n"
                "  stylejax transfer photo.jpg starry.jpg --preset modern -o out.png")
    p.add_argument("content", metavar="CONTENT", help="content image")
    p.add_argument("styles", metavar="STYLE", nargs="+", help="style image(s); several are blended")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", help="output image (.png, .jpg or .tif)")
    p.add_argument("--preset", choices=tuple(config.PRESETS), default=None,
                   help="classic: jcjohnson/neural-style's defaults; modern: crowsonkb/style-transfer-pytorch's "
                        "(see above); other options override it")
    add_transfer_options(p)
    m = p.add_argument_group("region masks")
    m.add_argument("--style-masks", type=name_list, metavar="M1,M2,...",
                   help="one grayscale mask per style image, with the content's aspect ratio: style i is "
                        "matched where mask i is white (partly where grey) instead of blending the styles")
    o = p.add_argument_group("output")
    o.add_argument("--output-depth", type=int, choices=(8, 16), default=8, metavar="BITS",
                   help="bits per channel of the output: 8 (default) or 16 (for print; .png or .tif)")
    o.add_argument("--save-every", type=positive_int, default=None, metavar="N",
                   help="also save OUT_<iter>.png every N iterations")
    o.add_argument("--report", metavar="FILE.json", help="JSON report (default: OUT with .json suffix)")
    o.add_argument("--print-every", type=positive_int, default=None, metavar="N",
                   help="print the iteration and its loss every N iterations on stderr "
                        "(neural-style's -print_iter)")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    add_weights_args(p)
    p.set_defaults(handler=run)

    demo = config.DEMO
    d = sub.add_parser(
        "demo", help="style a shipped photo with a shipped style image (no files needed)",
        description="Run `stylejax transfer` on a public-domain photo shipped with stylejax "
                    "(scikit-image's chelsea or astronaut) in the style of a shipped public-domain "
                    "painting (van Gogh's Starry Night by default; Munch, Turner, Matisse), then print "
                    f"where the result is. {demo['size']} px, {demo['iters']} L-BFGS iterations: about 1.5 "
                    "minutes on a 2-core CPU. Every transfer option applies.")
    d.add_argument("-o", "--output", required=True, metavar="OUT.png", help="output image")
    d.add_argument("--content", choices=tuple(DEMO_CONTENTS), default="chelsea", help="content (default chelsea)")
    d.add_argument("--style", choices=tuple(DEMO_STYLES), default="starry_night",
                   help="style: a public-domain painting or picture shipped with stylejax (default starry_night)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    add_transfer_options(d)
    add_weights_args(d)
    d.set_defaults(handler=run_demo)


def run(args: argparse.Namespace) -> int:
    # ---- validate everything before any work
    mask_paths = list(args.style_masks or [])
    if args.style_masks is not None and len(mask_paths) != len(args.styles):
        raise StylejaxError(f"--style-masks gives {len(mask_paths)} masks for {len(args.styles)} style images; "
                            "give one mask per style")
    inputs = [args.content, *args.styles] + ([args.init] if args.init not in (None, "content", "random") else [])
    inputs += mask_paths
    for path in inputs:
        preflight.readable(path, "an image file")
    out = check_output(args.output, inputs, suffixes=IMAGE_SUFFIXES)
    if getattr(args, "output_depth", 8) == 16 and out.suffix.lower() not in SUFFIXES_16:
        raise StylejaxError(f"--output-depth 16 needs a .png, .tif or .tiff output, not {out.name}")
    report_path = Path(args.report) if args.report else out.with_suffix(".json")
    if same_file(report_path, out):
        raise StylejaxError(f"--report {report_path} is the output image; give the report its own .json name")
    check_output(report_path, inputs + [out], suffixes=[".json"], what="report")
    canonical_layers(args)
    options = config.validate(options_of(args, args.preset), args.arch, len(args.styles))
    if args.save_every:
        check_snapshots(out, inputs, args.save_every, options.total_iters)
    check_geometry(options, args.arch, args.content, args.styles)
    content = read_image(args.content)
    styles = [read_image(path) for path in args.styles]
    masks = read_masks(mask_paths, len(styles), content.shape[:2]) if mask_paths else None
    if masks is not None and options.style_blend is not None:
        raise StylejaxError("--style-blend does not apply with --style-masks: each style keeps its own region")
    init_image = read_image(options.init) if options.init not in ("content", "random") else None
    w = load_weights(args)
    return _run(args, w, content, styles, options, init_image, out, report_path, inputs, masks, mask_paths)


def read_masks(paths, n_styles: int, content_hw: tuple[int, int]):
    """Region masks u8[S, H, W] from image files (their luminance), checked against the content."""
    grays = [np.rint(read_image(path).astype(np.float32) @ np.float32([0.299, 0.587, 0.114])).astype(np.uint8)
             for path in paths]
    check_masks(grays, n_styles, content_hw, names=[str(p) for p in paths])
    return grays


def canonical_layers(args: argparse.Namespace) -> None:
    """neural-style's ``reluB_C`` layer names -> the post-ReLU ``convB_C`` they name."""
    backbone = models.get(args.arch)
    for name in ("content_layers", "style_layers"):
        if getattr(args, name, None):
            setattr(args, name, backbone.canonical(getattr(args, name)))


def check_snapshots(out: Path, inputs, every: int, total: int) -> None:
    """``--save-every`` snapshots OUT_<k>.png (k = every, 2 every, ... < total) never overwrite an
    input: each input is matched against the name pattern (no loop over the snapshots)."""
    pattern = re.compile(re.escape(out.stem) + r"_(\d+)" + re.escape(out.suffix) + r"$")
    for inp in inputs:
        match = pattern.match(Path(inp).name)
        if match and same_file(Path(inp).parent, out.parent):
            done = int(match.group(1))
            if str(done) == match.group(1) and done % every == 0 and 0 < done < total:
                raise StylejaxError(f"output {snapshot_path(out, done)} (a --save-every snapshot) is also an "
                                    "input; refusing to write over it")


def check_geometry(options: config.Options, arch: str, content: str, styles) -> None:
    """Before any work: every layer non-empty on the output and style images, and the run within
    the memory budget (``preflight``). Reads only the images' headers."""
    layers = [*options.content_layers, *options.style_layers]
    for path in (content, *styles):
        if preflight.image_size(path) is None:
            read_image(path)  # an unreadable header: the reader's one-line error, before the sizes
    head = preflight.image_size(content)
    if head is None:
        return
    for size in options.sizes:
        width, height = fit_longest(*head, size)
        preflight.check_side(arch, layers, height, width, what=f"the output at --size {size} ({head[0]}x{head[1]} "
                             f"content)", advice="use a larger --size, or crop the content")
    for style in styles:
        s_head = preflight.image_size(style)
        if s_head is not None:
            side = max(1, int(-(-options.sizes[-1] * options.style_scale // 1)))
            width, height = fit_longest(*s_head, side)
            preflight.check_side(arch, options.style_layers, height, width,
                                 what=f"style {style} at {side} px", advice="use a larger --style-scale or --size")
    size = max(options.sizes)
    width, height = fit_longest(*head, size)
    ratio = min(width, height) / max(width, height)
    # tiles bound the network's share (stylejax.style.tiling); the image-sized buffers remain: the
    # iterate, its gradient, the best iterate, the optimiser's smallest state, the content targets
    smallest = tiling.smallest(arch, spec_of(options), (height, width), optimizer=_optimizer_name(options),
                               lbfgs_memory=1, ema=options.ema is not None) - tiling.FIXED_BYTES
    budget = tiling.budget_bytes(options.max_memory) - tiling.FIXED_BYTES
    if smallest > budget:
        fit = budget / (smallest / (width * height))
        raise StylejaxError(f"--size {size} needs about {gib(smallest)} of memory even with tiles and "
                            f"about {gib(budget)} is available; the largest --size that fits is "
                            f"{int((fit / ratio) ** 0.5)} (set --max-memory or {MEMORY_ENV} to override "
                            "the estimate)")


def _optimizer_name(options: config.Options) -> str:
    return options.optimizer if isinstance(options.optimizer, str) else "optax"


def snapshot_path(out: Path, done: int) -> Path:
    """Where ``--save-every`` writes the image after ``done`` iterations: OUT_<done>.png."""
    return out.with_name(f"{out.stem}_{done}{out.suffix}")


def _run(args, w, content, styles, options: config.Options, init_image, out: Path, report_path: Path,
         inputs, masks=None, mask_paths=()) -> int:
    bar = progress_bar(options.total_iters, "transfer", quiet=args.quiet)
    save_every = getattr(args, "save_every", None)
    print_every = getattr(args, "print_every", None)
    printed = {"done": 0}

    def callback(p: Progress) -> None:
        if print_every and (p.done // print_every > printed["done"] // print_every or p.done == p.total):
            loss = f"{p.loss:.6g}" if p.loss is not None else "-"
            bar.write(f"iteration {p.done}/{p.total}: loss {loss}", file=sys.stderr)
        printed["done"] = p.done
        bar.update(p.done - bar.n)
        bar.set_postfix(loss=f"{p.loss:.4g}" if p.loss is not None else "-", refresh=False)
        if save_every and p.done % save_every == 0 and p.done < p.total:
            write_image(snapshot_path(out, p.done), p.image())

    try:
        result = transfer_batch(content[None], styles, weights=w, options=options, init_image=init_image,
                                callback=callback, style_masks=masks)
    finally:
        bar.close()
    if getattr(args, "output_depth", 8) == 16:
        write_image16(out, result.image16)
    else:
        write_image(out, result.image)
    for note in result.notes:
        print(f"stylejax: note: {note}", file=sys.stderr)
    report = {
        "command": "transfer", "content": str(inputs[0]), "styles": [str(p) for p in inputs[1:1 + len(styles)]],
        "style_masks": [str(p) for p in mask_paths] or None,
        "output": str(out), "preset": getattr(args, "preset", None), "settings": result.options.to_dict(),
        "objective": result.objective, "iterations": result.iterations, "seconds": result.seconds,
        "s_per_iter": result.s_per_iter, "per_scale": result.per_scale, "interrupted": result.interrupted,
        "diverged": result.diverged, "loss": result.loss, "history": result.history,
        "shape": list(result.image.shape[:2]), "output_depth": getattr(args, "output_depth", 8),
        "tiles": result.memory.get("tiles", 1), "memory": result.memory, "notes": result.notes,
        "weights": w.report(), **environment(),
    }
    write_json(report_path, report)
    if result.interrupted:
        print(f"stylejax: interrupted after {result.iterations} iterations; saved the best image so far to "
              f"{out} and the report to {report_path}", file=sys.stderr)
        return 130
    loss = result.loss
    print(f"wrote {out} ({result.image.shape[1]}x{result.image.shape[0]}, {result.iterations} iterations, "
          f"{result.seconds:.1f} s, loss {loss['total']:.4g}); report {report_path}")
    return 0


def environment() -> dict[str, str]:
    """Where the run happened: device, jax version and the XLA flags in force."""
    import jax

    d = jax.devices()[0]
    return {"device": f"{d.platform}:{getattr(d, 'device_kind', '')}", "jax": jax.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def run_demo(args: argparse.Namespace) -> int:
    content_path = ASSETS / DEMO_CONTENTS[args.content]
    style_path = ASSETS / DEMO_STYLES[args.style]
    out = check_output(args.output, [content_path, style_path], suffixes=IMAGE_SUFFIXES)
    report_path = out.with_suffix(".json")
    check_output(report_path, [content_path, style_path, out], suffixes=[".json"])
    canonical_layers(args)
    options = config.validate(options_of(args, base=config.DEMO), args.arch, 1)
    check_geometry(options, args.arch, str(content_path), [str(style_path)])
    init_image = read_image(options.init) if options.init not in ("content", "random") else None
    content, style = read_image(content_path), read_image(style_path)
    w = load_weights(args)
    return _run(args, w, content, [style], options, init_image, out, report_path, [content_path, style_path])
