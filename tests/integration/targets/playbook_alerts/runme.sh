#!/usr/bin/env bash
# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Integration tests of the temperstack.alerting.playbook_alerts callback: real ansible-playbook runs,
# with the callback enabled by environment variables (once by ansible.cfg), against the Temperstack
# stand-in on 127.0.0.1. Run by `ansible-test integration playbook_alerts`, or directly:
#     ANSIBLE_COLLECTIONS_PATH=/path/to/dir/with/ansible_collections tests/integration/targets/playbook_alerts/runme.sh
# Each section names the item of the callback's issue (#3) it proves. Assertions compare what reached
# the stand-in (one line per request: "CODE STATUS ALERT_ID"), exit codes, output and wall time.
# ansible-runner must be importable by the Python that runs the tests (TS_SKIP_RUNNER=1 skips that section).
set -eu -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=../setup_temperstack_stand_in/stand_in.sh
source ../setup_temperstack_stand_in/stand_in.sh


KEY="pa-$(ts_random_hex)"              # the key of ordinary scenarios
SECRET_KEY="TSKEY-PA-$(ts_random_hex)"  # the key whose absence from all output and files section 16 proves
ts_init "$KEY,$SECRET_KEY"
started=$SECONDS
HERE=$PWD
CHECK=("$TS_PYTHON" "$HERE/check.py" "$TS_URL")
CALLBACK=temperstack.alerting.playbook_alerts
ID='[0-9a-f]{12}'

export ANSIBLE_HOST_KEY_CHECKING=false
export ANSIBLE_SSH_CONTROL_PATH_DIR="$TS_WORK/ssh-cp"

# The inventory: the hosts of inventory.ini, all local, plus ghost, an ssh host on a port nothing listens on.
GHOST_PORT=$("$TS_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
INVENTORY="$TS_WORK/inventory.ini"
{
    cat inventory.ini
    printf '\n[ghosts]\nghost ansible_connection=ssh ansible_host=127.0.0.1 ansible_port=%s ansible_user=nobody ansible_timeout=3 ' "$GHOST_PORT"
    printf '%s\n' "ansible_ssh_common_args='-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'"
} >"$INVENTORY"

# scenario ID TITLE: announce it, forget the stand-in's requests, give it a fresh ledger and output dir.
scenario() {
    ts_scenario "$1" "$2"
    EXTRA_ENV=()
}

now() {
    "$TS_PYTHON" -c 'import time; print(f"{time.monotonic():.3f}")'
}

# run_playbook MODE EXPECTED_RC [ansible-playbook ARGS...]
#   MODE callback: the callback enabled and pointed at the stand-in by TEMPERSTACK_* variables
#        plain:    no callback (the reference for "unchanged")
#        bare:     the callback enabled with no TEMPERSTACK_* connection variable at all
#        ini:      callback and its settings from $SCENARIO_DIR/ansible.cfg only
# EXTRA_ENV=(NAME=VALUE ...) adds variables. Sets OUT and ERR (files), RC, ELAPSED (seconds) and SENT
# (what reached the stand-in during the run). Fails unless the exit code is EXPECTED_RC.
run_playbook() {
    local mode=$1 expected=$2 before t0 t1
    shift 2
    RUN=$((RUN + 1))
    OUT="$SCENARIO_DIR/run-$RUN.$mode.stdout"
    ERR="$SCENARIO_DIR/run-$RUN.$mode.stderr"
    # ansible-test enables its own callbacks (junit) through ANSIBLE_CALLBACKS_ENABLED: keep them.
    local enabled=${ANSIBLE_CALLBACKS_ENABLED:-}
    local -a unset=(-u ANSIBLE_CALLBACKS_ENABLED) envs=()
    case $mode in
        callback)
            envs=(ANSIBLE_CALLBACKS_ENABLED="${enabled:+$enabled,}$CALLBACK" TEMPERSTACK_BASE_URL="$TS_URL"
                TEMPERSTACK_API_KEY="$KEY" TEMPERSTACK_TIMEOUT=5 TEMPERSTACK_RETRIES=0 TEMPERSTACK_FLUSH_TIMEOUT=15) ;;
        plain) envs=(${enabled:+ANSIBLE_CALLBACKS_ENABLED="$enabled"}) ;;
        bare) envs=(ANSIBLE_CALLBACKS_ENABLED="${enabled:+$enabled,}$CALLBACK") ;;
        ini) unset+=(-u TEMPERSTACK_LEDGER_PATH); envs=(ANSIBLE_CONFIG="$SCENARIO_DIR/ansible.cfg") ;;
        *) ts_fail "unknown mode $mode" ;;
    esac
    before=$("${CHECK[@]}" count)
    t0=$(now)
    set +e
    env "${unset[@]}" "${envs[@]}" "${EXTRA_ENV[@]}" ansible-playbook -i "$INVENTORY" "$@" </dev/null >"$OUT" 2>"$ERR"
    RC=$?
    set -e
    t1=$(now)
    ELAPSED=$("$TS_PYTHON" -c "print(f'{$t1 - $t0:.2f}')")
    SENT=$("${CHECK[@]}" lines "$before")
    echo "run $RUN ($mode): ansible-playbook $* -> rc $RC in ${ELAPSED}s; sent: ${SENT:-nothing}" | tr '\n' ' '
    echo
    if [[ "$RC" != "$expected" ]]; then
        cat "$OUT" "$ERR" >&2
        ts_fail "run $RUN: exit code $RC, expected $expected"
    fi
}

