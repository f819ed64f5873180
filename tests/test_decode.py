"""Decoder: link layers, encapsulations, IP versions and extension headers, TCP options and checksums,
fragments, tunnels, and hostile input. Frames are built here with struct (dpkt only to cross-check)."""

from __future__ import annotations

import faulthandler
import io
import ipaddress
import random
import struct
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import dpkt
import numpy as np
import pytest

from analyzer import decode as decode_module
from analyzer.capture import open_capture
from analyzer.decode import SUPPORTED_LINKTYPES, TUNNEL_NAMES, Decoder
from analyzer.model import FrameBatch
from analyzer.segments import (
    ACK,
    CWR,
    ECE,
    FIN,
    NS,
    OPT_BAD_LENGTH,
    OPT_OK,
    OPT_PAST_HEADER,
    PSH,
    RST,
    SYN,
    SegmentTable,
    format_addr,
)

A4, B4 = "10.1.2.3", "192.168.200.9"
A6, B6 = "2001:db8::1", "2001:db8:ffff::abcd:2"
OUT_A, OUT_B = "198.51.100.1", "203.0.113.254"


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    """A hang inside compiled code cannot be interrupted: kill the run instead of waiting forever."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# --- builders -------------------------------------------------------------------------------------------------

def ip_bytes(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp(src: str = A4, dst: str = B4, sport: int = 40000, dport: int = 80, seq: int = 1000, ack: int = 0,
        flags: int = SYN, win: int = 64240, opts: bytes = b"", data: bytes = b"", *, bad_csum: bool = False,
        offset: int | None = None) -> bytes:
    """A TCP header plus data with a correct checksum for the given addresses (options padded with EOL)."""
    opts = opts + b"\0" * (-len(opts) % 4)
    off = (20 + len(opts)) // 4 if offset is None else offset
    hdr = struct.pack("!HHIIHHHH", sport, dport, seq, ack, (off << 12) | flags, win, 0, 0) + opts
    seg = hdr + data
    pseudo = ip_bytes(src) + ip_bytes(dst)
    pseudo += struct.pack("!HH", 6, len(seg)) if ":" not in src else struct.pack("!IxxxB", len(seg), 6)
    c = csum(pseudo + seg)
    if bad_csum:
        c ^= 0x0101
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def ip4(payload: bytes, src: str = A4, dst: str = B4, proto: int = 6, ident: int = 0x1234, frag: int = 0x4000,
        total: int | None = None, options: bytes = b"") -> bytes:
    ihl = 5 + len(options) // 4
    tot = ihl * 4 + len(payload) if total is None else total
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tot, ident, frag, 64, proto, 0, ip_bytes(src),
                      ip_bytes(dst)) + options
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + payload


def ip6(payload: bytes, src: str = A6, dst: str = B6, nh: int = 6, plen: int | None = None) -> bytes:
    return struct.pack("!IHBB16s16s", 0x6000_0000, len(payload) if plen is None else plen, nh, 64, ip_bytes(src),
                       ip_bytes(dst)) + payload


def seg4(**kw: object) -> bytes:
    """An IPv4 packet holding one TCP segment between A4 and B4."""
    return ip4(tcp(**kw))  # type: ignore[arg-type]


def seg6(**kw: object) -> bytes:
    return ip6(tcp(src=A6, dst=B6, **kw))  # type: ignore[arg-type]


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


MAC = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"


def eth(payload: bytes, et: int = 0x0800) -> bytes:
    return MAC + struct.pack("!H", et) + payload


def batch(frames: list[bytes | tuple[bytes, int] | tuple[bytes, int, int]], *, first: int = 1,
          linktype: int = 1) -> FrameBatch:
    """A FrameBatch of (data[, linktype[, caplen]]) frames; wirelen is always the full length."""
    datas, links, caps = [], [], []
    for f in frames:
        if isinstance(f, bytes):
            f = (f, linktype)
        datas.append(f[0])
        links.append(f[1])
        caps.append(f[2] if len(f) > 2 else len(f[0]))  # type: ignore[misc]
    data = b"".join(d[:c] for d, c in zip(datas, caps))
    offset = np.cumsum([0] + caps[:-1]).astype(np.int64) if frames else np.empty(0, np.int64)
    n = len(frames)
    return FrameBatch(data=np.frombuffer(data, np.uint8) if data else np.zeros(0, np.uint8), offset=offset,
                      caplen=np.array(caps, np.int32), wirelen=np.array([len(d) for d in datas], np.int32),
                      ts_ns=np.arange(first, first + n, dtype=np.int64) * 1_000_000,
                      linktype=np.array(links, np.int32), frame=np.arange(first, first + n, dtype=np.int64))


def decode(frames: list[bytes | tuple[bytes, int] | tuple[bytes, int, int]], linktype: int = 1,
           **kw: bool) -> tuple[Decoder, SegmentTable]:
    dec = Decoder(**kw)
    return dec, dec.decode(batch(frames, linktype=linktype))


def addrs(t: SegmentTable, i: int = 0) -> tuple[str, str]:
    return format_addr(int(t.src_hi[i]), int(t.src_lo[i])), format_addr(int(t.dst_hi[i]), int(t.dst_lo[i]))


def one(frame: bytes, linktype: int = 1, **kw: bool) -> tuple[Decoder, SegmentTable]:
    dec, t = decode([frame], linktype, **kw)
    assert len(t) == 1, dict(dec.skipped)
    return dec, t


# --- the full row ---------------------------------------------------------------------------------------------

SYN_OPTS = (b"\x02\x04\x05\xb4"          # MSS 1460
            + b"\x04\x02"                # SACK permitted
            + b"\x08\x0a\xde\xad\xbe\xef\xff\xff\xff\xfe"  # timestamps
            + b"\x01"                    # NOP
            + b"\x03\x03\x0e")           # window scale 14


def test_every_field_of_a_syn_with_options() -> None:
    frame = eth(ip4(tcp(sport=51000, dport=443, seq=0xFFFF_FFF0, ack=0x8000_0001, flags=SYN | ECE | CWR,
                        win=65535, opts=SYN_OPTS)))
    dec, t = one(frame)
    assert int(t.frame[0]) == 1 and int(t.ts_ns[0]) == 1_000_000
    assert int(t.ip_version[0]) == 4
    assert addrs(t) == (A4, B4)
    assert int(t.src_hi[0]) == 0 and int(t.src_lo[0]) == 0xFFFF_0A01_0203
    assert (int(t.sport[0]), int(t.dport[0])) == (51000, 443)
    assert (int(t.seq[0]), int(t.ack[0])) == (0xFFFF_FFF0, 0x8000_0001)
    assert int(t.flags[0]) == SYN | ECE | CWR
    assert int(t.win[0]) == 65535
    assert int(t.ip_len[0]) == 20 + 40
    assert int(t.tcp_hdr_len[0]) == 40
    assert int(t.payload_len[0]) == 0 and int(t.captured_payload[0]) == 0
    assert int(t.mss[0]) == 1460
    assert int(t.wscale[0]) == 14
    assert bool(t.sack_perm[0]) and bool(t.has_ts[0])
    assert (int(t.ts_val[0]), int(t.ts_ecr[0])) == (0xDEADBEEF, 0xFFFF_FFFE)
    assert int(t.sack_count[0]) == 0
    assert int(t.opt_error[0]) == OPT_OK
    assert not bool(t.truncated[0])
    assert int(t.csum_ok[0]) == 1
    assert int(t.tunnel[0]) == 0
    assert dec.tunnels == [] and sum(dec.skipped.values()) == 0 and dec.notices == []


def test_every_field_of_a_data_segment_without_options() -> None:
    data = bytes(range(256)) * 4 + b"odd"
    _dec, t = one(eth(ip4(tcp(sport=80, dport=40000, seq=7, ack=0xFFFF_FFFF, flags=ACK | PSH | NS, win=0,
                             data=data), src=B4, dst=A4)))
    assert addrs(t) == (B4, A4)
    assert (int(t.sport[0]), int(t.dport[0]), int(t.seq[0]), int(t.ack[0])) == (80, 40000, 7, 0xFFFF_FFFF)
    assert int(t.flags[0]) == ACK | PSH | NS
    assert int(t.win[0]) == 0
    assert (int(t.ip_len[0]), int(t.tcp_hdr_len[0])) == (20 + 20 + len(data), 20)
    assert int(t.payload_len[0]) == int(t.captured_payload[0]) == len(data)
    assert (int(t.mss[0]), int(t.wscale[0])) == (-1, -1)
    assert not bool(t.sack_perm[0]) and not bool(t.has_ts[0])
    assert (int(t.ts_val[0]), int(t.ts_ecr[0])) == (0, 0)
    assert int(t.csum_ok[0]) == 1  # odd length checksum


def test_flags_and_columns_for_several_segments_keep_frame_order() -> None:
    flagsets = [SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK]
    frames = [eth(seg4(seq=i * 100, flags=f, data=b"x" * i)) for i, f in enumerate(flagsets)]
    _, t = decode(frames)
    assert t.flags.tolist() == flagsets
    assert t.seq.tolist() == [i * 100 for i in range(len(flagsets))]
    assert t.payload_len.tolist() == list(range(len(flagsets)))
    assert t.frame.tolist() == list(range(1, len(flagsets) + 1))
    assert t.ts_ns.tolist() == [i * 1_000_000 for i in range(1, len(flagsets) + 1)]
    for name, dtype in [("seq", np.uint32), ("flags", np.uint16), ("src_hi", np.uint64), ("mss", np.int32)]:
        assert getattr(t, name).dtype == dtype


def test_empty_batch() -> None:
    _dec, t = decode([])
    assert len(t) == 0


# --- SACK -----------------------------------------------------------------------------------------------------

def sack(blocks: list[tuple[int, int]]) -> bytes:
    return bytes([5, 2 + 8 * len(blocks)]) + b"".join(struct.pack("!II", a, b) for a, b in blocks)


@pytest.mark.parametrize("blocks", [
    [(1000, 2000), (3000, 0xFFFF_FFFF)],
    [(1, 2), (3, 4), (0x8000_0000, 0x8000_0010), (0xFFFF_FF00, 0x10)],
], ids=["2 blocks", "4 blocks"])
def test_sack_blocks(blocks: list[tuple[int, int]]) -> None:
    opts = b"\x01\x01" + (b"\x08\x0a" + b"\0" * 8 if len(blocks) == 2 else b"") + sack(blocks)
    _, t = one(eth(seg4(flags=ACK, opts=opts)))
    n = len(blocks)
    assert int(t.sack_count[0]) == n
    assert t.sack_left.shape == (1, 4)
    assert t.sack_left[0, :n].tolist() == [a for a, _ in blocks]
    assert t.sack_right[0, :n].tolist() == [b for _, b in blocks]
    assert t.sack_left[0, n:].tolist() == [0] * (4 - n)
    assert int(t.opt_error[0]) == OPT_OK
    assert bool(t.has_ts[0]) is (n == 2)


def test_sack_with_bad_length() -> None:
    _, t = one(eth(seg4(flags=ACK, opts=b"\x05\x0b" + b"\0" * 9)))  # 9 bytes of blocks: not a multiple of 8
    assert int(t.opt_error[0]) == OPT_BAD_LENGTH
    assert int(t.sack_count[0]) == 0


# --- link layers and encapsulations ---------------------------------------------------------------------------

def vlan(tpid: int, vid: int) -> bytes:
    return struct.pack("!HH", tpid, vid)


def mpls(label: int, bottom: bool) -> bytes:
    return struct.pack("!I", (label << 12) | (int(bottom) << 8) | 64)


def sll(proto: int) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02\0\0\0\0\x01\0\0", proto)


def sll2(proto: int) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 2, 1, 0, 6, b"\x02\0\0\0\0\x01\0\0")


S4, S6 = seg4(flags=ACK, data=b"hello"), seg6(flags=ACK, data=b"hello")

LINKS: dict[str, tuple[int, bytes, int]] = {
    "ethernet": (1, eth(S4), 4),
    "ethernet-ipv6": (1, eth(S6, 0x86DD), 6),
    "802.1Q": (1, MAC + vlan(0x8100, 100) + struct.pack("!H", 0x0800) + S4, 4),
    "QinQ": (1, MAC + vlan(0x88A8, 10) + vlan(0x8100, 20) + struct.pack("!H", 0x86DD) + S6, 6),
    "QinQ-9100": (1, MAC + vlan(0x9100, 10) + vlan(0x8100, 20) + struct.pack("!H", 0x0800) + S4, 4),
    "PPPoE": (1, eth(struct.pack("!BBHH", 0x11, 0, 0x1234, len(S4) + 2) + b"\x00\x21" + S4, 0x8864), 4),
    "PPPoE-ipv6": (1, eth(struct.pack("!BBHH", 0x11, 0, 0x1234, len(S6) + 2) + b"\x00\x57" + S6, 0x8864), 6),
    "VLAN+PPPoE": (1, MAC + vlan(0x8100, 7) + struct.pack("!H", 0x8864)
                   + struct.pack("!BBHH", 0x11, 0, 1, len(S4) + 2) + b"\x00\x21" + S4, 4),
    "MPLS-2-labels": (1, eth(mpls(100, False) + mpls(200, True) + S4, 0x8847), 4),
    "MPLS-ipv6": (1, eth(mpls(16, True) + S6, 0x8847), 6),
    "LLC-SNAP": (1, MAC + struct.pack("!H", len(S4) + 8) + b"\xaa\xaa\x03\0\0\0\x08\x00" + S4, 4),
    "SLL": (113, sll(0x0800) + S4, 4),
    "SLL-ipv6": (113, sll(0x86DD) + S6, 6),
    "SLL-VLAN": (113, sll(0x8100) + vlan(0x8100, 5)[2:] + struct.pack("!H", 0x0800) + S4, 4),
    "SLL2": (276, sll2(0x0800) + S4, 4),
    "SLL2-ipv6": (276, sll2(0x86DD) + S6, 6),
    "NULL-little-endian": (0, struct.pack("<I", 2) + S4, 4),
    "NULL-big-endian": (0, struct.pack(">I", 2) + S4, 4),
    "NULL-ipv6-linux": (0, struct.pack("<I", 10) + S6, 6),
    "NULL-ipv6-bsd-big-endian": (0, struct.pack(">I", 24) + S6, 6),
    "NULL-ipv6-darwin": (0, struct.pack("<I", 30) + S6, 6),
    "LOOP": (108, struct.pack(">I", 2) + S4, 4),
    "LOOP-ipv6": (108, struct.pack(">I", 28) + S6, 6),
    "raw-228": (228, S4, 4),
    "raw-229": (229, S6, 6),
    "raw-101-ipv4": (101, S4, 4),
    "raw-101-ipv6": (101, S6, 6),
    "raw-12": (12, S4, 4),
    "raw-14": (14, S6, 6),
    "PBB": (1, MAC + struct.pack("!HI", 0x88E7, 0x00_012345) + MAC + struct.pack("!H", 0x0800) + S4, 4),
    "VN-Tag": (1, MAC + struct.pack("!HI", 0x8926, 0x8001_0002) + struct.pack("!H", 0x0800) + S4, 4),
    "FabricPath": (1, MAC + struct.pack("!HH", 0x8903, 0x0140) + eth(S4), 4),
    "FDDI": (10, b"\x50" + MAC + b"\xaa\xaa\x03\0\0\0\x08\x00" + S4, 4),
    "PPP": (9, b"\x00\x21" + S4, 4),
    "PPP-HDLC": (50, b"\xff\x03\x00\x57" + S6, 6),
}


@pytest.mark.parametrize("name", list(LINKS))
def test_link_layers_and_encapsulations(name: str) -> None:
    lt, frame, v = LINKS[name]
    dec, t = one(frame, lt)
    assert int(t.ip_version[0]) == v
    assert addrs(t) == ((A4, B4) if v == 4 else (A6, B6))
    assert (int(t.sport[0]), int(t.dport[0]), int(t.seq[0])) == (40000, 80, 1000)
    assert int(t.payload_len[0]) == int(t.captured_payload[0]) == 5
    assert int(t.csum_ok[0]) == 1
    assert int(t.tunnel[0]) == 0
    assert not dec.notices


def test_all_link_layers_in_one_batch() -> None:
    frames = [(f, lt) for lt, f, _ in LINKS.values()]
    _dec, t = decode(frames)  # type: ignore[arg-type]
    assert len(t) == len(LINKS)
    assert t.frame.tolist() == list(range(1, len(LINKS) + 1))
    assert t.ip_version.tolist() == [v for _, _, v in LINKS.values()]


def test_null_with_an_unknown_family_is_skipped() -> None:
    dec, t = decode([struct.pack("<I", 7) + S4], 0)
    assert len(t) == 0
    assert dec.skipped["not IP"] == 1


def test_mpls_bottom_label_never_reached_is_cut() -> None:
    dec, t = decode([eth(mpls(1, False) + mpls(2, False), 0x8847)])
    assert len(t) == 0
    assert dec.skipped["headers cut by the snap length"] == 1


# --- IPv4 / IPv6 details --------------------------------------------------------------------------------------

def test_ipv4_header_options() -> None:
    t = one(eth(ip4(tcp(flags=ACK, data=b"abc"), options=b"\x01\x01\x01\x00")))[1]
    assert int(t.ip_len[0]) == 24 + 23
    assert int(t.payload_len[0]) == 3
    assert int(t.csum_ok[0]) == 1


def test_ethernet_padding_is_not_payload() -> None:
    frame = eth(seg4(flags=ACK)) + b"\0" * 6  # padded to the 60-byte Ethernet minimum
    _, t = one(frame)
    assert int(t.payload_len[0]) == 0 and int(t.captured_payload[0]) == 0
    assert int(t.csum_ok[0]) == 1
    assert not bool(t.truncated[0])


def test_ipv6_with_hop_by_hop_and_destination_options() -> None:
    seg = tcp(src=A6, dst=B6, flags=ACK, data=b"payload!", opts=b"\x02\x04\x05\x8c")
    hop = bytes([60, 0]) + b"\x01\x04\0\0\0\0"                   # hop-by-hop, next: destination options
    dst = bytes([6, 1]) + b"\x01\x0c" + b"\0" * 12               # destination options, 16 bytes, next: TCP
    pkt = ip6(hop + dst + seg, nh=0)
    _dec, t = one(eth(pkt, 0x86DD))
    assert int(t.ip_version[0]) == 6
    assert addrs(t) == (A6, B6)
    assert int(t.ip_len[0]) == 40 + 8 + 16 + len(seg)
    assert int(t.tcp_hdr_len[0]) == 24
    assert int(t.payload_len[0]) == 8
    assert int(t.mss[0]) == 1420
    assert int(t.csum_ok[0]) == 1


def test_ipv6_routing_and_ah_headers() -> None:
    seg = tcp(src=A6, dst=B6, flags=ACK, data=b"x")
    ah = bytes([6, 4]) + b"\0" * 22       # AH: (4 + 2) * 4 = 24 bytes, next: TCP
    rt = bytes([51, 0]) + b"\0" * 6       # routing header, 8 bytes, next: AH
    _dec, t = one(ip6(rt + ah + seg, nh=43), 101)
    assert int(t.payload_len[0]) == 1
    assert int(t.ip_len[0]) == 40 + 8 + 24 + 21


def test_ipv6_address_with_high_bits() -> None:
    src, dst = "fe80::ffff:ffff:ffff:ffff", "ff02::1:ff00:1"
    _dec, t = one(ip6(tcp(src=src, dst=dst, flags=ACK), src=src, dst=dst), 229)
    assert addrs(t) == (src, dst)
    assert int(t.src_lo[0]) == 0xFFFF_FFFF_FFFF_FFFF
    assert int(t.dst_hi[0]) == 0xFF02_0000_0000_0000


def test_ipv4_total_length_zero_from_segmentation_offload() -> None:
    pkt = ip4(tcp(flags=ACK, data=b"z" * 100), total=0)
    _, t = one(eth(pkt))
    assert int(t.payload_len[0]) == 100
    assert int(t.ip_len[0]) == 140


def test_malformed_ip_headers_are_skipped() -> None:
    frames = [
        eth(b"\x45" + S4[1:2] + b"\x00\x10" + S4[4:]),  # total length shorter than the header
        eth(b"\x44" + S4[1:]),                            # IHL 4
        eth(b"\x65" + S4[1:]),                            # version 6 in an IPv4 frame
        eth(S4[:10], 0x0800),                              # cut inside the IP header
    ]
    dec, t = decode(frames)
    assert len(t) == 0
    assert dec.skipped["malformed IP header"] == 3
    assert dec.skipped["headers cut by the snap length"] == 1


# --- snap length and options ----------------------------------------------------------------------------------

def test_snaplen_truncated_segment() -> None:
    frame = eth(seg4(flags=ACK | PSH, data=b"d" * 1000, opts=b"\x01\x01\x08\x0a" + b"\0\0\0\x05\0\0\0\x06"))
    cap = 14 + 20 + 32 + 100
    _dec, t = one((frame, 1, cap))  # type: ignore[arg-type]
    assert bool(t.truncated[0])
    assert int(t.payload_len[0]) == 1000
    assert int(t.captured_payload[0]) == 100
    assert int(t.csum_ok[0]) == -1
    assert int(t.ip_len[0]) == 20 + 32 + 1000
    assert (bool(t.has_ts[0]), int(t.ts_val[0]), int(t.ts_ecr[0])) == (True, 5, 6)


def test_snaplen_cutting_the_options() -> None:
    frame = eth(seg4(flags=SYN, opts=SYN_OPTS))
    _, t = one((frame, 1, 14 + 20 + 20 + 6))  # type: ignore[arg-type]  # MSS and SACK-permitted are in
    assert bool(t.truncated[0])
    assert int(t.mss[0]) == 1460 and bool(t.sack_perm[0])
    assert not bool(t.has_ts[0]) and int(t.wscale[0]) == -1
    assert int(t.opt_error[0]) == OPT_OK  # cut by the snap length is not malformed
    assert int(t.captured_payload[0]) == 0
    assert int(t.csum_ok[0]) == -1


def test_snaplen_cutting_the_tcp_header_gives_no_row() -> None:
    dec, t = decode([(eth(seg4(flags=ACK)), 1, 14 + 20 + 10)])
    assert len(t) == 0
    assert dec.skipped["headers cut by the snap length"] == 1


@pytest.mark.parametrize("opts,code,mss", [
    (b"\x02\x00\x05\xb4", OPT_BAD_LENGTH, -1),             # MSS with length 0
    (b"\xfe\x00\x00\x00", OPT_BAD_LENGTH, -1),             # unknown kind with length 0
    (b"\x02\x01\x05\xb4", OPT_BAD_LENGTH, -1),             # length 1
    (b"\x02\x03\x05\x01", OPT_BAD_LENGTH, -1),             # MSS of length 3
    (b"\x02\x06\x05\xb4\0\0\0\0", OPT_BAD_LENGTH, -1),     # MSS of length 6
    (b"\x03\x04\x07\x00", OPT_BAD_LENGTH, -1),             # window scale of length 4
    (b"\x04\x03\x00\x00", OPT_BAD_LENGTH, -1),             # SACK permitted of length 3
    (b"\x08\x08" + b"\0" * 6, OPT_BAD_LENGTH, -1),         # timestamps of length 8
    (b"\x08\x0a\0\0", OPT_PAST_HEADER, -1),                # timestamps running past the header
    (b"\x02\x04\x05\xb4\xfe\x40\0\0", OPT_PAST_HEADER, 1460),  # MSS, then an option past the header
    (b"\x01\x01\x01\x02", OPT_PAST_HEADER, -1),            # kind at the last byte, no length byte
    (b"\x02\x04\x05\xb4\x00\x02\x00\x00", OPT_OK, 1460),   # end of options: the rest is ignored
    (b"\xfe\x04\xaa\xbb\x02\x04\x01\x00", OPT_OK, 256),    # unknown option skipped by its length
], ids=["mss-len0", "unknown-len0", "len1", "mss-len3", "mss-len6", "ws-len4", "sackp-len3", "ts-len8",
        "ts-past", "past-after-mss", "no-length-byte", "eol", "unknown-then-mss"])
def test_malformed_options(opts: bytes, code: int, mss: int) -> None:
    _, t = one(eth(seg4(flags=SYN, opts=opts)))
    assert int(t.opt_error[0]) == code
    assert int(t.mss[0]) == mss
    assert int(t.csum_ok[0]) == 1  # the segment itself is fine


def test_every_two_byte_option_prefix_terminates() -> None:
    frames = [eth(seg4(flags=SYN, opts=bytes([k, ln]) + b"\x01" * 38)) for k in range(256) for ln in (0, 1, 2, 3, 40, 255)]
    _, t = decode(frames)
    assert len(t) == len(frames)
    assert (t.opt_error <= 2).all()


@pytest.mark.parametrize("offset", [0, 4])
def test_data_offset_below_five_is_malformed(offset: int) -> None:
    dec, t = decode([eth(ip4(tcp(flags=ACK, offset=offset, data=b"x" * 30)))])
    assert len(t) == 0
    assert dec.skipped["malformed TCP header"] == 1


def test_data_offset_past_the_ip_length_is_malformed() -> None:
    dec, t = decode([eth(ip4(tcp(flags=ACK, offset=15)))])
    assert len(t) == 0
    assert dec.skipped["malformed TCP header"] == 1


# --- checksums ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("size", [0, 1, 2, 1001])
def test_checksums(family: int, size: int) -> None:
    data = bytes((i * 37) & 0xFF for i in range(size))
    src, dst = (A4, B4) if family == 4 else (A6, B6)
    wrap = (lambda s: eth(ip4(s))) if family == 4 else (lambda s: eth(ip6(s, src=A6, dst=B6), 0x86DD))
    good = wrap(tcp(src=src, dst=dst, flags=ACK, data=data))
    bad = wrap(tcp(src=src, dst=dst, flags=ACK, data=data, bad_csum=True))
    _, t = decode([good, bad], checksums=True)
    assert t.csum_ok.tolist() == [1, 0]
    _, t = decode([good, bad], checksums=False)
    assert t.csum_ok.tolist() == [-1, -1]


def test_checksum_default_is_on_and_a_flipped_payload_bit_is_caught() -> None:
    frame = bytearray(eth(seg4(flags=ACK, data=b"abcdefgh")))
    frame[-3] ^= 0x10
    dec = Decoder()
    t = dec.decode(batch([bytes(frame)]))
    assert t.csum_ok.tolist() == [0]


def test_checksum_matches_dpkt(tmp_path: Path) -> None:
    """Segments dpkt builds (and checksums) through a pcap file, compared field by field with dpkt's parse."""
    rng = random.Random(7)
    buf = io.BytesIO()
    w = dpkt.pcap.Writer(buf, linktype=dpkt.pcap.DLT_EN10MB)
    sent = []
    for i in range(60):
        opts = rng.choice([b"", b"\x02\x04\x05\xb4\x01\x03\x03\x07", b"\x01\x01\x08\x0a" + bytes(8)])
        t = dpkt.tcp.TCP(sport=rng.randrange(1, 65536), dport=rng.randrange(1, 65536), seq=rng.getrandbits(32),
                         ack=rng.getrandbits(32), flags=rng.randrange(0, 512), win=rng.randrange(65536),
                         opts=opts, data=bytes(rng.randrange(256) for _ in range(rng.randrange(0, 50))))
        t.off = (20 + len(opts)) // 4
        if i % 2:
            ip: dpkt.Packet = dpkt.ip.IP(src=rng.randbytes(4), dst=rng.randbytes(4), p=6, data=t)
            e = dpkt.ethernet.Ethernet(src=MAC[:6], dst=MAC[6:], type=0x0800, data=ip)
        else:
            ip = dpkt.ip6.IP6(src=rng.randbytes(16), dst=rng.randbytes(16), nxt=6, hlim=64, data=t, plen=len(t))
            e = dpkt.ethernet.Ethernet(src=MAC[:6], dst=MAC[6:], type=0x86DD, data=ip)
        raw = bytes(e)
        w.writepkt(raw, ts=1_000 + i)
        sent.append(dpkt.ethernet.Ethernet(raw))
    path = tmp_path / "dpkt.pcap"
    path.write_bytes(buf.getvalue())
    dec = Decoder()
    with open_capture(path) as cap:
        t = SegmentTable.concat([dec.decode(b) for b in cap])
    assert len(t) == 60
    for i, e in enumerate(sent):
        ip, seg = e.data, e.data.data
        assert addrs(t, i) == (str(ipaddress.ip_address(ip.src)), str(ipaddress.ip_address(ip.dst)))
        assert (int(t.sport[i]), int(t.dport[i]), int(t.seq[i]), int(t.ack[i])) == (seg.sport, seg.dport, seg.seq, seg.ack)
        assert (int(t.flags[i]), int(t.win[i])) == (seg.flags, seg.win)
        assert int(t.payload_len[i]) == len(seg.data)
        assert int(t.csum_ok[i]) == 1
        assert int(t.ts_ns[i]) == (1_000 + i) * 1_000_000_000


