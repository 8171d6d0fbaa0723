# shellcheck shell=bash
# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Shared set-up for integration targets that run ansible-playbook against the Temperstack stand-in.
# A target's runme.sh lists `needs/target/setup_temperstack_stand_in` in its aliases and does:
#
#     set -eu -o pipefail
#     cd "$(dirname "${BASH_SOURCE[0]}")"
#     source ../setup_temperstack_stand_in/stand_in.sh
#     ts_init KEY[,KEY...]      # work dir, isolated environment, stand-in started, trap set
#
# After ts_init:
#   TS_WORK      a private temporary directory (removed on success, kept and named on failure)
#   TS_URL       the stand-in's base URL, http://127.0.0.1:PORT
#   TS_PYTHON    the Python that runs the stand-in and the helpers below
#   TS_COLLECTION_VERSION  the version of the temperstack.alerting that ansible-playbook loads
#   the environment: no TEMPERSTACK_* variable from the caller; TEMPERSTACK_LEDGER_PATH,
#   ANSIBLE_LOCAL_TEMP, ANSIBLE_REMOTE_TEMP and ANSIBLE_LOG_PATH all inside TS_WORK (never ~/.ansible).
#
# Works both under `ansible-test integration` and when runme.sh is run directly
# (then ANSIBLE_COLLECTIONS_PATH must lead to the collection, e.g. a staged copy).

TS_SETUP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

ts_log() {
    printf '\n=== %s\n' "$*"
}

ts_fail() {
    printf 'FAILED: %s\n' "$*" >&2
    exit 1
}

# The Python to run the stand-in with: ansible-test names the interpreter it tests with; otherwise
# the first python3 on PATH (the stand-in needs nothing but the standard library).
ts_find_python() {
    if [[ -n "${TS_PYTHON:-}" ]]; then
        return
    fi
    if [[ -n "${ANSIBLE_TEST_PYTHON_INTERPRETER:-}" ]]; then
        TS_PYTHON=$ANSIBLE_TEST_PYTHON_INTERPRETER
    else
        TS_PYTHON=$(command -v python3 || command -v python) || ts_fail "no python3 on PATH"
    fi
}

# The stand-in lives in tests/stand_in/ of the collection. ansible-test copies it into its temporary
# tree at the same relative position (alias needs/file/...), so ../../../stand_in/ from here finds it
# in both cases. TEMPERSTACK_STAND_IN overrides; the collections path is the last resort.
ts_find_stand_in() {
    local candidate entry
    local -a candidates=()
    if [[ -n "${TEMPERSTACK_STAND_IN:-}" ]]; then
        candidates+=("$TEMPERSTACK_STAND_IN")
    fi
    candidates+=("$TS_SETUP_DIR/../../../stand_in/temperstack_stand_in.py")
    local IFS=:
    for entry in ${ANSIBLE_COLLECTIONS_PATH:-}; do
        candidates+=("$entry/ansible_collections/temperstack/alerting/tests/stand_in/temperstack_stand_in.py")
    done
    unset IFS
    for candidate in "${candidates[@]}"; do
        if [[ -f "$candidate" ]]; then
            TS_STAND_IN=$(cd "$(dirname "$candidate")" && pwd)/$(basename "$candidate")
            return
        fi
    done
    ts_fail "cannot find tests/stand_in/temperstack_stand_in.py (looked in: ${candidates[*]}); set TEMPERSTACK_STAND_IN"
}

# ts_pg_env: source tests/pg_server.env, the PostgreSQL test server's URLs (`tools/pg_server.sh env DIR`
# writes it; `make test` puts it into the staged collection). ansible-test passes no environment variable
# through to runme.sh, so the URLs come from that file. It is looked for where the stand-in is: next to this
# target's tests/ directory (run directly), then in the collection on each ANSIBLE_COLLECTIONS_PATH entry
# (ansible-test copies only the targets, and the file is not part of the collection's content).
# Exports TEMPERSTACK_TEST_PG_URL, _JOB_URL, _ADMIN_URL, _DATA, _LOG and _CTL (see tools/pg_server.sh).
ts_pg_env() {
    local candidate entry name
    local -a candidates=("$TS_SETUP_DIR/../../../pg_server.env")
    local IFS=:
    for entry in ${ANSIBLE_COLLECTIONS_PATH:-}; do
        candidates+=("$entry/ansible_collections/temperstack/alerting/tests/pg_server.env")
    done
    unset IFS
    TS_PG_ENV=
    for candidate in "${candidates[@]}"; do
        if [[ -f "$candidate" ]]; then
            TS_PG_ENV=$(cd "$(dirname "$candidate")" && pwd)/$(basename "$candidate")
            break
        fi
    done
    if [[ -z "$TS_PG_ENV" ]]; then
        ts_fail "cannot find tests/pg_server.env (looked in: ${candidates[*]}): \`make test\` writes it; to run this target by hand, start a server with \`tools/pg_server.sh start DIR\` and write the output of \`tools/pg_server.sh env DIR\` to tests/pg_server.env in the collection that ANSIBLE_COLLECTIONS_PATH leads to"
    fi
    # shellcheck disable=SC1090  # written by tools/pg_server.sh env
    source "$TS_PG_ENV"
    for name in TEMPERSTACK_TEST_PG_URL TEMPERSTACK_TEST_PG_JOB_URL TEMPERSTACK_TEST_PG_ADMIN_URL; do
        [[ -n "${!name:-}" ]] || ts_fail "$TS_PG_ENV does not set $name: write it again with \`tools/pg_server.sh env DIR\`"
    done
}

