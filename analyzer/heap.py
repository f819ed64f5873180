"""Heap settings that keep peak memory down: large arrays mapped, freed memory handed back, pyarrow on the
same allocator.

The glibc calls are no-ops off glibc.
"""

from __future__ import annotations

import ctypes
import os
import sys
from functools import cache

M_MMAP_THRESHOLD = -3  # mallopt parameter
MMAP_THRESHOLD = 1 << 20


@cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist (glibc)
    except (OSError, AttributeError):
        return None
    return libc


def pin_mmap_threshold() -> None:
    """Pin glibc's mmap threshold at 1 MiB.

    glibc raises the threshold whenever a large block is freed; after the first batches, batch-sized arrays
    then come from the heap, which fragments and keeps their memory. Pinned, they are mapped and returned:
    peak RSS on the 2 M-packet bench capture 457 -> 389 MB at the same speed.
    """
    if (libc := _libc()) is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


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


HUGE_PAGES = "glibc.malloc.hugetlb=1"
RELAUNCHED = "TCPA_GLIBC_TUNABLES"  # set in the re-executed process: "=" and the user's own value, or ""


def relaunch_on_huge_pages() -> None:
    """Run this process again, once, with glibc's malloc on transparent huge pages, and come back here.

    A run maps and touches far more memory than it keeps (a batch's arrays, the report's tables). With 4 KiB
    pages every first touch of a fresh page is a fault: 180 000 of them on the 2 M-packet bench capture, where
    the kernel took a quarter of the CPU time. `glibc.malloc.hugetlb=1` makes malloc ask for huge pages
    (madvise). That took the faults to 113 000 and the system time from 0.66 to 0.52 s, and the wall time
    went down 11 % (A/B, 10 runs each).

    glibc reads its tunables only when a process starts, hence the exec, before numpy or anything else is
    imported: 30-50 ms per run. It is skipped where it cannot help (not glibc 2.35 or later, huge pages off),
    and where GLIBC_TUNABLES already names glibc.malloc.hugetlb, so `GLIBC_TUNABLES=glibc.malloc.hugetlb=0`
    turns it off. The programs tcpa starts (dumpcap, tshark) get the user's GLIBC_TUNABLES back.
    """
    env = os.environ
    if RELAUNCHED in env:  # the second start
        before = env.pop(RELAUNCHED)
        if before:
            env["GLIBC_TUNABLES"] = before[1:]
        else:
            env.pop("GLIBC_TUNABLES", None)
        return
    tunables = env.get("GLIBC_TUNABLES")
    if (tunables and "glibc.malloc.hugetlb" in tunables) or not _huge_pages_on() or getattr(sys, "frozen", False):
        return
    env[RELAUNCHED] = "" if tunables is None else "=" + tunables
    env["GLIBC_TUNABLES"] = f"{tunables}:{HUGE_PAGES}" if tunables else HUGE_PAGES
    try:
        os.execv(sys.executable, sys.orig_argv)
    except OSError:  # carry on without
        relaunch_on_huge_pages()


def _huge_pages_on() -> bool:
    """Whether glibc's malloc can be put on transparent huge pages here: glibc 2.35 or later on Linux, with
    the kernel's huge pages not turned off."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # type: ignore[union-attr]
        major, minor = (int(v) for v in version.split(".")[:2])
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            mode = f.read()
    except (ValueError, OSError, AttributeError):
        return False
    return name == "glibc" and (major, minor) >= (2, 35) and "[never]" not in mode
