# tcpa: two commands set everything up on a fresh Debian machine.
#   make run   - environment, analysis of a bundled capture, report in reports/
#   make test  - system tools the tests use (tshark, tcpdump, chromium...), then pytest
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEB_TOOLS := tshark tcpdump tcptrace chromium fonts-wqy-microhei nftables iproute2
BENCH_TOOLS := tcpreplay
CAPTURE ?= pcaps/showcase.pcapng

.PHONY: run test venv kernels sysdeps pcaps lab screenshots bench fuzz lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The compiled kernels (analyzer/_kernels*.so, see analyzer/native.py): rebuilt when their sources change.
# numba's JIT cache (used with TCPA_JIT=1) misses edits to functions called from other files: dropped too.
KERNEL_SRC := $(addprefix analyzer/,native.py capture.py decode.py engine.py flows.py layout.py segments.py seqspace.py \
	sequence.py splice.py tcpstate.py zeekconn.py)
KERNELS := $(VENV)/.kernels
$(KERNELS): $(KERNEL_SRC) $(STAMP)
	@command -v gcc >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc >/dev/null)
	rm -f analyzer/__pycache__/*.nbi analyzer/__pycache__/*.nbc
	TCPA_JIT=1 $(BIN)/python -c 'from analyzer import native; native.main()'
	touch $@

# Bytecode for the package, as a wheel install would have it: where PYTHONDONTWRITEBYTECODE is set (as on this
# project's machines), each `tcpa` run would otherwise compile its modules again (0.25-0.4 s of start-up).
PYCS := $(VENV)/.pycs
$(PYCS): $(wildcard analyzer/*.py analyzer/*/*.py) $(STAMP)
	$(BIN)/python -m compileall -q analyzer
	touch $@

kernels: $(KERNELS)

# Debian packages the tests drive for real; installed only when one is missing.
sysdeps:
	@missing=""; \
	for t in tshark tcpdump tcptrace chromium nft ip; do command -v $$t >/dev/null || missing=1; done; \
	dpkg -s fonts-wqy-microhei >/dev/null 2>&1 || missing=1; \
	if [ -n "$$missing" ]; then \
	  echo "installing $(DEB_TOOLS)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq $(DEB_TOOLS) >/dev/null; \
	fi

run: $(STAMP) $(KERNELS) $(PYCS)
	@mkdir -p reports
	$(BIN)/tcpa analyze $(CAPTURE) --force --format json -o reports/showcase.json --html reports/showcase.html
	$(BIN)/tcpa analyze $(CAPTURE) --limit 20

test: sysdeps $(STAMP) $(KERNELS) $(PYCS)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# tcpa against tcptrace and tshark on generated captures (bench/, cached); BENCH_ARGS="--sizes 2 --repeat 1"
bench: sysdeps $(STAMP) $(KERNELS) $(PYCS)
	@command -v tcpreplay >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_TOOLS) >/dev/null)
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

# Mutation fuzzing of the readers, decoder and whole pipeline, seeded with pcaps/ and ../shared/corpus/zeek;
# crashing inputs land in tests/regressions/ (FUZZ_SECONDS=600 by default, FUZZ_SEED to repeat a run).
fuzz: $(STAMP) $(KERNELS)
	$(BIN)/python scripts/fuzz.py --seconds $${FUZZ_SECONDS:-600} $${FUZZ_SEED:+--seed $$FUZZ_SEED}

screenshots: $(STAMP)
	$(BIN)/python scripts/screenshot.py reports/showcase.html reports/showcase.png

pcaps: $(STAMP)
	$(BIN)/python scripts/make_scenarios.py pcaps
	$(BIN)/python scripts/lab.py pcaps

# Real Linux TCP captured in two network namespaces (needs root, ip, nft, tcpdump, ethtool; about a minute).
lab: $(STAMP)
	$(BIN)/python scripts/lab.py pcaps

lint: $(STAMP)
	$(BIN)/ruff check analyzer tests scripts
	$(BIN)/mypy analyzer

clean:
	rm -rf $(VENV) build *.egg-info analyzer/_kernels*.so
