#!/usr/bin/env bash
# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# The driver of `make demo-eda`: the loop that closes, on this machine (docs/event-driven.md).
#
#   tools/demo_eda.sh           start the Temperstack stand-in and ansible-rulebook with the shipped rulebook
#                               (temperstack.alerting.remediate) and the example remediation; print the curl
#                               command of an Alarm; show what the stand-in receives until Ctrl-C
#   tools/demo_eda.sh --check   the same, but POST the Alarm itself, wait for the remediation's OK at the
#                               stand-in, and exit (0 when it arrived)
#
# Nothing leaves the machine: the OK goes to the stand-in on 127.0.0.1; the ledger, logs and the demo's "faults"
# live in DEMO_WORK_DIR. The collection is staged from this clone (tools/stage_collection.sh).
#
# Environment:
#   DEMO_VENV       a venv with ansible-core, for ansible-galaxy and ansible-playbook (default: .venv)
#   DEMO_EDA_VENV   a venv with ansible-rulebook (default: .venv-eda); ansible-rulebook needs Java 17
#   DEMO_WORK_DIR   emptied at the start (default: build/demo-eda)
#   DEMO_EDA_PORT   the port of the event source (default: 5000)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${DEMO_VENV:-$root/.venv}
eda_venv=${DEMO_EDA_VENV:-$root/.venv-eda}
work=${DEMO_WORK_DIR:-$root/build/demo-eda}
port=${DEMO_EDA_PORT:-5000}
stand_in=$root/tests/stand_in/temperstack_stand_in.py
check=
[[ "${1:-}" == --check ]] && check=1

for tool in "$venv/bin/ansible-playbook" "$eda_venv/bin/ansible-rulebook"; do
    [[ -x "$tool" ]] || { echo "demo-eda: $tool not found: run make venv" >&2; exit 1; }
done
java -version >/dev/null 2>&1 || { echo "demo-eda: ansible-rulebook needs Java 17 (java -version)" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work/faults" "$work/ledger"
collections=$work/collections
"$root/tools/stage_collection.sh" "$collections/ansible_collections/temperstack/alerting" >/dev/null
collection=$collections/ansible_collections/temperstack/alerting

pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$venv/bin/python" "$stand_in" serve --port 0 --port-file "$work/stand-in.port" >"$work/stand-in.log" 2>&1 </dev/null &
pids+=($!)
url=$("$venv/bin/python" "$stand_in" wait --port-file "$work/stand-in.port" --timeout 15)
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

unset TEMPERSTACK_API_KEY TEMPERSTACK_ORG TEMPERSTACK_BASE_URL TEMPERSTACK_LEDGER_URL ANSIBLE_CONFIG
export TEMPERSTACK_WEBHOOK_URL="$url/api/integration/webhook/demo-eda"
export TEMPERSTACK_LEDGER_PATH="$work/ledger/ledger.sqlite3"
export ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_LOCAL_TEMP="$work/tmp" ANSIBLE_HOME="$work/ansible-home"
export PATH="$venv/bin:$PATH" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

cat >"$work/inventory.yml" <<EOF
all:
  hosts: {web1: {}, web2: {}}
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    remediation_fault_dir: "$work/faults"
EOF
cat >"$work/vars.yml" <<EOF
temperstack_eda_host: 127.0.0.1
temperstack_eda_port: $port
temperstack_webhook_token: "$token"
temperstack_alert_name: Disk almost full
temperstack_remediation_playbook: "$collection/examples/eda/remediate.yml"
EOF
touch "$work/faults/web1.fault" "$work/faults/web2.fault"

(cd "$work" && exec "$eda_venv/bin/ansible-rulebook" -r temperstack.alerting.remediate -i inventory.yml --vars vars.yml \
    </dev/null >"$work/ansible-rulebook.log" 2>&1) &
pids+=($!)
for _try in $(seq 120); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    kill -0 "${pids[1]}" 2>/dev/null || { tail -n 30 "$work/ansible-rulebook.log" >&2; exit 1; }
    sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { echo "demo-eda: the event source did not start" >&2; exit 1; }

alarm='{"alert_name": "Disk almost full", "status": "Alarm", "alert_id": "demo-eda-1"}'
command=(curl -sS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "$alarm"
    "http://127.0.0.1:$port/")
printf '\nansible-rulebook listens on http://127.0.0.1:%s (log: %s)\nTemperstack stand-in: %s\n\n' \
    "$port" "$work/ansible-rulebook.log" "$url"
quote="'"
printf 'Send an Alarm as Temperstack would:\n\n  curl -sS -H "Authorization: Bearer %s" -H "Content-Type: application/json" \\\n    -d %s http://127.0.0.1:%s/\n\n' \
    "$token" "$quote$alarm$quote" "$port"

if [[ -n "$check" ]]; then
    "${command[@]}"
    echo
    for _try in $(seq 240); do
        if "$venv/bin/python" "$stand_in" timeline --url "$url" | grep -q 'OK'; then
            "$venv/bin/python" "$stand_in" timeline --url "$url"
            echo "demo-eda: the remediation's OK for demo-eda-1 reached the stand-in"
            exit 0
        fi
        sleep 0.5
    done
    tail -n 40 "$work/ansible-rulebook.log" >&2
    echo "demo-eda: no OK reached the stand-in within 120 s" >&2
    exit 1
fi

echo 'What the stand-in receives (Ctrl-C to stop):'
seen=0
while sleep 1; do
    timeline=$("$venv/bin/python" "$stand_in" timeline --url "$url")
    count=$(grep -c 'api/integration' <<<"$timeline" || true)
    if [[ "$count" != "$seen" ]]; then
        echo "$timeline"
        seen=$count
    fi
done
