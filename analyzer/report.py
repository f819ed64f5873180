"""Report: what one analysis found, as pandas tables, and the views computed from them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .model import CaptureFacts
from .tcpstate import LISTED_STATES, State

LISTED = sorted((s.name for s in LISTED_STATES), key=lambda n: State[n].value)

FINDING_COLUMNS = ["kind", "severity", "uid", "host", "port", "direction", "ts", "frames", "summary",
                   "explanation", "causes", "remedy"]


@dataclass
class Report:
    """Connections, their state transitions and findings for one capture (or several, in order)."""

    capture: CaptureFacts
    connections: pd.DataFrame
    transitions: pd.DataFrame
    findings: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FINDING_COLUMNS))
    skipped: Counter[str] = field(default_factory=Counter)
    segments: int = 0
    events: pd.DataFrame = field(default_factory=pd.DataFrame)  # per-segment analysis flags (sequence.py)
    control: pd.DataFrame = field(default_factory=pd.DataFrame)  # every SYN, FIN and RST segment
    packets: pd.DataFrame = field(default_factory=pd.DataFrame)  # every segment, when analyze(keep_segments=True)

    def connection(self, uid: str) -> pd.Series:
        """One connection's row by uid."""
        return self.connections.loc[self.connections["uid"] == uid].iloc[0]

    def state_sequence(self, uid: str, endpoint: str) -> list[str]:
        """The endpoint's initial state and then every state it entered, in order."""
        row = self.connection(uid)
        tr = self.transitions
        mine = tr[(tr["conn"] == row["conn"]) & (tr["endpoint"] == endpoint)]
        initial = State.CLOSED.name if row["started"] == "syn" else State.UNKNOWN.name
        return [initial, *mine["to_state"].tolist()]

    def states_at(self, ns: int | None = None) -> pd.DataFrame:
        """What `ss -tan` would have listed on each host at capture time `ns` (default: end of capture).

        One row per host, role and service (the server's ip:port), one column per state.
        """
        conns = self.connections
        empty = pd.DataFrame(columns=["host", "role", "service", *LISTED, "total"])
        live = conns if ns is None else conns[conns["first_ns"] <= ns]
        if live.empty:  # no connection (yet): string columns of an empty frame are not strings
            return empty
        # Each distinct server ip:port formatted once; codes in the order of the texts, so that sorting the codes
        # sorts the texts.
        server, servers = pd.factorize(live["resp_h"])
        pairs, pair = np.unique(server.astype(np.int64) << 16 | live["resp_p"].to_numpy(), return_inverse=True)
        named = np.array([f"{_bracket(h)}:{p & 0xFFFF}" for h, p in zip(servers[pairs >> 16].tolist(), pairs.tolist())],
                         dtype=object)
        services, rank = np.unique(named, return_inverse=True)
        service = rank.ravel()[pair.ravel()]
        hosts, roles, states = [], [], []
        for endpoint in ("orig", "resp"):  # the client's sockets, then the server's
            # at the end of the capture each connection's {orig,resp}_state; before it, replayed up to `ns`
            state = live[f"{endpoint}_state"] if ns is None else self._states(live, endpoint, ns)
            each, names = pd.factorize(state)
            code = np.array([LISTED.index(n) if n in LISTED else -1 for n in names] + [-1], np.int64)[each]
            listed = code >= 0  # (-1: a state not listed, or none)
            hosts.append(live[f"{endpoint}_h"].to_numpy()[listed])
            roles.append(np.full(int(listed.sum()), endpoint == "resp"))
            states.append((code[listed], service[listed]))
        host, hostnames = pd.factorize(np.concatenate(hosts), sort=True)
        if not len(host):
            return empty
        role = np.concatenate(roles)
        state, svc = (np.concatenate(x) for x in zip(*states))
        key = (host.astype(np.int64) * 2 + role) * len(services) + svc  # (host, role, service) in text order
        groups, group = np.unique(key, return_inverse=True)
        counts = np.zeros((len(groups), len(LISTED)), np.int64)
        np.add.at(counts, (group.ravel(), state), 1)
        shown = counts.sum(axis=0) > 0
        total = counts.sum(axis=1)
        g_host = groups // (2 * len(services))
        order = np.lexsort((g_host, -total))  # most sockets first, then by host; ties as grouped
        g = groups[order]
        texts = {"host": np.asarray(hostnames, dtype=object)[g_host[order]],
                 "role": np.array(["client", "server"], dtype=object)[g // len(services) % 2],
                 "service": services[g % len(services)]}
        table = pd.DataFrame({**{k: pd.array(v, dtype="str") for k, v in texts.items()},
                              **{s: counts[order, i] for i, s in enumerate(LISTED) if shown[i]}, "total": total[order]})
        table.columns.name = "state"
        return table

    def _states(self, live: pd.DataFrame, endpoint: str, ns: int) -> pd.Series:
        """Each connection's state on one side at capture time `ns` (its initial one before any transition)."""
        tr = self.transitions[["conn", "endpoint", "to_state", "ts_ns"]]
        tr = tr[(tr["endpoint"] == endpoint).to_numpy() & (tr["ts_ns"] <= ns).to_numpy()]
        ends = tr.groupby("conn")["to_state"].last()
        mapped = live["conn"].map(ends)
        initial = live["started"].map({"syn": "CLOSED"}).fillna("UNKNOWN")
        return pd.Series(np.where(mapped.isna(), initial, mapped.astype(object)), index=live.index)


def _bracket(host: str) -> str:
    """An address ready to have ":port" appended: IPv6 in brackets."""
    return f"[{host}]" if ":" in host else host
