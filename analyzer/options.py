"""What the user chooses: output formats, severities and the detectors' thresholds.

Kept free of pandas so the command line can check its options, and start reading the capture, while the
modules that build the report's tables are still being imported (cli.main() imports them in a thread).
"""

from __future__ import annotations

from dataclasses import dataclass

FORMATS = ("table", "json", "jsonl", "csv", "parquet", "zeek")
SEVERITIES = ("info", "notice", "warning", "error")
RANK = {s: i for i, s in enumerate(SEVERITIES)}


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
