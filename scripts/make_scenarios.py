"""Build the synthetic scenario captures in pcaps/ and their expected-verdict files, deterministically.

    python scripts/make_scenarios.py pcaps

Each scenario is a short script of TCP segments written with the small builder below, then framed in the
link layer the scenario is about (Ethernet, 802.1Q, Linux cooked, raw IP...). The expected verdicts next to
each capture (`NAME.expect.json`, format in docs/design.md) are written here by hand from RFC 9293 and Zeek's
rules, not produced by tcpa, so the scenario tests can catch tcpa being wrong. Timestamps are fixed, so the
files are byte-for-byte reproducible.
"""

from __future__ import annotations

import gzip
import json
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dpkt

T0 = 1_700_000_000 * 10**9  # 2023-11-14 22:13:20 UTC, in ns
MS = 10**6
S = 10**9
FIN, SYN, RST, PSH, ACK = dpkt.tcp.TH_FIN, dpkt.tcp.TH_SYN, dpkt.tcp.TH_RST, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_ACK

Packet = tuple[int, bytes]  # (ts_ns, IP packet)


def tcp_options(mss: int | None = 1460, wscale: int | None = 7, sack_perm: bool = True,
                ts: tuple[int, int] | None = None) -> bytes:
    """Handshake options in Linux's order: MSS, SACK_PERM, TS, NOP, WS."""
    out = b""
    if mss is not None:
        out += struct.pack("!BBH", 2, 4, mss)
    if sack_perm:
        out += b"\x04\x02"
    if ts is not None:
        out += struct.pack("!BBII", 8, 10, *ts)
    elif sack_perm:
        out += b"\x01\x01"
    if wscale is not None:
        out += b"\x01" + struct.pack("!BBB", 3, 3, wscale)
    while len(out) % 4:
        out += b"\x01"
    return out


