"""The fuzzer of scripts/fuzz.py, briefly and deterministically, and every input it ever crashed on.

`make fuzz` runs the same mutator for as long as asked (FUZZ_SECONDS); here a fixed seed and a fixed number of
inputs (about a minute) run through the readers, the decoder, the whole pipeline and the text outputs. A crash
is saved to tests/regressions/, where the replay test keeps it from coming back.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REGRESSIONS = Path(__file__).resolve().parent / "regressions"


def _load_fuzz():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("tcpa_fuzz", ROOT / "scripts" / "fuzz.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["tcpa_fuzz"] = module
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzz()

SEED = 20_251_130
EXECUTIONS = 400  # about a minute on one core (every 4th input through the whole pipeline)


def test_seeds_include_every_scenario_and_corpus_capture() -> None:
    files = fuzz.seed_files()
    assert {p.name for p in (ROOT / "pcaps").glob("*.pcap*")} <= {p.name for p in files}
    if fuzz.CORPUS.is_dir():
        assert any(fuzz.CORPUS in p.parents for p in files)


def test_mutator_is_deterministic() -> None:
    seeds = fuzz.load_seeds(fuzz.seed_files()[:5])
    import random

    a = [fuzz.mutate(seeds[i % 5], seeds, random.Random(i)) for i in range(30)]
    b = [fuzz.mutate(seeds[i % 5], seeds, random.Random(i)) for i in range(30)]
    assert a == b
    assert any(x != seeds[i % 5] for i, x in enumerate(a))


def test_short_seeded_fuzz_run_finds_no_crash() -> None:
    res = fuzz.fuzz(executions=EXECUTIONS, seed=SEED, timeout=120, out=REGRESSIONS, verbose=False)
    print(f"fuzz: {res.executions} executions in {res.seconds:.0f} s, {res.rejected} rejected with a clear error, "
          f"{len(res.crashes)} crashes")
    assert res.executions == EXECUTIONS
    assert not any(t.name == "tcpa-fuzz-watchdog" for t in threading.enumerate())  # later tests fork
    assert not res.crashes, "\n\n".join(f"{p}:\n{tb}" for p, tb in res.crashes[:3])


REPLAYS = sorted(p for p in REGRESSIONS.glob("*") if p.is_file()) if REGRESSIONS.is_dir() else []


@pytest.mark.parametrize("capture", REPLAYS, ids=lambda p: p.name)
def test_regression_inputs_do_not_crash(capture: Path) -> None:
    """Analysed (and rendered) or refused with a one-line CaptureError naming the file; nothing else."""
    fuzz.run_one(str(capture))
