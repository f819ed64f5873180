"""Live capture: dumpcap captures, tcpa analyses the pcap stream it writes to a pipe, batch by batch.

dumpcap (Wireshark's capture engine, installed with tshark) runs as `dumpcap -i IFACE -P -w - ...` in its own
session, so a Ctrl-C on the terminal reaches tcpa only and tcpa stops the capture itself (SIGTERM to the
process group: dumpcap flushes what it holds and ends the stream). The 24-byte pcap header on the pipe says the
capture is live; an exit before it is an error, read from dumpcap's stderr and turned into one line.

The stream is read by `LiveCapture`, a Capture whose reads deliver whatever the pipe holds right now instead of
waiting for 8 MiB chunks, so batches flow as packets arrive (dumpcap writes every 4-250 ms). Each batch goes
through the same decoder and tracker as offline analysis (pipeline.Analysis); the live view shows a snapshot
of the capture so far, taken about once a second (less often when a snapshot gets expensive). What tcpa reads
is also written, byte for byte, to the `-w` file, so `tcpa analyze` on that file gives the same results.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pandas as pd
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from . import detectors
from .capture import CHUNK, Capture
from .decode import SUPPORTED_LINKTYPES
from .model import CaptureError, Notice
from .pipeline import DEFAULT_BATCH, Analysis
from .report import Report
from .tracker import Params

INSTALL_HINT = "install it with `apt-get install tshark` (Debian/Ubuntu; dumpcap comes with it)"
PERMISSION_HINT = ("run tcpa as root, or give dumpcap the capture capabilities "
                   "(`setcap cap_net_raw,cap_net_admin=eip $(command -v dumpcap)`, or `dpkg-reconfigure "
                   "wireshark-common` on Debian) and add the user to the group wireshark")
HEADER = 24  # the pcap file header: once it is on the pipe, dumpcap is capturing
WAIT_S = 0.2  # longest wait on the pipe before the view gets a chance to refresh
GATHER_S = 0.05  # batches are at least this far apart while packets keep coming
BACKLOG = 1 << 30  # bytes read from the pipe and not yet analysed, at most (see Drain)
PIPE_SIZE = 1 << 20  # the pipe's capacity (Linux's default limit for unprivileged users is 1 MiB)
SNAPSHOT_MIN_S = 1.0  # snapshots (connections, states, findings) at most this often...
SNAPSHOT_COST = 4.0  # ...and at most 1/SNAPSHOT_COST of the time
NEW_S = 5.0  # findings first seen this recently are marked new
_STATS = re.compile(r"Packets received/dropped on interface '(.*)': (\d+)/(\d+)")


class LiveError(CaptureError):
    """A live capture that could not start (or went wrong); the message is one line."""


@dataclasses.dataclass
class LiveOptions:
    interface: str
    bpf: str | None = None
    duration: float | None = None
    packets: int | None = None
    write: str | None = None  # -w: keep the raw capture here
    force: bool = False
    buffer_mib: int = 64  # dumpcap -B: the kernel capture buffer
    snaplen: int | None = None
    params: Params = dataclasses.field(default_factory=lambda: Params(checksums=False))
    settings: detectors.Settings | None = None
    only: list[str] | None = None
    keep_segments: bool = False
    batch_frames: int = DEFAULT_BATCH
    view: bool = True  # the live terminal view (on stderr, when it is a terminal)


@dataclasses.dataclass
class LiveResult:
    report: Report
    failure: str | None  # why the capture ended badly (outputs are still written), None when it ended well
    saved: str | None  # the -w file written


# --- tools and errors --------------------------------------------------------------------------------------
def tool(name: str) -> str:
    """The path of a Wireshark tool, or LiveError saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise LiveError(f"tshark is not installed ({name} not found on PATH): {INSTALL_HINT}")
    return path


