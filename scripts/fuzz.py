"""A mutation fuzzer over the capture readers, the decoder and the whole pipeline.

    python scripts/fuzz.py --seconds 600            # what `make fuzz` runs (FUZZ_SECONDS=600)
    python scripts/fuzz.py --executions 200 --seed 1
    python scripts/fuzz.py --replay tests/regressions

Seeds are every capture in pcaps/ and ../shared/corpus/zeek/Traces (recursively; gzip files are decompressed
first). Each input is a seed mutated a few times over: bit flips, interesting bytes, byte inserts and deletes,
a cut at any offset, corrupt record and block lengths (caplen, original length, pcapng total and trailing
lengths, snap length, link type), damaged packet headers (IPv4 IHL, TCP data offset, TCP option lengths, IPv6
next-header chains), timestamps moved backwards or far ahead, and records of another capture spliced in. The
input is written to a temporary file; every fourth (--full-every) is analysed in-process by analyzer.analyze
and rendered as JSON, CSV, a Zeek conn.log and the terminal summary, the others go through the capture reader
and the decoder only (in small batches), which is much faster. Any exception other than CaptureError is a crash, and so is a run
past --timeout seconds (a hang) or past --max-rss MB. A crash's input is saved as
tests/regressions/crash-<sha1>.pcap (hang-..., oom-...) and printed; tests/test_fuzz.py replays them all.

The compiled stages release the GIL, so a watchdog thread can catch a hang inside them: it saves the input and
ends the process with exit code 3.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import os
import random
import resource
import struct
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analyzer import analyze
from analyzer.model import CaptureError

PCAPS = ROOT / "pcaps"
CORPUS = ROOT.parent / "shared" / "corpus" / "zeek" / "Traces"
REGRESSIONS = ROOT / "tests" / "regressions"
SEED_LIMIT = 256 << 10  # longer seeds are cut here: mutations near the start matter, the rest is just time

PCAP_MAGICS = {0xA1B2C3D4: 16, 0xA1B23C4D: 16, 0xA1B2CD34: 24}
PCAPNG_SHB = 0x0A0D0D0A
INTERESTING32 = [0, 1, 2, 3, 4, 8, 11, 12, 13, 16, 20, 28, 31, 32, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000,
                 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 256 << 20, (256 << 20) + 1, 64 << 20]
INTERESTING8 = [0, 1, 2, 3, 4, 5, 0x0F, 0x10, 0x40, 0x45, 0x46, 0x4F, 0x50, 0x60, 0x7F, 0x80, 0xF0, 0xFF]
LINKTYPES = [0, 1, 9, 10, 12, 14, 50, 101, 108, 113, 228, 229, 276, 147, 0xFFFF]


# --- seeds and their structure ----------------------------------------------------------------------------------

def seed_files() -> list[Path]:
    """Every capture the fuzzer starts from, in a stable order."""
    out = []
    for base in (PCAPS, CORPUS):
        if base.is_dir():
            out += sorted(p for p in base.rglob("*") if p.is_file() and p.suffix in (".pcap", ".pcapng", ".gz"))
    return out


def load_seeds(paths: list[Path]) -> list[bytes]:
    seeds = []
    for p in paths:
        data = p.read_bytes()
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError):
                pass
        seeds.append(data[:SEED_LIMIT])
    return seeds


@dataclass
class Layout:
    """Where the records of a capture are: kind ("pcap", "pcapng" or ""), byte order and record spans."""

    kind: str = ""
    big: bool = False
    header: int = 0  # pcap: file header length (24)
    rec_hdr: int = 16
    records: list[tuple[int, int]] = field(default_factory=list)  # (start, length) of each record / block


def layout(data: bytes) -> Layout:
    """Parse record boundaries leniently (stops at the first thing that does not fit)."""
    if len(data) < 24:
        return Layout()
    le = struct.unpack_from("<I", data)[0]
    be = struct.unpack_from(">I", data)[0]
    if le in PCAP_MAGICS or be in PCAP_MAGICS:
        big = be in PCAP_MAGICS
        hl = PCAP_MAGICS[be if big else le]
        lay = Layout("pcap", big, 24, hl)
        pos = 24
        while pos + hl <= len(data) and len(lay.records) < 100_000:
            cap = struct.unpack_from(">I" if big else "<I", data, pos + 8)[0]
            if pos + hl + cap > len(data):
                break
            lay.records.append((pos, hl + cap))
            pos += hl + cap
        return lay
    if le == PCAPNG_SHB:
        lay = Layout("pcapng")
        pos = 0
        big = False
        while pos + 12 <= len(data) and len(lay.records) < 100_000:
            if struct.unpack_from("<I", data, pos)[0] == PCAPNG_SHB:
                big = struct.unpack_from("<I", data, pos + 8)[0] == 0x4D3C2B1A
            blen = struct.unpack_from(">I" if big else "<I", data, pos + 4)[0]
            if blen < 12 or pos + blen > len(data):
                break
            lay.records.append((pos, blen))
            pos += blen
        lay.big = big
        return lay
    return Layout()


# --- mutations --------------------------------------------------------------------------------------------------

def _put32(b: bytearray, pos: int, value: int, big: bool) -> None:
    if 0 <= pos and pos + 4 <= len(b):
        struct.pack_into(">I" if big else "<I", b, pos, value & 0xFFFFFFFF)


def _get32(b: bytearray, pos: int, big: bool) -> int:
    return int(struct.unpack_from(">I" if big else "<I", b, pos)[0]) if pos + 4 <= len(b) else 0


def _packet_start(lay: Layout, b: bytearray, rng: random.Random) -> tuple[int, int] | None:
    """(start, end) of a random packet's captured bytes."""
    if not lay.records:
        return None
    start, length = rng.choice(lay.records)
    if lay.kind == "pcap":
        return start + lay.rec_hdr, start + length
    btype = _get32(b, start, lay.big)
    if btype in (6, 2):
        return start + 28, start + length - 4
    if btype == 3:
        return start + 12, start + length - 4
    return None


