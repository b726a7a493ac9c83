"""The Gatys et al. style-transfer objective as pure functions of activations.

Notation: ``a`` is a post-ReLU activation f32[h, w, C] (one image) or f32[N, h, w, C]; ``M = h w``.

* content  ``Jc = 1/2 ||a(C) - a(G)||^2``, summed over all positions and channels;
* Gram     ``G_kk' = sum_ij a_ijk a_ijk'`` (raw, unnormalised);
* style    ``Js[l] = ||G(S)/M_S - G(G)/M_G||_F^2 / C^2``, ``Js = sum_l lambda_l Js[l]``;
* TV       ``Jtv = 1/2 sum_{i<H-1, j<W-1} (x_ij - x_i,j+1)^2 + (x_ij - x_i+1,j)^2`` on RGB pixels
  in [0, 255] (the exact energy whose gradient is jcjohnson/neural-style's TVLoss);
* total    ``J = alpha Jc + beta Js + gamma Jtv``.

Style normalisation: when the style and the generated image have the same size (``M_S = M_G =
M``) ``Js[l]`` is exactly ``||G(S) - G(G)||^2 / (M C)^2 = ||G(S) - G(G)||^2 / (nH nW nC)^2``.
When the sizes differ, each Gram is divided by its own number of positions, i.e. the style target
is the mean outer product of features per position, so the style image may be any size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

import jax
import jax.numpy as jnp

from stylejax.errors import StylejaxError


def _check_same_shape(name: str, a: jax.Array, b: jax.Array) -> None:
    """No broadcasting in losses: a silent broadcast gives a plausible wrong number."""
    if jnp.shape(a) != jnp.shape(b):
        raise StylejaxError(f"{name}: shapes differ, {tuple(jnp.shape(a))} vs {tuple(jnp.shape(b))}")


def _check_rank(name: str, a: jax.Array, low: int, expected: str) -> None:
    if jnp.ndim(a) < low:
        raise StylejaxError(f"{name}: expected {expected}, got shape {tuple(jnp.shape(a))}")


def gram(a: jax.Array) -> jax.Array:
    """Raw Gram matrix ``sum_ij a_ijk a_ijk'``: f32[..., h, w, C] -> f32[..., C, C]."""
    _check_rank("gram", a, 3, "f32[..., h, w, C]")
    flat = a.reshape(*a.shape[:-3], -1, a.shape[-1])
    return _gram_flat(flat)


@jax.custom_jvp
def _gram_flat(flat: jax.Array) -> jax.Array:
    """``F^T F`` for F: f32[..., M, C].

    Its derivative is written as ``t + t^T`` with ``t = F^T dF``, so reverse mode transposes it
    to one product ``F (g + g^T)`` instead of autodiff's two (``F g`` and ``F g^T``): the
    Gram gradient is half the work. Forward mode works too (a custom JVP, not a custom VJP).
    """
    return jnp.einsum("...mk,...ml->...kl", flat, flat, precision=jax.lax.Precision.HIGHEST)


@_gram_flat.defjvp
def _gram_flat_jvp(primals, tangents):
    (flat,), (dflat,) = primals, tangents
    half = jnp.einsum("...mk,...ml->...kl", flat, dflat, precision=jax.lax.Precision.HIGHEST)
    return _gram_flat(flat), half + jnp.swapaxes(half, -1, -2)


def normalized_gram(a: jax.Array) -> jax.Array:
    """Gram divided by the number of positions ``h w``: f32[..., h, w, C] -> f32[..., C, C].

    A layer with no positions (an image too small for its pools) gives the zero matrix.
    """
    return gram(a) / max(a.shape[-3] * a.shape[-2], 1)


def layer_stats(a: jax.Array) -> dict[str, jax.Array]:
    """Position averages of one layer's activation a: f32[..., h, w, C].

    ``mean`` f32[..., C] is ``E[a]`` and ``second`` f32[..., C, C] is ``E[a a^T] = G / (h w)``,
    the normalised Gram. Style targets are kept in this form: the Gram loss uses ``second``,
    and statistics of several images blend linearly in it.
    """
    _check_rank("layer_stats", a, 3, "f32[..., h, w, C]")
    return {"mean": jnp.mean(a, axis=(-3, -2)), "second": normalized_gram(a)}


