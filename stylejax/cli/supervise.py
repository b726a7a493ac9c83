"""Run a multi-process job's work in a child process, so a lost peer ends it with one line.

JAX's distributed runtime ends the surviving processes of a job from a C++ thread when a peer is
lost (see :mod:`stylejax.distributed`), with a stack trace and no chance for Python to report.
:func:`supervised` re-runs the same command as a child whose C++ log goes to a file while its
Python output (progress bar, messages) stays on this terminal; when the child is ended by a
signal, the parent turns the log into one line. The child dies with its parent (Linux), so a
killed host leaves nothing running.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

#: Set in the child: the file its C++ runtime log goes to.
LOG_ENV = "STYLEJAX_RUNTIME_LOG"
PARENT_ENV = "STYLEJAX_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1


def in_child() -> bool:
    """Whether this process is a supervised child."""
    return bool(os.environ.get(LOG_ENV))


def redirect_runtime_log() -> None:
    """In the child: die with the parent, and send file descriptor 2 (the C++ runtime's stderr)
    to the log file while Python's ``sys.stderr`` keeps writing to the terminal."""
    path = os.environ.pop(LOG_ENV)
    parent = os.environ.pop(PARENT_ENV, None)
    _die_with_parent()
    if parent is not None and os.getppid() != int(parent):  # the parent is already gone
        os._exit(1)
    terminal = os.dup(2)
    sys.stderr.flush()
    sys.stderr = open(terminal, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="replace")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    os.close(fd)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass


def supervised(argv: Sequence[str], explain: Callable[[str, int], str]) -> int:
    """Run ``stylejax *argv`` as a child; return its exit code.

    When the child is ended by a signal, ``explain(runtime log, signal number)`` gives the line
    printed here (exit code 1). Ctrl-C reaches the child from the terminal; SIGTERM is forwarded.
    """
    fd, log = tempfile.mkstemp(prefix="stylejax-runtime-", suffix=".log")
    os.close(fd)
    env = {**os.environ, LOG_ENV: log, PARENT_ENV: str(os.getpid())}
    child = subprocess.Popen([sys.executable, "-m", "stylejax", *argv], env=env)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal sends it to the child as well
    signal.signal(signal.SIGTERM, lambda sig, frame: child.send_signal(sig))
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    text = Path(log).read_text(errors="replace") if os.path.exists(log) else ""
    Path(log).unlink(missing_ok=True)
    if code >= 0:
        return code
    from stylejax.cli.common import fail

    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")  # the child's progress bar line, cut short
    return fail(explain(text, -code))
