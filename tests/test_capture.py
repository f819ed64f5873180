"""Capture readers: pcap (every magic and byte order), pcapng (interfaces, resolutions, sections, blocks),
gzip, stdin, batching, truncation and the errors a capture that cannot be read at all raises.

Every input is built here, byte by byte, into tmp_path.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import sys
import types
from pathlib import Path

import dpkt
import numpy as np
import pytest

import analyzer.capture as capture_mod
from analyzer.capture import open_capture
from analyzer.model import CaptureError, CaptureFacts, FrameBatch

NS = 1_000_000_000


# --- builders -------------------------------------------------------------------------------------------------

def pcap_bytes(records: list[tuple[int, int, bytes] | tuple[int, int, bytes, int]], *, endian: str = "<",
               magic: int = 0xA1B2C3D4, linktype: int = 1, snaplen: int = 65535) -> bytes:
    """A classic pcap file; records are (seconds, fraction, data[, wirelen]) in the magic's fraction unit."""
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for rec in records:
        sec, frac, data = rec[0], rec[1], rec[2]
        wire = rec[3] if len(rec) > 3 else len(data)  # type: ignore[misc]
        out.append(struct.pack(endian + "IIII", sec, frac, len(data), wire))
        if magic == 0xA1B2CD34:  # Kuznetzov: ifindex, protocol, pkt_type, padding
            out.append(struct.pack(endian + "IHBB", 3, 0x0800, 0, 0))
        out.append(data)
    return b"".join(out)


def _pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def ng_opts(options: list[tuple[int, bytes]], e: str) -> bytes:
    if not options:
        return b""
    return b"".join(struct.pack(e + "HH", code, len(v)) + _pad(v) for code, v in options) + struct.pack(e + "HH", 0, 0)


def ng_block(btype: int, body: bytes, e: str) -> bytes:
    body = _pad(body)
    total = 12 + len(body)
    return struct.pack(e + "II", btype, total) + body + struct.pack(e + "I", total)


def shb(e: str = "<", options: list[tuple[int, bytes]] | None = None) -> bytes:
    return ng_block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1) + ng_opts(options or [], e), e)


def idb(linktype: int, e: str = "<", snaplen: int = 65535, options: list[tuple[int, bytes]] | None = None) -> bytes:
    return ng_block(1, struct.pack(e + "HHI", linktype, 0, snaplen) + ng_opts(options or [], e), e)


def epb(iface: int, ts_raw: int, data: bytes, e: str = "<", wirelen: int | None = None,
        options: list[tuple[int, bytes]] | None = None) -> bytes:
    wire = len(data) if wirelen is None else wirelen
    body = struct.pack(e + "IIIII", iface, ts_raw >> 32, ts_raw & 0xFFFFFFFF, len(data), wire)
    return ng_block(6, body + _pad(data) + ng_opts(options or [], e), e)


def spb(data: bytes, e: str = "<", wirelen: int | None = None) -> bytes:
    return ng_block(3, struct.pack(e + "I", len(data) if wirelen is None else wirelen) + data, e)


def obsolete_pb(iface: int, ts_raw: int, data: bytes, e: str = "<") -> bytes:
    body = struct.pack(e + "HHIIII", iface, 7, ts_raw >> 32, ts_raw & 0xFFFFFFFF, len(data), len(data))
    return ng_block(2, body + data, e)


def tsresol(value: int) -> tuple[int, bytes]:
    return 9, bytes([value])


def tsoffset(seconds: int, e: str) -> tuple[int, bytes]:
    return 14, struct.pack(e + "q", seconds)


def payload(i: int, n: int = 60) -> bytes:
    """Distinct frame contents: frame i repeated byte pattern."""
    return bytes((i * 7 + k) & 0xFF for k in range(n))


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def read_all(path: str | os.PathLike[str], **kw: int) -> tuple[CaptureFacts, list[FrameBatch]]:
    with open_capture(path, **kw) as cap:
        batches = list(cap)
    return cap.facts, batches


