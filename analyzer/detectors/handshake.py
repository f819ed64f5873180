"""Handshake trouble: lost and repeated SYNs and SYN+ACKs, refusals, unanswered attempts, full accept queues,
SYN floods, simultaneous opens."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from . import Context, Finding, Groups, Kind, declare, detector, endpoint, evidence, group

SYN, ACK, RST = 0x02, 0x10, 0x04
NS = 1e9

declare(
    Kind("syn_retransmit", "warning", "SYN retransmitted",
         "The client sent the same SYN (same initial sequence number) again because nothing came back in time. "
         "The first gap tells the client's initial retransmission timeout: about 1 s is RFC 6298 (Linux since "
         "3.1), about 3 s is the older RFC 1122 value (old kernels, some other stacks); later gaps double. Every "
         "lost SYN adds that whole timeout to the connection's setup time.",
         "The SYN or the SYN+ACK was dropped: the next hop's ARP queue was full (net.ipv4.neigh.*.unres_qlen, "
         "default 3) so the SYN never left; rp_filter on a multi-homed host; a conntrack table full or an SNAT "
         "port clash (conntrack -S insert_failed); the server's SYN or accept queue full; a SYN flood; a server "
         "with tcp_tw_recycle dropping SYNs whose timestamps go backwards (clients behind NAT).",
         "Find where the SYN died: capture on both sides; check `ip -s neigh`, `conntrack -S`, `nstat -az "
         "TcpExtListenOverflows TcpExtListenDrops`, rp_filter, and the server's backlog (listen() and "
         "net.core.somaxconn). Never enable tcp_tw_recycle.", "tcp.analysis.retransmission on a SYN"),
    Kind("synack_retransmit", "notice", "SYN+ACK retransmitted",
         "The server sent its SYN+ACK again: the client's ACK did not reach it (or was dropped by the server).",
         "Loss on the path back to the server; the client's ACK arrived but the accept queue was full and the "
         "server dropped it (see accept_queue_overflow); the client never got the first SYN+ACK.",
         "If the client's ACK is in the capture before the repeated SYN+ACK, the server dropped it: raise the "
         "listen backlog and net.core.somaxconn and make the application accept() faster.",
         "tcp.analysis.retransmission on a SYN+ACK"),
    Kind("syn_unanswered", "warning", "SYN never answered",
         "The client's SYNs got no answer at all: no SYN+ACK, no RST.",
         "The server host is down or unreachable; a firewall drops the SYN silently; the service is overloaded "
         "and dropping SYNs; a scanner probing addresses; routing asymmetry hides the answer from this capture.",
         "Check reachability and firewall rules toward the server port; on the server, look at listen queue "
         "drops (nstat TcpExtListenDrops) and whether the service listens at all.", "Zeek conn_state S0"),
    Kind("connection_refused", "warning", "Connection refused",
         "The SYN was answered with RST+ACK: nothing listens on that port (or a firewall rejects).",
         "The service is not running or listens on another address or port; a firewall with a reject rule; a "
         "server whose accept queue overflowed with tcp_abort_on_overflow=1.",
         "Check that the service is up and listening (`ss -ltn`) on that address and port.", "Zeek conn_state REJ"),
    Kind("accept_queue_overflow", "warning", "Accept queue overflow",
         "The handshake completed on the client's side but the server acted as if it had not: it repeated its "
         "SYN+ACK after the client's ACK, or answered the handshake with an RST. The server's accept queue "
         "(min(backlog, net.core.somaxconn)) was full, so the kernel dropped the final ACK (or, with "
         "tcp_abort_on_overflow=1, reset the connection). The client believes it is connected and its first "
         "request waits.",
         "The application accepts connections too slowly (blocked workers, too few threads, the process hit its "
         "open-files limit); the listen backlog is too small for bursts (somaxconn was 128 before Linux 5.4).",
         "Make the server accept() faster, raise the listen() backlog and net.core.somaxconn, and watch "
         "`nstat -az TcpExtListenOverflows`; fix file-descriptor limits if accept() fails with EMFILE."),
    Kind("syn_flood", "error", "SYN flood",
         "Many half-open connections from many source addresses to one server port never completed the "
         "handshake.",
         "A SYN flood (often from spoofed addresses), a scan, or a wave of clients that cannot complete the "
         "handshake because the server's answers do not reach them.",
         "Make sure net.ipv4.tcp_syncookies is on (default 1), raise tcp_max_syn_backlog, rate-limit or filter "
         "upstream; check whether the sources are real clients."),
    Kind("simultaneous_open", "info", "Simultaneous open",
         "Both endpoints sent a SYN at the same time (RFC 9293 section 3.5): four segments, one connection. "
         "Legal and rare; seen with NAT hole punching and some peer-to-peer protocols."
         , "Both sides connect to each other at once.", "Nothing to fix."),
)


def _syns(ctx: Context, with_ack: bool) -> npt.NDArray[np.intp]:
    """Control rows of SYNs (with_ack: of SYN+ACKs)."""
    flags = ctx.column("control", "flags")
    return np.flatnonzero(((flags & SYN) != 0) & (((flags & ACK) != 0) == with_ack))


def _repeated(ctx: Context, syns: npt.NDArray[np.intp]) -> tuple[npt.NDArray[np.intp], Groups]:
    """Per connection and direction, the SYNs that repeat the first one's sequence number (two or more): their
    control rows, and those rows grouped by connection and direction."""
    conn, seq, orig = ctx.column("control", "conn"), ctx.column("control", "seq"), ctx.isin("control", "dir", "orig")
    g = group(conn[syns], orig[syns])
    same = syns[seq[syns] == seq[syns[g.first]][g.codes]]
    g = group(conn[same], orig[same])
    same = same[g.sizes[g.codes] >= 2]
    return same, group(conn[same], orig[same])


def _classify(gap: float) -> str:
    if 0.7 <= gap <= 1.6:
        return "about 1 s: RFC 6298 initial RTO (Linux 3.1 and later)"
    if 2.4 <= gap <= 3.6:
        return "about 3 s: RFC 1122 initial RTO (older kernels, other stacks)"
    return f"{gap:.2f} s: neither the 1 s nor the 3 s initial RTO"


def _answers(ctx: Context, first: npt.NDArray[np.intp]) -> list[str]:
    """How the peer answered each of these SYNs (control rows): by SYN+ACK, by RST, or not at all."""
    conn, orig = ctx.column("control", "conn"), ctx.isin("control", "dir", "orig")
    flags, ts_ns = ctx.column("control", "flags"), ctx.column("control", "ts_ns")
    mine = np.flatnonzero(np.isin(conn, conn[first]))
    g = group(conn[mine], orig[mine])  # each connection's segments per direction
    f = flags[mine]
    synack = g.reduce(np.logical_or, (f & (SYN | ACK)) == (SYN | ACK))
    rst = g.reduce(np.logical_or, (f & RST) != 0)
    syn_ns = g.reduce(np.minimum, np.where((f & SYN) != 0, ts_ns[mine], np.iinfo(np.int64).max))
    at = {key: i for i, key in enumerate(zip(conn[mine[g.first]].tolist(), orig[mine[g.first]].tolist()))}
    out = []
    for c, o, after_ns in zip(conn[first].tolist(), orig[first].tolist(), ts_ns[first].tolist()):
        back = at.get((c, not o))  # the other direction's segments
        if back is not None and synack[back]:
            out.append(f"answered by SYN+ACK {(syn_ns[back] - after_ns) / NS:.3f} s after the first SYN")
        elif back is not None and rst[back]:
            out.append("answered by RST (refused)")
        else:
            out.append("never answered")
    return out


@dataclass(frozen=True, slots=True)
class _Retries:
    """Repeated SYNs (or SYN+ACKs), one group per connection and direction, with what findings name them by."""

    same: npt.NDArray[np.intp]  # control rows of the repeats
    groups: Groups
    at: npt.NDArray[np.intp]  # each group's row in the connections table
    orig_name: list[str]
    resp_name: list[str]
    uid: list[str]
    resp_h: list[str]
    resp_p: list[int]
    from_orig: list[bool]

    def rows(self, i: int) -> npt.NDArray[np.intp]:
        """Control rows of group i, in order."""
        return self.same[self.groups.rows(i)]


def _retries(ctx: Context, with_ack: bool) -> _Retries:
    same, g = _repeated(ctx, _syns(ctx, with_ack))
    first = same[g.first]
    at = ctx.conn_rows(ctx.column("control", "conn")[first])
    orig_name, resp_name = ctx.names(at)
    uid, resp_h, resp_p = (ctx.column("connections", n)[at].tolist() for n in ("uid", "resp_h", "resp_p"))
    return _Retries(same, g, at, orig_name, resp_name, uid, resp_h, resp_p,
                    ctx.isin("control", "dir", "orig")[first].tolist())


@detector("syn_retransmit")
def syn_retransmit(ctx: Context) -> Iterator[Finding]:
    """The same SYN sent again: every gap, the first one classified, and whether it was answered."""
    if ctx.control.empty:
        return
    r = _retries(ctx, with_ack=False)
    ts_ns, frame = ctx.column("control", "ts_ns"), ctx.column("control", "frame")
    for i, answer in enumerate(_answers(ctx, r.same[r.groups.first])):
        rows = r.rows(i)
        gaps = np.diff(ts_ns[rows]) / NS
        src, dst = (r.orig_name[i], r.resp_name[i]) if r.from_orig[i] else (r.resp_name[i], r.orig_name[i])
        yield Finding("syn_retransmit", f"{src} -> {dst}: SYN sent {len(rows)} times, gaps "
                      f"{', '.join(f'{x:.2f} s' for x in gaps)}; first retry after {_classify(gaps[0])}; {answer}",
                      evidence(frame[rows]), ts_ns[rows[0]] / NS, uid=r.uid[i], host=r.resp_h[i],
                      port=int(r.resp_p[i]), direction="orig" if r.from_orig[i] else "resp")


@detector("synack_retransmit", "accept_queue_overflow")
def synack_retransmit(ctx: Context) -> Iterator[Finding]:
    """The same SYN+ACK sent again; after the client's handshake ACK it means a full accept queue."""
    if ctx.control.empty:
        return
    r = _retries(ctx, with_ack=True)
    ts_ns, frame = ctx.column("control", "ts_ns"), ctx.column("control", "frame")
    synack_to_ack_ms = ctx.column("connections", "synack_to_ack_ms")[r.at]
    orig_name, resp_name, uid, resp_h, resp_p = r.orig_name, r.resp_name, r.uid, r.resp_h, r.resp_p
    for i in range(len(r.groups)):
        rows = r.rows(i)
        direction = "orig" if r.from_orig[i] else "resp"
        gaps = np.diff(ts_ns[rows]) / NS
        yield Finding("synack_retransmit", f"{resp_name[i]} sent its SYN+ACK {len(rows)} times to {orig_name[i]} "
                      f"(gaps {', '.join(f'{x:.2f} s' for x in gaps)})", evidence(frame[rows]), ts_ns[rows[0]] / NS,
                      uid=uid[i], host=resp_h[i], port=int(resp_p[i]), direction=direction)
        if pd.notna(synack_to_ack_ms[i]):
            ack_ns = ts_ns[rows[0]] + synack_to_ack_ms[i] * 1e6
            late = rows[ts_ns[rows] > ack_ns]
            if len(late):
                yield Finding("accept_queue_overflow", f"{resp_name[i]} repeated its SYN+ACK "
                              f"{(ts_ns[late[0]] - ack_ns) / NS:.3f} s after {orig_name[i]} had completed the "
                              "handshake: the server dropped the client's ACK", evidence(frame[late]),
                              ts_ns[late[0]] / NS, uid=uid[i], host=resp_h[i], port=int(resp_p[i]),
                              direction=direction)


