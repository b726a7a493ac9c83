"""Draw every attribution method for one unit on one image, side by side (docs/attribution.png).

    python scripts/attribution_figure.py -o docs/attribution.png
    python scripts/attribution_figure.py --image photo.jpg --layer conv4_3 --unit 12 -o fig.png

Without --unit the unit of --layer with the largest response to the image is used.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stylejax import weights
from stylejax.images import read_image, write_image
from stylejax.interpret import attribution as A

ASSET = Path(__file__).resolve().parents[1] / "stylejax" / "assets" / "chelsea.jpg"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default=str(ASSET))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--layer", default="conv5_3")
    p.add_argument("--unit", type=int, default=None)
    p.add_argument("--at", default="conv5_1")
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args()

    w = weights.load("vgg16")
    pixels = read_image(args.image, args.size)
    unit = args.unit
    if unit is None:
        acts = A.activations({"features": w.params}, np.asarray(pixels, np.float32)[None],
                             A.Net(w.arch, w.preprocessing, args.layer), (args.layer,))[args.layer]
        unit = int(np.asarray(acts)[0].max(axis=(0, 1)).argmax())
    runs = [("occlusion", dict(window=32, stride=16), "occlusion 32/16"),
            ("gradcam", dict(at=args.at), f"Grad-CAM at {args.at}"),
            ("guided-gradcam", dict(at=args.at), "guided Grad-CAM"),
            ("ig", dict(steps=32), "integrated gradients, 32 steps"),
            ("smoothgrad", dict(samples=24, noise=0.15), "SmoothGrad 24 x 0.15"),
            ("saliency", {}, "saliency (gradient)")]
    panels, labels, log = [pixels], [f"{Path(args.image).name} {pixels.shape[1]}x{pixels.shape[0]}"], {}
    for method, kw, label in runs:
        start = time.perf_counter()
        r = A.attribute(w, pixels, A.Settings(method, args.layer, unit, **kw))
        log[method] = {"seconds": round(time.perf_counter() - start, 2), "target": r.target,
                       "baseline": r.baseline, **r.extra}
        panels.append(A.overlay(pixels, r.heat))
        labels.append(label)
        print(method, log[method], flush=True)

    h, wd = pixels.shape[:2]
    strip, gap, cols = 16, 4, 4
    rows = -(-len(panels) // cols)
    canvas = Image.new("RGB", (cols * wd + (cols - 1) * gap, rows * (h + strip) + (rows - 1) * gap + strip),
                       (255, 255, 255))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    draw.text((2, 1), f"VGG16 {args.layer} unit {unit}: T(x) = {log['saliency']['target']:.0f}", fill=(0, 0, 0), font=font)
    for k, (panel, label) in enumerate(zip(panels, labels)):
        x, y = (k % cols) * (wd + gap), strip + (k // cols) * (h + strip + gap)
        draw.text((x + 2, y + 1), label, fill=(0, 0, 0), font=font)
        canvas.paste(Image.fromarray(panel), (x, y + strip))
    write_image(args.output, np.asarray(canvas))
    print(json.dumps({"unit": unit, "layer": args.layer, "runs": log}, indent=1))


if __name__ == "__main__":
    main()
