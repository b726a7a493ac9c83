"""Process-wide settings: the XLA flags and the allocator policy the stylejax command applies."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stylejax import runtime


def test_set_xla_flags_adds_and_keeps_the_users():
    env: dict[str, str] = {}
    value = runtime.set_xla_flags(env)
    assert env["XLA_FLAGS"] == value == "--xla_cpu_enable_concurrency_optimized_scheduler=false"
    assert runtime.set_xla_flags(env) == value  # idempotent
    mine = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2 "
                         "--xla_cpu_enable_concurrency_optimized_scheduler=true"}
    runtime.set_xla_flags(mine)
    assert mine["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                                 "--xla_cpu_enable_concurrency_optimized_scheduler=true")


def test_cli_configures_before_any_backend_starts():
    """Importing every subcommand and parsing must not start a JAX backend, or the flags come too late."""
    code = ("import os; os.environ.pop('XLA_FLAGS', None)\n"
            "from stylejax.cli import build_parser\n"
            "build_parser().parse_args(['weights', 'list'])\n"
            "from jax._src import xla_bridge\n"
            "assert not xla_bridge._backends, xla_bridge._backends\n"
            "from stylejax import runtime; print(runtime.set_xla_flags())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "concurrency_optimized_scheduler=false" in out.stdout


_FAULTS = """
import resource, sys
from stylejax import runtime
if sys.argv[1] == "keep":
    assert runtime.keep_allocations()
import jax, jax.numpy as jnp
conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
k = jnp.full((3, 3, 64, 64), 0.01)
x = jnp.ones((1, 256, 256, 64))  # 16 MiB activations: the gradient's temporaries are one ~100 MiB block
f = jax.jit(jax.grad(lambda x: jnp.sum(jnp.tanh(conv(jnp.tanh(conv(jnp.tanh(conv(x, k)), k)), k)))))
for _ in range(3):
    f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    f(x).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator policy")
def test_keep_allocations_removes_per_call_page_faults():
    """XLA's per-call temporaries: fresh pages every call by default, reused pages once configured."""
    def faults(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return float(out.stdout.split()[-1])

    plain = faults("plain")
    kept = min(faults("keep"), faults("keep"))  # stray faults (other threads, a busy machine) vary run to run
    assert plain > 5000, plain  # tens of MiB of fresh 4 KiB pages every call
    assert kept < plain / 2, (kept, plain)  # 0 to 0.4x of plain, run to run
