# Two entry points for a fresh machine: `make demo` and `make test`.
# Each builds .venv by itself; every pip call goes through constraints.txt so the CPU torch
# pinned there is never replaced by a multi-GB CUDA build.

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
CONSTRAINTS := constraints.txt
# The development and CI machines keep the pinned CPU torch wheel in /opt/wheels.
FIND_LINKS  := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP         := $(PY) -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS) $(FIND_LINKS)

.PHONY: setup demo test lint bench clean

$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch
	$(PIP) -e '.[dev,eval]'
	@# lmms-eval drags in torchvision and timm; torchvision breaks the CPU torch build and
	@# transformers' imports, and nothing here needs either.
	$(PY) -m pip uninstall -y -q torchvision timm 2>/dev/null || true
	touch $@

setup: $(VENV)/.installed-dev

demo: setup
	$(VENV)/bin/care demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check care evaluation analysis_app bench tests

bench: setup
	$(PY) bench/bench_advantages.py
	$(PY) bench/bench_step.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info
