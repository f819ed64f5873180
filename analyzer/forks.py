"""Work handed to a forked child, so the second core does it while this process does the rest.

spawn(): the child writes one output, sharing the parent's report copy-on-write. A failure there is reported
by the child, in the one-line form, and comes back to the parent as ChildFailed with the child's exit status.

handoff(): the child computes a result (reads the capture) and sends it back pickled, while the parent
prepares what comes next (imports the report's modules). A failure there is raised in the parent.

A child ends with os._exit (no teardown, no flushing of buffers it inherited).
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import IO, Any, TypeVar

T = TypeVar("T")


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


def wait(pid: int) -> int:
    """Wait for a spawned child: its exit status (killed by a signal: 128 + the signal)."""
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return code if code >= 0 else 128 - code


def join(pid: int) -> None:
    """Wait for a spawned child; raise ChildFailed if it failed."""
    if code := wait(pid):
        raise ChildFailed(code)


class RemoteTraceback(Exception):
    """Where an exception raised in a handoff() child came from (its traceback, as text): the cause of the
    exception raised again in the parent, which --debug shows."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def handoff(work: Callable[[], T], meanwhile: Callable[[], None], shared: dict[str, object] | None = None) -> T:
    """work() in a forked child while this process runs meanwhile(), on the other core; work's result, or the
    exception it raised, comes back pickled through a pipe.

    `shared` objects were made before the fork, so each exists in both processes (a file both hold open): they
    go by name instead of by value. Where forking is not safe (see spawn), meanwhile() then work() run here.
    """
    if not hasattr(os, "fork") or threading.active_count() > 1:
        meanwhile()
        return work()
    names = shared or {}
    fd_in, fd_out = os.pipe()
    _widen(fd_out)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if not pid:
        os.close(fd_in)
        _send(work, os.fdopen(fd_out, "wb"), names)
    os.close(fd_out)
    try:
        meanwhile()
        with os.fdopen(fd_in, "rb") as source:
            sent = _Unpickler(source, names).load()
    except (EOFError, pickle.UnpicklingError):  # it ended before it said anything
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        raise OSError(f"the forked reader of the capture ended without a result ({_status(code)})") from None
    except BaseException:
        os.kill(pid, signal.SIGKILL)  # no longer wanted
        os.waitpid(pid, 0)
        raise
    os.waitpid(pid, 0)
    ok, value, where = sent
    if not ok:
        raise value from RemoteTraceback(where)
    return value  # type: ignore[no-any-return]


PIPE_BYTES = 1 << 20  # Linux's default pipe-max-size


def _widen(fd: int) -> None:
    """Let the pipe hold PIPE_BYTES instead of 64 KiB: the result (14 MB at 2 M packets: the open chunks of rows)
    then crosses in 14 writes and reads instead of 220, each a switch between the two processes."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):  # not Linux, or over the system's limit: as it is
        pass


def _status(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


def _send(work: Callable[[], Any], out: IO[bytes], names: dict[str, object]) -> None:
    """In the child: run work() and send (True, its result, "") or (False, the exception, its traceback as
    text); then end the process."""
    code = 0
    try:
        try:
            result, failed = work(), b""
        except BaseException as exc:  # noqa: BLE001 - sent to the parent, raised there
            where = "".join(traceback.format_exception(exc))
            try:
                failed = _dumps((False, exc, where), names)
            except Exception:  # noqa: BLE001 - one that does not pickle: its type and message, then
                failed = _dumps((False, RuntimeError(f"{type(exc).__name__}: {one_line(exc)}"), where), names)
        if failed:
            out.write(failed)
        else:
            _Pickler(out, names).dump((True, result, ""))
        out.close()
    except BaseException:  # noqa: BLE001 - the parent reads no result and says how the child ended
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):  # what it showed (a progress bar) is out before it ends
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _dumps(obj: Any, names: dict[str, object]) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, names).dump(obj)
    return buf.getvalue()


class _Pickler(pickle.Pickler):
    def __init__(self, file: IO[bytes], names: dict[str, object]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.ids = {id(obj): name for name, obj in names.items()}

    def persistent_id(self, obj: Any) -> str | None:
        return self.ids.get(id(obj))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], names: dict[str, object]) -> None:
        super().__init__(file)
        self.names = names

    def persistent_load(self, pid: Any) -> object:
        return self.names[pid]
