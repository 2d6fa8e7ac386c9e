# jumpqueue developer tasks.  `make test` is what CI runs (through .ci/run).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
MAKEFLAGS += --no-print-directory

# ------------------------------------------------------------ interpreters
# find_py(3.X): newest pyenv build of 3.X (plain X.Y.Z dirs only, so no
# free-threaded or dev builds), else python3.X on PATH; each candidate must
# actually start (a pyenv shim for a missing version does not). Not PYENV_DIR:
# pyenv's shims set that to the current directory, which would hide the builds.
PYENV_HOME ?= $(or $(PYENV_ROOT),$(HOME)/.pyenv)
find_py = $(shell for p in \
    $$(ls -d $(PYENV_HOME)/versions/$(1).*/bin/python$(1) 2>/dev/null \
       | grep -E '/versions/[0-9]+\.[0-9]+\.[0-9]+/bin/' | sort -V -r) \
    $$(command -v python$(1) 2>/dev/null); do \
    "$$p" -c 'import sys' >/dev/null 2>&1 && { echo "$$p"; break; }; done)

PYVERSIONS := 3.10 3.11 3.12 3.13
# Main venv uses the newest Python found; `make PY=...` overrides.
# (Recursive `=`: only looked up when a recipe needs it.)
PY ?= $(or $(call find_py,3.13),$(call find_py,3.12),$(call find_py,3.11),$(call find_py,3.10),python3)

# Source dirs that exist (benchmarks/ may not yet).
CODE_DIRS := $(wildcard src tests benchmarks examples docs/hooks)

# ------------------------------------------------------------ virtualenvs
# A stamp file records the last install: re-running is instant, but an
# edit to pyproject.toml, or to the version in __init__.py (which the
# installed metadata copies), reinstalls.
VENV := .venv
STAMP := $(VENV)/.installed
INSTALL_INPUTS := pyproject.toml src/jumpqueue/__init__.py

.PHONY: venv
venv: $(STAMP)

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(INSTALL_INPUTS) | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test,demo,sqlite,docs]'
	@touch $@

# Per-version venvs for the compatibility legs: .venv-3.10, .venv-3.11, ...
.venv-%/bin/python:
	@py='$(call find_py,$*)'; \
	if [ -z "$$py" ]; then echo "Python $* not found" >&2; exit 1; fi; \
	"$$py" -m venv .venv-$*

.venv-%/.installed: $(INSTALL_INPUTS) | .venv-%/bin/python
	.venv-$*/bin/python -m pip install -q --upgrade pip
	.venv-$*/bin/python -m pip install -q -e '.[test]'
	@touch $@

# The benchmarks' peers (the `bench` extra) go into the main venv only
# when `make bench` needs them.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(INSTALL_INPUTS) | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[bench]'
	@touch $@

# The Django Tasks backend on the other Django release with `django.tasks` (the
# main venv has the newest; Django 6 needs Python 3.12+): its own small venv.
DJANGO_OTHER := 6.0
DJANGO_VENV := .venv-django-$(DJANGO_OTHER)

$(DJANGO_VENV)/.installed: $(INSTALL_INPUTS)
	$(PY) -m venv $(DJANGO_VENV)
	$(DJANGO_VENV)/bin/python -m pip install -q --upgrade pip
	$(DJANGO_VENV)/bin/python -m pip install -q -e '.[sqlite]' pytest pytest-timeout \
	  hypothesis 'django~=$(DJANGO_OTHER).0'
	@touch $@

# Pattern-built venvs are not throwaway intermediates: keep them.
.PRECIOUS: .venv-%/bin/python .venv-%/.installed

# ------------------------------------------------------------ checks
.PHONY: lint format typecheck cov test test-serial test-fast test-all $(addprefix test-,$(PYVERSIONS))

lint: $(STAMP)
	$(VENV)/bin/ruff check $(CODE_DIRS)
	$(VENV)/bin/ruff format --check $(CODE_DIRS)
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format $(CODE_DIRS)
	$(VENV)/bin/ruff check --fix $(CODE_DIRS)

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict src tests examples docs/hooks

# Branch coverage, subprocesses included: `coverage run` (not pytest-cov) so
# the pytest11 plugin is imported while measuring; pyproject's
# `patch = ["subprocess", "_exit"]` makes each Python child write its own
# .coverage.* file (pytest-xdist's two workers too), `combine` merges them,
# `report` enforces fail_under. The tests mostly wait on servers, brokers and
# children, so two workers take about half the time of one.
cov: $(STAMP)
	@rm -f .coverage .coverage.*
	$(VENV)/bin/coverage run -m pytest -n 2 --dist worksteal
	$(VENV)/bin/coverage combine -q
	$(VENV)/bin/coverage report

