"""How much memory this process can still get, and what a forward pass needs per pixel.

Pure reads of ``/proc`` and the process limits (nothing is changed): the CLI's pre-flight
checks and the tiled transfer's planning (:mod:`stylejax.style.tiling`) share them.
"""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Sequence
from pathlib import Path

from stylejax.errors import StylejaxError

#: Environment variable that caps the memory budget (bytes, or with a K/M/G/T suffix).
MEMORY_ENV = "STYLEJAX_MEMORY"
#: Share of the available memory a run may plan to use (the rest: XLA's own buffers, decoding).
BUDGET_SHARE = 0.8


def parse_bytes(text: str) -> int:
    """``"4G"`` -> 4 * 2**30; plain integers are bytes."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = 1
    if text and text[-1] in "KMGT":
        scale = 1024 ** ("KMGT".index(text[-1]) + 1)
        text = text[:-1]
    try:
        value = float(text) * scale
    except ValueError:
        raise StylejaxError(f"{MEMORY_ENV}={text!r}: expected bytes, e.g. 8G") from None
    if not math.isfinite(value) or value <= 0:
        raise StylejaxError(f"{MEMORY_ENV}: expected a positive size, e.g. 8G")
    return int(value)


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int:
    """Bytes this process can still allocate: the least of MemAvailable, cgroup and rlimit room."""
    found: list[int] = []
    if os.environ.get(MEMORY_ENV):
        found.append(parse_bytes(os.environ[MEMORY_ENV]))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and limit < 2**60:
            found.append(max(0, limit - (usage or 0)))
    for which in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft = resource.getrlimit(which)[0]
        if soft != resource.RLIM_INFINITY:
            found.append(max(0, soft - _vm_size()))
    return min(found) if found else 2**40


def _vm_size() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def activation_floats(arch: str, layers: Sequence[str]) -> float:
    """Activation values per input pixel of a forward pass up to the deepest of ``layers``.

    sum_l C_l / s_l^2 over the layer table, s_l the layer's total stride: f32 values per pixel.
    """
    from stylejax import models

    table = models.get(arch).layers
    names = [layer.name for layer in table]
    deepest = max((names.index(n) for n in layers if n in names), default=len(table) - 1)
    total, stride = 3.0, 1
    for layer in table[: deepest + 1]:
        stride *= layer.stride
        total += layer.channels / stride**2
    return total


def gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n < 2**70 else f"{n:.3g} bytes"


def peak_rss() -> int:
    """The process's peak resident memory so far, bytes (``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


__all__ = ["BUDGET_SHARE", "MEMORY_ENV", "activation_floats", "available_memory", "gib", "parse_bytes", "peak_rss"]
