"""Peak memory and s/iter of `stylejax transfer` at print sizes, tiled and untiled.

    python scripts/bench_tiling.py [--sizes 512,1024,2048,2896] [--tile 256] [--iters 3] [--budget-size 2896] [--out DIR]

Each run is its own process (so its peak resident memory is its own): a 4:3 centre crop of the
shipped chelsea photo in the style of the shipped Starry Night, Adam from the content, the
default layers. Untiled runs are skipped where the estimate exceeds the memory available. Also
one run at 2896x2172 with ``--max-memory 6`` (tiles chosen by the budget). Prints a Markdown
table and writes ``bench_tiling.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from stylejax import memory
from stylejax.style import tiling
from stylejax.style.objective import Spec
from stylejax.style.config import default_layers

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "stylejax" / "assets"


def crop_4x3(src: Path, dst: Path) -> None:
    im = Image.open(src).convert("RGB")
    w, h = im.size
    cw = min(w, h * 4 // 3)
    ch = cw * 3 // 4
    im.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)).save(dst)


def run(content: Path, size: int, extra: list[str], iters: int, out: Path) -> dict:
    target = out / f"out_{size}_{'_'.join(extra).replace('-', '') or 'untiled'}.png"
    cmd = [sys.executable, "-m", "stylejax", "transfer", str(content), str(ASSETS / "starry_night.jpg"),
           "--size", str(size), "--iters", str(iters), "--optimizer", "adam", "--quiet", "-o", str(target), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        return {"size": size, "args": extra, "error": proc.stderr.strip().splitlines()[-1]}
    report = json.loads(target.with_suffix(".json").read_text())
    return {"size": size, "shape": report["shape"], "args": extra, "tiles": report["tiles"],
            "tile": report["memory"].get("tile"), "window": report["memory"].get("window"),
            "s_per_iter": report["s_per_iter"], "peak_rss_gib": report["memory"]["peak_rss_gib"],
            "estimated_peak_gib": report["memory"]["estimated_peak_gib"], "wall_s": wall,
            "first_call_s": report["per_scale"][-1]["first_call_s"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="512,1024,2048,2896")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--budget-size", type=int, default=2896, help="the --max-memory 6 run's size (0: skip)")
    args = p.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_tiling_"))
    out.mkdir(parents=True, exist_ok=True)
    content = out / "chelsea_4x3.png"
    crop_4x3(ASSETS / "chelsea.jpg", content)
    spec = Spec(*default_layers("vgg16"))
    rows = []
    for size in (int(v) for v in args.sizes.split(",")):
        shape = (size * 3 // 4, size)
        need = tiling.estimate("vgg16", spec, shape, optimizer="adam")
        if need < memory.BUDGET_SHARE * memory.available_memory():
            rows.append(run(content, size, ["--max-memory", "1000"], args.iters, out))
        else:
            rows.append({"size": size, "args": ["untiled"], "skipped": f"estimate {memory.gib(need)}"})
        print(json.dumps(rows[-1]), flush=True)
        rows.append(run(content, size, ["--tile", str(args.tile)], args.iters, out))
        print(json.dumps(rows[-1]), flush=True)
    if args.budget_size:
        rows.append(run(content, args.budget_size, ["--max-memory", "6"], 2, out))
        print(json.dumps(rows[-1]), flush=True)
    (out / "bench_tiling.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("| size | run | tiles | window | s/iter | peak RSS (GiB) | estimate (GiB) |\n|---|---|---|---|---|---|---|")
    for r in rows:
        if "s_per_iter" in r:
            print(f"| {r['shape'][1]}x{r['shape'][0]} | {' '.join(r['args'])} | {r['tiles']} | "
                  f"{'x'.join(map(str, r['window'] or [])) or '-'} | {r['s_per_iter']:.2f} | {r['peak_rss_gib']:.2f} | "
                  f"{r['estimated_peak_gib']:.2f} |")
        else:
            print(f"| {r['size']} | {' '.join(r['args'])} | - | - | - | {r.get('skipped') or r.get('error')} | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
