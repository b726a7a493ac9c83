"""stylejax's L-BFGS against torch.optim.LBFGS (no line search) step for step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stylejax.style.lbfgs import lbfgs

torch = pytest.importorskip("torch")


def _problem(n=40, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    a = a @ a.T / n + np.diag(np.linspace(0.1, 10, n))
    return a, rng.normal(size=n), rng.normal(size=n)


@pytest.mark.parametrize("memory", [3, 100])
def test_matches_torch_lbfgs_iterates(memory):
    a, b, x0 = _problem()
    xt = torch.tensor(x0, requires_grad=True)
    at, bt = torch.tensor(a), torch.tensor(b)
    opt = torch.optim.LBFGS([xt], lr=0.8, max_iter=1, history_size=memory, line_search_fn=None,
                            tolerance_grad=-1, tolerance_change=-1)
    expected = []
    for _ in range(15):
        def closure():
            opt.zero_grad()
            loss = 0.5 * xt @ at @ xt - bt @ xt + 0.05 * torch.sum(xt**4)
            loss.backward()
            return loss
        opt.step(closure)
        expected.append(xt.detach().numpy().copy())

    f = lambda x: 0.5 * x @ jnp.asarray(a, jnp.float32) @ x - jnp.asarray(b, jnp.float32) @ x + 0.05 * jnp.sum(x**4)
    tx = lbfgs(0.8, memory)
    x = jnp.asarray(x0, jnp.float32)
    state = tx.init(x)
    step = jax.jit(lambda x, s: tx.update(jax.grad(f)(x), s, x))
    for want in expected:
        u, state = step(x, state)
        x = x + u
        np.testing.assert_allclose(np.asarray(x), want, rtol=0, atol=2e-4 * np.abs(want).max())
    assert int(state.held) == 14  # a convex problem: every pair after the first step passes


def test_ring_buffer_keeps_the_newest_pairs():
    a, b, x0 = _problem(n=10, seed=1)
    f = lambda x: 0.5 * x @ jnp.asarray(a, jnp.float32) @ x - jnp.asarray(b, jnp.float32) @ x
    tx = lbfgs(1.0, 2)
    x = jnp.asarray(x0, jnp.float32)
    state = tx.init(x)
    steps = []
    for _ in range(5):
        u, state = tx.update(jax.grad(f)(x), state, x)
        steps.append(np.asarray(u))
        x = x + u
    # after 5 steps, 4 pairs were pushed into 2 slots: slots hold the steps 3 and 4 (1-based 2 newest)
    held = int(state.held)
    assert held == 4
    np.testing.assert_allclose(np.asarray(state.s[(held - 1) % 2]), steps[3], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state.s[(held - 2) % 2]), steps[2], rtol=1e-6)


def test_refuses_memory_below_one():
    with pytest.raises(ValueError):
        lbfgs(1.0, 0)
