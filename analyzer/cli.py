"""The `tcpa` command line. No analysis logic here: parse options, call the pipeline, write outputs."""

from __future__ import annotations

import datetime as dt
import gc
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache, partial
from typing import TYPE_CHECKING, Annotated, Any

# numpy's BLAS starts a thread per core when numpy is imported, which tcpa never uses: one is enough (0.085 ->
# 0.066 s to import numpy, median of 8). Set before anything imports numpy; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import typer

from . import forks, heap, writers
from .model import CaptureError
from .options import FORMATS, SEVERITIES, Settings
from .pipeline import DEFAULT_BATCH, Collected, collect
from .rows import Spill
from .tracker import Params

if TYPE_CHECKING:
    from rich.console import Console

    from .report import Report

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="tcpa: rebuild every TCP connection in a capture, replay both endpoints' states, "
                       "and say what went wrong.")


@cache
def err() -> Console:
    """The console on stderr (rich is imported when something is shown: 0.05-0.07 s of start-up)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


PROGRESS_MIN_BYTES = 64 << 20


@app.callback()
def root() -> None:
    """tcpa: TCP session analyzer."""


def parse_instant(text: str, first_ns: int) -> int:
    """--at: seconds since the epoch, '+S' seconds after the first packet, or an ISO 8601 time (UTC default)."""
    try:
        if text.startswith("+"):
            return first_ns + int(float(text[1:]) * 1e9)
        return int(float(text) * 1e9)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CaptureError(f"--at {text}: not a time (use epoch seconds, +SECONDS or ISO 8601)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1e9)


def _run(paths: list[str], params: Params, batch_frames: int, quiet: bool, modules: list[str],
         keep_segments: bool = False, **kw: Any) -> Report:
    """Analyse the captures: read (decoded, replayed) in a forked child while this process imports the report's
    modules (pandas and those in `modules`), then the report built here (forks.handoff). kw: for
    Collected.report."""
    spill = Spill.open()  # before the fork: the child spills finished connections' rows where both can read them

    def read() -> Collected:
        return _read(paths, params, batch_frames, quiet, keep_segments, spill or False)

    collected = forks.handoff(read, lambda: _import([*REPORT_MODULES, *modules]), {"spill": spill} if spill else {})
    return collected.report(**kw)


def _read(paths: list[str], params: Params, batch_frames: int, quiet: bool, keep_segments: bool,
          spill: Spill | bool) -> Collected:
    """pipeline.collect(), with a progress bar on a terminal for a large capture."""
    total = sum(os.path.getsize(p) for p in paths if p != "-" and os.path.isfile(p))
    kw: dict[str, Any] = {"params": params, "batch_frames": batch_frames, "keep_segments": keep_segments,
                          "spill": spill, "mapped": True}  # in the forked reader (see _run): SIGBUS ends only it
    if quiet or total < PROGRESS_MIN_BYTES or not err().is_terminal:
        return collect(paths, **kw)
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    # Redrawn at each batch rather than by a refresh thread of its own: the output writers fork, which is
    # safe only while this process runs one thread.
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=err(), transient=True, auto_refresh=False) as bar:
        task = bar.add_task("analysing", total=total)

        def advance(size: int) -> None:
            bar.advance(task, size)
            bar.refresh()

        return collect(paths, progress=advance, **kw)


_ending = False  # main() ends the process right after the command


@contextmanager
def _one_shot() -> Iterator[None]:
    """No cyclic garbage collector during a one-shot command (analyze, report): its full passes walked every
    object pandas' import had made, again and again (2 M packets: CPU -7 %), and in a forked writer each pass
    copied the pages they sit on (16 MB at 4 M packets). Such a run leaves the same few hundred objects in
    cycles whatever the capture's length (390 in the reader, under 900 in the parent, 0.5 M to 4 M packets).

    It is on again afterwards for an in-process caller, but not where the process ends next (main()): the
    first allocation after gc.enable() ran a full pass, 60 ms at 2 M packets."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled and not _ending:
            gc.enable()


