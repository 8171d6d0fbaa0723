# Build and test the temperstack.alerting collection.
#
#   make test         everything CI runs: venvs, lint, sanity (2.21 + 2.19), units
#                     (2.21 + 2.18, the newest and the oldest supported core),
#                     integration, build + tarball check + install check,
#                     galaxy-importer
#   make venv         .venv (Python 3.13, ansible-core 2.21),
#                     .venv-2.19 (Python 3.11, ansible-core 2.19),
#                     .venv-2.18 (Python 3.11, ansible-core 2.18) and
#                     .venv-lint (Python 3.13, ansible-core 2.21, the lint tools) and
#                     .venv-eda (Python 3.13, ansible-rulebook, no ansible-core)
#   make stage        copy the collection to build/collections/ansible_collections/
#                     temperstack/alerting (ansible-test needs an
#                     .../ansible_collections/<namespace>/<name> path)
#   make pip-shim     offline get-pip for ansible-test's sanity virtualenvs
#   make sanity       ansible-test sanity with both ansible-core versions
#                     (sanity-2.21 / sanity-2.19 for one of them)
#   make units        ansible-test units (Python 3.13, ansible-core 2.21)
#   make units-2.18   the same on the oldest supported core (Python 3.11, ansible-core 2.18)
#   make stand-in-tests  pytest tests/stand_in (the stand-in server's self-test)
#   make faults-quick the fault-injection, fuzzing and secret-leak suite (tests/faults),
#                     short variant (part of test)
#   make faults       its long variant; rewrites docs/reliability.md from the run
#   make integration  ansible-test integration (Python 3.13, ansible-core 2.21)
#                     (units-2.19 / integration-2.19: same on 2.19, not in test)
#   make lint         quality gates on the staged copy: ansible-lint (production
#                     profile, offline), antsibull-docs lint-collection-docs,
#                     antsibull-changelog lint, ansible-builder (lint-ansible,
#                     lint-docs, lint-changelog, lint-ee for one of them)
#   make build        build the tarball, check its contents, install it
#   make installed-example  build, then run examples/alert.yml from the install
#                     against the stand-in
#   make galaxy-importer  build, then galaxy-importer on the tarball (offline)
#   make demo         build + install the tarball, run examples/ against a stand-in
#   make demo-eda     the stand-in and ansible-rulebook with the shipped rulebook: curl an
#                     Alarm, the remediation's OK arrives (docs/event-driven.md; --check: by itself)
#   make bench        benchmarks (tools/bench/, 25-40 minutes on an idle machine):
#                     writes docs/performance.md; BENCH_ARGS='--cases 4' for one case
#   make bench-smoke  one scaled-down iteration of every benchmark case (in test)
#   make pg-start     a throwaway PostgreSQL 15 server for the shared-ledger tests
#                     (build/pg, 127.0.0.1, scram-sha-256; tools/pg_server.sh);
#                     make pg-stop stops it (make test does both itself)
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
VENV_2_18 := $(REPO_ROOT)/.venv-2.18
VENV_STAMP      := $(VENV)/.installed
VENV_2_19_STAMP := $(VENV_2_19)/.installed
VENV_2_18_STAMP := $(VENV_2_18)/.installed
# The quality-gate tools (ansible-lint, antsibull-docs, antsibull-changelog,
# galaxy-importer, ansible-builder) live in a venv of their own: they pull in
# many packages that ansible-test's environments must not see.
VENV_LINT       := $(REPO_ROOT)/.venv-lint
VENV_LINT_STAMP := $(VENV_LINT)/.installed
# ansible-rulebook (Event-Driven Ansible, needs Java 17) in a venv of its own, without ansible-core, as in a
# decision environment: the integration target `eda` runs it (tests/eda.env in the staged copy names it).
VENV_EDA       := $(REPO_ROOT)/.venv-eda
VENV_EDA_STAMP := $(VENV_EDA)/.installed

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

.PHONY: help test venv stage pip-shim sanity sanity-2.21 sanity-2.19 units units-2.19 units-2.18 \
	integration integration-2.19 stand-in-tests build demo clean \
	lint lint-ansible lint-docs lint-changelog lint-ee installed-example galaxy-importer

help:
	@sed -n '3,/^#$$/s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

