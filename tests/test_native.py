"""The compiled kernels: the ahead-of-time module is what runs, it checks what it is given, and numba's JIT
(the fallback) gives the same results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analyzer import capture, native

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False,
                          cwd=ROOT, env={**os.environ, **env})


def test_compiled_module_is_used_and_numba_is_not_loaded() -> None:
    # `make test` builds the module first: the suite runs the code users run
    assert native.COMPILED is not None, "analyzer/_kernels*.so is missing or stale: run `make kernels`"
    done = _python("import sys; from analyzer import analyze; analyze('pcaps/normal_close.pcap'); "
                   "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite')))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]" and done.stderr == ""


def test_wrong_argument_types_raise_instead_of_reading_raw_memory() -> None:
    buf = np.zeros(64, np.uint8)
    offset, ts = np.empty(4, np.int64), np.empty(4, np.int64)
    lens = np.empty(4, np.int32)
    n, _, _ = capture.scan_pcap(buf, 0, 0, False, 16, 1000, 4, offset, lens, lens, ts)  # the right types
    assert n == 0
    with pytest.raises(TypeError, match="argument 8 is int64"):
        capture.scan_pcap(buf, 0, 0, False, 16, 1000, 4, offset, offset, lens, ts)
    with pytest.raises(TypeError, match="argument 0 is uint8.*strided"):
        capture.scan_pcap(buf[::2], 0, 0, False, 16, 1000, 4, offset, lens, lens, ts)
    with pytest.raises(TypeError, match="argument 7 is list"):
        capture.scan_pcap(buf, 0, 0, False, 16, 1000, 4, [0], lens, lens, ts)
    with pytest.raises(TypeError, match="10 arguments given, 11 expected"):
        capture.scan_pcap(buf, 0, 0, False, 16, 1000, 4, offset, lens, lens)


def test_stale_module_falls_back_to_the_jit_with_a_warning(tmp_path: Path) -> None:
    copy = tmp_path / "analyzer"
    shutil.copytree(ROOT / "analyzer", copy, ignore=shutil.ignore_patterns("__pycache__"))
    engine = copy / "engine.py"
    engine.write_text(engine.read_text() + "\n# edited after the build\n")
    done = subprocess.run([sys.executable, "-c", "from analyzer import native; print(native.COMPILED)"],
                          capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"
    assert "compiled kernels are older than their source" in done.stderr


def test_jit_fallback_gives_the_same_report(tmp_path: Path) -> None:
    """The same kernels compiled by numba's JIT: every table of the report is identical."""
    pcaps = ["lab_lost_syn_twice.pcap", "capture_gap.pcap", "ipv6.pcap", "showcase.pcapng"]
    code = ("import sys, json; from analyzer import analyze; from analyzer.native import COMPILED; "
            "out = {}\n"
            f"for p in {pcaps!r}:\n"
            "    r = analyze('pcaps/' + p)\n"
            "    out[p] = {t: getattr(r, t).astype(str).to_dict('list') for t in "
            "('connections', 'transitions', 'events', 'control', 'findings')}\n"
            "print(json.dumps({'compiled': COMPILED is not None, 'tables': out}))")
    aot = json.loads(_python(code).stdout)
    jit = json.loads(_python(code, TCPA_JIT="1", NUMBA_CACHE_DIR=str(tmp_path / "numba")).stdout)
    assert aot["compiled"] and not jit["compiled"]
    assert aot["tables"] == jit["tables"]
