# --- pg: the throwaway PostgreSQL server of the tests -------------------------------
# Included at the END of the Makefile (it uses REPO_ROOT and STAGE, and make expands
# prerequisite lists as it reads them). tools/pg_server.sh keeps one server per directory,
# here build/pg: PostgreSQL 15 as the system user temperstack-pg, on a free port of
# 127.0.0.1, scram-sha-256 logins only; see the top of tools/pg_server.sh.
#
#   make pg-start      start it (about 1 s), or reuse the one that runs; idempotent
#   make pg-stop       stop it and delete its data; nothing running is not an error
#   make pg-status     whether it runs
#   make pg-stage-env  write its URLs to $(PG_STAGE_ENV_FILE) (see below)
#
# A recipe that needs the URLs depends on pg-start and evaluates PG_ENV first:
#     units: venv $(STAGE_DEP) pg-start
#             $(PG_ENV) && $(call run_in,$(VENV)) ansible-test units ...
# which exports TEMPERSTACK_TEST_PG_URL, _JOB_URL, _ADMIN_URL, _DATA, _LOG and _CTL (a
# pg_ctl command prefix: append `stop -m fast`, `start` or `restart`; shlex.split it).
#
# ansible-test (units, integration) passes its children only a fixed list of variables
# (HOME, PATH, ...; common_environment() in ansible_test/_internal/util.py), so those
# exports never reach a unit test or a runme.sh directly:
#   - unit tests (tests/unit/plugins/plugin_utils/conftest.py) read them from the
#     environment of the ansible-test process itself: `$(PG_ENV) && $(call run_in,...)`;
#   - runme.sh (ts_pg_env in setup_temperstack_stand_in/stand_in.sh) sources the file
#     tests/pg_server.env of the collection on ANSIBLE_COLLECTIONS_PATH, which pg-stage-env
#     writes into the staged copy (mode 0600; `make stage` wipes it with the copy). Run it
#     after `stage`: list it after $(STAGE_DEP) in the prerequisites.

PG_DIR ?= $(REPO_ROOT)/build/pg
PG_SERVER := $(REPO_ROOT)/tools/pg_server.sh
PG_ENV = eval "$$($(PG_SERVER) env $(PG_DIR))"
PG_STAGE_ENV_FILE = $(STAGE)/tests/pg_server.env

.PHONY: pg-start pg-stop pg-status pg-stage-env

pg-start:
	$(PG_SERVER) start $(PG_DIR)

pg-stop:
	$(PG_SERVER) stop $(PG_DIR)

pg-status:
	$(PG_SERVER) status $(PG_DIR)

# The file holds the passwords: written under umask 077, and never echoed.
pg-stage-env: pg-start
	mkdir -p $(dir $(PG_STAGE_ENV_FILE))
	umask 077 && $(PG_SERVER) env $(PG_DIR) >$(PG_STAGE_ENV_FILE)
