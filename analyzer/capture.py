"""Capture readers: classic pcap and pcapng, plain or gzip-compressed, from a file or a stream, in batches.

The file is read in large chunks (or mapped into memory, where the caller asks); a compiled scanner walks the
record headers of a chunk and yields the frames it holds whole as one FrameBatch whose `data` is a view of the
chunk (no per-packet copies). A record cut by the
chunk's end is carried into the next chunk; a record cut by the end of the file ends the capture with a
`truncated_file` notice, and everything before it is analysed.

Formats: pcap (magic a1b2c3d4 microseconds, a1b23c4d nanoseconds, either byte order, and Kuznetzov's patched
a1b2cd34), pcapng (every Interface Description Block with its own link type, if_tsresol and if_tsoffset;
Enhanced, Simple and obsolete Packet Blocks; section and packet comments; several sections).
"""

from __future__ import annotations

import gzip
import io
import mmap
import os
import stat
import struct
import sys
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from .model import CaptureError, CaptureFacts, FrameBatch, Interface, Notice
from .native import entry, kernel

CHUNK = 8 << 20
NS = 1_000_000_000
LINKTYPE_MASK = 0x03FF_FFFF  # upper bits of the pcap link-type field carry FCS information

PCAP_MAGICS = {
    0xA1B2C3D4: ("pcap", 1000, 16), 0xA1B23C4D: ("pcap-nsec", 1, 16), 0xA1B2CD34: ("pcap-kuznetzov", 1000, 24),
}
PCAPNG_SHB = 0x0A0D0D0A
BYTE_ORDER_MAGIC = 0x1A2B3C4D
# pcapng block types
IDB, PB, SPB, EPB = 0x00000001, 0x00000002, 0x00000003, 0x00000006
OPT_COMMENT, IF_NAME, IF_DESCRIPTION, IF_TSRESOL, IF_TSOFFSET = 1, 2, 3, 9, 14
MAX_BLOCK = 64 << 20  # a larger block length is corruption, not data
NO_TS = -(1 << 63)  # a Simple Packet Block's timestamp: none (the previous frame's is used)
TS_LIMIT = 1 << 62  # timestamps are clamped to +-2**62 ns (year 2116) so arithmetic on them cannot overflow
# A frame stamped this long after the analysis runs is "far in the future": no drifting clock is that wrong.
FUTURE_SLACK_NS = 20 * 365 * 86400 * NS


@kernel()
def _u32(buf: npt.NDArray[np.uint8], pos: int, big: bool) -> int:
    if big:
        return (np.int64(buf[pos]) << 24) | (np.int64(buf[pos + 1]) << 16) | (np.int64(buf[pos + 2]) << 8) | np.int64(buf[pos + 3])
    return (np.int64(buf[pos + 3]) << 24) | (np.int64(buf[pos + 2]) << 16) | (np.int64(buf[pos + 1]) << 8) | np.int64(buf[pos])


@entry("u1[::1], i8, i8, b1, i8, i8, i8, i8[::1], i4[::1], i4[::1], i8[::1]", returns="UniTuple(i8, 3)")
def scan_pcap(buf: npt.NDArray[np.uint8], pos: int, end: int, big: bool, hdr_len: int, frac_ns: int,
              limit: int, offset: npt.NDArray[np.int64], caplen: npt.NDArray[np.int32],
              wirelen: npt.NDArray[np.int32], ts: npt.NDArray[np.int64]) -> tuple[int, int, int]:
    """Walk pcap records from pos; returns (records read, position after them, status).

    status 0: stopped at `limit` or exactly at `end`; 1: the next record is cut by `end`;
    2: the next record header is corrupt (caplen over 256 MiB).
    """
    n = 0
    while n < limit:
        if pos + hdr_len > end:
            return n, pos, 1 if pos < end else 0
        cap = _u32(buf, pos + 8, big)
        if cap > (256 << 20):
            return n, pos, 2
        if pos + hdr_len + cap > end:
            return n, pos, 1
        ts[n] = _u32(buf, pos, big) * 1_000_000_000 + _u32(buf, pos + 4, big) * frac_ns
        caplen[n] = cap
        wirelen[n] = _u32(buf, pos + 12, big)
        offset[n] = pos + hdr_len
        pos += hdr_len + cap
        n += 1
    return n, pos, 0


