# The two set-up commands of the README:  `make demo`  and  `make test`.
#
# Where Python lives: with a virtual environment active ($VIRTUAL_ENV) its python is
# used; with `make PY=/path/to/python ...` that one is used; otherwise the project's own
# virtual environment `.venv/` (ignored by git) is created with `python3 -m venv` and
# used. This also works where the system Python refuses `pip install`
# (PEP 668 "externally-managed-environment", e.g. Debian's /usr/bin/python3).
OUT ?= runs/demo
SYSTEM_PY ?= python3

ifdef PY
  # given by the user
else ifdef VIRTUAL_ENV
  PY := $(VIRTUAL_ENV)/bin/python
else
  PY := .venv/bin/python
  VENV := .venv/bin/python
endif

PIP := $(PY) -m pip install --disable-pip-version-check -q

.PHONY: install demo test test-all

# The project's virtual environment, made once (only when neither PY nor VIRTUAL_ENV is set).
.venv/bin/python:
	$(SYSTEM_PY) -m venv .venv || { echo "make: '$(SYSTEM_PY) -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }

# torch is pinned first: on machines like ours torch==2.13.0 is a CPU build, while an
# unpinned `torch` would pull a multi-GB CUDA build.
install: $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"

demo: install
	$(PY) -m worldmodel demo --out $(OUT)

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m "slow or not slow"
