"""Handshake trouble: lost and repeated SYNs and SYN+ACKs, refusals, unanswered attempts, full accept queues,
SYN floods, simultaneous opens."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from . import Context, Finding, Kind, declare, detector, endpoint, evidence

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


def _syns(ctx: Context, with_ack: bool) -> pd.DataFrame:
    ctl = ctx.control
    if ctl.empty:
        return ctl
    mask = ((ctl["flags"] & SYN) != 0) & (((ctl["flags"] & ACK) != 0) == with_ack)
    return ctl[mask]


def _repeated(syns: pd.DataFrame) -> Iterator[tuple[tuple[str, str], pd.DataFrame]]:
    """Per connection and direction, the SYNs that repeat the first one's sequence number (two or more)."""
    if syns.empty:
        return
    first = syns.groupby(["uid", "dir"], sort=False)["seq"].transform("first")
    same = syns[syns["seq"] == first]
    counts = same.groupby(["uid", "dir"], sort=False)["seq"].transform("size")
    yield from same[counts >= 2].groupby(["uid", "dir"], sort=False)


def _classify(gap: float) -> str:
    if 0.7 <= gap <= 1.6:
        return "about 1 s: RFC 6298 initial RTO (Linux 3.1 and later)"
    if 2.4 <= gap <= 3.6:
        return "about 3 s: RFC 1122 initial RTO (older kernels, other stacks)"
    return f"{gap:.2f} s: neither the 1 s nor the 3 s initial RTO"


def _answer(ctx: Context, uid: str, direction: str, after_ns: int) -> str:
    ctl = ctx.control
    mine = ctx.of("control", uid)
    back = mine[mine["dir"] != direction]
    if ((back["flags"] & (SYN | ACK)) == (SYN | ACK)).any():
        t = back.loc[(back["flags"] & SYN) != 0, "ts_ns"].min()
        return f"answered by SYN+ACK {(t - after_ns) / NS:.3f} s after the first SYN"
    if ((back["flags"] & RST) != 0).any():
        return "answered by RST (refused)"
    return "never answered"


@detector("syn_retransmit")
def syn_retransmit(ctx: Context) -> Iterator[Finding]:
    """The same SYN sent again: every gap, the first one classified, and whether it was answered."""
    for (uid, direction), same in _repeated(_syns(ctx, with_ack=False)):
        gaps = same["ts_ns"].diff().dropna().to_numpy() / NS
        c = ctx.rows[uid]
        src, dst = (endpoint(c.orig_h, c.orig_p), endpoint(c.resp_h, c.resp_p)) if direction == "orig" else \
            (endpoint(c.resp_h, c.resp_p), endpoint(c.orig_h, c.orig_p))
        answer = _answer(ctx, uid, direction, int(same["ts_ns"].iloc[0]))
        yield Finding("syn_retransmit", f"{src} -> {dst}: SYN sent {len(same)} times, gaps "
                      f"{', '.join(f'{x:.2f} s' for x in gaps)}; first retry after {_classify(gaps[0])}; {answer}",
                      evidence(same["frame"]), same["ts_ns"].iloc[0] / NS, uid=uid, host=c.resp_h, port=int(c.resp_p),
                      direction=direction)


@detector("synack_retransmit", "accept_queue_overflow")
def synack_retransmit(ctx: Context) -> Iterator[Finding]:
    """The same SYN+ACK sent again; after the client's handshake ACK it means a full accept queue."""
    for (uid, direction), same in _repeated(_syns(ctx, with_ack=True)):
        c = ctx.rows[uid]
        gaps = same["ts_ns"].diff().dropna().to_numpy() / NS
        yield Finding("synack_retransmit", f"{endpoint(c.resp_h, c.resp_p)} sent its SYN+ACK {len(same)} times to "
                      f"{endpoint(c.orig_h, c.orig_p)} (gaps {', '.join(f'{x:.2f} s' for x in gaps)})",
                      evidence(same["frame"]), same["ts_ns"].iloc[0] / NS, uid=uid, host=c.resp_h,
                      port=int(c.resp_p), direction=direction)
        if pd.notna(c.synack_to_ack_ms):
            ack_ns = same["ts_ns"].iloc[0] + c.synack_to_ack_ms * 1e6
            late = same[same["ts_ns"] > ack_ns]
            if len(late):
                yield Finding("accept_queue_overflow", f"{endpoint(c.resp_h, c.resp_p)} repeated its SYN+ACK "
                              f"{(late['ts_ns'].iloc[0] - ack_ns) / NS:.3f} s after {endpoint(c.orig_h, c.orig_p)} "
                              "had completed the handshake: the server dropped the client's ACK",
                              evidence(late["frame"]), late["ts_ns"].iloc[0] / NS, uid=uid, host=c.resp_h,
                              port=int(c.resp_p), direction=direction)


