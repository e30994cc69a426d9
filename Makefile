# sincere — the user's front door. `make install` once, then `make test`.
PYTHON_BASE ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed

.PHONY: install test bench-losses clean-venv help

help:
	@echo "make install       create .venv with everything (idempotent)"
	@echo "make test          install if needed, then run the test suite"
	@echo "make bench-losses  loss forward+backward time and memory -> results/benchmarks/losses.md"

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

test: install
	$(PY) -m pytest

bench-losses: install
	$(PY) scripts/bench_losses.py

clean-venv:
	rm -rf $(VENV)