def rows(batches: list[FrameBatch]) -> list[tuple[int, int, int, int, int, bytes]]:
    """(frame, ts_ns, linktype, caplen, wirelen, bytes) of every frame, in order."""
    out = []
    for b in batches:
        assert b.data.dtype == np.uint8
        assert len(b.offset) == len(b.caplen) == len(b.wirelen) == len(b.ts_ns) == len(b.linktype) == len(b)
        for i in range(len(b)):
            off, cap = int(b.offset[i]), int(b.caplen[i])
            assert 0 <= off and off + cap <= len(b.data)
            out.append((int(b.frame[i]), int(b.ts_ns[i]), int(b.linktype[i]), cap, int(b.wirelen[i]),
                        bytes(b.data[off:off + cap])))
    return out


# --- classic pcap ---------------------------------------------------------------------------------------------

# Seconds near 2023 and fractions at the top of their range: a float conversion would not keep these exact.
SECS = [1_700_000_000, 1_700_000_001, 2_000_000_000]


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("magic,unit,fmt", [(0xA1B2C3D4, 1000, "pcap"), (0xA1B23C4D, 1, "pcap-nsec")])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, endian: str, magic: int, unit: int, fmt: str) -> None:
    fracs = [999_999, 1, 123_456] if unit == 1000 else [999_999_999, 1, 123_456_789]
    recs = [(s, f, payload(i, 40 + i)) for i, (s, f) in enumerate(zip(SECS, fracs))]
    path = write(tmp_path, "a.pcap", pcap_bytes(recs, endian=endian, magic=magic, linktype=101, snaplen=1234))
    facts, batches = read_all(path)
    got = rows(batches)
    assert [r[0] for r in got] == [1, 2, 3]
    assert [r[1] for r in got] == [s * NS + f * unit for s, f in zip(SECS, fracs)]
    assert all(isinstance(r[1], int) for r in got)
    assert [r[5] for r in got] == [r[2] for r in recs]
    assert [r[3] for r in got] == [r[4] for r in got] == [40, 41, 42]
    assert {r[2] for r in got} == {101}
    assert facts.file_format == fmt
    assert not facts.compressed
    assert facts.source == str(path)
    assert len(facts.interfaces) == 1
    iface = facts.interfaces[0]
    assert (iface.linktype, iface.snaplen, iface.ts_resolution_ns) == (101, 1234, float(unit))
    assert facts.frames == 3
    assert facts.bytes_captured == 40 + 41 + 42
    assert facts.first_ns == SECS[0] * NS + fracs[0] * unit
    assert facts.last_ns == SECS[2] * NS + fracs[2] * unit
    assert facts.notices == []


def test_pcap_nanosecond_timestamp_exact_to_the_nanosecond(tmp_path: Path) -> None:
    path = write(tmp_path, "n.pcap", pcap_bytes([(4_000_000_000, 999_999_999, b"x" * 20)], magic=0xA1B23C4D))
    _, batches = read_all(path)
    assert batches[0].ts_ns.dtype == np.int64
    assert int(batches[0].ts_ns[0]) == 4_000_000_000_999_999_999


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcap_kuznetzov_magic_has_24_byte_record_headers(tmp_path: Path, endian: str) -> None:
    recs = [(SECS[i], 500_000 + i, payload(i, 30 + 10 * i)) for i in range(3)]
    path = write(tmp_path, "k.pcap", pcap_bytes(recs, endian=endian, magic=0xA1B2CD34))
    facts, batches = read_all(path)
    got = rows(batches)
    assert [r[5] for r in got] == [r[2] for r in recs]
    assert [r[1] for r in got] == [s * NS + f * 1000 for s, f, _ in recs]
    assert facts.file_format.startswith("pcap")
    assert facts.interfaces[0].ts_resolution_ns == 1000.0
    assert facts.notices == []


