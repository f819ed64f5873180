"""capture -> decode -> engine -> Report. Thin on purpose: each stage lives in its own module."""

from __future__ import annotations

import copy
import dataclasses
import os
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from . import engine, heap
from .capture import open_capture
from .decode import SUPPORTED_LINKTYPES, Decoder
from .layout import C_CONN
from .model import CaptureError, CaptureFacts, FrameBatch, Notice
from .options import RANK, SEVERITIES, Settings
from .rows import Rows, Spill
from .segments import SegmentTable
from .sequence import EV_NAMES, EVENT_NAMES
from .tracker import CT_NAMES, SG_NAMES, Params, Tracker

if TYPE_CHECKING:  # pandas and the modules built on it load while the capture is read: see cli._run()
    import pandas as pd

    from .report import Report

DEFAULT_BATCH = 1 << 16

Progress = Callable[[int], None]


def analyze(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, params: Params | None = None,
            batch_frames: int = DEFAULT_BATCH, progress: Progress | None = None,
            keep_segments: bool = False, detect: bool = True, settings: Settings | None = None,
            only: Iterable[str] | None = None, tables_ready: Callable[[Report], None] | None = None) -> Report:
    """Analyse one capture (or several, read in order as one) and return the Report.

    keep_segments also keeps every segment (Report.packets), which the HTML report draws; memory then grows
    with the capture's length. tables_ready sees the Report once its tables are built, before the detectors
    run.
    """
    return collect(sources, params=params, batch_frames=batch_frames, progress=progress,
                   keep_segments=keep_segments).report(detect=detect, settings=settings, only=only,
                                                       tables_ready=tables_ready)


def collect(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, params: Params | None = None,
            batch_frames: int = DEFAULT_BATCH, progress: Progress | None = None, keep_segments: bool = False,
            spill: bool | Spill = True, mapped: bool = False) -> Collected:
    """Read, decode and replay the captures (analyze() without the report): what the report is built from.
    spill: as for Rows; mapped: as for open_capture (for a process that may die of it: the CLI's reader)."""
    paths = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    analysis = Analysis(params, keep_segments=keep_segments, spill=spill)
    facts: CaptureFacts | None = None
    for item in prefetched(decoded(paths, analysis.decoder, batch_frames, mapped)):
        if isinstance(item, CaptureFacts):
            facts = _merge(facts, item)
            continue
        seg, size = item
        analysis.add(seg)
        if progress:
            progress(size)
    assert facts is not None
    return analysis.collect(facts)


@dataclass
class Collected:
    """What the analysis of a capture keeps for its report: the tracker's rows and the capture's facts. It
    pickles (spilled rows by reference: see rows.py), so a forked reader can hand it over (forks.handoff)."""

    facts: CaptureFacts
    conn_rows: Rows  # the Tracker's rows, as named there
    conn_hist: Rows
    conn_keys: Rows
    transitions: Rows
    seq_events: Rows
    control: Rows
    segment_rows: Rows | None  # only when every segment was kept (keep_segments)
    tunnels: list[str]
    skipped: Counter[str]
    segments: int  # TCP segments analysed

    @classmethod
    def of(cls, facts: CaptureFacts, tracker: Tracker, decoder: Decoder, segments: int) -> Collected:
        return cls(facts, tracker.conn_rows, tracker.conn_hist, tracker.conn_keys, tracker.transitions,
                   tracker.seq_events, tracker.control, tracker.segment_rows if tracker.keep_segments else None,
                   decoder.tunnels, decoder.skipped, segments)

    def report(self, *, detect: bool = True, settings: Settings | None = None, only: Iterable[str] | None = None,
               tables_ready: Callable[[Report], None] | None = None) -> Report:
        """The Report (with findings unless detect=False); the rows are handed over to its tables. Call once.
        tables_ready sees the Report once its tables are built, before the detectors run."""
        heap.trim()  # each phase frees most of what it allocated: see heap.trim()
        heap.for_tables()
        report = build_report(self)
        heap.trim()
        if tables_ready is not None:
            tables_ready(report)
        if detect:
            from . import detectors

            report.findings = detectors.run(report, settings, only)
            _summarise_findings(report)
            heap.trim()
        return report


def decoded(paths: list[str | os.PathLike[str]], decoder: Decoder, batch_frames: int, mapped: bool = False
            ) -> Iterator[tuple[SegmentTable, int] | CaptureFacts]:
    """Each capture's decoded batches (with their size in bytes, for progress), then the capture's facts. Each
    batch is decoded before the next is read, so the batches share one read buffer."""
    for path in paths:
        with open_capture(path, batch_frames=batch_frames, reuse=True, mapped=mapped) as capture:
            for batch in capture:
                seg = decoder.decode(batch)
                yield seg, int(batch.caplen.sum()) + 16 * len(batch)
            yield capture.facts


