"""One progress protocol for long library calls: a callback that receives a :class:`Progress`.

Library functions take ``progress: Callable[[Progress], None] | None`` and call it after each
unit of work; they never draw anything themselves. The command line wraps the callback in a
progress bar; a script can log, update its own bar, or ignore it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Progress(NamedTuple):
    """How far a long job is.

    Attributes:
      done: units finished so far (cumulative, including any done before a resume).
      total: units in the whole job, or None while it is not known (e.g. a folder still being walked).
      unit: what is counted, singular ("image", "step").
      what: the job in a few words ("scan conv2_1").
    """

    done: int
    total: int | None
    unit: str = "item"
    what: str = ""


#: The callback type library functions accept.
ProgressFn = Callable[[Progress], None]