def _ip_offset(b: bytearray, start: int, end: int) -> int:
    """Best guess at the IP header inside a frame (Ethernet, SLL, raw...)."""
    for off in (14, 18, 16, 0, 4, 20, 22):
        p = start + off
        if p < end and b[p] >> 4 in (4, 6):
            return p
    return start + 14


def mutate_packet(b: bytearray, lay: Layout, rng: random.Random) -> None:
    """Damage a header field of a packet: IHL, TCP data offset, options, IPv6 next headers, lengths."""
    span = _packet_start(lay, b, rng)
    if span is None:
        return
    start, end = span
    ip = _ip_offset(b, start, end)
    if ip >= end:
        return
    v = b[ip] >> 4
    tcp = ip + ((b[ip] & 0x0F) * 4 if v == 4 else 40)
    choice = rng.randrange(9)
    if choice == 0 and v == 4:  # IHL
        b[ip] = 0x40 | rng.choice([0, 1, 4, 5, 6, 15])
    elif choice == 1 and v == 4 and ip + 4 <= end:  # IP total length
        struct.pack_into(">H", b, ip + 2, rng.choice([0, 1, 19, 20, 39, 40, 0xFFFF, end - ip + 1]) & 0xFFFF)
    elif choice == 2 and v == 6 and ip + 8 <= end:  # payload length / next header
        if rng.random() < 0.5:
            struct.pack_into(">H", b, ip + 4, rng.choice([0, 1, 8, 0xFFFF]))
        else:
            b[ip + 6] = rng.choice([0, 43, 44, 51, 60, 135, 139, 140, 6, 59])
    elif choice == 3 and v == 6 and tcp + 2 <= end:  # turn the TCP header into an extension header chain
        b[ip + 6] = rng.choice([0, 43, 60, 51])
        b[tcp] = rng.choice([0, 43, 60, 51, 6])
        b[tcp + 1] = rng.choice([0, 1, 0xFF])
    elif choice == 4 and tcp + 13 <= end:  # TCP data offset
        b[tcp + 12] = (rng.choice([0, 1, 4, 5, 6, 15]) << 4) | (b[tcp + 12] & 0x0F)
    elif choice in (5, 6) and tcp + 22 <= end:  # TCP options: kind and length
        p = rng.randrange(tcp + 20, min(end - 1, tcp + 60)) if end - 1 > tcp + 20 else tcp + 20
        if p + 2 <= end:
            b[p] = rng.choice([1, 2, 3, 4, 5, 8, 30, 254, 0])
            b[p + 1] = rng.choice([0, 1, 2, 3, 4, 10, 18, 40, 255])
    elif choice == 7 and tcp + 14 <= end:  # TCP flags
        b[tcp + 13] = rng.randrange(256)
    elif tcp < end:
        p = rng.randrange(ip, min(end, tcp + 40))
        b[p] = rng.choice(INTERESTING8)


