"""TCP timestamps going backwards across connections from one address: several hosts behind one NAT."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from . import Context, Finding, Kind, declare, detector, endpoint, evidence

SYN, ACK = 0x02, 0x10
NS = 1e9
CLOCK_RATES = (100.0, 250.0, 300.0, 1000.0)  # TSval ticks per second of common stacks (Linux HZ, Windows...)

declare(
    Kind("timestamp_regression", "notice", "TCP timestamps go backwards from one address",
         "SYNs from one source address to one server carry TSval values that go backwards from one connection "
         "to the next. If several hosts share that address (NAT), each has its own timestamp clock; a server "
         "with net.ipv4.tcp_tw_recycle=1 then drops the SYNs whose TSval is lower than the last one it saw from "
         "that address, and those clients cannot connect. Since Linux 4.10 each connection gets a random "
         "timestamp offset, so a regression alone does not prove NAT; unanswered SYNs with the lower TSval, or "
         "several clock rates on one address, do.",
         "Clients behind NAT (or a load balancer's SNAT) talking to a server with tcp_tw_recycle enabled "
         "(kernels before 4.12), or a middlebox that rejects non-monotonic timestamps (PAWS).",
         "Disable tcp_tw_recycle on the server (it was removed in Linux 4.12); keep tcp_timestamps on; use "
         "tcp_tw_reuse on the clients instead."),
)


def _serial_lt(a: int, b: int) -> bool:
    """a < b in 32-bit serial arithmetic (RFC 7323: timestamps wrap)."""
    return 0 < ((b - a) & 0xFFFFFFFF) < 0x80000000


def _rates(ctx: Context, uids: pd.Index) -> dict[str, float]:
    """Each connection's client clock rate (TSval ticks per second), when two stamps 0.5 s apart exist."""
    ctl = ctx.control
    stamped = ctl[ctl["uid"].isin(uids) & (ctl["dir"] == "orig") & (ctl["tsval"] >= 0)]
    out = {}
    for uid, g in stamped.groupby("uid", sort=False):
        dt = (g["ts_ns"].iloc[-1] - g["ts_ns"].iloc[0]) / NS
        if dt >= 0.5:
            out[uid] = ((int(g["tsval"].iloc[-1]) - int(g["tsval"].iloc[0])) & 0xFFFFFFFF) / dt
    return out


def _clock(rate: float) -> float | None:
    near = min(CLOCK_RATES, key=lambda r: abs(rate - r) / r)
    return near if abs(rate - near) / near <= 0.1 else None


@detector("timestamp_regression")
def timestamp_regression(ctx: Context) -> Iterator[Finding]:
    """SYN TSvals from one address to one server going backwards; stronger with dropped SYNs or mixed clocks."""
    ctl = ctx.control
    if ctl.empty:
        return
    syns = ctl[((ctl["flags"] & (SYN | ACK)) == SYN) & (ctl["tsval"] >= 0) & (ctl["dir"] == "orig")]
    syns = syns.drop_duplicates("uid").join(ctx.conns[["orig_h", "resp_h", "resp_p", "conn_state"]], on="uid")
    keys = ["orig_h", "resp_h", "resp_p"]
    syns = syns[syns.groupby(keys, sort=False)["uid"].transform("size") >= 2]
    for (client, server, port), g in syns.groupby(keys, sort=False):
        if len(g) < 2:
            continue
        g = g.sort_values("ts_ns")
        highest = int(g["tsval"].iloc[0])
        back = []
        for row in g.iloc[1:][["uid", "tsval", "frame", "ts_ns", "conn_state"]].itertuples():
            if _serial_lt(int(row.tsval), highest):
                back.append(row)
            else:
                highest = int(row.tsval)
        if not back:
            continue
        back_uids = {r.uid for r in back}
        dropped = [r for r in back if r.conn_state in ("S0", "RSTOS0")]
        answered_others = (~g["uid"].isin(back_uids) & ~g["conn_state"].isin(["S0", "RSTOS0"])).any()
        clocks = {_clock(r) for r in _rates(ctx, pd.Index(g["uid"])).values()} - {None}
        evidence_text = []
        if dropped and answered_others:
            evidence_text.append(f"{len(dropped)} of the SYNs with the lower TSval went unanswered while others "
                                 "from the same address were answered: the server is dropping them")
        if len(clocks) > 1:
            evidence_text.append("several timestamp clocks share the address ("
                                 + ", ".join(f"{c:.0f} Hz" for c in sorted(clocks)) + "): more than one host")
        severity = "warning" if evidence_text else "notice"
        if not evidence_text:
            evidence_text.append("on its own this may be Linux's per-connection timestamp offsets, not NAT")
        yield Finding("timestamp_regression", f"{client} -> {endpoint(server, port)}: TSval went backwards on "
                      f"{len(back)} of {len(g)} SYNs; " + "; ".join(evidence_text),
                      evidence(np.array([r.frame for r in back])), back[0].ts_ns / NS, severity=severity,
                      host=client, port=int(port))
