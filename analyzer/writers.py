"""Machine-readable outputs: JSON, JSON lines, CSV, Parquet and Zeek's conn.log.

Every file is written to a temporary name beside the target and renamed into place, so an interrupted run
leaves no half-written report; an existing file is replaced only when the caller says so.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson

from . import forks, heap
from .model import SCHEMA_VERSION, CaptureError

if TYPE_CHECKING:  # pandas is imported by the report's modules, not to write files (see options.py)
    import pandas as pd

    from .report import Report


class OutputExists(CaptureError):
    """The output file exists and --force was not given."""


def clobbers(path: str) -> bool:
    """Whether writing `path` would replace something that exists (devices and pipes are written into)."""
    target = Path(path)
    return path != "-" and target.exists() and (target.is_file() or target.is_dir())


class _Whole(io.RawIOBase):
    """A file descriptor (stdout) that takes every write whole or raises. A pipe whose reader leaves during a
    large write takes part of it, and sys.stdout's BufferedWriter returns that short count, which no caller
    checks: the rest was dropped and the run ended with status 0 instead of as a SIGPIPE'd tool."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = view.nbytes
        while view:
            view = view[os.write(self.fd, view):]
        return size


@contextmanager
def atomic_output(path: str, force: bool, binary: bool = False) -> Iterator[IO[Any]]:
    """A file object for `path` ("-" is stdout) that appears only complete, and never clobbers by surprise."""
    if path == "-":
        sys.stdout.flush()
        try:
            fd = sys.stdout.fileno()
        except (OSError, ValueError):  # not a file descriptor (a test runner's capture): written as it is
            yield sys.stdout.buffer if binary else sys.stdout
            return
        out = io.BufferedWriter(_Whole(fd), 1 << 16)
        fh: IO[Any] = out if binary else io.TextIOWrapper(out, encoding="utf-8", write_through=True)
        yield fh
        fh.flush()
        return
    target = Path(path)
    if target.exists() and not target.is_file() and not target.is_dir():
        # a device or a named pipe (/dev/null, /dev/stdout, a FIFO): write into it; renaming a file over it
        # would replace the device node itself
        with open(target, "wb" if binary else "w", encoding=None if binary else "utf-8") as fh:
            yield fh
        return
    if clobbers(path) and not force:
        raise OutputExists(f"{path}: exists; use --force to overwrite it")
    if target.is_dir():
        raise CaptureError(f"{path}: is a directory")
    if not target.parent.exists():
        raise CaptureError(f"{path}: directory {target.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is an ordinary file
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as fh:
            yield fh
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def _plain(value: Any) -> Any:
    """What orjson cannot serialise natively (timestamps, numpy scalars in odd places): as text."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def column(values: pd.Series) -> list[Any]:
    """A column as plain Python values, missing ones (NaN, NA, NaT) as None."""
    out: list[Any] = values.tolist()
    for i in np.flatnonzero(values.isna().to_numpy()):
        out[i] = None
    return out


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A table as a list of plain dicts, built column by column."""
    names = [str(c) for c in frame.columns]
    return [dict(zip(names, row)) for row in zip(*(column(frame[c]) for c in frame.columns))] \
        if len(names) else [{} for _ in range(len(frame))]


def dumps(data: Any, indent: bool = False) -> bytes:
    """JSON bytes (orjson: numpy arrays and non-finite floats handled, the latter as null)."""
    opts = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(data, default=_plain, option=opts)


def capture_facts(report: Report) -> dict[str, Any]:
    """The `capture` object of the JSON output."""
    f = report.capture
    return {
        "source": f.source, "format": f.file_format, "compressed": f.compressed, "frames": f.frames,
        "bytes": f.bytes_captured, "first_ts": f.first_ns / 1e9, "last_ts": f.last_ns / 1e9,
        "tcp_segments": report.segments, "skipped": dict(report.skipped),
        "interfaces": [{"linktype": i.linktype, "snaplen": i.snaplen, "name": i.name,
                        "description": i.description} for i in f.interfaces],
        "comments": list(f.comments),
        "warnings": [{"frame": n.frame, "kind": n.kind, "message": n.message} for n in f.notices],
    }


CHUNK_ROWS = 4096  # rows turned into Python objects at a time while writing


Spawn = Callable[[Callable[[], None]], "int | None"]  # work run in a forked child: its pid, or None (forks.spawn)
SPOOL_MIN_ROWS = 4 * CHUNK_ROWS  # below this a second process costs more than it saves


PIECE_LIMIT = 1 << 31  # pieces, and bytes of text, in one block of rows: numbered and placed in 32 bits


class Pieces:
    """Text cut into pieces, numbered in the order added, from which splice.assemble lays out rows (a block of
    a few thousand at a time: piece numbers and offsets are 32-bit, half the memory of 64)."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = []
        self.starts: list[npt.NDArray[np.int32]] = []
        self.ends: list[npt.NDArray[np.int32]] = []
        self.size = self.count = 0

    def cut(self, blob: bytes, start: npt.NDArray[np.int64], end: npt.NDArray[np.int64]) -> int:
        """Add the pieces blob[start[k]:end[k]]; the number of the first."""
        first = self.count
        if self.size + len(blob) >= PIECE_LIMIT or self.count + len(start) >= PIECE_LIMIT:
            raise ValueError("a block of output rows over 2 GiB of text")
        self.blobs.append(blob)
        self.starts.append((start + self.size).astype(np.int32))
        self.ends.append((end + self.size).astype(np.int32))
        self.size += len(blob)
        self.count += len(start)
        return first

    def texts(self, texts: list[bytes]) -> int:
        """Add each text as a piece; the number of the first."""
        size = np.fromiter(map(len, texts), np.int64, len(texts))
        end = np.cumsum(size)
        return self.cut(b"".join(texts), end - size, end)

    def same(self, text: bytes, n: int) -> npt.NDArray[np.int64]:
        """Add `text` as one piece; its number n times (a column that holds it on every row)."""
        return np.full(n, self.texts([text]), np.int64)

    def listed(self, text: bytes, values: int) -> npt.NDArray[np.int64]:
        """Add the values of a JSON array (its text without the brackets, `values` of them), cut at its top-level
        commas; their pieces' numbers."""
        from .splice import commas

        at = np.empty(max(values, 1), np.int64)
        cuts = commas(np.frombuffer(text, np.uint8), at) if values else -1
        if cuts != values - 1:
            raise ValueError(f"a JSON array of {values} values cut into {cuts + 1}")
        return self.cut(text, np.append(0, at[:cuts] + 1), np.append(at[:cuts], len(text))) + np.arange(values)

    def rows(self, codes: npt.NDArray[np.integer[Any]], pre: npt.NDArray[np.int64]) -> memoryview:
        """The rows: for each row i and column j, piece pre[j] then piece codes[j, i] (splice.assemble)."""
        from .splice import assemble

        text = np.concatenate([np.frombuffer(b, np.uint8) for b in self.blobs])
        start, end = np.concatenate(self.starts), np.concatenate(self.ends)
        self.blobs, self.starts, self.ends = [], [], []  # not held twice while the rows are laid out (6 MB)
        size = end - start
        out = np.empty(int(size[codes].sum()) + codes.shape[1] * int(size[pre].sum()), np.uint8)
        assemble(np.ascontiguousarray(codes, np.int32), pre.astype(np.int32), text, start, end, out)
        return out.data


def _json_codes(values: pd.Series, pieces: Pieces) -> npt.NDArray[np.int64]:
    """Each value of a column in JSON, as dumps() writes it inside a row: its piece's number, a column at a time.

    Numbers and booleans go through orjson as one array, straight from numpy. Other columns go through their
    distinct values (a report's text columns repeat a few) where factorize can hash them, one by one
    otherwise (lists); those values too are one orjson array. Each array is cut into its values by a compiled
    pass.
    """
    import pandas as pd

    if len(values) == 0:
        return np.empty(0, np.int64)
    dtype = values.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":  # NaN is null either way, as in dumps()
        text = orjson.dumps(np.ascontiguousarray(values.to_numpy()), option=orjson.OPT_SERIALIZE_NUMPY)
        return pieces.listed(text[1:-1], len(values))
    if dtype == object:  # lists, dicts, mixed values: factorize would hash each, if it can at all
        return pieces.listed(dumps(column(values))[1:-1], len(values))
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    distinct = [*column(pd.Series(uniques)), None]  # None: code -1, a missing value
    return pieces.listed(dumps(distinct)[1:-1], len(distinct))[np.asarray(codes, np.int64)]


def json_block(frame: pd.DataFrame, end: bytes, last_end: bytes) -> bytes | memoryview:
    """The table's rows as compact JSON objects, each row's bytes what dumps() gives for its record, but without
    its closing brace: each row is followed by `end`, the last by `last_end`. Built column by column, the rows
    laid out by one compiled pass (Pieces.rows)."""
    n, width = len(frame), len(frame.columns)
    if n == 0:
        return b""
    pieces = Pieces()
    pre = pieces.texts([(b"{" if j == 0 else b",") + dumps(str(name)) + b":" for j, name in enumerate(frame.columns)]
                       + [b"" if width else b"{"]) + np.arange(width + 1)
    codes = np.empty((width + 1, n), np.int32)
    for j, name in enumerate(frame.columns):
        codes[j] = _json_codes(frame[name], pieces)
    codes[width] = pieces.texts([end, last_end]) + (np.arange(n) == n - 1)
    return pieces.rows(codes, pre)


def _blocks(frame: pd.DataFrame, end: bytes, last_end: bytes) -> Iterator[bytes | memoryview]:
    """json_block() of the table a few thousand rows at a time (bounded memory): every row followed by `end`
    except the table's last, followed by `last_end`."""
    for start in range(0, len(frame), CHUNK_ROWS):
        stop = start + CHUNK_ROWS
        yield json_block(frame.iloc[start:stop], end, last_end if stop >= len(frame) else end)


@dataclass
class Spool:
    """The connection rows in JSON, being written by a forked child before the detectors have run: each row's
    object without its closing brace, one per line, in an unlinked temporary file (beside the output, so it
    takes disk and page cache, not memory that cannot be reclaimed). to_json completes each row with the
    columns added since (the per-connection findings summary). The child may write the end-of-capture state
    counts' rows next, into a file of their own, then go on with other work (`then`: conn.log); it says when
    the rows, then the state counts, are written through a pipe."""

    pid: int
    fd: int
    ready: int  # the pipe: b"1" once every row is written, then b"2" once the state counts are
    columns: tuple[str, ...]
    then: bool = False  # the child writes something else after the rows
    states: int | None = None  # the file of the state counts' rows, if the child writes them
    rows_done: bool = False
    status: int | None = None  # the child's exit status, once it has ended
    closed: bool = False

    def join(self) -> None:
        """Wait for the rows (not for what the child does after them); ChildFailed if it failed before."""
        if not self.rows_done:
            if os.read(self.ready, 1) != b"1":  # it ended without them
                self.finish()
                raise OSError("the forked JSON writer ended without writing the connection rows")
            self.rows_done = True

    def states_text(self) -> bytes | None:
        """The state counts' rows in JSON, as _blocks() gives them, once the child has written them (after the
        connection rows); None where it was not asked to or the spool was let go of."""
        if self.states is None or self.closed:
            return None
        self.join()
        if os.read(self.ready, 1) != b"2":
            self.finish()
            raise OSError("the forked JSON writer ended without writing the state counts")
        os.lseek(self.states, 0, os.SEEK_SET)
        with open(self.states, "rb", closefd=False) as fh:
            return fh.read()

    def finish(self) -> None:
        """Wait for the child to end; ChildFailed if it failed."""
        if status := self._wait():
            raise forks.ChildFailed(status)

    def _wait(self) -> int:
        """The child's exit status, once it has ended (waited for once)."""
        if self.status is None:
            self.status = forks.wait(self.pid)
        return self.status

    def release(self) -> None:
        """Let go of what the child wrote (idempotent); the child may still be at its `then` work."""
        if not self.closed:
            self.closed = True
            for fd in (self.fd, self.ready, *([self.states] if self.states is not None else [])):
                os.close(fd)

    def close(self) -> None:
        """Wait for the child to end if it has not yet (its failure is not raised here), then release()."""
        self._wait()
        self.release()


def spool_rows(frame: pd.DataFrame, spawn: Spawn, output: str, then: Callable[[], None] | None = None,
               states: Callable[[], pd.DataFrame] | None = None) -> Spool | None:
    """Start serialising the table's rows in a forked child (see Spool), for the JSON output to `output` ("-":
    stdout), then the rows of the table `states()` gives (the state counts), then `then()`, in the same child;
    None where that is not possible or does not pay, and to_json does the rows itself."""
    if len(frame) < SPOOL_MIN_ROWS:
        return None
    near = None if output == "-" else os.path.dirname(os.path.abspath(output))
    fds: list[int] = []
    try:
        for _ in range(2 if states is not None else 1):
            fd, name = tempfile.mkstemp(prefix=".tcpa-rows-", dir=near)
            fds.append(fd)
            os.unlink(name)
    except OSError:  # no place for it: the output's own error, if any, is reported where it is written
        for fd in fds:
            os.close(fd)
        return None
    ready, done = os.pipe()

    def work() -> None:
        os.close(ready)
        with open(fds[0], "wb", closefd=False) as out:
            out.writelines(_blocks(frame, b"\n", b"\n"))  # the closing braces come with the columns added later
        os.write(done, b"1")
        heap.trim()
        if states is not None:
            with open(fds[1], "wb", closefd=False) as out:
                out.writelines(_blocks(states(), b"},\n", b"}"))
            os.write(done, b"2")
        os.close(done)
        heap.trim()
        if then is not None:
            then()

    pid = spawn(work)
    os.close(done)
    if pid is None:
        for fd in (*fds, ready):
            os.close(fd)
        return None
    return Spool(pid, fds[0], ready, tuple(str(c) for c in frame.columns), then is not None,
                 fds[1] if states is not None else None)


SPLICE_BYTES = 4 << 20  # the spool is read this much at a time


def _spooled(frame: pd.DataFrame, spool: Spool) -> Iterator[bytes | memoryview]:
    """The table's rows in JSON, one object per line with ",\\n" between them, from what the Spool's child
    wrote, each row completed with the columns the table gained since (splice.rows, a compiled pass)."""
    from .splice import NEWLINE
    from .splice import rows as splice_rows

    names = [str(c) for c in frame.columns]
    extra = names[len(spool.columns):]
    if tuple(names[:len(spool.columns)]) != spool.columns:  # not the table it was started on
        spool.close()
        yield from _blocks(frame, b"},\n", b"}")
        return
    try:
        spool.join()
        os.lseek(spool.fd, 0, os.SEEK_SET)
        codes, ends, end_at = _ends(frame[extra])
        widest = int(np.diff(end_at).max()) + 2
        buf, have, rows = np.empty(SPLICE_BYTES, np.uint8), 0, 0
        out = np.empty(0, np.uint8)  # reused: a fresh one per read left a few in the heap (15 MB at 2 M packets)
        done = np.zeros(3, np.int64)
        while True:
            if have == len(buf):  # a row longer than the buffer
                buf = np.concatenate([buf, np.empty(len(buf), np.uint8)])
            got = os.readv(spool.fd, [buf.data[have:]])
            if not got:
                break
            lines = int(np.count_nonzero(buf[have:have + got] == NEWLINE))  # what was left has none
            have += got
            if lines:
                if len(out) < have + lines * widest:
                    out = np.empty(have + lines * widest + (len(buf) >> 2), np.uint8)
                splice_rows(buf, have, rows, codes, ends, end_at, out, done)
                used, written, rows = int(done[0]), int(done[1]), rows + int(done[2])
                yield out.data[:written]
                buf[:have - used] = buf[used:have].copy()
                have -= used
        if have or rows != len(frame):
            raise OSError(f"the forked JSON writer gave {'more than ' if have else ''}{rows} connection rows for "
                          f"{len(frame)}")
    finally:
        if not spool.rows_done:
            spool.close()


def _ends(frame: pd.DataFrame) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """The end of each row's JSON object, its columns in `frame` and the closing brace, as splice.rows takes
    them: each row's code, the distinct ends' bytes one after another, and where each starts (and the last
    one ends). These few summary columns take a handful of distinct values: each is serialised once."""
    import pandas as pd

    key = np.zeros(len(frame), np.int64)
    for name in frame.columns:  # each distinct combination of values numbered, rows as they come
        codes, uniques = pd.factorize(frame[name], use_na_sentinel=False)
        key = np.unique(key * len(uniques) + codes, return_inverse=True)[1].ravel()
    _, first, code = np.unique(key, return_index=True, return_inverse=True)
    names = [str(c) for c in frame.columns]
    distinct = frame.iloc[first]
    texts = [b"," + dumps(dict(zip(names, v)))[1:] for v in zip(*(column(distinct[c]) for c in names))] \
        if names else [b"}"]  # no columns added: one end, the brace
    end_at = np.zeros(len(texts) + 1, np.int64)
    end_at[1:] = np.cumsum([len(t) for t in texts])
    return code.astype(np.int64).ravel(), np.frombuffer(b"".join(texts), np.uint8).copy(), end_at


def to_json(report: Report, fh: IO[bytes], spool: Spool | None = None) -> None:
    """One JSON object: schema, capture, connections, findings and the end-of-capture state counts.

    Written as it goes, one table row per line, so a large capture's report never sits in memory whole.
    The connection rows come from `spool` where one was started (spool_rows), and so do the state counts'
    where its child wrote them; else the state counts are computed first, while its child may still be
    writing the connection rows.
    """
    try:
        states = report.states_at() if spool is None or spool.states is None else None
        fh.write(b'{\n"schema": ' + dumps(SCHEMA_VERSION) + b',\n"capture": ' + dumps(capture_facts(report), True))
        conns, findings = report.connections, report.findings
        _member(fh, "connections", _spooled(conns, spool) if spool is not None else _blocks(conns, b"},\n", b"}"),
                len(conns) > 0)
        _member(fh, "findings", _blocks(findings, b"},\n", b"}"), len(findings) > 0)
        text = spool.states_text() if spool is not None else None  # None: not written there, or spool let go of
        if text is None:
            states = report.states_at() if states is None else states
            _member(fh, "states_at_end", _blocks(states, b"},\n", b"}"), len(states) > 0)
        else:
            _member(fh, "states_at_end", [text], len(text) > 0)
        fh.write(b"\n}\n")
    finally:
        if spool is not None:
            spool.release()  # what its child wrote (it may still be at its `then` work)


def _member(fh: IO[bytes], name: str, rows: Iterable[bytes | memoryview], any_rows: bool) -> None:
    """A table as a member of the JSON object: its name, then its rows (one a line) in brackets."""
    fh.write(b',\n"' + name.encode() + b'": [')
    if any_rows:
        fh.write(b"\n")
        for piece in rows:
            fh.write(piece)
        heap.trim()  # the blocks' memory, freed a few MB at a time, mostly stays in the heap otherwise
    fh.write(b"\n]" if any_rows else b"]")


def to_jsonl(report: Report, fh: IO[bytes]) -> None:
    """One connection per line."""
    for block in _blocks(report.connections, b"}\n", b"}\n"):
        fh.write(block)


def to_csv(report: Report, fh: IO[str]) -> None:
    """The connection table as CSV."""
    report.connections.to_csv(fh, index=False)


ZEEK_FIELDS = [
    ("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"), ("id.resp_h", "addr"),
    ("id.resp_p", "port"), ("proto", "enum"), ("service", "string"), ("duration", "interval"),
    ("orig_bytes", "count"), ("resp_bytes", "count"), ("conn_state", "string"), ("local_orig", "bool"),
    ("local_resp", "bool"), ("missed_bytes", "count"), ("history", "string"), ("orig_pkts", "count"),
    ("orig_ip_bytes", "count"), ("resp_pkts", "count"), ("resp_ip_bytes", "count"),
    ("tunnel_parents", "set[string]"),
]


_ZEEK_UNSAFE = re.compile(r"[^\x20-\x7e]|[\\,]")


def zeek_escape(text: str) -> str:
    """Zeek's log escaping: separators and non-printable bytes as \\xNN; '-' and '(empty)' kept unambiguous."""
    if text == "-":
        return "\\x2d"
    return _ZEEK_UNSAFE.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


ZEEK_COLUMNS = ["ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "zeek_duration", "orig_bytes", "resp_bytes",
                "conn_state", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "tunnel"]


def _zeek_text(values: pd.Series, empty: str, pieces: Pieces, escape: bool = True) -> npt.NDArray[np.int64]:
    """A text column for conn.log (its pieces' numbers), escaped, with `empty` for an empty value and '-'
    (unset) for a missing one."""
    import pandas as pd

    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    texts: list[str] = uniques.tolist()
    if escape and (_ZEEK_UNSAFE.search("".join(texts)) or "-" in texts):  # most captures need no escaping
        texts = [zeek_escape(t) for t in texts]
    texts = [t or empty for t in texts]
    texts.append("-")  # code -1
    return pieces.texts([t.encode() for t in texts]) + np.asarray(codes, np.int64) % len(texts)


def _zeek_numbers(values: pd.Series, pieces: Pieces, unset: npt.NDArray[np.bool_] | None = None,
                  fmt: str = "{}") -> npt.NDArray[np.int64]:
    """A numeric column for conn.log (its pieces' numbers), each value in `fmt`, '-' where `unset`."""
    if fmt == "{}" and values.dtype.kind in "iu":  # integers: as orjson writes them, in one call
        codes = pieces.listed(orjson.dumps(np.ascontiguousarray(values.to_numpy()),
                                           option=orjson.OPT_SERIALIZE_NUMPY)[1:-1], len(values))
    else:
        codes = pieces.texts([fmt.format(v).encode() for v in values.tolist()]) + np.arange(len(values))
    if unset is not None:
        codes[unset] = pieces.texts([b"-"])
    return codes


def _zeek_lines(conns: pd.DataFrame) -> str:
    """conn.log rows of the connections (ZEEK_COLUMNS), a column at a time, laid out by one compiled pass."""
    dur = conns["zeek_duration"]
    unset = ~(dur > 0).to_numpy()  # Zeek leaves duration and byte counts unset on a connection of one instant
    pieces = Pieces()
    tcp, unknown, zero = (pieces.same(text, len(conns)) for text in (b"tcp", b"-", b"0"))
    columns = [
        _zeek_numbers(conns["ts"], pieces, fmt="{:.6f}"), _zeek_text(conns["uid"], "", pieces),
        _zeek_text(conns["orig_h"], "", pieces), _zeek_numbers(conns["orig_p"], pieces),
        _zeek_text(conns["resp_h"], "", pieces), _zeek_numbers(conns["resp_p"], pieces), tcp, unknown,
        _zeek_numbers(dur, pieces, unset, "{:.6f}"), _zeek_numbers(conns["orig_bytes"], pieces, unset),
        _zeek_numbers(conns["resp_bytes"], pieces, unset), _zeek_text(conns["conn_state"], "", pieces, False),
        unknown, unknown, zero, _zeek_text(conns["history"], "-", pieces),
        *(_zeek_numbers(conns[c], pieces) for c in ("orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes")),
        _zeek_text(conns["tunnel"], "(empty)", pieces), pieces.same(b"\n", len(conns)),
    ]
    pre = pieces.texts([b"", b"\t"]) + np.array([0] + [1] * (len(columns) - 2) + [0])
    return bytes(pieces.rows(np.stack(columns), pre)).decode()


def to_zeek(report: Report, fh: IO[str]) -> None:
    """A Zeek TSV conn.log that zeek-cut reads."""
    opened = dt.datetime.fromtimestamp(report.capture.first_ns / 1e9, dt.timezone.utc)
    fh.write("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n")
    fh.write(f"#open\t{opened:%Y-%m-%d-%H-%M-%S}\n")
    fh.write("#fields\t" + "\t".join(n for n, _ in ZEEK_FIELDS) + "\n")
    fh.write("#types\t" + "\t".join(t for _, t in ZEEK_FIELDS) + "\n")
    conns = report.connections
    order = np.argsort(conns["ts"].to_numpy(), kind="stable")  # rows taken in time order a block at a time:
    columns = conns.columns.get_indexer(ZEEK_COLUMNS)           # no sorted copy of the table
    for start in range(0, len(conns), CHUNK_ROWS):
        fh.write(_zeek_lines(conns.iloc[order[start:start + CHUNK_ROWS], columns]))
    closed = dt.datetime.fromtimestamp(report.capture.last_ns / 1e9, dt.timezone.utc)
    fh.write(f"#close\t{closed:%Y-%m-%d-%H-%M-%S}\n")


def to_parquet(report: Report, fh: IO[bytes]) -> None:
    """The connection table as Parquet; findings and capture facts ride along as file metadata (JSON)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(report.connections, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"tcpa.schema"] = SCHEMA_VERSION.encode()
    meta[b"tcpa.capture"] = dumps(capture_facts(report))
    meta[b"tcpa.findings"] = dumps(records(report.findings))
    pq.write_table(table.replace_schema_metadata(meta), fh)


TEXT_WRITERS: dict[str, Callable[[Report, IO[str]], None]] = {"csv": to_csv, "zeek": to_zeek}
BINARY_WRITERS: dict[str, Callable[[Report, IO[bytes]], None]] = {
    "json": to_json, "jsonl": to_jsonl, "parquet": to_parquet,
}


def write(report: Report, fmt: str, path: str, force: bool, spool: Spool | None = None) -> None:
    """Write the report in one machine format to path ("-": stdout); `spool` as in to_json."""
    if spool is not None and fmt != "json":
        spool.close()
        spool = None
    if fmt in BINARY_WRITERS:
        writer = BINARY_WRITERS[fmt]
        with atomic_output(path, force, binary=True) as fh:
            if writer is to_json:
                to_json(report, fh, spool)
            else:
                writer(report, fh)
        return
    with atomic_output(path, force) as fh:
        TEXT_WRITERS[fmt](report, fh)
