"""Transfers that stall: a peer that vanished (half-open), full-size segments that never get through."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pandas as pd

from . import Context, Finding, Kind, declare, detector, endpoint, evidence, group

NS = 1e9
RETRANSMITS = ("retransmission", "fast_retransmission", "spurious_retransmission")

declare(
    Kind("half_open", "warning", "Half-open connection: the peer is gone",
         "One side keeps retransmitting and the other never answers again: the peer vanished without a FIN or "
         "RST (crashed, rebooted, unplugged, or a NAT/firewall forgot the connection). The sender's socket stays "
         "ESTABLISHED until its retransmissions time out (tcp_retries2, about 15 minutes) or an RST comes back.",
         "The peer host died or lost network; a stateful middlebox timed the connection out; a route changed.",
         "Use TCP keepalive (or application heartbeats) shorter than middlebox idle timeouts; lower "
         "tcp_retries2 or set TCP_USER_TIMEOUT to give up sooner; check the peer and the path."),
    Kind("mss_blackhole", "warning", "MSS / path MTU black hole",
         "Full-size segments are retransmitted again and again while smaller segments of the same connection "
         "get through: the path cannot carry packets of that size and the ICMP 'fragmentation needed' message "
         "that would say so never arrives. The transfer stalls at the first full-size segment.",
         "A link with a smaller MTU than MSS + 40 (tunnels, VPNs, PPPoE) and ICMP blocked by a firewall.",
         "Allow ICMP type 3 code 4 (and ICMPv6 Packet Too Big); clamp the MSS on the tunnel (iptables TCPMSS "
         "--clamp-mss-to-pmtu); enable net.ipv4.tcp_mtu_probing=1."),
)


def _retransmits(ctx: Context) -> npt.NDArray[np.intp]:
    """Rows of the events table that are retransmissions of any kind."""
    return np.flatnonzero(ctx.isin("events", "kind", *RETRANSMITS))


@detector("half_open")
def half_open(ctx: Context) -> Iterator[Finding]:
    """Three or more retransmissions in a row after the peer's last packet, with no close."""
    if ctx.events.empty:
        return
    rt = _retransmits(ctx)
    rt = rt[ctx.column("events", "len")[rt] > 0]  # data, not SYNs (syn_retransmit)
    orig = ctx.isin("events", "dir", "orig")[rt]
    at = ctx.conn_rows(ctx.column("events", "conn")[rt])
    peer_last = np.where(orig, ctx.column("connections", "resp_last_ns")[at],
                         ctx.column("connections", "orig_last_ns")[at])
    silent = (ctx.column("events", "ts_ns")[rt] > peer_last) & (peer_last >= 0)  # sent into silence
    rt, orig, at, peer_last = rt[silent], orig[silent], at[silent], peer_last[silent]
    g = group(at, orig)
    first = g.first
    hit = np.flatnonzero((g.sizes >= 3) & ~ctx.isin("connections", "close", "reset")[at[first]])
    orig_name, resp_name = ctx.names(at[first[hit]])
    ts_ns, frame = ctx.column("events", "ts_ns"), ctx.column("events", "frame")
    for j, i in enumerate(hit.tolist()):
        mine = rt[g.rows(i)]
        o, c = bool(orig[first[i]]), at[first[i]]
        src, dst = (orig_name[j], resp_name[j]) if o else (resp_name[j], orig_name[j])
        span = (ts_ns[mine[-1]] - peer_last[first[i]]) / NS
        yield Finding("half_open", f"{src} retransmitted {len(mine)} times over {span:.1f} s after {dst} "
                      "last sent anything", evidence(frame[mine]), ts_ns[mine[0]] / NS,
                      uid=ctx.column("connections", "uid")[c], host=ctx.column("connections", "resp_h")[c],
                      port=int(ctx.column("connections", "resp_p")[c]), direction="orig" if o else "resp")


@detector("mss_blackhole")
def mss_blackhole(ctx: Context) -> Iterator[Finding]:
    """The same full-size segment retransmitted three or more times while smaller data was acknowledged."""
    if ctx.events.empty:
        return
    rt = _retransmits(ctx)
    conn, orig = ctx.column("events", "conn"), ctx.isin("events", "dir", "orig")
    seq, length = ctx.column("events", "seq"), ctx.column("events", "len")
    big = rt[length[rt] >= 1000]
    same = group(conn[big], orig[big], seq[big], length[big])
    repeated = big[same.sizes[same.codes] >= 3]
    rt = rt[np.isin(conn[rt] * 2 + orig[rt], conn[repeated] * 2 + orig[repeated])]
    g = group(conn[rt], orig[rt])
    ts_ns, frame = ctx.column("events", "ts_ns"), ctx.column("events", "frame")
    c = ctx.connections
    for i in range(len(g)):
        mine = rt[g.rows(i)]
        o, at = bool(orig[mine[0]]), int(ctx.conn_rows(conn[mine[:1]])[0])
        peer_mss = c["resp_mss" if o else "orig_mss"].iloc[at]
        size = int(length[mine].max())
        full = mine[length[mine] == size]
        seqs, repeats = np.unique(seq[full], return_counts=True)
        if size < 1000 or repeats.max() < 3:
            continue
        if pd.notna(peer_mss) and size < 0.9 * float(peer_mss):
            continue
        small = int((length[mine] < size).sum())
        through = int(c["orig_data_pkts" if o else "resp_data_pkts"].iloc[at]) - len(mine)
        if through <= 0:
            continue  # nothing got through at all: plain loss or a dead peer, not a size problem
        worst = int(np.argmax(repeats))
        src = endpoint(c["orig_h"].iloc[at], c["orig_p"].iloc[at]) if o else \
            endpoint(c["resp_h"].iloc[at], c["resp_p"].iloc[at])
        yield Finding("mss_blackhole", f"{src}: the {size}-byte segment at seq {int(seqs[worst])} was retransmitted "
                      f"{int(repeats[worst])} times while {through} data segments got through"
                      + (f" ({small} smaller retransmissions)" if small else ""),
                      evidence(frame[full[seq[full] == seqs[worst]]]), ts_ns[full[0]] / NS, uid=c["uid"].iloc[at],
                      host=c["resp_h"].iloc[at], port=int(c["resp_p"].iloc[at]), direction="orig" if o else "resp")
