"""Transfers that stall: a peer that vanished (half-open), full-size segments that never get through."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from . import Context, Finding, Kind, declare, detector, endpoint, evidence

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


@detector("half_open")
def half_open(ctx: Context) -> Iterator[Finding]:
    """Three or more retransmissions in a row after the peer's last packet, with no close."""
    ev = ctx.events
    if ev.empty:
        return
    rt = ev[ev["kind"].astype(str).isin(RETRANSMITS) & (ev["len"] > 0)]  # data, not SYNs (syn_retransmit)
    peer_last = np.where(rt["dir"].to_numpy() == "orig", rt["uid"].map(ctx.conns["resp_last_ns"]).to_numpy(),
                         rt["uid"].map(ctx.conns["orig_last_ns"]).to_numpy())
    rt = rt[(rt["ts_ns"].to_numpy() > peer_last) & (peer_last >= 0)]  # only what was sent into silence
    rt = rt[rt.groupby(["uid", "dir"], sort=False)["frame"].transform("size") >= 3]
    for (uid, direction), g in rt.groupby(["uid", "dir"], sort=False):
        c = ctx.rows[uid]
        peer_last = c.resp_last_ns if direction == "orig" else c.orig_last_ns
        if peer_last < 0:
            continue  # the peer never answered at all: an unanswered attempt, not a vanished peer
        silent = g[g["ts_ns"] > peer_last]
        if len(silent) < 3 or c.close in ("reset",):
            continue
        src, dst = (endpoint(c.orig_h, c.orig_p), endpoint(c.resp_h, c.resp_p)) if direction == "orig" else \
            (endpoint(c.resp_h, c.resp_p), endpoint(c.orig_h, c.orig_p))
        span = (silent["ts_ns"].iloc[-1] - peer_last) / NS
        yield Finding("half_open", f"{src} retransmitted {len(silent)} times over {span:.1f} s after {dst} "
                      "last sent anything", evidence(silent["frame"]), silent["ts_ns"].iloc[0] / NS, uid=uid,
                      host=c.resp_h, port=int(c.resp_p), direction=direction)


@detector("mss_blackhole")
def mss_blackhole(ctx: Context) -> Iterator[Finding]:
    """The same full-size segment retransmitted three or more times while smaller data was acknowledged."""
    ev = ctx.events
    if ev.empty:
        return
    rt = ev[ev["kind"].astype(str).isin(RETRANSMITS) & (ev["len"] >= 1000)]
    repeats_any = rt.groupby(["uid", "dir", "seq", "len"], sort=False)["frame"].transform("size")
    candidates = rt.loc[repeats_any >= 3, ["uid", "dir"]].drop_duplicates()
    rt = ev[ev["kind"].astype(str).isin(RETRANSMITS)].merge(candidates, on=["uid", "dir"])
    for (uid, direction), g in rt.groupby(["uid", "dir"], sort=False):
        c = ctx.rows[uid]
        peer_mss = c.resp_mss if direction == "orig" else c.orig_mss
        size = int(g["len"].max())
        full = g[g["len"] == size]
        repeats = full.groupby("seq").size()
        if size < 1000 or repeats.max() < 3:
            continue
        if pd.notna(peer_mss) and size < 0.9 * float(peer_mss):
            continue
        small = g[g["len"] < size]
        sent = c.orig_data_pkts if direction == "orig" else c.resp_data_pkts
        if int(sent) - len(g) <= 0:
            continue  # nothing got through at all: plain loss or a dead peer, not a size problem
        seq = int(repeats.idxmax())
        src = endpoint(c.orig_h, c.orig_p) if direction == "orig" else endpoint(c.resp_h, c.resp_p)
        yield Finding("mss_blackhole", f"{src}: the {size}-byte segment at seq {seq} was retransmitted "
                      f"{int(repeats.max())} times while {int(sent) - len(g)} data segments got through"
                      + (f" ({len(small)} smaller retransmissions)" if len(small) else ""),
                      evidence(full[full["seq"] == seq]["frame"]), full["ts_ns"].iloc[0] / NS, uid=uid,
                      host=c.resp_h, port=int(c.resp_p), direction=direction)
