# Build and test the temperstack.alerting collection.
#
#   make test         everything CI runs: venvs, sanity (2.21 + 2.19), units,
#                     integration, build + tarball check + install check
#   make venv         .venv (Python 3.13, ansible-core 2.21) and
#                     .venv-2.19 (Python 3.11, ansible-core 2.19)
#   make stage        copy the collection to build/collections/ansible_collections/
#                     temperstack/alerting (ansible-test needs an
#                     .../ansible_collections/<namespace>/<name> path)
#   make pip-shim     offline get-pip for ansible-test's sanity virtualenvs
#   make sanity       ansible-test sanity with both ansible-core versions
#                     (sanity-2.21 / sanity-2.19 for one of them)
#   make units        ansible-test units (Python 3.13, ansible-core 2.21)
#   make stand-in-tests  pytest tests/stand_in (the stand-in server's self-test)
#   make integration  ansible-test integration (Python 3.13, ansible-core 2.21)
#                     (units-2.19 / integration-2.19: same on 2.19, not in test)
#   make build        build the tarball, check its contents, install it
#   make demo         for now the same as `make integration`
#   make clean        remove venvs, build output and caches
#
# Extra arguments for ansible-test: make sanity SANITY_ARGS='--test pylint'
#                                   make integration INTEGRATION_ARGS='-v my_target'
#
# Nothing here needs Docker, Galaxy or any host except the Python package index.
# ansible-test keeps its sanity virtualenvs in ~/.ansible/test/venv and its
# get-pip cache in ~/.ansible/test/cache (it always uses ~, i.e. $HOME).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
# Every ansible-test run uses the one staged copy: never run them in parallel.
.NOTPARALLEL:

REPO_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))

# --- interpreters -------------------------------------------------------------
# Override on the command line or in the environment if they live elsewhere:
#   make test PYTHON313=/usr/bin/python3.13 PYTHON311=/usr/bin/python3.11
PYENV_ROOT_DIR := $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
PYTHON313 ?= $(firstword $(wildcard $(PYENV_ROOT_DIR)/versions/3.13*/bin/python3.13) $(shell command -v python3.13 2>/dev/null))
PYTHON311 ?= $(firstword $(wildcard $(PYENV_ROOT_DIR)/versions/3.11*/bin/python3.11) $(shell command -v python3.11 2>/dev/null))

# --- virtual environments -----------------------------------------------------
VENV      := $(REPO_ROOT)/.venv
VENV_2_19 := $(REPO_ROOT)/.venv-2.19
VENV_STAMP      := $(VENV)/.installed
VENV_2_19_STAMP := $(VENV_2_19)/.installed

# --- staging --------------------------------------------------------------
STAGE_ROOT := $(REPO_ROOT)/build/collections
STAGE      := $(STAGE_ROOT)/ansible_collections/temperstack/alerting
DIST_DIR   := $(REPO_ROOT)/build/dist
BUILD_SRC  := $(REPO_ROOT)/build/src/ansible_collections/temperstack/alerting
INSTALL_DIR := $(REPO_ROOT)/build/install

ANSIBLE_TEST_FLAGS := --color no
SANITY_ARGS ?=
UNITS_ARGS ?=
INTEGRATION_ARGS ?=

# ansible-test runs with the venv's bin first on PATH so that every helper it
# starts (ansible-playbook, ansible-doc, python3.13) comes from that venv.
# ANSIBLE_COLLECTIONS_PATH is cleared so that nothing installed elsewhere on the
# machine can shadow the staged collection.
run_in = cd $(STAGE) && env -u ANSIBLE_COLLECTIONS_PATH -u ANSIBLE_COLLECTIONS_PATHS PATH="$(1)/bin:$$PATH" VIRTUAL_ENV="$(1)"

.PHONY: help test venv stage pip-shim sanity sanity-2.21 sanity-2.19 units units-2.19 \
	integration integration-2.19 stand-in-tests build demo clean

help:
	@sed -n '3,20s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

# --- test: what .ci/run runs --------------------------------------------------
# One shell runs the steps in order and stops at the first failure; each step
# gets a header and its wall-clock time, and a summary closes the run.
TEST_STEPS := \
	"venv|venv" \
	"stage + pip-shim|stage pip-shim" \
	"sanity: ansible-core 2.21 / Python 3.13|sanity-2.21 NO_STAGE=1" \
	"sanity: ansible-core 2.19 / Python 3.11|sanity-2.19 NO_STAGE=1" \
	"units: ansible-core 2.21 / Python 3.13|units NO_STAGE=1" \
	"stand-in self-test: pytest tests/stand_in|stand-in-tests NO_STAGE=1" \
	"integration: ansible-core 2.21 / Python 3.13|integration NO_STAGE=1" \
	"build: tarball contents and install|build"

