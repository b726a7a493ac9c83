"""Attribution maps: which input pixels a unit's response depends on.

Target: ``T(x) = max_{i,j} a[L](x)_{i,j,K}``, the largest post-ReLU activation of channel ``K``
of layer ``L`` over all positions (for a head layer ``fc6``/``fc7``/``fc8``, just ``a[L]_K``;
``fc8`` is the logit of class ``K``). ``x`` is RGB pixels f32[H, W, 3] in [0, 255]; derivatives
are taken through the weights' preprocessing. The baseline colour ``b`` is the weights' mean
pixel, i.e. zero after preprocessing, and ``x0`` the image filled with it.

* ``occlusion`` (Zeiler & Fergus 2014, sec. 4.2), window ``P``, stride ``S``:
  ``M[i, j] = T(x) - T(x with pixels [iS : iS+P, jS : jS+P] set to b)``,
  ``i = 0 .. (H-P)//S``, ``j = 0 .. (W-P)//S``; f32[(H-P)//S+1, (W-P)//S+1].
* ``gradcam`` (Selvaraju et al. 2017) at conv layer ``K2`` with map ``A = a[K2]`` f32[h, w, C]:
  ``w_c = mean_{i,j} dT/dA_{ijc}``, ``M = relu(sum_c w_c A_{..c})``; f32[h, w].
* ``guided-gradcam``: guided backprop ``G = dT/dx`` with every ReLU's backward rule guided
  (Springenberg et al. 2015), times the Grad-CAM map upsampled bilinearly to H x W:
  ``M = G * up(gradcam)[..., None]``; f32[H, W, 3].
* ``ig`` (Sundararajan et al. 2017), ``N`` steps:
  ``M = (x - x0) * (1/N) sum_{m=1..N} grad T(x0 + (m/N)(x - x0))``; f32[H, W, 3].
  Completeness: ``sum M ~ T(x) - T(x0)`` (exact as N -> infinity).
* ``smoothgrad`` (Smilkov et al. 2017), ``N`` samples, noise ``s`` (a fraction of the 0-255 range):
  ``M = (1/N) sum_n grad T(x + e_n)``, ``e_n ~ Normal(0, (255 s)^2)`` drawn with an explicit key
  (``jax.random.normal(key, (N, H, W, 3))``); f32[H, W, 3].
* ``saliency`` (Simonyan et al. 2014): ``M = grad T(x)``; f32[H, W, 3].

The kernels are pure and jitted with the unit index (and the occlusion window, the noise level)
traced: other units of the same layer reuse the compiled code. Batches of occluded images, IG
steps and SmoothGrad samples go through the network vmapped in chunks of ``chunk``.

``params`` of the kernels is ``{"features": backbone params}`` plus ``"head"`` for the fully
connected layers (see :class:`stylejax.classifier.Classifier`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from stylejax import activations as activations_lib
from stylejax import models
from stylejax.classifier import no_head
from stylejax.errors import StylejaxError
from stylejax.interpret.projection import guided_relu
from stylejax.models import heads
from stylejax.preprocessing import deprocess, preprocess
from stylejax.progress import Callback, Progress

Relu = Callable[[jax.Array], jax.Array]
METHODS: tuple[str, ...] = ("occlusion", "gradcam", "guided-gradcam", "ig", "smoothgrad", "saliency")
#: Archs whose rectifier hook is called once per conv layer in forward order (Grad-CAM's tap).
CHAINS: tuple[str, ...] = ("vgg16", "vgg19", "alexnet")


@dataclass(frozen=True)
class Net:
    """The static half of a network: arch, preprocessing convention and the target layer."""

    arch: str
    convention: str
    layer: str


# ----------------------------------------------------------------------------- forward
def baseline_pixel(convention: str) -> jax.Array:
    """f32[3] RGB pixel that preprocesses to zero: the weights' mean colour."""
    return deprocess(jnp.zeros(3, jnp.float32), convention)


def _conv_index(arch: str, layer: str) -> int:
    convs = [item.name for item in models.get(arch).layers if item.kind == "conv"]
    return convs.index(layer)


def _tapped(relu: Relu, index: int, delta: jax.Array) -> tuple[Relu, list]:
    """A rectifier that adds ``delta`` to the output of its ``index``-th call (conv layer ``index``)."""
    calls = [0]

    def hooked(z):
        y = relu(z)
        if calls[0] == index:
            if y.shape != delta.shape:
                raise StylejaxError(f"Grad-CAM tap: layer output {y.shape} is not {delta.shape}")
            y = y + delta
        calls[0] += 1
        return y

    return hooked, calls


