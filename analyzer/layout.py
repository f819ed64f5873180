"""Column layout of the engine's per-connection state rows.

The compiled loop keeps every live connection as one row of an int64 matrix (one row per flow-table slot) and
refers to fields by these constants, which numba folds into the code. Fields of an endpoint live at
`EP[e] + E_*`, e = 0 for the originator and 1 for the responder.
"""

from __future__ import annotations

NONE = -1  # "not seen" for times, frames, sequence numbers and options

# Connection-wide fields.
(C_CONN, C_ORIG_IS_A, C_START, C_FIRST_NS, C_LAST_NS, C_FIRST_FRAME, C_LAST_FRAME, C_HIST_LEN, C_ZFLIP,
 C_SYN_NS, C_SYNACK_NS, C_HS_ACK_NS, C_HS_ACK_FRAME, C_TUNNEL, C_ZLAST_NS, C_TERM_NS, C_ZHIST_SEEN,
 C_TRUNCATED, C_BAD_OPTS, C_BAD_CSUM, C_SLOT) = range(21)
C_FIELDS = 21

# How the connection began (C_START).
START_SYN, START_SYNACK, START_MIDSTREAM = 0, 1, 2

# Per-endpoint fields.
(E_STATE, E_STATE_NS, E_PKTS, E_IP_BYTES, E_ISN, E_SEQ_START, E_SEQ_HI, E_SEQ_REF, E_FIN_SEQ, E_FIN_NS,
 E_FIN_FRAME, E_FIN_COUNT, E_RST_NS, E_RST_FRAME, E_RST_STATE, E_SYN_COUNT, E_SYN_NS, E_SYN_FRAME, E_MSS,
 E_WSCALE, E_SACK_PERM, E_TS_OK, E_FIRST_NS, E_LAST_NS, E_DATA_PKTS, E_PEND_EV, E_PEND_NS, E_PEND_FRAME,
 E_ZSTATE, E_ZT_CNT, E_ZT_NEXT, E_ZW_CNT, E_ZW_NEXT, E_ZC_CNT, E_ZC_NEXT, E_ZLAST_SYN, E_ZLAST_FIN,
 E_ZLAST_RST, E_ZLAST_SEQ, E_ZSTART_SEQ, E_ZACK_HI, E_ZPREV) = range(42)
E_FIELDS = 42

EP0 = C_FIELDS
EP1 = C_FIELDS + E_FIELDS
ROW = C_FIELDS + 2 * E_FIELDS

HIST_MAX = 48  # history letters kept per connection; Zeek's own histories stay far shorter

# Transition records: one int64 row each.
(T_CONN, T_ENDPOINT, T_FROM, T_TO, T_EVENT, T_NS, T_FRAME, T_ORDER) = range(8)
T_FIELDS = 8

# Zeek endpoint states (init-bare.zeek TCP_INACTIVE ... TCP_RESET).
Z_INACTIVE, Z_SYN_SENT, Z_SYN_ACK_SENT, Z_PARTIAL, Z_ESTABLISHED, Z_CLOSED, Z_RESET = range(7)
