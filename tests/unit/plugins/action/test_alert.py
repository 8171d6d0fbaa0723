# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import functools
import json
import os
import stat
from unittest.mock import MagicMock

import pytest
from ansible.errors import AnsibleActionFail
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task

from ansible_collections.temperstack.alerting.plugins.action import alert as alert_action
from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import derive_alert_id
from ansible_collections.temperstack.alerting.plugins.plugin_utils._client import TemperstackClient
from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import MASK, resolve_endpoint
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_sqlite import SqliteLedger
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import LedgerError
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_open import discard_shared, shared_ledger


def write_ca_bundle(path) -> None:
    """A real CA certificate (the module checks that ca_path holds one); the fake opener never uses it."""
    import trustme  # pylint: disable=import-outside-toplevel

    trustme.CA().cert_pem.write_to_path(str(path))


RESULT_KEYS = {'changed', 'alert_id', 'status', 'previous_status', 'sent', 'payload', 'http_status', 'attempts', 'msg'}


@pytest.fixture
def task_args(webhook_url, ledger_path):
    return {
        'webhook_url': webhook_url,
        'ledger_path': ledger_path,
        'alert_name': 'Disk almost full',
        'status': 'Alarm',
        'alert_priority': 'critical',
        'resource_id': 'web01',
        'description': '/var is 93% full',
    }


@pytest.fixture
def run_task(monkeypatch, opener, sleeps):
    """Run the action plugin once, as the task executor would, with the fake opener behind the client."""
    monkeypatch.setattr(
        alert_action,
        'TemperstackClient',
        functools.partial(TemperstackClient, opener=opener, sleep=sleeps.append, jitter=lambda: 0.5),
    )

    def run(args, check_mode=False, diff=False):
        task = MagicMock(Task)
        task.args = dict(args)
        task.action = 'temperstack.alerting.alert'
        task.async_val = 0
        task.check_mode = check_mode
        task.diff = diff
        connection = MagicMock()
        connection._shell.tmpdir = None  # pylint: disable=protected-access
        plugin = alert_action.ActionModule(
            task, connection, PlayContext(), loader=DataLoader(), templar=None, shared_loader_obj=None
        )
        return plugin.run(task_vars={})

    return run


def recorded(ledger_path, endpoint, alert_id):
    with SqliteLedger(ledger_path, read_only=True) as ledger:
        return ledger.lookup(endpoint.ledger_key, alert_id)


# -- sending and idempotency ----------------------------------------------------------------------


def test_first_run_sends(run_task, task_args, opener, endpoint, ledger_path):
    result = run_task(task_args)

    alert_id = derive_alert_id('Disk almost full', 'web01')
    payload = {
        'alert_name': 'Disk almost full',
        'status': 'Alarm',
        'alert_priority': 'Critical',
        'alert_id': alert_id,
        'description': '/var is 93% full',
        'resource_id': 'web01',
    }
    assert set(result) == RESULT_KEYS
    assert result['changed'] is True
    assert result['sent'] is True
    assert result['alert_id'] == alert_id
    assert result['status'] == 'Alarm'
    assert result['previous_status'] is None
    assert result['payload'] == payload
    assert result['http_status'] == 200
    assert result['attempts'] == 1
    assert result['msg'] == f'Alarm sent for alert {alert_id}'
    assert 'failed' not in result

    [call] = opener.calls
    assert call.url == endpoint.url
    assert call.json == payload
    assert recorded(ledger_path, endpoint, alert_id).status == 'Alarm'


def test_second_run_is_idempotent(run_task, task_args, opener):
    first = run_task(task_args)
    second = run_task(task_args)

    assert len(opener.calls) == 1
    assert second['changed'] is False
    assert second['sent'] is False
    assert second['previous_status'] == 'Alarm'
    assert second['status'] == 'Alarm'
    assert second['alert_id'] == first['alert_id']
    assert second['payload'] == first['payload']
    assert (second['http_status'], second['attempts']) == (None, 0)
    assert 'already holds Alarm' in second['msg']


