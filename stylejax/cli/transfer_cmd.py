"""``stylejax transfer`` (Gatys et al. neural style transfer) and ``stylejax demo``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from stylejax import transfer, weights
from stylejax.cli.common import (add_weights_args, float_list, name_list, nonnegative_float,
                                 positive_float, positive_int, progress_bar, write_json)
from stylejax.errors import StylejaxError
from stylejax.images import IMAGE_SUFFIXES, check_output, read_image, write_image

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEMO_CONTENTS = {"chelsea": "chelsea.jpg", "astronaut": "astronaut.jpg"}
DEMO_STYLES = {"hubble": "hubble_deep_field.jpg", "ihc": "immunohistochemistry.jpg"}

#: Defaults when no preset is given: a good picture in a few minutes on a laptop CPU.
DEFAULTS = dict(size=256, iters=300, optimizer="lbfgs", lr=None, init="content", content_weight=1.0,
                style_weight=10.0, tv_weight=0.0, pooling="max")
#: ``--preset classic``: jcjohnson/neural-style's defaults; weights in its units, mapped to alpha, beta.
CLASSIC = dict(size=512, iters=1000, optimizer="lbfgs", lr=1.0, init="random", content_weight=5.0,
               style_weight=100.0, tv_weight=1e-3, pooling="max")


def _int_list(text: str) -> list[int]:
    try:
        return [positive_int(item) for item in name_list(text)]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None


def add_transfer_options(p: argparse.ArgumentParser) -> None:
    """Every option of one transfer run (--preset, size and optimisation, objective, style and
    colour, --arch/--weights): shared by ``stylejax transfer`` and ``stylejax video``."""
    p.add_argument("--preset", choices=("classic",), default=None,
                   help="classic: jcjohnson/neural-style's defaults (see above); other options override it")
    g = p.add_argument_group("size and optimisation")
    g.add_argument("--size", type=positive_int, metavar="N",
                   help="longest side of the output in pixels (default 256; classic 512); an image "
                        "already that size is not resized")
    g.add_argument("--iters", type=positive_int, metavar="N",
                   help="optimisation iterations (per scale with --scales; default 300; classic 1000)")
    g.add_argument("--optimizer", choices=transfer.OPTIMIZERS,
                   help="lbfgs (default; optax L-BFGS without line search, step --lr, like "
                        "torch.optim.LBFGS) or adam")
    g.add_argument("--lr", type=positive_float, metavar="X",
                   help="learning rate / step size in pixel units (default: lbfgs 1, adam 10)")
    g.add_argument("--init", metavar="content|random|PATH",
                   help="start from the content (default), seeded noise (classic) or an image file")
    g.add_argument("--seed", type=int, default=0, metavar="S", help="PRNG seed for --init random (default 0)")
    g.add_argument("--scales", type=_int_list, default=None, metavar="N1,N2,...",
                   help="coarse-to-fine sizes, e.g. 128,256: optimise at each, upsample, continue; "
                        "the style is re-extracted per scale; the last one is the output size")
    g.add_argument("--pooling", choices=("max", "avg"), help="max (default) or avg pooling (Gatys et al.)")
    g.add_argument("--steps-per-call", type=positive_int, default=1, metavar="K",
                   help="optimisation steps per compiled call (unrolled; default 1)")
    w = p.add_argument_group("objective")
    w.add_argument("--content-weight", type=nonnegative_float, metavar="A", help="alpha (default 1)")
    w.add_argument("--style-weight", type=nonnegative_float, metavar="B", help="beta (default 10)")
    w.add_argument("--tv-weight", type=nonnegative_float, metavar="G",
                   help="gamma, total-variation weight on 0-255 pixels (default 0; classic 1e-3)")
    w.add_argument("--content-layer", metavar="L", help="content layer (default conv4_2)")
    w.add_argument("--style-layers", type=name_list, metavar="L1,L2,...",
                   help="style layers (default conv1_1,conv2_1,conv3_1,conv4_1,conv5_1)")
    w.add_argument("--style-layer-weights", type=float_list, metavar="W1,W2,...",
                   help="lambda per style layer (default 1/len(layers) each)")
    w.add_argument("--normalize-gradients", action="store_true",
                   help="L1-normalise each loss term's gradient before weighting (as neural-style)")
    w.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="dtype of the network's convolutions (bfloat16 pays on GPU/TPU, not on CPU); "
                        "losses and the image stay float32 (default: float32)")
    w.add_argument("--swag", type=positive_float, nargs="?", const=1.0, default=None, metavar="TAU",
                   help="SWAG (Wang et al., CVPR 2021): softmax-smooth each layer's activations with "
                        "temperature TAU (default 1) before the losses; makes ResNet features transfer "
                        "style well. Activations are rescaled to mean 1, so weights stay comparable")
    s = p.add_argument_group("style images and colour")
    s.add_argument("--style-blend", type=float_list, metavar="W1,W2,...",
                   help="blend weights of the style images' Gram targets (default equal)")
    s.add_argument("--style-scale", type=positive_float, default=1.0, metavar="X",
                   help="style image size relative to the output's longest side (default 1)")
    s.add_argument("--original-colors", action="store_true",
                   help="keep the content's colours: luminance of the result, chroma of the content")
    s.add_argument("--luminance-only", action="store_true",
                   help="transfer luminance only (Gatys et al. 2016): optimise Y, then add the content's chroma")
    s.add_argument("--match-histogram", action="store_true",
                   help="match the style images' colour mean and covariance to the content first")
    add_weights_args(p)


def register(sub) -> None:
    p = sub.add_parser(
        "transfer", help="neural style transfer (Gatys et al.): CONTENT in the style of STYLE",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Paint CONTENT in the style of one or more STYLE images by minimising\n"
                    "  J = alpha Jc + beta sum_l lambda_l Js[l] + gamma TV\n"
                    "over the pixels of the output (Gatys, Ecker & Bethge 2016). Jc = 1/2 ||a(C) - a(G)||^2 at\n"
                    "the content layer; Js[l] = ||G(S)/M_S - G(G)/M_G||^2 / C^2 with raw Gram matrices G\n"
                    "over M = h*w positions (= ||G(S) - G(G)||^2 / (h w C)^2 at equal sizes).\n\n"
                    "Defaults (256 px, 300 L-BFGS iterations from the content) take a few minutes on a\n"
                    "laptop CPU. --preset classic reproduces jcjohnson/neural-style's defaults (512 px,\n"
                    "1000 iterations, random init, content 5 / style 100 / TV 1e-3 in its units).",
        epilog="examples:\n"
               "  stylejax transfer tubingen.jpg starry_night.jpg -o out.png\n"
               "  stylejax transfer photo.jpg a.jpg b.jpg --style-blend 0.7,0.3 --original-colors -o out.png\n"
               "  stylejax transfer photo.jpg starry.jpg --scales 128,256,512 --iters 200 -o out.png\n"
               "  stylejax transfer photo.jpg starry.jpg --preset classic -o out.png")
    p.add_argument("content", metavar="CONTENT", help="content image")
    p.add_argument("styles", metavar="STYLE", nargs="+", help="style image(s); several are blended")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", help="output image (.png or .jpg)")
    add_transfer_options(p)
    o = p.add_argument_group("output")
    o.add_argument("--save-every", type=positive_int, default=None, metavar="N",
                   help="also save OUT_<iter>.png every N iterations")
    o.add_argument("--report", metavar="FILE.json", help="JSON report (default: OUT with .json suffix)")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)

    d = sub.add_parser(
        "demo", help="style a shipped photo with a shipped style image (no files needed)",
        description="Run `stylejax transfer` on a public-domain photo shipped with stylejax "
                    "(scikit-image's chelsea or astronaut) in the style of a shipped public-domain "
                    "picture (an immunohistochemistry slide, or the Hubble Deep Field), then print "
                    "where the result is. 160 px, 100 L-BFGS iterations: about a minute on a CPU.")
    d.add_argument("-o", "--output", required=True, metavar="OUT.png", help="output image")
    d.add_argument("--content", choices=tuple(DEMO_CONTENTS), default="chelsea", help="content (default chelsea)")
    d.add_argument("--style", choices=tuple(DEMO_STYLES), default="ihc", help="style (default ihc)")
    d.add_argument("--size", type=positive_int, default=160, metavar="N", help="longest side (default 160)")
    d.add_argument("--style-weight", type=nonnegative_float, default=5.0, metavar="B", help="beta (default 5)")
    d.add_argument("--iters", type=positive_int, default=100, metavar="N", help="L-BFGS iterations (default 100)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    add_weights_args(d)
    d.set_defaults(handler=run_demo)


def settings_from_args(args: argparse.Namespace) -> tuple[transfer.Settings, dict]:
    base = CLASSIC if args.preset == "classic" else DEFAULTS
    pick = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in base.items()}
    settings = transfer.Settings(
        size=pick["size"], iters=pick["iters"], optimizer=pick["optimizer"], lr=pick["lr"], init=pick["init"],
        content_weight=pick["content_weight"], style_weight=pick["style_weight"], tv_weight=pick["tv_weight"],
        content_layer=args.content_layer, style_layers=tuple(args.style_layers) if args.style_layers else None,
        style_layer_weights=tuple(args.style_layer_weights) if args.style_layer_weights else None,
        style_blend=tuple(args.style_blend) if args.style_blend else None, style_scale=args.style_scale,
        original_colors=args.original_colors, luminance_only=args.luminance_only,
        match_histogram=args.match_histogram, normalize_gradients=args.normalize_gradients, swag=args.swag,
        precision=args.precision,
        scales=tuple(args.scales) if args.scales else None, pooling=pick["pooling"], seed=args.seed,
        steps_per_call=args.steps_per_call)
    return settings, pick


def run(args: argparse.Namespace) -> int:
    # ---- validate everything before any work
    inputs = [args.content, *args.styles] + ([args.init] if args.init not in (None, "content", "random") else [])
    out = check_output(args.output, inputs, suffixes=IMAGE_SUFFIXES)
    report_path = Path(args.report) if args.report else out.with_suffix(".json")
    check_output(report_path, inputs + [out], suffixes=[".json"])
    settings, pick = settings_from_args(args)
    settings = transfer.validate(settings, args.arch, len(args.styles))
    if args.save_every:
        total = settings.iters * len(settings.sizes)
        for done in range(args.save_every, total, args.save_every):
            check_output(snapshot_path(out, done), inputs, suffixes=IMAGE_SUFFIXES)
    if args.seed < 0:
        raise StylejaxError(f"seed must be >= 0, got {args.seed}")
    content = read_image(args.content)
    styles = [read_image(path) for path in args.styles]
    init_image = read_image(settings.init) if settings.init not in ("content", "random") else None
    w = weights.load(args.weights, args.arch)
    classic = None
    if args.preset == "classic":
        settings, classic = classic_settings(settings, w, content)
    return _run(args, w, content, styles, settings, init_image, out, report_path, inputs, classic)


def classic_settings(settings: transfer.Settings, w, content):
    """Map jcjohnson's weights (its units) onto alpha, beta, lambda_l at the output size."""
    from stylejax.images import resize_longest

    h, wd = resize_longest(content, settings.sizes[-1]).size[::-1]
    alpha, beta, lambdas = transfer.classic_weights(
        w.arch, w.params, (h, wd), settings.content_layer, settings.style_layers,
        content_strength=settings.content_weight, style_strength=settings.style_weight, pooling=settings.pooling)
    user = settings.style_layer_weights or (1.0,) * len(lambdas)
    mapped = dataclasses.replace(settings, content_weight=alpha, style_weight=beta,
                              style_layer_weights=tuple(l * u for l, u in zip(lambdas, user)))
    note = {"preset": "classic", "jcjohnson_units": {"content_weight": settings.content_weight,
                                                     "style_weight": settings.style_weight,
                                                     "tv_weight": settings.tv_weight},
            "mapping": "alpha = 2 w_c / (C h w) at the content layer, beta = w_s, lambda_l = 1 / C_l^2"}
    return mapped, note


