# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The playbook_alerts callback, driven event by event the way ansible-playbook drives it.

Acknowledgement is replaced by a fake that drains the real ledger's outbox into a list ("Temperstack"), so a
test can play several runs against one ledger and see exactly what would reach Temperstack, in order.
The real delivery process and real ansible-playbook runs are covered by test_outbox_sender.py and by
the integration target playbook_alerts.
"""

from __future__ import annotations

import itertools
import os
import socket
import sqlite3
import time
import types
import typing as t

import pytest

from ansible import context
from ansible.module_utils.common.collections import ImmutableDict
from ansible.plugins.callback import CallbackBase

from ansible_collections.temperstack.alerting.plugins.callback import playbook_alerts
from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import Alert
from ansible_collections.temperstack.alerting.plugins.plugin_utils import _ledger_sqlite
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_sqlite import SqliteLedger
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_open import open_ledger
from ansible_collections.temperstack.alerting.plugins.plugin_utils._outbox_sender import FlushReport
from ansible_collections.temperstack.alerting.plugins.plugin_utils._run_units import NO_LOG_MESSAGE
from ansible_collections.temperstack.alerting.tests.unit.fakes import FakeDisplay

API_KEY = 'tsk-CALLBACK-CANARY-91c3e5'
BASE_URL = 'https://alerts.example.com'

DEFAULT_OPTIONS: dict[str, t.Any] = {
    'webhook_url': None,
    'api_key': API_KEY,
    'org': None,
    'base_url': BASE_URL,
    'integration': None,
    'timeout': 10,
    'retries': 3,
    'validate_certs': True,
    'ca_path': None,
    'ledger_path': None,  # set per test
    'ledger_url': None,
    'scope': 'play',
    'alert_priority': 'Critical',
    'run_book_url': None,
    'alert_url': None,
    'resource_type': None,
    'alert_id_prefix': 'ansible',
    'check_mode_alerts': False,
    'flush_timeout': 30.0,
    'max_error_chars': 300,
}

DEFAULT_CLIARGS: dict[str, t.Any] = {
    'check': False,
    'tags': ('all',),
    'skip_tags': (),
    'start_at_task': None,
    'step': False,
    'subset': None,
}


class Temperstack:
    """What reached Temperstack, across runs; ``down`` makes every delivery fail (alerts stay queued)."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        # Routing: (integration, status, alert id) of each delivery, in order.
        self.routed: list[tuple[str, str, str]] = []
        self.down = False
        # Set to N: each flush takes long enough that the delivery process calls on_slow with N seconds left.
        self.slow_flush: float | None = None
        self.processes: list[FakeSenderProcess] = []
        self.exit_handlers: list[t.Callable[[], None]] = []

    @property
    def statuses(self) -> list[tuple[str, str]]:
        return [(p['status'], p['alert_id']) for p in self.received]

    @property
    def status_list(self) -> list[str]:
        return [p['status'] for p in self.received]


class FakeSenderProcess:
    """Stands in for SenderProcess: flush() drains the outbox through the real ledger."""

    temperstack: Temperstack

    def __init__(self, client, ledger_path, flush_timeout, run_token='', fallback='', unreachable='', others=()) -> None:
        self.client = client
        self.clients = [client, *others]
        self.ledger_path = ledger_path
        self.fallback = fallback
        self.flush_timeout = flush_timeout
        self.run_token = run_token
        self.notified = 0
        self.flushed = 0
        self.temperstack.processes.append(self)

    def notify(self) -> None:
        self.notified += 1

    def flush(self, on_slow=None) -> FlushReport:
        self.flushed += 1
        if self.temperstack.slow_flush is not None and on_slow is not None:
            on_slow(self.temperstack.slow_flush)
        sent, errors = [], []
        # As the delivery process opens it: a shared ledger with this controller's fallback file.
        with open_ledger(self.ledger_path, fallback=self.fallback or None) as ledger:
            for client in self.clients:
                for queued in ledger.pending(client.endpoint.ledger_key):
                    if self.temperstack.down:
                        errors.append(f'{queued.alert.status} for {queued.alert.alert_id} was not delivered: HTTP 503')
                        break
                    self.temperstack.received.append(queued.alert.payload)
                    self.temperstack.routed.append((client.endpoint.integration, queued.alert.status, queued.alert.alert_id))
                    ledger.delivered(client.endpoint.ledger_key, queued)
                    sent.append(queued.alert.status)
            queued_count = sum(len(ledger.pending(client.endpoint.ledger_key)) for client in self.clients)
        return FlushReport(sent, queued_count, errors, True)


def held_alarms(ledger: SqliteLedger, run: t.Any) -> int:
    """How many failures the run holds, counted by releasing them in a copy of its ledger."""
    copy = ledger.path + '.copy'
    with sqlite3.connect(ledger.path) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    try:
        with SqliteLedger(copy) as copied:
            return copied.release_holds(run.callback._run_token)
    finally:
        os.remove(copy)


class _ExitHandlers:
    """Stands in for the callback's set of runs to end at exit: keeps each run's exit handler, in order."""

    def __init__(self, handlers: list[t.Callable[[], None]]) -> None:
        self._handlers = handlers

    def add(self, callback: t.Any) -> None:
        self._handlers.append(callback._at_exit)


@pytest.fixture
def temperstack(monkeypatch):
    server = Temperstack()
    fake = type('BoundFakeSenderProcess', (FakeSenderProcess,), {'temperstack': server})
    monkeypatch.setattr(playbook_alerts, 'SenderProcess', fake)
    # A run's exit handler is called by the test that wants it (exit_run), never at the end of pytest.
    monkeypatch.setattr(playbook_alerts, '_RUNS', _ExitHandlers(server.exit_handlers))
    # Options come from the test, not from ansible's configuration machinery.
    monkeypatch.setattr(CallbackBase, 'set_options', lambda self, *args, **kwargs: None)
    for name in ('AWX_HOST', 'JOB_ID'):
        monkeypatch.delenv(name, raising=False)
    return server


_uuids = itertools.count(1)


