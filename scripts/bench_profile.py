#!/usr/bin/env python
"""Where the stylejax Gatys step spends its time: ablations, variants, XLA flags, loop forms.

Every experiment times its variants alternately in one process (rotating order, medians and
minima of ``--reps`` rounds) at ``--size`` px (default 256), so a busy machine slows all of them
alike. XLA CPU options are applied per executable with ``Lowered.compile(compiler_options=...)``,
so flag variants alternate in the same process too.

Usage::

    STYLEJAX_CACHE=/tmp/sjcache python scripts/bench_profile.py [--size 256] [--reps 5] [--only pool,flags]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from stylejax import runtime

runtime.configure()  # what the stylejax command sets, before JAX starts

import bench_workloads as bw  # noqa: E402  (after the process settings)

STYLE, CONTENT = bw.STYLE_LAYERS, bw.CONTENT_LAYER
LAYERS = tuple(dict.fromkeys((*STYLE, CONTENT)))


def timeit(variants: dict[str, Callable[[], object]], reps: int) -> dict[str, dict]:
    """Warm every variant, then ``reps`` rotating rounds; {name: {median_ms, min_ms, first_ms}}."""
    import jax

    out = {}
    for name, fn in variants.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out[name] = {"first_ms": (time.perf_counter() - t0) * 1e3, "times": []}
    names = list(variants)
    for r in range(reps):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            jax.block_until_ready(variants[name]())
            out[name]["times"].append((time.perf_counter() - t0) * 1e3)
    for v in out.values():
        v["median_ms"], v["min_ms"] = statistics.median(v["times"]), min(v["times"])
        del v["times"]
    return out


def show(title: str, res: dict, base: str | None = None) -> None:
    print(f"\n## {title}")
    base_ms = res[base]["min_ms"] if base else None
    for name, r in res.items():
        rel = f"  x{r['min_ms'] / base_ms:5.2f} (min vs {base})" if base else ""
        print(f"  {name:<44} median {r['median_ms']:8.1f} ms   min {r['min_ms']:8.1f} ms{rel}")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- variants of the model

def pool_reshape(x, pooling):
    """2x2/2 pooling as reshape + max/mean: same forward; its gradient is an eq-mask, not select_and_scatter."""
    import jax.numpy as jnp

    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
    return jnp.max(x, axis=(2, 4)) if pooling == "max" else jnp.mean(x, axis=(2, 4))


def features_variant(params, x, layers, *, pooling="max", pool=None, layout="NHWC", dtype=None, remat=False):
    """VGG16 forward like stylejax.models.vgg.features, with the knobs the experiments turn."""
    import jax
    import jax.numpy as jnp

    from stylejax.models import vgg

    table = vgg.layer_table("vgg16")
    deepest = max(i for i, layer in enumerate(table) if layer.name in layers)
    dn = ("NHWC", "HWIO", "NHWC") if layout == "NHWC" else ("NCHW", "OIHW", "NCHW")
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    if dtype is not None:
        x = x.astype(dtype)

    def conv(x, p):
        k = p["kernel"] if layout == "NHWC" else p["kernel"].transpose(3, 2, 0, 1)
        b = p["bias"] if layout == "NHWC" else p["bias"][:, None, None]
        y = jax.lax.conv_general_dilated(x, k.astype(x.dtype), (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)
        return jax.nn.relu(y + b.astype(x.dtype))

    if remat:
        conv = jax.checkpoint(conv)
    out = {}
    for layer in table[: deepest + 1]:
        if layer.kind == "conv":
            x = conv(x, params[layer.name])
        elif pool is not None:
            x = pool(x, pooling) if layout == "NHWC" else pool(x.transpose(0, 2, 3, 1), pooling).transpose(0, 3, 1, 2)
        else:
            window = (1, 2, 2, 1) if layout == "NHWC" else (1, 1, 2, 2)
            if pooling == "max":
                x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, window, "VALID")
            else:
                x = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, window, "VALID") / 4
        if layer.name in layers:
            a = x.astype(jnp.float32)
            out[layer.name] = a if layout == "NHWC" else a.transpose(0, 2, 3, 1)
    return out


def loss_variant(params, x, targets, *, style=True, content=True, gram_precision="highest", **kw):
    import jax
    import jax.numpy as jnp

    acts = features_variant(params, x, LAYERS, **kw)
    total = 0.0
    if content:
        total = total + 0.5 * jnp.sum(jnp.square(acts[CONTENT][0] - targets["content"]))
    if style:
        prec = jax.lax.Precision.HIGHEST if gram_precision == "highest" else None
        for name in STYLE:
            a = acts[name][0]
            flat = a.reshape(-1, a.shape[-1])
            g = jnp.einsum("mk,ml->kl", flat, flat, precision=prec) / flat.shape[0]
            total = total + bw.BETA / len(STYLE) * jnp.sum(jnp.square(g - targets["grams"][name])) / a.shape[-1] ** 2
    return total


def setup(size: int):
    import jax
    import jax.numpy as jnp

    import stylejax
    from stylejax.preprocessing import preprocess

    w = jax.device_put(stylejax.load_weights("vgg16"))
    params = w.params
    content, style = bw.square_image("tubingen.jpg", size, 1), bw.square_image("starry_night.jpg", size, 2)
    targets = bw.jax_targets(params, content, style)
    x = preprocess(jnp.asarray(content[None], jnp.float32), w.preprocessing)
    return params, targets, x


def grad_fn(loss, params, targets, x):
    """A jitted value_and_grad w.r.t. the image, ready to call with no arguments."""
    import jax

    f = jax.jit(jax.value_and_grad(loss, argnums=1))
    return lambda: f(params, x, targets)


# ----------------------------------------------------------------------------- experiments

def exp_ablation(params, targets, x, reps):
    """Forward only / forward+grad / full step; max vs avg pooling; pooling gradient form."""
    import jax
    import jax.numpy as jnp

    from stylejax import models

    feats = models.get("vgg16").features
    fwd = jax.jit(lambda p, x: feats(p, x, ("conv5_1",))["conv5_1"].sum())
    fwd_all = jax.jit(lambda p, x: sum(v.sum() for v in feats(p, x, LAYERS).values()))
    conv_only = partial(features_variant, pool=lambda x, pooling: x[:, ::2, ::2])  # stride-2 subsample
    opt, step = bw.make_jax_step("adam")
    state = {"x": jnp.array(x), "opt": opt.init(x)}

    def full_step():
        state["x"], state["opt"], v = step(params, state["x"], state["opt"], targets)
        return v

    variants = {
        "forward to conv5_1 (max pool)": lambda: fwd(params, x),
        "forward, 6 outputs kept": lambda: fwd_all(params, x),
        "value_and_grad stylejax.features (max)": grad_fn(bw.jax_gatys_loss, params, targets, x),
        "value_and_grad stylejax.features (avg)": grad_fn(partial(bw.jax_gatys_loss, pooling="avg"), params, targets, x),
        "value_and_grad reshape max pool": grad_fn(partial(loss_variant, pool=pool_reshape), params, targets, x),
        "value_and_grad reshape avg pool": grad_fn(partial(loss_variant, pool=pool_reshape, pooling="avg"),
                                                   params, targets, x),
        "value_and_grad no pooling grad (subsample)": grad_fn(
            lambda p, x, t: loss_variant(p, x, t, pool=lambda a, _: a[:, ::2, ::2]), params, targets, x),
        "value_and_grad content only (no Gram)": grad_fn(partial(loss_variant, style=False, pool=pool_reshape),
                                                         params, targets, x),
        "value_and_grad Gram default precision": grad_fn(partial(loss_variant, gram_precision="default",
                                                                 pool=pool_reshape), params, targets, x),
        "full Adam step (stylejax.features)": full_step,
    }
    del conv_only
    return timeit(variants, reps)


def exp_layout(params, targets, x, reps):
    """NHWC vs NCHW, f32 vs bf16, jax.checkpoint per conv (all with the reshape max pool)."""
    import jax.numpy as jnp

    base = partial(loss_variant, pool=pool_reshape)
    variants = {
        "NHWC f32 (reshape pool)": grad_fn(base, params, targets, x),
        "NCHW f32": grad_fn(partial(base, layout="NCHW"), params, targets, x),
        "NHWC bf16 activations": grad_fn(partial(base, dtype=jnp.bfloat16), params, targets, x),
        "NHWC f32 + jax.checkpoint per conv": grad_fn(partial(base, remat=True), params, targets, x),
    }
    return timeit(variants, reps)


def _time_conv(h: int, cin: int, c: int, reps: int) -> dict:
    """One 3x3 conv f32[1, h, h, cin] -> cout=c: forward and data gradient, XLA vs torch channels_last."""
    import jax
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    xa = rng.standard_normal((1, h, h, cin), np.float32)
    wa = rng.standard_normal((3, 3, cin, c), np.float32) * 0.05
    ga = rng.standard_normal((1, h, h, c), np.float32)
    xj, wj, gj = map(jnp.asarray, (xa, wa, ga))

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))

    fj = jax.jit(conv)
    bj = jax.jit(lambda x, w, g: jax.vjp(lambda z: conv(z, w), x)[1](g)[0])
    cl = torch.channels_last
    xt = torch.from_numpy(xa).permute(0, 3, 1, 2).contiguous(memory_format=cl)
    wt = torch.from_numpy(wa.transpose(3, 2, 0, 1).copy()).contiguous(memory_format=cl)
    gt = torch.from_numpy(ga).permute(0, 3, 1, 2).contiguous(memory_format=cl)

    def tf():
        with torch.inference_mode():
            return F.conv2d(xt, wt, padding=1)

    def tb():
        with torch.inference_mode():
            return torch.ops.aten.convolution_backward(gt, xt, wt, None, (1, 1), (1, 1), (1, 1), False,
                                                       (0, 0), 1, (True, False, False))[0]

    return timeit({"xla fwd": lambda: fj(xj, wj), "xla dgrad": lambda: bj(xj, wj, gj),
                   "torch fwd": tf, "torch dgrad": tb}, reps)


def exp_per_layer(size, reps):
    """Each conv of the step alone at its size: forward and data-gradient, XLA vs torch (oneDNN)."""
    from stylejax.models import vgg

    rows, h, cin = [], size, 3
    for layer in vgg.layer_table("vgg16"):
        if layer.kind == "pool":
            h //= 2
            continue
        res = _time_conv(h, cin, layer.channels, reps)
        flops = 2 * h * h * cin * layer.channels * 9
        rows.append({"layer": layer.name, "hw": h, "cin": cin, "cout": layer.channels, "gflop": flops / 1e9,
                     **{k: v["min_ms"] for k, v in res.items()}})
        cin = layer.channels
        if layer.name == "conv5_1":
            break
    print("\n## per conv layer (min ms; GFLOP/s)")
    print(f"  {'layer':<8} {'hw':>4} {'cin':>4} {'cout':>4} {'xla fwd':>14} {'torch fwd':>14} {'xla dgrad':>14} {'torch dgrad':>14}")
    tot = {k: 0.0 for k in ("xla fwd", "torch fwd", "xla dgrad", "torch dgrad")}
    for r in rows:
        cells = []
        for k in tot:
            tot[k] += r[k]
            cells.append(f"{r[k]:6.1f} {r['gflop'] / r[k] * 1e3:6.0f}")
        print(f"  {r['layer']:<8} {r['hw']:>4} {r['cin']:>4} {r['cout']:>4} " + " ".join(f"{c:>14}" for c in cells))
    gf = sum(r["gflop"] for r in rows)
    print(f"  {'total':<8} {'':>14} " + " ".join(f"{tot[k]:6.1f} {gf / tot[k] * 1e3:6.0f}".rjust(14) for k in tot))
    return rows


def exp_loops(params, targets, x, reps, n=4):
    """n Adam steps per call: Python loop of jitted steps vs fori_loop rolled vs unrolled; compile times."""
    import jax
    import jax.numpy as jnp

    loss = partial(loss_variant, pool=pool_reshape)
    opt, step = bw.make_jax_step("adam", loss)

    def multi(unroll):
        @jax.jit
        def run(params, x, s, targets):
            def body(_, carry):
                x, s, _ = carry
                return step(params, x, s, targets)  # inlined into the loop body when traced
            return jax.lax.fori_loop(0, n, body, (x, s, jnp.float32(0)), unroll=unroll)
        return run

    compile_s = {}
    fns = {}
    for name, fn in {"fori_loop rolled": multi(False), "fori_loop unroll=True": multi(True)}.items():
        t0 = time.perf_counter()
        fns[name] = fn.lower(params, x, opt.init(x), targets).compile()
        compile_s[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = jax.jit(lambda p, x, s, t: step(p, x, s, t)).lower(params, x, opt.init(x), targets).compile()
    compile_s["single step"] = time.perf_counter() - t0

    def python_loop():
        xs, s = jnp.array(x), opt.init(x)
        for _ in range(n):
            xs, s, v = single(params, xs, s, targets)
        return v

    variants = {f"{n} x jitted step (python loop)": python_loop,
                **{f"{name} ({n} steps)": (lambda f=f: f(params, jnp.array(x), opt.init(x), targets)[2])
                   for name, f in fns.items()}}
    res = timeit(variants, reps)
    for name, c in compile_s.items():
        print(f"  compile {name}: {c:.2f} s")
    return res, compile_s


def exp_cost(params, targets, x):
    """XLA's own FLOP/byte count of the compiled step vs the analytic conv count."""
    import jax

    f = jax.jit(jax.value_and_grad(bw.jax_gatys_loss, argnums=1)).lower(params, x, targets).compile()
    cost = f.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    size = x.shape[1]
    ana = bw.conv_flops("vgg16", size, size, "conv5_1", input_grad=True)["total"]
    gram = bw.gram_flops("vgg16", size, size, STYLE, grad=True)
    print(f"\n## XLA cost_analysis of value_and_grad at {size}px")
    print(f"  XLA flops {cost.get('flops', float('nan')) / 1e9:.2f} G, bytes accessed "
          f"{cost.get('bytes accessed', float('nan')) / 1e9:.2f} GB; analytic convs {ana / 1e9:.2f} G + Gram {gram / 1e9:.2f} G")
    text = f.as_text()
    import re

    opcodes = re.findall(r"= \S+ ([a-z][a-z-]*)\(", text)
    kinds = {k: opcodes.count(k) for k in ("convolution", "scatter", "select-and-scatter", "reduce-window",
                                            "transpose", "reverse", "dot")}
    kinds["ynn fusions"] = text.count('"kind":"__ynn_fusion"')
    print("  op counts in optimized HLO: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
    return {"xla_flops": cost.get("flops"), "bytes": cost.get("bytes accessed"), "analytic": ana, "ops": kinds}


# ----------------------------------------------------------------------------- XLA flags (per-jit compiler options)

_YNN = "xla_cpu_experimental_ynn_fusion_type"
FLAG_SETS = {
    "default (YNNPACK dots+convs)": {},
    "Eigen convs (YNN dots only)": {_YNN: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    "no YNNPACK (Eigen dots+convs)": {_YNN: ""},
    "YNN + eltwise + reduce fusions": {_YNN: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,"
                                             "LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"},
    "oneDNN fusions dot+eltwise": {"xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE"},
    "oneDNN custom call": {"xla_cpu_experimental_onednn_custom_call": True},
    "XNN graph fusion greedy": {"xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY"},
    "multi_thread_eigen=false": {"xla_cpu_multi_thread_eigen": False},
    "fast math": {"xla_cpu_enable_fast_math": True},
}


def exp_flags(params, targets, x, reps: int) -> dict:
    """The value_and_grad compiled under each XLA CPU option set, timed alternately in this process.

    ``Lowered.compile(compiler_options=...)`` applies XLA debug options per executable, so no
    subprocess is needed and every variant sees the same machine load.
    """
    import jax

    loss = partial(loss_variant, pool=pool_reshape)
    lowered = jax.jit(jax.value_and_grad(loss, argnums=1)).lower(params, x, targets)
    variants, compile_s = {}, {}
    for name, opts in FLAG_SETS.items():
        try:
            t0 = time.perf_counter()
            exe = lowered.compile(compiler_options=opts)
            compile_s[name] = time.perf_counter() - t0
        except jax.errors.JaxRuntimeError as e:  # an option this jaxlib does not know
            print(f"  {name}: not available ({str(e).splitlines()[0][:100]})")
            continue
        variants[name] = lambda exe=exe: exe(params, x, targets)
    res = timeit(variants, reps)
    for name in res:
        res[name]["compile_s"] = compile_s[name]
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--only", default="cost,ablation,layout,per_layer,loops,flags")
    args = p.parse_args()
    import torch

    torch.set_num_threads(2)
    only = set(args.only.split(","))
    print(f"# bench_profile.py --size {args.size} --reps {args.reps}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    params, targets, x = setup(args.size)
    if "cost" in only:
        exp_cost(params, targets, x)
    if "ablation" in only:
        show(f"ablation at {args.size}px", exp_ablation(params, targets, x, args.reps),
             "value_and_grad stylejax.features (max)")
    if "layout" in only:
        show(f"layout / dtype / remat at {args.size}px", exp_layout(params, targets, x, args.reps),
             "NHWC f32 (reshape pool)")
    if "per_layer" in only:
        exp_per_layer(args.size, args.reps)
    if "loops" in only:
        res, _ = exp_loops(params, targets, x, args.reps)
        show(f"multi-step loop forms at {args.size}px", res, next(iter(res)))
    if "flags" in only:
        show(f"XLA CPU options, value_and_grad with reshape max pool at {args.size}px",
             exp_flags(params, targets, x, args.reps), "default (YNNPACK dots+convs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