# --- test: what .ci/run runs --------------------------------------------------
# One shell runs the steps in order and stops at the first failure; each step
# gets a header and its wall-clock time, and a summary closes the run.
TEST_STEPS := \
	"venv|venv" \
	"stage + pip-shim|stage pip-shim" \
	"lint: ansible-lint, antsibull, ansible-builder|lint NO_STAGE=1" \
	"sanity: ansible-core 2.21 / Python 3.13|sanity-2.21 NO_STAGE=1" \
	"sanity: ansible-core 2.19 / Python 3.11|sanity-2.19 NO_STAGE=1" \
	"postgresql: a throwaway server for the shared ledger (build/pg)|pg-stage-env" \
	"units: ansible-core 2.21 / Python 3.13|units NO_STAGE=1" \
	"units: ansible-core 2.18 / Python 3.11|units-2.18 NO_STAGE=1" \
	"stand-in self-test: pytest tests/stand_in|stand-in-tests NO_STAGE=1" \
	"integration: ansible-core 2.21 / Python 3.13|integration NO_STAGE=1" \
	"faults (short): tests/faults|faults-quick NO_STAGE=1" \
	"bench smoke: one scaled-down iteration per case|bench-smoke" \
	"build: tarball, install, example from install|build installed-example NO_BUILD=1" \
	"galaxy-importer: the built tarball, offline|galaxy-importer NO_BUILD=1"

test:
	@summary=""; total_start=$$SECONDS; \
	trap 'printf "\n==================== postgresql: stop ====================\n"; $(MAKE) --no-print-directory pg-stop' EXIT; \
	trap 'exit 130' INT TERM HUP; \
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
venv: $(VENV_STAMP) $(VENV_2_19_STAMP) $(VENV_2_18_STAMP) $(VENV_LINT_STAMP) $(VENV_EDA_STAMP)

need_python = @if [[ ! -x "$(1)" ]]; then echo "Python $(2) not found: set PYTHON$(subst .,,$(2))=/path/to/python$(2)" >&2; exit 1; fi

# $(1): the venv, $(2): its Python, $(3): the requirement files to install.
define new_venv
rm -rf $(1)
$(2) -m venv $(1)
$(1)/bin/python -m pip install --quiet --disable-pip-version-check $(addprefix -r ,$(3))
endef

# Each stamp depends on its requirement files: editing a pin rebuilds the venv.
$(VENV_STAMP): requirements-test.txt requirements-core-2.21.txt
	$(call need_python,$(PYTHON313),3.13)
	$(call new_venv,$(VENV),$(PYTHON313),$^)
	$(VENV)/bin/ansible --version | sed -n 1p
	touch $@

$(VENV_2_19_STAMP): requirements-test.txt requirements-core-2.19.txt
	$(call need_python,$(PYTHON311),3.11)
	$(call new_venv,$(VENV_2_19),$(PYTHON311),$^)
	$(VENV_2_19)/bin/ansible --version | sed -n 1p
	touch $@

# The oldest ansible-core the collection supports (meta/runtime.yml): only the
# unit tests run on it, so that a use of a newer core's API fails in `make test`.
$(VENV_2_18_STAMP): requirements-test.txt requirements-core-2.18.txt
	$(call need_python,$(PYTHON311),3.11)
	$(call new_venv,$(VENV_2_18),$(PYTHON311),$^)
	$(VENV_2_18)/bin/ansible --version | sed -n 1p
	touch $@

# Same ansible-core as .venv (requirements-core-2.21.txt), so lint, docs and
# the importer see the collection as the tests do.
$(VENV_LINT_STAMP): requirements-lint.txt requirements-core-2.21.txt
	$(call need_python,$(PYTHON313),3.13)
	$(call new_venv,$(VENV_LINT),$(PYTHON313),$^)
	PATH="$(VENV_LINT)/bin:$$PATH" ansible-lint --offline --nocolor --version | sed -n 1p
	touch $@

$(VENV_EDA_STAMP): requirements-eda.txt
	$(call need_python,$(PYTHON313),3.13)
	$(call new_venv,$(VENV_EDA),$(PYTHON313),$^)
	$(VENV_EDA)/bin/ansible-rulebook --version | sed -n 1p
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
# pip install) to those paths. .venv-2.18 needs none: it only runs `units
# --local`, which installs into the venv itself and bootstraps pip only for
# sanity (collect_requirements() in python_requirements.py).
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
units: venv $(STAGE_DEP) pg-stage-env
	$(call run_in,$(VENV)) ansible-test units --local --python 3.13 --requirements $(ANSIBLE_TEST_FLAGS) $(UNITS_ARGS)

