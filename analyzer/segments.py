"""SegmentTable: the decoder's output, one row per TCP segment, one numpy column per field.

Addresses are 128-bit values split into two uint64 halves (hi, lo); IPv4 addresses are stored IPv4-mapped
(::ffff:a.b.c.d), so one key type serves both families. Fields a segment lacks hold the sentinel noted beside
the column.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

# TCP flag bits as they sit in the 9-bit flags field (RFC 9293 section 3.1, RFC 3168 for ECE/CWR).
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x100

V4_MAPPED_HI = np.uint64(0)
V4_MAPPED_LO_PREFIX = np.uint64(0xFFFF_0000_0000)

# Codes for opt_error: the first malformed TCP option on the segment.
OPT_OK, OPT_BAD_LENGTH, OPT_PAST_HEADER, OPT_BAD_DATA_OFFSET = 0, 1, 2, 3
SACK_MAX = 4  # at most four SACK blocks fit in 40 option bytes


@dataclass(slots=True)
class SegmentTable:
    """Decoded TCP segments of one batch, in frame order."""

    frame: npt.NDArray[np.int64]
    ts_ns: npt.NDArray[np.int64]
    ip_version: npt.NDArray[np.uint8]  # 4 or 6 (innermost IP header)
    src_hi: npt.NDArray[np.uint64]
    src_lo: npt.NDArray[np.uint64]
    dst_hi: npt.NDArray[np.uint64]
    dst_lo: npt.NDArray[np.uint64]
    sport: npt.NDArray[np.uint16]
    dport: npt.NDArray[np.uint16]
    seq: npt.NDArray[np.uint32]
    ack: npt.NDArray[np.uint32]
    flags: npt.NDArray[np.uint16]
    win: npt.NDArray[np.uint16]  # raw, unscaled
    ip_len: npt.NDArray[np.int32]  # IP total length from the header (IPv6: payload length + 40)
    tcp_hdr_len: npt.NDArray[np.int16]  # data offset * 4
    payload_len: npt.NDArray[np.int32]  # TCP payload on the wire, from the IP length (not from caplen)
    captured_payload: npt.NDArray[np.int32]  # payload bytes actually in the capture
    mss: npt.NDArray[np.int32]  # -1: no MSS option
    wscale: npt.NDArray[np.int16]  # -1: no window-scale option; the shift as sent (may exceed 14)
    sack_perm: npt.NDArray[np.bool_]
    has_ts: npt.NDArray[np.bool_]
    ts_val: npt.NDArray[np.uint32]  # 0 when has_ts is False
    ts_ecr: npt.NDArray[np.uint32]
    sack_count: npt.NDArray[np.uint8]  # SACK blocks on this segment (0..4)
    sack_left: npt.NDArray[np.uint32]  # shape (n, SACK_MAX)
    sack_right: npt.NDArray[np.uint32]  # shape (n, SACK_MAX)
    opt_error: npt.NDArray[np.uint8]  # OPT_* code of the first malformed option, 0 if none
    truncated: npt.NDArray[np.bool_]  # caplen cut the segment (headers or payload)
    csum_ok: npt.NDArray[np.int8]  # 1 good, 0 bad, -1 not checkable (cut by snaplen, or not computed)
    tunnel: npt.NDArray[np.int32]  # 0: not tunnelled; else 1-based index into Decoder.tunnels

    def __len__(self) -> int:
        return len(self.frame)

    @classmethod
    def unfilled(cls, n: int, alloc: Callable[..., Any] = np.empty) -> SegmentTable:
        """A table of n rows as they come from `alloc` (np.empty: for a writer that fills every column but tunnel,
        which is zeroed)."""
        return cls(**{f.name: alloc(n, dtype=_DTYPES[f.name]) for f in fields(cls)
                      if f.name not in ("sack_count", "sack_left", "sack_right", "tunnel")},
                   sack_count=alloc(n, np.uint8), sack_left=alloc((n, SACK_MAX), np.uint32),
                   sack_right=alloc((n, SACK_MAX), np.uint32), tunnel=np.zeros(n, _DTYPES["tunnel"]))

    @classmethod
    def empty(cls, n: int = 0) -> SegmentTable:
        """A table of n zeroed rows (sentinels applied), ready to be filled."""
        table = cls.unfilled(n, np.zeros)
        table.mss[:] = -1
        table.wscale[:] = -1
        table.csum_ok[:] = -1
        return table

    def part(self, start: int, stop: int) -> SegmentTable:
        """Rows start to stop, as views."""
        return SegmentTable(**{f.name: getattr(self, f.name)[start:stop] for f in fields(self)})

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> SegmentTable:
        """Rows selected by an index or mask, as a new table."""
        return SegmentTable(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(tables: list[SegmentTable]) -> SegmentTable:
        """Tables stacked in the given order."""
        if not tables:
            return SegmentTable.empty()
        return SegmentTable(**{f.name: np.concatenate([getattr(t, f.name) for t in tables])
                               for f in fields(SegmentTable)})


_DTYPES: dict[str, type] = {
    "frame": np.int64, "ts_ns": np.int64, "ip_version": np.uint8,
    "src_hi": np.uint64, "src_lo": np.uint64, "dst_hi": np.uint64, "dst_lo": np.uint64,
    "sport": np.uint16, "dport": np.uint16, "seq": np.uint32, "ack": np.uint32, "flags": np.uint16,
    "win": np.uint16, "ip_len": np.int32, "tcp_hdr_len": np.int16, "payload_len": np.int32,
    "captured_payload": np.int32, "mss": np.int32, "wscale": np.int16, "sack_perm": np.bool_,
    "has_ts": np.bool_, "ts_val": np.uint32, "ts_ecr": np.uint32, "opt_error": np.uint8,
    "truncated": np.bool_, "csum_ok": np.int8, "tunnel": np.int32,
}


def format_addr(hi: int, lo: int) -> str:
    """An address from its two halves: dotted quad for IPv4-mapped values, compressed IPv6 otherwise."""
    if hi == 0 and (lo >> 32) == 0xFFFF:  # dotted quad by hand: ipaddress takes ten times as long
        return f"{(lo >> 24) & 255}.{(lo >> 16) & 255}.{(lo >> 8) & 255}.{lo & 255}"
    return str(ipaddress.IPv6Address((hi << 64) | lo))