class Run:
    """One ansible-playbook run: creates the callback and sends it events as Ansible's strategies do."""

    def __init__(self, monkeypatch, ledger_path, options=None, cliargs=None) -> None:
        monkeypatch.setattr(context, 'CLIARGS', ImmutableDict({**DEFAULT_CLIARGS, **(cliargs or {})}))
        self.options = {**DEFAULT_OPTIONS, 'ledger_path': ledger_path, **(options or {})}
        self.display = FakeDisplay()
        self.callback = playbook_alerts.CallbackModule(display=self.display)
        self.callback.get_option = self.options.__getitem__
        self.callback.set_options()
        self.play_obj: t.Any = None

    # -- the events ------------------------------------------------------------------------------

    def playbook(self, path='/srv/ops/site.yml') -> Run:
        self.callback.v2_playbook_on_start(types.SimpleNamespace(_file_name=path))
        return self

    def play(self, name='Deploy web tier', same_as_previous=False) -> Run:
        uuid = self.play_obj._uuid if same_as_previous else f'uuid-{next(_uuids)}'
        removed = list(self.play_obj._removed_hosts) if same_as_previous else []
        self.play_obj = types.SimpleNamespace(name=name, _uuid=uuid, _removed_hosts=removed)
        self.callback.v2_playbook_on_play_start(self.play_obj)
        return self

    def ok(self, *hosts, task='Deploy') -> Run:
        for host in hosts:
            self.callback.v2_runner_on_ok(result(host, task))
        return self

    def skipped(self, *hosts, task='Optional') -> Run:
        for host in hosts:
            self.callback.v2_runner_on_skipped(result(host, task))
        return self

    def failed(self, host, task='Deploy', msg='boom', rescued=False, ignore_errors=False, **extra) -> Run:
        # Ansible takes a failed host out of the play before the event, and puts a rescued one back.
        if not ignore_errors and not rescued:
            self.play_obj._removed_hosts.append(host)
        self.callback.v2_runner_on_failed(result(host, task, msg=msg, **extra), ignore_errors=ignore_errors)
        return self

    def unreachable(self, host, task='Gathering Facts', msg='Failed to connect to the host via ssh', ignore=False) -> Run:
        if not ignore:
            self.play_obj._removed_hosts.append(host)
        self.callback.v2_runner_on_unreachable(result(host, task, msg=msg, ignore_unreachable=ignore))
        return self

    def ended(self, host) -> Run:
        """any_errors_fatal or max_fail_percentage took the host out of the play without a failure of its own."""
        self.play_obj._removed_hosts.append(host)
        return self

    def meta(self, action, ended=(), skipped=(), when=None) -> Run:
        """A meta task as Ansible runs it: task start, then hosts taken out of the play, or a skip (false `when`)."""
        task = FakeTask(action, action='ansible.builtin.meta')
        task.args = {'_raw_params': action}
        task.when = [when] if when else []
        self.callback.v2_playbook_on_task_start(task, is_conditional=False)
        self.play_obj._removed_hosts.extend(ended)
        for host in skipped:
            self.callback.v2_runner_on_skipped(
                types.SimpleNamespace(host=FakeHost(host), task=task, result={'skipped': True})
            )
        return self

    def no_hosts_remaining(self) -> Run:
        self.callback.v2_playbook_on_no_hosts_remaining()
        return self

    def no_hosts_matched(self) -> Run:
        """A play whose hosts pattern names no host: Ansible sends this right after the play's start."""
        self.callback.v2_playbook_on_no_hosts_matched()
        return self

    def alarm_hosts(self, alert_id) -> tuple[str, ...]:
        """The hosts the ledger holds for ``alert_id``, as the next decision sees them."""
        with SqliteLedger(self.options['ledger_path']) as ledger:
            known = ledger.lookup(self.callback._endpoint_key, alert_id)
        return known.hosts if known else ()

    def stats(self) -> Run:
        self.callback.v2_playbook_on_stats(object())
        return self

    # -- what came out ---------------------------------------------------------------------------

    @property
    def summary(self) -> list[str]:
        return [line for line in self.display.lines if line.startswith('Temperstack:')]


class FakeHost:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_name(self) -> str:
        return self.name


class FakeTask:
    def __init__(self, name, action='ansible.builtin.command', no_log=False, ignore_unreachable=False) -> None:
        self.name = name
        self.action = action
        self.no_log = no_log
        self.ignore_unreachable = ignore_unreachable

    def get_name(self) -> str:
        return self.name


def result(host, task, no_log=False, ignore_unreachable=False, action='ansible.builtin.command', **data):
    return types.SimpleNamespace(
        host=FakeHost(host),
        task=FakeTask(task, action=action, no_log=no_log, ignore_unreachable=ignore_unreachable),
        result=dict(data),
    )


@pytest.fixture
def run(monkeypatch, ledger_path, temperstack):
    """run(**options) / run(cliargs={...}) starts a new ansible-playbook run against the same ledger."""

    def start(cliargs=None, **options) -> Run:
        return Run(monkeypatch, ledger_path, options, cliargs)

    return start


def failing_run(run, host='web1', msg='boom', **kwargs) -> Run:
    return run(**kwargs).playbook().play().ok('web2').failed(host, msg=msg).stats()


def green_run(run, cliargs=None, **kwargs) -> Run:
    return run(cliargs=cliargs, **kwargs).playbook().play().ok('web1', 'web2').stats()


# -- what counts as a failure -------------------------------------------------------------------------


def test_a_failed_task_raises_one_alarm(run, temperstack):
    r = run().playbook().play().ok('web1', 'web2').failed('web2', 'Restart nginx', msg='nginx failed').stats()

    assert len(temperstack.received) == 1
    payload = temperstack.received[0]
    assert payload['status'] == 'Alarm'
    assert payload['alert_name'] == "Ansible play 'Deploy web tier' failed (site.yml)"
    assert payload['alert_id'].startswith('ansible-site-yml-deploy-web-tier-')
    assert payload['description'] == "Failed hosts (1): web2\n- web2: task 'Restart nginx' failed: nginx failed"
    assert payload['alert_priority'] == 'Critical'
    assert payload['metric_name'] == 'ansible_failed_hosts'
    assert r.summary == ['Temperstack: sent 1 Alarm']
    assert r.display.warnings == []


@pytest.mark.parametrize('how', ['ignore_errors', 'rescued'])
def test_ignored_and_rescued_failures_send_nothing(run, temperstack, how):
    r = run().playbook().play().ok('web1').failed('web1', **{how: True}).ok('web1', task='After').stats()

    assert temperstack.received == []
    assert r.summary == []


def test_ignored_unreachable_host_sends_nothing(run, temperstack):
    run().playbook().play().unreachable('web1', ignore=True).ok('web1').stats()

    assert temperstack.received == []


def test_an_unreachable_host_raises_an_alarm_naming_it(run, temperstack):
    run().playbook().play().ok('web1').unreachable('db1', msg='Failed to connect: Connection refused').stats()

    assert temperstack.statuses == [('Alarm', temperstack.received[0]['alert_id'])]
    assert temperstack.received[0]['description'] == (
        'Unreachable hosts (1): db1\n'
        "- db1: task 'Gathering Facts' unreachable: Failed to connect: Connection refused"
    )


