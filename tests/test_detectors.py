"""Every finding kind fires on the scenario captures made for it and stays silent on its near misses.

Synthetic captures come from scripts/make_scenarios.py, real-kernel ones (lab_*) from scripts/lab.py.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from analyzer import analyze
from analyzer.detectors import all_kinds
from analyzer.report import Report

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"

# kind -> (captures where it must fire, near misses where it must not)
CASES: dict[str, tuple[list[str], list[str]]] = {
    "syn_retransmit": (["lab_lost_syn_once", "lab_lost_syn_twice", "syn_retransmit_3s"], ["port_reuse", "lab_normal_close"]),
    "synack_retransmit": (["lab_accept_queue_overflow"], ["lab_normal_close", "syn_retransmit_3s"]),
    "accept_queue_overflow": (["lab_accept_queue_overflow"], ["lab_lost_syn_once", "lab_normal_close"]),
    "syn_unanswered": (["lab_accept_queue_overflow", "nat_timestamps"], ["syn_retransmit_3s", "lab_refused"]),
    "connection_refused": (["lab_refused", "rst_each_state"], ["syn_flood", "lab_normal_close"]),
    "syn_flood": (["syn_flood"], ["lab_accept_queue_overflow", "port_churn"]),
    "simultaneous_open": (["simultaneous_open"], ["normal_close"]),
    "three_packet_close": (["three_packet_fin", "lab_three_packet_close"], ["normal_close", "simultaneous_close"]),
    "simultaneous_close": (["simultaneous_close", "lab_simultaneous_close"], ["three_packet_fin", "normal_close"]),
    "rst_after_half_close": (["lab_rst_after_half_close", "rst_each_state"], ["rst_no_half_close", "normal_close"]),
    "close_wait": (["lab_close_wait", "fin_wait_2"], ["normal_close", "lab_normal_close"]),
    "fin_wait_2_lingering": (["fin_wait_2"], ["lab_close_wait", "normal_close"]),
    "last_ack_lingering": (["last_ack"], ["normal_close", "lab_normal_close"]),
    "port_reuse": (["port_reuse"], ["normal_close"]),
    "time_wait_accumulation": (["lab_time_wait_many", "port_churn"], ["port_reuse", "monotonic_timestamps"]),
    "port_exhaustion_risk": (["port_churn"], ["lab_time_wait_many"]),
    "timestamp_regression": (["nat_timestamps"], ["monotonic_timestamps"]),
    "half_open": (["half_open"], ["recovered_loss", "mss_blackhole"]),
    "mss_blackhole": (["mss_blackhole"], ["half_open", "recovered_loss"]),
    "retransmission": (["half_open", "lab_lost_syn_once"], ["normal_close"]),
    "fast_retransmission": (["recovered_loss"], ["half_open"]),
    "spurious_retransmission": (["capture_gap"], ["recovered_loss"]),
    "out_of_order": (["recovered_loss"], ["capture_gap"]),
    "lost_segment": (["capture_gap"], ["normal_close"]),
    "ack_lost_segment": (["capture_gap"], ["recovered_loss"]),
    "duplicate_ack": (["recovered_loss"], ["capture_gap"]),
    "window_full": (["lab_zero_window"], ["normal_close"]),
    "window_update": (["capture_gap", "zero_window_probes"], ["normal_close"]),
    "zero_window": (["lab_zero_window", "zero_window_probes"], ["normal_close"]),
    "zero_window_probe": (["zero_window_probes"], ["lab_zero_window"]),
    "zero_window_probe_ack": (["zero_window_probes"], ["lab_keepalive"]),
    "keepalive": (["lab_keepalive"], ["normal_close"]),
    "keepalive_ack": (["lab_keepalive"], ["zero_window_probes"]),
}
HEALTHY = ["normal_close", "three_packet_fin", "lab_normal_close", "lab_three_packet_close", "ipv6", "vlan", "sll",
           "seq_wraparound", "monotonic_timestamps", "simultaneous_close"]


@cache
def report(name: str) -> Report:
    path = next(PCAPS.glob(f"{name}.pcap*"))
    return analyze(path)


def kinds(name: str) -> set[str]:
    return set(report(name).findings["kind"])


def test_every_kind_has_a_case() -> None:
    assert set(CASES) == set(all_kinds()), set(all_kinds()) ^ set(CASES)
    assert all(fire and miss for fire, miss in CASES.values())


@pytest.mark.parametrize("kind", sorted(CASES))
def test_fires_and_near_miss_stays_silent(kind: str) -> None:
    fire, miss = CASES[kind]
    for name in fire:
        assert kind in kinds(name), f"{kind} did not fire on {name}"
        found = report(name).findings
        for row in found[found["kind"] == kind].itertuples():
            assert row.frames, f"{kind} on {name} has no evidence frames"
            assert row.summary and row.explanation and row.remedy
    for name in miss:
        assert kind not in kinds(name), f"{kind} fired on near miss {name}"


def test_first_syn_gap_is_classified() -> None:
    f = report("syn_retransmit_3s").findings
    text = f.loc[f["kind"] == "syn_retransmit", "summary"].iloc[0]
    assert "about 3 s" in text and "answered by SYN+ACK" in text
    f = report("lab_lost_syn_once").findings
    assert "about 1 s" in f.loc[f["kind"] == "syn_retransmit", "summary"].iloc[0]


def test_nat_evidence_raises_timestamp_regression_to_warning() -> None:
    f = report("nat_timestamps").findings
    row = f[f["kind"] == "timestamp_regression"].iloc[0]
    assert row["severity"] == "warning" and "unanswered" in row["summary"] and "Hz" in row["summary"]


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_traffic_has_no_warning_or_error(name: str) -> None:
    f = report(name).findings
    bad = f[f["severity"].isin(["warning", "error"])]
    assert bad.empty, bad[["kind", "summary"]].to_string()
