"""The per-packet engine: connection splitting, both endpoints' state machines, per-direction counters.

Theory of operation. The flow table (flows.py) gives every segment a slot, one per live 4-tuple, and says
whether the segment travels from the 4-tuple's lower endpoint ("A") or the other. `run` walks the segments in
frame order and keeps each slot's current connection as one int64 row of `st` (layout.py). A new connection
starts on a slot when it is empty, when a new SYN reuses a finished 4-tuple, or after long inactivity; the
finished one is copied to the `done` buffer. State transitions go to the `tr` buffer. Both buffers are
preallocated: when one is full, `run` returns the index it stopped at and the caller drains and resumes, so the
loop never allocates and the results do not depend on batch size.

Receive events that a crossing segment may overtake (a SYN or FIN not yet answered) are held as *pending*
until the receiver's next segment shows whether it had seen them: that is how a simultaneous open or close
is told apart from an ordinary one from the wire alone (RFC 9293 figures 7 and 13).
"""

from __future__ import annotations

import numpy as np

from .layout import (
    C_BAD_CSUM,
    C_BAD_OPTS,
    C_CONN,
    C_FIRST_FRAME,
    C_FIRST_NS,
    C_HS_ACK_FRAME,
    C_HS_ACK_NS,
    C_LAST_FRAME,
    C_LAST_NS,
    C_ORIG_IS_A,
    C_SLOT,
    C_START,
    C_SYN_NS,
    C_SYNACK_NS,
    C_TERM_NS,
    C_TRUNCATED,
    C_TUNNEL,
    E_DATA_PKTS,
    E_FIN_COUNT,
    E_FIN_FRAME,
    E_FIN_NS,
    E_FIN_SEQ,
    E_FIRST_NS,
    E_IP_BYTES,
    E_ISN,
    E_LAST_NS,
    E_MSS,
    E_PEND_EV,
    E_PEND_FRAME,
    E_PEND_NS,
    E_PKTS,
    E_RST_FRAME,
    E_RST_NS,
    E_RST_STATE,
    E_SACK_PERM,
    E_SEQ_HI,
    E_SEQ_REF,
    E_SEQ_START,
    E_STATE,
    E_STATE_NS,
    E_SYN_COUNT,
    E_SYN_FRAME,
    E_SYN_NS,
    E_TS_OK,
    E_WSCALE,
    EP0,
    EP1,
    NONE,
    ROW,
    START_MIDSTREAM,
    START_SYN,
    START_SYNACK,
    T_CONN,
    T_ENDPOINT,
    T_EVENT,
    T_FRAME,
    T_FROM,
    T_NS,
    T_ORDER,
    T_TO,
)
from .native import entry, kernel
from .seqspace import seq_diff, unwrap
from .tcpstate import NO_CHANGE, Event, State
from .zeekconn import zeek_attempt_over, zeek_close_time, zeek_packet, zeek_start

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

# Parameter vector indices (see Params in pipeline.py).
P_TIME_WAIT_NS, P_FIN_TIMEOUT_NS, P_IDLE_NS, P_CHECKSUMS = range(4)
# Global counters vector indices.
G_NEXT_CONN, G_NTR, G_NDONE, G_ORDER = range(4)

EV_SEND_SYN, EV_SEND_SYNACK, EV_SEND_SEGMENT, EV_SEND_FIN, EV_SEND_RST = (
    Event.SEND_SYN.value, Event.SEND_SYNACK.value, Event.SEND_SEGMENT.value, Event.SEND_FIN.value,
    Event.SEND_RST.value)
EV_RECV_SYN, EV_RECV_SYNACK, EV_RECV_ACK_OF_SYN, EV_RECV_ACK_OF_FIN, EV_RECV_SEGMENT = (
    Event.RECV_SYN.value, Event.RECV_SYNACK.value, Event.RECV_ACK_OF_SYN.value, Event.RECV_ACK_OF_FIN.value,
    Event.RECV_SEGMENT.value)
EV_RECV_FIN, EV_RECV_FIN_ACK, EV_RECV_RST = Event.RECV_FIN.value, Event.RECV_FIN_ACK.value, Event.RECV_RST.value
EV_FIN_TIMEOUT, EV_TIME_WAIT_TIMEOUT = Event.FIN_TIMEOUT.value, Event.TIME_WAIT_TIMEOUT.value
ST_UNKNOWN, ST_CLOSED, ST_FIN_WAIT_2, ST_TIME_WAIT = (
    State.UNKNOWN.value, State.CLOSED.value, State.FIN_WAIT_2.value, State.TIME_WAIT.value)


