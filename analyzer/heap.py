"""Heap settings that keep peak memory down: large arrays mapped, freed memory handed back, pyarrow on the
same allocator.

The glibc calls are no-ops off glibc.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters
MMAP_THRESHOLD = 4 << 20  # while reading
TRIM_THRESHOLD = 16 << 20  # free memory kept at the heap's top (by glibc; heap.trim() hands it back)
TABLES_MMAP_THRESHOLD = 8 << 20  # once the tables are built (for_tables)
_pinned = False


@cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist (glibc)
    except (OSError, AttributeError):
        return None
    return libc


def pin_mmap_threshold() -> None:
    """Pin glibc's mmap threshold at 4 MiB, for this process (the command line's: a library caller's heap is
    its own).

    glibc raises the threshold whenever a large block is freed; after the first batches, the largest batch
    arrays then come from the heap, which fragments and keeps their memory. Pinned, they are mapped and
    returned: peak RSS on the 2 M-packet bench capture 457 -> 389 MB at the same speed. At 4 MiB rather than
    1 MiB, the batch arrays of 1-4 MiB (the flow-key hash table, SACK columns) are reused from the heap instead
    of being mapped, faulted in and unmapped again batch after batch (see for_tables).

    Pinning the threshold also pins glibc's trim threshold, at 128 KiB: each batch's arrays, freed at the top of
    the heap, were handed back and the next batch's faulted in afresh. Up to 16 MiB of free memory is kept there
    instead: page faults while reading the 2 M-packet capture 33 000 -> 21 000, peak RSS unchanged.
    """
    global _pinned
    if (libc := _libc()) is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        _pinned = True


def for_tables() -> None:
    """Once reading is done (where the pinned threshold keeps memory from growing with the capture): arrays up to
    8 MiB from the heap. The tables and detectors build, filter and free columns of a few MiB over and over;
    mapped afresh, every page of each was faulted in and zeroed again. With this and the trim threshold, page
    faults per 2 M-packet run 150 000 -> 105 000 and CPU time about -8 % (4 M: 270 000 -> 155 000), for a few
    MB of peak RSS. Only where pin_mmap_threshold() was called."""
    if _pinned and (libc := _libc()) is not None:
        libc.mallopt(M_MMAP_THRESHOLD, TABLES_MMAP_THRESHOLD)


def arrow_on_glibc() -> None:
    """Let pyarrow (pandas' string columns) allocate with glibc's malloc instead of its own mimalloc pool.

    mimalloc keeps what the report's tables and the detectors free for reuse, so it stayed in the peak: on the
    8 M-packet bench capture peak RSS 388 -> 349 MB (4 M: 269 -> 258 MB), at the same speed. Call before
    pyarrow is imported; ARROW_DEFAULT_MEMORY_POOL set by the user wins.
    """
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


def trim() -> None:
    """Hand the heap's free pages back to the system.

    Arrays under the mmap threshold (a column of a few thousand rows) come from the heap, and a long-lived one
    among them keeps the pages around it; glibc returns only the free top of the heap by itself. Called between
    the phases of an analysis (read, tables, detectors), where most of what the last phase allocated has just
    been freed: on the 4 M-packet bench capture peak RSS 367 -> 317 MB, a few milliseconds each.
    """
    if (libc := _libc()) is not None:
        libc.malloc_trim(0)