def interfaces() -> list[str]:
    """`tshark -D`: the capture interfaces, one "N. name (description)" line each."""
    tshark = tool("tshark")
    try:
        done = subprocess.run([tshark, "-D"], capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        raise LiveError(f"cannot run {tshark}: {exc.strerror or exc}") from None
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    if done.returncode != 0 or not lines:
        raise LiveError(f"tshark -D failed: {explain(done.stderr, '') or 'no interfaces listed'}")
    return lines


def explain(stderr: str, interface: str, bpf: str | None = None) -> str:
    """dumpcap's (or tshark's) error output as one line that says what to do."""
    text = " ".join(stderr.split())
    if "permission to capture" in text or "Operation not permitted" in text:
        why = re.search(r"\((socket|[a-z_]+): ([^)]*)\)", text)
        return (f"no permission to capture on {interface}" + (f" ({why.group(1)}: {why.group(2)})" if why else "")
                + f": {PERMISSION_HINT}")
    if "There is no device named" in text or "No such device" in text:
        return f"unknown interface {interface!r} (`tcpa interfaces` lists them)"
    m = re.search(r"Invalid capture filter \"(.*?)\" for interface '[^']*'\.\s*(.*?)(See the User's Guide|$)", text)
    if m or "capture filter" in text:
        detail = m.group(2).strip() if m else text
        detail = re.sub(r"^That string isn't a valid capture filter \((.*)\)\.?$", r"\1", detail)
        return f"bad capture filter {bpf or (m.group(1) if m else '')!r}: {detail}"
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("dumpcap:", "tshark:"))]
    pick = errors or [ln for ln in lines if not ln.startswith(("Capturing on", "File:", "Running as user"))]
    return " ".join(pick[0].split()) if pick else ""


