"""Many processes (hosts), one result: JAX's own multi-process runtime, plus host-side gathers.

``initialize`` wraps :func:`jax.distributed.initialize` (it must run before any JAX computation).
Each process then works on its share of the data with its local devices; small results are
gathered with :func:`jax.experimental.multihost_utils.process_allgather` (collectives over gloo
on CPU, NCCL/ICI on accelerators), so no shared filesystem is needed.

When a process is lost. JAX's runtime (jax 0.10) watches every process with heartbeats through
the coordinator (process 0). It does not raise a Python exception when one stops: it ends the
surviving processes from a C++ thread (``Check failure``, SIGABRT), at a moment Python cannot
choose. Measured on loopback: a process killed with SIGKILL is noticed by the coordinator after
the heartbeat timeout (its heartbeats stop); when the coordinator itself dies, every other process
is ended within a second (its connection closes); a process that cannot reach the coordinator is
ended after the join timeout. The runtime's per-client callback for this (``missed_heartbeat_callback``)
cannot be given a Python function (nanobind has no caster for its status argument, the call
aborts with ``std::bad_cast``), and ``jax_enable_recoverability`` keeps only the coordinator alive
(the other processes still end when it goes) while making ordinary exits race the coordinator's.

So a lost process is handled from outside: the command line runs the work in a child process,
sends the runtime's log to a file (:func:`describe_runtime_log` turns it into one sentence) and
reports the loss itself. Here the timeouts are short and stated: joining waits
``join_timeout_s`` (default 60 s, JAX's default is 300 s), a silent process is declared lost after
``heartbeat_timeout_s`` (default 10 s, JAX's 100 s). Checkpoints are each process's own files,
written atomically, so whatever ends a process, its last checkpoint is intact.
"""

from __future__ import annotations

import json
import re

import jax
import numpy as np

from stylejax.errors import StylejaxError

#: Seconds a process waits for every process to join; seconds without a heartbeat before a
#: process counts as lost.
JOIN_TIMEOUT_S = 60
HEARTBEAT_TIMEOUT_S = 10


def initialize(coordinator: str, num_processes: int, process_id: int, timeout_s: int = JOIN_TIMEOUT_S, *,
               heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S) -> None:
    """Join a ``num_processes``-process job whose process 0 listens at ``coordinator`` (HOST:PORT).

    Args:
      timeout_s: seconds to wait for every process to join (the runtime ends this process when
        they pass; see the module notes).
      heartbeat_timeout_s: seconds without a heartbeat after which a process counts as lost.
    """
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StylejaxError(f"coordinator must be HOST:PORT, got {coordinator!r}")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise StylejaxError(f"process id {process_id} is not in 0..{num_processes - 1}")
    if int(timeout_s) < 1 or int(heartbeat_timeout_s) < 1:
        raise StylejaxError("the join and heartbeat timeouts must be at least 1 s")
    if num_processes == 1:
        return
    try:
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=int(timeout_s),
                                   heartbeat_timeout_seconds=int(heartbeat_timeout_s))
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StylejaxError(f"could not join the job at {coordinator}: {first}") from None


_UNHEALTHY = re.compile(r"tasks are unhealthy \(stopped sending heartbeats\):\s*([\d\s,]+)")


def describe_runtime_log(log: str, *, coordinator: str, process_id: int, num_processes: int,
                         join_timeout_s: int = JOIN_TIMEOUT_S,
                         heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S) -> str | None:
    """Why JAX's runtime ended this process, in one sentence, from its log; None if it did not.

    Recognises the three ends described in the module notes: a peer without heartbeats, the
    coordinator gone, and a job that did not assemble within the join timeout.
    """
    if "Terminating process because the JAX distributed service detected fatal errors" not in log:
        return None
    lost = _UNHEALTHY.search(log)
    if lost:
        ids = sorted({int(i) for i in re.findall(r"\d+", lost.group(1))} - {process_id})
        who = ", ".join(str(i) for i in ids) or "?"
        noun = "process" if len(ids) == 1 else "processes"
        return (f"{noun} {who} of {num_processes} stopped sending heartbeats for {heartbeat_timeout_s} s "
                f"and counts as lost")
    if "RegisterTask" in log and "DEADLINE_EXCEEDED" in log:
        return (f"not every one of the {num_processes} processes reached the coordinator at {coordinator} "
                f"within {join_timeout_s} s")
    if process_id != 0:
        return f"process 0 (the coordinator at {coordinator}) was lost"
    return "the job's runtime stopped this process after a fatal error in another process"


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