def test_status_any_case_is_the_same_alert(run_task, task_args, opener):
    run_task(task_args)
    assert run_task(dict(task_args, status='ALARM', alert_priority='CRITICAL'))['changed'] is False
    assert len(opener.calls) == 1


def test_resolving_sends_ok(run_task, task_args, opener):
    run_task(task_args)
    result = run_task(dict(task_args, status='ok'))
    assert (result['changed'], result['sent'], result['status'], result['previous_status']) == (True, True, 'OK', 'Alarm')
    assert [body['status'] for body in opener.bodies] == ['Alarm', 'OK']
    assert run_task(dict(task_args, status='OK'))['changed'] is False


def test_changed_payload_is_sent(run_task, task_args, opener):
    run_task(task_args)
    result = run_task(dict(task_args, description='/var is 99% full'))
    assert result['changed'] is True
    assert opener.bodies[-1]['description'] == '/var is 99% full'


def test_force_sends_again(run_task, task_args, opener):
    run_task(task_args)
    result = run_task(dict(task_args, force=True))
    assert (result['changed'], result['sent'], result['previous_status']) == (True, True, 'Alarm')
    assert len(opener.calls) == 2


def test_only_if_raised_withholds_an_ok_never_raised(run_task, task_args, opener):
    result = run_task(dict(task_args, status='OK', only_if_raised=True), diff=True)
    assert set(result) == RESULT_KEYS | {'diff'}
    assert (result['changed'], result['sent'], result['status'], result['previous_status']) == (False, False, 'OK', None)
    assert (result['http_status'], result['attempts']) == (None, 0)
    assert result['msg'] == f"OK not sent for alert {result['alert_id']}: it is not on record as Alarm (only_if_raised)"
    assert result['diff']['before'] == result['diff']['after'] == {}
    assert opener.calls == []


def test_only_if_raised_resolves_what_was_raised(run_task, task_args, opener):
    run_task(dict(task_args, only_if_raised=True))
    resolved = run_task(dict(task_args, status='OK', only_if_raised=True), diff=True)
    again = run_task(dict(task_args, status='OK', only_if_raised=True), diff=True)

    assert (resolved['changed'], resolved['sent'], resolved['previous_status']) == (True, True, 'Alarm')
    assert resolved['diff']['after']['status'] == 'OK'
    assert (again['changed'], again['sent'], again['previous_status']) == (False, False, 'OK')
    assert 'only_if_raised' in again['msg']
    assert again['diff']['before'] == again['diff']['after'] == {'status': 'OK', 'payload': resolved['payload']}
    assert [body['status'] for body in opener.bodies] == ['Alarm', 'OK']


def test_only_if_raised_in_check_mode(run_task, task_args, opener):
    withheld = run_task(dict(task_args, status='OK', only_if_raised=True), check_mode=True)
    run_task(task_args)
    would_resolve = run_task(dict(task_args, status='OK', only_if_raised=True), check_mode=True)
    assert (withheld['changed'], withheld['sent']) == (False, False)
    assert (would_resolve['changed'], would_resolve['sent']) == (True, False)
    assert 'would be sent' in would_resolve['msg']
    assert len(opener.calls) == 1


def test_distinct_resources_are_distinct_alerts(run_task, task_args, opener):
    first = run_task(task_args)
    second = run_task(dict(task_args, resource_id='web02'))
    assert first['alert_id'] != second['alert_id']
    assert second['changed'] is True
    assert len(opener.calls) == 2


def test_numbers_are_sent_as_strings(run_task, task_args, opener):
    result = run_task(dict(task_args, resource_id=42, metric_name=3.5, alert_id=1001))
    assert result['payload']['resource_id'] == '42'
    assert result['payload']['metric_name'] == '3.5'
    assert result['alert_id'] == '1001'
    assert all(isinstance(value, str) for value in opener.bodies[0].values())