@detector("accept_queue_overflow")
def handshake_reset(ctx: Context) -> Iterator[Finding]:
    """A handshake completed by the client and answered with an RST by the server (tcp_abort_on_overflow=1)."""
    c = ctx.connections
    hit = c[(c["reset_by"] == "resp") & (c["resp_bytes"] == 0) & c["synack_to_ack_ms"].notna()
            & (c["reset_state"] == "ESTABLISHED") & (c["resp_data_pkts"] == 0)]
    ctl = ctx.control
    for row in map(ctx.rows.__getitem__, hit["uid"]):
        mine = ctx.of("control", row.uid)
        rst = mine[(mine["dir"] == "resp") & ((mine["flags"] & RST) != 0)]
        if rst.empty or pd.isna(row.handshake_rtt_ms):
            continue
        after = (rst["ts_ns"].iloc[0] - row.first_ns) / 1e6 - row.handshake_rtt_ms
        if after > max(3 * row.handshake_rtt_ms, 50.0):
            continue  # a reset long after the handshake is something else
        yield Finding("accept_queue_overflow", f"{endpoint(row.resp_h, row.resp_p)} reset "
                      f"{endpoint(row.orig_h, row.orig_p)} right after the handshake completed, before sending "
                      "anything", evidence(rst["frame"]), rst["ts_ns"].iloc[0] / NS, uid=row.uid,
                      host=row.resp_h, port=int(row.resp_p), direction="resp")


def _per_connection_or_merged(ctx: Context, rows: pd.DataFrame, kind: str, what: str) -> Iterator[Finding]:
    """One finding per connection, or one per server port when there are many."""
    for (host, port), g in rows.groupby(["resp_h", "resp_p"], sort=False):
        if len(g) > ctx.settings.aggregate_over:
            sources = g["orig_h"].nunique()
            yield Finding(kind, f"{len(g)} connections to {endpoint(host, port)} from {sources} source address"
                          f"{'es' if sources > 1 else ''}: {what}", evidence(g["first_frame"]),
                          float(g["ts"].min()), host=host, port=int(port))
            continue
        for row in map(ctx.rows.__getitem__, g["uid"]):
            yield Finding(kind, f"{endpoint(row.orig_h, row.orig_p)} -> {endpoint(host, port)}: {what} "
                          f"({row.orig_syns} SYN{'s' if row.orig_syns != 1 else ''})",
                          evidence([row.first_frame, row.last_frame]), row.ts, uid=row.uid, host=host,
                          port=int(port), direction="orig")


@detector("syn_unanswered", "connection_refused")
def unanswered_and_refused(ctx: Context) -> Iterator[Finding]:
    """SYNs that got nothing back (S0), and SYNs answered by RST+ACK (REJ)."""
    c = ctx.connections
    yield from _per_connection_or_merged(ctx, c[c["conn_state"] == "S0"], "syn_unanswered", "SYN never answered")
    yield from _per_connection_or_merged(ctx, c[c["conn_state"] == "REJ"], "connection_refused",
                                         "refused with RST+ACK")


@detector("syn_flood")
def syn_flood(ctx: Context) -> Iterator[Finding]:
    """Many handshakes to one server port, from many sources, that never complete."""
    c = ctx.connections
    s = ctx.settings
    half = c[(c["started"] == "syn") & c["synack_to_ack_ms"].isna() & (c["conn_state"] != "REJ")]
    for (host, port), g in half.groupby(["resp_h", "resp_p"], sort=False):
        sources = g["orig_h"].nunique()
        total = int(((c["resp_h"] == host) & (c["resp_p"] == port)).sum())
        if len(g) >= s.syn_flood_min and sources >= s.syn_flood_sources and len(g) >= total / 2:
            span = max((g["first_ns"].max() - g["first_ns"].min()) / NS, 1e-9)
            yield Finding("syn_flood", f"{len(g)} half-open handshakes to {endpoint(host, port)} from {sources} "
                          f"sources ({len(g) / span:.0f}/s), {total - len(g)} completed",
                          evidence(g["first_frame"]), float(g["ts"].min()), host=host, port=int(port))


@detector("simultaneous_open")
def simultaneous_open(ctx: Context) -> Iterator[Finding]:
    """Both sides sent a SYN: an endpoint went from SYN_SENT to SYN_RCVD."""
    tr = ctx.transitions
    hit = tr[(tr["from_state"] == "SYN_SENT") & (tr["to_state"] == "SYN_RCVD")]
    for uid, g in hit.groupby("uid", sort=False):
        c = ctx.rows[uid]
        yield Finding("simultaneous_open", f"{endpoint(c.orig_h, c.orig_p)} and {endpoint(c.resp_h, c.resp_p)} "
                      "opened the connection at the same time", evidence(g["frame"]), g["ts_ns"].iloc[0] / NS,
                      uid=uid, host=c.resp_h, port=int(c.resp_p))
