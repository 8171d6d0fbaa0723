# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""temperstack.alerting.alert_info, run as the task executor runs it, on a SQLite ledger (issue 12)."""

from __future__ import annotations

import datetime
import json
import os
import time
import typing as t

import pytest
import yaml
from ansible.errors import AnsibleActionFail
from ansible.plugins.loader import fragment_loader
from ansible.utils.plugin_docs import add_fragments

from ansible_collections.temperstack.alerting.plugins.action import alert_info as info_action
from ansible_collections.temperstack.alerting.plugins.modules import alert_info as info_docs
from ansible_collections.temperstack.alerting.plugins.modules import outbox as outbox_docs
from ansible_collections.temperstack.alerting.plugins.plugin_utils._client import SendError, TemperstackClient
from ansible_collections.temperstack.alerting.plugins.plugin_utils._dispatch import send_outbox
from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import resolve_endpoint
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_sqlite import SqliteLedger
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import Silence

from ansible_collections.temperstack.alerting.tests.unit.plugins.action.test_alert import (  # pylint: disable=unused-import
    run_task,
    task_args,
)
from ansible_collections.temperstack.alerting.tests.unit.plugins.action.test_silence import run_action

# The key of the endpoint that was rotated away: its entries are still queued, and must never show.
OLD_API_KEY = 'tsk-ROTATEDCANARY-3b9d0c2e71'
# Connection options alert_info (and outbox) take only so that module_defaults for the action group work.
ACCEPTED_UNUSED = ('timeout', 'retries', 'validate_certs', 'ca_path')
ALERT_KEYS = {'alert_id', 'status', 'fields', 'hosts', 'changed', 'queued', 'withheld_by', 'withheld_status', 'integration'}
ENTRY_KEYS = {'alert_id', 'status', 'fields', 'queued', 'age', 'failed_deliveries', 'held', 'integration'}


@pytest.fixture
def run_info(monkeypatch, webhook_url, ledger_path):
    """alert_info(args) for the test's endpoint and ledger file; keyword arguments as for run_action."""
    monkeypatch.delenv('TEMPERSTACK_LEDGER_URL', raising=False)

    def run(args: t.Mapping[str, t.Any] | None = None, **kwargs: t.Any) -> dict[str, t.Any]:
        return run_action(info_action, {'webhook_url': webhook_url, 'ledger_path': ledger_path, **(args or {})}, **kwargs)

    return run


@pytest.fixture
def old_endpoint():
    return resolve_endpoint({'api_key': OLD_API_KEY, 'org': 'acme'}, environ={})


@pytest.fixture
def day2_ledger(ledger_path, endpoint, old_endpoint, make_alert):
    """A ledger as an operator finds it on day 2. Returns when it was written."""
    key = endpoint.ledger_key
    before = time.time()
    with SqliteLedger(ledger_path) as ledger:
        # Open, acknowledged.
        ledger.record(key, make_alert(alert_id='disk-web1', resource_id='web1'), ['web1'])
        # Resolved, acknowledged.
        ledger.record(key, make_alert(alert_id='load-web1', resource_id='web1', status='OK'), ['web1'])
        # Open, and a worse Alarm waits in the outbox after two failed attempts.
        ledger.record(key, make_alert(alert_id='disk-db1', resource_id='db1'), ['db1'])
        ledger.attempted(ledger.queue(key, make_alert(alert_id='disk-db1', resource_id='db1', description='worse'), ['db1']))
        ledger.attempted(ledger.pending(key)[0].seq)
        # Never acknowledged: only queued; a callback Alarm about two hosts, with no resource_id of theirs.
        ledger.queue(key, make_alert(alert_id='play-site', resource_id='site.yml:Deploy'), ['web2', 'web3'])
        # Never sent: withheld by a silence.
        ledger.put_silence(Silence('maint', resource_ids=('cache*',), starts=before - 60, ends=before + 3600, comment='upgrade'))
        ledger.withhold(key, make_alert(alert_id='mem-cache1', resource_id='cache1'), ['cache1'], 'maint')
        # A failure a running playbook still holds.
        ledger.hold(key, make_alert(alert_id='held-web4', resource_id='web4'), ['web4'], token='run-1', owner='elsewhere:1')
        # The rotated key's outbox.
        ledger.queue(old_endpoint.ledger_key, make_alert(alert_id='disk-web9', resource_id='web9'))
        ledger.queue(old_endpoint.ledger_key, make_alert(alert_id='disk-web9', resource_id='web9', status='OK'))
        # Another endpoint's acknowledged record is not this endpoint's alert.
        ledger.record(old_endpoint.ledger_key, make_alert(alert_id='old-only', resource_id='web1'), ['web1'])
    return before


