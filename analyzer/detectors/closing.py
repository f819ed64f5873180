"""How connections end: three-packet and simultaneous closes, RSTs after a half-close, sockets stuck in
CLOSE_WAIT, FIN_WAIT_2 or LAST_ACK, and 4-tuples reused."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from . import Context, Finding, Kind, declare, detector, endpoint, evidence

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
    c = ctx.connections
    for kind, close in (("three_packet_close", "three_packet"), ("simultaneous_close", "simultaneous")):
        rows = c[c["close"] == close]
        for (host, port), g in rows.groupby(["resp_h", "resp_p"], sort=False):
            if len(g) > ctx.settings.aggregate_over:
                yield Finding(kind, f"{len(g)} connections to {endpoint(host, port)} closed this way",
                              evidence(g["last_frame"]), float(g["ts"].min()), host=host, port=int(port))
                continue
            for row in map(ctx.rows.__getitem__, g["uid"]):
                who = "both sides" if close == "simultaneous" else (
                    endpoint(row.orig_h, row.orig_p) if row.active_closer == "orig"
                    else endpoint(row.resp_h, row.resp_p))
                yield Finding(kind, f"{endpoint(row.orig_h, row.orig_p)} <-> {endpoint(host, port)}: closed by "
                              f"{who}", evidence([row.last_frame]), row.last_ns / NS, uid=row.uid, host=host,
                              port=int(port))


@detector("rst_after_half_close")
def rst_after_half_close(ctx: Context) -> Iterator[Finding]:
    """An RST after one side's FIN while the other side had not closed."""
    ctl = ctx.control
    if ctl.empty:
        return
    fins = ctl[(ctl["flags"] & FIN) != 0]
    first_fin = fins.drop_duplicates("uid").set_index("uid")
    first_rst = ctl[(ctl["flags"] & RST) != 0].drop_duplicates("uid").set_index("uid")
    both = first_fin.add_suffix("_fin").join(first_rst.add_suffix("_rst"), how="inner")
    both = both[both["frame_rst"] > both["frame_fin"]]
    fin_by_dir = fins.drop_duplicates(["uid", "dir"]).set_index(["uid", "dir"])["frame"]
    events = ctx.events
    late = events[events["kind"] == "data_after_peer_fin"] if not events.empty else events
    for uid, row in zip(both.index, both.to_dict("records")):
        closer = row["dir_fin"]
        peer = "resp" if closer == "orig" else "orig"
        other = fin_by_dir.get((uid, peer))
        if other is not None and other < row["frame_rst"]:
            continue  # both had closed: an RST after a full close is another story
        c = ctx.rows[uid]
        names = {"orig": endpoint(c.orig_h, c.orig_p), "resp": endpoint(c.resp_h, c.resp_p)}
        mine = ctx.of("events", uid) if len(late) else late
        sent = mine[(mine["kind"] == "data_after_peer_fin") & (mine["dir"] == peer)] if len(mine) else mine
        data = (f"{names[peer]} kept sending data after the FIN (frame {int(sent['frame'].iloc[0])})"
                if len(sent) else f"{names[peer]} sent no data after the FIN")
        by = "the half-closed side itself" if row["dir_rst"] == closer else "the side still open"
        yield Finding("rst_after_half_close", f"{names[closer]} half-closed (FIN, frame {int(row['frame_fin'])}); "
                      f"{data}; then {names[row['dir_rst']]} ({by}) reset the connection "
                      f"{(row['ts_ns_rst'] - row['ts_ns_fin']) / NS:.3f} s later",
                      evidence([row["frame_fin"], row["frame_rst"], *sent["frame"][:1]]),
                      row["ts_ns_rst"] / NS, uid=uid, host=c.resp_h, port=int(c.resp_p), direction=row["dir_rst"])


def _stints(ctx: Context, state: str) -> pd.DataFrame:
    """Every time an endpoint entered `state`: uid, endpoint, entered, left (end of capture if still there)."""
    tr = ctx.transitions
    if tr.empty:
        return pd.DataFrame(columns=["uid", "endpoint", "entered", "left", "frame", "still"])
    tr = tr.sort_values(["conn", "endpoint", "ts_ns", "frame"], kind="stable")
    nxt = tr.groupby(["conn", "endpoint"])["ts_ns"].shift(-1)
    into = tr["to_state"] == state
    out = pd.DataFrame({"uid": tr.loc[into, "uid"], "endpoint": tr.loc[into, "endpoint"],
                        "entered": tr.loc[into, "ts_ns"], "frame": tr.loc[into, "frame"]})
    out["still"] = nxt[into].isna().to_numpy()
    out["left"] = nxt[into].fillna(ctx.end_ns).to_numpy()
    return out


