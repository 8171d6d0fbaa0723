# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""temperstack.alerting.silence, run as the task executor runs it, on a SQLite ledger (issue 12).

The PostgreSQL side of the silences is the ledger contract (test_ledger_contract_silences_and_streaks.py) and the integration tests.
"""

from __future__ import annotations

import json
import os
import time
import typing as t
from unittest.mock import MagicMock

import pytest
import yaml
from ansible.errors import AnsibleActionFail
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task

from ansible_collections.temperstack.alerting.plugins.action import alert as alert_action
from ansible_collections.temperstack.alerting.plugins.action import silence as silence_action
from ansible_collections.temperstack.alerting.plugins.modules import silence as silence_docs
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_sqlite import SqliteLedger

# run_task and task_args are fixtures: the alert module's tests run it against the fake opener, and so do these.
from ansible_collections.temperstack.alerting.tests.unit.plugins.action.test_alert import (  # pylint: disable=unused-import
    closed_port,
    run_task,
    task_args,
)

HOUR = 3600.0


def run_action(module: t.Any, args: t.Mapping[str, t.Any], check_mode: bool = False, diff: bool = False,
               task_vars: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
    """Run one of the collection's action plugins once, as the task executor would."""
    task = MagicMock(Task)
    task.args = dict(args)
    task.action = f"temperstack.alerting.{module.__name__.rsplit('.', 1)[1]}"
    task.async_val = 0
    task.check_mode = check_mode
    task.diff = diff
    connection = MagicMock()
    connection._shell.tmpdir = None  # pylint: disable=protected-access
    plugin = module.ActionModule(task, connection, PlayContext(), loader=DataLoader(), templar=None, shared_loader_obj=None)
    return plugin.run(task_vars=task_vars or {})


@pytest.fixture
def run_silence(monkeypatch, ledger_path):
    """silence(args) on the test's ledger file; keyword arguments as for run_action."""
    monkeypatch.delenv('TEMPERSTACK_LEDGER_URL', raising=False)

    def run(args: t.Mapping[str, t.Any], **kwargs: t.Any) -> dict[str, t.Any]:
        return run_action(silence_action, {'ledger_path': ledger_path, **args}, **kwargs)

    return run


def stored(ledger_path: str) -> dict[str, t.Any]:
    """The silences the ledger holds, by name."""
    if not os.path.exists(ledger_path):
        return {}
    with SqliteLedger(ledger_path, read_only=True) as ledger:
        return {silence.name: silence for silence in ledger.silences()}


def file_state(path: str) -> tuple[bytes, ...]:
    with open(path, 'rb') as stream:
        main = stream.read()
    wal = b''
    if os.path.exists(path + '-wal'):
        with open(path + '-wal', 'rb') as stream:
            wal = stream.read()
    return main, wal


DB_MAINT = {'name': 'db-maint', 'resource_id': ['db-*'], 'duration': '2h', 'comment': 'PostgreSQL upgrade'}
# An option left out of a task, as with "{{ omit }}" (a null value is still given, as far as Ansible is concerned).
OMIT = object()


