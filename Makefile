# The two set-up commands of the README:  `make demo`  and  `make test`.
PY ?= python3
PIP := $(PY) -m pip install --disable-pip-version-check -q
OUT ?= runs/demo

.PHONY: install demo test test-all

# torch is pinned first: on machines like ours torch==2.13.0 is a CPU build, while an
# unpinned `torch` would pull a multi-GB CUDA build.
install:
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"

demo: install
	$(PY) -m worldmodel demo --out $(OUT)

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m "slow or not slow"