def test_a_failed_handler_raises_an_alarm(run, temperstack):
    # Ansible reports a failed handler with the same event as a failed task.
    run().playbook().play().ok('web1').failed('web1', task='restart nginx', msg='Job for nginx.service failed').stats()

    assert "task 'restart nginx' failed: Job for nginx.service failed" in temperstack.received[0]['description']


def test_rescued_on_one_host_failed_on_another(run, temperstack):
    run().playbook().play().failed('web1', rescued=True).failed('web2', msg='really').stats()

    description = temperstack.received[0]['description']
    assert description.startswith('Failed hosts (1): web2\n')
    assert 'web1' not in description


# -- the story across runs ----------------------------------------------------------------------------------


def test_fail_fail_green_green(run, temperstack):
    first = failing_run(run)
    second = failing_run(run)
    third = green_run(run)
    fourth = green_run(run)

    alert_id = temperstack.received[0]['alert_id']
    assert temperstack.statuses == [('Alarm', alert_id), ('OK', alert_id)]
    assert first.summary == ['Temperstack: sent 1 Alarm']
    assert second.summary == []
    assert third.summary == ['Temperstack: sent 1 OK']
    assert fourth.summary == []
    assert temperstack.received[1]['alert_name'] == temperstack.received[0]['alert_name']


def test_a_different_failure_updates_the_alert(run, temperstack):
    failing_run(run, msg='disk full')
    failing_run(run, msg='disk full')
    failing_run(run, msg='out of memory')

    assert [p['status'] for p in temperstack.received] == ['Alarm', 'Alarm']
    assert len({p['alert_id'] for p in temperstack.received}) == 1
    assert 'disk full' in temperstack.received[0]['description']
    assert 'out of memory' in temperstack.received[1]['description']


def test_green_runs_without_an_alarm_on_record_are_silent(run, temperstack):
    r = green_run(run)

    assert temperstack.received == []
    assert r.summary == []
    assert all(process.notified == 0 for process in temperstack.processes)


def test_the_same_playbook_from_another_directory_is_the_same_alert(run, temperstack):
    run().playbook('/home/alice/ops/site.yml').play().failed('web1').stats()
    run().playbook('/runner/project/site.yml').play().ok('web1').stats()

    assert temperstack.status_list == ['Alarm', 'OK']
    assert temperstack.statuses[0][1] == temperstack.statuses[1][1]


def test_alarm_is_queued_when_its_play_ends_not_at_the_end_of_the_run(run, temperstack):
    r = run().playbook().play('One').failed('web1')
    process = temperstack.processes[0]
    with SqliteLedger(r.options['ledger_path']) as ledger:
        # The failure is durable at once, but held: nothing is deliverable while play One goes on.
        assert ledger.pending(r.callback._endpoint_key) == []
        assert held_alarms(ledger, r) == 1
    woken = process.notified
    r.play('Two')  # play One has ended: its Alarm is in the outbox and the sender is woken
    assert r.display.warnings == []
    assert process.notified == woken + 1
    assert process.flushed == 0
    with SqliteLedger(r.options['ledger_path']) as ledger:
        pending = ledger.pending(r.callback._endpoint_key)
    assert [q.alert.status for q in pending] == ['Alarm']
    r.ok('web2').stats()
    assert process.flushed == 1


def test_each_play_is_its_own_alert(run, temperstack):
    run().playbook().play('Web').failed('web1').play('Db').failed('db1').play('Cache').ok('c1').stats()

    names = [p['alert_name'] for p in temperstack.received]
    assert names == ["Ansible play 'Web' failed (site.yml)", "Ansible play 'Db' failed (site.yml)"]
    run().playbook().play('Web').ok('web1').play('Db').failed('db1').play('Cache').ok('c1').stats()
    assert temperstack.status_list == ['Alarm', 'Alarm', 'OK']
    assert temperstack.received[2]['alert_name'] == "Ansible play 'Web' failed (site.yml)"


# -- serial batches ------------------------------------------------------------------------------------------


def test_serial_batches_of_one_play_are_one_unit_with_one_alarm(run, temperstack):
    r = run().playbook().play('Rolling').failed('web1', msg='first batch')
    r.play('Rolling', same_as_previous=True).failed('web3', msg='second batch').ok('web4')
    r.stats()

    assert len(temperstack.received) == 1
    description = temperstack.received[0]['description']
    assert description.splitlines()[0] == 'Failed hosts (2): web1, web3'
    assert 'first batch' in description and 'second batch' in description


def test_serial_batches_recover_together(run, temperstack):
    run().playbook().play('Rolling').failed('web1').play('Rolling', same_as_previous=True).ok('web3').stats()
    run().playbook().play('Rolling').ok('web1', 'web2').play('Rolling', same_as_previous=True).ok('web3', 'web4').stats()

    assert temperstack.status_list == ['Alarm', 'OK']


def test_a_failure_in_a_later_batch_blocks_the_ok(run, temperstack):
    failing_run(run)
    run().playbook().play().ok('web1', 'web2').play(same_as_previous=True).failed('web3').stats()

    # The unit failed again (on another host, so a new Alarm), and certainly did not recover.
    assert temperstack.status_list == ['Alarm', 'Alarm']


# -- scopes ---------------------------------------------------------------------------------------------------


def test_host_scope_raises_one_alarm_per_failed_host_at_the_end(run, temperstack):
    r = run(scope='host').playbook().play('Web').ok('web1').failed('web2')
    r.play('Db').failed('db1', msg='migration failed')
    with SqliteLedger(r.options['ledger_path']) as ledger:  # host units span plays: nothing deliverable before the end
        assert ledger.pending(r.callback._endpoint_key) == []
        assert held_alarms(ledger, r) == 2
    r.stats()

    assert sorted(p['resource_id'] for p in temperstack.received) == ['db1', 'web2']
    ids = {p['resource_id']: p['alert_id'] for p in temperstack.received}
    assert ids['web2'].startswith('ansible-site-yml-web2-')
    assert all(p['resource_type'] == 'host' for p in temperstack.received)


def test_host_scope_recovers_host_by_host(run, temperstack):
    run(scope='host').playbook().play().failed('web1').failed('web2').stats()
    run(scope='host').playbook().play().ok('web1').failed('web2').stats()

    assert [(p['status'], p['resource_id']) for p in temperstack.received] == [
        ('Alarm', 'web1'), ('Alarm', 'web2'), ('OK', 'web1'),
    ]


