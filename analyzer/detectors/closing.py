"""How connections end: three-packet and simultaneous closes, RSTs after a half-close, sockets stuck in
CLOSE_WAIT, FIN_WAIT_2 or LAST_ACK, and 4-tuples reused."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from . import Context, Finding, Kind, declare, detector, endpoint, evidence, group

FIN, RST, SYN = 0x01, 0x04, 0x02
NS = 1e9

declare(
    Kind("three_packet_close", "info", "Three-packet close",
         "The passive closer answered the FIN with its own FIN on the same segment (FIN, FIN+ACK, ACK): it had "
         "nothing left to send and closed at once, so its ACK rode on its FIN. Normal and harmless; the active "
         "closer goes from FIN_WAIT_1 straight to TIME_WAIT.", "The peer's application closed immediately.",
         "Nothing to fix."),
    Kind("simultaneous_close", "info", "Simultaneous close",
         "Both endpoints sent a FIN before receiving the other's: both pass through FIN_WAIT_1 and CLOSING to "
         "TIME_WAIT (RFC 9293 section 3.6). Legal and rare.", "Both applications closed at the same moment.",
         "Nothing to fix; both sides hold TIME_WAIT for 2 MSL."),
    Kind("rst_after_half_close", "warning", "RST after a half-close",
         "One side sent its FIN (it finished sending; its peer, now in CLOSE_WAIT, could still send), and then "
         "an RST ended the connection. If the side that sent the FIN resets, its socket was closed completely "
         "(or its process exited) while the peer still sent data: the peer gets ECONNRESET, and a second write "
         "raises EPIPE / SIGPIPE.",
         "A client or server that calls close() while data is still arriving (or unread in its receive "
         "buffer); a process that exited or restarted; SO_LINGER with a zero timeout; a proxy or load balancer "
         "timing out a half-closed connection.",
         "Let the application drain what it receives before close() (or use shutdown(SHUT_WR) and keep "
         "reading until EOF); handle ECONNRESET / EPIPE on the peer; check for restarts at that time."),
    Kind("close_wait", "warning", "CLOSE_WAIT: the application never closed",
         "The endpoint received and acknowledged its peer's FIN but its application never closed the socket "
         "(no FIN of its own) by the end of the capture, or only much later. Sockets pile up in CLOSE_WAIT and "
         "hold file descriptors until the process closes them or exits.",
         "An application bug: a code path that forgets close() (often on errors), a worker stuck in a loop or "
         "blocked, timeouts longer than the peer's; an accept backlog so long that clients give up while "
         "queued; the process hit its open-files limit and cannot accept() or close in time.",
         "Fix the code that owns the socket: close it on every path; find the stuck threads (`ss -tanp state "
         "close-wait`, then a thread dump of that process); kernel settings do not clear CLOSE_WAIT."),
    Kind("fin_wait_2_lingering", "notice", "FIN_WAIT_2 lingering",
         "The endpoint closed actively and its FIN was acknowledged, but the peer never sent its own FIN: the "
         "socket waits in FIN_WAIT_2 (Linux gives up after net.ipv4.tcp_fin_timeout, 60 s by default).",
         "The peer's application is stuck in CLOSE_WAIT (see close_wait on the peer) or vanished.",
         "Fix the peer's application; lower tcp_fin_timeout if orphaned FIN_WAIT_2 sockets pile up."),
    Kind("last_ack_lingering", "notice", "LAST_ACK lingering",
         "The passive closer sent its FIN and waits for the last ACK, which did not come (it may be "
         "retransmitting its FIN).", "The active closer vanished (killed, rebooted, a load-test client), or the "
         "path dropped the ACK.", "Usually harmless: the kernel retransmits and gives up. Many at once point at "
         "clients killed during a test."),
    Kind("port_reuse", "info", "4-tuple reused",
         "A new connection (new SYN, new initial sequence number) used the same addresses and ports as an "
         "earlier one in the capture.", "Clients cycling through a small port range, or a fixed source port.",
         "Nothing to fix unless the new SYN arrived while the old connection was still in TIME_WAIT on a side "
         "(then look at time_wait_accumulation and port exhaustion)."),
)


@detector("three_packet_close", "simultaneous_close")
def close_shapes(ctx: Context) -> Iterator[Finding]:
    """Label three-packet and simultaneous closes (merged per server port when there are many)."""
    if ctx.connections.empty:
        return
    col = {n: ctx.column("connections", n) for n in (
        "uid", "orig_h", "orig_p", "resp_h", "resp_p", "last_frame", "last_ns", "ts", "active_closer")}
    for kind, close in (("three_packet_close", "three_packet"), ("simultaneous_close", "simultaneous")):
        rows = np.flatnonzero(ctx.isin("connections", "close", close))
        g = group(ctx.key("connections", "resp_h")[rows], col["resp_p"][rows])
        for i in range(len(g)):
            mine = rows[g.rows(i)]
            host, port = col["resp_h"][mine[0]], int(col["resp_p"][mine[0]])
            if len(mine) > ctx.settings.aggregate_over:
                yield Finding(kind, f"{len(mine)} connections to {endpoint(host, port)} closed this way",
                              evidence(col["last_frame"][mine]), float(col["ts"][mine].min()), host=host, port=port)
                continue
            for uid, orig_h, orig_p, closer, last_frame, last_ns in zip(*(col[n][mine].tolist() for n in (
                    "uid", "orig_h", "orig_p", "active_closer", "last_frame", "last_ns"))):
                who = "both sides" if close == "simultaneous" else (
                    endpoint(orig_h, orig_p) if closer == "orig" else endpoint(host, port))
                yield Finding(kind, f"{endpoint(orig_h, orig_p)} <-> {endpoint(host, port)}: closed by {who}",
                              evidence([last_frame]), last_ns / NS, uid=uid, host=host, port=port)


@detector("rst_after_half_close")
def rst_after_half_close(ctx: Context) -> Iterator[Finding]:
    """An RST after one side's FIN while the other side had not closed."""
    if ctx.control.empty:
        return
    conn, flags, ts_ns, frame = (ctx.column("control", n) for n in ("conn", "flags", "ts_ns", "frame"))
    orig = ctx.isin("control", "dir", "orig")
    fins = np.flatnonzero((flags & FIN) != 0)
    rsts = np.flatnonzero((flags & RST) != 0)
    fin = fins[group(conn[fins]).first]  # each connection's first FIN
    first_rst = rsts[group(conn[rsts]).first]
    at = pd.Index(conn[first_rst]).get_indexer(conn[fin])
    fin, rst = fin[at >= 0], first_rst[at[at >= 0]]
    later = frame[rst] > frame[fin]
    fin, rst = fin[later], rst[later]
    # The peer's first FIN: if it came before the RST, both had closed (an RST after a full close is another story).
    by_dir = fins[group(conn[fins], orig[fins]).first]
    peer_fin = pd.Index(conn[by_dir] * 2 + orig[by_dir]).get_indexer(conn[fin] * 2 + ~orig[fin])
    open_peer = (peer_fin < 0) | (frame[by_dir[peer_fin]] >= frame[rst])
    fin, rst = fin[open_peer], rst[open_peer]
    if not len(fin):
        return
    late: list[tuple[int, bool, int]] = []  # data sent after the peer's FIN: connection, from orig, frame
    if not ctx.events.empty:
        rows = np.flatnonzero(ctx.isin("events", "kind", "data_after_peer_fin"))
        late = list(zip(ctx.column("events", "conn")[rows].tolist(),
                        ctx.isin("events", "dir", "orig")[rows].tolist(), ctx.column("events", "frame")[rows].tolist()))
    at = ctx.conn_rows(conn[fin])
    orig_name, resp_name = ctx.names(at)
    for i, (f, r, uid, host, port) in enumerate(zip(fin.tolist(), rst.tolist(), *(
            ctx.column("connections", n)[at].tolist() for n in ("uid", "resp_h", "resp_p")))):
        names = {True: orig_name[i], False: resp_name[i]}
        closer = bool(orig[f])
        sent = [fr for c, o, fr in late if c == conn[f] and o != closer][:1]  # the peer's first data after the FIN
        data = (f"{names[not closer]} kept sending data after the FIN (frame {sent[0]})" if sent
                else f"{names[not closer]} sent no data after the FIN")
        by = "the half-closed side itself" if orig[r] == closer else "the side still open"
        yield Finding("rst_after_half_close", f"{names[closer]} half-closed (FIN, frame {int(frame[f])}); "
                      f"{data}; then {names[bool(orig[r])]} ({by}) reset the connection "
                      f"{(ts_ns[r] - ts_ns[f]) / NS:.3f} s later",
                      evidence([frame[f], frame[r], *sent]), ts_ns[r] / NS,
                      uid=uid, host=host, port=int(port), direction="orig" if orig[r] else "resp")


