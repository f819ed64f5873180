"""Scenario captures in pcaps/ against their hand-written expected verdicts (NAME.expect.json).

Every field an expectation names is checked, on every connection, in order of first packet; the notices it
lists must be raised. The same captures read in batches of 1 and 7 frames must give identical tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analyzer import analyze
from analyzer.report import LISTED, Report

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
SUFFIXES = (".pcap.gz", ".pcapng.gz", ".pcap", ".pcapng")


def captures() -> list[Path]:
    return sorted(p for p in PCAPS.iterdir() if p.name.endswith(SUFFIXES))


def expectation(capture: Path) -> Path:
    stem = next(capture.name[: -len(s)] for s in SUFFIXES if capture.name.endswith(s))
    return capture.with_name(f"{stem}.expect.json")


def endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_connection(report: Report, row: pd.Series, want: dict[str, Any]) -> list[str]:
    """Every mismatch between one connection and its expectation, as readable lines."""
    got: dict[str, Any] = {"orig": endpoint(row.orig_h, row.orig_p), "resp": endpoint(row.resp_h, row.resp_p),
                           "orig_states": report.state_sequence(row.uid, "orig"),
                           "resp_states": report.state_sequence(row.uid, "resp")}
    bad = []
    for key, value in want.items():
        have = got[key] if key in got else row[key]
        if isinstance(have, float) and pd.isna(have):
            have = None
        if have != value and not (value is None and have in ("", None)):
            bad.append(f"{row.uid} {key}: expected {value!r}, got {have!r}")
    return bad


@pytest.mark.parametrize("capture", captures(), ids=lambda p: p.name)
def test_scenario_verdicts(capture: Path) -> None:
    spec = json.loads(expectation(capture).read_text())
    report = analyze(capture)
    conns = report.connections.sort_values(["first_ns", "conn"], ignore_index=True)
    assert len(conns) == len(spec["connections"]), conns[["uid", "orig_h", "orig_p", "resp_h", "resp_p"]]
    problems = []
    for (_, row), want in zip(conns.iterrows(), spec["connections"]):
        problems += check_connection(report, row, want)
    kinds = {n.kind for n in report.capture.notices}
    problems += [f"notice {k} not raised" for k in spec["notices"] if k not in kinds]
    assert not problems, "\n".join(problems)


def test_every_capture_has_an_expectation() -> None:
    assert captures(), "no scenario captures in pcaps/"
    missing = [c.name for c in captures() if not expectation(c).exists()]
    assert not missing


SMALL = 400_000  # bytes: the batch-size check runs on every capture up to this size (the big ones add time, not cases)


@pytest.mark.parametrize("capture", [c for c in captures() if c.stat().st_size <= SMALL], ids=lambda p: p.name)
def test_batch_size_does_not_change_results(capture: Path) -> None:
    whole = analyze(capture)
    for size in (1, 7):
        part = analyze(capture, batch_frames=size)
        pd.testing.assert_frame_equal(part.connections, whole.connections)
        pd.testing.assert_frame_equal(part.transitions, whole.transitions)


def states_by_groupby(report: Report, ns: int | None) -> pd.DataFrame:
    """states_at() as plain pandas says it: rows (host, role, service, state) counted and spread by state."""
    conns = report.connections
    live = conns if ns is None else conns[conns["first_ns"] <= ns]
    service = live["resp_h"].map(lambda h: f"[{h}]" if ":" in h else h) + ":" + live["resp_p"].astype(str)
    parts = []
    for role, side in (("client", "orig"), ("server", "resp")):
        state = live[f"{side}_state"] if ns is None else report._states(live, side, ns)
        listed = state.isin(LISTED).to_numpy()
        parts.append(pd.DataFrame({"host": live[f"{side}_h"][listed], "role": role, "service": service[listed],
                                   "state": state[listed]}))
    every = pd.concat(parts, ignore_index=True)
    if every.empty:
        return pd.DataFrame(columns=["host", "role", "service", *LISTED, "total"])
    table = every.groupby(["host", "role", "service", "state"]).size().unstack("state", fill_value=0)
    table = table.reindex(columns=[s for s in LISTED if s in table.columns])
    table["total"] = table.sum(axis=1)
    return table.reset_index().sort_values(["total", "host"], ascending=[False, True], ignore_index=True)


@pytest.mark.parametrize("capture", captures(), ids=lambda p: p.name)
def test_socket_counts_match_a_plain_group_by(capture: Path) -> None:
    report = analyze(capture, detect=False)
    first, last = report.capture.first_ns, report.capture.last_ns
    for ns in (None, first - 1, first + (last - first) // 3, last):
        got = report.states_at(ns)
        pd.testing.assert_frame_equal(got, states_by_groupby(report, ns))
        assert got.empty or got.columns.name == "state"
