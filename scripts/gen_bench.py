"""Deterministic benchmark captures: realistic TCP traffic, millions of packets, written fast.

    python scripts/gen_bench.py OUT.pcap --packets 2000000 [--seed 1]

Traffic: interleaved client/server flows to HTTP (80) and TLS (443) servers; handshakes with MSS, SACK_PERM,
timestamps and window scaling; requests and multi-segment responses with delayed ACKs (an ACK every second
segment); about 1% of data segments lost and retransmitted after an RTO, with SACK blocks on the duplicate
ACKs; four-way, three-packet and RST closes; SYNs to dead ports retried after 1 s and 3 s. Payloads start like
HTTP requests/responses or TLS records. About 100 packets per flow, so 2 M packets are about 20 000 flows.

Packets are described per flow in Python (numbers only), then headers, checksums and payloads are written into
one buffer by a compiled routine, so 2 M packets take a few seconds.
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numba
import numpy as np

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
T0 = 1_750_000_000 * 10**9
MSS = 1448
# per-packet columns
(P_TS, P_SRC, P_DST, P_SPORT, P_DPORT, P_SEQ, P_ACK, P_FLAGS, P_WIN, P_LEN, P_TSVAL, P_TSECR, P_KIND, P_SACK_L,
 P_SACK_R) = range(15)
W = 15
KIND_PLAIN, KIND_SYN, KIND_HTTP_REQ, KIND_HTTP_RESP, KIND_TLS = 0, 1, 2, 3, 4


class Flow:
    """Packets of one flow, appended as rows of numbers."""

    def __init__(self, rows: list[list[int]], t: int, client: int, server: int, cport: int, sport: int,
                 rng: np.random.Generator) -> None:
        self.rows, self.t, self.rng = rows, t, rng
        self.a = [client, cport, int(rng.integers(1 << 31)), int(rng.integers(1 << 30)), 1000]
        self.b = [server, sport, int(rng.integers(1 << 31)), int(rng.integers(1 << 30)), 250]
        self.rtt = int(rng.integers(2, 80)) * 1_000_000
        self.tls = sport == 443

    def pkt(self, by: int, flags: int, length: int = 0, kind: int = KIND_PLAIN, seq: int | None = None,
            sack: tuple[int, int] = (0, 0), win: int = 501, dt: int = 0) -> None:
        me, peer = (self.a, self.b) if by == 0 else (self.b, self.a)
        self.t += dt
        tick = (self.t - T0) // 1_000_000
        self.rows.append([self.t, me[0], peer[0], me[1], peer[1], me[2] if seq is None else seq,
                          peer[2] if flags & ACK else 0, flags, win, length, (me[3] + tick * me[4] // 1000) & 0xFFFFFFFF,
                          (peer[3] + tick * peer[4] // 1000) & 0xFFFFFFFF if flags & ACK else 0, kind, *sack])
        if seq is None:
            me[2] = (me[2] + length + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF

    def handshake(self) -> None:
        self.pkt(0, SYN, kind=KIND_SYN, win=64240)
        self.pkt(1, SYN | ACK, kind=KIND_SYN, win=65160, dt=self.rtt // 2)
        self.pkt(0, ACK, dt=self.rtt // 2)

    def transfer(self, by: int, size: int, kind: int, loss: float) -> None:
        """size bytes from `by`, MSS segments, the peer ACKing every second one; lost segments resent."""
        sent = 0
        n = 0
        while sent < size:
            length = min(MSS, size - sent)
            me = self.a if by == 0 else self.b
            seq = me[2]
            lost = self.rng.random() < loss
            self.pkt(by, PSH | ACK if sent + length >= size else ACK, length,
                     kind if sent == 0 else KIND_PLAIN, dt=int(self.rng.integers(20_000, 200_000)))
            sent += length
            n += 1
            if lost:
                # the next segment arrives; the peer sends a duplicate ACK with a SACK block; then the resend
                if sent < size:
                    nxt = min(MSS, size - sent)
                    nseq = me[2]
                    self.pkt(by, ACK, nxt, dt=50_000)
                    sent += nxt
                    self.pkt(1 - by, ACK, sack=(nseq, (nseq + nxt) & 0xFFFFFFFF), dt=self.rtt // 2)
                    self.pkt(1 - by, ACK, sack=(nseq, (nseq + nxt) & 0xFFFFFFFF), dt=100_000)
                self.pkt(by, ACK, length, seq=seq, dt=max(self.rtt, 200_000_000) if sent >= size else 2_000_000)
                self.pkt(1 - by, ACK, dt=self.rtt // 2)
                n = 0
            elif n % 2 == 0 or sent >= size:
                self.pkt(1 - by, ACK, dt=self.rtt // 2 if sent >= size else 40_000)

    def close(self, how: int) -> None:
        if how == 0:  # four-way, client first
            self.pkt(0, FIN | ACK, dt=self.rtt)
            self.pkt(1, ACK, dt=self.rtt // 2)
            self.pkt(1, FIN | ACK, dt=1_000_000)
            self.pkt(0, ACK, dt=self.rtt // 2)
        elif how == 1:  # three-packet
            self.pkt(0, FIN | ACK, dt=self.rtt)
            self.pkt(1, FIN | ACK, dt=self.rtt // 2)
            self.pkt(0, ACK, dt=self.rtt // 2)
        else:  # server resets
            self.pkt(1, RST | ACK, dt=self.rtt)


def describe(packets: int, seed: int) -> np.ndarray:
    """All packets of the capture, one row each, in time order."""
    rng = np.random.default_rng(seed)
    rows: list[list[int]] = []
    flows = max(1, packets // 100)
    servers = [0x0A640000 + i for i in range(1, 41)]
    span = max(60, flows // 200) * 10**9  # flows start over this many seconds
    starts = np.sort(rng.integers(0, span, flows))
    for i in range(flows):
        client = 0x0A000000 + int(rng.integers(1, 1 << 20))
        server = servers[int(rng.integers(len(servers)))]
        sport = 443 if rng.random() < 0.6 else 80
        f = Flow(rows, T0 + int(starts[i]), client, server, 32768 + int(rng.integers(28232)), sport, rng)
        r = rng.random()
        if r < 0.02:  # unanswered SYN retried after 1 s and 3 s more
            f.pkt(0, SYN, kind=KIND_SYN, win=64240)
            f.pkt(0, SYN, kind=KIND_SYN, win=64240, seq=f.a[2] - 1, dt=1_000_000_000)
            f.pkt(0, SYN, kind=KIND_SYN, win=64240, seq=f.a[2] - 1, dt=2_000_000_000)
            continue
        f.handshake()
        for _ in range(int(rng.integers(1, 4))):
            req = int(rng.integers(200, 900))
            resp = int(rng.lognormal(10.2, 1.0)) % 400_000 + 500
            f.transfer(0, req, KIND_TLS if f.tls else KIND_HTTP_REQ, 0.01)
            f.transfer(1, resp, KIND_TLS if f.tls else KIND_HTTP_RESP, 0.01)
        f.close(0 if r < 0.55 else 1 if r < 0.9 else 2)
        if len(rows) >= packets:
            break
    table = np.array(rows, dtype=np.int64)
    table = table[np.argsort(table[:, P_TS], kind="stable")][:packets]
    return table


@numba.njit(cache=True)
def _csum(buf: np.ndarray, start: int, n: int, acc: int) -> int:
    s = acc
    for i in range(start, start + n - 1, 2):
        s += (np.int64(buf[i]) << 8) | np.int64(buf[i + 1])
    if n & 1:
        s += np.int64(buf[start + n - 1]) << 8
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@numba.njit(cache=True)
def _put16(b: np.ndarray, p: int, v: int) -> None:
    b[p] = (v >> 8) & 0xFF
    b[p + 1] = v & 0xFF


@numba.njit(cache=True)
def _put32(b: np.ndarray, p: int, v: int) -> None:
    b[p] = (v >> 24) & 0xFF
    b[p + 1] = (v >> 16) & 0xFF
    b[p + 2] = (v >> 8) & 0xFF
    b[p + 3] = v & 0xFF


@numba.njit(cache=True)
def render(rows: np.ndarray, snap: int, out: np.ndarray) -> int:
    """Write pcap records (header + Ethernet/IPv4/TCP, payload cut at snap) into out; returns bytes used."""
    pos = 0
    for i in range(rows.shape[0]):
        r = rows[i]
        kind, length = r[12], r[9]
        opt = 20 if kind == 1 else (24 if r[13] != 0 else 12)
        thl = 20 + opt
        wire = 14 + 20 + thl + length
        cap = min(wire, snap)
        ts = r[0]
        rec = pos
        _put32(out, rec, 0)
        # little-endian record header
        sec, usec = ts // 1_000_000_000, (ts % 1_000_000_000) // 1000
        for k, v in enumerate((sec, usec, cap, wire)):
            out[rec + 4 * k] = v & 0xFF
            out[rec + 4 * k + 1] = (v >> 8) & 0xFF
            out[rec + 4 * k + 2] = (v >> 16) & 0xFF
            out[rec + 4 * k + 3] = (v >> 24) & 0xFF
        p = rec + 16
        full = np.zeros(wire, np.uint8)  # build the whole frame, then copy the captured part
        full[0:6] = 2
        full[5] = 0xB
        full[6:12] = 2
        full[11] = 0xA
        _put16(full, 12, 0x0800)
        ip = 14
        full[ip] = 0x45
        _put16(full, ip + 2, 20 + thl + length)
        _put16(full, ip + 4, i & 0xFFFF)
        full[ip + 6] = 0x40
        full[ip + 8] = 64
        full[ip + 9] = 6
        _put32(full, ip + 12, r[1])
        _put32(full, ip + 16, r[2])
        s = _csum(full, ip, 20, 0)
        _put16(full, ip + 10, (~s) & 0xFFFF)
        t = ip + 20
        _put16(full, t, r[3])
        _put16(full, t + 2, r[4])
        _put32(full, t + 4, r[5])
        _put32(full, t + 8, r[6])
        full[t + 12] = (thl // 4) << 4
        full[t + 13] = r[7]
        _put16(full, t + 14, r[8])
        o = t + 20
        if kind == 1:  # MSS, SACK_PERM, TS, NOP, WS
            full[o], full[o + 1] = 2, 4
            _put16(full, o + 2, 1460)
            full[o + 4], full[o + 5] = 4, 2
            full[o + 6], full[o + 7] = 8, 10
            _put32(full, o + 8, r[10])
            _put32(full, o + 12, r[11])
            full[o + 16] = 1
            full[o + 17], full[o + 18], full[o + 19] = 3, 3, 7
        else:  # NOP, NOP, TS [, NOP, NOP, SACK? no: SACK block takes 10 -> pad]
            full[o], full[o + 1] = 1, 1
            full[o + 2], full[o + 3] = 8, 10
            _put32(full, o + 4, r[10])
            _put32(full, o + 8, r[11])
            if opt == 24:  # one SACK block would need 10 bytes; keep 12-byte alignment: NOP NOP + 8? use 2+8
                full[o + 12], full[o + 13] = 5, 10
                _put32(full, o + 14, r[13])
                _put32(full, o + 18, r[14])
                full[o + 22], full[o + 23] = 1, 1
        d = t + thl
        if length > 0:
            if kind == 2:
                for k, ch in enumerate((71, 69, 84, 32, 47)):  # "GET /"
                    if k < length:
                        full[d + k] = ch
            elif kind == 3:
                for k, ch in enumerate((72, 84, 84, 80, 47, 49, 46, 49, 32, 50, 48, 48)):  # "HTTP/1.1 200"
                    if k < length:
                        full[d + k] = ch
            elif kind == 4 and length >= 5:
                full[d], full[d + 1], full[d + 2] = 0x17, 3, 3
                _put16(full, d + 3, length - 5)
        tl = thl + length
        s = _csum(full, ip + 12, 8, 6 + tl)
        s = _csum(full, t, tl, s)
        _put16(full, t + 16, (~s) & 0xFFFF)
        out[p:p + cap] = full[:cap]
        pos = p + cap
    return pos


def write(path: Path, rows: np.ndarray, snap: int = 128) -> None:
    """A pcap of the packets, payloads cut at `snap` bytes per frame (headers always whole)."""
    wire = 14 + 20 + 20 + 24 + rows[:, 9]
    out = np.empty(int((16 + np.minimum(wire, snap)).sum()) + 64, np.uint8)
    n = render(rows, snap, out)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snap, 1))
        fh.write(out[:n].tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--snap", type=int, default=128)
    a = ap.parse_args()
    rows = describe(a.packets, a.seed)
    write(Path(a.out), rows, a.snap)
    print(f"{a.out}: {len(rows)} packets")


if __name__ == "__main__":
    main()