units-2.19: venv $(STAGE_DEP) pg-stage-env
	$(call run_in,$(VENV_2_19)) ansible-test units --local --python 3.11 --requirements $(ANSIBLE_TEST_FLAGS) $(UNITS_ARGS)

units-2.18: venv $(STAGE_DEP) pg-stage-env
	$(call run_in,$(VENV_2_18)) ansible-test units --local --python 3.11 --requirements $(ANSIBLE_TEST_FLAGS) $(UNITS_ARGS)

# --- stand-in self-test --------------------------------------------------------
# tests/stand_in/ is not a unit test directory of ansible-test (it only runs
# tests/unit/), so its own pytest suite runs here, from the staged copy so no
# caches land in the work tree.
stand-in-tests: venv $(STAGE_DEP)
	@if [[ ! -d $(STAGE)/tests/stand_in ]]; then echo "stand-in-tests: no tests/stand_in, nothing to run"; exit 0; fi; \
	cd $(STAGE) && set -x && $(VENV)/bin/python -m pytest -p no:cacheprovider -q tests/stand_in

# --- faults: fault injection, fuzzing, secret leaks ------------------------------
# pytest tests/faults from the staged copy (it lies in .../ansible_collections/
# temperstack/alerting, so its ansible-playbook runs and imports find the
# collection under test). Everything it writes (outputs, ledgers, temp files,
# all scanned for the key at the end) goes to FAULTS_WORK/work-<profile>, its
# figures to FAULTS_WORK/figures-<profile>.json. `faults` (about 45 minutes)
# then rewrites docs/reliability.md from its figures.
FAULTS_WORK ?= $(REPO_ROOT)/build/faults
FAULTS_ARGS ?=
run_faults = cd $(STAGE) && env -u ANSIBLE_COLLECTIONS_PATH -u ANSIBLE_COLLECTIONS_PATHS \
	TEMPERSTACK_FAULTS_PROFILE=$(1) TEMPERSTACK_FAULTS_WORK=$(FAULTS_WORK)/work-$(1) \
	TEMPERSTACK_FAULTS_REPORT=$(FAULTS_WORK)/figures-$(1).json \
	TEMPERSTACK_FAULTS_REVISION="$$(git -C $(REPO_ROOT) describe --always --dirty 2>/dev/null)" \
	$(VENV)/bin/python -m pytest -p no:cacheprovider -q -rfE tests/faults $(FAULTS_ARGS)
.PHONY: faults faults-quick

faults-quick: $(VENV_STAMP) $(STAGE_DEP)
	$(call run_faults,quick)

faults: $(VENV_STAMP) $(STAGE_DEP)
	$(call run_faults,full)
	$(VENV)/bin/python tools/reliability_report.py $(FAULTS_WORK)/figures-full.json docs/reliability.md

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
integration: venv $(STAGE_DEP) pg-stage-env eda-stage-env
	$(call run_in,$(VENV)) ansible-test integration --local --python 3.13 --requirements $(ANSIBLE_TEST_FLAGS) $(INTEGRATION_ARGS)

integration-2.19: venv $(STAGE_DEP) pg-stage-env eda-stage-env
	$(call run_in,$(VENV_2_19)) ansible-test integration --local --python 3.11 --requirements $(ANSIBLE_TEST_FLAGS) $(INTEGRATION_ARGS)

# ansible-test passes no environment to runme.sh: the target `eda` finds ansible-rulebook through this file.
.PHONY: eda-stage-env
eda-stage-env: $(VENV_EDA_STAMP)
	mkdir -p $(STAGE)/tests
	printf 'TEMPERSTACK_TEST_RULEBOOK=%q\n' "$(VENV_EDA)/bin/ansible-rulebook" >$(STAGE)/tests/eda.env

# tools/demo.sh says first where the alerts will go, then (after the build) runs the
# playbooks of examples/ from the installed tarball; see the comment at its top.
demo:
	@tools/demo.sh --announce
	@$(MAKE) --no-print-directory build
	DEMO_VENV=$(VENV) DEMO_COLLECTIONS_PATH=$(INSTALL_DIR) tools/demo.sh

