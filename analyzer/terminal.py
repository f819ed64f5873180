"""Terminal output with rich: capture summary, connection table, end-of-capture state counts."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .report import Report

CONN_COLUMNS = [
    ("uid", "uid"), ("orig", "originator"), ("resp", "responder"), ("conn_state", "zeek"), ("history", "history"),
    ("close", "close"), ("orig_state", "orig end state"), ("resp_state", "resp end state"),
    ("pkts", "pkts o/r"), ("bytes", "bytes o/r"), ("duration", "dur s"), ("handshake_rtt_ms", "hs rtt ms"),
]


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def summary(report: Report, console: Console) -> None:
    """Capture facts, what was skipped, and every warning."""
    f = report.capture
    span = (f.last_ns - f.first_ns) / 1e9 if f.frames else 0.0
    console.print(f"[bold]{escape(f.source)}[/]  {escape(f.file_format)}{' (gzip)' if f.compressed else ''}  "
                  f"{f.frames} frames, {report.segments} TCP segments, {len(report.connections)} connections, "
                  f"{span:.3f} s" + (f" from {_when(f.first_ns)}" if f.frames else ""))
    if report.skipped:
        console.print("not TCP: " + ", ".join(f"{escape(k)} {v}" for k, v in sorted(report.skipped.items())))
    for n in f.notices[:20]:
        where = f"frame {n.frame}: " if n.frame else ""
        console.print(f"[yellow]warning[/] {where}{escape(n.message)} [dim]({escape(n.kind)})[/]")
    if len(f.notices) > 20:
        console.print(f"[yellow]... and {len(f.notices) - 20} more warnings[/]")


def connection_table(conns: pd.DataFrame, limit: int) -> Table:
    """The connection table, at most `limit` rows."""
    table = Table(title=f"Connections ({len(conns)})", show_lines=False, header_style="bold")
    for key, title in CONN_COLUMNS:
        table.add_column(title, overflow="fold", no_wrap=key in ("uid", "orig", "resp", "history"))
    for c in conns.head(limit).itertuples(index=False):
        table.add_row(
            c.uid, escape(_endpoint(c.orig_h, c.orig_p)), escape(_endpoint(c.resp_h, c.resp_p)), c.conn_state,
            escape(c.history), c.close, c.orig_state, c.resp_state, f"{c.orig_pkts}/{c.resp_pkts}",
            f"{c.orig_bytes}/{c.resp_bytes}", f"{c.duration:.3f}",
            "" if pd.isna(c.handshake_rtt_ms) else f"{c.handshake_rtt_ms:.2f}")
    if len(conns) > limit:
        table.caption = f"first {limit} of {len(conns)} connections; --limit changes this, --format csv lists all"
    return table


def state_table(states: pd.DataFrame, title: str) -> Table:
    """Per host, role and service: sockets in each state, as `ss -tan` would list them."""
    table = Table(title=title, header_style="bold")
    for col in states.columns:
        table.add_column(col, justify="left" if col in ("host", "role", "service") else "right")
    for row in states.itertuples(index=False):
        table.add_row(*(escape(str(v)) if isinstance(v, str) else (str(v) if v else "") for v in row))
    return table


SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "notice": "cyan", "info": "dim"}
EXAMPLES = 3


def findings_table(findings: pd.DataFrame) -> Table:
    """Findings grouped by kind, worst kinds first: count, severity, and the first examples with evidence."""
    table = Table(title=f"Findings ({len(findings)})", header_style="bold", show_lines=True)
    for col in ("severity", "kind", "count", "examples (frames)"):
        table.add_column(col, overflow="fold", no_wrap=col in ("severity", "kind"))
    rank = {"info": 0, "notice": 1, "warning": 2, "error": 3}
    groups = findings.assign(_r=findings["severity"].map(rank)).groupby("kind", sort=False)
    order = sorted(groups, key=lambda kv: (-kv[1]["_r"].max(), kv[0]))
    for kind, g in order:
        g = g.sort_values("_r", ascending=False, kind="stable")
        sev = str(g["severity"].iloc[0])
        lines = []
        for f in g.head(EXAMPLES).itertuples():
            frames = ", ".join(map(str, list(f.frames)[:8])) + (" ..." if len(f.frames) > 8 else "")
            lines.append(f"{escape(f.summary)} [dim]({frames})[/]")
        if len(g) > EXAMPLES:
            lines.append(f"[dim]... and {len(g) - EXAMPLES} more[/]")
        table.add_row(f"[{SEVERITY_STYLE[sev]}]{sev}[/]", escape(str(kind)), str(len(g)), "\n".join(lines))
    return table


def explain(findings: pd.DataFrame, console: Console) -> None:
    """For each warning or error kind present: what it means, likely causes and the remedy."""
    bad = findings[findings["severity"].isin(["warning", "error"])].drop_duplicates("kind")
    for f in bad.itertuples():
        console.print(f"[bold]{escape(f.title)}[/] [dim]({escape(f.kind)})[/]\n  {escape(f.explanation)}\n"
                      f"  [bold]Likely causes:[/] {escape(f.causes)}\n  [bold]Fix:[/] {escape(f.remedy)}")


def render(report: Report, console: Console, limit: int, at_ns: int | None) -> None:
    """Everything the `analyze` command prints in table format."""
    summary(report, console)
    console.print(connection_table(report.connections, limit))
    if len(report.findings):
        console.print(findings_table(report.findings))
        explain(report.findings, console)
    else:
        console.print("No findings.")
    when = "end of capture" if at_ns is None else _when(at_ns)
    states = report.states_at(at_ns)
    if states.empty:
        console.print(f"No socket would have been listed at {when}.")
    else:
        console.print(state_table(states, f"Socket states at {when} (what ss -tan would list)"))
