"""Sequence-number arithmetic modulo 2**32 (RFC 9293 section 3.4): the only place that knows about wrap.

Each endpoint's sequence numbers are tracked as 64-bit *unwrapped* positions: a 32-bit value is placed at the
position nearest to a reference, so a transfer that wraps past 2**32 keeps counting up. All functions are
numba-compiled so the per-packet loop can call them; they are plain Python under NUMBA_DISABLE_JIT.
"""

from __future__ import annotations

from .native import kernel

MOD = 1 << 32
HALF = 1 << 31


@kernel(inline=True)
def seq_diff(a: int, b: int) -> int:
    """a - b as a signed 32-bit distance: positive when a is after b in sequence space."""
    d = (a - b) & 0xFFFFFFFF
    return d - MOD if d >= HALF else d


@kernel(inline=True)
def unwrap(seq32: int, ref: int) -> int:
    """The 64-bit position of seq32 nearest to the unwrapped reference position ref."""
    return ref + seq_diff(seq32, ref & 0xFFFFFFFF)


@kernel(inline=True)
def seq_after(a: int, b: int) -> bool:
    """a > b in sequence space (RFC 9293 SEQ_GT)."""
    return seq_diff(a, b) > 0
