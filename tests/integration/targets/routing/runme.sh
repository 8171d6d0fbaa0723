#!/usr/bin/env bash
# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Integration tests of routing (issue 17): one run alerts two Temperstack integrations, chosen by the variable
# temperstack_integration in group_vars, host_vars, play vars and extra vars, with both scopes; the modules' option
# integration; alert_info. Real ansible-playbook runs against the stand-in, which knows two keys: "web" (the default
# endpoint, TEMPERSTACK_WEBHOOK_URL) and "db" (TEMPERSTACK_WEBHOOK_URL_DB). After every job, expect_routed names
# the requests it made, each with the key it used. Run by `ansible-test integration routing`, or directly:
#     ANSIBLE_COLLECTIONS_PATH=/path/to/dir/with/ansible_collections tests/integration/targets/routing/runme.sh
# TS_SCENARIOS="1 4" runs only the scenarios whose ids start with those words.
set -eu -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=../setup_temperstack_stand_in/stand_in.sh
source ../setup_temperstack_stand_in/stand_in.sh
# shellcheck source=../setup_temperstack_stand_in/jobs.sh
source ../setup_temperstack_stand_in/jobs.sh

WEB_KEY="TSKEY-RTWEB-$(ts_random_hex)"
DB_KEY="TSKEY-RTDB-$(ts_random_hex)"
ts_init "$WEB_KEY,$DB_KEY"
started=$SECONDS
# shellcheck disable=SC2034  # read by job (jobs.sh)
HERE=$PWD
jobs_init web="$WEB_KEY" db="$DB_KEY"
WEB_URL="$TS_URL/api/integration/webhook/$WEB_KEY"
DB_URL="$TS_URL/api/integration/webhook/$DB_KEY"

# What `job` (jobs.sh) gives a job of this target: the scenario's ledger, the default endpoint (unless
# NO_DEFAULT=1) and the integration db; SCOPE=host sets the callback's scope.
job_options() {
    envs+=(TEMPERSTACK_LEDGER_PATH="$LEDGER" TEMPERSTACK_WEBHOOK_URL_DB="$DB_URL")
    if [[ -z "${NO_DEFAULT:-}" ]]; then
        envs+=(TEMPERSTACK_WEBHOOK_URL="$WEB_URL")
    fi
    if [[ -n "${SCOPE:-}" ]]; then
        envs+=(TEMPERSTACK_SCOPE="$SCOPE")
    fi
}

# expect_routed [STATUS KEY_NAME]...: the last job's requests, as "STATUS KEY_NAME" (the key's name: web or db), in
# any order; each one answered 200.
expect_routed() {
    local got expected
    got=$(paste -d ' ' <(cut -d ' ' -f 1,2 <<<"$SENT") <(printf '%s\n' "$SENT_KEYS") | grep -v '^ *$' | sort | paste -sd ',' || true)
    expected=$(for pair in "$@"; do printf '200 %s\n' "$pair"; done | sort | paste -sd ',')
    [[ "$got" == "$expected" ]] || fail "job $JOB sent '${got:-nothing}', expected '${expected:-nothing}'"
    echo "ok: job $JOB sent ${expected:-nothing}"
}

# expect_warnings COUNT TEXT: the last job printed COUNT warnings that hold TEXT.
expect_warnings() {
    local count
    # Ansible wraps a long warning over several lines: the output is searched as one line.
    count=$(cat "$OUT" "$ERR" | tr -s '\n ' '  ' | grep -oF -- "$2" | wc -l)
    [[ "$count" == "$1" ]] || fail "job $JOB printed $count warning(s) with '$2', expected $1"
    echo "ok: job $JOB printed $1 warning(s) with: $2"
}

# ---------------------------------------------------------------------------------------------------
scenario_1_tiers() {
    start_scenario
    # group_vars route db1 to db: a play failing on one host of each tier alerts both integrations, each Alarm naming
    # its own hosts; at -vvvv, with neither key in any output or file (HOME included) nor in the ledger.
    WARNINGS=1 job callback 2 site.yml -e fail_on=web1,db1 -vvvv
    expect_routed "Alarm web" "Alarm db"
    expect_secrets_absent
    for key in "$WEB_KEY" "$DB_KEY"; do
        [[ -z "$(ts_ctl find-text "$key" "$SCENARIO_DIR/ledger")" ]] || fail "a key is in the ledger"
    done
    echo "ok: no key in the ledger"
    "$TS_PYTHON" - "$TS_URL" "$DB_KEY" <<'PYTHON' || fail "the Alarms do not name the hosts of their integration"
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + '/_stand_in/requests', timeout=10) as response:
    records = json.loads(response.read().decode('utf-8'))
