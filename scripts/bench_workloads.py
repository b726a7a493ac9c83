"""The benchmarked work, built twice: stylejax/JAX and plain PyTorch, on the same VGG16 weights.

Each builder takes the loaded :class:`stylejax.Weights` and returns a :class:`Runner`: ``run()``
does one unit of work (one optimisation step, one scanned batch, one conv) and blocks until it
is finished; ``compile_s`` is the JAX compile time (0 for torch). FLOP counts are analytic, from
the layer table. The optimisers run with the library's shipped defaults on both sides: L-BFGS
with ``stylejax.DEFAULTS.lbfgs_memory`` corrections (100) and step 1, Adam with step 10.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

import stylejax

CONTENT_LAYER = "conv4_2"
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
# The shipped defaults of `stylejax transfer`: alpha 1, beta 10, L-BFGS history 100.
ALPHA, BETA = stylejax.DEFAULTS.content_weight, stylejax.DEFAULTS.style_weight
LBFGS_MEMORY = stylejax.DEFAULTS.lbfgs_memory
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class Runner:
    """One unit of work: ``run()`` blocks until done. ``compile_s``: JAX lower+compile seconds."""

    run: Callable[[], object]
    compile_s: float = 0.0
    compiled: object = None  # the JAX executable, for HLO inspection and profiles
    pairs: Callable[[], int] | None = None  # L-BFGS: correction pairs held now (the recursion's length)


# ----------------------------------------------------------------------------- FLOPs

def conv_flops(arch: str, height: int, width: int, deepest: str, *, input_grad: bool) -> dict[str, int]:
    """Conv FLOPs (2 per multiply-add) of a VGG forward up to ``deepest`` for one image.

    ``input_grad`` adds the data-gradient convs of every conv on the path (same count as the
    forward conv: the transposed 3x3 conv from Cout to Cin); weight gradients are not counted.
    Returns ``{"forward": f, "input_grad": g, "total": f + g}``.
    """
    from stylejax.models import vgg

    forward, h, w, cin = 0, height, width, 3
    for layer in vgg.layer_table(arch):
        if layer.kind == "conv":
            forward += 2 * h * w * cin * layer.channels * layer.kernel**2
            cin = layer.channels
        else:
            h, w = h // 2, w // 2
        if layer.name == deepest:
            break
    backward = forward if input_grad else 0
    return {"forward": forward, "input_grad": backward, "total": forward + backward}


def gram_flops(arch: str, height: int, width: int, layers: Sequence[str], *, grad: bool) -> int:
    """FLOPs of the Gram matrices (2 M C^2 each, doubled with the gradient a (dG + dG^T))."""
    from stylejax.models import vgg

    total, h, w = 0, height, width
    for layer in vgg.layer_table(arch):
        if layer.kind == "pool":
            h, w = h // 2, w // 2
        elif layer.name in layers:
            total += 2 * h * w * layer.channels**2
    return total * (2 if grad else 1)


PEAK_CONV = (8, 56, 256)  # batch, spatial size, channels of the conv whose rate is "the peak"


def conv_peak_flops(n: int, hw: int, c: int) -> int:
    """FLOPs of one 3x3 same-padded conv c -> c on f32[n, hw, hw, c]."""
    return 2 * n * hw * hw * c * c * 9


# ----------------------------------------------------------------------------- inputs

def square_image(name: str, size: int, seed: int) -> np.ndarray:
    """u8[size, size, 3]: a real image of ../shared/data/images stretched to a square, else noise."""
    path = DATA / "images" / name
    if path.exists():
        from stylejax.images import read_image, resize_to

        return resize_to(read_image(path), size, size)
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def scan_batch(batch: int, size: int) -> np.ndarray:
    """u8[batch, size, size, 3]: ImageNet sample images (centre-cropped squares), else noise."""
    folder = DATA / "imagenet-sample"
    files = sorted(folder.glob("*.jpg"))[:batch] if folder.exists() else []
    if len(files) == batch:
        from stylejax.interpret.dataset import load_square

        return np.stack([load_square(f, size) for f in files])
    return np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- JAX

def _jax_block(tree):
    import jax

    return jax.block_until_ready(tree)


def jax_gatys_loss(params, x, targets, *, pooling: str = "max"):
    """The Gatys objective ``alpha Jc + beta Js`` of a preprocessed image x: f32[1, H, W, 3]."""
    from stylejax import losses, models

    layers = tuple(dict.fromkeys((*STYLE_LAYERS, CONTENT_LAYER)))
    acts = models.get("vgg16").features(params, x, layers, pooling=pooling)
    jc = losses.content_loss(acts[CONTENT_LAYER][0], targets["content"])
    js = losses.style_loss({k: v[0] for k, v in acts.items()}, targets["grams"],
                           losses.default_layer_weights(STYLE_LAYERS))
    return ALPHA * jc + BETA * js


def jax_targets(params, content_u8: np.ndarray, style_u8: np.ndarray, *, pooling: str = "max"):
    """Content activation f32[h, w, C] and style Grams {layer: f32[C, C]}, computed once."""
    import jax.numpy as jnp

    from stylejax import losses, models
    from stylejax.preprocessing import preprocess

    feats = models.get("vgg16").features
    c = feats(params, preprocess(jnp.asarray(content_u8[None], jnp.float32), "caffe"), (CONTENT_LAYER,),
              pooling=pooling)[CONTENT_LAYER][0]
    s = feats(params, preprocess(jnp.asarray(style_u8[None], jnp.float32), "caffe"), STYLE_LAYERS,
              pooling=pooling)
    return {"content": c, "grams": {k: losses.normalized_gram(v[0]) for k, v in s.items()}}


def learning_rate(optimizer: str) -> float:
    """The library's default step for ``optimizer`` (L-BFGS 1, Adam 10), used on both sides."""
    return stylejax.Options(optimizer=optimizer).learning_rate


