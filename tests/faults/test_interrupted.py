# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Issue 10, item 3: a failure that Ansible has counted is never lost, whatever ends the run.

A play runs on web1 and web2: web1 fails at once, web2 goes on into a long task (60 s). While web2 is in it, the
run is ended:

- Ctrl-C: SIGINT to ansible-playbook. With ansible-core 2.19 and later each worker leads a process group of its
  own, as the delivery process does, so ansible-playbook is the one process here that a terminal's Ctrl-C reaches.
  It must exit with 99 promptly, and the Alarm must reach Temperstack before it exits, or at most within
  flush_timeout after.
- SIGTERM to ansible-playbook (a cancelled or timed-out CI or AWX job): it dies promptly, and the Alarm reaches
  Temperstack within a few seconds. Its worker still runs the long task, so what delivers it must not wait for
  that worker.
- SIGKILL to ansible-playbook alone: the same.
- SIGKILL to ansible-playbook and every process below it, at one instant (each is stopped first): the controller
  is gone. Nothing may have been sent; the next run with the callback, a green run of another playbook that has
  nothing of its own to say, delivers the Alarm.
- an ``ERROR!`` abort mid-run: a second play whose ``hosts`` template fails, after the first play failed on web1
  (no signal; ansible-core 2.19 and later print ``[ERROR]:``). The Alarm must be delivered before the process
  ends, or at most within flush_timeout after.

Each time the Alarm must name web1 (and not web2, which did not fail), no OK may be sent, and a full green run
of the same playbook afterwards sends exactly one OK: per alert Temperstack receives Alarm, then OK, once each.

A green run interrupted while an Alarm is open never sends (nor queues) an OK for it: the unit was not run to its
end. Afterwards a full green run sends exactly one OK.

The key never appears in any output. ``flush_timeout`` is 10 s (``callback_env``).
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import time
import typing as t

import pytest

from faultlib import SECRET_KEY, assert_clean, callback_env, ledger_rows, pick
from test_crash import alive, descendants

TRIALS = pick(1, 5)
FLUSH_TIMEOUT = 10.0
# Far longer than any bound below, so that a delivery which waits for the worker of the long task to end fails.
LONG_SECONDS = 60
# "Within a few seconds", with slack for a shared 2-core machine.
DELIVERY_SECONDS = 10.0
# SIGTERM and SIGKILL end ansible-playbook at once; Ctrl-C may first deliver, for at most flush_timeout.
PROMPT_EXIT_SECONDS = 5.0
# How long to look for an OK that an interrupted green run must not send, after it has ended.
NO_OK_GRACE_SECONDS = 2.0
STARTUP_SECONDS = 90.0
FAILURE_CASES = ('sigint', 'sigterm', 'sigkill-ansible-playbook', 'sigkill-everything', 'error-abort')
SIGNALS = {
    'sigint': signal.SIGINT,
    'sigterm': signal.SIGTERM,
    'sigkill-ansible-playbook': signal.SIGKILL,
    'sigkill-everything': signal.SIGKILL,
}
BEFORE_EXIT = 'before ansible-playbook exited'
AFTER_EXIT = 'after ansible-playbook exited (its delivery process)'
NEXT_RUN = 'by the next run'
NOT_DELIVERED = 'not delivered'

INVENTORY = """\
[web]
web1 ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}"
web2 ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}"
"""

# One playbook for every case: ``failing`` names the hosts whose release fails, ``long_seconds`` how long the
# long task takes, and ``abort=true`` makes the second play's hosts template fail, which aborts the run.
SITE_PLAYBOOK = """\
- name: Deploy web tier
  hosts: web
  gather_facts: false
  tasks:
    - name: Release
      ansible.builtin.fail:
        msg: the release failed on {{ inventory_hostname }}
      when: inventory_hostname in failing.split(',')
    - name: Long task
      ansible.builtin.shell: touch {{ (started ~ '/' ~ inventory_hostname) | quote }} && sleep {{ long_seconds | int }}

- name: Check web tier
  hosts: "{{ undefined_check_hosts if abort | default(false) | bool else 'web' }}"
  gather_facts: false
  tasks:
    - name: Look
      ansible.builtin.debug:
        msg: checked
"""

