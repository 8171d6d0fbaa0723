# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The event filter temperstack.alerting.normalize (and plugin_utils/_eda.py behind it): mapping, status, hosts."""

from __future__ import annotations

import copy
import json
import logging
import socket
import subprocess
import sys

import pytest

from ansible_collections.temperstack.alerting.extensions.eda.plugins.event_filter import normalize
from ansible_collections.temperstack.alerting.plugins.plugin_utils import _eda
from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import build_alert, derive_alert_id
from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import resolve_endpoint
# The ledger conformance suite's fixtures: each backend in turn, PostgreSQL on the server `make units` starts.
from ansible_collections.temperstack.alerting.tests.unit.plugins.plugin_utils.conftest import (  # noqa: F401 pylint: disable=unused-import
    ledger_backend,
    pg_admin_url,
    pg_database_url,
    postgresql_backend,
    sqlite_backend,
)

WEBHOOK_URL = 'https://acme.temperstack.com/api/integration/webhook/tsk-LEAKCANARY-0e5d'
ALARM = {'alert_name': 'Play failed: deploy', 'status': 'Alarm', 'alert_id': 'ansible-play-deploy-1'}


def run(event, **args):
    return normalize.main(event, **args)


def warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


@pytest.fixture(autouse=True)
def warnings_captured(caplog):
    caplog.set_level(logging.INFO)


# -- mapping ----------------------------------------------------------------------------------------------


def test_webhook_event_gets_the_seed_fields():
    payload = {
        'alert_name': 'Disk', 'status': 'Alarm', 'alert_priority': 'Critical', 'alert_id': 'd1', 'description': 'full',
        'alert_url': 'https://x/a', 'metric_name': 'disk', 'resource_id': 'web1', 'resource_name': 'Web 1',
        'resource_type': 'host', 'run_book_url': 'https://x/rb', 'extra': 'kept',
    }
    event = run({'payload': dict(payload), 'meta': {'endpoint': ''}}, hosts_from='none')
    assert event['temperstack'] == {k: v for k, v in payload.items() if k != 'extra'}
    assert event['payload'] == payload
    assert 'hosts' not in event['meta']


def test_event_streams_shape_and_bare_events():
    assert run({'payload': dict(ALARM), 'meta': {'headers': {}}}, hosts_from='none')['temperstack']['alert_id'] == 'ansible-play-deploy-1'
    bare = run(dict(ALARM), hosts_from='none')
    assert bare['temperstack']['alert_name'] == 'Play failed: deploy'


def test_field_map_reads_dotted_paths_and_the_rest_from_the_top_level():
    payload = {'alert': {'title': 'CPU', 'state': 'FIRING', 'labels': [{'instance': 'db1'}]}, 'status': 'ok', 'id': 7}
    event = run({'payload': payload}, hosts_from='none',
                field_map={'alert_name': 'alert.title', 'resource_id': 'alert.labels.0.instance', 'alert_id': 'id'})
    assert event['temperstack'] == {'alert_name': 'CPU', 'resource_id': 'db1', 'alert_id': '7', 'status': 'OK'}


@pytest.mark.parametrize('given, expected', [
    ('Alarm', 'Alarm'), ('alarm', 'Alarm'), ('ALARM', 'Alarm'), (' aLaRm\n', 'Alarm'),
    ('OK', 'OK'), ('ok', 'OK'), ('Ok', 'OK'), (' oK ', 'OK'),
])
def test_status_is_normalised_in_any_letter_case(given, expected, caplog):
    assert run({'payload': dict(ALARM, status=given)}, hosts_from='none')['temperstack']['status'] == expected
    assert not warnings(caplog)


def test_an_unknown_status_is_kept_with_a_warning(caplog):
    assert run({'payload': dict(ALARM, status='Firing')}, hosts_from='none')['temperstack']['status'] == 'Firing'
    assert any("'Firing'" in message and 'neither Alarm nor OK' in message for message in warnings(caplog))


def test_values_become_text_and_structures_are_skipped():
    payload = {'alert_name': 'Disk', 'status': 'Alarm', 'alert_id': 42, 'description': ['a'], 'metric_name': True,
               'resource_id': None, 'resource_name': '  '}
    assert run({'payload': payload}, hosts_from='none')['temperstack'] == {
        'alert_name': 'Disk', 'status': 'Alarm', 'alert_id': '42', 'metric_name': 'true'}


