#!/usr/bin/env python
"""stylejax vs plain PyTorch on the same VGG16 weights, same machine, same run.

Measures, alternating the implementations (A B C A B C ..., order rotated every round) and
taking medians:

1. the machine's fp32 3x3-conv throughput (256->256, 56x56, batch 8) in XLA and in torch
   (NCHW and channels_last); the best is the "measured peak";
2. one Gatys transfer step (content conv4_2, style conv1_1..conv5_1, forward to conv5_1 +
   gradient w.r.t. the image, Adam or L-BFGS update) at 256 and 512 px: stylejax's own compiled
   step (``stylejax.style.loop.steps``, state donated, as ``stylejax.transfer`` runs it) against
   torch.optim, both with the library's defaults (L-BFGS history ``stylejax.DEFAULTS.lbfgs_memory``
   = 100, step 1; Adam step 10);
3. a patch scan batch (forward to a layer + per-channel max/argmax over space) at 224 px,
   batch 16, for conv2_2 and conv5_3;
4. the peak resident memory of each workload, in a fresh subprocess per implementation;
5. the JAX compile time of each workload.

FLOPs are analytic (convs only: forward to the deepest layer + data-gradient convs, no weight
gradients); GFLOP/s = FLOPs / median time. Ratios are stylejax time / best PyTorch time (<1:
stylejax is faster), from medians and from minima.

Usage::

    STYLEJAX_CACHE=/tmp/sjcache python scripts/bench.py            # full run, ~8 min on 2 cores
    python scripts/bench.py --quick --json /tmp/bench.json         # ~1.5 min
    python scripts/bench.py --malloc keep                          # both with the allocator policy

``scripts/bench_cli.py`` times whole ``stylejax transfer`` runs (the report's ``s_per_iter``)
against PyTorch instead. Both frameworks run in this one process, so process settings apply to both. The XLA flags of
``stylejax.runtime`` only concern XLA. The glibc allocator policy (``--malloc keep``) speeds up
PyTorch as well, so it is off by default: PyTorch is then measured as its users run it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from stylejax import runtime

runtime.set_xla_flags()  # as the stylejax command does, before JAX starts
MALLOC = {"keeps_allocations": False}  # --malloc keep: glibc policy for both frameworks (set in main)
THREADS = 2
SCAN_LAYERS = ("conv2_2", "conv5_3")


# ----------------------------------------------------------------------------- helpers

def _setup_torch():
    import torch

    torch.set_num_threads(THREADS)
    return torch


def _rss_mb() -> float:
    """Current resident set size in MiB (from /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    """RSS high-water mark in MiB: VmHWM (ru_maxrss would carry the parent's peak over a fork)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux ``clear_refs`` 5); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _check_value(out) -> np.ndarray:
    """A small array to compare implementations: the loss, or the scan's max values."""
    if isinstance(out, tuple):
        out = out[0]
    if hasattr(out, "detach"):
        out = out.detach().numpy()
    return np.asarray(out, np.float64).ravel()


def _log(start: float, what: str) -> None:
    print(f"[{time.perf_counter() - start:6.1f}s] {what}", file=sys.stderr, flush=True)


def machine() -> dict:
    import jax
    import jaxlib
    torch = _setup_torch()

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split())
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
        "python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
        "jax_backend": jax.default_backend(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "torch_mkldnn": torch.backends.mkldnn.is_available(), "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "malloc_keeps_allocations": MALLOC["keeps_allocations"],
    }


PEAK_RUNNERS: dict = {}  # conv-peak probes timed inside every workload's rounds (set by main)


def _loadavg() -> float:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return float("nan")