# Another playbook (other alert ids) that never fails: the next run after the controller died, with nothing to say.
IDLE_PLAYBOOK = """\
- name: Look around
  hosts: web1
  gather_facts: false
  tasks:
    - name: Nothing to do
      ansible.builtin.debug:
        msg: nothing to do
"""


class Files(t.NamedTuple):
    site: str
    idle: str
    inventory: str


class Trial(t.NamedTuple):
    ledger: str
    env: dict[str, str]
    started: str


def files_in(harness, directory: str) -> Files:
    return Files(
        harness.write(directory, 'site.yml', SITE_PLAYBOOK),
        harness.write(directory, 'idle.yml', IDLE_PLAYBOOK),
        harness.write(directory, 'inventory.ini', INVENTORY),
    )


def new_trial(server, directory: str) -> Trial:
    server.reset()
    ledger = os.path.join(directory, 'ledger', 'ledger.sqlite3')
    started = os.path.join(directory, 'started')
    os.makedirs(started, exist_ok=True)
    return Trial(ledger, callback_env(server.url, ledger, flush_timeout=FLUSH_TIMEOUT), started)


def site_args(trial: Trial, failing: str, long_seconds: int, abort: bool = False) -> list[str]:
    return ['-e', f'failing={failing}', '-e', f'long_seconds={long_seconds}', '-e', f'started={trial.started}',
            '-e', f'abort={str(abort).lower()}']


def wait_for(condition: t.Callable[[], bool], seconds: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def read(path: str) -> str:
    with open(path, encoding='utf-8', errors='replace') as handle:
        return handle.read()


def wait_until_in_long_task(process, out_path: str, trial: Trial, hosts: t.Sequence[str], failed: str = '') -> None:
    """Until ``failed``'s failure is in the output and every one of ``hosts`` has started the long task."""
    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f'ansible-playbook ended (rc {process.returncode}) before the long task:\n{read(out_path)[-3000:]}')
        return (not failed or f'fatal: [{failed}]' in read(out_path)) and all(
            os.path.exists(os.path.join(trial.started, host)) for host in hosts)

    assert wait_for(ready, STARTUP_SECONDS), f'the long task never started:\n{read(out_path)[-3000:]}'


def identities(pids: t.Iterable[int]) -> dict[int, str]:
    """Each live process with its start time, so that a pid the system has since reused is never signalled."""
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            with open(f'/proc/{pid}/stat', encoding='utf-8') as handle:
                found[pid] = handle.read().rsplit(')', 1)[1].split()[19]
    return found