def test_playbook_scope_raises_one_alarm_for_all_plays(run, temperstack):
    run(scope='playbook').playbook().play('Web').failed('web1').play('Db').failed('db1').stats()

    assert len(temperstack.received) == 1
    payload = temperstack.received[0]
    assert payload['alert_name'] == 'Ansible playbook site.yml failed'
    assert payload['resource_type'] == 'ansible-playbook'
    assert payload['description'].splitlines()[0] == 'Failed hosts (2): db1, web1'


def test_playbook_scope_needs_every_play_green(run, temperstack):
    run(scope='playbook').playbook().play('Web').failed('web1').play('Db').ok('db1').stats()
    run(scope='playbook').playbook().play('Web').ok('web1').play('Db').failed('db1').stats()
    run(scope='playbook').playbook().play('Web').ok('web1').play('Db').ok('db1').stats()

    assert temperstack.status_list == ['Alarm', 'Alarm', 'OK']


def test_scopes_give_different_alert_ids(run, temperstack):
    for scope in ('play', 'host', 'playbook'):
        run(scope=scope).playbook().play().failed('web1').stats()

    assert len({p['alert_id'] for p in temperstack.received}) == 3


def test_prefix_and_settings_reach_the_payload(run, temperstack, monkeypatch):
    run(
        alert_id_prefix='payments', alert_priority='Medium', resource_type='deploy',
        run_book_url='https://wiki.example.com/rb', alert_url='https://ci.example.com/job/9',
    ).playbook().play().failed('web1').stats()

    payload = temperstack.received[0]
    assert payload['alert_id'].startswith('payments-site-yml-deploy-web-tier-')
    assert payload['alert_priority'] == 'Medium'
    assert payload['resource_type'] == 'deploy'
    assert payload['run_book_url'] == 'https://wiki.example.com/rb'
    assert payload['alert_url'] == 'https://ci.example.com/job/9'


def test_awx_job_url_is_the_default_alert_url(run, temperstack, monkeypatch):
    monkeypatch.setenv('AWX_HOST', 'https://awx.example.com/')
    monkeypatch.setenv('JOB_ID', '1234')
    run().playbook().play().failed('web1').stats()

    assert temperstack.received[0]['alert_url'] == 'https://awx.example.com/#/jobs/playbook/1234/output'


def test_without_awx_there_is_no_alert_url(run, temperstack):
    run().playbook().play().failed('web1').stats()

    assert 'alert_url' not in temperstack.received[0]


# -- narrowed and interrupted runs ----------------------------------------------------------------------------


@pytest.mark.parametrize('cliargs', [
    {'tags': ('deploy',)},
    {'tags': ('all', 'deploy')},
    {'skip_tags': ('slow',)},
    {'start_at_task': 'Deploy'},
    {'step': True},
], ids=['tags', 'tags-and-all', 'skip-tags', 'start-at-task', 'step'])
def test_narrowed_runs_send_no_ok(run, temperstack, cliargs):
    failing_run(run)
    narrowed = green_run(run, cliargs=cliargs)

    assert temperstack.status_list == ['Alarm']
    assert narrowed.summary == []
    # ...and the next full run does resolve it.
    green_run(run)
    assert temperstack.status_list == ['Alarm', 'OK']


def test_tags_all_is_a_full_run(run, temperstack):
    failing_run(run)
    green_run(run, cliargs={'tags': ('all',)})

    assert temperstack.status_list == ['Alarm', 'OK']


def test_narrowed_runs_still_raise_alarms(run, temperstack):
    run(cliargs={'tags': ('deploy',)}).playbook().play().failed('web1').stats()

    assert temperstack.status_list == ['Alarm']


def test_limit_without_the_failed_host_sends_no_ok(run, temperstack):
    failing_run(run, host='web1')
    run(cliargs={'subset': 'web2'}).playbook().play().ok('web2').stats()

    assert temperstack.status_list == ['Alarm']


def test_limit_with_every_failed_host_green_sends_the_ok(run, temperstack):
    failing_run(run, host='web1')
    run(cliargs={'subset': 'web1'}).playbook().play().ok('web1').stats()

    assert temperstack.status_list == ['Alarm', 'OK']


def test_limit_needs_all_hosts_of_the_alarm(run, temperstack):
    run().playbook().play().failed('web1').failed('web2').stats()
    run(cliargs={'subset': 'web1'}).playbook().play().ok('web1').stats()
    assert temperstack.status_list == ['Alarm']
    run(cliargs={'subset': 'web1,web2'}).playbook().play().ok('web1', 'web2').stats()
    assert temperstack.status_list == ['Alarm', 'OK']


def test_a_host_that_failed_an_earlier_play_did_not_check_a_later_one(run, temperstack):
    # Ansible drops a host from the rest of the playbook once it fails: here web1 never ran play B,
    # so B's Alarm about web1 stays open, limit or no limit.
    run().playbook().play('A').ok('web1', 'f1').play('B').failed('web1').ok('web2').stats()
    run().playbook().play('A').failed('web1').ok('f1').play('B').ok('web2').stats()

    assert [(p['status'], p['resource_name']) for p in temperstack.received] == [('Alarm', 'B'), ('Alarm', 'A')]
    run().playbook().play('A').ok('web1', 'f1').play('B').ok('web1', 'web2').stats()
    assert [(p['status'], p['resource_name']) for p in temperstack.received][2:] == [('OK', 'A'), ('OK', 'B')]


def test_a_host_gone_from_the_inventory_blocks_the_ok_of_a_full_run(run, temperstack):
    # web9 failed and has left the inventory (or the play's group): nobody checked it again, so the OK
    # would claim what no run saw.
    failing_run(run, host='web9')
    green_run(run)

    assert temperstack.status_list == ['Alarm']
    run().playbook().play().ok('web1', 'web2', 'web9').stats()
    assert temperstack.status_list == ['Alarm', 'OK']


def test_limit_over_part_of_the_alarm_keeps_every_host_of_the_alarm(run, temperstack):
    run().playbook().play().failed('web1').failed('web2').stats()
    alert_id = temperstack.received[0]['alert_id']
    # --limit web1 fails again on web1: a different description, so the Alarm is updated, but web2 stays
    # one of its hosts.
    again = run(cliargs={'subset': 'web1'}).playbook().play().failed('web1').stats()
    assert temperstack.status_list == ['Alarm', 'Alarm']
    assert again.alarm_hosts(alert_id) == ('web1', 'web2')
    run(cliargs={'subset': 'web1'}).playbook().play().ok('web1').stats()
    assert temperstack.status_list == ['Alarm', 'Alarm']
    green_run(run)
    assert temperstack.status_list == ['Alarm', 'Alarm', 'OK']


