#!/usr/bin/env python
"""Where each millisecond of the library's Gatys step goes: XLA profiler times per compiled op.

Compiles ``stylejax.style.loop.steps`` (the exact call ``stylejax transfer`` makes, loop state
donated; L-BFGS with the default history of ``stylejax.DEFAULTS.lbfgs_memory`` pairs), runs
``--warm`` steps (the L-BFGS recursion grows with the pairs held, up to the history size), and
profiles ``--steps`` calls with ``jax.profiler``. Each op of the optimised HLO is classified from its fused body
and its source metadata (conv forward / conv data-gradient / Winograd matmuls / Gram / Gram
gradient / layout copies / elementwise), with analytic FLOPs for convs and dots. Prints one
row per op and a summary per class with GFLOP/s against the FLOP bound given by ``--peak``
(GFLOP/s; default: the XLA 3x3-conv peak measured in the same process, as in bench.py).

Usage::

    STYLEJAX_CACHE=/tmp/sjcache python scripts/bench_breakdown.py [--size 256] [--optimizer adam] [--warm 3]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import math
import re
import tempfile
import time
from pathlib import Path

from stylejax import runtime

SETTINGS = runtime.configure()  # what the stylejax command sets, before JAX starts

import bench_workloads as bw  # noqa: E402  (after the process settings)

_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\w+)\[([\d,]*)\]\S* (\w[\w-]*)\((.*)$")


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split(",") if d)


def parse_hlo(text: str) -> tuple[dict[str, list[str]], list[str]]:
    """Split optimised HLO text into {computation name: lines} and the ENTRY lines."""
    comps: dict[str, list[str]] = {}
    entry: list[str] = []
    current = None
    for line in text.splitlines():
        head = re.match(r"^(ENTRY )?%([\w.\-]+) ", line)
        if head and line.rstrip().endswith("{"):
            current = comps.setdefault(head.group(2), [])
            if head.group(1):
                entry = current
            continue
        if current is not None and line.strip() != "}":
            current.append(line)
    return comps, entry


def shapes_of(text: str) -> dict[str, tuple[int, ...]]:
    """{instruction name: dims} over every computation of the HLO text."""
    out = {}
    for line in text.splitlines():
        m = _INSTR.match(line)
        if m:
            out[m.group(1)] = _dims(m.group(3))
    return out


def classify(line: str, comps: dict[str, list[str]], shapes: dict[str, tuple[int, ...]]) -> tuple[str, float, str]:
    """(class, FLOPs, short description) of one ENTRY instruction."""
    called = re.search(r"calls=%([\w.\-]+)", line)
    body = comps.get(called.group(1), []) if called else []
    lines = body + [line]
    op_names = re.findall(r'op_name="([^"]*)"', "\n".join(lines))
    backward = any("transpose(" in n for n in op_names)
    for inner in lines:
        m = _INSTR.match(inner)
        if not m or m.group(4) not in ("convolution", "dot"):
            continue
        out_shape = _dims(m.group(3))
        lhs, rhs = (shapes.get(n, ()) for n in re.findall(r"%([\w.\-]+)", m.group(5))[:2])
        if m.group(4) == "convolution":
            window = re.search(r"size=(\d+)x(\d+)", m.group(5))
            kh, kw = (int(window.group(1)), int(window.group(2))) if window else (1, 1)
            cin = lhs[-1] if lhs else 0  # NHWC input
            flops = 2 * math.prod(out_shape) * kh * kw * cin
            kind = "conv data-grad" if backward else "conv forward"
            return kind, flops, f"{kh}x{kw} conv -> {list(out_shape)}, Cin {cin}"
        contracting = re.search(r"lhs_contracting_dims=\{(\d+)\}", m.group(5))
        k = lhs[int(contracting.group(1))] if contracting and lhs else 0
        flops = 2 * math.prod(out_shape) * k
        if len(out_shape) == 3:  # 16 batched tile products: a Winograd conv
            kind = "Winograd matmuls (bwd)" if backward else "Winograd matmuls (fwd)"
        else:
            kind = "Gram gradient" if backward else "Gram"
        return kind, flops, f"dot -> {list(out_shape)}, K {k}"
    head = line.split("=", 1)[1]
    if "transpose" in head.split("(")[0] or "copy" in line.split("=")[0]:
        return "layout copies", 0.0, "transpose/copy"
    return "elementwise (ReLU, pool, transforms)", 0.0, op_names[0].split("/")[-1] if op_names else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--optimizer", choices=("adam", "lbfgs"), default="adam")
    ap.add_argument("--scan", metavar="LAYER", help="profile a patch-scan batch (16 x 224 px) to LAYER instead")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warm", type=int, default=3,
                    help="steps run before timing (L-BFGS: the pairs held grow with them, to the history size)")
    ap.add_argument("--peak", type=float, default=None, help="FLOP bound in GFLOP/s (default: measure XLA's)")
    ap.add_argument("--top", type=int, default=25, help="op rows to print")
    args = ap.parse_args()

    import jax

    import stylejax

    w = jax.device_put(stylejax.load_weights("vgg16"))
    runner = (bw.library_scan(w, args.scan, 16, 224) if args.scan
              else bw.library_transfer(w, args.size, args.optimizer))
    hlo = runner.compiled.as_text()
    comps, entry = parse_hlo(hlo)
    shapes = shapes_of(hlo)
    info = {}
    for line in entry:
        m = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = ", line)
        if m:
            info[m.group(1)] = classify(line, comps, shapes)

    peak = args.peak
    if peak is None:
        conv = bw.jax_conv(*bw.PEAK_CONV)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            conv.run()
            times.append(time.perf_counter() - t0)
        peak = bw.conv_peak_flops(*bw.PEAK_CONV) / min(times) / 1e9

    for _ in range(args.warm):
        runner.run()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        runner.run()
    wall_ms = (time.perf_counter() - t0) / args.steps * 1e3

    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(args.steps):
            runner.run()
        jax.profiler.stop_trace()
        trace = sorted(Path(trace_dir).rglob("*.trace.json.gz"))[-1]
        events = json.load(gzip.open(trace))["traceEvents"]

    per_op: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("ph") == "X" and e.get("name") in info:
            per_op[e["name"]] += e.get("dur", 0) / 1e3 / args.steps

    what = f"scan to {args.scan}, 16 x 224 px" if args.scan else f"Gatys step, {args.optimizer}, {args.size} px"
    if runner.pairs is not None:
        what += f", {runner.pairs()} of {bw.LBFGS_MEMORY} L-BFGS pairs held"
    print(f"{what}: {wall_ms:.1f} ms per step (wall, no profiler); "
          f"FLOP bound: {peak:.1f} GFLOP/s (XLA 3x3 conv peak, this process); process settings {SETTINGS}")
    print(f"\n{'op':28s} {'class':36s} {'ms':>8s} {'GFLOP':>7s} {'GFLOP/s':>8s}  what")
    for name, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[: args.top]:
        kind, flops, what = info[name]
        rate = f"{flops / ms / 1e6:8.1f}" if flops else " " * 8
        print(f"{name:28s} {kind:36s} {ms:8.2f} {flops / 1e9:7.3f} {rate}  {what}")

    classes: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for name, ms in per_op.items():
        kind, flops, _ = info[name]
        classes[kind][0] += ms
        classes[kind][1] += flops
        classes[kind][2] += 1
    total_ms = sum(per_op.values())
    print(f"\n{'class':36s} {'ops':>4s} {'ms':>8s} {'share':>6s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'at bound':>9s}")
    for kind, (ms, flops, n) in sorted(classes.items(), key=lambda kv: -kv[1][0]):
        bound = f"{flops / peak / 1e6:7.1f}ms" if flops else ""
        rate = f"{flops / ms / 1e6:8.1f}" if flops else ""
        print(f"{kind:36s} {n:4d} {ms:8.1f} {ms / total_ms:6.1%} {flops / 1e9:7.2f} {rate:>8s} {bound:>9s}")
    flops = sum(c[1] for c in classes.values())
    print(f"{'all ops':36s} {len(per_op):4d} {total_ms:8.1f} {1:6.0%} {flops / 1e9:7.2f} "
          f"{flops / total_ms / 1e6:8.1f} {flops / peak / 1e6:7.1f}ms")
    print(f"(ops sum to {total_ms:.1f} ms of the {wall_ms:.1f} ms wall step; the rest is dispatch and "
          f"thread hand-offs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
