"""Wireshark-compatible TCP sequence analysis: one compiled pass over every segment, in capture order.

The rules are Wireshark's `tcp.analysis.*` definitions (packet-tcp.c, tcp_analyze_sequence_number, as of
Wireshark 4.0; the User's Guide section "TCP Analysis" describes them), re-expressed as a per-direction state
record. For each segment, in this precedence:

  zero_window_probe   1 byte at the next expected sequence number while the peer's window is 0
  zero_window         window 0 on a segment without SYN, FIN or RST
  lost_segment        the sequence number is beyond the next expected one (a gap before it was not captured)
  keepalive           0 or 1 byte starting one before the next expected sequence number
  window_update       no data, same seq and ack as before, window changed
  window_full         data that fills the peer's advertised window exactly
  keepalive_ack       a duplicate-ACK-shaped segment answering a keepalive
  zero_window_probe_ack  likewise, answering a zero-window probe
  duplicate_ack       no data, same window, seq and ack as the previous segment
  ack_lost_segment    acknowledges data the capture never showed
  fast_retransmission / out_of_order / spurious_retransmission / retransmission
                      data (or SYN/FIN) that does not advance the sequence space, told apart by the peer's
                      duplicate ACKs, the time since the highest segment and what the peer already acknowledged

State is kept per slot of the flow table and reset when a new connection takes the slot.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .native import entry, kernel

# Finding kinds, by code (index into KINDS).
KINDS = ("", "retransmission", "fast_retransmission", "spurious_retransmission", "out_of_order", "lost_segment",
         "ack_lost_segment", "duplicate_ack", "window_full", "window_update", "zero_window", "zero_window_probe",
         "zero_window_probe_ack", "keepalive", "keepalive_ack")
(K_RETRANS, K_FAST, K_SPURIOUS, K_OOO, K_LOST, K_ACK_LOST, K_DUPACK, K_WIN_FULL, K_WIN_UPDATE, K_ZERO_WIN,
 K_ZWP, K_ZWP_ACK, K_KEEPALIVE, K_KEEPALIVE_ACK) = range(1, 15)
K_DATA_AFTER_FIN = 15  # not Wireshark's: the first data a side sends after its peer's FIN (value: its bytes)
K_ACK_RTT = 16  # tcp.analysis.ack_rtt: value = time from the segment to the ACK that acknowledges it exactly
EVENT_NAMES = (*KINDS, "data_after_peer_fin", "ack_rtt")

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
FAST_RETRANS_NS = 20_000_000  # a retransmission within 20 ms of the peer's duplicate ACKs is "fast"
OOO_DEFAULT_NS = 3_000_000  # out-of-order window when the handshake RTT is unknown

# Per-direction fields (two blocks per slot), then per-slot fields.
(D_SEEN, D_NEXTSEQ, D_NEXTSEQ_NS, D_NEXTSEQ_FRAME, D_MAXTOACK, D_LASTACK, D_LASTACK_NS, D_WINDOW, D_WIN_SYN,
 D_WSCALE, D_DUPACKS, D_LASTNONDUP, D_LASTKINDS, D_FIN_NS, D_DATA_AFTER_FIN, D_BASE_SEQ, D_RING_POS) = range(17)
RING = 16  # the last segments sent in a direction, waiting for their ACK (Wireshark keeps up to 1000)
D_RING = 17  # RING entries of (next sequence number, time, frame)
DW = D_RING + 3 * RING
S_CONN, S_FIRST_RTT, S_SYN_NS = 2 * DW, 2 * DW + 1, 2 * DW + 2
WIDTH = 2 * DW + 3
# Event columns.
EV_FRAME, EV_CONN, EV_DIR, EV_KIND, EV_VALUE, EV_REF, EV_LEN, EV_SEQ, EV_NS = range(9)
EV_WIDTH = 9
EV_NAMES = ["frame", "conn", "dir", "kind", "value", "ref_frame", "len", "seq", "ts_ns"]
MAX_EVENTS_PER_SEGMENT = 13  # every kind a single segment can carry at once, at most
UNSET = -1


def new_state(capacity: int) -> npt.NDArray[np.int64]:
    """Sequence-analysis state for `capacity` slots."""
    st = np.zeros((capacity, WIDTH), np.int64)
    st[:, S_CONN] = UNSET
    return st


@kernel(inline=True)
def _gt(a: int, b: int) -> bool:
    return ((a - b) & 0xFFFFFFFF) - ((((a - b) & 0xFFFFFFFF) >> 31) << 32) > 0


@kernel(inline=True)
def _lt(a: int, b: int) -> bool:
    return _gt(b, a)


@kernel()
def _reset(st, s, conn) -> None:  # type: ignore[no-untyped-def]
    st[s, :] = 0
    st[s, S_CONN] = conn
    for d in (0, DW):
        st[s, d + D_WSCALE] = -1  # unknown until a SYN shows it
        st[s, d + D_WIN_SYN] = 0


@kernel()
def _emit(ev, n, frame, conn, d, kind, value, ref, ln, sq, now) -> int:  # type: ignore[no-untyped-def]
    if n < ev.shape[0]:
        ev[n, EV_NS] = now
        ev[n, EV_FRAME], ev[n, EV_CONN], ev[n, EV_DIR] = frame, conn, d
        ev[n, EV_KIND], ev[n, EV_VALUE], ev[n, EV_REF] = kind, value, ref
        ev[n, EV_LEN], ev[n, EV_SEQ] = ln, sq
    return n + 1


@entry("i8[::1], i8[::1], i8[::1], i8[::1], i8[::1], u2[::1], u4[::1], u4[::1], u2[::1], i4[::1], i2[::1], "
       "i8[:, ::1], i8[:, ::1], b1", returns="i8")
def run(slot, conn, direction, frame, ts, flags, seq, ack, win, plen, wscale, st, ev, rtt) -> int:  # type: ignore[no-untyped-def]
    """Analyse one batch; events go to ev (sized by the caller: MAX_EVENTS_PER_SEGMENT per segment).

    rtt: also emit an ack_rtt event for every ACK that acknowledges a recent segment exactly. The segment
    columns come in SegmentTable's types, each value read into an int64 before any arithmetic.
    """
    n = 0
    for i in range(len(slot)):
        s, c = slot[i], conn[i]
        d = direction[i]
        f = DW * d
        r = DW * (1 - d)
        fl, sq, ak, w = np.int64(flags[i]), np.int64(seq[i]), np.int64(ack[i]), np.int64(win[i])
        ln = np.int64(plen[i])
        now, fr = ts[i], frame[i]
        # Wireshark's conversation: a slot handed to a new 4-tuple, or a SYN with a new ISN, starts afresh.
        if st[s, S_CONN] == UNSET or ((fl & SYN) and st[s, f + D_SEEN] and sq != st[s, f + D_BASE_SEQ]):
            _reset(st, s, c)
        if not st[s, f + D_SEEN]:
            st[s, f + D_BASE_SEQ] = sq if fl & SYN else (sq - 1) & 0xFFFFFFFF
        ctl = (fl & (SYN | FIN | RST)) != 0
        kinds = 0
        # Handshake bookkeeping: window scaling as negotiated, the SYN time for the handshake RTT.
        if fl & SYN:
            st[s, f + D_WSCALE] = wscale[i] if wscale[i] >= 0 else -2
            if (fl & ACK) and (wscale[i] < 0 or st[s, r + D_WSCALE] == -2):
                st[s, f + D_WSCALE] = -2
                st[s, r + D_WSCALE] = -2
            if not (fl & ACK):
                st[s, S_SYN_NS] = now
        elif (fl & ACK) and st[s, S_FIRST_RTT] == 0 and st[s, S_SYN_NS] != 0:
            st[s, S_FIRST_RTT] = now - st[s, S_SYN_NS]
        # Like Wireshark, an unseen direction reads as nextseq 0, lastack 0, window 0.
        nextseq = st[s, f + D_NEXTSEQ]
        seen = nextseq != 0
        same = ln == 0 and not ctl and sq == nextseq and ak == st[s, f + D_LASTACK]
        if ln == 1 and sq == nextseq and st[s, r + D_WINDOW] == 0:
            kinds |= 1 << K_ZWP
        else:
            if w == 0 and not ctl:
                kinds |= 1 << K_ZERO_WIN
            if seen and _gt(sq, nextseq) and not (fl & RST):
                kinds |= 1 << K_LOST
            if (ln == 0 or ln == 1) and sq == ((nextseq - 1) & 0xFFFFFFFF) and not ctl:
                kinds |= 1 << K_KEEPALIVE
            if same and w != 0 and w != st[s, f + D_WINDOW]:
                kinds |= 1 << K_WIN_UPDATE
            rs = st[s, r + D_WSCALE]
            if ln > 0 and rs != -1 and not ctl:
                shift = 0 if (rs == -2 or st[s, r + D_WIN_SYN]) else rs
                if ((sq + ln) & 0xFFFFFFFF) == ((st[s, r + D_LASTACK] + (st[s, r + D_WINDOW] << shift)) & 0xFFFFFFFF):
                    kinds |= 1 << K_WIN_FULL
            if same and w != 0 and w == st[s, f + D_WINDOW] and (st[s, r + D_LASTKINDS] >> K_KEEPALIVE) & 1:
                kinds |= 1 << K_KEEPALIVE_ACK
            elif same and w == 0 and w == st[s, f + D_WINDOW] and (st[s, r + D_LASTKINDS] >> K_ZWP) & 1:
                kinds |= 1 << K_ZWP_ACK
            elif same and w != 0 and w == st[s, f + D_WINDOW]:
                kinds |= 1 << K_DUPACK
                st[s, f + D_DUPACKS] += 1
                n = _emit(ev, n, fr, c, d, K_DUPACK, st[s, f + D_DUPACKS], st[s, f + D_LASTNONDUP], ln, sq, now)
        # finished_fwd: a new ack number resets the duplicate-ACK count
        if ak != st[s, f + D_LASTACK]:
            st[s, f + D_LASTNONDUP] = fr
            st[s, f + D_DUPACKS] = 0
        if st[s, r + D_MAXTOACK] != 0 and (fl & ACK) and _gt(ak, st[s, r + D_MAXTOACK]):
            kinds |= 1 << K_ACK_LOST
            st[s, r + D_MAXTOACK] = st[s, r + D_NEXTSEQ]  # report the same unseen data once
        # retransmission family
        if (ln > 0 or (fl & (SYN | FIN))) and not (kinds >> K_KEEPALIVE) & 1:
            behind = seen and _lt(sq, nextseq)
            if ln > 1 and ((nextseq - 1) & 0xFFFFFFFF) == sq:
                behind = False  # new data right after a zero-window probe's byte
            kind = np.int64(0)
            since_ack = now - st[s, r + D_LASTACK_NS]
            ooo = st[s, S_FIRST_RTT] if st[s, S_FIRST_RTT] else OOO_DEFAULT_NS
            lastack_r = st[s, r + D_LASTACK]
            if ln > 0 and lastack_r != 0 and not _gt((sq + ln) & 0xFFFFFFFF, lastack_r):
                kind = np.int64(K_SPURIOUS)
            elif behind and st[s, r + D_DUPACKS] >= 2 and lastack_r == sq and since_ack < FAST_RETRANS_NS:
                kind = np.int64(K_FAST)
            elif behind and now - st[s, f + D_NEXTSEQ_NS] < ooo and \
                    nextseq != ((sq + ln + (1 if fl & (SYN | FIN) else 0)) & 0xFFFFFFFF):
                kind = np.int64(K_OOO)
            elif behind:
                kind = np.int64(K_RETRANS)
            if kind:
                kinds |= 1 << kind
                n = _emit(ev, n, fr, c, d, kind, now - st[s, f + D_NEXTSEQ_NS], st[s, f + D_NEXTSEQ_FRAME], ln, sq, now)
        for k in (K_ZWP, K_ZERO_WIN, K_LOST, K_KEEPALIVE, K_WIN_UPDATE, K_WIN_FULL, K_KEEPALIVE_ACK, K_ZWP_ACK,
                  K_ACK_LOST):
            if (kinds >> k) & 1:
                n = _emit(ev, n, fr, c, d, k, 0, 0, ln, sq, now)
        if ln > 0 and st[s, r + D_FIN_NS] != 0 and st[s, f + D_DATA_AFTER_FIN] == 0 and not (fl & RST):
            st[s, f + D_DATA_AFTER_FIN] = 1
            n = _emit(ev, n, fr, c, d, K_DATA_AFTER_FIN, ln, 0, ln, sq, now)
        if fl & FIN and st[s, f + D_FIN_NS] == 0:
            st[s, f + D_FIN_NS] = now
        # update this direction
        nxt = (sq + ln + (1 if fl & (SYN | FIN) else 0)) & 0xFFFFFFFF
        zwp = (kinds >> K_ZWP) & 1
        if (nextseq == 0 or _gt(nxt, nextseq)) and not zwp:
            st[s, f + D_NEXTSEQ] = nxt
            st[s, f + D_NEXTSEQ_NS] = now
            st[s, f + D_NEXTSEQ_FRAME] = fr
        if (sq == st[s, f + D_MAXTOACK] or st[s, f + D_MAXTOACK] == 0) and not zwp:
            st[s, f + D_MAXTOACK] = st[s, f + D_NEXTSEQ]
        st[s, f + D_SEEN] = 1
        st[s, f + D_WINDOW] = w
        st[s, f + D_WIN_SYN] = 1 if fl & SYN else 0
        st[s, f + D_LASTACK] = ak
        st[s, f + D_LASTACK_NS] = now
        st[s, f + D_LASTKINDS] = kinds
        # ACK RTT: this segment's ACK against the peer's recent segments; then remember this one's end.
        if fl & ACK:
            for k in range(RING):
                e = r + D_RING + 3 * k
                end = st[s, e]
                if end == 0:
                    continue
                if end == ak:
                    if rtt:
                        n = _emit(ev, n, fr, c, d, K_ACK_RTT, now - st[s, e + 1], st[s, e + 2], ln, sq, now)
                    st[s, e] = 0
                elif not _gt(end, ak):
                    st[s, e] = 0  # acknowledged by a later ACK: no longer waiting
        if ln > 0 or fl & (SYN | FIN):
            k = st[s, f + D_RING_POS]
            e = f + D_RING + 3 * k
            st[s, e], st[s, e + 1], st[s, e + 2] = nxt, now, fr
            st[s, f + D_RING_POS] = (k + 1) % RING
    return n