def test_connection_options_reach_open_url(run_task, task_args, opener, tmp_path):
    ca_path = tmp_path / 'ca.pem'
    write_ca_bundle(ca_path)
    run_task(dict(task_args, timeout=4, retries=0, validate_certs=False, ca_path=str(ca_path)))
    kwargs = opener.calls[0].kwargs
    assert (kwargs['timeout'], kwargs['validate_certs'], kwargs['ca_path']) == (4, False, str(ca_path))
    assert kwargs['follow_redirects'] == 'none'


def test_endpoint_and_ledger_from_environment(run_task, task_args, opener, monkeypatch, api_key, tmp_path):
    ledger_path = tmp_path / 'env-ledger' / 'ledger.sqlite3'
    monkeypatch.setenv('TEMPERSTACK_API_KEY', api_key)
    monkeypatch.setenv('TEMPERSTACK_ORG', 'acme')
    monkeypatch.setenv('TEMPERSTACK_LEDGER_PATH', str(ledger_path))
    args = {name: value for name, value in task_args.items() if name not in ('webhook_url', 'ledger_path')}

    assert run_task(args)['sent'] is True
    assert opener.calls[0].url == f'https://acme.temperstack.com/api/integration/webhook/{api_key}'
    assert ledger_path.is_file()
    assert run_task(args)['changed'] is False


# -- timeout, retries, validate_certs and ca_path from the environment, as for the callback (issue 10, item 11)

CLIENT_ENV_VARS = ('TEMPERSTACK_TIMEOUT', 'TEMPERSTACK_RETRIES', 'TEMPERSTACK_VALIDATE_CERTS', 'TEMPERSTACK_CA_PATH')


@pytest.fixture(autouse=True)
def no_client_settings_from_the_caller(monkeypatch):
    """The module reads these variables now: one set where the tests run must not change what they see."""
    for name in CLIENT_ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def failure_message(run_task, args) -> str:
    """The message of a task that fails before any request, whether the argument spec or the plugin refused it."""
    try:
        result = run_task(args)
    except AnsibleActionFail as exc:
        return str(exc)
    assert result['failed'] is True, result
    assert (result['sent'], result['http_status'], result['attempts']) == (False, None, 0)
    return result['msg']


@pytest.fixture
def ca_bundles(tmp_path):
    """Two CA bundle files (the fake opener never reads them): one for the environment, one for the task."""
    paths = []
    for name in ('env-ca.pem', 'task-ca.pem'):
        path = tmp_path / name
        write_ca_bundle(path)
        paths.append(str(path))
    return paths


def test_connection_settings_from_environment(run_task, task_args, opener, sleeps, monkeypatch, ca_bundles):
    monkeypatch.setenv('TEMPERSTACK_TIMEOUT', '4')
    monkeypatch.setenv('TEMPERSTACK_RETRIES', '0')
    monkeypatch.setenv('TEMPERSTACK_VALIDATE_CERTS', 'false')
    monkeypatch.setenv('TEMPERSTACK_CA_PATH', ca_bundles[0])
    opener.http_error(503, 'unavailable')

    result = run_task(task_args)

    assert result['failed'] is True
    assert result['attempts'] == 1 and 'after 1 attempt:' in result['msg']
    assert sleeps == []
    [call] = opener.calls
    assert (call.kwargs['timeout'], call.kwargs['validate_certs'], call.kwargs['ca_path']) == (4, False, ca_bundles[0])


def test_task_options_win_over_the_environment(run_task, task_args, opener, monkeypatch, ca_bundles):
    monkeypatch.setenv('TEMPERSTACK_TIMEOUT', '4')
    monkeypatch.setenv('TEMPERSTACK_RETRIES', '0')
    monkeypatch.setenv('TEMPERSTACK_VALIDATE_CERTS', 'false')
    monkeypatch.setenv('TEMPERSTACK_CA_PATH', ca_bundles[0])
    opener.http_error(503, times=2)

    result = run_task(dict(task_args, timeout=7, retries=2, validate_certs=True, ca_path=ca_bundles[1]))

    assert (result['sent'], result['attempts']) == (True, 3)
    assert {(call.kwargs['timeout'], call.kwargs['validate_certs'], call.kwargs['ca_path']) for call in opener.calls} == {
        (7, True, ca_bundles[1])
    }


