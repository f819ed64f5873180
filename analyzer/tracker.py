"""Drives the compiled engine over batches of segments and collects what it emits.

Memory follows live connections: after every batch, connections that no later packet could continue (idle
past the timeout, or ended and past Zeek's close delay) are retired from the state matrix and their slots
reused. Retirement uses exactly the engine's own "a new connection starts here" rule, and timers are run to
their natural expiry and clipped to the capture's end later, so results do not depend on batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from . import engine, sequence
from .flows import FlowTable
from .layout import C_CONN, C_LAST_NS, C_SLOT, HIST_MAX, NONE, ROW, T_FIELDS
from .segments import SegmentTable
from .tcpstate import TABLE
from .zeekconn import likely_server_ports

NS = 1_000_000_000
FOREVER = 1 << 62  # "run timers to their natural end": clipped to the capture's end when reported
TR_ROWS, DONE_ROWS = 1 << 16, 1 << 13
# Columns of the control-segment table (SYN, FIN and RST segments), which the detectors read.
CT_CONN, CT_DIR, CT_FRAME, CT_NS, CT_FLAGS, CT_SEQ, CT_ACK, CT_LEN, CT_WIN, CT_TSVAL, CT_CSUM = range(11)
CT_WIDTH = 11
CT_NAMES = ["conn", "dir", "frame", "ts_ns", "flags", "seq", "ack", "len", "win", "tsval", "csum_ok"]
# Columns of the optional every-segment table (Tracker(keep_segments=True)).
SG_NAMES = ["conn", "dir", "frame", "ts_ns", "flags", "seq", "ack", "len", "win", "mss", "wscale", "sack_perm",
            "tsval", "tsecr", "sack_count", "sack_left0", "sack_right0"]
(SG_CONN, SG_DIR, SG_FRAME, SG_NS, SG_FLAGS, SG_SEQ, SG_ACK, SG_LEN, SG_WIN, SG_MSS, SG_WSCALE, SG_SACK_PERM,
 SG_TSVAL, SG_TSECR, SG_SACK_COUNT, SG_SACK_LEFT0, SG_SACK_RIGHT0) = range(len(SG_NAMES))
SG_WIDTH = len(SG_NAMES)


@dataclass(frozen=True, slots=True)
class Params:
    """Timers and policies, in seconds; defaults are Linux's and Zeek's."""

    time_wait: float = 60.0  # TCP_TIMEWAIT_LEN: 2 MSL on Linux, not tunable
    fin_timeout: float = 60.0  # net.ipv4.tcp_fin_timeout
    idle_timeout: float = 300.0  # Zeek's tcp_inactivity_timeout: a later packet starts a new connection
    checksums: bool = True  # drop segments with a bad checksum, as Zeek does

    def vector(self) -> npt.NDArray[np.int64]:
        """The engine's parameter vector (engine.P_* order), in nanoseconds."""
        return np.array([int(self.time_wait * NS), int(self.fin_timeout * NS), int(self.idle_timeout * NS),
                         int(self.checksums)], dtype=np.int64)