def mutate_lengths(b: bytearray, lay: Layout, rng: random.Random) -> None:
    """Corrupt a record's length fields (and the pcap file header's snap length and link type)."""
    if lay.kind == "pcap":
        r = rng.randrange(4)
        if r == 0:
            _put32(b, 16, rng.choice(INTERESTING32 + [rng.randrange(1 << 32)]), lay.big)  # snaplen
            return
        if r == 1:
            _put32(b, 20, rng.choice(LINKTYPES) | (rng.random() < 0.1) << 28, lay.big)
            return
        if not lay.records:
            return
        start, length = rng.choice(lay.records)
        what = rng.choice([8, 12])  # caplen or original length
        cur = _get32(b, start + what, lay.big)
        _put32(b, start + what, rng.choice(INTERESTING32 + [cur + 1, cur - 1, cur * 2, len(b) - start]), lay.big)
        return
    if lay.kind == "pcapng" and lay.records:
        start, length = rng.choice(lay.records)
        btype = _get32(b, start, lay.big)
        r = rng.randrange(5)
        if r == 0:  # leading total length
            _put32(b, start + 4, rng.choice(INTERESTING32 + [length + 4, length - 4, length + 1]), lay.big)
        elif r == 1:  # trailing total length
            _put32(b, start + length - 4, rng.choice(INTERESTING32 + [length + 4, length - 4]), lay.big)
        elif r == 2 and btype in (2, 6):  # captured / original length, interface id
            off = rng.choice([20, 24, 8])
            cur = _get32(b, start + off, lay.big)
            _put32(b, start + off, rng.choice(INTERESTING32 + [cur + 1, cur + 4, length]), lay.big)
        elif r == 3 and btype == 1 and start + 16 <= len(b):  # interface: link type, snap length, options
            if rng.random() < 0.5:
                struct.pack_into(">H" if lay.big else "<H", b, start + 8, rng.choice(LINKTYPES) & 0xFFFF)
            else:
                _put32(b, start + 12, rng.choice(INTERESTING32), lay.big)
        elif r == 4 and btype in (0x0A0D0D0A, 1) and length > 20:  # option code / length / tsresol
            p = start + rng.randrange(16, length - 4)
            b[p] = rng.choice(INTERESTING8)
        elif btype == 3:
            _put32(b, start + 8, rng.choice(INTERESTING32), lay.big)