T = TypeVar("T")


def prefetched(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """`items`, produced by a second thread up to `depth` ahead.

    Reading and decoding (compiled, without the GIL) then run on one core while the tracker runs on the other;
    the order of the items, and so every result, is the same as without the thread. An exception in the
    producer is raised here, where the items are consumed.
    """
    slots: queue.Queue[tuple[bool, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((False, item), timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            slots.put((True, None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            slots.put((True, err))

    worker = threading.Thread(target=produce, name="tcpa-decode", daemon=True)
    worker.start()
    try:
        while True:
            done, item = slots.get()
            if done:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        worker.join(timeout=1.0)  # a daemon: one blocked on a silent pipe must not hold up Ctrl-C


class Analysis:
    """The incremental form of analyze(): feed FrameBatches as they arrive, look at a snapshot at any time.

    `snapshot(facts)` is the Report the capture read so far would give if it ended now (connections still
    open are reported open, with their current states; nothing is forced closed) and leaves the analysis
    untouched, so feeding can go on; `finish(facts)` ends it. analyze() is feed() over every batch, then
    finish().
    """

    def __init__(self, params: Params | None = None, *, keep_segments: bool = False, spill: bool | Spill = True
                 ) -> None:
        self.params = params or Params()
        self.decoder = Decoder(checksums=self.params.checksums)
        self.tracker = Tracker(self.params, keep_segments=keep_segments, spill=spill)
        self.segments = 0
        self.finished = False

    def feed(self, batch: FrameBatch) -> int:
        """Decode one batch and run its segments through the tracker; returns the batch's TCP segments."""
        return self.add(self.decoder.decode(batch))

    def add(self, seg: SegmentTable) -> int:
        """Run one decoded batch (from self.decoder) through the tracker; returns its TCP segments."""
        self.segments += len(seg)
        self.tracker.feed(seg)
        return len(seg)

    def finish(self, facts: CaptureFacts, *, detect: bool = True, settings: Settings | None = None,
               only: Iterable[str] | None = None, tables_ready: Callable[[Report], None] | None = None) -> Report:
        """End of capture: the Report (with findings unless detect=False). Call once. tables_ready: as in
        analyze()."""
        return self.collect(facts).report(detect=detect, settings=settings, only=only, tables_ready=tables_ready)

    def collect(self, facts: CaptureFacts) -> Collected:
        """End of capture: what the report is built from (finish() without the report). Call once."""
        assert not self.finished, "Analysis.finish() called twice"
        self.finished = True
        _check_linktypes(facts)
        self.tracker.finish()
        self.decoder.finish()
        facts.notices.extend(self.decoder.notices)
        facts.notices.extend(self.tracker.notices)
        self.tracker.release()
        return Collected.of(facts, self.tracker, self.decoder, self.segments)

    def snapshot(self, facts: CaptureFacts, *, detect: bool = True, settings: Settings | None = None,
                 only: Iterable[str] | None = None) -> Report:
        """The Report as if the capture ended after the last batch fed, without disturbing the analysis.

        IP fragments still waiting for their datagram's other pieces are left waiting (not counted as skipped).
        """
        facts = dataclasses.replace(facts, interfaces=list(facts.interfaces), comments=list(facts.comments),
                                    notices=[*facts.notices, *self.decoder.notices])
        tracker = _tracker_copy(self.tracker)
        tracker.finish()
        facts.notices.extend(tracker.notices)
        report = build_report(dataclasses.replace(Collected.of(facts, tracker, self.decoder, self.segments),
                                                  tunnels=list(self.decoder.tunnels),
                                                  skipped=Counter(self.decoder.skipped)))
        if detect:
            from . import detectors

            report.findings = detectors.run(report, settings, only)
            _summarise_findings(report)
        return report


def _tracker_copy(tracker: Tracker) -> Tracker:
    """A copy of the tracker that can be finished without changing the original (which reads on)."""
    t = copy.copy(tracker)
    t.st, t.hist, t.g = tracker.st.copy(), tracker.hist.copy(), tracker.g.copy()
    t.g[engine.G_NTR] = 0
    t.g[engine.G_NDONE] = 0
    t.tr, t.done, t.done_hist = np.empty_like(tracker.tr), np.empty_like(tracker.done), np.empty_like(tracker.done_hist)
    for name in ("conn_rows", "conn_hist", "conn_keys", "transitions", "seq_events", "control", "segment_rows"):
        setattr(t, name, getattr(tracker, name).copy())
    return t


def _summarise_findings(report: Report) -> None:
    """Per connection: the kinds found on it and the worst severity (so CSV and Parquet rows carry them)."""
    import pandas as pd

    from . import detectors

    f, conns = report.findings, report.connections
    uids = conns["uid"].tolist()
    index = dict(zip(uids, range(len(uids))))
    at = np.array([index.get(u, -1) for u in f["uid"].tolist()], np.intp)  # each finding's connection, or -1
    mine = at >= 0
    kind, kinds = pd.factorize(f["kind"], sort=True)
    found = np.zeros((len(conns), max(len(kinds), 1)), np.bool_)  # the kinds found on each connection
    found[at[mine], kind[mine]] = True
    sets = detectors.group(*np.packbits(found, axis=1).T)  # connections with the same kinds (a few sets in all)
    names = np.array([";".join(kinds[np.flatnonzero(s)]) for s in found[sets.first]], dtype=object)
    worst = np.full(len(conns), -1)
    np.maximum.at(worst, at[mine], np.array([RANK[s] for s in f["severity"].tolist()], np.int64)[mine])
    conns["findings"] = names[sets.codes].tolist()
    conns["worst_severity"] = np.array([*SEVERITIES, ""], dtype=object)[worst].tolist()  # -1: none


def _merge(acc: CaptureFacts | None, facts: CaptureFacts) -> CaptureFacts:
    """Facts of several captures read one after another, as one."""
    if acc is None:
        return facts
    acc.interfaces += facts.interfaces
    acc.comments += facts.comments
    acc.notices += facts.notices
    acc.frames += facts.frames
    acc.bytes_captured += facts.bytes_captured
    acc.first_ns = min(acc.first_ns, facts.first_ns) if acc.frames else facts.first_ns
    acc.last_ns = max(acc.last_ns, facts.last_ns)
    acc.source += f", {facts.source}"
    return acc


def _check_linktypes(facts: CaptureFacts) -> None:
    """A capture none of whose interfaces we can decode is an error, not an empty report."""
    kinds = {i.linktype for i in facts.interfaces}
    if kinds and not kinds & SUPPORTED_LINKTYPES.keys():
        raise CaptureError(f"{facts.source}: unsupported link type {', '.join(map(str, sorted(kinds)))}")


def build_report(c: Collected) -> Report:
    """Assemble the Report's tables from what the tracker collected (which is handed over: the Rows are
    emptied as their tables are built, so the rows are not held twice)."""
    import pandas as pd

    from .connections import categorical, connections_frame, transitions_frame
    from .report import Report

    # The transitions first: their row matrix is gone before the connections' rows are unpacked (the peak).
    transitions = transitions_frame(c.transitions.stack(), c.facts.last_ns)
    order = np.argsort(c.conn_rows.column(C_CONN), kind="stable")  # the connections in order of id
    rows, hist, keys = c.conn_rows.stack(order), c.conn_hist.stack(order), c.conn_keys.stack(order)
    del order
    conns = connections_frame(rows, hist, keys, transitions, c.tunnels)
    del rows, hist, keys
    transitions.insert(0, "uid", _uids(conns, transitions["conn"].to_numpy()))
    events = _table(c.seq_events, EV_NAMES, conns)
    events["kind"] = categorical(events.pop("kind").to_numpy(), list(EVENT_NAMES)) \
        if len(events) else pd.Series([], dtype="object")
    control = _table(c.control, CT_NAMES, conns)
    packets = _table(c.segment_rows, SG_NAMES, conns) if c.segment_rows is not None else pd.DataFrame()
    return Report(capture=c.facts, connections=conns, transitions=transitions, skipped=c.skipped,
                  segments=c.segments, events=events, control=control, packets=packets)


def _uids(conns: pd.DataFrame, conn: npt.NDArray[np.int64]) -> Any:
    """The uid of each of these connection ids (missing where not in `conns`, which is in id order): a
    categorical over the connections' uids, 4 bytes a row where the text took 15 (at 4 M packets, 377 000
    transitions, 151 000 control segments and 70 000 events: 8.6 -> 2.4 MB, and the tree's peak 5-7 MB lower)."""
    import pandas as pd

    from .connections import positions

    return pd.Categorical.from_codes(positions(conns["conn"].to_numpy(), conn).astype(np.int32),
                                     dtype=pd.CategoricalDtype(pd.Index(conns["uid"].array)))


def _table(collected: Rows, names: list[str], conns: pd.DataFrame) -> pd.DataFrame:
    """Rows the tracker collected, with each row's connection uid, in frame order (`collected` is emptied)."""
    import pandas as pd

    from .connections import categorical

    rows = collected.stack()
    order = np.argsort(rows[:, names.index("frame")], kind="stable")
    df = pd.DataFrame({name: rows[order, j] for j, name in enumerate(names)})  # column by column: no 2nd copy
    del rows, order
    df.insert(0, "uid", _uids(conns, df["conn"].to_numpy()))
    df["dir"] = categorical((df["dir"].to_numpy() != 0).astype(np.int8), ["orig", "resp"])
    return df


__all__ = ["Analysis", "CaptureError", "Collected", "Notice", "Params", "analyze", "collect"]