def changed_args(args: t.Mapping[str, t.Any], changes: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    return {name: value for name, value in {**args, **changes}.items() if value is not OMIT}


# -- present ----------------------------------------------------------------------------------------------


def test_creates_a_silence_and_returns_it(run_silence, ledger_path):
    before = time.time()
    result = run_silence(DB_MAINT)

    assert set(result) == {'changed', 'silence', 'matches', 'msg'}
    assert (result['changed'], result['msg'], result['matches']) == (True, 'silence db-maint created', [])
    returned = result['silence']
    assert {name: value for name, value in returned.items() if name not in ('starts', 'ends')} == {
        'name': 'db-maint', 'alert_id': [], 'resource_id': ['db-*'], 'hosts': [], 'comment': 'PostgreSQL upgrade', 'active': True,
    }
    [kept] = stored(ledger_path).values()
    assert (kept.name, kept.resource_ids, kept.comment) == ('db-maint', ('db-*',), 'PostgreSQL upgrade')
    assert before - 1 <= kept.starts <= time.time() and kept.ends == kept.starts + 2 * HOUR
    assert returned['starts'].endswith('+00:00') and returned['ends'].endswith('+00:00')


def test_stating_it_again_changes_nothing_and_keeps_its_window(run_silence, ledger_path, monkeypatch):
    first = run_silence(DB_MAINT)
    window = stored(ledger_path)['db-maint']
    # Half a minute later, "2h from now" is still the silence made then, not one that ends half a minute later.
    clock = time.time
    monkeypatch.setattr(time, 'time', lambda: clock() + 30)
    again = run_silence(DB_MAINT)

    assert (again['changed'], again['msg']) == (False, 'silence db-maint is already as stated')
    assert again['silence'] == first['silence']
    assert stored(ledger_path)['db-maint'] == window


def test_a_fixed_window_stated_again_changes_nothing(run_silence, ledger_path):
    args = {'name': 'night', 'hosts': ['db1'], 'starts': '2099-12-01T22:00:00+01:00', 'ends': '2099-12-02T02:00:00+01:00'}
    created = run_silence(args)
    assert created['silence']['starts'] == '2099-12-01T21:00:00+00:00'
    assert created['silence']['ends'] == '2099-12-02T01:00:00+00:00'
    assert created['silence']['active'] is False
    assert run_silence(args)['changed'] is False
    moved = run_silence({**args, 'ends': '2099-12-02T03:00:00+01:00'})
    assert (moved['changed'], moved['msg']) == (True, 'silence night updated')
    assert moved['silence']['ends'] == '2099-12-02T02:00:00+00:00'


@pytest.mark.parametrize('change', [
    {'comment': 'PostgreSQL 16 upgrade'},
    {'resource_id': ['db-*', 'replica-*']},
    {'hosts': ['db1']},
    {'alert_id': ['disk-*']},
    {'duration': '3h'},
], ids=['comment', 'resource_id', 'hosts', 'alert_id', 'duration'])
def test_a_changed_silence_is_updated_with_a_diff(run_silence, ledger_path, change):
    before = run_silence(DB_MAINT)['silence']
    result = run_silence({**DB_MAINT, **change}, diff=True)

    assert (result['changed'], result['msg']) == (True, 'silence db-maint updated')
    assert result['diff'] == {'before': before, 'after': result['silence']}
    assert result['diff']['before'] != result['diff']['after']
    assert stored(ledger_path)['db-maint'].ends - stored(ledger_path)['db-maint'].starts == (3 if 'duration' in change else 2) * HOUR


def test_the_diff_of_a_new_silence(run_silence):
    result = run_silence(DB_MAINT, diff=True)
    assert result['diff'] == {'before': {}, 'after': result['silence']}
    assert 'diff' not in run_silence(DB_MAINT)


def test_check_mode_creates_nothing_not_even_the_ledger(run_silence, ledger_path):
    result = run_silence(DB_MAINT, check_mode=True, diff=True)

    assert (result['changed'], result['msg']) == (True, 'silence db-maint would be created')
    assert result['diff'] == {'before': {}, 'after': result['silence']}
    assert not os.path.exists(ledger_path)


def test_check_mode_updates_nothing(run_silence, ledger_path):
    run_silence(DB_MAINT)
    before = stored(ledger_path)
    state = file_state(ledger_path)

    same = run_silence(DB_MAINT, check_mode=True)
    changed = run_silence({**DB_MAINT, 'comment': 'other'}, check_mode=True, diff=True)

    assert same['changed'] is False
    assert (changed['changed'], changed['msg']) == (True, 'silence db-maint would be updated')
    assert (changed['diff']['before']['comment'], changed['diff']['after']['comment']) == ('PostgreSQL upgrade', 'other')
    assert stored(ledger_path) == before
    assert file_state(ledger_path) == state


@pytest.fixture
def known_alerts(ledger_path, endpoint, make_alert):
    """Alerts the ledger knows in every way: acknowledged, queued only, withheld only; and one of another endpoint."""
    with SqliteLedger(ledger_path) as ledger:
        ledger.record(endpoint.ledger_key, make_alert(alert_id='disk-db-01', resource_id='db-01'), ['db1'])
        ledger.record(endpoint.ledger_key, make_alert(alert_id='disk-web01', resource_id='web01'), ['web1'])
        ledger.queue(endpoint.ledger_key, make_alert(alert_id='load-db-02', resource_id='db-02'))
        ledger.withhold(endpoint.ledger_key, make_alert(alert_id='mem-db-03', resource_id='db-03'), ['db3'], 'earlier')
        ledger.record('f' * 64, make_alert(alert_id='disk-db-09', resource_id='db-09'), ['db9'])


@pytest.mark.parametrize('check_mode', [False, True], ids=['run', 'check'])
def test_matches_are_the_known_alerts_it_covers(run_silence, known_alerts, check_mode):
    result = run_silence(DB_MAINT, check_mode=check_mode)
    assert result['matches'] == ['disk-db-01', 'disk-db-09', 'load-db-02', 'mem-db-03']

    by_host = run_silence({'name': 'hosts', 'hosts': ['db[13]', 'web*'], 'duration': '1h'}, check_mode=check_mode)
    assert by_host['matches'] == ['disk-db-01', 'disk-web01', 'mem-db-03']

    every_kind = run_silence({'name': 'both', 'alert_id': ['disk-*'], 'resource_id': ['db-*'], 'hosts': ['db1'], 'duration': '1h'},
                             check_mode=check_mode)
    assert every_kind['matches'] == ['disk-db-01']


# -- absent -----------------------------------------------------------------------------------------------


def test_removes_a_silence_by_name(run_silence, ledger_path, known_alerts):
    run_silence(DB_MAINT)
    run_silence({'name': 'web-maint', 'hosts': ['web*'], 'duration': '1h'})

    result = run_silence({'name': 'db-maint', 'state': 'absent'}, diff=True)

    assert (result['changed'], result['removed'], result['msg']) == (True, ['db-maint'], 'silence db-maint removed')
    assert result['matches'] == ['disk-db-01', 'disk-db-09', 'load-db-02', 'mem-db-03']
    assert list(result['diff']['before']) == ['db-maint'] and result['diff']['after'] == {}
    assert list(stored(ledger_path)) == ['web-maint']


def test_a_plain_name_that_does_not_exist_is_nothing_to_remove(run_silence, ledger_path):
    run_silence(DB_MAINT)
    result = run_silence({'name': 'db-maintenance', 'state': 'absent'})
    assert 'failed' not in result
    assert (result['changed'], result['removed'], result['matches']) == (False, [], [])
    assert result['msg'] == 'there is no silence db-maintenance'
    assert list(stored(ledger_path)) == ['db-maint']


def test_a_plain_name_on_a_missing_ledger_creates_nothing(run_silence, ledger_path):
    assert run_silence({'name': 'db-maint', 'state': 'absent'}, check_mode=True)['changed'] is False
    assert not os.path.exists(ledger_path)


def test_a_glob_removes_every_silence_it_matches(run_silence, ledger_path):
    for name in ('maint-db', 'maint-web', 'Maint-cache', 'other'):
        run_silence({'name': name, 'hosts': ['x'], 'duration': '1h'})

    result = run_silence({'name': 'maint-*', 'state': 'absent'})

    assert (result['changed'], result['removed']) == (True, ['maint-db', 'maint-web'])
    assert result['msg'] == 'silence maint-db, maint-web removed'
    assert sorted(stored(ledger_path)) == ['Maint-cache', 'other']


@pytest.mark.parametrize('pattern', ['maint-*', 'db?', '[xyz]*'])
def test_a_glob_that_matches_no_silence_is_an_error_naming_the_option(run_silence, ledger_path, pattern):
    for name in ('other', 'Maint-db'):
        run_silence({'name': name, 'hosts': ['x'], 'duration': '1h'})
    result = run_silence({'name': pattern, 'state': 'absent'})
    assert result['failed'] is True
    assert result['msg'] == f'name {pattern!r} matches no silence (there are: Maint-db, other)'
    assert sorted(stored(ledger_path)) == ['Maint-db', 'other']


def test_a_glob_on_an_empty_ledger_says_there_are_none(run_silence):
    result = run_silence({'name': 'maint-*', 'state': 'absent'})
    assert (result['failed'], result['msg']) == (True, "name 'maint-*' matches no silence (there are: none)")


def test_check_mode_removes_nothing(run_silence, ledger_path):
    run_silence(DB_MAINT)
    state = file_state(ledger_path)
    result = run_silence({'name': 'db-*', 'state': 'absent'}, check_mode=True, diff=True)
    assert (result['changed'], result['removed'], result['msg']) == (True, ['db-maint'], 'silence db-maint would be removed')
    assert result['diff']['before']['db-maint']['resource_id'] == ['db-*']
    assert list(stored(ledger_path)) == ['db-maint']
    assert file_state(ledger_path) == state


# -- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize('args, message', [
    ({'duration': '2x'}, "duration must be a duration such as 2h, 1h30m, 45m, 90s, 1d or PT2H, longer than 0; got '2x'"),
    ({'duration': '0'}, 'duration must be a duration such as 2h'),
    ({'duration': '400d'}, "duration must be at most 366 days; got '400d'"),
    ({'duration': OMIT, 'starts': 'tonight', 'ends': '2099-01-01T00:00:00Z'}, 'starts must be a date and time in ISO 8601'),
    ({'duration': OMIT, 'ends': 'tomorrow'}, "ends must be a date and time in ISO 8601, such as 2026-12-01T22:00:00+01:00"),
    ({'duration': OMIT, 'starts': '2099-01-02T00:00:00Z', 'ends': '2099-01-01T00:00:00Z'},
     'ends (2099-01-01T00:00:00+00:00) must be after starts (2099-01-02T00:00:00+00:00)'),
    ({'duration': OMIT, 'starts': '2020-01-01T00:00:00Z', 'ends': '2020-01-02T00:00:00Z'}, 'ends (2020-01-02T00:00:00+00:00) is in the past'),
    ({'duration': None}, 'a silence needs an end: give ends (ISO 8601) or duration (such as 2h)'),
    ({'duration': OMIT}, 'a silence needs an end: give ends (ISO 8601) or duration (such as 2h)'),
    ({'resource_id': None}, 'a silence needs at least one of alert_id, resource_id or hosts'),
    ({'resource_id': []}, 'a silence needs at least one of alert_id, resource_id or hosts'),
    ({'hosts': ['']}, "hosts must be a non-empty string; got ''"),
    ({'name': ' '}, "name must be a non-empty string; got ' '"),
    ({'ledger_url': 'mysql://dba:Pw-SILENCE-91x@db/ledger'}, 'ledger_url must be a PostgreSQL connection URI'),
], ids=['duration', 'duration-0', 'duration-long', 'starts', 'ends', 'ends-before-starts', 'ends-past', 'null-end', 'no-end',
        'no-matcher', 'empty-matcher', 'empty-host', 'blank-name', 'ledger_url'])
