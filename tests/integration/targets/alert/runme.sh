#!/usr/bin/env bash
# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Integration tests of temperstack.alerting.alert: real ansible-playbook runs against the Temperstack
# stand-in on 127.0.0.1. Run by `ansible-test integration alert`, or directly:
#     ANSIBLE_COLLECTIONS_PATH=/path/to/dir/with/ansible_collections tests/integration/targets/alert/runme.sh [-v]
# Arguments (such as -v) are passed on to ansible-playbook. TS_SCENARIOS="03 10" runs only the
# scenarios whose ids start with those words; TS_KEEP_WORK=1 keeps the work directory.
# Each scenario function below proves one behaviour; most assertions are in its playbooks, the rest
# (recaps, ledger files, secrets in output and files) here.
set -eu -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=../setup_temperstack_stand_in/stand_in.sh
source ../setup_temperstack_stand_in/stand_in.sh


KEY="itest-$(ts_random_hex)"            # the key of ordinary scenarios
SECRET_KEY="TSKEY-$(ts_random_hex)"     # the key that scenario 10 must find in no output and no file
ts_init "$KEY,$SECRET_KEY"
started=$SECONDS
# The module reads these too: one set where the tests run must not change what the scenarios expect.
unset TEMPERSTACK_TIMEOUT TEMPERSTACK_RETRIES TEMPERSTACK_VALIDATE_CERTS TEMPERSTACK_CA_PATH

cat >"$TS_WORK/vars.yml" <<EOF
ts_url: "$TS_URL"
ts_key: "$KEY"
ts_webhook_url: "$TS_URL/api/integration/webhook/$KEY"
ts_collection_version: "$TS_COLLECTION_VERSION"
EOF


# playbook FILE [ARGS...]: run it (extra arguments of runme.sh, such as -v, are passed on) with its
# output shown and saved to $OUT.
playbook() {
    RUN=$((RUN + 1))
    OUT="$SCENARIO_DIR/run-$RUN.out"
    ansible-playbook -i inventory.ini -e "@$TS_WORK/vars.yml" "$@" "${PASSTHROUGH[@]}" 2>&1 | tee "$OUT"
}

PASSTHROUGH=("$@")

expect_recap_unchanged() {
    local counts
    counts=$(ts_recap_changed "$OUT")
    [[ -n "$counts" ]] || ts_fail "no PLAY RECAP in $OUT"
    if grep -qv '^0$' <<<"$counts"; then
        ts_fail "a host reported changes in the recap of $OUT"
    fi
    echo "ok: every host in the recap has changed=0 ($(wc -l <<<"$counts") hosts)"
}

expect_no_ledger() {
    local path
    for path in "$LEDGER" "$LEDGER-wal" "$LEDGER-shm" "$(dirname "$LEDGER")"; do
        [[ ! -e "$path" ]] || ts_fail "$path exists, but nothing may have been written"
    done
    echo "ok: no ledger was written"
}

expect_output() {  # PATTERN: the output of the last run matches the extended regular expression
    grep -Eq -- "$1" "$OUT" || ts_fail "the output of the last run does not match: $1"
    echo "ok: output matches $1"
}

expect_no_output() {  # PATTERN
    if grep -Eq -- "$1" "$OUT"; then
        grep -En -- "$1" "$OUT" | head -n 5 >&2
        ts_fail "the output of the last run matches: $1"
    fi
    echo "ok: output does not match $1"
}

