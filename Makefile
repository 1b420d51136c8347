# Two entry points (see README): `make book` runs the main job, `make test` runs the tests.
# Both set up .venv themselves: CPU torch pinned to the wheel on local disk, then the project.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
OUT ?= runs/tiny
PYTEST_ARGS ?=

.PHONY: setup system-deps test test-fast book clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev,book]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP)

# Debian packages some checks need (headless Chromium for the browser tests); needs root.
system-deps:
	bash .ci/system-deps

test: setup system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

book: setup
	bash .ci/main-job $(OUT)

clean:
	rm -rf book/_build runs
