#!/usr/bin/env bash
# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Integration tests of the temperstack.alerting.health_checks role: real ansible-playbook runs against the
# Temperstack stand-in and a loopback health endpoint that this script flips between healthy and failing.
# Run by `ansible-test integration health_checks`, or directly:
#     ANSIBLE_COLLECTIONS_PATH=/path/to/dir/with/ansible_collections tests/integration/targets/health_checks/runme.sh [-v]
# Arguments (such as -v) are passed on to ansible-playbook. TS_SCENARIOS="01 03" runs only the scenarios
# whose ids start with those words; TS_KEEP_WORK=1 keeps the work directory.
#
# After every run, expect_sent names exactly the alerts Temperstack must have received in that run
# (status, resource_id, alert_name, priority, resource_type, resource_name, run_book_url, description),
# and the stand-in's records are cleared for the next run. The ledger is kept across the runs of a scenario:
# it is what makes the role quiet.
set -eu -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=../setup_temperstack_stand_in/stand_in.sh
source ../setup_temperstack_stand_in/stand_in.sh


KEY="hc-$(ts_random_hex)"
ts_init "$KEY"
started=$SECONDS
WEBHOOK_URL="$TS_URL/api/integration/webhook/$KEY"
PASSTHROUGH=("$@")

# --- the loopback health endpoint -------------------------------------------------------------------
ENDPOINT_DIR="$TS_WORK/health_endpoint"
SCRIPTS_DIR="$TS_WORK/scripts"
mkdir -p "$ENDPOINT_DIR" "$SCRIPTS_DIR"
"$TS_PYTHON" health_endpoint.py serve "$ENDPOINT_DIR" "$ENDPOINT_DIR/port" \
    </dev/null >"$ENDPOINT_DIR/stdout" 2>"$ENDPOINT_DIR/stderr" &
ENDPOINT_PID=$!

on_exit() {
    local status=$?
    set +e
    kill "$ENDPOINT_PID" 2>/dev/null
    wait "$ENDPOINT_PID" 2>/dev/null
    (exit "$status")
    ts_cleanup
    exit "$status"
}
trap on_exit EXIT

for _ in $(seq 100); do
    [[ -s "$ENDPOINT_DIR/port" ]] && break
    sleep 0.1
done
[[ -s "$ENDPOINT_DIR/port" ]] || ts_fail "the health endpoint did not start: $(cat "$ENDPOINT_DIR/stderr")"
HC_URL="http://127.0.0.1:$(cat "$ENDPOINT_DIR/port")"
echo "health endpoint (pid $ENDPOINT_PID) at $HC_URL"

cat >"$TS_WORK/vars.yml" <<EOF
hc_endpoint: "$HC_URL"
hc_scripts: "$SCRIPTS_DIR"
hc_webhook_url: "$WEBHOOK_URL"
EOF

# endpoint NAME STATUS [BODY]: from now on GET /NAME answers STATUS with BODY.
endpoint() {
    "$TS_PYTHON" health_endpoint.py set "$ENDPOINT_DIR" "$1" "$2" "${3:-}"
}

endpoint_hits() {
    "$TS_PYTHON" health_endpoint.py hits "$HC_URL"
}

# worker HOST SHELL-CODE: what the command check of HOST runs (scenario 03).
worker() {
    printf '%s\n' "$2" >"$SCRIPTS_DIR/worker-$1.sh"
}


# playbook FILE [ARGS...]: run it with its output shown and saved to $OUT.
playbook() {
    RUN=$((RUN + 1))
    OUT="$SCENARIO_DIR/run-$RUN.out"
    echo "--- run $RUN: ansible-playbook $1"
    ansible-playbook -i inventory.ini -e "@$TS_WORK/vars.yml" "$@" "${PASSTHROUGH[@]}" 2>&1 | tee "$OUT"
}