# secret_run PHASE [ARGS...]: one -vvvv --diff run of secrets.yml (scenario 10). Everything it prints
# and writes goes to SECRETS_RUN; its output is not shown, since on failure it might hold the key.
secret_run() {
    local phase=$1
    shift
    RUN=$((RUN + 1))
    OUT="$SECRETS_RUN/run-$RUN-$phase.out"
    echo "--- secrets.yml phase=$phase $* (output in $OUT)"
    if ! ANSIBLE_LOG_PATH="$SECRETS_RUN/ansible.log" \
        ANSIBLE_LOCAL_TEMP="$SECRETS_RUN/local-tmp" \
        ANSIBLE_REMOTE_TEMP="$SECRETS_RUN/remote-tmp" \
        TEMPERSTACK_LEDGER_PATH="$SECRETS_RUN/ledger/ledger.sqlite3" \
        ANSIBLE_CALLBACKS_ENABLED="$callbacks" \
        JUNIT_OUTPUT_DIR="$SECRETS_RUN/junit" \
        ansible-playbook -i inventory.ini -e "@$TS_WORK/vars.yml" -e "@$SECRETS_IN/secret.yml" \
            -e "phase=$phase" "$@" -vvvv --diff secrets.yml >"$OUT" 2>&1; then
        if [[ -n "$(ts_ctl find-text "$SECRET_KEY" "$OUT")" ]]; then
            tail -n 30 "$OUT" | sed "s/$SECRET_KEY/<KEY>/g" >&2
            ts_fail "secrets.yml phase=$phase failed (its output holds the key; shown masked above)"
        fi
        tail -n 60 "$OUT" >&2
        ts_fail "secrets.yml phase=$phase failed"
    fi
    grep -E '^(ok|changed|fatal|localhost +:)' "$OUT" | sed 's/^/    /' || true
}

# ---------------------------------------------------------------------------------------------------
scenario_01_fields() {  # fields arrive exactly as given
    playbook fields.yml
}

# ---------------------------------------------------------------------------------------------------
scenario_02_idempotence() {  # a second identical run is quiet
    playbook idempotence.yml -e run=first
    playbook idempotence.yml -e run=second
    expect_recap_unchanged
    ts_expect_count 1
    playbook idempotence.yml -e run=forced
    ts_expect_count 2
}

# ---------------------------------------------------------------------------------------------------
scenario_03_check_mode() {  # check mode sends nothing and writes no ledger
    playbook check_mode.yml --check
    expect_no_ledger
    playbook check_mode.yml
    expect_no_ledger
    playbook check_mode.yml --check --diff
    expect_no_ledger
    expect_output '^\+\+\+ after: Temperstack alert itest-check-mode$'
    expect_output '^\+ +"status": "Alarm"'
    ts_expect_count 0
    # With something on record, check mode shows it as "before" and leaves the ledger as it was.
    playbook check_mode.yml -e phase=prime -e expected_requests=1
    ts_expect_count 1
    ledger_before=$(ts_ctl ledger-dump "$LEDGER")
    [[ "$ledger_before" == *itest-check-mode* ]] || ts_fail "the primed alert is not in the ledger"
    playbook check_mode.yml --check --diff -e alert_status=OK -e expected_previous=Alarm -e expected_requests=1
    expect_output '^--- before: Temperstack alert itest-check-mode \(as recorded in the ledger\)$'
    expect_output '^- +"status": "Alarm"'
    expect_output '^\+ +"status": "OK"'
    [[ "$(ts_ctl ledger-dump "$LEDGER")" == "$ledger_before" ]] || ts_fail "check mode changed the ledger"
    echo "ok: check mode left the ledger as it was"
    ts_expect_count 1
}

# ---------------------------------------------------------------------------------------------------
scenario_04_transitions() {  # Alarm, OK, OK sends two requests
    playbook transitions.yml
}

# ---------------------------------------------------------------------------------------------------
scenario_05_validation() {  # bad input fails before any request
    ANSIBLE_DISPLAY_TRACEBACK=never playbook validation.yml -vvv
    expect_no_output 'Traceback|Unexpected failure'
    expect_no_ledger
    # Asked to show tracebacks, ansible-core shows its own controller frames for every failed task; none
    # of them may come from the collection's code (that would be an unhandled exception, not a message).
    ANSIBLE_DISPLAY_TRACEBACK=error playbook validation.yml --skip-tags core_argspec
    expect_output 'Traceback'
    expect_no_output 'File ".*ansible_collections/temperstack/alerting/'
    expect_no_ledger
    ts_expect_count 0
}

