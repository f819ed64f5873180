"""Each endpoint's RFC 9293 state machine, written as data.

Theory of operation: tcpa cannot see inside either host, so it replays what each endpoint must have done given
the segments on the wire. Every segment from X to Y is turned into events (see `segment_events` in engine.py):
first what X did by sending it, then what Y did on receiving it. `TRANSITIONS[state][event]` gives the next
state; a pair missing from the table leaves the state unchanged and records nothing. Timer events (the Linux
TIME_WAIT length and tcp_fin_timeout) fire on capture time.

The table is compiled into `TABLE`, a dense numpy array that the compiled per-packet loop indexes, so the dict
stays the single source of truth. `docs/states.md` is generated from it (`python -m analyzer.tcpstate`).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class State(IntEnum):
    """Endpoint states of RFC 9293 section 3.3.2, plus UNKNOWN for a connection first seen mid-stream."""

    UNKNOWN = 0
    CLOSED = 1
    SYN_SENT = 2
    SYN_RCVD = 3
    ESTABLISHED = 4
    FIN_WAIT_1 = 5
    FIN_WAIT_2 = 6
    CLOSING = 7
    TIME_WAIT = 8
    CLOSE_WAIT = 9
    LAST_ACK = 10


class Event(IntEnum):
    """What an endpoint did, or had happen to it, as one segment passed (or a timer ran out)."""

    SEND_SYN = 0
    SEND_SYNACK = 1
    SEND_SEGMENT = 2  # any segment without SYN or RST: tells us a mid-stream endpoint is synchronized
    SEND_FIN = 3
    SEND_RST = 4
    RECV_SYN = 5
    RECV_SYNACK = 6  # a SYN+ACK acknowledging our SYN
    RECV_ACK_OF_SYN = 7
    RECV_ACK_OF_FIN = 8
    RECV_SEGMENT = 9
    RECV_FIN = 10  # a FIN that does not acknowledge our own FIN
    RECV_FIN_ACK = 11  # a FIN that also acknowledges our FIN (the three-packet close)
    RECV_RST = 12
    FIN_TIMEOUT = 13  # tcp_fin_timeout ran out in FIN_WAIT_2
    TIME_WAIT_TIMEOUT = 14  # 2 MSL ran out in TIME_WAIT


S, E = State, Event

TRANSITIONS: dict[State, dict[Event, State]] = {
    S.UNKNOWN: {
        E.SEND_SYN: S.SYN_SENT, E.SEND_SYNACK: S.SYN_RCVD, E.RECV_SYNACK: S.ESTABLISHED,
        E.SEND_SEGMENT: S.ESTABLISHED, E.RECV_SEGMENT: S.ESTABLISHED, E.RECV_ACK_OF_SYN: S.ESTABLISHED,
        E.SEND_FIN: S.FIN_WAIT_1, E.RECV_FIN: S.CLOSE_WAIT, E.RECV_FIN_ACK: S.CLOSE_WAIT,
    },
    S.CLOSED: {E.SEND_SYN: S.SYN_SENT, E.SEND_SYNACK: S.SYN_RCVD},
    # SYN_SENT receiving a bare SYN is the simultaneous open of RFC 9293 figure 7.
    S.SYN_SENT: {E.RECV_SYNACK: S.ESTABLISHED, E.RECV_SYN: S.SYN_RCVD},
    S.SYN_RCVD: {
        E.RECV_ACK_OF_SYN: S.ESTABLISHED, E.RECV_SYNACK: S.ESTABLISHED,
        E.SEND_FIN: S.FIN_WAIT_1, E.RECV_FIN: S.CLOSE_WAIT,
    },
    S.ESTABLISHED: {E.SEND_FIN: S.FIN_WAIT_1, E.RECV_FIN: S.CLOSE_WAIT, E.RECV_FIN_ACK: S.CLOSE_WAIT},
    # RFC 9293 3.10.7.4: in FIN-WAIT-1, a FIN whose segment also ACKs our FIN goes straight to TIME-WAIT.
    S.FIN_WAIT_1: {E.RECV_ACK_OF_FIN: S.FIN_WAIT_2, E.RECV_FIN: S.CLOSING, E.RECV_FIN_ACK: S.TIME_WAIT},
    S.FIN_WAIT_2: {E.RECV_FIN: S.TIME_WAIT, E.RECV_FIN_ACK: S.TIME_WAIT, E.FIN_TIMEOUT: S.CLOSED},
    S.CLOSING: {E.RECV_ACK_OF_FIN: S.TIME_WAIT, E.RECV_FIN_ACK: S.TIME_WAIT},
    S.TIME_WAIT: {E.TIME_WAIT_TIMEOUT: S.CLOSED},
    S.CLOSE_WAIT: {E.SEND_FIN: S.LAST_ACK},
    S.LAST_ACK: {E.RECV_ACK_OF_FIN: S.CLOSED},
}

# An RST, sent or received, aborts the connection from every state (RFC 9293 3.10.7).
for _state, _moves in TRANSITIONS.items():
    if _state is not S.CLOSED:
        _moves.setdefault(E.SEND_RST, S.CLOSED)
        _moves.setdefault(E.RECV_RST, S.CLOSED)

NO_CHANGE = -1


def compile_table() -> np.ndarray:
    """TRANSITIONS as a dense int8 array [state, event] -> new state, NO_CHANGE where the pair is absent."""
    table = np.full((len(State), len(Event)), NO_CHANGE, dtype=np.int8)
    for state, moves in TRANSITIONS.items():
        for event, new_state in moves.items():
            table[state, event] = new_state
    return table


TABLE = compile_table()

STATE_NAMES: tuple[str, ...] = tuple(s.name for s in State)
EVENT_NAMES: tuple[str, ...] = tuple(e.name for e in Event)

# States in which `ss -tan` would list the socket: everything but the two that mean "no socket".
LISTED_STATES = frozenset(State) - {State.UNKNOWN, State.CLOSED}


def diagram() -> str:
    """The transition table as a Markdown table, for docs/states.md."""
    rows = ["| state | event | new state |", "|---|---|---|"]
    for state, moves in TRANSITIONS.items():
        for event, new_state in moves.items():
            rows.append(f"| {state.name} | {event.name} | {new_state.name} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print("# Endpoint state transitions\n\nGenerated from `analyzer/tcpstate.py`; do not edit.\n")
    print(diagram())
