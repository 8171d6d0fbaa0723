#!/usr/bin/env bash
# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# The loop that closes, with the real ansible-rulebook: Temperstack -> the collection's event source (and
# eda.builtin.webhook behind the collection's filter) -> the shipped rulebook extensions/eda/rulebooks/remediate.yml
# -> the example remediation examples/eda/remediate.yml -> the OK with the same alert_id at the stand-in.
# ansible-rulebook starts twice only: once for scenarios 1-4, once for the source that refuses to start.
#
# ansible-rulebook comes from TEMPERSTACK_TEST_RULEBOOK, else from tests/eda.env in the collection (`make
# integration` writes it: .venv-eda), else from PATH. It needs Java 17: without java this target skips, saying so,
# except under CI, where it fails.
set -eu -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=../setup_temperstack_stand_in/stand_in.sh
source ../setup_temperstack_stand_in/stand_in.sh

if ! java -version >/dev/null 2>&1; then
    if [[ -n "${CI:-}" ]]; then
        ts_fail "java (17 or later) is not installed: ansible-rulebook needs it"
    fi
    echo "SKIPPED: the eda target needs Java 17 for ansible-rulebook, and java is not installed"
    exit 0
fi

COLLECTION="${ANSIBLE_COLLECTIONS_PATH%%:*}/ansible_collections/temperstack/alerting"
if [[ -z "${TEMPERSTACK_TEST_RULEBOOK:-}" && -f "$COLLECTION/tests/eda.env" ]]; then
    # shellcheck disable=SC1091  # written by `make eda-stage-env`
    source "$COLLECTION/tests/eda.env"
fi
RULEBOOK_BIN=${TEMPERSTACK_TEST_RULEBOOK:-$(command -v ansible-rulebook || true)}
[[ -x "$RULEBOOK_BIN" ]] || ts_fail "ansible-rulebook not found: run \`make venv\` (.venv-eda) and \`make integration\`, or set TEMPERSTACK_TEST_RULEBOOK"

KEY="eda-$(ts_random_hex)"
TOKEN="tok-$(ts_random_hex)"
ts_init "$KEY"
export TEMPERSTACK_WEBHOOK_URL="$TS_URL/api/integration/webhook/$KEY"
export TEMPERSTACK_LEDGER_PATH="$TS_WORK/ledger/ledger.sqlite3"
helper() { "$TS_PYTHON" "$PWD/eda.py" "$@"; }

FAULTS="$TS_WORK/faults"
mkdir -p "$FAULTS"
read -r PORT PORT_BUILTIN PORT_OPEN <<<"$(helper free-ports 3)"
cat >"$TS_WORK/inventory.yml" <<YAML
all:
  hosts: {web1: {}, web2: {}, web3: {}}
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    remediation_fault_dir: "$FAULTS"
YAML
ALERT_NAME="Ansible play 'Check the service' failed (failing.yml)"
cat >"$TS_WORK/vars.yml" <<YAML
temperstack_eda_host: 127.0.0.1
temperstack_eda_port: $PORT
temperstack_webhook_token: "$TOKEN"
temperstack_alert_name: "$ALERT_NAME"
temperstack_remediation_playbook: "$COLLECTION/examples/eda/remediate.yml"
YAML
helper rulebook "$COLLECTION/extensions/eda/rulebooks/remediate.yml" "$TS_WORK/rulebook.yml" "$PORT_BUILTIN"

# remediated HOST: the alert_id that the remediation last wrote for HOST (empty if it never ran there).
remediated() {
    cat "$FAULTS/$1.remediated" 2>/dev/null || true
}
expect_remediated_on() {  # ALERT_ID HOST...: exactly those hosts of web1..3 were remediated for ALERT_ID
    local id=$1 host
    shift
    for host in web1 web2 web3; do
        if [[ " $* " == *" $host "* ]]; then
            [[ "$(remediated "$host")" == "$id" ]] || ts_fail "$host was not remediated for $id"
        elif [[ "$(remediated "$host")" == "$id" ]]; then
            ts_fail "$host was remediated for $id, but the Alarm was not about it"
        fi
    done
    echo "ok: $id remediated on exactly: $*"
}
# raise_alarm PREFIX HOST...: the playbook_alerts callback raises an Alarm for a play that fails on HOST...
raise_alarm() {
    local prefix=$1 host
    shift
    for host in "$@"; do
        touch "$FAULTS/$host.fault"
    done
    local enabled=${ANSIBLE_CALLBACKS_ENABLED:-}
    ANSIBLE_CALLBACKS_ENABLED="${enabled:+$enabled,}temperstack.alerting.playbook_alerts" \
        TEMPERSTACK_ALERT_ID_PREFIX="$prefix" \
        ansible-playbook -i "$TS_WORK/inventory.yml" failing.yml >"$TS_WORK/failing-$prefix.out" 2>&1 \
        && ts_fail "failing.yml did not fail" || true
    ALARM=$(helper last "$TS_URL" Alarm)
    ALARM_ID=$("$TS_PYTHON" -c 'import json, sys; print(json.loads(sys.argv[1])["alert_id"])' "$ALARM")
    [[ "$ALARM_ID" == "$prefix"* ]] || ts_fail "the last Alarm at the stand-in is not the callback's: $ALARM"
    echo "ok: the callback raised $ALARM_ID"
}

ts_log "starting ansible-rulebook (the shipped rulebook, plus eda.builtin.webhook behind the filter)"
LOG="$TS_WORK/ansible-rulebook.log"
"$RULEBOOK_BIN" -r "$TS_WORK/rulebook.yml" -i "$TS_WORK/inventory.yml" --vars "$TS_WORK/vars.yml" -v \
    </dev/null >"$LOG" 2>&1 &
