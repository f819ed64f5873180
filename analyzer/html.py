"""The interactive HTML report: one self-contained file (no network), drawn by inline JavaScript.

The page has three parts: an overview of the capture rendered here by Jinja2 (autoescaped), a timeline of every
connection drawn on one <canvas>, and a per-connection detail (ladder diagram and time-sequence graph) drawn
in SVG on demand. Everything the script needs travels as one JSON document in a
<script type="application/json"> block, with `<`, `>` and `&` written as \\u003c... so capture text can never
close that block. The script only ever puts capture strings into the page as text nodes.

Big captures: every connection is embedded, but per connection only the first HEAD and last TAIL segments plus
every segment that carries an event or a state transition; the page says where segments were left out.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from .report import Report
from .writers import atomic_output

HEAD, TAIL = 300, 100  # segments embedded per connection, besides those with events or transitions
UNPINNED = ("ack_rtt", "data_after_peer_fin")  # per-ACK measurements and internal marks: not drawn as events


def _pinned(events: pd.DataFrame) -> pd.DataFrame:
    """The events worth a marker on the ladder (Wireshark's expert flags)."""
    return events[~events["kind"].astype(str).isin(UNPINNED)]
STATE_ROWS = 100  # rows of the end-of-capture socket table (the busiest host/service pairs first)

LINKTYPES = {0: "BSD loopback", 1: "Ethernet", 12: "raw IP", 14: "raw IP", 101: "raw IP", 108: "OpenBSD loopback",
             113: "Linux cooked (SLL)", 228: "raw IPv4", 229: "raw IPv6", 276: "Linux cooked v2 (SLL2)"}

# Columns of each connection row in the embedded JSON, in order (the script reads them by these names).
CONN_FIELDS = ["uid", "orig_h", "orig_p", "resp_h", "resp_p", "t0", "t1", "conn_state", "close", "history",
               "orig_pkts", "resp_pkts", "orig_bytes", "resp_bytes", "orig_state", "resp_state", "active_closer",
               "reset_by", "handshake_rtt_ms", "orig_mss", "orig_wscale", "orig_sack_perm", "orig_timestamps",
               "resp_mss", "resp_wscale", "resp_sack_perm", "resp_timestamps", "started"]
# Columns of each embedded segment: time is microseconds since the connection's first segment, seq/ack are
# relative to each side's first sequence number; `x` holds options and gaps only when there are any.
SEG_FIELDS = ["frame", "t", "dir", "flags", "seq", "ack", "len", "win", "x"]

_env = Environment(loader=PackageLoader("analyzer", "templates"), autoescape=True, trim_blocks=True,
                   lstrip_blocks=True)


def _asset(name: str) -> str:
    """An inline asset (script or stylesheet) shipped beside the template."""
    return (resources.files("analyzer") / "templates" / name).read_text(encoding="utf-8")


def _plain(value: Any) -> Any:
    """A JSON-ready value: numpy scalars and arrays unboxed, NaN/NA as null, anything else odd as text."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, pd.Timestamp):
        return value.value
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def safe_json(data: Any) -> Markup:
    """JSON for a <script type="application/json"> block: no `<`, `>` or `&` can end or bend the block."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    text = text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return Markup(text)


def _signed32(values: np.ndarray) -> np.ndarray:
    """Sequence-number differences folded into -2**31..2**31-1 (wraparound-safe)."""
    return ((values + 2**31) % 2**32) - 2**31


def _segments(report: Report, index: dict[int, int], base_ns: dict[int, int]) -> dict[str, Any]:
    """Embedded segments per connection index, capped, with the omitted runs recorded on the next kept row."""
    pk = report.packets
    out: dict[str, Any] = {}
    if pk is None or pk.empty:
        return out
    pk = pk.sort_values(["conn", "frame"], kind="stable").reset_index(drop=True)
    conn = pk["conn"].to_numpy()
    isorig = (pk["dir"] == "orig").to_numpy()
    seq = pk["seq"].to_numpy(np.int64)
    ack = pk["ack"].to_numpy(np.int64)
    # Each side's first sequence number; the ACK of one side is relative to the other side's.
    first = pk.groupby(["conn", "dir"], sort=False)["seq"].first()
    own = pd.MultiIndex.from_arrays([pk["conn"], pk["dir"]])
    peer = pd.MultiIndex.from_arrays([pk["conn"], np.where(isorig, "resp", "orig")])
    own_isn = first.reindex(own).to_numpy(np.float64)
    peer_isn = first.reindex(peer).to_numpy(np.float64)
    rseq = _signed32(seq - np.nan_to_num(own_isn).astype(np.int64))
    rack = np.where(np.isnan(peer_isn), ack, _signed32(ack - np.nan_to_num(peer_isn).astype(np.int64)))
    flags = pk["flags"].to_numpy(np.int64)
    rack = np.where(flags & 16, rack, 0)

    # Which segments to keep: head, tail, and any with an event or a state transition.
    rank = pk.groupby("conn", sort=False).cumcount().to_numpy()
    size = pk.groupby("conn", sort=False)["frame"].transform("size").to_numpy()
    marked = set(_pinned(report.events)["frame"].tolist()) if not report.events.empty else set()
    marked |= set(report.transitions["frame"].tolist())
    keep = (rank < HEAD) | (rank >= size - TAIL) | pk["frame"].isin(marked).to_numpy()
    length = pk["len"].to_numpy(np.int64)
    cum_len = np.cumsum(length)
    ts = pk["ts_ns"].to_numpy(np.int64)

    cols = {c: pk[c].tolist() for c in ("mss", "wscale", "sack_perm", "tsval", "tsecr", "sack_count", "sack_left0",
                                        "sack_right0", "win", "frame")}
    conn_l, orig_l, flags_l, rank_l = conn.tolist(), isorig.tolist(), flags.tolist(), rank.tolist()
    rseq_l, rack_l, len_l, ts_l, cum_l = rseq.tolist(), rack.tolist(), length.tolist(), ts.tolist(), cum_len.tolist()
    peer_l = np.nan_to_num(peer_isn, nan=0.0).astype(np.int64).tolist()
    last_kept = -1
    prev_conn = -1
    rows: list[list[Any]] = []
    for i in np.flatnonzero(keep).tolist():
        c = conn_l[i]
        if c not in index:
            continue
        if c != prev_conn:
            if rows:
                out[str(index[prev_conn])] = rows
            prev_conn, last_kept, rows = c, i - rank_l[i] - 1, []
        x: dict[str, Any] = {}
        fl = flags_l[i]
        if fl & 2:
            if cols["mss"][i] >= 0:
                x["mss"] = cols["mss"][i]
            if cols["wscale"][i] >= 0:
                x["ws"] = cols["wscale"][i]
            if cols["sack_perm"][i]:
                x["sp"] = 1
            if cols["tsval"][i] >= 0:
                x["ts"] = [cols["tsval"][i], cols["tsecr"][i]]
        if cols["sack_count"][i] > 0:
            # SACK edges are relative to the sequence space the ACK speaks of (the peer's).
            left = (cols["sack_left0"][i] - peer_l[i] + 2**31) % 2**32 - 2**31
            right = (cols["sack_right0"][i] - peer_l[i] + 2**31) % 2**32 - 2**31
            x["sack"] = [left, right, cols["sack_count"][i]]
        if i - last_kept > 1:  # segments left out just before this one
            gap_from = last_kept + 1
            gap_bytes = cum_l[i - 1] - (cum_l[gap_from - 1] if gap_from > 0 else 0)
            x["gap"] = [i - last_kept - 1, gap_bytes, (ts_l[i - 1] - ts_l[gap_from]) // 1000]
        last_kept = i
        row = [cols["frame"][i], (ts_l[i] - base_ns[c]) // 1000, 0 if orig_l[i] else 1, fl, rseq_l[i], rack_l[i],
               len_l[i], cols["win"][i]]
        if x:
            row.append(x)
        rows.append(row)
    if rows:
        out[str(index[prev_conn])] = rows
    return out


def _finding_time(value: Any) -> int | None:
    """A finding's `ts` as epoch nanoseconds, whatever unit it came in."""
    if isinstance(value, pd.Timestamp):
        return int(value.value)
    if isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(float(value)):
        v = float(value)
        return int(v) if v > 1e14 else int(v * 1e9) if v > 0 else None
    return None


class Strings:
    """A string table: repeated text (states, kinds, explanations) travels once and is referred to by index."""

    def __init__(self) -> None:
        self.table: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, text: Any) -> int | None:
        if text is None:
            return None
        key = str(text)
        n = self._index.get(key)
        if n is None:
            n = self._index[key] = len(self.table)
            self.table.append(key)
        return n


def _column(series: pd.Series) -> list[Any]:
    """A column as plain Python values, missing ones as None."""
    return [_plain(v) for v in series.astype(object).where(series.notna(), None).tolist()]


def _findings(report: Report, strings: Strings, uid_index: dict[str, int], frame_conn: dict[int, int],
              frame_ns: dict[int, int], t_base: int) -> dict[str, Any]:
    """Findings as columns; text columns through the string table, plus the connections each one concerns."""
    table = report.findings
    if table is None or table.empty:
        return {"fields": [], "interned": [], "rows": []}
    fields = list(table.columns)
    cols: dict[str, list[Any]] = {}
    interned = []
    for name in fields:
        values = _column(table[name])
        if name != "frames" and all(v is None or isinstance(v, str) for v in values):
            values = [strings(v) for v in values]
            interned.append(name)
        cols[name] = values
    stamps = table["ts"].tolist() if "ts" in table else [None] * len(table)
    frames = [[int(x) for x in (v if isinstance(v, list) else []) if isinstance(x, (int, float))]
              for v in cols.get("frames", [[]] * len(table))]
    uids = table["uid"].astype(object).where(table["uid"].notna(), "").tolist() if "uid" in table else [""] * len(table)
    conns, times = [], []
    for n, (uid, fr) in enumerate(zip(uids, frames)):
        own = uid_index.get(str(uid))
        # A host-level finding (no uid) concerns the connections its frames belong to.
        related = [own] if own is not None else sorted({frame_conn[f] for f in fr if f in frame_conn})
        conns.append(related)
        when = _finding_time(stamps[n])
        if when is None and fr and fr[0] in frame_ns:
            when = frame_ns[fr[0]]
        times.append(None if when is None else (when - t_base) // 1000)
    cols["frames"] = frames
    fields += ["conns", "t"]
    cols["conns"], cols["t"] = conns, times
    return {"fields": fields, "interned": interned, "rows": [list(r) for r in zip(*(cols[f] for f in fields))]}


INTERNED = {"conn_state", "close", "history", "orig_state", "resp_state", "active_closer", "reset_by", "started"}


def build_data(report: Report) -> dict[str, Any]:
    """Everything the page's script draws, as plain JSON-ready data (strings marked `S` index `strings`)."""
    facts = report.capture
    t_base = facts.first_ns
    strings = Strings()
    conns = report.connections.sort_values(["first_ns", "uid"], kind="stable").reset_index(drop=True)
    index = {int(c): i for i, c in enumerate(conns["conn"].tolist())}
    uid_index = {u: i for i, u in enumerate(conns["uid"].tolist())}
    base_ns = dict(zip(conns["conn"].astype(int).tolist(), conns["first_ns"].astype(int).tolist()))
    table = conns.assign(t0=(conns["first_ns"] - t_base) // 1000, t1=(conns["last_ns"] - t_base) // 1000)
    columns = []
    for name in CONN_FIELDS:
        values = _column(table[name]) if name in table else [None] * len(table)
        columns.append([strings(v) for v in values] if name in INTERNED else values)
    rows = [list(r) for r in zip(*columns)]

    transitions: dict[str, list[list[Any]]] = {}
    tr = report.transitions.sort_values(["conn", "ts_ns", "frame"], kind="stable")
    for c, ep, frm, to, ev, frame in zip(*(tr[k].tolist() for k in ("conn", "endpoint", "from_state", "to_state",
                                                                     "event", "frame"))):
        if c in index:
            transitions.setdefault(str(index[c]), []).append(
                [frame, 0 if ep == "orig" else 1, strings(frm), strings(to), strings(ev)])

    events: dict[str, list[list[Any]]] = {}
    if not report.events.empty:
        ev_df = _pinned(report.events).sort_values(["conn", "frame"], kind="stable")
        for c, frame, d, kind, value, ref in zip(*(ev_df[k].tolist() for k in ("conn", "frame", "dir", "kind", "value",
                                                                               "ref_frame"))):
            if c in index:
                events.setdefault(str(index[c]), []).append(
                    [frame, 0 if d == "orig" else 1, strings(kind), _plain(value), _plain(ref)])

    pk = report.packets
    frame_conn: dict[int, int] = {}
    frame_ns: dict[int, int] = {}
    if pk is not None and not pk.empty and report.findings is not None and not report.findings.empty:
        frames, owners, stamps = pk["frame"].tolist(), pk["conn"].tolist(), pk["ts_ns"].tolist()
        frame_conn = {f: index[c] for f, c in zip(frames, owners) if c in index}
        frame_ns = dict(zip(frames, stamps))
    findings = _findings(report, strings, uid_index, frame_conn, frame_ns, t_base)
    embedded = _segments(report, index, base_ns)
    return {
        "capture": {"source": facts.source, "first_ns": t_base, "span_us": (facts.last_ns - t_base) // 1000},
        "conn_fields": CONN_FIELDS, "interned": sorted(INTERNED), "seg_fields": SEG_FIELDS, "conns": rows,
        "segments": embedded, "transitions": transitions, "events": events, "findings": findings,
        "caps": [HEAD, TAIL], "strings": strings.table,
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A table as a list of dicts (empty for a missing or empty table)."""
    if frame is None or frame.empty:
        return []
    return [dict(zip(frame.columns, row)) for row in frame.itertuples(index=False, name=None)]


def _when(ns: int) -> str:
    """Epoch nanoseconds as an ISO UTC time with microseconds."""
    stamp = dt.datetime.fromtimestamp(ns // 10**9, dt.timezone.utc).replace(microsecond=(ns % 10**9) // 1000)
    return stamp.strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def _overview(report: Report) -> dict[str, Any]:
    """The overview's tables, as plain values for the template."""
    f = report.capture
    conns = report.connections
    states = report.states_at(None)
    state_cols = [c for c in states.columns if c not in ("host", "role", "service")]
    findings = report.findings if report.findings is not None else pd.DataFrame()
    by_kind: list[tuple[str, dict[str, int], int]] = []
    severities = ["error", "warning", "notice", "info"]
    if not findings.empty:
        counts = Counter(zip(findings["kind"].astype(str), findings["severity"].astype(str)))
        totals = Counter[str]()
        for (kind, _), n in counts.items():
            totals[kind] += n
        kinds = sorted(totals, key=lambda k: (-totals[k], k))  # most frequent first, ties by name (stable output)
        extra = sorted({s for _, s in counts} - set(severities))
        severities += extra
        by_kind = [(k, {s: counts.get((k, s), 0) for s in severities}, sum(counts[(k, s)] for s in severities))
                   for k in kinds]
    return {
        "source": f.source, "format": f.file_format + (" (gzip)" if f.compressed else ""),
        "frames": f.frames, "segments": report.segments, "bytes": f.bytes_captured,
        "first": _when(f.first_ns) if f.frames else "-", "last": _when(f.last_ns) if f.frames else "-",
        "span": f"{(f.last_ns - f.first_ns) / 1e9:.6f} s",
        "linktypes": sorted({f"{LINKTYPES.get(i.linktype, 'linktype')} ({i.linktype})" for i in f.interfaces}),
        "interfaces": [(i.name, i.description, i.linktype) for i in f.interfaces],
        "comments": list(f.comments), "notices": [(n.frame, n.kind, n.message) for n in f.notices],
        "skipped": sorted(report.skipped.items()),
        "n_conns": len(conns),
        "by_close": Counter(conns["close"].astype(str)).most_common() if len(conns) else [],
        "by_state": Counter(conns["conn_state"].astype(str)).most_common() if len(conns) else [],
        "states_cols": state_cols,
        "states": [(r["host"], r["role"], r["service"], [int(r[c]) for c in state_cols])
                   for r in _records(states.head(STATE_ROWS))],
        "states_more": max(len(states) - STATE_ROWS, 0),
        "states_sum": [int(states[c].sum()) for c in state_cols],
        "severities": severities, "by_kind": by_kind, "n_findings": len(findings),
    }


def render_html(report: Report) -> str:
    """The whole report page as one self-contained HTML string."""
    from . import __version__

    template = _env.get_template("report.html.j2")
    return template.render(
        o=_overview(report), data=safe_json(build_data(report)),
        script=Markup(_asset("report.js")), style=Markup(_asset("report.css")),
        version=__version__,
    )


def write_html(report: Report, path: str, force: bool = False) -> None:
    """Write the HTML report to path ("-": stdout), atomically; OutputExists unless force."""
    page = render_html(report)
    with atomic_output(path, force) as fh:
        fh.write(page)
