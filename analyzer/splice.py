"""The text writers' compiled steps: rows of JSON or conn.log laid out from their columns' pieces (assemble), and
the connection rows a forked child wrote (writers.Spool) each completed with the columns added after the fork
(rows), each in one pass over the bytes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .native import entry, kernel

NEWLINE = 10
COMMA = 44
QUOTE = 34
BACKSLASH = 92
OPENS = (91, 123)  # [ {
CLOSES = (93, 125)  # ] }


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


@kernel(inline=True)
def _put(text: npt.NDArray[np.uint8], start: npt.NDArray[np.int32], end: npt.NDArray[np.int32], piece: int,
         out: npt.NDArray[np.uint8], o: int) -> int:
    for k in range(start[piece], end[piece]):
        out[o] = text[k]
        o += 1
    return o


@entry("i4[:, ::1], i4[::1], u1[::1], i4[::1], i4[::1], u1[::1]")
def assemble(codes: npt.NDArray[np.int32], pre: npt.NDArray[np.int32], text: npt.NDArray[np.uint8],
             start: npt.NDArray[np.int32], end: npt.NDArray[np.int32], out: npt.NDArray[np.uint8]) -> None:
    """Rows from their columns' pieces: for row i, for column j, piece pre[j] then piece codes[j, i], where
    piece k is text[start[k]:end[k]] (32-bit numbers and offsets: a block of rows is a few MB of text).
    `out` must hold exactly the sum of those pieces' lengths."""
    o = 0
    for i in range(codes.shape[1]):
        for j in range(codes.shape[0]):
            o = _put(text, start, end, pre[j], out, o)
            o = _put(text, start, end, codes[j, i], out, o)


@entry("u1[::1], i8[::1]", "i8")
def commas(text: npt.NDArray[np.uint8], out: npt.NDArray[np.int64]) -> int:
    """Where the values of a JSON array end: the top-level commas of the array's text without its brackets
    (none inside a string, a nested array or an object), into `out`; their count, or -1 if `out` is too small."""
    depth, quoted, escaped, k = 0, False, False, 0
    for i in range(len(text)):
        c = text[i]
        if quoted:
            if escaped:
                escaped = False
            elif c == BACKSLASH:
                escaped = True
            elif c == QUOTE:
                quoted = False
        elif c == QUOTE:
            quoted = True
        elif c == OPENS[0] or c == OPENS[1]:
            depth += 1
        elif c == CLOSES[0] or c == CLOSES[1]:
            depth -= 1
        elif c == COMMA and depth == 0:
            if k == len(out):
                return -1
            out[k] = i
            k += 1
    return k