def test_environment_ca_path_is_expanded_like_the_option(run_task, task_args, opener, monkeypatch, isolated_environment):
    write_ca_bundle(isolated_environment / 'ca.pem')
    monkeypatch.setenv('TEMPERSTACK_CA_PATH', '~/ca.pem')
    run_task(task_args)
    assert opener.calls[0].kwargs['ca_path'] == str(isolated_environment / 'ca.pem')


def test_defaults_without_the_environment(run_task, task_args, opener, sleeps):
    opener.http_error(503, times=4)
    result = run_task(task_args)
    assert result['attempts'] == 4
    kwargs = opener.calls[0].kwargs
    assert (kwargs['timeout'], kwargs['validate_certs'], kwargs['ca_path']) == (10, True, None)


@pytest.mark.parametrize(
    ('variable', 'value', 'expected'),
    [
        ('TEMPERSTACK_TIMEOUT', '0', 'timeout must be a positive number of seconds, got 0'),
        ('TEMPERSTACK_TIMEOUT', '99999', 'timeout must be at most 3600 seconds, got 99999'),
        ('TEMPERSTACK_TIMEOUT', 'soon', "argument 'timeout' is of type"),
        ('TEMPERSTACK_TIMEOUT', '1e400', 'timeout must be at most 3600 seconds, got 1000'),
        ('TEMPERSTACK_TIMEOUT', '', "argument 'timeout' is of type"),
        ('TEMPERSTACK_RETRIES', '11', 'retries must be between 0 and 10, got 11'),
        ('TEMPERSTACK_RETRIES', '-1', 'retries must be between 0 and 10, got -1'),
        ('TEMPERSTACK_RETRIES', '2.5', "argument 'retries' is of type"),
        ('TEMPERSTACK_VALIDATE_CERTS', 'perhaps', "argument 'validate_certs' is of type"),
        ('TEMPERSTACK_CA_PATH', '/nonexistent/ca.pem', 'ca_path /nonexistent/ca.pem is not a file'),
    ],
)
def test_bad_value_from_environment_fails_before_any_request(
    run_task, task_args, opener, ledger_path, monkeypatch, variable, value, expected
):
    monkeypatch.setenv(variable, value)
    assert expected in failure_message(run_task, task_args)
    assert opener.calls == []
    assert not os.path.exists(ledger_path)


@pytest.mark.parametrize(
    ('variable', 'option', 'value'),
    [
        ('TEMPERSTACK_TIMEOUT', 'timeout', 5),
        ('TEMPERSTACK_RETRIES', 'retries', 1),
        ('TEMPERSTACK_VALIDATE_CERTS', 'validate_certs', True),
    ],
)
def test_a_bad_variable_is_not_read_when_the_task_sets_the_option(run_task, task_args, monkeypatch, variable, option, value):
    monkeypatch.setenv(variable, 'nonsense')
    assert run_task(dict(task_args, **{option: value}))['sent'] is True


def test_default_ledger_under_home(run_task, task_args, isolated_environment):
    args = dict(task_args)
    del args['ledger_path']
    run_task(args)
    assert (isolated_environment / '.ansible' / 'temperstack' / 'ledger.sqlite3').is_file()


# -- check mode and diff --------------------------------------------------------------------------


def test_check_mode_sends_nothing_and_creates_no_ledger(run_task, task_args, opener, ledger_path):
    result = run_task(task_args, check_mode=True)
    assert (result['changed'], result['sent'], result['http_status'], result['attempts']) == (True, False, None, 0)
    assert result['previous_status'] is None
    assert 'would be sent' in result['msg']
    assert opener.calls == []
    assert not os.path.exists(os.path.dirname(ledger_path))


