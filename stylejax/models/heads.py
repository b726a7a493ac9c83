"""Classifier heads: the fully connected layers of torchvision's VGG and AlexNet, as pure functions.

torchvision's classifier after ``features`` is ``AdaptiveAvgPool2d(S)`` (S = 7 for VGG, 6 for
AlexNet), a flatten, then three linear layers with ReLUs between them (dropout is the identity at
inference). Layer names: ``fc6`` and ``fc7`` (post-ReLU) and ``fc8`` (the logits; alias ``logits``).

``head`` is ``{"fc6": {"kernel": f32[S*S*C, F6], "bias": f32[F6]}, "fc7": {...}, "fc8": {...}}``,
with ``fc6``'s rows in NHWC flattening order (h, w, c), so the input is a plain reshape of the
NHWC pooled map (torchvision flattens NCHW; :func:`fc6_rows_from_torch` reorders its rows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stylejax.errors import StylejaxError

FC_LAYERS: tuple[str, ...] = ("fc6", "fc7", "fc8")
ALIASES: dict[str, str] = {"logits": "fc8"}
#: The backbone layer a head reads and its adaptive-pool side, per arch.
INPUT: dict[str, tuple[str, int]] = {"vgg16": ("pool5", 7), "vgg19": ("pool5", 7), "alexnet": ("pool5", 6)}


def canonical(layer: str) -> str:
    """``logits`` -> ``fc8``; other names unchanged."""
    return ALIASES.get(layer, layer)


def is_head_layer(layer: str) -> bool:
    return canonical(layer) in FC_LAYERS


def adaptive_pool_matrix(n: int, out: int) -> np.ndarray:
    """f32[out, n] averaging weights of PyTorch's ``AdaptiveAvgPool`` along one axis.

    Bin ``i`` averages inputs ``floor(i*n/out)`` .. ``ceil((i+1)*n/out) - 1`` (bins overlap or
    repeat inputs when ``n`` is not a multiple of ``out``, e.g. a 1x1 map becomes 7x7 copies).
    """
    if n < 1:
        raise StylejaxError(f"cannot pool an empty map (side {n}); use a larger image")
    m = np.zeros((out, n), np.float32)
    for i in range(out):
        lo, hi = (i * n) // out, -((-(i + 1) * n) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool(x: jax.Array, out: int) -> jax.Array:
    """f32[N, h, w, C] -> f32[N, out, out, C], PyTorch's ``adaptive_avg_pool2d`` (shapes static)."""
    ph = jnp.asarray(adaptive_pool_matrix(x.shape[1], out))
    pw = jnp.asarray(adaptive_pool_matrix(x.shape[2], out))
    return jnp.einsum("ih,jw,nhwc->nijc", ph, pw, x)


def pool_side(arch: str) -> int:
    try:
        return INPUT[arch][1]
    except KeyError:
        raise StylejaxError(f"no classifier head for arch {arch!r}; heads exist for {', '.join(INPUT)}") from None


def out_features(head: Mapping[str, Mapping[str, jax.Array]], layer: str) -> int:
    """Width of head layer ``layer`` (e.g. 1000 for ``fc8`` of an ImageNet head)."""
    return int(np.shape(head[canonical(layer)]["bias"])[0])


def features(head: Mapping[str, Mapping[str, jax.Array]], pooled: jax.Array, layers: Sequence[str],
             *, side: int, relu: Callable[[jax.Array], jax.Array] = jax.nn.relu) -> dict[str, jax.Array]:
    """Activations of the head layers for the backbone's last pool.

    Args:
      head: the head pytree (see module docstring).
      pooled: f32[N, h, w, C] output of the backbone layer the head reads (``pool5``).
      layers: head layer names (``fc6``, ``fc7``, ``fc8``/``logits``); static under jit.
      side: the adaptive average pool's output side (7 for VGG, 6 for AlexNet).
      relu: the rectifier after fc6 and fc7.

    Returns:
      ``{name: f32[N, F]}`` under the names asked for (``fc6``/``fc7`` post-ReLU, ``fc8`` raw logits).
    """
    wanted = {canonical(name) for name in layers}
    unknown = sorted(wanted - set(FC_LAYERS))
    if unknown:
        raise StylejaxError(f"unknown head layer {unknown[0]!r}; head layers: fc6, fc7, fc8 (logits)")
    x = adaptive_avg_pool(pooled, side).reshape(pooled.shape[0], -1)
    out: dict[str, jax.Array] = {}
    for name in FC_LAYERS:
        p = head[name]
        x = x @ p["kernel"].astype(x.dtype) + p["bias"].astype(x.dtype)[None, :]
        if name != "fc8":
            x = relu(x)
        out[name] = x
        if all(n in out for n in wanted):
            break
    return {name: out[canonical(name)] for name in layers}


def fc6_rows_from_torch(kernel: np.ndarray, channels: int, side: int) -> np.ndarray:
    """Reorder fc6 rows from torchvision's NCHW flattening (c, h, w) to NHWC (h, w, c).

    ``kernel``: f32[C*S*S, F] (already transposed to in x out).
    """
    f = kernel.shape[1]
    return np.ascontiguousarray(kernel.reshape(channels, side, side, f).transpose(1, 2, 0, 3).reshape(-1, f))
