"""Iterate averaging, sqrt(2) scales and Adam's carry-over against brute-force references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from stylejax import iterates


@pytest.fixture(autouse=True)
def optax_promotion():
    """The tests drive optax's Adam directly, which mixes int32 counts with float decays."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def test_ema_is_the_bias_corrected_weighted_mean(rng):
    xs = rng.normal(size=(12, 3, 4, 3))
    decay = 0.9
    state = iterates.ema_init(jnp.asarray(xs[0], jnp.float32), decay)
    np.testing.assert_allclose(iterates.ema_value(state), xs[0], rtol=1e-6)
    for n in range(1, len(xs)):
        state = iterates.ema_update(state, jnp.asarray(xs[n], jnp.float32))
        # crowsonkb's EMA unrolled: value = sum_i (1-d) d^(n-i) x_i, accum = d^(n+1)
        wts = (1 - decay) * decay ** (n - np.arange(n + 1))
        ref = np.tensordot(wts, xs[: n + 1], axes=1) / (1 - decay ** (n + 1))
        np.testing.assert_allclose(iterates.ema_value(state), ref, rtol=1e-5, atol=1e-6)


def test_ema_jits_with_traced_decay(rng):
    x = jnp.asarray(rng.normal(size=(2, 2, 3)), jnp.float32)
    step = jax.jit(lambda s, v: iterates.ema_update(s, v))
    s = step(iterates.ema_init(x, 0.99), x + 1)
    ref = (0.01 * 0.99 * np.asarray(x) + 0.01 * (np.asarray(x) + 1)) / (1 - 0.99**2)
    np.testing.assert_allclose(iterates.ema_value(s), ref, rtol=1e-5)


@pytest.mark.parametrize("lo,hi,want", [(128, 512, (128, 181, 256, 362, 512)), (128, 384, (136, 192, 272, 384)),
                                        (600, 512, (512,)), (64, 64, (64,))])
def test_sqrt2_scales(lo, hi, want):
    assert iterates.sqrt2_scales(lo, hi) == want


def test_adam_state_resized_and_carried(rng):
    x = jnp.asarray(rng.normal(size=(8, 10, 3)), jnp.float32)
    tx = optax.adam(0.1, b2=0.99)
    state = tx.init(x)
    for _ in range(3):
        g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
        _, state = tx.update(g, state, x)
    big = iterates.resize_adam_state(state, 16, 20)
    adam, adam_big = state[0], big[0]
    assert isinstance(adam_big, optax.ScaleByAdamState)
    assert adam_big.mu.shape == (16, 20, 3) and adam_big.nu.shape == (16, 20, 3)
    assert int(adam_big.count) == int(adam.count) == 3
    # crowsonkb's scale_adam: torch's bicubic interpolate (align_corners=False) of the first moment
    torch = pytest.importorskip("torch")
    ref = torch.nn.functional.interpolate(torch.from_numpy(np.asarray(adam.mu, np.float64)).permute(2, 0, 1)[None],
                                          (16, 20), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    np.testing.assert_allclose(adam_big.mu, ref.numpy(), rtol=1e-5, atol=1e-6)
    assert float(adam_big.nu.min()) >= 0
    # bilinear upsampling by 2 (half-pixel centres, as torch's align_corners=False): output row 5
    # sits at input row 2.25, output column 6 at input column 2.75
    nu = np.asarray(adam.nu)
    ref = 0.75 * (0.25 * nu[2, 2] + 0.75 * nu[2, 3]) + 0.25 * (0.25 * nu[3, 2] + 0.75 * nu[3, 3])
    np.testing.assert_allclose(np.asarray(adam_big.nu)[5, 6], ref, rtol=1e-5)
    # the carried state steps on at the new shape with the kept count
    _, after = tx.update(jnp.zeros((16, 20, 3)), big, jnp.zeros((16, 20, 3)))
    assert int(after[0].count) == 4


def test_carry_adam_keeps_fresh_state_elsewhere(rng):
    x = jnp.asarray(rng.normal(size=(1, 4, 6, 3)), jnp.float32)
    tx = iterates.averaged(optax.adam(1.0), 0.9, (0.0, 1.0))
    state = tx.init(x)
    _, state = tx.update(jnp.ones_like(x), state, x)
    fresh = tx.init(jnp.zeros((1, 8, 12, 3)))
    carried = iterates.carry_adam(state, fresh)
    assert carried.inner[0].mu.shape == (1, 8, 12, 3) and int(carried.inner[0].count) == 1
    assert int(carried.average.inner.count) == int(fresh.average.inner.count) == 1  # a new average per scale
    np.testing.assert_array_equal(carried.average.inner.ema, fresh.average.inner.ema)


def test_averaged_clips_and_averages(rng):
    x = jnp.asarray(rng.uniform(0, 1, (3, 3, 1)), jnp.float32)
    tx = iterates.averaged(optax.sgd(10.0), 0.5, (0.0, 1.0))
    state = tx.init(x)
    g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    updates, state = tx.update(g, state, x)
    new = np.clip(np.asarray(x) - 10 * np.asarray(g), 0, 1)
    np.testing.assert_allclose(x + updates, new, rtol=1e-6, atol=1e-6)
    # average of x and new with decay 0.5: (0.5 * 0.5 x + 0.5 new) / (1 - 0.25)
    np.testing.assert_allclose(iterates.average_of(state), (0.25 * np.asarray(x) + 0.5 * new) / 0.75, rtol=1e-5)
    assert iterates.averaged(optax.sgd(1.0)) is not None and iterates.average_of(optax.sgd(1.0).init(x)) is None
