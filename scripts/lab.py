"""Capture real Linux TCP in two network namespaces: one pcap per scenario, plus its expected verdicts.

    sudo python scripts/lab.py pcaps [SCENARIO ...]

Two namespaces, tcpa-c (client, 10.77.0.1 on vethC) and tcpa-s (server, 10.77.0.2 on vethS), are joined by a
veth pair with checksum offload off (so every captured checksum is valid); tcpdump -U runs in tcpa-s on
vethS. The sockets are made by this one process: it enters a namespace with setns(2) only to create a
socket (a socket stays in the namespace it was created in) and drives both ends from threads, or from forked
processes pinned to different CPUs where timing matters (simultaneous close). Where a scenario needs a packet
lost, an nftables rule in tcpa-s drops it after tcpdump has seen it (the tap sits before netfilter), so the
capture shows it as it crossed the wire.

Each scenario gets fresh namespaces (no TIME_WAIT or sysctl left over), writes pcaps/lab_NAME.pcap, then
checks from the packets (dpkt, not tcpa) that the kernel did what the scenario is about -- retrying the
scenario a few times where that is a race -- and writes pcaps/lab_NAME.expect.json: the observed 4-tuples
and packet counts plus the hand-written verdict for that scenario (docs/design.md, Zeek's conn_state rules).
Ports, ISNs, timestamps and timings change from run to run; the verdicts must not.
Needs root, ip, nft, tcpdump and ethtool; the whole lab takes about a minute.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, final

import dpkt

NS_C, NS_S = "tcpa-c", "tcpa-s"
IF_C, IF_S = "vethC", "vethS"
C_IP, S_IP = "10.77.0.1", "10.77.0.2"
FIN, SYN, RST, PSH, ACK = dpkt.tcp.TH_FIN, dpkt.tcp.TH_SYN, dpkt.tcp.TH_RST, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_ACK
CLONE_NEWNET = 0x40000000
TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_DEFER_ACCEPT = 4, 5, 6, 9

_libc = ctypes.CDLL(None, use_errno=True)
_HOME_NS = os.open("/proc/self/ns/net", os.O_RDONLY)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def netns(name: str) -> Iterator[None]:
    """Run the calling thread in namespace `name` for the block (sockets made there stay there)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(fd)
        yield
    finally:
        _setns(_HOME_NS)
        os.close(fd)


