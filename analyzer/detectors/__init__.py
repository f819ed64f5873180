"""Detectors: diagnoses drawn from the analysed tables, each with evidence, likely causes and a remedy.

A detector is a small function registered with `@detector(...)` for the kinds it reports. It reads the
Report's tables (connections, transitions, control segments, per-segment events) and returns Findings; it does
no I/O. `run()` calls the selected detectors and returns the findings as one DataFrame, worst first.

Every kind is declared once with `Kind(...)`: its stable id, default severity, a title, an explanation for the
on-call engineer, the likely causes and the remedy. The texts rest on ../shared/DOMAIN.md; the Wireshark
field or Zeek weird a kind corresponds to is named in `matches`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..report import FINDING_COLUMNS, Report

SEVERITIES = ("info", "notice", "warning", "error")
RANK = {s: i for i, s in enumerate(SEVERITIES)}
MAX_EVIDENCE = 50  # frame numbers kept per finding


@dataclass(frozen=True, slots=True)
class Kind:
    """What one kind of finding means; the texts are shown with every finding of the kind."""

    id: str
    severity: str
    title: str
    explanation: str
    causes: str
    remedy: str
    matches: str = ""  # the Wireshark field or Zeek weird it corresponds to


@dataclass(frozen=True, slots=True)
class Finding:
    """One diagnosis: on a connection (uid) or on a host:port, with the frames that prove it."""

    kind: str
    summary: str
    frames: tuple[int, ...]
    ts: float
    severity: str = ""  # empty: the kind's default
    uid: str = ""
    host: str = ""
    port: int | None = None
    direction: str = ""


@dataclass(frozen=True, slots=True)
class Settings:
    """Thresholds of the detectors (seconds, counts); defaults follow Linux."""

    time_wait: float = 60.0
    ephemeral_ports: int = 28232  # net.ipv4.ip_local_port_range 32768-60999
    exhaustion_warn: float = 0.5  # fraction of the port range that raises port_exhaustion_risk
    time_wait_min: int = 100  # TIME_WAIT sockets on one client toward one server that count as a pile-up
    close_wait_min_s: float = 5.0  # a CLOSE_WAIT that lasts this long counts even if it closed later
    linger_min_s: float = 5.0  # FIN_WAIT_2 / LAST_ACK held this long
    syn_flood_min: int = 100  # half-open connections to one server port
    syn_flood_sources: int = 20  # from at least this many source addresses
    aggregate_over: int = 20  # per-connection findings of one kind on one server port beyond this are merged


@dataclass(frozen=True, slots=True)
class Detector:
    name: str
    kinds: tuple[str, ...]
    func: Callable[[Context], Iterable[Finding]]
    doc: str


@dataclass
class Context:
    """What detectors read: the report's tables, indexed for convenience, and the settings."""

    report: Report
    settings: Settings
    conns: pd.DataFrame = field(init=False)
    rows: dict[str, Any] = field(init=False)  # uid -> the connection's row as a named tuple (fast lookups)

    def __post_init__(self) -> None:
        # Plain Python strings: Arrow-backed string columns make row access and grouping many times slower.
        for name in ("connections", "transitions", "events", "control"):
            df = getattr(self.report, name)
            if len(df.columns):
                text = [c for c in df.columns if pd.api.types.is_string_dtype(df[c]) and c != "kind"]
                setattr(self, f"_{name}", df.astype({c: object for c in text}) if text else df)
            else:
                setattr(self, f"_{name}", df)
        self.conns = self._connections.set_index("uid", drop=False)
        self.rows = {r.uid: r for r in self._connections.itertuples(index=False)}

    def of(self, table: str, uid: str) -> pd.DataFrame:
        """The rows of control or events belonging to one connection (binary search on a uid-sorted copy)."""
        cache = self.__dict__.setdefault("_by_uid", {})
        if table not in cache:
            df = getattr(self, table).sort_values("uid", kind="stable")
            cache[table] = (df, df["uid"].to_numpy())
        df, uids = cache[table]
        lo, hi = uids.searchsorted(uid, "left"), uids.searchsorted(uid, "right")
        return df.iloc[lo:hi]  # type: ignore[no-any-return]

    @property
    def connections(self) -> pd.DataFrame:
        return self._connections  # type: ignore[no-any-return]

    @property
    def transitions(self) -> pd.DataFrame:
        return self._transitions  # type: ignore[no-any-return]

    @property
    def events(self) -> pd.DataFrame:
        return self._events  # type: ignore[no-any-return]

    @property
    def control(self) -> pd.DataFrame:
        return self._control  # type: ignore[no-any-return]

    @property
    def end_ns(self) -> int:
        return self.report.capture.last_ns


