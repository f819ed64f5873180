"""Hostile and broken input, with real files: captures cut anywhere, lying headers, a million-SYN flood, output
files that are never half-written or clobbered, reading from a pipe, and one-line errors with exit code 2."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from analyzer import analyze, forks, writers
from analyzer.cli import app
from analyzer.model import CaptureError
from analyzer.report import Report

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
TCPA = ROOT / ".venv" / "bin" / "tcpa"
S, MS = 10**9, 10**6


def _module(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


scen = _module("tcpa_make_scenarios", ROOT / "scripts" / "make_scenarios.py")
fuzz = _module("tcpa_fuzz", ROOT / "scripts" / "fuzz.py")
runner = CliRunner()


def notices(report: Report, kind: str) -> list[Any]:
    return [n for n in report.capture.notices if n.kind == kind]


# --- truncation ---------------------------------------------------------------------------------------------

SCENARIOS = sorted(PCAPS.glob("*.pcap*"))


def cut_offsets(data: bytes) -> list[tuple[int, str]]:
    """About 20 offsets: inside the file header, record (block) headers and packet bytes, early and late."""
    lay = fuzz.layout(data)
    offs: list[tuple[int, str]] = [(1, "file header"), (3, "file header"), (13, "file header"),
                                   (23 if lay.kind == "pcap" else 20, "file header")]
    recs = lay.records if lay.kind == "pcap" else [r for r in lay.records if r[0] > 0]
    picks = sorted({0, 1, len(recs) // 3, len(recs) // 2, (2 * len(recs)) // 3, len(recs) - 2, len(recs) - 1})
    for i in picks:
        if not 0 <= i < len(recs):
            continue
        start, length = recs[i]
        hdr = lay.rec_hdr if lay.kind == "pcap" else 28
        offs += [(start + 1, "record header"), (start + min(hdr, length) - 1, "record header"),
                 (start + min(hdr + 1, length - 1), "packet"), (start + length - 1, "packet")]
    return sorted({o: w for o, w in offs if 0 < o < len(data)}.items())


def check_cut(path: Path, full: Report) -> str:
    """A cut capture is refused in one line naming the file, or analysed up to the cut with a notice saying where."""
    try:
        report = analyze(path, detect=False)
    except CaptureError as err:
        msg = str(err)
        assert "\n" not in msg and str(path) in msg, msg
        return "refused"
    cut = notices(report, "truncated_file")
    assert cut, f"{path.name}: cut but no truncated_file notice"
    n = cut[-1]
    assert f"frame {n.frame}" in n.message, n.message
    assert report.capture.frames == n.frame - 1 or report.capture.compressed, (report.capture.frames, n)
    assert report.capture.frames <= full.capture.frames
    return "analysed"


@pytest.mark.parametrize("capture", SCENARIOS, ids=lambda p: p.name)
def test_every_scenario_cut_at_many_offsets(tmp_path: Path, capture: Path) -> None:
    raw = capture.read_bytes()
    full = analyze(capture, detect=False)
    if raw[:2] == b"\x1f\x8b":  # a gzip file is cut in its compressed bytes
        cuts = [(len(raw) * k // 20, "gzip stream") for k in range(1, 20)]
        data = raw
    else:
        data = raw
        cuts = cut_offsets(data)
    assert len(cuts) >= 12
    outcomes = set()
    for off, where in cuts:
        path = tmp_path / f"cut-{off}-{capture.name}"
        path.write_bytes(data[:off])
        outcomes.add(check_cut(path, full))
        path.unlink()
    assert "analysed" in outcomes


def test_cut_inside_a_packet_names_the_frame_and_keeps_the_ones_before(tmp_path: Path) -> None:
    data = (PCAPS / "normal_close.pcap").read_bytes()
    lay = fuzz.layout(data)
    start, _ = lay.records[5]
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:start + 16 + 10])
    report = analyze(path)
    [n] = notices(report, "truncated_file")
    assert n.frame == 6 and "frame 6" in n.message and "inside a packet record" in n.message
    assert report.capture.frames == 5 and len(report.connections) == 1


# --- lying headers ------------------------------------------------------------------------------------------

def base_frames(v6: bool = False) -> list[tuple[int, bytes]]:
    """A clean connection (handshake, request/response, four-way close) as (ts_ns, Ethernet frame)."""
    kw = {"client": "2001:db8::1", "server": "2001:db8::2"} if v6 else {}
    c = scen.conn(**kw).handshake(scen.T0).exchange(scen.T0 + 20 * MS)
    t = scen.T0 + 100 * MS
    c.seg(t, "c", scen.FIN | scen.ACK).seg(t + 5 * MS, "s", scen.ACK)
    c.seg(t + 50 * MS, "s", scen.FIN | scen.ACK).seg(t + 55 * MS, "c", scen.ACK)
    return [(ts, scen.ethernet(pkt)) for ts, pkt in c.packets]


def write_pcap(path: Path, records: list[tuple[int, bytes] | tuple[int, bytes, int, int]], snaplen: int = 262144) -> Path:
    """Records in the order given (no sorting), with caplen/wirelen overridable: (ts_ns, data[, caplen, wirelen])."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1)]
    for rec in records:
        ts, data = rec[0], rec[1]
        cap, wire = (rec[2], rec[3]) if len(rec) == 4 else (len(data), len(data))  # type: ignore[misc]
        out.append(struct.pack("<IIII", ts // S, (ts % S) // 1000, cap, wire) + data)
    path.write_bytes(b"".join(out))
    return path


def fix_tcp_checksum(frame: bytearray) -> bytearray:
    """Recompute the TCP checksum of an Ethernet/IPv4 frame after editing its header."""
    ip = 14
    ihl = (frame[ip] & 0x0F) * 4
    total = struct.unpack_from("!H", frame, ip + 2)[0]
    tcp = ip + ihl
    frame[tcp + 16:tcp + 18] = b"\0\0"
    seg = bytes(frame[tcp:ip + total])
    pseudo = bytes(frame[ip + 12:ip + 20]) + struct.pack("!BBH", 0, 6, len(seg))
    data = pseudo + seg + (b"\0" if len(seg) % 2 else b"")
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    struct.pack_into("!H", frame, tcp + 16, ~s & 0xFFFF)
    return frame


def check_continues(report: Report, frames: int) -> None:
    """Analysis went on past the bad frame: every frame read, the connection there."""
    assert report.capture.frames == frames
    assert len(report.connections) >= 1
    assert report.connections["orig_pkts"].sum() + report.connections["resp_pkts"].sum() >= frames - 2


def one_notice(report: Report, kind: str, frame: int) -> str:
    got = notices(report, kind)
    assert len(got) == 1, report.capture.notices
    assert got[0].frame == frame and f"frame {frame}" in got[0].message, got[0]
    return str(got[0].message)


def edited(k: int, edit: Any, v6: bool = False) -> list[tuple[int, bytes]]:
    frames = base_frames(v6)
    b = bytearray(frames[k - 1][1])
    edit(b)
    frames[k - 1] = (frames[k - 1][0], bytes(b))
    return frames


def test_caplen_larger_than_the_snap_length(tmp_path: Path) -> None:
    frames = base_frames()
    report = analyze(write_pcap(tmp_path / "snap.pcap", frames, snaplen=100))  # the 100-byte request is frame 4
    assert "snap length (100)" in one_notice(report, "caplen_over_snaplen", 4)
    check_continues(report, len(frames))


def test_caplen_larger_than_the_rest_of_the_file(tmp_path: Path) -> None:
    frames = base_frames()
    recs: list[Any] = list(frames)
    ts, data = frames[-1]
    recs[-1] = (ts, data, len(data) + 5000, len(data))
    report = analyze(write_pcap(tmp_path / "over.pcap", recs))
    one_notice(report, "truncated_file", len(frames))
    assert report.capture.frames == len(frames) - 1 and len(report.connections) == 1


def test_zero_length_records(tmp_path: Path) -> None:
    frames: list[Any] = base_frames()
    frames.insert(3, (frames[2][0], b"", 0, 0))
    frames.insert(6, (frames[5][0], b"", 0, 0))
    report = analyze(write_pcap(tmp_path / "zero.pcap", frames))
    assert one_notice(report, "empty_record", 4).startswith("2 frames")
    check_continues(report, len(frames))


def test_pcapng_block_whose_trailing_length_disagrees(tmp_path: Path) -> None:
    frames = base_frames()
    path = tmp_path / "ng.pcapng"
    scen.write_pcapng(path, [(1, "eth0", 6)], [(ts, 0, f) for ts, f in frames])
    data = bytearray(path.read_bytes())
    lay = fuzz.layout(bytes(data))
    epbs = [r for r in lay.records if struct.unpack_from("<I", data, r[0])[0] == 6]
    start, length = epbs[4]  # frame 5
    struct.pack_into("<I", data, start + length - 4, length + 8)
    path.write_bytes(bytes(data))
    report = analyze(path)
    one_notice(report, "block_length_mismatch", 5)
    check_continues(report, len(frames))


def test_ipv4_ihl_below_five(tmp_path: Path) -> None:
    def edit(b: bytearray) -> None:
        b[14] = 0x44

    frames = edited(4, edit)
    report = analyze(write_pcap(tmp_path / "ihl.pcap", frames))
    assert "IHL below 5" in one_notice(report, "bad_ip_header", 4)
    assert report.skipped["malformed IP header"] == 1
    check_continues(report, len(frames))


@pytest.mark.parametrize("offset, k", [(4, 4), (0, 4), (15, 3)])  # below 5; zero; 60 bytes on a bare ACK
def test_tcp_data_offset_below_five_or_past_the_packet_end(tmp_path: Path, offset: int, k: int) -> None:
    def edit(b: bytearray) -> None:
        b[14 + 20 + 12] = (offset << 4) | (b[14 + 20 + 12] & 0x0F)

    frames = edited(k, edit)
    report = analyze(write_pcap(tmp_path / "doff.pcap", frames))
    one_notice(report, "bad_tcp_header", k)
    assert report.skipped["malformed TCP header"] == 1
    check_continues(report, len(frames))


@pytest.mark.parametrize("length", [0, 1, 40])  # MSS option with length 0, 1, and past the header's end
def test_tcp_option_length_zero_one_or_past_the_header(tmp_path: Path, length: int) -> None:
    def edit(b: bytearray) -> None:
        assert b[54] == 2  # the SYN's first option is MSS
        b[55] = length
        fix_tcp_checksum(b)

    frames = edited(1, edit)
    report = analyze(write_pcap(tmp_path / "opt.pcap", frames))
    assert "malformed TCP option" in one_notice(report, "bad_tcp_option", 1)
    check_continues(report, len(frames))
    assert int(report.connections["bad_option_segments"].sum()) == 1
    assert report.connections.iloc[0]["conn_state"] == "SF"  # the segment itself was analysed


def _ipv6_with_ext(frame: bytes, exts: bytes, first: int) -> bytes:
    eth, ip, tcp = frame[:14], bytearray(frame[14:54]), frame[54:]
    ip[6] = first
    struct.pack_into("!H", ip, 4, len(exts) + len(tcp))
    return eth + bytes(ip) + exts + tcp


@pytest.mark.parametrize("chain", ["overrun", "endless"])
def test_ipv6_extension_header_chain_that_overruns_or_never_ends(tmp_path: Path, chain: str) -> None:
    frames = base_frames(v6=True)
    ts, f = frames[3]
    if chain == "overrun":  # a hop-by-hop header claiming (200 + 1) * 8 bytes
        exts, first = bytes([60, 200, 1, 4, 0, 0, 0, 0]), 0
    else:  # destination options headers one after another, more than any real chain
        exts, first = bytes([60, 0, 1, 4, 0, 0, 0, 0]) * 12 + bytes([6, 0, 1, 4, 0, 0, 0, 0]), 60
    frames[3] = (ts, _ipv6_with_ext(f, exts, first))
    report = analyze(write_pcap(tmp_path / "ext.pcap", frames))
    assert "extension header chain" in one_notice(report, "bad_ip_header", 4)
    check_continues(report, len(frames))


def test_timestamps_going_backwards(tmp_path: Path) -> None:
    frames = base_frames()
    frames[4] = (frames[4][0] - 30 * S, frames[4][1])
    report = analyze(write_pcap(tmp_path / "back.pcap", frames))
    assert "earlier than the frame before" in one_notice(report, "timestamp_backwards", 5)
    check_continues(report, len(frames))


def test_timestamps_far_in_the_future(tmp_path: Path) -> None:
    frames = base_frames()
    frames[6] = (4_102_444_800 * S, frames[6][1])  # 2100-01-01
    report = analyze(write_pcap(tmp_path / "future.pcap", frames))
    assert "20 years after" in one_notice(report, "timestamp_future", 7)
    one_notice(report, "timestamp_backwards", 8)
    check_continues(report, len(frames))
    doc = io.BytesIO()
    writers.to_json(report, doc)
    writers.to_zeek(report, io.StringIO())
    assert json.loads(doc.getvalue())["capture"]["warnings"]


def test_pcapng_timestamp_past_int64_is_clamped_and_reported(tmp_path: Path) -> None:
    frames = base_frames()
    path = tmp_path / "huge.pcapng"
    scen.write_pcapng(path, [(1, "eth0", 6)], [(ts, 0, f) for ts, f in frames])
    data = bytearray(path.read_bytes())
    epbs = [r for r in fuzz.layout(bytes(data)).records if struct.unpack_from("<I", data, r[0])[0] == 6]
    struct.pack_into("<II", data, epbs[2][0] + 12, 0xFFFFFFFF, 0xFFFFFFFF)  # 2**64 - 1 microseconds
    path.write_bytes(bytes(data))
    report = analyze(path)
    one_notice(report, "timestamp_future", 3)
    check_continues(report, len(frames))
    assert report.capture.last_ns <= 1 << 62


def test_notices_stay_one_per_kind_with_a_count(tmp_path: Path) -> None:
    frames = base_frames() * 200  # 2000 frames, every 10th with IHL 4, in batches of 64
    recs = []
    for i, (ts, f) in enumerate(frames):
        b = bytearray(f)
        if i % 10 == 3:
            b[14] = 0x44
        recs.append((ts + i * MS, bytes(b)))
    report = analyze(write_pcap(tmp_path / "many.pcap", recs), batch_frames=64)
    assert len(notices(report, "bad_ip_header")) == 1
    bad = sum(1 for i in range(len(frames)) if i % 10 == 3)
    assert notices(report, "bad_ip_header")[0].message.startswith(f"{bad} frames")
    assert notices(report, "bad_ip_header")[0].frame == 4


# --- the command line: one-line errors, exit code 2, --debug ---------------------------------------------------

def bad_inputs(tmp: Path) -> dict[str, tuple[list[str], Path]]:
    (tmp / "empty.pcap").write_bytes(b"")
    (tmp / "notes.txt").write_text("not a capture at all\n")
    (tmp / "adir").mkdir()
    (tmp / "hdr.pcap").write_bytes(struct.pack("<IHHi", 0xA1B2C3D4, 2, 4, 0))
    (tmp / "ok.pcap").write_bytes((PCAPS / "normal_close.pcap").read_bytes())
    return {
        "missing": (["analyze", str(tmp / "nope.pcap")], tmp / "nope.pcap"),
        "directory": (["analyze", str(tmp / "adir")], tmp / "adir"),
        "empty": (["analyze", str(tmp / "empty.pcap")], tmp / "empty.pcap"),
        "not a capture": (["analyze", str(tmp / "notes.txt")], tmp / "notes.txt"),
        "header cut": (["analyze", str(tmp / "hdr.pcap")], tmp / "hdr.pcap"),
        "output directory missing": (["analyze", str(tmp / "ok.pcap"), "-f", "json", "-o",
                                      str(tmp / "no" / "such" / "out.json")], tmp / "no" / "such" / "out.json"),
        "report output directory missing": (["report", str(tmp / "ok.pcap"), "-o", str(tmp / "nodir" / "r.html")],
                                            tmp / "nodir" / "r.html"),
    }


CASES = ["missing", "directory", "empty", "not a capture", "header cut", "output directory missing",
         "report output directory missing"]


@pytest.mark.parametrize("case", CASES)
def test_error_is_one_line_naming_the_file_and_exit_2(tmp_path: Path, case: str) -> None:
    args, path = bad_inputs(tmp_path)[case]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcpa: error: ") and str(path) in lines[0], lines
    assert "Traceback" not in result.stderr + result.stdout
    debug = runner.invoke(app, [*args, "--debug"])
    assert debug.exit_code == 2 and "Traceback" in debug.stderr


def test_unreadable_file_is_one_line_and_exit_2() -> None:
    """chmod 000 does not stop root: as root, tcpa runs as nobody (setpriv) for this one check."""
    import tempfile

    where = Path(tempfile.mkdtemp(prefix="tcpa-perm-", dir="/tmp"))
    try:
        where.chmod(0o755)
        path = where / "secret.pcap"
        path.write_bytes((PCAPS / "normal_close.pcap").read_bytes())
        path.chmod(0)
        cmd = [str(TCPA), "analyze", str(path)]
        if os.geteuid() == 0:
            assert shutil.which("setpriv"), "setpriv (util-linux) is needed to drop root for this test"
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        # nobody cannot write numba's cache: compiled code is not needed to fail at open()
        env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env, cwd="/")
        assert "tcpa: error" in proc.stderr or proc.returncode == 2, \
            f"tcpa did not run as an unprivileged user: {proc.stderr.strip()[-300:]}"
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and "permission denied" in lines[0], lines
    finally:
        shutil.rmtree(where, ignore_errors=True)


# --- output files ---------------------------------------------------------------------------------------------

def _interrupting_writer(report: Report, fh: Any) -> None:
    fh.write(b'{"schema": "tcpa/1", "connections": [')
    fh.flush()
    raise KeyboardInterrupt  # the user pressed ^C half-way through the report


@pytest.mark.parametrize("existing", [False, True])
def test_interrupted_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  existing: bool) -> None:
    report = analyze(PCAPS / "normal_close.pcap")
    out = tmp_path / "report.json"
    if existing:
        out.write_text("the previous report\n")
    monkeypatch.setitem(writers.BINARY_WRITERS, "json", _interrupting_writer)
    with pytest.raises(KeyboardInterrupt):
        writers.write(report, "json", str(out), force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["report.json"] if existing else [])
    if existing:
        assert out.read_text() == "the previous report\n"
    monkeypatch.undo()
    writers.write(report, "json", str(out), force=True)
    assert json.loads(out.read_text())["schema"] == "tcpa/1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_interrupted_parquet_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = analyze(PCAPS / "normal_close.pcap")

    def boom(report: Report, fh: Any) -> None:
        fh.write(b"PAR1")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(writers.BINARY_WRITERS, "parquet", boom)
    with pytest.raises(OSError):
        writers.write(report, "parquet", str(tmp_path / "c.parquet"), force=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["-f", "json", "-o"], ["--conn-log"], ["--html"]])