def test_check_mode_with_existing_ledger(run_task, task_args, opener, ledger_path, endpoint):
    run_task(task_args)
    alert_id = derive_alert_id('Disk almost full', 'web01')

    same = run_task(task_args, check_mode=True)
    resolve = run_task(dict(task_args, status='OK'), check_mode=True)

    assert (same['changed'], same['sent']) == (False, False)
    assert (resolve['changed'], resolve['sent'], resolve['previous_status']) == (True, False, 'Alarm')
    assert len(opener.calls) == 1
    assert recorded(ledger_path, endpoint, alert_id).status == 'Alarm'


def test_diff_on_first_run(run_task, task_args):
    result = run_task(task_args, diff=True)
    diff = result['diff']
    assert diff['before'] == {}
    assert diff['after'] == {'status': 'Alarm', 'payload': result['payload']}
    assert result['alert_id'] in diff['before_header'] and result['alert_id'] in diff['after_header']


def test_diff_before_and_after(run_task, task_args):
    first = run_task(task_args)
    unchanged = run_task(task_args, diff=True)
    assert unchanged['diff']['before'] == unchanged['diff']['after'] == {'status': 'Alarm', 'payload': first['payload']}

    resolved = run_task(dict(task_args, status='OK'), diff=True, check_mode=True)
    assert resolved['diff']['before'] == {'status': 'Alarm', 'payload': first['payload']}
    assert resolved['diff']['after']['status'] == 'OK'
    assert resolved['diff']['after']['payload']['status'] == 'OK'


def test_no_diff_unless_asked(run_task, task_args):
    assert 'diff' not in run_task(task_args)


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('change', 'expected'),
    [
        ({'status': 'Firing'}, "status must be one of Alarm, OK (any letter case), got 'Firing'"),
        ({'alert_priority': 'High'}, "alert_priority must be one of Critical, Medium (any letter case), got 'High'"),
        ({'status': None}, 'status is required and must not be empty'),
        ({'alert_name': ''}, 'alert_name is required and must not be empty'),
        ({'alert_name': ['a', 'list']}, 'alert_name must be a string, got a list'),
        ({'description': {'a': 'dict'}}, 'description must be a string, got a dictionary'),
        ({'resource_id': True}, 'resource_id must be a string, got a boolean'),
        ({'alert_url': 'ftp://example.com/x'}, "alert_url must be an http:// or https:// URL, got 'ftp://example.com/x'"),
        ({'run_book_url': 'wiki/page'}, "run_book_url must be an http:// or https:// URL, got 'wiki/page'"),
        ({'timeout': 0}, 'timeout must be a positive number of seconds, got 0'),
        ({'retries': -1}, 'retries must be between 0 and 10, got -1'),
        ({'retries': 11}, 'retries must be between 0 and 10, got 11'),
        # Found by the fault suite: a socket cannot take such a timeout (OverflowError, a traceback).
        ({'timeout': 10 ** 12}, 'timeout must be at most 3600 seconds, got 1000000000000'),
        # Found by the fault suite: a missing bundle was retried as "No such file or directory", naming nothing.
        ({'ca_path': '/nonexistent/ca.pem'}, 'ca_path /nonexistent/ca.pem is not a file'),
        ({'webhook_url': None}, 'no Temperstack endpoint is configured'),
        ({'api_key': 'k', 'org': 'acme'}, 'webhook_url and api_key, org are mutually exclusive'),
        ({'webhook_url': 'https://acme.temperstack.com/wrong/path'}, 'webhook_url must be the integration URL'),
    ],
)
def test_bad_input_fails_before_any_request(run_task, task_args, opener, ledger_path, change, expected):
    result = run_task(dict(task_args, **change))
    assert result['failed'] is True
    assert expected in result['msg']
    assert (result['sent'], result['http_status'], result['attempts']) == (False, None, 0)
    assert opener.calls == []
    assert not os.path.exists(ledger_path)


