"""Zeek's view of a connection, reproduced: its endpoint states, `history` letters and removal rules.

Zeek's conn.log is the field's lingua franca, so tcpa computes `conn_state` and `history` by Zeek's own rules
(TCPSessionAdapter.cc, TCP_Endpoint.cc, scripts/base/protocols/conn/main.zeek; docs/zeek-rules.md) next to its
RFC 9293 replay. Zeek's endpoint fields are kept per *tcpa* endpoint (EP0 = tcpa's originator); C_ZFLIP says
whether Zeek's originator is currently tcpa's responder, which happens only while a connection that began
with a SYN+ACK from a non-server port waits for Zeek's late role flip.
"""

from __future__ import annotations

import numpy as np

from .layout import (
    C_HIST_LEN,
    C_ZFLIP,
    C_ZHIST_SEEN,
    C_ZLAST_NS,
    E_FIN_NS,
    E_FIRST_NS,
    E_RST_NS,
    E_SYN_NS,
    E_ZACK_HI,
    E_ZC_CNT,
    E_ZC_NEXT,
    E_ZLAST_FIN,
    E_ZLAST_RST,
    E_ZLAST_SEQ,
    E_ZLAST_SYN,
    E_ZPREV,
    E_ZSTART_SEQ,
    E_ZSTATE,
    E_ZT_CNT,
    E_ZT_NEXT,
    E_ZW_CNT,
    E_ZW_NEXT,
    EP0,
    EP1,
    HIST_MAX,
    NONE,
    Z_CLOSED,
    Z_ESTABLISHED,
    Z_INACTIVE,
    Z_PARTIAL,
    Z_RESET,
    Z_SYN_ACK_SENT,
    Z_SYN_SENT,
)
from .native import kernel
from .seqspace import unwrap

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

# Bits of C_ZHIST_SEEN for the once-per-direction letters (Zeek's HIST_* masks); +8 for the responder.
H_SYN, H_FIN, H_RST, H_DATA, H_ACK, H_FINRST, H_MULTI = 0, 1, 2, 3, 4, 5, 6

PARTIAL_CLOSE_NS = 3_000_000_000  # Zeek's tcp_partial_close_delay
CLOSE_NS = 5_000_000_000  # tcp_close_delay and tcp_reset_delay
ATTEMPT_NS = 5_000_000_000  # tcp_attempt_delay

# Zeek's likely_server_ports: the ports its default analyzers register for (base/protocols/*), which decide
# the originator when no SYN was seen. See docs/zeek-rules.md for where each comes from.
LIKELY_SERVER_PORTS = (
    21, 22, 23, 25, 53, 80, 88, 110, 111, 135, 139, 143, 389, 443, 445, 465, 502, 512, 513, 514, 543, 544,
    563, 585, 587, 614, 636, 989, 990, 992, 993, 994, 995, 1080, 1194, 1433, 1521, 1812, 1813, 2049, 2123,
    2152, 2811, 3128, 3268, 3269, 3306, 3389, 4789, 5060, 5061, 5222, 5223, 5269, 5432, 5671, 5672, 5900,
    6379, 6443, 6666, 6667, 6668, 6669, 8000, 8080, 8081, 8443, 8888, 9200, 11211, 20000, 27017, 47808,
)


def likely_server_ports() -> np.ndarray:
    """A 65536-entry lookup table: 1 where Zeek considers the port a likely server port."""
    table = np.zeros(65536, dtype=np.int64)
    table[list(LIKELY_SERVER_PORTS)] = 1
    return table


def ep(e: int) -> int:
    """Column base of tcpa endpoint e."""
    return EP0 if e == 0 else EP1


ep = kernel(inline=True)(ep)


@kernel(inline=True)
def add_letter(st, s, hist, letter) -> None:  # type: ignore[no-untyped-def]
    """Append one history letter (silently stops at HIST_MAX)."""
    n = st[s, C_HIST_LEN]
    if n < HIST_MAX:
        hist[s, n] = letter
        st[s, C_HIST_LEN] = n + 1


@kernel(inline=True)
def letter_for(code, zsnd) -> int:  # type: ignore[no-untyped-def]
    """Upper case for Zeek's originator, lower case for its responder."""
    return code if zsnd == 0 else code + 32