class Tracker:
    """Flow table, engine state and the collected results of one analysis."""

    def __init__(self, params: Params | None = None, keep_segments: bool = False) -> None:
        self.params = params or Params()
        self.pvec = self.params.vector()
        self.flows = FlowTable()
        self.st, self.hist = engine.new_state(self.flows.capacity)
        self.g = np.zeros(4, dtype=np.int64)
        self.tr = np.empty((TR_ROWS, T_FIELDS), dtype=np.int64)
        self.done = np.empty((DONE_ROWS, ROW), dtype=np.int64)
        self.done_hist = np.empty((DONE_ROWS, HIST_MAX), dtype=np.uint8)
        self.server_ports = likely_server_ports()
        self.conn_rows: list[npt.NDArray[np.int64]] = []
        self.conn_hist: list[npt.NDArray[np.uint8]] = []
        self.conn_keys: list[npt.NDArray[np.uint64]] = []
        self.transitions: list[npt.NDArray[np.int64]] = []
        self.last_ns = 0
        self.seg_conn = np.empty(0, np.int64)  # the last batch's segments: connection id and direction
        self.seg_dir = np.empty(0, np.int64)
        self.seq_st = sequence.new_state(self.flows.capacity)
        self.seq_events: list[npt.NDArray[np.int64]] = []  # sequence.EV_* rows
        self.control: list[npt.NDArray[np.int64]] = []  # CT_* rows: every SYN, FIN and RST segment
        self.keep_segments = keep_segments  # every segment's SG_* row, for the HTML report's ladders
        self.segment_rows: list[npt.NDArray[np.int64]] = []

    def feed(self, seg: SegmentTable) -> None:
        """Run one batch of segments through the engine."""
        n = len(seg)
        if n == 0:
            return
        slots, a_is_src = self.flows.assign(seg)
        self._fit()
        cols = (slots, a_is_src, seg.frame, seg.ts_ns, seg.flags.astype(np.int64), seg.seq.astype(np.int64),
                seg.ack.astype(np.int64), seg.win.astype(np.int64), seg.payload_len.astype(np.int64),
                seg.ip_len.astype(np.int64), seg.mss.astype(np.int64), seg.wscale.astype(np.int64),
                seg.sack_perm, seg.has_ts, seg.csum_ok.astype(np.int64), seg.truncated,
                seg.opt_error.astype(np.int64), seg.tunnel.astype(np.int64), seg.sport.astype(np.int64),
                seg.dport.astype(np.int64))
        self.seg_conn = np.empty(n, np.int64)
        self.seg_dir = np.empty(n, np.int64)
        i = 0
        while i < n:
            i = engine.run(i, *cols, self.st, self.hist, TABLE, self.pvec, self.server_ports, self.g,
                           self.tr, self.done, self.done_hist, self.seg_conn, self.seg_dir)
            self._collect()
        self._analyse(seg, slots)
        self.last_ns = max(self.last_ns, int(seg.ts_ns.max()))
        self._retire(self.last_ns)

    def _analyse(self, seg: SegmentTable, slots: npt.NDArray[np.int64]) -> None:
        """Wireshark's sequence analysis over the batch, and the control segments the detectors read."""
        n = len(seg)
        ev = np.empty((sequence.MAX_EVENTS_PER_SEGMENT * n + 16, sequence.EV_WIDTH), np.int64)
        k = sequence.run(slots, self.seg_conn, self.seg_dir, seg.frame, seg.ts_ns, seg.flags.astype(np.int64),
                         seg.seq.astype(np.int64), seg.ack.astype(np.int64), seg.win.astype(np.int64),
                         seg.payload_len.astype(np.int64), seg.wscale.astype(np.int64), self.seq_st, ev)
        if k:
            self.seq_events.append(ev[:k].copy())
        ctl = np.flatnonzero(seg.flags & 0x07)
        if self.keep_segments:
            sg = np.empty((n, SG_WIDTH), np.int64)
            sg[:, SG_CONN], sg[:, SG_DIR], sg[:, SG_FRAME], sg[:, SG_NS] = self.seg_conn, self.seg_dir, seg.frame, seg.ts_ns
            sg[:, SG_FLAGS], sg[:, SG_SEQ], sg[:, SG_ACK] = seg.flags, seg.seq, seg.ack
            sg[:, SG_LEN], sg[:, SG_WIN] = seg.payload_len, seg.win
            sg[:, SG_MSS], sg[:, SG_WSCALE] = seg.mss, seg.wscale
            sg[:, SG_SACK_PERM], sg[:, SG_TSVAL] = seg.sack_perm, np.where(seg.has_ts, seg.ts_val.astype(np.int64), -1)
            sg[:, SG_TSECR] = np.where(seg.has_ts, seg.ts_ecr.astype(np.int64), -1)
            sg[:, SG_SACK_COUNT] = seg.sack_count
            sg[:, SG_SACK_LEFT0], sg[:, SG_SACK_RIGHT0] = seg.sack_left[:, 0], seg.sack_right[:, 0]
            self.segment_rows.append(sg)
        if len(ctl):
            rows = np.empty((len(ctl), CT_WIDTH), np.int64)
            rows[:, CT_CONN], rows[:, CT_DIR] = self.seg_conn[ctl], self.seg_dir[ctl]
            rows[:, CT_FRAME], rows[:, CT_NS] = seg.frame[ctl], seg.ts_ns[ctl]
            rows[:, CT_FLAGS], rows[:, CT_SEQ], rows[:, CT_ACK] = seg.flags[ctl], seg.seq[ctl], seg.ack[ctl]
            rows[:, CT_LEN], rows[:, CT_WIN] = seg.payload_len[ctl], seg.win[ctl]
            rows[:, CT_TSVAL] = np.where(seg.has_ts[ctl], seg.ts_val[ctl].astype(np.int64), -1)
            rows[:, CT_CSUM] = seg.csum_ok[ctl]
            self.control.append(rows)

    def finish(self) -> None:
        """End of capture: every live connection is finished with its state as of now."""
        live = np.flatnonzero(self.st[: self.flows.used, C_CONN] != NONE)
        self._drain(live)

    def _fit(self) -> None:
        """Grow the state matrix to the flow table's capacity."""
        have, need = len(self.st), self.flows.capacity
        if need > have:
            st, hist = engine.new_state(need)
            st[:have], hist[:have] = self.st, self.hist
            self.st, self.hist = st, hist
            seq_st = sequence.new_state(need)
            seq_st[:have] = self.seq_st
            self.seq_st = seq_st

    def _retire(self, now: int) -> None:
        """Finish and free the slots no later packet could continue (the engine's own is_reuse rule)."""
        st = self.st[: self.flows.used]
        live = st[:, C_CONN] != NONE
        idle = now - st[:, C_LAST_NS] >= self.pvec[engine.P_IDLE_NS]
        term = engine.close_times(st)
        ended = (term != NONE) & (now > term)
        gone = np.flatnonzero(live & (idle | ended))
        if len(gone):
            self._drain(gone)
            self.flows.release(gone.astype(np.int64))
            self.seq_st[gone, sequence.S_CONN] = sequence.UNSET

    def _drain(self, slots: npt.NDArray[np.intp]) -> None:
        j = 0
        slots = slots.astype(np.int64)
        while j < len(slots):
            j += engine.drain(slots[j:], FOREVER, self.st, self.hist, self.pvec, TABLE, self.g, self.tr,
                              self.done, self.done_hist)
            self._collect()

    def _collect(self) -> None:
        """Move what the engine emitted out of its buffers."""
        ntr, ndone = int(self.g[engine.G_NTR]), int(self.g[engine.G_NDONE])
        if ntr:
            self.transitions.append(self.tr[:ntr].copy())
        if ndone:
            rows = self.done[:ndone].copy()
            self.conn_rows.append(rows)
            self.conn_hist.append(self.done_hist[:ndone].copy())
            self.conn_keys.append(self.flows.keys[rows[:, C_SLOT]].copy())
        self.g[engine.G_NTR] = 0
        self.g[engine.G_NDONE] = 0
