#!/usr/bin/env bash
# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# The driver of `make demo`: the collection's main job, end to end, in well under a minute.
#
#   tools/demo.sh --announce   say where the alerts will go (make demo runs this first, before the build)
#   tools/demo.sh              run the demo against the collection that `make build` installed
#
# `make demo` builds the tarball and installs it into build/install (`make build`), then runs this
# script, which runs the playbooks of examples/ FROM THE INSTALLED COLLECTION, as a Galaxy user has
# them, with nothing but that collection on the collections path:
#
#   1. the alert module: raise an alert, repeat it (nothing sent), resolve it (examples/alert.yml);
#   2. the playbook_alerts callback: a deployment fails (Alarm), fails the same way again (nothing
#      sent), then succeeds (OK) (examples/deploy.yml, which has no alerting in it);
#   3. the health_checks role: a loopback HTTP endpoint is healthy (nothing sent), goes down (Alarm),
#      stays down (nothing sent) and comes back (OK) (examples/health_checks.yml);
#   4. routing: one play over two tiers whose group_vars name two integrations fails on a host of each
#      (an Alarm to each integration), then succeeds (an OK to each) (examples/routing/);
#
# and prints a timeline of what Temperstack received. After each run it checks that exactly the
# expected alerts arrived, and fails otherwise.
#
# Where the alerts go:
#   - by default to the Temperstack stand-in (tests/stand_in/), started on 127.0.0.1 for the demo and
#     stopped at its end; nothing leaves the machine;
#   - with TEMPERSTACK_WEBHOOK_URL set, to that real Temperstack endpoint (the key is never printed).
#     Temperstack cannot be read back, so the timeline then lists what Temperstack acknowledged
#     (HTTP 2xx), as recorded in the demo's ledger. Step 4 then runs only if
#     TEMPERSTACK_WEBHOOK_URL_WEB_TIER and TEMPERSTACK_WEBHOOK_URL_DATABASES are set too.
# Either way the demo uses a fresh ledger of its own (in DEMO_WORK_DIR), never ~/.ansible/temperstack,
# and clears every other TEMPERSTACK_* and ANSIBLE_* setting of the caller, so that the same alerts are
# sent on every run and nothing of the caller's own configuration takes part.
#
# Environment:
#   DEMO_VENV              virtual environment with ansible-core (default: .venv)
#   DEMO_COLLECTIONS_PATH  collections path the tarball was installed into (default: build/install)
#   DEMO_WORK_DIR          ledger, logs and temporary files, emptied at the start (default: build/demo)
#   TEMPERSTACK_WEBHOOK_URL  send to this real endpoint instead of the stand-in
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${DEMO_VENV:-$root/.venv}
collections=${DEMO_COLLECTIONS_PATH:-$root/build/install}
work=${DEMO_WORK_DIR:-$root/build/demo}
stand_in=$root/tests/stand_in/temperstack_stand_in.py
real_url=${TEMPERSTACK_WEBHOOK_URL:-}
real_web_url=${TEMPERSTACK_WEBHOOK_URL_WEB_TIER:-}
real_db_url=${TEMPERSTACK_WEBHOOK_URL_DATABASES:-}
callback=temperstack.alerting.playbook_alerts

if [[ -t 1 ]]; then
    bold=$'\e[1m' dim=$'\e[2m' green=$'\e[32m' red=$'\e[31m' plain=$'\e[0m'
else
    bold='' dim='' green='' red='' plain=''
fi

banner() {
    printf '\n%s==== %s%s\n' "$bold" "$*" "$plain"
}

note() {
    printf '%s%s%s\n' "$dim" "$*" "$plain"
}

die() {
    printf '%sdemo FAILED: %s%s\n' "$red" "$*" "$plain" >&2
    exit 1
}