def activations(params: dict, pixels: jax.Array, net: Net, layers: Sequence[str], *,
                relu: Relu = jax.nn.relu, tap: tuple[str, jax.Array] | None = None) -> dict[str, jax.Array]:
    """Activations for RGB pixels f32[N, H, W, 3] in [0, 255].

    Args:
      params: ``{"features": ..., "head": ...}`` ("head" only needed for fc layers).
      layers: backbone layer names and/or head layers (``fc6``, ``fc7``, ``fc8``, ``logits``).
      relu: the rectifier everywhere (e.g. :func:`guided_relu`).
      tap: ``(conv layer, delta f32[N, h, w, C])``: ``delta`` is added to that layer's rectified
        output, so ``d/d delta`` at zero is the gradient with respect to the layer's map.

    Returns:
      ``{name: f32[N, h, w, C]}`` for backbone layers, ``{name: f32[N, F]}`` for head layers.
    """
    backbone = models.get(net.arch)
    x = preprocess(pixels, net.convention)
    head_layers = [name for name in layers if heads.is_head_layer(name)]
    needed = [name for name in layers if not heads.is_head_layer(name)]
    if head_layers:
        needed.append(heads.INPUT[net.arch][0])
    hooked, calls = relu, None
    if tap is not None:
        needed.append(tap[0])
        hooked, calls = _tapped(relu, _conv_index(net.arch, tap[0]), tap[1])
    feats = backbone.features(params["features"], x, tuple(dict.fromkeys(needed)), relu=hooked)
    if calls is not None and calls[0] <= _conv_index(net.arch, tap[0]):
        raise StylejaxError(f"Grad-CAM tap at {tap[0]} was never reached")
    out = {name: feats[name] for name in layers if not heads.is_head_layer(name)}
    if head_layers:
        out.update(heads.features(params["head"], feats[heads.INPUT[net.arch][0]], head_layers,
                                  side=heads.pool_side(net.arch), relu=relu))
    return out


def unit_target(act: jax.Array, unit: jax.Array | int) -> jax.Array:
    """``T``: f32[N, h, w, C] or f32[N, F] and a (traced) channel -> f32[N], max over positions."""
    a = jax.lax.dynamic_index_in_dim(act, unit, axis=act.ndim - 1, keepdims=False)
    return a.reshape(a.shape[0], -1).max(axis=1)


def target(params: dict, pixels: jax.Array, unit, net: Net, relu: Relu = jax.nn.relu) -> jax.Array:
    """``T(x)`` for one image f32[H, W, 3] -> f32[]."""
    return unit_target(activations(params, pixels[None], net, (net.layer,), relu=relu)[net.layer], unit)[0]


def _grad(params, pixels, unit, net, relu=jax.nn.relu):
    return jax.grad(lambda p: target(params, p, unit, net, relu))(pixels)


# ----------------------------------------------------------------------------- kernels
@partial(jax.jit, static_argnames=("net",))
def target_value(params, pixels, unit, *, net: Net) -> jax.Array:
    """``T(x)`` (jitted, unit traced)."""
    return target(params, pixels, unit, net)


@partial(jax.jit, static_argnames=("net",))
def saliency(params, pixels, unit, *, net: Net) -> jax.Array:
    """``dT/dx`` f32[H, W, 3]."""
    return _grad(params, pixels, unit, net)


@partial(jax.jit, static_argnames=("net",))
def occlusion_chunk(params, pixels, unit, offsets, window, *, net: Net) -> jax.Array:
    """``T`` of the image occluded at each ``offsets`` f32[B] for int[B, 2] (top, left) corners.

    The square ``[top : top+window, left : left+window]`` is set to the baseline colour;
    ``window`` is traced. The B images go through the network as one vmapped batch.
    """
    h, w = pixels.shape[:2]
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    base = jnp.broadcast_to(baseline_pixel(net.convention), pixels.shape)

    def occluded(offset):
        inside = ((rows >= offset[0]) & (rows < offset[0] + window)
                  & (cols >= offset[1]) & (cols < offset[1] + window))
        return jnp.where(inside[..., None], base, pixels)

    images = jax.vmap(occluded)(offsets)
    return unit_target(activations(params, images, net, (net.layer,))[net.layer], unit)


def _cam(params, pixels, unit, net: Net, at: str):
    """(Grad-CAM map f32[h, w], T) at conv layer ``at``."""
    shape = jax.eval_shape(lambda p: activations(params, p[None], net, (at,))[at], pixels).shape
    delta = jnp.zeros(shape, pixels.dtype)

    def t(delta):
        acts = activations(params, pixels[None], net, (net.layer, at), tap=(at, delta))
        return unit_target(acts[net.layer], unit)[0], acts[at][0]

    (value, a), g = jax.value_and_grad(t, has_aux=True)(delta)
    weights = g[0].mean(axis=(0, 1))
    return jax.nn.relu(jnp.einsum("hwc,c->hw", a, weights)), value


