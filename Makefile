# The two commands of the README: `make run` and `make test`. Everything builds one shared .venv.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch: CPython 3.11 wheels of these releases are on this kind of machine's disk (README, "Installing").
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
COMPAT_PYTHONS := $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python3.10 /usr/bin/python3.10 \
                             $(HOME)/.pyenv/versions/3.13*/bin/python3.13 /usr/bin/python3.13)
PREFIX ?= /opt/syftd
DESTDIR ?=

.PHONY: help venv run test check lint bench test-compat clean proto

help:
	@echo "make run    - start a local PyGrid-compatible node and the daemon; watch cycles complete"
	@echo "make test   - make check, then the whole test suite"
	@echo "make check  - ruff and mypy"
	@echo "make bench  - benchmarks under tests/bench (figures and ratios)"
	@echo "make test-compat - torch-free tests under Python 3.10 and 3.13 when present"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[train,test,dev]'
	@touch $@

run: $(STAMP)
	$(BIN)/python -m syftd.demo

check: $(STAMP)
	$(BIN)/ruff check syftd tests
	$(BIN)/mypy

lint: $(STAMP)
	$(BIN)/ruff check --fix syftd tests
	$(BIN)/ruff format syftd tests

test: check
	$(BIN)/python -m pytest --durations=15 --ignore=tests/bench $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m pytest tests/bench -s --timeout=900 $(PYTEST_ARGS)

# The torch-free tests under the other Python versions present on this machine (the 3.10 floor is real).
test-compat:
	@set -e; if [ -z "$(strip $(COMPAT_PYTHONS))" ]; then echo "test-compat: no Python 3.10 or 3.13 here"; exit 0; fi; \
	for py in $(COMPAT_PYTHONS); do \
	  v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); env=.venv-$$v; \
	  test -x $$env/bin/python || $$py -m venv $$env; \
	  $$env/bin/python -m pip install --quiet --upgrade pip; \
	  $$env/bin/python -m pip install --quiet -e '.[test]'; \
	  echo "== Python $$v"; \
	  $$env/bin/python -m pytest -m "not torch" -p no:cacheprovider tests --ignore=tests/bench $(PYTEST_ARGS); \
	done

# The PyGrid wire schema (syftd/grid/syft.proto) -> syftd/grid/syft_pb2.py(i); needs the runtime's major (7).
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. syftd/grid/syft.proto

clean:
	rm -rf $(VENV) .venv-3.* .mypy_cache .pytest_cache .ruff_cache