def snapshot_path(out: Path, done: int) -> Path:
    """Where ``--save-every`` writes the image after ``done`` iterations: OUT_<done>.png."""
    return out.with_name(f"{out.stem}_{done}{out.suffix}")


def _run(args, w, content, styles, settings, init_image, out: Path, report_path: Path, inputs, classic) -> int:
    bar = progress_bar(settings.iters * len(settings.sizes), "transfer", quiet=args.quiet)
    state = {"done": 0}
    save_every = getattr(args, "save_every", None)

    def callback(done, total, loss, get_images):
        bar.update(done - state["done"])
        state["done"] = done
        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        if save_every and done % save_every == 0 and done < total:
            write_image(snapshot_path(out, done), get_images()[0])

    try:
        result = transfer.transfer(w, content, styles, settings, init_image=init_image, callback=callback)
    finally:
        bar.close()
    write_image(out, result.images[0])
    report = {
        "command": "transfer", "content": str(inputs[0]), "styles": [str(p) for p in inputs[1:1 + len(styles)]],
        "output": str(out), "settings": settings.to_dict(), "preset": classic,
        "objective": result.objective, "iterations": result.iterations, "seconds": result.seconds,
        "s_per_iter": result.s_per_iter, "per_scale": result.per_scale, "interrupted": result.interrupted,
        "loss": result.loss[0], "history": result.history, "shape": list(result.images.shape[1:3]),
        "weights": w.report(), **environment(),
    }
    write_json(report_path, report)
    if result.interrupted:
        print(f"stylejax: interrupted after {result.iterations} iterations; saved the best image so far to "
              f"{out} and the report to {report_path}", file=sys.stderr)
        return 130
    loss = result.loss[0]
    print(f"wrote {out} ({result.images.shape[2]}x{result.images.shape[1]}, {result.iterations} iterations, "
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
    settings = transfer.validate(transfer.Settings(size=args.size, iters=args.iters, style_weight=args.style_weight),
                                 args.arch, 1)
    content, style = read_image(content_path), read_image(style_path)
    w = weights.load(args.weights, args.arch)
    args.save_every = None
    return _run(args, w, content, [style], settings, None, out, report_path,
                [content_path, style_path], None)