# ---------------------------------------------------------------------------------------------------
scenario_06_http_400() {  # a 400 fails the task and leaves the ledger as it was
    playbook http_400.yml -e phase=prime
    ledger_before=$(ts_ctl ledger-dump "$LEDGER")
    playbook http_400.yml -e phase=refused
    [[ "$(ts_ctl ledger-dump "$LEDGER")" == "$ledger_before" ]] || ts_fail "the refused alert changed the ledger"
    echo "ok: the refused alert left the ledger as it was"
    playbook http_400.yml -e phase=again
    ts_expect_count 2 delivered
}

# ---------------------------------------------------------------------------------------------------
scenario_07_retries() {  # retries after 5xx and 429
    playbook retries.yml
}

# ---------------------------------------------------------------------------------------------------
scenario_08_timeout() {  # a hanging endpoint fails the task in bounded time
    playbook timeout.yml
}

# ---------------------------------------------------------------------------------------------------
scenario_09_fleet() {  # 24 hosts with 12 forks: each alert delivered exactly once
    # The forks also race to create the ledger, two directory levels deep, and its schema.
    LEDGER="$SCENARIO_DIR/state/ledger/ledger.sqlite3"
    export TEMPERSTACK_LEDGER_PATH="$LEDGER"
    playbook fleet.yml -i inventory_fleet.ini --forks 12 -e run=first
    [[ "$(ts_ctl mode "$LEDGER")" == 600 && "$(ts_ctl mode "$(dirname "$LEDGER")")" == 700 ]] \
        || ts_fail "the ledger is not 0600 in a 0700 directory"
    echo "ok: the ledger is 0600 in a 0700 directory"
    playbook fleet.yml -i inventory_fleet.ini --forks 12 -e run=second
    expect_recap_unchanged
    [[ $(ts_recap_changed "$OUT" | wc -l) -eq 25 ]] || ts_fail "expected 25 hosts in the recap"
    ts_expect_count 25
}

