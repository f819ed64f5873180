"""The HTML report: escaping in Python, then the real page in headless Chromium (Playwright).

The browser tests check the page works offline (no console errors, no request but the file itself), that a
connection's ladder shows its handshake, close and both endpoints' states, that filters change what the
timeline shows, that hostile capture text stays text, and how long a 20 000-connection report takes to open.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import analyzer
from analyzer.html import render_html, write_html
from analyzer.report import FINDING_COLUMNS
from analyzer.writers import OutputExists

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
CHROMIUM = "/usr/bin/chromium"
SCRIPT_TAG = "<script>window.__pwned=1</script>"
ATTR_BREAK = '"><img src=x onerror=window.__pwned=2>'
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


# --- capture builders (raw IPv4, checksums filled in) --------------------------------------------------------
def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip_tcp(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"",
           win: int = 65535, mss: int | None = None) -> bytes:
    """One IPv4 packet carrying one TCP segment."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    opts = struct.pack("!BBH", 2, 4, mss) if mss else b""
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (20 + len(opts)) << 2,
                      flags, win, 0, 0) + opts + payload
    seg = seg[:16] + struct.pack("!H", _csum(s + d + struct.pack("!BBH", 0, 6, len(seg)) + seg)) + seg[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 0, 0, 64, 6, 0, s, d)
    return ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:] + seg