@partial(jax.jit, static_argnames=("net", "at"))
def gradcam(params, pixels, unit, *, net: Net, at: str) -> jax.Array:
    """Grad-CAM at conv layer ``at``: f32[h, w] at that layer's resolution."""
    return _cam(params, pixels, unit, net, at)[0]


@partial(jax.jit, static_argnames=("net", "at"))
def guided_gradcam(params, pixels, unit, *, net: Net, at: str) -> jax.Array:
    """Guided backprop times the bilinearly upsampled Grad-CAM map: f32[H, W, 3]."""
    cam = _cam(params, pixels, unit, net, at)[0]
    up = jax.image.resize(cam, pixels.shape[:2], "bilinear")
    return _grad(params, pixels, unit, net, guided_relu) * up[..., None]


@partial(jax.jit, static_argnames=("net", "steps", "chunk"))
def integrated_gradients(params, pixels, unit, *, net: Net, steps: int, chunk: int) -> jax.Array:
    """``(x - x0) * mean_{m=1..N} grad T(x0 + m/N (x - x0))``: f32[H, W, 3]; steps vmapped in chunks."""
    x0 = jnp.broadcast_to(baseline_pixel(net.convention), pixels.shape)
    alphas = jnp.arange(1, steps + 1, dtype=pixels.dtype) / steps
    grads = jax.lax.map(lambda a: _grad(params, x0 + a * (pixels - x0), unit, net), alphas,
                        batch_size=min(chunk, steps))
    return (pixels - x0) * grads.mean(axis=0)


@partial(jax.jit, static_argnames=("net", "samples", "chunk"))
def smoothgrad(params, pixels, unit, key, noise, *, net: Net, samples: int, chunk: int) -> jax.Array:
    """``mean_n grad T(x + e_n)``, ``e = 255 * noise * jax.random.normal(key, (N, H, W, 3))``."""
    eps = 255.0 * noise * jax.random.normal(key, (samples, *pixels.shape), pixels.dtype)
    grads = jax.lax.map(lambda e: _grad(params, pixels + e, unit, net), eps, batch_size=min(chunk, samples))
    return grads.mean(axis=0)


# ----------------------------------------------------------------------------- public API
@dataclass(frozen=True)
class Settings:
    """What to attribute and how; defaults follow the methods' papers and common tools."""

    method: str
    layer: str
    unit: int
    window: int = 16          # occlusion square side (pixels)
    stride: int = 8           # occlusion step (pixels)
    at: str | None = None     # Grad-CAM layer (default: the target layer if conv, else the last conv)
    steps: int = 32           # integrated-gradients steps
    samples: int = 32         # SmoothGrad samples
    noise: float = 0.15       # SmoothGrad noise std as a fraction of 255
    seed: int = 0             # SmoothGrad key: jax.random.key(seed)
    chunk: int = 16           # images per vmapped batch


@dataclass(frozen=True)
class Attribution:
    """An attribution map and what it is of.

    ``map``: the method's map as defined in the module docstring; ``heat``: f32[H, W] >= 0, the
    map as one importance per input pixel (for pictures); ``target``: ``T(x)``; ``baseline``:
    ``T(x0)``; ``at``: the Grad-CAM layer (or None).
    """

    method: str
    layer: str
    unit: int
    map: np.ndarray
    heat: np.ndarray
    target: float
    baseline: float
    at: str | None = None
    extra: dict = field(default_factory=dict)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise StylejaxError(f"unknown attribution method {method!r}; use one of {', '.join(METHODS)}")
    return method


def layer_units(params: dict, arch: str, layer: str, weights_name: str | None = None) -> int:
    """Channels (or head width) of ``layer``; errors list the valid names."""
    if heads.is_head_layer(layer):
        heads.pool_side(arch)
        if "head" not in params:
            raise StylejaxError(f"{layer} is a classifier-head layer: {no_head(weights_name)}")
        return heads.out_features(params["head"], layer)
    backbone = models.get(arch)
    names = backbone.layer_names + (list(heads.FC_LAYERS) if arch in heads.INPUT else [])
    if layer not in backbone.layer_names:
        raise StylejaxError(f"unknown layer {layer!r}; valid layers: {', '.join(names)}")
    return next(item.channels for item in backbone.layers if item.name == layer)


