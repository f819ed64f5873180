"""Drives the compiled engine over batches of segments and collects what it emits.

Memory follows live connections: after every batch, connections that no later packet could continue (idle
past the timeout, or ended and past Zeek's close delay) are retired from the state matrix and their slots
reused. Retirement uses exactly the engine's own "a new connection starts here" rule, and timers are run to
their natural expiry and clipped to the capture's end later, so results do not depend on batch size.

Half-open attempts (a SYN, perhaps answered, whose handshake never completed, with no data, FIN or RST) stay
live until the idle timeout, so a SYN flood from random sources would grow the table without bound. At most
MAX_HALF_OPEN of them are kept: past that the oldest (by last packet) are aged out, dropped with everything
collected about them, and counted in a `half_open_aged_out` notice. Captures below the bound are unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from . import engine, sequence
from .flows import FlowTable
from .layout import (
    C_CONN,
    C_FIRST_FRAME,
    C_HS_ACK_NS,
    C_LAST_NS,
    C_ORIG_IS_A,
    C_SLOT,
    C_START,
    E_DATA_PKTS,
    E_FIN_NS,
    E_RST_NS,
    EP0,
    EP1,
    HIST_MAX,
    NONE,
    ROW,
    START_SYN,
    T_CONN,
    T_FIELDS,
)
from .model import Notice
from .rows import Rows, Spill
from .segments import SegmentTable, format_addr
from .tcpstate import TABLE
from .zeekconn import likely_server_ports

NS = 1_000_000_000
FOREVER = 1 << 62  # "run timers to their natural end": clipped to the capture's end when reported
TR_ROWS, DONE_ROWS = 1 << 16, 1 << 13
MAX_HALF_OPEN = 10_000  # live half-open attempts kept (Linux's own SYN backlog is far smaller)
SYN_SPLIT = 8192  # a batch with more bare SYNs than this is fed in parts, so aging out acts between them
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
    """Flow table, engine state and the collected results of one analysis (spill: as for Rows)."""

    def __init__(self, params: Params | None = None, keep_segments: bool = False, spill: bool | Spill = True) -> None:
        self.params = params or Params()
        self.pvec = self.params.vector()
        self.flows = FlowTable()
        self.st, self.hist = engine.new_state(self.flows.capacity)
        self.g = np.zeros(4, dtype=np.int64)
        self.tr = np.empty((TR_ROWS, T_FIELDS), dtype=np.int64)
        self.done = np.empty((DONE_ROWS, ROW), dtype=np.int64)
        self.done_hist = np.empty((DONE_ROWS, HIST_MAX), dtype=np.uint8)
        self.server_ports = likely_server_ports()
        self.conn_rows, self.conn_hist = Rows(ROW, np.int64, spill), Rows(HIST_MAX, np.uint8, spill)
        self.conn_keys, self.transitions = Rows(5, np.uint64, spill), Rows(T_FIELDS, np.int64, spill)
        self.last_ns = 0
        self.seg_conn = np.empty(0, np.int64)  # the last batch's segments: connection id and direction
        self.seg_dir = np.empty(0, np.int64)
        self.seq_st = sequence.new_state(self.flows.capacity)
        self.seq_events = Rows(sequence.EV_WIDTH, np.int64, spill)  # sequence.EV_* rows
        self.control = Rows(CT_WIDTH, np.int64, spill)  # CT_* rows: every SYN, FIN and RST segment
        self.keep_segments = keep_segments  # every segment's SG_* row, for the HTML report's ladders
        self.segment_rows = Rows(SG_WIDTH, np.int64, spill)
        self.max_half_open = MAX_HALF_OPEN
        self.aged_out = 0  # half-open attempts dropped from the live table
        self.aged_first_frame = 0
        self.aged_targets: dict[str, int] = {}  # server ip:port -> attempts aged out
        self.notices: list[Notice] = []

    def feed(self, seg: SegmentTable) -> None:
        """Run one batch of segments through the engine."""
        n = len(seg)
        if n > SYN_SPLIT and int(((seg.flags & 0x12) == 0x02).sum()) > SYN_SPLIT:
            # A flood of new attempts: feed it in parts (results do not depend on batch size) so the live
            # table is aged out between them instead of growing by a whole batch of attempts.
            for i in range(0, n, SYN_SPLIT):
                self._feed(seg.take(np.arange(i, min(n, i + SYN_SPLIT))))
            return
        self._feed(seg)

    def _feed(self, seg: SegmentTable) -> None:
        n = len(seg)
        if n == 0:
            return
        slots, a_is_src = self.flows.assign(seg)
        self._fit()
        cols = (slots, a_is_src, seg.frame, seg.ts_ns, seg.flags, seg.seq, seg.ack, seg.win, seg.payload_len,
                seg.ip_len, seg.mss, seg.wscale, seg.sack_perm, seg.has_ts, seg.csum_ok, seg.truncated,
                seg.opt_error, seg.tunnel, seg.sport, seg.dport)
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
        self._age_out()

    def _analyse(self, seg: SegmentTable, slots: npt.NDArray[np.int64]) -> None:
        """Wireshark's sequence analysis over the batch, and the control segments the detectors read."""
        n = len(seg)
        ev = np.empty((sequence.MAX_EVENTS_PER_SEGMENT * n + 16, sequence.EV_WIDTH), np.int64)
        k = sequence.run(slots, self.seg_conn, self.seg_dir, seg.frame, seg.ts_ns, seg.flags, seg.seq, seg.ack,
                         seg.win, seg.payload_len, seg.wscale, self.seq_st, ev, self.keep_segments)
        if k:
            self.seq_events.append(ev[:k])
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
        if self.aged_out:
            top = sorted(self.aged_targets.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
            where = ", ".join(f"{n} to {t}" for t, n in top)
            self.notices = [n for n in self.notices if n.kind != "half_open_aged_out"]
            self.notices.append(Notice(
                self.aged_first_frame, "half_open_aged_out",
                f"{self.aged_out} half-open connection attempts aged out of the live table (it keeps at most "
                f"{self.max_half_open}; oldest first): counted here, not listed as connections ({where}); "
                f"first: frame {self.aged_first_frame}"))

    def release(self) -> None:
        """Let go of the live table, the sequence-analysis state and the per-batch buffers (after finish(): the
        report is built from the collected rows alone): 10-20 MB."""
        for name in ("st", "hist", "tr", "done", "done_hist", "seq_st"):
            old = getattr(self, name)
            setattr(self, name, np.empty((0, *old.shape[1:]), old.dtype))
        self.flows = FlowTable(1)

    def _age_out(self) -> None:
        """Keep at most max_half_open half-open attempts live: drop the oldest beyond that, and count them."""
        st = self.st[: self.flows.used]
        half = ((st[:, C_CONN] != NONE) & (st[:, C_START] == START_SYN) & (st[:, C_HS_ACK_NS] == NONE)
                & (st[:, EP0 + E_RST_NS] == NONE) & (st[:, EP1 + E_RST_NS] == NONE)
                & (st[:, EP0 + E_FIN_NS] == NONE) & (st[:, EP1 + E_FIN_NS] == NONE)
                & (st[:, EP0 + E_DATA_PKTS] == 0) & (st[:, EP1 + E_DATA_PKTS] == 0))
        cand = np.flatnonzero(half)
        excess = len(cand) - self.max_half_open
        if excess <= 0:
            return
        order = np.lexsort((st[cand, C_FIRST_FRAME], st[cand, C_LAST_NS]))
        gone = cand[order[:excess]]
        conns = st[gone, C_CONN].copy()
        if not self.aged_out:
            self.aged_first_frame = int(st[gone, C_FIRST_FRAME].min())
        else:
            self.aged_first_frame = min(self.aged_first_frame, int(st[gone, C_FIRST_FRAME].min()))
        self.aged_out += len(gone)
        self._count_targets(gone)
        st[gone, C_CONN] = NONE
        self.flows.release(gone.astype(np.int64))
        self.seq_st[gone, sequence.S_CONN] = sequence.UNSET
        self._forget(conns)

    def _count_targets(self, slots: npt.NDArray[np.intp]) -> None:
        """Per server ip:port, how many of these slots' attempts were aged out."""
        keys = self.flows.keys[slots]
        a_orig = self.st[slots, C_ORIG_IS_A] == 1
        hi = np.where(a_orig, keys[:, 2], keys[:, 0])  # the responder is the other endpoint
        lo = np.where(a_orig, keys[:, 3], keys[:, 1])
        port = np.where(a_orig, keys[:, 4] & np.uint64(0xFFFF), keys[:, 4] >> np.uint64(16))
        uniq, counts = np.unique(np.stack([hi, lo, port], axis=1), axis=0, return_counts=True)
        for (h, l_, p), n in zip(uniq.tolist(), counts.tolist()):
            addr = format_addr(h, l_)
            name = f"[{addr}]:{p}" if ":" in addr else f"{addr}:{p}"
            self.aged_targets[name] = self.aged_targets.get(name, 0) + n

    def _forget(self, conns: npt.NDArray[np.int64]) -> None:
        """Drop the transitions, events and control rows already collected for these connection ids."""
        low = int(conns.min())
        for rows, col in ((self.transitions, T_CONN), (self.control, CT_CONN), (self.seq_events, sequence.EV_CONN),
                          (self.segment_rows, SG_CONN)):
            rows.drop(col, low, conns)

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
        term = np.empty(len(st), np.int64)
        engine.close_times(st, term)
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
            self.transitions.append(self.tr[:ntr])
        if ndone:
            rows = self.done[:ndone]
            self.conn_rows.append(rows)
            self.conn_hist.append(self.done_hist[:ndone])
            self.conn_keys.append(self.flows.keys[rows[:, C_SLOT]])
        self.g[engine.G_NTR] = 0
        self.g[engine.G_NDONE] = 0
