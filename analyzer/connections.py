"""Finished engine rows -> the connection and transition tables users see (pandas).

Everything here is per connection, vectorized over the rows the engine emitted; the verdicts that need a few
rules (how the connection closed, Zeek's conn_state) are small pure functions of one row's facts.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from .layout import (
    C_BAD_CSUM,
    C_BAD_OPTS,
    C_CONN,
    C_FIRST_FRAME,
    C_FIRST_NS,
    C_HS_ACK_NS,
    C_LAST_FRAME,
    C_LAST_NS,
    C_ORIG_IS_A,
    C_START,
    C_SYN_NS,
    C_SYNACK_NS,
    C_TRUNCATED,
    C_TUNNEL,
    C_ZLAST_NS,
    E_DATA_PKTS,
    E_FIN_NS,
    E_IP_BYTES,
    E_LAST_NS,
    E_MSS,
    E_PKTS,
    E_RST_NS,
    E_RST_STATE,
    E_SACK_PERM,
    E_SEQ_HI,
    E_SEQ_START,
    E_SYN_COUNT,
    E_TS_OK,
    E_WSCALE,
    E_ZSTATE,
    EP0,
    EP1,
    NONE,
    START_SYN,
    T_CONN,
    T_ENDPOINT,
    T_EVENT,
    T_FRAME,
    T_FROM,
    T_NS,
    T_ORDER,
    T_TO,
    Z_CLOSED,
    Z_ESTABLISHED,
    Z_INACTIVE,
    Z_PARTIAL,
    Z_RESET,
    Z_SYN_ACK_SENT,
    Z_SYN_SENT,
)
from .segments import format_addr
from .tcpstate import EVENT_NAMES, STATE_NAMES, State

ENDPOINTS = ("orig", "resp")
_RSTOS0 = re.compile(r"^\^?S[^HAFGIQ]*R.*")


def conn_state(os_: int, rs: int, history: str, orig_bytes: int, resp_bytes: int) -> str:
    """Zeek's Conn::conn_state() (scripts/base/protocols/conn/main.zeek), rule for rule, in its order."""
    active = (Z_INACTIVE, Z_PARTIAL)
    if rs == Z_RESET and (os_ in (Z_SYN_SENT, Z_SYN_ACK_SENT) or
                          (os_ == Z_RESET and orig_bytes == 0 and resp_bytes == 0)):
        return "REJ"
    if os_ == Z_RESET:
        if rs in active:
            return "RSTOS0" if _RSTOS0.match(history) else "OTH"
        return "RSTO"
    if rs == Z_RESET:
        return "RSTRH" if os_ in active else "RSTR"
    if os_ == Z_CLOSED and rs == Z_CLOSED:
        return "SF"
    if os_ == Z_CLOSED:
        return "SH" if rs in active else "S2"
    if rs == Z_CLOSED:
        return "SHR" if os_ in active else "S3"
    if os_ == Z_SYN_SENT and rs == Z_INACTIVE:
        return "S0"
    if os_ == Z_ESTABLISHED and rs == Z_ESTABLISHED:
        return "S1"
    return "OTH"


def categorical(codes: npt.NDArray[np.int64], categories: list[str]) -> pd.Categorical:
    """A column of names from their codes, a byte per row instead of a string: narrowed here to the int8 that
    pandas would store (pandas' own conversion, with its checks, took 5 ms per 182 000 rows)."""
    if len(categories) < 127 and len(codes) and (codes.min() < -1 or codes.max() >= len(categories)):
        raise ValueError(f"codes outside -1..{len(categories) - 1}")
    return pd.Categorical.from_codes(codes.astype(np.int8) if len(categories) < 127 else codes,
                                     categories=categories)