@pytest.mark.parametrize(
    ('change', 'option'),
    [
        ({'timeout': 'soon'}, 'timeout'),
        ({'force': 'maybe'}, 'force'),
        ({'validate_certs': 'perhaps'}, 'validate_certs'),
        ({'only_if_raised': 'perhaps'}, 'only_if_raised'),
        # Found by the fault suite: ansible-core's int conversion raised OverflowError for an infinity, which a
        # task shows as "Unexpected failure during module execution", naming no option (NaN it reports itself).
        ({'timeout': float('inf')}, 'timeout must be a finite number'),
        ({'retries': float('-inf')}, 'retries must be a finite number'),
        ({'retries': float('nan')}, "argument 'retries' is of type"),
    ],
)
def test_wrong_option_types_rejected_by_the_argument_spec(run_task, task_args, opener, change, option):
    with pytest.raises(AnsibleActionFail, match=option):
        run_task(dict(task_args, **change))
    assert opener.calls == []


def test_unknown_option_rejected(run_task, task_args, opener):
    with pytest.raises(AnsibleActionFail, match='alert_title'):
        run_task(dict(task_args, alert_title='typo'))
    assert opener.calls == []


# -- delivery failures ----------------------------------------------------------------------------


def test_rejected_key_fails_without_recording(run_task, task_args, opener, api_key, ledger_path, endpoint):
    opener.http_error(401, f'unknown hook {task_args["webhook_url"]}')
    result = run_task(task_args)

    assert result['failed'] is True
    assert result['msg'].startswith('the integration key was rejected')
    assert 'HTTP 401' in result['msg'] and MASK in result['msg']
    assert (result['sent'], result['http_status'], result['attempts']) == (False, 401, 1)
    assert api_key not in json.dumps(result)
    assert recorded(ledger_path, endpoint, derive_alert_id('Disk almost full', 'web01')) is None

    # Nothing was recorded, so the next run tries again.
    assert run_task(task_args)['sent'] is True


def test_retries_then_fails(run_task, task_args, opener, sleeps, api_key):
    opener.http_error(503, 'maintenance', times=3)
    result = run_task(dict(task_args, retries=2))
    assert result['failed'] is True
    assert (result['http_status'], result['attempts']) == (503, 3)
    assert 'after 3 attempts' in result['msg'] and 'HTTP 503: maintenance' in result['msg']
    assert len(sleeps) == 2
    assert api_key not in json.dumps(result)


def test_retries_then_succeeds(run_task, task_args, opener):
    opener.http_error(429, headers={'Retry-After': '1'}).respond(200)
    result = run_task(task_args)
    assert (result['changed'], result['sent'], result['http_status'], result['attempts']) == (True, True, 200, 2)


def test_key_never_in_a_successful_result(run_task, task_args, api_key):
    assert api_key not in json.dumps(run_task(task_args))


def test_corrupt_ledger_is_a_warning(run_task, task_args, ledger_path):
    os.makedirs(os.path.dirname(ledger_path))
    with open(ledger_path, 'wb') as handle:
        handle.write(b'garbage' * 1000)
    result = run_task(task_args)
    assert result['sent'] is True
    [warning] = result['warnings']
    assert 'could not be read' in warning and ledger_path in warning


def test_endpoint_options_from_module_defaults_style_args(run_task, task_args, opener, api_key):
    # module_defaults only adds task args; api_key + org work as well as webhook_url.
    args = dict(task_args, api_key=api_key, org='acme')
    del args['webhook_url']
    run_task(args)
    assert opener.calls[0].url == resolve_endpoint({'api_key': api_key, 'org': 'acme'}, environ={}).url


# -- the items of a loop share the worker's ledger (issue 5: make bench) ---------------------------


@pytest.fixture
def connects(monkeypatch):
    """Counts the SQLite connections the ledger opens."""
    opened = []
    connect = SqliteLedger._connect  # pylint: disable=protected-access

    def counting_connect(self):
        opened.append(self.path)
        return connect(self)

    monkeypatch.setattr(SqliteLedger, '_connect', counting_connect)
    return opened


def test_loop_items_share_one_ledger_connection(run_task, task_args, opener, ledger_path, connects):
    try:
        for number in range(5):
            assert run_task(dict(task_args, resource_id=f'web{number:02d}'))['sent'] is True
        assert run_task(dict(task_args, resource_id='web00'))['sent'] is False
        assert connects == [ledger_path]
        assert len(opener.calls) == 5
    finally:
        discard_shared(shared_ledger(ledger_path))


