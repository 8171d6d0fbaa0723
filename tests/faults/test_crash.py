# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Item 2: crash safety. ansible-playbook with the callback is killed with SIGKILL at a random moment.

Each trial: a run in which two of three plays fail is killed at a random point of its life (while plays run,
while the callback queues, while the delivery process sends with 150 ms of latency per request, while it
flushes). Half the time only ansible-playbook dies (its delivery process lives on, as it does when a terminal is
closed); half the time it dies with every process it started (the controller itself is gone). Then:

- the ledger opens (SQLite's integrity check passes, the collection opens it without a warning or traceback);
- the next run, failing as before, completes the Alarms, and a green run after it sends their OKs;
- per alert, Temperstack got Alarm then OK: nothing lost, an OK never first, an Alarm at most twice (at least
  once: a request answered 200 whose record the kill prevented is sent again) and the OK exactly once.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import time

from faultlib import (
    SECRET_KEY,
    assert_clean,
    callback_env,
    ledger_rows,
    pick,
)

TRIALS = pick(4, 50)
PLAYS = """\
- name: Crash play {index}
  hosts: all
  gather_facts: false
  tasks:
    - name: Work {index}
      ansible.builtin.debug:
        msg: working
    - name: Check {index}
      ansible.builtin.fail:
        msg: play {index} broke
      when: inventory_hostname == 'c{index}' and 'p{index}' in failing.split(',')
"""


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (the delivery process left its session, not its parent)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat', encoding='utf-8') as handle:
                fields = handle.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        children[int(fields[1])].append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat', encoding='utf-8') as handle:
            return handle.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def phase_of(stdout_path: str) -> str:
    with open(stdout_path, encoding='utf-8', errors='replace') as handle:
        text = handle.read()
    if 'PLAY RECAP' in text:
        return 'end of the run (queueing, flushing)'
    if 'PLAY [Crash play 3]' in text:
        return 'last play (first Alarm queued or being sent)'
    if 'PLAY [Crash play 1]' in text:
        return 'plays running'
    return 'start-up'


def test_sigkill_at_random_points(harness, server, work_dir, figures):
    from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_sqlite import (
        SqliteLedger,
    )  # pylint: disable=import-outside-toplevel

    directory = os.path.join(work_dir, 'crash')
    playbook = harness.write(directory, 'crash.yml', ''.join(PLAYS.format(index=index) for index in (1, 2, 3)))
    inventory = harness.write(directory, 'inventory.ini', ''.join(
        f'c{index} ansible_connection=local ansible_python_interpreter="{{{{ ansible_playbook_python }}}}"\n' for index in (1, 2, 3)))
    rng = random.Random(os.environ.get('TEMPERSTACK_FAULTS_SEED', '6'))
    server.reset()
    server.latency(0.15)
    try:
        # How long an undisturbed failing run lives: the kills land anywhere in it.
        probe = harness.playbook(playbook, env=callback_env(server.url, os.path.join(directory, 'probe', 'l.sqlite3')),
                                 args=['-e', 'failing=p1,p3'], inventory=inventory)
        assert probe.rc == 2
        span = probe.seconds
        server.reset()
        stats: collections.Counter = collections.Counter()
        phases: collections.Counter = collections.Counter()
        duplicates = 0
        problems = []
        for trial in range(TRIALS):
            server.reset()
            ledger = os.path.join(directory, f'trial-{trial:03d}', 'ledger', 'ledger.sqlite3')
            env = callback_env(server.url, ledger)
            process, command, started, out_path, err_path = harness.start(playbook, env=env, args=['-e', 'failing=p1,p3'],
                                                                          inventory=inventory)
            delay = rng.uniform(0.0, span * 1.1)
            whole = rng.random() < 0.5
            time.sleep(delay)
            below = descendants(process.pid)
            victims = [process.pid] + (below if whole else [])
            phases[phase_of(out_path)] += 1
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.wait()
            stats['whole controller' if whole else 'ansible-playbook only'] += 1
            killed = harness.finish(process, command, started, out_path, err_path)
            if killed.rc != -signal.SIGKILL:
                stats['run ended before the kill'] += 1
            # What ansible-playbook left running (its delivery process, when only it was killed) ends by itself,
            # within flush_timeout; the next run starts after it, as a person's next run would.
            deadline = time.monotonic() + 30
            while any(alive(pid) for pid in below) and time.monotonic() < deadline:
                time.sleep(0.05)
            if any(alive(pid) for pid in below):
                problems.append(f'trial {trial}: processes {below} still running 30 s after the kill')

            if os.path.exists(ledger):
                rows = ledger_rows(ledger)
                if not rows['tables']:
                    stats['killed while the ledger was being created'] += 1
                if rows['integrity'] != [('ok',)]:
                    problems.append(f'trial {trial}: integrity check {rows["integrity"]}')
                warnings = []
                with SqliteLedger(ledger, warn=warnings.append) as opened:
                    opened.pending('0' * 64)
                if warnings:
                    problems.append(f'trial {trial}: the ledger opened with {warnings}')
                if any('corrupt' in name for name in os.listdir(os.path.dirname(ledger))):
                    problems.append(f'trial {trial}: the ledger was moved aside as corrupt')

            again = harness.playbook(playbook, env=env, args=['-e', 'failing=p1,p3'], inventory=inventory)
            green = harness.playbook(playbook, env=env, args=['-e', 'failing='], inventory=inventory)
            for run in (again, green):
                try:
                    assert_clean(run)
                except AssertionError as exc:
                    problems.append(f'trial {trial}: {exc}')
            if (again.rc, green.rc) != (2, 0):
                problems.append(f'trial {trial}: exit codes {again.rc}, {green.rc}')
            story: dict[str, list[str]] = collections.defaultdict(list)
            for status, alert_id in server.delivered():
                story[alert_id].append(status)
            names = {alert_id.split('-crash-play-')[1][:1] for alert_id in story}
            if names != {'1', '3'}:
                problems.append(f'trial {trial}: alerts for plays {sorted(names)}, expected plays 1 and 3')
            for alert_id, statuses in story.items():
                compressed = [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]
                if compressed != ['Alarm', 'OK'] or statuses.count('Alarm') > 2 or statuses.count('OK') != 1:
                    problems.append(f'trial {trial}: {alert_id} got {statuses}')
                duplicates += len(statuses) - 2
            if ledger_rows(ledger)['outbox']:
                problems.append(f'trial {trial}: alerts left in the outbox')
            if SECRET_KEY in killed.output + again.output + green.output:
                problems.append(f'trial {trial}: the key is in the output')
            stats['trials'] += 1
    finally:
        server.latency(0)
    figures.set('crash', 'trials', stats['trials'])
    figures.set('crash', 'kills', dict(stats))
    figures.set('crash', 'phases', dict(phases))
    figures.set('crash', 'duplicate_sends', duplicates)
    figures.set('crash', 'run_seconds', round(span, 2))
    assert not problems, '\n'.join(problems)