# --- not TCP --------------------------------------------------------------------------------------------------

def test_non_tcp_frames_are_counted_and_give_no_rows() -> None:
    arp = eth(bytes.fromhex("0001080006040001") + MAC[6:] + ip_bytes(A4) + b"\0" * 6 + ip_bytes(B4), 0x0806)
    udp4 = eth(ip4(udp(5353, 53, b"\x12\x34" + b"\0" * 10), proto=17))
    icmp = eth(ip4(b"\x08\x00\xf7\xff\0\0\0\0", proto=1))
    icmp6 = eth(ip6(b"\x80\x00\0\0\0\0\0\0", nh=58), 0x86DD)
    dec, t = decode([arp, udp4, eth(seg4(flags=ACK)), icmp, icmp6])
    assert len(t) == 1
    assert t.frame.tolist() == [3]
    assert dec.skipped == {"not IP": 1, "IP but not TCP": 3}
    assert dec.tunnels == []


# --- fragments ------------------------------------------------------------------------------------------------

def frag4(seg: bytes, split: int, ident: int = 0x4242) -> list[bytes]:
    return [ip4(seg[:split], proto=6, ident=ident, frag=0x2000),
            ip4(seg[split:], proto=6, ident=ident, frag=split // 8)]


BIG = tcp(flags=ACK | PSH, seq=555, data=bytes(range(200)))


def _check_reassembled(t: SegmentTable, frame: int, v: int = 4) -> None:
    assert len(t) == 1
    assert int(t.frame[0]) == frame
    assert int(t.seq[0]) == 555
    assert int(t.payload_len[0]) == int(t.captured_payload[0]) == 200
    assert int(t.csum_ok[0]) == 1
    assert int(t.ip_version[0]) == v
    assert not bool(t.truncated[0])


def test_ipv4_fragments_in_one_batch() -> None:
    f1, f2 = frag4(BIG, 96)
    dec, t = decode([eth(f1), eth(f2)])
    _check_reassembled(t, 2)
    assert addrs(t) == (A4, B4)
    assert int(t.ip_len[0]) == 20 + len(BIG)
    assert int(t.ts_ns[0]) == 2_000_000
    assert sum(dec.skipped.values()) == 0


def test_ipv4_fragments_out_of_order() -> None:
    f1, f2 = frag4(BIG, 96)
    _, t = decode([eth(f2), eth(f1)])
    _check_reassembled(t, 2)


def test_ipv4_fragments_with_other_segments_between() -> None:
    f1, f2 = frag4(BIG, 64)
    _, t = decode([eth(f1), eth(seg4(flags=ACK, seq=1)), eth(f2), eth(seg4(flags=ACK, seq=2))])
    assert t.frame.tolist() == [2, 3, 4]
    assert t.seq.tolist() == [1, 555, 2]


def test_ipv4_fragments_in_two_batches() -> None:
    f1, f2 = frag4(BIG, 96)
    dec = Decoder()
    t1 = dec.decode(batch([eth(f1), eth(seg4(flags=ACK, seq=9))], first=1))
    assert t1.seq.tolist() == [9]
    t2 = dec.decode(batch([eth(f2)], first=3))
    _check_reassembled(t2, 3)
    dec.finish()
    assert sum(dec.skipped.values()) == 0


def test_ipv4_three_fragments_and_a_duplicate() -> None:
    f1, _f2 = frag4(BIG, 48)
    mid = ip4(BIG[48:120], ident=0x4242, frag=0x2000 | 6)
    last = ip4(BIG[120:], ident=0x4242, frag=15)
    _, t = decode([eth(f1), eth(mid), eth(mid), eth(last)])
    _check_reassembled(t, 4)


def test_fragments_of_different_datagrams_do_not_mix() -> None:
    a1, a2 = frag4(BIG, 96, ident=1)
    other = tcp(flags=ACK | PSH, seq=777, data=bytes(200))
    b1, b2 = frag4(other, 96, ident=2)
    _, t = decode([eth(a1), eth(b1), eth(b2), eth(a2)])
    assert t.frame.tolist() == [3, 4]
    assert t.seq.tolist() == [777, 555]
    assert t.csum_ok.tolist() == [1, 1]


def test_incomplete_fragments_are_counted_at_finish() -> None:
    f1, _ = frag4(BIG, 96)
    dec, t = decode([eth(f1)])
    assert len(t) == 0
    dec.finish()
    assert dec.skipped["IP fragments never completed"] == 1


def frag6(seg: bytes, split: int, ident: int = 0xCAFE) -> list[bytes]:
    return [ip6(struct.pack("!BBHI", 6, 0, 1, ident) + seg[:split], nh=44),
            ip6(struct.pack("!BBHI", 6, 0, split, ident) + seg[split:], nh=44)]


BIG6 = tcp(src=A6, dst=B6, flags=ACK | PSH, seq=555, data=bytes(range(200)))


def test_ipv6_fragments() -> None:
    f1, f2 = frag6(BIG6, 104)
    _dec, t = decode([eth(f1, 0x86DD), eth(f2, 0x86DD)])
    _check_reassembled(t, 2, 6)
    assert addrs(t) == (A6, B6)
    assert int(t.ip_len[0]) == 40 + len(BIG6)


def test_ipv6_fragments_in_two_batches_after_a_hop_by_hop_header() -> None:
    hop = bytes([44, 0]) + b"\x01\x04\0\0\0\0"
    f1 = ip6(hop + struct.pack("!BBHI", 6, 0, 1, 9) + BIG6[:64], nh=0)
    f2 = ip6(hop + struct.pack("!BBHI", 6, 0, 64, 9) + BIG6[64:], nh=0)
    dec = Decoder()
    assert len(dec.decode(batch([(f1, 229)], first=10))) == 0
    t = dec.decode(batch([(f2, 229)], first=11))
    _check_reassembled(t, 11, 6)


# --- tunnels --------------------------------------------------------------------------------------------------

def outer(payload: bytes, proto: int) -> bytes:
    return eth(ip4(payload, src=OUT_A, dst=OUT_B, proto=proto, ident=77))


def outer_udp(sport: int, dport: int, payload: bytes) -> bytes:
    return outer(udp(sport, dport, payload), 17)


INNER4 = seg4(flags=ACK, data=b"tunnelled")
INNER6 = seg6(flags=ACK, data=b"tunnelled")

TUNNELS: dict[str, tuple[bytes, str, int]] = {
    "GRE": (outer(b"\x00\x00\x08\x00" + INNER4, 47), f"GRE {OUT_A} > {OUT_B}", 4),
    "GRE-key-seq-csum": (outer(b"\xb0\x00\x08\x00" + b"\0" * 12 + INNER4, 47), f"GRE {OUT_A} > {OUT_B}", 4),
    "GRE-ethernet": (outer(b"\x20\x00\x65\x58" + b"\0\0\0\x05" + eth(INNER4), 47), f"GRE {OUT_A} > {OUT_B}", 4),
    "VXLAN": (outer_udp(50000, 4789, b"\x08\0\0\0\0\x01\x00\0" + eth(INNER4)),
              f"VXLAN {OUT_A}:50000 > {OUT_B}:4789", 4),
    "Geneve": (outer_udp(50001, 6081, b"\x00\x00\x65\x58\0\0\x01\0" + eth(INNER6, 0x86DD)),
               f"Geneve {OUT_A}:50001 > {OUT_B}:6081", 6),
    "Geneve-options-ip": (outer_udp(50001, 6081, b"\x02\x00\x08\x00\0\0\x01\0" + b"\0" * 8 + INNER4),
                          f"Geneve {OUT_A}:50001 > {OUT_B}:6081", 4),
    "GTP-U": (outer_udp(2152, 2152, struct.pack("!BBHI", 0x30, 0xFF, len(INNER4), 0x1234) + INNER4),
              f"GTP-U {OUT_A}:2152 > {OUT_B}:2152", 4),
    "GTP-U-seq": (outer_udp(2152, 2152, struct.pack("!BBHIHBB", 0x32, 0xFF, len(INNER4) + 4, 1, 9, 0, 0) + INNER4),
                  f"GTP-U {OUT_A}:2152 > {OUT_B}:2152", 4),
    "IP-in-IP": (outer(INNER4, 4), f"IP-in-IP {OUT_A} > {OUT_B}", 4),
    "6in4": (outer(INNER6, 41), f"IP-in-IP {OUT_A} > {OUT_B}", 6),
    "Teredo-port-3544": (outer_udp(3544, 40000, INNER6), f"Teredo {OUT_A}:3544 > {OUT_B}:40000", 6),
    "Teredo-other-port": (outer_udp(41000, 42000, INNER6), f"Teredo {OUT_A}:41000 > {OUT_B}:42000", 6),
    "AYIYA": (outer_udp(5072, 5072, bytes([0x41, 0x52, 0x21, 4]) + b"\0" * 4 + b"\x11" * 16 + b"\x22" * 20 + INNER4),
              f"AYIYA {OUT_A}:5072 > {OUT_B}:5072", 4),
    "GRE-in-UDP": (outer_udp(51000, 4754, b"\x00\x00\x86\xdd" + INNER6), f"GRE {OUT_A}:51000 > {OUT_B}:4754", 6),
    "ERSPAN-II": (outer(b"\x10\x00\x88\xbe" + b"\0\0\0\x01" + b"\x10\x01\0\x02\0\0\0\x03" + eth(INNER4), 47),
                  f"GRE {OUT_A} > {OUT_B}", 4),
    "Teredo-origin": (outer_udp(3544, 40001, b"\x00\x00" + b"\0" * 6 + INNER6),
                      f"Teredo {OUT_A}:3544 > {OUT_B}:40001", 6),
}


@pytest.mark.parametrize("name", list(TUNNELS))
def test_tunnels(name: str) -> None:
    frame, label, v = TUNNELS[name]
    dec, t = one(frame)
    assert int(t.ip_version[0]) == v
    assert addrs(t) == ((A4, B4) if v == 4 else (A6, B6))
    assert (int(t.sport[0]), int(t.dport[0]), int(t.seq[0])) == (40000, 80, 1000)
    assert int(t.payload_len[0]) == 9
    assert int(t.csum_ok[0]) == 1
    assert int(t.tunnel[0]) == 1
    assert dec.tunnels == [label]
    assert label.split(" ")[0] in TUNNEL_NAMES


def test_tunnel_indexes_are_stable_across_batches() -> None:
    gre, vx, ipip = TUNNELS["GRE"][0], TUNNELS["VXLAN"][0], TUNNELS["IP-in-IP"][0]
    dec = Decoder()
    t1 = dec.decode(batch([gre, eth(S4), vx, gre]))
    assert t1.tunnel.tolist() == [1, 0, 2, 1]
    t2 = dec.decode(batch([ipip, vx, gre], first=5))
    assert t2.tunnel.tolist() == [3, 2, 1]
    assert [s.split(" ")[0] for s in dec.tunnels] == ["GRE", "VXLAN", "IP-in-IP"]


def test_teredo_on_another_port_needs_an_exact_ipv6_length() -> None:
    short = ip6(tcp(src=A6, dst=B6, flags=ACK, data=b"tunnelled"), plen=len(tcp(flags=ACK)))  # length too small
    dec, t = decode([outer_udp(41000, 42000, short), outer_udp(41000, 42000, INNER6 + b"\0\0")])
    assert len(t) == 0
    assert dec.skipped["IP but not TCP"] == 2
    assert dec.tunnels == []


def test_gtp_u_messages_other_than_g_pdu_carry_nothing() -> None:
    dec, t = decode([outer_udp(2152, 2152, struct.pack("!BBHI", 0x30, 0x01, len(INNER4), 1) + INNER4)])
    assert len(t) == 0
    assert dec.skipped["IP but not TCP"] == 1


def test_fragmented_tunnel_keeps_the_tunnel() -> None:
    inner = tcp(flags=ACK | PSH, seq=555, data=bytes(range(200)))
    f1, f2 = frag4(inner, 96)
    dec, t = decode([outer(f1, 4), outer(f2, 4)])
    _check_reassembled(t, 2)
    assert int(t.tunnel[0]) == 1
    assert dec.tunnels == [f"IP-in-IP {OUT_A} > {OUT_B}"]


def test_fragmented_outer_packet_of_a_tunnel() -> None:
    gre = b"\x00\x00\x08\x00" + ip4(BIG)
    p1 = ip4(gre[:104], src=OUT_A, dst=OUT_B, proto=47, ident=5, frag=0x2000)
    p2 = ip4(gre[104:], src=OUT_A, dst=OUT_B, proto=47, ident=5, frag=13)
    dec, t = decode([eth(p1), eth(p2)])
    _check_reassembled(t, 2)
    assert dec.tunnels == [f"GRE {OUT_A} > {OUT_B}"]


def test_nesting_too_deep_is_counted() -> None:
    pkt = INNER4
    for _ in range(6):
        pkt = ip4(pkt, src=OUT_A, dst=OUT_B, proto=4)
    dec, t = decode([pkt], 101)
    assert len(t) == 0
    assert dec.skipped["too many nested tunnels"] == 1


# --- unsupported and hostile input ----------------------------------------------------------------------------

def test_unsupported_linktype() -> None:
    dec = Decoder()
    t = dec.decode(batch([(eth(S4), 147), (eth(S4), 1), (eth(S4), 147), (eth(S4), 148)]))
    assert t.frame.tolist() == [2]
    t = dec.decode(batch([(eth(S4), 147)], first=5))
    assert len(t) == 0
    assert dec.skipped["unsupported link type or frame"] == 4
    kinds = [(n.kind, n.message) for n in dec.notices]
    assert [k for k, _ in kinds] == ["unsupported_linktype", "unsupported_linktype"]
    assert "147" in kinds[0][1] and "148" in kinds[1][1]


def test_every_supported_linktype_decodes_an_empty_frame() -> None:
    dec, t = decode([(b"", lt) for lt in SUPPORTED_LINKTYPES])
    assert len(t) == 0
    assert "unsupported link type or frame" not in dec.skipped


def _random_frames(rng: random.Random, n: int) -> list[tuple[bytes, int]]:
    lts = sorted(SUPPORTED_LINKTYPES)
    return [(rng.randbytes(rng.randrange(0, 201)), rng.choice(lts)) for _ in range(n)]


def _check_invariants(t: SegmentTable) -> None:
    assert (t.tcp_hdr_len >= 20).all() and (t.tcp_hdr_len <= 60).all()
    assert (t.captured_payload >= 0).all()
    assert (t.captured_payload <= t.payload_len).all()
    assert (t.sack_count <= 4).all()
    assert np.isin(t.csum_ok, [-1, 0, 1]).all()
    assert np.isin(t.ip_version, [4, 6]).all()
    assert (np.diff(t.frame) >= 0).all()


def test_random_garbage_never_raises() -> None:
    rng = random.Random(2000)
    frames = _random_frames(rng, 2000)
    dec = Decoder()
    t = dec.decode(batch(frames))  # type: ignore[arg-type]
    _check_invariants(t)
    for start in range(0, 2000, 250):  # and in batches, with fragment state carried between them
        t = dec.decode(batch(frames[start:start + 250], first=start + 1))  # type: ignore[arg-type]
        _check_invariants(t)
    dec.finish()


def test_mutated_valid_frames_never_raise() -> None:
    """Valid frames of every kind with bytes flipped and lengths cut reach deep into the parsers."""
    rng = random.Random(4242)
    seeds = [(f, lt) for lt, f, _ in LINKS.values()] + [(f, 1) for f, _, _ in TUNNELS.values()]
    seeds += [(eth(f), 1) for f in frag4(BIG, 96)] + [(eth(f, 0x86DD), 1) for f in frag6(BIG6, 104)]
    seeds += [(eth(seg4(flags=SYN, opts=SYN_OPTS)), 1), (eth(seg4(flags=ACK, opts=sack([(1, 2)] * 4))), 1)]
    dec = Decoder()
    for round_ in range(10):
        frames: list[tuple[bytes, int, int]] = []
        for _ in range(300):
            f, lt = rng.choice(seeds)
            b = bytearray(f)
            for _ in range(rng.randrange(1, 6)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            cap = rng.randrange(len(b) + 1) if rng.random() < 0.3 else len(b)
            frames.append((bytes(b), lt, cap))
        _check_invariants(dec.decode(batch(frames, first=round_ * 300 + 1)))  # type: ignore[arg-type]
    dec.finish()


def _mixed_frames() -> list[tuple[bytes, int]]:
    """Frames of every kind, shuffled: link layers, tunnels, IPv4 and IPv6 fragments (a fragmented tunnel among
    them), SYNs with options, SACKs, and frames that are skipped or raise a notice."""
    frames = [(f, lt) for lt, f, _ in LINKS.values()] + [(f, 1) for f, _, _ in TUNNELS.values()]
    frames += [(eth(f), 1) for f in frag4(BIG, 96)] + [(eth(f, 0x86DD), 1) for f in frag6(BIG6, 104)]
    frames += [(outer(f, 4), 1) for f in frag4(tcp(flags=ACK | PSH, seq=555, data=bytes(range(200))), 96)]
    frames += [(eth(seg4(flags=SYN, opts=SYN_OPTS)), 1), (eth(seg4(flags=ACK, opts=sack([(1, 2)] * 4))), 1),
               (eth(seg4(flags=ACK, opts=b"\x02\x01")), 1), (eth(ip4(b"\0" * 8, proto=17)), 1), (b"\0" * 10, 999)]
    rng = random.Random(7)
    frames = frames * 3
    rng.shuffle(frames)
    return frames


@pytest.mark.parametrize("part", [1, 2, 3, 16])
def test_a_batch_decoded_in_parts_is_decoded_as_a_whole(part: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder works through a batch PART_FRAMES frames at a time, into one table: every column, the
    tunnels, the skipped frames and the notices are what decoding the batch in one piece gives, also where a
    part completes a fragmented datagram (its rows then join the part's)."""
    frames = _mixed_frames()
    whole_dec = Decoder()
    whole = whole_dec.decode(batch(frames[:40])), whole_dec.decode(batch(frames[40:], first=41))  # type: ignore[arg-type]
    monkeypatch.setattr(decode_module, "PART_FRAMES", part)
    dec = Decoder()
    parts = dec.decode(batch(frames[:40])), dec.decode(batch(frames[40:], first=41))  # type: ignore[arg-type]
    for a, b in zip(parts, whole):
        for f in fields(SegmentTable):
            np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name), err_msg=f.name)
    assert len(whole[0]) + len(whole[1]) > 60
    assert (dec.tunnels, dec.skipped, dec.notices) == (whole_dec.tunnels, whole_dec.skipped, whole_dec.notices)
    dec.finish()
    whole_dec.finish()
    assert (dec.skipped, dec.notices) == (whole_dec.skipped, whole_dec.notices)