def test_bad_input_fails_naming_the_option_before_the_ledger_is_touched(run_silence, ledger_path, args, message):
    result = run_silence(changed_args(DB_MAINT, args))
    assert result['failed'] is True
    assert result['msg'].startswith(message), result['msg']
    assert 'silence' not in result and 'changed' not in result
    assert 'Pw-SILENCE-91x' not in json.dumps(result)
    assert not os.path.exists(ledger_path)


def test_a_null_name_fails_naming_it(run_silence, ledger_path):
    # ansible-core 2.18's argument spec refuses a null str; later versions pass it on as '', which the module refuses.
    try:
        result = run_silence({**DB_MAINT, 'name': None})
    except AnsibleActionFail as exc:
        message = str(exc)
    else:
        assert result['failed'] is True
        message = result['msg']
    assert message.startswith(("argument 'name' is of type", "name must be a non-empty string; got ''")), message
    assert not os.path.exists(ledger_path)


@pytest.mark.parametrize('args, named', [
    ({'ends': '2099-01-01T00:00:00Z'}, 'ends|duration'),
    ({'state': 'gone'}, 'state'),
    ({'name': OMIT}, 'name'),
    ({'duration': None, 'ends': 'tomorrow'}, 'ends|duration'),
    ({'hosts': {'db1': True}}, 'hosts'),
    ({'when': 'later'}, 'when'),
], ids=['ends-and-duration', 'state', 'no-name', 'ends-and-null-duration', 'hosts-dict', 'unknown-option'])
def test_what_the_argument_spec_refuses_names_the_option(run_silence, ledger_path, args, named):
    with pytest.raises(AnsibleActionFail) as caught:
        run_silence(changed_args(DB_MAINT, args))
    assert named in str(caught.value)
    assert not os.path.exists(ledger_path)