@kernel(inline=True)
def ep(e: int) -> int:
    """Column base of endpoint e (0 originator, 1 responder)."""
    return EP0 if e == 0 else EP1


@kernel(inline=True)
def fire(st, s, e, event, ns, frame, table, tr, g) -> None:  # type: ignore[no-untyped-def]
    """Apply one event to endpoint e of slot s; record the transition if the state changes."""
    b = ep(e)
    old = st[s, b + E_STATE]
    new = table[old, event]
    if new == NO_CHANGE or new == old:
        return
    k = g[G_NTR]
    tr[k, T_CONN] = st[s, C_CONN]
    tr[k, T_ENDPOINT] = e
    tr[k, T_FROM] = old
    tr[k, T_TO] = new
    tr[k, T_EVENT] = event
    tr[k, T_NS] = ns
    tr[k, T_FRAME] = frame
    tr[k, T_ORDER] = g[G_ORDER]
    g[G_NTR] = k + 1
    g[G_ORDER] += 1
    st[s, b + E_STATE] = new
    st[s, b + E_STATE_NS] = ns


@kernel(inline=True)
def run_timers(st, s, now, params, table, tr, g) -> None:  # type: ignore[no-untyped-def]
    """Let the Linux TIME_WAIT and FIN_WAIT_2 timers of both endpoints run up to capture time `now`."""
    for e in range(2):
        b = ep(e)
        state = st[s, b + E_STATE]
        if state == ST_FIN_WAIT_2 and now >= st[s, b + E_STATE_NS] + params[P_FIN_TIMEOUT_NS]:
            fire(st, s, e, EV_FIN_TIMEOUT, st[s, b + E_STATE_NS] + params[P_FIN_TIMEOUT_NS], 0, table, tr, g)
        state = st[s, b + E_STATE]
        if state == ST_TIME_WAIT and now >= st[s, b + E_STATE_NS] + params[P_TIME_WAIT_NS]:
            fire(st, s, e, EV_TIME_WAIT_TIMEOUT, st[s, b + E_STATE_NS] + params[P_TIME_WAIT_NS], 0, table, tr, g)


@kernel(inline=True)
def flush_pending(st, s, e, table, tr, g) -> None:  # type: ignore[no-untyped-def]
    """Deliver endpoint e's held receive event at the time and frame it was seen."""
    b = ep(e)
    event = st[s, b + E_PEND_EV]
    if event != NONE:
        st[s, b + E_PEND_EV] = NONE
        fire(st, s, e, event, st[s, b + E_PEND_NS], st[s, b + E_PEND_FRAME], table, tr, g)


@kernel()
def finish(st, s, hist, done, done_hist, g) -> None:  # type: ignore[no-untyped-def]
    """Copy slot s's connection to the done buffer and empty the slot."""
    k = g[G_NDONE]
    for j in range(st.shape[1]):  # element by element: slice assignment needs numba's runtime (NRT)
        done[k, j] = st[s, j]
    for j in range(hist.shape[1]):
        done_hist[k, j] = hist[s, j]
    g[G_NDONE] = k + 1
    st[s, C_CONN] = NONE


@kernel()
def start(st, s, hist, a_is_src, flags, frame, ns, tunnel, sport, dport, server_port, g) -> None:  # type: ignore[no-untyped-def]
    """Begin a new connection on slot s with this segment; the originator is the SYN sender (Zeek's rules else)."""
    for j in range(st.shape[1]):
        st[s, j] = NONE
    for j in range(hist.shape[1]):
        hist[s, j] = 0
    st[s, C_CONN] = g[G_NEXT_CONN]
    st[s, C_SLOT] = s
    g[G_NEXT_CONN] += 1
    syn, ack = (flags & SYN) != 0, (flags & ACK) != 0
    st[s, C_START] = START_SYN if syn and not ack else (START_SYNACK if syn else START_MIDSTREAM)
    sender_is_orig = zeek_start(st, s, hist, flags, sport, dport, server_port)
    st[s, C_ORIG_IS_A] = a_is_src if sender_is_orig else 1 - a_is_src
    initial = ST_CLOSED if st[s, C_START] == START_SYN else ST_UNKNOWN
    for e in range(2):
        b = ep(e)
        st[s, b + E_STATE] = initial
        st[s, b + E_STATE_NS] = ns
        for f in (E_PKTS, E_IP_BYTES, E_FIN_COUNT, E_SYN_COUNT, E_DATA_PKTS, E_SACK_PERM, E_TS_OK):
            st[s, b + f] = 0
    for f in (C_TRUNCATED, C_BAD_OPTS, C_BAD_CSUM):
        st[s, f] = 0
    st[s, C_FIRST_NS] = ns
    st[s, C_FIRST_FRAME] = frame
    st[s, C_TUNNEL] = tunnel