def test_alert_id_is_derived_as_the_alert_module_derives_it():
    fields = run({'payload': {'alert_name': 'Disk almost full', 'status': 'Alarm', 'resource_id': 'web1'}},
                 hosts_from='none')['temperstack']
    assert fields['alert_id'] == derive_alert_id('Disk almost full', 'web1')
    module_alert = build_alert({'alert_name': 'Disk almost full', 'status': 'Alarm', 'resource_id': 'web1'})
    assert fields['alert_id'] == module_alert.alert_id


@pytest.mark.parametrize('event', [{'payload': {'hello': 'world'}}, {'status': 'Alarm'}, {'payload': {'alert_id': ''}}])
def test_no_alert_id_nor_name_passes_through_untouched_with_a_warning(event, caplog):
    before = copy.deepcopy(event)
    assert run(event) == before
    assert any('neither alert_id nor alert_name' in message for message in warnings(caplog))


def test_a_non_mapping_event_passes_through(caplog):
    assert run(['a']) == ['a']
    assert warnings(caplog)


@pytest.mark.parametrize('args, named', [
    ({'hosts_from': 'dns'}, 'hosts_from'),
    ({'field_map': ['alert_name']}, 'field_map'),
    ({'field_map': {'name': 'x'}}, "'name'"),
    ({'field_map': {'alert_name': 'a..b'}}, 'field_map.alert_name'),
    ({'ledger_url': 5}, 'ledger_url'),
    ({'colour': 'red'}, 'colour'),
])
def test_bad_arguments_fail_naming_them(args, named):
    with pytest.raises(ValueError, match=named):
        run({'payload': dict(ALARM)}, **args)


# -- hosts ------------------------------------------------------------------------------------------------


def test_hosts_from_resource_id(caplog):
    assert run({'payload': dict(ALARM, resource_id='web3')}, hosts_from='resource_id')['meta']['hosts'] == ['web3']
    event = run({'payload': dict(ALARM)}, hosts_from='resource_id')
    assert 'meta' not in event
    assert any('no resource_id' in message for message in warnings(caplog))


def test_hosts_from_none_leaves_meta_hosts_alone():
    assert run({'payload': dict(ALARM), 'meta': {'hosts': ['x']}}, hosts_from='none')['meta']['hosts'] == ['x']


def record(ledger_backend, status='Alarm', hosts=('web1', 'web2'), alert_id=ALARM['alert_id']):
    endpoint = resolve_endpoint({'webhook_url': WEBHOOK_URL}, environ={})
    with ledger_backend.open() as ledger:
        ledger.record(endpoint.ledger_key, build_alert(dict(ALARM, status=status, alert_id=alert_id)), hosts=hosts)


def ledger_args(ledger_backend):
    return {'ledger_url' if ledger_backend.name == 'postgresql' else 'ledger_path': ledger_backend.spec}


def test_hosts_of_the_open_alarm_from_the_ledger(ledger_backend, caplog):
    record(ledger_backend)
    event = run({'payload': dict(ALARM, status='ALARM'), 'meta': {}}, webhook_url=WEBHOOK_URL, **ledger_args(ledger_backend))
    assert event['meta']['hosts'] == ['web1', 'web2']
    assert not warnings(caplog)


def test_the_endpoint_and_ledger_come_from_the_environment(ledger_backend, monkeypatch):
    record(ledger_backend)
    monkeypatch.setenv('TEMPERSTACK_WEBHOOK_URL', WEBHOOK_URL)
    monkeypatch.setenv('TEMPERSTACK_LEDGER_URL' if ledger_backend.name == 'postgresql' else 'TEMPERSTACK_LEDGER_PATH',
                       ledger_backend.spec)
    assert run({'payload': dict(ALARM)})['meta']['hosts'] == ['web1', 'web2']


def test_an_alert_the_ledger_does_not_know_has_no_hosts(ledger_backend, caplog):
    record(ledger_backend, alert_id='another')
    event = run({'payload': dict(ALARM), 'meta': {}}, webhook_url=WEBHOOK_URL, **ledger_args(ledger_backend))
    assert 'hosts' not in event['meta'] and event['temperstack']['alert_id'] == ALARM['alert_id']
    assert any('does not know alert' in message for message in warnings(caplog))


def test_an_alert_of_another_endpoint_is_unknown(ledger_backend, caplog):
    record(ledger_backend)
    event = run({'payload': dict(ALARM)}, webhook_url=WEBHOOK_URL + 'x', **ledger_args(ledger_backend))
    assert 'meta' not in event
    assert any('does not know alert' in message for message in warnings(caplog))


