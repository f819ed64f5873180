"""`make bench`: tcpa against tcptrace and tshark on the same generated captures, in one run.

    python scripts/bench.py [--sizes 0.5,1,2,4] [--repeat 3] [--peers-at 2] [--live-rates 100000]

Captures (millions of packets) are generated once by scripts/gen_bench.py into bench/ and reused. For each
repetition the tools run one after another (alternating, so drift hits all alike); the median wall time, the
peak RSS and the median CPU time (user + system) of each are reported, with every run's wall time, tcpa's
packets/s and its ratio to each peer. CPU time is the steadier figure on a virtual machine, where a run can
stall without using the CPU (see docs/performance.md). Peers run only at the
--peers-at size (the issue's 2 M-packet capture); tcpa runs at every size to show how time and memory scale.

Memory: a peer's peak RSS comes from GNU time; tcpa's is its process tree's (tree_peak), from --repeat
further, untimed runs.

Floor: at the peers' size, the part of tcpa that cannot be left out is timed too (`--floor`: the capture read,
decoded and replayed through both endpoints' state machines, with no tables, detectors or outputs), as a
ratio to tcptrace: the most any speed-up of the rest could reach.

Live: `tcpa live -i lo` (with its live view, on a pseudo-terminal) while tcpreplay sends the 2 M-packet
capture's packets onto lo at each --live-rates rate for --live-seconds; printed are the rate tcpreplay reached,
the frames tcpa analysed and the drops dumpcap reported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PY = sys.executable
TCPA = str(Path(PY).with_name("tcpa"))
TINY = ROOT / "pcaps" / "normal_close.pcap"


def capture(millions: float) -> Path:
    path = BENCH / f"bench-{millions:g}M.pcap"
    if not path.exists():
        BENCH.mkdir(exist_ok=True)
        subprocess.run([PY, str(ROOT / "scripts" / "gen_bench.py"), str(path), "--packets",
                        str(int(millions * 1_000_000))], check=True)
    return path


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MB) and CPU seconds (user + system, its children's included) of one command,
    via GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        subprocess.run(["/usr/bin/time", "-f", "%e %M %U %S", "-o", t.name, *cmd], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall, rss_kb, user, system = t.read().split()[-4:]
    return float(wall), int(rss_kb) / 1024, float(user) + float(system)


def tree_peak(cmd: list[str]) -> float:
    """Peak memory (MB) of a command and the children it forks, sampled every 2 ms: its own RSS plus each
    child's own pages (USS: what it shares with its parent, copy-on-write, is counted once, in the parent).
    GNU time gives the largest single process instead, which says too little of tcpa: the capture is read in a
    forked child while the parent imports pandas, and two more children write outputs."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        total = _kb(f"/proc/{proc.pid}/status", ("VmRSS:",))
        for child in _children(proc.pid):
            total += _kb(f"/proc/{child}/smaps_rollup", ("Private_Clean:", "Private_Dirty:"))
        peak = max(peak, total)
        time.sleep(0.002)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return peak / 1024


def _children(pid: int) -> list[int]:
    """Every descendant of pid."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as fh:  # the main thread forks them
                kids = [int(k) for k in fh.read().split()]
        except OSError:
            continue
        found += kids
        todo += kids
    return found


def _kb(path: str, fields: tuple[str, ...]) -> int:
    try:
        with open(path) as fh:
            return sum(int(line.split()[1]) for line in fh if line.startswith(fields))
    except (OSError, ValueError, IndexError):  # it ended meanwhile
        return 0


FLOOR = "tcpa floor (no report)"


def floor(pcap: str) -> None:
    """Read, decode and replay the capture as `tcpa analyze` does, two threads and all, then stop: no tables,
    detectors or outputs, and pandas never imported."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the command line (cli.py): no BLAS thread spinning
    from analyzer import heap, pipeline
    from analyzer.model import CaptureFacts

    heap.pin_mmap_threshold()
    analysis = pipeline.Analysis()
    for item in pipeline.prefetched(pipeline.decoded([pcap], analysis.decoder, pipeline.DEFAULT_BATCH, mapped=True)):
        if not isinstance(item, CaptureFacts):
            analysis.add(item[0])
    analysis.tracker.finish()
    assert "pandas" not in sys.modules
    sys.stdout.flush()
    os._exit(0)  # as the CLI ends


def tools(pcap: Path, out: Path, peers: bool) -> dict[str, list[str]]:
    cmds = {"tcpa": [TCPA, "analyze", str(pcap), "-q", "--force", "-f", "json", "-o", str(out / "tcpa.json"),
                     "--conn-log", str(out / "conn.log")]}
    if peers:
        cmds[FLOOR] = [PY, __file__, "--floor", str(pcap)]
        cmds["tcptrace -l -n"] = ["tcptrace", "-l", "-n", str(pcap)]
        cmds["tshark -z conv,tcp"] = ["tshark", "-n", "-q", "-r", str(pcap), "-z", "conv,tcp"]
        cmds["tshark tcp.analysis"] = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-e", "frame.number",
                                       "-e", "tcp.analysis.flags", "-e", "tcp.analysis.ack_rtt",
                                       "-e", "tcp.analysis.retransmission"]
    return cmds


def cached(pcap: Path) -> None:
    """Read the capture once, untimed, so every tool starts with it in the page cache (this machine's
    proactive reclaim otherwise evicts it between runs, and whoever runs next pays for the disk). The tools'
    own files are warmed the same way: each runs once, untimed, on a tiny capture before each timed run."""
    with open(pcap, "rb") as fh:
        while fh.read(16 << 20):
            pass


def packets(pcap: Path) -> int:
    out = subprocess.run(["capinfos", "-c", "-M", str(pcap)], capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1].split()[-1])