test:
	@summary=""; total_start=$$SECONDS; \
	for step in $(TEST_STEPS); do \
		name=$${step%%|*}; goals=$${step#*|}; start=$$SECONDS; \
		printf '\n==================== %s ====================\n' "$$name"; \
		if ! $(MAKE) --no-print-directory $$goals; then \
			printf '\n==================== FAILED: %s (after %ss) ====================\n' "$$name" $$((SECONDS - start)); \
			exit 1; \
		fi; \
		summary+=$$(printf '  %-48s %4ss' "$$name" $$((SECONDS - start)))$$'\n'; \
	done; \
	printf '\n==================== summary ====================\n%s  %-48s %4ss\nmake test: all steps passed\n' \
		"$$summary" "total" $$((SECONDS - total_start))

# --- venv ---------------------------------------------------------------------
venv: $(VENV_STAMP) $(VENV_2_19_STAMP)

need_python = @if [[ ! -x "$(1)" ]]; then echo "Python $(2) not found: set PYTHON$(subst .,,$(2))=/path/to/python$(2)" >&2; exit 1; fi

# The stamp depends on the requirement files: editing a pin rebuilds the venv.
$(VENV_STAMP): requirements-test.txt requirements-core-2.21.txt
	$(call need_python,$(PYTHON313),3.13)
	rm -rf $(VENV)
	$(PYTHON313) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-r requirements-test.txt -r requirements-core-2.21.txt
	$(VENV)/bin/ansible --version | sed -n 1p
	touch $@

$(VENV_2_19_STAMP): requirements-test.txt requirements-core-2.19.txt
	$(call need_python,$(PYTHON311),3.11)
	rm -rf $(VENV_2_19)
	$(PYTHON311) -m venv $(VENV_2_19)
	$(VENV_2_19)/bin/python -m pip install --quiet --disable-pip-version-check \
		-r requirements-test.txt -r requirements-core-2.19.txt
	$(VENV_2_19)/bin/ansible --version | sed -n 1p
	touch $@

# --- stage --------------------------------------------------------------------
# Always re-staged (phony), so tests never see stale files. `make test` stages
# once and passes NO_STAGE=1 to the sub-makes.
ifeq ($(NO_STAGE),)
STAGE_DEP := stage
endif

stage:
	tools/stage_collection.sh $(STAGE)

# --- pip-shim -----------------------------------------------------------------
# ansible-test bootstraps pip into its sanity virtualenvs with a get-pip script
# downloaded from a host we cannot reach, unless
# ~/.ansible/test/cache/get_pip_<pip version, dots as underscores>.py exists
# (ansible_test/_util/target/setup/requirements.py). Each ansible-test asks
# for its own pip version (get_venv_packages() in
# ansible_test/_internal/python_requirements.py): get_pip_25_2.py for
# ansible-core 2.21, get_pip_24_2.py for 2.19. tools/install_pip_shim.py asks
# the installed ansible-test and copies tools/get_pip_shim.py (ensurepip +
# pip install) to those paths.
pip-shim: venv
	$(VENV)/bin/python tools/install_pip_shim.py
	$(VENV_2_19)/bin/python tools/install_pip_shim.py

# --- sanity -------------------------------------------------------------------
sanity: sanity-2.21 sanity-2.19

sanity-2.21: venv pip-shim $(STAGE_DEP)
	$(call run_in,$(VENV)) ansible-test sanity --local --python 3.13 --requirements $(ANSIBLE_TEST_FLAGS) $(SANITY_ARGS)

sanity-2.19: venv pip-shim $(STAGE_DEP)
	$(call run_in,$(VENV_2_19)) ansible-test sanity --local --python 3.11 --requirements $(ANSIBLE_TEST_FLAGS) $(SANITY_ARGS)

# --- units --------------------------------------------------------------------
units: venv $(STAGE_DEP)
	$(call run_in,$(VENV)) ansible-test units --local --python 3.13 --requirements $(ANSIBLE_TEST_FLAGS) $(UNITS_ARGS)

units-2.19: venv $(STAGE_DEP)
	$(call run_in,$(VENV_2_19)) ansible-test units --local --python 3.11 --requirements $(ANSIBLE_TEST_FLAGS) $(UNITS_ARGS)

# --- stand-in self-test --------------------------------------------------------
# tests/stand_in/ is not a unit test directory of ansible-test (it only runs
# tests/unit/), so its own pytest suite runs here, from the staged copy so no
# caches land in the work tree.
stand-in-tests: venv $(STAGE_DEP)
	@if [[ ! -d $(STAGE)/tests/stand_in ]]; then echo "stand-in-tests: no tests/stand_in, nothing to run"; exit 0; fi; \
	cd $(STAGE) && set -x && $(VENV)/bin/python -m pytest -p no:cacheprovider -q tests/stand_in

# --- integration ----------------------------------------------------------------
# Targets live in tests/integration/targets/<name>/ with `aliases` and
# `runme.sh`. What a runme.sh sees under `ansible-test integration --local`
# (checked with ansible-core 2.21.5 and 2.19.14):
#  - cwd is a throwaway COPY of its target directory,
#      $(STAGE)/tests/output/.tmp/integration/<name>-<random>-<non-ASCII suffix>/tests/integration/targets/<name>
#    (note the non-ASCII path: quote everything). Only the target itself,
#    targets named by `needs/target/<other>` aliases and files named by
#    `needs/file/<path>` aliases are copied next to it; the rest of the
#    collection, tests/stand_in included, is NOT reachable through `..`.
#  - ANSIBLE_COLLECTIONS_PATH=$(STAGE_ROOT), so the collection root (with
#    tests/stand_in/temperstack_stand_in.py in it) is
#      "$${ANSIBLE_COLLECTIONS_PATH%%:*}/ansible_collections/temperstack/alerting"
#    Alternative: alias `needs/file/tests/stand_in/<file>` copies that file to
#    ../../../stand_in/<file> relative to the cwd.
#  - ANSIBLE_TEST_PYTHON_INTERPRETER is the venv's python (.venv/bin/python), and
#    `python` on PATH is a shim for it; ansible-playbook etc. on PATH are
#    ansible-test wrappers that run with that python.
#  - OUTPUT_DIR=$(STAGE)/tests/output/.tmp/output_dir, emptied before every
#    target: the place for ledgers, logs, certificates (TEMPERSTACK_LEDGER_PATH).
#  - INVENTORY_PATH is an inventory with `testhost` (connection local, the venv
#    python). ANSIBLE_INVENTORY=/dev/null and ANSIBLE_PYTHON_INTERPRETER is set
#    to a bogus path on purpose, so use `ansible-playbook -i "$$INVENTORY_PATH"`
#    (hosts: testhost) or pass ansible_python_interpreter yourself.
#  - HOME is unchanged (the ledger default ~/.ansible/temperstack is the real
#    one: always point TEMPERSTACK_LEDGER_PATH into OUTPUT_DIR).
integration: venv $(STAGE_DEP)
	$(call run_in,$(VENV)) ansible-test integration --local --python 3.13 --requirements $(ANSIBLE_TEST_FLAGS) $(INTEGRATION_ARGS)

integration-2.19: venv $(STAGE_DEP)
	$(call run_in,$(VENV_2_19)) ansible-test integration --local --python 3.11 --requirements $(ANSIBLE_TEST_FLAGS) $(INTEGRATION_ARGS)

demo: integration

# --- build ----------------------------------------------------------------------
# Built from a fresh copy of the source tree (same file list as `make stage`),
# so local clutter never ends up in the artifact and the result matches what a
# clean clone builds. The tarball is checked, then installed into an empty
# collections path and verified against its own manifest, all offline.
build: venv
	tools/stage_collection.sh $(BUILD_SRC)
	rm -rf $(DIST_DIR) $(INSTALL_DIR)
	mkdir -p $(DIST_DIR) $(INSTALL_DIR)
	cd $(BUILD_SRC) && $(VENV)/bin/ansible-galaxy collection build --output-path $(DIST_DIR)
	$(VENV)/bin/python tools/check_tarball.py $(DIST_DIR)/temperstack-alerting-*.tar.gz
	$(VENV)/bin/ansible-galaxy collection install --offline -p $(INSTALL_DIR) $(DIST_DIR)/temperstack-alerting-*.tar.gz
	$(VENV)/bin/ansible-galaxy collection verify --offline -p $(INSTALL_DIR) temperstack.alerting
	ANSIBLE_COLLECTIONS_PATH=$(INSTALL_DIR) $(VENV)/bin/ansible-galaxy collection list -p $(INSTALL_DIR) temperstack.alerting

# --- clean --------------------------------------------------------------------
clean:
	rm -rf $(VENV) $(VENV_2_19) build tests/output .pytest_cache .hypothesis
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
