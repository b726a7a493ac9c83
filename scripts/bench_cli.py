#!/usr/bin/env python
"""`stylejax transfer` as users run it vs plain PyTorch: same weights, same images, same run.

For each optimiser (Adam, L-BFGS) and round, runs the command

    python -m stylejax transfer CONTENT STYLE -o OUT.png --size N --iters K --optimizer OPT --quiet

with every other option at its default (alpha 1, beta 10, lambda 1/5 on conv1_1..conv5_1,
content conv4_2, start from the content, L-BFGS history 100 and step 1, Adam step 10), and
reads its JSON report: ``s_per_iter`` (median time of a step after the first, compiled, call)
and ``loss.total`` (J of the best evaluated iterate, the one written). Then the same objective
and optimiser in plain PyTorch on the same converted weights (``torch_vgg.gatys_objective``,
channels_last): ``torch.optim.LBFGS(lr=1, history_size=100, max_iter=1, line_search_fn=None)``
stepped K times, or ``torch.optim.Adam(lr=10)``, timed the same way (median step after the
first) and keeping the best evaluated iterate the same way. The runs alternate, the order
rotated every round; medians over rounds.

Reported per optimiser: s/iter of both and the ratio stylejax / PyTorch; the objective after
the same K iterations, as each run keeps it (best evaluated J) and as the same judge scores
both written images (u8, under the PyTorch objective); J at the content image from both sides
(the objectives agree); the L-BFGS pairs PyTorch holds at the end.

    python scripts/bench_cli.py [--size 256] [--iters 30] [--rounds 3] [--json out.json]

The command applies its own process settings (``stylejax.runtime.configure``); PyTorch runs in
this process with glibc's defaults, as its users run it (``--malloc keep``: the same policy).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import stylejax
from stylejax import runtime
from stylejax.images import read_image, resize_longest, to_uint8
from stylejax.style.config import default_layers

OPTIMIZERS = ("adam", "lbfgs")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
ASSETS = Path(stylejax.__file__).resolve().parent / "assets"


def default_image(name: str, fallback: str) -> Path:
    """A shared test image when present, else one shipped with stylejax."""
    return DATA / name if (DATA / name).exists() else ASSETS / fallback


def run_cli(content: Path, style: Path, size: int, iters: int, optimizer: str, out: Path) -> dict:
    """One ``stylejax transfer`` process; its report's timing and loss, and the written image."""
    content, style, out = content.resolve(), style.resolve(), out.resolve()  # the command runs in out's folder
    report = out.with_suffix(".json")
    cmd = [sys.executable, "-m", "stylejax", "transfer", str(content), str(style), "-o", str(out),
           "--report", str(report), "--size", str(size), "--iters", str(iters), "--optimizer", optimizer, "--quiet"]
    env = os.environ.copy()  # the command loads the stylejax this script loaded
    env["PYTHONPATH"] = os.pathsep.join([str(Path(stylejax.__file__).resolve().parents[1]),
                                         *filter(None, [env.get("PYTHONPATH")])])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out.parent, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench_cli: {' '.join(cmd)} failed: {' '.join(proc.stderr.strip().splitlines()[-1:])}")
    r = json.loads(report.read_text())
    return {"s_per_iter": r["s_per_iter"], "J_best": r["loss"]["total"], "J_content": r["history"][0],
            "iterations": r["iterations"], "first_call_s": r["per_scale"][-1]["first_call_s"], "wall_s": wall,
            "image": read_image(out), "xla_flags": r.get("xla_flags", ""), "settings": r["settings"],
            "objective": r["objective"], "shape": r["shape"]}


