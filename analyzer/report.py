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
        service = live["resp_h"].map(_bracket) + ":" + live["resp_p"].astype(str)
        rows = []
        for role, endpoint, host in (("client", "orig", "orig_h"), ("server", "resp", "resp_h")):
            # at the end of the capture each connection's {orig,resp}_state; before it, replayed up to `ns`
            state = live[f"{endpoint}_state"] if ns is None else self._states(live, endpoint, ns)
            listed = state.isin(LISTED).to_numpy()
            rows.append(pd.DataFrame({"host": live[host][listed], "role": role, "service": service[listed],
                                      "state": state[listed]}))
        every = pd.concat(rows, ignore_index=True)
        if every.empty:
            return empty
        table = every.groupby(["host", "role", "service", "state"]).size().unstack("state", fill_value=0)
        table = table.reindex(columns=[s for s in LISTED if s in table.columns])
        table["total"] = table.sum(axis=1)
        return table.reset_index().sort_values(["total", "host"], ascending=[False, True], ignore_index=True)

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
