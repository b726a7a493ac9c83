"""XLA flags stylejax measured to pay, and the one place that sets them.

XLA reads ``XLA_FLAGS`` once, when the first backend starts, so :func:`apply` must run before
the first JAX computation of the process. The ``stylejax`` command calls it first thing; a
library user who wants the same speed sets the variable (or calls :func:`apply`) before using
JAX. Flags already present in ``XLA_FLAGS`` are left as the user set them.

* ``--xla_cpu_enable_concurrency_optimized_scheduler=false``: by default XLA:CPU schedules
  independent ops (a style layer's Gram next to the following conv) to run at once, and they
  then contend for the same cores. The sequential schedule made the VGG16 Gatys step at 256 px
  7 % faster on 2 cores (525 -> 488 ms, ``scripts/bench_breakdown.py``); the scan is unchanged.
  Passing it per executable (``jax.jit(compiler_options=...)``) leaves the schedule unchanged in
  jax 0.10.2, so it has to be the process-wide flag. CPU only: other backends ignore it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

FLAGS: dict[str, str] = {"xla_cpu_enable_concurrency_optimized_scheduler": "false"}


def apply(environ: MutableMapping[str, str] = os.environ) -> str:
    """Add :data:`FLAGS` to ``environ["XLA_FLAGS"]`` unless already set there; returns the value."""
    current = environ.get("XLA_FLAGS", "")
    added = [f"--{name}={value}" for name, value in FLAGS.items() if f"--{name}" not in current]
    value = " ".join([current.strip(), *added]).strip()
    if value:
        environ["XLA_FLAGS"] = value
    return value