# ---------------------------------------------------------------------------------------------------
# 10. Secrets: everything printed (-vvvv, --diff) and everything written (ledger with -wal/-shm,
# local and remote temporary directories, log_path, junit reports) is searched for the key. It may
# appear only in what the stand-in recorded and in the extra-vars file this script wrote.
scenario_10_secrets() {  # the integration key appears in no output and no file
    SECRETS_IN="$SCENARIO_DIR/input"     # written by this script: holds the key on purpose
    SECRETS_RUN="$SCENARIO_DIR/written"  # everything the runs print or write
    mkdir -p "$SECRETS_IN" "$SECRETS_RUN/junit"
    local free_port
    free_port=$("$TS_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    {
        echo "secret_key: \"$SECRET_KEY\""
        echo "secret_webhook_url: \"$TS_URL/api/integration/webhook/$SECRET_KEY\""
        echo "unreachable_url: \"http://127.0.0.1:$free_port\""
    } >"$SECRETS_IN/secret.yml"
    callbacks=${ANSIBLE_CALLBACKS_ENABLED:-}
    [[ ",$callbacks," == *,junit,* ]] || callbacks="${callbacks:+$callbacks,}junit"

    secret_run webhook_url
    secret_run webhook_url -e expect_sent=false  # again: nothing to send, the ledger is consulted
    secret_run api_key
    TEMPERSTACK_WEBHOOK_URL="$TS_URL/api/integration/webhook/$SECRET_KEY" secret_run environment -e environment_way=webhook_url
    TEMPERSTACK_API_KEY="$SECRET_KEY" TEMPERSTACK_BASE_URL="$TS_URL" secret_run environment -e environment_way=api_key
    ts_script '[{"status": 401, "body": {"error": "integration key '"$SECRET_KEY"' is not valid"}}]'
    secret_run rejected
    ts_script '[{"status": 400, "body": "cannot POST '"$TS_URL/api/integration/webhook/$SECRET_KEY"' (path /api/integration/webhook/'"$SECRET_KEY"')"}]'
    secret_run echo
    secret_run unreachable

    # The search must be able to find the key: it is in the input file, and the stand-in received it.
    [[ "$(ts_ctl find-text "$SECRET_KEY" "$SECRETS_IN")" == "$SECRETS_IN/secret.yml" ]] \
        || ts_fail "the search does not find the key in the file that holds it"
    secret_requests=$(ts_ctl keys | grep -cxF "$SECRET_KEY" || true)
    [[ "$secret_requests" -eq 6 ]] || ts_fail "expected 6 requests with the secret key at the stand-in, found $secret_requests"
    echo "ok: the stand-in received the key in $secret_requests requests"
    # What was searched really was written: output with masked URLs, the ledger, the log, junit reports.
    grep -qF '/api/integration/webhook/********' "$SECRETS_RUN"/run-*-rejected.out || ts_fail "no masked URL in the rejected run's output"
    grep -qx 'verbosity: 4' "$SECRETS_RUN"/run-1-webhook_url.out || ts_fail "the runs were not verbose"
    [[ -s "$SECRETS_RUN/ledger/ledger.sqlite3" ]] || ts_fail "no ledger was written where the runs were told to"
    [[ -s "$SECRETS_RUN/ansible.log" ]] || ts_fail "no log was written at ANSIBLE_LOG_PATH"
    compgen -G "$SECRETS_RUN/junit/*.xml" >/dev/null || ts_fail "no junit report was written"
    echo "searched: $(find "$SECRETS_RUN" -type f | wc -l) files: $(cd "$SECRETS_RUN" && find . -type f | sed 's|^\./||' | sort | tr '\n' ' ')"
    leaks=$(ts_ctl find-text "$SECRET_KEY" "$SECRETS_RUN")
    if [[ -n "$leaks" ]]; then
        echo "the key was found in:" >&2
        echo "$leaks" >&2
        ts_fail "the integration key leaked"
    fi
    echo "ok: the key is in no output and no file the runs wrote"
}

# ---------------------------------------------------------------------------------------------------
scenario_11_module_defaults() {  # module_defaults with the action group
    GROUP_LEDGER="$SCENARIO_DIR/group-ledger/ledger.sqlite3"
    playbook module_defaults.yml -e "{\"group_ledger_path\": \"$GROUP_LEDGER\"}"
    [[ -f "$GROUP_LEDGER" ]] || ts_fail "the ledger_path set in module_defaults was not used"
    expect_no_ledger  # TEMPERSTACK_LEDGER_PATH lost to the group's ledger_path
    ts_expect_count 4
}

# ---------------------------------------------------------------------------------------------------
scenario_12_rejected() {  # rejected keys fail clearly
    playbook rejected.yml
}

# ---------------------------------------------------------------------------------------------------
# 13. TEMPERSTACK_TIMEOUT, _RETRIES, _VALIDATE_CERTS and _CA_PATH, which the callback has always read, mean the
# same to the module; an option set on the task wins. The TLS cases use a second stand-in that serves HTTPS
# with a certificate for 127.0.0.1 signed by a private CA (made with trustme, from requirements-test.txt).
TLS_STAND_IN_PID=

stop_tls_stand_in() {
    if [[ -n "$TLS_STAND_IN_PID" ]]; then
        kill "$TLS_STAND_IN_PID" 2>/dev/null || true
        wait "$TLS_STAND_IN_PID" 2>/dev/null || true
        TLS_STAND_IN_PID=
    fi
}