def alternate(runners: dict, reps: int, units: int, *, probes: bool = True) -> dict[str, dict]:
    """Warm each runner once, then ``reps`` rounds of ``units`` calls each, rotating the order.

    With ``probes``, the conv-peak runners (``peak_*``) join every round, so each workload's
    "% of peak" is against the peak measured under the same machine load.
    Returns ``{name: {"median_s", "min_s", "times_s", "compile_s", "check"}}``, times per unit.
    """
    if probes:
        runners = {**runners, **PEAK_RUNNERS}
    names = list(runners)
    out = {name: {"times_s": [], "compile_s": runners[name].compile_s} for name in names}
    for name in names:
        t0 = time.perf_counter()
        out[name]["check"] = _check_value(runners[name].run())
        out[name]["first_call_s"] = time.perf_counter() - t0
    for r in range(reps):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            for _ in range(units):
                runners[name].run()
            out[name]["times_s"].append((time.perf_counter() - t0) / units)
    for name in names:
        times = out[name]["times_s"]
        out[name].update(median_s=statistics.median(times), min_s=min(times))
        if runners[name].pairs is not None:  # L-BFGS: the recursion's length at the end of the rounds
            out[name]["lbfgs_pairs"] = runners[name].pairs()
    out["_loadavg"] = _loadavg()
    return out


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# ----------------------------------------------------------------------------- sections

def bench_conv(reps: int) -> dict:
    import bench_workloads as bw

    n, hw, c = bw.PEAK_CONV
    runners = {"jax": bw.jax_conv(n, hw, c), "torch_nchw": bw.torch_conv(n, hw, c, channels_last=False),
               "torch_cl": bw.torch_conv(n, hw, c, channels_last=True)}
    res = alternate(runners, reps, 2, probes=False)
    load = res.pop("_loadavg")
    PEAK_RUNNERS.update(peak_xla=runners["jax"], peak_torch=runners["torch_cl"])
    flops = bw.conv_peak_flops(n, hw, c)
    for r in res.values():
        r["gflops"] = flops / r["median_s"] / 1e9
        del r["check"]
    return {"flops": flops, "shape": f"3x3 conv {c}->{c}, {n}x{hw}x{hw}", "results": res, "loadavg": load,
            "peak_gflops": max(r["gflops"] for r in res.values())}


def bench_transfer(w, sizes, optimizers, reps: int, warm_steps: int = 0) -> list[dict]:
    import bench_workloads as bw

    rows = []
    for size in sizes:
        flops = bw.conv_flops("vgg16", size, size, "conv5_1", input_grad=True)
        gram = bw.gram_flops("vgg16", size, size, bw.STYLE_LAYERS, grad=True)
        for opt in optimizers:
            runners = {"jax": bw.library_transfer(w, size, opt),
                       "torch_nchw": bw.torch_transfer(w, size, opt, channels_last=False),
                       "torch_cl": bw.torch_transfer(w, size, opt, channels_last=True)}
            for runner in runners.values():  # further into the run: L-BFGS then holds more pairs
                for _ in range(warm_steps):
                    runner.run()
            res = alternate(runners, reps, 2 if size <= 256 else 1)
            rows.append({"workload": f"transfer {opt} {size}px", "size": size, "optimizer": opt,
                         "lbfgs_memory": bw.LBFGS_MEMORY if opt == "lbfgs" else None, "warm_steps": warm_steps,
                         "conv_flops": flops, "gram_flops": gram, "results": res})
            print(f"  done: transfer {opt} {size}px", file=sys.stderr, flush=True)
    return rows


def bench_scan(w, layers, batch: int, size: int, reps: int) -> list[dict]:
    import bench_workloads as bw

    rows = []
    for layer in layers:
        runners = {"jax": bw.library_scan(w, layer, batch, size),
                   "torch_nchw": bw.torch_scan(w, layer, batch, size, channels_last=False),
                   "torch_cl": bw.torch_scan(w, layer, batch, size, channels_last=True)}
        res = alternate(runners, reps, 1)
        flops = bw.conv_flops("vgg16", size, size, layer, input_grad=False)["forward"] * batch
        rows.append({"workload": f"scan {layer} b{batch} {size}px", "layer": layer, "batch": batch,
                     "size": size, "conv_flops": {"forward": flops, "input_grad": 0, "total": flops},
                     "results": res})
        print(f"  done: scan {layer}", file=sys.stderr, flush=True)
    return rows


