"""Work handed to a forked child, so the second core writes one output while this process does the rest.

A child shares the parent's report copy-on-write and ends with os._exit (no teardown, no flushing of buffers
it inherited). A failure there is reported by the child, in the one-line form, and comes back to the parent
as ChildFailed with the child's exit status.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable


class ChildFailed(Exception):
    """A forked child's work failed; its message is already on stderr, `code` is its exit status."""

    def __init__(self, code: int) -> None:
        super().__init__(f"a forked writer failed (exit status {code})")
        self.code = code


def one_line(exc: BaseException) -> str:
    """An error as tcpa prints it: one line, never a traceback."""
    return " ".join(str(exc).split()) or type(exc).__name__


def spawn(work: Callable[[], None]) -> int | None:
    """Run `work` in a forked child and return its pid; None where forking is not safe (another thread
    running, whose locks the child would inherit held; no fork on this platform) and the caller does it."""
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        work()
    except BaseException as exc:  # noqa: BLE001 - reported here, in the child, as the parent would
        code = 130 if isinstance(exc, KeyboardInterrupt) else 2
        if code == 2:
            sys.stderr.write(f"tcpa: error: {one_line(exc)}\n")
    finally:
        sys.stderr.flush()
        os._exit(code)


def join(pid: int) -> None:
    """Wait for a spawned child; raise ChildFailed if it failed (killed by a signal: 128 + the signal)."""
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code:
        raise ChildFailed(code if code > 0 else 128 - code)
