"""The style transfer objective: targets, traced loss weights, and ``J`` for one image.

``J(x) = alpha Jc + beta sum_l lambda_l Js[l] + gamma Jtv`` (:mod:`stylejax.losses`) for an
image ``x`` f32[H, W, 3] in RGB pixels 0-255 (or its luminance f32[H, W, 1]).

It is split by what may change without compiling anything new:

* :class:`Spec` (static, hashable): which layers, pooling, conv path, precision and terms;
  a jitted step is specialised on it.
* :class:`LossWeights` (a pytree of arrays): alpha, beta, gamma and the lambdas. Traced, so
  sweeping them reuses one compiled step.
* targets (a pytree of arrays): ``{"content": {layer: f32[h, w, C]},
  "style": {layer: {"mean": f32[S, C], "second": f32[S, C, C]}}}``, the content's activations
  and the style statistics as position averages for ``S`` regions (S = 1: the blended styles;
  with region masks one per style, and ``"masks": {layer: f32[S, h, w]}``); with
  ``Spec.temporal`` also ``"temporal": {"image": f32[H, W, 3], "mask": f32[H, W]}``, the
  previous video frame's output warped onto this one and its consistency mask
  (:mod:`stylejax.temporal`), which adds ``lambda_t Jt`` to ``J``. With ``style_loss="w2"``
  each style layer's target also holds ``"cov_sqrt"`` f32[S, C, C] (the style covariance's root).

Every style distance is a function of position sums (:class:`Sums`, :func:`layer_sums`) and
the content term a sum over positions, so the objective and its gradient can also be
accumulated over tiles of the image. Everything here is a pure function of arrays; the
caller chooses where to ``jit``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from stylejax import color, losses, temporal
from stylejax.activations import feature_shapes, features
from stylejax.errors import StylejaxError
from stylejax.style_stats import Moments, W2Target, area_resize, covariance, sqrtm_psd, w2_distance
from stylejax.swag import swag
from stylejax.weights import Weights

Targets = dict


@dataclass(frozen=True)
class Spec:
    """The static half of the objective (hashable).

    ``conv="auto"`` takes the fast CPU convolutions (reverse mode only). ``swag`` is the SWAG
    temperature (None: off). ``luminance``: the variable is the luminance f32[H, W, 1].
    ``temporal``: the targets hold a temporal target (video), weighted by ``LossWeights.temporal``.
    """

    content_layers: tuple[str, ...]
    style_layers: tuple[str, ...]
    pooling: str = "max"
    conv: str = "auto"
    precision: str = "float32"
    normalize_gradients: bool = False
    swag: float | None = None
    style_loss: str = "gram"
    luminance: bool = False
    temporal: bool = False

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.content_layers, *self.style_layers)))


class LossWeights(NamedTuple):
    """The traced weights of ``J``: alpha f32[], beta f32[], gamma f32[], lambda f32[L] and the
    temporal weight lambda_t f32[] (used only with ``Spec.temporal``)."""

    content: jax.Array
    style: jax.Array
    tv: jax.Array
    style_layers: jax.Array
    temporal: jax.Array = np.float32(0.0)

    @classmethod
    def of(cls, content: float, style: float, tv: float, style_layers: Sequence[float],
           temporal: float = 0.0) -> LossWeights:
        return cls(*(jnp.asarray(v, jnp.float32) for v in (content, style, tv, style_layers, temporal)))

    def to_dict(self, spec: Spec) -> dict:
        d = {"alpha": float(self.content), "beta": float(self.style), "gamma": float(self.tv),
             "style_layer_weights": dict(zip(spec.style_layers, np.asarray(self.style_layers).tolist()))}
        if spec.temporal:
            d["lambda_t"] = float(self.temporal)
        return d


def activations(weights: Weights, spec: Spec, pixels: jax.Array, layers: Sequence[str]) -> dict[str, jax.Array]:
    """Post-ReLU activations of RGB ``pixels`` f32[..., H, W, 3] under the spec (SWAG-smoothed if on)."""
    acts = features(weights, pixels, tuple(layers), pooling=spec.pooling, conv=spec.conv, precision=spec.precision)
    if spec.swag is None:
        return acts
    return {k: swag(v, spec.swag, rescale=True) for k, v in acts.items()}


def to_pixels(x: jax.Array) -> jax.Array:
    """The optimised variable f32[..., H, W, 1 or 3] as RGB pixels."""
    return color.gray3(x) if x.shape[-1] == 1 else x


class Sums(NamedTuple):
    """One style layer's position sums for ``S`` regions: ``first`` = sum_p m_p a_p f32[S, C],
    ``second`` = sum_p m_p a_p a_p^T f32[S, C, C] and ``mass`` = sum_p m_p f32[S].

    Sums add over disjoint sets of positions (tiles); their averages ``first / mass`` and
    ``second / mass`` are the statistics every style distance is a function of.
    """

    first: jax.Array
    second: jax.Array
    mass: jax.Array


def layer_sums(a: jax.Array, mask: jax.Array | None = None) -> Sums:
    """:class:`Sums` of one image's activation ``a`` f32[h, w, C] under position weights ``mask``
    f32[S, h, w] (None: one region weighing every position 1)."""
    flat = a.reshape(-1, a.shape[-1])
    if mask is None:
        return Sums(jnp.sum(flat, axis=0)[None], losses._gram_flat(flat)[None],
                    jnp.full((1,), flat.shape[0], flat.dtype))
    m = mask.reshape(mask.shape[0], -1).astype(flat.dtype)
    return Sums(m @ flat, losses._gram_flat(jnp.sqrt(m)[:, :, None] * flat[None]), jnp.sum(m, axis=-1))


def _averages(sums: Sums) -> tuple[jax.Array, jax.Array]:
    """(mean f32[S, C], E[a a^T] f32[S, C, C]); a region of zero mass gives zeros, not NaN."""
    mass = jnp.maximum(sums.mass, jnp.finfo(sums.first.dtype).tiny)
    return sums.first / mass[:, None], sums.second / mass[:, None, None]


def style_distance(spec: Spec, sums: Sums, target: dict[str, jax.Array]) -> jax.Array:
    """One layer's style loss from the generated image's :class:`Sums` and the layer's target
    ``{"mean": f32[S, C], "second": f32[S, C, C]}`` (with ``"cov_sqrt"`` f32[S, C, C] for
    ``w2``), summed over the S regions.

    ``gram``: ``||E_G[a a^T] - E_S[a a^T]||_F^2 / C^2`` (= ``Js[l]``, the lecture's
    ``||G(S) - G(G)||_F^2 / (nH nW nC)^2`` at equal sizes).
    ``w2``: ``mean_c (mu_G - mu_S)^2 + tr(S_S + S_G - 2 (S_S^1/2 S_G S_S^1/2)^1/2) / C`` with
    ``S = E[a a^T] - mu mu^T + 1e-4 I`` (:func:`stylejax.style_stats.w2_distance`).
    """
    mean, second = _averages(sums)
    if spec.style_loss == "w2":
        t = Moments(target["mean"], target["second"])
        return jnp.sum(w2_distance(Moments(mean, second), W2Target(t.mean, covariance(t), target["cov_sqrt"])))
    channels = second.shape[-1]
    return jnp.sum(jnp.square(second - target["second"])) / channels**2


def _with_w2(spec: Spec, target: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """A layer's target with ``cov_sqrt`` = S_S^1/2 f32[S, C, C] added for ``w2`` (once per target)."""
    if spec.style_loss != "w2":
        return target
    return {**target, "cov_sqrt": sqrtm_psd(covariance(Moments(target["mean"], target["second"])))}


