# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""temperstack.alerting.outbox on a SQLite ledger (the contract it relies on runs on both backends)."""

from __future__ import annotations

import json
import time
from unittest.mock import MagicMock

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task

from ansible_collections.temperstack.alerting.plugins.action import outbox as outbox_action
from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import build_alert
from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import resolve_endpoint
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_sqlite import SqliteLedger

OLD_URL = 'https://acme.temperstack.com/api/integration/webhook/old-key-5b1f'


def alert(alert_id: str, status: str = 'Alarm'):
    return build_alert({'alert_name': 'Disk full', 'status': status, 'alert_id': alert_id})


@pytest.fixture
def queued(ledger_path, endpoint):
    """Two entries for the configured endpoint, one for a rotated key's, one held by a running playbook."""
    old = resolve_endpoint({'webhook_url': OLD_URL}, environ={})
    with SqliteLedger(ledger_path) as ledger:
        ledger.queue(endpoint.ledger_key, alert('disk-web03'))
        ledger.queue(endpoint.ledger_key, alert('disk-web04'))
        ledger.queue(old.ledger_key, alert('disk-web05'))
        ledger.hold(endpoint.ledger_key, alert('deploy-web03'), ['web03'], 'run-token', 'elsewhere:1')
    return ledger_path


@pytest.fixture
def run_outbox(monkeypatch, webhook_url, ledger_path):
    monkeypatch.delenv('TEMPERSTACK_LEDGER_URL', raising=False)

    def run(args, check_mode=False, diff=False):
        task = MagicMock(Task)
        task.args = {'webhook_url': webhook_url, 'ledger_path': ledger_path, **args}
        task.action = 'temperstack.alerting.outbox'
        task.async_val = 0
        task.check_mode = check_mode
        task.diff = diff
        connection = MagicMock()
        connection._shell.tmpdir = None  # pylint: disable=protected-access
        plugin = outbox_action.ActionModule(task, connection, PlayContext(), loader=DataLoader(), templar=None, shared_loader_obj=None)
        return plugin.run(task_vars={})

    return run


def remaining(ledger_path):
    with SqliteLedger(ledger_path) as ledger:
        return sorted(entry.alert.alert_id for entry in ledger.entries())


def test_discards_by_alert_id_and_leaves_the_rest(run_outbox, queued):
    result = run_outbox({'alert_id': ['*-web03']})

    assert result['changed'] is True
    assert [entry['alert_id'] for entry in result['discarded']] == ['disk-web03']
    # Issue 20: failed deliveries, named apart from the HTTP requests a delivery error counts as attempts.
    assert set(result['discarded'][0]) == {'alert_id', 'status', 'queued', 'failed_deliveries'}
    assert result['discarded'][0]['failed_deliveries'] == 0
    # The held failure of a running playbook is never discarded, whatever matches it.
    assert remaining(queued) == ['deploy-web03', 'disk-web04', 'disk-web05']


def test_a_second_run_discards_nothing(run_outbox, queued):
    run_outbox({'alert_id': ['*-web03']})
    again = run_outbox({'alert_id': ['*-web03']})

    assert again['changed'] is False
    assert again['discarded'] == []


def test_check_mode_lists_and_keeps(run_outbox, queued):
    result = run_outbox({'alert_id': ['disk-*']}, check_mode=True, diff=True)

    assert result['changed'] is True
    assert [entry['alert_id'] for entry in result['discarded']] == ['disk-web03', 'disk-web04']
    assert result['diff']['before'].startswith('disk-web03 Alarm queued ')
    assert remaining(queued) == ['deploy-web03', 'disk-web03', 'disk-web04', 'disk-web05']


def test_other_endpoint_discards_only_that_endpoints_entries(run_outbox, queued):
    old = resolve_endpoint({'webhook_url': OLD_URL}, environ={}).ledger_key
    result = run_outbox({'other_endpoint': f'sha256:{old[:12]}'})

    assert [entry['alert_id'] for entry in result['discarded']] == ['disk-web05']
    assert remaining(queued) == ['deploy-web03', 'disk-web03', 'disk-web04']
    assert 'old-key-5b1f' not in json.dumps(result)


def test_older_than_spares_what_is_recent(run_outbox, queued):
    assert run_outbox({'older_than': '1h'})['changed'] is False
    assert remaining(queued) == ['deploy-web03', 'disk-web03', 'disk-web04', 'disk-web05']


def test_older_than_takes_what_waited_long_enough(run_outbox, queued, monkeypatch):
    later = time.time() + 7200
    monkeypatch.setattr(outbox_action.time, 'time', lambda: later)

    result = run_outbox({'older_than': '1h'})

    # Two hours on, the held failure's hold has expired too (nobody renewed it): an ordinary entry by then.
    assert [entry['alert_id'] for entry in result['discarded']] == ['disk-web03', 'disk-web04', 'deploy-web03']
    assert remaining(queued) == ['disk-web05']


def test_an_entry_being_delivered_is_left_to_its_sender(run_outbox, queued, endpoint):
    with SqliteLedger(queued) as sender:
        claim = sender.try_claim(endpoint.ledger_key, 'disk-web03', 60)
        result = run_outbox({'alert_id': ['disk-*']})
        sender.release(claim)

    assert result['busy'] == 1
    assert [entry['alert_id'] for entry in result['discarded']] == ['disk-web04']
    assert 'disk-web03' in remaining(queued)


@pytest.mark.parametrize('args, message', [
    ({}, 'say which queued alerts to discard: alert_id'),
    ({'older_than': 'soon'}, 'older_than must be a duration such as 2h'),
    ({'older_than': '0s'}, 'older_than must be a duration such as 2h'),
    ({'other_endpoint': 'old-key-5b1f'}, 'other_endpoint must be an endpoint as alert_info lists it'),
    ({'other_endpoint': 'sha256:abc'}, 'other_endpoint must be an endpoint as alert_info lists it'),
])
def test_bad_input_fails_naming_the_option_and_discards_nothing(run_outbox, queued, args, message):
    result = run_outbox(args)

    assert result['failed'] is True
    assert result['msg'].startswith(message)
    assert remaining(queued) == ['deploy-web03', 'disk-web03', 'disk-web04', 'disk-web05']