# tools/demo_eda.sh: see the comment at its top. DEMO_EDA_ARGS=--check posts the Alarm itself and exits.
DEMO_EDA_ARGS ?=
.PHONY: demo-eda
demo-eda: $(VENV_STAMP) $(VENV_EDA_STAMP)
	DEMO_VENV=$(VENV) DEMO_EDA_VENV=$(VENV_EDA) tools/demo_eda.sh $(DEMO_EDA_ARGS)

# --- build ----------------------------------------------------------------------
# Built from a fresh copy of the source tree (same file list as `make stage`),
# so local clutter never ends up in the artifact and the result matches what a
# clean clone builds. The tarball is checked, then installed into an empty
# collections path and verified against its own manifest, all offline.
# Only .venv: `make demo` builds too, and needs neither the 2.19 nor the lint venv.
build: $(VENV_STAMP)
	tools/stage_collection.sh $(BUILD_SRC)
	rm -rf $(DIST_DIR) $(INSTALL_DIR)
	mkdir -p $(DIST_DIR) $(INSTALL_DIR)
	cd $(BUILD_SRC) && $(VENV)/bin/ansible-galaxy collection build --output-path $(DIST_DIR)
	$(VENV)/bin/python tools/check_tarball.py $(DIST_DIR)/temperstack-alerting-*.tar.gz
	$(VENV)/bin/ansible-galaxy collection install --offline -p $(INSTALL_DIR) $(DIST_DIR)/temperstack-alerting-*.tar.gz
	$(VENV)/bin/ansible-galaxy collection verify --offline -p $(INSTALL_DIR) temperstack.alerting
	ANSIBLE_COLLECTIONS_PATH=$(INSTALL_DIR) $(VENV)/bin/ansible-galaxy collection list -p $(INSTALL_DIR) temperstack.alerting

# --- lint: the ecosystem's quality gates ----------------------------------------
# Run with .venv-lint in the staged copy: it lies in an .../ansible_collections/
# temperstack/alerting path, so temperstack.alerting.* resolves, and it holds
# exactly the files git knows about. Nothing asks Galaxy for anything.
# ANSIBLE_HOME keeps ansible-lint's and ansible-doc's caches (and the collections
# path they add, ANSIBLE_HOME/collections) out of ~/.ansible.
LINT_WORK := $(REPO_ROOT)/build/lint
lint_in = cd $(STAGE) && env -u ANSIBLE_COLLECTIONS_PATH -u ANSIBLE_COLLECTIONS_PATHS -u ANSIBLE_CONFIG \
	PATH="$(VENV_LINT)/bin:$$PATH" VIRTUAL_ENV="$(VENV_LINT)" ANSIBLE_HOME="$(LINT_WORK)/ansible-home" ANSIBLE_NOCOLOR=1

lint: lint-ansible lint-docs lint-changelog lint-ee

# Production profile over roles/, examples/, plugins/, meta/, changelogs/, galaxy.yml
# ...; tests/integration and tests/unit are excluded in .ansible-lint.
lint-ansible: $(VENV_LINT_STAMP) $(STAGE_DEP)
	rm -rf $(LINT_WORK)/ansible-home && mkdir -p $(LINT_WORK)/ansible-home
	$(lint_in) ANSIBLE_COLLECTIONS_PATH="$(abspath $(STAGE)/../../..)" \
		ansible-lint --offline --profile production --nocolor

# Plugin and role docs: schema, markup, references to other plugins and options.
lint-docs: $(VENV_LINT_STAMP) $(STAGE_DEP)
	$(lint_in) antsibull-docs lint-collection-docs --plugin-docs \
		--validate-collection-refs=dependent --disallow-unknown-collection-refs .

