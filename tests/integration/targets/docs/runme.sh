#!/usr/bin/env bash
# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# The guides' examples, run as a user copies them (issue 20): every YAML example of README.md and docs/*.md that is a
# play or a task list, and every ad-hoc command (`ansible localhost ...`) of their shell examples, against the
# Temperstack stand-in. docs_snippets.py (in setup_temperstack_stand_in) copies the examples of each guide line for
# line into one playbook, one play per example in the guide's order, and checks the rules an example must keep (a
# look "in check mode" is one, no date that will be in the past). An example is left out only with a reason written
# in the guide (<!-- docs-test: skip: REASON -->); this script prints every example and what became of it.
#
# Each guide's playbook runs once, with its own ledger, an inventory of the hosts the guides name (all local) and
# the variables the guides expect the reader to have (docs_vars.json): it must end without a failed task. Each
# ad-hoc command runs as a new user runs it (no inventory, a new HOME, the stand-in's URL in
# TEMPERSTACK_WEBHOOK_URL) and must succeed without a single warning. No key may appear in any output.
# Run by `ansible-test integration docs`, or directly:
#     ANSIBLE_COLLECTIONS_PATH=/path/to/dir/with/ansible_collections tests/integration/targets/docs/runme.sh
set -eu -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=../setup_temperstack_stand_in/stand_in.sh
source ../setup_temperstack_stand_in/stand_in.sh

KEY="TSKEY-DOCS-$(ts_random_hex)"
OLD_KEY="TSKEY-DOCSOLD-$(ts_random_hex)"
ts_init "$KEY,$OLD_KEY"
started=$SECONDS
HELPER="$TS_SETUP_DIR/docs_snippets.py"
COLLECTION=""
for entry in ${ANSIBLE_COLLECTIONS_PATH//:/ }; do
    if [[ -f "$entry/ansible_collections/temperstack/alerting/docs/operating.md" ]]; then
        COLLECTION="$entry/ansible_collections/temperstack/alerting"
        break
    fi
done
[[ -n "$COLLECTION" ]] || ts_fail "no temperstack.alerting with docs/ on ANSIBLE_COLLECTIONS_PATH"
WEBHOOK_URL="$TS_URL/api/integration/webhook/$KEY"

# What the guides expect the reader to have: a disk usage for the disk alert, the webhook URLs in a vault.
VARS="$TS_WORK/docs_vars.json"
"$TS_PYTHON" -c '
import json, sys
json.dump({"disk_used_percent": 97, "vault_temperstack_webhook_url": sys.argv[2],
           "vault_old_temperstack_webhook_url": sys.argv[3]}, open(sys.argv[1], "w"))' \
    "$VARS" "$WEBHOOK_URL" "$TS_URL/api/integration/webhook/$OLD_KEY"
# The hosts the guides name, all on this machine.
INVENTORY="$TS_WORK/inventory.ini"
cat >"$INVENTORY" <<INI
localhost
[web]
web03
web04
[webservers]
web03
[db]
db01
[all:vars]
ansible_connection=local
ansible_python_interpreter=$TS_PYTHON
INI

fail_with() {  # FILE MESSAGE: show FILE (keys hidden), then fail
    sed -e "s/$KEY/<key>/g" -e "s/$OLD_KEY/<old key>/g" "$1" | tail -n 60 >&2
    ts_fail "$2"
}

no_key_in() {  # FILE...
    local file
    for file in "$@"; do
        if grep -qF -e "$KEY" -e "$OLD_KEY" "$file"; then
            ts_fail "a key appears in $(basename "$file")"
        fi
    done
}

ts_log "the guides' YAML examples"
PLAYBOOKS="$TS_WORK/playbooks"
"$TS_PYTHON" "$HELPER" playbooks "$COLLECTION" "$PLAYBOOKS" | tee "$TS_WORK/examples.txt" ||
    ts_fail "an example of the guides breaks a rule (FAILED above)"
ran=$(grep -c ': run (' "$TS_WORK/examples.txt" || true)
((ran >= 15)) || ts_fail "only $ran examples to run: the guides have more (did the extraction break?)"

for playbook in "$PLAYBOOKS"/*.yml; do
    name=$(basename "$playbook" .yml)
    out="$TS_WORK/$name.out"
    mkdir -p "$TS_WORK/ledgers/$name"
    set +e
    TEMPERSTACK_WEBHOOK_URL="$WEBHOOK_URL" TEMPERSTACK_LEDGER_PATH="$TS_WORK/ledgers/$name/ledger.sqlite3" \
        TEMPERSTACK_TIMEOUT=5 TEMPERSTACK_RETRIES=0 \
        ansible-playbook -i "$INVENTORY" -e "@$VARS" "$playbook" </dev/null >"$out" 2>&1
    rc=$?
    set -e
    no_key_in "$out"
    ((rc == 0)) || fail_with "$out" "the examples of $name: ansible-playbook exited with $rc"
    if grep -Eq 'Traceback|ERROR!' "$out"; then
        fail_with "$out" "the examples of $name: an error or a traceback"
    fi
    if grep -E '^[^ ].* : ok=' "$out" | grep -Ev ' failed=0 ' | grep -q .; then
        fail_with "$out" "the examples of $name: a task failed"
    fi
    echo "ok: the examples of $name ran: $(grep -Ec '^TASK ' "$out") tasks, $(grep -c '^PLAY \[' "$out") plays"
done

ts_log "the guides' ad-hoc commands, as a new user runs them"
"$TS_PYTHON" "$HELPER" commands "$COLLECTION" >"$TS_WORK/commands.txt"
count=$(wc -l <"$TS_WORK/commands.txt")
((count >= 5)) || ts_fail "only $count ad-hoc commands in the guides (did the extraction break?)"
n=0
while IFS=$'\t' read -r where command; do
    n=$((n + 1))
    home="$TS_WORK/commands/$n/home"
    out="$TS_WORK/commands/$n/out"
    mkdir -p "$home"
    set +e
    # A new user: no inventory, interpreter or playbook directory set (ansible-test sets them), no ansible.cfg, a new HOME.
    (cd "$home" && env -u ANSIBLE_INVENTORY -u ANSIBLE_PYTHON_INTERPRETER -u ANSIBLE_CONFIG -u ANSIBLE_PLAYBOOK_DIR HOME="$home" \
        TEMPERSTACK_WEBHOOK_URL="$WEBHOOK_URL" TEMPERSTACK_LEDGER_PATH="$TS_WORK/commands/ledger.sqlite3" \
        bash -c "$command" </dev/null >"$out" 2>&1)
    rc=$?
    set -e
    no_key_in "$out"
    ((rc == 0)) || fail_with "$out" "$where: exit code $rc: $command"
    if grep -Eq '\[(WARNING|DEPRECATION WARNING)\]' "$out"; then
        fail_with "$out" "$where: a first run of this command warns: $command"
    fi
    echo "ok: $where, quiet: $command"
done <"$TS_WORK/commands.txt"

echo
echo "docs: $ran YAML examples and $count ad-hoc commands ran as documented in $((SECONDS - started))s"
