"""Decoder: a FrameBatch of raw frames -> a SegmentTable of TCP segments.

A compiled walk over each frame's headers: link layer (by the frame's link type), then any VLAN / QinQ /
PPPoE / MPLS / PBB / VN-Tag / FabricPath / LLC-SNAP layers, IPv4 or IPv6 with extension headers, tunnels (IP in
IP, GRE and ERSPAN, VXLAN, Geneve, GTP-U, Teredo, AYIYA, GRE over UDP, Aruba's 802.11 in GRE), and finally TCP
with its options and checksum. Each frame gets a result code; frames that hold no TCP segment are counted by
reason. IP fragments are collected across batches and the reassembled datagram is decoded again as raw IP, with
the frame number of the fragment that completed it (as Wireshark shows it).

The walk is written as straight-line per-frame code rather than numpy masks because header chains branch on
every layer; compiled, it decodes millions of frames per second.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from .model import FrameBatch, Notice
from .native import entry, kernel
from .segments import SACK_MAX, SegmentTable, format_addr

# Link types we decode (LINKTYPE_* values from the tcpdump.org registry).
SUPPORTED_LINKTYPES = {
    0: "BSD loopback (NULL)", 1: "Ethernet", 9: "PPP", 10: "FDDI", 12: "raw IP", 14: "raw IP", 50: "PPP in HDLC",
    101: "raw IP", 108: "OpenBSD loopback", 113: "Linux cooked (SLL)", 228: "raw IPv4", 229: "raw IPv6",
    276: "Linux cooked v2 (SLL2)",
}

# Result codes per frame.
OK, NON_IP, NON_TCP, FRAGMENT, CUT_HEADERS, BAD_IP, BAD_LINK, BAD_TCP, TOO_DEEP, BAD_IP6_EXT = range(10)
SKIP_REASONS = {NON_IP: "not IP", NON_TCP: "IP but not TCP", CUT_HEADERS: "headers cut by the snap length",
                BAD_IP: "malformed IP header", BAD_LINK: "unsupported link type or frame",
                BAD_TCP: "malformed TCP header", TOO_DEEP: "too many nested tunnels",
                FRAGMENT: "IP fragments never completed",
                BAD_IP6_EXT: "malformed IPv6 extension header chain"}
# Frames skipped for a lying header, and segments kept despite one: one notice per kind, with a running count.
HEADER_NOTICES = {
    BAD_IP: ("bad_ip_header", ("with a malformed IP header (IPv4 IHL below 5, version or total length wrong) "
                              "skipped")),
    BAD_IP6_EXT: ("bad_ip_header", ("with an IPv6 extension header chain that overruns the packet or does not end "
                                   "skipped")),
    BAD_TCP: ("bad_tcp_header", ("with a malformed TCP header (data offset below 5 or past the packet end) "
                                "skipped")),
}

TUNNEL_NAMES = ["", "IP-in-IP", "GRE", "VXLAN", "Geneve", "GTP-U", "Teredo", "AYIYA", "ERSPAN"]
T_IPIP, T_GRE, T_VXLAN, T_GENEVE, T_GTP, T_TEREDO, T_AYIYA, T_ERSPAN = range(1, 9)

# Output columns of the compiled walk (one int64 row per frame).
(O_CODE, O_IPV, O_SRC_HI, O_SRC_LO, O_DST_HI, O_DST_LO, O_SPORT, O_DPORT, O_SEQ, O_ACK, O_FLAGS, O_WIN,
 O_IP_LEN, O_THL, O_PLEN, O_CPLEN, O_MSS, O_WS, O_SACKP, O_HASTS, O_TSV, O_TSE, O_SACKN, O_OPTERR, O_TRUNC,
 O_CSUM, O_TUN, O_TSRC_HI, O_TSRC_LO, O_TDST_HI, O_TDST_LO, O_TSPORT, O_TDPORT, O_FRAG_IP, O_FRAG_HDR,
 O_SL) = range(36)
O_SR = O_SL + SACK_MAX
O_COLS = O_SR + SACK_MAX
MAX_DEPTH = 4

ETH_IP4, ETH_IP6 = 0x0800, 0x86DD
V4_LO = 0xFFFF << 32


@kernel(inline=True)
def _be16(d: npt.NDArray[np.uint8], p: int) -> int:
    return (np.int64(d[p]) << 8) | np.int64(d[p + 1])


@kernel(inline=True)
def _be32(d: npt.NDArray[np.uint8], p: int) -> int:
    return (np.int64(d[p]) << 24) | (np.int64(d[p + 1]) << 16) | (np.int64(d[p + 2]) << 8) | np.int64(d[p + 3])


@kernel(inline=True)
def _be64(d: npt.NDArray[np.uint8], p: int) -> int:
    return (_be32(d, p) << 32) | _be32(d, p + 4)


@kernel(inline=True)
def _ether(d: npt.NDArray[np.uint8], p: int, end: int) -> tuple[int, int]:
    """(ethertype, position after the Ethernet header), skipping a Cisco FabricPath outer header; -1 if cut."""
    if p + 14 > end:
        return -1, p
    et = _be16(d, p + 12)
    if et == 0x8903:  # FabricPath: a 16-byte outer header before the classic Ethernet frame
        p += 16
        if p + 14 > end:
            return -1, p
        et = _be16(d, p + 12)
    return et, p + 14


@kernel(inline=True)
def _ethertype_chain(d: npt.NDArray[np.uint8], et: int, p: int, end: int) -> tuple[int, int]:
    """Follow VLAN/PPPoE/MPLS/PBB/VN-Tag/LLC layers to an IP header: (4, 6 or 0 for not IP, -1 cut, position)."""
    for _ in range(16):
        if et == ETH_IP4:
            return 4, p
        if et == ETH_IP6:
            return 6, p
        if et in (0x8100, 0x88A8, 0x9100, 0x9200, 0x9300):  # 802.1Q / QinQ tags
            if p + 4 > end:
                return -1, p
            et = _be16(d, p + 2)
            p += 4
        elif et == 0x8864:  # PPPoE session: 6-byte header then the PPP protocol
            if p + 8 > end:
                return -1, p
            proto = _be16(d, p + 6)
            p += 8
            return (4 if proto == 0x0021 else 6 if proto == 0x0057 else 0), p
        elif et == 0x8847 or et == 0x8848:  # MPLS: labels until bottom of stack, then guess by IP version
            while True:
                if p + 4 > end:
                    return -1, p
                bottom = d[p + 2] & 1
                p += 4
                if bottom:
                    break
            if p >= end:
                return -1, p
            v = d[p] >> 4
            return (4 if v == 4 else 6 if v == 6 else 0), p
        elif et == 0x88E7:  # 802.1ah PBB: I-TAG, then the customer's MAC header
            if p + 18 > end:
                return -1, p
            et = _be16(d, p + 16)
            p += 18
        elif et == 0x8926:  # VN-Tag
            if p + 6 > end:
                return -1, p
            et = _be16(d, p + 4)
            p += 6
        elif et <= 1500:  # 802.3 length field: LLC, IP only behind SNAP
            if p + 8 > end:
                return -1, p
            if d[p] != 0xAA or d[p + 1] != 0xAA:
                return 0, p
            et = _be16(d, p + 6)
            p += 8
        else:
            return 0, p
    return 0, p


@kernel()
def _ieee80211(d: npt.NDArray[np.uint8], p: int, end: int) -> tuple[int, int]:
    """An 802.11 data frame (as Aruba tunnels them in GRE) to its LLC/SNAP payload: (4/6/0/-1, position)."""
    if p + 24 > end:
        return -1, p
    fc0, fc1 = d[p], d[p + 1]
    if (fc0 >> 2) & 3 != 2:  # not a data frame
        return 0, p
    hdr = 24
    if fc1 & 3 == 3:
        hdr += 6  # four addresses (WDS)
    amsdu = False
    if fc0 & 0x80:  # QoS data
        if p + hdr + 2 > end:
            return -1, p
        amsdu = (d[p + hdr] & 0x80) != 0
        hdr += 2
    if fc1 & 0x80:
        hdr += 4  # HT control
    if fc0 & 0x40:  # null data, no body
        return 0, p
    if amsdu:  # an A-MSDU aggregate: the first subframe (its own DA, SA and length), as Zeek decodes it
        hdr += 14
    return _ethertype_chain(d, 1500, p + hdr, end)  # LLC/SNAP follows


@kernel(inline=True)
def _link(d: npt.NDArray[np.uint8], lt: int, p: int, end: int) -> tuple[int, int]:
    """The link layer by link type, to the IP header: (4, 6, 0 not IP, -1 cut, -2 unsupported; position)."""
    if lt == 1:
        et, p = _ether(d, p, end)
        return (-1, p) if et < 0 else _ethertype_chain(d, et, p, end)
    if lt == 0 or lt == 108:  # 4-byte address family, host order (NULL) or network order (LOOP)
        if p + 4 > end:
            return -1, p
        fam = _be32(d, p) if lt == 108 else (np.int64(d[p]) | (np.int64(d[p + 1]) << 8) | (np.int64(d[p + 2]) << 16) | (np.int64(d[p + 3]) << 24))
        if fam > 0xFFFF:
            fam = _be32(d, p)
        if fam == 2:
            return 4, p + 4
        if fam in (10, 23, 24, 26, 28, 30):
            return 6, p + 4
        return 0, p + 4
    if lt == 12 or lt == 14 or lt == 101 or lt == 228 or lt == 229:
        if p >= end:
            return -1, p
        v = d[p] >> 4
        return (4 if v == 4 else 6 if v == 6 else 0), p
    if lt == 113:  # Linux cooked: 16-byte header, protocol at offset 14
        if p + 16 > end:
            return -1, p
        return _ethertype_chain(d, _be16(d, p + 14), p + 16, end)
    if lt == 276:  # Linux cooked v2: 20-byte header, protocol first
        if p + 20 > end:
            return -1, p
        return _ethertype_chain(d, _be16(d, p), p + 20, end)
    if lt == 10:  # FDDI: frame control and two addresses, then LLC/SNAP
        return _ethertype_chain(d, 1500, p + 13, end)
    if lt == 9 or lt == 50:  # PPP, optionally with HDLC address/control bytes
        if p + 2 <= end and d[p] == 0xFF and d[p + 1] == 0x03:
            p += 2
        if p + 2 > end:
            return -1, p
        proto = _be16(d, p)
        return (4 if proto == 0x0021 else 6 if proto == 0x0057 else 0), p + 2
    return -2, p


@kernel(inline=True)
def _sum16(d: npt.NDArray[np.uint8], p: int, n: int) -> int:
    s = 0
    for i in range(p, p + n - 1, 2):
        s += (np.int64(d[i]) << 8) | np.int64(d[i + 1])
    if n & 1:
        s += np.int64(d[p + n - 1]) << 8
    return s


@kernel(inline=True)
def _tcp_checksum_ok(d: npt.NDArray[np.uint8], v: int, ip: int, tcp: int, length: int) -> bool:
    if v == 4:
        s = _sum16(d, ip + 12, 8) + 6 + length
    else:
        s = _sum16(d, ip + 8, 32) + 6 + length
    s += _sum16(d, tcp, length)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


@kernel(inline=True)
def _options(d: npt.NDArray[np.uint8], p: int, oend: int, cend: int, o: npt.NDArray[np.int64]) -> None:
    """TCP options between p and the header's end (oend), reading only captured bytes (cend)."""
    limit = min(oend, cend)
    while p < limit:
        kind = d[p]
        if kind == 0:
            return
        if kind == 1:
            p += 1
            continue
        if p + 1 >= limit:
            if limit == oend:
                o[O_OPTERR] = 2  # OPT_PAST_HEADER: a length byte would lie past the header
            return
        length = np.int64(d[p + 1])
        if length < 2:
            o[O_OPTERR] = 1
            return
        if p + length > oend:
            o[O_OPTERR] = 2
            return
        if p + length > cend:
            return  # cut by the snap length
        if kind == 2:
            if length != 4:
                o[O_OPTERR] = 1
                return
            o[O_MSS] = _be16(d, p + 2)
        elif kind == 3:
            if length != 3:
                o[O_OPTERR] = 1
                return
            o[O_WS] = d[p + 2]
        elif kind == 4:
            if length != 2:
                o[O_OPTERR] = 1
                return
            o[O_SACKP] = 1
        elif kind == 5:
            if (length - 2) % 8 != 0 or length < 10:
                o[O_OPTERR] = 1
                return
            nblk = min((length - 2) // 8, SACK_MAX)
            for b in range(nblk):
                o[O_SL + b] = _be32(d, p + 2 + 8 * b)
                o[O_SR + b] = _be32(d, p + 6 + 8 * b)
            o[O_SACKN] = nblk
        elif kind == 8:
            if length != 10:
                o[O_OPTERR] = 1
                return
            o[O_HASTS] = 1
            o[O_TSV] = _be32(d, p + 2)
            o[O_TSE] = _be32(d, p + 6)
        p += length


@kernel(inline=True)
def _addr(d: npt.NDArray[np.uint8], v: int, p: int) -> tuple[int, int]:
    if v == 4:
        return 0, V4_LO | _be32(d, p)
    return _be64(d, p), _be64(d, p + 8)


@kernel()
def _tunnel(o: npt.NDArray[np.int64], kind: int, s_hi: int, s_lo: int, d_hi: int, d_lo: int, sp: int,
            dp: int) -> None:
    o[O_TUN] = kind
    o[O_TSRC_HI], o[O_TSRC_LO], o[O_TDST_HI], o[O_TDST_LO] = s_hi, s_lo, d_hi, d_lo
    o[O_TSPORT], o[O_TDPORT] = sp, dp


@kernel()
def _gre(d: npt.NDArray[np.uint8], p: int, end: int) -> tuple[int, int]:
    """A GRE header to what it carries: (4/6 for IP, 0 not IP, -1 cut; position)."""
    if p + 4 > end:
        return -1, p
    flags, proto = _be16(d, p), _be16(d, p + 2)
    version = flags & 7
    q = p + 4
    if version == 0:
        q += 4 * ((flags >> 15 & 1) + (flags >> 13 & 1) + (flags >> 12 & 1))
    elif version == 1:  # enhanced GRE (PPTP): key always, sequence and ack optional; carries PPP
        q += 4 + 4 * ((flags >> 12 & 1) + (flags >> 7 & 1))
        if proto != 0x880B:
            return 0, q
        if q + 2 <= end and d[q] == 0xFF and d[q + 1] == 0x03:
            q += 2
        if q + 2 > end:
            return -1, q
        ppp = _be16(d, q)
        return (4 if ppp == 0x0021 else 6 if ppp == 0x0057 else 0), q + 2
    else:
        return 0, q
    if q > end:
        return -1, q
    if proto == ETH_IP4:
        return 4, q
    if proto == ETH_IP6:
        return 6, q
    if proto == 0x6558:  # transparent Ethernet bridging
        et, q = _ether(d, q, end)
        return (-1, q) if et < 0 else _ethertype_chain(d, et, q, end)
    if proto == 0x88BE or proto == 0x22EB:  # ERSPAN type II (8-byte header) / III (12 bytes)
        q += 8 if proto == 0x88BE else 12
        et, q = _ether(d, q, end)
        return (-1, q) if et < 0 else _ethertype_chain(d, et, q, end)
    if 0x8200 <= proto <= 0x8300:  # Aruba: 802.11 frames
        return _ieee80211(d, q, end)
    return 0, q


@kernel()
def _teredo(d: npt.NDArray[np.uint8], p: int, end: int, dgram_end: int) -> int:
    """Where the IPv6 packet of a Teredo datagram starts, or -1 when it is not one.

    Like Zeek, any UDP port is tried: after an optional authentication header and origin indication, the
    payload must be an IPv6 header whose length accounts for exactly the rest of the datagram.
    """
    q = p
    if q + 4 <= end and _be16(d, q) == 0x0001:
        q += 4 + np.int64(d[q + 2]) + np.int64(d[q + 3]) + 9
    if q + 8 <= end and _be16(d, q) == 0x0000:
        q += 8
    if q + 40 > end or d[q] >> 4 != 6:
        return -1
    return q if _be16(d, q + 4) + 40 == dgram_end - q else -1


@kernel()
def _udp_tunnel(d: npt.NDArray[np.uint8], sp: int, dp: int, p: int, end: int, udp_end: int) -> tuple[int, int, int]:
    """UDP payload of a known tunnel port, or Teredo on any port: (tunnel kind or 0, 4/6/0/-1, position)."""
    if dp == 4789 or sp == 4789:  # VXLAN
        et, q = _ether(d, p + 8, end)
        if et < 0:
            return T_VXLAN, -1, q
        v, q = _ethertype_chain(d, et, q, end)
        return T_VXLAN, v, q
    if dp == 6081 or sp == 6081:  # Geneve: 8 bytes plus options, protocol type says what follows
        if p + 8 > end:
            return T_GENEVE, -1, p
        q = p + 8 + (d[p] & 0x3F) * 4
        proto = _be16(d, p + 2)
        if proto == 0x6558:
            et, q = _ether(d, q, end)
            if et < 0:
                return T_GENEVE, -1, q
            v, q = _ethertype_chain(d, et, q, end)
            return T_GENEVE, v, q
        return T_GENEVE, (4 if proto == ETH_IP4 else 6 if proto == ETH_IP6 else 0), q
    if dp == 2152 or sp == 2152:  # GTP-U: G-PDU messages carry IP
        if p + 8 > end:
            return T_GTP, -1, p
        flags, mtype = d[p], d[p + 1]
        if flags >> 5 != 1 or mtype != 0xFF:
            return 0, 0, p
        q = p + 8
        if flags & 0x07:
            if q + 4 > end:
                return T_GTP, -1, q
            nxt = d[q + 3]
            q += 4
            while flags & 0x04 and nxt != 0:
                if q + 1 > end or d[q] == 0:
                    return T_GTP, -1, q
                q += np.int64(d[q]) * 4
                if q > end:
                    return T_GTP, -1, q
                nxt = d[q - 1]
        if q >= end:
            return T_GTP, -1, q
        v = d[q] >> 4
        return T_GTP, (4 if v == 4 else 6 if v == 6 else 0), q
    q = _teredo(d, p, end, udp_end)
    if q >= 0:
        return T_TEREDO, 6, q
    if dp == 5072 or sp == 5072:  # AYIYA
        if p + 8 > end:
            return T_AYIYA, -1, p
        q = p + 8 + (1 << (d[p] >> 4)) + (d[p + 1] >> 4) * 4
        if d[p + 2] & 0x0F != 1:  # only "forward" messages carry packets
            return 0, 0, p
        nxt = d[p + 3]
        return T_AYIYA, (4 if nxt == 4 else 6 if nxt == 41 else 0), q
    if dp == 4754 or sp == 4754:  # GRE in UDP (RFC 8086)
        v, q = _gre(d, p, end)
        return T_GRE, v, q
    return 0, 0, p


@kernel(inline=True)
def _frame(d: npt.NDArray[np.uint8], start: int, cap: int, wire: int, lt: int, checksums: bool,
           o: npt.NDArray[np.int64]) -> None:
    """Decode one frame into the output row o."""
    cend = start + cap
    wend = start + max(wire, cap)
    v, p = _link(d, lt, start, cend)
    if v == -2:
        o[O_CODE] = BAD_LINK
        return
    for depth in range(MAX_DEPTH + 1):
        if v == -1:
            o[O_CODE] = CUT_HEADERS
            return
        if v == 0:
            o[O_CODE] = NON_IP
            return
        ip = p
        frag = False
        if v == 4:
            if p + 20 > cend:
                o[O_CODE] = CUT_HEADERS
                return
            if d[p] >> 4 != 4:
                o[O_CODE] = BAD_IP
                return
            ihl = (d[p] & 0x0F) * 4
            total = _be16(d, p + 2)
            if total == 0:  # segmentation offload: the length was never filled in
                total = wend - p
            if ihl < 20 or total < ihl:
                o[O_CODE] = BAD_IP
                return
            proto = np.int64(d[p + 9])
            fo = _be16(d, p + 6)
            frag = (fo & 0x3FFF) != 0
            ip_end = p + total
            l4 = p + ihl
        else:
            if p + 40 > cend:
                o[O_CODE] = CUT_HEADERS
                return
            if d[p] >> 4 != 6:
                o[O_CODE] = BAD_IP
                return
            total = _be16(d, p + 4) + 40
            if total == 40 and wend - p > 40:  # jumbogram or offload
                total = wend - p
            ip_end = p + total
            proto = np.int64(d[p + 6])
            l4 = p + 40
            for _ in range(8):  # extension headers
                if l4 > ip_end:
                    break  # the chain ran past the packet: reported below
                if proto in (0, 43, 60, 135, 139, 140):
                    if l4 + 2 > cend:
                        o[O_CODE] = CUT_HEADERS
                        return
                    proto, l4 = np.int64(d[l4]), l4 + (np.int64(d[l4 + 1]) + 1) * 8
                elif proto == 51:  # AH
                    if l4 + 2 > cend:
                        o[O_CODE] = CUT_HEADERS
                        return
                    proto, l4 = np.int64(d[l4]), l4 + (np.int64(d[l4 + 1]) + 2) * 4
                elif proto == 44:
                    if l4 + 8 > cend:
                        o[O_CODE] = CUT_HEADERS
                        return
                    o[O_FRAG_HDR] = l4
                    frag = True
                    break
                else:
                    break
            if l4 > ip_end or (not frag and proto in (0, 43, 60, 135, 139, 140, 51)):
                o[O_CODE] = BAD_IP6_EXT  # the chain runs past the packet, or is longer than 8 headers
                return
        if frag:
            o[O_CODE] = FRAGMENT
            o[O_FRAG_IP] = ip
            o[O_IPV] = v
            return
        s_hi, s_lo = _addr(d, v, ip + (12 if v == 4 else 8))
        d_hi, d_lo = _addr(d, v, ip + (16 if v == 4 else 24))
        if proto == 6:
            if ip_end > wend:  # the IP length claims more than the frame held on the wire: a lying header
                ip_end = wend
                o[O_TRUNC] = 1
            _tcp(d, v, ip, l4, ip_end, cend, checksums, o)
            o[O_IP_LEN] = total
            o[O_SRC_HI], o[O_SRC_LO], o[O_DST_HI], o[O_DST_LO] = s_hi, s_lo, d_hi, d_lo
            return
        if depth == MAX_DEPTH:
            break
        if proto == 4 or proto == 41:
            _tunnel(o, T_IPIP, s_hi, s_lo, d_hi, d_lo, 0, 0)
            v, p = (4 if proto == 4 else 6), l4
        elif proto == 47:
            _tunnel(o, T_GRE, s_hi, s_lo, d_hi, d_lo, 0, 0)
            v, p = _gre(d, l4, cend)
        elif proto == 17:
            if l4 + 8 > cend:
                o[O_CODE] = NON_TCP
                return
            sp, dp = _be16(d, l4), _be16(d, l4 + 2)
            kind, v, p = _udp_tunnel(d, sp, dp, l4 + 8, cend, l4 + _be16(d, l4 + 4))
            if kind == 0:
                o[O_CODE] = NON_TCP
                return
            _tunnel(o, kind, s_hi, s_lo, d_hi, d_lo, sp, dp)
        else:
            o[O_CODE] = NON_TCP
            return
    o[O_CODE] = TOO_DEEP


@kernel(inline=True)
def _tcp(d: npt.NDArray[np.uint8], v: int, ip: int, p: int, ip_end: int, cend: int, checksums: bool,
         o: npt.NDArray[np.int64]) -> None:
    if p + 20 > cend:
        o[O_CODE] = CUT_HEADERS
        return
    thl = (d[p + 12] >> 4) * 4
    if thl < 20 or p + thl > ip_end:
        o[O_CODE] = BAD_TCP
        return
    o[O_CODE] = OK
    o[O_IPV] = v
    o[O_SPORT], o[O_DPORT] = _be16(d, p), _be16(d, p + 2)
    o[O_SEQ], o[O_ACK] = _be32(d, p + 4), _be32(d, p + 8)
    o[O_FLAGS] = _be16(d, p + 12) & 0x1FF
    o[O_WIN] = _be16(d, p + 14)
    o[O_THL] = thl
    o[O_PLEN] = ip_end - p - thl
    o[O_CPLEN] = max(0, min(ip_end, cend) - p - thl)
    o[O_TRUNC] = 1 if cend < ip_end or o[O_TRUNC] else 0
    _options(d, p + 20, p + thl, cend, o)
    if checksums and cend >= ip_end:
        o[O_CSUM] = 1 if _tcp_checksum_ok(d, v, ip, p, ip_end - p) else 0


FRAME_ARGS = "u1[::1], i8[::1], i4[::1], i4[::1], i4[::1], b1, i8[:, ::1]"  # decode_frames' arguments
COLUMN_ARGS = ("i8[::1], i8[::1], u1[::1], u8[::1], u8[::1], u8[::1], u8[::1], u2[::1], u2[::1], u4[::1], u4[::1], "
               "u2[::1], u2[::1], i4[::1], i2[::1], i4[::1], i4[::1], i4[::1], i2[::1], b1[::1], b1[::1], u4[::1], "
               "u4[::1], u1[::1], u4[:, ::1], u4[:, ::1], u1[::1], b1[::1], i1[::1]")  # SegmentTable's but tunnel


@kernel(inline=True)
def _decode_row(data: npt.NDArray[np.uint8], offset: int, caplen: int, wirelen: int, linktype: int,
                checksums: bool, o: npt.NDArray[np.int64]) -> None:
    o[:] = 0  # row by row, while the row is in cache: zeroing the whole matrix first doubled its traffic
    o[O_MSS] = -1
    o[O_WS] = -1
    o[O_CSUM] = -1
    _frame(data, offset, caplen, wirelen, linktype, checksums, o)


@entry(FRAME_ARGS)
def decode_frames(data: npt.NDArray[np.uint8], offset: npt.NDArray[np.int64], caplen: npt.NDArray[np.int32],
                  wirelen: npt.NDArray[np.int32], linktype: npt.NDArray[np.int32], checksums: bool,
                  out: npt.NDArray[np.int64]) -> None:
    """Decode every frame of a batch into its row of out (O_COLS columns)."""
    for i in range(len(offset)):
        _decode_row(data, offset[i], caplen[i], wirelen[i], linktype[i], checksums, out[i])


# Beyond the result codes, triage's counts: kept segments with a malformed option, kept segments in a tunnel.
N_CODES = len(SKIP_REASONS) + 1
C_OPTERR, C_TUNNEL = N_CODES, N_CODES + 1


@kernel(inline=True)
def _tally(r: npt.NDArray[np.int64], i: int, n: int, counts: npt.NDArray[np.int64],
           ok: npt.NDArray[np.int64]) -> bool:
    """Count row i (r) in counts; if it is kept, record it as the n-th kept row and say so."""
    code = r[O_CODE]
    counts[code] += 1
    if code != OK:
        return False
    ok[n] = i
    if r[O_OPTERR] != 0:
        counts[C_OPTERR] += 1
    if r[O_TUN] != 0:
        counts[C_TUNNEL] += 1
    return True


@entry("i8[:, ::1], i8[::1], i8[::1]", returns="i8")
def triage(rows: npt.NDArray[np.int64], counts: npt.NDArray[np.int64], ok: npt.NDArray[np.int64]) -> int:
    """One pass over the decoder's rows: counts per result code (and C_OPTERR, C_TUNNEL), the OK rows' indices
    into ok; returns how many. A numpy pass per question read the whole row matrix for one column each time."""
    counts[:] = 0
    n = 0
    for i in range(rows.shape[0]):
        if _tally(rows[i], i, n, counts, ok):
            n += 1
    return n


# A decoded row r as row j of the SegmentTable columns (in the dataclass's field order, but tunnel), in two
# helpers: a call with 30 arguments or more is compiled by CPython as a call with *args, which numba's inliner
# refuses.
@kernel(inline=True)
def _column_row_a(r, j, frame_no, ts_no, frame, ts_ns, ip_version, src_hi, src_lo, dst_hi, dst_lo,  # type: ignore[no-untyped-def]
                  sport, dport, seq, ack, flags, win) -> None:
    frame[j], ts_ns[j], ip_version[j] = frame_no, ts_no, r[O_IPV]
    src_hi[j], src_lo[j], dst_hi[j], dst_lo[j] = r[O_SRC_HI], r[O_SRC_LO], r[O_DST_HI], r[O_DST_LO]
    sport[j], dport[j], seq[j], ack[j] = r[O_SPORT], r[O_DPORT], r[O_SEQ], r[O_ACK]
    flags[j], win[j] = r[O_FLAGS], r[O_WIN]


@kernel(inline=True)
def _column_row_b(r, j, ip_len, tcp_hdr_len, payload_len, captured_payload, mss, wscale, sack_perm,  # type: ignore[no-untyped-def]
                  has_ts, ts_val, ts_ecr, sack_count, sack_left, sack_right, opt_error, truncated, csum_ok) -> None:
    ip_len[j], tcp_hdr_len[j] = r[O_IP_LEN], r[O_THL]
    payload_len[j], captured_payload[j], mss[j], wscale[j] = r[O_PLEN], r[O_CPLEN], r[O_MSS], r[O_WS]
    sack_perm[j], has_ts[j], ts_val[j], ts_ecr[j] = r[O_SACKP] != 0, r[O_HASTS] != 0, r[O_TSV], r[O_TSE]
    sack_count[j] = r[O_SACKN]
    for k in range(SACK_MAX):
        sack_left[j, k] = r[O_SL + k]
        sack_right[j, k] = r[O_SR + k]
    opt_error[j], truncated[j], csum_ok[j] = r[O_OPTERR], r[O_TRUNC] != 0, r[O_CSUM]


@entry("i8[:, ::1], i8[::1], i8[::1], i8[::1], " + COLUMN_ARGS)
def _columns(rows, ok, frames, ts, frame, ts_ns, ip_version, src_hi, src_lo, dst_hi, dst_lo,  # type: ignore[no-untyped-def]
             sport, dport, seq, ack, flags, win, ip_len, tcp_hdr_len, payload_len, captured_payload, mss, wscale,
             sack_perm, has_ts, ts_val, ts_ecr, sack_count, sack_left, sack_right, opt_error, truncated,
             csum_ok) -> None:
    """Rows `ok` of the decoder's output into SegmentTable columns (all but tunnel, in field order)."""
    for j in range(len(ok)):
        i = ok[j]
        r = rows[i]
        _column_row_a(r, j, frames[i], ts[i], frame, ts_ns, ip_version, src_hi, src_lo, dst_hi, dst_lo, sport,
                      dport, seq, ack, flags, win)
        _column_row_b(r, j, ip_len, tcp_hdr_len, payload_len, captured_payload, mss, wscale, sack_perm, has_ts,
                      ts_val, ts_ecr, sack_count, sack_left, sack_right, opt_error, truncated, csum_ok)


@entry(FRAME_ARGS + ", i8[::1], i8[::1], i8[::1], i8[::1], " + COLUMN_ARGS, returns="i8")
def decode_batch(data, offset, caplen, wirelen, linktype, checksums, out, counts, ok, frames, ts,  # type: ignore[no-untyped-def]
                 frame, ts_ns, ip_version, src_hi, src_lo, dst_hi, dst_lo, sport, dport, seq, ack, flags, win,
                 ip_len, tcp_hdr_len, payload_len, captured_payload, mss, wscale, sack_perm, has_ts, ts_val, ts_ecr,
                 sack_count, sack_left, sack_right, opt_error, truncated, csum_ok) -> int:
    """decode_frames, triage and _columns in one pass: each kept row goes to the columns while it is in cache
    (the row matrix, 23 MB for a batch, was read back twice from memory). Returns the number of kept rows."""
    counts[:] = 0
    n = 0
    for i in range(len(offset)):
        r = out[i]
        _decode_row(data, offset[i], caplen[i], wirelen[i], linktype[i], checksums, r)
        if _tally(r, i, n, counts, ok):
            _column_row_a(r, n, frames[i], ts[i], frame, ts_ns, ip_version, src_hi, src_lo, dst_hi, dst_lo, sport,
                          dport, seq, ack, flags, win)
            _column_row_b(r, n, ip_len, tcp_hdr_len, payload_len, captured_payload, mss, wscale, sack_perm, has_ts,
                          ts_val, ts_ecr, sack_count, sack_left, sack_right, opt_error, truncated, csum_ok)
            n += 1
    return n


def _filled(t: SegmentTable) -> list[npt.NDArray[Any]]:
    """The columns the compiled stages fill (COLUMN_ARGS: all but tunnel, in field order)."""
    return [getattr(t, f.name) for f in fields(t) if f.name != "tunnel"]


@dataclass
class _Fragments:
    """The pieces of one IP datagram seen so far."""

    first_ns: int
    header: bytes = b""  # the first fragment's IP header, with the fragment fields to rewrite
    pieces: dict[int, bytes] | None = None
    total: int = -1  # payload length, known once the last fragment arrives
    tunnel: npt.NDArray[np.int64] | None = None


FRAG_TIMEOUT_NS = 30 * 1_000_000_000
# Frames decoded at a time (a batch is decoded in parts of this many, into one table): the decoder's row matrix
# for them (5.6 MB) stays in cache while its rows are read back, where a whole 65 536-frame batch's (23 MB) did
# not. Decoding the 2 M-packet bench capture: 0.19-0.24 s -> 0.15 s.
PART_FRAMES = 1 << 14


class Decoder:
    """Decodes batches; keeps IP fragments, tunnel names and skip counts across batches."""

    def __init__(self, checksums: bool = True) -> None:
        self.checksums = checksums
        # decode_batch's rows for a part of a batch, reused part after part: a fresh array each time costs its
        # page faults and the kernel's zeroing of every page again (a third of decoding's time when measured)
        self._rows = np.empty((0, O_COLS), np.int64)
        self.tunnels: list[str] = []
        self._tunnel_ids: dict[tuple[int, ...], int] = {}
        self.skipped: Counter[str] = Counter()
        self.notices: list[Notice] = []
        self._frags: dict[tuple[int, bytes, bytes, int], _Fragments] = {}
        self._warned: set[str] = set()
        self._tallies: dict[str, tuple[int, int, int]] = {}

    def decode(self, batch: FrameBatch) -> SegmentTable:
        """The TCP segments of one batch, in frame order: decoded PART_FRAMES frames at a time into one table."""
        n = len(batch)
        if len(self._rows) < min(n, PART_FRAMES):
            self._rows = np.empty((min(n, PART_FRAMES), O_COLS), np.int64)
        table = SegmentTable.unfilled(n)
        pieces: list[SegmentTable] = []  # only where reassembled datagrams added rows: the table's, theirs, ...
        kept = joined = 0  # rows of `table` filled; how many of them are in `pieces`
        for start in range(0, n, PART_FRAMES):
            got = self._decode_part(batch.part(start, start + PART_FRAMES), table, kept)
            if isinstance(got, int):
                kept += got
            else:
                pieces += [table.part(joined, kept), got]
                joined = kept
        return SegmentTable.concat([*pieces, table.part(joined, kept)]) if pieces else table.part(0, kept)

    def _decode_part(self, batch: FrameBatch, table: SegmentTable, at: int) -> int | SegmentTable:
        """Decode a batch's part into `table` from row `at`: the rows written there, or a table of the part's
        own where IP fragments completed datagrams (their rows join the part's, in frame order)."""
        n = len(batch)
        out = self._rows[:n]
        counts, ok = np.empty(C_TUNNEL + 1, np.int64), np.empty(n, np.int64)
        frames, ts = batch.frame, batch.ts_ns
        kept = decode_batch(batch.data, batch.offset, batch.caplen, batch.wirelen, batch.linktype, self.checksums,
                            out, counts, ok, frames, ts, *(c[at:] for c in _filled(table)))
        ok, own = ok[:kept], None
        if counts[FRAGMENT]:
            extra, extra_frames, extra_ts = self._reassemble(batch, out, np.flatnonzero(out[:, O_CODE] == FRAGMENT))
            if len(extra):
                out = np.concatenate([out, extra])
                frames = np.concatenate([frames, extra_frames])
                ts = np.concatenate([ts, extra_ts])
                ok = np.empty(len(out), np.int64)
                ok = ok[:triage(out, counts, ok)]
                ok = ok[np.argsort(frames[ok], kind="stable")]
                own = SegmentTable.unfilled(len(ok))
                _columns(out, ok, frames, ts, *_filled(own))
        codes = out[:, O_CODE]
        self._count(codes, counts, batch)
        self._header_notices(codes, counts, frames, out)
        if counts[C_TUNNEL]:
            (table.tunnel[at:at + kept] if own is None else own.tunnel)[:] = \
                self._tunnel_index(out, ok, ok[out[ok, O_TUN] != 0])
        return kept if own is None else own

    def _tally(self, kind: str, count: int, first: int, what: str) -> None:
        """One notice per kind however often it happens: a running count and the first frame."""
        prev = self._tallies.get(kind)
        if prev is None:
            total, frame, index = count, first, len(self.notices)
            self.notices.append(Notice(0, kind, ""))
        else:
            total, frame, index = prev[0] + count, min(prev[1], first), prev[2]
        self._tallies[kind] = (total, frame, index)
        self.notices[index] = Notice(frame, kind, f"{total} {'frame' if total == 1 else 'frames'} {what} "
                                                  f"(first: frame {frame})")

    def _header_notices(self, codes: npt.NDArray[np.int64], counts: npt.NDArray[np.int64],
                        frames: npt.NDArray[np.int64], out: npt.NDArray[np.int64]) -> None:
        """Lying headers: the frames skipped for one, and the segments kept with malformed TCP options (counts:
        the batch's rows per code, so that codes that did not occur cost no pass)."""
        for code, (kind, what) in HEADER_NOTICES.items():
            if counts[code]:
                bad = codes == code
                self._tally(kind, int(counts[code]), int(frames[bad].min()), what)
        if counts[C_OPTERR]:
            opt = (out[:, O_OPTERR] != 0) & (codes == OK)
            self._tally("bad_tcp_option", int(opt.sum()), int(frames[opt].min()),
                        "with a malformed TCP option (length 0 or 1, wrong for its kind, or past the header): "
                        "options read up to it, the segment analysed")

    def _count(self, codes: npt.NDArray[np.int64], counts: npt.NDArray[np.int64], batch: FrameBatch) -> None:
        """Skipped frames by reason (counts: the batch's rows per code), and unsupported link types."""
        for code, reason in SKIP_REASONS.items():
            if code != FRAGMENT and counts[code]:
                self.skipped[reason] += int(counts[code])
        if counts[BAD_LINK]:
            bad = sorted(set(batch.linktype[codes[:len(batch)] == BAD_LINK].tolist()) - set(SUPPORTED_LINKTYPES))
            for lt in bad:
                key = f"linktype {lt}"
                if key not in self._warned:
                    self._warned.add(key)
                    self.notices.append(Notice(0, "unsupported_linktype",
                                               f"frames with link type {lt} are not decoded (not supported)"))

    def _tunnel_index(self, out: npt.NDArray[np.int64], ok: npt.NDArray[np.int64],
                      tunnelled: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
        """1-based index of each `ok` row's tunnel in self.tunnels (0: not tunnelled), new tunnels numbered in
        the order they first appear (so the numbers do not depend on how the frames were cut into batches)."""
        idx = np.zeros(len(out), np.int32)
        uniq, first, inverse = np.unique(out[tunnelled, O_TUN:O_TDPORT + 1], axis=0, return_index=True,
                                         return_inverse=True)
        ids = np.zeros(len(uniq), np.int32)
        for u in np.argsort(first).tolist():
            ids[u] = self._tunnel_id(tuple(int(x) for x in uniq[u]))
        idx[tunnelled] = ids[inverse.ravel()]
        return idx[ok]

    def _tunnel_id(self, key: tuple[int, ...]) -> int:
        if key not in self._tunnel_ids:
            kind, s_hi, s_lo, d_hi, d_lo, sp, dp = key
            mask = (1 << 64) - 1
            src = format_addr(s_hi & mask, s_lo & mask)
            dst = format_addr(d_hi & mask, d_lo & mask)
            ports = (f":{sp}", f":{dp}") if sp or dp else ("", "")
            self.tunnels.append(f"{TUNNEL_NAMES[kind]} {src}{ports[0]} > {dst}{ports[1]}")
            self._tunnel_ids[key] = len(self.tunnels)
        return self._tunnel_ids[key]

    # --- IP fragments --------------------------------------------------------------------------------------
    def _reassemble(self, batch: FrameBatch, out: npt.NDArray[np.int64], idx: npt.NDArray[np.intp]
                    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Collect fragments; decode each datagram they complete. Returns the new rows, frames and times."""
        data = batch.data
        rows, frames, times = [], [], []
        for i in idx.tolist():
            start = int(batch.offset[i])
            cend = start + int(batch.caplen[i])
            ip = int(out[i, O_FRAG_IP])
            ts = int(batch.ts_ns[i])
            done = self._add_fragment(bytes(data[ip:cend]), int(out[i, O_IPV]),
                                      int(out[i, O_FRAG_HDR]) - ip, ts, out[i])
            if done is not None:
                dgram, tunnel = done
                row = np.empty((1, O_COLS), np.int64)
                decode_frames(np.frombuffer(dgram, np.uint8), np.zeros(1, np.int64),
                              np.array([len(dgram)], np.int32), np.array([len(dgram)], np.int32),
                              np.array([101], np.int32), self.checksums, row)
                if tunnel is not None and not row[0, O_TUN]:
                    row[0, O_TUN:O_TDPORT + 1] = tunnel
                rows.append(row)
                frames.append(int(batch.frame[i]))
                times.append(ts)
        self._expire(int(batch.ts_ns[idx[-1]]))
        if not rows:
            return np.empty((0, O_COLS), np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(rows), np.array(frames, np.int64), np.array(times, np.int64)

    def _add_fragment(self, pkt: bytes, v: int, frag_hdr: int, ts: int, row: npt.NDArray[np.int64]
                      ) -> tuple[bytes, npt.NDArray[np.int64] | None] | None:
        """Add one fragment; the whole datagram (and its tunnel columns) once every piece is in."""
        if v == 4:
            ihl = (pkt[0] & 0x0F) * 4
            fo = int.from_bytes(pkt[6:8], "big")
            more, off = bool(fo & 0x2000), (fo & 0x1FFF) * 8
            total = int.from_bytes(pkt[2:4], "big")
            payload, header = pkt[ihl:total], pkt[:ihl]
            key = (4, pkt[12:20], pkt[4:6], pkt[9])
        else:
            fh = pkt[frag_hdr:frag_hdr + 8]
            fo = int.from_bytes(fh[2:4], "big")
            more, off = bool(fo & 1), fo & 0xFFF8
            end = 40 + int.from_bytes(pkt[4:6], "big")
            payload = pkt[frag_hdr + 8:end]
            header = pkt[:40]
            key = (6, pkt[8:40], fh[4:8], fh[0])
        entry = self._frags.setdefault(key, _Fragments(first_ns=ts, pieces={}))
        assert entry.pieces is not None
        entry.pieces.setdefault(off, payload)
        if off == 0:
            entry.header = header
        if not more:
            entry.total = off + len(payload)
        if entry.tunnel is None and row[O_TUN]:
            entry.tunnel = row[O_TUN:O_TDPORT + 1].copy()
        if entry.total < 0 or not entry.header:
            return None
        body, pos = bytearray(), 0
        for start in sorted(entry.pieces):
            piece = entry.pieces[start]
            if start > pos:
                return None  # a hole
            body += piece[pos - start:]
            pos = max(pos, start + len(piece))
        if pos < entry.total:
            return None
        del self._frags[key]
        body = body[:entry.total]
        head = bytearray(entry.header)
        if v == 4:
            head[2:4] = (len(head) + len(body)).to_bytes(2, "big")
            head[6:8] = b"\0\0"
        else:
            head[4:6] = len(body).to_bytes(2, "big")
            head[6] = key[3]  # the fragment header's next header; extension headers before it are dropped
        return bytes(head) + bytes(body), entry.tunnel

    def _expire(self, now: int) -> None:
        """Forget datagrams whose fragments stopped coming (they count as skipped)."""
        stale = [k for k, e in self._frags.items() if now - e.first_ns > FRAG_TIMEOUT_NS]
        for k in stale:
            entry = self._frags.pop(k)
            self.skipped[SKIP_REASONS[FRAGMENT]] += len(entry.pieces or ())

    def finish(self) -> None:
        """At the end of the capture: datagrams never completed are counted as skipped."""
        self._expire(1 << 62)
        self._rows = np.empty((0, O_COLS), np.int64)  # not held while the report is built