cleanup() {
    local status=$?
    set +e  # clean up everything, whatever fails on the way
    stop_tls_stand_in
    # ts_cleanup keeps the work directory only if the script failed: hand it the status the script ends with.
    (exit "$status")
    ts_cleanup
}
trap cleanup EXIT

# start_tls_stand_in DIR: writes DIR/ca.pem (the private CA), DIR/other-ca.pem (a CA that signed nothing here),
# starts the stand-in with a certificate from the first and sets TLS_BASE_URL.
start_tls_stand_in() {
    local dir=$1
    mkdir -p "$dir"
    "$TS_PYTHON" - "$dir" <<'PYTHON' || ts_fail "cannot make the test certificates (is trustme installed? pip install -r requirements-test.txt)"
import os
import sys

import trustme

directory = sys.argv[1]
ca = trustme.CA()
ca.cert_pem.write_to_path(os.path.join(directory, 'ca.pem'))
leaf = ca.issue_cert('127.0.0.1')
leaf.cert_chain_pems[0].write_to_path(os.path.join(directory, 'cert.pem'))
leaf.private_key_pem.write_to_path(os.path.join(directory, 'key.pem'))
trustme.CA().cert_pem.write_to_path(os.path.join(directory, 'other-ca.pem'))
PYTHON
    "$TS_PYTHON" "$TS_STAND_IN" serve --port 0 --port-file "$dir/port" --log "$dir/requests.log" --keys "$KEY" \
        --tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem" </dev/null >"$dir/stdout" 2>"$dir/stderr" &
    TLS_STAND_IN_PID=$!
    if ! TLS_BASE_URL=$("$TS_PYTHON" "$TS_STAND_IN" wait --port-file "$dir/port" --timeout 15 --tls); then
        cat "$dir/stderr" >&2 || true
        ts_fail "the TLS stand-in did not start"
    fi
    echo "TLS stand-in (pid $TLS_STAND_IN_PID) at $TLS_BASE_URL"
}

expected_msg() {  # TEXT: the extra variable expected_msg, as JSON (the texts hold quotes and spaces)
    "$TS_PYTHON" -c 'import json, sys; print(json.dumps({"expected_msg": sys.argv[1]}))' "$1"
}

tls_delivered() {  # how many webhook requests the TLS stand-in answered 2xx
    SSL_CERT_FILE="$TLS_DIR/ca.pem" TS_URL="$TLS_BASE_URL" ts_ctl count delivered
}

