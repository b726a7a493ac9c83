"""Activation maximisation: synthesise images that excite a unit (Lucid / Lucent style).

For each unit, an FFT-parameterised, colour-decorrelated image (:mod:`.param`) is optimised by
Adam on ``-objective(features(transform(image)))``, with Lucid's standard random transforms drawn
from ``fold_in(key_unit, step)``. Objectives (larger is better), on the layer's activation
``A: f32[B, h, w, C]`` of a batch of ``B`` images for one unit ``u``:

* ``channel``:   mean of ``A[b, :, :, u]`` (Lucid ``objectives.channel``), averaged over ``b``;
* ``neuron``:    ``A[b, h // 2, w // 2, u]`` (Lucid ``objectives.neuron``: the centre position);
* ``diversity``: ``channel - diversity_weight * D`` with Lucid's ``D = sum_{i != j} <G_i, G_j> / B``,
  the mean pairwise cosine similarity of the batch's Gram matrices ``G_b = A_b^T A_b`` (B >= 2).

Redirected ReLU (Lucid's ``redirected_relu_grad``): while ``step <= 16``, a batch entry whose
gradient is blocked by a ReLU everywhere gets the gradient back wherever it pushes the input up.

Every unit's whole optimisation is vmapped; a chunk of steps for all units is ONE compiled call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stylejax.activations import feature_shapes, features
from stylejax.errors import StylejaxError
from stylejax.interpret import param
from stylejax.interpret.projection import layer_info
from stylejax.models.layers import Layer
from stylejax.weights import Weights

Objective = Literal["channel", "neuron", "diversity"]
OBJECTIVES: tuple[str, ...] = ("channel", "neuron", "diversity")
#: Lucid overrides the ReLU gradient while ``global_step <= 16``.
REDIRECT_STEPS = 16
#: ``fold_in`` data for a unit's initial noise (steps use 0, 1, 2, ...).
INIT_SALT = 2**31 - 1


@dataclass(frozen=True)
class Settings:
    """What to optimise and how; defaults are Lucid's ``render_vis`` defaults.

    steps: Adam steps (512); lr: Adam learning rate (0.05); size: image side in pixels (128);
    batch: images per unit (1; >= 2 for ``diversity``); diversity_weight: Lucid's 1e2;
    sd: initial spectrum std (0.01); decay_power: spectrum ``1/f`` exponent (1);
    transforms: apply the standard random transforms; redirected_relu: Lucid's ReLU override.
    """

    layer: str
    objective: Objective = "channel"
    steps: int = 512
    lr: float = 0.05
    size: int = 128
    batch: int = 1
    diversity_weight: float = 100.0
    sd: float = 0.01
    decay_power: float = 1.0
    transforms: bool = True
    redirected_relu: bool = False


@dataclass(frozen=True)
class Result:
    """images: u8[U, B, size, size, 3]; objective_initial / objective_final: f32[U] on the
    untransformed images (channel or neuron value, batch mean); history: f32[U, steps] the
    optimised objective at each step (under transforms); diversity: f32[U] final mean pairwise
    Gram cosine similarity (0 when B == 1); first_call_seconds: the first compiled call
    (XLA compile, unless cached, plus its steps); seconds: wall time of the other timed_steps."""

    units: tuple[int, ...]
    images: np.ndarray
    objective_initial: np.ndarray
    objective_final: np.ndarray
    history: np.ndarray
    diversity: np.ndarray
    seconds: float
    timed_steps: int
    first_call_seconds: float

    @property
    def seconds_per_step(self) -> float:
        """Steady-state wall time of one step for all units together (nan if not measured)."""
        return self.seconds / self.timed_steps if self.timed_steps else float("nan")


# ----------------------------------------------------------------------------- redirected ReLU
@jax.custom_vjp
def redirected_relu(x: jax.Array, on: jax.Array) -> jax.Array:
    """ReLU of x f32[B, ...]; while ``on`` (f32 scalar, 1 = on), Lucid's redirected gradient.

    Backward (cotangent ``g`` of a loss that is minimised): the usual ``g * (x >= 0)``, unless it
    is zero for a whole batch entry; then ``g`` except where ``x < 0 and g > 0`` (where descent
    would push an already negative input lower).
    """
    return jax.nn.relu(x)


def _redirected_fwd(x, on):
    return jax.nn.relu(x), (x, on)


def _redirected_bwd(res, g):
    x, on = res
    relu_grad = jnp.where(x < 0, 0.0, g)
    redirected = jnp.where((x < 0) & (g > 0), 0.0, g)
    axes = tuple(range(1, x.ndim))
    blocked = jnp.sqrt(jnp.sum(relu_grad ** 2, axis=axes, keepdims=True)) == 0
    chosen = jnp.where(blocked & (on > 0), redirected, relu_grad)
    return chosen, jnp.zeros_like(on)


redirected_relu.defvjp(_redirected_fwd, _redirected_bwd)


# ----------------------------------------------------------------------------- objectives
def gram_similarity(acts: jax.Array) -> jax.Array:
    """Lucid's diversity penalty: ``sum_{i != j} <G_i/|G_i|, G_j/|G_j|> / B`` for f32[B, h, w, C]."""
    b, c = acts.shape[0], acts.shape[-1]
    flat = acts.reshape(b, -1, c)
    grams = jnp.einsum("bpc,bpd->bcd", flat, flat)
    norms = jnp.sqrt(jnp.sum(grams ** 2, axis=(1, 2), keepdims=True))
    grams = grams / jnp.maximum(norms, 1e-10)
    pair = jnp.einsum("icd,jcd->ij", grams, grams)
    return (jnp.sum(pair) - jnp.trace(pair)) / b


