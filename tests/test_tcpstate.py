"""The endpoint state machine as data: table properties and the transitions the RFC and seeds describe."""

from __future__ import annotations

import pytest

from analyzer.tcpstate import NO_CHANGE, TABLE, TRANSITIONS, Event, State, diagram

S, E = State, Event


def reachable(start: State) -> set[State]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in TRANSITIONS.get(todo.pop(), {}).values():
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_state_is_reachable_from_a_fresh_or_midstream_connection() -> None:
    assert reachable(S.CLOSED) | reachable(S.UNKNOWN) == set(State)


@pytest.mark.parametrize("state", [s for s in State if s is not S.CLOSED])
def test_every_state_can_end_closed(state: State) -> None:
    assert S.CLOSED in reachable(state)


@pytest.mark.parametrize("state", [s for s in State if s is not S.CLOSED])
@pytest.mark.parametrize("event", [E.SEND_RST, E.RECV_RST])
def test_a_reset_aborts_every_state(state: State, event: Event) -> None:
    assert TRANSITIONS[state][event] is S.CLOSED


def test_compiled_table_is_total_and_matches_the_dict() -> None:
    assert TABLE.shape == (len(State), len(Event))
    for state in State:
        for event in Event:
            want = TRANSITIONS.get(state, {}).get(event)
            assert TABLE[state, event] == (NO_CHANGE if want is None else want)


@pytest.mark.parametrize(("path", "events"), [
    # RFC 9293 figure 6: the active closer after a four-way close
    ([S.CLOSED, S.SYN_SENT, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.TIME_WAIT, S.CLOSED],
     [E.SEND_SYN, E.RECV_SYNACK, E.SEND_FIN, E.RECV_ACK_OF_FIN, E.RECV_FIN, E.TIME_WAIT_TIMEOUT]),
    # the passive closer
    ([S.CLOSED, S.SYN_RCVD, S.ESTABLISHED, S.CLOSE_WAIT, S.LAST_ACK, S.CLOSED],
     [E.SEND_SYNACK, E.RECV_ACK_OF_SYN, E.RECV_FIN, E.SEND_FIN, E.RECV_ACK_OF_FIN]),
    # three-packet close: FIN_WAIT_1 straight to TIME_WAIT (RFC 9293 3.10.7.4)
    ([S.ESTABLISHED, S.FIN_WAIT_1, S.TIME_WAIT], [E.SEND_FIN, E.RECV_FIN_ACK]),
    # simultaneous close (figure 13) and simultaneous open (figure 7)
    ([S.ESTABLISHED, S.FIN_WAIT_1, S.CLOSING, S.TIME_WAIT], [E.SEND_FIN, E.RECV_FIN, E.RECV_ACK_OF_FIN]),
    ([S.CLOSED, S.SYN_SENT, S.SYN_RCVD, S.ESTABLISHED], [E.SEND_SYN, E.RECV_SYN, E.RECV_SYNACK]),
    # FIN_WAIT_2 orphan reaped by tcp_fin_timeout
    ([S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSED], [E.RECV_ACK_OF_FIN, E.FIN_TIMEOUT]),
    # a connection first seen mid-stream
    ([S.UNKNOWN, S.ESTABLISHED, S.CLOSE_WAIT], [E.RECV_SEGMENT, E.RECV_FIN]),
])
def test_paths(path: list[State], events: list[Event]) -> None:
    state = path[0]
    for event, want in zip(events, path[1:]):
        state = TRANSITIONS[state][event]
        assert state is want


@pytest.mark.parametrize(("state", "event"), [
    (S.ESTABLISHED, E.SEND_SEGMENT), (S.TIME_WAIT, E.RECV_FIN), (S.CLOSE_WAIT, E.RECV_FIN),
    (S.SYN_SENT, E.SEND_SYN), (S.CLOSED, E.RECV_SYN), (S.LAST_ACK, E.SEND_FIN),
])
def test_retransmissions_and_noise_change_nothing(state: State, event: Event) -> None:
    assert event not in TRANSITIONS.get(state, {})


def test_docs_are_generated_from_the_table() -> None:
    from pathlib import Path
    doc = (Path(__file__).parent.parent / "docs" / "states.md").read_text()
    assert diagram() in doc, "docs/states.md is stale: run python -m analyzer.tcpstate > docs/states.md"
