"""SIGTERM and SIGHUP handled like Ctrl-C: every command stops the same way, whoever asks.

``timeout``, Slurm, systemd and ``docker stop`` send SIGTERM; a closed terminal sends SIGHUP.
While :func:`as_interrupt` is active both raise ``KeyboardInterrupt`` in the main thread, so
the code that saves the best image and report (transfer) or the scan checkpoint (patches) on
Ctrl-C runs for them too. The CLI's ``main`` installs the handlers for one command and restores
the previous ones afterwards; importing stylejax installs nothing.

Exit codes: 128 + the signal number, as a shell reports a process the signal killed:
130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)


class Received:
    """Which signal (if any) stopped the command."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "SIGINT"

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)


@contextlib.contextmanager
def as_interrupt() -> Iterator[Received]:
    """Within the block, SIGTERM/SIGHUP raise KeyboardInterrupt (main thread only)."""
    received = Received()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):  # noqa: ARG001 (signal API)
        received.signum = signum
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield received
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