def unit_value(acts: jax.Array, unit: jax.Array, objective: str) -> jax.Array:
    """f32[B]: per-image channel mean or centre neuron of ``unit`` in ``acts`` f32[B, h, w, C]."""
    chan = jnp.take(acts, unit, axis=-1)  # [B, h, w]
    if objective == "neuron":
        return chan[:, chan.shape[1] // 2, chan.shape[2] // 2]
    return jnp.mean(chan, axis=(1, 2))


def objective_value(acts: jax.Array, unit: jax.Array, objective: str,
                    diversity_weight: float) -> jax.Array:
    """The scalar that is maximised for one unit given its batch's activations f32[B, h, w, C]."""
    value = jnp.mean(unit_value(acts, unit, objective))
    if objective == "diversity":
        value = value - diversity_weight * gram_similarity(acts)
    return value


# ----------------------------------------------------------------------------- one unit's steps
def _activations(w: Weights, images, *, layer, relu):
    """f32[B, h, w, C] at ``layer`` for images f32[B, S, S, 3] in [0, 1]."""
    return features(w, 255.0 * images, layer, relu=relu)[layer]


def _step(w: Weights, spectrum, opt_state, unit, key, i, redirect_until, *, s: Settings):
    """One Adam step for one unit: returns (spectrum, opt_state, objective under transforms).

    ReLU gradients are redirected while ``i <= redirect_until`` (int scalar; -1 = never), so one
    compiled step serves both settings of ``--redirected-relu``.
    """
    size = s.size
    step_key = jax.random.fold_in(key, i)

    def loss(spec):
        images = param.fft_to_rgb(spec, size, size, s.decay_power)
        if s.transforms:
            keys = jax.vmap(lambda b: jax.random.fold_in(step_key, b))(jnp.arange(s.batch))
            images = jax.vmap(param.random_transform)(keys, images)
        on = (i <= redirect_until).astype(jnp.float32)
        relu = lambda x: redirected_relu(x, on)
        acts = _activations(w, images, layer=s.layer, relu=relu)
        value = objective_value(acts, unit, s.objective, s.diversity_weight)
        return -value

    neg, grad = jax.value_and_grad(loss)(spectrum)
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam raises 0.9 to an int32 count
        updates, opt_state = optax.adam(s.lr).update(grad, opt_state, spectrum)
    return optax.apply_updates(spectrum, updates), opt_state, -neg


def _init(key, *, s: Settings):
    """Initial spectrum and Adam state of one unit; noise from ``fold_in(key, INIT_SALT)``."""
    spectrum = param.fft_init(jax.random.fold_in(key, INIT_SALT), s.batch, s.size, s.size, s.sd)
    return spectrum, optax.adam(s.lr).init(spectrum)


@partial(jax.jit, static_argnames=("s", "n", "loop"))
def _run_chunk(w: Weights, spectra, opt_states, units, keys, start, redirect_until, *, s: Settings, n: int,
               loop: str):
    """``n`` steps for every unit (vmapped): f32 spectra[U, ...] -> (spectra, states, values[U, n])."""

    def one_unit(spectrum, opt_state, unit, key):
        step = partial(_step, w, s=s)

        def body(carry, i):
            spec, st = carry
            spec, st, value = step(spec, st, unit, key, start + i, redirect_until)
            return (spec, st), value

        if loop == "scan":
            (spectrum, opt_state), values = jax.lax.scan(body, (spectrum, opt_state), jnp.arange(n))
        else:  # unrolled inside the compiled call
            values = []
            for i in range(n):
                (spectrum, opt_state), value = body((spectrum, opt_state), i)
                values.append(value)
            values = jnp.stack(values)
        return spectrum, opt_state, values

    return jax.vmap(one_unit)(spectra, opt_states, units, keys)


@partial(jax.jit, static_argnames=("s",))
def _evaluate(w: Weights, spectra, units, *, s: Settings):
    """Untransformed images u8-ready f32[U, B, S, S, 3] in [0, 1], unit values f32[U], diversity f32[U]."""

    def one(spectrum, unit):
        images = param.fft_to_rgb(spectrum, s.size, s.size, s.decay_power)
        acts = _activations(w, images, layer=s.layer, relu=jax.nn.relu)
        div = gram_similarity(acts) if s.batch > 1 else jnp.zeros(())
        return images, jnp.mean(unit_value(acts, unit, s.objective)), div

    return jax.vmap(one)(spectra, units)


# ----------------------------------------------------------------------------- public API
def check_settings(w: Weights, s: Settings, units: Sequence[int]) -> Layer:
    """Validate everything before any work; errors are one line."""
    info = layer_info(w.arch, s.layer)
    if s.objective not in OBJECTIVES:
        raise StylejaxError(f"unknown objective {s.objective!r}; use one of {', '.join(OBJECTIVES)}")
    if not units:
        raise StylejaxError("no unit requested")
    for unit in units:
        if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= unit < info.channels:
            raise StylejaxError(f"unit {unit} out of range for {s.layer} "
                                f"({info.channels} channels: 0..{info.channels - 1})")
    if not isinstance(s.steps, (int, np.integer)) or s.steps < 1:
        raise StylejaxError(f"steps must be a positive integer, got {s.steps!r}")
    if s.batch < 1:
        raise StylejaxError(f"batch must be a positive integer, got {s.batch!r}")
    if s.objective == "diversity" and s.batch < 2:
        raise StylejaxError("the diversity objective needs a batch of at least 2 images")
    for name in ("lr", "sd"):
        value = getattr(s, name)
        if not np.isfinite(value) or value <= 0:
            raise StylejaxError(f"{name} must be a finite number > 0, got {value!r}")
    for name in ("diversity_weight", "decay_power"):
        value = getattr(s, name)
        if not np.isfinite(value) or value < 0:
            raise StylejaxError(f"{name} must be a finite number >= 0, got {value!r}")
    if s.size < param.MIN_SIZE:
        raise StylejaxError(f"size {s.size} is too small for the transforms; use >= {param.MIN_SIZE}")
    # the objective is reported on the untransformed image (the transforms' canvas is larger)
    out = feature_shapes(w, (s.size, s.size), s.layer)[s.layer]
    if min(out[:2]) < 1:
        raise StylejaxError(f"size {s.size} is too small for {s.layer}: its map would be empty")
    return info


def visualize(w: Weights, units: Sequence[int], s: Settings, seed: int = 0, *, chunk: int = 1,
              loop: str = "unrolled", progress: Callable[[int], None] | None = None) -> Result:
    """Optimise one image batch per unit of ``s.layer``, all units in one vmapped compiled call.

    Args:
      w: weight set (a VGG-style chain).
      units: channel indices of ``s.layer``.
      s: the :class:`Settings`.
      seed: the run's PRNG seed; unit ``u`` uses ``fold_in(key(seed), u)`` (so results do not
        depend on which other units are run alongside) and step ``t`` uses ``fold_in(., t)``.
      chunk: steps per compiled call (the host only sees the loop between chunks).
      loop: ``unrolled`` (steps of a chunk unrolled in the compiled call) or ``scan``.
      progress: called with the number of steps just done after each chunk.
    """
    units = [int(u) for u in units]
    check_settings(w, s, units)
    if chunk < 1:
        raise StylejaxError(f"chunk must be >= 1, got {chunk}")
    root = jax.random.key(seed)
    keys = jax.vmap(lambda u: jax.random.fold_in(root, u))(jnp.asarray(units))
    units_arr = jnp.asarray(units, jnp.int32)
    spectra, opt_states = jax.vmap(partial(_init, s=s))(keys)
    # Only what shapes the computation is static: steps and the redirect switch are not.
    kw = {"s": replace(s, steps=1, redirected_relu=False)}
    redirect_until = jnp.int32(REDIRECT_STEPS if s.redirected_relu else -1)
    _, initial, _ = _evaluate(w, spectra, units_arr, **kw)

    first_call_seconds, done, history = 0.0, 0, []
    t0 = time.perf_counter()
    while done < s.steps:
        n = min(chunk, s.steps - done)
        spectra, opt_states, values = _run_chunk(w, spectra, opt_states, units_arr, keys,
                                                 jnp.int32(done), redirect_until, n=n, loop=loop, **kw)
        if not history:  # the first call compiles (or hits jit's cache): timed apart
            values.block_until_ready()
            first_call_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
        else:  # keep one chunk in flight: wait for the previous one, not this one
            history[-1].block_until_ready()
        if progress is not None and history:
            progress(history[-1].shape[1])
        history.append(values)
        done += n
    history[-1].block_until_ready()
    if progress is not None:
        progress(history[-1].shape[1])
    timed_steps = s.steps - history[0].shape[1]
    seconds = time.perf_counter() - t0
    images, final, div = _evaluate(w, spectra, units_arr, **kw)
    return Result(units=tuple(units), images=np.asarray(jnp.round(images * 255)).astype(np.uint8),
                  objective_initial=np.asarray(initial), objective_final=np.asarray(final),
                  history=np.concatenate([np.asarray(h) for h in history], axis=1), diversity=np.asarray(div),
                  seconds=seconds, timed_steps=timed_steps,
                  first_call_seconds=first_call_seconds)


def settings_dict(s: Settings) -> dict:
    """The settings as plain JSON-able values."""
    return asdict(s)


__all__ = ["OBJECTIVES", "REDIRECT_STEPS", "Result", "Settings", "check_settings", "gram_similarity",
           "objective_value", "redirected_relu", "settings_dict", "unit_value", "visualize"]