for record in records:
    description = record['json']['description']
    mine, other = ('db1', 'web1') if record['key'] == sys.argv[2] else ('web1', 'db1')
    assert mine in description and other not in description, description
PYTHON
    echo "ok: each Alarm names only its integration's host"
    # The same failures: old news on both.
    job callback 2 site.yml -e fail_on=web1,db1
    expect_routed
    # The web tier still fails; the database tier recovered: its OK goes to db on its own.
    job callback 2 site.yml -e fail_on=web1
    expect_routed "OK db"
    job callback 0 site.yml
    expect_routed "OK web"
}

scenario_2_precedence() {
    start_scenario
    # Play vars beat group_vars: the play routes every host, the db tier included, to the default integration.
    job callback 2 play_vars.yml -e fail_on=db1 -e play_integration=default
    expect_routed "Alarm web"
    # Play vars name db for the web tier too, green: the OK follows the Alarm to the default integration.
    job callback 0 play_vars.yml -e play_integration=db
    expect_routed "OK web"
    # Extra vars beat everything: the web tier goes to db. Host scope: one alert per host.
    SCOPE=host job callback 2 site.yml -e fail_on=web2 -e temperstack_integration=db
    expect_routed "Alarm db"
    # A host moved between integrations with its Alarm open: web2's Alarm is in db; web2 is in the default
    # integration again, and green: its OK follows the Alarm to db.
    SCOPE=host job callback 0 site.yml
    expect_routed "OK db"
}

scenario_3_moved_and_failing() {
    start_scenario
    SCOPE=host job callback 2 site.yml -e fail_on=db1
    expect_routed "Alarm db"
    # Moved to the default integration and failing again: the new failure goes there, db's Alarm stays open.
    SCOPE=host job callback 2 site.yml -e fail_on=db1 -e temperstack_integration=default
    expect_routed "Alarm web"
    SCOPE=host job callback 0 site.yml
    expect_routed "OK web" "OK db"
}

scenario_4_none_and_unknown() {
    start_scenario
    # none: the lab alerts nowhere, silently.
    job callback 2 site.yml -e hosts_pattern=lab -e fail_on=lab1
    expect_routed
    # host_vars name payments (a template), which has no endpoint: the default one, one warning naming the variable.
    WARNINGS=1 job callback 2 site.yml -e hosts_pattern=pay:web -e fail_on=pay1,web1
    expect_routed "Alarm web"
    expect_warnings 1 'TEMPERSTACK_WEBHOOK_URL_PAYMENTS is not set): its alerts go to the default endpoint'
    # Without a default endpoint either: not sent, and said so; db's alerts still go out.
    NO_DEFAULT=1 WARNINGS=1 SCOPE=host job callback 2 site.yml -e hosts_pattern=pay:db -e fail_on=pay1,db2
    expect_routed "Alarm db"
    expect_warnings 1 'was not sent: integration payments (temperstack_integration) has no endpoint (TEMPERSTACK_WEBHOOK_URL_PAYMENTS'
}

scenario_5_modules() {
    start_scenario
    # The option integration (module_defaults and a task), an unknown one, none; alert_info by name. At -vvvv.
    WARNINGS=1 job module 0 module.yml -vvvv
    expect_routed "Alarm db" "Alarm web"
    expect_secrets_absent
}

# A scenario starts with a stand-in that has forgotten every request (ts_scenario), and its own ledger.
start_scenario() {
    # shellcheck disable=SC2034  # read by after_job (jobs.sh)
    SEEN=0
}

scenario_6_role() {
    start_scenario
    job module 0 role.yml
    expect_routed "Alarm db" "Alarm web"
}

