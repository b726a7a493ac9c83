"""The XLA flags the stylejax command sets before JAX starts."""

from __future__ import annotations

import subprocess
import sys

from stylejax import xla_flags


def test_apply_adds_flags_and_keeps_the_users():
    env: dict[str, str] = {}
    value = xla_flags.apply(env)
    assert env["XLA_FLAGS"] == value == "--xla_cpu_enable_concurrency_optimized_scheduler=false"
    assert xla_flags.apply(env) == value  # idempotent
    mine = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2 "
                         "--xla_cpu_enable_concurrency_optimized_scheduler=true"}
    xla_flags.apply(mine)
    assert mine["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                                 "--xla_cpu_enable_concurrency_optimized_scheduler=true")


def test_cli_sets_flags_before_any_backend_starts():
    """Importing every subcommand and parsing must not start a JAX backend, or the flags come too late."""
    code = ("import os; os.environ.pop('XLA_FLAGS', None)\n"
            "from stylejax.cli import build_parser\n"
            "build_parser().parse_args(['weights', 'list'])\n"
            "from jax._src import xla_bridge\n"
            "assert not xla_bridge._backends, xla_bridge._backends\n"
            "from stylejax import xla_flags; print(xla_flags.apply())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "concurrency_optimized_scheduler=false" in out.stdout
