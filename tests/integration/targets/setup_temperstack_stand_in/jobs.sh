# shellcheck shell=bash
# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Jobs and their checks, for targets whose every job is a real ansible-playbook run with a new, empty HOME, as an
# AWX job has, against the stand-in and the PostgreSQL test server (day2, fleet_ledger). After stand_in.sh:
#
#     source ../setup_temperstack_stand_in/stand_in.sh
#     source ../setup_temperstack_stand_in/jobs.sh
#     ts_pg_env
#     ts_init KEY[,KEY...]
#     HERE=$PWD
#     jobs_init NAME=KEY...     # the keys, named: what a request used is told by name, never shown
#
# jobs_init checks psycopg, removes from the environment what could configure a job (the caller's TEMPERSTACK_*
# and libpq's PG* variables; the test server's TEMPERSTACK_TEST_PG_* stay for the helpers, jobs never get them),
# and sets the trap that drops DATABASES (when all passed) and calls jobs_cleanup, if the target defines it.
#
# The target sets SCENARIO_DIR (ts_scenario does), and may define job_options, which `job` calls to add to its
# local arrays `envs` (the job's environment) and `args` (ansible-playbook's arguments before the caller's).
#
# Variables: SECRETS (texts that no output may show: redact hides them, expect_secrets_absent looks for them),
# DATABASES (dropped at the end), SEEN (the stand-in's requests seen so far; set it to 0 after ts_scenario or
# ts_reset), BACKEND (named in failures, if set).

# ts_helper COMMAND [ARG...]: ts_helpers.py (sent, url, create-db, drop-dbs).
ts_helper() {
    "$TS_PYTHON" "$TS_SETUP_DIR/ts_helpers.py" "$@"
}

jobs_init() {
    local name
    KEY_NAMES=("$@")
    "$TS_PYTHON" -c 'import psycopg' 2>/dev/null \
        || ts_fail "psycopg is not installed for $TS_PYTHON: it is in requirements-test.txt (make venv installs it)"
    for name in $(compgen -e); do
        case $name in
            TEMPERSTACK_TEST_PG_*) ;;
            TEMPERSTACK_*|PG*) unset "$name" ;;
        esac
    done
    PG_VARIABLES=()
    for name in $(compgen -e); do
        if [[ $name == TEMPERSTACK_TEST_PG_* ]]; then
            PG_VARIABLES+=(-u "$name")
        fi
    done
    SECRETS=()
    for name in "${KEY_NAMES[@]}"; do
        SECRETS+=("${name#*=}")
    done
    DATABASES=()
    JOB_ENV=()
    SEEN=0
    JOB=0
    JOBS_MICROSECONDS=0  # the time spent in ansible-playbook, for the summary
    CALLBACK=temperstack.alerting.playbook_alerts
    trap jobs_on_exit EXIT
}