# The version of the temperstack.alerting that ansible-playbook will load (the first on the collections path).
ts_collection_version() {
    local listing
    listing=$(ansible-galaxy collection list temperstack.alerting --format json 2>/dev/null) || listing='{}'
    TS_COLLECTION_VERSION=$("$TS_PYTHON" -c '
import json, sys
found = [c["temperstack.alerting"]["version"] for c in json.loads(sys.argv[1] or "{}").values() if "temperstack.alerting" in c]
print(found[0] if found else "")' "$listing")
    if [[ -z "$TS_COLLECTION_VERSION" ]]; then
        ts_fail "ansible cannot find temperstack.alerting (ANSIBLE_COLLECTIONS_PATH=${ANSIBLE_COLLECTIONS_PATH:-unset}); run under ansible-test or point ANSIBLE_COLLECTIONS_PATH at a staged copy"
    fi
}

# ts_init [KEYS]: KEYS is a comma-separated list of integration keys the stand-in accepts (any key if empty).
ts_init() {
    local keys=${1:-}
    ts_find_python
    ts_find_stand_in
    ts_collection_version

    TS_WORK=$(mktemp -d "${TMPDIR:-/tmp}/temperstack-itest.XXXXXX")
    TS_STAND_IN_PID=
    trap ts_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    # Nothing from the caller's environment may decide where alerts go or where the ledger is.
    unset TEMPERSTACK_WEBHOOK_URL TEMPERSTACK_API_KEY TEMPERSTACK_ORG TEMPERSTACK_BASE_URL
    export TEMPERSTACK_LEDGER_PATH="$TS_WORK/ledger/ledger.sqlite3"
    export ANSIBLE_LOCAL_TEMP="$TS_WORK/ansible-local-tmp"
    export ANSIBLE_REMOTE_TEMP="$TS_WORK/ansible-remote-tmp"
    export ANSIBLE_LOG_PATH="$TS_WORK/ansible.log"
    export ANSIBLE_NOCOLOR=true ANSIBLE_FORCE_COLOR=false
    export ANSIBLE_STDOUT_CALLBACK=ansible.builtin.default
    export ANSIBLE_RETRY_FILES_ENABLED=false
    # The stand-in is on 127.0.0.1: a proxy from the environment must not be asked for it.
    export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
    export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"

    mkdir -p "$TS_WORK/stand_in"
    local -a command=("$TS_PYTHON" "$TS_STAND_IN" serve --port 0
        --port-file "$TS_WORK/stand_in/port" --log "$TS_WORK/stand_in/requests.log")
    if [[ -n "$keys" ]]; then
        command+=(--keys "$keys")
    fi
    "${command[@]}" </dev/null >"$TS_WORK/stand_in/stdout" 2>"$TS_WORK/stand_in/stderr" &
    TS_STAND_IN_PID=$!
    if ! TS_URL=$("$TS_PYTHON" "$TS_STAND_IN" wait --port-file "$TS_WORK/stand_in/port" --timeout 15); then
        cat "$TS_WORK/stand_in/stderr" >&2 || true
        ts_fail "the stand-in did not start"
    fi
    export TS_URL TS_WORK TS_PYTHON TS_COLLECTION_VERSION
    echo "temperstack.alerting $TS_COLLECTION_VERSION; stand-in $TS_STAND_IN (pid $TS_STAND_IN_PID) at $TS_URL; work dir $TS_WORK"
}

ts_cleanup() {
    local status=$?
    if [[ -n "${TS_STAND_IN_PID:-}" ]]; then
        kill "$TS_STAND_IN_PID" 2>/dev/null || true
        wait "$TS_STAND_IN_PID" 2>/dev/null || true
        TS_STAND_IN_PID=
    fi
    if [[ -n "${TS_WORK:-}" && -d "$TS_WORK" ]]; then
        if [[ $status -eq 0 && -z "${TS_KEEP_WORK:-}" ]]; then
            rm -rf "$TS_WORK"
        else
            echo "work dir kept for inspection: $TS_WORK" >&2
            if [[ -s "$TS_WORK/stand_in/stderr" ]]; then
                echo "--- stand-in stderr:" >&2
                tail -n 40 "$TS_WORK/stand_in/stderr" >&2 || true
            fi
        fi
    fi
    return "$status"
}

# ts_ctl COMMAND [ARG...]: talk to the stand-in's control API and inspect files, in Python.
#   reset                    forget recorded requests and scripted answers (releases hanging requests)
#   script JSON              queue scripted answers, e.g. '[{"status": 500, "repeat": 2}]'
#   count [delivered]        print how many webhook requests were recorded (only 2xx-answered ones)
#   keys                     print the integration key of each recorded request, one per line
#   ledger-dump PATH         print the ledger's tables in a stable text form
#   mode PATH                print the permission bits of PATH in octal, e.g. 600
#   find-text TEXT PATH...   print every file under PATH... whose bytes contain TEXT (or its URL encoding)
ts_ctl() {
    "$TS_PYTHON" - "$TS_URL" "$@" <<'PYTHON'
import json
import os
import sqlite3
import sys
import urllib.parse
import urllib.request

base, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]


def call(path, payload=None):
    data = None if payload is None else json.dumps(payload).encode('utf-8')
    request = urllib.request.Request(
        base + path, data=data, method='GET' if data is None else 'POST',
        headers={'Content-Type': 'application/json'},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read().decode('utf-8'))


if command == 'reset':
    call('/_stand_in/reset', {})
elif command == 'script':
    call('/_stand_in/script', {'responses': json.loads(args[0])})
elif command == 'count':
    query = '?delivered=1' if args and args[0] == 'delivered' else ''
    print(len(call('/_stand_in/requests' + query)))
elif command == 'keys':
    for record in call('/_stand_in/requests'):
        print(record['key'])
elif command == 'ledger-dump':
    connection = sqlite3.connect('file:%s?mode=ro' % urllib.parse.quote(args[0]), uri=True)
    for table in ('alerts', 'outbox', 'claims'):
        for row in connection.execute('SELECT * FROM %s ORDER BY 1, 2' % table):
            print(table, json.dumps(row))
    connection.close()
elif command == 'mode':
    print('%o' % (os.stat(args[0]).st_mode & 0o7777))
elif command == 'find-text':
    needles = {args[0].encode('utf-8'), urllib.parse.quote(args[0], safe='').encode('utf-8')}
    for top in args[1:]:
        paths = [top] if os.path.isfile(top) else (
            os.path.join(root, name) for root, _dirs, names in os.walk(top) for name in names
        )
        for path in paths:
            try:
                with open(path, 'rb') as handle:
                    data = handle.read()
            except OSError:
                continue
            if any(needle in data for needle in needles):
                print(path)
else:
    sys.exit('unknown ts_ctl command %r' % command)
PYTHON
}

