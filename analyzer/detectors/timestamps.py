"""TCP timestamps going backwards across connections from one address: several hosts behind one NAT."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pandas as pd

from . import Context, Finding, Groups, Kind, declare, detector, endpoint, evidence, group

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


def _rates(ctx: Context, conns: npt.NDArray[np.int64]) -> list[float]:
    """The connections' client clock rates (TSval ticks per second), where two stamps 0.5 s apart exist."""
    conn, ts_ns, tsval = (ctx.column("control", n) for n in ("conn", "ts_ns", "tsval"))
    stamped = np.flatnonzero(np.isin(conn, conns) & ctx.isin("control", "dir", "orig") & (tsval >= 0))
    g = group(conn[stamped])
    first, last = stamped[g.first], stamped[g.last]
    out = []
    for a, b in zip(first.tolist(), last.tolist()):
        dt = (ts_ns[b] - ts_ns[a]) / NS
        if dt >= 0.5:
            out.append(((int(tsval[b]) - int(tsval[a])) & 0xFFFFFFFF) / dt)
    return out


def _clock(rate: float) -> float | None:
    near = min(CLOCK_RATES, key=lambda r: abs(rate - r) / r)
    return near if abs(rate - near) / near <= 0.1 else None


def _may_go_back(g: Groups, ts_ns: npt.NDArray[np.int64], tsval: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Per group, whether its TSvals can go backwards: a TSval below the one sent just before it (or two SYNs at
    the same time, whose order is then not given). A group where neither happens never goes backwards."""
    by = np.lexsort((ts_ns, g.codes))
    code, ts_ns, tsval = g.codes[by], ts_ns[by], tsval[by]
    pair = code[1:] == code[:-1]
    back = ((tsval[:-1] - tsval[1:]) & 0xFFFFFFFF)
    suspect = pair & ((ts_ns[1:] == ts_ns[:-1]) | ((back > 0) & (back < 0x80000000)))
    return np.bincount(code[1:][suspect], minlength=len(g)) > 0


@detector("timestamp_regression")
def timestamp_regression(ctx: Context) -> Iterator[Finding]:
    """SYN TSvals from one address to one server going backwards; stronger with dropped SYNs or mixed clocks."""
    if ctx.control.empty:
        return
    conn, flags, tsval = (ctx.column("control", n) for n in ("conn", "flags", "tsval"))
    syns = np.flatnonzero(((flags & (SYN | ACK)) == SYN) & (tsval >= 0) & ctx.isin("control", "dir", "orig"))
    syns = syns[group(conn[syns]).first]  # each connection's first SYN
    at = ctx.conn_rows(conn[syns])
    col = {n: ctx.column("connections", n)[at] for n in ("uid", "orig_h", "resp_h", "resp_p", "conn_state")}
    col.update({n: ctx.column("control", n)[syns] for n in ("conn", "tsval", "frame", "ts_ns")})
    keys = group(ctx.key("connections", "orig_h")[at], ctx.key("connections", "resp_h")[at], col["resp_p"])
    for i in np.flatnonzero((keys.sizes >= 2) & _may_go_back(keys, col["ts_ns"], col["tsval"])):
        mine = keys.rows(i)
        client, server, port = col["orig_h"][mine[0]], col["resp_h"][mine[0]], col["resp_p"][mine[0]]
        g = pd.DataFrame({n: col[n][mine] for n in ("uid", "conn", "tsval", "frame", "ts_ns", "conn_state")})
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
        clocks = {c for c in map(_clock, _rates(ctx, g["conn"].to_numpy())) if c is not None}
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