def write_pcap(path: Path, packets: list[tuple[int, bytes]]) -> None:
    """A microsecond pcap of raw IP (linktype 101)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 101)]
    for ts, pkt in sorted(packets, key=lambda p: p[0]):
        out.append(struct.pack("<IIII", ts // 10**9, (ts % 10**9) // 1000, len(pkt), len(pkt)) + pkt)
    path.write_bytes(b"".join(out))


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def write_pcapng(path: Path, packets: list[tuple[int, bytes]], comment: str, if_name: str, if_descr: str) -> None:
    """A pcapng with a section comment and one raw-IP interface named by the caller (microseconds)."""
    out = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _opt(1, comment.encode()) + _opt(0, b""))
    out += _block(1, struct.pack("<HHI", 101, 0, 262144) + _opt(2, if_name.encode()) + _opt(3, if_descr.encode())
                  + _opt(0, b""))
    for ts, pkt in packets:
        units = ts // 1000
        out += _block(6, struct.pack("<IIIII", 0, units >> 32, units & 0xFFFFFFFF, len(pkt), len(pkt)) + pkt)
    path.write_bytes(out)


T0 = 1_700_000_000 * 10**9
MS = 10**6


def many_connections(n: int) -> list[tuple[int, bytes]]:
    """n short connections (2 to 6 segments: normal closes, resets, refusals) plus one long bulk transfer."""
    pkts: list[tuple[int, bytes]] = []
    servers = [("10.2.0.1", 80), ("10.2.0.2", 443), ("10.2.0.3", 8080)]
    for i in range(n):
        c, (s, sp) = f"10.1.{(i >> 8) & 255}.{i & 255}", servers[i % 3]
        cp, t, ci, si = 20000 + i % 40000, T0 + i * 3 * MS, 1000 + i, 900000 + i
        pkts.append((t, ip_tcp(c, s, cp, sp, ci, 0, SYN, mss=1460)))
        if i % 10 == 9:  # refused
            pkts.append((t + MS, ip_tcp(s, c, sp, cp, 0, ci + 1, RST | ACK)))
            continue
        pkts.append((t + MS, ip_tcp(s, c, sp, cp, si, ci + 1, SYN | ACK, mss=1460)))
        if i % 10 >= 7:  # reset by the client after the handshake
            pkts.append((t + 2 * MS, ip_tcp(c, s, cp, sp, ci + 1, si + 1, ACK)))
            pkts.append((t + 5 * MS, ip_tcp(c, s, cp, sp, ci + 1, si + 1, RST | ACK)))
            continue
        pkts.append((t + 2 * MS, ip_tcp(c, s, cp, sp, ci + 1, si + 1, PSH | ACK, b"q" * 50)))
        pkts.append((t + 10 * MS, ip_tcp(c, s, cp, sp, ci + 51, si + 1, FIN | ACK)))
        pkts.append((t + 11 * MS, ip_tcp(s, c, sp, cp, si + 1, ci + 52, FIN | ACK)))
        pkts.append((t + 12 * MS, ip_tcp(c, s, cp, sp, ci + 52, si + 2, ACK)))
    return pkts + bulk_transfer()


BULK_PORT = 65001


def bulk_transfer(segments: int = 1200, lost: int = 600) -> list[tuple[int, bytes]]:
    """One long connection: `segments` data segments, each acknowledged, and one retransmission."""
    c, s, cp, sp, ci, si = "10.9.0.1", "10.9.0.2", BULK_PORT, 9000, 7000, 3000
    t = T0 + 5 * MS
    pkts = [(t, ip_tcp(c, s, cp, sp, ci, 0, SYN, mss=1000)), (t + MS, ip_tcp(s, c, sp, cp, si, ci + 1, SYN | ACK, mss=1000)),
            (t + 2 * MS, ip_tcp(c, s, cp, sp, ci + 1, si + 1, ACK))]
    seq, t = ci + 1, t + 3 * MS
    for k in range(segments):
        pkts.append((t, ip_tcp(c, s, cp, sp, seq, si + 1, ACK, b"d" * 1000)))
        if k == lost:  # the receiver never saw it: the sender resends it 200 ms later
            pkts.append((t + 200 * MS, ip_tcp(c, s, cp, sp, seq, si + 1, ACK, b"d" * 1000)))
            t += 201 * MS
        seq += 1000
        pkts.append((t + MS // 2, ip_tcp(s, c, sp, cp, si + 1, seq, ACK)))
        t += MS
    pkts += [(t, ip_tcp(c, s, cp, sp, seq, si + 1, FIN | ACK)), (t + MS, ip_tcp(s, c, sp, cp, si + 1, seq + 1, FIN | ACK)),
             (t + 2 * MS, ip_tcp(c, s, cp, sp, seq + 1, si + 2, ACK))]
    return pkts


# --- pure Python ---------------------------------------------------------------------------------------------
def hostile_report() -> analyzer.Report:
    """normal_close's report with capture text and a finding full of markup."""
    r = analyzer.analyze(str(PCAPS / "normal_close.pcap"), keep_segments=True)
    r.capture.comments = [SCRIPT_TAG, ATTR_BREAK]
    r.capture.interfaces[0].name = ATTR_BREAK
    row: dict[str, Any] = dict.fromkeys(FINDING_COLUMNS, "")
    row.update(kind="x</script><script>alert(1)</script>", severity="warning", uid="C000000", frames=[1, 3],
               summary=SCRIPT_TAG, explanation=ATTR_BREAK, causes=[SCRIPT_TAG], remedy="&amp; <b>")
    r.findings = pd.DataFrame([row], columns=FINDING_COLUMNS)
    return r


def test_render_html_escapes_capture_text() -> None:
    page = render_html(hostile_report())
    assert page.count("<script") == 2 and page.count("</script>") == 2  # the JSON block and the page's script
    assert "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page  # the overview's escaped text
    block = re.search(r'<script type="application/json" id="tcpa-data">(.*?)</script>', page, re.DOTALL)
    assert block is not None
    assert not re.search(r"[<>&]", block.group(1))
    data = json.loads(block.group(1))
    found = data["findings"]
    row = dict(zip(found["fields"], found["rows"][0]))
    text = {k: data["strings"][row[k]] for k in found["interned"]}
    assert text["summary"] == SCRIPT_TAG and text["explanation"] == ATTR_BREAK
    assert text["kind"] == "x</script><script>alert(1)</script>"
    assert row["conns"] == [0] and row["frames"] == [1, 3]


