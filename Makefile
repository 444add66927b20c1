# npc-voice — one-command install, run and test. See README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 50051

.PHONY: install dev run test lint typecheck pytest test-scaleout test-bridges proto clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned to the local CPU build here; pyproject keeps a range for GPU machines.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	$(BIN)/python -m npc_voice.model.compile  # numba's kernels compiled once here, not at first serve
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev,train]'
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

run: install
	$(BIN)/npc-voice serve --host 127.0.0.1 --port $(PORT)

proto: dev
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/npc_voice/v1/npc_voice.proto

lint: dev
	$(BIN)/ruff check npc_voice kernels tests bench

typecheck: dev
	$(BIN)/mypy npc_voice kernels

pytest: dev
	$(BIN)/python -m pytest -q --ignore=tests/test_scaleout.py

# deploy/haproxy.cfg in front of three daemons (a minute on 2 cores). Skips loudly without
# haproxy (deploy/install_haproxy.sh installs it); with REQUIRE_SCALEOUT=1 (CI) that fails.
test-scaleout: dev
	$(BIN)/python -m pytest -q tests/test_scaleout.py

# Unity + Godot suites against a live daemon; each skips loudly if its toolchain is missing
# (engine_bridges/*/install_toolchain.sh installs them; .ci/run does).
test-bridges: install
	engine_bridges/run_bridge_tests.sh

test: lint typecheck pytest test-scaleout test-bridges