# --- the dumpcap process -----------------------------------------------------------------------------------
class Dumpcap:
    """dumpcap writing a pcap stream to our pipe, in its own session; stderr collected by a thread."""

    def __init__(self, opts: LiveOptions) -> None:
        exe = tool("dumpcap")
        tool("tshark")  # the issue asks for tshark: say so when only dumpcap is there (it is the same package)
        cmd = [exe, "-i", opts.interface, "-P", "-w", "-", "-q", "-B", str(max(1, opts.buffer_mib))]
        if opts.bpf:
            cmd += ["-f", opts.bpf]
        if opts.snaplen:
            cmd += ["-s", str(opts.snaplen)]
        if opts.packets:
            cmd += ["-c", str(opts.packets)]
        if opts.duration:
            cmd += ["-a", f"duration:{opts.duration:g}"]
        self.interface = opts.interface
        self.bpf = opts.bpf
        self.cmd = cmd
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, bufsize=0, start_new_session=True)
        except PermissionError:
            raise LiveError(f"cannot run {exe}: permission denied: {PERMISSION_HINT}") from None
        except OSError as exc:
            raise LiveError(f"cannot run {exe}: {exc.strerror or exc}") from None
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.fd = self.proc.stdout.fileno()
        self.stderr_lines: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, name="dumpcap-stderr", daemon=True)
        self._reader.start()
        self.stop_requested = ""  # why tcpa asked dumpcap to stop (empty: it did not)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            self.stderr_lines.append(raw.decode("utf-8", "replace"))

    def stderr(self, wait: float = 2.0) -> str:
        self._reader.join(wait)
        return "".join(self.stderr_lines)

    def header(self, on_wait: Callable[[], None] | None = None) -> bytes:
        """Wait for the pcap file header; LiveError with dumpcap's reason if it ends first."""
        got = b""
        while len(got) < HEADER:
            ready, _, _ = select.select([self.fd], [], [], WAIT_S)
            if not ready:
                if on_wait:
                    on_wait()
                continue
            chunk = os.read(self.fd, HEADER - len(got))
            if not chunk:
                break
            got += chunk
        if len(got) == HEADER:
            return got
        code = self.proc.wait()
        why = explain(self.stderr(), self.interface, self.bpf) or f"dumpcap exited with code {code}"
        if self.stop_requested:
            why = f"stopped ({self.stop_requested}) before the capture started"
        raise LiveError(why)

    def stop(self, why: str, sig: int = signal.SIGTERM) -> None:
        """Ask dumpcap to end the capture (it flushes and closes the stream); a second call kills it."""
        if self.stop_requested and sig == signal.SIGTERM:
            sig = signal.SIGKILL
        self.stop_requested = self.stop_requested or why
        self._signal(sig)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        """Make sure nothing is left running, and reap."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait()
        self._signal(signal.SIGKILL)  # anything else left in the group
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def outcome(self) -> tuple[str | None, int | None, int | None]:
        """After the stream ended: (failure or None, packets received, packets dropped) from dumpcap."""
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            code = self.proc.wait()
        text = self.stderr()
        m = _STATS.search(text)
        received, dropped = (int(m.group(2)), int(m.group(3))) if m else (None, None)
        if code == 0 or (self.stop_requested and code in (-signal.SIGTERM, -signal.SIGINT) and m):
            return None, received, dropped
        if self.stop_requested and code == -signal.SIGKILL:
            return None, received, dropped  # killed at the user's second Ctrl-C
        if code < 0:
            why = f"dumpcap was killed by signal {-code} ({signal.Signals(-code).name})"
        else:
            why = explain(text, self.interface, self.bpf) or f"dumpcap exited with code {code}"
        return f"capture failed: {why}", received, dropped


# --- the stream reader -------------------------------------------------------------------------------------
class Drain(threading.Thread):
    """Reads the pipe as fast as dumpcap writes it, into memory, so dumpcap never waits on the analysis.

    dumpcap blocked on a full pipe stops emptying the kernel's capture buffer, and that buffer (charged per
    packet, not per byte: 64 MiB holds well under a second of 100 000 small packets/s) then drops packets.
    With this thread the analysis can fall behind for a while (a snapshot for the live view, a burst) and catch
    up: the backlog waits here, up to BACKLOG bytes, beyond which the pipe and dumpcap's buffer take the strain.
    Every byte read also goes to `tee` (the -w file) as it arrives.
    """

    def __init__(self, fd: int, tee: IO[bytes] | None = None, limit: int = 0) -> None:
        super().__init__(name="dumpcap-pipe", daemon=True)
        self.fd, self.tee, self.limit = fd, tee, limit or BACKLOG
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0  # bytes waiting in chunks
        self.peak = 0  # the largest backlog seen
        self.eof = False
        self.error = ""
        self.cond = threading.Condition()

    def run(self) -> None:
        while True:
            with self.cond:
                while self.size >= self.limit:
                    self.cond.wait()
            try:
                chunk = os.read(self.fd, CHUNK)
            except OSError as err:
                chunk, self.error = b"", str(err)
            if chunk and self.tee is not None:
                self.tee.write(chunk)
            with self.cond:
                if chunk:
                    self.chunks.append(chunk)
                    self.size += len(chunk)
                    self.peak = max(self.peak, self.size)
                else:
                    self.eof = True
                self.cond.notify_all()
            if not chunk:
                return

    def take(self, want: int, timeout: float) -> bytes | None:
        """About `want` bytes of what has arrived (at least one chunk), b"" at the end of the stream, or None
        when nothing came within `timeout` seconds."""
        with self.cond:
            if not self.chunks and not self.eof:
                self.cond.wait(timeout)
            if not self.chunks:
                return b"" if self.eof else None
            parts, got = [], 0
            while self.chunks and got < want:
                parts.append(self.chunks.popleft())
                got += len(parts[-1])
            self.size -= got
            self.cond.notify_all()
        return b"".join(parts)


class LiveCapture(Capture):
    """A Capture over the Drain of a pipe that delivers what has arrived instead of waiting for full chunks.

    `on_wait` runs whenever the pipe has been quiet for WAIT_S, so the caller can refresh its view and check
    its stop conditions.
    """

    def __init__(self, drain: Drain, header: bytes, source: str, batch_frames: int,
                 on_wait: Callable[[], None] | None = None) -> None:
        super().__init__(None, source, False, batch_frames)  # type: ignore[arg-type]
        self.drain = drain
        self.on_wait = on_wait
        self.buf = header
        self._delivered = 0.0

    def _fill(self, need: int) -> bool:
        waiting = len(self.buf) - self.pos < need and not self.eof
        filled = super()._fill(need)
        if waiting and need >= CHUNK:
            self._delivered = time.monotonic()
        return filled

    def _read(self, need: int, have: int) -> bytes | None:
        if need >= CHUNK and have:  # the readers ask for a whole chunk only to read ahead: take what is there
            # deliver what has arrived, but gather for up to GATHER_S after the last delivery: under load that
            # keeps batches large (per-batch costs would otherwise make the reader fall behind)
            chunk = self.drain.take(need - have, max(0.0, self._delivered + GATHER_S - time.monotonic()))
        else:
            while (chunk := self.drain.take(max(need - have, 1), WAIT_S)) is None:
                if self.on_wait:
                    self.on_wait()
        if chunk == b"" and self.drain.error:
            self._notice(0, "truncated_file", f"reading stopped: {self.drain.error}")
        return chunk


def _widen_pipe(fd: int) -> None:
    """Let the pipe hold up to PIPE_SIZE so dumpcap is not held up between our reads (Linux; best effort)."""
    try:
        import fcntl
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except (OSError, ImportError):
        pass


# --- the live view -----------------------------------------------------------------------------------------
class LiveView:
    """What the terminal shows while capturing; rich's refresh thread draws the latest state via __rich__."""

    def __init__(self, interface: str, bpf: str | None) -> None:
        self.interface, self.bpf = interface, bpf
        self.started = time.monotonic()
        self.frames = 0
        self.segments = 0
        self.rate = 0.0
        self.conns = ""  # from the last snapshot
        self.status = "starting dumpcap"
        self.tables: list[Any] = []
        self.first_seen: dict[tuple[Any, ...], float] = {}
        self._rate_mark = (self.started, 0)

    def count(self, frames: int, segments: int) -> None:
        now = time.monotonic()
        t0, f0 = self._rate_mark
        if now - t0 >= 1.0:
            self.rate = (frames - f0) / (now - t0)
            self._rate_mark = (now, frames)
        self.frames, self.segments = frames, segments

    def update(self, report: Report) -> None:
        """New tables from a snapshot report."""
        c = report.connections
        self.conns = f", {len(c)} connections ({int(c['close'].isin(['open', 'half_closed']).sum())} open)" if len(c) else ""
        self.tables = [t for t in (connections_by_state(report), sockets_table(report),
                                   self.findings_table(report)) if t is not None]

    def findings_table(self, report: Report, rows: int = 8) -> Table | None:
        f = report.findings
        if f is None or f.empty:
            return None
        now = time.monotonic()
        for r in f.itertuples():
            self.first_seen.setdefault((r.kind, r.uid, r.host, r.port, r.direction), now)
        newest = f.assign(seen_at=[self.first_seen[(r.kind, r.uid, r.host, r.port, r.direction)]
                                 for r in f.itertuples()])
        newest = newest.sort_values(["seen_at", "ts"], ascending=False, kind="stable").head(rows)
        table = Table(title=f"Newest findings ({len(f)} in all)", header_style="bold", title_justify="left")
        for col in ("", "severity", "kind", "where", "summary"):
            table.add_column(col, overflow="fold", no_wrap=col in ("", "severity", "kind"))
        from .terminal import SEVERITY_STYLE
        for r in newest.itertuples():
            fresh = now - r.seen_at < NEW_S
            where = r.uid or (f"{r.host}:{r.port}" if r.host else "")
            table.add_row("[bold green]new[/]" if fresh else "", f"[{SEVERITY_STYLE[r.severity]}]{r.severity}[/]",
                          escape(r.kind), escape(str(where)), escape(r.summary))
        return table

    def __rich__(self) -> Group:
        secs = time.monotonic() - self.started
        head = Text.from_markup(
            f"[bold]capturing on {escape(self.interface)}[/]"
            + (f"  filter [cyan]{escape(self.bpf)}[/]" if self.bpf else "")
            + f"  {secs:6.1f} s  [bold]{self.frames}[/] packets ({self.rate:,.0f}/s), {self.segments} TCP segments"
            f"{self.conns}  [dim]drops: counted when the capture stops  {escape(self.status)}  (Ctrl-C stops)[/]")
        return Group(head, *self.tables)