def jax_optimizer(name: str):
    import optax

    if name == "adam":
        return optax.adam(learning_rate(name))
    # One gradient evaluation per iteration, like torch.optim.LBFGS(line_search_fn=None).
    return optax.lbfgs(learning_rate=learning_rate(name), memory_size=LBFGS_MEMORY, linesearch=None)


def make_jax_step(optimizer: str, loss: Callable = jax_gatys_loss):
    """The whole optimisation step as ONE jitted call: (params, x, opt_state, targets) -> (x, state, J)."""
    import jax
    import optax

    opt = jax_optimizer(optimizer)

    @partial(jax.jit, donate_argnums=(1, 2))
    def step(params, x, opt_state, targets):
        value, grad = jax.value_and_grad(loss, argnums=1)(params, x, targets)
        updates, opt_state = opt.update(grad, opt_state, x, value=value, grad=grad,
                                        value_fn=lambda z: loss(params, z, targets))
        return optax.apply_updates(x, updates), opt_state, value

    return opt, step


def jax_transfer(w: stylejax.Weights, size: int, optimizer: str) -> Runner:
    """A hand-written Gatys step at ``size`` x ``size`` px: value_and_grad + optax update, one jitted call."""
    import jax
    import jax.numpy as jnp

    from stylejax.preprocessing import preprocess

    content, style = square_image("tubingen.jpg", size, 1), square_image("starry_night.jpg", size, 2)
    targets = jax_targets(w.params, content, style)
    x = preprocess(jnp.asarray(content[None], jnp.float32), w.preprocessing)
    opt, step = make_jax_step(optimizer)
    # Fresh buffers for every leaf: L-BFGS's initial state aliases zeros, which donation refuses.
    state = {"x": x, "opt": jax.tree.map(lambda a: jnp.array(a, copy=True), opt.init(x))}
    t0 = time.perf_counter()
    compiled = step.lower(w.params, state["x"], state["opt"], targets).compile()
    compile_s = time.perf_counter() - t0

    def run():
        state["x"], state["opt"], value = compiled(w.params, state["x"], state["opt"], targets)
        return _jax_block(value)

    return Runner(run, compile_s)


def library_spec() -> stylejax.Spec:
    """The benchmarked objective as the library's static spec (max pooling, the fast conv path)."""
    return stylejax.Spec((CONTENT_LAYER,), STYLE_LAYERS)


