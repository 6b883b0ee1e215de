# mpnb's build and test entry points.
#
#   make venv     .venv with mpnb installed editable, its test and browser extras, and a
#                 `python3` kernelspec pointing at the venv
#   make test     the whole suite on .venv, then the core tests (-m core) on the other
#                 supported CPythons (3.10, 3.12, 3.13 from pyenv) in .venv-3.10 and friends
#   make lint     ruff (lint and format), mypy and the import contracts
#   make test-floors  core and kernel tests on CPython 3.10 with every dependency at its
#                 floor (ci/floors.txt) in .venv-floors
#   make test-wheel   build the wheel, install it in a fresh .venv-wheel, smoke-test it
#   make conformance  CPython's own multiprocessing tests against mpnb, on .venv (drop-in
#                 and extension modes, forkserver/spawn/fork; CONFORMANCE_ARGS=... to pass
#                 options); `make conformance-3.13` runs them on .venv-3.13
#   make demo     run notebooks/quickstart.ipynb on a real kernel, cell by cell
#   make notebooks  the same for every notebook in notebooks/
#   make bench    the benchmarks (ONLY=W3,W5 to pick workloads)
#   make clean    caches and build outputs; `make distclean` also removes the venvs
#
# Every venv is stamped with the day: it is reinstalled when pyproject.toml (or
# ci/floors.txt) changed, and upgraded (pip --upgrade-strategy eager) once a day, so the
# newest end is tested against today's releases, not those of the day the venv was made.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The main venv also gets the browser extra (the JupyterLab tests drive it in Chromium)
# and the dask extra (the cluster tests start Dask clusters on loopback).
EXTRAS ?= test,browser,lint,dask
# Other CPythons only run the core tests, so they need the test extra alone.
OTHER_PYTHONS ?= 3.10 3.12 3.13
# The floors run on the oldest supported CPython.
FLOORS_PYTHON ?= 3.10
FLOORS := ci/floors.txt
FLOORS_VENV := $(VENV)-floors
WHEEL_VENV := $(VENV)-wheel
PIP_FLAGS ?= --progress-bar off
PYTEST_ARGS ?=
NOTEBOOK ?= notebooks/quickstart.ipynb
ONLY ?=

# The stamp names the day (UTC): a venv made or upgraded on an earlier day is upgraded
# again, so yesterday's packages never stand in for the newest.
TODAY := $(shell date -u +%Y-%m-%d)
STAMP := .mpnb-installed-$(TODAY)
VENV_STAMP := $(VENV)/$(STAMP)
OTHER_STAMPS := $(foreach v,$(OTHER_PYTHONS),$(VENV)-$(v)/$(STAMP))
FLOORS_STAMP := $(FLOORS_VENV)/$(STAMP)
BENCH_STAMP := $(VENV)/.mpnb-bench-installed
# Install or upgrade: every package to the newest that the requirements (and constraints)
# allow, including those already there.
PIP_INSTALL = -m pip install $(PIP_FLAGS) --upgrade --upgrade-strategy eager

.PHONY: help venv venvs lint test test-main test-core test-floors test-wheel check-floors \
        conformance demo notebooks bench clean distclean

help:
	@sed -n '3,23s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

venv: $(VENV_STAMP)

venvs: $(VENV_STAMP) $(OTHER_STAMPS)

$(VENV_STAMP): pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.mpnb-installed*
	$(PY) $(PIP_INSTALL) pip
	$(PY) $(PIP_INSTALL) -e '.[$(EXTRAS)]'
	$(PY) -m ipykernel install --sys-prefix --name python3
	touch $@

# find_python: set `prefix` to the prefix of CPython $(1) from pyenv (or pyenv's versions
# folder), or say how to install it and fail.
define find_python
prefix=""; \
if command -v pyenv >/dev/null 2>&1; then \
  prefix=$$(pyenv prefix $(1) 2>/dev/null | head -n1 || true); \
  root=$$(pyenv root); \
else \
  root=$${PYENV_ROOT:-$$HOME/.pyenv}; \
