"""stylejax style transfer vs a plain PyTorch implementation of the same objective.

Builds VGG16 in torch from the same converted parameters (F.conv2d, F.relu, F.max_pool2d), the
same objective (Jc = 1/2 ||a(C) - a(G)||^2 at conv4_2; Js[l] = ||G(S)/M_S - G(G)/M_G||^2 / C^2 on
conv1_1..conv5_1 with lambda_l = 1/5; J = alpha Jc + beta Js), the same pixel-space variable
initialised from the content, and runs both with L-BFGS (torch.optim.LBFGS, history 100, lr 1,
no line search) and Adam (lr 10) for the same number of iterations. Every final image is scored
with the same (JAX) objective.

    python scripts/compare_torch_transfer.py [--size 128] [--iters 100] [--loops]

``--loops`` instead measures loop forms of the JAX step (python loop of single-step jitted
calls, K steps per call unrolled, K steps rolled) and L-BFGS memory 10 vs 100.
Needs torch (not a stylejax dependency) and the shared images beside the project.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from stylejax import transfer, weights
from stylejax.images import read_image, resize_longest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images"
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)


# ----------------------------------------------------------------------------- torch reference

def torch_objective(params, content_px, style_px, content_layer, style_layers, alpha, beta, lambdas):
    import torch
    import torch.nn.functional as F

    tparams = {k: (torch.from_numpy(np.array(v["kernel"])).permute(3, 2, 0, 1).contiguous(),
                   torch.from_numpy(np.array(v["bias"]))) for k, v in params.items()}
    order = ["conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2", "conv3_1", "conv3_2", "conv3_3",
             "pool3", "conv4_1", "conv4_2", "conv4_3", "pool4", "conv5_1", "conv5_2", "conv5_3"]
    wanted = {content_layer, *style_layers}
    last = max(order.index(n) for n in wanted)

    def feats(px):  # px: torch f32[1, 3, H, W] RGB 0-255
        x = px.flip(1) - torch.from_numpy(CAFFE_BGR_MEAN).view(1, 3, 1, 1)
        out = {}
        for name in order[: last + 1]:
            if name.startswith("pool"):
                x = F.max_pool2d(x, 2, 2)
            else:
                k, b = tparams[name]
                x = F.relu(F.conv2d(x, k, b, padding=1))
            if name in wanted:
                out[name] = x
        return out

    def gram_n(a):
        _, c, h, w = a.shape
        f = a.reshape(c, h * w)
        return f @ f.T / (h * w)

    def to_t(img):
        return torch.from_numpy(np.asarray(img, np.float32)).permute(2, 0, 1)[None].contiguous()

    with torch.no_grad():
        target_c = feats(to_t(content_px))[content_layer]
        fs = feats(to_t(style_px))
        target_s = {l: gram_n(fs[l]) for l in style_layers}

    def objective(x):
        f = feats(x)
        jc = 0.5 * ((f[content_layer] - target_c) ** 2).sum()
        js = sum(lam * ((gram_n(f[l]) - target_s[l]) ** 2).sum() / f[l].shape[1] ** 2
                 for l, lam in zip(style_layers, lambdas))
        return alpha * jc + beta * js

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
        n = opt.state[opt._params[0]]["n_iter"]
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
    return x.detach()[0].permute(1, 2, 0).numpy(), seconds / n, n


# ----------------------------------------------------------------------------- comparisons

def compare(size: int, iters: int, beta: float) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    w = weights.load("vgg16")
    content = np.asarray(resize_longest(read_image(DATA / "tubingen.jpg"), size))
    style = np.asarray(resize_longest(read_image(DATA / "starry_night.jpg"), size))
    settings = transfer.Settings(size=size, iters=iters, init="content", content_weight=1.0, style_weight=beta)
    s = transfer.validate(settings, "vgg16", 1)
    lambdas = [1.0 / len(s.style_layers)] * len(s.style_layers)
    objective, to_t = torch_objective(w.params, content, style, s.content_layer, s.style_layers, 1.0, beta, lambdas)
    obj = transfer.Objective("vgg16", "caffe", s.content_layer, s.style_layers, tuple(lambdas), 1.0, beta)
    targets, _ = transfer._scale_targets(w, obj, s, content[None].astype(np.float32), [style], (1.0,), size)

    def score(img):  # the common judge: the JAX objective in f32
        return float(transfer.evaluate(w.params, jnp.asarray(img, jnp.float32)[None], targets, obj=obj)["total"][0])

    # the two objectives agree (value and gradient) at a perturbed content image
    probe = content.astype(np.float32) + np.random.default_rng(0).normal(0, 10, content.shape).astype(np.float32)
    xt = to_t(probe).requires_grad_(True)
    jt = objective(xt)
    jt.backward()
    gt = xt.grad[0].permute(1, 2, 0).numpy()
    jj, gj = jax.value_and_grad(lambda v: transfer.objective_terms(obj, w.params, v, jax.tree.map(lambda a: a[0], targets))[0])(
        jnp.asarray(probe))
    out = {"size": list(content.shape[:2]), "iters": iters, "alpha": 1.0, "beta": beta,
           "agreement": {"J_torch": jt.item(), "J_jax": float(jj),
                         "J_rel_diff": abs(jt.item() - float(jj)) / abs(jt.item()),
                         "grad_rel_diff": float(np.linalg.norm(gt - np.asarray(gj)) / np.linalg.norm(gt))},
           "runs": {}}
    print(json.dumps(out["agreement"]), flush=True)
    for name, lr in (("lbfgs", 1.0), ("adam", 10.0)):
        sj = transfer.transfer(w, content, [style], dataclasses.replace(s, optimizer=name, lr=lr))
        t_img, t_spi, t_n = run_torch(objective, to_t(content.astype(np.float32)), name, iters, lr)
        res = {"stylejax": {"J_u8": score(sj.images[0]), "J_run": sj.loss[0]["total"],
                            "s_per_iter": sj.s_per_iter, "iterations": sj.iterations},
               "torch": {"J_u8": score(np.clip(np.rint(t_img), 0, 255)), "J_run": score(t_img),
                         "s_per_iter": t_spi, "iterations": t_n}}
        out["runs"][name] = res
        print(name, json.dumps(res), flush=True)
    return out


def measure_loops(sizes=(128, 256), n: int = 10, k: int = 5) -> dict:
    w = weights.load("vgg16")
    content = read_image(DATA / "tubingen.jpg")
    style = read_image(DATA / "starry_night.jpg")
    results = {}
    for size in sizes:
        c = np.asarray(resize_longest(content, size))[None].astype(np.float32)
        s = transfer.validate(transfer.Settings(size=size), "vgg16", 1)
        obj = transfer.Objective("vgg16", "caffe", s.content_layer, s.style_layers, (0.2,) * 5, 1.0, 10.0)
        targets, _ = transfer._scale_targets(w, obj, s, c, [style], (1.0,), size)
        row = {}
        for label, opt, steps, unroll in (("python loop, 1 step/call, lbfgs m=100", transfer.Optimizer("lbfgs", 1.0, 100), 1, True),
                                          ("python loop, 1 step/call, lbfgs m=10", transfer.Optimizer("lbfgs", 1.0, 10), 1, True),
                                          (f"{k} steps/call unrolled, m=100", transfer.Optimizer("lbfgs", 1.0, 100), k, True),
                                          (f"{k} steps/call rolled fori_loop, m=100", transfer.Optimizer("lbfgs", 1.0, 100), k, False),
                                          ("python loop, 1 step/call, adam", transfer.Optimizer("adam", 10.0), 1, True)):
            x = jnp.asarray(c)
            state = transfer.init_state(opt, x)
            t0 = time.perf_counter()
            x, state, _, loss = transfer.steps(w.params, x, state, targets, obj=obj, opt=opt, steps=steps, unroll=unroll)
            loss.block_until_ready()
            compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            calls = max(1, n // steps)
            for _ in range(calls):
                x, state, _, loss = transfer.steps(w.params, x, state, targets, obj=obj, opt=opt, steps=steps, unroll=unroll)
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
    p.add_argument("--loops", action="store_true")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    os.environ.setdefault("STYLEJAX_CACHE", "/tmp/sjcache")
    result = measure_loops() if args.loops else compare(args.size, args.iters, args.beta)
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
