"""Process-wide settings stylejax measured to pay on CPU, and the one place that applies them.

Both must be applied before the first JAX computation of the process: XLA reads ``XLA_FLAGS``
once, when its first backend starts, and glibc's allocator policy applies to arenas created
afterwards (JAX's worker threads). The ``stylejax`` command calls :func:`configure` first thing,
and so do the benchmarks. A library user who wants the same speed calls it before using JAX.
These are settings of the whole process, not of a function, which is why the library's
functions never apply them themselves.

* XLA flag ``--xla_cpu_enable_concurrency_optimized_scheduler=false``. By default XLA:CPU runs
  independent ops at the same time, e.g. a style layer's Gram beside the next conv, and on two
  cores they contend. The sequential schedule made the VGG16 Gatys step at 256 px 7 % faster
  (525 -> 488 ms, ``scripts/bench_breakdown.py``). Passed per executable
  (``jax.jit(compiler_options=...)``) it leaves the schedule unchanged in jax 0.10.2. Only
  XLA:CPU reads it.
* glibc malloc keeps its memory (:func:`keep_allocations`). XLA:CPU allocates each call's
  temporaries as one block (151 MiB for the 256 px step) with ``posix_memalign`` from a worker
  thread. glibc maps such a block fresh and unmaps it after every call: 40 000 page faults, with
  the zeroing of every page, per step. One arena, no mmap and no trimming let the block be
  reused: 0 faults per step and about 9 % faster (357 vs 391 ms, mean of 3 processes each).
  This is Linux/glibc only; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import MutableMapping

XLA_FLAGS: dict[str, str] = {"xla_cpu_enable_concurrency_optimized_scheduler": "false"}

# mallopt(3) parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def set_xla_flags(environ: MutableMapping[str, str] | None = None) -> str:
    """Add :data:`XLA_FLAGS` to ``environ["XLA_FLAGS"]`` unless already set there; returns the value.

    ``environ``: the mapping to change (default: ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    current = environ.get("XLA_FLAGS", "")
    added = [f"--{name}={value}" for name, value in XLA_FLAGS.items() if f"--{name}" not in current]
    value = " ".join([current.strip(), *added]).strip()
    if value:
        environ["XLA_FLAGS"] = value
    return value


def keep_allocations() -> bool:
    """glibc: one malloc arena, no mmap'd chunks, no trimming below 2 GiB of free top.

    Then large blocks that are freed and allocated again (XLA's per-call temporaries) reuse
    already-mapped pages. Returns whether the policy was applied (False off glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in
               ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))


def configure(environ: MutableMapping[str, str] | None = None) -> dict:
    """Apply both settings; returns what was applied (the benchmarks print it).

    ``environ``: where ``XLA_FLAGS`` is set (default: ``os.environ``).
    """
    return {"xla_flags": set_xla_flags(environ), "malloc_keeps_allocations": keep_allocations()}