def style_masks(weights: Weights, spec: Spec, masks: jax.Array) -> dict[str, jax.Array]:
    """Region masks f32[S, H, W] (0-1, at the image's size) area-averaged onto each style layer's
    grid: ``{layer: f32[S, h, w]}``."""
    shapes = feature_shapes(weights, masks.shape[-2:], spec.style_layers, pooling=spec.pooling)
    return {l: jax.vmap(lambda m, l=l: area_resize(m, *shapes[l][:2]))(masks) for l in spec.style_layers}


def targets(weights: Weights, spec: Spec, content: jax.Array, styles: Sequence[jax.Array],
            blend: jax.Array, masks: jax.Array | None = None) -> Targets:
    """Targets from a content f32[H, W, 3] and style images f32[Hs, Ws, 3] (any sizes), all RGB 0-255.

    Without ``masks`` the styles are blended by ``blend`` f32[S] (weights summing to 1) into one
    region's statistics (S = 1). With ``masks`` f32[S, H, W] (one per style, 0-1 at the content's
    size) each style keeps its own statistics and ``targets["masks"]`` holds the masks on every
    style layer's grid; style ``s`` is then matched on the positions its mask weighs. For
    ``spec.style_loss == "w2"`` each layer's target also holds ``cov_sqrt`` f32[S, C, C], the
    square root of the (blended) style covariance.
    """
    if len(styles) != jnp.shape(blend)[0]:
        raise StylejaxError(f"{len(styles)} style images for {jnp.shape(blend)[0]} blend weights")
    acts = activations(weights, spec, content, spec.content_layers)
    per_style = []
    for image in styles:
        a = activations(weights, spec, image, spec.style_layers)
        per_style.append({l: layer_sums(a[l]) for l in spec.style_layers})
    return assemble_targets(weights, spec, {l: acts[l] for l in spec.content_layers}, per_style, blend, masks)


