"""Differential test: tcpa's per-segment sequence analysis against Wireshark's tcp.analysis flags.

tshark (real, from Debian) reads the same captures; its expert messages name each flag per frame. Precision
and recall are computed per flag over the scenario captures and the Zeek corpus, printed, and the headline
flags must reach MIN_SCORE. Frames where Wireshark itself is wrong are listed in wireshark_known_differences.tsv
with the reason.
"""

from __future__ import annotations

import csv
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from analyzer import Params, analyze

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "zeek"
KNOWN = Path(__file__).with_name("wireshark_known_differences.tsv")
MIN_SCORE = 0.98
ACK_RTT_MIN = 0.95
MUST = ("retransmission", "duplicate_ack", "zero_window", "keepalive", "out_of_order", "lost_segment")

# Wireshark's expert message -> our kind. A fast or spurious retransmission is also a retransmission there.
MESSAGES = {
    "This frame is a (suspected) retransmission": "retransmission",
    "This frame is a (suspected) fast retransmission": "fast_retransmission",
    "This frame is a (suspected) spurious retransmission": "spurious_retransmission",
    "This frame is a (suspected) out-of-order segment": "out_of_order",
    "Previous segment(s) not captured (common at capture start)": "lost_segment",
    "ACKed segment that wasn't captured (common at capture start)": "ack_lost_segment",
    "TCP window specified by the receiver is now completely full": "window_full",
    "TCP window update": "window_update",
    "TCP Zero Window segment": "zero_window",
    "TCP Zero Window Probe": "zero_window_probe",
    "ACK to a TCP Zero Window Probe": "zero_window_probe_ack",
    "TCP keep-alive segment": "keepalive",
    "ACK to a TCP keep-alive segment": "keepalive_ack",
}
KINDS = sorted(set(MESSAGES.values()) | {"duplicate_ack"})


def captures() -> list[Path]:
    pcaps = sorted(p for p in (ROOT / "pcaps").iterdir() if p.name.endswith((".pcap", ".pcapng", ".pcap.gz")))
    with open(CORPUS / "INDEX.tsv", newline="") as fh:
        corpus = sorted({CORPUS / r["trace"] for r in csv.DictReader(fh, delimiter="\t")})
    return pcaps + corpus


def wireshark_flags(path: Path) -> tuple[dict[str, set[int]], set[int]]:
    """Frames carrying each flag, from tshark's expert messages, and the frames it found malformed.

    Wireshark stops dissecting a malformed frame (or one whose IP length overruns it) before its sequence
    analysis, so those frames are left out of the comparison; tcpa analyses the headers that are there and
    marks the segment truncated.
    """
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.number", "-e",
                          "_ws.expert.message", "-E", "aggregator=\x1f"],
                         capture_output=True, text=True, errors="replace", check=False).stdout
    flags: dict[str, set[int]] = defaultdict(set)
    malformed: set[int] = set()
    for line in out.splitlines():
        frame, _, messages = line.partition("\t")
        if "Malformed Packet" in messages or "total length exceeds packet length" in messages:
            malformed.add(int(frame))
        for msg in messages.split("\x1f"):
            kind = MESSAGES.get(msg) or ("duplicate_ack" if msg.startswith("Duplicate ACK (#") else None)
            if kind:
                flags[kind].add(int(frame))
            if kind in ("fast_retransmission", "spurious_retransmission"):
                flags["retransmission"].add(int(frame))
    return flags, malformed


def our_flags(path: Path) -> dict[str, set[int]]:
    events = analyze(path, params=Params(checksums=False)).events
    flags: dict[str, set[int]] = defaultdict(set)
    for kind, frame in zip(events["kind"].astype(str), events["frame"]):
        flags[kind].add(int(frame))
        if kind in ("fast_retransmission", "spurious_retransmission"):
            flags["retransmission"].add(int(frame))
    return flags


