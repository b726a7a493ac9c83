"""stylejax style transfer vs a plain PyTorch implementation of the same objective.

Builds VGG16 in torch from the same converted parameters (scripts/torch_vgg.py: F.conv2d,
F.relu, F.max_pool2d), the same objective (Jc = 1/2 ||a(C) - a(G)||^2 at conv4_2;
Js[l] = ||G(S)/M_S - G(G)/M_G||^2 / C^2 on conv1_1..conv5_1 with lambda_l = 1/5;
J = alpha Jc + beta Js), the same pixel-space variable initialised from the content, and runs
both with L-BFGS (torch.optim.LBFGS, history 100, lr 1, no line search) and Adam (lr 10) for
the same number of iterations. Every final image is scored with the same (JAX) objective.

    python scripts/compare_torch_transfer.py [--size 128] [--iters 100] [--loops]

Print size (tiled stylejax against untiled PyTorch): a 512x270 content and a same-size style,
Adam lr 4 from the content, 20 iterations, alpha 1, beta 1000, stylejax over 128 px tiles:

    python scripts/compare_torch_transfer.py --shape 512x270 --iters 20 --beta 1000 \
        --optimizers adam --adam-lr 4 --tile 128

``--loops`` instead measures loop forms of the library's compiled step
(``stylejax.style.loop.steps``: python loop of single-step calls, K steps per call unrolled,
K steps rolled) and L-BFGS memory 10 vs 100 (``--sizes 128,256``, ``--calls 10``).
Needs torch (not a stylejax dependency) and the shared images beside the project.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import stylejax
from stylejax.images import read_image, resize_longest, resize_to
from stylejax.style import loop
from stylejax.style.config import default_layers

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images"


# ----------------------------------------------------------------------------- torch reference

def torch_objective(params, content_px, style_px, content_layer, style_layers, alpha, beta, lambdas):
    """The objective in plain PyTorch (``torch_vgg``) and a converter of pixels f32[H, W, 3] to
    its variable f32[1, H, W, 3]."""
    import torch
    from torch_vgg import TorchVGG, gatys_objective

    objective = gatys_objective(TorchVGG(params, channels_last=True), content_px, style_px, (content_layer,),
                                style_layers, alpha=alpha, beta=beta, layer_weights=lambdas)

    def to_t(img):
        return torch.from_numpy(np.asarray(img, np.float32).copy())[None].contiguous()

    return objective, to_t


def run_torch(objective, x0, optimizer: str, iters: int, lr: float):
    import torch

    x = x0.clone().requires_grad_(True)
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([x], lr=lr, max_iter=iters, max_eval=iters * 2, history_size=100,
                                tolerance_grad=0.0, tolerance_change=0.0, line_search_fn=None)
        calls = [0]

        def closure():
            opt.zero_grad()
            loss = objective(x)
            loss.backward()
            calls[0] += 1
            return loss

        t0 = time.perf_counter()
        opt.step(closure)
        seconds = time.perf_counter() - t0
        n = opt.state[x]["n_iter"]
    else:
        opt = torch.optim.Adam([x], lr=lr)
        t0 = time.perf_counter()
        for _ in range(iters):
            opt.zero_grad()
            loss = objective(x)
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        n = iters
    return x.detach()[0].numpy(), seconds / n, n


# ----------------------------------------------------------------------------- comparisons

def jax_objective(w: stylejax.Weights, content: np.ndarray, style: np.ndarray, beta: float):
    """The library's objective (static spec, traced weights, targets) at its default layers."""
    content_layers, style_layers = default_layers(w.arch)
    spec = stylejax.Spec(content_layers, style_layers)
    lambdas = [1.0 / len(style_layers)] * len(style_layers)
    lw = stylejax.LossWeights.of(1.0, beta, 0.0, lambdas)
    targets = jax.jit(lambda w, c, s: stylejax.style_targets(w, spec, c, [s], jnp.ones((1,))))(
        w, jnp.asarray(content, jnp.float32), jnp.asarray(style, jnp.float32))
    return spec, lw, targets, lambdas