@detector("accept_queue_overflow")
def handshake_reset(ctx: Context) -> Iterator[Finding]:
    """A handshake completed by the client and answered with an RST by the server (tcp_abort_on_overflow=1)."""
    c = ctx.connections
    hit = np.flatnonzero(((c["reset_by"] == "resp") & (c["resp_bytes"] == 0) & c["synack_to_ack_ms"].notna()
                          & (c["reset_state"] == "ESTABLISHED") & (c["resp_data_pkts"] == 0)).to_numpy())
    if not len(hit) or ctx.control.empty:
        return
    conn, flags = ctx.column("control", "conn"), ctx.column("control", "flags")
    hit_conn = ctx.column("connections", "conn")[hit]
    rst = np.flatnonzero(np.isin(conn, hit_conn) & ~ctx.isin("control", "dir", "orig") & ((flags & RST) != 0))
    g = group(conn[rst])  # the responder's RSTs, per connection
    by_conn = dict(zip(conn[rst[g.first]].tolist(), range(len(g))))
    ts_ns, frame = ctx.column("control", "ts_ns"), ctx.column("control", "frame")
    orig_name, resp_name = ctx.names(hit)
    rtt, first_ns = ctx.column("connections", "handshake_rtt_ms")[hit], ctx.column("connections", "first_ns")[hit]
    for i, (c_id, uid, host, port) in enumerate(zip(hit_conn.tolist(), *(
            ctx.column("connections", n)[hit].tolist() for n in ("uid", "resp_h", "resp_p")))):
        if c_id not in by_conn or pd.isna(rtt[i]):
            continue
        rows = rst[g.rows(by_conn[c_id])]
        after = (ts_ns[rows[0]] - first_ns[i]) / 1e6 - rtt[i]
        if after > max(3 * rtt[i], 50.0):
            continue  # a reset long after the handshake is something else
        yield Finding("accept_queue_overflow", f"{resp_name[i]} reset {orig_name[i]} right after the handshake "
                      "completed, before sending anything", evidence(frame[rows]), ts_ns[rows[0]] / NS, uid=uid,
                      host=host, port=int(port), direction="resp")