def test_the_hosts_of_an_alarm_waiting_in_the_outbox_accumulate_too(run, temperstack):
    temperstack.down = True
    run().playbook().play().failed('web1').failed('web2').stats()
    run(cliargs={'subset': 'web1'}).playbook().play().failed('web1').stats()
    temperstack.down = False
    run(cliargs={'subset': 'web1'}).playbook().play().ok('web1').stats()

    # Both queued Alarms are delivered, in order, and no OK: web2 was not checked since it failed.
    assert temperstack.status_list == ['Alarm', 'Alarm']
    green_run(run)
    assert temperstack.status_list == ['Alarm', 'Alarm', 'OK']


def test_the_same_alarm_naming_more_hosts_than_on_record_still_records_them(run, temperstack):
    # With enough long host names the description's host list and failure lines are cut to fit, so
    # two runs that failed on different hosts can make the same payload. The record must still learn
    # the hosts of the second, or an OK would not wait for them.
    common = [f'host-{index:03d}-' + 'x' * 150 for index in range(120)]
    first, second = common + ['zz-first'], common + ['zz-second']
    r = run().playbook().play()
    for host in first:
        r.failed(host, msg='down')
    r.stats()
    alert_id = temperstack.received[0]['alert_id']
    r = run().playbook().play()
    for host in second:
        r.failed(host, msg='down')
    r.stats()

    assert temperstack.received[1] == temperstack.received[0]  # the same payload (and so sent again)
    assert set(r.alarm_hosts(alert_id)) == set(first) | set(second)
    run(cliargs={'subset': 'all:!zz-second'}).playbook().play().ok(*first).stats()
    assert temperstack.status_list == ['Alarm', 'Alarm']  # zz-second was not checked again


def test_a_host_that_only_skipped_counts_as_ran_under_limit(run, temperstack):
    failing_run(run, host='web1')
    run(cliargs={'subset': 'web1'}).playbook().play().skipped('web1').stats()

    assert temperstack.status_list == ['Alarm', 'OK']


@pytest.mark.parametrize('action', ['end_host', 'end_play', 'end_batch'])
def test_a_meta_end_blocks_the_ok(run, temperstack, action):
    failing_run(run)
    run().playbook().play().ok('web1', 'web2').meta(action, ended=['web2']).stats()

    assert temperstack.status_list == ['Alarm']


def test_a_host_taken_out_by_any_errors_fatal_blocks_the_ok(run, temperstack):
    failing_run(run)
    run().playbook().play().ok('web1', 'web2').ended('web2').stats()

    assert temperstack.status_list == ['Alarm']


def test_a_host_ended_early_in_an_earlier_batch_blocks_the_ok(run, temperstack):
    failing_run(run)
    r = run().playbook().play().ok('web1').meta('end_batch', ended=['web1'])
    r.play(same_as_previous=True).ok('web2').stats()

    assert temperstack.status_list == ['Alarm']


def test_a_play_ended_early_blocks_the_ok_of_that_play_only(run, temperstack):
    run().playbook().play('One').failed('web1').play('Two').failed('web1').stats()
    run().playbook().play('One').ok('web1').meta('end_play', ended=['web1']).play('Two').ok('web1').stats()

    assert [p['alert_name'] for p in temperstack.received if p['status'] == 'OK'] == [
        "Ansible play 'Two' failed (site.yml)"
    ]


@pytest.mark.parametrize('action', ['end_host', 'end_play', 'end_batch'])
def test_a_conditional_meta_end_that_was_skipped_does_not_block_the_ok(run, temperstack, action):
    # `meta: end_play` with a false `when`: Ansible starts the task, reports it skipped, and takes no
    # host out of the play, so the play did run to its end.
    failing_run(run)
    r = run().playbook().play().ok('web1', 'web2')
    r.meta(action, skipped=['web1', 'web2'], when='stop | default(false)').ok('web1', 'web2', task='After').stats()

    assert temperstack.status_list == ['Alarm', 'OK']


def test_end_host_on_some_hosts_only_still_blocks_the_ok(run, temperstack):
    failing_run(run)
    r = run().playbook().play().ok('web1', 'web2')
    r.meta('end_host', ended=['web2'], skipped=['web1'], when="inventory_hostname == 'web2'").ok('web1').stats()

    assert temperstack.status_list == ['Alarm']


@pytest.mark.parametrize('action', ['end_host', 'any_errors_fatal'])
def test_under_scope_host_a_host_ended_early_blocks_its_own_ok_only(run, temperstack, action):
    run(scope='host').playbook().play().failed('web1').failed('web2').stats()
    r = run(scope='host').playbook().play().ok('web1', 'web2')
    if action == 'end_host':
        r.meta('end_host', ended=['web2'], skipped=['web1'], when="inventory_hostname == 'web2'")
    else:
        r.ended('web2')
    r.ok('web1', task='After').stats()

    assert [(p['status'], p['resource_id']) for p in temperstack.received] == [
        ('Alarm', 'web1'), ('Alarm', 'web2'), ('OK', 'web1'),
    ]
    run(scope='host').playbook().play().ok('web1', 'web2').stats()
    assert [(p['status'], p['resource_id']) for p in temperstack.received][3:] == [('OK', 'web2')]


def test_under_scope_host_a_host_ended_before_its_first_task_sends_no_ok(run, temperstack):
    # web2 was taken out of play One before it ran a task there; running play Two is not running the playbook.
    run(scope='host').playbook().play('One').failed('web2').stats()
    run(scope='host').playbook().play('One').ok('web1').ended('web2').play('Two').ok('web1', 'web2').stats()

    assert temperstack.status_list == ['Alarm']


def test_under_scope_host_a_host_ended_early_in_one_play_sends_no_ok_for_the_playbook(run, temperstack):
    run(scope='host').playbook().play('One').failed('web2').stats()
    run(scope='host').playbook().play('One').ok('web1', 'web2').meta('end_host', ended=['web2']).play('Two').ok(
        'web1', 'web2').stats()

    assert temperstack.status_list == ['Alarm']


def test_under_scope_playbook_end_host_on_one_host_blocks_the_ok(run, temperstack):
    failing_run(run, scope='playbook')
    run(scope='playbook').playbook().play().ok('web1', 'web2').meta('end_host', ended=['web2']).stats()

    assert temperstack.status_list == ['Alarm']


def test_a_play_that_matched_no_hosts_sends_no_ok(run, temperstack):
    run().playbook().play().failed('web1').failed('web2').stats()
    r = run().playbook().play().no_hosts_matched().stats()

    assert temperstack.status_list == ['Alarm']
    assert r.summary == []
    green_run(run)
    assert temperstack.status_list == ['Alarm', 'OK']


