#!/usr/bin/env bash
# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Integration tests of the day-2 operations (issue 12): alert_info, the silence module and its effect on the alert
# module, the callback and the health_checks role, flap damping in the role, and a key rotation with ledger_copy.
# Real ansible-playbook runs against the Temperstack stand-in on 127.0.0.1, whose timeline is the ground truth of
# what was sent. Every scenario runs on both ledger backends: a SQLite file (TEMPERSTACK_LEDGER_PATH or
# ledger_path), and a new database of the PostgreSQL test server (TEMPERSTACK_LEDGER_URL or ledger_url).
# Run by `ansible-test integration day2`, or directly:
#     ANSIBLE_COLLECTIONS_PATH=/path/to/dir/with/ansible_collections tests/integration/targets/day2/runme.sh
# Either way the collection's tests/pg_server.env must hold the server's URLs (`tools/pg_server.sh env DIR`;
# `make test` writes it). TS_SCENARIOS="1 4" runs only the scenarios whose ids start with those words (ids are
# NUMBER-BACKEND); TS_BACKENDS=sqlite (or postgresql) runs one backend; TS_KEEP_WORK=1 keeps the work directory.
#
# Every job (one ansible-playbook run) has a new, empty HOME, as an AWX job has: what one job leaves for the next
# is in the ledger only. After every job, expect_sent names exactly the requests the stand-in received during it
# ("CODE STATUS ALERT_ID", in order), and the playbooks check the modules' own results.
set -eu -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=../setup_temperstack_stand_in/stand_in.sh
source ../setup_temperstack_stand_in/stand_in.sh
# shellcheck source=../setup_temperstack_stand_in/jobs.sh
source ../setup_temperstack_stand_in/jobs.sh