fi; \
if [ -z "$$prefix" ]; then \
  for d in "$$root"/versions/$(1).*/ /root/.pyenv/versions/$(1).*/; do \
    if [ -x "$$d/bin/python3" ]; then prefix=$${d%/}; fi; \
  done; \
fi; \
if [ -z "$$prefix" ]; then \
  if ! command -v pyenv >/dev/null 2>&1; then \
    echo "error: pyenv not found. make test wants CPython $(OTHER_PYTHONS) from pyenv:" >&2; \
    echo "       install pyenv, then: pyenv install $(sort $(OTHER_PYTHONS) $(FLOORS_PYTHON))" >&2; \
  else \
    echo "error: CPython $(1) is not installed in pyenv ($$root). Run: pyenv install $(1)" >&2; \
  fi; \
  exit 1; \
fi; \
echo "CPython $(1) from $$prefix"
endef

# .venv-floors: the floors of every dependency (ci/floors.txt) on the oldest CPython.
# An explicit rule, so the pattern rule below does not take it for a CPython "floors".
$(FLOORS_STAMP): pyproject.toml $(FLOORS)
	@$(call find_python,$(FLOORS_PYTHON)); \
	set -x; \
	[ -x $(FLOORS_VENV)/bin/python ] || "$$prefix/bin/python3" -m venv $(FLOORS_VENV); \
	rm -f $(FLOORS_VENV)/.mpnb-installed*; \
	$(FLOORS_VENV)/bin/python $(PIP_INSTALL) pip; \
	$(FLOORS_VENV)/bin/python $(PIP_INSTALL) -c $(FLOORS) -e '.[test,dask]'
	touch $@

# .venv-3.10/.mpnb-installed-DAY and friends: a venv of that CPython from pyenv, with mpnb
# and its test extra, at the newest versions.
$(VENV)-%/$(STAMP): pyproject.toml
	@$(call find_python,$*); \
	set -x; \
	[ -x $(VENV)-$*/bin/python ] || "$$prefix/bin/python3" -m venv $(VENV)-$*; \
	rm -f $(VENV)-$*/.mpnb-installed*; \
	$(VENV)-$*/bin/python $(PIP_INSTALL) pip; \
	$(VENV)-$*/bin/python $(PIP_INSTALL) -e '.[test]'
	touch $@

# pytest exits 5 when it collected no test: a suite or a marker that selects nothing is
# an error here, not a pass.
define run_core
rc=0; $(VENV)-$$v/bin/python -m pytest -m core $(PYTEST_ARGS) || rc=$$?; \
if [ $$rc -eq 5 ]; then echo "error: no test is marked core (@pytest.mark.core) to run on $$v" >&2; fi; \
if [ $$rc -ne 0 ]; then status=$$rc; fi
endef

test: $(VENV_STAMP) $(OTHER_STAMPS)
	@status=0; \
	echo "=== full suite on $$($(PY) -V)"; \
	$(PY) -m pytest --durations=10 $(PYTEST_ARGS) || status=$$?; \
	for v in $(OTHER_PYTHONS); do \
	  echo "=== core tests on $$($(VENV)-$$v/bin/python -V)"; \
	  $(run_core); \
	done; \
	if [ $$status -ne 0 ]; then echo "make test: FAILED (last non-zero pytest exit status: $$status)" >&2; fi; \
	exit $$status

