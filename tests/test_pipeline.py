"""pipeline: the second thread that reads and decodes ahead of the tracker, and the tracker's row collections."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analyzer import forks, pipeline
from analyzer import rows as rows_module
from analyzer.model import CaptureError
from analyzer.pipeline import prefetched

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"


def test_items_arrive_in_order_and_complete() -> None:
    assert list(prefetched(iter(range(1000)), depth=2)) == list(range(1000))


def test_items_are_produced_in_another_thread_ahead_of_the_consumer() -> None:
    produced: list[int] = []
    threads: set[str] = set()

    def items() -> Iterator[int]:
        for i in range(6):
            threads.add(threading.current_thread().name)
            produced.append(i)
            yield i

    it = prefetched(items(), depth=2)
    assert next(it) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 3 and time.monotonic() < deadline:  # one taken, two waiting in the queue
        time.sleep(0.01)
    assert len(produced) >= 3 and threading.current_thread().name not in threads
    assert list(it) == [1, 2, 3, 4, 5]


def test_a_producer_error_is_raised_in_the_consumer_after_the_items_before_it() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad record")

    got = []
    with pytest.raises(ValueError, match="bad record"):
        got.extend(prefetched(items()))
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_the_producer() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in range(10_000):
            produced.append(i)
            yield i

    it = prefetched(items(), depth=2)
    assert next(it) == 0
    it.close()  # the consumer gives up (an exception, Ctrl-C): the worker must not run on to the end
    time.sleep(0.3)
    settled = len(produced)
    time.sleep(0.3)
    assert len(produced) == settled < 10
    assert not any(t.name == "tcpa-decode" for t in threading.enumerate())


def test_rows_collected_across_chunks_come_back_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows_module, "CHUNK_BYTES", 3 * 2 * 8)  # three rows of two int64 per chunk
    rows = rows_module.Rows(2, np.int64)
    blocks = [np.arange(n * 2, dtype=np.int64).reshape(n, 2) + 100 * i for i, n in enumerate((2, 5, 0, 1, 4))]
    for b in blocks:
        rows.append(b)
    want = np.concatenate(blocks)
    assert len(rows) == len(want) and [len(c) for c in rows.chunks] == [3, 3, 3, 3]
    snapshot = rows.copy()
    snapshot.append(np.full((2, 2), -1, np.int64))  # a snapshot's own rows do not reach the original...
    rows.append(np.full((1, 2), -2, np.int64))  # ...nor the original's the snapshot
    assert np.array_equal(snapshot.stack(), np.concatenate([want, np.full((2, 2), -1)]))
    rows.drop(0, 100, np.array([100, 102, 300]))  # rows whose first column is one of these go
    got = rows.stack()
    keep = ~np.isin(want[:, 0], [100, 102, 300])
    assert np.array_equal(got, np.concatenate([want[keep], np.full((1, 2), -2)]))
    assert len(rows) == 0 and rows.stack().shape == (0, 2)


def test_a_packed_chunk_holds_the_next_rows_unless_a_copy_shares_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows_module, "CHUNK_BYTES", 3 * 2 * 8)
    data = np.arange(60, dtype=np.int64).reshape(30, 2)
    rows = rows_module.Rows(2, np.int64)
    rows.append(data[:4])  # one chunk packed, the second open
    first_open = rows.chunks[-1]
    rows.append(data[4:7])  # the open one packed: its array takes the seventh row
    assert rows.chunks[-1] is first_open
    snapshot = rows.copy()  # shares the open chunk (one row in it)...
    shared = rows.chunks[-1]
    for i in range(7, 30):  # ...which the original then fills, packs and must not write into again
        rows.append(data[i:i + 1])
        assert not any(c is shared for c in rows.chunks[1:-1] if isinstance(c, np.ndarray))
    snapshot.append(data[:5] * -1)
    assert np.array_equal(snapshot.stack(), np.concatenate([data[:7], data[:5] * -1]))
    assert np.array_equal(rows.stack(), data)


@pytest.mark.parametrize("dtype", [np.int64, np.uint64, np.uint8])
def test_packed_rows_come_back_exactly(monkeypatch: pytest.MonkeyPatch, dtype: type) -> None:
    monkeypatch.setattr(rows_module, "CHUNK_BYTES", 1000 * 6 * np.dtype(dtype).itemsize)
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    spans = [1, 200, 60_000, 4_000_000_000, int(info.max)]  # each column's range: 8 to 64 bits
    cols = [rng.integers(0, s, 2500, dtype=np.uint64, endpoint=True) for s in spans if s <= info.max]
    data = np.stack(cols, axis=1).astype(dtype)
    data = np.concatenate([data, np.zeros((2500, 6 - data.shape[1]), dtype)], axis=1)
    if dtype is np.int64:
        data[::7, 1] = -1  # NONE among small values
        data[::5, 4] = info.min  # the extremes of the type
        data[1::5, 4] = info.max
    rows = rows_module.Rows(6, dtype)
    for start in range(0, 2500, 333):
        rows.append(data[start:start + 333])
    packed = [c for c in rows.chunks if isinstance(c, rows_module.Packed)]
    assert len(packed) == (2 if np.dtype(dtype).itemsize == 8 else 0)
    if packed:
        assert packed[0].nbytes < data[:1000].nbytes  # it is smaller
        assert packed[0].buf is None and packed[0].spill is not None  # and kept on disk, not in memory
    order = rng.permutation(len(data))
    if np.dtype(dtype).itemsize == 8:
        assert np.array_equal(rows.column(4), data[:, 4].astype(np.int64))  # packed and open chunks alike
    got = rows.copy().stack(order)  # in an order, placed a chunk at a time
    assert got.dtype == data.dtype and np.array_equal(got, data[order])
    got = rows.stack()
    assert got.dtype == data.dtype and np.array_equal(got, data)


def test_packed_rows_stay_in_memory_where_the_spill_file_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows_module, "CHUNK_BYTES", 4 * 2 * 8)
    data = np.arange(40, dtype=np.int64).reshape(20, 2)
    rows = rows_module.Rows(2, np.int64)
    rows.append(data[:8])  # two chunks packed to the spill file...
    rows.append(data[8:9])
    def full(fd: int, data: Any, at: int) -> int:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(rows_module.os, "pwrite", full)
    rows.append(data[9:])  # ...the next ones stay in memory
    kinds = [(c.buf is None) for c in rows.chunks if isinstance(c, rows_module.Packed)]
    assert kinds[:2] == [True, True] and kinds[2:] and not any(kinds[2:])
    assert np.array_equal(rows.stack(), data)
    no_file = rows_module.Rows(2, np.int64, spill=False)
    no_file.append(data)
    assert all(c.buf is not None for c in no_file.chunks if isinstance(c, rows_module.Packed))
    assert np.array_equal(no_file.stack(), data)


def test_dropping_rows_leaves_the_chunks_before_them_packed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows_module, "CHUNK_BYTES", 4 * 2 * 8)  # four rows of two int64 per chunk
    rows = rows_module.Rows(2, np.int64)
    data = np.stack([np.arange(14), np.arange(14) * 1000], axis=1).astype(np.int64)  # column 0: connection ids
    rows.append(data)
    early = rows.chunks[:2]
    assert all(isinstance(c, rows_module.Packed) for c in early)
    rows.drop(0, 9, np.array([9, 12]))
    assert all(a is b for a, b in zip(rows.chunks[:2], early))  # ids below 9 only: left packed
    assert np.array_equal(rows.stack(), data[~np.isin(data[:, 0], [9, 12])])


def test_a_handoff_brings_back_the_childs_result_and_shared_objects_by_name() -> None:
    shared = object()  # made before the fork: the same object in both processes
    seen: list[str] = []

    def work() -> tuple[int, object, int]:
        seen.append("child")  # in the child's memory, not ours
        return os.getpid(), shared, 7

    pid, same, value = forks.handoff(work, lambda: seen.append("parent"), {"shared": shared})
    assert pid != os.getpid() and same is shared and value == 7 and seen == ["parent"]


class Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("not this one")


@pytest.mark.parametrize(("error", "raised", "message"), [
    (CaptureError("x.pcap: not a pcap"), CaptureError, "x.pcap: not a pcap"),
    (Unpicklable("deep"), RuntimeError, "Unpicklable: deep"),  # its type and message, as text
])
def test_an_error_in_the_handoff_child_is_raised_here_with_its_traceback(error: Exception, raised: type,
                                                                         message: str) -> None:
    def work() -> None:
        raise error

    with pytest.raises(raised, match=message) as info:
        forks.handoff(work, lambda: None)
    assert isinstance(info.value.__cause__, forks.RemoteTraceback)
    assert "in work" in str(info.value.__cause__)  # where it was raised, in the child (shown with --debug)


def test_a_handoff_child_that_dies_is_an_error_not_a_hang() -> None:
    with pytest.raises(OSError, match=r"ended without a result \(exit status 3\)"):
        forks.handoff(lambda: os._exit(3), lambda: None)
    with pytest.raises(OSError, match=r"killed by signal 9"):
        forks.handoff(lambda: os.kill(os.getpid(), signal.SIGKILL), lambda: None)


def test_a_capture_read_in_a_forked_child_gives_the_same_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows_module, "CHUNK_BYTES", 4096)  # rows packed and spilled many times over
    pcap = PCAPS / "showcase.pcapng"
    spill = rows_module.Spill.open()
    assert spill is not None

    def read() -> pipeline.Collected:
        return pipeline.collect(pcap, spill=spill)

    collected = forks.handoff(read, lambda: None, {"spill": spill})
    spilled = [c for c in collected.transitions.chunks if isinstance(c, rows_module.Packed)]
    assert len(spilled) > 1 and all(c.spill is spill and c.buf is None for c in spilled)  # read from the file
    got, want = collected.report(), pipeline.analyze(pcap)
    for name in ("connections", "transitions", "events", "control", "findings"):
        pd.testing.assert_frame_equal(getattr(got, name), getattr(want, name))
