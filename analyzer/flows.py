"""The flow table: every segment's 4-tuple mapped to a slot of the engine's state matrix.

A 4-tuple is stored in canonical order, lower (address, port) first, so both directions share one slot; the
segment's direction is kept as `a_is_src`. Per batch, one compiled pass (`batch_keys`) builds the keys and
finds the distinct ones with an open-addressing hash table, and then one dict lookup per distinct 4-tuple
(not per packet) gives its slot. Slots are recycled when the engine retires a connection, so the table
follows live connections, not the capture's length.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from .native import entry
from .segments import SegmentTable

KEY_WIDTH = 5  # a_hi, a_lo, b_hi, b_lo, a_port << 16 | b_port
U64: TypeAlias = npt.NDArray[np.uint64]
I64: TypeAlias = npt.NDArray[np.int64]


@entry("u8[::1], u8[::1], u8[::1], u8[::1], u2[::1], u2[::1], u8[:, ::1], i8[::1], i8[::1], i8[::1]", returns="i8")
def batch_keys(src_hi: U64, src_lo: U64, dst_hi: U64, dst_lo: U64, sport: npt.NDArray[np.uint16],
               dport: npt.NDArray[np.uint16], keys: U64, a_is_src: I64, inverse: I64, table: I64) -> int:
    """The batch's distinct canonical 4-tuple keys, in order of first appearance, into keys (n x 5: only
    those rows are written, so the rest of it is never touched); each row's index among them into `inverse`,
    and 1 in a_is_src where its source is the key's first endpoint. `table` is scratch: a power of two of at
    least twice n entries, all -1. Returns the number of distinct keys. Keys are compared whole, so hash
    collisions cost only a probe."""
    mask = len(table) - 1
    m1, m2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)
    distinct = 0
    for i in range(len(src_hi)):
        sh, sl, dh, dl = src_hi[i], src_lo[i], dst_hi[i], dst_lo[i]
        sp, dp = np.uint64(sport[i]), np.uint64(dport[i])
        src_first = sh < dh or (sh == dh and (sl < dl or (sl == dl and sp <= dp)))
        if src_first:
            k0, k1, k2, k3, k4 = sh, sl, dh, dl, (sp << np.uint64(16)) | dp
        else:
            k0, k1, k2, k3, k4 = dh, dl, sh, sl, (dp << np.uint64(16)) | sp
        a_is_src[i] = 1 if src_first else 0
        h = np.uint64(0)
        for k in (k0, k1, k2, k3, k4):
            h = (h ^ k) * m1
            h ^= h >> np.uint64(29)
            h *= m2
        at = np.int64(h & np.uint64(mask))
        while True:
            d = table[at]
            if d < 0:
                table[at] = distinct
                keys[distinct, 0], keys[distinct, 1], keys[distinct, 2] = k0, k1, k2
                keys[distinct, 3], keys[distinct, 4] = k3, k4
                inverse[i] = distinct
                distinct += 1
                break
            if keys[d, 0] == k0 and keys[d, 1] == k1 and keys[d, 2] == k2 and keys[d, 3] == k3 and keys[d, 4] == k4:
                inverse[i] = d
                break
            at = (at + 1) & mask
    return distinct


def keyed(seg: SegmentTable) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The table-independent part of FlowTable.assign: the batch's distinct canonical keys, and each row's
    direction and index among them."""
    n = len(seg)
    keys, a_is_src, inverse = np.empty((n, KEY_WIDTH), np.uint64), np.empty(n, np.int64), np.empty(n, np.int64)
    table = np.full(1 << max(4, (2 * n - 1).bit_length()), -1, np.int64)
    distinct = batch_keys(seg.src_hi, seg.src_lo, seg.dst_hi, seg.dst_lo, seg.sport, seg.dport, keys, a_is_src,
                          inverse, table)
    return keys[:distinct], a_is_src, inverse


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

    def assign(self, seg: SegmentTable) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Slot of every segment (allocating new ones) and whether its source is the key's first endpoint."""
        distinct, a_is_src, inverse = keyed(seg)
        if len(seg) == 0:
            return np.zeros(0, np.int64), a_is_src
        names = _names(distinct)
        slots = list(map(self.slot_of.get, names))
        for i, slot in enumerate(slots):
            if slot is None:  # a new flow
                slot = slots[i] = self.free.pop() if self.free else self._grow()
                self.slot_of[names[i]] = slot
                self.keys[slot] = distinct[i]
        return np.array(slots, np.int64)[inverse], a_is_src

    def _grow(self) -> int:
        if self.used == len(self.keys):
            self.keys = np.concatenate([self.keys, np.zeros_like(self.keys)])
        self.used += 1
        return self.used - 1

    def release(self, slots: npt.NDArray[np.int64]) -> None:
        """Forget the 4-tuples of these slots and make the slots available again."""
        for name in _names(self.keys[slots]):
            del self.slot_of[name]
        self.free.extend(slots.tolist())


def _names(keys: npt.NDArray[np.uint64]) -> list[bytes]:
    """Each key row's bytes (the flow table's dict keys), in one call."""
    return np.ascontiguousarray(keys).view(f"V{KEY_WIDTH * 8}").ravel().tolist()  # type: ignore[no-any-return]
