"""Differential test: tcpa's conn_state and history against Zeek's own baselines (../shared/corpus/zeek).

Every primary oracle is compared connection by connection. The agreement table is printed; the test fails
below 97 % conn_state or 90 % history agreement (llc.pcap counted on its own line), and on any disagreement
not explained in zeek_known_differences.tsv (or explained there but gone: the list must stay true).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from analyzer import Params, analyze

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "zeek"
KNOWN = Path(__file__).with_name("zeek_known_differences.tsv")
CONN_STATE_MIN, HISTORY_MIN = 0.97, 0.90


@dataclass
class Row:
    trace: str
    key: str  # orig_h:orig_p>resp_h:resp_p as Zeek logged it
    ts: str
    field: str
    zeek: str
    ours: str


def oracles() -> list[dict[str, str]]:
    with open(CORPUS / "INDEX.tsv", newline="") as fh:
        return [r for r in csv.DictReader(fh, delimiter="\t") if r["role"] == "primary"]


def read_oracle(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def match(conns: pd.DataFrame, o: dict[str, str], taken: set[int]) -> pd.Series | None:
    """Our connection for one oracle row: same 4-tuple (either orientation), nearest first packet time."""
    op, rp = int(o["orig_p"]), int(o["resp_p"])
    same = ((conns.orig_h == o["orig_h"]) & (conns.orig_p == op) & (conns.resp_h == o["resp_h"]) & (conns.resp_p == rp))
    rev = ((conns.orig_h == o["resp_h"]) & (conns.orig_p == rp) & (conns.resp_h == o["orig_h"]) & (conns.resp_p == op))
    cands = conns[(same | rev) & ~conns.index.isin(taken)]
    if cands.empty:
        return None
    if o.get("ts", "-") not in ("-", ""):
        cands = cands.iloc[(cands["ts"] - float(o["ts"])).abs().argsort()]
    taken.add(int(cands.index[0]))
    return cands.iloc[0]


def compare_trace(entry: dict[str, str]) -> tuple[int, int, int, int, list[Row]]:
    """(conn_state rows, agreeing, history rows, agreeing, disagreements) for one trace."""
    params = Params(checksums=entry["checksums"] == "validated")
    report = analyze(CORPUS / entry["trace"], params=params)
    conns, taken = report.connections, set()
    n_cs = ok_cs = n_h = ok_h = 0
    diffs: list[Row] = []
    for o in read_oracle(CORPUS / entry["oracle"]):
        key = f"{o['orig_h']}:{o['orig_p']}>{o['resp_h']}:{o['resp_p']}"
        c = match(conns, o, taken)
        ours_cs = "(missing)" if c is None else c["conn_state"]
        ours_h = "(missing)" if c is None else (c["history"] or "-")
        if o.get("conn_state", "-") not in ("-", ""):
            n_cs += 1
            ok_cs += ours_cs == o["conn_state"]
            if ours_cs != o["conn_state"]:
                diffs.append(Row(entry["trace"], key, o.get("ts", "-"), "conn_state", o["conn_state"], ours_cs))
        if "history" in o:
            n_h += 1
            ok_h += ours_h == o["history"]
            if ours_h != o["history"]:
                diffs.append(Row(entry["trace"], key, o.get("ts", "-"), "history", o["history"], ours_h))
    return n_cs, ok_cs, n_h, ok_h, diffs


def known_differences() -> dict[tuple[str, str, str, str], str]:
    with open(KNOWN, newline="") as fh:
        rows = [r for r in csv.DictReader((line for line in fh if not line.startswith("#")), delimiter="\t")]
    return {(r["trace"], r["connection"], r["field"], r["zeek"]): r["reason"] for r in rows}


def test_conn_state_and_history_agree_with_zeek(capsys: pytest.CaptureFixture[str]) -> None:
    totals = {"corpus": [0, 0, 0, 0], "llc.pcap": [0, 0, 0, 0]}
    lines, diffs = [], []
    for entry in oracles():
        n_cs, ok_cs, n_h, ok_h, d = compare_trace(entry)
        bucket = totals["llc.pcap" if entry["trace"].endswith("llc.pcap") else "corpus"]
        for i, v in enumerate((n_cs, ok_cs, n_h, ok_h)):
            bucket[i] += v
        lines.append(f"{entry['trace']:<66} conn_state {ok_cs:>4}/{n_cs:<4} history {ok_h:>4}/{n_h:<4}")
        diffs += d
    known = known_differences()
    unexplained = [d for d in diffs if (d.trace, d.key, d.field, d.zeek) not in known]
    seen = {(d.trace, d.key, d.field, d.zeek) for d in diffs}
    stale = [k for k in known if k not in seen]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
        for name, (n_cs, ok_cs, n_h, ok_h) in totals.items():
            print(f"{name}: conn_state {ok_cs}/{n_cs} = {ok_cs / max(n_cs, 1):.1%}, "
                  f"history {ok_h}/{n_h} = {ok_h / max(n_h, 1):.1%}")
        for d in diffs:
            reason = known.get((d.trace, d.key, d.field, d.zeek), "UNEXPLAINED")
            print(f"  {d.trace} {d.key} {d.field}: zeek {d.zeek} ours {d.ours} -- {reason}")
    n_cs, ok_cs, n_h, ok_h = totals["corpus"]
    assert ok_cs / n_cs >= CONN_STATE_MIN
    assert ok_h / n_h >= HISTORY_MIN
    assert not unexplained, f"{len(unexplained)} disagreements not in {KNOWN.name}"
    assert not stale, f"{KNOWN.name} lists differences that are gone: {stale}"