def transitions_frame(tr: npt.NDArray[np.int64], end_ns: int) -> pd.DataFrame:
    """All recorded transitions (T_* rows) up to the end of the capture, in replay order.

    Columns are gathered one at a time through the sort order: the row matrix is never copied whole."""
    kept = np.flatnonzero(tr[:, T_NS] <= end_ns)  # timers that would run out after the capture did not happen
    order = kept[np.lexsort((tr[kept, T_ORDER], tr[kept, T_NS], tr[kept, T_ENDPOINT], tr[kept, T_CONN]))]
    del kept

    def names(col: int, categories: list[str]) -> pd.Categorical:
        return categorical(tr[order, col], categories)

    return pd.DataFrame({
        "conn": tr[order, T_CONN], "endpoint": names(T_ENDPOINT, list(ENDPOINTS)),
        "from_state": names(T_FROM, list(STATE_NAMES)), "to_state": names(T_TO, list(STATE_NAMES)),
        "event": names(T_EVENT, list(EVENT_NAMES)), "ts_ns": tr[order, T_NS], "frame": tr[order, T_FRAME],
    })


def _addresses(keys: npt.NDArray[np.uint64], orig_is_a: npt.NDArray[np.bool_]) -> dict[str, Any]:
    """Each connection's addresses and ports by role. Each distinct address is formatted once, and the address
    columns are taken from the distinct names as stored: no Python string per row."""
    a_port = (keys[:, 4] >> np.uint64(16)).astype(np.int64)
    b_port = (keys[:, 4] & np.uint64(0xFFFF)).astype(np.int64)
    n = len(keys)
    high, highs = pd.factorize(np.concatenate([keys[:, 0], keys[:, 2]]))  # (hi, lo) of side a, then side b
    low, lows = pd.factorize(np.concatenate([keys[:, 1], keys[:, 3]]))  # hashed: sorting 16-byte keys took
    width = max(len(lows), 1)  # twice as long
    at, pairs = pd.factorize(high.astype(np.int64) * width + low)
    names = pd.Series(_names(highs[pairs // width].tolist(), lows[pairs % width].tolist()),
                      dtype=object if not n else None).array  # no rows: object, as a table of empty lists has
    return {
        "orig_h": names.take(np.where(orig_is_a, at[:n], at[n:])),
        "orig_p": np.where(orig_is_a, a_port, b_port),
        "resp_h": names.take(np.where(orig_is_a, at[n:], at[:n])),
        "resp_p": np.where(orig_is_a, b_port, a_port),
    }


_OCTETS = [str(i) for i in range(256)]


def _names(highs: list[int], lows: list[int]) -> list[str]:
    """format_addr() of each address, the dotted quads from a table of the 256 octets' texts (three times as
    fast as formatting each number)."""
    o = _OCTETS
    return [f"{o[lo >> 24 & 255]}.{o[lo >> 16 & 255]}.{o[lo >> 8 & 255]}.{o[lo & 255]}"
            if hi == 0 and lo >> 32 == 0xFFFF else format_addr(hi, lo) for hi, lo in zip(highs, lows)]


def _opt(v: npt.NDArray[np.int64]) -> pd.arrays.IntegerArray:
    """An optional integer column: NONE becomes <NA>."""
    return pd.arrays.IntegerArray(np.where(v == NONE, 0, v), v == NONE)


def _ms(later: npt.NDArray[np.int64], earlier: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    ok = (later != NONE) & (earlier != NONE)
    return np.where(ok, (later - earlier) / 1e6, np.nan)


def connections_frame(rows: npt.NDArray[np.int64], hist: npt.NDArray[np.uint8], keys: npt.NDArray[np.uint64],
                      transitions: pd.DataFrame, tunnels: list[str]) -> pd.DataFrame:
    """One row per connection, in order of first packet (connection id; rows given in that order are used as
    they are, without a sorted copy). The columns are gathered first and made a table once."""
    if (np.diff(rows[:, C_CONN]) < 0).any():
        order = np.argsort(rows[:, C_CONN], kind="stable")
        rows, hist, keys = rows[order], hist[order], keys[order]
    conn = rows[:, C_CONN]
    c: dict[str, Any] = {"conn": conn, "uid": [f"C{c:06d}" for c in conn.tolist()], "ts": rows[:, C_FIRST_NS] / 1e9}
    c.update(_addresses(keys, rows[:, C_ORIG_IS_A] == 1))
    c["first_ns"], c["last_ns"] = rows[:, C_FIRST_NS], rows[:, C_LAST_NS]
    c["first_frame"], c["last_frame"] = rows[:, C_FIRST_FRAME], rows[:, C_LAST_FRAME]
    c["duration"] = (rows[:, C_LAST_NS] - rows[:, C_FIRST_NS]) / 1e9
    for e, b in ((0, EP0), (1, EP1)):
        p = ENDPOINTS[e]
        c[f"{p}_pkts"] = rows[:, b + E_PKTS]
        c[f"{p}_last_ns"] = rows[:, b + E_LAST_NS]
        c[f"{p}_ip_bytes"] = rows[:, b + E_IP_BYTES]
        c[f"{p}_bytes"] = np.where(rows[:, b + E_PKTS] > 0, np.maximum(rows[:, b + E_SEQ_HI] - rows[:, b + E_SEQ_START], 0), 0)
        c[f"{p}_data_pkts"] = rows[:, b + E_DATA_PKTS]
        c[f"{p}_syns"] = rows[:, b + E_SYN_COUNT]
        c[f"{p}_mss"] = _opt(rows[:, b + E_MSS])
        c[f"{p}_wscale"] = _opt(rows[:, b + E_WSCALE])
        c[f"{p}_sack_perm"] = rows[:, b + E_SACK_PERM] == 1
        c[f"{p}_timestamps"] = rows[:, b + E_TS_OK] == 1
    c["syn_to_synack_ms"] = _ms(rows[:, C_SYNACK_NS], rows[:, C_SYN_NS])
    c["synack_to_ack_ms"] = _ms(rows[:, C_HS_ACK_NS], rows[:, C_SYNACK_NS])
    c["handshake_rtt_ms"] = _ms(rows[:, C_HS_ACK_NS], rows[:, C_SYN_NS])
    c["started"] = texts(("syn", "synack", "midstream"), np.where(rows[:, C_START] == START_SYN, 0,
                                                                  np.where(rows[:, C_START] == 1, 1, 2)))
    _closing(c, rows, transitions)
    _zeek(c, rows, hist)
    c["truncated_segments"] = rows[:, C_TRUNCATED]
    c["bad_option_segments"] = rows[:, C_BAD_OPTS]
    c["bad_checksum_segments"] = rows[:, C_BAD_CSUM]
    c["tunnel"] = [tunnels[t - 1] if 0 < t <= len(tunnels) else "" for t in rows[:, C_TUNNEL].tolist()]
    return pd.DataFrame(c)


def texts(names: tuple[str, ...], codes: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.object_]:
    """A text column from each row's code into `names`: one Python string per name, shared by its rows. A
    string made per row (numpy's text arrays become one each) held 56 bytes a row in the heap, and every page
    of them was copied again into a forked writer that touched them (at 4 M packets, 160 000 strings for a
    few dozen values)."""
    column: npt.NDArray[np.object_] = np.array(names, dtype=object)[codes]
    return column


def _first(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> npt.NDArray[np.object_]:
    """Which endpoint did something first ('orig', 'resp' or None), given each one's time (NONE: never)."""
    big = np.iinfo(np.int64).max
    a2, b2 = np.where(a == NONE, big, a), np.where(b == NONE, big, b)
    out = texts(ENDPOINTS, (a2 > b2).astype(np.intp))
    out[(a == NONE) & (b == NONE)] = None
    return out


def positions(ids: npt.NDArray[np.int64], wanted: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    """Where each of `wanted` is in `ids` (sorted, distinct), -1 where it is not."""
    at = np.searchsorted(ids, wanted)
    found = at < len(ids)
    found[found] = ids[at[found]] == wanted[found]
    at[~found] = -1
    return at


def _final_states(conns: npt.NDArray[np.int64], transitions: pd.DataFrame, initial: npt.NDArray[np.object_]
                  ) -> dict[str, npt.NDArray[np.object_]]:
    """Each endpoint's state after its last transition (`initial` where it had none). The transitions come
    sorted by connection, endpoint and time (transitions_frame): the last of each run is the one."""
    tc = transitions["conn"].to_numpy()
    ep = transitions["endpoint"].cat.codes.to_numpy()
    to = np.array(transitions["to_state"].cat.categories, dtype=object)[transitions["to_state"].cat.codes.to_numpy()]
    last = np.flatnonzero(np.append((tc[1:] != tc[:-1]) | (ep[1:] != ep[:-1]), len(tc) > 0))
    out = {}
    for e, p in enumerate(ENDPOINTS):
        mine = last[ep[last] == e]  # the last transition of each connection on this side
        at = positions(tc[mine], conns)
        state = initial.copy()
        state[at >= 0] = to[mine][at[at >= 0]]
        out[f"{p}_state"] = state
    return out


def _closing(c: dict[str, Any], rows: npt.NDArray[np.int64], transitions: pd.DataFrame) -> None:
    """How each connection ended, who closed actively, who reset, and both endpoints' final states."""
    fin0, fin1 = rows[:, EP0 + E_FIN_NS], rows[:, EP1 + E_FIN_NS]
    rst0, rst1 = rows[:, EP0 + E_RST_NS], rows[:, EP1 + E_RST_NS]
    conns = c["conn"]
    closing = np.isin(conns, transitions.loc[transitions["to_state"] == "CLOSING", "conn"].to_numpy())
    three = np.isin(conns, transitions.loc[(transitions["from_state"] == "FIN_WAIT_1")
                                           & (transitions["to_state"] == "TIME_WAIT"), "conn"].to_numpy())
    both_fin = (fin0 != NONE) & (fin1 != NONE)
    first_rst = np.where(rst0 == NONE, rst1, np.where(rst1 == NONE, rst0, np.minimum(rst0, rst1)))
    last_fin = np.maximum(fin0, fin1)
    reset = (first_rst != NONE) & ~(both_fin & (last_fin <= first_rst))
    close = np.select([reset, closing, both_fin & three, both_fin, (fin0 != NONE) | (fin1 != NONE)],
                      [0, 1, 2, 3, 4], default=5)
    c["close"] = texts(("reset", "simultaneous", "three_packet", "four_way", "half_closed", "open"), close)
    active = _first(fin0, fin1)
    active[close == 1] = "both"
    c["active_closer"] = active
    c["reset_by"] = _first(rst0, rst1)
    rst_state = np.where(rst0 != NONE, rows[:, EP0 + E_RST_STATE], rows[:, EP1 + E_RST_STATE])
    names = np.array(STATE_NAMES + ("",), dtype=object)
    reset_state = np.where(first_rst != NONE, names[np.where(rst_state < 0, len(STATE_NAMES), rst_state)], "")
    if (rst0 != NONE).any() and (rst1 != NONE).any():
        later_orig = (rst0 != NONE) & (rst1 != NONE) & (rst1 < rst0)
        reset_state[later_orig] = names[rows[later_orig, EP1 + E_RST_STATE]]
    c["reset_state"] = reset_state
    initial = texts((State.CLOSED.name, State.UNKNOWN.name), (rows[:, C_START] != START_SYN).astype(np.intp))
    c.update(_final_states(conns, transitions, initial))


def _zeek(c: dict[str, Any], rows: npt.NDArray[np.int64], hist: npt.NDArray[np.uint8]) -> None:
    """Zeek's history string and conn_state per connection."""
    # one fixed-width byte string per row: numpy drops the trailing NULs (letters are packed from the left)
    if hist.shape[1]:  # a few dozen histories in all, each decoded once
        distinct, at = np.unique(np.ascontiguousarray(hist).view(f"S{hist.shape[1]}").ravel(), return_inverse=True)
        names, at = tuple(h.decode("ascii") for h in distinct.tolist()), at.ravel()
    else:
        names, at = ("",), np.zeros(len(hist), np.intp)
    history = texts(names, at)
    c["history"] = history.tolist()
    # conn_state() once per distinct input: both sides' states, the history, and whether no byte was sent at all
    # (the byte counts matter only as that)
    quiet = (c["orig_bytes"] == 0) & (c["resp_bytes"] == 0)
    o, r = rows[:, EP0 + E_ZSTATE], rows[:, EP1 + E_ZSTATE]
    _, first, which = np.unique(((o * (Z_RESET + 1) + r) * 2 + quiet) * len(names) + at, return_index=True,
                                return_inverse=True)
    c["conn_state"] = texts(tuple(conn_state(int(o[i]), int(r[i]), names[at[i]], int(not quiet[i]), 0)
                                  for i in first.tolist()), which.ravel()).tolist()
    c["zeek_duration"] = np.where(rows[:, C_ZLAST_NS] != NONE, (rows[:, C_ZLAST_NS] - rows[:, C_FIRST_NS]) / 1e9,
                                  c["duration"])