def by_id(items: list[dict[str, t.Any]]) -> dict[str, dict[str, t.Any]]:
    return {item['alert_id']: item for item in items}


def parse_iso(text: str) -> float:
    assert text.endswith('+00:00'), text
    return datetime.datetime.fromisoformat(text).timestamp()


# -- what it returns -------------------------------------------------------------------------------------


def test_reports_alerts_queued_entries_silences_and_other_endpoints(run_info, day2_ledger, ledger_path, old_endpoint):
    result = run_info()

    assert 'failed' not in result
    assert set(result) == {'changed', 'alerts', 'queued', 'queued_elsewhere', 'other_endpoints', 'silences', 'ledger'}
    assert result['changed'] is False
    assert result['ledger'] == ledger_path
    assert [alert['alert_id'] for alert in result['alerts']] == ['disk-db1', 'disk-web1', 'held-web4', 'load-web1', 'mem-cache1',
                                                                 'play-site']
    assert all(set(alert) == ALERT_KEYS for alert in result['alerts'])
    assert all(set(entry) == ENTRY_KEYS for entry in result['queued'])
    assert (result['queued_elsewhere'], result['other_endpoints']) == (
        2, [{'endpoint': f'sha256:{old_endpoint.ledger_key[:12]}', 'queued': 2}])
    assert result['silences'] == [{
        'name': 'maint', 'alert_id': [], 'resource_id': ['cache*'], 'hosts': [], 'starts': result['silences'][0]['starts'],
        'ends': result['silences'][0]['ends'], 'comment': 'upgrade', 'active': True,
    }]
    assert parse_iso(result['silences'][0]['ends']) == pytest.approx(day2_ledger + 3600, abs=1)


def test_an_acknowledged_alert_is_shown_as_temperstack_holds_it(run_info, day2_ledger, make_alert):
    alerts = by_id(run_info()['alerts'])

    open_alarm = alerts['disk-web1']
    assert {name: value for name, value in open_alarm.items() if name != 'changed'} == {
        'alert_id': 'disk-web1', 'status': 'Alarm', 'fields': make_alert(alert_id='disk-web1', resource_id='web1').payload,
        'hosts': ['web1'], 'queued': False, 'withheld_by': None, 'withheld_status': None, 'integration': 'default',
    }
    assert day2_ledger - 1 <= parse_iso(open_alarm['changed']) <= time.time() + 1
    assert (alerts['load-web1']['status'], alerts['load-web1']['queued']) == ('OK', False)
    # A worse Alarm waits in the outbox: Temperstack still holds the first.
    db1 = alerts['disk-db1']
    assert (db1['status'], db1['fields']['description'], db1['queued']) == ('Alarm', '/var is 93% full', True)


def test_an_alert_temperstack_never_acknowledged_has_no_status(run_info, day2_ledger):
    alerts = by_id(run_info()['alerts'])

    queued = alerts['play-site']
    assert (queued['status'], queued['changed'], queued['queued'], queued['hosts']) == (None, None, True, ['web2', 'web3'])
    assert queued['fields']['alert_id'] == 'play-site'
    withheld = alerts['mem-cache1']
    assert (withheld['status'], withheld['changed'], withheld['queued']) == (None, None, False)
    assert (withheld['withheld_by'], withheld['withheld_status'], withheld['hosts']) == ('maint', 'Alarm', ['cache1'])
    assert withheld['fields']['resource_id'] == 'cache1'
    held = alerts['held-web4']
    assert (held['status'], held['queued']) == (None, True)