def test_pcap_linktype_fcs_bits_are_masked(tmp_path: Path) -> None:
    path = write(tmp_path, "f.pcap", pcap_bytes([(1, 2, b"abc" * 10)], linktype=1 | 0x1000_0000 | 0x4000_0000))
    facts, batches = read_all(path)
    assert int(batches[0].linktype[0]) == 1
    assert facts.interfaces[0].linktype == 1


def test_pcap_written_by_dpkt(tmp_path: Path) -> None:
    buf = io.BytesIO()
    w = dpkt.pcap.Writer(buf, nano=True, linktype=dpkt.pcap.DLT_EN10MB)
    pkts = [payload(i, 60 + i) for i in range(5)]
    for i, p in enumerate(pkts):
        w.writepkt(p, ts=1_600_000_000 + i)
    path = write(tmp_path, "d.pcap", buf.getvalue())
    facts, batches = read_all(path)
    got = rows(batches)
    assert [r[5] for r in got] == pkts
    assert [r[1] for r in got] == [(1_600_000_000 + i) * NS for i in range(5)]
    assert facts.file_format == "pcap-nsec"


def test_pcap_zero_frames_is_not_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "h.pcap", pcap_bytes([]))
    facts, batches = read_all(path)
    assert batches == []
    assert facts.frames == 0
    assert facts.notices == []
    assert facts.file_format == "pcap"


# --- pcapng ---------------------------------------------------------------------------------------------------