def test_an_unreachable_ledger_url_fails_with_its_password_masked(run_silence, monkeypatch, ledger_path):
    url = f'postgresql://ops:Pw-SILENCE-7c1@127.0.0.1:{closed_port()}/ledger?connect_timeout=2'
    monkeypatch.setenv('TEMPERSTACK_LEDGER_URL', url)
    result = run_silence(DB_MAINT)
    assert result['failed'] is True
    assert 'unreachable' in result['msg'] and '127.0.0.1' in result['msg']
    assert 'Pw-SILENCE-7c1' not in json.dumps(result)
    assert not os.path.exists(ledger_path)


def test_options_match_the_documentation():
    documented = yaml.safe_load(silence_docs.DOCUMENTATION)['options']
    assert set(documented) == set(silence_action.ARGUMENT_SPEC)
    for name, doc in documented.items():
        spec = silence_action.ARGUMENT_SPEC[name]
        assert spec['type'] == doc.get('type', 'str'), name
        assert spec.get('elements') == doc.get('elements'), name
        assert spec.get('choices') == doc.get('choices'), name
        assert spec.get('default') == doc.get('default'), name
        assert spec.get('required', False) == doc.get('required', False), name
    assert silence_action.ARGUMENT_SPEC['ledger_url']['no_log'] is True