@dataclass(frozen=True, slots=True)
class Stints:
    """Every time an endpoint entered a state, in (connection, endpoint, time) order."""

    rows: npt.NDArray[np.intp]  # the transitions into the state
    conn: npt.NDArray[np.int64]
    orig: npt.NDArray[np.bool_]  # the originator's endpoint (else the responder's)
    entered: npt.NDArray[np.int64]
    left: npt.NDArray[np.float64]  # the endpoint's next transition, or the end of the capture (as floats)
    frame: npt.NDArray[np.int64]
    still: npt.NDArray[np.bool_]  # in the state at the end of the capture


def _successors(ctx: Context) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    """Transitions per (connection, endpoint) in time order, and each one's next transition (-1: none)."""
    conn, ts_ns, frame = (ctx.column("transitions", n) for n in ("conn", "ts_ns", "frame"))
    resp = ~ctx.isin("transitions", "endpoint", "orig")
    keys = (frame, ts_ns, resp, conn)  # last key first, as np.lexsort wants them
    order = np.arange(len(conn)) if _sorted(*keys) else np.lexsort(keys)
    conn, resp = conn[order], resp[order]
    nxt = np.full(len(order), -1, np.int64)
    same = (conn[1:] == conn[:-1]) & (resp[1:] == resp[:-1])
    nxt[:-1][same] = order[1:][same]
    out = np.full(len(order), -1, np.int64)
    out[order] = nxt
    return order, out