def connections_by_state(report: Report, rows: int = 12) -> Table | None:
    """Connections grouped by how they stand: still open (with both endpoints' current states) or how they ended."""
    c = report.connections
    if c.empty:
        return None
    open_ = c["close"].isin(["open", "half_closed"])
    label = pd.Series(c["close"], dtype=object).where(~open_, "open")
    states = c["orig_state"].astype(str) + " / " + c["resp_state"].astype(str)
    g = pd.DataFrame({"status": label, "states": states}).value_counts().reset_index(name="n")
    g["_open"] = g["status"] == "open"
    g = g.sort_values(["_open", "n"], ascending=[False, False], kind="stable")
    table = Table(title=f"Connections by state ({len(c)}: {int(open_.sum())} open)", header_style="bold",
                  title_justify="left")
    for col in ("status", "client / server state", "connections"):
        table.add_column(col, justify="right" if col == "connections" else "left")
    for r in g.head(rows).itertuples():
        table.add_row(("[bold]open[/]" if r.status == "open" else escape(str(r.status))), escape(r.states), str(r.n))
    if len(g) > rows:
        table.caption = f"... and {len(g) - rows} more combinations"
    return table


def sockets_table(report: Report, rows: int = 10) -> Table | None:
    """Per host and host:port: sockets in each state now (what ss -tan would list), the busiest first."""
    if report.connections.empty:
        return None
    states = report.states_at()
    if states.empty:
        return None
    from .terminal import state_table
    table = state_table(states.head(rows), "Sockets per host:port now (ss -tan)")
    table.title_justify = "left"
    if len(states) > rows:
        table.caption = f"busiest {rows} of {len(states)}"
    return table