# The two halves on their own, for a quicker loop.
test-main: $(VENV_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-core: $(OTHER_STAMPS)
	@status=0; \
	for v in $(OTHER_PYTHONS); do \
	  echo "=== core tests on $$($(VENV)-$$v/bin/python -V)"; \
	  $(run_core); \
	done; \
	exit $$status

# CPython's test/_test_multiprocessing.py of the venv's interpreter, run against mpnb
# (tests/conformance/run.py); expected failures are the README's deliberate differences.
CONFORMANCE_ARGS ?=

conformance: $(VENV_STAMP)
	$(PY) tests/conformance/run.py $(CONFORMANCE_ARGS)

conformance-%: $(VENV)-%/$(STAMP)
	$(VENV)-$*/bin/python tests/conformance/run.py $(CONFORMANCE_ARGS)

# ci/floors.txt must pin the floors pyproject.toml declares (no venv needed).
check-floors:
	$(PYTHON) ci/check_floors.py

# Core, kernel and Dask-cluster tests with every dependency at its floor (the dask extra
# included), then the notebooks (the tests that use nbclient and nbformat). The browser
# tests need the browser extra, which the floors do not cover.
test-floors: check-floors $(FLOORS_STAMP)
	@echo "=== core and kernel tests on $$($(FLOORS_VENV)/bin/python -V), floors of $(FLOORS):"
	@$(FLOORS_VENV)/bin/python -m pip list --format=freeze 2>/dev/null \
	  | grep -iE '^(cloudpickle|psutil|ipython|ipykernel|ipywidgets|pytest|pytest-timeout|jupyter.client|nbclient|nbformat|nbconvert|numpy|matplotlib|pandas|dask|distributed)==' \
	  | tr '\n' ' '; echo
	$(FLOORS_VENV)/bin/python -m pytest -m "(core or kernel) and not browser" $(PYTEST_ARGS)
	@echo "=== the notebooks (nbclient and nbformat at their floors)"
	$(FLOORS_VENV)/bin/python -m pytest tests/test_notebooks.py $(PYTEST_ARGS)

# The wheel as users get it: built from this tree, installed (not editable) into a fresh
# venv, then used from outside the checkout.
test-wheel: $(VENV_STAMP)
	rm -rf dist $(WHEEL_VENV)
	$(PY) -m pip wheel $(PIP_FLAGS) --no-deps -w dist .
	wheel=$$(ls dist/mpnb-*-py3-none-any.whl); \
	$(PY) -c 'import sys, zipfile; names = zipfile.ZipFile(sys.argv[1]).namelist(); \
	  assert "mpnb/py.typed" in names, "py.typed is not in the wheel"; \
	  assert "mpnb/magics/pool.py" in names, "mpnb.magics is not in the wheel"; \
	  assert "mpnb/output/relay.py" in names, "mpnb.output is not in the wheel"; \
	  assert "mpnb/dashboard/widget.py" in names, "mpnb.dashboard is not in the wheel"; \
	  assert not [n for n in names if n.startswith("tests/")], "tests/ is in the wheel"; \
	  print(sys.argv[1], len(names), "files, py.typed included")' "$$wheel"; \
	$(PYTHON) -m venv $(WHEEL_VENV); \
	$(WHEEL_VENV)/bin/python $(PIP_INSTALL) pip; \
	$(WHEEL_VENV)/bin/python $(PIP_INSTALL) "$$wheel"; \
	out=$$(mktemp -d); cp ci/wheel_smoke.py "$$out/"; \
	(cd "$$out" && $(abspath $(WHEEL_VENV))/bin/python wheel_smoke.py); \
	rm -rf "$$out"

demo: $(VENV_STAMP)
	$(PY) notebooks/run_notebooks.py $(NOTEBOOK)

notebooks: $(VENV_STAMP)
	$(PY) notebooks/run_notebooks.py --all

$(BENCH_STAMP): benchmarks/requirements.txt $(VENV_STAMP)
	$(PY) -m pip install $(PIP_FLAGS) -r benchmarks/requirements.txt
	touch $@

bench: $(VENV_STAMP) $(BENCH_STAMP)
	$(PY) -m benchmarks $(if $(ONLY),--only $(ONLY))

# Lint, format, types and import contracts (configured in pyproject.toml and .importlinter);
# .ci/run calls it before the tests, .pre-commit-config.yaml runs the same checks.
LINT_PATHS := mpnb tests benchmarks ci notebooks/run_notebooks.py

lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf build dist .pytest_cache tests/artifacts *.egg-info
	find . -path ./$(VENV) -prune -o -path './$(VENV)-*' -prune -o \
	  -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -path './$(VENV)-*' -prune -o \
	  -name .ipynb_checkpoints -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(VENV)-*