def _check_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise StylejaxError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _default_at(arch: str, layer: str) -> str:
    table = models.get(arch).layers
    names = [item.name for item in table]
    stop = len(table) if heads.is_head_layer(layer) else names.index(layer) + 1
    convs = [item.name for item in table[:stop] if item.kind == "conv"]
    return convs[-1]


def _check_at(arch: str, layer: str, at: str | None) -> str:
    if arch not in CHAINS:
        raise StylejaxError(f"Grad-CAM is implemented for {', '.join(CHAINS)}, not {arch}")
    at = at or _default_at(arch, layer)
    table = models.get(arch).layers
    names = [item.name for item in table]
    convs = [item.name for item in table if item.kind == "conv"]
    if at not in convs:
        raise StylejaxError(f"Grad-CAM layer {at!r} must be a conv layer of {arch}: {', '.join(convs)}")
    if not heads.is_head_layer(layer) and names.index(at) > names.index(layer):
        raise StylejaxError(f"Grad-CAM layer {at} comes after the target layer {layer}; choose one at or before it")
    return at


def check_pixels(pixels) -> jax.Array:
    """One image f32[H, W, 3] of finite RGB values (dtype and shape as :func:`stylejax.activations.check_pixels`)."""
    x = activations_lib.check_pixels(pixels)
    if x.ndim != 3:
        raise StylejaxError(f"attribution takes one image of shape [H, W, 3], got shape {tuple(x.shape)}")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise StylejaxError("pixels must be finite numbers in [0, 255]")
    return x