# --- the capture loop ---------------------------------------------------------------------------------------
def run(opts: LiveOptions, console: Console | None = None, on_ready: Callable[[Dumpcap], None] | None = None) -> LiveResult:
    """Capture and analyse until dumpcap stops (Ctrl-C, --duration, --packets, or its death).

    With a console, the live view is drawn on it. on_ready is called once the capture is live.
    """
    if opts.write:
        _check_writable(opts.write, opts.force)
    dump = Dumpcap(opts)
    tee: IO[bytes] | None = None
    drain: Drain | None = None
    part = _part_name(opts.write) if opts.write else None
    view = LiveView(opts.interface, opts.bpf) if console is not None and opts.view else None
    deadline = time.monotonic() + opts.duration + 5.0 if opts.duration else None
    handlers = _trap_signals(dump)
    try:
        header = dump.header()
        little = header[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
        linktype = int.from_bytes(header[20:24], "little" if little else "big") & 0x03FFFFFF
        if linktype not in SUPPORTED_LINKTYPES:
            raise LiveError(f"interface {opts.interface} has link type {linktype}, which tcpa does not decode")
        if part is not None:
            tee = open(part, "wb")  # noqa: SIM115 - closed by _finish_write
            tee.write(header)
        _widen_pipe(dump.fd)
        drain = Drain(dump.fd, tee)
        drain.start()
        if on_ready:
            on_ready(dump)
        analysis = Analysis(opts.params, keep_segments=opts.keep_segments)
        loop = _Loop(opts, analysis, dump, view, deadline)
        capture = LiveCapture(drain, header, f"{opts.interface} (live)", opts.batch_frames, loop.tick)
        loop.capture = capture
        if view is not None and console is not None:
            from rich.live import Live
            view.status = "waiting for packets"
            with Live(view, console=console, refresh_per_second=2, transient=True, redirect_stdout=False,
                      redirect_stderr=False):
                loop.consume(capture)
        else:
            loop.consume(capture)
        failure, received, dropped = dump.outcome()
    except BaseException:
        dump.close()
        if drain is not None:
            drain.join(5.0)  # the stream has ended: everything read is in the -w file
        if tee is not None and opts.write:  # keep what was captured
            _finish_write(opts.write, part, tee, True)
        raise
    finally:
        _restore_signals(handlers)
    dump.close()
    drain.join()
    facts = capture.facts
    if dropped:
        extra = " (on lo dumpcap's count reads about twice the real loss)" if opts.interface == "lo" else ""
        facts.notices.append(Notice(0, "capture_drops", f"dumpcap reports {dropped} of {received} packets dropped "
                                    f"before they reached tcpa{extra}; raise --buffer or narrow -f"))
    if failure:
        facts.notices.append(Notice(0, "capture_failed", f"{failure}: analysed the {facts.frames} frames read"))
    saved = _finish_write(opts.write, part, tee, True) if opts.write else None
    report = analysis.finish(facts, settings=opts.settings, only=opts.only)
    return LiveResult(report, failure, saved)


class _Loop:
    """Feeds batches to the analysis; refreshes the view and enforces the stop conditions between them."""

    def __init__(self, opts: LiveOptions, analysis: Analysis, dump: Dumpcap, view: LiveView | None,
                 deadline: float | None) -> None:
        self.opts, self.analysis, self.dump, self.view, self.deadline = opts, analysis, dump, view, deadline
        self.capture: LiveCapture | None = None
        self.next_snapshot = 0.0
        self.snapshot_frames = -1

    def consume(self, capture: LiveCapture) -> None:
        for batch in capture:
            self.analysis.feed(batch)
            self.tick()

    def tick(self) -> None:
        now = time.monotonic()
        if self.deadline is not None and now > self.deadline and not self.dump.stop_requested:
            self.dump.stop("duration")  # dumpcap's own -a duration should have ended it already
        if self.view is None or self.capture is None:
            return
        facts = self.capture.facts
        self.view.count(facts.frames, self.analysis.segments)
        if self.dump.stop_requested:
            self.view.status = f"stopping ({self.dump.stop_requested})"
        elif facts.frames:
            self.view.status = ""
        if now >= self.next_snapshot and facts.frames != self.snapshot_frames and facts.frames:
            t0 = time.monotonic()
            report = self.analysis.snapshot(facts, settings=self.opts.settings, only=self.opts.only)
            self.view.update(report)
            cost = time.monotonic() - t0
            self.snapshot_frames = facts.frames
            self.next_snapshot = time.monotonic() + max(SNAPSHOT_MIN_S, SNAPSHOT_COST * cost)


def _trap_signals(dump: Dumpcap) -> dict[int, Any]:
    """Ctrl-C (and SIGTERM) stop the capture cleanly: dumpcap is told to end, what it captured is analysed."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    old: dict[int, Any] = {}

    def stop(signum: int, _frame: Any) -> None:
        dump.stop("interrupted" if signum == signal.SIGINT else "terminated")

    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, stop)
    return old


def _restore_signals(old: dict[int, Any]) -> None:
    for sig, handler in old.items():
        signal.signal(sig, handler)


# --- the -w file -------------------------------------------------------------------------------------------
PCAPNG_SUFFIXES = (".pcapng", ".ntar")


def _check_writable(path: str, force: bool) -> None:
    target = Path(path)
    if target.exists() and not target.is_file() and not target.is_dir():
        raise LiveError(f"-w {path}: not a regular file (the capture is written beside it and renamed into place)")
    if target.exists() and not force:
        raise LiveError(f"{path}: exists; use --force to overwrite it")
    if target.is_dir():
        raise LiveError(f"{path}: is a directory")
    if not target.parent.exists():
        raise LiveError(f"{path}: directory {target.parent} does not exist")
    if path.lower().endswith(PCAPNG_SUFFIXES):
        tool("editcap")


def _part_name(path: str) -> str:
    target = Path(path)
    return str(target.parent / f".{target.name}.part")


def _finish_write(path: str, part: str | None, tee: IO[bytes] | None, force: bool) -> str | None:
    """Close the raw capture and put it in place: pcap as read, or converted with editcap for .pcapng."""
    if tee is None or part is None:
        return None
    tee.close()
    if path.lower().endswith(PCAPNG_SUFFIXES):
        done = subprocess.run([tool("editcap"), "-F", "pcapng", part, path], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            os.replace(part, path + ".pcap")
            raise LiveError(f"editcap could not convert the capture to pcapng ({explain(done.stderr, '')}); "
                            f"it is kept as {path}.pcap")
        os.unlink(part)
    else:
        os.replace(part, path)
    return path