def test_devices_are_written_into_not_replaced(args: list[str]) -> None:
    # `-o /dev/null` (as root, too) must write into the device, not rename a file over the device node
    before = os.stat("/dev/null")
    done = subprocess.run([str(TCPA), "analyze", str(PCAPS / "normal_close.pcap"), "-q", *args, "/dev/null"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_output_into_a_named_pipe(tmp_path: Path) -> None:
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    done = subprocess.run([str(TCPA), "analyze", str(PCAPS / "normal_close.pcap"), "-q", "-f", "json", "-o",
                           str(fifo)], capture_output=True, text=True, timeout=300, check=False)
    reader.join(60)
    assert done.returncode == 0, done.stderr
    assert json.loads(got[0])["capture"]["frames"] == analyze(PCAPS / "normal_close.pcap").capture.frames
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.parametrize("option", ["-o", "--html"])
def test_nothing_is_overwritten_without_force(tmp_path: Path, option: str) -> None:
    out = tmp_path / "existing.out"
    out.write_text("keep me")
    args = ["analyze", str(PCAPS / "normal_close.pcap"), "-f", "json", option, str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--force" in result.stderr and str(out) in result.stderr
    assert out.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.out"]


def test_output_pipe_closed_early_ends_quietly() -> None:
    # `tcpa analyze ... | head`: the reader leaves after a few bytes; tcpa ends as a tool killed by SIGPIPE
    # would (status 141, nothing on stderr), not with an error about a broken pipe
    proc = subprocess.run(f"'{TCPA}' analyze '{PCAPS / 'showcase.pcapng'}' -f jsonl -q | head -c 10 >/dev/null; "
                          "echo ${PIPESTATUS[0]} >&2", shell=True, executable="/bin/bash", check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.stderr == "141\n"


@pytest.mark.parametrize("name", ["normal_close.pcap", "normal_close_gzip.pcap.gz", "two_interfaces.pcapng"])
def test_reading_from_a_pipe(name: str) -> None:
    capture = PCAPS / name
    proc = subprocess.run(f"cat '{capture}' | '{TCPA}' analyze - -f json -q", shell=True, check=False,
                          capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    want = analyze(capture)
    assert doc["capture"]["source"] == "-"
    assert doc["capture"]["frames"] == want.capture.frames
    assert [c["uid"] for c in doc["connections"]] == want.connections["uid"].tolist()


def test_a_capture_cut_by_someone_else_while_mapped_ends_the_reader_alone_with_one_line(tmp_path: Path) -> None:
    """The command line's reader maps the file (capture.open_capture's `mapped`): another process cutting it
    meanwhile kills that child with SIGBUS, and the command says so in one line, exit 2, writing nothing."""
    pcap = tmp_path / "c.pcap"
    shutil.copy(PCAPS / "showcase.pcapng", pcap)
    cut = ("import os, sys; from analyzer import capture, cli; real = capture.Capture._fill_mapped; "
           "capture.Capture._fill_mapped = lambda self, fd, need: (real(self, fd, need), "
           "os.truncate(sys.argv[2], 0))[0]; cli.main()")
    done = subprocess.run([sys.executable, "-c", cut, "analyze", str(pcap), "-q", "-f", "json", "-o",
                           str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "tcpa: error: the forked reader of the capture ended without a result (killed by signal 7)"], done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pcap"]


def test_a_pipe_cut_short_is_analysed_up_to_the_cut() -> None:
    data = (PCAPS / "normal_close.pcap").read_bytes()
    proc = subprocess.run([str(TCPA), "analyze", "-", "-f", "json", "-q"], input=data[:-7], check=False,
                          capture_output=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    warnings = json.loads(proc.stdout)["capture"]["warnings"]
    assert [w["kind"] for w in warnings] == ["truncated_file"] and "frame" in warnings[0]["message"]


# --- a million SYNs ---------------------------------------------------------------------------------------------

def syn_flood_pcap(path: Path, n: int = 1_000_000, rate: int = 100_000, seed: int = 7) -> Path:
    """n bare SYNs from random sources and ports to 192.0.2.1:80, checksums right, built with numpy."""
    rng = np.random.default_rng(seed)
    rec = np.zeros((n, 16 + 54), np.uint8)
    us = 1_700_000_000 * 10**6 + (np.arange(n, dtype=np.int64) * 10**6) // rate
    hdr = rec[:, :16].view("<u4")
    hdr[:, 0], hdr[:, 1], hdr[:, 2], hdr[:, 3] = us // 10**6, us % 10**6, 54, 54
    f = rec[:, 16:]
    f[:, 0:12] = np.frombuffer(bytes.fromhex("02000000000b02000000000a"), np.uint8)
    f[:, 12], f[:, 13] = 0x08, 0x00
    ip = f[:, 14:34]
    ip[:, 0], ip[:, 3], ip[:, 6], ip[:, 8], ip[:, 9] = 0x45, 40, 0x40, 64, 6
    src = rng.integers(0x0B000000, 0xDF000000, n, dtype=np.uint32)
    ip[:, 12:16] = src.astype(">u4").view(np.uint8).reshape(n, 4)
    ip[:, 16:20] = (192, 0, 2, 1)

    def fold(s: np.ndarray) -> np.ndarray:
        while (s >> 16).any():
            s = (s & 0xFFFF) + (s >> 16)
        return (~s) & 0xFFFF

    def words(a: np.ndarray) -> np.ndarray:
        w = a.astype(np.uint32)
        return ((w[:, 0::2] << 8) | w[:, 1::2]).sum(axis=1)

    ck = fold(words(ip))
    ip[:, 10], ip[:, 11] = ck >> 8, ck & 0xFF
    tcp = f[:, 34:54]
    sport = rng.integers(1024, 65536, n, dtype=np.uint32)
    tcp[:, 0], tcp[:, 1], tcp[:, 3] = sport >> 8, sport & 0xFF, 80
    tcp[:, 4:8] = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(">u4").view(np.uint8).reshape(n, 4)
    tcp[:, 12], tcp[:, 13], tcp[:, 14], tcp[:, 15] = 0x50, 0x02, 0xFA, 0xF0
    ck = fold(words(tcp) + words(ip[:, 12:20]) + 6 + 20)
    tcp[:, 16], tcp[:, 17] = ck >> 8, ck & 0xFF
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        fh.write(rec.tobytes())
    return path


@pytest.fixture(scope="session")
def million_syns(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return syn_flood_pcap(tmp_path_factory.mktemp("flood") / "million_syns.pcap")


def test_flood_generator_writes_valid_syns(tmp_path: Path) -> None:
    report = analyze(syn_flood_pcap(tmp_path / "small.pcap", n=500))
    assert report.capture.notices == []
    assert len(report.connections) == 500 and set(report.connections["conn_state"]) == {"S0"}
    assert "syn_flood" in set(report.findings["kind"])


def test_SYN_FLOOD_million_syns_under_500_MB_and_reported(million_syns: Path, tmp_path: Path) -> None:
    """1 000 000 SYNs from random sources to one port: peak RSS under 500 MB, syn_flood found, aging counted."""
    out = tmp_path / "flood.json"
    # A fresh Python process runs tcpa as its only child, so RUSAGE_CHILDREN is tcpa's peak alone.
    probe = ("import resource, subprocess, sys; "
             "p = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", probe, str(TCPA), "analyze", str(million_syns), "-f", "json",
                           "-o", str(out), "-q"], check=False, capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    peak_mb = int(proc.stdout.split()[-1]) / 1024
    print(f"\nSYN flood: 1 000 000 SYNs ({million_syns.stat().st_size / 2**20:.0f} MiB) analysed in {elapsed:.1f} s, "
          f"peak RSS {peak_mb:.0f} MB")
    doc = json.loads(out.read_text())
    kinds = {f["kind"] for f in doc["findings"]}
    assert "syn_flood" in kinds
    flood = next(f for f in doc["findings"] if f["kind"] == "syn_flood")
    assert flood["port"] == 80 and flood["host"] == "192.0.2.1"
    aged = [w for w in doc["capture"]["warnings"] if w["kind"] == "half_open_aged_out"]
    assert len(aged) == 1, doc["capture"]["warnings"]
    assert aged[0]["message"].split()[0] == str(1_000_000 - len(doc["connections"]))
    assert "192.0.2.1:80" in aged[0]["message"]
    assert peak_mb < 500


def test_half_open_aging_keeps_normal_captures_identical_and_counts_what_it_drops(tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from analyzer import tracker

    whole = analyze(PCAPS / "syn_flood.pcap", detect=False)  # 150 half-open attempts: under the bound
    assert not notices(whole, "half_open_aged_out")
    monkeypatch.setattr(tracker, "MAX_HALF_OPEN", 120)
    small = analyze(PCAPS / "syn_flood.pcap", batch_frames=16)
    assert len(small.connections) == 120
    assert set(small.transitions["uid"].dropna()) <= set(small.connections["uid"])
    assert not small.transitions["uid"].isna().any() and not small.control["uid"].isna().any()
    assert "syn_flood" in set(small.findings["kind"])


def test_conn_log_written_beside_the_main_output(tmp_path: Path) -> None:
    """conn.log is written by a forked child while the JSON is written: both complete, the same as alone."""
    pcap = str(PCAPS / "showcase.pcapng")
    both = subprocess.run([str(TCPA), "analyze", pcap, "-q", "-f", "json", "-o", str(tmp_path / "r.json"),
                           "--conn-log", str(tmp_path / "both.log")], capture_output=True, text=True, timeout=300,
                          check=False)
    alone = subprocess.run([str(TCPA), "analyze", pcap, "-q", "-f", "zeek", "-o", str(tmp_path / "alone.log")],
                           capture_output=True, text=True, timeout=300, check=False)
    assert both.returncode == alone.returncode == 0, both.stderr + alone.stderr
    assert both.stderr == ""
    assert json.loads((tmp_path / "r.json").read_bytes())["connections"]
    assert (tmp_path / "both.log").read_text() == (tmp_path / "alone.log").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.log", "both.log", "r.json"]  # no .part left


def test_the_command_imports_pandas_without_pyarrow_unless_writing_parquet(tmp_path: Path) -> None:
    """`tcpa analyze` (a process that ends with the command) keeps pyarrow out of pandas, except for Parquet."""
    probe = ("import os, sys; from analyzer import cli; end, me = os._exit, os.getpid(); "  # the forked children too
             "os._exit = lambda code: (os.getpid() == me and print('pyarrow' in sys.modules, code), end(code)); "
             "sys.argv = ['tcpa', *sys.argv[1:]]; cli.main()")
    pcap = str(PCAPS / "showcase.pcapng")
    for fmt, arrow in (("json", "False"), ("parquet", "True")):
        done = subprocess.run([sys.executable, "-c", probe, "analyze", pcap, "-q", "-f", fmt, "-o",
                               str(tmp_path / f"r.{fmt}")], capture_output=True, text=True, timeout=300,
                              check=False, cwd=ROOT)
        assert done.stdout.split() == [arrow, "0"], done.stderr


@pytest.mark.parametrize("pcap", SCENARIOS, ids=lambda p: p.name)
def test_outputs_without_pyarrow_are_those_of_the_library_with_it(tmp_path: Path, pcap: Path) -> None:
    """pandas without pyarrow (the command: text columns as Python strings) and with it (this process: Arrow
    strings) give the same JSON, CSV, conn.log and HTML, byte for byte, on every scenario capture."""
    from analyzer.html import write_html

    assert pd.options.mode.string_storage in ("auto", "pyarrow") and "pyarrow" in sys.modules
    mine = analyze(pcap, keep_segments=True)
    for fmt in ("json", "csv"):
        done = subprocess.run([str(TCPA), "analyze", str(pcap), "-q", "-f", fmt, "-o", str(tmp_path / f"cli.{fmt}"),
                               "--conn-log", str(tmp_path / "cli.log"), "--html", str(tmp_path / "cli.html"),
                               "--force"], capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        writers.write(mine, fmt, str(tmp_path / f"lib.{fmt}"), force=True)
        assert (tmp_path / f"cli.{fmt}").read_bytes() == (tmp_path / f"lib.{fmt}").read_bytes()
    writers.write(mine, "zeek", str(tmp_path / "lib.log"), force=True)
    write_html(mine, str(tmp_path / "lib.html"), True)
    assert (tmp_path / "cli.log").read_bytes() == (tmp_path / "lib.log").read_bytes()
    assert (tmp_path / "cli.html").read_bytes() == (tmp_path / "lib.html").read_bytes()


@pytest.mark.parametrize("splice_bytes", [None, 4096, 64])  # the spool read in pieces of many rows, or less than one
def test_json_rows_spooled_before_the_detectors_are_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   splice_bytes: int | None) -> None:
    """analyze starts the JSON connection rows in a forked child before the detectors run, and completes each
    row with the findings summary afterwards: the same files as written in one process."""
    pcap = str(PCAPS / "showcase.pcapng")

    def run(name: str) -> tuple[bytes, bytes]:
        args = ["analyze", pcap, "-q", "-f", "json", "-o", str(tmp_path / f"{name}.json"),
                "--conn-log", str(tmp_path / f"{name}.log")]
        done = runner.invoke(app, args)
        assert done.exit_code == 0, done.output
        return (tmp_path / f"{name}.json").read_bytes(), (tmp_path / f"{name}.log").read_bytes()

    alone = run("alone")  # a capture this small is written in one process
    spooled: list[writers.Spool | None] = []
    real = writers.spool_rows

    def spool_rows(frame: Any, spawn: Any, output: str, then: Any = None, states: Any = None) -> writers.Spool | None:
        spooled.append(real(frame, spawn, output, then, states))
        return spooled[-1]

    monkeypatch.setattr(writers, "spool_rows", spool_rows)
    monkeypatch.setattr(writers, "SPOOL_MIN_ROWS", 2)
    monkeypatch.setattr(writers, "CHUNK_ROWS", 3)
    if splice_bytes is not None:
        monkeypatch.setattr(writers, "SPLICE_BYTES", splice_bytes)
    assert run("spooled") == alone
    assert spooled and spooled[0] is not None and spooled[0].closed  # the child did write the rows...
    assert spooled[0].states is not None  # ...and the state counts...
    assert spooled[0].then and spooled[0].status == 0  # ...and then conn.log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.json", "alone.log", "spooled.json", "spooled.log"]


def test_a_spool_for_another_table_is_dropped_and_a_failed_one_fails_the_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    report = analyze(PCAPS / "showcase.pcapng")
    monkeypatch.setattr(writers, "SPOOL_MIN_ROWS", 2)
    alone = io.BytesIO()
    writers.to_json(report, alone)
    other = writers.spool_rows(report.connections[["uid", "conn"]], forks.spawn, str(tmp_path / "r.json"))
    # (its columns are not a prefix of the table's)
    assert other is not None
    spooled = io.BytesIO()
    writers.to_json(report, spooled, spool=other)
    assert spooled.getvalue() == alone.getvalue() and other.closed
    conns = report.connections
    n = len(conns)
    for rows, gave in ((conns.iloc[:-1], f"{n - 1}"), (pd.concat([conns, conns.iloc[:1]]), f"more than {n}")):
        wrong = writers.spool_rows(rows, forks.spawn, str(tmp_path / "r.json"))
        with pytest.raises(OSError, match=f"the forked JSON writer gave {gave} connection rows for {n}$"):
            writers.write(report, "json", str(tmp_path / "r.json"), False, spool=wrong)
        assert wrong is not None and wrong.closed

    def no_space(work: Any) -> int | None:
        return forks.spawn(lambda: (_ for _ in ()).throw(OSError(28, "No space left on device")))

    failed = writers.spool_rows(report.connections, no_space, "-")
    with pytest.raises(forks.ChildFailed):
        writers.write(report, "json", str(tmp_path / "r.json"), False, spool=failed)
    assert list(tmp_path.iterdir()) == []
    assert capfd.readouterr().err == "tcpa: error: [Errno 28] No space left on device\n"
    # a child that fails between the connection rows and the state counts fails the write too
    broken = writers.spool_rows(report.connections, forks.spawn, "-", None, lambda: pd.DataFrame({"x": [1 // 0]}))
    with pytest.raises(forks.ChildFailed):
        writers.write(report, "json", str(tmp_path / "r.json"), False, spool=broken)
    assert broken is not None and broken.rows_done and broken.closed and list(tmp_path.iterdir()) == []
    assert capfd.readouterr().err == "tcpa: error: integer division or modulo by zero\n"


def test_conn_log_failure_beside_the_main_output_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "conn.log"
    done = subprocess.run([str(TCPA), "analyze", str(PCAPS / "normal_close.pcap"), "-q", "-f", "json", "-o",
                           str(tmp_path / "r.json"), "--conn-log", str(missing)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcpa: error: ") and "does not exist" in lines[0], lines
    assert json.loads((tmp_path / "r.json").read_bytes())["capture"]["frames"] > 0  # the JSON still written


def test_conn_log_failure_after_the_spooled_rows_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """The child that writes the JSON rows goes on to conn.log: its failure there still fails the command."""
    missing = tmp_path / "no-such-dir" / "conn.log"
    spooling = "from analyzer import cli, writers; writers.SPOOL_MIN_ROWS = 2; cli.main()"  # a small capture spooled
    done = subprocess.run([sys.executable, "-c", spooling, "analyze", str(PCAPS / "showcase.pcapng"), "-q", "-f",
                           "json", "-o", str(tmp_path / "r.json"), "--conn-log", str(missing)], capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcpa: error: ") and "does not exist" in lines[0], lines
    assert json.loads((tmp_path / "r.json").read_bytes())["connections"]  # the JSON still written


def test_json_rows_built_by_column_are_what_orjson_gives_each_record() -> None:
    # json_block assembles rows from whole-column encodings (numbers cut out of one orjson array, text out of
    # one array of distinct values split at '","'); hostile text and odd values must come out exactly as
    # dumps() of each row's record would
    import pandas as pd

    text = ['","', '\\', '"', 'a","b', "\\\",\"", "\x00\n\u2028", "é中", "", "%s%b", "-"]
    n = len(text)
    frame = pd.DataFrame({
        "i": np.arange(n, dtype=np.int64) - 3, 'q"%b': np.linspace(-1e300, 1e-300, n), "nan": [np.nan, 1.5] * 5,
        "b": np.arange(n) % 2 == 0, "s": pd.Series(text, dtype="str"), "na": pd.Series([None, "x"] * 5, dtype="str"),
        "I": pd.array([None, 7] * 5, dtype="Int64"), "lists": [[1, 2], []] * 5, "obj": [None, {"k": "v"}] * 5,
        "cat": pd.Categorical(["a", "b"] * 5), "u8": np.arange(n, dtype=np.uint8),
        "nested": [["a,]", '\\"{,', []], {"k,": "[,}"}] * 5, "Int": pd.array([None, 7] * 5, dtype="Int64"),
    })
    for rows in (frame, frame.iloc[3:4], frame.iloc[:0], frame[[]]):
        want = b"".join(writers.dumps(r)[:-1] + b"|" for r in writers.records(rows))
        assert writers.json_block(rows, b"|", b"|") == want
        if len(rows):
            assert json.loads(b"[" + writers.json_block(rows, b"},", b"}") + b"]") == json.loads(
                writers.dumps(writers.records(rows)))


@pytest.mark.parametrize(("text", "values"), [(b"1,2", 3), (b"1,2,3", 1), (b"[1,2],3", 3), (b"", 2)])
def test_json_values_cut_into_another_count_fail(text: bytes, values: int) -> None:
    # a column's JSON array must cut into exactly one piece per row, or the rows would be laid out wrong
    with pytest.raises(ValueError, match="cut into"):
        writers.Pieces().listed(text, values)


def test_conn_log_rows_escape_hostile_text() -> None:
    import pandas as pd

    conns = pd.DataFrame({c: [1, 2] for c in writers.ZEEK_COLUMNS})
    conns["ts"], conns["zeek_duration"] = [1.5, 2.25], [0.0, 0.125]
    for c in ("uid", "orig_h", "resp_h", "conn_state"):
        conns[c] = ["C1", "C2"]
    conns["history"], conns["tunnel"] = ["", "a\tb,\\"], ["-", ""]
    lines = writers._zeek_lines(conns).splitlines()
    assert lines[0].split("\t")[8:11] == ["-", "-", "-"] and lines[1].split("\t")[8:11] == ["0.125000", "2", "2"]
    assert lines[0].split("\t")[15] == "-" and lines[1].split("\t")[15] == "a\\x09b\\x2c\\x5c"
    assert lines[0].split("\t")[-1] == "\\x2d" and lines[1].split("\t")[-1] == "(empty)"


def test_a_block_of_rows_beyond_32_bit_pieces_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = pd.DataFrame({"a": ["x" * 60, "y" * 60]})
    assert bytes(writers.json_block(frame, b"\n", b"\n")).count(b"\n") == 2
    monkeypatch.setattr(writers, "PIECE_LIMIT", 100)  # (2 GiB in earnest: a block is a few MB)
    with pytest.raises(ValueError, match="over 2 GiB of text"):
        writers.json_block(frame, b"\n", b"\n")