def mutate_time(b: bytearray, lay: Layout, rng: random.Random) -> None:
    """Timestamps backwards, far ahead, or at the extremes."""
    if not lay.records:
        return
    start, _ = rng.choice(lay.records)
    if lay.kind == "pcap":
        secs = _get32(b, start, lay.big)
        _put32(b, start, rng.choice([0, 1, secs - 3600, secs - 1, secs + 86400 * 3650, 0x7FFFFFFF, 0xFFFFFFFF]),
               lay.big)
        if rng.random() < 0.3:
            _put32(b, start + 4, rng.choice([0, 999_999, 1_000_000, 999_999_999, 0xFFFFFFFF]), lay.big)
    elif _get32(b, start, lay.big) in (2, 6):
        _put32(b, start + 12, rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, _get32(b, start + 12, lay.big) + 1000]),
               lay.big)
        if rng.random() < 0.5:
            _put32(b, start + 16, rng.randrange(1 << 32), lay.big)


def splice(b: bytearray, lay: Layout, other: bytes, rng: random.Random) -> bytearray:
    """Insert records of another capture of the same format (or a slice of any capture) at a record edge."""
    olay = layout(other)
    if lay.kind and olay.kind == lay.kind and olay.records:
        recs = olay.records
        if lay.kind == "pcapng":  # keep whole sections' worth of blocks: SHB and IDBs come along when chosen
            i = rng.randrange(len(recs))
            j = min(len(recs), i + rng.randrange(1, 20))
        else:
            i = rng.randrange(len(recs))
            j = min(len(recs), i + rng.randrange(1, 20))
        chunk = other[recs[i][0]:recs[j - 1][0] + recs[j - 1][1]]
        edges = [s for s, _ in lay.records] + [len(b)]
        at = rng.choice(edges) if lay.records else len(b)
        return b[:at] + chunk + b[at:]
    a = rng.randrange(len(other) + 1)
    chunk = other[a:a + rng.randrange(1, 512)]
    at = rng.randrange(len(b) + 1)
    return b[:at] + chunk + b[at:]