def content_loss(a: jax.Array, target: jax.Array) -> jax.Array:
    """``Jc = 1/2 sum (a - target)^2`` over every element (per image if batched: sums all).

    ``a`` and ``target`` must have the same shape (no broadcasting); else StylejaxError.
    """
    _check_same_shape("content_loss", a, target)
    return 0.5 * jnp.sum(jnp.square(a - target))


def style_layer_loss(a: jax.Array, target_gram: jax.Array) -> jax.Array:
    """``Js[l] = ||target_gram - G(a)/(h w)||_F^2 / C^2`` for a: f32[h, w, C], target: f32[C, C].

    ``target_gram`` is the style image's :func:`normalized_gram` (its Gram over its own ``h w``).
    """
    _check_rank("style_layer_loss", a, 3, "f32[h, w, C]")
    expected = tuple(a.shape[:-3]) + (a.shape[-1],) * 2
    if tuple(jnp.shape(target_gram)) != expected:
        raise StylejaxError(f"style_layer_loss: target Gram has shape {tuple(jnp.shape(target_gram))}, "
                            f"expected {expected} for activations {tuple(a.shape)}")
    channels = a.shape[-1]
    return jnp.sum(jnp.square(normalized_gram(a) - target_gram)) / channels**2


def style_loss(acts: Mapping[str, jax.Array], target_grams: Mapping[str, jax.Array],
               layer_weights: Mapping[str, float]) -> jax.Array:
    """``Js = sum_l lambda_l Js[l]`` over the layers of ``layer_weights``.

    ``acts`` maps layer names to f32[h, w, C]; ``target_grams`` to normalised Grams f32[C, C].
    """
    missing = sorted(set(layer_weights) - set(acts) | set(layer_weights) - set(target_grams))
    if missing:
        raise StylejaxError(f"style_loss: no activation or target for layer {missing[0]!r}")
    return sum(w * style_layer_loss(acts[name], target_grams[name]) for name, w in layer_weights.items())


def tv_loss(pixels: jax.Array) -> jax.Array:
    """Total variation ``1/2 sum (dx^2 + dy^2)`` over f32[..., H, W, C] on the (H-1)x(W-1) corner.

    This is the energy whose gradient is the TVLoss module of jcjohnson/neural-style.
    """
    base = pixels[..., :-1, :-1, :]
    dx = base - pixels[..., :-1, 1:, :]
    dy = base - pixels[..., 1:, :-1, :]
    return 0.5 * jnp.sum(jnp.square(dx) + jnp.square(dy))


def total_loss(jc: jax.Array, js: jax.Array, jtv: jax.Array, alpha: float, beta: float,
               gamma: float = 0.0) -> jax.Array:
    """``J = alpha Jc + beta Js + gamma Jtv``."""
    return alpha * jc + beta * js + gamma * jtv


def default_layer_weights(layers: Sequence[str], weights: Sequence[float] | None = None) -> dict[str, float]:
    """``{layer: lambda_l}``: ``1/len(layers)`` each, or the given per-layer weights."""
    if weights is None:
        return {name: 1.0 / len(layers) for name in layers}
    if len(weights) != len(layers):
        raise ValueError(f"{len(weights)} layer weights for {len(layers)} layers")
    return {name: float(w) for name, w in zip(layers, weights)}


# ----------------------------------------------------------------------------- gradient normalisation

@partial(jax.custom_vjp, nondiff_argnums=(0,))
def normalized_term(fn: Callable[[jax.Array, object], jax.Array], a: jax.Array, aux) -> jax.Array:
    """``fn(a, aux)`` whose gradient w.r.t. ``a`` is divided by its L1 norm (+1e-8).

    jcjohnson/neural-style's ``-normalize_gradients``: each loss term's gradient is L1-normalised
    before its weight is applied, so ``w * normalized_term(fn, a, aux)`` pushes with strength ``w``
    whatever the term's raw scale. The value is unchanged; ``aux`` (a target) gets no gradient.
    """
    return fn(a, aux)


def _normalized_fwd(fn, a, aux):
    value, vjp = jax.vjp(lambda x: fn(x, aux), a)
    return value, (vjp, aux)


def _normalized_bwd(fn, res, ct):
    vjp, aux = res
    (g,) = vjp(jnp.ones_like(ct))
    return ct * g / (jnp.sum(jnp.abs(g)) + 1e-8), jax.tree_util.tree_map(jnp.zeros_like, aux)


normalized_term.defvjp(_normalized_fwd, _normalized_bwd)