def _sorted(*keys: npt.NDArray[Any]) -> bool:
    """Whether rows are already in np.lexsort(keys) order (a stable sort would then keep them where they are)."""
    if len(keys[0]) < 2:
        return True
    undecided = np.ones(len(keys[0]) - 1, np.bool_)  # pairs of neighbours equal on the keys compared so far
    for key in reversed(keys):
        a, b = key[:-1], key[1:]
        if (undecided & (a > b)).any():
            return False
        undecided &= a == b
    return True


def _stints(ctx: Context, state: str) -> Stints:
    """Every time an endpoint entered `state`: when, and when it left (end of capture if it is still there)."""
    tr = ctx.transitions
    if tr.empty:
        empty = np.zeros(0, np.int64)
        return Stints(empty, empty, empty.astype(np.bool_), empty, empty.astype(np.float64), empty,
                      empty.astype(np.bool_))
    order, nxt = ctx.cached("transition_successors", lambda: _successors(ctx))
    rows = order[ctx.isin("transitions", "to_state", state)[order]]
    ts_ns = ctx.column("transitions", "ts_ns")
    following = nxt[rows]
    still = following < 0
    left = np.where(still, float(ctx.end_ns), ts_ns[following].astype(np.float64))
    return Stints(rows, ctx.column("transitions", "conn")[rows], ctx.isin("transitions", "endpoint", "orig")[rows],
                  ts_ns[rows], left, ctx.column("transitions", "frame")[rows], still)


@detector("close_wait")
def close_wait(ctx: Context) -> Iterator[Finding]:
    """Endpoints left in CLOSE_WAIT, or held there long, aggregated per host:port."""
    st = _stints(ctx, "CLOSE_WAIT")
    age = (st.left - st.entered) / NS
    stuck = np.flatnonzero(st.still | (age >= ctx.settings.close_wait_min_s))
    at = ctx.conn_rows(st.conn[stuck])
    orig = st.orig[stuck]
    host = np.where(orig, ctx.column("connections", "orig_h")[at], ctx.column("connections", "resp_h")[at])
    port = np.where(orig, ctx.column("connections", "orig_p")[at], ctx.column("connections", "resp_p")[at])
    uid = ctx.column("connections", "uid")[at]
    g = group(host, port)
    for i in range(len(g)):
        mine = g.rows(i)
        still = int(st.still[stuck[mine]].sum())
        oldest = mine[np.argmax(age[stuck[mine]])]
        yield Finding("close_wait", f"{endpoint(host[mine[0]], port[mine[0]])}: {len(mine)} socket"
                      f"{'s' if len(mine) > 1 else ''} in CLOSE_WAIT ({still} still at the end of the capture), "
                      f"oldest {age[stuck[oldest]]:.3f} s (connection {uid[oldest]})",
                      evidence(st.frame[stuck[mine]]), st.entered[stuck[mine]].min() / NS,
                      uid=str(uid[oldest]) if len(mine) == 1 else "", host=host[mine[0]], port=int(port[mine[0]]))