def test_write_html_refuses_to_clobber(tmp_path: Path) -> None:
    r = analyzer.analyze(str(PCAPS / "normal_close.pcap"), keep_segments=True)
    out = tmp_path / "r.html"
    write_html(r, str(out))
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    with pytest.raises(OutputExists):
        write_html(r, str(out))
    write_html(r, str(out), force=True)


# --- in the browser ------------------------------------------------------------------------------------------
class Page:
    """An opened report page and what it logged: console errors, page errors and network requests."""

    def __init__(self, page: Any, url: str, seconds: float) -> None:
        self.page, self.url, self.seconds = page, url, seconds
        self.errors: list[str] = []
        self.requests: list[str] = []

    def clean(self) -> None:
        assert self.errors == []
        assert self.requests == [self.url]

    def shown(self) -> int:
        return int(self.page.get_attribute("#shown-count", "data-shown"))

    def click_connection(self, uid: str) -> None:
        """Click the connection's bar row on the timeline canvas, then wait for its detail."""
        pt = self.page.evaluate("uid => window.__tcpa.rowCenter(uid)", uid)
        assert pt is not None, f"{uid} is not shown"
        self.page.mouse.click(pt["x"], pt["y"])
        self.page.wait_for_selector("#detail:not([hidden])")
        assert uid in self.page.inner_text("#d-title")

    def ladder(self) -> list[tuple[str, str]]:
        """(flags, class) of every segment drawn on the ladder, top to bottom."""
        return [tuple(x) for x in self.page.eval_on_selector_all(
            "#ladder g.seg", "els => els.map(e => [e.dataset.flags, e.getAttribute('class')])")]

    def states(self, side: str) -> list[str]:
        return list(self.page.eval_on_selector_all(f"#ladder text.state.{side}", "els => els.map(e => e.textContent)"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: make test installs Debian's chromium"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def open_report(browser: Any, report: analyzer.Report, path: Path) -> Iterator[Page]:
    write_html(report, str(path), force=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    url = path.as_uri()
    start = time.perf_counter()
    opened = Page(page, url, 0.0)
    page.on("console", lambda m: opened.errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: opened.errors.append(str(e)))
    page.on("request", lambda r: opened.requests.append(r.url))
    page.goto(url)
    page.wait_for_function("() => window.__tcpaReady === true")
    opened.seconds = time.perf_counter() - start
    try:
        yield opened
    finally:
        page.close()


@pytest.fixture
def normal_close(browser: Any, tmp_path: Path) -> Iterator[Page]:
    r = analyzer.analyze(str(PCAPS / "normal_close.pcap"), keep_segments=True)
    yield from open_report(browser, r, tmp_path / "normal_close.html")


@pytest.fixture
def rst_each_state(browser: Any, tmp_path: Path) -> Iterator[Page]:
    r = analyzer.analyze(str(PCAPS / "rst_each_state.pcap"), keep_segments=True)
    yield from open_report(browser, r, tmp_path / "rst_each_state.html")


def test_normal_close_ladder(normal_close: Page) -> None:
    p = normal_close
    assert p.shown() == 1
    p.click_connection("C000000")
    ladder = p.ladder()
    assert [f for f, _ in ladder[:3]] == ["S", "S.", "."]
    assert all("hs" in cls for _, cls in ladder[:3])
    assert [f for f, cls in ladder if "cl" in cls.split()] == ["F.", ".", "F.", "."]
    assert p.states("orig") == ["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"]
    assert p.states("resp") == ["CLOSED", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert "mss=1460" in p.page.inner_text("#ladder")
    assert p.page.locator("#tsg svg path.ack").count() == 1
    p.clean()


def test_rst_each_state_filters_and_ladder(rst_each_state: Page) -> None:
    p = rst_each_state
    assert p.shown() == 6
    p.page.fill("#f-text", "41003")
    p.page.wait_for_function("() => document.querySelector('#shown-count').dataset.shown === '1'")
    p.click_connection("C000002")  # reset by the server once established
    ladder = p.ladder()
    assert [f for f, _ in ladder[:3]] == ["S", "S.", "."]
    assert "R" in ladder[-1][0] and "rst" in ladder[-1][1]
    assert p.states("resp")[-1] == "CLOSED" and "ESTABLISHED" in p.states("orig")
    p.page.fill("#f-text", "80")
    p.page.wait_for_function("() => document.querySelector('#shown-count').dataset.shown === '6'")
    p.page.select_option("#f-outcome", "close:reset")
    assert p.shown() == 5
    p.page.select_option("#f-outcome", "state:REJ")
    assert p.shown() == 1
    p.page.fill("#f-text", "10.0.0.99")
    p.page.wait_for_function("() => document.querySelector('#shown-count').dataset.shown === '0'")
    p.clean()


def test_hostile_capture_text_stays_text(browser: Any, tmp_path: Path) -> None:
    c, s = "10.0.0.1", "10.0.0.2"
    pkts = [(T0, ip_tcp(c, s, 40000, 80, 100, 0, SYN, mss=1460)),
            (T0 + MS, ip_tcp(s, c, 80, 40000, 500, 101, SYN | ACK, mss=1460)),
            (T0 + 2 * MS, ip_tcp(c, s, 40000, 80, 101, 501, ACK))]
    cap = tmp_path / "hostile.pcapng"
    write_pcapng(cap, pkts, comment=SCRIPT_TAG + " " + ATTR_BREAK, if_name=ATTR_BREAK, if_descr=SCRIPT_TAG)
    r = analyzer.analyze(str(cap), keep_segments=True)
    assert r.capture.comments and len(r.connections) == 1
    for p in open_report(browser, r, tmp_path / "hostile.html"):
        assert p.page.evaluate("typeof window.__pwned") == "undefined"
        assert p.page.evaluate("document.querySelectorAll('img').length") == 0
        assert SCRIPT_TAG + " " + ATTR_BREAK in p.page.inner_text("#cap-comments")
        interfaces = p.page.inner_text("#cap-interfaces")
        assert ATTR_BREAK in interfaces and SCRIPT_TAG in interfaces
        p.click_connection(r.connections["uid"].iloc[0])
        assert p.page.evaluate("typeof window.__pwned") == "undefined"
        p.clean()


@pytest.fixture(scope="session")
def big_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "conns20k.pcap"
    write_pcap(path, many_connections(20_000))
    return path


def test_20k_connections_open_and_stay_interactive(browser: Any, big_capture: Path, tmp_path: Path) -> None:
    r = analyzer.analyze(str(big_capture), keep_segments=True)
    assert len(r.connections) == 20_001
    out = tmp_path / "big.html"
    for p in open_report(browser, r, out):
        size = out.stat().st_size
        print(f"\n20k-connection report: {size / 1e6:.1f} MB, navigation to interactive {p.seconds * 1000:.0f} ms")
        assert p.shown() == 20_001
        assert p.page.evaluate("document.querySelectorAll('#timeline-section *').length") < 100  # one canvas
        p.page.fill("#f-text", "443")
        p.page.wait_for_function("() => document.querySelector('#shown-count').dataset.shown !== '20001'")
        assert p.shown() == sum(1 for i in range(20_000) if i % 3 == 1)
        # The long transfer: its segments are capped, runs of plain data folded, the retransmission kept.
        p.page.fill("#f-text", str(BULK_PORT))
        p.page.wait_for_function("() => document.querySelector('#shown-count').dataset.shown === '1'")
        uid = r.connections.loc[r.connections["orig_p"] == BULK_PORT, "uid"].iloc[0]
        p.click_connection(uid)
        assert p.page.is_visible("#d-omitted")
        bands = p.page.eval_on_selector_all("#ladder g.band text", "els => els.map(e => e.textContent)")
        assert any("not embedded" in b for b in bands) and any("click to expand" in b for b in bands)
        assert any("ev" in cls.split() for _, cls in p.ladder())
        assert p.page.locator("#tsg g.data.retx").count() >= 1
        shown_before = len(p.ladder())
        p.page.locator("#ladder g.band:not(.gap)").first.click()
        assert len(p.ladder()) > shown_before
        p.clean()
