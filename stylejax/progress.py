"""The one progress protocol of the library: a callback that receives a small record.

Long-running library functions take ``callback: Callable[[Progress], None] | None``. They call
it after each unit of work; the command line wraps it in a progress bar, a script may log it.
Raising ``KeyboardInterrupt`` from the callback stops the run the same way Ctrl-C does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Progress(NamedTuple):
    """``done`` of ``total`` units (``total`` None while not known, e.g. a folder still being
    walked; ``unit``: "it", "image", "file", ...); ``loss``: the latest objective
    value where there is one; ``info``: a few more named figures for a bar's postfix;
    ``image``: where the run has one, a zero-argument function returning the current result
    u8[H, W, 3] (called only when needed, e.g. for snapshots)."""

    done: int
    total: int | None
    unit: str = "it"
    loss: float | None = None
    info: dict[str, Any] = {}
    image: Callable[[], Any] | None = None


Callback = Callable[[Progress], None]

__all__ = ["Callback", "Progress"]