def test_queued_entries_have_their_age_failed_deliveries_and_hold(run_info, day2_ledger):
    before_run = time.time()
    queued = run_info()['queued']

    assert [(e['alert_id'], e['status'], e['failed_deliveries'], e['held']) for e in queued] == [
        ('disk-db1', 'Alarm', 2, False), ('play-site', 'Alarm', 0, False), ('held-web4', 'Alarm', 0, True)]
    for entry in queued:
        assert day2_ledger - 1 <= parse_iso(entry['queued']) <= before_run + 1
        assert isinstance(entry['age'], float) and 0 <= entry['age'] <= time.time() - day2_ledger + 1
    assert queued[0]['fields']['description'] == 'worse'


def test_the_key_of_no_endpoint_is_ever_shown(run_info, day2_ledger, api_key):
    shown = json.dumps(run_info())
    assert api_key not in shown
    assert OLD_API_KEY not in shown
    assert 'ROTATEDCANARY' not in shown and 'LEAKCANARY' not in shown


def test_an_endpoint_with_nothing_in_the_ledger_sees_only_the_others_entries_and_the_silences(run_info, day2_ledger, monkeypatch):
    result = run_info({'webhook_url': None, 'api_key': 'tsk-brand-new-key', 'base_url': 'https://temperstack.example.com'})
    assert (result['alerts'], result['queued']) == ([], [])
    assert result['queued_elsewhere'] == 2 + 3
    assert len(result['other_endpoints']) == 2
    assert [silence['name'] for silence in result['silences']] == ['maint']


def test_a_missing_ledger_reads_as_empty_and_is_not_created(run_info, ledger_path):
    result = run_info()
    assert {name: result[name] for name in ('changed', 'alerts', 'queued', 'queued_elsewhere', 'other_endpoints', 'silences')} == {
        'changed': False, 'alerts': [], 'queued': [], 'queued_elsewhere': 0, 'other_endpoints': [], 'silences': []}
    assert not os.path.exists(ledger_path)


def test_it_changes_nothing_and_check_mode_sees_the_same(run_info, day2_ledger, ledger_path):
    with open(ledger_path, 'rb') as stream:
        before = stream.read()
    plain = run_info()
    checked = run_info(check_mode=True, diff=True)

    assert checked['changed'] is False and 'diff' not in checked
    for result in (plain, checked):
        for entry in result['queued']:
            entry.pop('age')
    assert checked == plain
    with open(ledger_path, 'rb') as stream:
        assert stream.read() == before
    assert not os.path.exists(ledger_path + '-wal') or os.path.getsize(ledger_path + '-wal') == 0


# -- filters ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('filters, alerts, queued', [
    ({'alert_id': ['disk-*']}, ['disk-db1', 'disk-web1'], ['disk-db1']),
    ({'alert_id': ['DISK-*']}, [], []),
    ({'alert_id': ['disk-web?', 'play-*']}, ['disk-web1', 'play-site'], ['play-site']),
    ({'status': 'Alarm'}, ['disk-db1', 'disk-web1', 'held-web4', 'mem-cache1', 'play-site'], ['disk-db1', 'play-site', 'held-web4']),
    ({'status': 'alarm'}, ['disk-db1', 'disk-web1', 'held-web4', 'mem-cache1', 'play-site'], ['disk-db1', 'play-site', 'held-web4']),
    ({'status': 'ok'}, ['load-web1'], []),
    ({'status': 'ANY'}, ['disk-db1', 'disk-web1', 'held-web4', 'load-web1', 'mem-cache1', 'play-site'],
     ['disk-db1', 'play-site', 'held-web4']),
    ({'resource_id': ['web*']}, ['disk-web1', 'held-web4', 'load-web1'], ['held-web4']),
    ({'resource_id': ['cache1', 'db1']}, ['disk-db1', 'mem-cache1'], ['disk-db1']),
    ({'host': 'web1'}, ['disk-web1', 'load-web1'], []),
    ({'host': 'web3'}, ['play-site'], ['play-site']),
    ({'host': 'web'}, [], []),
    ({'queued_only': True}, ['disk-db1', 'held-web4', 'play-site'], ['disk-db1', 'play-site', 'held-web4']),
    ({'host': 'web1', 'status': 'Alarm'}, ['disk-web1'], []),
    ({'alert_id': ['disk-*'], 'queued_only': True}, ['disk-db1'], ['disk-db1']),
], ids=['alert_id', 'alert_id-case', 'alert_id-any', 'Alarm', 'alarm', 'ok', 'ANY', 'resource_id', 'resource_id-any',
        'host', 'host-of-a-callback-alarm', 'host-exact', 'queued_only', 'host-and-status', 'alert_id-and-queued_only'])