@kernel(inline=True)
def is_reuse(st, s, snd, flags, seq, ns, params) -> bool:  # type: ignore[no-untyped-def]
    """Whether this segment begins a new connection on an occupied 4-tuple.

    A new SYN (new ISN) after both sides are done with the old connection is port reuse, and so is any SYN
    after a reset; so is any segment
    after the idle timeout (Zeek's tcp_inactivity_timeout) or once Zeek would have removed the ended
    connection (its close/reset/partial-close delay passed): the next packet then opens a new one.
    """
    if ns - st[s, C_LAST_NS] >= params[P_IDLE_NS]:  # Zeek's timer fires at exactly last + timeout
        return True
    gone_at = zeek_close_time(st, s)
    if gone_at != NONE and ns > gone_at:
        # A retransmission of this side's own FIN still belongs to the old connection (LAST_ACK or
        # FIN_WAIT_1 resending); Zeek would open a new one here.
        fin_again = (flags & FIN) != 0 and (flags & SYN) == 0 and st[s, ep(snd) + E_FIN_SEQ] == seq
        if not fin_again:
            return True
    if zeek_attempt_over(st, s, ns):
        # Zeek's tcp_attempt_delay: an attempt still unanswered 5 s after its SYN is removed. A retransmission
        # of the same SYN still belongs to the attempt in tcpa (Zeek would log it as a new connection).
        same_syn = (flags & SYN) != 0 and (flags & ACK) == 0 and st[s, ep(snd) + E_ISN] == seq
        if not same_syn:
            return True
    if (flags & SYN) == 0 or (flags & ACK) != 0:
        return False
    if st[s, EP0 + E_RST_NS] != NONE or st[s, EP1 + E_RST_NS] != NONE:
        return True  # a new attempt after a reset, even with the same ISN (Windows retries a refused SYN so)
    b = ep(snd)
    if st[s, b + E_ISN] == NONE or st[s, b + E_ISN] == seq:
        return False
    s0, s1 = st[s, EP0 + E_STATE], st[s, EP1 + E_STATE]
    done0 = s0 == ST_CLOSED or s0 == ST_TIME_WAIT
    done1 = s1 == ST_CLOSED or s1 == ST_TIME_WAIT or s1 == ST_UNKNOWN
    return done0 and done1