def mutate(seed: bytes, seeds: list[bytes], rng: random.Random) -> bytes:
    """One fuzz input: the seed with 1 to 6 mutations."""
    b = bytearray(seed)
    for _ in range(rng.choice([1, 1, 2, 2, 3, 4, 6])):
        lay = layout(bytes(b)) if b else Layout()
        op = rng.randrange(11)
        if op == 0 and b:  # bit flips
            for _ in range(rng.randrange(1, 9)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # interesting bytes
            for _ in range(rng.randrange(1, 5)):
                b[rng.randrange(len(b))] = rng.choice(INTERESTING8)
        elif op == 2:  # insert bytes
            at = rng.randrange(len(b) + 1)
            b[at:at] = rng.randbytes(rng.choice([1, 2, 3, 4, 8, 16, 100]))
        elif op == 3 and b:  # delete a range
            at = rng.randrange(len(b))
            del b[at:at + rng.choice([1, 2, 3, 4, 8, 16, 100, 1000])]
        elif op == 4 and b:  # cut: inside the file header, a record header or a packet
            if lay.records and rng.random() < 0.7:
                start, length = rng.choice(lay.records)
                cut = start + rng.randrange(length)
            else:
                cut = rng.randrange(min(len(b), 64) if rng.random() < 0.3 else len(b))
            del b[cut:]
        elif op in (5, 6):
            mutate_lengths(b, lay, rng)
        elif op in (7, 8):
            mutate_packet(b, lay, rng)
        elif op == 9:
            mutate_time(b, lay, rng)
        elif op == 10:
            b = splice(b, lay, rng.choice(seeds), rng)
        if rng.random() < 0.05 and lay.records:  # duplicate or drop a record
            start, length = rng.choice(lay.records)
            if rng.random() < 0.5:
                b[start:start] = b[start:start + length]
            else:
                del b[start:start + length]
    return bytes(b)


# --- running ----------------------------------------------------------------------------------------------------

class Crash(Exception):
    """The pipeline failed on an input in a way it must not (anything but CaptureError)."""


def rss_mb() -> float:
    """Current resident set size of this process in MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(path: str) -> str:
    """Analyse one file as the command line would, through every output; '' or the CaptureError message."""
    from rich.console import Console

    from analyzer import terminal, writers

    try:
        report = analyze(path)
    except CaptureError as err:
        msg = str(err)
        if "\n" in msg or path not in msg:
            raise Crash(f"CaptureError message is not one line naming the file: {msg!r}") from err
        return msg
    writers.to_json(report, io.BytesIO())
    writers.to_zeek(report, io.StringIO())
    writers.to_csv(report, io.StringIO())
    terminal.render(report, Console(file=io.StringIO(), width=200), 50, None)
    report.states_at()
    return ""


def run_readers(path: str) -> str:
    """Only the capture reader and the decoder (fast: most inputs go here); '' or the CaptureError message."""
    from analyzer.capture import open_capture
    from analyzer.decode import Decoder

    dec = Decoder()
    try:
        with open_capture(path, batch_frames=257) as cap:  # small batches: records straddle batch edges
            for batch in cap:
                dec.decode(batch)
    except CaptureError as err:
        msg = str(err)
        if "\n" in msg or path not in msg:
            raise Crash(f"CaptureError message is not one line naming the file: {msg!r}") from err
        return msg
    dec.finish()
    return ""


class Watchdog:
    """A thread that saves the running input and ends the process when one input runs too long."""

    def __init__(self, timeout: float, out: Path) -> None:
        self.timeout = timeout
        self.out = out
        self.data: bytes | None = None
        self.started = 0.0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="tcpa-fuzz-watchdog", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """End the thread: none may outlive the run (tcpa forks its output writers only while it runs alone)."""
        self.stopped.set()
        self.thread.join()

    @contextlib.contextmanager
    def guard(self, data: bytes) -> Iterator[None]:
        with self.lock:
            self.data, self.started = data, time.monotonic()
        try:
            yield
        finally:
            with self.lock:
                self.data = None

    def _watch(self) -> None:
        while not self.stopped.wait(0.5):
            with self.lock:
                data, started = self.data, self.started
            if data is not None and time.monotonic() - started > self.timeout:
                path = save(self.out, "hang", data)
                sys.stdout.write(f"HANG: input ran over {self.timeout:.0f} s, saved to {path}\n")
                sys.stdout.flush()
                os._exit(3)


def save(out: Path, kind: str, data: bytes) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{kind}-{hashlib.sha1(data).hexdigest()}.pcap"
    path.write_bytes(data)
    return path


@dataclass
class Result:
    executions: int = 0
    rejected: int = 0  # inputs refused with a CaptureError (allowed)
    full: int = 0  # inputs run through the whole pipeline and every output (the rest: reader and decoder)
    crashes: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0


def fuzz(*, seconds: float | None = None, executions: int | None = None, seed: int = 0, timeout: float = 60.0,
         max_rss: float = 4096.0, out: Path = REGRESSIONS, seeds: list[bytes] | None = None,
         verbose: bool = True, full_every: int = 4) -> Result:
    """Run until `seconds` pass or `executions` inputs ran; crashes are saved under `out`."""
    rng = random.Random(seed)
    seeds = seeds if seeds is not None else load_seeds(seed_files())
    if not seeds:
        raise SystemExit("no seed captures found")
    res = Result()
    with tempfile.TemporaryDirectory(prefix="tcpa-fuzz-") as tmp:  # compile (or load) the numba code first
        warm = os.path.join(tmp, "warm.pcap")
        with open(warm, "wb") as fh:
            fh.write(seeds[0])
        with contextlib.suppress(Exception):
            run_one(warm)
    watchdog = Watchdog(timeout, out)
    t0 = time.monotonic()
    seen: set[str] = set()
    last_report = t0
    with tempfile.TemporaryDirectory(prefix="tcpa-fuzz-") as tmp, contextlib.closing(watchdog):
        path = os.path.join(tmp, "input.pcap")
        while True:
            if executions is not None and res.executions >= executions:
                break
            if seconds is not None and time.monotonic() - t0 >= seconds:
                break
            data = mutate(rng.choice(seeds), seeds, rng)
            with open(path, "wb") as fh:
                fh.write(data)
            res.executions += 1
            problem = ""
            try:
                full = res.executions % full_every == 1 or full_every <= 1
                res.full += full
                with watchdog.guard(data):
                    if (run_one if full else run_readers)(path):
                        res.rejected += 1
            except Crash as err:
                problem = str(err)
            except Exception:  # noqa: BLE001 - every other exception is the bug being hunted
                problem = traceback.format_exc(limit=-4)
            if not problem and rss_mb() > max_rss:
                problem = f"resident memory {rss_mb():.0f} MB over {max_rss:.0f} MB"
            if problem:
                kind = "oom" if problem.startswith("resident") else "crash"
                saved = save(out, kind, data)
                key = problem.strip().splitlines()[-1]
                res.crashes.append((saved, problem))
                if verbose and key not in seen:
                    print(f"CRASH #{len(res.crashes)} ({saved.name}):\n{problem}", flush=True)
                seen.add(key)
            now = time.monotonic()
            if verbose and now - last_report > 30:
                last_report = now
                print(f"  {res.executions} executions, {len(res.crashes)} crashes, {now - t0:.0f} s", flush=True)
    res.seconds = time.monotonic() - t0
    return res


def replay(paths: list[Path]) -> list[tuple[Path, str]]:
    """Run saved inputs again; the ones that still crash, with what they raised."""
    bad = []
    for p in paths:
        try:
            run_one(str(p))
        except Exception:  # noqa: BLE001
            bad.append((p, traceback.format_exc(limit=-3)))
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=None, help="run this long (default 600 unless --executions)")
    ap.add_argument("--executions", type=int, default=None, help="run this many inputs")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one input may take before it is a hang")
    ap.add_argument("--max-rss", type=float, default=4096.0, help="MB of resident memory that count as a blow-up")
    ap.add_argument("--out", type=Path, default=REGRESSIONS, help="where crashing inputs are saved")
    ap.add_argument("--full-every", type=int, default=4,
                    help="every Nth input runs the whole pipeline and outputs, the others the reader and decoder only")
    ap.add_argument("--replay", type=Path, default=None, help="replay every file in this directory and exit")
    args = ap.parse_args()
    if args.replay:
        files = sorted(p for p in args.replay.iterdir() if p.is_file())
        bad = replay(files)
        for p, tb in bad:
            print(f"{p}: still crashes\n{tb}")
        print(f"replayed {len(files)} inputs, {len(bad)} still crash")
        return 1 if bad else 0
    if args.seconds is None and args.executions is None:
        args.seconds = 600.0
    seed = args.seed if args.seed is not None else int(time.time())
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    seeds = load_seeds(seed_files())
    limits = ([f"{args.seconds:.0f} s"] if args.seconds else []) + \
        ([f"{args.executions} executions"] if args.executions else [])
    print(f"fuzzing with seed {seed}: {len(seeds)} seed captures, {' or '.join(limits)}", flush=True)
    res = fuzz(seconds=args.seconds, executions=args.executions, seed=seed, timeout=args.timeout,
               max_rss=args.max_rss, out=args.out, seeds=seeds, full_every=args.full_every)
    distinct = {p for p, _ in res.crashes}
    print(f"executions run: {res.executions} in {res.seconds:.0f} s ({res.executions / max(res.seconds, 1e-9):.1f}/s; "
          f"{res.full} through the whole pipeline and every output, the rest reader and decoder); "
          f"rejected with a clear error: {res.rejected}; crashes found: {len(res.crashes)}"
          f" ({len(distinct)} distinct inputs)")
    for p in sorted(distinct):
        print(f"  {p}")
    return 1 if res.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
