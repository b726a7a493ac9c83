"""Style statistics of activations and the two style distances built on them (Gram and W2).

A layer's style is summarised by two position averages of its post-ReLU activations
``a`` f32[h, w, C] (``M = h w`` positions, optional position weights ``m`` f32[h, w] >= 0):

* ``mean   = sum_p m_p a_p / sum_p m_p``           f32[C]
* ``second = sum_p m_p a_p a_p^T / sum_p m_p``     f32[C, C]  (= E[a a^T]; the normalised Gram)

Both are linear in the distribution of positions, so several styles blend linearly in
``(mean, second)`` (not in the covariance), and the statistics of two complementary masks,
weighted by their masses, add up to the unmasked ones.

Distances of the generated image's statistics ``(mu_G, E_G)`` to a style's ``(mu_S, E_S)``:

* Gram (Gatys et al. 2016): ``||E_G - E_S||_F^2 / C^2`` (what :func:`stylejax.losses.style_layer_loss` computes);
* Wasserstein-2 between Gaussians (crowsonkb/style-transfer-pytorch ``StyleLossW2``)::

      W2 = mean_c (mu_G - mu_S)^2 + tr(S_S + S_G - 2 (S_S^1/2 S_G S_S^1/2)^1/2) / C,
      S = E[a a^T] - mu mu^T + eps I,  eps = 1e-4.

The matrix square root is :func:`sqrtm_psd` (symmetric eigendecomposition, with a JVP from the
Daleckii-Krein formula, so it is right in forward and reverse mode); the cross term is the
nuclear norm ``||S_G^1/2 S_S^1/2||_*`` (:func:`nuclear_norm`, an SVD with its own JVP).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from stylejax.losses import _gram_flat

W2_EPS = 1e-4


class Moments(NamedTuple):
    """Position averages of one layer: ``mean`` f32[..., C], ``second`` = E[a a^T] f32[..., C, C]."""

    mean: jax.Array
    second: jax.Array


class W2Target(NamedTuple):
    """A style's W2 target: ``mean`` f32[C], ``cov`` f32[C, C] (eps included), ``cov_sqrt`` = cov^1/2."""

    mean: jax.Array
    cov: jax.Array
    cov_sqrt: jax.Array


def moments(a: jax.Array, mask: jax.Array | None = None) -> Moments:
    """:class:`Moments` of a: f32[..., h, w, C] over positions, weighted by ``mask`` f32[..., h, w].

    ``mask=None`` weighs every position 1. A mask with zero mass gives zero statistics (not NaN).
    """
    flat = a.reshape(*a.shape[:-3], -1, a.shape[-1])
    if mask is None:
        count = max(flat.shape[-2], 1)
        return Moments(jnp.sum(flat, axis=-2) / count, _gram_flat(flat) / count)
    m = jnp.asarray(mask, flat.dtype).reshape(*mask.shape[:-2], -1)
    if m.shape[-1] != flat.shape[-2]:
        raise ValueError(f"mask {mask.shape} does not match activations {a.shape}")
    mass = jnp.maximum(jnp.sum(m, axis=-1), jnp.finfo(flat.dtype).tiny)
    mean = jnp.einsum("...m,...mc->...c", m, flat) / mass[..., None]
    second = _gram_flat(jnp.sqrt(m)[..., None] * flat) / mass[..., None, None]
    return Moments(mean, second)


def blend(stats: list[Moments] | tuple[Moments, ...], weights) -> Moments:
    """``sum_k w_k stats_k``: the statistics of a mixture of styles with weights ``w`` (sum 1)."""
    mean = sum(w * s.mean for w, s in zip(weights, stats))
    second = sum(w * s.second for w, s in zip(weights, stats))
    return Moments(mean, second)


def area_resize(mask: jax.Array, height: int, width: int) -> jax.Array:
    """Area-average f32[H, W] onto an (height, width) grid: cell i covers rows [i H/h, (i+1) H/h).

    Each output value is the mean of the input over its cell (fractional pixels weighted by their
    overlap), as OpenCV's ``INTER_AREA``; written as ``R_h mask R_w^T`` with overlap matrices.
    """
    mask = jnp.asarray(mask, jnp.float32)
    return _overlap(mask.shape[-2], height) @ mask @ _overlap(mask.shape[-1], width).T


def _overlap(n_in: int, n_out: int) -> jax.Array:
    """f32[n_out, n_in]: row i = fraction of input pixel p inside output cell i, rows sum to 1."""
    edges = jnp.arange(n_out + 1, dtype=jnp.float32) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    p = jnp.arange(n_in, dtype=jnp.float32)[None, :]
    inside = jnp.clip(jnp.minimum(hi, p + 1) - jnp.maximum(lo, p), 0.0, 1.0)
    return inside / (n_in / n_out)


# ----------------------------------------------------------------------------- matrix square root