@kernel(inline=True)
def once(st, s, hist, bit, code, zsnd) -> bool:  # type: ignore[no-untyped-def]
    """Zeek's CheckHistory: add the letter the first time per direction; True if it had been seen."""
    mask = 1 << (bit + 8 * zsnd)
    if st[s, C_ZHIST_SEEN] & mask:
        return True
    st[s, C_ZHIST_SEEN] |= mask
    add_letter(st, s, hist, letter_for(code, zsnd))
    return False


@kernel(inline=True)
def scaled(st, s, hist, b, cnt_field, next_field, code, zsnd) -> None:  # type: ignore[no-untyped-def]
    """Zeek's ScaledHistoryEntry: the letter at the 1st, 10th, 100th... occurrence."""
    if st[s, b + cnt_field] == NONE:
        st[s, b + cnt_field] = 0
        st[s, b + next_field] = 1
    st[s, b + cnt_field] += 1
    if st[s, b + cnt_field] == st[s, b + next_field]:
        add_letter(st, s, hist, letter_for(code, zsnd))
        st[s, b + next_field] *= 10


@kernel()
def zeek_start(st, s, hist, flags, sport, dport, server_port) -> bool:  # type: ignore[no-untyped-def]
    """Start Zeek's view of a new connection; return whether the sender is tcpa's originator.

    tcpa's originator is the SYN sender, or the receiver of a first SYN+ACK. Without a SYN Zeek's rule
    decides: the sender, unless its port is a likely server port (and, when both are, unless the packet is
    not a SYN+ACK and its port is the lower one); such a flip at creation records '^'.
    """
    st[s, C_HIST_LEN] = 0
    st[s, C_ZHIST_SEEN] = 0
    st[s, C_ZFLIP] = 0
    for b in (EP0, EP1):
        st[s, b + E_ZSTATE] = Z_INACTIVE
        st[s, b + E_ZPREV] = Z_INACTIVE
    syn, ack = (flags & SYN) != 0, (flags & ACK) != 0
    if syn and not ack:
        return True
    synack = syn and ack
    flip = server_port[sport] == 1 and (server_port[dport] == 0 or (not synack and sport < dport))
    if flip:
        add_letter(st, s, hist, 94)  # '^'
    if synack:
        st[s, C_ZFLIP] = 0 if flip else 1  # Zeek keeps the SYN+ACK sender as originator until its late flip
        return False
    return not flip


@kernel(inline=True)
def set_z(st, s, b, state) -> None:  # type: ignore[no-untyped-def]
    """Zeek's SetState: remember the previous state."""
    if st[s, b + E_ZSTATE] != state:
        st[s, b + E_ZPREV] = st[s, b + E_ZSTATE]
        st[s, b + E_ZSTATE] = state


@kernel(inline=True)
def update_states(st, s, be, bp, is_orig, flags, plen) -> None:  # type: ignore[no-untyped-def]
    """Zeek's UpdateStateMachine for the sender (columns be) and its peer (bp)."""
    syn, fin, rst, ack = (flags & SYN) != 0, (flags & FIN) != 0, (flags & RST) != 0, (flags & ACK) != 0
    zs, zp = st[s, be + E_ZSTATE], st[s, bp + E_ZSTATE]
    if zs == Z_INACTIVE:
        if syn:
            set_z(st, s, be, Z_SYN_ACK_SENT if (ack or not is_orig) else Z_SYN_SENT)
        if fin:
            set_z(st, s, be, Z_CLOSED)
        if rst:
            set_z(st, s, be, Z_RESET)
        if st[s, be + E_ZSTATE] == Z_INACTIVE:
            if ack and zp == Z_SYN_ACK_SENT:
                set_z(st, s, be, Z_ESTABLISHED)
                set_z(st, s, bp, Z_ESTABLISHED)
            else:
                set_z(st, s, be, Z_PARTIAL)
    elif zs == Z_SYN_SENT or zs == Z_SYN_ACK_SENT:
        if fin:
            set_z(st, s, be, Z_CLOSED)
        if rst:
            set_z(st, s, be, Z_RESET)
        elif not fin and not syn and ack and (zp == Z_SYN_ACK_SENT or zp == Z_ESTABLISHED):
            set_z(st, s, be, Z_ESTABLISHED)
            set_z(st, s, bp, Z_ESTABLISHED)
    elif zs == Z_ESTABLISHED or zs == Z_PARTIAL:
        if syn and zs == Z_PARTIAL and zp == Z_INACTIVE and not ack:
            set_z(st, s, be, Z_SYN_SENT)
        if fin and not rst:
            set_z(st, s, be, Z_CLOSED)
            if zp == Z_RESET and st[s, bp + E_ZPREV] == Z_CLOSED:
                set_z(st, s, bp, Z_CLOSED)  # a FIN then RST from the peer was a normal close after all
        if rst:
            set_z(st, s, be, Z_RESET)
    elif zs == Z_CLOSED and rst and zp != Z_CLOSED:
        set_z(st, s, be, Z_RESET)


