#!/usr/bin/env bash
# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Integration tests of the shared PostgreSQL ledger (ledger_url, issue 11): jobs of a fleet, each a real
# ansible-playbook (or ansible-runner) run with an empty HOME of its own, as AWX runs each job in a new
# container, share a ledger on the PostgreSQL test server and talk to the Temperstack stand-in on 127.0.0.1.
# Run by `ansible-test integration fleet_ledger`, or directly:
#     ANSIBLE_COLLECTIONS_PATH=/path/to/dir/with/ansible_collections tests/integration/targets/fleet_ledger/runme.sh
# Either way the collection's tests/pg_server.env must hold the server's URLs (`tools/pg_server.sh env DIR`;
# `make test` writes it). TS_SCENARIOS="01 05" runs only the scenarios whose ids start with those words;
# TS_KEEP_WORK=1 keeps the work directory.
#
# Each scenario has a new database of its own, so no scenario sees another's rows. After every job,
# expect_sent names exactly the requests the stand-in received during it ("CODE STATUS ALERT_ID", in order),
# and the playbooks check the module's own results (fleet.yml, copy.yml).
set -eu -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=../setup_temperstack_stand_in/stand_in.sh
source ../setup_temperstack_stand_in/stand_in.sh
# shellcheck source=../setup_temperstack_stand_in/jobs.sh
source ../setup_temperstack_stand_in/jobs.sh

ts_pg_env
echo "PostgreSQL test server: $TS_PG_ENV"
KEY="TSKEY-FL-$(ts_random_hex)"
ts_init "$KEY"
started=$SECONDS
HERE=$PWD
FLEET=("$TS_PYTHON" "$HERE/fleet.py")
WEBHOOK_URL="$TS_URL/api/integration/webhook/$KEY"
ID='[0-9a-f]{12}'
# The callback's alert for the play "Deploy web tier" of fleet.yml, as every job of every scenario names it.
DEPLOY_RE="ansible-fleet-yml-deploy-web-tier-$ID"
# How much longer (seconds) a job may take when the ledger's server is unreachable (refusing, or silent) than the
# same job with the server up. Relative, because other work on a shared machine slows every job alike.
UNREACHABLE_EXTRA=20

# psycopg, an environment that configures no job, and the databases dropped at the end (jobs.sh).
jobs_init "key=$KEY"
SILENT_PID=

jobs_cleanup() {
    if [[ -n "$SILENT_PID" ]]; then
        kill "$SILENT_PID" 2>/dev/null
        wait "$SILENT_PID" 2>/dev/null
    fi
}

# Every job (jobs.sh: job, run as AWX runs one, with TEMPERSTACK_LEDGER_PATH unset) gets the webhook in
# TEMPERSTACK_WEBHOOK_URL; JOB_ENV=(NAME=VALUE ...) adds variables, such as the ledger's URL.
job_options() {
    envs+=(TEMPERSTACK_WEBHOOK_URL="$WEBHOOK_URL")
}