@detector("fin_wait_2_lingering", "last_ack_lingering")
def lingering(ctx: Context) -> Iterator[Finding]:
    """FIN_WAIT_2 or LAST_ACK held past the threshold, or ended by the kernel's timer."""
    if ctx.transitions.empty:
        return
    ended_by_timer = ctx.column("transitions", "conn")[ctx.isin("transitions", "event", "FIN_TIMEOUT")]
    for kind, state in (("fin_wait_2_lingering", "FIN_WAIT_2"), ("last_ack_lingering", "LAST_ACK")):
        st = _stints(ctx, state)
        timed_out = np.isin(st.conn, ended_by_timer) if state == "FIN_WAIT_2" else np.zeros(len(st.conn), np.bool_)
        age = (st.left - st.entered) / NS
        hit = np.flatnonzero((age >= ctx.settings.linger_min_s) | timed_out)
        at = ctx.conn_rows(st.conn[hit])
        orig_name, resp_name = ctx.names(at)
        for i, (j, uid, host, port) in enumerate(zip(hit.tolist(), *(
                ctx.column("connections", n)[at].tolist() for n in ("uid", "resp_h", "resp_p")))):
            how = ("until tcp_fin_timeout closed it" if timed_out[j]
                   else "to the end of the capture" if st.still[j] else "before the peer answered")
            yield Finding(kind, f"{orig_name[i] if st.orig[j] else resp_name[i]} held {state} for {age[j]:.1f} s "
                          f"{how}", evidence([st.frame[j]]), st.entered[j] / NS, uid=uid, host=host, port=int(port),
                          direction="orig" if st.orig[j] else "resp")


@detector("port_reuse")
def port_reuse(ctx: Context) -> Iterator[Finding]:
    """A 4-tuple used again by a later connection; flagged when the SYN met the old one's TIME_WAIT."""
    if ctx.connections.empty:
        return
    col = {n: ctx.column("connections", n) for n in (
        "conn", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "first_ns", "last_ns", "first_frame", "ts")}
    key = group(ctx.key("connections", "orig_h"), col["orig_p"], ctx.key("connections", "resp_h"), col["resp_p"])
    dup = np.flatnonzero((key.sizes[key.codes] >= 2) & ctx.isin("connections", "started", "syn"))
    dup = dup[np.argsort(col["first_ns"][dup])]  # in time order (numpy's default sort, as pandas' sort_values)
    tw = _stints(ctx, "TIME_WAIT")
    per_conn = group(tw.conn)
    entered = dict(zip(tw.conn[per_conn.first].tolist(), per_conn.reduce(np.minimum, tw.entered)))  # 1st TIME_WAIT
    g = group(key.codes[dup])
    for i in range(len(g)):
        mine = dup[g.rows(i)].tolist()
        for old, new in itertools.pairwise(mine):
            note, severity = "", ""
            old_tw = entered.get(int(col["conn"][old]))
            if old_tw is not None and int(col["first_ns"][new]) < old_tw + ctx.settings.time_wait * NS:
                note = (f"; the new SYN came {(int(col['first_ns'][new]) - old_tw) / NS:.1f} s into the old "
                        "connection's TIME_WAIT")
                severity = "notice"
            yield Finding("port_reuse", f"{endpoint(col['orig_h'][new], col['orig_p'][new])} -> "
                          f"{endpoint(col['resp_h'][new], col['resp_p'][new])} reused "
                          f"{(int(col['first_ns'][new]) - int(col['last_ns'][old])) / NS:.1f} s after connection "
                          f"{col['uid'][old]}{note}", evidence([col["first_frame"][new]]), float(col["ts"][new]),
                          severity=severity, uid=col["uid"][new], host=col["resp_h"][new],
                          port=int(col["resp_p"][new]))
