# thaw: `make dev` runs the platform, `make test` runs the tests.
# Both run `make setup` first, which installs everything and is idempotent.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
export UV_PYTHON_DOWNLOADS := never
# uv as a module of the machine's python3: no PATH assumptions on a fresh machine.
UV := python3 -m uv
PYPROJECTS := pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)

.PHONY: help setup host-deps dev up test test-fast bench lint proto proto-check clean

help:
	@echo "make dev     start the embedded stack and a node agent (Ctrl-C stops)"
	@echo "make test    install everything, then run the test suite"
	@echo "make bench   run the benchmarks in tests/bench"
	@echo "make proto   regenerate proto/ from thaw_core.schema"
	@echo "make lint    ruff"

setup: $(VENV)/.installed host-deps

# Python: one venv, every workspace package editable.
$(VENV)/.installed: $(PYPROJECTS) $(wildcard uv.lock)
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install -q uv
	$(UV) sync --python python3 --all-packages
	@touch $@

# Debian packages, CRIU in a private prefix, the default container rootfs.
host-deps:
	@bash deploy/setup-host.sh

dev: setup
	$(VENV)/bin/thaw up --with-agent

test: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider --ignore=tests/bench $(PYTEST_ARGS)

# The benchmarks' own peers, installed so that no case is skipped for want of a tool
# (the Python ones, torch, MiniLM and Ray, the benches install themselves: tests/fixtures/bench_envs.py).
BENCH_PACKAGES := buildah

bench: setup
	@THAW_BENCH_PACKAGES="$(BENCH_PACKAGES)" bash deploy/setup-host.sh
	$(VENV)/bin/pytest -q -s tests/bench $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check libs services tests

proto: setup
	$(PY) -m thaw_core.proto proto

proto-check: setup
	$(PY) -m thaw_core.proto --check proto

clean:
	rm -rf $(VENV)