@kernel()
def _pcapng_ts(raw: int, res_kind: int, res: int, off_ns: int) -> int:
    # res_kind 0: 10**-res seconds per unit; 1: 2**-res seconds per unit. raw is 64 bits: a value past 2**63
    # (negative here) or one whose nanoseconds would overflow is clamped to TS_LIMIT, reported as future.
    limit = np.int64(1) << 62
    if raw < 0:
        return limit
    if res_kind == 0:
        if res <= 9:
            mult = np.int64(10) ** (9 - res)
            if raw > limit // mult:
                return limit
            ns = raw * mult
        else:
            ns = raw // np.int64(10) ** (res - 9)
    else:
        whole = raw >> res
        if whole > limit // 1_000_000_000:
            return limit
        frac = raw - (whole << res)
        if res <= 33:
            ns = whole * 1_000_000_000 + ((frac * 1_000_000_000) >> res)
        else:  # frac * 10**9 would overflow: drop the bits finer than 2**-33 s first
            ns = whole * 1_000_000_000 + (((frac >> (res - 33)) * 1_000_000_000) >> 33)
    return max(-limit, min(limit, ns + off_ns))


@entry("u1[::1], i8, i8, b1, i4[::1], i8[::1], i8[::1], i8[::1], i8, i8, i8[::1], i4[::1], i4[::1], i8[::1], "
       "i4[::1], i8[::1]", returns="UniTuple(i8, 3)")
def scan_pcapng(buf: npt.NDArray[np.uint8], pos: int, end: int, big: bool, if_link: npt.NDArray[np.int32],
                if_res_kind: npt.NDArray[np.int64], if_res: npt.NDArray[np.int64], if_off: npt.NDArray[np.int64],
                snap0: int, limit: int, offset: npt.NDArray[np.int64], caplen: npt.NDArray[np.int32],
                wirelen: npt.NDArray[np.int32], ts: npt.NDArray[np.int64],
                link: npt.NDArray[np.int32], trail: npt.NDArray[np.int64]) -> tuple[int, int, int]:
    """Walk Enhanced/Simple/obsolete Packet Blocks from pos; stop at any other block for the Python side.

    snap0 is interface 0's snaplen (0: none), which with the original length gives a Simple Packet Block's
    captured length (its data is padded to 32 bits).
    status 0: limit or end reached; 1: the next block is cut by `end`; 2: corrupt block length;
    3: a block the caller must handle (interface, section, comments...); 4: unknown interface id.
    trail counts packet blocks whose trailing total length disagrees with the leading one ([count, index of
    the first in this call or -1]); the leading length is followed.
    """
    n = 0
    n_if = len(if_link)
    while n < limit:
        if pos + 12 > end:
            return n, pos, 1 if pos < end else 0
        btype = _u32(buf, pos, big)
        if btype == 0x0A0D0D0A:  # a section header may switch the byte order: its length is read by the caller
            return n, pos, 3
        blen = _u32(buf, pos + 4, big)
        if blen < 12 or blen % 4 != 0 or blen > (64 << 20):
            return n, pos, 2
        if pos + blen > end:
            return n, pos, 1
        if (btype == 6 or btype == 2 or btype == 3) and _u32(buf, pos + blen - 4, big) != blen:
            trail[0] += 1
            if trail[1] < 0:
                trail[1] = n
        if btype == 6 or btype == 2:
            if blen < 32:
                return n, pos, 2
            iface = _u32(buf, pos + 8, big)
            if btype == 2:  # obsolete Packet Block: a 16-bit interface id, then a 16-bit drops count
                iface = iface >> 16 if big else iface & 0xFFFF
            if iface >= n_if:
                return n, pos, 4
            raw = (_u32(buf, pos + 12, big) << 32) | _u32(buf, pos + 16, big)
            cap = _u32(buf, pos + 20, big)
            if 28 + cap > blen - 4:
                return n, pos, 2
            ts[n] = _pcapng_ts(raw, if_res_kind[iface], if_res[iface], if_off[iface])
            caplen[n] = cap
            wirelen[n] = _u32(buf, pos + 24, big)
            offset[n] = pos + 28
            link[n] = if_link[iface]
        elif btype == 3:
            if n_if == 0:
                return n, pos, 4
            wire = _u32(buf, pos + 8, big)
            cap = min(wire, blen - 16)
            if snap0 > 0:  # the captured length is the smaller of the original length and interface 0's snaplen
                cap = min(cap, snap0)
            ts[n] = -(np.int64(1) << 63)  # NO_TS: the caller fills in the previous frame's
            caplen[n] = cap
            wirelen[n] = wire
            offset[n] = pos + 12
            link[n] = if_link[0]
        else:
            return n, pos, 3
        pos += blen
        n += 1
    return n, pos, 0


