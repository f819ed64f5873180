"""Detectors: diagnoses drawn from the analysed tables, each with evidence, likely causes and a remedy.

A detector is a small function registered with `@detector(...)` for the kinds it reports. It reads the
Report's tables (connections, transitions, control segments, per-segment events) and yields Findings; it does
no I/O. A detector that reports one finding per connection yields them as columns (`Findings`) and works on
whole columns (numpy, `group()`) rather than row by row: per-row pandas access costs tens of microseconds, and a
busy capture has tens of thousands of connections. `run()` calls the selected detectors and returns the findings
as one DataFrame, worst first.

Every kind is declared once with `Kind(...)`: its stable id, default severity, a title, an explanation for the
on-call engineer, the likely causes and the remedy. The texts rest on ../shared/DOMAIN.md; the Wireshark
field or Zeek weird a kind corresponds to is named in `matches`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..connections import texts
from ..options import RANK, SEVERITIES, Settings
from ..report import FINDING_COLUMNS, Report

MAX_EVIDENCE = 50  # frame numbers kept per finding
T = TypeVar("T")



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
class Findings:
    """Many findings as columns, one entry per finding in each list: the columnar form of Finding."""

    kind: list[str]
    summary: list[str]
    frames: list[list[int]]
    ts: list[float]
    severity: list[str]  # empty: the kind's default
    uid: list[str]
    host: list[str]
    port: list[int]
    direction: list[str]


FIELDS = ("kind", "severity", "uid", "host", "port", "direction", "ts", "frames", "summary")  # of both forms

Reported = Iterable[Finding | Findings]


@dataclass(frozen=True, slots=True)
class Detector:
    name: str
    kinds: tuple[str, ...]
    func: Callable[[Context], Reported]
    doc: str


@dataclass(frozen=True, slots=True)
class Groups:
    """Rows split by a key, as flat arrays: what `groupby(key, sort=False)` iterates, without a frame per group.

    Groups come in the order of their first row, and rows keep their order within a group.
    """

    codes: npt.NDArray[np.intp]  # each row's group
    order: npt.NDArray[np.intp]  # the rows, group after group
    starts: npt.NDArray[np.intp]  # where each group begins in `order`
    sizes: npt.NDArray[np.intp]

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def first(self) -> npt.NDArray[np.intp]:
        """Each group's first row."""
        return self.order[self.starts]

    @property
    def last(self) -> npt.NDArray[np.intp]:
        """Each group's last row."""
        ends: npt.NDArray[np.intp] = self.starts + self.sizes - 1
        return self.order[ends]

    def rows(self, i: int | np.integer[Any]) -> npt.NDArray[np.intp]:
        """The rows of group i, in order."""
        return self.order[self.starts[i]:self.starts[i] + self.sizes[i]]

    def reduce(self, ufunc: np.ufunc, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """ufunc over each group's values (np.minimum, np.maximum, np.add...)."""
        return ufunc.reduceat(values[self.order], self.starts) if len(self) else values[:0]


def group(*keys: npt.ArrayLike) -> Groups:
    """Group rows by one or more key columns of equal length (no missing values)."""
    codes: npt.NDArray[np.intp] | None = None
    for key in keys:
        part, uniques = pd.factorize(np.asarray(key))
        codes = part if codes is None else pd.factorize(codes * len(uniques) + part)[0]
    assert codes is not None, "group() needs a key"
    sizes = np.bincount(codes) if len(codes) else np.zeros(0, np.intp)
    return Groups(codes, np.argsort(codes, kind="stable"), np.cumsum(sizes) - sizes, sizes)


@dataclass
class Context:
    """What detectors read: the report's tables, the settings, and cached column views for columnar work."""

    report: Report
    settings: Settings
    _cache: dict[tuple[str, ...], Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def connections(self) -> pd.DataFrame:
        return self.report.connections

    @property
    def transitions(self) -> pd.DataFrame:
        return self.report.transitions

    @property
    def events(self) -> pd.DataFrame:
        return self.report.events

    @property
    def control(self) -> pd.DataFrame:
        return self.report.control

    @property
    def end_ns(self) -> int:
        return self.report.capture.last_ns

    def cached(self, name: str, make: Callable[[], T]) -> T:
        """make(), computed once for the detectors of one module (they run one after another): for what
        several of them derive from the same tables."""
        if (name,) not in self._cache:
            self._cache[(name,)] = make()
        return self._cache[(name,)]  # type: ignore[no-any-return]

    def next_module(self) -> None:
        """Let go of what cached() holds (the columns stay, for every module): the next module's detectors do
        not need it, and the last one's findings would be made on top of it (6 MB at 4 M packets)."""
        for key in [k for k in self._cache if len(k) == 1]:
            del self._cache[key]

    def column(self, table: str, name: str) -> npt.NDArray[Any]:
        """One column of a table as a read-only numpy array (text as Python strings), converted once."""
        key = ("column", table, name)
        if key not in self._cache:
            col = getattr(self, table)[name]
            values = None
            if isinstance(col.dtype, pd.StringDtype):  # text that repeats: each distinct value one object, shared
                asked = ("codes", table, name) in self._cache  # by its rows (to_numpy() makes one per row: 3 MB
                codes, uniques = self.codes(table, name)  # a column at 40 000 connections)
                if 2 * len(uniques) < len(codes):
                    values = texts((*uniques, col.dtype.na_value), codes)  # code -1: missing
                elif not asked:  # mostly distinct (uids): its codes are kept only if a detector asks for them
                    del self._cache[("codes", table, name)]
            self._cache[key] = _frozen(col.to_numpy() if values is None else values)
        return self._cache[key]  # type: ignore[no-any-return]

    def codes(self, table: str, name: str) -> tuple[npt.NDArray[np.integer[Any]], list[Any]]:
        """A text column factorised once: each row's code (-1: missing) and the values the codes stand for."""
        key = ("codes", table, name)
        if key not in self._cache:
            col = getattr(self, table)[name]
            if isinstance(col.dtype, pd.CategoricalDtype):
                codes, uniques = col.cat.codes.to_numpy(), list(col.cat.categories)
            else:
                codes, values = pd.factorize(col)
                uniques = values.tolist()
            self._cache[key] = (_frozen(codes), uniques)
        return self._cache[key]  # type: ignore[no-any-return]

    def key(self, table: str, name: str) -> npt.NDArray[np.integer[Any]]:
        """Integer codes of a text column, to group by it (faster than grouping by the strings)."""
        return self.codes(table, name)[0]

    def isin(self, table: str, name: str, *values: str) -> npt.NDArray[np.bool_]:
        """Rows whose `name` is one of `values` (read-only, computed once)."""
        key = ("isin", table, name, *values)
        if key not in self._cache:
            col = getattr(self, table)[name]
            mask = col == values[0] if len(values) == 1 else col.isin(values)  # == is the faster on Arrow text
            self._cache[key] = _frozen(mask.to_numpy(dtype=np.bool_, na_value=False))
        return self._cache[key]  # type: ignore[no-any-return]

    def conn_rows(self, conn: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """Positions in the connections table of connection ids (the `conn` column of every table)."""
        index = self.cached("conn_index", lambda: pd.Index(self.column("connections", "conn")))
        return index.get_indexer(conn)  # type: ignore[no-any-return]

    def names(self, rows: npt.NDArray[np.intp]) -> tuple[list[str], list[str]]:
        """host:port of the originator and of the responder of the connections at these positions."""
        each, at = np.unique(rows, return_inverse=True)
        c = {n: self.column("connections", n)[each].tolist() for n in ("orig_h", "orig_p", "resp_h", "resp_p")}
        orig = np.array(list(map(endpoint, c["orig_h"], c["orig_p"])), dtype=object)
        resp = np.array(list(map(endpoint, c["resp_h"], c["resp_p"])), dtype=object)
        return orig[at].tolist(), resp[at].tolist()


def _frozen(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The array, read-only: cached columns are shared by every detector (and may be views of the report)."""
    a.flags.writeable = False
    return a


KINDS: dict[str, Kind] = {}
DETECTORS: list[Detector] = []


def declare(*kinds: Kind) -> None:
    """Register kinds (each id once)."""
    for k in kinds:
        assert k.id not in KINDS, k.id
        assert k.severity in SEVERITIES, k
        KINDS[k.id] = k


def detector(*kinds: str) -> Callable[[Callable[[Context], Reported]], Callable[[Context], Reported]]:
    """Register a detector function for the kinds it reports."""
    def wrap(func: Callable[[Context], Reported]) -> Callable[[Context], Reported]:
        DETECTORS.append(Detector(func.__name__, kinds, func, (func.__doc__ or "").strip().splitlines()[0]))
        return func
    return wrap


def endpoint(host: str, port: int) -> str:
    """host:port, IPv6 in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def evidence(frames: Iterable[int]) -> tuple[int, ...]:
    """Frame numbers, sorted, at most MAX_EVIDENCE (the first ones)."""
    return tuple(sorted({int(f) for f in frames}))[:MAX_EVIDENCE]


def group_evidence(g: Groups, frames: npt.NDArray[np.int64], first: int | None = None) -> list[list[int]]:
    """evidence() of each group's frames, or of only its `first` rows; one list per group, in group order."""
    rows = g.order if first is None else g.order[np.arange(len(g.order)) - np.repeat(g.starts, g.sizes) < first]
    grp, fr = g.codes[rows], frames[rows]
    by = np.lexsort((fr, grp))
    grp, fr = grp[by], fr[by]
    new = np.ones(len(fr), np.bool_)
    new[1:] = (grp[1:] != grp[:-1]) | (fr[1:] != fr[:-1])  # drop repeated frames
    bounds = np.searchsorted(grp[new], np.arange(len(g) + 1))
    starts, ends = bounds[:-1], np.minimum(bounds[1:], bounds[:-1] + MAX_EVIDENCE)
    flat = fr[new].tolist()
    return [flat[a:b] for a, b in zip(starts.tolist(), ends.tolist())]


def run(report: Report, settings: Settings | None = None, only: Iterable[str] | None = None) -> pd.DataFrame:
    """Run the detectors (all, or those reporting any of the kinds in `only`); findings worst first."""
    from . import closing, handshake, load, stalls, timestamps, wireshark  # noqa: F401  (registration)
    ctx = Context(report, settings or Settings())
    wanted = set(only) if only is not None else None
    cols: dict[str, list[Any]] = {name: [] for name in FIELDS}
    module = ""
    for det in DETECTORS:
        if wanted is not None and not wanted & set(det.kinds):
            continue
        if det.func.__module__ != module:
            ctx.next_module()
            module = det.func.__module__
        for f in det.func(ctx):
            if isinstance(f, Finding):
                if wanted is None or f.kind in wanted:
                    for name in FIELDS:
                        cols[name].append(list(f.frames) if name == "frames" else getattr(f, name))
                continue
            keep = None if wanted is None else [k in wanted for k in f.kind]
            for name in FIELDS:
                values = getattr(f, name)
                cols[name].extend(values if keep is None else [v for v, k in zip(values, keep) if k])
    ctx._cache.clear()  # the detectors' derived columns go before the findings table is built
    if not cols["kind"]:
        return pd.DataFrame([], columns=[*FINDING_COLUMNS, "title"])
    cols["severity"] = [s or KINDS[k].severity for s, k in zip(cols["severity"], cols["kind"])]
    rank = np.array([RANK[s] for s in cols["severity"]])
    kind_order = pd.factorize(np.array(cols["kind"], dtype=object), sort=True)[0]
    order = np.lexsort((np.array(cols["ts"], np.float64), kind_order, -rank)).tolist()  # stable: ties keep order
    out: dict[str, Any] = {name: [values[i] for i in order] for name, values in cols.items()}
    del cols
    for name in ("kind", "severity", "direction"):  # a few values, often made a string per row (np.where, tolist)
        one: dict[Any, Any] = {}
        out[name] = [one.setdefault(v, v) for v in out[name]]  # each held once (see connections.texts)
    kind, ids = pd.factorize(np.array(out["kind"], dtype=object))
    for name in ("explanation", "causes", "remedy", "title"):  # long texts, the same for every finding of a kind:
        text, texts = pd.factorize(np.array([getattr(KINDS[k], name) for k in ids], dtype=object))  # held once
        out[name] = pd.Categorical.from_codes(text[kind], categories=texts)
    return pd.DataFrame(out, columns=[*FINDING_COLUMNS, "title"])


def worst(findings: pd.DataFrame, threshold: str) -> bool:
    """Whether any finding is at or above the severity `threshold`."""
    return bool(len(findings)) and bool((findings["severity"].map(RANK) >= RANK[threshold]).any())


def all_kinds() -> dict[str, Kind]:
    """Every declared kind (importing the detector modules)."""
    from . import closing, handshake, load, stalls, timestamps, wireshark  # noqa: F401
    return KINDS


__all__ = ["DETECTORS", "KINDS", "SEVERITIES", "Context", "Finding", "Findings", "Groups", "Kind", "Settings",
           "all_kinds", "declare", "detector", "endpoint", "evidence", "group", "group_evidence", "run",
           "worst"]
