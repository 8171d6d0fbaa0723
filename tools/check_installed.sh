#!/usr/bin/env bash
# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Check the collection as a Galaxy user has it: `make build` installed the tarball into an empty
# collections path; this script uses that path and nothing else (no repository, no ~/.ansible,
# no site-packages collections) and
#   1. asks ansible-doc for the module, the callback and (if shipped) the role, and checks that each
#      is loaded from the installed copy;
#   2. runs the installed examples/alert.yml against the Temperstack stand-in (tests/stand_in/):
#      raise an alert, repeat it, resolve it, and checks that the stand-in received exactly one
#      Alarm and then one OK for the same alert_id, both acknowledged.
#
# Usage: tools/check_installed.sh VENV COLLECTIONS_PATH WORK_DIR
#   VENV              virtual environment with ansible-core (.venv)
#   COLLECTIONS_PATH  where `make build` installed the tarball (build/install)
#   WORK_DIR          ledger, logs and temporary files; emptied first (build/installed-check)
set -euo pipefail

venv=${1:?usage: $0 VENV COLLECTIONS_PATH WORK_DIR}
collections=${2:?usage: $0 VENV COLLECTIONS_PATH WORK_DIR}
work=${3:?usage: $0 VENV COLLECTIONS_PATH WORK_DIR}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
stand_in=$root/tests/stand_in/temperstack_stand_in.py
python=$venv/bin/python
collection=$collections/ansible_collections/temperstack/alerting
examples=$collection/examples

die() {
    echo "check_installed: FAILED: $*" >&2
    exit 1
}

[[ -x "$venv/bin/ansible-playbook" ]] || die "no ansible-playbook in $venv (make venv)"
[[ -f "$collection/MANIFEST.json" ]] || die "temperstack.alerting is not installed in $collections (make build)"
[[ -f "$examples/alert.yml" ]] || die "the installed collection has no examples/alert.yml"

rm -rf "$work"
mkdir -p "$work/tmp" "$work/home"

# Nothing of the caller's Ansible or Temperstack configuration takes part.
while IFS= read -r name; do
    unset "$name"
done < <(compgen -e | grep -E '^(TEMPERSTACK_|ANSIBLE_)' || true)
export PATH="$venv/bin:$PATH"
export ANSIBLE_CONFIG="$examples/ansible.cfg"
export ANSIBLE_HOME="$work/home"
export ANSIBLE_COLLECTIONS_PATH="$collections"
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
export ANSIBLE_LOCAL_TEMP="$work/tmp"
export ANSIBLE_NOCOLOR=1
export TEMPERSTACK_LEDGER_PATH="$work/ledger/ledger.sqlite3"
export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
cd "$work"

# --- 1. the plugins load from the installed copy -----------------------------------------------------
docs() {
    local type=$1 name=$2
    ansible-doc -t "$type" --json "$name" >"$work/doc-$type.json" 2>"$work/doc-$type.err" \
        || { cat "$work/doc-$type.err" >&2; die "ansible-doc -t $type $name failed"; }
    "$python" - "$work/doc-$type.json" "$name" "$collection" "$type" <<'PYTHON'
import json
import os
import sys

path, name, collection, plugin_type = sys.argv[1:]
data = json.load(open(path)).get(name)
if not data:
    sys.exit('check_installed: FAILED: ansible-doc knows no %s %s' % (plugin_type, name))
doc = data.get('doc') or {}
where = doc.get('filename') or data.get('path') or ''
if plugin_type != 'role' and not os.path.realpath(where).startswith(os.path.realpath(collection) + os.sep):
    sys.exit('check_installed: FAILED: %s %s comes from %r, not from %s' % (plugin_type, name, where, collection))
summary = doc.get('short_description') or (data.get('entry_points', {}).get('main', {}).get('short_description'))
print('  %-8s %s: %s' % (plugin_type, name, summary))
PYTHON
}

echo "check_installed: temperstack.alerting in $collections"
docs module temperstack.alerting.alert
docs callback temperstack.alerting.playbook_alerts
if [[ -d "$collection/roles/health_checks" ]]; then
    docs role temperstack.alerting.health_checks
fi

# --- 2. the installed example against the stand-in ---------------------------------------------------
stand_in_pid=
cleanup() {
    if [[ -n "$stand_in_pid" ]]; then
        kill "$stand_in_pid" 2>/dev/null || true
        wait "$stand_in_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

"$python" "$stand_in" serve --port 0 --port-file "$work/stand-in.port" --keys installed-check \
    --log "$work/stand-in.log" </dev/null >"$work/stand-in.out" 2>&1 &
stand_in_pid=$!
url=$("$python" "$stand_in" wait --port-file "$work/stand-in.port" --timeout 15) \
    || die "the stand-in did not start (see $work/stand-in.out)"
export TEMPERSTACK_WEBHOOK_URL="$url/api/integration/webhook/installed-check"

run=0
play() {
    run=$((run + 1))
    echo "check_installed: ansible-playbook $examples/alert.yml $*"
    ansible-playbook "$examples/alert.yml" "$@" >"$work/run-$run.log" 2>&1 \
        || { cat "$work/run-$run.log" >&2; die "ansible-playbook failed (log: $work/run-$run.log)"; }
    sed -n '/^PLAY RECAP/,$p' "$work/run-$run.log" | sed '/^[[:space:]]*$/d; s/^/    /'
}

play -e disk_used_percent=97
play -e disk_used_percent=97
play -e disk_used_percent=42

"$python" - "$url" <<'PYTHON'
import json
import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1] + '/_stand_in/requests', timeout=10) as response:
    records = json.loads(response.read().decode('utf-8'))
got = [((r.get('json') or {}).get('status'), (r.get('json') or {}).get('alert_id'), r['response_status'])
       for r in records]
for status, alert_id, code in got:
    print('  stand-in received %-5s %s (HTTP %s)' % (status, alert_id, code))
ok = (len(got) == 2 and [g[0] for g in got] == ['Alarm', 'OK'] and got[0][1] and got[0][1] == got[1][1]
      and all(g[2] == 200 for g in got))
if not ok:
    sys.exit('check_installed: FAILED: expected one Alarm, then one OK for the same alert_id, '
             'all answered 200; the stand-in received %s' % (got or 'nothing'))
PYTHON
echo "check_installed: OK"
