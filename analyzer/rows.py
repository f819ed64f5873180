"""Rows the tracker keeps for the whole capture (finished connections, transitions, events, control segments),
collected block by block in a compact form.

Rows go into chunks of at least 4 MiB. A chunk is at glibc's mmap threshold (heap.pin_mmap_threshold) or above, so
it is mapped on its own (and numpy asks for huge pages for it): rows kept to the end do not pin the heap pages
around them, where each batch's arrays of a few hundred KiB come and go (a list of per-batch copies left 30-40 MB of
the heap unusable on the 2 M-packet bench capture). A full chunk is packed: each column is stored as its offset from
the column's minimum in the chunk, in the narrowest unsigned type that holds the chunk's range (frame of reference).
A finished connection's 105 int64 counters then take about 340 bytes instead of 840, and the rows of a capture about
2.7 times less memory. Packing is exact, and stack() gives back the original rows.

A packed chunk is then written to a Spill file (unlinked, in the temporary directory) and read back only when
the report is built, so while the capture is read what the analysis keeps of finished connections takes disk
and page cache instead of memory that grows with the capture's length. Where the file cannot be had or
written, chunks stay in memory.

Rows pickle without their spare and shared arrays. Spilled chunks refer to their Spill, which does not pickle by
value: a Spill opened before a fork is the same file in both processes, and forks.handoff() passes it by name.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

CHUNK_BYTES = 4 << 20
_NARROW = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))


class Spill:
    """An unlinked temporary file that full chunks are written to once packed: what the analysis keeps of
    finished connections then takes disk and page cache, which the kernel can reclaim, instead of memory that
    grows with the capture. Read back (with pread) only when the report is built."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="tcpa-rows-")  # noqa: SIM115 - open while rows refer to it
        self.size = 0

    @classmethod
    def open(cls) -> Spill | None:
        """A new spill file; None where there is none to be had (no pread/pwrite, no writable temp dir)."""
        if not (hasattr(os, "pread") and hasattr(os, "pwrite")):
            return None
        try:
            return cls()
        except OSError:
            return None

    def write(self, data: npt.NDArray[np.uint8]) -> int | None:
        """Append data; its offset, or None if it could not be written (disk full: it stays in memory)."""
        at = self.size
        try:
            done = 0
            view = data.data.cast("B")
            while done < len(view):
                done += os.pwrite(self.file.fileno(), view[done:], at + done)
        except OSError:
            return None
        self.size += len(view)
        return at

    def read(self, at: int, size: int) -> npt.NDArray[np.uint8]:
        data = os.pread(self.file.fileno(), size, at)
        if len(data) != size:
            raise OSError(f"rows spill file: read {len(data)} of {size} bytes at {at}")
        return np.frombuffer(data, np.uint8)


@dataclass(frozen=True, slots=True)
class Packed:
    """One full chunk of 8-byte rows, column by column in one buffer: each column's minimum and its offsets
    from it (or the column as it was, where the range needs 64 bits). The buffer is in memory, or in a Spill
    file at `at`."""

    rows: int
    dtype: np.dtype[Any]
    base: npt.NDArray[np.int64]
    top: npt.NDArray[np.int64]  # each column's largest value (as int64): drop() needs no read of the buffer
    types: tuple[np.dtype[Any], ...]
    buf: npt.NDArray[np.uint8] | None
    spill: Spill | None = None
    at: int = 0

    @classmethod
    def of(cls, chunk: npt.NDArray[Any], spill: Spill | None = None) -> Packed:
        v = chunk.view(np.int64)
        lo, hi = v.min(axis=0), v.max(axis=0)
        span = hi.view(np.uint64) - lo.view(np.uint64)  # wraps: exact as unsigned
        types = tuple(next((t for t in _NARROW if s <= np.iinfo(t).max), np.dtype(np.int64)) for s in span.tolist())
        base = np.where([t.itemsize < 8 for t in types], lo, 0)
        buf = np.empty(len(v) * sum(t.itemsize for t in types), np.uint8)
        at = 0
        for j, t in enumerate(types):
            buf[at:at + len(v) * t.itemsize].view(t)[:] = v[:, j] - base[j]  # < 2**32: no int64 overflow
            at += len(v) * t.itemsize
        if spill is not None and (where := spill.write(buf)) is not None:
            return cls(len(v), chunk.dtype, base, hi, types, None, spill, where)
        return cls(len(v), chunk.dtype, base, hi, types, buf)

    def __len__(self) -> int:
        return self.rows

    @property
    def nbytes(self) -> int:
        """The packed size."""
        return self.rows * sum(t.itemsize for t in self.types)

    def _bytes(self, start: int = 0, size: int | None = None) -> npt.NDArray[np.uint8]:
        size = self.nbytes - start if size is None else size
        if self.buf is not None:
            return self.buf[start:start + size]
        assert self.spill is not None
        return self.spill.read(self.at + start, size)

    def column(self, j: int) -> npt.NDArray[np.int64]:
        """Column j alone, as int64."""
        at = self.rows * sum(t.itemsize for t in self.types[:j])
        t = self.types[j]
        out: npt.NDArray[np.int64] = self._bytes(at, self.rows * t.itemsize).view(t).astype(np.int64) + self.base[j]
        return out

    def unpack(self, out: npt.NDArray[Any] | None = None) -> npt.NDArray[Any]:
        """The chunk's rows (into `out`, if given)."""
        if out is None:
            out = np.empty((self.rows, len(self.types)), self.dtype)
        v = out.view(np.int64)
        buf = self._bytes()
        at = 0
        for j, t in enumerate(self.types):
            np.add(buf[at:at + self.rows * t.itemsize].view(t), self.base[j], out=v[:, j], casting="unsafe")
            at += self.rows * t.itemsize
        return out