@detector("close_wait")
def close_wait(ctx: Context) -> Iterator[Finding]:
    """Endpoints left in CLOSE_WAIT, or held there long, aggregated per host:port."""
    st = _stints(ctx, "CLOSE_WAIT")
    if st.empty:
        return
    st = st.join(ctx.conns[["orig_h", "orig_p", "resp_h", "resp_p"]], on="uid")
    st["age"] = (st["left"] - st["entered"]) / NS
    stuck = st[st["still"] | (st["age"] >= ctx.settings.close_wait_min_s)]
    st = stuck.assign(host=lambda d: d["orig_h"].where(d["endpoint"] == "orig", d["resp_h"]),
                      port=lambda d: d["orig_p"].where(d["endpoint"] == "orig", d["resp_p"]))
    for (host, port), g in st.groupby(["host", "port"], sort=False):
        still = int(g["still"].sum())
        oldest = g.loc[g["age"].idxmax()]
        uid = str(oldest["uid"]) if len(g) == 1 else ""
        yield Finding("close_wait", f"{endpoint(host, port)}: {len(g)} socket{'s' if len(g) > 1 else ''} in "
                      f"CLOSE_WAIT ({still} still at the end of the capture), oldest {oldest['age']:.3f} s "
                      f"(connection {oldest['uid']})", evidence(g["frame"]), g["entered"].min() / NS, uid=uid,
                      host=host, port=int(port))


@detector("fin_wait_2_lingering", "last_ack_lingering")
def lingering(ctx: Context) -> Iterator[Finding]:
    """FIN_WAIT_2 or LAST_ACK held past the threshold, or ended by the kernel's timer."""
    tr = ctx.transitions
    for kind, state in (("fin_wait_2_lingering", "FIN_WAIT_2"), ("last_ack_lingering", "LAST_ACK")):
        st = _stints(ctx, state)
        timed_out = set(tr.loc[tr["event"] == "FIN_TIMEOUT", "uid"]) if state == "FIN_WAIT_2" else set()
        for row in st[["uid", "endpoint", "entered", "left", "frame", "still"]].itertuples():
            age = (row.left - row.entered) / NS
            if age < ctx.settings.linger_min_s and row.uid not in timed_out:
                continue
            c = ctx.rows[row.uid]
            me = endpoint(c.orig_h, c.orig_p) if row.endpoint == "orig" else endpoint(c.resp_h, c.resp_p)
            how = ("until tcp_fin_timeout closed it" if row.uid in timed_out
                   else "to the end of the capture" if row.still else "before the peer answered")
            yield Finding(kind, f"{me} held {state} for {age:.1f} s {how}", evidence([row.frame]),
                          row.entered / NS, uid=row.uid, host=c.resp_h, port=int(c.resp_p),
                          direction=row.endpoint)


@detector("port_reuse")
def port_reuse(ctx: Context) -> Iterator[Finding]:
    """A 4-tuple used again by a later connection; flagged when the SYN met the old one's TIME_WAIT."""
    c = ctx.connections
    key = ["orig_h", "orig_p", "resp_h", "resp_p"]
    tw = _stints(ctx, "TIME_WAIT").set_index("uid") if not ctx.transitions.empty else pd.DataFrame()
    dup = c[c.duplicated(key, keep=False) & (c["started"] == "syn")]
    for _, g in dup.sort_values("first_ns").groupby(key, sort=False):
        rows = [ctx.rows[u] for u in g["uid"]]
        for old, new in zip(rows, rows[1:]):
            note, severity = "", ""
            if len(tw) and old.uid in tw.index:
                entered = tw.loc[[old.uid], "entered"].min()
                if new.first_ns < entered + ctx.settings.time_wait * NS:
                    note = (f"; the new SYN came {(new.first_ns - entered) / NS:.1f} s into the old connection's "
                            "TIME_WAIT")
                    severity = "notice"
            yield Finding("port_reuse", f"{endpoint(new.orig_h, new.orig_p)} -> {endpoint(new.resp_h, new.resp_p)} "
                          f"reused {(new.first_ns - old.last_ns) / NS:.1f} s after connection {old.uid}{note}",
                          evidence([new.first_frame]), new.ts, severity=severity, uid=new.uid, host=new.resp_h,
                          port=int(new.resp_p))
