# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""temperstack.alerting.ledger_copy on SQLite ledgers; the PostgreSQL side is in the fleet_ledger integration target."""

from __future__ import annotations

import json
import os
from unittest.mock import MagicMock

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task

from ansible_collections.temperstack.alerting.plugins.action import ledger_copy as copy_action
from ansible_collections.temperstack.alerting.plugins.modules import ledger_copy as copy_docs
from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import build_alert
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_sqlite import SqliteLedger

ENDPOINT = 'endpoint-hash'


def alert(alert_id: str, status: str = 'Alarm'):
    return build_alert({'alert_name': 'Disk full', 'status': status, 'alert_id': alert_id})


@pytest.fixture
def source(tmp_path):
    """A controller's own ledger: one Alarm on record, one OK waiting in the outbox."""
    path = str(tmp_path / 'controller' / 'ledger.sqlite3')
    with SqliteLedger(path) as ledger:
        ledger.record(ENDPOINT, alert('disk-web1'), ['web1'])
        ledger.queue(ENDPOINT, alert('disk-web2', 'OK'))
    return path


@pytest.fixture
def target(tmp_path):
    return str(tmp_path / 'fleet' / 'ledger.sqlite3')


@pytest.fixture
def run_copy(monkeypatch):
    monkeypatch.delenv('TEMPERSTACK_LEDGER_URL', raising=False)

    def run(args, check_mode=False, diff=False):
        task = MagicMock(Task)
        task.args = dict(args)
        task.action = 'temperstack.alerting.ledger_copy'
        task.async_val = 0
        task.check_mode = check_mode
        task.diff = diff
        connection = MagicMock()
        connection._shell.tmpdir = None  # pylint: disable=protected-access
        plugin = copy_action.ActionModule(task, connection, PlayContext(), loader=DataLoader(), templar=None, shared_loader_obj=None)
        return plugin.run(task_vars={})

    return run


def test_copies_records_and_queued_entries(run_copy, source, target):
    result = run_copy({'from_ledger_path': source, 'ledger_path': target})

    assert result['changed'] is True
    assert (result['records'], result['entries']) == (1, 1)
    assert result['alert_ids'] == ['disk-web1', 'disk-web2']
    assert result['source'] == source and result['target'] == target
    with SqliteLedger(target) as copied:
        assert copied.lookup(ENDPOINT, 'disk-web1').status == 'Alarm'
        assert copied.lookup(ENDPOINT, 'disk-web1').hosts == ('web1',)
        [entry] = copied.pending(ENDPOINT)
        assert entry.alert.alert_id == 'disk-web2' and entry.alert.status == 'OK'


def test_a_second_copy_copies_nothing(run_copy, source, target):
    run_copy({'from_ledger_path': source, 'ledger_path': target})
    again = run_copy({'from_ledger_path': source, 'ledger_path': target})

    assert again['changed'] is False
    assert (again['records'], again['entries']) == (0, 0)
    with SqliteLedger(target) as copied:
        assert len(copied.pending(ENDPOINT)) == 1


def test_the_source_is_left_as_it_was(run_copy, source, target):
    before = open(source, 'rb').read()  # pylint: disable=consider-using-with
    run_copy({'from_ledger_path': source, 'ledger_path': target})

    with SqliteLedger(source) as original:
        assert original.lookup(ENDPOINT, 'disk-web1').status == 'Alarm'
        assert len(original.pending(ENDPOINT)) == 1
    assert open(source, 'rb').read() == before  # pylint: disable=consider-using-with


def test_newer_knowledge_in_the_target_wins(run_copy, source, target):
    with SqliteLedger(target) as fleet:
        # Since the controller's ledger was written, the fleet resolved the alert.
        fleet.record(ENDPOINT, alert('disk-web1', 'OK'))

    result = run_copy({'from_ledger_path': source, 'ledger_path': target})

    assert result['alert_ids'] == ['disk-web2']
    with SqliteLedger(target) as fleet:
        assert fleet.lookup(ENDPOINT, 'disk-web1').status == 'OK'


def test_check_mode_reports_the_same_and_writes_nothing(run_copy, source, target):
    planned = run_copy({'from_ledger_path': source, 'ledger_path': target}, check_mode=True, diff=True)

    assert planned['changed'] is True
    assert (planned['records'], planned['entries']) == (1, 1)
    assert planned['diff']['after'] == 'disk-web1\ndisk-web2\n'
    assert not os.path.exists(os.path.dirname(target))
    done = run_copy({'from_ledger_path': source, 'ledger_path': target})
    assert (done['records'], done['entries'], done['alert_ids']) == (planned['records'], planned['entries'], planned['alert_ids'])


def test_a_missing_source_fails_naming_the_option(run_copy, tmp_path, target):
    result = run_copy({'from_ledger_path': str(tmp_path / 'nope.sqlite3'), 'ledger_path': target})

    assert result['failed'] is True
    assert result['msg'].startswith(f'from_ledger_path {tmp_path / "nope.sqlite3"} is not a ledger file')
    assert not os.path.exists(target)


def test_the_default_source_is_the_controllers_own_ledger(run_copy, source, target, monkeypatch):
    monkeypatch.setenv('TEMPERSTACK_LEDGER_PATH', source)

    result = run_copy({'ledger_path': target})

    assert (result['records'], result['entries']) == (1, 1)


def test_copying_a_ledger_into_itself_fails(run_copy, source):
    result = run_copy({'from_ledger_path': source, 'ledger_path': source})

    assert result['failed'] is True
    assert 'the ledger to copy into is the ledger to copy from' in result['msg']


def test_a_bad_ledger_url_fails_naming_it_without_its_password(run_copy, source):
    result = run_copy({'from_ledger_path': source, 'ledger_url': 'mysql://u:Pw-91x@h/db'})

    assert result['failed'] is True
    assert result['msg'].startswith('ledger_url must be a PostgreSQL connection URI')
    assert 'Pw-91x' not in json.dumps(result)


def test_options_match_the_documentation():
    documented = yaml.safe_load(copy_docs.DOCUMENTATION)['options']
    assert set(documented) == set(copy_action.ARGUMENT_SPEC)
    for name, doc in documented.items():
        assert copy_action.ARGUMENT_SPEC[name]['type'] == doc.get('type', 'str'), name
    assert copy_action.ARGUMENT_SPEC['ledger_url']['no_log'] is True
    assert copy_action.ARGUMENT_SPEC['from_ledger_url']['no_log'] is True