KINDS: dict[str, Kind] = {}
DETECTORS: list[Detector] = []


def declare(*kinds: Kind) -> None:
    """Register kinds (each id once)."""
    for k in kinds:
        assert k.id not in KINDS, k.id
        assert k.severity in SEVERITIES, k
        KINDS[k.id] = k


def detector(*kinds: str) -> Callable[[Callable[[Context], Iterable[Finding]]], Callable[[Context], Iterable[Finding]]]:
    """Register a detector function for the kinds it reports."""
    def wrap(func: Callable[[Context], Iterable[Finding]]) -> Callable[[Context], Iterable[Finding]]:
        DETECTORS.append(Detector(func.__name__, kinds, func, (func.__doc__ or "").strip().splitlines()[0]))
        return func
    return wrap


def endpoint(host: str, port: int) -> str:
    """host:port, IPv6 in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def evidence(frames: Iterable[int]) -> tuple[int, ...]:
    """Frame numbers, sorted, at most MAX_EVIDENCE (the first ones)."""
    return tuple(sorted({int(f) for f in frames}))[:MAX_EVIDENCE]


def run(report: Report, settings: Settings | None = None, only: Iterable[str] | None = None) -> pd.DataFrame:
    """Run the detectors (all, or those reporting any of the kinds in `only`); findings worst first."""
    from . import closing, handshake, load, stalls, timestamps, wireshark  # noqa: F401  (registration)
    ctx = Context(report, settings or Settings())
    wanted = set(only) if only is not None else None
    rows = []
    for det in DETECTORS:
        if wanted is not None and not wanted & set(det.kinds):
            continue
        for f in det.func(ctx):
            if wanted is not None and f.kind not in wanted:
                continue
            k = KINDS[f.kind]
            rows.append({"kind": f.kind, "severity": f.severity or k.severity, "uid": f.uid, "host": f.host,
                         "port": f.port, "direction": f.direction, "ts": f.ts, "frames": list(f.frames),
                         "summary": f.summary, "explanation": k.explanation, "causes": k.causes,
                         "remedy": k.remedy, "title": k.title})
    df = pd.DataFrame(rows, columns=[*FINDING_COLUMNS, "title"])
    if df.empty:
        return df
    df["_rank"] = df["severity"].map(RANK)
    df = df.sort_values(["_rank", "kind", "ts"], ascending=[False, True, True], kind="stable")
    return df.drop(columns="_rank").reset_index(drop=True)


def worst(findings: pd.DataFrame, threshold: str) -> bool:
    """Whether any finding is at or above the severity `threshold`."""
    return bool(len(findings)) and bool((findings["severity"].map(RANK) >= RANK[threshold]).any())


def all_kinds() -> dict[str, Kind]:
    """Every declared kind (importing the detector modules)."""
    from . import closing, handshake, load, stalls, timestamps, wireshark  # noqa: F401
    return KINDS


__all__ = ["Finding", "Kind", "Settings", "Context", "KINDS", "DETECTORS", "SEVERITIES", "run", "all_kinds", "worst",
           "declare", "detector", "endpoint", "evidence"]