@kernel(inline=True)
def zeek_packet(st, s, hist, snd, flags, seq, ack, win, plen, ns, bad_csum) -> None:  # type: ignore[no-untyped-def]
    """One packet through Zeek's eyes: role flip, history letters, endpoint states, duration end."""
    zsnd = snd ^ st[s, C_ZFLIP]
    be, bp = ep(snd), ep(1 - snd)
    if bad_csum:
        scaled(st, s, hist, be, E_ZC_CNT, E_ZC_NEXT, 67, zsnd)  # 'C': Zeek counts it and drops the packet
        return
    syn, fin, rst, has_ack = (flags & SYN) != 0, (flags & FIN) != 0, (flags & RST) != 0, (flags & ACK) != 0
    if (st[s, C_ZFLIP] == 1 and not syn and (has_ack or plen > 0)
            and st[s, C_HIST_LEN] == 1 and hist[s, 0] == 72):
        # Zeek's late flip: a connection seen as just 'H' turns out to be the reply side; history -> "^h".
        st[s, C_ZFLIP] = 0
        zsnd = snd
        hist[s, 0], hist[s, 1] = 94, 104
        st[s, C_HIST_LEN] = 2
        st[s, C_ZHIST_SEEN] = 1 << (H_SYN + 8)
    zs_before, zp_before = st[s, be + E_ZSTATE], st[s, bp + E_ZSTATE]
    if not (zs_before in (Z_CLOSED, Z_RESET) and zp_before in (Z_CLOSED, Z_RESET)):
        st[s, C_ZLAST_NS] = ns  # Zeek stops the clock once both sides closed ("non-productive" tail)
    _letters(st, s, hist, be, zsnd, flags, seq, plen, syn, fin, rst, has_ack)
    if st[s, C_ZFLIP] == 1 and syn and not has_ack and zsnd == 1 and zp_before == Z_SYN_ACK_SENT:
        # The SYN+ACK came first and now its SYN: Zeek swaps roles (SYN/SYN-ACK reversal), recording '^'.
        add_letter(st, s, hist, 94)
        st[s, C_ZFLIP] = 0
        zsnd = snd
    _retransmit(st, s, hist, be, zsnd, flags, seq, plen, syn, fin)
    if has_ack and st[s, bp + E_ZLAST_SEQ] != NONE:
        pos = unwrap(ack, st[s, bp + E_ZLAST_SEQ])
        if st[s, bp + E_ZACK_HI] == NONE or pos > st[s, bp + E_ZACK_HI]:
            st[s, bp + E_ZACK_HI] = pos
    if win == 0 and not rst and zp_before != Z_CLOSED and zs_before != Z_RESET:
        scaled(st, s, hist, be, E_ZW_CNT, E_ZW_NEXT, 87, zsnd)  # 'W'
    update_states(st, s, be, bp, zsnd == 0, flags, plen)


@kernel(inline=True)
def _letters(st, s, hist, be, zsnd, flags, seq, plen, syn, fin, rst, has_ack) -> None:  # type: ignore[no-untyped-def]
    """The one flag letter a packet may add (Zeek's update_history), with its repeat rules."""
    bits = int(syn) + int(fin) + int(rst)
    if bits > 1:
        if fin and rst:
            once(st, s, hist, H_FINRST, 73, zsnd)  # 'I'
        else:
            once(st, s, hist, H_MULTI, 81, zsnd)  # 'Q'
    elif syn:
        code = 72 if has_ack else 83  # 'H' / 'S'
        if once(st, s, hist, H_SYN, code, zsnd) and seq != st[s, be + E_ZLAST_SYN]:
            add_letter(st, s, hist, letter_for(code, zsnd))
        st[s, be + E_ZLAST_SYN] = seq
    elif fin:
        end = (seq + plen) & 0xFFFFFFFF  # a FIN's sequence number is where its data ends
        if once(st, s, hist, H_FIN, 70, zsnd) and end != st[s, be + E_ZLAST_FIN]:
            add_letter(st, s, hist, letter_for(70, zsnd))
        st[s, be + E_ZLAST_FIN] = end
    elif rst:
        if once(st, s, hist, H_RST, 82, zsnd) and seq != st[s, be + E_ZLAST_RST]:
            add_letter(st, s, hist, letter_for(82, zsnd))
        st[s, be + E_ZLAST_RST] = seq
    elif plen > 0:
        once(st, s, hist, H_DATA, 68, zsnd)  # 'D'
    elif has_ack:
        once(st, s, hist, H_ACK, 65, zsnd)  # 'A'