def test_a_resolved_alert_has_no_hosts(ledger_backend, caplog):
    record(ledger_backend, status='OK')
    assert 'meta' not in run({'payload': dict(ALARM)}, webhook_url=WEBHOOK_URL, **ledger_args(ledger_backend))
    assert any('no open Alarm' in message for message in warnings(caplog))


def test_an_alarm_without_hosts_has_no_hosts(ledger_backend, caplog):
    record(ledger_backend, hosts=())
    assert 'meta' not in run({'payload': dict(ALARM)}, webhook_url=WEBHOOK_URL, **ledger_args(ledger_backend))
    assert any('names no hosts' in message for message in warnings(caplog))


def test_no_ledger_file_yet_means_unknown(tmp_path, caplog):
    event = run({'payload': dict(ALARM)}, webhook_url=WEBHOOK_URL, ledger_path=str(tmp_path / 'none' / 'ledger.sqlite3'))
    assert event['temperstack']['alert_id'] == ALARM['alert_id'] and 'meta' not in event
    assert warnings(caplog)
    assert not (tmp_path / 'none' / 'ledger.sqlite3').exists()


def test_an_unreachable_ledger_server_passes_the_event_on_with_a_warning(caplog):
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    url = f'postgresql://eda:pw-LEAKCANARY-77@127.0.0.1:{port}/ledger?connect_timeout=1'
    event = run({'payload': dict(ALARM)}, webhook_url=WEBHOOK_URL, ledger_url=url)
    assert event['temperstack']['status'] == 'Alarm' and 'meta' not in event
    messages = warnings(caplog)
    assert any('cannot read the ledger' in message for message in messages)
    assert 'pw-LEAKCANARY-77' not in caplog.text and 'tsk-LEAKCANARY' not in caplog.text


def test_a_ledger_url_that_is_not_postgresql_is_named(caplog):
    event = run({'payload': dict(ALARM)}, webhook_url=WEBHOOK_URL, ledger_url='mysql://x/y')
    assert 'meta' not in event
    assert any('ledger_url' in message for message in warnings(caplog))


def test_no_endpoint_configured_means_no_hosts(caplog):
    assert 'meta' not in run({'payload': dict(ALARM)})
    assert any('which endpoint' in message for message in warnings(caplog))


def test_a_missing_ledger_module_is_a_warning_not_a_failure(monkeypatch, caplog):
    import builtins  # pylint: disable=import-outside-toplevel
    real_import = builtins.__import__

    def no_ledger(name, globals_=None, locals_=None, fromlist=(), level=0):
        if '_ledger' in name:
            raise ImportError("No module named 'ansible'")
        return real_import(name, globals_, locals_, fromlist, level)
    monkeypatch.setattr(builtins, '__import__', no_ledger)
    event = run({'payload': dict(ALARM)}, webhook_url=WEBHOOK_URL)
    assert event['temperstack']['alert_id'] == ALARM['alert_id'] and 'meta' not in event
    assert any('ansible-core' in message for message in warnings(caplog))


# -- loaded as ansible-rulebook loads it -------------------------------------------------------------------


def test_runs_when_loaded_by_path_as_ansible_rulebook_does(tmp_path):
    """A fresh, isolated Python (no collection loader, nothing on sys.path) runs the file as ansible-rulebook does."""
    script = (
        'import json, runpy, sys\n'
        'main = runpy.run_path(sys.argv[1])["main"]\n'
        'print(json.dumps(main({"payload": {"alert_name": "x", "status": "ok"}}, hosts_from="none")))\n'
    )
    done = subprocess.run([sys.executable, '-I', '-c', script, normalize.__file__], cwd=str(tmp_path),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)['temperstack']['status'] == 'OK'
    assert _eda.HOSTS_FROM == ('ledger', 'resource_id', 'none')


def test_an_unexpected_ledger_fault_is_a_warning_not_a_lost_event(monkeypatch, caplog):
    from ansible_collections.temperstack.alerting.plugins.plugin_utils import _ledger_open  # pylint: disable=import-outside-toplevel

    def broken(*_args, **_kwargs):
        raise RuntimeError('disk on fire')
    monkeypatch.setattr(_ledger_open, 'open_ledger', broken)
    event = run({'payload': dict(ALARM)}, webhook_url=WEBHOOK_URL)
    assert event['temperstack']['alert_id'] == ALARM['alert_id'] and 'meta' not in event
    assert any('unexpected RuntimeError' in message for message in warnings(caplog))