def test_filters(run_info, day2_ledger, filters, alerts, queued):
    result = run_info(filters)
    assert [alert['alert_id'] for alert in result['alerts']] == alerts
    assert [entry['alert_id'] for entry in result['queued']] == queued
    # Filters pick alerts, not what else the ledger holds.
    assert (result['queued_elsewhere'], len(result['silences'])) == (2, 1)


def listed(run_info, status: str) -> list[str]:
    return [alert['alert_id'] for alert in run_info({'status': status})['alerts']]


def test_the_status_filter_takes_a_withheld_alarm_as_the_last_status_stated(run_info, ledger_path, endpoint, make_alert):
    with SqliteLedger(ledger_path) as ledger:
        ledger.record(endpoint.ledger_key, make_alert(alert_id='silenced', status='OK'))
        ledger.withhold(endpoint.ledger_key, make_alert(alert_id='silenced'), [], 'maint')
    assert (listed(run_info, 'OK'), listed(run_info, 'Alarm')) == ([], ['silenced'])
    assert by_id(run_info()['alerts'])['silenced']['status'] == 'OK'


def test_the_status_filter_takes_a_newer_queued_status_as_the_last_status_stated(run_info, ledger_path, endpoint, make_alert):
    # As documented: "That is Temperstack's, or a newer one still queued, or an Alarm a silence withheld."
    with SqliteLedger(ledger_path) as ledger:
        ledger.record(endpoint.ledger_key, make_alert(alert_id='resolving'))
        ledger.queue(endpoint.ledger_key, make_alert(alert_id='resolving', status='OK'))
    assert (listed(run_info, 'OK'), listed(run_info, 'Alarm')) == (['resolving'], [])
    assert by_id(run_info()['alerts'])['resolving']['status'] == 'Alarm'


# -- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize('args, message', [
    ({'status': 'Maybe'}, "status must be one of Alarm, OK, any; got 'Maybe'"),
    ({'status': ''}, "status must be one of Alarm, OK, any; got ''"),
    ({'webhook_url': None}, 'no Temperstack endpoint is configured'),
    ({'webhook_url': None, 'api_key': 'tsk-x'}, 'api_key given without org or base_url'),
    ({'ledger_url': 'mysql://dba:Pw-INFO-5d2@db/ledger'}, 'ledger_url must be a PostgreSQL connection URI'),
    ({'ledger_url': ''}, 'ledger_url must be a PostgreSQL connection URI'),
], ids=['status', 'status-empty', 'no-endpoint', 'api_key-alone', 'ledger_url', 'ledger_url-empty'])
def test_bad_input_fails_naming_the_option(run_info, day2_ledger, args, message):
    result = run_info(args)
    assert result['failed'] is True
    assert result['msg'].startswith(message), result['msg']
    assert 'alerts' not in result
    assert 'Pw-INFO-5d2' not in json.dumps(result)


@pytest.mark.parametrize('args, named', [
    ({'queued_only': 'perhaps'}, 'queued_only'),
    ({'alert_id': {'disk': 1}}, 'alert_id'),
    ({'state': 'present'}, 'state'),
])
def test_what_the_argument_spec_refuses_names_the_option(run_info, args, named):
    with pytest.raises(AnsibleActionFail) as caught:
        run_info(args)
    assert named in str(caught.value)


def test_a_webhook_url_that_is_not_an_integration_url_fails_without_showing_its_key(run_info):
    result = run_info({'webhook_url': 'https://acme.temperstack.com/webhooks/tsk-BADPATHCANARY-0e1'})
    assert result['failed'] is True
    assert result['msg'].startswith('webhook_url must be the integration URL Temperstack shows')
    assert 'BADPATHCANARY' not in json.dumps(result)