@kernel(inline=True)
def count(st, s, snd, i, flags, seq, payload_len, ip_len, ns, frame, mss, wscale, sack_perm, has_ts) -> None:  # type: ignore[no-untyped-def]
    """Per-direction counters, sequence extent and handshake options for segment i."""
    b = ep(snd)
    st[s, b + E_PKTS] += 1
    st[s, b + E_IP_BYTES] += ip_len[i]
    if st[s, b + E_FIRST_NS] == NONE:
        st[s, b + E_FIRST_NS] = ns
        st[s, b + E_SEQ_REF] = (1 << 32) + seq
        st[s, b + E_SEQ_START] = (1 << 32) + seq + (1 if flags & SYN else 0)
        st[s, b + E_SEQ_HI] = st[s, b + E_SEQ_START]
    st[s, b + E_LAST_NS] = ns
    pos = unwrap(seq, st[s, b + E_SEQ_REF])
    if flags & SYN:
        pos += 1
        st[s, b + E_SYN_COUNT] += 1
        if st[s, b + E_ISN] == NONE or seq_diff(seq, st[s, b + E_ISN]) != 0:
            st[s, b + E_SEQ_START] = pos
            st[s, b + E_SEQ_HI] = pos
            st[s, b + E_SEQ_REF] = pos
        if st[s, b + E_ISN] == NONE:
            st[s, b + E_SYN_FRAME] = frame
        if st[s, b + E_ISN] == NONE or st[s, b + E_ISN] == seq:
            st[s, b + E_SYN_NS] = ns  # the latest try: a retransmitted SYN keeps the attempt alive
        st[s, b + E_ISN] = seq
        st[s, b + E_MSS] = mss[i]
        st[s, b + E_WSCALE] = wscale[i]
        st[s, b + E_SACK_PERM] = 1 if sack_perm[i] else 0
        st[s, b + E_TS_OK] = 1 if has_ts[i] else 0
    end = pos + payload_len[i]
    if payload_len[i] > 0:  # only data extends the byte count: a bare ACK after a FIN sits one past it
        st[s, b + E_DATA_PKTS] += 1
        st[s, b + E_SEQ_HI] = max(st[s, b + E_SEQ_HI], end)
    st[s, b + E_SEQ_REF] = max(st[s, b + E_SEQ_REF], end)
    if pos < st[s, b + E_SEQ_START] and (flags & SYN) == 0 and pos > st[s, b + E_SEQ_START] - (1 << 30):
        st[s, b + E_SEQ_START] = pos  # data from before the first segment we saw (capture began mid-flight)


@kernel(inline=True)
def handshake_times(st, s, snd, flags, ack, ns, frame) -> None:  # type: ignore[no-untyped-def]
    """SYN, SYN+ACK and handshake-completing ACK times, for the handshake RTT."""
    if flags & RST:
        return
    if flags & SYN:
        if flags & ACK:
            if st[s, C_SYNACK_NS] == NONE:
                st[s, C_SYNACK_NS] = ns
        elif st[s, C_SYNACK_NS] == NONE:
            st[s, C_SYN_NS] = ns  # the last SYN before the answer is the one answered
        return
    if (flags & ACK) and snd == 0 and st[s, C_SYNACK_NS] != NONE and st[s, C_HS_ACK_NS] == NONE:
        isn = st[s, EP1 + E_ISN]
        if isn != NONE and seq_diff(ack, isn) > 0:
            st[s, C_HS_ACK_NS] = ns
            st[s, C_HS_ACK_FRAME] = frame


@kernel(inline=True)
def acks(ack, st, s, e, field) -> bool:  # type: ignore[no-untyped-def]
    """Whether ack covers endpoint e's ISN or FIN (field E_ISN or E_FIN_SEQ): ack > that sequence number."""
    v = st[s, ep(e) + field]
    return v != NONE and seq_diff(ack, v) > 0


@kernel(inline=True)
def sender_events(st, s, snd, rcv, flags, seq, ack, plen, ns, frame, table, tr, g) -> None:  # type: ignore[no-untyped-def]
    """What the sender did: resolve its held receive event, then SYN / segment / FIN / RST."""
    b = ep(snd)
    pend = st[s, b + E_PEND_EV]
    crossing = False
    if pend == EV_RECV_SYN:
        crossing = (flags & SYN) != 0 and (flags & ACK) == 0 and (flags & RST) == 0
    elif pend == EV_RECV_FIN:
        crossing = (flags & FIN) != 0 and (flags & RST) == 0 and not acks(ack, st, s, rcv, E_FIN_SEQ)
    if pend != NONE and not crossing:
        flush_pending(st, s, snd, table, tr, g)
    if flags & RST:
        if st[s, b + E_RST_NS] == NONE:
            st[s, b + E_RST_STATE] = st[s, b + E_STATE]
            st[s, b + E_RST_NS] = ns
            st[s, b + E_RST_FRAME] = frame
        fire(st, s, snd, EV_SEND_RST, ns, frame, table, tr, g)
    else:
        if flags & SYN:
            fire(st, s, snd, EV_SEND_SYNACK if flags & ACK else EV_SEND_SYN, ns, frame, table, tr, g)
        else:
            fire(st, s, snd, EV_SEND_SEGMENT, ns, frame, table, tr, g)
        if flags & FIN:
            st[s, b + E_FIN_COUNT] += 1
            if st[s, b + E_FIN_SEQ] == NONE:
                st[s, b + E_FIN_SEQ] = (seq + plen + (1 if flags & SYN else 0)) & 0xFFFFFFFF
                st[s, b + E_FIN_NS] = ns
                st[s, b + E_FIN_FRAME] = frame
            fire(st, s, snd, EV_SEND_FIN, ns, frame, table, tr, g)
    if crossing:
        st[s, b + E_PEND_NS] = ns
        st[s, b + E_PEND_FRAME] = frame
        flush_pending(st, s, snd, table, tr, g)