def run_torch(objective, content: np.ndarray, iters: int, optimizer: str, lr: float, memory: int) -> dict:
    """K steps of torch.optim from the content; per-step times, best evaluated iterate."""
    import torch

    leaf = torch.from_numpy(content.astype(np.float32))[None].contiguous().requires_grad_(True)
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([leaf], lr=lr, max_iter=1, history_size=memory, tolerance_grad=0.0,
                                tolerance_change=0.0, line_search_fn=None)
    else:
        opt = torch.optim.Adam([leaf], lr=lr)

    def closure():
        opt.zero_grad()
        loss = objective(leaf)
        loss.backward()
        return loss

    times, history = [], []
    best_j, best_x = float("inf"), None
    for _ in range(iters):
        x = leaf.detach().clone()  # the iterate this step evaluates (copied outside the timing)
        t0 = time.perf_counter()
        if optimizer == "lbfgs":
            loss = opt.step(closure)
        else:
            loss = closure()
            opt.step()
        j = float(loss.detach())
        times.append(time.perf_counter() - t0)
        history.append(j)
        if j < best_j:  # False for NaN, as in the library
            best_j, best_x = j, x
    with torch.no_grad():
        j = float(objective(leaf))
    if j < best_j or best_x is None:
        best_j, best_x = j, leaf.detach().clone()
    pairs = len(opt.state[leaf].get("old_dirs", [])) if optimizer == "lbfgs" else None
    steady = times[1:] or times
    return {"s_per_iter": statistics.median(steady), "J_best": best_j, "J_final": j, "J_content": history[0],
            "first_step_s": times[0], "iterations": iters, "pairs": pairs,
            "image": to_uint8(best_x[0].numpy())}