# The backends share nothing, so each runs in a process of its own (its own stand-in, work directory and jobs), at
# the same time: a job is mostly one busy process, and two of them at once take little longer than one on two
# cores. TS_SERIAL=1 runs them one after the other instead.
read -r -a BACKENDS <<<"${TS_BACKENDS:-sqlite postgresql}"
if ((${#BACKENDS[@]} > 1)) && [[ -z "${TS_SERIAL:-}" && -z "${DAY2_BACKEND_PROCESS:-}" ]]; then
    logs=$(mktemp -d "${TMPDIR:-/tmp}/day2-backends.XXXXXX")
    pids=()
    # Interrupted: each backend process cleans up after itself (its stand-in, its work directory) before it ends.
    trap 'kill "${pids[@]}" 2>/dev/null; wait; cat "$logs"/*.log; rm -rf "$logs"; exit 143' INT TERM
    started=$SECONDS
    for BACKEND in "${BACKENDS[@]}"; do
        DAY2_BACKEND_PROCESS=1 TS_BACKENDS=$BACKEND "$PWD/runme.sh" </dev/null >"$logs/$BACKEND.log" 2>&1 &
        pids+=($!)
    done
    status=0
    for i in "${!BACKENDS[@]}"; do
        rc=0
        wait "${pids[$i]}" || rc=$?
        ((rc == 0)) || status=1
        printf '\n######## backend %s: exit %s\n' "${BACKENDS[$i]}" "$rc"
        cat "$logs/${BACKENDS[$i]}.log"
    done
    rm -rf "$logs"
    echo
    if ((status == 0)); then
        echo "day2: all scenarios passed on ${BACKENDS[*]} in $((SECONDS - started))s"
    else
        echo "day2: FAILED (see the backend whose exit status is not 0 above) after $((SECONDS - started))s" >&2
    fi
    exit "$status"
fi

ts_pg_env
echo "PostgreSQL test server: $TS_PG_ENV"
KEY="TSKEY-D2-$(ts_random_hex)"         # the integration key, after the rotation of scenario 5
OLD_KEY="TSKEY-D2OLD-$(ts_random_hex)"  # the key before it
ts_init "$KEY,$OLD_KEY"
started=$SECONDS
HERE=$PWD
DAY2=("$TS_PYTHON" "$HERE/day2.py")
WEBHOOK_URL="$TS_URL/api/integration/webhook/$KEY"
OLD_WEBHOOK_URL="$TS_URL/api/integration/webhook/$OLD_KEY"
ID='[0-9a-f]{12}'
# Answers of a Temperstack that is down, for every request of a job (more than any job makes).
DOWN='{"status": 503, "repeat": 100}'

# psycopg, an environment that configures no job, and the databases dropped at the end (jobs.sh). The keys are
# told apart by name: SENT_KEYS says new, old or unknown for each request.
jobs_init "new=$KEY" "old=$OLD_KEY"

# new_ledger NUMBER: the scenario's own, empty ledger on the backend under test. Sets LEDGER (a path or a URL),
# LEDGER_SHOWN (as the modules show it: the URL with its password masked), LEDGER_ENV (how jobs get it from the
# environment) and VARS, a vars file with the connection and the ledger as options (day2_webhook_url,
# day2_old_webhook_url, day2_ledger_path or day2_ledger_url, day2_ledger_shown), outside every job's directory.
new_ledger() {
    local ledger_var password
    # shellcheck disable=SC2034  # read by after_job (jobs.sh)
    SEEN=0  # the stand-in's requests the scenario has seen: ts_scenario has just made it forget the others
    case $BACKEND in
        sqlite)
            LEDGER="$SCENARIO_DIR/ledger/ledger.sqlite3"
            LEDGER_SHOWN=$LEDGER
            LEDGER_ENV=(TEMPERSTACK_LEDGER_PATH="$LEDGER")
            ledger_var=day2_ledger_path ;;
        postgresql)
            LEDGER=$(ts_helper url "${PG_DATABASES[$1]}")
            password=$(url_password "$LEDGER" temperstack)
            SECRETS+=("$password")
            LEDGER_SHOWN=$(masked_url "$LEDGER")
            LEDGER_ENV=(TEMPERSTACK_LEDGER_URL="$LEDGER")
            ledger_var=day2_ledger_url ;;
    esac
    VARS="$SCENARIO_DIR/connection.json"
    "$TS_PYTHON" -c '
import json, sys
names = ("day2_webhook_url", "day2_old_webhook_url", sys.argv[2], "day2_ledger_shown")
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    json.dump(dict(zip(names, sys.argv[3:])), handle)' "$VARS" "$ledger_var" "$WEBHOOK_URL" "$OLD_WEBHOOK_URL" "$LEDGER" "$LEDGER_SHOWN"
    echo "ledger: $LEDGER_SHOWN"
}

# What `job` (jobs.sh) gives a job of this target, beside a new empty HOME, its own work directory and the callback
# (MODE callback) or not (MODE module):
#   WEBHOOK=old    the old key in TEMPERSTACK_WEBHOOK_URL (the new one otherwise), and the ledger in
#                  TEMPERSTACK_LEDGER_PATH or TEMPERSTACK_LEDGER_URL
#   OPTIONS=1      neither the webhook nor the ledger in the environment: the playbook gets them as options, from
#                  $VARS (-e @$VARS)
# After every job, expect_sent and the other checks of jobs.sh look at what it sent and printed.
job_options() {
    if [[ -n "${OPTIONS:-}" ]]; then
        # shellcheck disable=SC2034  # job's local array (jobs.sh), which it passes to ansible-playbook
        args=(-e "@$VARS")
    elif [[ "${WEBHOOK:-new}" == old ]]; then
        envs+=("${LEDGER_ENV[@]}" TEMPERSTACK_WEBHOOK_URL="$OLD_WEBHOOK_URL")
    else
        envs+=("${LEDGER_ENV[@]}" TEMPERSTACK_WEBHOOK_URL="$WEBHOOK_URL")
    fi
}

# ---------------------------------------------------------------------------------------------------
scenario_1_alert_info() {
    new_ledger 1
    local deploy migrate
    # Module alerts and the failed plays' Alarms: five requests are acknowledged, then Temperstack is down.
    SCRIPT="[{\"status\": 200, \"repeat\": 5}, $DOWN]" WARNINGS=1 job callback 2 alert_info_setup.yml -e phase=raise
    expect_sent_like "200 Alarm day2-disk-web0[34]" "200 Alarm day2-disk-web0[34]" "200 Alarm day2-load-web03" \
        "200 OK day2-load-web03" "200 Alarm ansible-[a-z0-9-]+-deploy-web-tier-$ID" \
        "503 Alarm ansible-[a-z0-9-]+-migrate-database-$ID+"
    [[ "$(grep -F ' day2-disk-' <<<"$SENT" | sort | paste -sd ' ')" == '200 Alarm day2-disk-web03 200 Alarm day2-disk-web04' ]] \
        || fail "job $JOB did not raise both disks"
    deploy=$(sent_id_like "ansible-[a-z0-9-]+-deploy-web-tier-$ID")
    migrate=$(sent_id_like "ansible-[a-z0-9-]+-migrate-database-$ID")
    expect_line "$OUT" 'Temperstack: sent 1 Alarm; 1 queued for the next run'
    expect_keys new
    local timeline=$SENT

    # The old key: the Alarm of "Legacy job" waits in its outbox.
    SCRIPT="[$DOWN]" WEBHOOK=old WARNINGS=1 job callback 2 alert_info_setup.yml -e phase=old
    expect_sent_like "503 Alarm ansible-[a-z0-9-]+-legacy-job-$ID+"
    expect_keys old

    # The new key again: "Deploy web tier" succeeds, and its OK waits behind the Alarm of "Migrate database".
    SCRIPT="[$DOWN]" WARNINGS=1 job callback 2 alert_info_setup.yml -e phase=recover
    expect_sent_like "503 Alarm $migrate+"
    expect_line "$OUT" 'Temperstack: sent nothing; 2 queued for the next run'
    timeline+=$'\n'$SENT

    local payloads="$SCENARIO_DIR/payloads.json" before after
    "${DAY2[@]}" payloads "$TS_URL" "$payloads"
    before=$("${DAY2[@]}" dump "$LEDGER")
    OPTIONS=1 job module 0 alert_info.yml -vvvv -e "deploy_id=$deploy" -e "migrate_id=$migrate" -e "@$payloads" \
        -e "migrate_attempts=$(grep -c "^503 Alarm $migrate$" <<<"$timeline" || true)" \
        -e "deploy_ok_attempts=$(grep -c "^503 OK $deploy$" <<<"$timeline" || true)"
    expect_sent
    expect_recap localhost 0
    expect_secrets_absent
    after=$("${DAY2[@]}" dump "$LEDGER")
    [[ "$after" == "$before" ]] || fail "alert_info changed the ledger: before: $before; after: $after"
    echo "ok: the ledger is as it was ($(wc -l <<<"$after") rows)"
}

# ---------------------------------------------------------------------------------------------------
scenario_2_decommission() {
    new_ledger 2
    local deploy host
    job callback 2 decommission_setup.yml
    expect_sent_like "200 Alarm day2-dc-disk-web0[34]" "200 Alarm day2-dc-disk-web0[34]" "200 OK day2-dc-ntp-web03" \
        "200 Alarm day2-dc-cert" "200 Alarm ansible-[a-z0-9-]+-deploy-web-tier-$ID" "200 Alarm ansible-[a-z0-9-]+-migrate-database-$ID"
    deploy=$(sent_id_like "ansible-[a-z0-9-]+-deploy-web-tier-$ID")

    # The example, as the documentation has it: the Alarms of web03 get their OKs (in alert id order, as
    # alert_info lists them); web03's OK, and web04's Alarms, are left alone.
    host=$("${DAY2[@]}" example "$SCENARIO_DIR/decommission.yml")
    [[ "$host" == web03 ]] || fail "the decommissioning example decommissions $host; this test raises alerts for web03"
    job module 0 "$SCENARIO_DIR/decommission.yml"
    expect_sent "200 OK $deploy" "200 OK day2-dc-cert" "200 OK day2-dc-disk-web03"
    expect_recap localhost 1
    job module 0 "$SCENARIO_DIR/decommission.yml"
    expect_sent
    expect_recap localhost 0
}

# ---------------------------------------------------------------------------------------------------
scenario_3_silence() {
    new_ledger 3
    local worker="$SCENARIO_DIR/worker.sh"
    echo 'exit 1' >"$worker"
    # Only the alert the ledger knows before the silence, and web04's Alarm, which no silence covers, go out.
    job module 0 silence.yml -e phase=start -e "worker_script=$worker"
    expect_sent "200 OK day2-sil-ntp-web03" "200 Alarm day2-sil-disk-web04"
    # The role's Alarm, the module's and the failed play's: all withheld; the callback names the silence.
    job callback 2 silence.yml -e phase=during -e "worker_script=$worker"
    expect_sent
    expect_line "$OUT" 'Temperstack: sent nothing; 1 Alarm withheld by silence maint-web03'
    # Once the silences have ended, the next decision about each withheld Alarm sends it.
    job callback 2 silence.yml -e phase=end -e "worker_script=$worker"
    expect_sent "200 Alarm day2-sil-disk-web03" "200 Alarm day2-sil-service-web03" "200 Alarm day2-sil-blip-web04" \
        "200 Alarm ansible-silence-yml-deploy-web-tier-$ID"
    expect_line "$OUT" 'Temperstack: sent 1 Alarm'
}

# ---------------------------------------------------------------------------------------------------
scenario_4_damping() {
    new_ledger 4
    local worker="$SCENARIO_DIR/worker.sh"
    local -a damping=(damping.yml -e "worker_script=$worker")
    echo 'exit 1' >"$worker"
    # Failing: 1 of 3 (the flaky check 1 of 2), 2 of 3 (the flaky check reaches its count, silenced), 3 of 3.
    job module 0 "${damping[@]}" -e expect_withheld=no
    expect_sent
    job module 0 "${damping[@]}" -e expect_withheld=yes
    expect_sent
    job module 0 "${damping[@]}" -e expect_withheld=yes
    expect_sent "200 Alarm day2-worker-web03"
    echo 'exit 0' >"$worker"
    # Healthy: 1 of 2.
    job module 0 "${damping[@]}" -e expect_withheld=any
    expect_sent
    # Healthy twice in a row: the OK goes out, and the flaky check's withheld Alarm is no longer its last status.
    job module 0 "${damping[@]}" -e expect_withheld=no
    expect_sent "200 OK day2-worker-web03"
}

# ---------------------------------------------------------------------------------------------------
scenario_5_rotation() {
    new_ledger 5
    local deploy sorted
    SCRIPT="[{\"status\": 200}, $DOWN]" WEBHOOK=old WARNINGS=1 job callback 2 rotation.yml -e phase=raise
    expect_sent_like "200 Alarm day2-rot-app" "503 Alarm ansible-rotation-yml-deploy-web-tier-$ID+"
    expect_keys old
    deploy=$(sent_id_like "ansible-rotation-yml-deploy-web-tier-$ID")

    OPTIONS=1 job module 0 rotation.yml -vvvv -e phase=move
    expect_sent
    expect_secrets_absent

    job callback 0 rotation.yml -vvvv -e phase=resolve
    sorted=$(LC_ALL=C sort <<<"$SENT")
    [[ "$sorted" == "200 Alarm $deploy"$'\n'"200 OK $deploy"$'\n'"200 OK day2-rot-app" ]] || fail "job $JOB sent: $SENT"
    [[ "$(grep -F " $deploy" <<<"$SENT")" == "200 Alarm $deploy"$'\n'"200 OK $deploy" ]] \
        || fail "job $JOB sent the OK of $deploy before its Alarm"
    echo "ok: job $JOB delivered the Alarm queued under the old key, then both OKs"
    expect_keys new
    expect_secrets_absent
}

for BACKEND in "${BACKENDS[@]}"; do
    backend_started=$SECONDS
    ts_log "backend: $BACKEND"
    PG_DATABASES=()
    if [[ $BACKEND == postgresql ]]; then
        # A new database for each scenario, made at once.
        suffix=$(ts_random_hex | cut -c1-8)
        PG_DATABASES=('' "day2_1_$suffix" "day2_2_$suffix" "day2_3_$suffix" "day2_4_$suffix" "day2_5_$suffix")
        ts_helper create-db "${PG_DATABASES[@]:1}"
        DATABASES+=("${PG_DATABASES[@]:1}")
    elif [[ $BACKEND != sqlite ]]; then
        ts_fail "unknown backend $BACKEND (TS_BACKENDS takes sqlite and postgresql)"
    fi
    ts_run_scenarios \
        "1-$BACKEND|scenario_1_alert_info|alert_info: alerts, queued entries, filters, the rotated key's entries counted; check mode; no key at -vvvv" \
        "2-$BACKEND|scenario_2_decommission|the decommissioning example of alert_info's documentation, as documented" \
        "3-$BACKEND|scenario_3_silence|silence: check and diff mode, the module, the callback and the role withhold, then send; bad input" \
        "4-$BACKEND|scenario_4_damping|flap damping in the health_checks role, counted in the ledger across jobs; with a silence" \
        "5-$BACKEND|scenario_5_rotation|key rotation: ledger_copy carries open and queued alerts to the new key"
    echo
    echo "backend $BACKEND: done in $((SECONDS - backend_started))s, $JOB jobs so far ($((JOBS_MICROSECONDS / 1000000))s in ansible-playbook)"
done

echo
echo "day2: all scenarios passed in $((SECONDS - started))s"
