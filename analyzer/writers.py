"""Machine-readable outputs: JSON, JSON lines, CSV, Parquet and Zeek's conn.log.

Every file is written to a temporary name beside the target and renamed into place, so an interrupted run
leaves no half-written report; an existing file is replaced only when the caller says so.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pandas as pd

from .model import CaptureError
from .report import SCHEMA_VERSION, Report

FORMATS = ("table", "json", "jsonl", "csv", "parquet", "zeek")


class OutputExists(CaptureError):
    """The output file exists and --force was not given."""


@contextmanager
def atomic_output(path: str, force: bool, binary: bool = False) -> Iterator[IO[Any]]:
    """A file object for `path` ("-" is stdout) that appears only complete, and never clobbers by surprise."""
    if path == "-":
        yield sys.stdout.buffer if binary else sys.stdout
        return
    target = Path(path)
    if target.exists() and not force:
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
    """A JSON-ready value: numpy scalars unboxed, NaN/NA as null."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A table as a list of plain dicts."""
    cols = list(frame.columns)
    return [{c: _plain(v) for c, v in zip(cols, row)} for row in frame.itertuples(index=False, name=None)]


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


def to_json(report: Report, fh: IO[str]) -> None:
    """One JSON object: schema, capture, connections, findings and the end-of-capture state counts."""
    json.dump({
        "schema": SCHEMA_VERSION,
        "capture": capture_facts(report),
        "connections": records(report.connections),
        "findings": records(report.findings),
        "states_at_end": records(report.states_at()),
    }, fh, indent=1, default=str)
    fh.write("\n")


def to_jsonl(report: Report, fh: IO[str]) -> None:
    """One connection per line."""
    for rec in records(report.connections):
        fh.write(json.dumps(rec, default=str) + "\n")


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


def zeek_escape(text: str) -> str:
    """Zeek's log escaping: separators and non-printable bytes as \\xNN; '-' and '(empty)' kept unambiguous."""
    out = []
    for ch in text:
        o = ord(ch)
        out.append(f"\\x{o:02x}" if o < 0x20 or o == 0x7F or ch in "\t\\," or o > 0x7E else ch)
    s = "".join(out)
    return "\\x2d" if s == "-" else s


def _zeek_row(c: dict[str, Any]) -> list[str]:
    dur = c["zeek_duration"]
    has_dur = dur is not None and dur > 0
    return [
        f"{c['ts']:.6f}", zeek_escape(c["uid"]), zeek_escape(c["orig_h"]), str(c["orig_p"]), zeek_escape(c["resp_h"]),
        str(c["resp_p"]), "tcp", "-", f"{dur:.6f}" if has_dur else "-",
        str(c["orig_bytes"]) if has_dur else "-", str(c["resp_bytes"]) if has_dur else "-", c["conn_state"],
        "-", "-", "0", zeek_escape(c["history"]) or "-", str(c["orig_pkts"]), str(c["orig_ip_bytes"]),
        str(c["resp_pkts"]), str(c["resp_ip_bytes"]), zeek_escape(c["tunnel"]) or "(empty)",
    ]


def to_zeek(report: Report, fh: IO[str]) -> None:
    """A Zeek TSV conn.log that zeek-cut reads."""
    opened = dt.datetime.fromtimestamp(report.capture.first_ns / 1e9, dt.timezone.utc)
    fh.write("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n")
    fh.write(f"#open\t{opened:%Y-%m-%d-%H-%M-%S}\n")
    fh.write("#fields\t" + "\t".join(n for n, _ in ZEEK_FIELDS) + "\n")
    fh.write("#types\t" + "\t".join(t for _, t in ZEEK_FIELDS) + "\n")
    for rec in records(report.connections.sort_values("ts", kind="stable")):
        fh.write("\t".join(_zeek_row(rec)) + "\n")
    closed = dt.datetime.fromtimestamp(report.capture.last_ns / 1e9, dt.timezone.utc)
    fh.write(f"#close\t{closed:%Y-%m-%d-%H-%M-%S}\n")


def to_parquet(report: Report, fh: IO[bytes]) -> None:
    """The connection table as Parquet; findings and capture facts ride along as file metadata (JSON)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(report.connections, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"tcpa.schema"] = SCHEMA_VERSION.encode()
    meta[b"tcpa.capture"] = json.dumps(capture_facts(report), default=str).encode()
    meta[b"tcpa.findings"] = json.dumps(records(report.findings), default=str).encode()
    pq.write_table(table.replace_schema_metadata(meta), fh)


TEXT_WRITERS: dict[str, Callable[[Report, IO[str]], None]] = {
    "json": to_json, "jsonl": to_jsonl, "csv": to_csv, "zeek": to_zeek,
}


def write(report: Report, fmt: str, path: str, force: bool) -> None:
    """Write the report in one machine format to path ("-": stdout)."""
    if fmt == "parquet":
        with atomic_output(path, force, binary=True) as fh:
            to_parquet(report, fh)
        return
    with atomic_output(path, force) as fh:
        TEXT_WRITERS[fmt](report, fh)