def _per_connection_or_merged(ctx: Context, rows: npt.NDArray[np.intp], kind: str, what: str) -> Iterator[Finding]:
    """One finding per connection (rows of the connections table), or one per server port when there are many."""
    col = {n: ctx.column("connections", n)[rows] for n in (
        "uid", "orig_h", "orig_p", "resp_h", "resp_p", "first_frame", "last_frame", "ts", "orig_syns")}
    g = group(ctx.key("connections", "resp_h")[rows], col["resp_p"])
    for i in range(len(g)):
        mine = g.rows(i)
        host, port = col["resp_h"][mine[0]], int(col["resp_p"][mine[0]])
        if len(mine) > ctx.settings.aggregate_over:
            sources = len(set(col["orig_h"][mine].tolist()))
            yield Finding(kind, f"{len(mine)} connections to {endpoint(host, port)} from {sources} source address"
                          f"{'es' if sources > 1 else ''}: {what}", evidence(col["first_frame"][mine]),
                          float(col["ts"][mine].min()), host=host, port=port)
            continue
        for uid, orig_h, orig_p, first_frame, last_frame, ts, syns in zip(*(col[n][mine].tolist() for n in (
                "uid", "orig_h", "orig_p", "first_frame", "last_frame", "ts", "orig_syns"))):
            yield Finding(kind, f"{endpoint(orig_h, orig_p)} -> {endpoint(host, port)}: {what} "
                          f"({syns} SYN{'s' if syns != 1 else ''})", evidence([first_frame, last_frame]), ts,
                          uid=uid, host=host, port=port, direction="orig")