def run(*args: str, check: bool = True) -> str:
    proc = subprocess.run(args, check=False, capture_output=True, text=True)
    if check and proc.returncode:
        raise RuntimeError(f"{' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def in_ns(ns: str, *args: str, check: bool = True) -> str:
    return run("ip", "netns", "exec", ns, *args, check=check)


def nft(ns: str, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True, check=True,
                   capture_output=True)


def nft_counter(ns: str, table: str, chain: str) -> int:
    """Packets counted by the first `counter` in one chain."""
    doc = json.loads(in_ns(ns, "nft", "-j", "list", "chain", "inet", table, chain))
    for item in doc["nftables"]:
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                return int(expr["counter"]["packets"])
    return 0


def teardown() -> None:
    for ns in (NS_C, NS_S):
        run("ip", "netns", "del", ns, check=False)


@final
class Lab:
    """Fresh namespaces and veth for one scenario; every socket made through it is closed on exit."""

    def __init__(self, sysctl_s: dict[str, str] | None = None, sysctl_c: dict[str, str] | None = None):
        self.sysctl = {NS_S: sysctl_s or {}, NS_C: sysctl_c or {}}
        self.socks: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.stop = threading.Event()

    def __enter__(self) -> Lab:
        teardown()
        try:
            run("ip", "netns", "add", NS_C)
            run("ip", "netns", "add", NS_S)
            run("ip", "link", "add", IF_C, "netns", NS_C, "type", "veth", "peer", "name", IF_S, "netns", NS_S)
            for ns, ifname, addr in ((NS_C, IF_C, C_IP), (NS_S, IF_S, S_IP)):
                for key in ("all", "default"):
                    in_ns(ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
                for key, value in self.sysctl[ns].items():
                    in_ns(ns, "sysctl", "-qw", f"{key}={value}")
                in_ns(ns, "ethtool", "-K", ifname, "tx", "off", "tso", "off", "gso", "off", "gro", "off")
                in_ns(ns, "ip", "addr", "add", f"{addr}/24", "dev", ifname)
                in_ns(ns, "ip", "link", "set", "lo", "up")
                in_ns(ns, "ip", "link", "set", ifname, "up")
            for _ in range(100):  # wait for both ends' carrier
                if all("LOWER_UP" in in_ns(ns, "ip", "link", "show", i) for ns, i in ((NS_C, IF_C), (NS_S, IF_S))):
                    break
                time.sleep(0.02)
            in_ns(NS_C, "ping", "-c1", "-W1", S_IP, check=False)  # resolve ARP before the capture starts
        except BaseException:
            teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for s in self.socks:  # the capture has stopped: shutdown() wakes threads blocked in accept()/recv()
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self.threads:
            t.join(timeout=2)
        teardown()

    def new_socket(self, ns: str) -> socket.socket:
        with netns(ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socks.append(s)
        return s

    def listen(self, port: int, backlog: int = 16, rcvbuf: int | None = None) -> socket.socket:
        s = self.new_socket(NS_S)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((S_IP, port))
        s.listen(backlog)
        return s

    def accept(self, ls: socket.socket) -> socket.socket:
        c, _ = ls.accept()
        self.socks.append(c)
        return c

    def client(self, opts: list[tuple[int, int, int]] | None = None) -> socket.socket:
        s = self.new_socket(NS_C)
        for level, name, value in opts or []:
            s.setsockopt(level, name, value)
        return s

    def spawn(self, fn: Callable[[], None]) -> threading.Thread:
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        self.threads.append(t)
        return t


@final
class Capture:
    """tcpdump -U on vethS in the server namespace, writing `path`."""

    def __init__(self, path: Path):
        self.path = path
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Capture:
        self.path.unlink(missing_ok=True)
        cmd = ["ip", "netns", "exec", NS_S, "tcpdump", "-U", "--immediate-mode", "-n", "-Z", "root",
               "-i", IF_S, "-w", str(self.path), "tcp"]
        self.proc = subprocess.Popen(cmd,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"tcpdump did not start: {line.strip()}")
        time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        time.sleep(0.1)
        self.proc.send_signal(signal.SIGINT)
        try:
            err = self.proc.stderr.read()
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        if not re.search(r"^0 packets dropped by kernel", err, re.MULTILINE) and exc[0] is None:
            raise RuntimeError(f"tcpdump dropped packets: {err.strip()}")


# ---------------------------------------------------------------------------------------------------------
# Reading the capture back (dpkt): connections in order of first packet, their segments, sanity checks.

@dataclass
class Seg:
    n: int  # frame number, from 1
    ts: float
    fwd: bool  # from the originator
    flags: int
    seq: int
    ack: int
    win: int
    length: int
    csum_ok: bool

    def has(self, f: int) -> bool:
        return bool(self.flags & f)


@dataclass
class Conn:
    orig: tuple[str, int]
    resp: tuple[str, int]
    segs: list[Seg] = field(default_factory=list)

    def side(self, fwd: bool) -> list[Seg]:
        return [s for s in self.segs if s.fwd == fwd]

    def first(self, fwd: bool, f: int) -> Seg | None:
        return next((s for s in self.segs if s.fwd == fwd and s.has(f)), None)

    @property
    def orig_s(self) -> str:
        return f"{self.orig[0]}:{self.orig[1]}"

    @property
    def resp_s(self) -> str:
        return f"{self.resp[0]}:{self.resp[1]}"

    def isn(self, fwd: bool) -> int:
        syn = self.first(fwd, SYN)
        assert syn is not None
        return syn.seq

    def observed(self) -> dict[str, Any]:
        """What the packets say regardless of tcpa: endpoints, packet counts, SYN count, checksums."""
        return {"orig": self.orig_s, "resp": self.resp_s, "orig_pkts": len(self.side(True)),
                "resp_pkts": len(self.side(False)),
                "orig_syns": sum(1 for s in self.side(True) if s.has(SYN) and not s.has(ACK)),
                "bad_checksum_segments": sum(1 for s in self.segs if not s.csum_ok)}


def _csum_ok(raw_ip: bytes) -> bool:
    """The TCP checksum of one raw IPv4 packet is right."""
    hl, total = (raw_ip[0] & 15) * 4, struct.unpack("!H", raw_ip[2:4])[0]
    seg = raw_ip[hl:total]
    buf = raw_ip[12:20] + struct.pack("!BBH", 0, 6, len(seg)) + seg + (b"\0" if len(seg) % 2 else b"")
    acc = sum(struct.unpack(f"!{len(buf) // 2}H", buf))
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return bool(acc == 0xFFFF)


def read_conns(path: Path) -> list[Conn]:
    conns: dict[tuple[Any, ...], Conn] = {}
    with open(path, "rb") as fh:
        for n, (ts, buf) in enumerate(dpkt.pcap.Reader(fh), 1):
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            tcp = ip.data
            a = (socket.inet_ntoa(ip.src), tcp.sport)
            b = (socket.inet_ntoa(ip.dst), tcp.dport)
            key = (min(a, b), max(a, b))
            if key not in conns:
                first_is_orig = not (tcp.flags & SYN and tcp.flags & ACK)
                conns[key] = Conn(a, b) if first_is_orig else Conn(b, a)
            c = conns[key]
            c.segs.append(Seg(n, ts, a == c.orig, tcp.flags, tcp.seq, tcp.ack, tcp.win, len(tcp.data),
                              _csum_ok(buf[14:])))
    return list(conns.values())


def acks_fin(seg: Seg, fin: Seg) -> bool:
    """seg's ACK covers fin's FIN."""
    return bool(seg.has(ACK)) and ((seg.ack - (fin.seq + fin.length + 1)) & 0xFFFFFFFF) < 2**31


class Retry(Exception):
    """The kernel did not do what the scenario is about this time (a race): run it again."""


def need(cond: bool, what: str) -> None:
    if not cond:
        raise Retry(what)


def close_kind(c: Conn) -> str:
    """Classify a FIN exchange from the packets: four_way, three_packet or simultaneous (orig closes first)."""
    fo, fr = c.first(True, FIN), c.first(False, FIN)
    need(fo is not None and fr is not None, "both sides sent a FIN")
    assert fo is not None and fr is not None
    if not acks_fin(fr, fo) and not acks_fin(fo, fr):
        return "simultaneous"
    need(fo.n < fr.n and acks_fin(fr, fo), "the client closed first")
    between = [s for s in c.side(False) if fo.n < s.n < fr.n]
    return "four_way" if any(acks_fin(s, fo) for s in between) else "three_packet"


# ---------------------------------------------------------------------------------------------------------
# Verdicts shared by several scenarios.

OPENED_O = ["CLOSED", "SYN_SENT", "ESTABLISHED"]
OPENED_R = ["CLOSED", "SYN_RCVD", "ESTABLISHED"]
FOUR_WAY = {"conn_state": "SF", "close": "four_way", "active_closer": "orig", "reset_by": None,
            "orig_states": OPENED_O + ["FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"],
            "resp_states": OPENED_R + ["CLOSE_WAIT", "LAST_ACK", "CLOSED"]}
THREE_PACKET = {"conn_state": "SF", "close": "three_packet", "active_closer": "orig", "reset_by": None,
                "orig_states": OPENED_O + ["FIN_WAIT_1", "TIME_WAIT"],
                "resp_states": OPENED_R + ["CLOSE_WAIT", "LAST_ACK", "CLOSED"]}
OPEN = {"conn_state": "S1", "close": "open", "active_closer": None, "reset_by": None,
        "orig_states": OPENED_O, "resp_states": OPENED_R}

REQUEST, RESPONSE = b"GET / HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 981


def recv_exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def exchange(lab: Lab, port: int, server_after_fin: Callable[[socket.socket], None],
             client_opts: list[tuple[int, int, int]] | None = None) -> socket.socket:
    """Connect, one request and its response; the server thread waits for the client's FIN (recv()==0) then
    calls server_after_fin. Returns the client socket, connected and with the response read."""
    ls = lab.listen(port)

    def server() -> None:
        c = lab.accept(ls)
        recv_exactly(c, len(REQUEST))
        c.sendall(RESPONSE)
        while c.recv(4096):
            pass
        server_after_fin(c)

    lab.spawn(server)
    cl = lab.client(client_opts)
    cl.connect((S_IP, port))
    cl.sendall(REQUEST)
    assert recv_exactly(cl, len(RESPONSE)) == RESPONSE
    time.sleep(0.05)
    return cl


# ---------------------------------------------------------------------------------------------------------
# Scenarios. Each runs inside Lab + Capture; `check` reads the capture and returns the expectations.

@dataclass
class Scenario:
    name: str
    description: str
    drive: Callable[[Lab], None]
    check: Callable[[list[Conn]], list[dict[str, Any]]]
    sysctl_s: dict[str, str] = field(default_factory=dict)
    tries: int = 3


def one(conns: list[Conn]) -> Conn:
    need(len(conns) == 1, f"one connection, got {len(conns)}")
    return conns[0]


def entry(c: Conn, verdict: dict[str, Any], *, counts: bool = True) -> dict[str, Any]:
    obs = c.observed()
    if not counts:
        obs = {k: obs[k] for k in ("orig", "resp", "orig_syns", "bad_checksum_segments")}
    return {**obs, **verdict}


# 1. normal_close
def drive_normal_close(lab: Lab) -> None:
    done = threading.Event()

    def after_fin(c: socket.socket) -> None:
        time.sleep(0.5)  # past the delayed ACK (<= 200 ms): the client's FIN is ACKed on its own
        c.close()
        done.set()

    cl = exchange(lab, 5001, after_fin)
    cl.close()
    done.wait(5)
    time.sleep(0.2)


def check_normal_close(conns: list[Conn]) -> list[dict[str, Any]]:
    c = one(conns)
    need(close_kind(c) == "four_way", "four-way close")
    need(c.first(True, RST) is None and c.first(False, RST) is None, "no RST")
    return [entry(c, FOUR_WAY)]


# 2. three_packet_close
def drive_three_packet_close(lab: Lab) -> None:
    done = threading.Event()

    def after_fin(c: socket.socket) -> None:
        c.close()  # within the delayed-ACK time: the ACK of the client's FIN rides on the server's FIN
        done.set()

    cl = exchange(lab, 5002, after_fin)
    cl.close()
    done.wait(5)
    time.sleep(0.2)


def check_three_packet_close(conns: list[Conn]) -> list[dict[str, Any]]:
    c = one(conns)
    need(close_kind(c) == "three_packet", "three-packet close")
    fo = c.first(True, FIN)
    assert fo is not None
    need(len([s for s in c.segs if s.n >= fo.n]) == 3, "exactly 3 packets from the first FIN on")
    return [entry(c, THREE_PACKET)]


# 3, 4. lost SYNs
def drop_syns(lab: Lab, port: int, count: int) -> None:
    """Drop the first `count` SYNs to `port` in the server namespace (after tcpdump saw them), then let the
    rest through: a counter is polled and the rule deleted once it reached `count`."""
    nft(NS_S, f"""table inet tcpa {{
  chain in {{ type filter hook input priority 0; policy accept;
    tcp dport {port} tcp flags & (syn | ack) == syn counter drop
  }}
}}""")

    def watch() -> None:
        while not lab.stop.is_set():
            if nft_counter(NS_S, "tcpa", "in") >= count:
                in_ns(NS_S, "nft", "flush", "chain", "inet", "tcpa", "in")
                return
            time.sleep(0.02)

    lab.spawn(watch)


def syn_timeouts(n: int) -> list[float]:
    """The first n SYN retransmission timeouts: 1 s doubling, except that Linux 6.16 and later keep the
    first net.ipv4.tcp_syn_linear_timeouts (default 4) at 1 s."""
    knob = Path("/proc/sys/net/ipv4/tcp_syn_linear_timeouts")
    linear = int(knob.read_text()) if knob.exists() else 0
    return [1.0 if i < linear else 2.0 ** (i - linear + (1 if linear else 0)) for i in range(n)]


def drive_lost_syn(count: int, port: int) -> Callable[[Lab], None]:
    def drive(lab: Lab) -> None:
        drop_syns(lab, port, count)
        done = threading.Event()

        def after_fin(c: socket.socket) -> None:
            time.sleep(0.5)
            c.close()
            done.set()

        cl = exchange(lab, port, after_fin)  # connect() blocks through the SYN retransmissions
        cl.close()
        done.wait(5)
        time.sleep(0.2)
    return drive


def check_lost_syn(count: int) -> Callable[[list[Conn]], list[dict[str, Any]]]:
    def check(conns: list[Conn]) -> list[dict[str, Any]]:
        c = one(conns)
        syns = [s for s in c.side(True) if s.has(SYN)]
        need(len(syns) == count + 1, f"{count + 1} SYNs")
        need(len({s.seq for s in syns}) == 1, "retransmissions of one SYN")
        gaps = [b.ts - a.ts for a, b in itertools.pairwise(syns)]
        want = syn_timeouts(len(gaps))
        need(all(0.9 < g / w < 1.3 for g, w in zip(gaps, want)), f"SYN timeouts {want} s, got {gaps}")
        synack = c.first(False, SYN)
        need(synack is not None and synack.n > syns[-1].n, "SYN+ACK only after the last SYN")
        need(close_kind(c) == "four_way", "four-way close")
        return [entry(c, FOUR_WAY)]
    return check


# 5. rst_after_half_close
def drive_rst_after_half_close(lab: Lab) -> None:
    sent = threading.Event()

    def after_fin(c: socket.socket) -> None:
        c.sendall(b"y" * 3000)  # the server keeps talking after the client's FIN (CLOSE_WAIT)
        sent.set()

    cl = exchange(lab, 5005, after_fin)
    cl.shutdown(socket.SHUT_WR)
    sent.wait(5)
    time.sleep(0.3)
    cl.close()  # 3000 bytes unread: Linux aborts with a RST instead of finishing the close
    time.sleep(0.2)


def check_rst_after_half_close(conns: list[Conn]) -> list[dict[str, Any]]:
    c = one(conns)
    fo, rst = c.first(True, FIN), c.first(True, RST)
    need(fo is not None and rst is not None and fo.n < rst.n, "client FIN, later client RST")
    assert fo is not None and rst is not None
    need(c.first(False, FIN) is None and c.first(False, RST) is None, "no FIN or RST from the server")
    need(any(s.length and fo.n < s.n < rst.n for s in c.side(False)), "server data after the FIN")
    need(any(acks_fin(s, fo) for s in c.side(False)), "the FIN was ACKed")
    return [entry(c, {"conn_state": "RSTO", "close": "reset", "active_closer": "orig", "reset_by": "orig",
                      "orig_states": OPENED_O + ["FIN_WAIT_1", "FIN_WAIT_2", "CLOSED"],
                      "resp_states": OPENED_R + ["CLOSE_WAIT", "CLOSED"]})]


# 6. close_wait
def drive_close_wait(lab: Lab) -> None:
    got_fin = threading.Event()
    cl = exchange(lab, 5006, lambda c: got_fin.set())  # the server never closes
    cl.close()
    got_fin.wait(5)
    time.sleep(2)


def check_close_wait(conns: list[Conn]) -> list[dict[str, Any]]:
    c = one(conns)
    fo = c.first(True, FIN)
    need(fo is not None and any(acks_fin(s, fo) for s in c.side(False)), "client FIN, ACKed")
    need(c.first(False, FIN) is None and not any(s.has(RST) for s in c.segs), "no server FIN, no RST")
    return [entry(c, {"conn_state": "S2", "close": "half_closed", "active_closer": "orig", "reset_by": None,
                      "orig_states": OPENED_O + ["FIN_WAIT_1", "FIN_WAIT_2"],
                      "resp_states": OPENED_R + ["CLOSE_WAIT"]})]


# 7. time_wait_many
N_TIME_WAIT = 200


def drive_time_wait_many(lab: Lab) -> None:
    ls = lab.listen(5007, backlog=64)
    closed: queue.Queue[int] = queue.Queue()

    def server() -> None:
        for i in range(N_TIME_WAIT):
            c, _ = ls.accept()
            while c.recv(4096):
                pass
            c.close()
            closed.put(i)

    lab.spawn(server)
    for _ in range(N_TIME_WAIT):
        cl = lab.client()
        cl.connect((S_IP, 5007))
        cl.close()  # active close: this end goes to TIME_WAIT
        lab.socks.remove(cl)
        closed.get(timeout=5)  # one connection at a time, so they are in order and the server is prompt
    time.sleep(0.2)


def check_time_wait_many(conns: list[Conn]) -> list[dict[str, Any]]:
    need(len(conns) == N_TIME_WAIT, f"{N_TIME_WAIT} connections, got {len(conns)}")
    need(len({c.orig for c in conns}) == N_TIME_WAIT, "distinct client ports")
    out = []
    for c in conns:
        kind = close_kind(c)
        need(kind in ("three_packet", "four_way"), "client closes first")
        need(not any(s.has(RST) for s in c.segs), "no RST")
        out.append(entry(c, THREE_PACKET if kind == "three_packet" else FOUR_WAY))
    return out


# 8. refused
def drive_refused(lab: Lab) -> None:
    cl = lab.client()
    try:
        cl.connect((S_IP, 5008))
    except ConnectionRefusedError:
        pass
    else:
        raise RuntimeError("connect to a closed port succeeded")
    time.sleep(0.1)


def check_refused(conns: list[Conn]) -> list[dict[str, Any]]:
    c = one(conns)
    need([s.flags & (SYN | ACK | RST | FIN) for s in c.segs] == [SYN, RST | ACK], "SYN, RST+ACK")
    return [entry(c, {"conn_state": "REJ", "close": "reset", "active_closer": None, "reset_by": "resp",
                      "orig_states": ["CLOSED", "SYN_SENT", "CLOSED"], "resp_states": ["CLOSED"]})]


# 9. accept_queue_overflow
def drive_accept_queue_overflow(lab: Lab) -> None:
    # listen(2): the accept queue holds 3 (full when more than the backlog). Client A delays its handshake
    # ACK (TCP_DEFER_ACCEPT on a connecting socket: Linux holds the ACK up to 200 ms); B, C, D complete at
    # once and fill the queue; then A's ACK is dropped for the overflow (tcp_abort_on_overflow=0) and the
    # server retransmits its SYN+ACK (1 s, 3 s), which A answers each time, in vain; E's SYNs are dropped.
    # A backlog of 1 would leave A's pending request filling the SYN queue (qlen >= backlog) and turn B's
    # and C's handshakes into SYN cookies.
    lab.listen(5009, backlog=2)  # never accept()ed
    a = lab.client([(socket.IPPROTO_TCP, TCP_DEFER_ACCEPT, 1)])
    a.connect((S_IP, 5009))
    for _ in range(3):
        lab.client().connect((S_IP, 5009))
    e = lab.client()
    e.setblocking(False)
    e.connect_ex((S_IP, 5009))
    time.sleep(6)


def check_accept_queue_overflow(conns: list[Conn]) -> list[dict[str, Any]]:
    need(len(conns) == 5, f"5 connections, got {len(conns)}")
    a, *bcd, e = conns
    synacks = [s for s in a.side(False) if s.has(SYN)]
    need(len(synacks) >= 3, "A's SYN+ACK retransmitted (>= 2 times)")
    need(len([s for s in a.side(True) if s.flags & (SYN | ACK) == ACK]) >= 3, "A ACKs every SYN+ACK")
    first_ack = next(s for s in a.side(True) if s.flags & (SYN | ACK) == ACK)
    need(all(c.segs[2].n < first_ack.n for c in bcd), "B, C, D complete before A's first ACK")
    for c in bcd:
        need([s.flags & (SYN | ACK) for s in c.segs] == [SYN, SYN | ACK, ACK], "B, C, D: one handshake")
    need(all(s.has(SYN) and not s.has(ACK) for s in e.segs) and len(e.segs) >= 3, "E: SYNs only, >= 3")
    return ([entry(a, OPEN)] + [entry(c, OPEN) for c in bcd]
            + [entry(e, {"conn_state": "S0", "close": "open", "active_closer": None, "reset_by": None,
                         "orig_states": ["CLOSED", "SYN_SENT"], "resp_states": ["CLOSED"]})])


# 10. zero_window
def drive_zero_window(lab: Lab) -> None:
    ls = lab.listen(5010, rcvbuf=2048)  # before listen(): the window scale is chosen from it
    lab.spawn(lambda: lab.socks.append(ls.accept()[0]))  # accepted, never read
    cl = lab.client()
    cl.connect((S_IP, 5010))
    cl.settimeout(0.2)

    def sender() -> None:
        block = b"z" * 65536
        while not lab.stop.is_set():
            try:
                cl.send(block)
            except TimeoutError:
                continue
            except OSError:
                return

    lab.spawn(sender)
    time.sleep(5)


def check_zero_window(conns: list[Conn]) -> list[dict[str, Any]]:
    c = one(conns)
    zero = next((s for s in c.side(False) if s.win == 0 and not s.has(SYN)), None)
    need(zero is not None, "the server advertises a zero window")
    assert zero is not None
    probes = [s for s in c.side(True) if s.n > zero.n and s.length == 0 and not s.has(FIN | RST)]
    need(len(probes) >= 3, f"zero-window probes from the client, got {len(probes)}")
    need(not any(s.has(FIN | RST) for s in c.segs), "no FIN, no RST")
    return [entry(c, OPEN)]


# 11. keepalive
def drive_keepalive(lab: Lab) -> None:
    opts = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1), (socket.IPPROTO_TCP, TCP_KEEPIDLE, 1),
            (socket.IPPROTO_TCP, TCP_KEEPINTVL, 1), (socket.IPPROTO_TCP, TCP_KEEPCNT, 9)]
    ls = lab.listen(5011)

    def server() -> None:
        c = lab.accept(ls)
        recv_exactly(c, len(REQUEST))
        c.sendall(RESPONSE)

    lab.spawn(server)
    cl = lab.client(opts)
    cl.connect((S_IP, 5011))
    cl.sendall(REQUEST)
    recv_exactly(cl, len(RESPONSE))
    time.sleep(4.2)  # idle: keepalives about 1, 2, 3 and 4 s after the last data


def check_keepalive(conns: list[Conn]) -> list[dict[str, Any]]:
    c = one(conns)
    last_data = max(s.n for s in c.segs if s.length)
    ka = [s for s in c.side(True) if s.n > last_data and s.length == 0 and s.has(ACK)]
    seq_next = max(((s.seq + s.length) for s in c.side(True) if s.length), default=0)
    probes = [s for s in ka if s.seq == (seq_next - 1) & 0xFFFFFFFF]
    need(len(probes) >= 3, f"keepalive probes (seq = snd_nxt - 1), got {len(probes)}")
    for p in probes:
        need(any(s.n > p.n and s.has(ACK) for s in c.side(False)), "each probe answered")
    need(not any(s.has(FIN | RST) for s in c.segs), "no FIN, no RST")
    return [entry(c, OPEN)]


# 12. simultaneous_close
def drive_simultaneous_close(lab: Lab) -> None:
    # Both ends call shutdown(SHUT_WR) at the same CLOCK_MONOTONIC instant from two forked processes pinned to
    # different CPUs. It is a race: each FIN must reach the peer while the peer is already inside its own
    # shutdown (socket lock held, or FIN already sent). run() retries the scenario until the capture shows it.
    ls = lab.listen(5012)
    cl = lab.client()
    cl.connect((S_IP, 5012))
    sv = lab.accept(ls)
    time.sleep(0.3)
    cpus = sorted(os.sched_getaffinity(0))
    deadline = time.monotonic_ns() + 50_000_000
    pids = []
    for i, s in enumerate((cl, sv)):
        pid = os.fork()
        if pid == 0:
            try:
                os.sched_setaffinity(0, {cpus[i % len(cpus)]})
                shut = s.shutdown
                while time.monotonic_ns() < deadline:
                    pass
                shut(socket.SHUT_WR)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    time.sleep(0.3)


def check_simultaneous_close(conns: list[Conn]) -> list[dict[str, Any]]:
    c = one(conns)
    need(close_kind(c) == "simultaneous", "FINs crossed: neither FIN acknowledges the other")
    need(not any(s.has(RST) for s in c.segs), "no RST")
    return [entry(c, {"conn_state": "SF", "close": "simultaneous", "active_closer": "both", "reset_by": None,
                      "orig_states": OPENED_O + ["FIN_WAIT_1", "CLOSING", "TIME_WAIT"],
                      "resp_states": OPENED_R + ["FIN_WAIT_1", "CLOSING", "TIME_WAIT"]})]


SCENARIOS = [
    Scenario("normal_close", "real Linux TCP: request/response, the client closes first, the server 0.5 s "
             "later: four-way close (FIN, ACK, FIN, ACK)", drive_normal_close, check_normal_close),
    Scenario("three_packet_close", "real Linux TCP: the server closes as soon as it reads the client's FIN, "
             "inside the delayed-ACK time, so its FIN carries the ACK: FIN, FIN+ACK, ACK",
             drive_three_packet_close, check_three_packet_close, tries=5),
    Scenario("lost_syn_once", "real Linux TCP: nftables in the server namespace drops the first SYN (after "
             "the capture saw it); the client retransmits it 1 s later and connects; four-way close",
             drive_lost_syn(1, 5003), check_lost_syn(1)),
    Scenario("lost_syn_twice", "real Linux TCP: the first two SYNs are dropped (retransmitted after 1 s, "
             "then 1 s more with Linux >= 6.16's tcp_syn_linear_timeouts, 2 s before); the third gets the "
             "SYN+ACK; four-way close", drive_lost_syn(2, 5004), check_lost_syn(2)),
    Scenario("rst_after_half_close", "real Linux TCP: the client half-closes (FIN), the server sends data "
             "in CLOSE_WAIT, the client closes with it unread: RST after the FIN",
             drive_rst_after_half_close, check_rst_after_half_close),
    Scenario("close_wait", "real Linux TCP: the client closes, the server ACKs but never closes; the capture "
             "ends 2 s later with the server in CLOSE_WAIT and the client in FIN_WAIT_2",
             drive_close_wait, check_close_wait),
    Scenario("time_wait_many", f"real Linux TCP: {N_TIME_WAIT} short connections to one server port, each "
             "actively closed by the client (TIME_WAIT on the client side)",
             drive_time_wait_many, check_time_wait_many),
    Scenario("refused", "real Linux TCP: connect() to a closed port: SYN answered with RST+ACK",
             drive_refused, check_refused),
    Scenario("accept_queue_overflow", "real Linux TCP: listen(2), never accept(), tcp_abort_on_overflow=0: "
             "B, C, D fill the accept queue; A's late handshake ACKs are dropped and the server retransmits "
             "its SYN+ACK; E's SYNs are dropped (from the wire all but E look established)",
             drive_accept_queue_overflow, check_accept_queue_overflow,
             sysctl_s={"net.ipv4.tcp_abort_on_overflow": "0"}),
    Scenario("zero_window", "real Linux TCP: the server (SO_RCVBUF 2048) never reads while the client "
             "sends: zero window advertised, client zero-window probes; capture ends after 5 s",
             drive_zero_window, check_zero_window),
    Scenario("keepalive", "real Linux TCP: SO_KEEPALIVE with TCP_KEEPIDLE=1 and TCP_KEEPINTVL=1 on an idle "
             "connection: keepalive probes (seq = snd_nxt - 1) about every second, each ACKed",
             drive_keepalive, check_keepalive),
    Scenario("simultaneous_close", "real Linux TCP: both ends shutdown(SHUT_WR) at the same instant from two "
             "CPUs; the FINs cross (neither acknowledges the other) and both ends go through CLOSING",
             drive_simultaneous_close, check_simultaneous_close, tries=40),
]


def run_scenario(sc: Scenario, out: Path) -> None:
    """Capture until the kernel shows the scenario, then put the pcap and its expectations in place together
    (a failed run leaves the previous pair untouched)."""
    part = out / f"lab_{sc.name}.pcap.part"
    last: Exception | None = None
    try:
        for attempt in range(1, sc.tries + 1):
            with Lab(sysctl_s=sc.sysctl_s) as lab, Capture(part):
                sc.drive(lab)
            try:
                expected = sc.check(read_conns(part))
            except Retry as exc:
                last = exc
                print(f"  lab_{sc.name}: try {attempt}: not this time (wanted: {exc})", flush=True)
                continue
            if any(e["bad_checksum_segments"] for e in expected):
                raise RuntimeError(f"lab_{sc.name}: bad TCP checksums in the capture (offload still on?)")
            doc = {"description": sc.description, "notices": [], "connections": expected}
            (out / f"lab_{sc.name}.expect.json").write_text(json.dumps(doc, indent=2) + "\n")
            part.replace(out / f"lab_{sc.name}.pcap")
            print(f"lab_{sc.name}: {len(expected)} connection(s), try {attempt}", flush=True)
            return
    finally:
        part.unlink(missing_ok=True)
    raise RuntimeError(f"lab_{sc.name}: the kernel never showed it in {sc.tries} tries: {last}")


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "pcaps")
    wanted = set(argv[1:])
    unknown = wanted - {s.name for s in SCENARIOS}
    if unknown:
        print(f"unknown scenarios: {sorted(unknown)}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("lab.py needs root (network namespaces, nftables, tcpdump)", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    try:
        for sc in SCENARIOS:
            if not wanted or sc.name in wanted:
                run_scenario(sc, out)
    finally:
        teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