def _three_interface_file(e: str) -> tuple[bytes, list[tuple[int, int, int, bytes]]]:
    """Section comment; IDB 0 Ethernet in microseconds with if_tsoffset; IDB 1 raw IP in nanoseconds;
    IDB 2 raw IP in 2**-20 seconds. Returns the file and the expected (ts_ns, linktype, wirelen, data)."""
    blocks = [
        shb(e, [(1, b"section comment \xe2\x9c\x93"), (2, b"some hardware")]),
        idb(1, e, snaplen=262144, options=[(2, b"eth0"), (3, b"the first port"), tsresol(6), tsoffset(100, e),
                                             (1, b"interface comment")]),
        idb(101, e, snaplen=1500, options=[(2, b"tun0\0\0"), tsresol(9)]),
        idb(101, e, options=[(2, b"pow2"), tsresol(0x80 | 20)]),
    ]
    expect = []
    p0, p1, p2, p3, p4 = (payload(i, 50 + i) for i in range(5))
    raw0 = 1_700_000_000_123_456  # microseconds
    blocks.append(epb(0, raw0, p0, e))
    expect.append(((raw0 // 1_000_000 + 100) * NS + (raw0 % 1_000_000) * 1000, 1, len(p0), p0))
    raw1 = 1_700_000_001_987_654_321  # nanoseconds
    blocks.append(epb(1, raw1, p1, e, wirelen=1000))
    expect.append((raw1, 101, 1000, p1))
    raw2 = (1_700_000_002 << 20) | 0xABCDE  # seconds in 2**-20 units
    blocks.append(epb(2, raw2, p2, e))
    expect.append(((raw2 * NS) >> 20, 101, len(p2), p2))
    blocks.append(spb(p3, e))  # no timestamp: the previous frame's; always interface 0
    expect.append((expect[-1][0], 1, len(p3), p3))
    blocks.append(epb(0, 5, p4, e))  # if_tsoffset alone
    expect.append((100 * NS + 5000, 1, len(p4), p4))
    return b"".join(blocks), expect


@pytest.mark.parametrize("e", ["<", ">"], ids=["little-endian", "big-endian"])
def test_pcapng_interfaces_resolutions_offsets_and_block_kinds(tmp_path: Path, e: str) -> None:
    data, expect = _three_interface_file(e)
    facts, batches = read_all(write(tmp_path, "a.pcapng", data))
    got = rows(batches)
    assert [r[0] for r in got] == [1, 2, 3, 4, 5]
    assert [r[1] for r in got] == [x[0] for x in expect]
    assert [r[2] for r in got] == [x[1] for x in expect]
    assert [r[4] for r in got] == [x[2] for x in expect]
    assert [r[5] for r in got] == [x[3] for x in expect]
    assert [r[3] for r in got] == [len(x[3]) for x in expect]
    assert facts.file_format == "pcapng"
    assert facts.comments == ["section comment \u2713", "interface comment"]
    assert [(i.linktype, i.snaplen, i.name) for i in facts.interfaces] == [
        (1, 262144, "eth0"), (101, 1500, "tun0"), (101, 65535, "pow2")]
    assert facts.interfaces[0].description == "the first port"
    assert facts.interfaces[0].ts_resolution_ns == 1000.0
    assert facts.interfaces[1].ts_resolution_ns == 1.0
    assert facts.interfaces[2].ts_resolution_ns == pytest.approx(NS / 2 ** 20)
    assert facts.frames == 5
    assert facts.first_ns == min(x[0] for x in expect)
    assert facts.last_ns == max(x[0] for x in expect)
    assert facts.notices == []


def test_pcapng_default_resolution_is_microseconds(tmp_path: Path) -> None:
    data = shb() + idb(1) + epb(0, 1_500_000_000_000_001, b"q" * 30)
    facts, batches = read_all(write(tmp_path, "d.pcapng", data))
    assert int(batches[0].ts_ns[0]) == 1_500_000_000_000_001_000
    assert facts.interfaces[0].ts_resolution_ns == 1000.0
    assert facts.interfaces[0].name == ""


def test_pcapng_decimal_resolution_finer_than_nanoseconds(tmp_path: Path) -> None:
    data = shb() + idb(1, options=[tsresol(12)]) + epb(0, 1_234_567_890_123_456_789, b"q" * 30)
    _, batches = read_all(write(tmp_path, "ps.pcapng", data))
    assert int(batches[0].ts_ns[0]) == 1_234_567_890_123_456


def test_pcapng_two_to_the_minus_32_resolution(tmp_path: Path) -> None:
    raw = (1_700_000_000 << 32) | 0xFFFF_FFFF
    data = shb() + idb(1, options=[tsresol(0x80 | 32)]) + epb(0, raw, b"q" * 30)
    _, batches = read_all(write(tmp_path, "p32.pcapng", data))
    assert int(batches[0].ts_ns[0]) == (raw * NS) >> 32


def test_pcapng_unusable_tsresol_falls_back_to_microseconds(tmp_path: Path) -> None:
    data = shb() + idb(1, options=[tsresol(0x7F)]) + epb(0, 3, b"q" * 30)
    facts, batches = read_all(write(tmp_path, "bad.pcapng", data))
    assert int(batches[0].ts_ns[0]) == 3000
    assert [n.kind for n in facts.notices] == ["bad_tsresol"]


def test_pcapng_negative_tsoffset(tmp_path: Path) -> None:
    data = shb() + idb(1, options=[tsoffset(-10, "<")]) + epb(0, 20_000_000, b"q" * 30)
    _, batches = read_all(write(tmp_path, "neg.pcapng", data))
    assert int(batches[0].ts_ns[0]) == 10 * NS


@pytest.mark.parametrize("e", ["<", ">"])
def test_pcapng_second_section_resets_interfaces(tmp_path: Path, e: str) -> None:
    data = (shb(e) + idb(1, e) + idb(113, e) + epb(1, 1, b"a" * 20, e) +
            shb(e, [(1, b"second")]) + idb(101, e, options=[tsresol(9)]) + epb(0, 7, b"b" * 24, e))
    facts, batches = read_all(write(tmp_path, "s.pcapng", data))
    got = rows(batches)
    assert [(r[0], r[1], r[2], r[5]) for r in got] == [(1, 1000, 113, b"a" * 20), (2, 7, 101, b"b" * 24)]
    assert facts.comments == ["second"]
    assert [i.linktype for i in facts.interfaces] == [1, 113, 101]


def test_pcapng_second_section_forgets_the_first_sections_interfaces(tmp_path: Path) -> None:
    data = shb() + idb(1) + idb(1) + epb(1, 1, b"a" * 20) + shb() + idb(101) + epb(1, 2, b"b" * 20)
    with pytest.raises(CaptureError, match="interface") as err, open_capture(write(tmp_path, "x.pcapng", data)) as cap:
        for _ in cap:
            pass
    assert "\n" not in str(err.value)
    assert cap.facts.frames == 1


def test_pcapng_sections_of_different_byte_orders(tmp_path: Path) -> None:
    data = (shb("<") + idb(1, "<") + epb(0, 1, b"l" * 20, "<") +
            shb(">") + idb(101, ">") + epb(0, 2, b"b" * 20, ">") +
            shb("<") + idb(113, "<") + epb(0, 3, b"L" * 20, "<"))
    facts, batches = read_all(write(tmp_path, "m.pcapng", data))
    assert [(r[1], r[2], r[5]) for r in rows(batches)] == [
        (1000, 1, b"l" * 20), (2000, 101, b"b" * 20), (3000, 113, b"L" * 20)]
    assert facts.notices == []


@pytest.mark.parametrize("e", ["<", ">"])
def test_pcapng_obsolete_packet_block(tmp_path: Path, e: str) -> None:
    data = shb(e) + idb(1, e) + idb(113, e) + obsolete_pb(1, 42, b"p" * 20, e)
    _, batches = read_all(write(tmp_path, "pb.pcapng", data))
    assert [(r[1], r[2], r[5]) for r in rows(batches)] == [(42_000, 113, b"p" * 20)]


@pytest.mark.parametrize("e", ["<", ">"])
def test_pcapng_simple_packet_block_cut_by_interface_zero_snaplen(tmp_path: Path, e: str) -> None:
    """An SPB's captured length is min(original length, IDB 0's snaplen): the 32-bit padding is not data."""
    data = shb(e) + idb(1, e, snaplen=21) + idb(101, e) + spb(b"s" * 21, e, wirelen=50) + spb(b"t" * 10, e)
    facts, batches = read_all(write(tmp_path, "spb.pcapng", data))
    assert [(r[2], r[3], r[4], r[5]) for r in rows(batches)] == [(1, 21, 50, b"s" * 21), (1, 10, 10, b"t" * 10)]
    assert facts.notices == []


def test_pcapng_skips_other_blocks(tmp_path: Path) -> None:
    nrb = ng_block(4, struct.pack("<HH", 0, 0), "<")  # name resolution
    isb = ng_block(5, struct.pack("<III", 0, 0, 0), "<")  # interface statistics
    custom = ng_block(0x40000BAD, b"\x01\x02\x03\x04" * 3, "<")
    data = shb() + idb(1) + nrb + epb(0, 1, b"a" * 20) + isb + custom + epb(0, 2, b"b" * 20)
    facts, batches = read_all(write(tmp_path, "o.pcapng", data))
    assert [r[5] for r in rows(batches)] == [b"a" * 20, b"b" * 20]
    assert [r[0] for r in rows(batches)] == [1, 2]
    assert facts.notices == []


def test_pcapng_spb_first_in_batch_takes_time_from_previous_batch(tmp_path: Path) -> None:
    data = shb() + idb(1) + epb(0, 10, b"a" * 20) + spb(b"b" * 20) + spb(b"c" * 21) + epb(0, 30, b"d" * 20)
    for n in (1, 2, 100):
        _, batches = read_all(write(tmp_path, "spb.pcapng", data), batch_frames=n)
        got = rows(batches)
        assert [r[1] for r in got] == [10_000, 10_000, 10_000, 30_000], n
        assert [r[5] for r in got] == [b"a" * 20, b"b" * 20, b"c" * 21, b"d" * 20]


def test_pcapng_written_by_dpkt(tmp_path: Path) -> None:
    buf = io.BytesIO()
    w = dpkt.pcapng.Writer(buf, linktype=dpkt.pcap.DLT_EN10MB)
    pkts = [payload(i, 70 + i) for i in range(4)]
    for i, p in enumerate(pkts):
        w.writepkt(p, ts=1_600_000_000.5 + i)
    facts, batches = read_all(write(tmp_path, "d.pcapng", buf.getvalue()))
    got = rows(batches)
    assert [r[5] for r in got] == pkts
    assert [r[1] for r in got] == [(1_600_000_000 + i) * NS + 500_000_000 for i in range(4)]
    assert [r[2] for r in got] == [1] * 4
    assert facts.file_format == "pcapng"


# --- gzip, stdin ----------------------------------------------------------------------------------------------

def _sample_pcap() -> bytes:
    return pcap_bytes([(SECS[0] + i, i, payload(i, 30 + i)) for i in range(6)])


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_gzip_compressed_capture(tmp_path: Path, kind: str) -> None:
    plain = _sample_pcap() if kind == "pcap" else _three_interface_file("<")[0]
    _, want = read_all(write(tmp_path, "plain", plain))
    facts, got = read_all(write(tmp_path, "c.gz", gzip.compress(plain)))
    assert facts.compressed
    assert facts.file_format == ("pcap" if kind == "pcap" else "pcapng")
    assert rows(got) == rows(want)
    assert len(rows(got)) > 0


def _fake_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BufferedReader(io.BytesIO(data))))


@pytest.mark.parametrize("compress", [False, True])
def test_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compress: bool) -> None:
    plain = _sample_pcap()
    _, want = read_all(write(tmp_path, "p.pcap", plain))
    _fake_stdin(monkeypatch, gzip.compress(plain) if compress else plain)
    facts, got = read_all("-")
    assert facts.source == "-"
    assert facts.compressed is compress
    assert rows(got) == rows(want)