RULEBOOK_PID=$!
stop_rulebook() {
    if [[ -n "${RULEBOOK_PID:-}" ]]; then
        kill "$RULEBOOK_PID" 2>/dev/null || true
        wait "$RULEBOOK_PID" 2>/dev/null || true
        RULEBOOK_PID=
    fi
}
on_exit() {
    local status=$?
    stop_rulebook
    if [[ $status -ne 0 && -f "$LOG" ]]; then
        echo "--- ansible-rulebook log (last 80 lines):" >&2
        tail -n 80 "$LOG" >&2 || true
    fi
    set +e
    (exit "$status")
    ts_cleanup  # keeps the work directory when $? (the status) is not 0
}
trap on_exit EXIT
for _ in $(seq 120); do
    kill -0 "$RULEBOOK_PID" 2>/dev/null || ts_fail "ansible-rulebook ended before its sources listened"
    helper wait-http "http://127.0.0.1:$PORT/healthz" 0.5 2>/dev/null && helper wait-port "$PORT_BUILTIN" 0.5 2>/dev/null && break
done
helper wait-http "http://127.0.0.1:$PORT/healthz" 1 || ts_fail "the source did not start"
echo "ok: ansible-rulebook listens on $PORT (temperstack.alerting.webhook) and $PORT_BUILTIN (eda.builtin.webhook)"

ts_log "1: an Alarm POSTed to the source leads to the remediation's OK with the same alert_id"
DIRECT='{"alert_name": "'"$ALERT_NAME"'", "status": "alarm", "alert_id": "eda-direct-1", "alert_priority": "Critical"}'
[[ "$(helper post "http://127.0.0.1:$PORT/" wrong-token "$DIRECT")" == 401 ]] || ts_fail "a wrong token was not refused"
[[ "$(helper post "http://127.0.0.1:$PORT/" "$TOKEN" "$DIRECT")" == 200 ]] || ts_fail "the Alarm was not accepted"
helper wait-status "$TS_URL" eda-direct-1 OK 120
# The ledger never knew eda-direct-1: no meta.hosts, so the rulebook's hosts (all), and a warning in the log.
expect_remediated_on eda-direct-1 web1 web2 web3
grep -q "the ledger does not know alert 'eda-direct-1'" "$LOG" || ts_fail "no warning about the unknown alert in the log"
echo "ok: the activation's log says the ledger does not know the alert"

ts_log "2: an Alarm the callback raised for web1 and web2 (not web3) is remediated on exactly those two"
raise_alarm eda-a web1 web2
[[ "$(helper post "http://127.0.0.1:$PORT/hooks/temperstack" "$TOKEN" "$ALARM")" == 200 ]] || ts_fail "not accepted"
helper wait-status "$TS_URL" "$ALARM_ID" OK 120
expect_remediated_on "$ALARM_ID" web1 web2
A_ID=$ALARM_ID

ts_log "3: the same, through eda.builtin.webhook and the filter temperstack.alerting.normalize"
raise_alarm eda-b web1 web2
[[ "$(helper post "http://127.0.0.1:$PORT_BUILTIN/" "$TOKEN" "$ALARM")" == 200 ]] || ts_fail "not accepted"
helper wait-status "$TS_URL" "$ALARM_ID" OK 120
expect_remediated_on "$ALARM_ID" web1 web2

ts_log "4: an OK, a repeated Alarm and a duplicate start nothing"
OK_BODY=$("$TS_PYTHON" -c 'import json, sys; d = json.loads(sys.argv[1]); d["status"] = "OK"; print(json.dumps(d))' "$ALARM")
for body in "$OK_BODY" "$DIRECT" "$DIRECT"; do
    [[ "$(helper post "http://127.0.0.1:$PORT/" "$TOKEN" "$body")" == 200 ]] || ts_fail "not accepted: $body"
done
sleep 3
runs=$(grep -c "PLAY \[Remediate a Temperstack alert" "$LOG" || true)
[[ "$runs" == 3 ]] || ts_fail "expected 3 remediation runs, the log shows $runs"
for id in eda-direct-1 "$A_ID" "$ALARM_ID"; do
    [[ "$(helper count "$TS_URL" "$id" OK)" == 1 ]] || ts_fail "expected exactly one OK for $id"
done
echo "ok: 3 remediations, one OK each"
stop_rulebook

ts_log "5: a source without authentication refuses to start, and the activation ends with the message"
cat >"$TS_WORK/open.yml" <<YAML
- name: No authentication
  hosts: all
  sources:
    - temperstack.alerting.webhook:
        host: 127.0.0.1
        port: $PORT_OPEN
  rules:
    - name: Never
      condition: event.temperstack.status == "Alarm"
      action:
        debug:
YAML
status=0
timeout 120 "$RULEBOOK_BIN" -r "$TS_WORK/open.yml" -i "$TS_WORK/inventory.yml" >"$TS_WORK/open.log" 2>&1 || status=$?
cat "$TS_WORK/open.log"
[[ $status -ne 0 && $status -ne 124 ]] || ts_fail "ansible-rulebook did not end with an error (status $status)"
for word in 'refusing to start without authentication' token hmac_secret allow_unauthenticated; do
    grep -q -- "$word" "$TS_WORK/open.log" || ts_fail "the activation's output does not say: $word"
done
helper wait-port "$PORT_OPEN" 0.5 && ts_fail "something listens on $PORT_OPEN" || true
echo "ok: ansible-rulebook ended with status $status and named token, hmac_secret and allow_unauthenticated"
grep -q "$TOKEN" "$LOG" "$TS_WORK/open.log" && ts_fail "the token is in the activation's log" || true
echo "ok: the token is in no log"