def judge(objective, image: np.ndarray) -> float:
    """J of a u8[H, W, 3] image under the PyTorch objective."""
    import torch

    with torch.no_grad():
        return float(objective(torch.from_numpy(image.astype(np.float32))[None]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256, help="--size of the command: longest side in px (default 256)")
    p.add_argument("--iters", type=int, default=30, help="iterations per run (default 30)")
    p.add_argument("--rounds", type=int, default=3, help="runs per optimiser and side (default 3)")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="comma-separated (default adam,lbfgs)")
    p.add_argument("--content", type=Path, default=default_image("tubingen.jpg", "chelsea.jpg"))
    p.add_argument("--style", type=Path, default=default_image("starry_night.jpg", "hubble_deep_field.jpg"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    p.add_argument("--malloc", choices=("default", "keep"), default="default",
                   help="glibc allocator policy of this (PyTorch) process; the command always applies 'keep'")
    p.add_argument("--keep", type=Path, default=None, help="keep the command's images and reports in this folder")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    keeps = runtime.keep_allocations() if args.malloc == "keep" else False  # before torch starts threads
    import torch

    from torch_vgg import TorchVGG, gatys_objective

    torch.set_num_threads(args.threads)
    optimizers = [o for o in args.optimizers.split(",") if o]
    d = stylejax.DEFAULTS
    w = stylejax.load_weights("vgg16")
    content_layers, style_layers = default_layers(w.arch)
    lambdas = (1.0 / len(style_layers),) * len(style_layers)
    content = np.asarray(resize_longest(read_image(args.content), args.size))
    style_size = max(1, int(np.ceil(d.style_scale * args.size)))
    style = np.asarray(resize_longest(read_image(args.style), style_size))
    net = TorchVGG(w.params, channels_last=True)
    objective = gatys_objective(net, content, style, content_layers, style_layers, alpha=d.content_weight,
                                beta=d.style_weight, layer_weights=lambdas, tv=d.tv_weight)

    runs: dict[str, dict[str, list[dict]]] = {o: {"stylejax": [], "torch": []} for o in optimizers}
    jobs = [(o, side) for o in optimizers for side in ("stylejax", "torch")]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for r in range(args.rounds):
            for o, side in jobs[r % len(jobs):] + jobs[: r % len(jobs)]:
                if side == "stylejax":
                    res = run_cli(args.content, args.style, args.size, args.iters, o, folder / f"stylejax_{o}_{r}.png")
                else:
                    res = run_torch(objective, content, args.iters, o, stylejax.Options(optimizer=o).learning_rate,
                                    d.lbfgs_memory)
                res["J_u8_judged"] = judge(objective, res.pop("image"))
                runs[o][side].append(res)
                print(f"[{time.perf_counter() - start:6.0f}s] round {r + 1} {o:5s} {side:8s} "
                      f"{res['s_per_iter'] * 1e3:7.1f} ms/iter  J best {res['J_best']:.4e}", file=sys.stderr, flush=True)

    first = runs[optimizers[0]]["stylejax"][0]
    objective_used = first["objective"]
    assert objective_used["content_layers"] == list(content_layers), objective_used
    assert np.allclose([objective_used["alpha"], objective_used["beta"], objective_used["gamma"]],
                       [d.content_weight, d.style_weight, d.tv_weight]), objective_used
    assert np.allclose(list(objective_used["style_layer_weights"].values()), lambdas), objective_used

    def med(rows, key):
        return statistics.median(row[key] for row in rows)

    summary = {}
    for o in optimizers:
        sj, tt = runs[o]["stylejax"], runs[o]["torch"]
        summary[o] = {"stylejax_s_per_iter": med(sj, "s_per_iter"), "torch_s_per_iter": med(tt, "s_per_iter"),
                      "ratio": med(sj, "s_per_iter") / med(tt, "s_per_iter"),
                      "stylejax_J_best": med(sj, "J_best"), "torch_J_best": med(tt, "J_best"),
                      "stylejax_J_u8": med(sj, "J_u8_judged"), "torch_J_u8": med(tt, "J_u8_judged"),
                      "J_content_rel_diff": abs(sj[0]["J_content"] - tt[0]["J_content"]) / abs(tt[0]["J_content"]),
                      "torch_pairs": tt[-1]["pairs"], "stylejax_first_call_s": med(sj, "first_call_s")}
    result = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "size": args.size, "shape": first["shape"], "iters": args.iters, "rounds": args.rounds,
              "content": str(args.content), "style": str(args.style), "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "torch_malloc_keeps_allocations": keeps,
              "command_xla_flags": first["xla_flags"], "objective": objective_used,
              "lbfgs_memory": d.lbfgs_memory, "summary": summary, "runs": runs,
              "wall_s": time.perf_counter() - start}
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return 0


def report(result: dict) -> str:
    h, w = result["shape"]
    lines = [f"stylejax transfer vs PyTorch {result['torch']} ({result['torch_threads']} threads, glibc malloc "
             f"keeps allocations: {result['torch_malloc_keeps_allocations']}): {w}x{h} px, {result['iters']} "
             f"iterations, {result['rounds']} rounds; {Path(result['content']).name} in the style of "
             f"{Path(result['style']).name}",
             f"defaults: alpha {result['objective']['alpha']:g}, beta {result['objective']['beta']:g}, "
             f"gamma {result['objective']['gamma']:g}; L-BFGS history {result['lbfgs_memory']}; "
             f"the command's XLA_FLAGS={result['command_xla_flags']!r}",
             "",
             f"  {'optimizer':<9} {'stylejax':>10} {'PyTorch':>10} {'ratio':>6}   {'J best stylejax':>15} "
             f"{'J best PyTorch':>15}   {'J(u8) stylejax':>15} {'J(u8) PyTorch':>15}  J(content) rel diff"]
    for o, s in result["summary"].items():
        lines.append(f"  {o:<9} {s['stylejax_s_per_iter'] * 1e3:8.1f}ms {s['torch_s_per_iter'] * 1e3:8.1f}ms "
                     f"{s['ratio']:6.3f}   {s['stylejax_J_best']:15.4e} {s['torch_J_best']:15.4e}   "
                     f"{s['stylejax_J_u8']:15.4e} {s['torch_J_u8']:15.4e}  {s['J_content_rel_diff']:.1e}")
    for o, s in result["summary"].items():
        per = ", ".join(f"{r['s_per_iter'] * 1e3:.0f}" for r in result["runs"][o]["stylejax"])
        tper = ", ".join(f"{r['s_per_iter'] * 1e3:.0f}" for r in result["runs"][o]["torch"])
        pairs = f"; PyTorch holds {s['torch_pairs']} L-BFGS pairs at the end" if s["torch_pairs"] is not None else ""
        lines.append(f"  {o}: stylejax ms/iter per round [{per}] (first call {s['stylejax_first_call_s']:.1f} s), "
                     f"PyTorch [{tper}]{pairs}")
    lines.append("(s/iter: the median step after the first; J best: the best evaluated iterate, the one each side "
                 "keeps; J(u8): the written images scored by the PyTorch objective)")
    lines.append(f"wall time {result['wall_s']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