def test_stdin_empty_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_stdin(monkeypatch, b"")
    with pytest.raises(CaptureError, match="^-: "):
        read_all("-")


# --- batching -------------------------------------------------------------------------------------------------

def _mixed_pcapng() -> bytes:
    blocks = [shb(), idb(1), idb(101, options=[tsresol(9)])]
    for i in range(10):
        if i % 4 == 3:
            blocks.append(spb(payload(i, 20 + i)))
        else:
            blocks.append(epb(i % 2, 1000 + i, payload(i, 20 + i)))
        if i == 5:
            blocks.append(idb(113))  # a late interface between packets
    return b"".join(blocks)


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
@pytest.mark.parametrize("batch", [1, 3])
def test_small_batches_give_the_same_frames(tmp_path: Path, kind: str, batch: int) -> None:
    data = pcap_bytes([(SECS[0] + i, i * 11, payload(i, 20 + 3 * i)) for i in range(10)]) if kind == "pcap" \
        else _mixed_pcapng()
    path = write(tmp_path, "b", data)
    facts_big, big = read_all(path, batch_frames=1 << 16)
    facts_small, small = read_all(path, batch_frames=batch)
    assert len(big) == (1 if kind == "pcap" else 2)  # pcapng: the late interface block ends a batch
    assert all(1 <= len(b) <= batch for b in small)
    if kind == "pcap":
        assert len(small) == -(-10 // batch)
    assert rows(small) == rows(big)
    assert [r[0] for r in rows(small)] == list(range(1, 11))
    # numbering is continuous across batches: each batch starts where the previous ended
    assert np.array_equal(np.concatenate([b.frame for b in small]), np.arange(1, 11))
    assert (facts_small.frames, facts_small.bytes_captured, facts_small.first_ns, facts_small.last_ns) == \
        (facts_big.frames, facts_big.bytes_captured, facts_big.first_ns, facts_big.last_ns)


@pytest.mark.parametrize("kind", ["pcap", "pcapng", "gzip"])
@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_records_spanning_read_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
                                      chunk: int) -> None:
    """A tiny read size makes records straddle chunk ends: they must be carried over intact."""
    data = pcap_bytes([(SECS[0] + i, i, payload(i, 10 + 17 * i)) for i in range(12)]) if kind != "pcapng" \
        else _mixed_pcapng()
    if kind == "gzip":
        data = gzip.compress(data)
    path = write(tmp_path, "c", data)
    _, want = read_all(path)
    monkeypatch.setattr(capture_mod, "CHUNK", chunk)
    facts, got = read_all(path, batch_frames=5)
    assert rows(got) == rows(want)
    assert facts.notices == []
    # One buffer for all batches (the pipeline's reader): each batch read before the next is asked for
    with open_capture(path, batch_frames=5, reuse=True) as cap:
        shared = [rows([b]) for b in cap]
    assert [r for batch in shared for r in batch] == rows(want)


SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "pcaps").glob("*.pcap*"))


@pytest.mark.parametrize("chunk", [None, 4096 + 3])  # CHUNK as it is, or records across many mapped chunks
def test_a_mapped_file_gives_what_reading_it_as_a_stream_gives(monkeypatch: pytest.MonkeyPatch,
                                                               chunk: int | None) -> None:
    """A plain file mapped into memory chunk by chunk (as the command line's reader asks), a stream read: the
    same frames, facts and notices on every scenario capture; batches kept stay whole after later chunks are
    mapped (and earlier ones let go). Without asking (the library), a file is read."""
    if chunk is not None:
        monkeypatch.setattr(capture_mod, "CHUNK", chunk)
    for path in SCENARIOS:
        compressed = path.suffix == ".gz"
        with open_capture(path, batch_frames=7) as cap:
            assert cap._mapped is None
        with open_capture(path, batch_frames=7, mapped=True) as cap:
            assert (cap._mapped is None) is compressed  # a compressed file is read
            mapped = list(cap)
        data = io.BufferedReader(io.BytesIO(path.read_bytes()))
        stream = capture_mod.Capture(gzip.GzipFile(fileobj=data) if compressed else data,  # type: ignore[arg-type]
                                     str(path), compressed, 7)
        assert stream._mapped is None
        read = list(stream)
        assert rows(mapped) == rows(read), path.name
        assert cap.facts == stream.facts, path.name