def _list_detectors(value: bool) -> None:
    """--list-detectors: every finding kind with its severity and what it means, then exit."""
    if not value:
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Finding kinds (tcpa analyze --detectors KIND,KIND...)", header_style="bold")
    for col in ("kind", "severity", "title", "matches"):
        table.add_column(col)
    from . import detectors

    for k in sorted(detectors.all_kinds().values(), key=lambda k: k.id):
        table.add_row(k.id, k.severity, k.title, k.matches)
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160).print(table)
    raise typer.Exit(0)


def _kinds(text: str | None) -> list[str] | None:
    """--detectors: a comma-separated list of finding kinds, checked against the registry."""
    if not text:
        return None
    from . import detectors

    wanted = [k.strip() for k in text.split(",") if k.strip()]
    unknown = sorted(set(wanted) - set(detectors.all_kinds()))
    if unknown:
        raise CaptureError(f"--detectors: unknown kind {', '.join(unknown)} (see --list-detectors)")
    return wanted


def _worst(report: Report, threshold: str) -> bool:
    from . import detectors

    return detectors.worst(report.findings, threshold)


def _conn_log_beside(fmt: str, output: str | None, conn_log: str | None, html: str | None) -> bool:
    """Whether conn.log is written by a forked child while this process writes the rest."""
    return bool(conn_log) and conn_log not in ("-", output) and (fmt != "table" or bool(html))


def _write_outputs(report: Report, fmt: str, output: str | None, force: bool, limit: int, at_ns: int | None,
                   conn_log: str | None, html: str | None, beside: int | None = None,
                   spool: writers.Spool | None = None) -> None:
    """What analyze and live write: the --format output (tables on the terminal), then conn.log and HTML.

    `beside`: the pid of a child already writing conn.log, else it is done here; `spool`: the JSON connection
    rows a child is writing, and then conn.log if spool.then (both started in analyze_cmd).
    """
    logged = spool if spool is not None and spool.then else None  # its child writes conn.log after the rows
    if beside is None and conn_log and logged is None and _conn_log_beside(fmt, output, conn_log, html):
        beside = _beside(lambda: writers.write(report, "zeek", conn_log, force))
    try:
        _write_main(report, fmt, output, force, limit, at_ns, html, spool)
    except BaseException:
        if beside is not None:
            os.waitpid(beside, 0)  # this process's own error is the one reported
        raise
    if logged is not None:
        logged.finish()
    elif beside is not None:
        forks.join(beside)
    elif conn_log:
        writers.write(report, "zeek", conn_log, force)


def _beside(work: Callable[[], None]) -> int | None:
    """Run `work` in a forked child, on the other core, while this process goes on (forks.spawn); the child's
    pid, or None where forking is not safe and the caller does the work itself."""
    if _preloading is not None:
        _preloading.join()  # done by now on any real capture; the fork must not copy a half-held import lock
    return forks.spawn(work)


def _write_main(report: Report, fmt: str, output: str | None, force: bool, limit: int, at_ns: int | None,
                html: str | None, spool: writers.Spool | None = None) -> None:
    """The --format output (its JSON connection rows from `spool`, if one was started), then HTML."""
    if fmt == "table":
        from rich.console import Console

        from .terminal import render
        if output and output != "-":
            with writers.atomic_output(output, force) as fh:
                render(report, Console(file=fh, highlight=False, width=200), limit, at_ns)
        else:
            render(report, Console(file=sys.stdout, highlight=False, width=None if sys.stdout.isatty() else 200),
                   limit, at_ns)
    else:
        writers.write(report, fmt, output or "-", force, spool=spool)
    if html:
        from .html import write_html
        write_html(report, html, force)