scenario_13_environment() {  # the module reads TEMPERSTACK_TIMEOUT, _RETRIES, _VALIDATE_CERTS and _CA_PATH
    TEMPERSTACK_TIMEOUT=1 TEMPERSTACK_RETRIES=0 playbook environment.yml -e phase=limits

    # Bad values fail before any request, naming the option, without a traceback.
    LEDGER="$SCENARIO_DIR/bad-values/ledger.sqlite3"
    TEMPERSTACK_LEDGER_PATH="$LEDGER"
    TEMPERSTACK_TIMEOUT=soon playbook environment.yml -e phase=bad -e "$(expected_msg "argument 'timeout' is of type str")"
    TEMPERSTACK_RETRIES=11 playbook environment.yml -e phase=bad -e "$(expected_msg 'retries must be between 0 and 10, got 11')"
    TEMPERSTACK_CA_PATH="$SCENARIO_DIR/no-such-ca.pem" playbook environment.yml -e phase=bad \
        -e "$(expected_msg "ca_path $SCENARIO_DIR/no-such-ca.pem is not a file")"
    expect_no_output 'Traceback|Unexpected failure'
    expect_no_ledger

    TLS_DIR="$SCENARIO_DIR/tls"
    start_tls_stand_in "$TLS_DIR"
    local tls=(-e phase=tls -e "tls_webhook_url=$TLS_BASE_URL/api/integration/webhook/$KEY")
    # The private CA is not in the system's bundle: without the variable, the certificate is refused.
    playbook environment.yml "${tls[@]}" -e env_expect=refused
    # With it, the module verifies the certificate; a ca_path on the task wins over the variable.
    TEMPERSTACK_CA_PATH="$TLS_DIR/ca.pem" playbook environment.yml "${tls[@]}" -e env_expect=sent \
        -e task_expect=refused -e "task_ca_path=$TLS_DIR/other-ca.pem"
    TEMPERSTACK_CA_PATH="$TLS_DIR/other-ca.pem" playbook environment.yml "${tls[@]}" -e env_expect=refused \
        -e task_expect=sent -e "task_ca_path=$TLS_DIR/ca.pem"
    # TEMPERSTACK_VALIDATE_CERTS=false turns verification off; validate_certs on the task turns it on again.
    TEMPERSTACK_VALIDATE_CERTS=false playbook environment.yml "${tls[@]}" -e env_expect=sent \
        -e task_expect=refused -e task_validate_certs=true
    [[ "$(tls_delivered)" == 3 ]] || ts_fail "expected 3 alerts delivered at the TLS stand-in, found $(tls_delivered)"
    echo "ok: the 3 alerts expected to be sent were delivered at the TLS stand-in"

    # One environment, both surfaces: the module's task and the callback deliver over TLS with TEMPERSTACK_CA_PATH.
    SSL_CERT_FILE="$TLS_DIR/ca.pem" TS_URL="$TLS_BASE_URL" ts_ctl reset
    local rc=0 enabled=${ANSIBLE_CALLBACKS_ENABLED:-}
    ANSIBLE_CALLBACKS_ENABLED="${enabled:+$enabled,}temperstack.alerting.playbook_alerts" \
        TEMPERSTACK_BASE_URL="$TLS_BASE_URL" TEMPERSTACK_API_KEY="$KEY" TEMPERSTACK_CA_PATH="$TLS_DIR/ca.pem" \
        playbook environment_callback.yml || rc=$?
    [[ $rc -eq 2 ]] || ts_fail "the callback's playbook should fail its task (exit code 2), exit code $rc"
    expect_no_output 'not delivered|TLS verification'
    expect_output '^Temperstack: '
    [[ "$(tls_delivered)" == 2 ]] || ts_fail "expected the module's and the callback's Alarm at the TLS stand-in, found $(tls_delivered)"
    echo "ok: the module's and the callback's Alarm were delivered over TLS"
    stop_tls_stand_in
}

# ---------------------------------------------------------------------------------------------------
# Run the scenarios: all, or those whose ids start with one of the words in TS_SCENARIOS (e.g. "03 10").
SCENARIOS=(
    "01-fields|scenario_01_fields|fields arrive exactly as given"
    "02-idempotence|scenario_02_idempotence|a second identical run is quiet"
    "03-check-mode|scenario_03_check_mode|check mode sends nothing and writes no ledger"
    "04-transitions|scenario_04_transitions|Alarm, OK, OK sends two requests"
    "05-validation|scenario_05_validation|bad input fails before any request"
    "06-http-400|scenario_06_http_400|a 400 fails the task and leaves the ledger as it was"
    "07-retries|scenario_07_retries|retries after 5xx and 429"
    "08-timeout|scenario_08_timeout|a hanging endpoint fails the task in bounded time"
    "09-fleet|scenario_09_fleet|24 hosts with 12 forks: each alert delivered exactly once"
    "10-secrets|scenario_10_secrets|the integration key appears in no output and no file"
    "11-module-defaults|scenario_11_module_defaults|module_defaults with the action group"
    "12-rejected|scenario_12_rejected|rejected keys fail clearly"
    "13-environment|scenario_13_environment|TEMPERSTACK_TIMEOUT, _RETRIES, _VALIDATE_CERTS and _CA_PATH reach the module"
)
ts_run_scenarios "${SCENARIOS[@]}"

ts_log "all selected scenarios passed in $((SECONDS - started)) s"