@kernel(inline=True)
def receiver_events(st, s, snd, rcv, flags, ack, ns, frame, table, tr, g) -> None:  # type: ignore[no-untyped-def]
    """What the receiver went through on this segment, ACK effects before SYN/FIN (RFC 9293 3.10.7.4)."""
    b = ep(rcv)
    if flags & RST:
        flush_pending(st, s, rcv, table, tr, g)
        fire(st, s, rcv, EV_RECV_RST, ns, frame, table, tr, g)
        return
    has_ack = (flags & ACK) != 0
    if flags & SYN:
        if not has_ack:
            state = st[s, b + E_STATE]
            if (state == ST_CLOSED or state == ST_UNKNOWN) and st[s, b + E_PEND_EV] == NONE:
                hold(st, s, rcv, EV_RECV_SYN, ns, frame)  # answered by SYN+ACK, or crossed by its own SYN
            else:
                fire(st, s, rcv, EV_RECV_SYN, ns, frame, table, tr, g)
        elif st[s, b + E_ISN] == NONE or acks(ack, st, s, rcv, E_ISN):
            fire(st, s, rcv, EV_RECV_SYNACK, ns, frame, table, tr, g)
        return
    if has_ack and acks(ack, st, s, rcv, E_ISN):
        fire(st, s, rcv, EV_RECV_ACK_OF_SYN, ns, frame, table, tr, g)
    fin_acked = has_ack and acks(ack, st, s, rcv, E_FIN_SEQ)
    if fin_acked and (flags & FIN) == 0:
        fire(st, s, rcv, EV_RECV_ACK_OF_FIN, ns, frame, table, tr, g)
    fire(st, s, rcv, EV_RECV_SEGMENT, ns, frame, table, tr, g)
    if flags & FIN:
        if fin_acked:
            fire(st, s, rcv, EV_RECV_FIN_ACK, ns, frame, table, tr, g)
        elif st[s, b + E_FIN_SEQ] == NONE and st[s, b + E_PEND_EV] == NONE:
            hold(st, s, rcv, EV_RECV_FIN, ns, frame)  # acknowledged later, or crossed by its own FIN
        elif st[s, b + E_PEND_EV] == NONE:
            fire(st, s, rcv, EV_RECV_FIN, ns, frame, table, tr, g)


@kernel(inline=True)
def hold(st, s, e, event, ns, frame) -> None:  # type: ignore[no-untyped-def]
    """Keep a receive event until the receiver's next segment shows whether it was overtaken."""
    b = ep(e)
    st[s, b + E_PEND_EV] = event
    st[s, b + E_PEND_NS] = ns
    st[s, b + E_PEND_FRAME] = frame


@entry("i8, i8[::1], i8[::1], i8[::1], i8[::1], u2[::1], u4[::1], u4[::1], u2[::1], i4[::1], i4[::1], i4[::1], "
       "i2[::1], b1[::1], b1[::1], i1[::1], b1[::1], u1[::1], i4[::1], u2[::1], u2[::1], i8[:, ::1], u1[:, ::1], "
       "i1[:, ::1], i8[::1], i8[::1], i8[::1], i8[:, ::1], i8[:, ::1], u1[:, ::1], i8[::1], i8[::1]", returns="i8")