def _crop_to(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """The centre crop of ``img`` with the aspect ratio width:height, resized to exactly that."""
    h, w = img.shape[:2]
    if w * height > h * width:
        cw = round(h * width / height)
        img = img[:, (w - cw) // 2:(w - cw) // 2 + cw]
    else:
        ch = round(w * height / width)
        img = img[(h - ch) // 2:(h - ch) // 2 + ch]
    return resize_to(img, height, width)


def compare(size: int, iters: int, beta: float, optimizers=("lbfgs", "adam"), adam_lr: float = 10.0,
            tile: int | None = None, shape: tuple[int, int] | None = None) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    w = stylejax.load_weights("vgg16")
    if shape is None:
        content = np.asarray(resize_longest(read_image(DATA / "tubingen.jpg"), size))
        style = np.asarray(resize_longest(read_image(DATA / "starry_night.jpg"), size))
    else:  # a same-size pair: centre crops of both to width x height
        content = _crop_to(read_image(DATA / "tubingen.jpg"), *shape)
        style = _crop_to(read_image(DATA / "starry_night.jpg"), *shape)
        size = max(shape)
    spec, lw, targets, lambdas = jax_objective(w, content, style, beta)
    objective, to_t = torch_objective(w.params, content, style, spec.content_layers[0], spec.style_layers, 1.0,
                                      beta, lambdas)
    j_and_grad = jax.jit(jax.value_and_grad(lambda v: stylejax.loss_terms(w, spec, lw, v, targets)[0]))

    def score(img):  # the common judge: the JAX objective in f32
        return float(j_and_grad(jnp.asarray(img, jnp.float32))[0])

    # the two objectives agree (value and gradient) at a perturbed content image
    probe = content.astype(np.float32) + np.random.default_rng(0).normal(0, 10, content.shape).astype(np.float32)
    xt = to_t(probe).requires_grad_(True)
    jt = objective(xt)
    jt.backward()
    gt = xt.grad[0].numpy()
    jj, gj = j_and_grad(jnp.asarray(probe))
    out = {"size": list(content.shape[:2]), "iters": iters, "alpha": 1.0, "beta": beta,
           "agreement": {"J_torch": jt.item(), "J_jax": float(jj),
                         "J_rel_diff": abs(jt.item() - float(jj)) / abs(jt.item()),
                         "grad_rel_diff": float(np.linalg.norm(gt - np.asarray(gj)) / np.linalg.norm(gt))},
           "runs": {}}
    print(json.dumps(out["agreement"]), flush=True)
    out["tile"] = tile
    for name, lr in (("lbfgs", 1.0), ("adam", adam_lr)):
        if name not in optimizers:
            continue
        sj = stylejax.transfer(content, style, weights=w, size=size, iters=iters, init="content", optimizer=name,
                               lr=lr, content_weight=1.0, style_weight=beta, tile=tile)
        t_img, t_spi, t_n = run_torch(objective, to_t(content), name, iters, lr)
        res = {"stylejax": {"J_u8": score(sj.image), "J_run": sj.loss["total"],
                            "s_per_iter": sj.s_per_iter, "iterations": sj.iterations, "tiling": sj.memory},
               "torch": {"J_u8": score(np.clip(np.rint(t_img), 0, 255)), "J_run": score(t_img),
                         "s_per_iter": t_spi, "iterations": t_n}}
        out["runs"][name] = res
        print(name, json.dumps(res), flush=True)
    return out


def measure_loops(sizes=(128, 256), n: int = 10, k: int = 5) -> dict:
    """s/iter of the library's compiled step (``stylejax.style.loop.steps``, state donated) in
    several loop forms and L-BFGS memories."""
    w = stylejax.load_weights("vgg16")
    content = read_image(DATA / "tubingen.jpg")
    style = read_image(DATA / "starry_night.jpg")
    results = {}
    for size in sizes:
        c = np.asarray(resize_longest(content, size))
        spec, lw, targets, _ = jax_objective(w, c, np.asarray(resize_longest(style, size)), 10.0)
        targets = jax.tree.map(lambda a: a[None], targets)  # batched on axis 0, as steps takes them
        terms = jax.eval_shape(lambda x: stylejax.loss_terms(w, spec, lw, x, jax.tree.map(lambda a: a[0], targets))[1],
                               jnp.asarray(c, jnp.float32))
        row = {}
        for label, name, lr, memory, steps, unroll in (
                ("python loop, 1 step/call, lbfgs m=100", "lbfgs", 1.0, 100, 1, True),
                ("python loop, 1 step/call, lbfgs m=10", "lbfgs", 1.0, 10, 1, True),
                (f"{k} steps/call unrolled, m=100", "lbfgs", 1.0, 100, k, True),
                (f"{k} steps/call rolled fori_loop, m=100", "lbfgs", 1.0, 100, k, False),
                ("python loop, 1 step/call, adam", "adam", 10.0, 100, 1, True)):
            tx = loop.direction(name, memory)
            hyper = loop.Hyper(lw, jnp.asarray(lr, jnp.float32))
            state = loop.init_state(tx, jnp.asarray(c[None], jnp.float32), terms)
            t0 = time.perf_counter()
            state, loss = loop.steps(w, hyper, state, targets, spec=spec, tx=tx, k=steps, unroll=unroll)
            loss.block_until_ready()
            compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            calls = max(1, n // steps)
            for _ in range(calls):
                state, loss = loop.steps(w, hyper, state, targets, spec=spec, tx=tx, k=steps, unroll=unroll)
                np.asarray(loss)
            row[label] = {"s_per_iter": (time.perf_counter() - t0) / (calls * steps), "first_call_s": compile_s}
            print(size, label, json.dumps(row[label]), flush=True)
        results[size] = row
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--beta", type=float, default=10.0)
    p.add_argument("--optimizers", default="lbfgs,adam", help="comma-separated: lbfgs, adam (default both)")
    p.add_argument("--adam-lr", type=float, default=10.0)
    p.add_argument("--tile", type=int, default=None, help="run stylejax over tiles with this core size")
    p.add_argument("--shape", default=None, metavar="WxH",
                   help="centre-crop content and style to this exact size (a same-size pair) instead of --size")
    p.add_argument("--loops", action="store_true")
    p.add_argument("--sizes", default="128,256", help="--loops: comma-separated sizes (default 128,256)")
    p.add_argument("--calls", type=int, default=10, help="--loops: timed steps per form (default 10)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    result = (measure_loops(tuple(int(v) for v in args.sizes.split(",")), args.calls) if args.loops
              else compare(args.size, args.iters, args.beta, tuple(args.optimizers.split(",")), args.adam_lr,
                           args.tile, tuple(int(v) for v in args.shape.split("x")) if args.shape else None))
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
