"""What happens to the iterate between steps and between scales (crowsonkb/style-transfer-pytorch's scheme).

* :func:`ema_init` / :func:`ema_update` / :func:`ema_value`: a bias-corrected exponential moving
  average of the iterates (as Adam's moments, Kingma & Ba): after iterates ``x_0 .. x_n``,
  ``value = sum_i d^(n-i) (1 - d) x_i / (1 - d^(n+1))``, a weighted mean (weights sum to 1), so
  ``x_0`` alone gives ``x_0``. Built on ``optax.ema(decay, debias=True)``.
* :func:`sqrt2_scales`: sizes growing by sqrt(2) from a minimum up to the output size.
* :func:`resize_adam_state`: carry Adam's moments to the next scale's image shape (first moment
  bicubic, second bilinear and clipped at 0), as crowsonkb's ``scale_adam``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


def _optax_promotion():
    """optax raises float decays to int32 counts: trace its calls under standard promotion, so
    these functions also work where a caller enables ``jax_numpy_dtype_promotion="strict"``."""
    return jax.numpy_dtype_promotion("standard")


class EMAState(NamedTuple):
    """The average's state: optax's ``EmaState`` (count, un-debiased ema) and the decay."""

    inner: optax.EmaState
    decay: jax.Array


def ema_init(x: jax.Array, decay) -> EMAState:
    """Start an average at the first iterate ``x`` (so :func:`ema_value` returns ``x``)."""
    decay = jnp.asarray(decay, jnp.float32)
    with _optax_promotion():
        state = EMAState(optax.ema(decay, debias=True).init(x), decay)
    return ema_update(state, x)


def ema_update(state: EMAState, x: jax.Array) -> EMAState:
    """Add iterate ``x``: ``ema <- d ema + (1 - d) x``, ``count <- count + 1``."""
    with _optax_promotion():
        _, inner = optax.ema(state.decay, debias=True).update(x, state.inner)
    return EMAState(inner, state.decay)


def ema_value(state: EMAState) -> jax.Array:
    """The bias-corrected average ``ema / (1 - d^count)``."""
    with _optax_promotion():
        return optax.tree.bias_correction(state.inner.ema, state.decay, state.inner.count)


def sqrt2_scales(minimum: int, end: int) -> tuple[int, ...]:
    """``end, round(end / 2^(1/2)), round(end / 2), ...`` down to ``minimum``, ascending, no repeats.

    crowsonkb's ``gen_scales``: ``sqrt2_scales(128, 512) == (128, 181, 256, 362, 512)``. A
    ``minimum`` above ``end`` gives ``(end,)``.
    """
    minimum = min(int(minimum), int(end))
    out, i, scale = set(), 0, int(end)
    while scale >= minimum:
        out.add(scale)
        i += 1
        scale = round(end / 2 ** (i / 2))
    return tuple(sorted(out))


def resize_adam_state(state, height: int, width: int):
    """Every ``optax.ScaleByAdamState`` in ``state`` with ``mu``/``nu`` f32[..., h, w, C] resized.

    ``mu`` (first moment) is resized bicubically, ``nu`` (second moment) bilinearly and clipped at
    0, both as PyTorch's ``interpolate`` (half-pixel centres, no antialiasing; bicubic with
    A = -0.75 and edge replication); the step count is kept, so the bias correction goes on
    from where it was.
    """
    def fix(node):
        if not isinstance(node, optax.ScaleByAdamState):
            return node

        def shape(a):
            return (*a.shape[:-3], height, width, a.shape[-1])

        mu = jax.tree.map(lambda a: jax.image.resize(a, shape(a), "cubic-pytorch", antialias=False), node.mu)
        nu = jax.tree.map(lambda a: jnp.maximum(jax.image.resize(a, shape(a), "linear", antialias=False), 0.0),
                          node.nu)
        return node._replace(mu=mu, nu=nu)

    return jax.tree.map(fix, state, is_leaf=lambda n: isinstance(n, optax.ScaleByAdamState))


def carry_adam(old_state, new_state):
    """``new_state`` (a fresh optimiser state at the next scale's shape) with every Adam moment
    taken from ``old_state``, resized to the new shape by :func:`resize_adam_state`."""
    def pick(new, old):
        if not isinstance(new, optax.ScaleByAdamState):
            return new
        h, w = jax.tree.leaves(new.mu)[0].shape[-3:-1]
        return resize_adam_state(old, h, w)

    return jax.tree.map(pick, new_state, old_state, is_leaf=lambda n: isinstance(n, optax.ScaleByAdamState))


class AveragedState(NamedTuple):
    """State of :func:`averaged`: the inner optimiser's and the iterate average's."""

    inner: optax.OptState
    average: EMAState


def averaged(inner: optax.GradientTransformation, decay: float | None = None,
             box: tuple[float, float] | None = None) -> optax.GradientTransformation:
    """``inner``, then (optionally) the new iterate clipped to ``box = (lo, hi)``, then (optionally)
    the iterate added to a bias-corrected average with ``decay`` (read it with :func:`average_of`).

    The average is the iterate after each update, and starts at the first iterate, as crowsonkb's
    ``EMA`` (created from the image, updated after every step). Without ``decay`` and ``box`` this
    is ``inner`` itself.
    """
    if decay is None and box is None:
        return inner

    def init(params):
        return AveragedState(inner.init(params), ema_init(params, 0.0 if decay is None else decay))

    def update(updates, state, params=None):
        with _optax_promotion():
            updates, inner_state = inner.update(updates, state.inner, params)
        new = optax.apply_updates(params, updates)
        if box is not None:
            new = jax.tree.map(lambda v: jnp.clip(v, box[0], box[1]), new)
            updates = jax.tree.map(lambda n, p: n - p, new, params)
        return updates, AveragedState(inner_state, ema_update(state.average, new))

    return optax.GradientTransformation(init, update)


def average_of(state) -> jax.Array | None:
    """The iterate average held in an :func:`averaged` state (None if the state holds none)."""
    return ema_value(state.average) if isinstance(state, AveragedState) else None