def run(start_i, slot, a_is_src, frame, ts, flags, seq, ack, win, payload_len, ip_len, mss, wscale,  # type: ignore[no-untyped-def]
        sack_perm, has_ts, csum_ok, truncated, opt_error, tunnel, sport, dport,
        st, hist, table, params, server_port, g, tr, done, done_hist, seg_conn, seg_dir) -> int:
    """Process segments from start_i on; return the index reached (len(slot) when the batch is done).

    The segment columns come as the decoder stores them (SegmentTable's types: no int64 copy per batch); every
    value is read into an int64 before any arithmetic, as unsigned narrow values would wrap.
    seg_conn and seg_dir receive each segment's connection id and direction (0: from the originator).
    """
    n = len(slot)
    cap_tr, cap_done = tr.shape[0], done.shape[0]
    for i in range(start_i, n):
        if g[G_NTR] + 12 > cap_tr or g[G_NDONE] + 1 > cap_done:
            return i
        s = slot[i]
        ns = ts[i]
        f, sq, ak, wn = np.int64(flags[i]), np.int64(seq[i]), np.int64(ack[i]), np.int64(win[i])
        ln = np.int64(payload_len[i])
        if st[s, C_CONN] != NONE:
            snd0 = 0 if a_is_src[i] == st[s, C_ORIG_IS_A] else 1
            run_timers(st, s, ns, params, table, tr, g)
            if is_reuse(st, s, snd0, f, sq, ns, params):
                settle(st, s, ns, params, table, tr, g)
                finish(st, s, hist, done, done_hist, g)
        if st[s, C_CONN] == NONE:
            start(st, s, hist, a_is_src[i], f, frame[i], ns, np.int64(tunnel[i]), np.int64(sport[i]),
                  np.int64(dport[i]), server_port, g)
        snd = 0 if a_is_src[i] == st[s, C_ORIG_IS_A] else 1
        rcv = 1 - snd
        seg_conn[i] = st[s, C_CONN]
        seg_dir[i] = snd
        if params[P_CHECKSUMS] and csum_ok[i] == 0:
            st[s, C_BAD_CSUM] += 1
            zeek_packet(st, s, hist, snd, f, sq, ak, wn, ln, ns, True)
            continue  # a corrupt segment tells nothing reliable (Zeek drops it the same way)
        st[s, C_LAST_NS] = ns
        st[s, C_LAST_FRAME] = frame[i]
        if truncated[i]:
            st[s, C_TRUNCATED] += 1
        if opt_error[i]:
            st[s, C_BAD_OPTS] += 1
        count(st, s, snd, i, f, sq, payload_len, ip_len, ns, frame[i], mss, wscale, sack_perm, has_ts)
        handshake_times(st, s, snd, f, ak, ns, frame[i])
        sender_events(st, s, snd, rcv, f, sq, ak, ln, ns, frame[i], table, tr, g)
        receiver_events(st, s, snd, rcv, f, ak, ns, frame[i], table, tr, g)
        zeek_packet(st, s, hist, snd, f, sq, ak, wn, ln, ns, False)
    return n


@kernel()
def settle(st, s, now, params, table, tr, g) -> None:  # type: ignore[no-untyped-def]
    """Bring slot s's connection to its final state as of `now`: held events delivered, timers run."""
    flush_pending(st, s, 0, table, tr, g)
    flush_pending(st, s, 1, table, tr, g)
    run_timers(st, s, now, params, table, tr, g)
    if st[s, C_TERM_NS] == NONE:
        st[s, C_TERM_NS] = zeek_close_time(st, s)


@entry("i8[::1], i8, i8[:, ::1], u1[:, ::1], i8[::1], i1[:, ::1], i8[::1], i8[:, ::1], i8[:, ::1], u1[:, ::1]",
       returns="i8")
def drain(slots, now, st, hist, params, table, g, tr, done, done_hist) -> int:  # type: ignore[no-untyped-def]
    """Finish the connections on `slots` as of `now` (end of capture, or expiry); return how many were done."""
    for j in range(len(slots)):
        if g[G_NTR] + 8 > tr.shape[0] or g[G_NDONE] + 1 > done.shape[0]:
            return j
        s = slots[j]
        if st[s, C_CONN] == NONE:
            continue
        settle(st, s, now, params, table, tr, g)
        finish(st, s, hist, done, done_hist, g)
    return len(slots)


@entry("i8[:, ::1], i8[::1]")
def close_times(st, out) -> None:  # type: ignore[no-untyped-def]
    """Per slot, when its connection ended in Zeek's sense, into out (NONE: still going, or no connection)."""
    for s in range(st.shape[0]):
        out[s] = zeek_close_time(st, s) if st[s, C_CONN] != NONE else NONE


def new_state(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty slot storage for `rows` slots: the state matrix and the history letters."""
    from .layout import HIST_MAX
    st = np.full((rows, ROW), NONE, dtype=np.int64)
    return st, np.zeros((rows, HIST_MAX), dtype=np.uint8)
