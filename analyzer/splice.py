"""The JSON writer's compiled step: the connection rows a forked child wrote (writers.Spool), each completed with
the columns added after the fork, in one pass over the bytes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .native import entry

NEWLINE = 10
COMMA = 44


@entry("u1[::1], i8, i8, i8[::1], u1[::1], i8[::1], u1[::1], i8[::1]")
def rows(src: npt.NDArray[np.uint8], size: int, first: int, codes: npt.NDArray[np.int64],
         ends: npt.NDArray[np.uint8], end_at: npt.NDArray[np.int64], out: npt.NDArray[np.uint8],
         done: npt.NDArray[np.int64]) -> None:
    """Complete the whole lines in src[:size], rows first, first + 1, ...: each line without its newline,
    then its end, ends[end_at[c]:end_at[c + 1]] with c = codes[row], and ",\\n" before every row but row 0.

    `out` must hold size + (lines) * (2 + the longest end). `done` gets the bytes of src used (whole lines),
    the bytes written, and the rows completed. A line past the last code stays unused.
    """
    start, o, row = 0, 0, first
    for i in range(size):
        if src[i] != NEWLINE:
            continue
        if row >= len(codes):
            break
        if row > 0:
            out[o] = COMMA
            out[o + 1] = NEWLINE
            o += 2
        for k in range(start, i):
            out[o] = src[k]
            o += 1
        c = codes[row]
        for k in range(end_at[c], end_at[c + 1]):
            out[o] = ends[k]
            o += 1
        row += 1
        start = i + 1
    done[0] = start
    done[1] = o
    done[2] = row - first