def live(rate: int, seconds: float, pcap: Path, out: Path) -> str:
    """tcpa live on lo while tcpreplay sends `rate` packets/s for `seconds`: one line on what arrived."""
    n = int(rate * seconds)
    result, timing = out / "live.json", out / "live.time"
    tcpa = ["/usr/bin/time", "-f", "%M", "-o", str(timing), TCPA, "live", "-i", "lo", "-f", "tcp", "--packets",
            str(n), "--duration", str(seconds + 30), "--format", "json", "-o", str(result), "--force"]
    # script(1) gives tcpa a terminal, so the live view is drawn (and costs) as it does for a user
    proc = subprocess.Popen(["script", "-qfec", shlex.join(tcpa), "/dev/null"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ready = threading.Event()

    def watch() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if b"Ctrl-C stops" in line:
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    if not ready.wait(60):
        proc.kill()
        raise SystemExit("bench: tcpa live did not start capturing on lo")
    replay = subprocess.run(["tcpreplay", "-i", "lo", "--pps", str(rate), "--limit", str(n), str(pcap)],
                            capture_output=True, text=True, check=True).stdout
    proc.wait(seconds + 120)
    sent = re.search(r"Actual: (\d+) packets .* in ([\d.]+) seconds", replay)
    assert sent, replay
    facts = json.loads(result.read_text())["capture"]
    drops = [w["message"] for w in facts["warnings"] if w["kind"] == "capture_drops"]
    dropped = re.search(r"reports (\d+) of", drops[0]).group(1) if drops else "0"  # type: ignore[union-attr]
    return (f"live lo  {rate:>9,} packets/s target: tcpreplay sent {int(sent[1]):,} in {float(sent[2]):.2f} s "
            f"({int(sent[1]) / float(sent[2]):,.0f}/s); tcpa analysed {facts['frames']:,} frames; dumpcap "
            f"dropped {dropped}; tcpa peak RSS {int(timing.read_text().split()[-1]) / 1024:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0.5,1,2,4", help="capture sizes in millions of packets")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peers-at", type=float, default=2.0)
    ap.add_argument("--live-rates", default="100000", help="packets/s sent onto lo for the live run ('' skips it)")
    ap.add_argument("--live-seconds", type=float, default=10.0)
    ap.add_argument("--floor", metavar="PCAP", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.floor:
        floor(a.floor)
    missing = [t for t in ("tcptrace", "tshark", "capinfos", "tcpreplay", "script") if not shutil.which(t)]
    if missing:
        sys.exit(f"bench: missing {', '.join(missing)} (apt-get install tshark tcptrace tcpreplay)")
    sizes = [float(x) for x in a.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for size in sizes:
            pcap = capture(size)
            n = packets(pcap)
            cmds = tools(pcap, out, peers=size == a.peers_at)
            warm = tools(TINY, out, peers=size == a.peers_at)
            runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cmds}
            for _ in range(a.repeat):
                for name, cmd in cmds.items():
                    # the tool's code and libraries back in the page cache (reclaimed after a minute unused: a
                    # tshark run is longer than that), then the capture
                    subprocess.run(warm[name], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    cached(pcap)
                    runs[name].append(measure(cmd))
            tree = max(tree_peak(cmds["tcpa"]) for _ in range(a.repeat))  # untimed: sampling costs CPU
            for name, r in runs.items():
                wall = statistics.median(x[0] for x in r)
                rss = tree if name == "tcpa" else max(x[1] for x in r)
                cpu = statistics.median(x[2] for x in r)
                rows.append((size, name, n, wall, n / wall, rss, cpu))
                each = " ".join(f"{x[0]:.2f}" for x in r)
                largest = f"; largest process {max(x[1] for x in r):.1f} MB" if name == "tcpa" else ""
                print(f"{size:g}M  {name:<22} {wall:8.2f} s  {n / wall:>11,.0f} packets/s  peak RSS {rss:8.1f} MB  "
                      f"CPU {cpu:6.2f} s  (runs: {each} s{largest})", flush=True)
        startup = statistics.median(measure(tools(TINY, out, peers=False)["tcpa"])[0] for _ in range(a.repeat))
        print(f"tcpa start-up (imports, compiled code loaded, outputs of a {packets(TINY)}-packet capture): "
              f"{startup:.2f} s", flush=True)
        for rate in [int(float(r)) for r in a.live_rates.split(",") if r]:
            print(live(rate, a.live_seconds, capture(2), out), flush=True)
    print()
    ours = {size: (pps, cpu) for size, name, _, _, pps, _, cpu in rows if name == "tcpa"}
    for size, name, _, _, pps, _, cpu in rows:
        if name == FLOOR:
            peer = next(p for s, n, _, _, p, _, _ in rows if s == size and n.startswith("tcptrace"))
            print(f"{size:g}M  {name} / tcptrace = {pps / peer:6.2f}x packets/s: what tcpa would reach if its "
                  f"tables, detectors and outputs took no time at all")
        elif name != "tcpa":
            print(f"{size:g}M  tcpa / {name:<22} = {ours[size][0] / pps:6.2f}x packets/s; "
                  f"its CPU time / tcpa's = {cpu / ours[size][1]:6.2f}x")
    peaks = {size: r for size, name, _, _, _, r, _ in rows if name == "tcpa"}
    if a.peers_at in peaks:
        for size in sorted(x for x in peaks if x > a.peers_at):
            print(f"{size:g}M  tcpa peak RSS {peaks[size]:.0f} MB = {peaks[size] / peaks[a.peers_at]:.2f}x the "
                  f"{a.peers_at:g}M capture's ({peaks[a.peers_at]:.0f} MB)")
    print(f"machine: {os.cpu_count()} cores, {os.uname().machine}, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