def finish_rows(rows: list[dict], peak_flops: int) -> None:
    """Add GFLOP/s, % of the peak measured in the same rounds, ratios to the best torch, cross-check."""
    for row in rows:
        res = row["results"]
        row["loadavg"] = res.pop("_loadavg")
        probes = {k: res.pop(k) for k in list(res) if k.startswith("peak_")}
        row["peak_gflops"] = {k: peak_flops / v["median_s"] / 1e9 for k, v in probes.items()}
        peak = max(row["peak_gflops"].values())
        best = min((k for k in res if k.startswith("torch")), key=lambda k: res[k]["median_s"])
        row["best_torch"] = best
        row["ratio"] = res["jax"]["median_s"] / res[best]["median_s"]
        row["ratio_min"] = res["jax"]["min_s"] / res[best]["min_s"]
        for r in res.values():
            r["gflops"] = row["conv_flops"]["total"] / r["median_s"] / 1e9
            r["pct_peak"] = 100 * r["gflops"] / peak
        row["check_rel_diff"] = max(_rel(res["jax"]["check"], res[k]["check"]) for k in res if k != "jax")
        for r in res.values():
            r["check"] = r["check"][:4].tolist()


# ----------------------------------------------------------------------------- memory (subprocesses)

def worker(spec: dict) -> dict:
    """Run one workload in this fresh process; report the RSS before it and the high-water mark."""
    import bench_workloads as bw

    if spec["fw"].startswith("torch"):
        _setup_torch()
    import stylejax

    w = stylejax.load_weights("vgg16")
    if spec["fw"] == "jax":
        import jax

        w = jax.device_put(w)
    base = _rss_mb()
    cl = spec["fw"] == "torch_cl"
    if spec["kind"] == "transfer":
        runner = (bw.library_transfer(w, spec["size"], spec["opt"]) if spec["fw"] == "jax"
                  else bw.torch_transfer(w, spec["size"], spec["opt"], channels_last=cl))
    else:
        runner = (bw.library_scan(w, spec["layer"], spec["batch"], spec["size"]) if spec["fw"] == "jax"
                  else bw.torch_scan(w, spec["layer"], spec["batch"], spec["size"], channels_last=cl))
    built, setup_peak = _rss_mb(), _peak_rss_mb()  # after targets + compilation
    reset = _reset_peak_rss()
    for _ in range(3):
        runner.run()
    run_peak = _peak_rss_mb()
    peak = max(setup_peak, run_peak)
    out = {"rss_before_mb": base, "peak_rss_mb": peak, "delta_mb": peak - base, "rss_built_mb": built,
           "setup_peak_mb": setup_peak}
    if reset:  # high-water mark of the 3 steps alone (VmHWM reset after compilation)
        out.update(run_peak_mb=run_peak, run_delta_mb=run_peak - base)
    return out


def bench_memory(specs: list[dict]) -> list[dict]:
    rows = []
    for spec in specs:
        malloc = ["--malloc", "keep"] if MALLOC["keeps_allocations"] else []
        out = subprocess.run([sys.executable, __file__, *malloc, "--worker", json.dumps(spec)],
                             capture_output=True, text=True, env=os.environ.copy(), check=False)
        if out.returncode != 0:
            rows.append({**spec, "error": out.stderr.strip().splitlines()[-1:]})
            continue
        rows.append({**spec, **json.loads(out.stdout.strip().splitlines()[-1])})
    return rows


# ----------------------------------------------------------------------------- report