scenario_7_awx_credential() {
    # The credential type of docs/routing.md, its injector rendered as AWX renders it, into an ansible-runner job: a
    # play failing on one host of each tier alerts both integrations.
    start_scenario
    if ! "$TS_PYTHON" -c 'import ansible_runner' 2>/dev/null; then
        [[ -n "${TS_SKIP_RUNNER:-}" ]] || fail "ansible-runner is not installed for $TS_PYTHON (requirements-test.txt)"
        echo "SKIPPED (TS_SKIP_RUNNER is set): ansible-runner is not installed"
        return
    fi
    local pdd="$SCENARIO_DIR/private_data_dir"
    mkdir -p "$pdd/project" "$pdd/inventory" "$pdd/env"
    cp site.yml "$pdd/project/site.yml"
    cp -r inventory.ini group_vars host_vars "$pdd/inventory/"
    "$TS_PYTHON" - "$HERE/../../../../docs/routing.md" "$WEB_URL" "$DB_URL" "$LEDGER" >"$pdd/env/envvars" <<'PYTHON' \
        || fail "cannot render the credential type of docs/routing.md"
import json, re, sys
import jinja2, yaml
guide, web_url, db_url, ledger = sys.argv[1:]
text = open(guide, encoding='utf-8').read()
block = re.search(r'<!-- docs-test: skip: it is an AWX credential type[^\n]*\n```yaml\n(.*?)```', text, re.S).group(1)
credential = yaml.safe_load(block)
inputs = dict(zip([field['id'] for field in credential['fields']], [web_url, db_url]))
env = {name: jinja2.Template(value).render(**inputs) for name, value in credential['env'].items()}
assert set(env) == {'TEMPERSTACK_WEBHOOK_URL', 'TEMPERSTACK_WEBHOOK_URL_DB'}, env
env.update(ANSIBLE_CALLBACKS_ENABLED='temperstack.alerting.playbook_alerts', TEMPERSTACK_LEDGER_PATH=ledger,
           TEMPERSTACK_FLUSH_TIMEOUT='10')
print(yaml.safe_dump(env))
PYTHON
    printf 'fail_on: web1,db1\n' >"$pdd/env/extravars"
    new_job_dir
    set +e
    env -u ANSIBLE_CALLBACKS_ENABLED -u TEMPERSTACK_LEDGER_PATH HOME="$JOB_HOME" \
        "$TS_PYTHON" -m ansible_runner run "$pdd" -p site.yml >"$OUT" 2>"$ERR"
    # shellcheck disable=SC2034  # read by after_job (jobs.sh)
    RC=$?
    set -e
    WARNINGS=1 after_job "ansible-runner: site.yml with the credential type's injection" 2
    expect_routed "Alarm web" "Alarm db"
    expect_in "$OUT" 'Temperstack: sent 2 Alarm'
    # ansible-runner keeps the environment it was given (the injection) in artifacts/ID/command, as AWX keeps a job's
    # credentials: that file is runner's, not the collection's. Every other artifact (stdout, job events) is checked.
    local -a artifacts
    mapfile -t artifacts < <(find "$pdd/artifacts" -type f ! -name command)
    for key in "$WEB_KEY" "$DB_KEY"; do
        [[ -z "$(ts_ctl find-text "$key" "$JOB_DIR" "${artifacts[@]}")" ]] || fail "a key is in the job's output or artifacts"
    done
    echo "ok: no key in the runner job's output, HOME or its ${#artifacts[@]} artifacts (job events, stdout)"
}

ts_run_scenarios \
    "1|scenario_1_tiers|a play failing on one host of each tier alerts both integrations; the OK rule per integration; -vvvv" \
    "2|scenario_2_precedence|play vars and extra vars beat group_vars; an OK follows its Alarm to the integration a host left" \
    "3|scenario_3_moved_and_failing|a moved host that fails again alarms its new integration" \
    "4|scenario_4_none_and_unknown|none alerts nowhere; an unknown integration, with and without a default endpoint" \
    "5|scenario_5_modules|the modules' option integration, module_defaults, alert_info" \
    "6|scenario_6_role|the health_checks role: health_checks_integration, and a check's own integration" \
    "7|scenario_7_awx_credential|the AWX credential type of docs/routing.md injected into an ansible-runner job"

echo
echo "routing: all scenarios passed in $((SECONDS - started))s, $JOB jobs ($((JOBS_MICROSECONDS / 1000000))s in ansible-playbook)"
