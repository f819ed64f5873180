"""Wireshark's TCP expert analysis as findings: one per connection, direction and kind, with every frame.

The per-segment flags come from analyzer/sequence.py, which follows packet-tcp.c's definitions; this module
only groups them and says what they mean.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import MAX_EVIDENCE, Context, Findings, Kind, declare, detector, group, group_evidence

NS = 1e9

declare(
    Kind("retransmission", "notice", "Retransmissions",
         "Segments sent again that did not advance the sequence space: the sender decided they were lost.",
         "Packet loss on the path (congestion, a bad link, a policer), or the receiver's ACKs lost.",
         "Look where loss starts (capture at both ends); check interface errors and drops, queue lengths, "
         "policers; many retransmissions to one destination point at its path.", "tcp.analysis.retransmission"),
    Kind("fast_retransmission", "notice", "Fast retransmissions",
         "Retransmissions within 20 ms of two or more duplicate ACKs: the sender recovered from a loss without "
         "waiting for its timer.", "A single lost segment in a flow of data.", "Usually fine; many point at "
         "steady loss.", "tcp.analysis.fast_retransmission"),
    Kind("spurious_retransmission", "notice", "Spurious retransmissions",
         "Data sent again that the receiver had already acknowledged: the retransmission was unnecessary.",
         "An RTO shorter than the real RTT (delay spikes), ACKs lost or delayed on the way back.",
         "Check for delay spikes and reverse-path loss.", "tcp.analysis.spurious_retransmission"),
    Kind("out_of_order", "notice", "Out-of-order segments",
         "A segment below the highest sequence seen, arriving within one handshake RTT of it: reordered in the "
         "network rather than retransmitted.", "Multipath routing, link aggregation, parallel queues.",
         "Usually harmless in small amounts; heavy reordering triggers needless fast retransmits.",
         "tcp.analysis.out_of_order"),
    Kind("lost_segment", "notice", "Segments missing from the capture",
         "A segment's sequence number is beyond the next expected one: data before it was not captured (lost "
         "before the capture point, or dropped by the capture itself).",
         "Loss upstream of the capture point, or the capture dropped packets (check the capture's drop count).",
         "If the sender retransmits the gap, the loss was real; otherwise suspect the capture.",
         "tcp.analysis.lost_segment"),
    Kind("ack_lost_segment", "notice", "ACKs for data the capture never saw",
         "The receiver acknowledged data that is not in the capture.", "The capture missed packets (or the "
         "data took another path).", "Trust the endpoints over the capture for those bytes.",
         "tcp.analysis.ack_lost_segment"),
    Kind("duplicate_ack", "info", "Duplicate ACKs",
         "Pure ACKs repeating the same acknowledgement and window: the receiver got data beyond a hole and asks "
         "again for the missing segment.", "A lost or reordered segment.", "Read together with the "
         "retransmissions that follow.", "tcp.analysis.duplicate_ack"),
    Kind("window_full", "notice", "Receive window full",
         "The sender filled the receiver's advertised window exactly and must wait.", "The receiver's buffer "
         "is small for the bandwidth-delay product, or its application reads slowly.",
         "Raise the receiver's buffers (tcp_rmem, window scaling) or speed up its reads.",
         "tcp.analysis.window_full"),
    Kind("window_update", "info", "Window updates", "A pure ACK that only changes the advertised window.",
         "The receiving application read data and freed buffer space.", "Nothing to fix.",
         "tcp.analysis.window_update"),
    Kind("zero_window", "warning", "Zero window",
         "The receiver advertised a window of 0: its buffer is full and the sender must stop.",
         "The receiving application stopped reading (blocked, overloaded, deadlocked) or reads too slowly.",
         "Find why the receiver does not read (thread dumps, CPU, disk); the sender probes until it opens.",
         "tcp.analysis.zero_window"),
    Kind("zero_window_probe", "notice", "Zero-window probes",
         "One-byte segments sent at the next sequence number while the peer's window is 0, to learn when it "
         "opens.", "The peer advertised a zero window.", "See zero_window on the peer.",
         "tcp.analysis.zero_window_probe"),
    Kind("zero_window_probe_ack", "info", "Zero-window probe ACKs",
         "The receiver's answer to a zero-window probe, still with window 0.", "The receiver is still full.",
         "See zero_window.", "tcp.analysis.zero_window_probe_ack"),
    Kind("keepalive", "info", "Keep-alive probes",
         "Segments one byte before the next sequence number with 0 or 1 byte: TCP keep-alive probes (after "
         "tcp_keepalive_time idle, 7200 s by default, then every tcp_keepalive_intvl), or a zero-window probe in "
         "Linux's form.", "SO_KEEPALIVE on an idle connection.", "Nothing to fix; unanswered probes mean the "
         "peer is gone.", "tcp.analysis.keep_alive"),
    Kind("keepalive_ack", "info", "Keep-alive ACKs", "The peer's answer to a keep-alive probe: it is alive.",
         "A keep-alive probe.", "Nothing to fix.", "tcp.analysis.keep_alive_ack"),
)

WORDS = {"retransmission": "retransmissions", "fast_retransmission": "fast retransmissions",
         "spurious_retransmission": "spurious retransmissions", "out_of_order": "out-of-order segments",
         "lost_segment": "gaps before segments", "ack_lost_segment": "ACKs of unseen data",
         "duplicate_ack": "duplicate ACKs", "window_full": "window-full segments",
         "window_update": "window updates", "zero_window": "zero-window advertisements",
         "zero_window_probe": "zero-window probes", "zero_window_probe_ack": "zero-window probe ACKs",
         "keepalive": "keep-alive probes", "keepalive_ack": "keep-alive ACKs"}
RETRANSMITS = ("retransmission", "fast_retransmission", "spurious_retransmission")


@detector(*WORDS)
def sequence_analysis(ctx: Context) -> Iterator[Findings]:
    """Group the per-segment flags by connection, direction and kind."""
    if ctx.events.empty:
        return
    rows = np.flatnonzero(ctx.isin("events", "kind", *WORDS))
    kind_code, kind_names = ctx.codes("events", "kind")
    orig = ctx.isin("events", "dir", "orig")
    g = group(ctx.column("events", "conn")[rows], orig[rows], kind_code[rows])
    first = rows[g.first]  # each group's first event: its connection, direction and kind
    kinds = [kind_names[k] for k in kind_code[first].tolist()]
    orig = orig[first]
    first_ns = g.reduce(np.minimum, ctx.column("events", "ts_ns")[rows])
    worst = g.reduce(np.maximum, ctx.column("events", "value")[rows])  # retransmissions: the longest delay (ns)
    data_rt = g.reduce(np.add, (ctx.column("events", "len")[rows] > 0).astype(np.int64))  # data, not SYNs
    at = ctx.conn_rows(ctx.column("events", "conn")[first])
    data = np.where(orig, ctx.column("connections", "orig_data_pkts")[at],
                    ctx.column("connections", "resp_data_pkts")[at])
    # Data (not SYN) retransmissions above 5% of the data segments are a warning.
    heavy = ((np.array(kinds, dtype=object) == "retransmission") & (data_rt >= 3)
             & (data_rt > 0.05 * np.maximum(data, 1)))
    share = data_rt / np.maximum(data, 1)
    summaries = []
    for kind, o, a, b, n, w, h, s in zip(kinds, orig.tolist(), *ctx.names(at), g.sizes.tolist(), worst.tolist(),
                                         heavy.tolist(), share.tolist()):
        src, dst = (a, b) if o else (b, a)
        extra = f"; up to {w / 1e6:.0f} ms after the original" if kind in RETRANSMITS else ""
        if h:
            extra += f" ({s:.0%} of its data segments)"
        summaries.append(f"{src} -> {dst}: {n} {WORDS[kind]}{extra}")
    yield Findings(kinds, summaries, group_evidence(g, ctx.column("events", "frame")[rows], first=MAX_EVIDENCE),
                   (first_ns / NS).tolist(), np.where(heavy, "warning", "").tolist(),
                   ctx.column("connections", "uid")[at].tolist(), ctx.column("connections", "resp_h")[at].tolist(),
                   ctx.column("connections", "resp_p")[at].tolist(), np.where(orig, "orig", "resp").tolist())
