# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Issue 10, item 5: several senders over one outbox deliver each alert's Alarm and OK once, in order.

Each round starts with a fresh ledger. While the stand-in answers every request with 503, a play on one host
(odd rounds) or three (even rounds) fails, so an Alarm per host is queued (the callback's scope is host), and then
runs green, so their OKs are queued after them: the outbox holds, for each alert, its Alarm and then its OK. Then
the stand-in comes back, answering each request after 100, 200 or 300 ms (by round) so that deliveries overlap,
and four ansible-playbook runs with the callback start at once. They run a trivial green playbook of another name,
which adds nothing of its own, so each run's delivery process finds the whole outbox waiting: this is parallel CI
or AWX jobs after an outage. In the variant, a fifth run starts with them: module tasks that raise the very OK of
each alert, which deliver that alert's queued entries inline before they decide on their own (and then have
nothing left to send).

Temperstack must receive, for every alert, exactly one Alarm and then exactly one OK: an Alarm after its OK
reopens the incident and pages someone, and no sender died in the middle of a request, so there is no excuse
for a duplicate. Afterwards the outbox is empty and the ledger records every alert as OK.
"""

from __future__ import annotations

import collections
import json
import os
import sqlite3
import subprocess
import time
import typing as t

import pytest

from faultlib import SECRET_KEY, Run, assert_clean, callback_env, ledger_rows, pick

ROUNDS = pick(2, 20)
CONCURRENT_RUNS = 4
# Rounds alternate between one alert, whose Alarm and OK are next to each other in the outbox, so that a sender that
# lags a little behind another sends the Alarm after the other's OK, and three, queued as Alarm x 3 then OK x 3.
HOST_SETS = (('app1',), ('app1', 'app2', 'app3'))
# Rotated by round: short enough that a sender's Alarm and OK are close together, long enough that senders overlap.
LATENCIES = (0.1, 0.2, 0.3)

# With scope host, one play makes one alert per host (a failed play would end the playbook before the next play).
SCOPE = 'host'
RELEASE_PLAYBOOK = """\
- name: Release
  hosts: all
  gather_facts: false
  tasks:
    - name: Release
      ansible.builtin.fail:
        msg: the release failed on {{ inventory_hostname }}
      when: fail_release | bool
"""

# Its own alert ids differ from the release's (another file name), and it never fails: it only drains.
IDLE_PLAYBOOK = """\
- name: Look around
  hosts: app1
  gather_facts: false
  tasks:
    - name: Nothing to do
      ansible.builtin.debug:
        msg: nothing to do
"""


def module_playbook(fields: t.Iterable[str]) -> str:
    """Module tasks, one per host and in parallel, each raising the OK the callback queued for that host."""
    args = ''.join(f"        {field}: \"{{{{ queued_ok[inventory_hostname]['{field}'] }}}}\"\n" for field in sorted(fields))
    return f"""\
- name: Resolve from a task
  hosts: all
  gather_facts: false
  tasks:
    - name: The OK of this host's release
      temperstack.alerting.alert:
{args}"""


def queued_payloads(path: str) -> list[dict[str, str]]:
    """The payloads waiting in the outbox, oldest first."""
    connection = sqlite3.connect(f'file:{path}?mode=ro', uri=True, timeout=30)
    try:
        return [json.loads(payload) for (payload,) in connection.execute('SELECT payload FROM outbox ORDER BY seq')]
    finally:
        connection.close()


def queue_alarm_then_ok(harness, server, playbook: str, inventory: str, ledger: str) -> list[str]:
    """While Temperstack is down, the play fails and then recovers: each alert's Alarm and OK wait in the outbox."""
    server.reset()
    server.latency(0)
    server.script([{'status': 503, 'repeat': 1000}])
    # No retry: nothing gets through anyway, and retries would only prolong the set-up.
    down = callback_env(server.url, ledger, scope=SCOPE, retries=0)
    for fail_release, expected_rc in (('true', 2), ('false', 0)):
        run = harness.playbook(playbook, env=down, args=['-e', f'fail_release={fail_release}'], inventory=inventory)
        assert_clean(run)
        assert run.rc == expected_rc, run.stdout[-3000:]
    assert server.delivered() == []
    queued = ledger_rows(ledger)['outbox']
    chains: dict[str, list[str]] = collections.defaultdict(list)
    for _seq, alert_id, status in queued:
        chains[alert_id].append(status)
    assert all(chain == ['Alarm', 'OK'] for chain in chains.values()), queued
    return list(chains)


def run_at_once(harness, jobs: list[dict[str, t.Any]], timeout: float = 180) -> list[Run]:
    """Start every ansible-playbook of ``jobs`` (keyword arguments of ``Harness.start``) before waiting for any."""
    started = [harness.start(**job) for job in jobs]
    deadline = time.monotonic() + timeout
    for process, *_rest in started:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for other, *_others in started:
                other.kill()
                other.wait()
            raise
    return [harness.finish(*job) for job in started]


def wait_until_quiet(server, seconds: float = 10) -> None:
    """Until no request is in flight at the stand-in: whatever is on its way counts too."""
    deadline = time.monotonic() + seconds
    while server.stats()['in_flight'] and time.monotonic() < deadline:
        time.sleep(0.05)