def _options(body: bytes, big: bool) -> list[tuple[int, bytes]]:
    """The (code, value) list of a pcapng option block; stops quietly at opt_endofopt or a cut option."""
    fmt = ">HH" if big else "<HH"
    out, pos = [], 0
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(fmt, body, pos)
        if code == 0:
            break
        out.append((code, body[pos + 4:pos + 4 + length]))
        pos += 4 + length + (-length % 4)
    return out


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode("utf-8", "replace")


def _tsresol(value: bytes) -> tuple[int, int]:
    """(kind, exponent) of if_tsresol: kind 0 for a power of ten, 1 for a power of two."""
    if not value:
        return 0, 6
    return (1 if value[0] & 0x80 else 0), value[0] & 0x7F


class Capture:
    """An open capture: iterate for FrameBatches; `facts` fills in as it is read."""

    def __init__(self, stream: BinaryIO, source: str, compressed: bool, batch_frames: int,
                 reuse: bool = False, mapped: int | None = None) -> None:
        self.stream = stream
        self.facts = CaptureFacts(source=source, compressed=compressed)
        self.batch_frames = max(1, batch_frames)
        self.buf: bytes | memoryview = b""
        self.pos = 0
        self.eof = False
        self.frame = 0
        self.last_ts = 0
        self._sizes = np.empty(0, np.int64)
        self._tallies: dict[str, tuple[int, int, int]] = {}
        self._stream_error = ""
        self._trail = np.array([0, -1], np.int64)
        self._future_ns = time.time_ns() + FUTURE_SLACK_NS
        # a plain file is read straight into the buffer (_fill_direct)
        self._readinto: Callable[[memoryview], int] | None = None if compressed else getattr(stream, "readinto", None)
        self._reuse: npt.NDArray[np.uint8] | None = np.empty(0, np.uint8) if reuse else None  # see open_capture
        self._mapped = mapped  # a plain file's descriptor, whose chunks are mapped (_fill_mapped), not read
        self._base = 0  # where in that file the buffer starts

    # --- buffer ------------------------------------------------------------------------------------------
    def _fill(self, need: int) -> bool:
        """Make sure `need` bytes are buffered from pos; False when the stream ends first."""
        have = len(self.buf) - self.pos
        if have >= need or self.eof:
            return have >= need
        if self._mapped is not None:
            return self._fill_mapped(self._mapped, need)
        if self._readinto is not None:
            return self._fill_direct(self._readinto, need, have)
        parts = [self.buf[self.pos:]]
        while have < need:
            chunk = self._read(need, have)
            if chunk is None:
                break
            if not chunk:
                self.eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        self.buf = b"".join(parts)
        self.pos = 0
        return have >= need

    def _fill_direct(self, readinto: Callable[[memoryview], int], need: int, have: int) -> bool:
        """_fill for a plain file: read straight into a new buffer behind what is left of the old one (no
        chunks joined: one copy fewer of every byte). With `reuse`, the buffer is one and the same, what is left
        moved to its front and the rest filled: no fresh pages faulted in and zeroed for every batch."""
        size = have + max(CHUNK, need - have)
        if self._reuse is None:
            buf = np.empty(size, np.uint8)
        else:
            if len(self._reuse) < size:
                self._reuse = np.empty(max(size, 2 * CHUNK), np.uint8)
            buf = self._reuse
        buf[:have] = np.frombuffer(self.buf, np.uint8, count=have, offset=self.pos)  # overlap-safe
        view = buf.data
        while have < need:
            try:
                got = readinto(view[have:])
            except OSError as err:
                self._stream_error = str(err) or type(err).__name__  # reported with the frame it cut
                got = 0
            if not got:
                self.eof = True
                break
            have += got
        self.buf, self.pos = view[:have], 0
        return have >= need

    def _fill_mapped(self, fd: int, need: int) -> bool:
        """_fill for a plain file opened by its name with `mapped` (see open_capture): the next CHUNK of it (or
        `need` bytes) mapped into memory where read() copied it, 75 of the reading thread's 380 ms on the 2
        M-packet bench capture. Each chunk is unmapped once nothing holds its batch any more: the mapped pages
        stay few (those of a chunk or two) and are the page cache's, not a copy. The mapping is private and
        writable only because the compiled scanners take writable arrays; nothing writes to it."""
        at = self._base + self.pos
        start = at - at % mmap.ALLOCATIONGRANULARITY
        size = os.fstat(fd).st_size
        end = min(size, at + max(CHUNK, need))
        self.eof = end == size  # as a read() at the end: a file that grows later is not followed
        chunk = mmap.mmap(fd, end - start, access=mmap.ACCESS_COPY, offset=start) if end > start else b""
        self.buf, self.pos, self._base = memoryview(chunk), at - start, start
        return end - at >= need

    def _read(self, need: int, have: int) -> bytes | None:
        """The next chunk toward `need` buffered bytes (`have` so far): b"" at the end of the stream, None to
        stop gathering and hand over what is buffered."""
        # A compressed stream is read with read1: read() would drop everything it decompressed in a call
        # that ends in the error of a cut gzip file.
        read = self.stream.read1 if self.facts.compressed else self.stream.read  # type: ignore[attr-defined]
        try:
            return read(max(CHUNK, need - have))
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            self._stream_error = str(err) or type(err).__name__  # reported with the frame it cut
            return b""

    def _notice(self, frame: int, kind: str, message: str) -> None:
        self.facts.notices.append(Notice(frame, kind, message))

    def _tally(self, kind: str, count: int, first: int, what: str) -> None:
        """One notice per kind however often it happens: a running count and the first frame."""
        if count <= 0:
            return
        prev = self._tallies.get(kind)
        if prev is None:
            total, frame, index = count, first, len(self.facts.notices)
            self.facts.notices.append(Notice(0, kind, ""))
        else:
            total, frame, index = prev[0] + count, min(prev[1], first), prev[2]
        self._tallies[kind] = (total, frame, index)
        self.facts.notices[index] = Notice(frame, kind, f"{total} {'frame' if total == 1 else 'frames'} {what} "
                                                        f"(first: frame {frame})")

    def _cut(self, what: str) -> None:
        left = len(self.buf) - self.pos
        why = f"; reading stopped: {self._stream_error}" if self._stream_error else ""
        self._notice(self.frame + 1, "truncated_file",
                     f"capture ends inside {what} (frame {self.frame + 1}, {left} bytes left{why}): "
                     f"analysed the {self.frame} frames before the cut")

    # --- iteration ---------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[FrameBatch]:
        if not self._fill(4):
            if self._stream_error:
                raise CaptureError(f"{self.facts.source}: unreadable compressed stream ({self._stream_error})")
            raise CaptureError(f"{self.facts.source}: empty file" if not len(self.buf)
                               else f"{self.facts.source}: too short to be a capture")
        magic_le = struct.unpack_from("<I", self.buf, self.pos)[0]
        magic_be = struct.unpack_from(">I", self.buf, self.pos)[0]
        if magic_le == PCAPNG_SHB:
            yield from self._pcapng()
        elif magic_le in PCAP_MAGICS or magic_be in PCAP_MAGICS:
            yield from self._pcap(magic_be in PCAP_MAGICS)
        else:
            raise CaptureError(f"{self.facts.source}: not a pcap or pcapng capture "
                               f"(starts with {bytes(self.buf[self.pos:self.pos + 4]).hex()})")

    def _arrays(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int32],
                               npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        n = self.batch_frames
        return (np.empty(n, np.int64), np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.int64),
                np.empty(n, np.int32))

    def _batch(self, data: npt.NDArray[np.uint8], n: int, offset: npt.NDArray[np.int64],
               caplen: npt.NDArray[np.int32], wirelen: npt.NDArray[np.int32], ts: npt.NDArray[np.int64],
               link: npt.NDArray[np.int32]) -> FrameBatch:
        ts = ts[:n].copy()
        if n and (ts == NO_TS).any():  # Simple Packet Blocks carry no time: use the previous frame's
            idx = np.where(ts != NO_TS, np.arange(n), -1)
            np.maximum.accumulate(idx, out=idx)
            ts = np.where(idx >= 0, ts[np.maximum(idx, 0)], self.last_ts)
        frames = np.arange(self.frame + 1, self.frame + n + 1, dtype=np.int64)
        batch = FrameBatch(data=data, offset=offset[:n].copy(), caplen=caplen[:n].copy(),
                           wirelen=wirelen[:n].copy(), ts_ns=ts, linktype=link[:n].copy(), frame=frames)
        self._account(batch)
        return batch

    def _account(self, batch: FrameBatch) -> None:
        n = len(batch)
        if not n:
            return
        facts = self.facts
        if not facts.frames:
            facts.first_ns = int(batch.ts_ns[0])
        facts.frames += n
        facts.bytes_captured += int(batch.caplen.sum())
        facts.first_ns = min(facts.first_ns, int(batch.ts_ns.min()))
        facts.last_ns = max(facts.last_ns, int(batch.ts_ns.max()))
        prev = np.concatenate([[self.last_ts if self.frame else batch.ts_ns[0]], batch.ts_ns[:-1]])
        self.last_ts = int(batch.ts_ns[-1])
        self.frame += n
        checks = [
            ("caplen_over_wirelen", batch.wirelen < batch.caplen, "claim more captured bytes than were on the wire"),
            ("empty_record", batch.caplen == 0, "are records with no captured bytes (skipped)"),
            # Several pcapng interfaces interleave their frames in arrival order: only one interface's frames
            # must be in time order.
            ("timestamp_backwards", (batch.ts_ns < prev) & (len(facts.interfaces) == 1), ("are stamped earlier than the frame before them "
                                                         "(analysed in file order)")),
            ("timestamp_future", batch.ts_ns > self._future_ns, ("are stamped more than 20 years after the time of "
                                                                "analysis (clock wrong or header corrupt)")),
        ]
        snaps = [i.snaplen for i in facts.interfaces]
        if snaps and min(snaps) > 0:  # a snap length of 0 means none
            checks.append(("caplen_over_snaplen", batch.caplen > max(snaps),
                           f"hold more bytes than the snap length ({max(snaps)}): the header lies"))
        for kind, bad, what in checks:
            if bad.any():
                self._tally(kind, int(bad.sum()), int(batch.frame[np.argmax(bad)]), what)

    # --- classic pcap ------------------------------------------------------------------------------------
    def _pcap(self, big: bool) -> Iterator[FrameBatch]:
        if not self._fill(24):
            raise CaptureError(f"{self.facts.source}: pcap file header cut short")
        e = ">" if big else "<"
        magic, _, _, _, _, snaplen, link = struct.unpack_from(e + "IHHiIII", self.buf, self.pos)
        name, frac_ns, hdr_len = PCAP_MAGICS[magic]
        self.facts.file_format = name
        linktype = link & LINKTYPE_MASK
        self.facts.interfaces.append(Interface(linktype=linktype, snaplen=snaplen, ts_resolution_ns=float(frac_ns)))
        self.pos += 24
        offset, caplen, wirelen, ts, link_arr = self._arrays()
        link_arr[:] = linktype
        while True:
            self._fill(CHUNK)
            data = np.frombuffer(self.buf, np.uint8)
            n, pos, status = scan_pcap(data, self.pos, len(data), big, hdr_len, frac_ns, self.batch_frames,
                                       offset, caplen, wirelen, ts)
            self.pos = pos
            if n:
                yield self._batch(data, n, offset, caplen, wirelen, ts, link_arr)
            if status == 2:
                self._notice(self.frame + 1, "corrupt_record",
                             f"record header of frame {self.frame + 1} is corrupt: stopped reading there")
                return
            if n == 0 and not self._more(status, "a packet record"):
                return

    def _more(self, status: int, what: str) -> bool:
        """After a scan that read nothing: buffer more and go on, or end (noting a cut record)."""
        if self._fill(len(self.buf) - self.pos + 1):
            return True
        if status == 1 or len(self.buf) > self.pos:
            self._cut(what)
        elif self._stream_error:  # the compressed stream broke off exactly between two records
            self._notice(self.frame + 1, "truncated_file",
                         f"compressed capture cut short before frame {self.frame + 1} (reading stopped: "
                         f"{self._stream_error}): analysed the {self.frame} frames before the cut")
        return False

    # --- pcapng ------------------------------------------------------------------------------------------
    def _pcapng(self) -> Iterator[FrameBatch]:
        self.facts.file_format = "pcapng"
        big = False
        links: list[int] = []
        res_kind: list[int] = []
        res: list[int] = []
        offs: list[int] = []
        out = self._arrays()
        while True:
            self._fill(CHUNK)
            data = np.frombuffer(self.buf, np.uint8)
            n, pos, status = scan_pcapng(
                data, self.pos, len(data), big, np.array(links, np.int32), np.array(res_kind, np.int64),
                np.array(res, np.int64), np.array(offs, np.int64),
                self.facts.interfaces[len(self.facts.interfaces) - len(links)].snaplen if links else 0,
                self.batch_frames, *out, self._trail)
            self.pos = pos
            if self._trail[0]:
                self._tally("block_length_mismatch", int(self._trail[0]), self.frame + 1 + int(self._trail[1]),
                            "are in pcapng blocks whose trailing total length disagrees with the leading one "
                            "(the leading length was followed)")
                self._trail[:] = (0, -1)
            if n:
                yield self._batch(data, n, *out)
            if status == 2:
                self._notice(self.frame + 1, "corrupt_record",
                             f"pcapng block after frame {self.frame} has a corrupt length: stopped reading there")
                return
            if status == 4:
                raise CaptureError(f"{self.facts.source}: packet block names an interface that was never described "
                                   f"(frame {self.frame + 1})")
            if status == 3:
                if not self._fill(12):
                    self._cut("a pcapng block")
                    return
                head = self.buf[self.pos:self.pos + 12]
                if struct.unpack_from("<I", head)[0] == PCAPNG_SHB:
                    order = struct.unpack_from("<I", head, 8)[0]
                    if order not in (BYTE_ORDER_MAGIC, 0x4D3C2B1A):
                        self._notice(self.frame + 1, "corrupt_record", "pcapng section header with a bad byte-order magic")
                        return
                    big = order != BYTE_ORDER_MAGIC
                    links, res_kind, res, offs = [], [], [], []  # interfaces are per section
                blen = struct.unpack_from(">I" if big else "<I", head, 4)[0]
                if blen < 12 or blen > MAX_BLOCK or blen % 4:
                    self._notice(self.frame + 1, "corrupt_record", "pcapng block with a corrupt length: stopped reading there")
                    return
                if not self._fill(blen):
                    self._cut("a pcapng block")
                    return
                block = bytes(self.buf[self.pos:self.pos + blen])
                if struct.unpack_from(">I" if big else "<I", block, blen - 4)[0] != blen:
                    self._notice(self.frame + 1, "block_length_mismatch",
                                 f"pcapng block before frame {self.frame + 1}: trailing total length disagrees "
                                 f"with the leading {blen} (the leading length was followed)")
                self.pos += blen
                self._block(block, big, links, res_kind, res, offs)
                continue
            if n == 0 and not self._more(status, "a pcapng block"):
                return

    def _block(self, block: bytes, big: bool, links: list[int], res_kind: list[int], res: list[int],
               offs: list[int]) -> None:
        """Section, interface and other non-packet blocks: record what they say."""
        e = ">" if big else "<"
        btype = struct.unpack_from(e + "I", block)[0]
        body = block[8:-4]
        if btype == PCAPNG_SHB:
            for code, value in _options(body[16:], big):
                if code == OPT_COMMENT:
                    self.facts.comments.append(_text(value))
        elif btype == IDB:
            if len(body) < 8:
                self._notice(self.frame + 1, "corrupt_record", "pcapng interface block too short")
                return
            linktype, _, snaplen = struct.unpack_from(e + "HHI", body)
            iface = Interface(linktype=linktype, snaplen=snaplen, ts_resolution_ns=1000.0)
            kind, exp, off = 0, 6, 0
            for code, value in _options(body[8:], big):
                if code == IF_NAME:
                    iface.name = _text(value)
                elif code == IF_DESCRIPTION:
                    iface.description = _text(value)
                elif code == IF_TSRESOL and value:
                    kind, exp = _tsresol(value)
                elif code == IF_TSOFFSET and len(value) >= 8:
                    off = max(-TS_LIMIT, min(TS_LIMIT, struct.unpack_from(e + "q", value)[0] * NS))
                elif code == OPT_COMMENT:
                    self.facts.comments.append(_text(value))
            if (kind == 0 and exp > 18) or (kind == 1 and exp > 62):
                self._notice(self.frame + 1, "bad_tsresol", f"interface {len(links)}: unusable if_tsresol, using microseconds")
                kind, exp = 0, 6
            iface.ts_resolution_ns = 10.0 ** (9 - exp) if kind == 0 else NS / 2.0 ** exp
            self.facts.interfaces.append(iface)
            links.append(linktype)
            res_kind.append(kind)
            res.append(exp)
            offs.append(off)
        # Name resolution, statistics, decryption secrets and custom blocks carry nothing tcpa reports.