# expect_sent [LINE...]: the stand-in received exactly these alerts since the last expect_sent (any order),
# each delivered; each host's recap counts one change per alert sent to it. Then its records are cleared.
expect_sent() {
    local expected actual changed count
    expected=$(if [[ $# -gt 0 ]]; then printf '%s\n' "$@" | LC_ALL=C sort; fi)
    actual=$("$TS_PYTHON" received.py "$TS_URL")
    if [[ "$actual" != "$expected" ]]; then
        printf 'expected:\n%s\nreceived:\n%s\n' "${expected:-(nothing)}" "${actual:-(nothing)}" >&2
        ts_fail "run $RUN did not send exactly the expected alerts"
    fi
    changed=0
    while read -r count; do
        changed=$((changed + count))
    done < <(ts_recap_changed "$OUT")
    [[ "$changed" -eq $# ]] || ts_fail "run $RUN: the recaps count $changed changes, expected $#"
    echo "ok: run $RUN sent exactly $# alert(s)${1:+: $(printf '[%s] ' "$@")}"
    ts_reset
}

expect_output() {  # PATTERN: the output of the last run matches the extended regular expression
    grep -Eq -- "$1" "$OUT" || ts_fail "the output of run $RUN does not match: $1"
    echo "ok: output matches $1"
}

# Alert lines as received.py prints them.
api() {  # STATUS HOST DESCRIPTION
    echo "$1|$2|API health|Medium|web server|$2.example.com|https://wiki.example.com/runbooks/api|$3"
}
worker_alert() {  # STATUS HOST DESCRIPTION
    echo "$1|$2|Queue worker|Critical|host|-|-|$3"
}

# ---------------------------------------------------------------------------------------------------
scenario_01_http() {  # healthy, failing, still failing, healthy, healthy: nothing, Alarm, nothing, OK, nothing
    local ledger="$SCENARIO_DIR/role-ledger/ledger.sqlite3"
    local -a connection=(-e "health_checks_webhook_url=$WEBHOOK_URL" -e "health_checks_ledger_path=$ledger")
    endpoint api-web01 200 'status: ok'
    endpoint api-web02 200 'status: ok'

    playbook http.yml "${connection[@]}"
    expect_sent  # a check that never failed sends no OK

    endpoint api-web01 503 'status: down'
    playbook http.yml "${connection[@]}" --check
    expect_output '^web01 +: ok=[0-9]+ +changed=1 '  # check mode: the Alarm would be sent, but is not
    expect_output '^web02 +: ok=[0-9]+ +changed=0 '
    ts_expect_count 0

    # At -vvv, with the key passed as a role variable: it must appear nowhere in the output.
    RUN=$((RUN + 1))
    OUT="$SCENARIO_DIR/run-$RUN.out"
    echo "--- run $RUN: ansible-playbook http.yml -vvv (output in $OUT)"
    ansible-playbook -i inventory.ini -e "@$TS_WORK/vars.yml" http.yml "${connection[@]}" -vvv >"$OUT" 2>&1 \
        || { tail -n 40 "$OUT" | sed "s/$KEY/<KEY>/g" >&2; ts_fail "the -vvv run failed"; }
    grep -q 'ESTABLISH LOCAL CONNECTION' "$OUT" || ts_fail "the run was not verbose"
    if grep -qF "$KEY" "$OUT"; then
        ts_fail "the integration key appears in the -vvv output"
    fi
    echo "ok: the integration key is not in the -vvv output"
    expect_sent "$(api Alarm web01 "GET $HC_URL/api-web01 answered HTTP 503, expected 200")"

    playbook http.yml "${connection[@]}"
    expect_sent  # still failing the same way

    endpoint api-web01 200 'status: ok'
    playbook http.yml "${connection[@]}"
    expect_sent "$(api OK web01 "GET $HC_URL/api-web01 answered HTTP 200, and the body matches status: ok")"

    playbook http.yml "${connection[@]}"
    expect_sent

    # LEDGER is the scenario's default ledger, set by ts_scenario.
    # shellcheck disable=SC2153
    [[ -s "$ledger" && ! -e "$LEDGER" ]] || ts_fail "health_checks_ledger_path was not the ledger used"
    echo "ok: the ledger is at health_checks_ledger_path"
}

# ---------------------------------------------------------------------------------------------------
scenario_02_hosts() {  # per host: body pattern, status, a changed failure, both recover; connection from the environment
    export TEMPERSTACK_WEBHOOK_URL="$WEBHOOK_URL"
    endpoint api-web01 200 'status: degraded'
    endpoint api-web02 500 'oops'
    playbook http.yml
    expect_sent \
        "$(api Alarm web01 "GET $HC_URL/api-web01 answered HTTP 200, but the body does not match status: ok")" \
        "$(api Alarm web02 "GET $HC_URL/api-web02 answered HTTP 500, expected 200")"

    endpoint api-web02 404 'gone'
    playbook http.yml
    expect_sent "$(api Alarm web02 "GET $HC_URL/api-web02 answered HTTP 404, expected 200")"

    endpoint api-web01 200 'status: ok'
    endpoint api-web02 200 'status: ok'
    playbook http.yml
    expect_sent \
        "$(api OK web01 "GET $HC_URL/api-web01 answered HTTP 200, and the body matches status: ok")" \
        "$(api OK web02 "GET $HC_URL/api-web02 answered HTTP 200, and the body matches status: ok")"

    playbook http.yml
    expect_sent
    unset TEMPERSTACK_WEBHOOK_URL
}

# ---------------------------------------------------------------------------------------------------
scenario_03_command() {  # return codes, a timeout, recovery; connection by api_key and base_url
    local -a connection=(-e "health_checks_api_key=$KEY" -e "health_checks_base_url=$TS_URL")
    local command="Command \"sh $SCRIPTS_DIR/worker-web01.sh\""
    worker web01 'exit 3'
    worker web02 'exit 0'
    playbook command.yml "${connection[@]}"
    expect_sent  # 3 is one of the healthy return codes

    worker web01 'exit 1'
    playbook command.yml "${connection[@]}"
    expect_sent "$(worker_alert Alarm web01 "$command exited with 1, expected 0 or 3")"

    playbook command.yml "${connection[@]}"
    expect_sent

    worker web01 'exec sleep 8'
    playbook command.yml "${connection[@]}"
    expect_sent "$(worker_alert Alarm web01 "$command did not finish within 2 s")"

    worker web01 'exit 0'
    playbook command.yml "${connection[@]}"
    expect_sent "$(worker_alert OK web01 "$command exited with 0")"
}

# ---------------------------------------------------------------------------------------------------
scenario_04_controller() {  # checks from the controller for a host that cannot run modules
    local -a connection=(-e "health_checks_webhook_url=$WEBHOOK_URL")
    endpoint site 204
    playbook controller.yml "${connection[@]}"
    expect_sent  # 204 is healthy too

    endpoint site 503 'maintenance'
    playbook controller.yml "${connection[@]}"
    expect_sent "Alarm|remote01|Public site|Critical|host|-|-|GET $HC_URL/site answered HTTP 503, expected 200 or 204"
}

# ---------------------------------------------------------------------------------------------------
scenario_05_validation() {  # bad input fails before any check or request
    local hits_before
    hits_before=$(endpoint_hits)
    endpoint api-web01 503 'status: down'  # were a check to run, it would raise an alert
    # Its output holds the whole argument spec once per case; it is kept in $OUT and shown only on failure.
    if ! playbook validation.yml >/dev/null; then
        tail -n 80 "$OUT" >&2
        ts_fail "validation.yml failed"
    fi
    grep -E '^web01 +:' "$OUT"
    [[ "$(endpoint_hits)" == "$hits_before" ]] || ts_fail "a check ran although the input was bad"
    echo "ok: no check ran"
    [[ ! -e "$LEDGER" ]] || ts_fail "a ledger was written although the input was bad"
    echo "ok: no ledger was written"
    ts_expect_count 0
}

# ---------------------------------------------------------------------------------------------------
SCENARIOS=(
    "01-http|scenario_01_http|HTTP check: nothing, Alarm, nothing, OK, nothing"
    "02-hosts|scenario_02_hosts|per-host alerts, body pattern, changed failure"
    "03-command|scenario_03_command|command check: return codes, timeout, recovery"
    "04-controller|scenario_04_controller|checks run on the controller"
    "05-validation|scenario_05_validation|bad input fails before any check or request"
)
ts_run_scenarios "${SCENARIOS[@]}"

ts_log "all selected scenarios passed in $((SECONDS - started)) s"