@dataclass
class Side:
    """One endpoint: its address, port and next sequence number."""

    addr: str
    port: int
    seq: int
    ts: int = 0  # TSval clock, 0: no timestamps
    ts_hz: int = 1000

    def tsval(self, t: int) -> int:
        return (self.ts + (t - T0) * self.ts_hz // S) & 0xFFFFFFFF


@dataclass
class Conn:
    """A TCP conversation between client c and server s; every method appends one segment."""

    c: Side
    s: Side
    packets: list[Packet] = field(default_factory=list)
    ts_opts: bool = False

    def _ends(self, by: str) -> tuple[Side, Side]:
        return (self.c, self.s) if by == "c" else (self.s, self.c)

    def seg(self, t: int, by: str, flags: int, data: bytes = b"", *, seq: int | None = None,
            ack: int | None = None, win: int = 64240, opts: bytes = b"", advance: bool = True) -> Conn:
        """One segment from `by` ("c" or "s"); seq/ack default to the sender's and peer's next sequence."""
        me, peer = self._ends(by)
        if self.ts_opts and me.ts and not opts:
            opts = b"\x01\x01" + struct.pack("!BBII", 8, 10, me.tsval(t), peer.tsval(t) if flags & ACK else 0)
        tcp = dpkt.tcp.TCP(sport=me.port, dport=peer.port, seq=(me.seq if seq is None else seq) & 0xFFFFFFFF,
                           ack=(peer.seq if ack is None else ack) & 0xFFFFFFFF if flags & ACK else 0,
                           flags=flags, win=win, opts=opts, data=data)
        tcp.off = (20 + len(opts)) // 4
        self.packets.append((t, ip_packet(me.addr, peer.addr, tcp)))
        if advance and seq is None:
            me.seq += len(data) + (1 if flags & (SYN | FIN) else 0)
        return self

    def handshake(self, t: int, rtt: int = 10 * MS) -> Conn:
        ts_c = (self.c.tsval(t), 0) if self.ts_opts else None
        self.seg(t, "c", SYN, opts=tcp_options(ts=ts_c))
        ts_s = (self.s.tsval(t + rtt // 2), self.c.tsval(t)) if self.ts_opts else None
        self.seg(t + rtt // 2, "s", SYN | ACK, opts=tcp_options(wscale=9, ts=ts_s))
        return self.seg(t + rtt, "c", ACK)

    def exchange(self, t: int, request: int = 100, response: int = 1000, rtt: int = 10 * MS) -> Conn:
        """A request, acknowledged at once, then its response, acknowledged."""
        self.seg(t, "c", PSH | ACK, b"q" * request)
        self.seg(t + rtt // 2, "s", ACK)
        self.seg(t + rtt, "s", PSH | ACK, b"r" * response)
        return self.seg(t + rtt + rtt // 2, "c", ACK)


def ip_packet(src: str, dst: str, tcp: dpkt.tcp.TCP) -> bytes:
    """An IPv4 or IPv6 packet around a TCP segment, checksums filled in."""
    if ":" in src:
        ip6 = dpkt.ip6.IP6(src=_inet(src), dst=_inet(dst), nxt=6, hlim=64, data=tcp, plen=len(bytes(tcp)))
        tcp.sum = 0
        ip6.data = tcp
        return bytes(ip6)
    ip = dpkt.ip.IP(src=_inet(src), dst=_inet(dst), p=6, ttl=64, id=0, data=tcp)
    ip.len = 20 + len(bytes(tcp))
    return bytes(ip)


def _inet(addr: str) -> bytes:
    import socket
    return socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)


# --- link layers -------------------------------------------------------------------------------------------
MAC_C, MAC_S = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b")


def ethernet(pkt: bytes, vlan: int | None = None) -> bytes:
    etype = 0x86DD if pkt[0] >> 4 == 6 else 0x0800
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return MAC_S + MAC_C + tag + struct.pack("!H", etype) + pkt


def sll(pkt: bytes) -> bytes:
    etype = 0x86DD if pkt[0] >> 4 == 6 else 0x0800
    return struct.pack("!HHH8sH", 0, 1, 6, MAC_C + b"\0\0", etype) + pkt


# --- writers -------------------------------------------------------------------------------------------------
def write_pcap(path: Path, frames: list[tuple[int, bytes]], linktype: int, *, nsec: bool = False,
               snaplen: int = 262144) -> None:
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        for ts, frame in sorted(frames, key=lambda f: f[0]):
            cut = frame[:snaplen]
            frac = ts % S if nsec else (ts % S) // 1000
            fh.write(struct.pack("<IIII", ts // S, frac, len(cut), len(frame)) + cut)


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def write_pcapng(path: Path, interfaces: list[tuple[int, str, int]], frames: list[tuple[int, int, bytes]],
                 comment: str = "") -> None:
    """interfaces: (linktype, name, tsresol exponent of ten); frames: (ts_ns, interface, frame)."""
    shb_opts = (_opt(1, comment.encode()) if comment else b"") + _opt(0, b"")
    out = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + shb_opts)
    for linktype, name, res in interfaces:
        opts = _opt(2, name.encode()) + _opt(9, bytes([res])) + _opt(0, b"")
        out += _block(1, struct.pack("<HHI", linktype, 0, 262144) + opts)
    for ts, iface, frame in sorted(frames, key=lambda f: f[0]):
        units = ts // 10 ** (9 - interfaces[iface][2])
        out += _block(6, struct.pack("<IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(frame), len(frame)) + frame)
    path.write_bytes(out)


# --- scenarios ----------------------------------------------------------------------------------------------
CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


def conn(cport: int = 40000, sport: int = 80, cisn: int = 1000, sisn: int = 5000, client: str = CLIENT,
         server: str = SERVER, **kw: Any) -> Conn:
    return Conn(Side(client, cport, cisn), Side(server, sport, sisn), **kw)


def ep(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def expect(c: Conn, **fields: Any) -> dict[str, Any]:
    return {"orig": ep(c.c.addr, c.c.port), "resp": ep(c.s.addr, c.s.port), **fields}


FOUR_WAY = {"conn_state": "SF", "close": "four_way", "active_closer": "orig", "reset_by": None,
            "orig_states": ["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"],
            "resp_states": ["CLOSED", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]}


def normal_close() -> tuple[Conn, dict[str, Any]]:
    c = conn().handshake(T0).exchange(T0 + 20 * MS)
    t = T0 + 100 * MS
    c.seg(t, "c", FIN | ACK).seg(t + 5 * MS, "s", ACK).seg(t + 50 * MS, "s", FIN | ACK).seg(t + 55 * MS, "c", ACK)
    return c, expect(c, history="ShADadFf", orig_pkts=6, resp_pkts=5, orig_bytes=100, resp_bytes=1000, **FOUR_WAY)


def three_packet_close() -> tuple[Conn, dict[str, Any]]:
    c = conn(cport=40001).handshake(T0).exchange(T0 + 20 * MS)
    t = T0 + 100 * MS
    c.seg(t, "c", FIN | ACK).seg(t + 5 * MS, "s", FIN | ACK).seg(t + 10 * MS, "c", ACK)
    return c, expect(c, conn_state="SF", history="ShADadFf", orig_pkts=6, resp_pkts=4, close="three_packet",
                     active_closer="orig", reset_by=None,
                     orig_states=["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "TIME_WAIT"],
                     resp_states=["CLOSED", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"])


def simultaneous_open() -> tuple[Conn, dict[str, Any]]:
    # RFC 9293 figure 8: both sides send SYN, each answers the other's with SYN+ACK.
    c = conn(cport=5000, sport=5001, cisn=100, sisn=300)
    c.seg(T0, "c", SYN, opts=tcp_options()).seg(T0 + 1 * MS, "s", SYN, opts=tcp_options())
    c.seg(T0 + 10 * MS, "c", SYN | ACK, seq=100, opts=tcp_options())
    c.seg(T0 + 11 * MS, "s", SYN | ACK, seq=300, opts=tcp_options())
    c.seg(T0 + 30 * MS, "c", PSH | ACK, b"hello").seg(T0 + 40 * MS, "s", ACK)
    return c, expect(c, conn_state="S1",
                     orig_states=["CLOSED", "SYN_SENT", "SYN_RCVD", "ESTABLISHED"],
                     resp_states=["CLOSED", "SYN_SENT", "SYN_RCVD", "ESTABLISHED"], close="open")


def simultaneous_close() -> tuple[Conn, dict[str, Any]]:
    c = conn(cport=40002).handshake(T0).exchange(T0 + 20 * MS)
    t = T0 + 100 * MS
    fc, fs = c.c.seq, c.s.seq
    c.seg(t, "c", FIN | ACK, ack=fs).seg(t + 1 * MS, "s", FIN | ACK, ack=fc)
    c.seg(t + 10 * MS, "c", ACK).seg(t + 11 * MS, "s", ACK)
    both = ["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]
    return c, expect(c, conn_state="SF", history="ShADadFf", close="simultaneous", active_closer="both",
                     reset_by=None, orig_states=both,
                     resp_states=["CLOSED", "SYN_RCVD", "ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"])


def rst_each_state() -> tuple[list[Conn], list[dict[str, Any]]]:
    """One connection per state in which an RST arrives, on ports 41001.."""
    conns, exp = [], []
    hs = ["CLOSED", "SYN_SENT", "ESTABLISHED"]
    hs_r = ["CLOSED", "SYN_RCVD", "ESTABLISHED"]
    t = T0
    # Refused: SYN answered by RST+ACK (client in SYN_SENT).
    c = conn(cport=41001).seg(t, "c", SYN, opts=tcp_options())
    c.seg(t + 1 * MS, "s", RST | ACK, seq=0, ack=c.c.seq)
    conns.append(c)
    exp.append(expect(c, conn_state="REJ", history="Sr", close="reset", reset_by="resp", reset_state="CLOSED",
                      orig_states=["CLOSED", "SYN_SENT", "CLOSED"], resp_states=["CLOSED"]))
    # Client resets in SYN_SENT after the SYN+ACK arrives late is rare; the server side: RST in SYN_RCVD.
    t += S
    c = conn(cport=41002).seg(t, "c", SYN, opts=tcp_options()).seg(t + 1 * MS, "s", SYN | ACK, opts=tcp_options())
    c.seg(t + 2 * MS, "c", RST, ack=None)
    conns.append(c)
    exp.append(expect(c, conn_state="RSTO", history="ShR", close="reset", reset_by="orig", reset_state="ESTABLISHED",
                      orig_states=["CLOSED", "SYN_SENT", "ESTABLISHED", "CLOSED"],
                      resp_states=["CLOSED", "SYN_RCVD", "CLOSED"]))
    # ESTABLISHED: the server resets.
    t += S
    c = conn(cport=41003).handshake(t).exchange(t + 20 * MS)
    c.seg(t + 100 * MS, "s", RST | ACK)
    conns.append(c)
    exp.append(expect(c, conn_state="RSTR", history="ShADadR".replace("R", "r"), close="reset", reset_by="resp",
                      reset_state="ESTABLISHED", orig_states=hs + ["CLOSED"], resp_states=hs_r + ["CLOSED"]))
    # FIN_WAIT_2 (client) / CLOSE_WAIT (server): the server resets instead of closing.
    t += S
    c = conn(cport=41004).handshake(t).exchange(t + 20 * MS)
    c.seg(t + 100 * MS, "c", FIN | ACK).seg(t + 105 * MS, "s", ACK).seg(t + 200 * MS, "s", RST | ACK)
    conns.append(c)
    exp.append(expect(c, conn_state="RSTR", history="ShADadFr", close="reset", reset_by="resp",
                      reset_state="CLOSE_WAIT", active_closer="orig",
                      orig_states=hs + ["FIN_WAIT_1", "FIN_WAIT_2", "CLOSED"],
                      resp_states=hs_r + ["CLOSE_WAIT", "CLOSED"]))
    # FIN_WAIT_1: the client's FIN is answered by an RST at once.
    t += S
    c = conn(cport=41005).handshake(t).exchange(t + 20 * MS)
    c.seg(t + 100 * MS, "c", FIN | ACK).seg(t + 101 * MS, "s", RST | ACK)
    conns.append(c)
    exp.append(expect(c, conn_state="RSTR", history="ShADadFr", close="reset", reset_by="resp",
                      reset_state="CLOSE_WAIT", active_closer="orig",
                      orig_states=hs + ["FIN_WAIT_1", "CLOSED"], resp_states=hs_r + ["CLOSE_WAIT", "CLOSED"]))
    # LAST_ACK: the server closed too, the client resets instead of acknowledging.
    t += S
    c = conn(cport=41006).handshake(t).exchange(t + 20 * MS)
    c.seg(t + 100 * MS, "c", FIN | ACK).seg(t + 105 * MS, "s", ACK).seg(t + 110 * MS, "s", FIN | ACK)
    c.seg(t + 111 * MS, "c", RST, ack=None)
    conns.append(c)
    # Zeek: both sides had closed, so the RST does not make it a reset (SF); tcpa keeps the four-way close.
    exp.append(expect(c, conn_state="SF", history="ShADadFfR", close="four_way", reset_by="orig",
                      reset_state="TIME_WAIT", active_closer="orig",
                      orig_states=hs + ["FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT", "CLOSED"],
                      resp_states=hs_r + ["CLOSE_WAIT", "LAST_ACK", "CLOSED"]))
    return conns, exp


def midstream() -> tuple[Conn, dict[str, Any]]:
    c = conn(cport=42000, cisn=77_000, sisn=99_000)
    t = T0
    c.seg(t, "c", PSH | ACK, b"x" * 200).seg(t + 5 * MS, "s", PSH | ACK, b"y" * 800).seg(t + 10 * MS, "c", ACK)
    c.seg(t + 50 * MS, "c", FIN | ACK).seg(t + 55 * MS, "s", FIN | ACK).seg(t + 60 * MS, "c", ACK)
    return c, expect(c, conn_state="SF", history="DdAFf", close="three_packet", active_closer="orig",
                     orig_states=["UNKNOWN", "ESTABLISHED", "FIN_WAIT_1", "TIME_WAIT"],
                     resp_states=["UNKNOWN", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"])


def synack_first() -> tuple[Conn, dict[str, Any]]:
    c = conn(cport=43000)
    c.c.seq += 1  # the SYN (seq 1000) was not captured
    c.seg(T0, "s", SYN | ACK, opts=tcp_options()).seg(T0 + 5 * MS, "c", ACK).exchange(T0 + 10 * MS)
    c.seg(T0 + 100 * MS, "c", FIN | ACK).seg(T0 + 101 * MS, "s", FIN | ACK).seg(T0 + 102 * MS, "c", ACK)
    return c, expect(c, conn_state="SF", history="^hADadFf", close="three_packet", active_closer="orig",
                     orig_states=["UNKNOWN", "ESTABLISHED", "FIN_WAIT_1", "TIME_WAIT"],
                     resp_states=["UNKNOWN", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"])


def port_reuse() -> tuple[list[Conn], list[dict[str, Any]]]:
    a = conn(cport=44000).handshake(T0).exchange(T0 + 20 * MS)
    t = T0 + 100 * MS
    a.seg(t, "c", FIN | ACK).seg(t + 5 * MS, "s", FIN | ACK).seg(t + 10 * MS, "c", ACK)
    # The same 4-tuple two seconds later, with a new, higher ISN (the client is still in TIME_WAIT:
    # Linux accepts this as a new connection when the ISN and timestamps move forward).
    b = conn(cport=44000, cisn=900_000, sisn=700_000).handshake(T0 + 2 * S).exchange(T0 + 2 * S + 20 * MS)
    t = T0 + 2 * S + 100 * MS
    b.seg(t, "c", FIN | ACK).seg(t + 5 * MS, "s", FIN | ACK).seg(t + 10 * MS, "c", ACK)
    e = {"conn_state": "SF", "history": "ShADadFf", "close": "three_packet", "active_closer": "orig",
         "orig_states": ["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "TIME_WAIT"],
         "resp_states": ["CLOSED", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]}
    return [a, b], [expect(a, **e), expect(b, **e)]


def seq_wraparound() -> tuple[Conn, dict[str, Any]]:
    # ISNs just below 2**32: the data of both sides crosses the wrap.
    c = conn(cport=45000, cisn=2**32 - 300, sisn=2**32 - 50).handshake(T0)
    for i in range(4):
        c.exchange(T0 + (20 + 20 * i) * MS, request=200, response=1000)
    t = T0 + 200 * MS
    c.seg(t, "c", FIN | ACK).seg(t + 5 * MS, "s", ACK).seg(t + 50 * MS, "s", FIN | ACK).seg(t + 55 * MS, "c", ACK)
    return c, expect(c, history="ShADadFf", orig_bytes=800, resp_bytes=4000, **FOUR_WAY)


def ipv6() -> tuple[Conn, dict[str, Any]]:
    c = conn(client="2001:db8::1", server="2001:db8::2", cport=46000, sport=443).handshake(T0)
    c.exchange(T0 + 20 * MS)
    t = T0 + 100 * MS
    c.seg(t, "c", FIN | ACK).seg(t + 5 * MS, "s", ACK).seg(t + 50 * MS, "s", FIN | ACK).seg(t + 55 * MS, "c", ACK)
    return c, expect(c, history="ShADadFf", **FOUR_WAY)


# --- detector scenarios: each makes one diagnosis fire (or is its near miss) ------------------------------------
def syn_retransmit_3s() -> list[Conn]:
    """An old stack: the SYN is lost twice, retried after 3 s and 6 s, then answered."""
    c = conn(cport=47000)
    c.seg(T0, "c", SYN, opts=tcp_options(), advance=False).seg(T0 + 3 * S, "c", SYN, opts=tcp_options(), advance=False)
    c.seg(T0 + 9 * S, "c", SYN, opts=tcp_options())
    c.seg(T0 + 9 * S + 5 * MS, "s", SYN | ACK, opts=tcp_options()).seg(T0 + 9 * S + 10 * MS, "c", ACK)
    return [c]


def rst_no_half_close() -> list[Conn]:
    """Near miss for rst_after_half_close: an RST in the middle of an open connection, no FIN before it."""
    c = conn(cport=47100).handshake(T0).exchange(T0 + 20 * MS)
    c.seg(T0 + 100 * MS, "c", RST | ACK)
    return [c]


def nat_timestamps() -> list[Conn]:
    """Two hosts behind one NAT address (1000 Hz and 250 Hz clocks) to one server with tcp_tw_recycle:
    SYNs whose TSval is below the last one seen from the address go unanswered."""
    conns = []
    clocks = [Side("192.0.2.10", 0, 0, ts=900_000_000, ts_hz=1000), Side("192.0.2.10", 0, 0, ts=5_000, ts_hz=250)]
    for i in range(8):
        host = clocks[i % 2]
        t = T0 + i * 2 * S
        c = Conn(Side("192.0.2.10", 50000 + i, 10_000 * (i + 1), ts=host.ts, ts_hz=host.ts_hz),
                 Side(SERVER, 80, 7_000 * (i + 1), ts=123_456), ts_opts=True)
        if i % 2 == 0:  # the fast clock's SYNs are answered; the slow clock's are dropped by the server
            c.handshake(t)
            c.exchange(t + 20 * MS)
            c.seg(t + 1 * S, "c", FIN | ACK).seg(t + 1 * S + 5 * MS, "s", FIN | ACK).seg(t + 1 * S + 10 * MS, "c", ACK)
        else:
            ts = (c.c.tsval(t), 0)
            c.seg(t, "c", SYN, opts=tcp_options(ts=ts), advance=False)
            c.seg(t + 1 * S, "c", SYN, opts=tcp_options(ts=(c.c.tsval(t + S), 0)))
        conns.append(c)
    return conns


def monotonic_timestamps() -> list[Conn]:
    """Near miss for timestamp_regression: one host, one clock, TSval rising across its connections."""
    conns = []
    for i in range(4):
        t = T0 + i * S
        c = Conn(Side("192.0.2.20", 51000 + i, 20_000 * (i + 1), ts=1_000_000, ts_hz=1000),
                 Side(SERVER, 80, 9_000 * (i + 1), ts=55_555), ts_opts=True)
        c.handshake(t).exchange(t + 20 * MS)
        c.seg(t + 100 * MS, "c", FIN | ACK).seg(t + 105 * MS, "s", FIN | ACK).seg(t + 110 * MS, "c", ACK)
        conns.append(c)
    return conns


def port_churn() -> list[Conn]:
    """6000 short connections in 10 s from one client to one server port: 600/s, above the ~470/s that
    28 232 ports and 60 s of TIME_WAIT allow."""
    conns = []
    for i in range(6000):
        t = T0 + i * 1_666_667
        c = conn(cport=32768 + i % 28232, sport=8080, cisn=1000 + i * 7919, sisn=5000 + i * 104729)
        c.handshake(t, rtt=200_000)
        c.seg(t + 300_000, "c", FIN | ACK).seg(t + 400_000, "s", FIN | ACK).seg(t + 500_000, "c", ACK)
        conns.append(c)
    return conns


def syn_flood() -> list[Conn]:
    """150 spoofed sources each send one SYN to port 443; the server answers every one, nobody completes."""
    conns = []
    for i in range(150):
        t = T0 + i * 2 * MS
        c = conn(client=f"198.51.{100 + i // 200}.{1 + i % 200}", cport=1024 + i * 13, sport=443, cisn=i * 99991,
                 sisn=i * 7777)
        c.seg(t, "c", SYN, opts=tcp_options()).seg(t + 1 * MS, "s", SYN | ACK, opts=tcp_options())
        conns.append(c)
    return conns


def half_open() -> list[Conn]:
    """The server vanishes mid-transfer: the client retransmits the same data with backoff, no answer."""
    c = conn(cport=47200).handshake(T0).exchange(T0 + 20 * MS)
    t = T0 + 100 * MS
    seq = c.c.seq
    c.seg(t, "c", PSH | ACK, b"z" * 500)
    for k, delay in enumerate((0.2, 0.6, 1.4, 3.0)):
        c.seg(t + int(delay * S), "c", PSH | ACK, b"z" * 500, seq=seq)
    return [c]


def recovered_loss() -> list[Conn]:
    """Near miss for half_open, and the Wireshark kinds: one segment lost, three duplicate ACKs, a fast
    retransmission, recovery; then a segment arriving out of order."""
    c = conn(cport=47300).handshake(T0)
    t = T0 + 20 * MS
    base = c.c.seq
    c.seg(t, "c", ACK, b"a" * 1000)                     # 1: lost on the way (captured before the loss)
    c.seg(t + 1 * MS, "c", ACK, b"b" * 1000)
    c.seg(t + 2 * MS, "c", ACK, b"c" * 1000)
    c.seg(t + 3 * MS, "c", ACK, b"d" * 1000)
    c.seg(t + 11 * MS, "s", ACK, ack=base)                # dup ACKs for the missing first segment
    c.seg(t + 12 * MS, "s", ACK, ack=base)
    c.seg(t + 13 * MS, "s", ACK, ack=base)
    c.seg(t + 14 * MS, "s", ACK, ack=base)
    c.seg(t + 15 * MS, "c", ACK, b"a" * 1000, seq=base)   # fast retransmission
    c.seg(t + 25 * MS, "s", ACK)
    # out of order: the next two segments swap places within a millisecond
    second = c.c.seq + 500
    c.seg(t + 40 * MS, "c", ACK, b"f" * 500, seq=second, advance=False)
    c.seg(t + 40 * MS + 300_000, "c", ACK, b"e" * 500, advance=False)
    c.c.seq += 1000
    c.seg(t + 50 * MS, "s", ACK)
    c.seg(t + 100 * MS, "c", FIN | ACK).seg(t + 105 * MS, "s", FIN | ACK).seg(t + 110 * MS, "c", ACK)
    return [c]


def capture_gap() -> list[Conn]:
    """A segment missing from the capture (never retransmitted, yet acknowledged), then a needless resend of
    data already acknowledged (spurious), and a pure window update."""
    c = conn(cport=47400).handshake(T0)
    t = T0 + 20 * MS
    c.seg(t, "c", ACK, b"a" * 1000)
    c.c.seq += 1000                                      # this segment was not captured
    c.seg(t + 1 * MS, "c", ACK, b"c" * 1000)
    c.seg(t + 10 * MS, "s", ACK)                          # acknowledges all three
    c.seg(t + 300 * MS, "c", ACK, b"c" * 1000, seq=c.c.seq - 1000)  # spurious: already acknowledged
    c.seg(t + 310 * MS, "s", ACK, win=65000)              # window update
    c.seg(t + 400 * MS, "c", FIN | ACK).seg(t + 405 * MS, "s", FIN | ACK).seg(t + 410 * MS, "c", ACK)
    return [c]


def mss_blackhole() -> list[Conn]:
    """Small requests and ACKs pass; the first full-size (1460-byte) response segment is resent again and
    again: a path MTU below 1500 with ICMP blocked."""
    c = conn(cport=47500).handshake(T0)
    t = T0 + 20 * MS
    c.seg(t, "c", PSH | ACK, b"GET / HTTP/1.1\r\n\r\n").seg(t + 5 * MS, "s", ACK)
    c.seg(t + 6 * MS, "s", PSH | ACK, b"h" * 200).seg(t + 16 * MS, "c", ACK)
    seq = c.s.seq
    c.seg(t + 20 * MS, "s", ACK, b"x" * 1460)
    for delay in (0.25, 0.75, 1.75, 3.75):
        c.seg(t + 20 * MS + int(delay * S), "s", ACK, b"x" * 1460, seq=seq)
    c.seg(t + 4 * S, "c", PSH | ACK, b"ping")             # the client is alive and still talking
    c.seg(t + 4 * S + 5 * MS, "s", ACK, seq=seq + 1460, advance=False)
    return [c]


def zero_window_probes() -> list[Conn]:
    """The receiver's window closes; the sender probes with one byte (the classic form) and gets ACKs that
    keep the window at 0, until the receiver reads and opens it."""
    c = conn(cport=47600).handshake(T0)
    t = T0 + 20 * MS
    c.seg(t, "c", ACK, b"d" * 1000).seg(t + 5 * MS, "s", ACK, win=0)
    for k in range(3):
        probe_t = t + (k + 1) * 500 * MS
        c.seg(probe_t, "c", ACK, b"p", advance=False)
        c.seg(probe_t + 5 * MS, "s", ACK, win=0)
    c.seg(t + 2 * S, "s", ACK, win=64240)                 # window opens: a window update
    c.seg(t + 2 * S + 5 * MS, "c", ACK, b"d" * 1000).seg(t + 2 * S + 10 * MS, "s", ACK)
    return [c]


def fin_wait_2() -> list[Conn]:
    """The server acknowledges the client's FIN and never closes; 20 s later other traffic still flows."""
    a = conn(cport=47700).handshake(T0).exchange(T0 + 20 * MS)
    a.seg(T0 + 100 * MS, "c", FIN | ACK).seg(T0 + 105 * MS, "s", ACK)
    b = conn(cport=47701).handshake(T0 + 20 * S)
    return [a, b]


def last_ack() -> list[Conn]:
    """The client closes and vanishes: the server's FIN is never acknowledged and is retransmitted."""
    c = conn(cport=47800).handshake(T0).exchange(T0 + 20 * MS)
    c.seg(T0 + 100 * MS, "c", FIN | ACK).seg(T0 + 105 * MS, "s", ACK)
    fin_seq = c.s.seq
    c.seg(T0 + 150 * MS, "s", FIN | ACK)
    for delay in (0.4, 1.2, 2.8, 6.0):
        c.seg(T0 + 150 * MS + int(delay * S), "s", FIN | ACK, seq=fin_seq, advance=False)
    return [c]


DETECTOR_SCENARIOS: list[tuple[str, str, Callable[[], list[Conn]]]] = [
    ("syn_retransmit_3s", "a SYN lost twice by an old stack: retries after 3 s and 6 s, then answered", syn_retransmit_3s),
    ("rst_no_half_close", "an RST in the middle of an open connection, with no FIN before it", rst_no_half_close),
    ("nat_timestamps", ("two hosts behind one NAT address, 1000 Hz and 250 Hz timestamp clocks; the server drops "
                        "the SYNs whose TSval went backwards (tcp_tw_recycle)"), nat_timestamps),
    ("monotonic_timestamps", "one client, one timestamp clock, TSval rising across connections", monotonic_timestamps),
    ("port_churn", "6000 short connections in 10 s from one client to one server port", port_churn),
    ("syn_flood", "150 sources send one SYN each to port 443; none completes the handshake", syn_flood),
    ("half_open", "the server vanishes mid-transfer; the client retransmits with backoff", half_open),
    ("recovered_loss", "one lost segment, duplicate ACKs, fast retransmission, recovery, then reordering", recovered_loss),
    ("capture_gap", "a segment missing from the capture, a spurious retransmission, a window update", capture_gap),
    ("mss_blackhole", "full-size segments resent again and again while small ones pass", mss_blackhole),
    ("zero_window_probes", "a closed receive window probed with one-byte probes until it opens", zero_window_probes),
    ("fin_wait_2", "the server never closes after acknowledging the client's FIN", fin_wait_2),
    ("last_ack", "the client vanishes after its FIN; the server's FIN is retransmitted unanswered", last_ack),
]


def linux_lost_syn() -> list[Conn]:
    """A modern Linux client: the SYN is lost once and retried after 1 s."""
    c = conn(client="10.0.0.5", cport=48000)
    c.seg(T0, "c", SYN, opts=tcp_options(), advance=False).seg(T0 + 1 * S, "c", SYN, opts=tcp_options())
    c.seg(T0 + 1 * S + 4 * MS, "s", SYN | ACK, opts=tcp_options()).seg(T0 + 1 * S + 8 * MS, "c", ACK)
    c.exchange(T0 + 1 * S + 20 * MS)
    c.seg(T0 + 2 * S, "c", FIN | ACK).seg(T0 + 2 * S + 4 * MS, "s", FIN | ACK).seg(T0 + 2 * S + 8 * MS, "c", ACK)
    return [c]


def time_wait_pile(n: int = 150) -> list[Conn]:
    """A client making one short request per connection to an API port, closing each itself."""
    conns = []
    for i in range(n):
        t = T0 + i * 20 * MS
        c = conn(client="10.0.0.7", cport=40000 + i, sport=8080, cisn=3000 + i * 7919, sisn=9000 + i * 104729)
        c.handshake(t, rtt=1 * MS).exchange(t + 2 * MS, request=80, response=300, rtt=1 * MS)
        c.seg(t + 5 * MS, "c", FIN | ACK).seg(t + 6 * MS, "s", FIN | ACK).seg(t + 7 * MS, "c", ACK)
        conns.append(c)
    return conns


def showcase(out: Path) -> None:
    """pcaps/showcase.pcapng: the seed documents' scenarios side by side, on two interfaces, for `make run`."""
    parts: list[tuple[int, list[Conn]]] = [
        (0, linux_lost_syn()), (1 * S, syn_retransmit_3s()), (2 * S, nat_timestamps()),
        (3 * S, [three_packet_close()[0]]), (4 * S, rst_each_state()[0][3:5]), (5 * S, fin_wait_2()),
        (6 * S, time_wait_pile()), (7 * S, [normal_close()[0]]), (8 * S, half_open()),
        (9 * S, zero_window_probes()), (10 * S, [simultaneous_close()[0]]),
    ]
    frames: list[tuple[int, int, bytes]] = []
    conns: list[tuple[int, Conn]] = []
    for shift, group in parts:
        for c in group:
            iface = 1 if c.c.addr.startswith("192.0.2.") else 0  # the NAT'd clients arrive on the second interface
            frames += [(t + shift, iface, ethernet(p) if iface == 0 else p) for t, p in c.packets]
            conns.append((c.packets[0][0] + shift, c))
    write_pcapng(out / "showcase.pcapng", [(1, "eth0", 6), (101, "nat0", 9)], frames,
                 comment="tcpa showcase: lost SYNs (1 s and 3 s), clients behind NAT, three-packet close, RST after "
                         "half-close, CLOSE_WAIT, TIME_WAIT pile-up, a vanished peer, a zero window")
    conns.sort(key=lambda tc: tc[0])
    _expect(out, "showcase", "the seed scenarios side by side: lost SYNs, NAT timestamps, three-packet close, "
            "RST after half-close, CLOSE_WAIT, TIME_WAIT pile-up, half-open, zero window", [expect(c) for _, c in conns])


# --- the files --------------------------------------------------------------------------------------------
def _save(out: Path, name: str, description: str, conns: list[Conn], exps: list[dict[str, Any]],
          frames: list[tuple[int, bytes]] | None = None, linktype: int = 1, notices: list[str] | None = None,
          **kw: Any) -> None:
    if frames is None:
        frames = [(t, ethernet(p)) for c in conns for t, p in c.packets]
    write_pcap(out / f"{name}.pcap", frames, linktype, **kw)
    _expect(out, name, description, exps, notices)


def _expect(out: Path, name: str, description: str, exps: list[dict[str, Any]],
            notices: list[str] | None = None) -> None:
    doc = {"description": description, "notices": notices or [], "connections": exps}
    (out / f"{name}.expect.json").write_text(json.dumps(doc, indent=2) + "\n")


def build(out: Path) -> None:
    """Write every scenario capture and its expected verdicts into out."""
    out.mkdir(parents=True, exist_ok=True)
    simple: list[tuple[str, str, Callable[[], tuple[Conn, dict[str, Any]]]]] = [
        ("normal_close", "handshake, one request/response, four-way close by the client", normal_close),
        ("three_packet_fin", "the server piggybacks its FIN on the ACK of the client's FIN: FIN, FIN+ACK, ACK",
         three_packet_close),
        ("simultaneous_open", "both sides send a SYN at once (RFC 9293 figure 8)", simultaneous_open),
        ("simultaneous_close", "both FINs cross on the wire; both sides pass through CLOSING", simultaneous_close),
        ("midstream", "capture starts in the middle of an established connection", midstream),
        ("synack_first", "the SYN is missing: the first packet seen is the server's SYN+ACK", synack_first),
        ("seq_wraparound", "both sides' sequence numbers wrap past 2**32 during the transfer", seq_wraparound),
    ]
    for name, description, make in simple:
        c, e = make()
        _save(out, name, description, [c], [e])
    conns, exps = rst_each_state()
    _save(out, "rst_each_state", "an RST arriving in each state: SYN_SENT (refused), SYN_RCVD, ESTABLISHED, "
          "CLOSE_WAIT, FIN_WAIT_1 and LAST_ACK", conns, exps)
    conns, exps = port_reuse()
    _save(out, "port_reuse", "the same 4-tuple used twice, the second time with a new ISN 2 s later", conns, exps)

    c, e = normal_close()
    _save(out, "vlan", "a normal connection inside 802.1Q VLAN 42", [c], [e],
          frames=[(t, ethernet(p, vlan=42)) for t, p in c.packets])
    c, e = normal_close()
    _save(out, "sll", "a normal connection captured on Linux 'any' (cooked SLL)", [c], [e],
          frames=[(t, sll(p)) for t, p in c.packets], linktype=113)
    c, e = ipv6()
    _save(out, "ipv6", "a normal connection over IPv6", [c], [e])
    c, e = normal_close()
    _save(out, "nanosecond", "a normal connection in a nanosecond-resolution pcap", [c], [e], nsec=True)
    c, e = normal_close()
    _save(out, "snaplen_truncated", "snap length 68: headers complete, payloads cut", [c],
          [dict(e, truncated_segments=2)], snaplen=68)

    # Two interfaces of different link types and timestamp resolutions in one pcapng file.
    a, ea = normal_close()
    b, eb = ipv6()
    frames = [(t, 0, ethernet(p)) for t, p in a.packets] + [(t + 7 * MS, 1, p) for t, p in b.packets]
    write_pcapng(out / "two_interfaces.pcapng", [(1, "eth0", 6), (101, "tun0", 9)], frames,
                 comment="two interfaces: Ethernet (microseconds) and raw IP (nanoseconds)")
    _expect(out, "two_interfaces", "pcapng with an Ethernet interface in microseconds and a raw-IP interface "
            "in nanoseconds", [ea, eb])

    for name, description, make in DETECTOR_SCENARIOS:
        conns = make()
        _save(out, name, description, conns, [expect(c) for c in sorted(conns, key=lambda c: c.packets[0][0])])

    showcase(out)

    # A capture killed mid-write: the last record is cut in half.
    c, e = normal_close()
    write_pcap(out / "truncated_file.pcap", [(t, ethernet(p)) for t, p in c.packets], 1)
    data = (out / "truncated_file.pcap").read_bytes()
    last = 16 + len(ethernet(c.packets[-1][1]))
    (out / "truncated_file.pcap").write_bytes(data[:len(data) - last // 2])
    _expect(out, "truncated_file", "the file ends in the middle of the last record (the final ACK)",
            [dict(e, resp_states=e["resp_states"][:-1], orig_pkts=5, history="ShADadFf")], notices=["truncated_file"])

    # The same capture gzip-compressed, as captures are often shipped.
    c, e = normal_close()
    write_pcap(out / "normal_close_gz.pcap", [(t, ethernet(p)) for t, p in c.packets], 1)
    raw = (out / "normal_close_gz.pcap").read_bytes()
    (out / "normal_close_gz.pcap").unlink()
    with open(out / "normal_close_gzip.pcap.gz", "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        gz.write(raw)
    _expect(out, "normal_close_gzip", "normal_close.pcap, gzip-compressed", [e])


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else "pcaps"))
