"""Sequence arithmetic modulo 2**32: the wrap edges."""

from __future__ import annotations

import pytest

from analyzer.seqspace import seq_after, seq_diff, unwrap


@pytest.mark.parametrize(("a", "b", "want"), [
    (5, 3, 2), (3, 5, -2), (0, 0xFFFFFFFF, 1), (0xFFFFFFFF, 0, -1), (0x7FFFFFFF, 0, 0x7FFFFFFF),
    (0x80000000, 0, -0x80000000), (10, 0xFFFFFFF0, 26),
])
def test_seq_diff(a: int, b: int, want: int) -> None:
    assert seq_diff(a, b) == want


@pytest.mark.parametrize(("seq", "ref", "want"), [
    (100, (1 << 32) + 50, (1 << 32) + 100),
    (5, (1 << 32) + 0xFFFFFFF0, (2 << 32) + 5),  # forward across the wrap
    (0xFFFFFFF0, (2 << 32) + 5, (1 << 32) + 0xFFFFFFF0),  # a retransmission from before the wrap
])
def test_unwrap(seq: int, ref: int, want: int) -> None:
    assert unwrap(seq, ref) == want


def test_seq_after_across_the_wrap() -> None:
    assert seq_after(3, 0xFFFFFFFE) and not seq_after(0xFFFFFFFE, 3)
