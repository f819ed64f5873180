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


FOUR_WAY = dict(conn_state="SF", close="four_way", active_closer="orig", reset_by=None,
                orig_states=["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"],
                resp_states=["CLOSED", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"])


def normal_close() -> tuple[Conn, dict[str, Any]]:
    c = conn().handshake(T0).exchange(T0 + 20 * MS)
    t = T0 + 100 * MS
    c.seg(t, "c", FIN | ACK).seg(t + 5 * MS, "s", ACK).seg(t + 50 * MS, "s", FIN | ACK).seg(t + 55 * MS, "c", ACK)
    return c, expect(c, history="ShADadFf", orig_pkts=6, resp_pkts=5, orig_bytes=100, resp_bytes=1000, **FOUR_WAY)


def three_packet_close() -> tuple[Conn, dict[str, Any]]:
    c = conn().handshake(T0).exchange(T0 + 20 * MS)
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
    c = conn().handshake(T0).exchange(T0 + 20 * MS)
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
    e = dict(conn_state="SF", history="ShADadFf", close="three_packet", active_closer="orig",
             orig_states=["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "TIME_WAIT"],
             resp_states=["CLOSED", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"])
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