# --- truncation and damage ------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 2, 1 << 16])
@pytest.mark.parametrize("cut", ["data", "header"])
def test_pcap_cut_mid_record(tmp_path: Path, batch: int, cut: str) -> None:
    full = pcap_bytes([(SECS[0], i, payload(i, 40)) for i in range(4)])
    # record 4 starts at 24 + 3 * 56; cut inside its data or inside its 16-byte header
    end = 24 + 3 * 56 + (16 + 10 if cut == "data" else 9)
    facts, batches = read_all(write(tmp_path, "t.pcap", full[:end]), batch_frames=batch)
    got = rows(batches)
    assert [r[0] for r in got] == [1, 2, 3]
    assert [r[5] for r in got] == [payload(i, 40) for i in range(3)]
    assert [n.kind for n in facts.notices] == ["truncated_file"]
    assert facts.notices[0].frame == 4
    assert facts.frames == 3


def test_pcap_cut_before_first_record(tmp_path: Path) -> None:
    facts, batches = read_all(write(tmp_path, "t.pcap", pcap_bytes([(1, 1, b"z" * 30)])[:24 + 20]))
    assert batches == []
    assert [(n.kind, n.frame) for n in facts.notices] == [("truncated_file", 1)]


def test_pcapng_cut_mid_block(tmp_path: Path) -> None:
    full = shb() + idb(1) + epb(0, 1, b"a" * 40) + epb(0, 2, b"b" * 40) + epb(0, 3, b"c" * 40)
    facts, batches = read_all(write(tmp_path, "t.pcapng", full[:-30]))
    assert [r[5] for r in rows(batches)] == [b"a" * 40, b"b" * 40]
    assert [(n.kind, n.frame) for n in facts.notices] == [("truncated_file", 3)]


