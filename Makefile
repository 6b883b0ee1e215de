# mpnb's build and test entry points.
#
#   make venv     .venv with mpnb installed editable, its test and browser extras, and a
#                 `python3` kernelspec pointing at the venv
#   make test     the whole suite on .venv, then the core tests (-m core) on the oldest and
#                 newest other supported CPythons (from pyenv), in .venv-3.10 and .venv-3.13
#   make conformance  CPython's own multiprocessing tests against mpnb, on .venv (drop-in
#                 and extension modes, forkserver/spawn/fork; CONFORMANCE_ARGS=... to pass
#                 options); `make conformance-3.13` runs them on .venv-3.13
#   make demo     run notebooks/quickstart.ipynb on a real kernel, cell by cell
#   make notebooks  the same for every notebook in notebooks/
#   make bench    the benchmarks (ONLY=W3,W5 to pick workloads)
#   make clean    caches and build outputs; `make distclean` also removes the venvs
#
# Every venv is stamped: a re-run only reinstalls when pyproject.toml changed.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The main venv also gets the browser extra: the JupyterLab tests drive it in Chromium.
EXTRAS ?= test,browser
# Other CPythons only run the core tests, so they need the test extra alone.
OTHER_PYTHONS ?= 3.10 3.13
PIP_FLAGS ?= --progress-bar off
PYTEST_ARGS ?=
NOTEBOOK ?= notebooks/quickstart.ipynb
ONLY ?=

STAMP := .mpnb-installed
VENV_STAMP := $(VENV)/$(STAMP)
OTHER_STAMPS := $(foreach v,$(OTHER_PYTHONS),$(VENV)-$(v)/$(STAMP))
BENCH_STAMP := $(VENV)/.mpnb-bench-installed

.PHONY: help venv venvs test test-main test-core conformance demo notebooks bench clean distclean

help:
	@sed -n '3,15s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

venv: $(VENV_STAMP)

venvs: $(VENV_STAMP) $(OTHER_STAMPS)

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[$(EXTRAS)]'
	$(PY) -m ipykernel install --sys-prefix --name python3
	touch $@

# .venv-3.10/.mpnb-installed and friends: find that CPython with pyenv (or in pyenv's
# versions folder), make a venv with it, install mpnb with its test extra.
$(VENV)-%/$(STAMP): pyproject.toml
	@prefix=""; \
	if command -v pyenv >/dev/null 2>&1; then \
	  prefix=$$(pyenv prefix $* 2>/dev/null | head -n1 || true); \
	  root=$$(pyenv root); \
	else \
	  root=$${PYENV_ROOT:-$$HOME/.pyenv}; \
	fi; \
	if [ -z "$$prefix" ]; then \
	  for d in "$$root"/versions/$*.*/ /root/.pyenv/versions/$*.*/; do \
	    if [ -x "$$d/bin/python3" ]; then prefix=$${d%/}; fi; \
	  done; \
	fi; \
	if [ -z "$$prefix" ]; then \
	  if ! command -v pyenv >/dev/null 2>&1; then \
	    echo "error: pyenv not found. make test runs the core tests on CPython $(OTHER_PYTHONS) from pyenv:" >&2; \
	    echo "       install pyenv, then: pyenv install $(OTHER_PYTHONS)" >&2; \
	  else \
	    echo "error: CPython $* is not installed in pyenv ($$root). Run: pyenv install $*" >&2; \
	  fi; \
	  exit 1; \
	fi; \
	echo "CPython $* from $$prefix"; \
	set -x; \
	"$$prefix/bin/python3" -m venv $(VENV)-$*; \
	$(VENV)-$*/bin/python -m pip install $(PIP_FLAGS) --upgrade pip; \
	$(VENV)-$*/bin/python -m pip install $(PIP_FLAGS) -e '.[test]'
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

demo: $(VENV_STAMP)
	$(PY) notebooks/run_notebooks.py $(NOTEBOOK)

notebooks: $(VENV_STAMP)
	$(PY) notebooks/run_notebooks.py --all

$(BENCH_STAMP): benchmarks/requirements.txt $(VENV_STAMP)
	$(PY) -m pip install $(PIP_FLAGS) -r benchmarks/requirements.txt
	touch $@

bench: $(VENV_STAMP) $(BENCH_STAMP)
	$(PY) -m benchmarks $(if $(ONLY),--only $(ONLY))

clean:
	rm -rf build dist .pytest_cache tests/artifacts *.egg-info
	find . -path ./$(VENV) -prune -o -path './$(VENV)-*' -prune -o \
	  -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -path './$(VENV)-*' -prune -o \
	  -name .ipynb_checkpoints -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(VENV)-*