def test_ledger_error_discards_the_shared_ledger(run_task, task_args, ledger_path, connects, monkeypatch):
    try:
        assert run_task(task_args)['sent'] is True
        shared = shared_ledger(ledger_path)

        def broken(*args, **kwargs):
            raise LedgerError(f'the ledger {ledger_path} failed: disk I/O error')

        monkeypatch.setattr(shared, 'lookup', broken)
        result = run_task(dict(task_args, status='OK'))
        assert result['failed'] is True and 'disk I/O error' in result['msg']
        # The next task opens the ledger afresh, and finds what the first one recorded.
        result = run_task(dict(task_args, status='OK'))
        assert (result['sent'], result['previous_status']) == (True, 'Alarm')
        assert connects == [ledger_path, ledger_path]
    finally:
        discard_shared(shared_ledger(ledger_path))


def test_check_mode_does_not_keep_the_ledger_open(run_task, task_args, ledger_path, connects):
    run_task(task_args, check_mode=True)
    assert connects == []
    assert not os.path.exists(ledger_path)


# -- sent, but not recorded (issue 10, item 10) ----------------------------------------------------


def test_a_send_the_ledger_cannot_record_is_reported_as_sent_with_a_warning(run_task, task_args, opener, monkeypatch):
    from ansible_collections.temperstack.alerting.plugins.plugin_utils import _ledger_sqlite

    def full_disk(self, *args, **kwargs):
        raise LedgerError(f'the ledger {self.path} failed: database or disk is full')

    monkeypatch.setattr(_ledger_sqlite.SqliteLedger, 'record', full_disk)
    result = run_task(task_args)

    assert 'failed' not in result
    assert (result['changed'], result['sent'], result['http_status']) == (True, True, 200)
    assert result['msg'].endswith('sent for alert ' + result['alert_id'] + ', but not recorded in the ledger')
    [warning] = result['warnings']
    assert 'reached Temperstack, but the ledger could not record it' in warning
    assert 'database or disk is full' in warning and 'may send it again' in warning
    assert len(opener.calls) == 1


def test_check_mode_opens_an_existing_ledger_read_only(run_task, task_args, ledger_path, opener):
    run_task(task_args)
    os.chmod(ledger_path, 0o644)
    with open(ledger_path, 'rb') as stream:
        before = stream.read()
    result = run_task({**task_args, 'status': 'OK'}, check_mode=True)
    assert result['changed'] is True and result['sent'] is False
    assert stat.S_IMODE(os.stat(ledger_path).st_mode) == 0o644
    with open(ledger_path, 'rb') as stream:
        assert stream.read() == before


