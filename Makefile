# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv when missing, install the system libraries Open3D needs when missing,
# install the package (editable, with dev extras), then run. Re-running is fast: each step is skipped
# when its stamp file is newer than its inputs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SYSLIBS := libusb-1.0-0 libgl1 libegl1 libgomp1 libvulkan1 mesa-vulkan-drivers xvfb
STAMP := $(VENV)/.geo3d-installed

.PHONY: demo test test-slow lint bench weights setup clean-venv

demo: $(STAMP)
	$(VENV)/bin/geo3d demo --out out/demo

# The suite in parallel: one pytest-xdist worker per core (at most 4), each starting on its own contiguous share of
# the tests (so a file's fixtures are mostly built once) and taking over queued tests when it runs out.
# `make test-slow` runs the tests marked slow instead (README, "Tests").
test: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist worksteal

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) scripts/bench_ops.py

# Retrain every model zoo entry from scratch with the commands of its card (MODELS.md); hours, not in CI.
weights: $(STAMP)
	$(PY) scripts/make_weights.py

setup: $(STAMP)

$(VENV)/bin/python: | .syslibs-checked
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

.syslibs-checked: Makefile
	@missing=""; for p in $(SYSLIBS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system libraries:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

# torch first: 2.13.x when torch is missing (a local CPU wheel where the machine has one, else PyPI).
$(STAMP): $(VENV)/bin/python pyproject.toml .syslibs-checked
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==2.13.*"
	$(PIP) install -q -e ".[dev]"
	@touch $@

clean-venv:
	rm -rf $(VENV) .syslibs-checked