def library_transfer(w: stylejax.Weights, size: int, optimizer: str) -> Runner:
    """``stylejax.style.loop.steps``: the compiled step ``stylejax.transfer`` calls, with its loop
    state (image, optimiser state, best iterate) donated, as the library runs it.

    Pixel-space image, batch of 1; the optimiser is the library's own (``direction``: its
    L-BFGS with ``DEFAULTS.lbfgs_memory`` pairs, or Adam) at the default step. Same objective and
    FLOPs as :func:`jax_transfer` (content conv4_2, style conv1_1..conv5_1 with lambda 1/5,
    alpha 1, beta 10, max pooling). ``run()`` returns J at the evaluated iterate; ``pairs()``
    the L-BFGS pairs held (the recursion's length, which the step's cost grows with).
    """
    import jax
    import jax.numpy as jnp

    from stylejax.style import loop

    spec = library_spec()
    lw = stylejax.LossWeights.of(ALPHA, BETA, 0.0, (1.0 / len(STYLE_LAYERS),) * len(STYLE_LAYERS))
    hyper = loop.Hyper(lw, jnp.asarray(learning_rate(optimizer), jnp.float32))
    tx = loop.direction(optimizer, LBFGS_MEMORY)
    content, style = square_image("tubingen.jpg", size, 1), square_image("starry_night.jpg", size, 2)
    cpx = jnp.asarray(content, jnp.float32)
    targets = jax.jit(lambda w, c, s: stylejax.style_targets(w, spec, c, [s], jnp.ones((1,))))(
        w, cpx, jnp.asarray(style, jnp.float32))
    targets = jax.tree.map(lambda a: a[None], targets)  # batched on axis 0, as steps takes them
    terms = jax.eval_shape(lambda x: stylejax.loss_terms(w, spec, lw, x, jax.tree.map(lambda a: a[0], targets))[1],
                           cpx)
    state = {"s": loop.init_state(tx, cpx[None], terms)}
    t0 = time.perf_counter()
    compiled = loop.steps.lower(w, hyper, state["s"], targets, spec=spec, tx=tx, k=1).compile()
    compile_s = time.perf_counter() - t0

    def run():
        state["s"], values = compiled(w, hyper, state["s"], targets)
        return jax.block_until_ready(values[:, 0])

    def pairs() -> int:
        return int(np.minimum(np.ravel(state["s"].opt_state.held)[0], LBFGS_MEMORY))

    return Runner(run, compile_s, compiled, pairs if optimizer == "lbfgs" else None)


def library_scan(w: stylejax.Weights, layer: str, batch: int, size: int, k: int = 9) -> Runner:
    """``stylejax.interpret.scan.make_step``: forward + per-unit max/argmax + top-k merge, all units."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh

    from stylejax.interpret import scan as S

    channels = stylejax.feature_shapes(w, (size, size), layer)[layer][-1]
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    step = S.make_step((layer,), (tuple(range(channels)),), mesh)
    pixels = scan_batch(batch, size)
    index, valid = jnp.arange(batch, dtype=jnp.int32), jnp.ones((batch,), bool)
    states = (S.init_topk(channels, k),)
    t0 = time.perf_counter()
    compiled = step.lower(w, states, jnp.asarray(pixels), index, valid).compile()
    compile_s = time.perf_counter() - t0
    # Checked value: each unit's best activation over the batch (top-1 of the merged top-k).
    return Runner(lambda: jax.block_until_ready(
        compiled(w, states, jnp.asarray(pixels), index, valid)[0].values[:, 0]), compile_s, compiled)


def jax_scan_fn(layer: str):
    """Jitted scan of one batch: u8[N, H, W, 3] -> (max f32[N, C], argmax over h*w int32[N, C])."""
    import jax
    import jax.numpy as jnp

    from stylejax import models
    from stylejax.preprocessing import preprocess

    @jax.jit
    def scan(params, pixels):
        a = models.get("vgg16").features(params, preprocess(pixels.astype(jnp.float32), "caffe"), (layer,))[layer]
        flat = a.reshape(a.shape[0], -1, a.shape[-1])
        return flat.max(axis=1), flat.argmax(axis=1)

    return scan


def jax_scan(w: stylejax.Weights, layer: str, batch: int, size: int) -> Runner:
    import jax.numpy as jnp

    pixels = scan_batch(batch, size)
    scan = jax_scan_fn(layer)
    t0 = time.perf_counter()
    compiled = scan.lower(w.params, jnp.asarray(pixels)).compile()
    compile_s = time.perf_counter() - t0
    return Runner(lambda: _jax_block(compiled(w.params, jnp.asarray(pixels))), compile_s)


def jax_conv(n: int, hw: int, c: int) -> Runner:
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, hw, hw, c), np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, c, c), np.float32) * 0.02)
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")))
    t0 = time.perf_counter()
    compiled = conv.lower(x, w).compile()
    compile_s = time.perf_counter() - t0
    return Runner(lambda: _jax_block(compiled(x, w)), compile_s)


# ----------------------------------------------------------------------------- PyTorch

def _torch_net(w: stylejax.Weights, channels_last: bool):
    from torch_vgg import TorchVGG

    return TorchVGG(w.params, channels_last=channels_last)


def torch_preprocess(net, pixels_nhwc_u8: np.ndarray):
    """Caffe preprocessing in torch: RGB->BGR, minus the BGR mean; NCHW in the net's memory format."""
    import torch

    from stylejax.preprocessing import CAFFE_BGR_MEAN

    x = torch.from_numpy(np.array(pixels_nhwc_u8)).float().flip(-1) - torch.from_numpy(CAFFE_BGR_MEAN)
    x = x.permute(0, 3, 1, 2)
    return x.contiguous(memory_format=torch.channels_last if net.channels_last else torch.contiguous_format)