class Rows:
    """Rows of one width and dtype, appended block by block, kept in chunks (full ones packed).

    spill: packed chunks go to a Spill file, this one (which several Rows may share) or one opened with the
    first; False: they stay in memory.
    """

    def __init__(self, width: int, dtype: type, spill: bool | Spill = True) -> None:
        self.width, self.dtype = width, np.dtype(dtype)
        self.cap = max(1, -(-CHUNK_BYTES // (width * self.dtype.itemsize)))  # at least CHUNK_BYTES: mapped
        self.chunks: list[npt.NDArray[Any] | Packed] = []
        self.fill = 0  # rows used in the last chunk
        self.spill = spill is not False
        self._spill: Spill | None = spill if isinstance(spill, Spill) else None
        self._spare: npt.NDArray[Any] | None = None  # a packed chunk's array, to be the next chunk
        self._lent: npt.NDArray[Any] | None = None  # the last chunk, if a copy() shares it: never reused

    def __len__(self) -> int:
        return sum(map(len, self.chunks[:-1])) + self.fill if self.chunks else 0

    def __getstate__(self) -> dict[str, Any]:
        """The rows as they stand, the open chunk cut to its rows (a spare array is not worth sending)."""
        state = {**self.__dict__, "chunks": self._parts(), "_spare": None, "_lent": None}
        state["fill"] = len(state["chunks"][-1]) if state["chunks"] else 0
        return state

    def append(self, block: npt.NDArray[Any]) -> None:
        at = 0
        while at < len(block):
            if not self.chunks or self.fill == len(self.chunks[-1]):
                self._seal()
                self.chunks.append(self._spare if self._spare is not None else np.empty((self.cap, self.width),
                                                                                        self.dtype))
                self._spare, self.fill = None, 0
            last = self.chunks[-1]
            assert isinstance(last, np.ndarray)
            k = min(len(last) - self.fill, len(block) - at)
            last[self.fill:self.fill + k] = block[at:at + k]
            self.fill += k
            at += k

    def _seal(self) -> None:
        """Pack the last chunk, now full (8-byte rows only: narrower ones gain nothing). Its array then holds the
        next chunk's rows (unless a copy shares it): a fresh one is 4 MiB of pages faulted in and zeroed."""
        if self.chunks and isinstance(last := self.chunks[-1], np.ndarray) and self.dtype.itemsize == 8:
            if self.spill and self._spill is None:
                self._spill = Spill.open()
                self.spill = self._spill is not None
            self.chunks[-1] = Packed.of(last, self._spill)
            if last is self._lent:  # a copy still reads it: let go of it here, take a fresh one next
                self._lent = None
            else:
                self._spare = last

    def _parts(self) -> list[npt.NDArray[Any] | Packed]:
        if not self.chunks:
            return []
        last = self.chunks[-1]
        assert isinstance(last, np.ndarray)  # only a full chunk, followed by another, is packed
        return [*self.chunks[:-1], last[:self.fill]]

    def copy(self) -> Rows:
        """A copy that shares the rows so far (never changed once written) and appends elsewhere."""
        out = Rows(self.width, self.dtype.type, self._spill or self.spill)
        out.chunks = self._parts()
        if self.chunks:  # the open chunk (an array: only full chunks are packed), now shared
            self._lent, out._lent = self.chunks[-1], out.chunks[-1]  # type: ignore[assignment]
        out.fill = len(out.chunks[-1]) if out.chunks else 0
        return out

    def drop(self, col: int, low: int, conns: npt.NDArray[np.int64]) -> None:
        """Drop the rows whose column `col` holds one of `conns` (all >= low). The chunks before the first that
        can hold one stay as they are; only the rest are unpacked and collected again."""
        parts = self._parts()
        tops = [int(p.top[col] if isinstance(p, Packed) else p[:, col].max()) if len(p) else low - 1 for p in parts]
        first = next((i for i, top in enumerate(tops) if top >= low), len(parts))
        if first == len(parts):
            return
        self.chunks = parts[:first]  # full chunks
        self.fill = len(self.chunks[-1]) if self.chunks else 0
        for part in parts[first:]:
            rows = part.unpack() if isinstance(part, Packed) else part
            self.append(rows[~np.isin(rows[:, col], conns)])

    def column(self, j: int) -> npt.NDArray[np.int64]:
        """Column j of every row, as int64."""
        parts = self._parts()
        return np.concatenate([p.column(j) if isinstance(p, Packed) else p[:, j].astype(np.int64) for p in parts]) \
            if parts else np.empty(0, np.int64)

    def stack(self, order: npt.NDArray[np.intp] | None = None) -> npt.NDArray[Any]:
        """All rows as one array (in `order`, a permutation of the rows, if given). The chunks are let go as
        they are unpacked (the Rows is emptied), so the rows are never held twice: reordered here, a chunk at
        a time, they need no second sorted copy."""
        parts = self._parts()
        n = sum(map(len, parts))
        out: npt.NDArray[Any] = np.empty((n, self.width), self.dtype)
        self.chunks, self.fill = [], 0
        where = None
        if order is not None:
            where = np.empty(n, np.intp)
            where[order] = np.arange(n)  # where each row goes
        at = 0
        parts.reverse()
        while parts:
            part = parts.pop()
            if where is None:
                if isinstance(part, Packed):
                    part.unpack(out[at:at + len(part)])
                else:
                    out[at:at + len(part)] = part
            else:
                out[where[at:at + len(part)]] = part.unpack() if isinstance(part, Packed) else part
            at += len(part)
        return out
