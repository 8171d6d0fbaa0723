# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The option integration (issue 17) of alert, alert_info and outbox, run as the task executor runs them."""

from __future__ import annotations

import pytest

from ansible_collections.temperstack.alerting.plugins.action import alert_info as info_action
from ansible_collections.temperstack.alerting.plugins.action import outbox as outbox_action
from ansible_collections.temperstack.alerting.plugins.doc_fragments.connection import ModuleDocFragment
from ansible_collections.temperstack.alerting.plugins.plugin_utils._argument_specs import CONNECTION_ARGUMENT_SPEC
from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import resolve_integration
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_sqlite import SqliteLedger

from ansible_collections.temperstack.alerting.tests.unit.plugins.action.test_alert import (  # pylint: disable=unused-import
    run_task,
    task_args,
)
from ansible_collections.temperstack.alerting.tests.unit.plugins.action.test_silence import run_action

DB_KEY = 'tsk-DBROUTE-CANARY-77aa88bb'
DB_URL = f'https://acme.temperstack.com/api/integration/webhook/{DB_KEY}'


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    for name in ('TEMPERSTACK_WEBHOOK_URL', 'TEMPERSTACK_API_KEY', 'TEMPERSTACK_ORG', 'TEMPERSTACK_BASE_URL',
                 'TEMPERSTACK_LEDGER_URL'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('TEMPERSTACK_WEBHOOK_URL_DB', DB_URL)


def test_the_option_is_documented_and_accepted_by_the_action_group():
    assert 'integration' in CONNECTION_ARGUMENT_SPEC
    assert '  integration:' in ModuleDocFragment.DOCUMENTATION


def test_alert_goes_to_the_integration_it_names(run_task, task_args, opener):
    args = {name: value for name, value in task_args.items() if name != 'webhook_url'}
    result = run_task({**args, 'integration': 'db'})
    assert result['sent'] is True
    assert result['integration'] == 'db'
    assert [call.url for call in opener.calls] == [DB_URL]
    assert DB_KEY not in str(result)


def test_alert_with_an_integration_without_url_fails_before_any_request_naming_the_variable(run_task, task_args, opener):
    args = {name: value for name, value in task_args.items() if name != 'webhook_url'}
    result = run_task({**args, 'integration': 'payments-eu'})
    assert result['failed'] is True
    assert 'TEMPERSTACK_WEBHOOK_URL_PAYMENTS_EU' in result['msg']
    assert opener.calls == []


def test_alert_with_integration_none_sends_nothing(run_task, task_args, opener):
    args = {name: value for name, value in task_args.items() if name != 'webhook_url'}
    result = run_task({**args, 'integration': 'none'})
    assert (result['changed'], result['sent'], result.get('failed')) == (False, False, None)
    assert opener.calls == []


def test_alert_with_an_integration_and_a_webhook_url_is_an_error(run_task, task_args, opener):
    result = run_task({**task_args, 'integration': 'db'})
    assert result['failed'] is True
    assert 'integration and webhook_url are mutually exclusive' in result['msg']
    assert opener.calls == []


@pytest.fixture
def two_integrations(ledger_path, webhook_url, make_alert):
    default = resolve_integration(None, {'webhook_url': webhook_url}, {})
    db = resolve_integration('db', {}, {'TEMPERSTACK_WEBHOOK_URL_DB': DB_URL})
    with SqliteLedger(ledger_path) as ledger:
        ledger.record(default.ledger_key, make_alert(alert_id='web-down', resource_id='web1'), ['web1'])
        ledger.record(db.ledger_key, make_alert(alert_id='db-down', resource_id='db1'), ['db1'])
        ledger.queue(db.ledger_key, make_alert(alert_id='db-slow', resource_id='db1'), ['db1'])
    return default, db


def test_alert_info_lists_every_integration_it_has_an_endpoint_for_by_name(two_integrations, ledger_path, webhook_url):
    result = run_action(info_action, {'webhook_url': webhook_url, 'ledger_path': ledger_path})
    assert [(alert['alert_id'], alert['integration']) for alert in result['alerts']] == [
        ('db-down', 'db'), ('db-slow', 'db'), ('web-down', 'default')]
    assert [(entry['alert_id'], entry['integration']) for entry in result['queued']] == [('db-slow', 'db')]
    assert (result['queued_elsewhere'], result['other_endpoints']) == (0, [])
    assert DB_KEY not in str(result) and 'webhook' not in str(result).replace('webhook_url', '')


def test_alert_info_with_the_option_lists_that_integration_alone(two_integrations, ledger_path):
    result = run_action(info_action, {'integration': 'db', 'ledger_path': ledger_path})
    assert [(alert['alert_id'], alert['integration']) for alert in result['alerts']] == [('db-down', 'db'), ('db-slow', 'db')]
    assert result['queued_elsewhere'] == 0


def test_alert_info_without_a_default_endpoint_lists_the_named_ones(two_integrations, ledger_path):
    result = run_action(info_action, {'ledger_path': ledger_path})
    assert 'failed' not in result
    assert {alert['integration'] for alert in result['alerts']} == {'db'}


def test_alert_info_with_an_unknown_integration_names_the_variable(two_integrations, ledger_path):
    result = run_action(info_action, {'integration': 'payments', 'ledger_path': ledger_path})
    assert result['failed'] is True
    assert 'TEMPERSTACK_WEBHOOK_URL_PAYMENTS' in result['msg']


def test_outbox_discards_the_queued_alerts_of_one_integration(two_integrations, ledger_path):
    result = run_action(outbox_action, {'integration': 'db', 'alert_id': ['db-*'], 'ledger_path': ledger_path})
    assert [entry['alert_id'] for entry in result['discarded']] == ['db-slow']
    with SqliteLedger(ledger_path) as ledger:
        assert ledger.pending(two_integrations[1].ledger_key) == []
