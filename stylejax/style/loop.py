"""The optimisation loop: one compiled call runs K steps, keeps the best iterate on device.

One call of :func:`steps` takes the loop state (image, optimiser state, best-so-far image, its
loss and terms), runs ``k`` value-and-gradient-and-update steps and returns the new state and
the ``k`` objective values. The state is donated, so the image, the optimiser's buffers (the
L-BFGS history) and the best image are updated in place. The loss weights and the learning rate
are traced (:class:`Hyper`): changing them compiles nothing new. A batch of images is
``vmap``-ed through the call, each with its own optimiser state.

Per call the host reads only the ``k`` objective values (for progress and to stop on a
non-finite objective). ``k = 1`` with a Python loop is the default: on XLA:CPU a rolled
``fori_loop`` of conv steps is about 3x slower (jax-ml/jax#12868) and unrolling K steps makes
the compile K times longer for no measured gain; ``steps_per_call`` (unrolled) is there for
backends where the dispatch gap matters.

With iterate averaging (``ema``) the state also holds a bias-corrected exponential average of
the iterates (:mod:`stylejax.iterates`), updated on device after every step with a traced decay;
:func:`settle` then makes the average the scale's result and evaluates it once.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from stylejax.iterates import EMAState, ema_init, ema_update, ema_value
from stylejax.style.lbfgs import lbfgs
from stylejax.style import tiling
from stylejax.style.objective import LossWeights, Spec, Targets, loss_terms
from stylejax.weights import Weights


class Hyper(NamedTuple):
    """The traced hyper-parameters of a step: the loss weights and the learning rate f32[]."""

    weights: LossWeights
    lr: jax.Array


class LoopState(NamedTuple):
    """Per image (batched on axis 0): ``x`` f32[B, H, W, c], the optimiser state, the best
    iterate evaluated so far ``best_x``, its objective ``best_loss`` f32[B] and ``best_terms``;
    ``average``: the iterates' average (:class:`stylejax.iterates.EMAState`) or None.

    For a batch of one the optimiser state has no batch axis: XLA then updates its buffers
    (the L-BFGS history) in place, where slicing a batch axis off and putting it back made it
    copy them every step (measured: 134 ms against 4 ms per L-BFGS update at 256x192 px).
    """

    x: jax.Array
    opt_state: optax.OptState
    best_x: jax.Array
    best_loss: jax.Array
    best_terms: dict
    average: EMAState | None = None


@functools.lru_cache(maxsize=None)
def direction(name: str, lbfgs_memory: int = 100) -> optax.GradientTransformation:
    """The named optimiser's update for a learning rate of 1 (the step multiplies by ``lr``).

    ``lbfgs`` (:mod:`stylejax.style.lbfgs`), ``adam`` (optax), ``gd``: plain gradient descent
    ``G <- G - lr grad J``. Cached, so a run with the same optimiser reuses its compiled step.
    """
    if name == "lbfgs":
        return lbfgs(1.0, lbfgs_memory)
    if name == "adam":
        return optax.chain(optax.scale_by_adam(), optax.scale(-1.0))
    if name == "gd":
        return optax.scale(-1.0)
    raise ValueError(f"unknown optimizer {name!r}")


def fresh_opt_state(tx: optax.GradientTransformation, x: jax.Array) -> optax.OptState:
    """``tx.init`` for a batch x f32[B, ...] (without a batch axis for B = 1, see :class:`LoopState`)."""
    return tx.init(x[0]) if x.shape[0] == 1 else jax.vmap(tx.init)(x)


def init_state(tx: optax.GradientTransformation, x: jax.Array, terms_like: dict, ema: float | None = None,
               opt_state: optax.OptState | None = None) -> LoopState:
    """Loop state for a batch ``x`` f32[B, ...]; ``terms_like`` names the objective's terms.

    ``ema``: the decay of an iterate average started at ``x`` (None: no average);
    ``opt_state``: the optimiser state to start from (None: ``tx.init``).
    """
    batch = x.shape[0]
    average = None if ema is None else jax.vmap(lambda xi: ema_init(xi, ema))(x)
    fresh = fresh_opt_state(tx, x) if opt_state is None else None
    state = LoopState(x, opt_state if fresh is None else fresh, x, jnp.full((batch,), jnp.inf, jnp.float32),
                      {name: jnp.zeros((batch,), jnp.float32) for name in terms_like}, average)
    # every leaf its own buffer: the state is donated, and a buffer may be donated only once. So
    # copy the caller's arrays (x, a given opt_state) and repeats, and no more: a copy of the
    # whole L-BFGS history would double its memory at the start of every scale
    own = {id(leaf) for leaf in jax.tree.leaves(fresh)} - {id(x)}
    seen: set[int] = set()

    def unique(a):
        copy = id(a) in seen or id(a) not in own
        seen.add(id(a))
        return jnp.array(a, copy=True) if copy else a

    return jax.tree.map(unique, state)


def _keep_better(loss, terms, x, best_x, best_loss, best_terms):
    better = loss < best_loss  # False for NaN: a diverged iterate never becomes the best
    return (jnp.where(better, x, best_x), jnp.where(better, loss, best_loss),
            jax.tree.map(lambda new, old: jnp.where(better, new, old), terms, best_terms))


def _per_image(fn, batched_args, shared_args, whole=()):
    """Run ``fn(*shared, *batched)`` per image: vmap over axis 0, or directly for a batch of one
    (measured 9 % faster on XLA:CPU than a vmap of one). For a batch of one, the batched
    arguments at the positions ``whole`` and ``fn``'s outputs at the same positions of its
    first output have no batch axis (the optimiser state, see :class:`LoopState`)."""
    if batched_args[0].shape[0] != 1:
        return jax.vmap(lambda *b: fn(*shared_args, *b))(*batched_args)
    args = [a if i in whole else jax.tree.map(lambda v: v[0], a) for i, a in enumerate(batched_args)]
    out = fn(*shared_args, *args)
    if not whole:
        return jax.tree.map(lambda v: v[None], out)
    first = [f if i in whole else jax.tree.map(lambda v: v[None], f) for i, f in enumerate(out[0])]
    return (type(out[0])(*first), *(jax.tree.map(lambda v: v[None], o) for o in out[1:]))


def objective_terms(weights: Weights, spec: Spec, lw: LossWeights, x: jax.Array, targets: Targets,
                    grid: tiling.Grid | None = None) -> tuple[jax.Array, dict]:
    """``(J, terms)`` of one image: whole, or over the tiles of ``grid`` (:mod:`stylejax.style.tiling`)."""
    if grid is None:
        return loss_terms(weights, spec, lw, x, targets)
    return tiling.loss_terms(weights, spec, lw, x, targets, grid)


def objective_value_and_grad(weights: Weights, spec: Spec, lw: LossWeights, x: jax.Array, targets: Targets,
                             grid: tiling.Grid | None = None):
    """``((J, terms), dJ/dx)`` of one image: whole, or over the tiles of ``grid``."""
    if grid is None:
        return jax.value_and_grad(lambda v: loss_terms(weights, spec, lw, v, targets), has_aux=True)(x)
    return tiling.value_and_grad(weights, spec, lw, x, targets, grid)


@functools.partial(jax.jit, static_argnames=("spec", "tx", "k", "unroll", "grid"), donate_argnames=("state",))
def steps(weights: Weights, hyper: Hyper, state: LoopState, targets: Targets, *, spec: Spec,
          tx: optax.GradientTransformation, k: int = 1, unroll: bool = True, grid: tiling.Grid | None = None
          ) -> tuple[LoopState, jax.Array]:
    """``k`` optimisation steps; returns the new state and J f32[B, k] at each evaluated iterate.

    ``grid``: evaluate J and its gradient over tiles (exact; memory set by the tile)."""

    def one(weights, hyper, x, opt_state, best_x, best_loss, best_terms, average, t):
        def body(i, carry):
            x, opt_state, best_x, best_loss, best_terms, average, history = carry
            (loss, terms), grad = objective_value_and_grad(weights, spec, hyper.weights, x, t, grid)
            with jax.numpy_dtype_promotion("standard"):  # optax's Adam raises 0.9 to an int32 count
                updates, opt_state = tx.update(grad, opt_state, x)
            best_x, best_loss, best_terms = _keep_better(loss, terms, x, best_x, best_loss, best_terms)
            x = optax.apply_updates(x, jax.tree.map(lambda u: hyper.lr * u, updates))
            average = None if average is None else ema_update(average, x)
            return x, opt_state, best_x, best_loss, best_terms, average, history.at[i].set(loss)

        carry = (x, opt_state, best_x, best_loss, best_terms, average, jnp.zeros((k,), jnp.float32))
        carry = body(0, carry) if k == 1 else jax.lax.fori_loop(0, k, body, carry, unroll=unroll)
        return LoopState(*carry[:6]), carry[6]

    return _per_image(one, (state.x, state.opt_state, state.best_x, state.best_loss, state.best_terms,
                            state.average, targets), (weights, hyper), whole=(1,))


@functools.partial(jax.jit, static_argnames=("spec", "grid"), donate_argnames=("state",))
def settle(weights: Weights, lw: LossWeights, state: LoopState, targets: Targets, *, spec: Spec,
           grid: tiling.Grid | None = None) -> LoopState:
    """Evaluate the final iterate (never evaluated by :func:`steps`) and keep it if it is best.

    With an iterate average the result is the average instead: it is evaluated (once) and
    becomes ``best_x``, ``best_loss`` and ``best_terms`` whatever its objective.
    """

    def one(weights, lw, x, best_x, best_loss, best_terms, average, t):
        if average is not None:
            mean = ema_value(average)
            loss, terms = objective_terms(weights, spec, lw, mean, t, grid)
            return mean, loss, terms
        loss, terms = objective_terms(weights, spec, lw, x, t, grid)
        return _keep_better(loss, terms, x, best_x, best_loss, best_terms)

    best = _per_image(one, (state.x, state.best_x, state.best_loss, state.best_terms, state.average, targets),
                      (weights, lw))
    return state._replace(best_x=best[0], best_loss=best[1], best_terms=best[2])


def current(state: LoopState) -> jax.Array:
    """The run's result so far f32[B, H, W, c]: the iterate average, or the best evaluated iterate."""
    return state.best_x if state.average is None else jax.vmap(ema_value)(state.average)


@functools.partial(jax.jit, static_argnames=("spec", "grid"))
def evaluate(weights: Weights, lw: LossWeights, x: jax.Array, targets: Targets, *, spec: Spec,
             grid: tiling.Grid | None = None) -> dict:
    """The objective's terms for a batch x f32[B, H, W, c] (targets batched on axis 0)."""
    return _per_image(lambda w, l, xi, ti: objective_terms(w, spec, l, xi, ti, grid)[1], (x, targets), (weights, lw))


__all__ = ["Hyper", "LoopState", "current", "direction", "evaluate", "fresh_opt_state", "init_state",
           "objective_terms", "objective_value_and_grad", "settle", "steps"]
