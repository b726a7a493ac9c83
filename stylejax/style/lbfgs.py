"""L-BFGS as an optax ``GradientTransformation``, step for step like ``torch.optim.LBFGS``
without a line search (and so like jcjohnson/neural-style's ``optim.lbfgs``).

Per step, with gradient ``g_k`` and the previous step ``s_{k-1} = t d_{k-1}``:

* ``y = g_k - g_{k-1}``; when ``y.s > 1e-10`` the pair ``(s, y)`` enters a ring buffer of
  ``memory_size`` pairs (the oldest leaves) and ``H0 = y.s / y.y``;
* ``d_k = -H g_k`` by the two-loop recursion (Nocedal & Wright, Algorithm 7.4) over the
  pairs held, newest first; ``d_0 = -g_0``;
* the step is ``t d_k`` with ``t = lr``, and ``t = min(1, 1/|g_k|_1) lr`` while no pair is
  held: for the first step, as PyTorch does, and also after a first step whose pair failed the
  curvature test. There PyTorch steps by ``-g`` unscaled; at the Gram objective's scale
  (``|g|`` ~ 1e6 per pixel near the content) that threw a 64 px image to ``J`` ~ 1e28.

Why not ``optax.lbfgs``: its recursion is a ``lax.scan`` over all ``memory_size`` slots from
the first step on (empty ones masked), so with the classic 100 pairs every step reads and
writes 200 image-sized vectors whatever the history holds. Here the two loops run over the
pairs actually held (a ``fori_loop`` with a traced trip count), so step k touches
``min(k, memory_size)`` pairs, as PyTorch does. The buffers are updated in place when the
optimiser state is donated to the jitted step.

The parameters must be one array (the image); the learning rate may be traced
(``optax.inject_hyperparams``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

#: torch.optim.LBFGS's curvature threshold for keeping a pair.
CURVATURE_EPS = 1e-10


class LBFGSState(NamedTuple):
    """count i32[]; held i32[] (pairs pushed so far); prev_grad, prev_step f32[...] like the
    parameters; s, y f32[m, ...] the ring buffers; rho f32[m] = 1 / (y.s); h0 f32[] the
    initial inverse-Hessian scale."""

    count: jax.Array
    held: jax.Array
    prev_grad: jax.Array
    prev_step: jax.Array
    s: jax.Array
    y: jax.Array
    rho: jax.Array
    h0: jax.Array


def _vdot(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.vdot(a, b, precision=jax.lax.Precision.HIGHEST)


def lbfgs(learning_rate: float = 1.0, memory_size: int = 100) -> optax.GradientTransformation:
    """L-BFGS without line search; ``updates`` are the steps to add (``optax.apply_updates``)."""
    if memory_size < 1:
        raise ValueError(f"memory_size must be >= 1, got {memory_size}")
    m = int(memory_size)

    def init(params: jax.Array) -> LBFGSState:
        z = jnp.zeros_like(params)
        return LBFGSState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), z, z,
                          jnp.zeros((m, *params.shape), params.dtype), jnp.zeros((m, *params.shape), params.dtype),
                          jnp.zeros((m,), jnp.float32), jnp.ones((), jnp.float32))

    def update(grad: jax.Array, state: LBFGSState, params=None):
        del params
        y = grad - state.prev_grad
        s = state.prev_step
        ys = _vdot(y, s)
        push = (state.count > 0) & (ys > CURVATURE_EPS)
        slot = state.held % m
        new_s = jnp.where(push, s, state.s[slot])
        new_y = jnp.where(push, y, state.y[slot])
        sbuf = jax.lax.dynamic_update_index_in_dim(state.s, new_s, slot, 0)
        ybuf = jax.lax.dynamic_update_index_in_dim(state.y, new_y, slot, 0)
        rho = state.rho.at[slot].set(jnp.where(push, 1.0 / jnp.where(push, ys, 1.0), state.rho[slot]))
        held = state.held + push.astype(jnp.int32)
        h0 = jnp.where(push, ys / jnp.where(push, _vdot(y, y), 1.0), state.h0)
        k = jnp.minimum(held, m)

        def newest(j):  # slot of the j-th newest pair
            return (held - 1 - j) % m

        def first(j, carry):
            q, alphas = carry
            i = newest(j)
            alpha = rho[i] * _vdot(sbuf[i], q)
            return q - alpha * ybuf[i], alphas.at[j].set(alpha)

        q, alphas = jax.lax.fori_loop(0, k, first, (-grad, jnp.zeros((m,), jnp.float32)))

        def second(jj, r):
            j = k - 1 - jj  # oldest first
            i = newest(j)
            beta = rho[i] * _vdot(ybuf[i], r)
            return r + (alphas[j] - beta) * sbuf[i]

        direction = jax.lax.fori_loop(0, k, second, q * h0)
        first_scale = jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(grad)))
        t = jnp.asarray(learning_rate, jnp.float32) * jnp.where(k == 0, first_scale, 1.0)
        step = (t * direction).astype(grad.dtype)
        return step, LBFGSState(state.count + 1, held, grad, step, sbuf, ybuf, rho, h0)

    return optax.GradientTransformation(init, update)


__all__ = ["LBFGSState", "lbfgs"]