# -- the shared ledger (ledger_url) ----------------------------------------------------------------


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: a ledger server that is down."""
    import socket  # pylint: disable=import-outside-toplevel

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


LEDGER_PASSWORD = 'pg-Secret-7f3a'


@pytest.fixture
def unreachable_ledger_url():
    return f'postgresql://temperstack:{LEDGER_PASSWORD}@127.0.0.1:{closed_port()}/temperstack'


@pytest.mark.parametrize('value', ['', '  ', '/var/lib/ledger.sqlite3', 'mysql://u:pw@h/db', 'http://h/db'])
def test_a_ledger_url_that_is_not_a_postgresql_uri_fails_before_any_request(run_task, task_args, opener, value):
    result = run_task({**task_args, 'ledger_url': value})

    assert result['failed'] is True
    assert result['msg'].startswith('ledger_url must be a PostgreSQL connection URI, postgresql://user@host')
    assert opener.calls == []


def test_a_bad_ledger_url_never_shows_its_password(run_task, task_args):
    result = run_task({**task_args, 'ledger_url': f'mysql://u:{LEDGER_PASSWORD}@h/db'})

    assert result['failed'] is True
    assert LEDGER_PASSWORD not in json.dumps(result)


def test_ledger_url_comes_from_the_environment(run_task, task_args, monkeypatch, unreachable_ledger_url):
    monkeypatch.setenv('TEMPERSTACK_LEDGER_URL', unreachable_ledger_url)

    result = run_task(task_args)

    # Unreachable, so the warning proves the variable was used; the alert went out all the same.
    assert result['sent'] is True
    assert any('unreachable' in warning for warning in result['warnings'])


def test_an_unreachable_ledger_still_sends_and_warns_with_the_url_masked(
    run_task, task_args, opener, unreachable_ledger_url, ledger_path, endpoint,
):
    result = run_task({**task_args, 'ledger_url': unreachable_ledger_url})

    assert result['changed'] is True
    assert result['sent'] is True
    assert len(opener.calls) == 1
    [warning] = result['warnings']
    assert warning.startswith(f'the ledger at postgresql://temperstack:{MASK}@127.0.0.1:')
    assert 'is unreachable' in warning
    assert 'sent whatever Temperstack already holds' in warning
    assert LEDGER_PASSWORD not in json.dumps(result)
    # Remembered in the fallback file next to ledger_path, never in ledger_path itself.
    fallback = ledger_path.replace('.sqlite3', '.fallback.sqlite3')
    assert recorded(fallback, endpoint, result['alert_id']).status == 'Alarm'
    assert not os.path.exists(ledger_path)


def test_an_unreachable_ledger_sends_again_on_every_run(run_task, task_args, opener, unreachable_ledger_url):
    """Without the shared ledger's memory the module cannot know what Temperstack holds: at least once."""
    run_task({**task_args, 'ledger_url': unreachable_ledger_url})
    second = run_task({**task_args, 'ledger_url': unreachable_ledger_url})

    assert second['sent'] is True
    assert len(opener.calls) == 2


def test_an_unreachable_ledger_withholds_an_ok_that_needs_its_memory(run_task, task_args, opener, unreachable_ledger_url):
    result = run_task({**task_args, 'status': 'OK', 'only_if_raised': True, 'ledger_url': unreachable_ledger_url})

    assert result['changed'] is False
    assert result['sent'] is False
    assert opener.calls == []
    assert any('unreachable' in warning for warning in result['warnings'])


def test_check_mode_with_an_unreachable_ledger_writes_nothing(run_task, task_args, opener, unreachable_ledger_url, ledger_path):
    result = run_task({**task_args, 'ledger_url': unreachable_ledger_url}, check_mode=True)

    assert result['changed'] is True
    assert result['sent'] is False
    assert opener.calls == []
    assert not os.path.exists(os.path.dirname(ledger_path))


def test_ledger_url_wins_over_ledger_path(run_task, task_args, unreachable_ledger_url, ledger_path):
    run_task({**task_args, 'ledger_url': unreachable_ledger_url})

    assert not os.path.exists(ledger_path)


def test_a_server_that_does_not_answer_costs_a_loop_one_connect_timeout(run_task, task_args, opener):
    """Each loop item would otherwise wait for the connect timeout: 100 items, 100 timeouts."""
    import socket  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel

    with socket.socket() as silent:
        silent.bind(('127.0.0.1', 0))
        silent.listen(16)  # accepted by the kernel, never answered
        port = silent.getsockname()[1]
        url = f'postgresql://temperstack:{LEDGER_PASSWORD}@127.0.0.1:{port}/temperstack?connect_timeout=1'
        started = time.monotonic()
        first = run_task({**task_args, 'ledger_url': url})
        first_took = time.monotonic() - started
        started = time.monotonic()
        rest = [run_task({**task_args, 'alert_id': f'item-{index}', 'ledger_url': url}) for index in range(5)]
        rest_took = time.monotonic() - started

    assert first_took >= 0.9
    assert rest_took < first_took
    assert all(result['sent'] for result in [first, *rest])
    assert all('is unreachable' in result['warnings'][0] for result in [first, *rest])
    assert len(opener.calls) == 6
