"""capture -> decode -> engine -> Report. Thin on purpose: each stage lives in its own module."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from . import detectors
from .capture import open_capture
from .connections import connections_frame, transitions_frame
from .decode import SUPPORTED_LINKTYPES, Decoder
from .layout import HIST_MAX, ROW
from .model import CaptureError, CaptureFacts, Notice
from .report import Report
from .sequence import EV_NAMES, EVENT_NAMES
from .tracker import CT_NAMES, SG_NAMES, Params, Tracker

DEFAULT_BATCH = 1 << 16

Progress = Callable[[int], None]


def analyze(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, params: Params | None = None,
            batch_frames: int = DEFAULT_BATCH, progress: Progress | None = None,
            keep_segments: bool = False, detect: bool = True, settings: detectors.Settings | None = None,
            only: Iterable[str] | None = None) -> Report:
    """Analyse one capture (or several, read in order as one) and return the Report.

    keep_segments also keeps every segment (Report.packets), which the HTML report draws; memory then grows
    with the capture's length.
    """
    paths = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    params = params or Params()
    decoder = Decoder(checksums=params.checksums)
    tracker = Tracker(params, keep_segments=keep_segments)
    facts: CaptureFacts | None = None
    segments = 0
    for path in paths:
        with open_capture(path, batch_frames=batch_frames) as capture:
            for batch in capture:
                seg = decoder.decode(batch)
                segments += len(seg)
                tracker.feed(seg)
                if progress:
                    progress(int(batch.caplen.sum()) + 16 * len(batch))
            facts = _merge(facts, capture.facts)
    assert facts is not None
    _check_linktypes(facts)
    tracker.finish()
    decoder.finish()
    facts.notices.extend(decoder.notices)
    report = build_report(facts, tracker, decoder.tunnels, decoder.skipped, segments)
    if detect:
        report.findings = detectors.run(report, settings, only)
        _summarise_findings(report)
    return report


def _summarise_findings(report: Report) -> None:
    """Per connection: the kinds found on it and the worst severity (so CSV and Parquet rows carry them)."""
    f = report.findings[report.findings["uid"] != ""]
    conns = report.connections
    kinds = f.groupby("uid")["kind"].agg(lambda k: ";".join(sorted(set(k))))
    worst = f.assign(rank=f["severity"].map(detectors.RANK)).groupby("uid")["rank"].max()
    conns["findings"] = conns["uid"].map(kinds).fillna("")
    conns["worst_severity"] = conns["uid"].map(worst).map(dict(enumerate(detectors.SEVERITIES))).fillna("")


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


def build_report(facts: CaptureFacts, tracker: Tracker, tunnels: list[str], skipped: Counter[str],
                 segments: int) -> Report:
    """Assemble the Report's tables from what the tracker collected."""
    rows = np.concatenate(tracker.conn_rows) if tracker.conn_rows else np.empty((0, ROW), np.int64)
    hist = np.concatenate(tracker.conn_hist) if tracker.conn_hist else np.empty((0, HIST_MAX), np.uint8)
    keys = np.concatenate(tracker.conn_keys) if tracker.conn_keys else np.empty((0, 5), np.uint64)
    transitions = transitions_frame(tracker.transitions, facts.last_ns)
    conns = connections_frame(rows, hist, keys, transitions, tunnels)
    uid_of = conns.set_index("conn")["uid"]
    transitions.insert(0, "uid", uid_of.reindex(transitions["conn"]).to_numpy())
    events = _table(tracker.seq_events, EV_NAMES, uid_of)
    events["kind"] = pd.Categorical.from_codes(events.pop("kind").to_numpy(), categories=list(EVENT_NAMES)) \
        if len(events) else pd.Series([], dtype="object")
    control = _table(tracker.control, CT_NAMES, uid_of)
    packets = _table(tracker.segment_rows, SG_NAMES, uid_of) if tracker.keep_segments else pd.DataFrame()
    return Report(capture=facts, connections=conns, transitions=transitions, skipped=skipped, segments=segments,
                  events=events, control=control, packets=packets)


def _table(parts: list[np.ndarray], names: list[str], uid_of: pd.Series) -> pd.DataFrame:
    """Rows the tracker collected, with each row's connection uid, in frame order."""
    rows = np.concatenate(parts) if parts else np.empty((0, len(names)), np.int64)
    df = pd.DataFrame(rows, columns=names)
    df = df.sort_values("frame", kind="stable", ignore_index=True)
    df.insert(0, "uid", uid_of.reindex(df["conn"]).to_numpy())
    df["dir"] = np.where(df["dir"] == 0, "orig", "resp")
    return df


__all__ = ["analyze", "Params", "Report", "CaptureError", "Notice"]
