"""The flow table: every segment's 4-tuple mapped to a slot of the engine's state matrix.

A 4-tuple is stored in canonical order, lower (address, port) first, so both directions share one slot; the
segment's direction is kept as `a_is_src`. Per batch the work is vectorized: a 64-bit hash of each key, one
`np.unique` over the hashes, and one dict lookup per distinct 4-tuple (not per packet). Slots are recycled
when the engine retires a connection, so the table follows live connections, not the capture's length.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .segments import SegmentTable

KEY_WIDTH = 5  # a_hi, a_lo, b_hi, b_lo, a_port << 16 | b_port

_M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)


def canonical_keys(seg: SegmentTable) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """Each segment's canonical 4-tuple key (n, 5) and 1 where its source is the key's first endpoint."""
    src_first = (seg.src_hi < seg.dst_hi) | (
        (seg.src_hi == seg.dst_hi)
        & ((seg.src_lo < seg.dst_lo) | ((seg.src_lo == seg.dst_lo) & (seg.sport <= seg.dport))))
    keys = np.empty((len(seg), KEY_WIDTH), dtype=np.uint64)
    keys[:, 0] = np.where(src_first, seg.src_hi, seg.dst_hi)
    keys[:, 1] = np.where(src_first, seg.src_lo, seg.dst_lo)
    keys[:, 2] = np.where(src_first, seg.dst_hi, seg.src_hi)
    keys[:, 3] = np.where(src_first, seg.dst_lo, seg.src_lo)
    sport, dport = seg.sport.astype(np.uint64), seg.dport.astype(np.uint64)
    keys[:, 4] = np.where(src_first, (sport << np.uint64(16)) | dport, (dport << np.uint64(16)) | sport)
    return keys, src_first.astype(np.int64)


def _hash(keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """A 64-bit mix of each key row (splitmix-style); collisions are detected, not assumed away."""
    h = np.zeros(len(keys), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for col in range(KEY_WIDTH):
            h = (h ^ keys[:, col]) * _M1
            h ^= h >> np.uint64(29)
            h *= _M2
    return h


def unique_rows(keys: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Index of the first row of each distinct key, and each row's position in that list."""
    _, first, inverse = np.unique(_hash(keys), return_index=True, return_inverse=True)
    if not np.array_equal(keys, keys[first][inverse]):  # a hash collision: fall back to exact keys
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


Keyed = tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.intp], npt.NDArray[np.intp]]


def keyed(seg: SegmentTable) -> Keyed:
    """The table-independent part of FlowTable.assign (canonical keys, direction, distinct keys), which the
    decoding thread computes ahead of the tracker."""
    keys, a_is_src = canonical_keys(seg)
    if len(seg) == 0:
        return keys, a_is_src, np.zeros(0, np.intp), np.zeros(0, np.intp)
    first, inverse = unique_rows(keys)
    return keys, a_is_src, first, inverse


class FlowTable:
    """4-tuple -> slot, with a free list so retired slots are reused."""

    def __init__(self, capacity: int = 1024) -> None:
        self.slot_of: dict[bytes, int] = {}
        self.keys = np.zeros((capacity, KEY_WIDTH), dtype=np.uint64)
        self.free: list[int] = []
        self.used = 0

    @property
    def capacity(self) -> int:
        """Slots allocated (live or free)."""
        return len(self.keys)

    def assign(self, seg: SegmentTable, known: Keyed) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Slot of every segment (allocating new ones) and whether its source is the key's first endpoint,
        given keyed(seg)."""
        keys, a_is_src, first, inverse = known
        if len(seg) == 0:
            return np.zeros(0, np.int64), a_is_src
        distinct = keys[first]
        slots = np.fromiter((self._slot(row) for row in distinct), dtype=np.int64, count=len(distinct))
        return slots[inverse], a_is_src

    def _slot(self, row: npt.NDArray[np.uint64]) -> int:
        key = row.tobytes()
        slot = self.slot_of.get(key)
        if slot is None:
            slot = self.free.pop() if self.free else self._grow()
            self.slot_of[key] = slot
            self.keys[slot] = row
        return slot

    def _grow(self) -> int:
        if self.used == len(self.keys):
            self.keys = np.concatenate([self.keys, np.zeros_like(self.keys)])
        self.used += 1
        return self.used - 1

    def release(self, slots: npt.NDArray[np.int64]) -> None:
        """Forget the 4-tuples of these slots and make the slots available again."""
        for slot in slots.tolist():
            del self.slot_of[self.keys[slot].tobytes()]
            self.free.append(slot)