# -- what the alert module makes of a silence ----------------------------------------------------------------


def test_the_alert_module_withholds_what_a_silence_covers_until_it_is_removed(run_task, task_args, run_silence, opener):
    run_silence({'name': 'web-maint', 'resource_id': ['web*'], 'duration': '1h'})

    silenced = run_task(task_args)
    assert (silenced['changed'], silenced['sent'], silenced['silenced']) == (False, False, 'web-maint')
    assert silenced['msg'].startswith(f"Alarm withheld for alert {silenced['alert_id']} by silence web-maint")
    assert opener.calls == []
    assert run_silence({'name': 'web-maint', 'state': 'absent'})['matches'] == [silenced['alert_id']]

    sent = run_task(task_args)
    assert (sent['changed'], sent['sent']) == (True, True)
    assert 'silenced' not in sent
    assert [body['status'] for body in opener.bodies] == ['Alarm']


def test_the_alert_module_matches_a_silence_by_the_host_the_task_runs_for(run_task, task_args, run_silence, opener):
    # run_task puts the fake opener behind the alert module; the task is run here, for an inventory host.
    run_silence({'name': 'reboot', 'hosts': ['web0[1-3]'], 'duration': '1h'})

    for host, expected in (('web02', 'reboot'), ('web04', None)):
        result = run_action(alert_action, dict(task_args, resource_id=host), task_vars={'inventory_hostname': host})
        assert result.get('silenced') == expected, host
    assert [body['resource_id'] for body in opener.bodies] == ['web04']