def occlusion_offsets(h: int, w: int, window: int, stride: int) -> np.ndarray:
    """int32[I*J, 2] (top, left) corners, row-major over the (I, J) grid of the definition."""
    ii, jj = np.meshgrid(np.arange((h - window) // stride + 1), np.arange((w - window) // stride + 1),
                         indexing="ij")
    return np.stack([ii.ravel() * stride, jj.ravel() * stride], axis=1).astype(np.int32)


def occlusion_heat(m: np.ndarray, h: int, w: int, window: int, stride: int) -> np.ndarray:
    """Each pixel: the mean of ``relu(M)`` over the windows covering it (0 where none does)."""
    total, count = np.zeros((h, w)), np.zeros((h, w))
    for (i, j), value in np.ndenumerate(np.maximum(m, 0)):
        total[i * stride:i * stride + window, j * stride:j * stride + window] += value
        count[i * stride:i * stride + window, j * stride:j * stride + window] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


def attribute(model, pixels, s: Settings, *, callback: Callback | None = None) -> Attribution:
    """Compute one attribution map, validating every input first.

    Args:
      model: a :class:`stylejax.weights.Weights` or a :class:`stylejax.classifier.Classifier`.
      pixels: u8/f32[H, W, 3] RGB in [0, 255].
      s: the settings.
      callback: receives a :class:`stylejax.progress.Progress` (occluded images done of total)
        after each chunk of occlusion.
    """
    w = getattr(model, "weights", model)
    params = model.params if hasattr(model, "head") else {"features": w.params}
    check_method(s.method)
    layer = s.layer
    channels = layer_units(params, w.arch, layer, w.name)
    unit = _check_int("unit", s.unit, 0)
    if unit >= channels:
        raise StylejaxError(f"unit {unit} is outside {layer}, which has units 0..{channels - 1}")
    x = check_pixels(pixels)
    h, wd = x.shape[:2]
    net = Net(w.arch, w.preprocessing, layer)
    try:
        out = jax.eval_shape(lambda p: activations(params, p[None], net, (layer,))[layer], x).shape
    except (StylejaxError, TypeError, ValueError) as exc:
        raise StylejaxError(f"a {h}x{wd} image is too small for {layer} ({str(exc).splitlines()[0]})") from None
    if 0 in out:
        raise StylejaxError(f"a {h}x{wd} image is too small for {layer} (its map would be {out[1:3]})")
    chunk = _check_int("chunk", s.chunk)
    at, extra = None, {}
    if s.method == "occlusion":
        window, stride = _check_int("window", s.window), _check_int("stride", s.stride)
        if window > min(h, wd):
            raise StylejaxError(f"occlusion window {window} is larger than the {h}x{wd} image")
    elif s.method in ("gradcam", "guided-gradcam"):
        at = _check_at(w.arch, layer, s.at)
    elif s.method == "ig":
        steps = _check_int("steps", s.steps)
    elif s.method == "smoothgrad":
        samples = _check_int("samples", s.samples)
        if not (isinstance(s.noise, (int, float)) and math.isfinite(s.noise) and s.noise >= 0):
            raise StylejaxError(f"noise must be a finite number >= 0, got {s.noise!r}")
        seed = _check_int("seed", s.seed, 0)

    u = jnp.int32(unit)
    value = float(target_value(params, x, u, net=net))
    x0 = jnp.broadcast_to(baseline_pixel(w.preprocessing), x.shape)
    base = float(target_value(params, x0, u, net=net))
    if s.method == "occlusion":
        offsets = occlusion_offsets(h, wd, window, stride)
        values = []
        for start in range(0, len(offsets), chunk):
            batch = offsets[start:start + chunk]
            padded = np.concatenate([batch, np.repeat(batch[-1:], chunk - len(batch), 0)])
            values.append(np.asarray(occlusion_chunk(params, x, u, jnp.asarray(padded), jnp.int32(window),
                                                     net=net))[:len(batch)])
            if callback:
                callback(Progress(start + len(batch), len(offsets), "image"))
        grid = ((h - window) // stride + 1, (wd - window) // stride + 1)
        m = (value - np.concatenate(values)).reshape(grid).astype(np.float32)
        heat = occlusion_heat(m, h, wd, window, stride)
        extra = {"window": window, "stride": stride}
    elif s.method in ("gradcam", "guided-gradcam"):
        if s.method == "gradcam":
            m = np.asarray(gradcam(params, x, u, net=net, at=at))
            heat = np.asarray(jax.image.resize(jnp.asarray(m), (h, wd), "bilinear"))
        else:
            m = np.asarray(guided_gradcam(params, x, u, net=net, at=at))
            heat = np.abs(m).max(axis=-1)
    elif s.method == "ig":
        m = np.asarray(integrated_gradients(params, x, u, net=net, steps=steps, chunk=chunk))
        heat = np.abs(m.sum(axis=-1))
        total = float(m.sum(dtype=np.float64))
        extra = {"steps": steps, "sum": total, "completeness_gap": total - (value - base)}
    elif s.method == "smoothgrad":
        m = np.asarray(smoothgrad(params, x, u, jax.random.key(seed), jnp.float32(s.noise), net=net,
                                  samples=samples, chunk=chunk))
        heat = np.abs(m).max(axis=-1)
        extra = {"samples": samples, "noise": float(s.noise), "seed": seed}
    else:
        m = np.asarray(saliency(params, x, u, net=net))
        heat = np.abs(m).max(axis=-1)
    return Attribution(s.method, layer, unit, m, np.asarray(heat, np.float32), value, base, at, extra)


# ----------------------------------------------------------------------------- pictures
_INFERNO = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32)


def colormap(values: np.ndarray) -> np.ndarray:
    """f[...] in [0, 1] -> f32[..., 3] RGB 0-255 along an inferno-like ramp."""
    t = np.clip(values, 0, 1) * (len(_INFERNO) - 1)
    lo = np.minimum(np.floor(t).astype(int), len(_INFERNO) - 2)
    frac = (t - lo)[..., None]
    return _INFERNO[lo] * (1 - frac) + _INFERNO[lo + 1] * frac


def overlay(pixels, heat: np.ndarray, strength: float = 0.75, percentile: float = 99.0) -> np.ndarray:
    """The heat map over a dimmed greyscale copy of the image: u8[H, W, 3].

    ``heat`` f[H, W] >= 0 is divided by its ``percentile``-th percentile and clipped to 1 (as PAIR
    saliency draws gradients: a few extreme pixels would otherwise leave the rest black); each
    pixel mixes ``strength * h`` of the colour ramp with the image.
    """
    img = np.asarray(pixels, np.float32)
    grey = (img @ np.array([0.299, 0.587, 0.114], np.float32))[..., None] * np.ones(3, np.float32)
    heat = np.asarray(heat, np.float32)
    scale = float(np.percentile(heat, percentile)) if heat.size else 0.0
    if not (scale > 0 and math.isfinite(scale)):
        scale = float(heat.max()) if heat.size else 0.0
    h = np.clip(heat / scale, 0, 1) if scale > 0 and math.isfinite(scale) else np.zeros(heat.shape, np.float32)
    alpha = (strength * h)[..., None]
    out = (1 - alpha) * 0.6 * grey + alpha * colormap(h)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


__all__ = ["METHODS", "Attribution", "Net", "Settings", "activations", "attribute", "baseline_pixel",
           "colormap", "gradcam", "guided_gradcam", "integrated_gradients", "occlusion_chunk",
           "occlusion_offsets", "overlay", "saliency", "smoothgrad", "target", "target_value", "unit_target"]