def test_a_play_that_matched_no_hosts_sends_no_ok_even_for_an_alarm_that_names_no_host(run, temperstack):
    r = failing_run(run)
    alert_id = temperstack.received[0]['alert_id']
    with SqliteLedger(r.options['ledger_path']) as ledger:  # as kept before the ledger kept an Alarm's hosts
        ledger.record(r.callback._endpoint_key, Alert(temperstack.received[0]), ())
    assert r.alarm_hosts(alert_id) == ()
    run().playbook().play().no_hosts_matched().stats()

    assert temperstack.status_list == ['Alarm']


def test_under_scope_playbook_a_play_that_matched_no_hosts_blocks_the_ok(run, temperstack):
    run(scope='playbook').playbook().play('Web').failed('web1').play('Canary').ok('web2').stats()
    run(scope='playbook').playbook().play('Web').ok('web1').play('Canary').no_hosts_matched().stats()

    assert temperstack.status_list == ['Alarm']


def test_under_scope_host_a_play_that_matched_no_hosts_leaves_the_hosts_oks_alone(run, temperstack):
    # It ran on no host, so no host's unit holds it; web1 ran every play that named it.
    run(scope='host').playbook().play('Web').failed('web1').stats()
    run(scope='host').playbook().play('Web').ok('web1').play('Canary').no_hosts_matched().stats()

    assert temperstack.status_list == ['Alarm', 'OK']


def test_no_hosts_remaining_blocks_the_ok(run, temperstack):
    failing_run(run)
    run().playbook().play().ok('web1', 'web2').no_hosts_remaining().stats()

    assert temperstack.status_list == ['Alarm']


def test_an_interrupted_run_sends_no_ok(run, temperstack):
    failing_run(run)
    interrupted = run().playbook().play('Deploy web tier').ok('web1', 'web2')  # killed: no further events
    interrupted.play('Next play')  # even with the first play over, nothing resolves before the stats event

    assert temperstack.status_list == ['Alarm']
    with SqliteLedger(interrupted.options['ledger_path']) as ledger:
        assert ledger.pending(interrupted.callback._endpoint_key) == []
    green_run(run)
    assert temperstack.status_list == ['Alarm', 'OK']


def test_an_interrupted_run_keeps_its_alarm_queued_for_the_next_run(run, temperstack):
    temperstack.down = True
    run().playbook().play('Deploy web tier').failed('web1').play('Next')  # killed after the first play
    temperstack.down = False

    green_run(run)

    alert_id = temperstack.received[0]['alert_id']
    assert temperstack.statuses == [('Alarm', alert_id), ('OK', alert_id)]


# -- outage: nothing lost, OK never first -----------------------------------------------------------------------


def test_an_alarm_queued_during_an_outage_goes_before_the_ok_of_the_next_run(run, temperstack):
    temperstack.down = True
    down = failing_run(run)
    temperstack.down = False
    up = green_run(run)

    alert_id = temperstack.received[0]['alert_id']
    assert temperstack.statuses == [('Alarm', alert_id), ('OK', alert_id)]
    assert down.summary == ['Temperstack: sent nothing; 1 queued for the next run']
    assert len(down.display.warnings) == 1
    assert 'was not delivered' in down.display.warnings[0]
    assert up.summary == ['Temperstack: sent 1 Alarm, 1 OK']


def test_a_run_with_something_queued_wakes_the_sender_at_once(run, temperstack):
    temperstack.down = True
    failing_run(run)
    temperstack.down = False

    second = run()

    assert temperstack.processes[-1].notified == 1  # before any playbook event
    second.playbook().play().failed('web1').stats()
    assert temperstack.status_list == ['Alarm']  # the same failure again: not re-sent


def test_same_failure_during_an_outage_is_queued_once(run, temperstack):
    temperstack.down = True
    failing_run(run)
    failing_run(run)
    temperstack.down = False
    failing_run(run)

    assert temperstack.status_list == ['Alarm']


def test_unfinished_delivery_is_reported(run, temperstack, monkeypatch):
    monkeypatch.setattr(
        FakeSenderProcess, 'flush', lambda self, on_slow=None: FlushReport([], 1, ['Alarm for x was not delivered: no answer'], False)
    )
    r = failing_run(run, flush_timeout=3.0)

    assert r.summary == ['Temperstack: sent nothing; 1 queued for the next run']
    assert len(r.display.warnings) == 2
    assert 'within flush_timeout (3 s)' in r.display.warnings[1]
    assert all(API_KEY not in w for w in r.display.warnings)


def test_a_slow_delivery_says_once_what_the_end_of_the_run_waits_for(run, temperstack):
    # Issue 20: with Temperstack slow, the PLAY RECAP was followed by nothing for up to flush_timeout.
    temperstack.slow_flush = 27.6
    r = failing_run(run)

    assert r.summary == ['Temperstack: delivering 1 alert (up to 28 s more)...', 'Temperstack: sent 1 Alarm']
    assert r.display.warnings == []


def test_a_slow_delivery_counts_what_waits(run, temperstack):
    temperstack.down = True
    run().playbook().play('One').failed('web1').play('Two').failed('web2').stats()
    temperstack.down = False
    temperstack.slow_flush = 2.2
    r = green_run(run)

    assert r.summary[0] == 'Temperstack: delivering 2 alerts (up to 2 s more)...'
    assert r.summary[1:] == ['Temperstack: sent 2 Alarm']


def test_a_quick_delivery_says_nothing_while_it_waits(run, temperstack):
    r = failing_run(run)

    assert r.summary == ['Temperstack: sent 1 Alarm']


def test_flush_timeout_is_handed_to_the_delivery(run, temperstack):
    failing_run(run, flush_timeout=4.5)

    assert temperstack.processes[0].flush_timeout == 4.5


# -- check mode -----------------------------------------------------------------------------------------------


def test_check_mode_sends_nothing(run, temperstack):
    r = run(cliargs={'check': True})
    r.playbook().play().failed('web1')
    if not r.callback.disabled:  # a disabled callback gets no more events from ansible
        r.stats()

    assert r.callback.disabled
    assert temperstack.received == []
    assert temperstack.processes == []
    assert r.display.warnings == []


def test_check_mode_alerts_enabled(run, temperstack):
    r = run(cliargs={'check': True}, check_mode_alerts=True).playbook().play().failed('web1').stats()

    assert not r.callback.disabled
    assert temperstack.status_list == ['Alarm']


# -- configuration problems -------------------------------------------------------------------------------------


