"""Connection churn: TIME_WAIT piling up on a client and the ephemeral-port budget it eats."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from . import Context, Finding, Kind, declare, detector, endpoint, evidence, group

NS = 1e9
SUSTAINED_S = 5.0  # a connection rate must hold this long before it is projected over TIME_WAIT

declare(
    Kind("time_wait_accumulation", "notice", "TIME_WAIT piling up",
         "One host closes many short connections to the same server ip:port actively, so each of its sockets "
         "sits in TIME_WAIT for 2 MSL (60 s on Linux, fixed). The count shown is the most that were held at "
         "once. Each one keeps its local port out of use toward that server.",
         "Short-lived connections (one request each, no HTTP keep-alive or connection pooling), the client "
         "closing first.",
         "Reuse connections (keep-alive, pools); let the server close first where the protocol allows; enable "
         "net.ipv4.tcp_tw_reuse on clients; widen ip_local_port_range. Do not use tcp_tw_recycle (removed in "
         "Linux 4.12; it broke clients behind NAT)."),
    Kind("port_exhaustion_risk", "warning", "Ephemeral ports running out",
         "A client opens connections to one server ip:port faster than TIME_WAIT frees its local ports: with "
         "the default range 32768-60999 (28 232 ports) and 60 s of TIME_WAIT, about 470 new connections per "
         "second is the ceiling. Past it connect() fails with EADDRNOTAVAIL, 'Cannot assign requested "
         "address' (errno 99).",
         "A high rate of short connections from one client address to one server ip:port: load tests, "
         "proxies and services without connection reuse.",
         "Reuse connections (keep-alive, pools); slow the rate; widen net.ipv4.ip_local_port_range; enable "
         "tcp_tw_reuse; spread the load over more server ports or client addresses."),
)


def _peak(starts: npt.NDArray[np.int64], length: int) -> tuple[int, int]:
    """Most intervals [start, start + length) open at once, and when that peak began."""
    ends = starts + length
    times = np.concatenate([starts, ends])
    steps = np.concatenate([np.ones(len(starts), np.int64), -np.ones(len(ends), np.int64)])
    order = np.lexsort((steps, times))  # at equal times an end is processed before a start
    level = np.cumsum(steps[order])
    i = int(np.argmax(level))
    return int(level[i]), int(times[order][i])


@detector("time_wait_accumulation")
def time_wait_accumulation(ctx: Context) -> Iterator[Finding]:
    """Sockets one host held in TIME_WAIT at once toward one server ip:port."""
    if ctx.transitions.empty:
        return
    tw = np.flatnonzero(ctx.isin("transitions", "to_state", "TIME_WAIT"))
    at = ctx.conn_rows(ctx.column("transitions", "conn")[tw])
    orig = ctx.isin("transitions", "endpoint", "orig")[tw]
    host = np.where(orig, ctx.column("connections", "orig_h")[at], ctx.column("connections", "resp_h")[at])
    server, port = ctx.column("connections", "resp_h")[at], ctx.column("connections", "resp_p")[at]
    ts_ns, frame = ctx.column("transitions", "ts_ns")[tw], ctx.column("transitions", "frame")[tw]
    length = int(ctx.settings.time_wait * NS)
    g = group(host, server, port)
    for i in np.flatnonzero(g.sizes >= ctx.settings.time_wait_min):
        mine = g.rows(i)
        peak, when = _peak(ts_ns[mine], length)
        if peak < ctx.settings.time_wait_min:
            continue
        side = "client" if orig[mine].all() else "host"
        yield Finding("time_wait_accumulation", f"{side} {host[mine[0]]} held up to {peak} sockets in TIME_WAIT "
                      f"toward {endpoint(server[mine[0]], port[mine[0]])} ({len(mine)} active closes in all)",
                      evidence(frame[mine]), when / NS, host=host[mine[0]], port=int(port[mine[0]]))


@detector("port_exhaustion_risk")
def port_exhaustion(ctx: Context) -> Iterator[Finding]:
    """New connections per client address and server ip:port against ports / TIME_WAIT."""
    s = ctx.settings
    if ctx.connections.empty:
        return
    starts = np.flatnonzero(ctx.isin("connections", "started", "syn"))
    client, server, port, first_ns, first_frame = (ctx.column("connections", n)[starts] for n in (
        "orig_h", "resp_h", "resp_p", "first_ns", "first_frame"))
    limit = s.ephemeral_ports / s.time_wait
    length = int(s.time_wait * NS)
    # Fewer connections than this cannot reach the warning share even at a sustained rate.
    least = max(2, int(s.exhaustion_warn * s.ephemeral_ports * min(SUSTAINED_S, s.time_wait) / s.time_wait))
    g = group(ctx.key("connections", "orig_h")[starts], ctx.key("connections", "resp_h")[starts], port)
    for i in np.flatnonzero(g.sizes >= least):
        mine = g.rows(i)
        t = np.sort(first_ns[mine])
        span = (t[-1] - t[0]) / NS
        in_window = int(np.max(np.searchsorted(t, t + length) - np.arange(len(t))))
        rate = (len(t) - 1) / span if span > 0 else float("inf")
        # Over a capture shorter than TIME_WAIT, project the rate over a whole TIME_WAIT, but only a rate held
        # for SUSTAINED_S: a short burst uses few ports however fast it is.
        projected = float(in_window)
        if span < s.time_wait and span >= SUSTAINED_S:
            projected = max(projected, min(rate * s.time_wait, float(s.ephemeral_ports) * 10))
        share = projected / s.ephemeral_ports
        if share < s.exhaustion_warn:
            continue
        severity = "error" if share >= 0.9 else "warning"
        left = (s.ephemeral_ports - in_window) / rate if rate > limit and rate != float("inf") else None
        yield Finding("port_exhaustion_risk", f"{client[mine[0]]} -> {endpoint(server[mine[0]], port[mine[0]])}: "
                      f"{len(t)} new connections at {rate:.0f}/s (ceiling about {limit:.0f}/s for "
                      f"{s.ephemeral_ports} ports and {s.time_wait:.0f} s TIME_WAIT): TIME_WAIT alone would hold "
                      f"{share:.0%} of the port range"
                      + (f"; exhausted in about {left:.0f} s at this rate" if left else ""),
                      evidence(first_frame[mine]), t[0] / NS, severity=severity, host=client[mine[0]],
                      port=int(port[mine[0]]))