def order_figures(delivered: list[tuple[str, str]]) -> tuple[dict[str, list[str]], int, int]:
    """Per alert, the statuses Temperstack received in order; Alarms received after that alert's first OK; extra copies."""
    received: dict[str, list[str]] = collections.defaultdict(list)
    for status, alert_id in delivered:
        received[alert_id].append(status)
    out_of_order = sum(statuses[statuses.index('OK'):].count('Alarm') for statuses in received.values() if 'OK' in statuses)
    duplicates = sum(count - 1 for statuses in received.values() for count in collections.Counter(statuses).values())
    return dict(received), out_of_order, duplicates


@pytest.mark.parametrize('with_module', [False, True], ids=['four-callback-runs', 'four-callback-runs-and-module-tasks'])
def test_concurrent_senders_deliver_each_alarm_and_ok_once_in_order(harness, server, work_dir, figures, with_module):
    variant = 'callback_and_module' if with_module else 'callback'
    directory = os.path.join(work_dir, 'outbox-order', variant)
    release = harness.write(directory, 'release.yml', RELEASE_PLAYBOOK)
    idle = harness.write(directory, 'idle.yml', IDLE_PLAYBOOK)
    inventories = [harness.write(directory, f'inventory-{len(hosts)}.ini', ''.join(
        f'{host} ansible_connection=local ansible_python_interpreter="{{{{ ansible_playbook_python }}}}"\n' for host in hosts))
        for hosts in HOST_SETS]
    problems: list[str] = []
    rounds = []
    try:
        for round_number in range(1, ROUNDS + 1):
            ledger = os.path.join(directory, f'round-{round_number:02d}', 'ledger.sqlite3')
            hosts = HOST_SETS[(round_number - 1) % len(HOST_SETS)]
            inventory = inventories[(round_number - 1) % len(HOST_SETS)]
            chains = queue_alarm_then_ok(harness, server, release, inventory, ledger)
            assert len(chains) == len(hosts), chains

            # Temperstack is back, slow enough that the senders overlap.
            latency = LATENCIES[(round_number - 1) % len(LATENCIES)]
            server.reset()
            server.latency(latency)
            up = callback_env(server.url, ledger, scope=SCOPE)
            jobs: list[dict[str, t.Any]] = [{'playbook': idle, 'env': up, 'inventory': inventory} for _run in range(CONCURRENT_RUNS)]
            if with_module:
                oks = {payload['resource_id']: payload for payload in queued_payloads(ledger) if payload['status'] == 'OK'}
                tasks = harness.write(directory, 'resolve.yml', module_playbook(next(iter(oks.values()))))
                variables = harness.write(os.path.dirname(ledger), 'queued_ok.json', json.dumps({'queued_ok': oks}))
                module_env = {'TEMPERSTACK_BASE_URL': server.url, 'TEMPERSTACK_API_KEY': SECRET_KEY, 'TEMPERSTACK_LEDGER_PATH': ledger}
                jobs.append({'playbook': tasks, 'env': module_env, 'inventory': inventory, 'args': ['-f', str(len(hosts)), '-e', f'@{variables}']})
            started = time.monotonic()
            runs = run_at_once(harness, jobs)
            wait_until_quiet(server)
            seconds = time.monotonic() - started
            for run in runs:
                assert_clean(run)
                assert run.rc == 0, run.stdout[-3000:]

            delivered = server.delivered()
            received, out_of_order, duplicates = order_figures(delivered)
            for alert_id in chains:
                if received.get(alert_id) != ['Alarm', 'OK']:
                    problems.append(f"round {round_number} ({int(latency * 1000)} ms): {alert_id} received "
                                    f"{', '.join(received.get(alert_id, [])) or 'nothing'}")
            if set(received) - set(chains):
                problems.append(f'round {round_number}: alerts nobody queued were sent: {sorted(set(received) - set(chains))}')
            rows = ledger_rows(ledger)
            if rows['outbox']:
                problems.append(f"round {round_number}: the outbox still holds {rows['outbox']}")
            if rows['alerts'] != sorted((alert_id, 'OK') for alert_id in chains):
                problems.append(f"round {round_number}: the ledger records {rows['alerts']}, not every alert as OK")
            rounds.append({
                'alerts': len(hosts), 'latency_ms': int(latency * 1000), 'requests': len(delivered), 'out_of_order': out_of_order,
                'duplicates': duplicates, 'peak_concurrent_requests': server.stats()['peak_in_flight'],
                'seconds': round(seconds, 2), 'sequence': [f'{status} {alert_id}' for status, alert_id in delivered],
            })
    finally:
        server.latency(0)
        server.reset()
    figures.set('outbox_order', variant, {
        'rounds': len(rounds),
        'alerts': sum(r['alerts'] for r in rounds),
        'callback_runs': CONCURRENT_RUNS,
        'module_task_runs': 1 if with_module else 0,
        'requests': sum(r['requests'] for r in rounds),
        'out_of_order': sum(r['out_of_order'] for r in rounds),
        'duplicates': sum(r['duplicates'] for r in rounds),
        'peak_concurrent_requests': max((r['peak_concurrent_requests'] for r in rounds), default=0),
        'per_round': rounds,
    })
    assert not problems, f'{len(problems)} problem(s) in {len(rounds)} rounds:\n' + '\n'.join(problems)