def assemble_targets(weights: Weights, spec: Spec, content: dict[str, jax.Array], per_style: Sequence[dict[str, Sums]],
                     blend: jax.Array, masks: jax.Array | None = None) -> Targets:
    """Targets from the content's activations ``{layer: f32[h, w, C]}`` and each style image's
    :class:`Sums` per style layer (however they were computed: whole, or over tiles); the rest
    as :func:`targets`."""
    stats = [{l: dict(zip(("mean", "second"), _averages(p[l]))) for l in spec.style_layers} for p in per_style]
    if masks is None:
        style = {l: jax.tree.map(lambda *v: sum(blend[i] * x for i, x in enumerate(v)), *(p[l] for p in stats))
                 for l in spec.style_layers}
        return {"content": dict(content), "style": {l: _with_w2(spec, t) for l, t in style.items()}}
    style = {l: jax.tree.map(lambda *v: jnp.concatenate(v), *(p[l] for p in stats)) for l in spec.style_layers}
    return {"content": dict(content), "style": {l: _with_w2(spec, t) for l, t in style.items()},
            "masks": style_masks(weights, spec, jnp.asarray(masks, jnp.float32))}


def content_term(spec: Spec, acts: dict[str, jax.Array], targets: Targets) -> jax.Array:
    """``Jc`` summed over the content layers (a sum over positions)."""
    return sum(losses.content_loss(acts[l], targets["content"][l]) for l in spec.content_layers)


def loss_terms(weights: Weights, spec: Spec, lw: LossWeights, x: jax.Array, targets: Targets
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(J, terms)`` for one image ``x`` f32[H, W, 1|3] (pixels) against ``targets``.

    ``terms`` holds the unweighted ``content`` (``sum`` over content layers), ``style``
    (``sum_l lambda_l Js[l]``), ``tv``, ``temporal`` (with ``spec.temporal``) and each
    ``style/<layer>``, all f32[].
    """
    pixels = to_pixels(x)
    acts = activations(weights, spec, pixels, spec.layers)
    masks = targets.get("masks", {})

    if spec.normalize_gradients:
        jc = sum(losses.normalized_term(losses.content_loss, acts[l], targets["content"][l])
                 for l in spec.content_layers)
        per_layer = {l: losses.normalized_term(functools.partial(_named_layer_loss, spec, l), acts[l],
                                               (targets["style"][l], masks.get(l)))
                     for l in spec.style_layers}
    else:
        jc = content_term(spec, acts, targets)
        per_layer = {l: style_distance(spec, layer_sums(acts[l], masks.get(l)), targets["style"][l])
                     for l in spec.style_layers}
    return combine(spec, lw, pixels, targets, jc, per_layer)


def combine(spec: Spec, lw: LossWeights, pixels: jax.Array, targets: Targets, jc: jax.Array,
            per_layer: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(J, terms)`` from ``Jc`` and each style layer's distance; the pixel terms (TV, temporal)
    from ``pixels`` f32[H, W, 3] (:func:`loss_terms`; the tiled objective shares it)."""
    js = sum(lw.style_layers[i] * per_layer[l] for i, l in enumerate(spec.style_layers))
    jtv = losses.tv_loss(pixels)
    total = losses.total_loss(jc, js, jtv, lw.content, lw.style, lw.tv)
    terms = {"total": total, "content": jc, "style": js, "tv": jtv}
    if spec.temporal:
        jt = temporal.temporal_loss(pixels, targets["temporal"]["image"], targets["temporal"]["mask"])
        total = total + lw.temporal * jt
        terms.update(total=total, temporal=jt)
    terms.update({f"style/{l}": v for l, v in per_layer.items()})
    return total, terms


def _named_layer_loss(spec: Spec, layer: str, a: jax.Array, aux) -> jax.Array:
    target, mask = aux
    return style_distance(spec, layer_sums(a, mask), target)


def neural_style_weights(weights: Weights, spec: Spec, content_shape: tuple[int, int],
                         content_strength: float, style_strength: float) -> tuple[float, float, tuple[float, ...]]:
    """(alpha, beta, lambdas) equal to jcjohnson/neural-style's ``-content_weight`` /
    ``-style_weight`` at an output of ``content_shape`` = (H, W).

    Its ContentLoss is ``w_c mean((a - p)^2) = w_c (2 / (C h w)) Jc`` per content layer and its
    StyleLoss is ``w_s mean((G/(C h w) - T)^2) = (w_s / C^2) Js[l]`` (Gram over the element
    count, MSE over C^2 entries), so ``alpha = 2 w_c / (C h w)`` at the (first) content layer,
    ``beta = w_s`` and ``lambda_l = 1 / C_l^2``.
    """
    shapes = feature_shapes(weights, content_shape, spec.layers, pooling=spec.pooling)
    h, w, c = shapes[spec.content_layers[0]]
    alpha = 2.0 * content_strength / (c * h * w)
    return alpha, float(style_strength), tuple(1.0 / shapes[l][-1] ** 2 for l in spec.style_layers)


__all__ = ["LossWeights", "Spec", "Sums", "Targets", "activations", "assemble_targets", "combine", "content_term", "layer_sums", "loss_terms",
           "neural_style_weights", "style_distance", "style_masks", "targets", "to_pixels"]