def test_gzip_cut_mid_stream_keeps_the_frames_before(tmp_path: Path) -> None:
    recs = [(SECS[0] + i, i, os.urandom(200)) for i in range(200)]
    comp = gzip.compress(pcap_bytes(recs), compresslevel=1)
    facts, batches = read_all(write(tmp_path, "t.pcap.gz", comp[: len(comp) * 3 // 4]))
    got = rows(batches)
    assert any(n.kind == "truncated_file" for n in facts.notices)
    assert 0 < len(got) < 200
    assert [r[5] for r in got] == [r[2] for r in recs[:len(got)]]


def test_pcap_corrupt_record_header_stops_with_a_notice(tmp_path: Path) -> None:
    good = pcap_bytes([(1, 1, b"a" * 20), (1, 2, b"b" * 20)])
    bad = good + struct.pack("<IIII", 1, 3, 300 << 20, 300 << 20) + b"x" * 40
    facts, batches = read_all(write(tmp_path, "c.pcap", bad))
    assert [r[5] for r in rows(batches)] == [b"a" * 20, b"b" * 20]
    assert [(n.kind, n.frame) for n in facts.notices] == [("corrupt_record", 3)]


def test_pcapng_corrupt_block_length_stops_with_a_notice(tmp_path: Path) -> None:
    data = shb() + idb(1) + epb(0, 1, b"a" * 20) + struct.pack("<II", 6, 13) + b"\0" * 40
    facts, batches = read_all(write(tmp_path, "c.pcapng", data))
    assert len(rows(batches)) == 1
    assert [n.kind for n in facts.notices] == ["corrupt_record"]


def test_caplen_over_wirelen_notice(tmp_path: Path) -> None:
    recs = [(1, 0, b"a" * 20), (1, 1, b"b" * 30, 10), (1, 2, b"c" * 30, 30), (1, 3, b"d" * 30, 5)]
    facts, batches = read_all(write(tmp_path, "w.pcap", pcap_bytes(recs)))  # type: ignore[arg-type]
    got = rows(batches)
    assert [(r[3], r[4]) for r in got] == [(20, 20), (30, 10), (30, 30), (30, 5)]
    notes = [n for n in facts.notices if n.kind == "caplen_over_wirelen"]
    assert len(notes) == 1
    assert notes[0].frame == 2
    assert "2 frames" in notes[0].message


def test_caplen_equal_to_wirelen_gives_no_notice(tmp_path: Path) -> None:
    facts, _ = read_all(write(tmp_path, "w.pcap", pcap_bytes([(1, 0, b"a" * 20, 100)])))
    assert facts.notices == []


# --- files that are not captures ------------------------------------------------------------------------------

def _error(path: str | Path) -> str:
    with pytest.raises(CaptureError) as err:
        read_all(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def test_empty_file(tmp_path: Path) -> None:
    assert "empty" in _error(write(tmp_path, "empty.pcap", b""))


def test_text_file(tmp_path: Path) -> None:
    assert "not a pcap" in _error(write(tmp_path, "notes.txt", b"hello, this is not a capture\nline two\n"))


def test_too_short_file(tmp_path: Path) -> None:
    _error(write(tmp_path, "short.pcap", b"\xd4\xc3"))


def test_pcap_header_cut_short(tmp_path: Path) -> None:
    _error(write(tmp_path, "hdr.pcap", pcap_bytes([])[:12]))


def test_directory(tmp_path: Path) -> None:
    d = tmp_path / "adir"
    d.mkdir()
    assert "directory" in _error(d)


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in _error(tmp_path / "nope.pcap")


def test_gzip_of_text(tmp_path: Path) -> None:
    _error(write(tmp_path, "t.gz", gzip.compress(b"just some text, no capture in here")))
