"""`tcpa live` and `tcpa interfaces`: real captures on loopback with real TCP traffic, and every error path.

The capture tests need root (or a dumpcap with capture capabilities) and dumpcap/tshark installed, as on CI;
they skip otherwise. Traffic starts only after tcpa printed its "capturing on" line, which it prints once the
pcap header arrived on the pipe (the capture is live).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from analyzer.capture import open_capture
from analyzer.live import Drain, LiveCapture, LiveView, explain
from analyzer.pipeline import Analysis, analyze

TCPA = str(Path(sys.executable).with_name("tcpa"))
SHOWCASE = Path(__file__).resolve().parents[1] / "pcaps" / "showcase.pcapng"
HAVE_CAPTURE = os.geteuid() == 0 and shutil.which("dumpcap") is not None and shutil.which("tshark") is not None

needs_capture = pytest.mark.usefixtures("capture_possible")


@pytest.fixture
def capture_possible() -> None:
    """Live tests run for real, never skipped: make test installs tshark and CI runs as root."""
    assert HAVE_CAPTURE, "live tests need root and dumpcap/tshark (make test installs tshark)"


# --- helpers -----------------------------------------------------------------------------------------------
class Live:
    """A `tcpa live` subprocess; stderr is read by a thread so the test can wait for the ready line."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([TCPA, "live", *args], cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)
            self.lines.put(line)

    def ready(self, timeout: float = 60) -> str:
        """Wait for the "capturing on" line (the capture is live); returns it."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    time.sleep(0.2)
                    raise AssertionError(f"tcpa live ended before capturing: {''.join(self.err)}") from None
                continue
            if "capturing on" in line:
                return line
        raise AssertionError("tcpa live never said it was capturing")

    def stop(self, timeout: float = 60) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def wait(self, timeout: float = 60) -> tuple[int, str, str]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout)
        time.sleep(0.1)
        return code, out, "".join(self.err)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def listener(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    return s


def recv_all(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


class Traffic:
    """The four loopback scenarios; sockets that must stay open are kept until close()."""

    def __init__(self) -> None:
        self.normal, self.closed, self.stuck, self.reset = free_ports(4)
        self.servers = [listener(p) for p in (self.normal, self.stuck, self.reset)]
        self.keep: list[socket.socket] = []

    @property
    def bpf(self) -> str:
        return "tcp and (" + " or ".join(f"port {p}" for p in (self.normal, self.closed, self.stuck, self.reset)) + ")"

    def run(self) -> None:
        srv_normal, srv_stuck, srv_reset = self.servers
        # a normal exchange: request, answer, the client closes first, the server closes too
        c = socket.create_connection(("127.0.0.1", self.normal))
        a, _ = srv_normal.accept()
        c.sendall(b"ping")
        assert a.recv(4) == b"ping"
        a.sendall(b"pong")
        assert c.recv(4) == b"pong"
        c.close()
        assert recv_all(a) == b""
        a.close()
        # a connection to a closed port: refused with RST+ACK
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", self.closed), timeout=5)
        # a server that never closes after the client's FIN: CLOSE_WAIT (the client waits in FIN_WAIT_2)
        c = socket.create_connection(("127.0.0.1", self.stuck))
        a, _ = srv_stuck.accept()
        c.sendall(b"bye")
        c.shutdown(socket.SHUT_WR)
        assert recv_all(a) == b"bye"
        self.keep += [c, a]
        # half-close, the server goes on sending, the client closes with unread data: RST after half-close
        c = socket.create_connection(("127.0.0.1", self.reset))
        a, _ = srv_reset.accept()
        c.shutdown(socket.SHUT_WR)
        assert recv_all(a) == b""
        a.sendall(b"x" * 1000)
        time.sleep(0.2)
        c.close()  # 1000 unread bytes: the kernel sends RST instead of FIN
        time.sleep(0.2)
        self.keep.append(a)
        time.sleep(0.5)  # let the last packets reach the pipe

    def close(self) -> None:
        for s in self.keep + self.servers:
            s.close()


def conn_key(c: dict) -> tuple:
    return c["orig_h"], c["orig_p"], c["resp_h"], c["resp_p"], c["first_ns"]


def tcpa_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TCPA, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False)


# --- a real capture, compared with offline analysis of the saved file ---------------------------------------
@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Traffic, tuple[int, str, str]]]:
    assert HAVE_CAPTURE, "live tests need root and dumpcap/tshark (make test installs tshark)"
    d = tmp_path_factory.mktemp("live")
    traffic = Traffic()
    live = Live("-i", "lo", "-f", traffic.bpf, "-w", "saved.pcap", "--format", "json", "-o", "live.json",
                "--html", "live.html", cwd=d)
    try:
        live.ready()
        traffic.run()
        result = live.stop()
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
        traffic.close()
    yield d, traffic, result


@needs_capture
def test_live_capture_ends_cleanly_on_ctrl_c_and_writes_everything(captured) -> None:
    d, _, (code, _, err) = captured
    assert code == 0, err
    assert "tcpa: error" not in err
    for name in ("saved.pcap", "live.json", "live.html"):
        assert (d / name).stat().st_size > 0, name
    assert not list(d.glob(".*.part"))
    assert (d / "saved.pcap").read_bytes()[:4] == bytes.fromhex("d4c3b2a1")  # pcap, as documented


@needs_capture
def test_live_findings_and_states_equal_offline_analysis_of_the_saved_capture(captured) -> None:
    d, traffic, _ = captured
    live = json.loads((d / "live.json").read_text())
    done = tcpa_cli("analyze", str(d / "saved.pcap"), "--no-checksums", "-f", "json", "-o", str(d / "offline.json"))
    assert done.returncode == 0, done.stderr
    offline = json.loads((d / "offline.json").read_text())
    assert live["capture"]["frames"] == offline["capture"]["frames"] > 0
    # every connection, with both endpoints' end states, exactly as offline
    assert {conn_key(c): c for c in live["connections"]} == {conn_key(c): c for c in offline["connections"]}
    assert live["states_at_end"] == offline["states_at_end"]

    def findings(doc: dict) -> set[tuple]:
        tuple_of = {c["uid"]: (c["orig_h"], c["orig_p"], c["resp_h"], c["resp_p"]) for c in doc["connections"]}
        return {(f["kind"], tuple_of.get(f["uid"]), f["host"], f["port"], f["direction"], tuple(f["frames"]))
                for f in doc["findings"]}

    assert findings(live) == findings(offline)
    # and the scenarios are recognised
    by_port = {c["resp_p"]: c for c in live["connections"]}
    normal, closed = by_port[traffic.normal], by_port[traffic.closed]
    stuck, reset = by_port[traffic.stuck], by_port[traffic.reset]
    assert normal["close"] in ("four_way", "three_packet")  # Linux's loopback often folds FIN into the ACK
    assert (normal["orig_state"], normal["resp_state"], normal["conn_state"]) == ("TIME_WAIT", "CLOSED", "SF")
    assert closed["conn_state"] == "REJ"
    # still open at the end: shown open with the current states, not forced closed
    assert (stuck["close"], stuck["orig_state"], stuck["resp_state"]) == ("half_closed", "FIN_WAIT_2", "CLOSE_WAIT")
    assert (reset["close"], reset["reset_by"]) == ("reset", "orig")
    kinds = {(f["kind"], f["port"]) for f in live["findings"]}
    assert ("connection_refused", traffic.closed) in kinds
    assert ("close_wait", traffic.stuck) in kinds
    assert ("rst_after_half_close", traffic.reset) in kinds
    server_states = {r["service"]: r for r in live["states_at_end"] if r["role"] == "server"}
    assert server_states[f"127.0.0.1:{traffic.stuck}"]["CLOSE_WAIT"] == 1


@needs_capture
def test_packets_and_duration_stop_the_capture(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    srv = listener(port)
    live = Live("-i", "lo", "-f", f"tcp port {port}", "--packets", "3", "--format", "json", "-o", "p.json",
                "-q", cwd=tmp_path)
    try:
        live.ready()
        socks = []
        for _ in range(3):
            socks.append(socket.create_connection(("127.0.0.1", port)))
            socks.append(srv.accept()[0])
        code, _, err = live.wait(60)
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
        for s in [srv, *socks]:
            s.close()
    assert code == 0, err
    assert json.loads((tmp_path / "p.json").read_text())["capture"]["frames"] == 3
    t0 = time.monotonic()
    done = tcpa_cli("live", "-i", "lo", "-f", "tcp port 9", "--duration", "1", "--format", "json", "-q")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - t0 < 30
    assert json.loads(done.stdout)["capture"]["frames"] == 0


@needs_capture
def test_capture_that_dies_is_analysed_and_written_and_fails(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    srv = listener(port)
    live = Live("-i", "lo", "-f", f"tcp port {port}", "-w", "cut.pcap", "--format", "json", "-o", "cut.json",
                cwd=tmp_path)
    try:
        pid = int(re.search(r"dumpcap pid (\d+)", live.ready()).group(1))  # type: ignore[union-attr]
        c = socket.create_connection(("127.0.0.1", port))
        a, _ = srv.accept()
        c.sendall(b"hello")
        a.recv(5)
        time.sleep(0.7)
        os.kill(pid, signal.SIGKILL)
        code, _, err = live.wait(60)
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
        srv.close()
    assert code == 2
    assert "tcpa: error: capture failed: dumpcap was killed by signal 9" in err
    doc = json.loads((tmp_path / "cut.json").read_text())
    conn = [c for c in doc["connections"] if c["resp_p"] == port]
    assert conn and conn[0]["orig_state"] == "ESTABLISHED" and conn[0]["resp_state"] == "ESTABLISHED"
    assert any(n["kind"] == "capture_failed" for n in doc["capture"]["warnings"])
    assert (tmp_path / "cut.pcap").stat().st_size > 24


# --- errors: one line, exit code 2 --------------------------------------------------------------------------
def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("tcpa: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@pytest.mark.parametrize("command", [["live", "-i", "lo"], ["interfaces"]])
def test_tshark_not_installed(tmp_path: Path, command: list[str]) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    line = one_error_line(tcpa_cli(*command, env={**os.environ, "PATH": str(empty)}))
    assert "tshark is not installed" in line and "apt-get install tshark" in line


@needs_capture
def test_unknown_interface() -> None:
    line = one_error_line(tcpa_cli("live", "-i", "nosuch0", "-q"))
    assert "unknown interface 'nosuch0'" in line and "tcpa interfaces" in line


@needs_capture
def test_bad_capture_filter_gives_tsharks_message() -> None:
    line = one_error_line(tcpa_cli("live", "-i", "lo", "-f", "tcp port", "-q"))
    assert "bad capture filter 'tcp port'" in line and "syntax error" in line


def _dumpcap_has_capabilities() -> bool:
    dumpcap = shutil.which("dumpcap")
    getcap = shutil.which("getcap")
    if not dumpcap or not getcap:
        return False
    out = subprocess.run([getcap, dumpcap], capture_output=True, text=True, check=False).stdout
    return "cap_net_raw" in out or os.stat(dumpcap).st_mode & 0o4000 != 0


@needs_capture
def test_no_permission_to_capture() -> None:
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed to drop root for this test"
    assert not _dumpcap_has_capabilities(), "dumpcap has capture capabilities here: nobody could capture"
    with tempfile.TemporaryDirectory(prefix="tcpa-nobody-") as home:  # pytest's tmp_path is root's alone
        os.chmod(home, 0o777)
        env = {**os.environ, "HOME": home, "NUMBA_CACHE_DIR": os.path.join(home, "numba")}
        done = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                               TCPA, "live", "-i", "lo", "-q"], capture_output=True, text=True, env=env,
                              cwd=home, timeout=300, check=False)
    line = one_error_line(done)
    assert "no permission to capture on lo" in line
    assert "cap_net_raw,cap_net_admin" in line and "group wireshark" in line and "root" in line


@needs_capture
def test_interfaces_lists_loopback() -> None:
    done = tcpa_cli("interfaces")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^\d+\. lo\b", done.stdout, re.MULTILINE)


def test_existing_outputs_are_refused_before_capturing(tmp_path: Path) -> None:
    (tmp_path / "keep.pcap").write_bytes(b"x")
    line = one_error_line(tcpa_cli("live", "-i", "lo", "-w", str(tmp_path / "keep.pcap")))
    assert "exists; use --force" in line
    assert (tmp_path / "keep.pcap").read_bytes() == b"x"


def test_error_messages_from_dumpcap_become_one_line() -> None:
    perm = ('Capturing on \'Loopback: lo\'\ndumpcap: You do not have permission to capture on device "lo".\n'
            "(socket: Operation not permitted)\nPlease check to make sure you have sufficient permissions.\n")
    assert explain(perm, "lo").startswith("no permission to capture on lo (socket: Operation not permitted): run")
    assert explain('dumpcap: There is no device named "x0".\n(No such device exists)\n', "x0") == \
        "unknown interface 'x0' (`tcpa interfaces` lists them)"
    bad = ("dumpcap: Invalid capture filter \"tcp port\" for interface 'lo'.\n\nThat string isn't a valid capture "
           "filter (can't parse filter expression: syntax error).\nSee the User's Guide for a description of the "
           "capture filter syntax.\n")
    assert explain(bad, "lo", "tcp port") == "bad capture filter 'tcp port': can't parse filter expression: syntax error"
    assert explain("Capturing on 'eth0'\ndumpcap: something else broke.\n", "eth0") == "dumpcap: something else broke."


# --- the pieces, without capturing --------------------------------------------------------------------------
def test_snapshot_leaves_the_analysis_untouched_and_finish_equals_analyze() -> None:
    whole = analyze(SHOWCASE)
    analysis = Analysis()
    with open_capture(SHOWCASE, batch_frames=300) as capture:
        for i, batch in enumerate(capture):
            analysis.feed(batch)
            if i in (1, 4):
                snap = analysis.snapshot(capture.facts)
                assert len(snap.connections) <= len(whole.connections)
        facts = capture.facts
    final = analysis.finish(facts)
    pd.testing.assert_frame_equal(final.connections, whole.connections)
    pd.testing.assert_frame_equal(final.transitions, whole.transitions)
    pd.testing.assert_frame_equal(final.findings, whole.findings)


def test_snapshot_at_the_end_equals_the_final_report() -> None:
    analysis = Analysis()
    with open_capture(SHOWCASE) as capture:
        for batch in capture:
            analysis.feed(batch)
        facts = capture.facts
    snap = analysis.snapshot(facts)
    final = analysis.finish(facts)
    pd.testing.assert_frame_equal(snap.connections, final.connections)
    pd.testing.assert_frame_equal(snap.findings, final.findings)


def test_live_reader_delivers_frames_without_waiting_for_a_full_chunk() -> None:
    data = SHOWCASE.with_name("fin_wait_2.pcap").read_bytes()
    read, write = os.pipe()
    got: queue.Queue[int] = queue.Queue()

    def reader() -> None:
        drain = Drain(read)
        drain.start()
        cap = LiveCapture(drain, data[:24], "pipe", 1 << 16)
        for batch in cap:
            got.put(len(batch))
        got.put(-1)

    threading.Thread(target=reader, daemon=True).start()
    os.write(write, data[24:])  # a few records; the pipe stays open
    first = got.get(timeout=10)
    assert first > 0
    os.close(write)
    rest = []
    while (n := got.get(timeout=10)) != -1:
        rest.append(n)
    with open_capture(SHOWCASE.with_name("fin_wait_2.pcap")) as cap:
        assert first + sum(rest) == sum(len(b) for b in cap)
    os.close(read)


def test_drain_empties_the_pipe_while_the_analysis_is_busy() -> None:
    # dumpcap must never block on the pipe while tcpa analyses (its kernel buffer would drop packets): with
    # nobody taking from the Drain, 64 MiB still go through a 1 MiB pipe, up to the backlog limit
    read, write = os.pipe()
    drain = Drain(read, limit=96 << 20)
    drain.start()
    block = bytes(range(256)) * 4096
    for _ in range(64):
        os.write(write, block)  # would block for good once the pipe is full, without the drain
    os.close(write)
    drain.join(10)
    assert drain.eof and drain.size == 64 << 20
    got = b"".join(iter(lambda: drain.take(1 << 30, 0.1) or b"", b""))
    assert got == block * 64
    os.close(read)


def test_drain_holds_back_at_its_limit_and_resumes() -> None:
    read, write = os.pipe()
    drain = Drain(read, limit=1 << 20)
    drain.start()

    def send() -> None:
        for _ in range(8):
            os.write(write, b"x" * (1 << 20))
        os.close(write)

    writer = threading.Thread(target=send)
    writer.start()
    time.sleep(0.5)
    assert drain.size <= 2 << 20 and writer.is_alive()  # backlog capped: the pipe now takes the strain
    total = 0
    while chunk := drain.take(1 << 20, 5.0):
        total += len(chunk)
    writer.join(5)
    assert total == 8 << 20 and drain.peak <= 2 << 20
    os.close(read)


def test_live_view_shows_states_sockets_and_newest_findings() -> None:
    report = analyze(SHOWCASE)
    view = LiveView("lo", "tcp port 80")
    view.count(report.capture.frames, report.segments)
    view.update(report)
    console = Console(record=True, width=160)
    console.print(view)
    text = console.export_text()
    assert "capturing on lo" in text and "tcp port 80" in text
    assert "Connections by state" in text and "Sockets per host:port now" in text
    assert "Newest findings" in text and "new" in text