def report(result: dict) -> str:
    lines = []
    m = result["machine"]
    lines.append(f"machine: {m['cpu']}, {m['cores']} cores, avx512f={m['avx512f']}; jax {m['jax']} "
                 f"({m['jax_backend']}), torch {m['torch']} ({m['torch_threads']} threads, "
                 f"mkldnn={m['torch_mkldnn']}); XLA_FLAGS={m['XLA_FLAGS']!r}; "
                 f"glibc malloc keeps allocations (both frameworks): {m.get('malloc_keeps_allocations')}")
    conv = result["conv"]
    lines.append(f"\n[conv peak] {conv['shape']}: {conv['flops'] / 1e9:.2f} GFLOP")
    for name, r in conv["results"].items():
        lines.append(f"  {name:<11} {r['median_s'] * 1e3:8.1f} ms  {r['gflops']:7.1f} GFLOP/s")
    lines.append(f"  measured peak: {conv['peak_gflops']:.1f} GFLOP/s (load average {conv['loadavg']:.1f}); "
                 "each workload below re-measures it in its own rounds")
    header = (f"  {'impl':<11} {'median':>9} {'min':>9} {'GFLOP/s':>8} {'%peak':>6} {'compile':>8}")
    for row in result["transfer"] + result["scan"]:
        f = row["conv_flops"]
        extra = f", Gram fwd+bwd {row['gram_flops'] / 1e9:.2f}" if "gram_flops" in row else ""
        extra += f"; L-BFGS history {row['lbfgs_memory']}" if row.get("lbfgs_memory") else ""
        extra += f"; timed after {row['warm_steps']} warm-up steps" if row.get("warm_steps") else ""
        lines.append(f"\n[{row['workload']}] conv GFLOP: forward {f['forward'] / 1e9:.2f} + input-grad "
                     f"{f['input_grad'] / 1e9:.2f} = {f['total'] / 1e9:.2f}{extra}")
        lines.append("  conv peak in the same rounds: " + ", ".join(
            f"{k[5:]} {v:.1f}" for k, v in row["peak_gflops"].items()) + f" GFLOP/s; load average {row['loadavg']:.1f}")
        lines.append(header)
        for name, r in row["results"].items():
            comp = f"{r['compile_s']:.2f}s" if r["compile_s"] else "-"
            lines.append(f"  {name:<11} {r['median_s'] * 1e3:7.1f}ms {r['min_s'] * 1e3:7.1f}ms "
                         f"{r['gflops']:8.1f} {r['pct_peak']:5.1f}% {comp:>8}")
        pairs = {k: r["lbfgs_pairs"] for k, r in row["results"].items() if "lbfgs_pairs" in r}
        if pairs:
            lines.append("  L-BFGS pairs held after the rounds: " + ", ".join(f"{k} {v}" for k, v in pairs.items()))
        if row["workload"].startswith("scan"):
            ips = {k: row["batch"] / r["median_s"] for k, r in row["results"].items()}
            lines.append("  images/s: " + ", ".join(f"{k} {v:.1f}" for k, v in ips.items()))
        lines.append(f"  ratio stylejax/{row['best_torch']} = {row['ratio']:.3f} (medians), {row['ratio_min']:.3f} "
                     f"(minima)   cross-check max rel diff {row['check_rel_diff']:.1e}")
    if result.get("memory"):
        lines.append("\n[peak memory] fresh process per workload: RSS high-water (VmHWM); the steps' own "
                     "peak is read after resetting VmHWM once targets are computed and the step compiled")
        for row in result["memory"]:
            what = (f"transfer {row['opt']} {row['size']}px" if row["kind"] == "transfer"
                    else f"scan {row['layer']} b{row['batch']} {row['size']}px")
            if "error" in row:
                lines.append(f"  {what:<26} {row['fw']:<11} ERROR {row['error']}")
            else:
                steps = (f"; 3 steps alone: peak {row['run_peak_mb']:6.0f} MiB" if "run_peak_mb" in row else "")
                lines.append(f"  {what:<26} {row['fw']:<11} process peak {row['peak_rss_mb']:6.0f} MiB "
                             f"(+{row['delta_mb']:5.0f} over {row['rss_before_mb']:.0f} after imports+weights; "
                             f"{row.get('setup_peak_mb', float('nan')):5.0f} after compile/targets){steps}")
    lines.append("\n[summary] stylejax time / best PyTorch time (target <= 0.8), conv % of measured peak "
                 "(target >= 70% for transfer), peak re-measured in each workload's rounds")
    lines.append(f"  {'workload':<26} {'ratio':>6} {'(min)':>6}  stylejax %peak  best torch %peak")
    for row in result["transfer"] + result["scan"]:
        res = row["results"]
        lines.append(f"  {row['workload']:<26} {row['ratio']:6.3f} {row['ratio_min']:6.3f}  "
                     f"{res['jax']['pct_peak']:13.1f}%  {row['best_torch']} {res[row['best_torch']]['pct_peak']:5.1f}%")
    lines.append(f"\nwall time {result['wall_s']:.0f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="256 px only, 3 rounds, scan batch 4, memory of one workload (~1.5 min)")
    p.add_argument("--reps", type=int, default=None, help="timed rounds per workload (default 5, quick 3)")
    p.add_argument("--sizes", default=None, help="comma-separated transfer sizes (default 256,512)")
    p.add_argument("--warm-steps", type=int, default=0,
                   help="optimisation steps each transfer implementation takes before its timed rounds "
                        "(L-BFGS then holds up to that many of its 100 pairs; default 0)")
    p.add_argument("--scan-size", type=int, default=224, help="scan image side in px (default 224)")
    p.add_argument("--scan-batch", type=int, default=None, help="scan batch (default 16, quick 4)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", metavar="PATH", help="also write the full results as JSON")
    p.add_argument("--report", metavar="JSON", help="print the report of a saved --json file and exit")
    p.add_argument("--malloc", choices=("default", "keep"), default="default",
                   help="glibc allocator policy for the whole process, so for both frameworks: 'default' "
                        "(what a PyTorch user has) or 'keep' (stylejax.runtime.keep_allocations, what the "
                        "stylejax command applies; it removes per-call page faults in both)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.malloc == "keep":  # before JAX or torch start their threads
        MALLOC["keeps_allocations"] = runtime.keep_allocations()
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return 0
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    start = time.perf_counter()
    reps = args.reps or (3 if args.quick else 5)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([256] if args.quick else [256, 512])
    batch = args.scan_batch or (4 if args.quick else 16)
    import jax

    import stylejax

    w = jax.device_put(stylejax.load_weights("vgg16"))
    result = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine(), "reps": reps}
    _log(start, "conv peak ...")
    result["conv"] = bench_conv(reps)
    _log(start, "transfer ...")
    result["transfer"] = bench_transfer(w, sizes, ("adam", "lbfgs"), reps, args.warm_steps)
    _log(start, "scan ...")
    result["scan"] = bench_scan(w, SCAN_LAYERS, batch, args.scan_size, reps)
    finish_rows(result["transfer"] + result["scan"], result["conv"]["flops"])
    if not args.no_memory:
        _log(start, "memory ...")
        best = {row["workload"]: row["best_torch"] for row in result["transfer"] + result["scan"]}
        specs = []
        for row in result["transfer"]:
            if args.quick and row["optimizer"] != "adam":
                continue
            for fw in ("jax", best[row["workload"]]):
                specs.append({"kind": "transfer", "fw": fw, "size": row["size"], "opt": row["optimizer"]})
        for row in [] if args.quick else result["scan"]:
            for fw in ("jax", best[row["workload"]]):
                specs.append({"kind": "scan", "fw": fw, "layer": row["layer"], "batch": row["batch"],
                              "size": row["size"]})
        result["memory"] = bench_memory(specs)
    result["wall_s"] = time.perf_counter() - start
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
