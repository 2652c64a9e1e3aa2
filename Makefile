# The two commands a fresh machine needs: `make run` and `make test`. Both create the virtualenv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON3 ?= python3
PORT ?= 8080
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install python browser run test unit integration reliability bench smoke lint format clean

install: $(VENV)/.installed

## Python 3.11+ with its venv module, checked before anything is created or installed.
python:
	@command -v $(PYTHON3) >/dev/null || { echo "No $(PYTHON3) on PATH: install Python 3.11 or newer (Debian: apt-get install python3 python3-venv)."; exit 1; }
	@$(PYTHON3) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "$$($(PYTHON3) --version) is too old: this project needs Python 3.11 or newer (set PYTHON3=/path/to/python3.11)."; exit 1; }
	@$(PYTHON3) -c 'import venv, ensurepip' 2>/dev/null || { echo "$(PYTHON3) lacks the venv module: install it (Debian/Ubuntu: apt-get install python3-venv), then run make again."; exit 1; }

$(VENV)/.installed: pyproject.toml | python
	$(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,bench,otel]"  # bench: the docs test redraws the plot; otel: the tracing tests
	touch $@

## Redis (embedded if none answers), the gateway on $(PORT) and 2 workers, until Ctrl-C.
run: install
	@echo "Test page: http://127.0.0.1:$(PORT)/   Agent WebSocket: ws://127.0.0.1:$(PORT)/v1/agent/converse"
	GATEWAY_PORT=$(PORT) honcho -f Procfile.dev start

## Lint, then every test (unit on fakeredis; integration on real redis-server, workers and WebSockets).
test: browser install lint
	$(PY) -m pytest -q

## Chromium for the e2e tests: installed with apt-get when root, else a stop naming the command to run.
browser: python
	@$(PYTHON3) scripts/ensure_browser.py

unit: install
	$(PY) -m pytest -q tests/unit

integration: install
	$(PY) -m pytest -q tests/integration

## Attack tests, fault injection and fuzzing against real processes; writes docs/RELIABILITY.md from that run
## (failed rows too).
reliability: install
	rm -f test-artifacts/reliability.json
	$(PY) -m pytest -q -m "attack or faults or fuzz" tests; status=$$?; \
	$(PY) -m tests.support.reliability && exit $$status

## Benchmarks on loopback against real processes (~6 min); writes docs/PERFORMANCE.md, its plot and JSON.
## BENCH_QUICK=1: every section small and short (~1 min), written to benchmarks/out/quick/ instead.
bench: install
	$(PY) -m benchmarks $(if $(BENCH_QUICK),--quick,)


lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info build dist

## The conversation scenarios (a weather call, two calls at once, a barge-in) against real Deepgram and OpenAI,
## each whose key is set (DEEPGRAM_API_KEY, OPENAI_API_KEY); says it skipped, and succeeds, without either.
smoke: install
	$(PY) -m tests.support.smoke