# The webhook URL with everything that may hold a secret hidden: scheme, host and port, and the
# webhook path with ******** for the key (in bash: no Python is needed before the build).
masked() {
    local url=$1 scheme='?' rest authority path
    if [[ $url == *://* ]]; then
        scheme=${url%%://*}
        rest=${url#*://}
    else
        rest=$url
    fi
    authority=${rest%%[/?#]*}
    path=${rest#"$authority"}
    if [[ $path == */api/integration/webhook/* ]]; then
        path="${path%%/api/integration/webhook/*}/api/integration/webhook/********"
    else
        path='/********'
    fi
    printf '%s://%s%s\n' "$scheme" "${authority##*@}" "$path"
}

announce() {
    if [[ -n "$real_url" ]]; then
        printf '\n%s%sTEMPERSTACK_WEBHOOK_URL is set: this demo sends REAL alerts to%s\n' "$bold" "$red" "$plain"
        printf '    %s\n' "$(masked "$real_url")"
        printf 'It raises 3 alerts and resolves each of them again (Alarm, then OK), and one more on each of\n'
        printf 'TEMPERSTACK_WEBHOOK_URL_WEB_TIER and _DATABASES if both are set; whoever is on call for those\n'
        printf 'services may be notified. Unset TEMPERSTACK_WEBHOOK_URL to use the local stand-in instead.\n'
        if [[ -t 0 && -t 1 ]]; then
            printf 'Starting in 5 seconds (Ctrl-C to stop)...\n'
            sleep 5
        fi
    else
        printf '\n%sThe demo sends its alerts to a Temperstack stand-in on 127.0.0.1: nothing leaves this machine.%s\n' \
            "$bold" "$plain"
        printf 'Set TEMPERSTACK_WEBHOOK_URL to send them to your Temperstack instead.\n'
    fi
}

if [[ "${1:-}" == "--announce" ]]; then
    announce
    exit 0
elif [[ $# -gt 0 ]]; then
    sed -n '6,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
fi

python=$venv/bin/python
collection=$collections/ansible_collections/temperstack/alerting
examples=$collection/examples
[[ -x "$venv/bin/ansible-playbook" ]] || die "no ansible-playbook in $venv: run make venv (or make demo)"
[[ -f "$collection/MANIFEST.json" ]] || die "temperstack.alerting is not installed in $collections: run make build (or make demo)"
[[ -d "$examples" ]] || die "$examples is missing: the installed collection has no examples/"

# --- a private, predictable environment ------------------------------------------------------------
# Only a previous demo's directory is ever emptied.
if [[ -e "$work" && ! -e "$work/.temperstack-demo" ]]; then
    die "$work exists and was not made by the demo; remove it or set DEMO_WORK_DIR"
fi
rm -rf "$work"
mkdir -p "$work/logs" "$work/tmp" "$work/www"
touch "$work/.temperstack-demo"

while IFS= read -r name; do
    unset "$name"
done < <(compgen -e | grep -E '^(TEMPERSTACK_|ANSIBLE_)' || true)
export PATH="$venv/bin:$PATH"
export ANSIBLE_CONFIG="$examples/ansible.cfg"
export ANSIBLE_COLLECTIONS_PATH="$collections"
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
export ANSIBLE_HOME="$work/ansible-home"
export ANSIBLE_LOCAL_TEMP="$work/tmp"
export ANSIBLE_RETRY_FILES_ENABLED=false
export TEMPERSTACK_LEDGER_PATH="$work/ledger/ledger.sqlite3"
# The stand-in and the health-checked endpoint are on 127.0.0.1: no proxy may be asked for them.
export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"

stand_in_pid=
web_pid=
cleanup() {
    local pid
    for pid in "$web_pid" "$stand_in_pid"; do
        if [[ -n "$pid" ]]; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=$SECONDS
version=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["collection_info"]["version"])' \
    "$collection/MANIFEST.json")
banner "temperstack.alerting $version, installed from its tarball into $collections"
note "ansible-core: $(ansible-playbook --version | sed -n '1s/.*core \([^]]*\)].*/\1/p'); examples: $examples"
note "ledger: $TEMPERSTACK_LEDGER_PATH; logs: $work/logs"

if [[ -n "$real_url" ]]; then
    mode=real
    export TEMPERSTACK_WEBHOOK_URL="$real_url"
    note "sending to the REAL endpoint $(masked "$real_url")"
else
    mode=stand-in
    "$python" "$stand_in" serve --port 0 --port-file "$work/stand-in.port" --log "$work/logs/stand-in.log" \
        </dev/null >"$work/logs/stand-in.out" 2>&1 &
    stand_in_pid=$!
    stand_in_url=$("$python" "$stand_in" wait --port-file "$work/stand-in.port" --timeout 15) \
        || die "the stand-in did not start (see $work/logs/stand-in.out)"
    # Any key is accepted by the stand-in; a random one shows that it never appears in the output.
    key=demo-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
    export TEMPERSTACK_WEBHOOK_URL="$stand_in_url/api/integration/webhook/$key"
    note "sending to the Temperstack stand-in at $(masked "$TEMPERSTACK_WEBHOOK_URL") (pid $stand_in_pid)"
    # Step 4's two integrations: two more keys, so the stand-in tells the integrations apart.
    web_key=demo-web-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
    db_key=demo-db-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
    real_web_url="$stand_in_url/api/integration/webhook/$web_key"
    real_db_url="$stand_in_url/api/integration/webhook/$db_key"
    # Which integration each key is, for the timelines (an environment variable: never on a command line or in a log).
    export DEMO_INTEGRATIONS="$key=default,$web_key=web-tier,$db_key=databases"
fi

# --- what Temperstack received ---------------------------------------------------------------------
# received EXPECTED...: check that Temperstack received exactly these statuses (in this order) since
# the previous check, all acknowledged, and print them. From the stand-in's records, or, for a real
# endpoint, from the ledger (what Temperstack answered with 2xx), also kept in received.tsv for the
# final timeline.
step_start=$("$python" -c 'import time; print(time.time())')
received() {
    "$python" - "$mode" "${stand_in_url:-}" "$TEMPERSTACK_LEDGER_PATH" "$step_start" "$work/received.tsv" "$@" <<'PYTHON'
import datetime
import json
import os
import sqlite3
import sys
import urllib.request

mode, url, ledger, since, tsv = sys.argv[1:6]
expected = sys.argv[6:]
rows = []  # (time, http status, status, alert_id, alert_name)
if mode == 'stand-in':
    with urllib.request.urlopen(url + '/_stand_in/requests', timeout=10) as response:
        records = json.loads(response.read().decode('utf-8'))
    seen_file = tsv + '.seen'
    seen = int(open(seen_file).read()) if os.path.exists(seen_file) else 0
    with open(seen_file, 'w') as handle:
        handle.write(str(len(records)))
    names = dict(pair.split('=', 1) for pair in os.environ.get('DEMO_INTEGRATIONS', '').split(',') if '=' in pair)
    for record in records[seen:]:
        data = record.get('json') if isinstance(record.get('json'), dict) else {}
        rows.append((record['time'], record['response_status'] or record['outcome'].upper(),
                     data.get('status'), data.get('alert_id'), data.get('alert_name'), names.get(record.get('key'), '')))
else:
    connection = sqlite3.connect('file:%s?mode=ro' % ledger, uri=True)
    for alert_id, status, payload, updated in connection.execute(
            'SELECT alert_id, status, payload, updated FROM alerts WHERE updated >= ? ORDER BY updated',
            (float(since),)):
        rows.append((updated, '2xx', status, alert_id, json.loads(payload).get('alert_name')))
    waiting = connection.execute('SELECT count(*) FROM outbox').fetchone()[0]
    connection.close()
    if waiting:
        sys.exit('%d alert(s) are still waiting in the outbox: not delivered' % waiting)
    with open(tsv, 'a') as handle:
        for row in rows:
            handle.write('\t'.join(str(cell) for cell in row) + '\n')

for when, code, status, alert_id, name, *integration in rows:
    stamp = datetime.datetime.fromtimestamp(when).strftime('%H:%M:%S')
    where = ' via %s' % integration[0] if integration and integration[0] else ''
    print('  -> Temperstack received %s %-5s %s  (%s) [HTTP %s]%s' % (stamp, status, alert_id, name, code, where))
if not rows:
    print('  -> Temperstack received nothing')
got = [row[2] for row in rows]
if got != expected or any(str(code) not in ('200', '2xx') for _when, code, *_rest in rows):
    sys.exit('expected Temperstack to receive %s, it received %s' % (expected or 'nothing', got or 'nothing'))
PYTHON
    step_start=$("$python" -c 'import time; print(time.time())')
}

# play RC [VAR=VALUE...] ansible-playbook ARGS...: show the command, run it in the examples directory
# (output shown, and saved in logs/), and check its exit code.
runs=0
play() {
    local expected_rc=$1 rc=0 log
    shift
    runs=$((runs + 1))
    log=$work/logs/$(printf '%02d' "$runs").log
    printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"
    set +e
    (cd "$examples" && env "$@") 2>&1 | tee "$log" | sed -e '/^[[:space:]]*$/d' -e 's/^/    /'
    rc=${PIPESTATUS[0]}
    set -e
    if [[ $rc -ne $expected_rc ]]; then
        die "ansible-playbook exited with $rc, expected $expected_rc (log: $log)"
    fi
}

# --- 1. the module ---------------------------------------------------------------------------------
banner "1. The alert module (examples/alert.yml): raise an alert, repeat it, resolve it"
note "The task states the status Temperstack should hold; the alert is sent only when that is news."
play 0 ansible-playbook alert.yml -e disk_used_percent=97
received Alarm
play 0 ansible-playbook alert.yml -e disk_used_percent=97
received
play 0 ansible-playbook alert.yml -e disk_used_percent=42
received OK

# --- 2. the callback -------------------------------------------------------------------------------
banner "2. The playbook_alerts callback (examples/deploy.yml, a playbook with no alerting in it)"
note "Enabled by one environment variable, the callback raises an Alarm when a play fails and an OK"
note "when a later run of it succeeds; the same failure again sends nothing."
play 2 ANSIBLE_CALLBACKS_ENABLED=$callback ansible-playbook deploy.yml -e deploy_broken=true
received Alarm
play 2 ANSIBLE_CALLBACKS_ENABLED=$callback ansible-playbook deploy.yml -e deploy_broken=true
received
play 0 ANSIBLE_CALLBACKS_ENABLED=$callback ansible-playbook deploy.yml -e deploy_broken=false
received OK

# --- 3. the role -----------------------------------------------------------------------------------
# The endpoint the role checks: a static file served on 127.0.0.1; down means the server is stopped.
web_up() {
    "$python" -m http.server "$web_port" --bind 127.0.0.1 --directory "$work/www" \
        </dev/null >>"$work/logs/web.log" 2>&1 &
    web_pid=$!
    "$python" - "$web_url" <<'PYTHON' || die "the demo's HTTP endpoint did not start (see $work/logs/web.log)"
import sys
import time
import urllib.request

deadline = time.monotonic() + 10
while True:
    try:
        urllib.request.urlopen(sys.argv[1], timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.05)
PYTHON
    note "(the endpoint $web_url is up)"
}

web_down() {
    kill "$web_pid"
    wait "$web_pid" 2>/dev/null || true
    web_pid=
    note "(the endpoint $web_url is down)"
}

banner "3. The health_checks role (examples/health_checks.yml): an HTTP endpoint goes down and comes back"
[[ -d "$collection/roles/health_checks" ]] || die "the installed collection has no roles/health_checks"
note "Scheduled checks whose results become alerts: Alarm while failing, OK once healthy, silent otherwise."
web_port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
web_url="http://127.0.0.1:$web_port/healthz"
printf 'ok\n' >"$work/www/healthz"
web_up
play 0 ansible-playbook health_checks.yml -e "healthz_url=$web_url"
received
web_down
play 0 ansible-playbook health_checks.yml -e "healthz_url=$web_url"
received Alarm
play 0 ansible-playbook health_checks.yml -e "healthz_url=$web_url"
received
web_up
play 0 ansible-playbook health_checks.yml -e "healthz_url=$web_url"
received OK

# --- 4. routing ------------------------------------------------------------------------------------
banner "4. Routing (examples/routing/): one run pages two Temperstack services, chosen in group_vars"
if [[ -n "$real_web_url" && -n "$real_db_url" ]]; then
    note "group_vars/web.yml names the integration web-tier (TEMPERSTACK_WEBHOOK_URL_WEB_TIER), group_vars/db.yml"
    note "databases (TEMPERSTACK_WEBHOOK_URL_DATABASES); the playbook has no alerting in it."
    export TEMPERSTACK_WEBHOOK_URL_WEB_TIER="$real_web_url" TEMPERSTACK_WEBHOOK_URL_DATABASES="$real_db_url"
    play 2 ANSIBLE_CALLBACKS_ENABLED=$callback ansible-playbook -i routing/inventory.ini routing/site.yml -e release_broken=true
    received Alarm Alarm
    play 0 ANSIBLE_CALLBACKS_ENABLED=$callback ansible-playbook -i routing/inventory.ini routing/site.yml
    received OK OK
    unset TEMPERSTACK_WEBHOOK_URL_WEB_TIER TEMPERSTACK_WEBHOOK_URL_DATABASES
else
    note "skipped: with a real endpoint, set TEMPERSTACK_WEBHOOK_URL_WEB_TIER and TEMPERSTACK_WEBHOOK_URL_DATABASES too"
fi

# --- the timeline ----------------------------------------------------------------------------------
if [[ $mode == stand-in ]]; then
    banner "What Temperstack received (the stand-in's timeline command; INTEGRATION from DEMO_INTEGRATIONS)"
    "$python" "$stand_in" timeline --url "$stand_in_url" --integrations-env DEMO_INTEGRATIONS
else
    banner "What Temperstack acknowledged (from the demo's ledger; Temperstack itself cannot be read back)"
    "$python" - "$work/received.tsv" <<'PYTHON'
import datetime
import sys

rows = [('TIME', 'CODE', 'STATUS', 'ALERT_ID', 'ALERT_NAME')]
for line in open(sys.argv[1]):
    when, code, status, alert_id, name = line.rstrip('\n').split('\t')
    rows.append((datetime.datetime.fromtimestamp(float(when)).strftime('%H:%M:%S'), code, status, alert_id, name))
widths = [max(len(row[i]) for row in rows) for i in range(4)]
for row in rows:
    print('  '.join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + '  ' + row[4])
PYTHON
    note "Open Temperstack to see the same alerts there."
fi

# The integration keys must be in no output (the logs hold all of ansible's), no log and not in the ledger.
checked=0
for url in "$TEMPERSTACK_WEBHOOK_URL" "$real_web_url" "$real_db_url"; do
    secret=${url#*/api/integration/webhook/}
    secret=${secret%%[?#/]*}
    if [[ -n "$secret" && "$secret" != "$url" ]]; then
        leaks=$(grep -rlaF -- "$secret" "$work" || true)
        [[ -z "$leaks" ]] || die "an integration key was found in: $leaks"
        checked=$((checked + 1))
    fi
done
((checked == 0)) || note "The $checked integration keys appear in no output, log or ledger file of the demo (checked)."

printf '\n%sdemo OK%s: %d playbook runs, every alert raised was resolved, in %ds. Logs and ledger: %s\n' \
    "$green" "$plain" "$runs" $((SECONDS - started)) "$work"