# test-3.X: plain pytest (no coverage, no lint) in .venv-3.X. A Python
# that is not installed is skipped loudly, not failed. (Static pattern
# rule, so these can be .PHONY.)
$(addprefix test-,$(PYVERSIONS)): test-%:
	@py='$(call find_py,$*)'; \
	if [ -z "$$py" ]; then \
	  echo "*** Python $* not found on this machine: SKIPPING the $* test leg ***"; \
	  exit 0; \
	fi; \
	$(MAKE) .venv-$*/.installed; \
	echo "--- pytest $(PYTEST_ARGS) on $$(.venv-$*/bin/python -V)"; \
	.venv-$*/bin/python -m pytest $(PYTEST_ARGS)

# The oldest Python's leg of `make test`: what differs from one Python to the next
# (asyncio, multiprocessing, typing, the standard library) without the real servers
# and brokers, whose code is the same on every Python and which the coverage leg runs.
.PHONY: test-oldest
test-oldest:
	$(MAKE) test-3.10 PYTEST_ARGS="-m 'not server and not broker'"

# The backend's conformance and in-process tests on Django $(DJANGO_OTHER) (seconds).
.PHONY: test-django
test-django: $(DJANGO_VENV)/.installed
	@echo "--- Django Tasks backend on Django $$($(DJANGO_VENV)/bin/python -m django --version)"
	$(DJANGO_VENV)/bin/python -m pytest -q -p no:cacheprovider \
	  tests/django_tasks/test_conformance.py tests/django_tasks/test_backend.py

# Lint, types and the docs first (they fail in seconds), then the test legs side by
# side: coverage on the newest Python, the oldest supported one without real servers
# and brokers (test-oldest), then the Django Tasks backend on the other Django
# release. Each leg's output is printed in one piece when it ends. `make
# test-serial` runs them one after the other; `make test-all` runs everything on
# every Python.
test: lint typecheck docs
	$(MAKE) -j2 --output-sync=target cov test-oldest test-django

test-serial: lint typecheck docs cov test-oldest test-django

# The documentation site (mkdocs.yml), built into site/. --strict: a broken
# link, a missing page or a reference to a name that is not there fails.
.PHONY: docs docs-serve
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

# The unit tests alone, in under a minute: no real servers, brokers, child
# processes or tmpfs mounts (the markers tests/conftest.py gives).
test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m 'not server and not broker and not process and not tmpfs'

# pytest on every supported Python that is installed here.
test-all: $(addprefix test-,$(PYVERSIONS))

# The long chaos run, not part of `make test` (which runs a bounded version of
# tests/chaos): a million mixed calls with flat memory and kill -9 loops under
# load for ten minutes, printing their figures, then the property tests with the
# "soak" hypothesis profile (many more examples, at random). About 20 minutes;
# `timeout` stops it after an hour, and the soak then kills the servers it started.
.PHONY: soak
soak: $(STAMP)
	timeout 3600 $(VENV)/bin/python -m tests.chaos.soak --calls 1000000 --kill-seconds 600
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/chaos --hypothesis-profile=soak --timeout=1800

# ------------------------------------------------------------ other
.PHONY: demo bench clean

demo: $(STAMP)
	$(VENV)/bin/jumpqueue demo

# Side-by-side measurements (not tests): each prints a Markdown table for the README;
# overload.py and curves.py also redraw their plots in docs/img/.
bench: $(BENCH_STAMP)
	$(VENV)/bin/python benchmarks/handoff.py
	$(VENV)/bin/python benchmarks/process.py
	$(VENV)/bin/python benchmarks/journal.py
	$(VENV)/bin/python benchmarks/http_latency.py
	$(VENV)/bin/python benchmarks/defaults.py
	$(VENV)/bin/python benchmarks/handoff_http.py
	$(VENV)/bin/python benchmarks/status.py
	$(VENV)/bin/python benchmarks/overload.py --plot docs/img/overload-policies.png
	$(VENV)/bin/python benchmarks/django_tasks.py
	$(VENV)/bin/python benchmarks/cpu_priority.py
	$(VENV)/bin/python benchmarks/curves.py

clean:
	rm -rf .venv .venv-* .pytest_cache .mypy_cache .ruff_cache \
	  .coverage .coverage.* htmlcov dist build site
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} + \
	  -o -name '*.egg-info' -type d -prune -exec rm -rf {} +
