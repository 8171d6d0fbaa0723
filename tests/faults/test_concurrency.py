# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Item 3: 50 forks send distinct and identical alerts at once through one ledger.

One ansible-playbook run, 50 hosts, forks=50, the stand-in answering each request after 300 ms so that the
forks really overlap. Every host raises an alert of its own and the same shared alert. Then: every distinct
alert reached Temperstack once and is in the ledger (no lost update), the shared one reached it exactly once
(no duplicate send), no task failed and nothing said 'database is locked'. A second identical run sends
nothing; a third resolves them all, the shared one once.
"""

from __future__ import annotations

import collections
import os
import re

from faultlib import SECRET_KEY, assert_clean, ledger_rows, pick

FORKS = 50
ROUNDS = pick(1, 3)
PLAYBOOK = """\
- name: Fifty forks
  hosts: all
  gather_facts: false
  tasks:
    - name: An alert of this host's own
      temperstack.alerting.alert:
        alert_name: Disk almost full on {{ inventory_hostname }}
        status: "{{ status }}"
        resource_id: "{{ inventory_hostname }}"
        description: /var is 93% full
    - name: The same alert from every host
      temperstack.alerting.alert:
        alert_name: Shared storage degraded
        alert_id: shared-storage
        status: "{{ status }}"
        description: the array lost a disk
"""
RECAP = re.compile(r'^(h\d+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', re.M)


def test_fifty_forks_one_ledger(harness, server, work_dir, figures):
    directory = os.path.join(work_dir, 'concurrency')
    playbook = harness.write(directory, 'forks.yml', PLAYBOOK)
    inventory = harness.write(directory, 'inventory.ini', ''.join(
        f'h{index:02d} ansible_connection=local ansible_python_interpreter="{{{{ ansible_playbook_python }}}}"\n'
        for index in range(1, FORKS + 1)))
    rounds = []
    server.latency(0.3)
    try:
        for round_number in range(ROUNDS):
            ledger = os.path.join(directory, f'round-{round_number}', 'ledger.sqlite3')
            env = {'TEMPERSTACK_BASE_URL': server.url, 'TEMPERSTACK_API_KEY': SECRET_KEY, 'TEMPERSTACK_LEDGER_PATH': ledger}
            figures_of_round = {}
            for step, status, expect_sent in (('raise', 'Alarm', FORKS + 1), ('repeat', 'Alarm', 0), ('resolve', 'OK', FORKS + 1)):
                server.reset()
                run = harness.playbook(playbook, env=env, args=['-f', str(FORKS), '-e', f'status={status}'], inventory=inventory)
                assert_clean(run)
                assert 'locked' not in run.output.lower()
                assert run.rc == 0, run.stdout[-3000:]
                recap = RECAP.findall(run.stdout)
                assert len(recap) == FORKS
                assert all(failed == '0' and unreachable == '0' for _h, _ok, _c, unreachable, failed in recap)
                delivered = server.delivered()
                counts = collections.Counter(alert_id for _status, alert_id in delivered)
                assert len(delivered) == expect_sent, f'{step}: {len(delivered)} requests, expected {expect_sent}'
                assert all(s == status for s, _alert_id in delivered)
                if expect_sent:
                    assert counts['shared-storage'] == 1, f'{step}: the shared alert was sent {counts["shared-storage"]} times'
                    assert len(counts) == FORKS + 1 and set(counts.values()) == {1}
                    changed = sorted(int(c) for _h, _ok, c, _u, _f in recap)
                    # Each host changed its own alert; exactly one of them also sent the shared one.
                    assert changed == [1] * (FORKS - 1) + [2]
                else:
                    assert all(c == '0' for _h, _ok, c, _u, _f in recap)
                rows = ledger_rows(ledger)
                assert rows['integrity'] == [('ok',)]
                assert len(rows['alerts']) == FORKS + 1 and {s for _a, s in rows['alerts']} == {status}
                assert rows['outbox'] == []
                stats = server.stats()
                figures_of_round[step] = {
                    'seconds': round(run.seconds, 2), 'requests': len(delivered),
                    'peak_concurrent_requests': stats['peak_in_flight'],
                }
            rounds.append(figures_of_round)
    finally:
        server.latency(0)
    figures.set('concurrency', 'forks', FORKS)
    figures.set('concurrency', 'rounds', rounds)
