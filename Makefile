# `make run` starts the service; `make test` runs lint, types and the tests.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck pytest bench bench-docker demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/docktrail run

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# Every benchmark (those needing root and a private dockerd only as root), each under
# a time cap, within 20 minutes; writes docs/PERFORMANCE.md (see bench/all.py).
bench: $(STAMP)
	$(BIN)/python bench/all.py $(BENCH_ARGS)

# Needs root: starts a private dockerd.
bench-docker: $(STAMP)
	$(BIN)/python bench/docker_events.py
	$(BIN)/python bench/notify_latency.py
	$(BIN)/python bench/posture_sweep.py
	$(BIN)/python bench/proxy.py
	$(BIN)/python bench/exec_sessions.py

# Needs root and docker.io: a private dockerd, a scripted scenario, alerts printed
# by a local webhook, then the trail; everything is torn down on exit.
demo: $(STAMP)
	$(BIN)/python demo/run_demo.py $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