jobs_on_exit() {
    local status=$?
    set +e
    if declare -F jobs_cleanup >/dev/null; then
        jobs_cleanup
    fi
    if [[ $status -eq 0 && ${#DATABASES[@]} -gt 0 ]]; then
        ts_helper drop-dbs "${DATABASES[@]}"
    fi
    (exit "$status")
    ts_cleanup
    exit "$status"
}

redact() {  # hide every SECRET in stdin (letters, digits, - and _ only: nothing sed reads as a pattern)
    local secret
    local -a script=(-e '')
    for secret in "${SECRETS[@]}"; do
        script+=(-e "s/$secret/<secret>/g")
    done
    sed "${script[@]}"
}

# fail MESSAGE: the stand-in's timeline (the ground truth of what was sent) and the last job's output, then fail.
fail() {
    {
        echo "--- the stand-in's timeline:"
        "$TS_PYTHON" "$TS_STAND_IN" timeline --url "$TS_URL" || true
        if [[ -n "${OUT:-}" && -f "$OUT" ]]; then
            echo "--- $OUT (last 60 lines):"
            tail -n 60 "$OUT"
            echo "--- $ERR (last 40 lines):"
            tail -n 40 "$ERR"
        fi
    } 2>&1 | redact >&2
    ts_fail "$(redact <<<"${BACKEND:+[$BACKEND] }$*")"
}

# url_password URL USER: the password in URL (postgresql://USER:PASSWORD@...); add it to SECRETS.
url_password() {
    [[ $1 == postgresql://"$2":?*@* ]] || fail "cannot find the password of $2 in its URL"
    local password=${1#postgresql://"$2":}
    password=${password%%@*}
    printf '%s\n' "$password"
}

# masked_url URL: URL as messages must show it, its password masked.
masked_url() {
    local userinfo=${1%%@*}
    printf '%s:********@%s\n' "${userinfo%:*}" "${1#*@}"
}

elapsed_since() {  # MICROSECONDS: seconds since then, two decimals
    local now=${EPOCHREALTIME/./}
    printf '%d.%02d' $(((now - $1) / 1000000)) $((((now - $1) / 10000) % 100))
}

# new_job_dir: the next job's work directory ($JOB_DIR) and HOME ($JOB_HOME: new and empty, unless SAME_HOME=1
# keeps the last job's, as a controller that is not a container would). Sets OUT, ERR, and JOB_BASE_ENV, the
# environment of a job container: Ansible's and the ledger's files under HOME, the log in the work directory.
new_job_dir() {
    JOB=$((JOB + 1))
    JOB_DIR="$SCENARIO_DIR/job-$JOB"
    mkdir -p "$JOB_DIR"
    if [[ -z "${SAME_HOME:-}" || -z "${JOB_HOME:-}" ]]; then
        JOB_HOME="$JOB_DIR/home"
        mkdir -m 0700 "$JOB_HOME"
    fi
    OUT="$JOB_DIR/stdout"
    ERR="$JOB_DIR/stderr"
    JOB_BASE_ENV=(HOME="$JOB_HOME" ANSIBLE_LOCAL_TEMP="$JOB_HOME/.ansible/tmp" ANSIBLE_REMOTE_TEMP="$JOB_HOME/.ansible/tmp"
        ANSIBLE_LOG_PATH="$JOB_DIR/ansible.log" TEMPERSTACK_TIMEOUT=5 TEMPERSTACK_RETRIES=0 TEMPERSTACK_FLUSH_TIMEOUT=15)
}

# job MODE EXPECTED_RC PLAYBOOK [ARGS...]: one ansible-playbook run (see new_job_dir), its work directory as the
# working directory, with no TEMPERSTACK_* setting but those job_options and JOB_ENV give. PLAYBOOK is in $HERE,
# or an absolute path.
#   MODE module:   no callback
#        callback: the callback enabled by ANSIBLE_CALLBACKS_ENABLED
#        ini:      the callback enabled, and its ledger_url set to INI_LEDGER_URL, by $JOB_DIR/ansible.cfg
#   JOB_ENV=(NAME=VALUE ...)  more variables, after job_options' (so they win)
#   SCRIPT=JSON    the stand-in's scripted answers during the job (forgotten after it)
#   WARNINGS=1     the job may print warnings (otherwise a warning fails the test)
# Then as after_job.
job() {
    local mode=$1 expected=$2 playbook=$3 t0
    shift 3
    [[ $playbook == /* ]] || playbook="$HERE/$playbook"
    new_job_dir
    local enabled=${ANSIBLE_CALLBACKS_ENABLED:-}  # ansible-test's own callbacks (junit) stay enabled
    local -a envs=("${JOB_BASE_ENV[@]}") args=()
    case $mode in
        module) envs+=(${enabled:+ANSIBLE_CALLBACKS_ENABLED="$enabled"}) ;;
        callback) envs+=(ANSIBLE_CALLBACKS_ENABLED="${enabled:+$enabled,}$CALLBACK") ;;
        ini)
            # ANSIBLE_CALLBACKS_ENABLED would override the file.
            cat >"$JOB_DIR/ansible.cfg" <<EOF
[defaults]
callbacks_enabled = ${enabled:+$enabled,}$CALLBACK
[callback_temperstack]
ledger_url = $INI_LEDGER_URL
EOF
            envs+=(ANSIBLE_CONFIG="$JOB_DIR/ansible.cfg") ;;
        *) fail "unknown mode $mode" ;;
    esac
    if declare -F job_options >/dev/null; then
        job_options
    fi
    envs+=("${JOB_ENV[@]}")
    if [[ -n "${SCRIPT:-}" ]]; then
        ts_script "$SCRIPT"
    fi
    t0=${EPOCHREALTIME/./}
    set +e
    (cd "$JOB_DIR" && env -u TEMPERSTACK_LEDGER_PATH -u TEMPERSTACK_LEDGER_URL -u TEMPERSTACK_WEBHOOK_URL \
        -u ANSIBLE_CALLBACKS_ENABLED "${PG_VARIABLES[@]}" "${envs[@]}" \
        ansible-playbook -i "$HERE/inventory.ini" "$playbook" "${args[@]}" "$@" </dev/null >"$OUT" 2>"$ERR")
    RC=$?
    set -e
    ELAPSED=$(elapsed_since "$t0")
    JOBS_MICROSECONDS=$((JOBS_MICROSECONDS + ${EPOCHREALTIME/./} - t0))
    if [[ -n "${SCRIPT:-}" ]]; then
        ts_script '[]'
    fi
    after_job "$mode: $(basename "$playbook") $*" "$expected"
}

# after_job WHAT EXPECTED_RC: SENT is what the stand-in received since the last job (SEEN counts what it had;
# nothing else talks to it), SENT_KEYS the name of the key each request used ("unknown" for another key); the
# job ended with EXPECTED_RC, printed no traceback, error, or (unless WARNINGS=1) warning.
after_job() {
    local since
    since=$(ts_helper sent "$TS_URL" "$SEEN" "${KEY_NAMES[@]}")
    SENT=$(cut -d ' ' -f 1-3 <<<"$since")
    SENT_KEYS=$(cut -d ' ' -f 4 <<<"$since")
    if [[ -n "$since" ]]; then
        SEEN=$((SEEN + $(wc -l <<<"$since")))
    fi
    echo "job $JOB ($1) -> rc $RC in ${ELAPSED}s; sent: ${SENT:-nothing}" | tr '\n' ' ' | redact
    echo
    [[ "$RC" == "$2" ]] || fail "job $JOB: exit code $RC, expected $2"
    if grep -Eq 'Traceback|Callback dispatch|ERROR!' "$OUT" "$ERR"; then
        fail "job $JOB printed a traceback or an error"
    fi
    if [[ -z "${WARNINGS:-}" ]] && grep -Eq '\[(WARNING|DEPRECATION WARNING)\]' "$OUT" "$ERR"; then
        fail "job $JOB printed a warning"
    fi
}

# expect_sent [REGEX...]: the last job's requests, one regular expression per request, in order.
expect_sent() {
    local -a lines=()
    if [[ -n "$SENT" ]]; then
        mapfile -t lines <<<"$SENT"
    fi
    ((${#lines[@]} == $#)) || fail "job $JOB: expected $# request(s) at the stand-in, got ${#lines[@]}: ${SENT:-nothing}"
    local i=0 pattern
    for pattern in "$@"; do
        [[ "${lines[$i]}" =~ ^$pattern$ ]] || fail "job $JOB: request $((i + 1)) is '${lines[$i]}', expected /$pattern/"
        i=$((i + 1))
    done
    echo "ok: job $JOB sent $# request(s) as expected"
}

# expect_sent_like REGEX[+]...: as expect_sent, where REGEX+ stands for one or more requests that each match REGEX
# (a Temperstack that is down gets a delivery tried once or more, as the callback's delivery process sees fit).
expect_sent_like() {
    local pattern='' part
    for part in "$@"; do
        if [[ $part == *+ ]]; then
            part=${part%+}
            part="$part("$'\n'"$part)*"
        fi
        pattern+=${pattern:+$'\n'}$part
    done
    [[ "$SENT" =~ ^$pattern$ ]] || fail "job $JOB sent: ${SENT:-nothing}; expected: $*"
    echo "ok: job $JOB sent what was expected: $*"
}

# sent_id N: the alert id of the last job's Nth request.
sent_id() {
    sed -n "${1}p" <<<"$SENT" | awk '{print $3}'
}

# sent_id_like REGEX: the alert id of the last job's first request whose alert id matches REGEX.
sent_id_like() {
    local line
    while IFS= read -r line; do
        if [[ "${line##* }" =~ ^$1$ ]]; then
            echo "${line##* }"
            return
        fi
    done <<<"$SENT"
}

expect_keys() {  # NAME: every request of the last job used the key of that name (jobs_init)
    local unexpected
    unexpected=$(grep -vx "$1" <<<"$SENT_KEYS" || true)
    [[ -z "$unexpected" ]] || fail "job $JOB: requests used other keys than the $1 one: $(paste -sd ' ' <<<"$SENT_KEYS")"
    echo "ok: every request of job $JOB used the $1 key"
}

expect_in() {  # FILE TEXT: the file holds TEXT (fixed string)
    grep -Fq -- "$2" "$1" || fail "$(basename "$1") of job $JOB does not hold: $2"
    echo "ok: $(basename "$1") of job $JOB holds: $2"
}

expect_line() {  # FILE LINE: the file has this whole line
    grep -Fxq -- "$2" "$1" || fail "$(basename "$1") of job $JOB has no line: $2"
    echo "ok: $(basename "$1") of job $JOB says: $2"
}

expect_recap() {  # HOST CHANGED: the last job's recap of HOST counts CHANGED changes
    grep -Eq "^$1 +: ok=[0-9]+ +changed=$2 " "$OUT" || fail "job $JOB: the recap of $1 does not count $2 change(s)"
    echo "ok: job $JOB changed $2 thing(s) on $1"
}

# expect_absent TEXT WHAT: TEXT (a secret) is in no output of the last job and in no file under its work
# directory, HOME included (or their URL encodings).
expect_absent() {
    local found
    found=$(ts_ctl find-text "$1" "$JOB_DIR")
    [[ -z "$found" ]] || fail "job $JOB: $2 appears in: $found"
    echo "ok: $2 appears nowhere in job $JOB's output and files ($(find "$JOB_DIR" -type f | wc -l) files)"
}

# expect_secrets_absent: the last job ran at -vvvv, which shows all it can, and no key and no password (SECRETS)
# is in its output or files (expect_absent).
expect_secrets_absent() {
    local i
    grep -qx 'verbosity: 4' "$OUT" || fail "job $JOB did not run at -vvvv"
    for i in "${!SECRETS[@]}"; do
        expect_absent "${SECRETS[$i]}" "secret $((i + 1)) of ${#SECRETS[@]} (a key or a password)"
    done
}