def signal_all(processes: dict[int, str], signum: int) -> None:
    for pid, started in identities(processes).items():
        if processes.get(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


def kill_everything(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it at one instant: all are stopped first, so none sees another die."""
    os.kill(pid, signal.SIGSTOP)
    stopped = identities(descendants(pid))
    signal_all(stopped, signal.SIGSTOP)
    # Anything started between the first look and the stops.
    stopped.update(identities(descendants(pid)))
    signal_all(stopped, signal.SIGSTOP)
    os.kill(pid, signal.SIGKILL)
    signal_all(stopped, signal.SIGKILL)
    assert wait_for(lambda: not any(alive(p) for p in stopped), 10), f'processes {sorted(stopped)} survived SIGKILL'


def delivered_records(server) -> list[dict[str, t.Any]]:
    return [record for record in server.requests(delivered=True) if isinstance(record.get('json'), dict)]


def wait_for_requests(server, count: int, seconds: float) -> bool:
    """Until the stand-in has answered at least ``count`` requests (its counter, so polling adds no records)."""
    def answered() -> bool:
        stats = server.stats()
        return stats['requests'] >= count and not stats['in_flight']

    return wait_for(answered, seconds)


def received(records: t.Iterable[dict[str, t.Any]]) -> dict[str, list[str]]:
    story: dict[str, list[str]] = collections.defaultdict(list)
    for record in records:
        story[record['json']['alert_id']].append(record['json']['status'])
    return dict(story)


def outbox_statuses(ledger: str) -> list[str]:
    return [status for _seq, _alert_id, status in ledger_rows(ledger)['outbox']] if os.path.exists(ledger) else []


def check_run(run, problems: list[str], label: str) -> None:
    try:
        assert_clean(run)
    except AssertionError as exc:
        problems.append(f'{label}: {exc}')
    if SECRET_KEY in run.output:
        problems.append(f'{label}: the key is in the output')


def finish_with_green_run(harness, server, files: Files, trial: Trial, problems: list[str], label: str) -> bool:
    """A full green run of the same playbook; per alert Temperstack must then hold exactly Alarm, OK."""
    green = harness.playbook(files.site, env=trial.env, args=site_args(trial, '', 0), inventory=files.inventory)
    check_run(green, problems, f'{label}, green run')
    if green.rc != 0:
        problems.append(f'{label}: the green run ended with {green.rc}:\n{green.stdout[-2000:]}')
    wait_for_requests(server, 2, FLUSH_TIMEOUT)
    story = received(delivered_records(server))
    if list(story.values()) != [['Alarm', 'OK']]:
        problems.append(f'{label}: after the green run Temperstack received {story or "nothing"}, not one Alarm and then one OK')
        return False
    return True


def deadline_of(case: str, signalled: float, ended: float) -> float:
    """When the Alarm must have reached Temperstack, at the latest.

    Ctrl-C and an abort deliver before ansible-playbook exits, or at most within flush_timeout after; SIGTERM and
    SIGKILL leave it to what outlives ansible-playbook, within a few seconds of the signal.
    """
    return ended + FLUSH_TIMEOUT if case in ('sigint', 'error-abort') else signalled + DELIVERY_SECONDS


def interrupt_failing_run(case: str, harness, server, files: Files, trial: Trial, problems: list[str], label: str) -> dict[str, t.Any]:
    """Start the failing run, end it as ``case`` says, and wait for its Alarm; what happened, for the figures."""
    abort = case == 'error-abort'
    handle = harness.start(files.site, env=trial.env, args=site_args(trial, 'web1', 0 if abort else LONG_SECONDS, abort),
                           inventory=files.inventory)
    process, _command, _started, out_path, _err_path = handle
    leftovers: dict[int, str] = {}
    try:
        if abort:
            process.wait(timeout=STARTUP_SECONDS)
            ended = signalled = time.time()
        else:
            wait_until_in_long_task(process, out_path, trial, ['web2'], failed='web1')
            leftovers = identities(descendants(process.pid))
            signalled = time.time()
            if case == 'sigkill-everything':
                kill_everything(process.pid)
            else:
                os.kill(process.pid, SIGNALS[case])
            process.wait(timeout=FLUSH_TIMEOUT + 30)
            ended = time.time()
        run = harness.finish(*handle)
        check_run(run, problems, label)
        exit_seconds = ended - signalled
        outcome = {'rc': run.rc, 'exit_seconds': round(exit_seconds, 2)}
        expected_rc = {'sigint': (99,), 'sigkill-ansible-playbook': (-signal.SIGKILL,), 'sigkill-everything': (-signal.SIGKILL,)}
        if case in expected_rc and run.rc not in expected_rc[case]:
            problems.append(f'{label}: ansible-playbook ended with {run.rc}, expected {expected_rc[case][0]}')
        if case in ('sigterm', 'error-abort') and run.rc == 0:
            problems.append(f'{label}: ansible-playbook ended with 0')
        if abort and not ('ERROR!' in run.output or '[ERROR]:' in run.output):
            problems.append(f'{label}: the run did not end with an error:\n{run.output[-2000:]}')
        bound = FLUSH_TIMEOUT + PROMPT_EXIT_SECONDS if case == 'sigint' else PROMPT_EXIT_SECONDS
        if not abort and exit_seconds > bound:
            problems.append(f'{label}: ansible-playbook took {exit_seconds:.1f} s to end after the signal (bound {bound:g} s)')

        if case == 'sigkill-everything':
            # The controller is gone: only what it wrote when it saw the failure can bring the Alarm back.
            early = bool(delivered_records(server))
            idle = harness.playbook(files.idle, env=trial.env, inventory=files.inventory)
            check_run(idle, problems, f'{label}, next run')
            if idle.rc != 0:
                problems.append(f'{label}: the next run ended with {idle.rc}:\n{idle.stdout[-2000:]}')
            arrived = wait_for_requests(server, 1, FLUSH_TIMEOUT)
        else:
            arrived = wait_for_requests(server, 1, max(deadline_of(case, signalled, ended) - time.time(), 0) + 0.5)
        records = delivered_records(server)
        alarms = [r for r in records if r['json']['status'] == 'Alarm']
        if not arrived or not alarms:
            survivors = [pid for pid, started in identities(leftovers).items() if leftovers.get(pid) == started]
            problems.append(f'{label}: no Alarm reached Temperstack (received {received(records) or "nothing"}); the outbox holds '
                            f'{outbox_statuses(trial.ledger) or "nothing"}; {len(survivors)} process(es) of the run still alive')
            outcome['path'] = NOT_DELIVERED
            return outcome
        alarm = alarms[0]
        if case == 'sigkill-everything':
            outcome['path'] = 'before the next run (unexpected: nothing was left to send it)' if early else NEXT_RUN
        else:
            outcome['path'] = BEFORE_EXIT if alarm['time'] <= ended else AFTER_EXIT
            if not abort:
                outcome['seconds_to_alarm'] = round(alarm['time'] - signalled, 2)
            if alarm['time'] > deadline_of(case, signalled, ended):
                problems.append(f'{label}: the Alarm arrived {alarm["time"] - signalled:.1f} s after the {"abort" if abort else "signal"}, '
                                f'{alarm["time"] - ended:.1f} s after ansible-playbook ended: too late')
        story = received(records)
        if len(story) != 1 or 'deploy-web-tier' not in next(iter(story)) or list(story.values()) != [['Alarm']]:
            problems.append(f'{label}: Temperstack received {story}, expected one Alarm for the play Deploy web tier and no OK')
        description = alarm['json'].get('description') or ''
        if 'web1' not in description or 'web2' in description:
            problems.append(f'{label}: the Alarm does not name web1 alone: {description!r}')
        # Delivered and recorded: the next run must not find it in the outbox (and send it again).
        if not wait_for(lambda: not outbox_statuses(trial.ledger), DELIVERY_SECONDS):
            problems.append(f'{label}: the outbox still holds {outbox_statuses(trial.ledger)}')
        return outcome
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        # The worker of the long task outlives a SIGKILL of ansible-playbook (no signal reaches it); end it and its sleep.
        signal_all(leftovers, signal.SIGKILL)


@pytest.mark.parametrize('case', FAILURE_CASES)
def test_a_failure_seen_before_the_run_ends_is_delivered(harness, server, work_dir, figures, case):
    directory = os.path.join(work_dir, 'interrupted', case)
    files = files_in(harness, directory)
    problems: list[str] = []
    outcomes = []
    for number in range(1, TRIALS + 1):
        label = f'{case}, trial {number}'
        trial = new_trial(server, os.path.join(directory, f'trial-{number:02d}'))
        outcome = interrupt_failing_run(case, harness, server, files, trial, problems, label)
        if outcome.get('path') != NOT_DELIVERED:
            outcome['one_ok_after_green_run'] = finish_with_green_run(harness, server, files, trial, problems, label)
        outcomes.append(outcome)
    paths = collections.Counter(outcome['path'] for outcome in outcomes)
    figures.set('interrupted', case, {
        'trials': len(outcomes),
        'alarms_delivered': sum(count for path, count in paths.items() if path != NOT_DELIVERED),
        'paths': dict(paths),
        'exit_codes': sorted({outcome['rc'] for outcome in outcomes}),
        'exit_seconds_max': max(outcome['exit_seconds'] for outcome in outcomes),
        'seconds_to_alarm_max': max((outcome['seconds_to_alarm'] for outcome in outcomes if 'seconds_to_alarm' in outcome), default=None),
        'one_ok_after_green_run': sum(1 for outcome in outcomes if outcome.get('one_ok_after_green_run')),
        'problems': len(problems),
    })
    assert not problems, '\n'.join(problems)


@pytest.mark.parametrize('signal_name', pick(['SIGINT'], ['SIGINT', 'SIGTERM']))
def test_an_interrupted_green_run_sends_no_ok(harness, server, work_dir, figures, signal_name):
    directory = os.path.join(work_dir, 'interrupted', f'green-{signal_name.lower()}')
    files = files_in(harness, directory)
    problems: list[str] = []
    resolved = oks_of_interrupted_runs = 0
    for number in range(1, TRIALS + 1):
        label = f'green run stopped by {signal_name}, trial {number}'
        trial = new_trial(server, os.path.join(directory, f'trial-{number:02d}'))
        failing = harness.playbook(files.site, env=trial.env, args=site_args(trial, 'web1', 0), inventory=files.inventory)
        check_run(failing, problems, f'{label}, failing run')
        assert failing.rc == 2, failing.stdout[-3000:]
        assert wait_for_requests(server, 1, FLUSH_TIMEOUT) and received(delivered_records(server)).values(), 'the Alarm was not sent'
        for name in os.listdir(trial.started):
            os.remove(os.path.join(trial.started, name))

        handle = harness.start(files.site, env=trial.env, args=site_args(trial, '', LONG_SECONDS), inventory=files.inventory)
        process, _command, _started, out_path, _err_path = handle
        leftovers: dict[int, str] = {}
        try:
            # Both hosts are in the unit again, and neither has reached its end.
            wait_until_in_long_task(process, out_path, trial, ['web1', 'web2'])
            leftovers = identities(descendants(process.pid))
            os.kill(process.pid, getattr(signal, signal_name))
            process.wait(timeout=FLUSH_TIMEOUT + 30)
            time.sleep(NO_OK_GRACE_SECONDS)
            interrupted = harness.finish(*handle)
            check_run(interrupted, problems, label)
            if signal_name == 'SIGINT' and interrupted.rc != 99:
                problems.append(f'{label}: ansible-playbook ended with {interrupted.rc}, expected 99')
            story = received(delivered_records(server))
            sent = sum(statuses.count('OK') for statuses in story.values())
            queued = outbox_statuses(trial.ledger).count('OK')
            if sent:
                problems.append(f'{label}: the interrupted green run sent an OK: {story}')
            if queued:
                problems.append(f'{label}: the interrupted green run queued an OK: {outbox_statuses(trial.ledger)}')
            oks_of_interrupted_runs += sent + queued
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            signal_all(leftovers, signal.SIGKILL)
        resolved += finish_with_green_run(harness, server, files, trial, problems, label)
    figures.set('interrupted', f'green-{signal_name.lower()}', {
        'trials': TRIALS,
        'oks_sent_or_queued_by_the_interrupted_run': oks_of_interrupted_runs,
        'one_ok_after_green_run': resolved,
        'problems': len(problems),
    })
    assert not problems, '\n'.join(problems)