def _one_at_a_time(fn):
    """``fn`` of one matrix f32[C, C], applied to f32[..., C, C] one matrix after the other.

    A batch (leading axes, or a ``vmap`` over the caller) becomes a loop
    (``jax.custom_batching.sequential_vmap``), so LAPACK never sees a batch: jaxlib 0.10's CPU
    kernels split a batch over the intra-op thread pool and wait for it, which deadlocks when as
    many batched decompositions (one per style layer) run at once as the pool has threads (2 on a
    2-core machine).
    """
    one = jax.custom_batching.sequential_vmap(fn)

    def apply(a: jax.Array):
        out = jax.vmap(one)(a.reshape(-1, *a.shape[-2:]))
        return jax.tree.map(lambda o: o.reshape(*a.shape[:-2], *o.shape[1:]), out)

    return apply


_eigh = _one_at_a_time(lambda m: jnp.linalg.eigh(m))
_svd = _one_at_a_time(lambda m: jnp.linalg.svd(m, full_matrices=False))
_singular_values = _one_at_a_time(lambda m: jnp.linalg.svd(m, compute_uv=False))


@jax.custom_jvp
def sqrtm_psd(a: jax.Array) -> jax.Array:
    """Principal square root of symmetric positive semi-definite f32[..., C, C].

    ``a = V diag(l) V^T`` -> ``V diag(sqrt(max(l, 0))) V^T`` (eigenvalues below 0 from rounding
    are clipped). Derivative (Daleckii-Krein): ``dS = V [(V^T dA V)_ij / (s_i + s_j)] V^T``, i.e.
    the solution of ``S dS + dS S = dA``; the denominators are floored at ``eps * max(s)`` so a
    singular ``a`` gives a large finite gradient instead of inf.
    """
    vals, vecs = _eigh(a)
    s = jnp.sqrt(jnp.maximum(vals, 0.0))
    return (vecs * s[..., None, :]) @ jnp.swapaxes(vecs, -1, -2)


@sqrtm_psd.defjvp
def _sqrtm_psd_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    vals, vecs = _eigh(a)
    s = jnp.sqrt(jnp.maximum(vals, 0.0))
    vt = jnp.swapaxes(vecs, -1, -2)
    out = (vecs * s[..., None, :]) @ vt
    sym = (da + jnp.swapaxes(da, -1, -2)) / 2
    denom = s[..., :, None] + s[..., None, :]
    floor = jnp.finfo(a.dtype).eps * jnp.max(s, axis=-1, keepdims=True)[..., None]
    dt = (vt @ sym @ vecs) / jnp.maximum(denom, jnp.maximum(floor, jnp.finfo(a.dtype).tiny))
    return out, vecs @ dt @ vt


@jax.custom_jvp
def nuclear_norm(a: jax.Array) -> jax.Array:
    """``||a||_* = sum_i sigma_i(a)``, the sum of singular values of f32[..., C, C] -> f32[...].

    Derivative ``tr(U^T da V)`` (``a = U diag(sigma) V^T``): no ``1 / (sigma_i^2 - sigma_j^2)``
    terms, so near-equal singular values are harmless.
    """
    return jnp.sum(_singular_values(a), axis=-1)


@nuclear_norm.defjvp
def _nuclear_norm_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    u, s, vh = _svd(a)
    return jnp.sum(s, axis=-1), jnp.sum(u * (da @ jnp.swapaxes(vh, -1, -2)), axis=(-2, -1))


# ----------------------------------------------------------------------------- distances

def covariance(stats: Moments, eps: float = W2_EPS) -> jax.Array:
    """``E[a a^T] - mu mu^T + eps I``: f32[..., C, C]."""
    c = stats.mean.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(c, dtype=stats.second.dtype), stats.second.shape)
    return stats.second - stats.mean[..., :, None] * stats.mean[..., None, :] + eps * eye


def w2_target(stats: Moments, eps: float = W2_EPS) -> W2Target:
    """A style's W2 target from its statistics (its covariance square root computed once)."""
    cov = covariance(stats, eps)
    return W2Target(stats.mean, cov, sqrtm_psd(cov))


def w2_distance(stats: Moments, target: W2Target, eps: float = W2_EPS) -> jax.Array:
    """``mean_c (mu_G - mu_S)^2 + tr(S_S + S_G - 2 (S_S^1/2 S_G S_S^1/2)^1/2) / C``: a scalar per layer.

    The cross term is computed as ``||S_G^1/2 S_S^1/2||_*`` (the singular values of that product
    are the square roots of the eigenvalues of ``S_S^1/2 S_G S_S^1/2``): the eigenvalues of the
    product span the square of the covariances' range, and float32 loses the small ones (a 3e-3
    relative error of W2 at conv4_1 of VGG16 against 2e-5 this way, at 48 px).
    """
    c = stats.mean.shape[-1]
    cov = covariance(stats, eps)
    mean_term = jnp.mean(jnp.square(stats.mean - target.mean), axis=-1)
    cross = nuclear_norm(sqrtm_psd(cov) @ target.cov_sqrt)
    trace = jnp.trace(target.cov + cov, axis1=-2, axis2=-1) - 2.0 * cross
    return mean_term + trace / c


def gram_distance(stats: Moments, target_second: jax.Array) -> jax.Array:
    """``||E_G[a a^T] - E_S[a a^T]||_F^2 / C^2``: the Gatys layer loss on normalised Grams."""
    c = stats.second.shape[-1]
    return jnp.sum(jnp.square(stats.second - target_second), axis=(-2, -1)) / c**2
