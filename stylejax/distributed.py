"""Many processes (hosts), one result: JAX's own multi-process runtime, plus host-side gathers.

``initialize`` wraps :func:`jax.distributed.initialize` (it must run before any JAX computation).
Each process then works on its share of the data with its local devices; small results are
gathered with :func:`jax.experimental.multihost_utils.process_allgather` (collectives over gloo
on CPU, NCCL/ICI on accelerators), so no shared filesystem is needed.
"""

from __future__ import annotations

import json

import jax
import numpy as np

from stylejax.errors import StylejaxError


def initialize(coordinator: str, num_processes: int, process_id: int, timeout_s: int = 300) -> None:
    """Join a ``num_processes``-process job whose process 0 listens at ``coordinator`` (HOST:PORT)."""
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StylejaxError(f"coordinator must be HOST:PORT, got {coordinator!r}")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise StylejaxError(f"process id {process_id} is not in 0..{num_processes - 1}")
    if num_processes == 1:
        return
    try:
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=timeout_s)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StylejaxError(f"could not join the job at {coordinator}: {first}") from None


def allgather(array: np.ndarray) -> np.ndarray:
    """Stack a same-shaped host array from every process: [P, ...] (P = process count)."""
    if jax.process_count() == 1:
        return np.asarray(array)[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(array), tiled=False))


def allgather_json(value) -> list:
    """Every process's JSON-serialisable ``value``, in process order."""
    blob = np.frombuffer(json.dumps(value).encode(), np.uint8)
    sizes = allgather(np.array([blob.size], np.int64))[:, 0]
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: blob.size] = blob
    rows = allgather(padded)
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(rows, sizes)]