@detector("syn_unanswered", "connection_refused")
def unanswered_and_refused(ctx: Context) -> Iterator[Finding]:
    """SYNs that got nothing back (S0), and SYNs answered by RST+ACK (REJ)."""
    yield from _per_connection_or_merged(ctx, np.flatnonzero(ctx.isin("connections", "conn_state", "S0")),
                                         "syn_unanswered", "SYN never answered")
    yield from _per_connection_or_merged(ctx, np.flatnonzero(ctx.isin("connections", "conn_state", "REJ")),
                                         "connection_refused", "refused with RST+ACK")


@detector("syn_flood")
def syn_flood(ctx: Context) -> Iterator[Finding]:
    """Many handshakes to one server port, from many sources, that never complete."""
    c = ctx.connections
    s = ctx.settings
    if c.empty:
        return
    col = {n: ctx.column("connections", n) for n in ("resp_h", "resp_p", "orig_h", "first_ns", "first_frame", "ts")}
    server_h = ctx.key("connections", "resp_h")
    server = group(server_h, col["resp_p"])  # every connection to each server port
    half = np.flatnonzero(ctx.isin("connections", "started", "syn") & c["synack_to_ack_ms"].isna().to_numpy()
                          & ~ctx.isin("connections", "conn_state", "REJ"))
    g = group(server_h[half], col["resp_p"][half])
    totals = server.sizes[server.codes[half[g.first]]].tolist()
    for i, total in enumerate(totals):
        mine = half[g.rows(i)]
        if len(mine) < s.syn_flood_min or len(mine) < total / 2:
            continue
        sources = len(set(col["orig_h"][mine].tolist()))
        if sources >= s.syn_flood_sources:
            host, port = col["resp_h"][mine[0]], int(col["resp_p"][mine[0]])
            first_ns = col["first_ns"][mine]
            span = max((first_ns.max() - first_ns.min()) / NS, 1e-9)
            yield Finding("syn_flood", f"{len(mine)} half-open handshakes to {endpoint(host, port)} from {sources} "
                          f"sources ({len(mine) / span:.0f}/s), {total - len(mine)} completed",
                          evidence(col["first_frame"][mine]), float(col["ts"][mine].min()), host=host, port=port)


@detector("simultaneous_open")
def simultaneous_open(ctx: Context) -> Iterator[Finding]:
    """Both sides sent a SYN: an endpoint went from SYN_SENT to SYN_RCVD."""
    tr = ctx.transitions
    if tr.empty:
        return
    hit = np.flatnonzero(ctx.isin("transitions", "to_state", "SYN_RCVD"))
    hit = hit[(tr["from_state"].iloc[hit] == "SYN_SENT").to_numpy()]
    conn, ts_ns, frame = (ctx.column("transitions", n)[hit] for n in ("conn", "ts_ns", "frame"))
    g = group(conn)
    at = ctx.conn_rows(conn[g.first])
    orig_name, resp_name = ctx.names(at)
    for i, (uid, host, port) in enumerate(zip(*(ctx.column("connections", n)[at].tolist()
                                                for n in ("uid", "resp_h", "resp_p")))):
        rows = g.rows(i)
        yield Finding("simultaneous_open", f"{orig_name[i]} and {resp_name[i]} opened the connection at the same "
                      "time", evidence(frame[rows]), ts_ns[rows[0]] / NS, uid=uid, host=host, port=int(port))