# Fragments and changelogs/changelog.yaml; CHANGELOG.md and CHANGELOG.rst must be
# what changelogs/ generates (after `antsibull-changelog release`, commit all three).
lint-changelog: $(VENV_LINT_STAMP) $(STAGE_DEP)
	$(lint_in) antsibull-changelog lint
	$(lint_in) antsibull-changelog lint-changelog-yaml --strict changelogs/changelog.yaml
	rm -rf $(LINT_WORK)/changelog && mkdir -p $(LINT_WORK)/changelog
	for format in md rst; do \
		out=$(LINT_WORK)/changelog/CHANGELOG.$$format; \
		$(lint_in) antsibull-changelog generate --output $$out --output-format $$format; \
		diff -u CHANGELOG.$$format $$out \
			|| { echo "CHANGELOG.$$format is not what changelogs/ generates: run antsibull-changelog generate" >&2; exit 1; }; \
	done

# The example execution environment is a valid ansible-builder 3 definition
# (`create` only writes the build context: no container engine, no Galaxy), and
# ansible-builder reads meta/execution-environment.yml, and finds there psycopg, which
# the shared ledger (ledger_url) needs. The example decision environment (EDA) is valid too.
lint-ee: $(VENV_LINT_STAMP) $(STAGE_DEP)
	rm -rf $(LINT_WORK)/ee-context
	$(lint_in) ansible-builder create --file examples/execution-environment/execution-environment.yml \
		--context $(LINT_WORK)/ee-context --output-filename Containerfile
	grep -q '^- name: temperstack\.alerting$$' $(LINT_WORK)/ee-context/_build/requirements.yml
	$(lint_in) ansible-builder introspect --sanitize $(abspath $(STAGE)/../../..) | tee $(LINT_WORK)/ee-introspect.txt
	grep -q 'psycopg\[binary\]>=3.1' $(LINT_WORK)/ee-introspect.txt
	rm -rf $(LINT_WORK)/de-context
	$(lint_in) ansible-builder create --file examples/decision-environment/decision-environment.yml \
		--context $(LINT_WORK)/de-context --output-filename Containerfile
	grep -q '^ansible-rulebook' $(LINT_WORK)/de-context/_build/requirements.txt
	grep -q '^- name: temperstack\.alerting$$' $(LINT_WORK)/de-context/_build/requirements.yml

# --- after the build: the artifact as users get it ------------------------------
# Both build first; `make test` runs `build` as a step of its own and passes
# NO_BUILD=1.
ifeq ($(NO_BUILD),)
BUILD_DEP := build
endif
INSTALLED_CHECK_WORK := $(REPO_ROOT)/build/installed-check

# With nothing but the install on the collections path: ansible-doc loads the
# module, the callback and the role from it, and the installed examples/alert.yml
# raises, repeats and resolves an alert; the stand-in must get one Alarm, one OK.
installed-example: $(VENV_STAMP) $(BUILD_DEP)
	tools/check_installed.sh $(VENV) $(INSTALL_DIR) $(INSTALLED_CHECK_WORK)

# galaxy-importer as Galaxy runs it on upload, minus ansible-test in a container
# (tools/galaxy-importer.cfg); any warning it logs fails.
galaxy-importer: $(VENV_LINT_STAMP) $(BUILD_DEP)
	$(VENV_LINT)/bin/python tools/check_galaxy_import.py $(LINT_WORK)/galaxy-importer \
		$(DIST_DIR)/temperstack-alerting-*.tar.gz

# --- bench ----------------------------------------------------------------------
# tools/bench/bench.py runs the cases of docs/performance.md, each interleaved with
# its baseline, against the stand-in and a copy of the collection staged in
# build/bench (ledgers and ANSIBLE_HOME there too, never ~/.ansible), and rewrites
# docs/performance.md. bench-smoke runs one scaled-down iteration of each case in
# build/bench-smoke and asserts no target: it only keeps the harness working.
BENCH_ARGS ?=
.PHONY: bench bench-smoke

bench: $(VENV_STAMP)
	$(VENV)/bin/python tools/bench/bench.py $(BENCH_ARGS)

bench-smoke: $(VENV_STAMP)
	$(VENV)/bin/python tools/bench/bench.py --smoke

# --- clean --------------------------------------------------------------------
clean:
	-$(PG_SERVER) stop $(PG_DIR)
	rm -rf $(VENV) $(VENV_2_19) $(VENV_2_18) $(VENV_LINT) $(VENV_EDA) build tests/output .pytest_cache .hypothesis
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# The PostgreSQL server of the shared-ledger tests (pg-start, pg-stop, pg-stage-env): last, because its
# prerequisites use STAGE.
include $(REPO_ROOT)/tools/pg_server.mk