ts_reset() {
    ts_ctl reset
}

ts_script() {
    ts_ctl script "$1"
}

# ts_expect_count N [delivered]: the stand-in recorded exactly N (delivered) webhook requests.
ts_expect_count() {
    local expected=$1 actual what="request(s)"
    actual=$(ts_ctl count "${2:-}")
    if [[ -n "${2:-}" ]]; then
        what="$2 request(s)"
    fi
    if [[ "$actual" != "$expected" ]]; then
        ts_fail "expected $expected $what at the stand-in, found $actual"
    fi
    echo "ok: $actual $what at the stand-in"
}

# ts_recap_changed FILE: print the changed= count of every host in the PLAY RECAPs of FILE, one per line.
ts_recap_changed() {
    sed -n 's/^[^ ].* : ok=[0-9]*[[:space:]]*changed=\([0-9]*\).*/\1/p' "$1"
}

# ts_random_hex: 16 random hex digits, for keys that no output or file may contain.
ts_random_hex() {
    od -An -N8 -tx1 /dev/urandom | tr -d ' \n'
}

# ts_scenario ID TITLE: announce a scenario, forget the stand-in's requests, and give it a fresh
# ledger (TEMPERSTACK_LEDGER_PATH=$LEDGER) and work directory ($SCENARIO_DIR).
ts_scenario() {
    ts_log "$1: $2"
    ts_reset
    SCENARIO_DIR="$TS_WORK/scenarios/$1"
    mkdir -p "$SCENARIO_DIR"
    LEDGER="$SCENARIO_DIR/ledger/ledger.sqlite3"
    export TEMPERSTACK_LEDGER_PATH="$LEDGER"
    # shellcheck disable=SC2034  # counted up by the runme.sh that sources this file
    RUN=0
}

# ts_run_scenarios "ID|FUNCTION|TITLE"...: run each scenario in order; TS_SCENARIOS="03 10" selects
# those whose ids start with one of its words.
ts_run_scenarios() {
    local entry id function title word selected
    for entry in "$@"; do
        IFS='|' read -r id function title <<<"$entry"
        if [[ -n "${TS_SCENARIOS:-}" ]]; then
            selected=
            for word in $TS_SCENARIOS; do
                [[ "$id" == "$word"* ]] && selected=1
            done
            [[ -n "$selected" ]] || continue
        fi
        ts_scenario "$id" "$title"
        "$function"
    done
}