def test_no_endpoint_disables_with_one_warning(run, temperstack):
    r = run(api_key=None, base_url=None)

    assert r.callback.disabled
    assert len(r.display.warnings) == 1
    assert 'playbook_alerts is disabled: no Temperstack endpoint is configured' in r.display.warnings[0]
    assert temperstack.processes == []


def test_options_are_read_once(run, temperstack):
    r = run(api_key=None, base_url=None)
    r.callback.set_options()
    r.callback.set_options()

    assert len(r.display.warnings) == 1


def test_incomplete_endpoint_is_named_and_the_key_never_shown(run, temperstack):
    r = run(base_url=None)

    assert r.callback.disabled
    assert len(r.display.warnings) == 1
    assert 'api_key given without org or base_url' in r.display.warnings[0]
    assert API_KEY not in r.display.warnings[0]


def test_unusable_ledger_disables_with_a_warning(run, temperstack, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    r = run(ledger_path=str(blocker / 'ledger.sqlite3'))

    assert r.callback.disabled
    assert len(r.display.warnings) == 1
    assert 'ledger' in r.display.warnings[0]


# -- what is said about a failure ---------------------------------------------------------------------------------


def _described(run, temperstack, **failure) -> str:
    r = run().playbook().play()
    r.play_obj._removed_hosts.append('web1')
    r.callback.v2_runner_on_failed(result('web1', 'Failing task', **failure))
    r.stats()
    return temperstack.received[-1]['description'].splitlines()[-1]


def test_message_is_msg_first(run, temperstack):
    assert _described(run, temperstack, msg='the msg', stderr='the stderr').endswith('failed: the msg')


def test_message_falls_back_to_stderr_then_module_stderr(run, temperstack):
    assert _described(run, temperstack, stderr='only stderr').endswith('failed: only stderr')


def test_message_of_a_module_that_crashed(run, temperstack):
    assert _described(run, temperstack, module_stderr='Traceback: boom').endswith('failed: Traceback: boom')


def test_message_of_a_failed_loop_item(run, temperstack):
    described = _described(run, temperstack, results=[
        {'item': 'a', 'failed': False, 'msg': 'fine'},
        {'item': 'b', 'failed': True, 'msg': 'item b broke'},
    ])
    assert described.endswith('failed: item b broke')


def test_message_when_there_is_none(run, temperstack):
    assert _described(run, temperstack, rc=1).endswith("task 'Failing task' failed: failed")


@pytest.mark.parametrize('failure', [
    {'no_log': True, 'msg': 'password=SeKrEt123 rejected'},
    {'_ansible_no_log': True, 'msg': 'password=SeKrEt123 rejected'},
    {'censored': "the output has been hidden due to the fact that 'no_log: true' was specified for this result"},
    {'results': [{'failed': True, 'censored': 'hidden', '_ansible_no_log': True}], 'msg': ''},
], ids=['task-no_log', 'result-no_log', 'censored', 'loop-item-no_log'])
def test_no_log_results_are_hidden(run, temperstack, failure):
    described = _described(run, temperstack, **failure)

    assert described.endswith(f'failed: {NO_LOG_MESSAGE}')
    assert 'SeKrEt123' not in temperstack.received[-1]['description']


def test_url_credentials_in_messages_are_masked(run, temperstack):
    described = _described(run, temperstack, msg='cannot fetch https://deploy:pa55word@repo.example.com/app.tgz')

    assert 'pa55word' not in described
    assert 'https://********@repo.example.com/app.tgz' in described


def test_task_arguments_never_reach_the_alert(run, temperstack):
    described = _described(
        run, temperstack, msg='non-zero return code', cmd=['deploy', '--token', 'ARG-SECRET-55'],
        invocation={'module_args': {'token': 'ARG-SECRET-55'}}, stdout='ARG-SECRET-55',
    )

    assert described.endswith('failed: non-zero return code')
    assert all('ARG-SECRET-55' not in value for value in temperstack.received[-1].values())


def test_long_messages_are_cut_to_max_error_chars(run, temperstack):
    r = run(max_error_chars=20).playbook().play().failed('web1', msg='e' * 500).stats()

    last = temperstack.received[-1]['description'].splitlines()[-1]
    assert last.split('failed: ', 1)[1] == 'e' * 17 + '...'
    assert r.summary == ['Temperstack: sent 1 Alarm']


def test_the_key_is_never_displayed(run, temperstack):
    temperstack.down = True
    r = failing_run(run)

    for text in r.display.lines + r.display.warnings:
        assert API_KEY not in text


@pytest.mark.parametrize('option, value, named', [
    ('run_book_url', 'ftp://wiki.example.com/runbook', 'run_book_url must be an http:// or https:// URL'),
    ('alert_url', 'not a url', 'alert_url must be an http:// or https:// URL'),
    ('flush_timeout', float('inf'), 'flush_timeout must be between 0 and 3600 seconds'),
    ('flush_timeout', float('nan'), 'flush_timeout must be between 0 and 3600 seconds'),
    ('flush_timeout', -5.0, 'flush_timeout must be between 0 and 3600 seconds'),
    ('timeout', 0, 'timeout must be a positive number of seconds'),
    ('timeout', -1, 'timeout must be a positive number of seconds'),
    ('timeout', 10 ** 20, 'timeout must be at most 3600 seconds'),
    ('retries', -3, 'retries must be between 0 and 10'),
    ('retries', 100000, 'retries must be between 0 and 10'),
    ('max_error_chars', 0, 'max_error_chars must be a whole number of at least 1'),
    ('max_error_chars', -10, 'max_error_chars must be a whole number of at least 1'),
    ('ca_path', '/nonexistent/ca.pem', 'ca_path /nonexistent/ca.pem is not a file'),
])
def test_bad_settings_disable_at_start_with_one_warning(run, temperstack, option, value, named):
    # At start, not when the first Alarm is due. The delivery settings were found by the fault suite
    # (tests/faults): flush_timeout=inf or nan made the end of the run fail with "Callback dispatch
    # 'v2_playbook_on_stats' failed"; timeout=-1 left every alert queued without a word.
    r = run(**{option: value})

    assert r.callback.disabled
    assert len(r.display.warnings) == 1
    assert named in r.display.warnings[0]
    assert temperstack.processes == []


# -- a failure Ansible counted is never lost, however the run ends (issue 10, item 3) ---------------


def exit_run(temperstack) -> None:
    """What the interpreter does at exit after Ctrl-C or an ERROR! abort: the run's exit handler."""
    handler = temperstack.exit_handlers.pop()
    handler()


@pytest.mark.parametrize('scope', ['play', 'host', 'playbook'])
def test_an_interrupted_run_sends_the_alarms_of_what_failed_so_far_and_no_ok(run, temperstack, scope):
    failing_run(run, scope=scope, host='web2')  # an open Alarm for web2's unit
    sent_before = len(temperstack.received)
    r = run(scope=scope).playbook().play().failed('web1', msg='disk full').ok('web2')
    assert len(temperstack.received) == sent_before  # held, not sent, while the run goes on
    exit_run(temperstack)

    new = temperstack.received[sent_before:]
    assert [p['status'] for p in new] == ['Alarm']
    assert 'web1' in new[0]['description'] and 'disk full' in new[0]['description']
    assert any('ended before its end' in warning for warning in r.display.warnings)
    assert any(line.startswith('Temperstack: sent 1 Alarm') for line in r.summary)


def test_the_exit_handler_of_a_run_that_ended_normally_does_nothing(run, temperstack):
    r = run().playbook().play().failed('web1').stats()
    received = list(temperstack.received)
    exit_run(temperstack)
    assert temperstack.received == received
    assert not any('ended before its end' in warning for warning in r.display.warnings)


def test_an_interrupted_green_run_resolves_nothing(run, temperstack):
    failing_run(run)
    r = run().playbook().play().ok('web1', 'web2')
    exit_run(temperstack)
    assert temperstack.status_list == ['Alarm']
    assert r.display.warnings == []


def test_a_failure_is_held_with_the_hosts_of_the_open_alarm(run, temperstack):
    run().playbook().play().failed('web1').failed('web2').stats()
    r = run().playbook().play().failed('web1')
    with SqliteLedger(r.options['ledger_path']) as ledger:
        ledger.release_holds(r.callback._run_token)
        [held] = ledger.pending(r.callback._endpoint_key)
    assert held.hosts == ('web1', 'web2')


def test_the_failures_held_by_a_killed_run_on_this_controller_go_first_in_the_next(run, temperstack, monkeypatch):
    dead_pid = 2 ** 22 + 7  # above Linux's pid_max: no process has it
    with monkeypatch.context() as patch:
        # The killed run's holds name a process that no longer exists.
        patch.setattr(playbook_alerts, 'this_process', lambda: f'{socket.gethostname()}:{dead_pid}')
        run().playbook().play().ok('web2').failed('web1', msg='killed mid-play')
    temperstack.exit_handlers.clear()  # SIGKILL: no exit handler, no stats, and its delivery process died too
    assert temperstack.received == []

    run().playbook('other.yml').play('Green').ok('db1').stats()
    assert [(p['status'], 'killed mid-play' in p['description']) for p in temperstack.received] == [('Alarm', True)]


def test_a_hold_that_expired_before_its_unit_ended_still_becomes_its_alarm(run, temperstack, monkeypatch):
    # The run's delivery process renews holds; here nobody does, as when it cannot reach the ledger for a while.
    monkeypatch.setattr(_ledger_sqlite, 'HOLD_LEASE_SECONDS', 0.2)
    r = run().playbook().play().ok('web2').failed('web1', msg='boom')
    time.sleep(0.4)  # the play goes on for longer than the hold's lease
    r.stats()

    assert temperstack.status_list == ['Alarm']
    with SqliteLedger(r.options['ledger_path']) as ledger:
        assert [record.status for record in ledger.records(r.callback._endpoint_key)] == ['Alarm']
        assert ledger.entries() == []
    green_run(run)
    assert temperstack.status_list == ['Alarm', 'OK']


def test_a_failure_held_by_another_run_is_no_proof_that_this_units_alarm_is_old_news(run, temperstack):
    other = run().playbook().play().ok('web2').failed('web1', msg='boom')  # still running, holding its failure
    failing_run(run, msg='boom')

    assert temperstack.status_list == ['Alarm']
    other.stats()
    assert temperstack.status_list == ['Alarm']  # the same Alarm, now on record: not sent twice


def test_failures_held_by_a_live_run_are_left_alone(run, temperstack):
    running = run().playbook().play().failed('web1')
    run().playbook('other.yml').play('Green').ok('db1').stats()
    assert temperstack.received == []
    running.ok('web2').stats()
    assert temperstack.status_list == ['Alarm']


@pytest.mark.parametrize('variable', ['TEMPERSTACK_VALIDATE_CERTS', 'TEMPERSTACK_TIMEOUT', 'TEMPERSTACK_RETRIES', 'TEMPERSTACK_CA_PATH'])
def test_an_empty_client_variable_disables_at_start_as_the_module_refuses_it(run, temperstack, monkeypatch, variable):
    # Ansible's configuration reads an empty boolean as false: certificate checks would be off without a word.
    monkeypatch.setenv(variable, ' ')
    r = run()

    assert r.callback.disabled
    option = variable[len('TEMPERSTACK_'):].lower()
    assert r.display.warnings == [
        f'temperstack.alerting.playbook_alerts is disabled: {option} ({variable}) is set but empty: give it a value or unset it'
    ]
    assert temperstack.processes == []


# -- the shared ledger (ledger_url) unreachable --------------------------------------------------------


def unreachable_url() -> str:
    import socket  # pylint: disable=import-outside-toplevel

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    return f'postgresql://temperstack:pg-Secret-7f3a@127.0.0.1:{port}/temperstack'


def test_an_unreachable_shared_ledger_still_raises_the_alarm(run, temperstack, ledger_path):
    r = failing_run(run, ledger_url=unreachable_url())

    assert [status for status, _alert_id in temperstack.statuses] == ['Alarm']
    assert r.summary == ['Temperstack: sent 1 Alarm']
    [warning] = r.display.warnings
    assert 'is unreachable' in warning and 'This run raises Alarms for failures' in warning
    assert 'pg-Secret-7f3a' not in '\n'.join(r.display.lines + r.display.warnings)
    assert os.path.exists(ledger_path.replace('.sqlite3', '.fallback.sqlite3'))
    assert not os.path.exists(ledger_path)


def test_an_unreachable_shared_ledger_decides_no_ok(run, temperstack):
    url = unreachable_url()
    failing_run(run, ledger_url=url)
    r = green_run(run, ledger_url=url)

    # The Alarm this controller sent is in its fallback file, but only the shared ledger knows every host of it.
    assert [status for status, _alert_id in temperstack.statuses] == ['Alarm']
    assert r.summary == []
    assert any(warning.startswith('temperstack: no OK is decided for ansible-site-yml-deploy-web-tier-')
               for warning in r.display.warnings)


def test_an_empty_ledger_url_disables_the_callback_with_a_message_naming_it(run, temperstack):
    r = failing_run(run, ledger_url='')

    assert temperstack.received == []
    assert any('ledger_url must be a PostgreSQL connection URI' in warning for warning in r.display.warnings)