def known_differences() -> dict[tuple[str, str, int], str]:
    if not KNOWN.exists():
        return {}
    with open(KNOWN, newline="") as fh:
        rows = csv.DictReader((line for line in fh if not line.startswith("#")), delimiter="\t")
        return {(r["capture"], r["kind"], int(r["frame"])): r["reason"] for r in rows}


def test_sequence_analysis_agrees_with_wireshark(capsys: pytest.CaptureFixture[str]) -> None:
    known = known_differences()
    tp: dict[str, int] = defaultdict(int)
    fp: dict[str, int] = defaultdict(int)
    fn: dict[str, int] = defaultdict(int)
    listing = []
    for path in captures():
        name = str(path.relative_to(ROOT.parent)) if CORPUS in path.parents else path.name
        (ws, malformed), ours = wireshark_flags(path), our_flags(path)
        for kind in KINDS:
            w, o = ws.get(kind, set()) - malformed, ours.get(kind, set()) - malformed
            for frame in sorted(w ^ o):
                reason = known.get((name, kind, frame))
                side = "wireshark only" if frame in w else "tcpa only"
                listing.append(f"  {name} frame {frame} {kind}: {side}" + (f" -- {reason}" if reason else ""))
                if reason:  # explained: neither side is counted wrong
                    continue
                (fn if frame in w else fp)[kind] += 1
            tp[kind] += len(w & o)
    scores = {}
    with capsys.disabled():
        print(f"\n{'flag':<26}{'both':>7}{'tshark only':>13}{'tcpa only':>11}{'precision':>11}{'recall':>8}")
        for kind in KINDS:
            precision = tp[kind] / (tp[kind] + fp[kind]) if tp[kind] + fp[kind] else 1.0
            recall = tp[kind] / (tp[kind] + fn[kind]) if tp[kind] + fn[kind] else 1.0
            scores[kind] = (precision, recall)
            print(f"{kind:<26}{tp[kind]:>7}{fn[kind]:>13}{fp[kind]:>11}{precision:>11.3f}{recall:>8.3f}")
        print("\n".join(listing[:400]))
    absent = [k for k in MUST if tp[k] == 0]
    assert not absent, f"no capture exercises {absent}"
    low = {k: v for k, v in scores.items() if k in MUST and min(v) < MIN_SCORE}
    assert not low, f"below {MIN_SCORE}: {low}"


def test_ack_rtt_matches_wireshark(capsys: pytest.CaptureFixture[str]) -> None:
    """tcp.analysis.ack_rtt and tcp.analysis.acks_frame, per ACK, on the scenario captures and HTTP traces."""
    paths = [p for p in captures() if p.stat().st_size < 1_000_000
             and (CORPUS not in p.parents or p.parent.name in ("tcp", "http"))]
    total = agree = 0
    for path in paths:
        out = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.number", "-e",
                              "tcp.analysis.ack_rtt", "-e", "tcp.analysis.acks_frame"],
                             capture_output=True, text=True, check=False).stdout
        ws = {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1] and "," not in parts[1]:
                ws[int(parts[0])] = (float(parts[1]), int(parts[2]))
        ev = analyze(path, params=Params(checksums=False), keep_segments=True).events
        ev = ev[ev["kind"].astype(str) == "ack_rtt"]
        ours = {int(f): (v / 1e9, int(r)) for f, v, r in zip(ev["frame"], ev["value"], ev["ref_frame"])}
        total += len(ws)
        agree += sum(1 for f, (rtt, acked) in ws.items()
                     if f in ours and ours[f][1] == acked and abs(ours[f][0] - rtt) < 1e-6)
    with capsys.disabled():
        print(f"\nack_rtt: {agree}/{total} of Wireshark's per-ACK RTTs matched (value and acknowledged frame)")
    # Measured 2424/2522 = 96.1 % on this set (99.1 % over the whole corpus). The remaining ACKs are ones that
    # Wireshark pairs with an older copy of a retransmitted or duplicated segment (ssh-dups, m57-long, SYN retries);
    # tcpa keeps only the last 16 unacknowledged segments per direction and pairs with the latest copy.
    assert total and agree / total >= ACK_RTT_MIN