def test_options_match_the_documentation():
    documented = yaml.safe_load(info_docs.DOCUMENTATION)['options']
    own = {name: spec for name, spec in info_action.ARGUMENT_SPEC.items()
           if name in ('alert_id', 'status', 'resource_id', 'host', 'queued_only')}
    # Its own options in the module; the connection options it accepts but does not use (issue 20) in the fragment
    # that says so, which ansible-doc shows with them.
    assert set(documented) == set(own)
    assert set(ACCEPTED_UNUSED) <= set(rendered_options(info_docs))
    for name, doc in documented.items():
        assert own[name]['type'] == doc.get('type', 'str'), name
        assert own[name].get('elements') == doc.get('elements'), name
        assert own[name].get('default') == doc.get('default'), name


# -- the documented example: resolve every open alert of a decommissioned host ------------------------------


def test_resolving_every_open_alert_of_a_host_as_the_example_does(run_task, task_args, run_info, opener):
    for name in ('Disk almost full', 'Load too high'):
        run_task(dict(task_args, alert_name=name, resource_id='web03'))
    run_task(dict(task_args, resource_id='web04'))
    opener.calls.clear()

    found = run_info({'host': 'web03', 'status': 'Alarm'})
    for item in found['alerts']:
        result = run_task({'webhook_url': task_args['webhook_url'], 'ledger_path': task_args['ledger_path'],
                           'alert_id': item['alert_id'], 'alert_name': item['fields']['alert_name'], 'status': 'OK'})
        assert (result['changed'], result['sent']) == (True, True)

    assert len(found['alerts']) == 2
    assert sorted(body['alert_id'] for body in opener.bodies) == sorted(item['alert_id'] for item in found['alerts'])
    assert run_info({'host': 'web03', 'status': 'Alarm'})['alerts'] == []
    assert [alert['status'] for alert in run_info({'host': 'web04'})['alerts']] == ['Alarm']


# -- issue 20: what a new user trips on ------------------------------------------------------------------


def rendered_options(docs_module) -> dict[str, t.Any]:
    """The module's options as ansible-doc shows them: its own, merged with its documentation fragments by ansible-core."""
    doc = yaml.safe_load(docs_module.DOCUMENTATION)
    add_fragments(doc, docs_module.__file__, fragment_loader=fragment_loader, is_module=True)
    return doc['options']


@pytest.mark.parametrize('docs_module', [info_docs, outbox_docs], ids=['alert_info', 'outbox'])
@pytest.mark.parametrize('name', ACCEPTED_UNUSED)
def test_connection_options_it_does_not_use_say_so(docs_module, name):
    # Issue 20: alert_info and outbox documented timeout, retries, ca_path and validate_certs with texts about
    # repeated requests, though neither sends one.
    option = rendered_options(docs_module)[name]
    text = ' '.join(option['description'])
    assert text.startswith('Accepted only so that C(module_defaults) for the action group '
                           'C(group/temperstack.alerting.temperstack) can set it')
    assert 'Not used, since this module sends no request to Temperstack.' in text
    for misleading in ('repeated', 'attempts', 'Verify', 'to verify', 'wait for Temperstack'):
        assert misleading not in text, misleading
    # Still accepted, with the type and default the other modules of the group have.
    assert option['type'] == info_action.ARGUMENT_SPEC[name]['type']
    assert option.get('default') == info_action.ARGUMENT_SPEC[name].get('default')


def test_failed_deliveries_count_deliveries_and_the_delivery_error_counts_requests(
    run_info, ledger_path, endpoint, make_alert, opener, sleeps,
):
    # Issue 20: the callback warned "after 4 attempts" (HTTP requests) while alert_info's queued[].attempts was 1 (the
    # failed delivery those four requests made). The two counts now have two names.
    client = TemperstackClient(endpoint, retries=3, opener=opener, sleep=sleeps.append, jitter=lambda: 0.0)
    opener.http_error(503, times=4)
    with SqliteLedger(ledger_path) as ledger:
        ledger.queue(endpoint.ledger_key, make_alert(alert_id='disk-web1'), ['web1'])
        with pytest.raises(SendError) as info:
            send_outbox(ledger, client)

    assert len(opener.calls) == 4
    assert info.value.attempts == 4
    assert 'after 4 attempts' in info.value.message
    (entry,) = run_info()['queued']
    assert entry['failed_deliveries'] == 1
    assert 'attempts' not in entry