# new_db ID: a new database for the scenario, owned by the owner role. Sets DB, OWNER_URL, JOB_URL, PASSWORD
# (the owner's), JOB_PASSWORD, MASKED_OWNER_URL (as messages must show it) and OWNER_VARS (a vars file: fleet_ledger_url is
# OWNER_URL, fleet_webhook_url the stand-in's webhook).
new_db() {
    DB="fleet_${1}_$(ts_random_hex | cut -c1-8)"
    ts_helper create-db "$DB"
    DATABASES+=("$DB")
    # pg_server.sh's URLs end in /temperstack, the database every role can use.
    OWNER_URL=${TEMPERSTACK_TEST_PG_URL%/*}/$DB
    JOB_URL=${TEMPERSTACK_TEST_PG_JOB_URL%/*}/$DB
    SEEN=0
    PASSWORD=$(url_password "$OWNER_URL" temperstack)
    JOB_PASSWORD=$(url_password "$JOB_URL" temperstack_job)
    SECRETS+=("$PASSWORD" "$JOB_PASSWORD")
    MASKED_OWNER_URL=$(masked_url "$OWNER_URL")
    # For the module's ledger_url by module_defaults or option: in a file, so that no command line shows it.
    OWNER_VARS="$SCENARIO_DIR/owner-vars.json"
    fleet_vars "$OWNER_VARS" "{\"fleet_ledger_url\": \"$OWNER_URL\", \"fleet_webhook_url\": \"$WEBHOOK_URL\"}"
    echo "database $DB"
}

# expect_db [LINE...]: the scenario's database holds exactly these alerts and outbox entries ("alerts STATUS
# ALERT_ID", then "outbox STATUS ALERT_ID" in outbox order; fleet.py dump); LINE may be an extended regex.
expect_db() {
    local -a lines=()
    local actual i=0 pattern
    actual=$("${FLEET[@]}" dump "$DB" | grep -v '^meta ' || true)
    if [[ -n "$actual" ]]; then
        mapfile -t lines <<<"$actual"
    fi
    ((${#lines[@]} == $#)) || fail "the ledger in $DB holds: ${actual:-nothing}; expected $# line(s): $*"
    for pattern in "$@"; do
        [[ "${lines[$i]}" =~ ^$pattern$ ]] || fail "the ledger in $DB holds: $actual; line $((i + 1)) is not /$pattern/"
        i=$((i + 1))
    done
    echo "ok: the ledger in $DB holds: $(if [[ -n "$actual" ]]; then paste -sd ';' <<<"$actual"; else echo nothing; fi)"
}

expect_no_schema() {  # WHY: nothing at all was written to the scenario's database, not even the schema
    local actual
    actual=$("${FLEET[@]}" dump "$DB")
    [[ "$actual" == 'no schema' ]] || fail "$1: the ledger in $DB holds: $actual"
    echo "ok: $1: $DB has no schema temperstack"
}

# expect_longer_by_at_most REFERENCE_SECONDS EXTRA_SECONDS TIMED...: each TIMED ("JOB:SECONDS") took at most
# EXTRA_SECONDS longer than the reference.
expect_longer_by_at_most() {
    local reference=$1 extra=$2 timed
    shift 2
    for timed in "$@"; do
        awk -v e="${timed#*:}" -v r="$reference" -v x="$extra" 'BEGIN { exit !(e <= r + x) }' \
            || fail "job ${timed%%:*} took ${timed#*:}s, over ${extra}s longer than the same job with the server up (${reference}s)"
        echo "ok: job ${timed%%:*} took ${timed#*:}s with the server unreachable; the same job with the server up took ${reference}s (bound: ${extra}s longer)"
    done
}

# fleet_vars FILE JSON: a vars file, for values no command line or output may show.
fleet_vars() {
    (umask 077 && printf '%s\n' "$2" >"$1")
}

fallback_of() {  # HOME: the fallback file the collection keeps there
    echo "$1/.ansible/temperstack/ledger.fallback.sqlite3"
}

# ---------------------------------------------------------------------------------------------------
scenario_01_module() {
    local alert=fleet-01-disk
    new_db 01
    local -a alarm=(fleet.yml -e "alert_id=$alert" -e alert_status=Alarm) ok=(fleet.yml -e "alert_id=$alert" -e alert_status=OK)
    JOB_ENV=(TEMPERSTACK_LEDGER_URL="$OWNER_URL")
    job module 0 "${alarm[@]}" -e ledger_via=env -e expect=changed
    expect_sent "200 Alarm $alert"
    expect_recap localhost 1
    expect_db "alerts Alarm $alert"
    # From here on the URL reaches the module by module_defaults or the task only: a job that ignored it
    # would have an empty ledger of its own and send again.
    JOB_ENV=()
    job module 0 "${alarm[@]}" -e ledger_via=module_defaults -e "@$OWNER_VARS" -e expect=unchanged
    expect_sent
    expect_recap localhost 0
    job module 0 "${ok[@]}" -e ledger_via=option -e "@$OWNER_VARS" -e expect=changed
    expect_sent "200 OK $alert"
    expect_db "alerts OK $alert"
    JOB_ENV=(TEMPERSTACK_LEDGER_URL="$OWNER_URL")
    job module 0 "${ok[@]}" -e ledger_via=env -e expect=unchanged
    expect_sent
    expect_recap localhost 0
}

# ---------------------------------------------------------------------------------------------------
scenario_02_callback() {
    new_db 02
    JOB_ENV=(TEMPERSTACK_LEDGER_URL="$OWNER_URL")
    job callback 2 fleet.yml -e failing=true
    expect_sent "200 Alarm $DEPLOY_RE"
    local deploy
    deploy=$(sent_id 1)
    expect_in "$OUT" 'Temperstack: sent 1 Alarm'
    job callback 2 fleet.yml -e failing=true
    expect_sent
    # The green job reads ledger_url from ansible.cfg only: ignoring it, it would know no Alarm to resolve.
    JOB_ENV=()
    # shellcheck disable=SC2034  # read by job (jobs.sh), MODE ini
    INI_LEDGER_URL=$OWNER_URL
    job ini 0 fleet.yml
    expect_sent "200 OK $deploy"
    expect_in "$OUT" 'Temperstack: sent 1 OK'
    expect_db "alerts OK $deploy"
}

# ---------------------------------------------------------------------------------------------------
scenario_03_role() {
    new_db 03
    local worker="$SCENARIO_DIR/worker.sh"
    local -a role=(role.yml -e "@$OWNER_VARS" -e "worker_script=$worker")
    JOB_ENV=()
    echo 'exit 1' >"$worker"
    job module 0 "${role[@]}"
    expect_sent "200 Alarm [^ ]+"
    local alert
    alert=$(sent_id 1)
    expect_recap localhost 1
    expect_db "alerts Alarm $alert"
    job module 0 "${role[@]}"
    expect_sent
    expect_recap localhost 0
    echo 'exit 0' >"$worker"
    job module 0 "${role[@]}"
    expect_sent "200 OK $alert"
    expect_recap localhost 1
    expect_db "alerts OK $alert"
}

# ---------------------------------------------------------------------------------------------------
scenario_04_secrets() {
    new_db 04
    local vars="$SCENARIO_DIR/secret-vars.json" bad_vars="$SCENARIO_DIR/bad-vars.json" deploy
    # The ledger URL (password and all) and the webhook URL reach the module as task options, from a vars file
    # outside the job's work directory, and the callback from the environment; -vvvv shows all it can.
    fleet_vars "$vars" "{\"fleet_ledger_url\": \"$OWNER_URL\", \"fleet_webhook_url\": \"$WEBHOOK_URL\", \"secret_texts\": [\"$PASSWORD\", \"$KEY\"]}"
    JOB_ENV=(TEMPERSTACK_LEDGER_URL="$OWNER_URL")
    job callback 2 fleet.yml -vvvv -e "@$vars" -e alert_id=fleet-04-secret -e alert_status=Alarm -e ledger_via=option \
        -e expect=changed -e failing=true
    expect_sent "200 Alarm fleet-04-secret" "200 Alarm $DEPLOY_RE"
    deploy=$(sent_id 2)
    grep -qx 'verbosity: 4' "$OUT" || fail "job $JOB did not run at -vvvv"
    expect_db "alerts Alarm $deploy" "alerts Alarm fleet-04-secret"
    expect_absent "$PASSWORD" "the ledger's password"
    expect_absent "$KEY" "the webhook key"
    [[ -z "$("${FLEET[@]}" sql "$DB" "SELECT 1 FROM temperstack.alerts a WHERE a::text LIKE '%$KEY%'")" ]] \
        || fail "the webhook key is in the shared ledger"
    echo "ok: the webhook key is not in the shared ledger"

    # Not a PostgreSQL URL: the module fails before any request, naming ledger_url; the callback disables itself.
    local bad_password bad
    bad_password="PASSWORD-$(ts_random_hex)"
    SECRETS+=("$bad_password")
    bad="mysql://u:$bad_password@h/db"
    fleet_vars "$bad_vars" "{\"fleet_ledger_url\": \"$bad\", \"secret_texts\": [\"$bad_password\"]}"
    JOB_ENV=(TEMPERSTACK_LEDGER_URL="$bad")
    WARNINGS=1 job callback 2 fleet.yml -vvvv -e "@$bad_vars" -e alert_id=fleet-04-bad -e alert_status=Alarm -e ledger_via=option \
        -e expect=failed -e 'expect_msg=^ledger_url must be a PostgreSQL connection URI' -e failing=true
    expect_sent
    expect_in "$ERR" 'temperstack.alerting.playbook_alerts is disabled: ledger_url must be a PostgreSQL connection URI'
    expect_absent "$bad_password" "the bad ledger_url's password"
    expect_absent "$KEY" "the webhook key"
}

# ---------------------------------------------------------------------------------------------------
scenario_05_unreachable() {
    new_db 05
    local closed_port down_url masked_down deploy fallback
    local -a timed=()
    closed_port=$("$TS_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    down_url="postgresql://temperstack:$PASSWORD@127.0.0.1:$closed_port/$DB"
    masked_down="postgresql://temperstack:********@127.0.0.1:$closed_port/$DB"

    # The server is down: the module's Alarm and the failed play's Alarm go out all the same, with warnings.
    JOB_ENV=(TEMPERSTACK_LEDGER_URL="$down_url")
    WARNINGS=1 job callback 2 fleet.yml -e alert_id=fleet-05-module -e alert_status=Alarm -e ledger_via=env -e expect=changed \
        -e failing=true -e "{\"expect_warnings\": [\"the ledger at $masked_down is unreachable\"]}"
    expect_sent "200 Alarm fleet-05-module" "200 Alarm $DEPLOY_RE"
    deploy=$(sent_id 2)
    expect_in "$ERR" "temperstack: the ledger at $masked_down is unreachable"
    expect_absent "$PASSWORD" "the ledger's password"
    timed+=("$JOB:$ELAPSED")
    fallback=$(fallback_of "$JOB_HOME")
    [[ "$("${FLEET[@]}" sqlite-dump "$fallback" | sort)" == "$(printf 'alerts Alarm %s\nalerts Alarm fleet-05-module' "$deploy" | sort)" ]] \
        || fail "the fallback file holds: $("${FLEET[@]}" sqlite-dump "$fallback")"
    echo "ok: the fallback file in the job's HOME holds both Alarms"
    expect_no_schema "the server was unreachable"

    # Still down, same controller: the play is green, but only the shared ledger knows the Alarm's hosts.
    SAME_HOME=1 WARNINGS=1 job callback 0 fleet.yml
    expect_sent
    expect_in "$ERR" "temperstack: the ledger at $masked_down is unreachable"
    expect_in "$ERR" "temperstack: no OK is decided for"
    grep -F 'no OK is decided for' "$ERR" | grep -Fq "$deploy" || fail "the warning does not name $deploy"
    timed+=("$JOB:$ELAPSED")

    # The server is back: this controller's fallback moves into the shared ledger, and the OK goes out, once.
    JOB_ENV=(TEMPERSTACK_LEDGER_URL="$OWNER_URL")
    SAME_HOME=1 job callback 0 fleet.yml -e alert_id=fleet-05-module -e alert_status=Alarm -e ledger_via=env -e expect=unchanged
    expect_sent "200 OK $deploy"
    expect_db "alerts OK $deploy" "alerts Alarm fleet-05-module"
    [[ -z "$("${FLEET[@]}" sqlite-dump "$fallback")" ]] || fail "the fallback file still holds: $("${FLEET[@]}" sqlite-dump "$fallback")"
    echo "ok: the fallback file is empty"
    job callback 0 fleet.yml -e alert_id=fleet-05-module -e alert_status=Alarm -e ledger_via=env -e expect=unchanged
    expect_sent
    # This job has the shape of the jobs above (the callback, then a module task), with the server up.
    local reference=$ELAPSED

    # A server that accepts connections and never answers (a hung server; a blackholed address is the same to
    # the client): the connect timeout bounds the wait of the callback and of the module.
    "${FLEET[@]}" silent-listener "$SCENARIO_DIR/silent.port" </dev/null >/dev/null 2>&1 &
    SILENT_PID=$!
    for _ in $(seq 50); do
        [[ -s "$SCENARIO_DIR/silent.port" ]] && break
        sleep 0.1
    done
    [[ -s "$SCENARIO_DIR/silent.port" ]] || fail "the silent listener did not start"
    local silent_port
    silent_port=$(cat "$SCENARIO_DIR/silent.port")
    local silent_url="postgresql://temperstack:$PASSWORD@127.0.0.1:$silent_port/$DB"
    local masked_silent="postgresql://temperstack:********@127.0.0.1:$silent_port/$DB"
    JOB_ENV=(TEMPERSTACK_LEDGER_URL="$silent_url")
    WARNINGS=1 job callback 2 fleet.yml -e alert_id=fleet-05-silent -e alert_status=Alarm -e ledger_via=env -e expect=changed \
        -e failing=true -e "{\"expect_warnings\": [\"the ledger at $masked_silent is unreachable\"]}"
    expect_sent "200 Alarm fleet-05-silent" "200 Alarm $deploy"
    expect_in "$ERR" "temperstack: the ledger at $masked_silent is unreachable"
    expect_absent "$PASSWORD" "the ledger's password"
    timed+=("$JOB:$ELAPSED")
    expect_longer_by_at_most "$reference" "$UNREACHABLE_EXTRA" "${timed[@]}"
    kill "$SILENT_PID"
    wait "$SILENT_PID" 2>/dev/null || true
    SILENT_PID=
}

# ---------------------------------------------------------------------------------------------------
scenario_06_copy() {
    new_db 06
    local controller_ledger="$SCENARIO_DIR/controller/ledger.sqlite3" deploy before_copy
    # Before the fleet: a controller with its own ledger file. The module's Alarm is acknowledged; the failed
    # play's Alarm meets a Temperstack that answers 503, and waits in the outbox.
    ts_script '[{"status": 200}, {"status": 503, "repeat": 20}]'
    JOB_ENV=(TEMPERSTACK_LEDGER_PATH="$controller_ledger")
    WARNINGS=1 job callback 2 fleet.yml -e alert_id=fleet-06-module -e alert_status=Alarm -e ledger_via=env -e expect=changed \
        -e failing=true
    [[ "$SENT" =~ ^"200 Alarm fleet-06-module"$'\n'"503 Alarm "($DEPLOY_RE)($'\n'"503 Alarm "$DEPLOY_RE)*$ ]] \
        || fail "job $JOB sent: $SENT"
    deploy=${BASH_REMATCH[1]}
    expect_in "$OUT" 'Temperstack: sent nothing; 1 queued for the next run'
    echo "ok: job $JOB raised the module's Alarm and queued $deploy"
    ts_reset
    # shellcheck disable=SC2034  # read by after_job (jobs.sh)
    SEEN=0
    before_copy=$("${FLEET[@]}" sqlite-dump "$controller_ledger")
    [[ "$before_copy" == "$(printf 'alerts Alarm fleet-06-module\noutbox Alarm %s' "$deploy")" ]] \
        || fail "the controller's ledger holds: $before_copy"

    local -a copy=(copy.yml -e "from_ledger=$controller_ledger")
    local ids="{\"expect_alert_ids\": [\"fleet-06-module\", \"$deploy\"]}"
    JOB_ENV=(TEMPERSTACK_LEDGER_URL="$OWNER_URL")
    job module 0 "${copy[@]}" -e mode=check -e expect_changed=true -e expect_records=1 -e expect_entries=1 -e "$ids"
    expect_sent
    expect_no_schema "check mode writes nothing"
    job module 0 "${copy[@]}" -e mode=copy -e expect_changed=true -e expect_records=1 -e expect_entries=1 -e "$ids"
    expect_sent
    expect_recap localhost 1
    expect_db "alerts Alarm fleet-06-module" "outbox Alarm $deploy"
    job module 0 "${copy[@]}" -e mode=copy -e expect_changed=false -e expect_records=0 -e expect_entries=0
    expect_sent
    expect_recap localhost 0
    expect_db "alerts Alarm fleet-06-module" "outbox Alarm $deploy"
    [[ "$("${FLEET[@]}" sqlite-dump "$controller_ledger")" == "$before_copy" ]] || fail "the copy changed the controller's ledger"

    # A job of the fleet: the queued Alarm goes out, then the OKs of both Alarms raised before the fleet.
    job callback 0 fleet.yml -e alert_id=fleet-06-module -e alert_status=OK -e ledger_via=env -e expect=changed
    local sorted
    sorted=$(LC_ALL=C sort <<<"$SENT")
    [[ "$sorted" =~ ^"200 Alarm $deploy"$'\n'"200 OK $deploy"$'\n'"200 OK fleet-06-module"$ ]] || fail "job $JOB sent: $SENT"
    [[ "$(grep -F " $deploy" <<<"$SENT")" == "200 Alarm $deploy"$'\n'"200 OK $deploy" ]] || fail "job $JOB sent the OK of $deploy before its Alarm"
    echo "ok: job $JOB delivered the queued Alarm, then both OKs"
    expect_db "alerts OK $deploy" "alerts OK fleet-06-module"
}

# ---------------------------------------------------------------------------------------------------
scenario_07_privileges() {
    new_db 07
    # The job role may not create anything in the new database: the schema must come from its owner first.
    JOB_ENV=(TEMPERSTACK_LEDGER_URL="$JOB_URL")
    job module 0 fleet.yml -e alert_id=fleet-07-module -e alert_status=Alarm -e ledger_via=env -e expect=failed \
        -e "expect_msg=^the ledger at postgresql://temperstack_job:[*]{8}@127[.]0[.]0[.]1:[0-9]+/$DB has no schema temperstack yet, and this role may not create it [(].*[)]; have a database owner create it"
    expect_sent
    expect_absent "$JOB_PASSWORD" "the job role's password"
    expect_no_schema "the job role may not create the schema"
    "${FLEET[@]}" install-schema "$DB"
    echo "ok: the owner created the schema and granted the job role its privileges"
    job callback 2 fleet.yml -e alert_id=fleet-07-module -e alert_status=Alarm -e ledger_via=env -e expect=changed -e failing=true
    expect_sent "200 Alarm fleet-07-module" "200 Alarm $DEPLOY_RE"
    local deploy
    deploy=$(sent_id 2)
    job callback 0 fleet.yml -e alert_id=fleet-07-module -e alert_status=OK -e ledger_via=env -e expect=changed
    expect_sent "200 OK fleet-07-module" "200 OK $deploy"
    expect_db "alerts OK $deploy" "alerts OK fleet-07-module"
}

# ---------------------------------------------------------------------------------------------------
# runner_job EXPECTED_RC EXTRAVARS_JSON: one AWX job under ansible-runner: its own private data directory, an
# empty HOME, the webhook and ledger URLs in env/envvars as the collection's AWX credential type injects them
# (examples/awx), the callback enabled there as a job template's environment would.
runner_job() {
    local expected=$1 extravars=$2 t0
    new_job_dir
    local pdd="$JOB_DIR/private_data_dir"
    mkdir -p "$pdd/project" "$pdd/inventory" "$pdd/env"
    cp fleet.yml "$pdd/project/"
    cp inventory.ini "$pdd/inventory/hosts"
    "${FLEET[@]}" awx-env "$(printf '{"webhook_url": "%s", "ledger_url": "%s"}' "$WEBHOOK_URL" "$OWNER_URL")" \
        ANSIBLE_CALLBACKS_ENABLED="$CALLBACK" TEMPERSTACK_TIMEOUT=5 TEMPERSTACK_RETRIES=0 TEMPERSTACK_FLUSH_TIMEOUT=15 \
        >"$pdd/env/envvars"
    printf '%s\n' "$extravars" >"$pdd/env/extravars"
    t0=${EPOCHREALTIME/./}
    set +e
    (cd "$JOB_DIR" && env -u TEMPERSTACK_LEDGER_PATH -u ANSIBLE_CALLBACKS_ENABLED -u TEMPERSTACK_WEBHOOK_URL "${PG_VARIABLES[@]}" \
        HOME="$JOB_HOME" ANSIBLE_LOCAL_TEMP="$JOB_HOME/.ansible/tmp" ANSIBLE_REMOTE_TEMP="$JOB_HOME/.ansible/tmp" \
        ANSIBLE_LOG_PATH="$JOB_DIR/ansible.log" "$TS_PYTHON" -m ansible_runner run "$pdd" -p fleet.yml </dev/null >"$OUT" 2>"$ERR")
    # shellcheck disable=SC2034  # read by after_job (jobs.sh)
    RC=$?
    set -e
    ELAPSED=$(elapsed_since "$t0")
    after_job "ansible-runner run -p fleet.yml $extravars" "$expected"
}

scenario_08_runner() {
    "$TS_PYTHON" -c 'import ansible_runner' 2>/dev/null \
        || fail "ansible-runner is not installed for $TS_PYTHON: it is in requirements-test.txt (make venv installs it)"
    new_db 08
    local raise='{"alert_id": "fleet-08-module", "alert_status": "Alarm", "ledger_via": "env"'
    runner_job 2 "$raise, \"expect\": \"changed\", \"failing\": true}"
    expect_sent "200 Alarm fleet-08-module" "200 Alarm $DEPLOY_RE"
    local deploy
    deploy=$(sent_id 2)
    expect_in "$OUT" 'Temperstack: sent 1 Alarm'
    runner_job 2 "$raise, \"expect\": \"unchanged\", \"failing\": true}"
    expect_sent
    runner_job 0 '{"alert_id": "fleet-08-module", "alert_status": "OK", "ledger_via": "env", "expect": "changed"}'
    expect_sent "200 OK fleet-08-module" "200 OK $deploy"
    expect_in "$OUT" 'Temperstack: sent 1 OK'
    expect_db "alerts OK $deploy" "alerts OK fleet-08-module"
}

# ---------------------------------------------------------------------------------------------------
scenario_09_newer_schema() {
    new_db 09
    "${FLEET[@]}" install-schema "$DB"
    "${FLEET[@]}" sql "$DB" "UPDATE temperstack.meta SET value = '99' WHERE name = 'schema_version'"
    local before
    before=$("${FLEET[@]}" dump "$DB")
    grep -qx 'meta schema_version 99' <<<"$before" || fail "the schema version is not 99: $before"
    # shellcheck disable=SC2034  # read by job (jobs.sh)
    JOB_ENV=(TEMPERSTACK_LEDGER_URL="$OWNER_URL")
    WARNINGS=1 job callback 2 fleet.yml -e alert_id=fleet-09-module -e alert_status=Alarm -e ledger_via=env -e expect=failed \
        -e 'expect_msg=was written by a newer temperstack.alerting \(schema temperstack, version 99\)' -e failing=true
    expect_sent
    expect_in "$ERR" "temperstack.alerting.playbook_alerts is disabled: the ledger at $MASKED_OWNER_URL was written by a newer temperstack.alerting"
    [[ "$("${FLEET[@]}" dump "$DB")" == "$before" ]] || fail "the newer ledger was changed: $("${FLEET[@]}" dump "$DB")"
    echo "ok: the newer ledger is unchanged"
}

ts_run_scenarios \
    "01|scenario_01_module|the module stays idempotent across jobs with empty HOMEs (env, module_defaults, option)" \
    "02|scenario_02_callback|the callback's Alarm of one job is resolved by a later job (env, ansible.cfg)" \
    "03|scenario_03_role|health_checks with health_checks_ledger_url across jobs" \
    "04|scenario_04_secrets|no password or key in -vvvv output or files; a bad ledger_url fails before any request" \
    "05|scenario_05_unreachable|the ledger's server unreachable: Alarms still go out, no OK is decided, the fallback moves in later" \
    "06|scenario_06_copy|ledger_copy moves a controller's SQLite ledger into the shared one" \
    "07|scenario_07_privileges|the job role needs a schema made by the owner, then works with the documented grants" \
    "08|scenario_08_runner|ansible-runner jobs, as AWX runs them, share the ledger" \
    "09|scenario_09_newer_schema|a ledger written by a newer collection is refused and left alone"

echo
echo "fleet_ledger: all scenarios passed in $((SECONDS - started))s"