def open_capture(path: str | os.PathLike[str], *, batch_frames: int = 1 << 16, reuse: bool = False,
                 mapped: bool = False) -> _Opened:
    """Open a capture file ("-" reads stdin); gzip compression is detected from the content.

    reuse: the batches share one read buffer, so a batch's `data` holds its frames only until the next batch
    is asked for (for a reader done with each batch by then, as the pipeline's decoder is): a fresh buffer of
    8-16 MiB per batch was 2 000-4 000 pages faulted in and zeroed each time.

    mapped: a plain file is mapped into memory rather than read (Capture._fill_mapped). A file cut shorter
    by someone else while it is mapped kills the process with SIGBUS where read() would have seen its end, so
    only a process that can die of it asks for this: the command line's forked reader, whose parent then
    reports it in one line.
    """
    return _Opened(os.fspath(path), batch_frames, reuse, mapped)


class _Opened:
    """Context manager around a Capture that closes its file, and turns I/O errors into CaptureError."""

    def __init__(self, path: str, batch_frames: int, reuse: bool = False, mapped: bool = False) -> None:
        self.path = path
        self.batch_frames = batch_frames
        self.reuse = reuse
        self.mapped = mapped
        self.raw: BinaryIO | None = None

    def __enter__(self) -> Capture:
        path = self.path
        try:
            if path == "-":
                raw: BinaryIO = sys.stdin.buffer
            else:
                if os.path.isdir(path):
                    raise CaptureError(f"{path}: is a directory, not a capture file")
                raw = open(path, "rb")
                self.raw = raw
        except FileNotFoundError:
            raise CaptureError(f"{path}: no such file") from None
        except PermissionError:
            raise CaptureError(f"{path}: permission denied") from None
        except OSError as err:
            raise CaptureError(f"{path}: cannot open: {err.strerror or err}") from None
        stream = io.BufferedReader(raw) if not isinstance(raw, io.BufferedReader) else raw  # type: ignore[type-var]
        head = stream.peek(2)[:2]
        compressed = head == b"\x1f\x8b"
        if compressed:
            stream = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
        fd = self.raw.fileno() if self.mapped and self.raw is not None and not compressed else None
        plain = fd is not None and stat.S_ISREG(os.fstat(fd).st_mode)
        return Capture(stream, path, compressed, self.batch_frames, self.reuse, fd if plain else None)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.raw is not None:
            self.raw.close()