def torch_gatys_loss(net, x, targets, pooling: str = "max"):
    from torch_vgg import gram

    layers = tuple(dict.fromkeys((*STYLE_LAYERS, CONTENT_LAYER)))
    acts = net.features(x, layers, pooling=pooling)
    jc = 0.5 * (acts[CONTENT_LAYER] - targets["content"]).square().sum()
    js = 0.0
    for name in STYLE_LAYERS:
        a = acts[name]
        g = gram(a)[0] / (a.shape[2] * a.shape[3])
        js = js + (g - targets["grams"][name]).square().sum() / a.shape[1] ** 2 / len(STYLE_LAYERS)
    return ALPHA * jc + BETA * js


def torch_transfer(w: stylejax.Weights, size: int, optimizer: str, *, channels_last: bool = True) -> Runner:
    """Plain PyTorch Gatys step: forward + backward to the image + torch.optim Adam/L-BFGS
    (L-BFGS history ``LBFGS_MEMORY``, no line search; the library's default steps)."""
    import torch
    from torch_vgg import gram

    net = _torch_net(w, channels_last)
    content, style = square_image("tubingen.jpg", size, 1), square_image("starry_night.jpg", size, 2)
    with torch.no_grad():
        c = net.features(torch_preprocess(net, content[None]), (CONTENT_LAYER,))[CONTENT_LAYER]
        s = net.features(torch_preprocess(net, style[None]), STYLE_LAYERS)
        targets = {"content": c,
                   "grams": {k: gram(v)[0] / (v.shape[2] * v.shape[3]) for k, v in s.items()}}
    # The leaf is stored contiguous (torch.optim.LBFGS needs flat views of the gradient); the
    # network sees an NCHW view of it, which for channels_last is the NHWC buffer itself.
    start = torch_preprocess(net, content[None])
    leaf = (start.permute(0, 2, 3, 1) if channels_last else start).contiguous().clone().requires_grad_(True)
    view = (lambda: leaf.permute(0, 3, 1, 2)) if channels_last else (lambda: leaf)
    if optimizer == "adam":
        opt = torch.optim.Adam([leaf], lr=learning_rate(optimizer))
    else:
        opt = torch.optim.LBFGS([leaf], lr=learning_rate(optimizer), max_iter=1, history_size=LBFGS_MEMORY,
                                line_search_fn=None)

    def closure():
        opt.zero_grad()
        loss = torch_gatys_loss(net, view(), targets)
        loss.backward()
        return loss

    def run():
        if optimizer == "adam":
            loss = closure()
            opt.step()
        else:
            loss = opt.step(closure)
        return float(loss.detach())

    def pairs() -> int:
        return len(opt.state[leaf].get("old_dirs", []))

    return Runner(run, pairs=pairs if optimizer == "lbfgs" else None)


def torch_scan(w: stylejax.Weights, layer: str, batch: int, size: int, *, channels_last: bool = True) -> Runner:
    import torch

    net = _torch_net(w, channels_last)
    pixels = scan_batch(batch, size)

    def run():
        with torch.inference_mode():
            a = net.features(torch_preprocess(net, pixels), (layer,))[layer]
            values, index = a.flatten(2).max(dim=2)  # per image and channel: max and its position
        return values.amax(dim=0), index  # checked value: each channel's best over the batch

    return Runner(run)


def torch_conv(n: int, hw: int, c: int, *, channels_last: bool = True) -> Runner:
    import torch
    import torch.nn.functional as F

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, hw, hw, generator=g).contiguous(memory_format=fmt)
    w = (torch.randn(c, c, 3, 3, generator=g) * 0.02).contiguous(memory_format=fmt)

    def run():
        with torch.inference_mode():
            return F.conv2d(x, w, padding=1)

    return Runner(run)
