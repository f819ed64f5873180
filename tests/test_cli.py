"""The command line through typer's CliRunner: outputs, formats, --force and one-line errors."""

from __future__ import annotations

import csv
import gc
import gzip
import io
import json
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from analyzer.cli import app

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "zeek" / "Traces"
GET = CORPUS / "http" / "get.pcap"  # one HTTP GET: a clean SF connection
README = Path(__file__).resolve().parents[1] / "README.md"

runner = CliRunner()


def tcpa(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_table_output_names_the_connection_and_the_state_counts() -> None:
    code, out, _ = tcpa("analyze", str(GET))
    assert code == 0
    assert "141.142.228.5:59856" in out and "SF" in out and "ShADadFf" in out
    assert "TIME_WAIT" in out  # the client closed first: its socket lingers


def test_json_output_has_the_documented_schema(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code, _, _ = tcpa("analyze", str(GET), "-f", "json", "-o", str(out))
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == "tcpa/1"
    assert set(doc) == {"schema", "capture", "connections", "findings", "states_at_end"}
    (conn,) = doc["connections"]
    assert conn["conn_state"] == "SF" and conn["close"] == "three_packet"
    assert conn["orig_state"] == "TIME_WAIT" and conn["resp_state"] == "CLOSED"
    assert doc["capture"]["frames"] == 14 and doc["capture"]["warnings"] == []


def test_jsonl_and_csv_carry_every_connection(tmp_path: Path) -> None:
    code, out, _ = tcpa("analyze", str(GET), "-f", "jsonl")
    assert code == 0 and json.loads(out.splitlines()[0])["history"] == "ShADadFf"
    code, out, _ = tcpa("analyze", str(GET), "-f", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1 and rows[0]["orig_p"] == "59856"


def test_parquet_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    assert tcpa("analyze", str(GET), "-f", "parquet", "-o", str(out))[0] == 0
    table = pq.read_table(out)
    assert table.num_rows == 1 and b"tcpa.findings" in table.schema.metadata


def test_zeek_conn_log_has_zeek_headers_and_fields(tmp_path: Path) -> None:
    out = tmp_path / "conn.log"
    assert tcpa("analyze", str(GET), "-f", "zeek", "-o", str(out))[0] == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "#separator \\x09"
    fields = next(line for line in lines if line.startswith("#fields")).split("\t")[1:]
    assert fields[:6] == ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p"]
    row = dict(zip(fields, next(line for line in lines if not line.startswith("#")).split("\t")))
    assert row["conn_state"] == "SF" and row["history"] == "ShADadFf" and row["orig_pkts"] == "7"


def test_existing_output_is_not_overwritten_without_force(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    out.write_text("keep me")
    code, _, err = tcpa("analyze", str(GET), "-f", "json", "-o", str(out))
    assert code == 2 and "--force" in err and out.read_text() == "keep me"
    assert tcpa("analyze", str(GET), "-f", "json", "-o", str(out), "--force")[0] == 0
    assert json.loads(out.read_text())["schema"] == "tcpa/1"
    assert not list(tmp_path.glob(".*part"))  # the temporary file was renamed, not left behind


def _bad_inputs(tmp: Path) -> dict[str, Path]:
    (tmp / "empty.pcap").write_bytes(b"")
    (tmp / "text.pcap").write_text("hello, this is not a capture\n")
    (tmp / "dir").mkdir()
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 147)  # link type 147: user-defined
    (tmp / "user147.pcap").write_bytes(header + struct.pack("<IIII", 0, 0, 4, 4) + b"abcd")
    return {"missing": tmp / "nope.pcap", "empty": tmp / "empty.pcap", "text": tmp / "text.pcap",
            "dir": tmp / "dir", "linktype": tmp / "user147.pcap"}


@pytest.mark.parametrize("case", ["missing", "empty", "text", "dir", "linktype"])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    path = _bad_inputs(tmp_path)[case]
    code, out, err = tcpa("analyze", str(path))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcpa: error: ") and str(path) in lines[0]
    assert "Traceback" not in err + out


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    code, _, err = tcpa("analyze", str(tmp_path / "nope.pcap"), "--debug")
    assert code == 2 and "Traceback" in err


def test_truncated_capture_is_analysed_with_a_warning(tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcap"
    data = GET.read_bytes()
    cut.write_bytes(data[: len(data) - 30])
    code, out, _ = tcpa("analyze", str(cut), "-f", "json")
    doc = json.loads(out)
    assert code == 0
    assert [w["kind"] for w in doc["capture"]["warnings"]] == ["truncated_file"]
    assert doc["capture"]["frames"] == 13


def test_gzip_and_at_instant(tmp_path: Path) -> None:
    gz = tmp_path / "get.pcap.gz"
    gz.write_bytes(gzip.compress(GET.read_bytes()))
    code, out, _ = tcpa("analyze", str(gz), "--at", "+0.1")
    assert code == 0 and "ESTABLISHED" in out


def test_every_command_and_option_has_help_and_is_in_the_readme() -> None:
    readme = README.read_text()
    code, out, _ = tcpa("--help")
    assert code == 0
    commands = re.findall(r"^│ (\w+)\s", out, flags=re.MULTILINE) or ["analyze"]
    for command in commands:
        code, text, _ = tcpa(command, "--help")
        assert code == 0
        assert f"tcpa {command}" in readme
        for option in set(re.findall(r"(--[a-z][a-z-]+)", text)) - {"--help", "--no-checksums"}:
            assert option in readme, f"{command} {option} is not documented in README.md"


def test_multiple_captures_are_read_as_one(tmp_path: Path) -> None:
    other = tmp_path / "copy.pcap"
    shutil.copy(GET, other)
    code, out, _ = tcpa("analyze", str(GET), str(CORPUS / "ssh" / "ssh.pcap"), "-f", "json")
    assert code == 0 and len(json.loads(out)["connections"]) > 1


def test_fail_on_sets_the_exit_code(tmp_path: Path) -> None:
    pcaps = Path(__file__).resolve().parents[1] / "pcaps"
    code, _, _ = tcpa("analyze", str(pcaps / "lab_refused.pcap"), "--fail-on", "warning", "-q")
    assert code == 1
    code, _, _ = tcpa("analyze", str(pcaps / "normal_close.pcap"), "--fail-on", "warning", "-q")
    assert code == 0
    code, _, err = tcpa("analyze", str(pcaps / "normal_close.pcap"), "--fail-on", "fatal")
    assert code == 2 and "fatal" in err


def test_detectors_option_selects_kinds_and_rejects_unknown_ones(tmp_path: Path) -> None:
    import json
    pcaps = Path(__file__).resolve().parents[1] / "pcaps"
    out = tmp_path / "r.json"
    code, _, _ = tcpa("analyze", str(pcaps / "lab_accept_queue_overflow.pcap"), "--detectors", "syn_retransmit",
                      "-f", "json", "-o", str(out))
    assert code == 0
    kinds = {f["kind"] for f in json.loads(out.read_text())["findings"]}
    assert kinds == {"syn_retransmit"}
    code, _, err = tcpa("analyze", str(pcaps / "normal_close.pcap"), "--detectors", "nonsense")
    assert code == 2 and "nonsense" in err
    code, out_text, _ = tcpa("analyze", "--list-detectors")
    assert code == 0 and "rst_after_half_close" in out_text and "tcp.analysis.retransmission" in out_text


def test_report_command_writes_html_and_refuses_to_overwrite(tmp_path: Path) -> None:
    pcaps = Path(__file__).resolve().parents[1] / "pcaps"
    out = tmp_path / "r.html"
    code, _, _ = tcpa("report", str(pcaps / "normal_close.pcap"), "-o", str(out), "-q")
    assert code == 0 and out.read_text().startswith("<!DOCTYPE html>")
    before = out.read_bytes()
    code, _, err = tcpa("report", str(pcaps / "normal_close.pcap"), "-o", str(out), "-q")
    assert code == 2 and "exists" in err and out.read_bytes() == before


def test_the_garbage_collector_is_off_during_a_one_shot_command_and_on_after(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from analyzer import writers

    during: list[bool] = []
    real = writers.write

    def write(*args: Any, **kw: Any) -> None:
        during.append(gc.isenabled())
        real(*args, **kw)

    monkeypatch.setattr(writers, "write", write)
    assert gc.isenabled()
    code, _, _ = tcpa("analyze", str(GET), "-f", "json", "-o", str(tmp_path / "r.json"))
    assert code == 0 and during == [False] and gc.isenabled()
    code, _, _ = tcpa("analyze", str(tmp_path / "missing.pcap"), "-f", "json")  # an error on the way out too
    assert code == 2 and gc.isenabled()