@app.command("analyze")
def analyze_cmd(
    captures: Annotated[list[str], typer.Argument(help="pcap / pcapng files (gzip is fine); '-' reads stdin", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json, jsonl, csv, parquet or zeek (a conn.log)")] = "table",
    output: Annotated[str | None, typer.Option("--output", "-o", help="write the --format output here; '-' is stdout (the default)")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite output files that exist")] = False,
    at: Annotated[str | None, typer.Option("--at", help="also show socket states at this instant: epoch seconds, +SECONDS from the first packet, or ISO 8601")] = None,
    limit: Annotated[int, typer.Option("--limit", help="connections shown in the terminal table")] = 50,
    time_wait: Annotated[float, typer.Option("--time-wait", help="TIME_WAIT length in seconds (2 MSL; Linux: 60)")] = 60.0,
    fin_timeout: Annotated[float, typer.Option("--fin-timeout", help="FIN_WAIT_2 timeout in seconds (tcp_fin_timeout)")] = 60.0,
    idle_timeout: Annotated[float, typer.Option("--idle-timeout", help="seconds of silence after which a 4-tuple starts a new connection")] = 300.0,
    checksums: Annotated[bool, typer.Option("--checksums/--no-checksums", help="drop segments with bad checksums (Zeek's default); turn off for captures taken with checksum offload")] = True,
    batch_frames: Annotated[int, typer.Option("--batch-frames", help="frames decoded per batch (memory/speed trade-off)")] = DEFAULT_BATCH,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback on errors")] = False,
    fail_on: Annotated[str | None, typer.Option("--fail-on", help="exit 1 when a finding at or above this severity exists: info, notice, warning or error")] = None,
    kinds: Annotated[str | None, typer.Option("--detectors", help="run only these finding kinds (comma-separated; see --list-detectors)")] = None,
    ephemeral_ports: Annotated[int, typer.Option("--ephemeral-ports", help="size of the clients' ephemeral port range (Linux default 32768-60999: 28232)")] = 28232,
    html: Annotated[str | None, typer.Option("--html", help="also write the HTML session timeline report here")] = None,
    conn_log: Annotated[str | None, typer.Option("--conn-log", help="also write Zeek's conn.log (TSV) here")] = None,
    list_detectors: Annotated[bool, typer.Option("--list-detectors", is_eager=True, callback=_list_detectors, help="list the finding kinds and exit")] = False,
) -> None:
    """Analyse captures: connections, both endpoints' states, findings, and the end-of-capture socket counts."""
    with _one_shot():
        try:
            if fmt not in FORMATS:
                raise CaptureError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
            if batch_frames < 1:
                raise CaptureError("--batch-frames must be at least 1")
            if output and writers.clobbers(output) and not force:
                raise writers.OutputExists(f"{output}: exists; use --force to overwrite it")
            if fail_on is not None and fail_on not in SEVERITIES:
                raise CaptureError(f"--fail-on {fail_on}: choose one of {', '.join(SEVERITIES)}")
            for extra in (html, conn_log):
                if extra and writers.clobbers(extra) and not force:
                    raise writers.OutputExists(f"{extra}: exists; use --force to overwrite it")
            params = Params(time_wait=time_wait, fin_timeout=fin_timeout, idle_timeout=idle_timeout, checksums=checksums)
            settings = Settings(time_wait=time_wait, ephemeral_ports=ephemeral_ports)
            beside: list[int] = []  # the conn.log writer, forked as soon as the tables are built...
            spools: list[writers.Spool] = []  # ...or the JSON connection rows

            def tables_ready(built: Report) -> None:
                # None needs the findings, so all are written on the other core while the detectors run: the
                # JSON connection rows and state counts, then conn.log, by one child (two at once held both
                # children's memory: 20 MB at 4 M packets); else conn.log alone.
                log = partial(writers.write, built, "zeek", conn_log, force) \
                    if conn_log and _conn_log_beside(fmt, output, conn_log, html) else None
                if fmt == "json" and (spool := writers.spool_rows(built.connections, _beside, output or "-", log,
                                                                  built.states_at)):
                    spools.append(spool)
                elif log is not None:
                    pid = _beside(log)
                    beside.extend([pid] if pid is not None else [])

            try:
                report = _run(captures, params, batch_frames, quiet, _shown(terminal=fmt == "table", html=bool(html), fmt=fmt),
                              keep_segments=html is not None, settings=settings, only=_kinds(kinds),
                              tables_ready=tables_ready)
                at_ns = parse_instant(at, report.capture.first_ns) if at else None
            except BaseException:
                for pid in beside:
                    os.waitpid(pid, 0)  # this process's own error is the one reported
                for spool in spools:
                    spool.close()
                raise
            try:
                _write_outputs(report, fmt, output, force, limit, at_ns, conn_log, html, beside[0] if beside else None,
                               spools[0] if spools else None)
            finally:
                for spool in spools:
                    spool.close()
        except CaptureError as exc:
            fail(exc, debug)
        except (OSError, ValueError, MemoryError, forks.ChildFailed) as exc:
            fail(exc, debug)
        if fail_on is not None and _worst(report, fail_on):
            raise typer.Exit(1)


@app.command("report")
def report_cmd(
    captures: Annotated[list[str], typer.Argument(help="pcap / pcapng files (gzip is fine); '-' reads stdin", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="the HTML file to write (self-contained: opens offline)")] = "report.html",
    force: Annotated[bool, typer.Option("--force", help="overwrite the output file if it exists")] = False,
    checksums: Annotated[bool, typer.Option("--checksums/--no-checksums", help="drop segments with bad checksums (Zeek's default)")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback on errors")] = False,
) -> None:
    """Write the HTML session timeline report: overview, timeline of every connection, ladders and graphs."""
    with _one_shot():
        try:
            if writers.clobbers(output) and not force:
                raise writers.OutputExists(f"{output}: exists; use --force to overwrite it")
            report = _run(captures, Params(checksums=checksums), DEFAULT_BATCH, quiet, _shown(terminal=False, html=True),
                          keep_segments=True)
            from .html import write_html
            write_html(report, output, force)
            err().print(f"wrote {output}: {len(report.connections)} connections, {len(report.findings)} findings",
                        markup=False)
        except CaptureError as exc:
            fail(exc, debug)
        except (OSError, ValueError, MemoryError, forks.ChildFailed) as exc:
            fail(exc, debug)


@app.command("live")
def live_cmd(
    interface: Annotated[str, typer.Option("--interface", "-i", help="capture on this interface (`tcpa interfaces` lists them)", show_default=False)],
    bpf: Annotated[str | None, typer.Option("--filter", "-f", help="capture filter (BPF syntax, as for tcpdump), e.g. 'tcp port 443'")] = None,
    duration: Annotated[float | None, typer.Option("--duration", help="stop after this many seconds")] = None,
    packets: Annotated[int | None, typer.Option("--packets", help="stop after this many packets")] = None,
    write: Annotated[str | None, typer.Option("--write", "-w", help="keep the raw capture here: pcap as captured, or pcapng when the name ends in .pcapng (converted with editcap)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json, jsonl, csv, parquet or zeek (a conn.log), as for analyze")] = "table",
    output: Annotated[str | None, typer.Option("--output", "-o", help="write the --format output here; '-' is stdout (the default)")] = None,
    html: Annotated[str | None, typer.Option("--html", help="also write the HTML session timeline report here")] = None,
    conn_log: Annotated[str | None, typer.Option("--conn-log", help="also write Zeek's conn.log (TSV) here")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite output files (and the -w file) that exist")] = False,
    limit: Annotated[int, typer.Option("--limit", help="connections shown in the final terminal table")] = 50,
    buffer: Annotated[int, typer.Option("--buffer", "-B", help="capture buffer in MiB (dumpcap -B); raise it if packets are dropped")] = 64,
    snaplen: Annotated[int | None, typer.Option("--snaplen", "-s", help="bytes kept per packet (dumpcap -s; default: whole packets)")] = None,
    time_wait: Annotated[float, typer.Option("--time-wait", help="TIME_WAIT length in seconds (2 MSL; Linux: 60)")] = 60.0,
    fin_timeout: Annotated[float, typer.Option("--fin-timeout", help="FIN_WAIT_2 timeout in seconds (tcp_fin_timeout)")] = 60.0,
    idle_timeout: Annotated[float, typer.Option("--idle-timeout", help="seconds of silence after which a 4-tuple starts a new connection")] = 300.0,
    checksums: Annotated[bool, typer.Option("--checksums/--no-checksums", help="drop segments with bad checksums; off by default here, since a capturing host's own segments carry unfinished checksums (offload)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no live view")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback on errors")] = False,
    fail_on: Annotated[str | None, typer.Option("--fail-on", help="exit 1 when a finding at or above this severity exists: info, notice, warning or error")] = None,
    kinds: Annotated[str | None, typer.Option("--detectors", help="run only these finding kinds (comma-separated; see analyze --list-detectors)")] = None,
    ephemeral_ports: Annotated[int, typer.Option("--ephemeral-ports", help="size of the clients' ephemeral port range (Linux default 32768-60999: 28232)")] = 28232,
) -> None:
    """Capture on an interface (with dumpcap, from tshark) and analyse as it happens; Ctrl-C stops.

    A live view shows connections by state, sockets per host:port and the newest findings; at the end the
    same outputs as `tcpa analyze` are printed and written. Exit code 2 when the capture could not start or
    failed on the way (what was captured is still analysed and written).
    """
    from . import live

    _preload(terminal=True, html=bool(html), fmt=fmt)
    failure = None
    try:
        if fmt not in FORMATS:
            raise CaptureError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
        if fail_on is not None and fail_on not in SEVERITIES:
            raise CaptureError(f"--fail-on {fail_on}: choose one of {', '.join(SEVERITIES)}")
        if duration is not None and duration <= 0:
            raise CaptureError("--duration must be more than 0 seconds")
        if packets is not None and packets < 1:
            raise CaptureError("--packets must be at least 1")
        for extra in (output if output != "-" else None, html):
            if extra and writers.clobbers(extra) and not force:
                raise writers.OutputExists(f"{extra}: exists; use --force to overwrite it")
        opts = live.LiveOptions(
            interface=interface, bpf=bpf, duration=duration, packets=packets, write=write, force=force,
            buffer_mib=buffer, snaplen=snaplen,
            params=Params(time_wait=time_wait, fin_timeout=fin_timeout, idle_timeout=idle_timeout, checksums=checksums),
            settings=Settings(time_wait=time_wait, ephemeral_ports=ephemeral_ports), only=_kinds(kinds),
            keep_segments=html is not None, view=not quiet and err().is_terminal)

        def ready(dump: live.Dumpcap) -> None:
            err().print(f"tcpa: capturing on {interface} (dumpcap pid {dump.proc.pid}); Ctrl-C stops", markup=False)

        result = live.run(opts, console=err(), on_ready=ready)
        report, failure = result.report, result.failure
        _write_outputs(report, fmt, output, force, limit, None, conn_log, html)
        if result.saved:
            err().print(f"tcpa: raw capture written to {result.saved}", markup=False)
    except CaptureError as exc:
        fail(exc, debug)
    except (OSError, ValueError, MemoryError, forks.ChildFailed) as exc:
        fail(exc, debug)
    if failure:
        fail(CaptureError(failure + " (what was captured before is analysed above)"), debug)
    if fail_on is not None and _worst(report, fail_on):
        raise typer.Exit(1)


@app.command("interfaces")
def interfaces_cmd(
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback on errors")] = False,
) -> None:
    """List the capture interfaces (tshark -D): use a name with `tcpa live -i NAME`."""
    from . import live

    try:
        for line in live.interfaces():
            print(line)
    except CaptureError as exc:
        fail(exc, debug)


def fail(exc: BaseException, debug: bool) -> None:
    """One clear line on stderr and exit code 2; the traceback only with --debug."""
    if isinstance(exc, forks.ChildFailed):  # the child has said what went wrong
        raise typer.Exit(exc.code)
    if isinstance(exc, BrokenPipeError):  # the reader of stdout went away (`| head`): end as a SIGPIPE'd tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(128 + 13)
    if debug:
        err().print_exception()
    sys.stderr.write(f"tcpa: error: {forks.one_line(exc)}\n")
    raise typer.Exit(2)


_preloading: threading.Thread | None = None
REPORT_MODULES = ("analyzer.report", "analyzer.connections", "analyzer.detectors", *(
    f"analyzer.detectors.{m}" for m in ("closing", "handshake", "load", "stalls", "timestamps", "wireshark")),
    "analyzer.splice", "pandas.core.reshape.reshape")  # first used late
ARROW_MODULES = ("pyarrow", "pyarrow.pandas_compat", "pyarrow.vendored.version", "pyarrow.parquet")  # for Parquet


def _shown(terminal: bool, html: bool, fmt: str = "table") -> list[str]:
    """The modules that show or write a report which the command's options will use: the terminal tables, the
    HTML, pyarrow for Parquet (ARROW_MODULES; without them pandas is imported without pyarrow: see _import)."""
    return [*(["analyzer.terminal"] if terminal else []), *(["analyzer.html"] if html else []),
            *(ARROW_MODULES if fmt == "parquet" else [])]


def _import(names: list[str]) -> None:
    """Import these modules; one that fails to load fails again, with its error, where it is used.

    In a process that ends with the command (main()), pandas is imported without pyarrow unless `names` asks
    for it: pandas loads pyarrow whenever it is installed, to hold text columns in Arrow arrays, and that took
    26 MB and 70 ms of CPU, more than the report's text columns gain (2 M packets: 223 -> 189 MB for the process
    tree, CPU -5 %). pandas then holds text as Python strings; every output is the same byte for byte. An
    in-process caller keeps the pandas it has or gets.
    """
    import importlib

    hide = _ending and "pandas" not in sys.modules and "pyarrow" not in sys.modules and "pyarrow" not in names
    if hide:
        sys.modules["pyarrow"] = None  # type: ignore[assignment]  # pandas' optional import of it fails
    try:
        importlib.import_module("pandas")
    except Exception:  # noqa: BLE001 - reported where it is used
        return
    finally:
        if hide:
            del sys.modules["pyarrow"]  # Parquet, if asked for later after all, imports it then
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - reported where the module is used
            return


def _preload(terminal: bool, html: bool, fmt: str) -> None:
    """Start importing pandas and the modules that build the report (REPORT_MODULES), and those that show it
    which the command's options will use, in a thread, while the live capture starts (`tcpa analyze` imports
    them while a forked child reads the capture: see _run)."""
    global _preloading
    _preloading = threading.Thread(target=_import, args=([*REPORT_MODULES, *_shown(terminal, html, fmt)],),
                                   name="tcpa-preload", daemon=True)
    _preloading.start()


def main() -> None:
    """Console-script entry point.

    Once the command is done (every output written, closed and renamed into place) the process ends without
    the interpreter's teardown, which on a large capture spends most of a second freeing objects one by one.
    """
    global _ending
    heap.pin_mmap_threshold()
    heap.arrow_on_glibc()
    _ending = True
    code: int | str | None = 0
    try:
        app()
    except SystemExit as done:
        code = done.code
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError as exc:  # a closed pipe: nothing more can reach it
            if isinstance(exc, BrokenPipeError) and stream is sys.stdout and not code:
                code = 128 + 13  # the output's reader left before the end of it, as in fail()
    if isinstance(code, str):  # SystemExit("message"): print it as Python would
        print(code, file=sys.stderr, flush=True)
        code = 1
    os._exit(code or 0)


if __name__ == "__main__":
    main()