@kernel(inline=True)
def _retransmit(st, s, hist, be, zsnd, flags, seq, plen, syn, fin) -> None:  # type: ignore[no-untyped-def]
    """Zeek's init_endpoint then update_last_seq: 'T' when data does not advance the highest sequence seen."""
    end_rel = plen + int(syn) + int(fin)
    zs = st[s, be + E_ZSTATE]
    if st[s, be + E_ZLAST_SEQ] == NONE or (syn and zs == Z_INACTIVE):
        base = (1 << 32) + seq
        # Without a SYN Zeek pretends one came just before, and makes sure the first packet is no duplicate.
        st[s, be + E_ZSTART_SEQ] = base if syn else base - 1
        st[s, be + E_ZLAST_SEQ] = base + end_rel if syn else base
    elif syn and (seq - st[s, be + E_ZSTART_SEQ]) & 0xFFFFFFFF != 0:
        pos = unwrap(seq, st[s, be + E_ZLAST_SEQ])  # SYN_seq_jump: Zeek starts the sequence space again
        st[s, be + E_ZSTART_SEQ] = pos
        st[s, be + E_ZLAST_SEQ] = pos + end_rel
    end = unwrap(seq, st[s, be + E_ZLAST_SEQ]) + end_rel
    if end > st[s, be + E_ZLAST_SEQ]:
        st[s, be + E_ZLAST_SEQ] = end
    elif plen > 0:
        scaled(st, s, hist, be, E_ZT_CNT, E_ZT_NEXT, 84, zsnd)  # 'T'


@kernel()
def zeek_close_time(st, s) -> int:  # type: ignore[no-untyped-def]
    """When Zeek would remove the connection (NONE: not scheduled): tcp_close/reset/partial_close delays."""
    z0, z1 = st[s, EP0 + E_ZSTATE], st[s, EP1 + E_ZSTATE]
    if z0 == Z_RESET or z1 == Z_RESET:
        t = NONE
        for b in (EP0, EP1):
            r = st[s, b + E_RST_NS]
            if st[s, b + E_ZSTATE] == Z_RESET and r != NONE and (t == NONE or r < t):
                t = r
        return t + CLOSE_NS if t != NONE else NONE
    if z0 == Z_CLOSED and z1 == Z_CLOSED:
        return max(st[s, EP0 + E_FIN_NS], st[s, EP1 + E_FIN_NS]) + CLOSE_NS
    for b, bp in ((EP0, EP1), (EP1, EP0)):
        # Zeek decides when the FIN arrives: a peer that had sent nothing yet makes it a partial close.
        fin, peer_first = st[s, b + E_FIN_NS], st[s, bp + E_FIRST_NS]
        if st[s, b + E_ZSTATE] == Z_CLOSED and fin != NONE and (peer_first == NONE or peer_first > fin):
            return fin + PARTIAL_CLOSE_NS
    return NONE


@kernel()
def zeek_attempt_over(st, s, now) -> bool:  # type: ignore[no-untyped-def]
    """Zeek's AttemptTimer: 5 s after the SYN (its latest retransmission in tcpa), an unanswered attempt ends."""
    zo = EP0 if st[s, C_ZFLIP] == 0 else EP1
    zr = EP1 if zo == EP0 else EP0
    syn_ns = st[s, zo + E_SYN_NS]
    return (syn_ns != NONE and now >= syn_ns + ATTEMPT_NS and st[s, zr + E_ZSTATE] == Z_INACTIVE
            and (st[s, zo + E_ZSTATE] == Z_SYN_SENT or st[s, zo + E_ZSTATE] == Z_SYN_ACK_SENT))


def zeek_bytes(size_hi: int, acked_hi: int, start: int, fins: int) -> int:
    """TCP_Endpoint::Size(): highest of sent and acknowledged sequence, minus the SYN and FIN octets."""
    top = max(size_hi, acked_hi)
    size = max(top - start, 0)
    if size:
        size -= 1
    if fins and size:
        size -= 1
    return size