pa() { run_playbook callback "$@"; }
plain() { run_playbook plain "$@"; }

# expect_sent [REGEX...]: the last run's requests, one regular expression per request, in order.
expect_sent() {
    local -a lines=()
    if [[ -n "$SENT" ]]; then
        mapfile -t lines <<<"$SENT"
    fi
    if ((${#lines[@]} != $#)); then
        ts_fail "run $RUN: expected $# request(s) at the stand-in, got ${#lines[@]}: ${SENT:-nothing}"
    fi
    local i=0 pattern
    for pattern in "$@"; do
        [[ "${lines[$i]}" =~ $pattern ]] || ts_fail "run $RUN: request $((i + 1)) is '${lines[$i]}', expected /$pattern/"
        i=$((i + 1))
    done
    echo "ok: run $RUN sent $# request(s) as expected"
}

# sent_id N: the alert id of the last run's Nth request.
sent_id() {
    sed -n "${1}p" <<<"$SENT" | awk '{print $3}'
}

# field INDEX NAME: a payload field of the stand-in's INDEX-th request since the scenario began (-1: last).
field() {
    "${CHECK[@]}" field "$1" "$2"
}

# host_alert HOST: the alert id (scope host) of HOST among the stand-in's requests since the scenario began.
host_alert() {
    "${CHECK[@]}" lines 0 | awk -v host="-$1-" 'index($3, host) {print $3; exit}'
}

expect_field() {  # INDEX NAME VALUE
    local actual
    actual=$(field "$1" "$2")
    [[ "$actual" == "$3" ]] || ts_fail "request $1: $2 is '$actual', expected '$3'"
    echo "ok: request $1 $2 = $3"
}

expect_in() {  # FILE REGEX: the file matches the extended regular expression
    grep -Eq -- "$2" "$1" || { cat "$1" >&2; ts_fail "$(basename "$1") does not match /$2/"; }
    echo "ok: $(basename "$1") matches /$2/"
}

expect_not_in() {  # FILE REGEX
    if grep -Eq -- "$2" "$1"; then
        grep -En -- "$2" "$1" | head -n 5 >&2
        ts_fail "$(basename "$1") matches /$2/"
    fi
    echo "ok: $(basename "$1") does not match /$2/"
}

expect_count_in() {  # FILE REGEX N: exactly N lines match
    local n
    n=$(grep -Ec -- "$2" "$1" || true)
    [[ "$n" == "$3" ]] || { cat "$1" >&2; ts_fail "$(basename "$1"): $n line(s) match /$2/, expected $3"; }
    echo "ok: $(basename "$1") has $3 line(s) matching /$2/"
}

# expect_like_plain PLAIN_OUT PLAIN_RC N: the last run's exit code and stdout are those of the run without the
# callback (PLAIN_OUT), but for N summary lines of the callback; its stderr is the same but for the callback's
# warnings.
expect_like_plain() {
    [[ "$RC" == "$2" ]] || ts_fail "run $RUN: exit code $RC, without the callback $2"
    if ! diff -u "$1" <(grep -v '^Temperstack: ' "$OUT") >&2; then
        ts_fail "run $RUN: stdout differs from the run without the callback (beyond the summary line)"
    fi
    expect_count_in "$OUT" '^Temperstack: ' "$3"
    if ! diff -u "${1%.stdout}.stderr" <(grep -v -i 'temperstack' "$ERR") >&2; then
        ts_fail "run $RUN: stderr differs from the run without the callback (beyond the callback's warnings)"
    fi
    expect_not_in "$ERR" 'Traceback|Callback dispatch'
    echo "ok: run $RUN has the exit code ($RC) and stdout of the run without the callback"
}

# ---------------------------------------------------------------------------------------------------
scenario 01-story "items 1-3: fail, fail again, a different failure, green, green again"
pa 2 lifecycle.yml -e failing=web1
expect_sent "^200 Alarm ansible-lifecycle-yml-deploy-web-tier-$ID\$"
ALERT=$(sent_id 1)
expect_count_in "$OUT" '^Temperstack: sent 1 Alarm$' 1
# The same failure again, from a copy of the playbook elsewhere (as another controller would): the
# alert id and the payload are the same, so nothing is sent.
mkdir -p "$SCENARIO_DIR/elsewhere"
cp lifecycle.yml "$SCENARIO_DIR/elsewhere/"
pa 2 "$SCENARIO_DIR/elsewhere/lifecycle.yml" -e failing=web1
expect_sent
expect_not_in "$OUT" '^Temperstack: '
pa 2 lifecycle.yml -e failing=web1 -e release_error=disk-full
expect_sent "^200 Alarm $ALERT\$"
[[ "$(field -1 description)" == *disk-full* ]] || ts_fail "the updated Alarm does not describe the new failure"
pa 0 lifecycle.yml
expect_sent "^200 OK $ALERT\$"
expect_count_in "$OUT" '^Temperstack: sent 1 OK$' 1
expect_field -1 alert_name "Ansible play 'Deploy web tier' failed (lifecycle.yml)"
[[ "$(field -1 description)" == Recovered* ]] || ts_fail "the OK does not say it recovered"
pa 0 lifecycle.yml
expect_sent
expect_not_in "$OUT" '^Temperstack: '

# ---------------------------------------------------------------------------------------------------
scenario 02-payload "item 2: what the Alarm says; items 9-10 via ansible.cfg and AWX variables"
cat >"$SCENARIO_DIR/ansible.cfg" <<EOF
[defaults]
callbacks_enabled = $CALLBACK

[callback_temperstack]
base_url = $TS_URL
api_key = $KEY
ledger_path = $SCENARIO_DIR/ini-ledger/ledger.sqlite3
alert_id_prefix = team-x
alert_priority = Medium
run_book_url = https://wiki.example.com/runbooks/deploy
resource_type = deployment
max_error_chars = 60
flush_timeout = 10
EOF
EXTRA_ENV=(AWX_HOST=https://awx.example.com JOB_ID=4711)
run_playbook ini 2 payload.yml
EXTRA_ENV=()
expect_sent "^200 Alarm team-x-payload-yml-deploy-web-tier-$ID\$"
expect_field 1 alert_name "Ansible play 'Deploy web tier' failed (payload.yml)"
expect_field 1 alert_priority Medium
expect_field 1 run_book_url https://wiki.example.com/runbooks/deploy
expect_field 1 alert_url 'https://awx.example.com/#/jobs/playbook/4711/output'
expect_field 1 resource_type deployment
expect_field 1 resource_id 'payload.yml:Deploy web tier'
expect_field 1 resource_name 'Deploy web tier'
expect_field 1 metric_name ansible_failed_hosts
description=$(field 1 description)
printf '%s\n' "$description"
expected_description="Failed hosts (2): web1, web2
- web1: task 'Fetch the artifact' failed: could not download https://********@repo.example.com/app-...
- web2: task 'Set the secret' failed: (output hidden by no_log)"
[[ "$description" == "$expected_description" ]] || ts_fail "unexpected description; expected:
$expected_description"
"$TS_PYTHON" "$HERE/check.py" - no-timestamps "$description" || ts_fail "the description has a timestamp"
for secret in hunter2 NOLOGSECRET; do
    [[ -z "$("${CHECK[@]}" grep-bodies "$secret")" ]] || ts_fail "$secret reached Temperstack"
done
[[ -f "$SCENARIO_DIR/ini-ledger/ledger.sqlite3" && ! -e "$LEDGER" ]] || ts_fail "ledger_path from ansible.cfg was not used"
echo "ok: the ledger is where ansible.cfg put it"

# ---------------------------------------------------------------------------------------------------
scenario 03-not-failures "item 1: ignored and rescued failures count as success"
pa 2 tolerant.yml -e break_canary=true
expect_sent "^200 Alarm ansible-tolerant-yml-canary-play-$ID\$"
CANARY=$(sent_id 1)
expect_in "$OUT" '^web1 .* failed=0 .* rescued=1 +ignored=1'
[[ "$(field -1 description)" == "Failed hosts (1): web2
- web2: task 'Canary' failed: canary died" ]] || ts_fail "the canary Alarm mentions more than the canary"
# (Its only host failing, the tolerant play ends the playbook: the canary play does not run.)
pa 2 tolerant.yml -e break_tolerant=true
expect_sent "^200 Alarm ansible-tolerant-yml-tolerant-play-$ID\$"
TOLERANT=$(sent_id 1)
[[ "$(field -1 description)" == "Failed hosts (1): web1
- web1: task 'Real failure' failed: tolerant play broke for real" ]] || ts_fail "ignored or rescued failures are in the Alarm"
pa 0 tolerant.yml
expect_sent "^200 OK $TOLERANT\$" "^200 OK $CANARY\$"
expect_in "$OUT" '^web1 .* failed=0 .* rescued=1 +ignored=1'

# ---------------------------------------------------------------------------------------------------
scenario 04-unreachable "item 1: an unreachable host raises an Alarm naming it; item 6: exit code 4 either way"
plain 4 unreachable.yml -f 1
PLAIN_OUT=$OUT
pa 4 unreachable.yml -f 1
expect_sent "^200 Alarm ansible-unreachable-yml-reach-everyone-$ID\$"
description=$(field 1 description)
[[ "$description" == "Unreachable hosts (1): ghost
- ghost: task 'Ping everyone' unreachable: "* ]] || ts_fail "the Alarm does not name the unreachable host: $description"
expect_like_plain "$PLAIN_OUT" 4 1

# ---------------------------------------------------------------------------------------------------
scenario 05-handler "item 1: a failed handler raises an Alarm"
pa 2 handler.yml -e fail_handler=true
expect_sent "^200 Alarm ansible-handler-yml-handle-it-$ID\$"
HANDLER=$(sent_id 1)
[[ "$(field 1 description)" == *"task 'restart app' failed: app did not come back" ]] || ts_fail "the handler is not named"
pa 0 handler.yml
expect_sent "^200 OK $HANDLER\$"

# ---------------------------------------------------------------------------------------------------
scenario 06-scopes "item 2: scope host (one alert per host) and scope playbook (one per playbook)"
EXTRA_ENV=(TEMPERSTACK_SCOPE=host)
pa 2 lifecycle.yml -e failing=web1,web2
expect_sent "^200 Alarm ansible-lifecycle-yml-web[12]-$ID\$" "^200 Alarm ansible-lifecycle-yml-web[12]-$ID\$"
[[ "$(field 1 resource_type)/$(field 2 resource_type)" == host/host ]] || ts_fail "host alerts are not of resource_type host"
WEB1=$(host_alert web1)
WEB2=$(host_alert web2)
[[ -n "$WEB1" && -n "$WEB2" ]] || ts_fail "no alert per host"
pa 2 lifecycle.yml -e failing=web2
expect_sent "^200 OK $WEB1\$"
expect_field -1 alert_name 'Ansible playbook lifecycle.yml failed on web1'
pa 0 lifecycle.yml
expect_sent "^200 OK $WEB2\$"
EXTRA_ENV=(TEMPERSTACK_SCOPE=playbook)
pa 2 multiplay.yml -e broken=web1,web2
expect_sent "^200 Alarm ansible-multiplay-yml-$ID\$"
PLAYBOOK=$(sent_id 1)
expect_field -1 alert_name 'Ansible playbook multiplay.yml failed'
[[ "$(field -1 description)" == "Failed hosts (2): web1, web2
- web1: task 'First check' failed: first play broke
- web2: task 'Second check' failed: second play broke" ]] || ts_fail "the playbook Alarm does not list both plays' failures"
# The first play recovered but the playbook did not: a different failure, so the Alarm is updated.
pa 2 multiplay.yml -e broken=web2
expect_sent "^200 Alarm $PLAYBOOK\$"
pa 0 multiplay.yml
expect_sent "^200 OK $PLAYBOOK\$"
EXTRA_ENV=()

# ---------------------------------------------------------------------------------------------------
scenario 07-check-mode "item 5: --check sends nothing unless check_mode_alerts"
pa 2 lifecycle.yml -e failing=web1 --check
expect_sent
[[ ! -e "$LEDGER" ]] || ts_fail "a check-mode run wrote the ledger"
EXTRA_ENV=(TEMPERSTACK_CHECK_MODE_ALERTS=true)
pa 2 lifecycle.yml -e failing=web1 --check
expect_sent "^200 Alarm ansible-lifecycle-yml-deploy-web-tier-$ID\$"
EXTRA_ENV=()

# ---------------------------------------------------------------------------------------------------
scenario 08-narrowed "item 4: --tags, --skip-tags, --start-at-task, --step, --limit; hosts that did not run"
pa 2 narrow.yml -e failing=web1
expect_sent "^200 Alarm ansible-narrow-yml-narrow-play-$ID\$"
NARROW=$(sent_id 1)
pa 0 narrow.yml --tags t2
expect_sent
pa 0 narrow.yml --skip-tags t1
expect_sent
pa 0 narrow.yml --start-at-task Second
expect_sent
set +e
printf 'c\n' | env ANSIBLE_CALLBACKS_ENABLED="${ANSIBLE_CALLBACKS_ENABLED:+$ANSIBLE_CALLBACKS_ENABLED,}$CALLBACK" \
    TEMPERSTACK_BASE_URL="$TS_URL" TEMPERSTACK_API_KEY="$KEY" \
    ansible-playbook -i "$INVENTORY" narrow.yml --step >"$SCENARIO_DIR/step.out" 2>&1
step_rc=$?
set -e
[[ $step_rc == 0 ]] || { cat "$SCENARIO_DIR/step.out" >&2; ts_fail "the --step run failed"; }
expect_in "$SCENARIO_DIR/step.out" 'Perform task: TASK: First'
ts_expect_count 1
# The Alarm names web1 only: a run limited to web2 did not check it, one limited to web1 did.
pa 0 narrow.yml --limit web2
expect_sent
pa 0 narrow.yml --limit web1
expect_sent "^200 OK $NARROW\$"
# Nor does a host that skipped the play because it failed an earlier one: play B's Alarm names web1,
# which failed play A this time and so never ran B.
pa 2 relay.yml -e fail_b=web1
expect_sent "^200 Alarm ansible-relay-yml-relay-b-$ID\$"
RELAY_B=$(sent_id 1)
pa 2 relay.yml -e fail_a=web1
expect_sent "^200 Alarm ansible-relay-yml-relay-a-$ID\$"
RELAY_A=$(sent_id 1)
pa 0 relay.yml
expect_sent "^200 OK $RELAY_A\$" "^200 OK $RELAY_B\$"

# ---------------------------------------------------------------------------------------------------
scenario 09-meta "item 4: meta end_play / end_host before the end resolve nothing; skipped ones do"
pa 2 meta.yml -e failing=web1
expect_sent "^200 Alarm ansible-meta-yml-meta-play-$ID\$"
META=$(sent_id 1)
pa 0 meta.yml -e stop=true
expect_sent
expect_not_in "$OUT" 'reached the end'
pa 0 meta.yml -e end_host=web2
expect_sent
pa 0 meta.yml
expect_sent "^200 OK $META\$"

# ---------------------------------------------------------------------------------------------------
scenario 10-outage "item 7: what an outage leaves queued goes first on the next run with the same endpoint"
ts_script '[{"status": 503, "repeat": 50}]'
pa 2 outage.yml -e failing=web1
# Delivery stops at the first failure: Beta's Alarm is not even tried, so it cannot overtake Alpha's.
expect_sent "^503 Alarm ansible-outage-yml-alpha-$ID\$"
ALPHA=$(sent_id 1)
expect_count_in "$OUT" '^Temperstack: sent nothing; 2 queued for the next run$' 1
expect_count_in "$ERR" "Alarm for $ALPHA was not delivered.*503" 1
expect_not_in "$ERR" "$KEY"
ts_reset
# A run with another endpoint leaves this endpoint's outbox alone...
EXTRA_ENV=(TEMPERSTACK_BASE_URL="${TS_URL/127.0.0.1/localhost}")
pa 0 lifecycle.yml
expect_sent
EXTRA_ENV=()
# ...and the next run with this endpoint delivers it first, oldest first, though it has nothing of its own.
pa 0 lifecycle.yml
expect_sent "^200 Alarm $ALPHA\$" "^200 Alarm ansible-outage-yml-beta-$ID\$"
expect_count_in "$OUT" '^Temperstack: sent 2 Alarm$' 1
pa 0 outage.yml
expect_sent "^200 OK $ALPHA\$" "^200 OK ansible-outage-yml-beta-$ID\$"

# ---------------------------------------------------------------------------------------------------
scenario 11-hang "item 6: a hanging endpoint holds up no task and costs at most flush_timeout; item 7: Alarm then OK"
plain 2 outage.yml -e failing=web1 -f 1
PLAIN_OUT=$OUT
PLAIN_ELAPSED=$ELAPSED
ts_script '[{"action": "hang", "seconds": 120, "repeat": 5}]'
EXTRA_ENV=(TEMPERSTACK_FLUSH_TIMEOUT=3 TEMPERSTACK_TIMEOUT=60)
pa 2 outage.yml -e failing=web1 -f 1
EXTRA_ENV=()
# Alpha's Alarm went out (and hung) when play Alpha ended, while play Beta still had tasks to run.
expect_sent "^HANG Alarm ansible-outage-yml-alpha-$ID\$"
ALPHA=$(sent_id 1)
# flush_timeout (3 s), plus up to 2 s the callback allows the delivery process to report, plus slack:
# neither Beta's tasks nor the end of the run waited for the 60 s request timeout.
"$TS_PYTHON" -c "import sys; sys.exit(0 if $ELAPSED <= $PLAIN_ELAPSED + 3 + 2 + 4 else 1)" ||
    ts_fail "the run took ${ELAPSED}s, without the callback ${PLAIN_ELAPSED}s: more than flush_timeout added"
echo "ok: ${ELAPSED}s with a hanging endpoint, ${PLAIN_ELAPSED}s without the callback"
expect_like_plain "$PLAIN_OUT" 2 2
# Issue 20: after 2 s of waiting, one line says what the end of the run waits for (never more than one), then the summary.
expect_count_in "$OUT" '^Temperstack: delivering 2 alerts \(up to 1 s more\)\.\.\.$' 1
[[ "$(grep '^Temperstack: ' "$OUT" | tail -n 1)" == 'Temperstack: sent nothing; 2 queued for the next run' ]] ||
    ts_fail "run $RUN: the summary is not the last line of the callback"
expect_count_in "$OUT" '^Temperstack: sent nothing; 2 queued for the next run$' 1
expect_count_in "$ERR" 'did not finish within flush_timeout \(3 s\)' 1
expect_not_in "$OUT" "$KEY"
expect_not_in "$ERR" "$KEY"
ts_reset
pa 0 outage.yml
expect_sent "^200 Alarm $ALPHA\$" "^200 Alarm ansible-outage-yml-beta-$ID\$" "^200 OK $ALPHA\$" "^200 OK ansible-outage-yml-beta-$ID\$"
expect_count_in "$OUT" '^Temperstack: sent 2 Alarm, 2 OK$' 1

# ---------------------------------------------------------------------------------------------------
scenario 12-interrupted "item 4: SIGTERM or Ctrl-C (SIGINT) mid-run sends no OK; the next run completes the story"
pa 2 sigterm.yml -e failing=web1
expect_sent "^200 Alarm ansible-sigterm-yml-long-play-$ID\$"
LONG=$(sent_id 1)
for signal in TERM INT; do
    RUN=$((RUN + 1))
    OUT="$SCENARIO_DIR/run-$RUN.sig$signal.stdout"
    env ANSIBLE_CALLBACKS_ENABLED="${ANSIBLE_CALLBACKS_ENABLED:+$ANSIBLE_CALLBACKS_ENABLED,}$CALLBACK" \
        TEMPERSTACK_BASE_URL="$TS_URL" TEMPERSTACK_API_KEY="$KEY" TEMPERSTACK_FLUSH_TIMEOUT=5 \
        ansible-playbook -i "$INVENTORY" sigterm.yml -e nap=60 </dev/null >"$OUT" 2>&1 &
    playbook_pid=$!
    t0=$SECONDS
    until grep -q 'TASK \[Nap\]' "$OUT" 2>/dev/null; do
        if ((SECONDS - t0 > 30)) || ! kill -0 "$playbook_pid" 2>/dev/null; then
            cat "$OUT" >&2
            ts_fail "the long run never reached its pause"
        fi
        sleep 0.2
    done
    sleep 1
    kill -"$signal" "$playbook_pid"
    set +e
    wait "$playbook_pid"
    signal_rc=$?
    set -e
    echo "run $RUN: SIG$signal after $((SECONDS - t0))s -> rc $signal_rc"
    ((signal_rc != 0)) || ts_fail "the interrupted run exited 0"
    ((SECONDS - t0 < 30)) || ts_fail "the interrupted run did not stop promptly"
    expect_not_in "$OUT" 'awake'
    sleep 1  # anything a delivery process were still sending would have arrived by now
    ts_expect_count 1
done
pa 0 sigterm.yml
expect_sent "^200 OK $LONG\$"

# ---------------------------------------------------------------------------------------------------
scenario 13-no-endpoint "item 8: no endpoint: one warning, the run otherwise unchanged; item 6: exit codes"
plain 2 lifecycle.yml -e failing=web1 -f 1
PLAIN_FAIL=$OUT
run_playbook bare 2 lifecycle.yml -e failing=web1 -f 1
expect_like_plain "$PLAIN_FAIL" 2 0
expect_count_in "$ERR" 'playbook_alerts is disabled: no Temperstack endpoint is configured' 1
expect_count_in "$ERR" 'WARNING' 1
plain 0 lifecycle.yml -f 1
PLAIN_GREEN=$OUT
run_playbook bare 0 lifecycle.yml -f 1
expect_like_plain "$PLAIN_GREEN" 0 0
expect_count_in "$ERR" 'WARNING' 1
# Half a configuration: the warning names what is missing, never the key.
EXTRA_ENV=(TEMPERSTACK_API_KEY="$SECRET_KEY")
run_playbook bare 0 lifecycle.yml -f 1
EXTRA_ENV=()
expect_like_plain "$PLAIN_GREEN" 0 0
expect_count_in "$ERR" 'playbook_alerts is disabled: api_key given without org or base_url' 1
expect_not_in "$ERR" "$SECRET_KEY"
# With the callback working, green and failing runs keep their exit codes and output too.
pa 2 lifecycle.yml -e failing=web1 -f 1
expect_like_plain "$PLAIN_FAIL" 2 1
pa 0 lifecycle.yml -f 1
expect_like_plain "$PLAIN_GREEN" 0 1
ts_expect_count 2

# ---------------------------------------------------------------------------------------------------
scenario 14-topology "item 9: forks, serial, strategy free, roles and include_tasks"
pa 2 topology.yml -f 5 -e fail_forks=f1,f2 -e fail_serial=f3,f5 -e fail_free=f4 -e fail_role=f6
expect_sent "^200 Alarm ansible-topology-yml-forks-play-$ID\$" "^200 Alarm ansible-topology-yml-serial-play-$ID\$" \
    "^200 Alarm ansible-topology-yml-free-play-$ID\$" "^200 Alarm ansible-topology-yml-role-play-$ID\$"
[[ "$(field 1 description)" == "Failed hosts (2): f1, f2
- f1: task 'Forks check' failed: forks check failed on f1
- f2: task 'Forks check' failed: forks check failed on f2" ]] || ts_fail "forks: unexpected description"
[[ "$(field 2 description)" == "Failed hosts (2): f3, f5
- f3: task 'Serial check' failed: serial check failed on f3
- f5: task 'Serial check' failed: serial check failed on f5" ]] || ts_fail "serial: one Alarm must cover every batch"
[[ "$(field 3 description)" == "Failed hosts (1): f4"* ]] || ts_fail "free: unexpected description"
[[ "$(field 4 description)" == *"- f6: task 'temperstack_probe : Probe the service' failed: probe failed on f6" ]] ||
    ts_fail "role/include: the failing task is not named"
pa 2 topology.yml -f 5 -e fail_forks=f1,f2 -e fail_serial=f3,f5 -e fail_free=f4 -e fail_role=f6
expect_sent
pa 0 topology.yml -f 5
expect_sent "^200 OK ansible-topology-yml-forks-play-$ID\$" "^200 OK ansible-topology-yml-serial-play-$ID\$" \
    "^200 OK ansible-topology-yml-free-play-$ID\$" "^200 OK ansible-topology-yml-role-play-$ID\$"

# ---------------------------------------------------------------------------------------------------
scenario 15-fatal "item 9: any_errors_fatal and max_fail_percentage"
pa 2 fatal.yml -f 6 -e fatal=f3
expect_sent "^200 Alarm ansible-fatal-yml-fatal-play-$ID\$"
FATAL=$(sent_id 1)
[[ "$(field 1 description)" == "Failed hosts (1): f3
- f3: task 'Fatal check' failed: fatal check failed on f3" ]] || ts_fail "any_errors_fatal: only f3 failed"
pa 2 fatal.yml -f 6 -e maxfail=f1,f2
# A play's Alarm goes out when the play ends, recoveries only once the whole run has ended.
expect_sent "^200 Alarm ansible-fatal-yml-max-fail-play-$ID\$" "^200 OK $FATAL\$"
MAXFAIL=$(sent_id 1)
[[ "$(field -2 description)" == "Failed hosts (2): f1, f2"* ]] || ts_fail "max_fail_percentage: f1 and f2 failed"
pa 0 fatal.yml -f 6
expect_sent "^200 OK $MAXFAIL\$"

# ---------------------------------------------------------------------------------------------------
scenario 16-secrets "item 10: the key and task arguments never reach an alert, the output or a file"
EXTRA_ENV=(TEMPERSTACK_API_KEY="$SECRET_KEY")
pa 2 secrets.yml -vvvv
EXTRA_ENV=()
expect_sent "^200 Alarm ansible-secrets-yml-secret-play-$ID\$"
"${CHECK[@]}" keys | grep -qx "$SECRET_KEY" || ts_fail "the run did not use the secret key"
[[ -z "$("${CHECK[@]}" grep-bodies ARGSECRET)" ]] || ts_fail "a task argument reached Temperstack"
[[ -z "$("${CHECK[@]}" grep-bodies "$SECRET_KEY")" ]] || ts_fail "the key is in an alert body"
expect_in "$OUT" 'ARGSECRET'  # -vvvv does show the task's arguments: the check above is not vacuous
expect_field 1 description "Failed hosts (1): web1
- web1: task 'Use a token' failed: The command exited with a non-zero return code."

# ---------------------------------------------------------------------------------------------------
scenario 17-playbooks "ansible-playbook a.yml b.yml: each playbook's alerts go out in the same run"
pa 2 lifecycle.yml -e failing=web1
STORY=$(sent_id 1)
pa 2 lifecycle.yml multiplay.yml -e broken=web2
expect_sent "^200 OK $STORY\$" "^200 Alarm ansible-multiplay-yml-second-play-$ID\$"
expect_count_in "$OUT" '^Temperstack: sent 1 OK$' 1
expect_count_in "$OUT" '^Temperstack: sent 1 Alarm$' 1
expect_not_in "$ERR" 'Callback dispatch|Traceback'

# ---------------------------------------------------------------------------------------------------
scenario 18-runner "item 9: under ansible-runner, configured by its env/envvars only"
if "$TS_PYTHON" -c 'import ansible_runner' 2>/dev/null; then
    PDD="$SCENARIO_DIR/private_data_dir"
    mkdir -p "$PDD/project" "$PDD/inventory" "$PDD/env"
    cp lifecycle.yml "$PDD/project/runner.yml"
    printf '[web]\nweb1 ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}"\n' >"$PDD/inventory/hosts"
    cat >"$PDD/env/envvars" <<EOF
ANSIBLE_CALLBACKS_ENABLED: "$CALLBACK"
TEMPERSTACK_BASE_URL: "$TS_URL"
TEMPERSTACK_API_KEY: "$KEY"
TEMPERSTACK_LEDGER_PATH: "$LEDGER"
TEMPERSTACK_FLUSH_TIMEOUT: "10"
AWX_HOST: "https://awx.example.com"
JOB_ID: "99"
EOF
    cat >"$PDD/env/extravars" <<EOF
failing: web1
EOF
    set +e
    env -u ANSIBLE_CALLBACKS_ENABLED "$TS_PYTHON" -m ansible_runner run "$PDD" -p runner.yml >"$SCENARIO_DIR/runner.out" 2>&1
    runner_rc=$?
    set -e
    [[ $runner_rc == 2 ]] || { cat "$SCENARIO_DIR/runner.out" >&2; ts_fail "ansible-runner exited $runner_rc, expected 2"; }
    SENT=$("${CHECK[@]}" lines 0)
    RUN=runner
    expect_sent "^200 Alarm ansible-runner-yml-deploy-web-tier-$ID\$"
    expect_field 1 alert_url 'https://awx.example.com/#/jobs/playbook/99/output'
    expect_in "$SCENARIO_DIR/runner.out" '^Temperstack: sent 1 Alarm'
elif [[ -n "${TS_SKIP_RUNNER:-}" ]]; then
    echo "SKIPPED (TS_SKIP_RUNNER is set): ansible-runner is not installed for $TS_PYTHON"
else
    ts_fail "ansible-runner is not installed for $TS_PYTHON: it is in requirements-test.txt (make venv installs it); set TS_SKIP_RUNNER=1 to skip this section when running runme.sh by hand"
fi

# ---------------------------------------------------------------------------------------------------
scenario 19-empty-group "issue 10 item 1: a play for a group that is empty now resolves nothing"
FILLED="$SCENARIO_DIR/canary-filled.ini"
EMPTIED="$SCENARIO_DIR/canary-emptied.ini"
printf '[canary]\nweb1\nweb2\n' >"$FILLED"
printf '[canary]\n' >"$EMPTIED"
pa 2 canary.yml -i "$FILLED" -e failing=web1,web2
expect_sent "^200 Alarm ansible-canary-yml-canary-play-$ID\$"
CANARY=$(sent_id 1)
# The inventory changed and the group is empty now (or a dynamic inventory returned nothing): no host
# ran the play, so nothing recovered.
pa 0 canary.yml -i "$EMPTIED"
expect_in "$OUT" 'skipping: no hosts matched'
expect_sent
pa 0 canary.yml -i "$FILLED"
expect_sent "^200 OK $CANARY\$"

# ---------------------------------------------------------------------------------------------------
scenario 20-hosts-template "issue 10 item 1: a play whose hosts template resolves to no host resolves nothing"
# hosts: "{{ target }}", narrowed to nothing (by an AWX survey, an extra var).
pa 2 target.yml -e target=web -e failing=web1,web2
expect_sent "^200 Alarm ansible-target-yml-targeted-play-$ID\$"
TARGETED=$(sent_id 1)
pa 0 target.yml -e 'target=web:!web1:!web2'
expect_in "$OUT" 'skipping: no hosts matched'
expect_sent
pa 0 target.yml -e target=web
expect_sent "^200 OK $TARGETED\$"

# ---------------------------------------------------------------------------------------------------
scenario 21-limit-accumulates "issue 10 item 2: an Alarm's hosts accumulate; a run limited to some of them resolves nothing"
pa 2 lifecycle.yml -e failing=web1,web2
expect_sent "^200 Alarm ansible-lifecycle-yml-deploy-web-tier-$ID\$"
STORY=$(sent_id 1)
# Failing again on web1 under --limit web1 updates the Alarm (its description names web1 only), and
# web2 stays one of its hosts: it was not checked again.
pa 2 lifecycle.yml --limit web1 -e failing=web1
expect_sent "^200 Alarm $STORY\$"
pa 0 lifecycle.yml --limit web1
expect_sent
pa 0 lifecycle.yml
expect_sent "^200 OK $STORY\$"

# ---------------------------------------------------------------------------------------------------
scenario 22-end-host-per-host "issue 10 item 9: under scope host, meta end_host on web2 holds back web2's OK only"
EXTRA_ENV=(TEMPERSTACK_SCOPE=host)
pa 2 meta.yml -e failing=web1,web2
expect_sent "^200 Alarm ansible-meta-yml-web[12]-$ID\$" "^200 Alarm ansible-meta-yml-web[12]-$ID\$"
WEB1=$(host_alert web1)
WEB2=$(host_alert web2)
[[ -n "$WEB1" && -n "$WEB2" ]] || ts_fail "no alert per host"
pa 0 meta.yml -e end_host=web2
expect_sent "^200 OK $WEB1\$"
pa 0 meta.yml
expect_sent "^200 OK $WEB2\$"
EXTRA_ENV=()

# ---------------------------------------------------------------------------------------------------
scenario 23-isolated-sender "issue 10 item 4: the delivery process imports nothing from the playbook directory"
# Each file shadows a module of the standard library that the delivery process needs, for any Python
# that has this directory (ansible-playbook's working directory) on its path.
PLAYBOOK_DIR="$SCENARIO_DIR/playbooks"
mkdir -p "$PLAYBOOK_DIR"
cp lifecycle.yml "$PLAYBOOK_DIR/"
for name in json selectors random queue; do
    printf '%s\n' "open('$SCENARIO_DIR/imported-$name', 'w').close()" \
        "raise RuntimeError('$name.py of the playbook directory was imported')" >"$PLAYBOOK_DIR/$name.py"
done
cd "$PLAYBOOK_DIR"
pa 2 lifecycle.yml -e failing=web1
cd "$HERE"
for name in json selectors random queue; do
    [[ ! -e "$SCENARIO_DIR/imported-$name" ]] || ts_fail "$name.py of the playbook directory was imported"
done
echo "ok: no Python file of the playbook directory was imported"
expect_sent "^200 Alarm ansible-lifecycle-yml-deploy-web-tier-$ID\$"
expect_count_in "$OUT" '^Temperstack: sent 1 Alarm$' 1

# ---------------------------------------------------------------------------------------------------
ts_log "secrets everywhere: the key of scenario 16 in no file of the work dir (outputs, ledgers, logs)"
leaks=$(ts_ctl find-text "$SECRET_KEY" "$TS_WORK")
[[ -z "$leaks" ]] || ts_fail "the key was written to: $leaks"
echo "ok: the key is in no file under the work dir"

echo
echo "playbook_alerts: all scenarios passed in $((SECONDS - started))s"
