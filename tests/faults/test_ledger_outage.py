# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Issue 16: one ledger protocol through an outage of the shared ledger, end to end.

Real ansible-playbook runs against the stand-in and the suite's own PostgreSQL server (``pg_server``), which the tests
stop and start with pg_ctl while a run goes on. Each test has a database of its own. A run with the HOME of an earlier
one is the next run on the same controller; a run with a fresh HOME that is deleted afterwards is an AWX job. Held
failures are renewed for a lease of 120 s in the product; the runs here shorten it for every process of the run, the
delivery process included, with the test-only variable _TEMPERSTACK_TEST_HOLD_LEASE_SECONDS, so that a play outlasts
its holds in seconds. Each test asserts what Temperstack (the stand-in) received, per alert in order, and what the
ledgers hold afterwards.

1. A play fails on one host, then the server is stopped and started again while the play goes on past the hold
   lease: its Alarm reaches Temperstack exactly once. The same with the embedded SQLite ledger and a play that
   outlasts the lease.
2. A failing run while the server is down (its Alarm is sent, the fallback file keeps it), then two green runs on
   that controller with the server up: the first sends the OK (the Alarm sent during the outage is known as open),
   and nothing comes after the OK.
3. A silence created while the server is up still withholds a matching Alarm of the alert module during the
   outage; an alert with failures_before_alarm: 2 is damped on its first failure during the outage, sent on its
   second.
4. A failure held in PostgreSQL, then the server stopped before the play ends (the callback falls back mid-run),
   then started (after the run; in the long run also before its end): the next green run sends the OK, and a run
   after the hold's lease has passed sends no Alarm after it.
5. Odd ledger_url forms (an unclosed IPv6 bracket, a bad %-escape, a password with a broken host, another scheme, a
   password with a '#' that is not %-encoded) at -vvv: the password is nowhere in what the run prints or writes; a
   form that is no URI fails the alert task and disables the callback, each naming ledger_url, and one that names a
   server that is not there sends fail-open with the warning that the (masked) ledger is unreachable.
6. After a run with the callback and an alert task against PostgreSQL, no connection of the collection is left.
7. An AWX job (its HOME thrown away after the run): the server down when the run starts, a play fails, the server
   back before the run ends: PostgreSQL knows the Alarm as open afterwards, and the next job sends its OK.
8. (Long run only.) A delivery process still sending an Alarm from the fallback file when the server is back and the
   next run on that controller starts, which moves the fallback file in: the Alarm has one sender; Temperstack
   receives Alarm, then (from a later green run) OK, and nothing after it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import typing as t

import pytest

from faultlib import FULL, SECRET_KEY, assert_clean, callback_env, first_json, ledger_rows, pick
from pg import SCHEMA, PgServer
from test_interrupted import received, wait_for

# The hold lease of every process of a run here (120 s in the product).
HOLD_LEASE = 3.0
LEASE_ENV = {'_TEMPERSTACK_TEST_HOLD_LEASE_SECONDS': f'{HOLD_LEASE:g}'}
FLUSH_TIMEOUT = 10.0
RUN_TIMEOUT = 300.0
APPLICATION_NAME = 'temperstack.alerting'

INVENTORY = ''.join(
    f'{host} ansible_connection=local ansible_python_interpreter="{{{{ ansible_playbook_python }}}}"\n' for host in ('h1', 'h2')
)

# One play on h1 and h2. Hosts in ``failing`` fail its first task; the others then say they are ready and wait for the
# test's ``gate`` (if one is given), and go on for ``linger`` seconds after it.
PLAY = """\
- name: Deploy web tier
  hosts: all
  gather_facts: false
  tasks:
    - name: Release
      ansible.builtin.fail:
        msg: the release failed
      when: inventory_hostname in failing.split(',')
{extra}\
    - name: Wait for the test
      ansible.builtin.shell: >-
        touch {{{{ (ready ~ '-' ~ inventory_hostname) | quote }}}};
        for _ in $(seq 2400); do [ -e {{{{ gate | quote }}}} ] && exit 0; sleep 0.05; done; exit 1
      changed_when: false
      when: gate | length > 0
    - name: Go on
      ansible.builtin.command: sleep {{{{ linger }}}}
      changed_when: false
      when: linger | float > 0
"""
# A later play of the same playbook, on the hosts left: they wait for the test's ``gate2`` (for test 4).
LATER_PLAY = """\
- name: Later
  hosts: all
  gather_facts: false
  tasks:
    - name: Wait for the test again
      ansible.builtin.shell: >-
        touch {{ (ready ~ '-later-' ~ inventory_hostname) | quote }};
        for _ in $(seq 2400); do [ -e {{ gate2 | quote }} ] && exit 0; sleep 0.05; done; exit 1
      changed_when: false
      when: gate2 | default('') | length > 0
"""
# The same play with an alert task of its own on the hosts that did not fail (for test 6).
ALERT_IN_PLAY = """\
    - name: Raise an alert of the module
      temperstack.alerting.alert:
        alert_name: Disk full
        alert_id: outage-module-disk
        status: Alarm
"""

SILENCE_PLAYBOOK = """\
- name: Maintenance
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Silence the alerts of the maintenance
      temperstack.alerting.silence:
        name: outage-maintenance
        alert_id: ['outage-silenced-*']
        duration: 1h
        comment: set while the shared ledger answers
"""

# Alert module tasks whose results the test reads from ``results``.
ALERT_TASKS = """\
- name: Alert tasks
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Alarm of a silenced alert
      temperstack.alerting.alert:
        alert_name: Disk full in maintenance
        alert_id: outage-silenced-disk
        status: Alarm
      register: silenced
      ignore_errors: true
      when: "'silenced' in alerts"
    - name: Alarm of a damped alert
      temperstack.alerting.alert:
        alert_name: Flapping check
        alert_id: outage-damped
        status: Alarm
        failures_before_alarm: 2
      register: damped
      ignore_errors: true
      when: "'damped' in alerts"
    - name: Keep the results
      ansible.builtin.copy:
        content: "{{ {'silenced': silenced, 'damped': damped} | to_json }}"
        dest: "{{ results }}"
        mode: '0600'
"""

# The URL reaches the alert task from TEMPERSTACK_LEDGER_URL, and as its ledger_url option.
ODD_URL_PLAYBOOK = """\
- name: Deploy with an odd ledger_url
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Raise an alert
      temperstack.alerting.alert:
        alert_name: Disk full
        alert_id: odd-url-disk
        status: Alarm
      ignore_errors: true
    - name: Raise an alert with its ledger_url
      temperstack.alerting.alert:
        alert_name: Disk full
        alert_id: odd-url-disk
        status: Alarm
        ledger_url: "{{ lookup('ansible.builtin.env', 'TEMPERSTACK_LEDGER_URL') }}"
      ignore_errors: true
"""


class Job(t.NamedTuple):
    """One controller's run: its HOME (its ledger file and fallback file are in it) and its environment."""

    home: str
    env: dict[str, str]
    directory: str
    stand_in: t.Any

    @property
    def ledger(self) -> str:
        return os.path.join(self.home, '.ansible', 'temperstack', 'ledger.sqlite3')

    @property
    def fallback(self) -> str:
        return os.path.join(self.home, '.ansible', 'temperstack', 'ledger.fallback.sqlite3')


def new_job(directory: str, stand_in, url: str | None, home: str | None = None, callback: bool = True,
            lease: bool = True) -> Job:
    """A run with an empty HOME of its own, or with ``home``: the next run on the same controller."""
    fresh = home is None
    home = home or os.path.join(directory, 'homes', f'job-{secrets.token_hex(3)}')
    if fresh:
        shutil.rmtree(home, ignore_errors=True)
        os.makedirs(home)
    ledger = os.path.join(home, '.ansible', 'temperstack', 'ledger.sqlite3')
    if callback:
        env = callback_env(stand_in.url, ledger, flush_timeout=FLUSH_TIMEOUT)
    else:
        env = {'TEMPERSTACK_BASE_URL': stand_in.url, 'TEMPERSTACK_API_KEY': SECRET_KEY, 'TEMPERSTACK_LEDGER_PATH': ledger,
               'TEMPERSTACK_TIMEOUT': '2', 'TEMPERSTACK_RETRIES': '1'}
    env.update({'HOME': home, 'ANSIBLE_HOME': os.path.join(home, '.ansible')})
    if url:
        env['TEMPERSTACK_LEDGER_URL'] = url
    if lease:
        env.update(LEASE_ENV)
    return Job(home, env, directory, stand_in)


def play_args(job: Job, failing: str = '', gate: str = '', linger: float = 0, gate2: str = '') -> list[str]:
    variables = {'failing': failing, 'gate': gate, 'ready': os.path.join(os.path.dirname(gate), 'ready') if gate else '',
                 'linger': linger, 'gate2': gate2}
    path = os.path.join(job.directory, f'vars-{secrets.token_hex(3)}.json')
    with open(path, 'w', encoding='utf-8') as handle:
        json.dump(variables, handle)
    return ['-e', f'@{path}']


def new_gate(directory: str) -> str:
    gates = os.path.join(directory, 'gates', secrets.token_hex(3))
    os.makedirs(gates)
    return os.path.join(gates, 'open')


def open_gate(gate: str) -> None:
    with open(gate, 'w', encoding='utf-8'):
        pass


def ready(gate: str, host: str, play: str = '') -> bool:
    return os.path.exists(os.path.join(os.path.dirname(gate), f'ready-{play}{host}'))


def finish(harness, handle, timeout: float = RUN_TIMEOUT):
    process = handle[0]
    try:
        process.wait(timeout=timeout)
    except Exception:
        process.kill()
        process.wait()
        raise
    return harness.finish(*handle)


def check_run(run, postgres: PgServer | None = None) -> None:
    """No traceback, no key, no database password: in anything a run prints."""
    assert_clean(run)
    assert SECRET_KEY not in run.output, f'the key is in the output of {" ".join(run.command)}'
    for password in postgres.passwords if postgres else ():
        assert password not in run.output, f'a database password is in the output of {" ".join(run.command)}'


def story(stand_in) -> dict[str, list[str]]:
    """What Temperstack received: per alert id, the statuses in the order they arrived."""
    wait_for(lambda: not stand_in.stats()['in_flight'], 15)
    return dict(received(stand_in.requests(delivered=True)))


def only_alert(got: dict[str, list[str]]) -> str:
    assert len(got) == 1, f'Temperstack received alerts of {len(got)} alert ids: {got}'
    return next(iter(got))


def warnings_in(run) -> list[str]:
    """The run's warnings, each on one line."""
    text = ' '.join(run.output.split('\n'))
    return [' '.join(part.split()) for part in text.split('[WARNING]:')[1:]]


# -- what the ledgers hold ---------------------------------------------------------------------------------------------


def pg_state(postgres: PgServer, database: str) -> dict[str, list[tuple]]:
    """The shared ledger's records (alert, status, hosts), outbox (alert, status, held) and claims."""
    with postgres.admin(database) as conn:
        if not conn.execute('SELECT 1 FROM pg_namespace WHERE nspname = %s', (SCHEMA,)).fetchone():
            return {'alerts': [], 'outbox': [], 'claims': []}
        return {
            'alerts': [(alert_id, status, tuple(json.loads(hosts))) for alert_id, status, hosts in conn.execute(
                f'SELECT alert_id, status, hosts FROM {SCHEMA}.alerts ORDER BY alert_id').fetchall()],
            'outbox': conn.execute(
                f'SELECT alert_id, status, hold_token IS NOT NULL FROM {SCHEMA}.outbox ORDER BY seq').fetchall(),
            'claims': conn.execute(f'SELECT alert_id, holder FROM {SCHEMA}.claims ORDER BY alert_id').fetchall(),
        }


def records(state: dict[str, list[tuple]]) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in state['alerts']]


def file_state(path: str) -> dict[str, list[tuple]]:
    if not os.path.exists(path):
        return {'alerts': [], 'outbox': []}
    rows = ledger_rows(path)
    return {'alerts': rows['alerts'], 'outbox': rows['outbox']}


def collection_connections(postgres: PgServer, database: str) -> list[tuple]:
    return postgres.query(
        'postgres',
        'SELECT pid, application_name, state FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()',
        (database,),
    )


@pytest.fixture
def place(harness, work_dir, request):
    """A directory of the test's own, with the playbooks and the two-host inventory."""
    directory = os.path.join(work_dir, 'ledger-outage', request.node.name.replace('[', '-').rstrip(']'))
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    harness.write(directory, 'play.yml', PLAY.format(extra=''))
    harness.write(directory, 'play-with-alert.yml', PLAY.format(extra=ALERT_IN_PLAY))
    harness.write(directory, 'two-plays.yml', PLAY.format(extra='') + LATER_PLAY)
    harness.write(directory, 'silence.yml', SILENCE_PLAYBOOK)
    harness.write(directory, 'alerts.yml', ALERT_TASKS)
    harness.write(directory, 'odd-url.yml', ODD_URL_PLAYBOOK)
    harness.write(directory, 'hosts.ini', INVENTORY)
    return directory


def playbook(place: str, name: str) -> str:
    return os.path.join(place, name)


def hosts_ini(place: str) -> str:
    return os.path.join(place, 'hosts.ini')


def wait_for_held(postgres: PgServer, database: str, handle, seconds: float = 60) -> None:
    """Until the shared ledger holds a failure (the callback writes it the moment it sees the failure)."""
    def held() -> bool:
        if handle[0].poll() is not None:
            raise AssertionError(f'the run ended (rc {handle[0].returncode}) before its failure was held')
        return any(is_held for _alert_id, _status, is_held in pg_state(postgres, database)['outbox'])

    assert wait_for(held, seconds, step=0.1), f'no held failure in the shared ledger: {pg_state(postgres, database)}'


# -- 1. a play that outlasts its hold's lease, across a restart of the server ---------------------------------------


def test_held_failure_across_a_server_restart_past_the_lease_is_sent_once(harness, stand_in, postgres, place, figures):
    started = time.monotonic()
    database = 'outage_restart_past_lease'
    url = postgres.database(database)
    job = new_job(place, stand_in, url)
    gate = new_gate(place)
    handle = harness.start(playbook(place, 'play.yml'), env=job.env, inventory=hosts_ini(place),
                           args=play_args(job, failing='h1', gate=gate, linger=HOLD_LEASE + 1))
    try:
        assert wait_for(lambda: ready(gate, 'h2') or handle[0].poll() is not None, 120), 'h2 never reached the gate'
        wait_for_held(postgres, database, handle)
        held_before = pg_state(postgres, database)['outbox']
        postgres.stop()
        # The server is away for longer than the lease: nobody can renew the hold meanwhile.
        time.sleep(HOLD_LEASE + 1)
        postgres.start()
        # ... and the play goes on past the lease once more after the restart.
        open_gate(gate)
        run = finish(harness, handle)
    finally:
        open_gate(gate)
    check_run(run, postgres)
    assert run.rc == 2, run.stdout[-3000:]
    got = story(stand_in)
    state = pg_state(postgres, database)
    figures.set('ledger_outage', 'restart_past_lease', {
        'received': got, 'held_before_the_stop': held_before, 'shared_ledger': state, 'run_seconds': round(run.seconds, 1),
        'test_seconds': round(time.monotonic() - started, 1),
    })
    alert_id = only_alert(got)
    assert got == {alert_id: ['Alarm']}, f'Temperstack received {got}; the shared ledger holds {state}'
    assert state['alerts'] == [(alert_id, 'Alarm', ('h1',))], state
    assert state['outbox'] == [], state
    assert file_state(job.fallback)['outbox'] == [], file_state(job.fallback)


def test_held_failure_in_the_sqlite_ledger_past_the_lease_is_sent_once(harness, stand_in, place, figures):
    started = time.monotonic()
    job = new_job(place, stand_in, None)
    # The play goes on for longer than the lease after its failure.
    run = harness.playbook(playbook(place, 'play.yml'), env=job.env, inventory=hosts_ini(place),
                           args=play_args(job, failing='h1', linger=HOLD_LEASE + 1.5), timeout=RUN_TIMEOUT)
    check_run(run)
    assert run.rc == 2, run.stdout[-3000:]
    got = story(stand_in)
    state = file_state(job.ledger)
    figures.set('ledger_outage', 'sqlite_past_lease', {
        'received': got, 'ledger': state, 'run_seconds': round(run.seconds, 1), 'test_seconds': round(time.monotonic() - started, 1),
    })
    alert_id = only_alert(got)
    assert got == {alert_id: ['Alarm']}, f'Temperstack received {got}; the ledger holds {state}'
    assert state == {'alerts': [(alert_id, 'Alarm')], 'outbox': []}, state


# -- 2. a run during the outage, then green runs on the same controller -----------------------------------------------


def test_alarm_sent_during_an_outage_is_resolved_by_the_next_green_run(harness, stand_in, postgres, place, figures):
    started = time.monotonic()
    database = 'outage_then_green'
    url = postgres.database(database)
    job = new_job(place, stand_in, url)
    postgres.stop()
    try:
        failing = harness.playbook(playbook(place, 'play.yml'), env=job.env, inventory=hosts_ini(place),
                                   args=play_args(job, failing='h1'), timeout=RUN_TIMEOUT)
    finally:
        postgres.start()
    check_run(failing, postgres)
    assert failing.rc == 2, failing.stdout[-3000:]
    during = story(stand_in)
    alert_id = only_alert(during)
    assert during == {alert_id: ['Alarm']}, during
    kept = file_state(job.fallback)
    assert kept['alerts'] == [(alert_id, 'Alarm')], f'the fallback file does not keep the Alarm sent: {kept}'

    # The server is back; the same controller (its HOME) runs the play again, green, twice.
    greens, after = [], []
    for _number in range(2):
        again = new_job(place, stand_in, url, home=job.home)
        green = harness.playbook(playbook(place, 'play.yml'), env=again.env, inventory=hosts_ini(place),
                                 args=play_args(again), timeout=RUN_TIMEOUT)
        check_run(green, postgres)
        assert green.rc == 0, green.stdout[-3000:]
        greens.append(green)
        after.append(story(stand_in))
    state = pg_state(postgres, database)
    figures.set('ledger_outage', 'outage_then_green', {
        'received_after_each_green_run': after, 'shared_ledger': state, 'fallback_file': file_state(job.fallback),
        'test_seconds': round(time.monotonic() - started, 1),
    })
    assert after[0] == {alert_id: ['Alarm', 'OK']}, (
        f'after the first green run Temperstack received {after[0]}; the shared ledger holds {state}; '
        f'warnings: {warnings_in(greens[0])}'
    )
    assert after[1] == {alert_id: ['Alarm', 'OK']}, f'after the second green run Temperstack received {after[1]}'
    assert records(state) == [(alert_id, 'OK')] and state['outbox'] == [], state
    assert file_state(job.fallback) == {'alerts': [], 'outbox': []}, file_state(job.fallback)


# -- 3. silences and damping during the outage ----------------------------------------------------------------------


def alert_tasks(harness, place: str, job: Job, alerts: t.Sequence[str], postgres: PgServer) -> dict[str, t.Any]:
    """One run of the alert tasks named in ``alerts``: their results, and what Temperstack received so far."""
    path = os.path.join(place, f'results-{secrets.token_hex(3)}.json')
    run = harness.playbook(playbook(place, 'alerts.yml'), env=job.env, timeout=RUN_TIMEOUT,
                           args=['-e', json.dumps({'alerts': list(alerts), 'results': path})])
    check_run(run, postgres)
    assert run.rc == 0, run.stdout[-3000:]
    with open(path, encoding='utf-8') as handle:
        results = json.load(handle)
    results['received'] = story(job.stand_in)
    return results


def test_silence_set_before_an_outage_withholds_a_matching_alarm_during_it(harness, stand_in, postgres, place, figures):
    started = time.monotonic()
    database = 'outage_silence'
    url = postgres.database(database)
    job = new_job(place, stand_in, url, callback=False)
    made = harness.playbook(playbook(place, 'silence.yml'), env=job.env, timeout=RUN_TIMEOUT)
    check_run(made, postgres)
    assert made.rc == 0, made.stdout[-3000:]
    silences = postgres.query(database, f'SELECT name FROM {SCHEMA}.silences')
    assert silences == [('outage-maintenance',)], silences
    postgres.stop()
    try:
        # The same controller during the outage.
        results = alert_tasks(harness, place, job, ['silenced'], postgres)
    finally:
        postgres.start()
    silenced = results['silenced']
    figures.set('ledger_outage', 'silence', {
        'task': {key: silenced.get(key) for key in ('sent', 'silenced', 'msg', 'failed')},
        'received': results['received'], 'fallback_file': file_state(job.fallback),
        'test_seconds': round(time.monotonic() - started, 1),
    })
    assert not silenced.get('failed') and not silenced.get('sent') and silenced.get('silenced') == 'outage-maintenance', (
        f'the silenced Alarm during the outage: {silenced}; Temperstack received {results["received"]}'
    )
    assert results['received'] == {}, results['received']


def test_damping_holds_during_an_outage(harness, stand_in, postgres, place, figures):
    started = time.monotonic()
    database = 'outage_damping'
    url = postgres.database(database)
    job = new_job(place, stand_in, url, callback=False)
    postgres.stop()
    try:
        # Two runs of the same controller during the outage: the alert's first failure, then its second.
        first = alert_tasks(harness, place, job, ['damped'], postgres)
        second = alert_tasks(harness, place, job, ['damped'], postgres)
    finally:
        postgres.start()
    figures.set('ledger_outage', 'damping', {
        'first': {key: first['damped'].get(key) for key in ('sent', 'damped', 'msg', 'failed')},
        'second': {key: second['damped'].get(key) for key in ('sent', 'damped', 'msg', 'failed')},
        'received': second['received'], 'test_seconds': round(time.monotonic() - started, 1),
    })
    damped = first['damped']
    assert not damped.get('failed') and not damped.get('sent') and damped.get('damped') == '1 of 2', f'first failure: {damped}'
    assert first['received'] == {}, f'Temperstack received {first["received"]} after the first failure'
    assert not second['damped'].get('failed') and second['damped'].get('sent'), f'second failure: {second["damped"]}'
    assert second['received'] == {'outage-damped': ['Alarm']}, second['received']


# -- 4. holds written to PostgreSQL before a mid-run fallback -------------------------------------------------------


# When the server is back: after the failing run, or (the long run) before its end, once the failing play has ended.
MID_RUN_VARIANTS = pick(['back-after-the-run'], ['back-after-the-run', 'back-before-the-run-ends'])


@pytest.mark.parametrize('variant', MID_RUN_VARIANTS)
def test_holds_written_before_a_mid_run_fallback_never_go_out_after_the_ok(harness, stand_in, postgres, place, figures,
                                                                           variant):
    started = time.monotonic()
    database = f"outage_mid_run_holds_{variant.replace('-', '_')}"
    url = postgres.database(database)
    job = new_job(place, stand_in, url)
    gate, gate2 = new_gate(place), new_gate(place)
    later = variant == 'back-before-the-run-ends'
    handle = harness.start(playbook(place, 'two-plays.yml'), env=job.env, inventory=hosts_ini(place),
                           args=play_args(job, failing='h1', gate=gate, gate2=gate2 if later else ''))
    try:
        assert wait_for(lambda: ready(gate, 'h2') or handle[0].poll() is not None, 120), 'h2 never reached the gate'
        wait_for_held(postgres, database, handle)
        postgres.stop()
        # The play ends while the server is down: the callback falls back mid-run.
        open_gate(gate)
        if later:
            # The next play has started (the failing one has ended): the server comes back before the run ends.
            assert wait_for(lambda: ready(gate, 'h2', 'later-') or handle[0].poll() is not None, 120), 'no later play'
            postgres.start()
            open_gate(gate2)
        failing = finish(harness, handle)
    finally:
        open_gate(gate)
        open_gate(gate2)
        postgres.ensure_running()
    check_run(failing, postgres)
    assert failing.rc == 2, failing.stdout[-3000:]
    during = story(stand_in)
    alert_id = only_alert(during)
    assert during == {alert_id: ['Alarm']}, f'the failing run sent {during}'

    again = new_job(place, stand_in, url, home=job.home)
    green = harness.playbook(playbook(place, 'two-plays.yml'), env=again.env, inventory=hosts_ini(place),
                             args=play_args(again), timeout=RUN_TIMEOUT)
    check_run(green, postgres)
    assert green.rc == 0, green.stdout[-3000:]
    after_green = story(stand_in)
    state_after_green = pg_state(postgres, database)
    # Past the lease of the hold the failing run wrote to PostgreSQL: a sender now would deliver it if it were left.
    time.sleep(HOLD_LEASE + 1)
    third = harness.playbook(playbook(place, 'two-plays.yml'), env=again.env, inventory=hosts_ini(place),
                             args=play_args(again), timeout=RUN_TIMEOUT)
    check_run(third, postgres)
    assert third.rc == 0, third.stdout[-3000:]
    got = story(stand_in)
    state = pg_state(postgres, database)
    figures.set('ledger_outage', f'mid_run_holds_{variant}', {
        'received_after_the_green_run': after_green, 'received': got, 'shared_ledger_after_the_green_run': state_after_green,
        'shared_ledger': state, 'test_seconds': round(time.monotonic() - started, 1),
    })
    assert after_green == {alert_id: ['Alarm', 'OK']}, (
        f'after the green run Temperstack received {after_green}; the shared ledger holds {state_after_green}; '
        f'warnings: {warnings_in(green)}'
    )
    assert got == {alert_id: ['Alarm', 'OK']}, f'Temperstack received {got}; the shared ledger holds {state}'
    assert records(state) == [(alert_id, 'OK')] and state['outbox'] == [], state


# -- 5. odd ledger_url forms ------------------------------------------------------------------------------------------


# Each form, and what it is to libpq: not a URI at all ('invalid': the task fails, the callback disables itself), or a
# URI of a server that is not there ('unreachable': the alert goes out fail-open, with a warning naming the ledger).
ODD_FORMS = {
    'ipv6-bracket-not-closed': ('postgresql://ts_user@[::1/temperstack?password={}', 'invalid'),
    'bad-escape-in-the-password': ('postgresql://ts_user:{}%ZZ@127.0.0.1:1/temperstack', 'invalid'),
    'password-and-a-broken-host': ('postgresql://ts_user:{}@[::1/temperstack', 'invalid'),
    'another-scheme': ('mysql://ts_user:{}@db.example.com/temperstack', 'invalid'),
    # A '#' in a password, not %-encoded: a URI libpq takes as it is.
    'hash-in-the-password': ('postgresql://ts_user:{}#1@127.0.0.1:1/temperstack', 'unreachable'),
}
ODD_FORMS.update(pick({}, {
    'bad-escape-in-the-password-parameter': ('postgresql://ts_user@127.0.0.1:1/temperstack?password={}%ZZ', 'invalid'),
    'key-value-string': ('host=127.0.0.1 port=1 user=ts_user password={} dbname=temperstack', 'invalid'),
    'space-in-the-password': ('postgresql://ts_user:{} 1@127.0.0.1:1/temperstack', 'invalid'),
    'hash-in-the-password-and-a-broken-host': ('postgresql://ts_user:{}#1@[::1/temperstack', 'invalid'),
    'question-mark-in-the-password': ('postgresql://ts_user:{}?1@127.0.0.1:1/temperstack', 'unreachable'),
    'slash-in-the-password': ('postgresql://ts_user:{}/1@127.0.0.1:1/temperstack', 'unreachable'),
}))


def _odd_urls() -> dict[str, tuple[str, str, str]]:
    """Per form: the URL, its password (new for each session, so that only a leak can put it anywhere), its kind."""
    found = {}
    for name, (form, kind) in ODD_FORMS.items():
        password = 'Secret' + secrets.token_hex(8)
        found[name] = (form.format(password), password, kind)
    return found


ODD_URLS = _odd_urls()


@pytest.mark.parametrize('form', sorted(ODD_URLS))
def test_odd_ledger_url_forms_never_show_the_password(harness, stand_in, place, figures, form):
    started = time.monotonic()
    url, password, kind = ODD_URLS[form]
    job = new_job(place, stand_in, url)
    run = harness.playbook(playbook(place, 'odd-url.yml'), env=job.env, verbosity='-vvv', timeout=RUN_TIMEOUT)
    check_run(run)
    leaked = [name for name, text in (('stdout', run.stdout), ('stderr', run.stderr)) if password in text]
    written = []
    for root, _dirs, names in os.walk(job.home):
        for name in names:
            with open(os.path.join(root, name), 'rb') as handle:
                if password.encode() in handle.read():
                    written.append(os.path.relpath(os.path.join(root, name), job.home))
    marker = 'fatal: [localhost]: FAILED! =>'
    tasks = [first_json(part, '') or {} for part in run.stdout.split(marker)[1:]]
    warnings = warnings_in(run)
    disabled = [warning for warning in warnings if 'temperstack.alerting.playbook_alerts is disabled' in warning]
    unreachable = [warning for warning in warnings if 'is unreachable' in warning]
    figures.set('ledger_outage', f'odd_url_{form}', {
        'kind': kind, 'task_msgs': [task.get('msg') for task in tasks], 'callback': disabled, 'unreachable': unreachable[:3],
        'password_in': leaked + written, 'test_seconds': round(time.monotonic() - started, 1),
    })
    shown = [line for line in run.output.splitlines() if password in line][:3]
    assert not leaked, f'{form}: the password is in the {" and ".join(leaked)} of the run: {shown}'
    assert not written, f'{form}: the password is in {written}'
    assert run.rc == 0, run.stdout[-3000:]
    if kind == 'invalid':
        assert len(tasks) == 2, f'{form}: the alert tasks did not both fail: {run.stdout[-3000:]}'
        for task in tasks:
            assert 'ledger_url' in str(task.get('msg')), f'{form}: the task\'s message names no ledger_url: {task.get("msg")}'
        assert len(disabled) == 1 and 'ledger_url' in disabled[0], f'{form}: the callback said {warnings}'
        assert story(stand_in) == {}, f'{form}: something was sent'
    else:
        # Fail-open: the alert goes out, and the task and the callback say the ledger is unreachable.
        assert not tasks and not disabled and unreachable, f'{form}: {warnings}'


# -- 6. no connection left after a run -----------------------------------------------------------------------------


def test_no_connection_is_left_after_a_run(harness, stand_in, postgres, place, figures):
    started = time.monotonic()
    database = 'outage_connections'
    url = postgres.database(database)
    job = new_job(place, stand_in, url)
    gate = new_gate(place)
    handle = harness.start(playbook(place, 'play-with-alert.yml'), env=job.env, inventory=hosts_ini(place),
                           args=play_args(job, failing='h1', gate=gate))
    try:
        assert wait_for(lambda: ready(gate, 'h2') or handle[0].poll() is not None, 120), 'h2 never reached the gate'
        # Not vacuous: while the run goes on, the collection is connected to the test's database.
        during = collection_connections(postgres, database)
        open_gate(gate)
        run = finish(harness, handle)
    finally:
        open_gate(gate)
    check_run(run, postgres)
    assert run.rc == 2, run.stdout[-3000:]
    ended = time.monotonic()
    # A connection closed by its client is gone from pg_stat_activity as soon as the server's backend has exited.
    wait_for(lambda: not collection_connections(postgres, database), 5, step=0.1)
    left = collection_connections(postgres, database)
    got = story(stand_in)
    figures.set('ledger_outage', 'connections', {
        'during_the_run': during, 'left_after_the_run': left, 'seconds_to_none': round(time.monotonic() - ended, 2),
        'received': got, 'test_seconds': round(time.monotonic() - started, 1),
    })
    assert any(name == APPLICATION_NAME for _pid, name, _state in during), f'no connection of the collection seen: {during}'
    assert got.get('outage-module-disk') == ['Alarm'] and sorted(map(tuple, got.values())) == [('Alarm',), ('Alarm',)], got
    assert left == [], f'connections left 5 s after the run: {left}'


# -- 7. an AWX job whose fallback file is thrown away ----------------------------------------------------------------


def test_awx_job_writes_back_what_it_sent_in_an_outage_before_it_ends(harness, stand_in, postgres, place, figures):
    started = time.monotonic()
    database = 'outage_awx_job'
    url = postgres.database(database)
    job = new_job(place, stand_in, url)
    gate = new_gate(place)
    postgres.stop()
    try:
        handle = harness.start(playbook(place, 'play.yml'), env=job.env, inventory=hosts_ini(place),
                               args=play_args(job, failing='h1', gate=gate))
        assert wait_for(lambda: ready(gate, 'h2') or handle[0].poll() is not None, 120), 'h2 never reached the gate'
    finally:
        # Back before the run ends: a later task waits while the server starts.
        postgres.start()
        open_gate(gate)
    run = finish(harness, handle)
    check_run(run, postgres)
    assert run.rc == 2, run.stdout[-3000:]
    kept = file_state(job.fallback)
    # The job's container is thrown away, and its fallback file with it.
    shutil.rmtree(job.home)
    got = story(stand_in)
    state = pg_state(postgres, database)
    alert_id = only_alert(got)

    # The next job (a new container) runs the play green: the shared ledger alone knows the Alarm.
    nxt = new_job(place, stand_in, url)
    green = harness.playbook(playbook(place, 'play.yml'), env=nxt.env, inventory=hosts_ini(place), args=play_args(nxt),
                             timeout=RUN_TIMEOUT)
    check_run(green, postgres)
    assert green.rc == 0, green.stdout[-3000:]
    after = story(stand_in)
    figures.set('ledger_outage', 'awx_job', {
        'received': got, 'fallback_file_at_the_end_of_the_job': kept, 'shared_ledger_after_the_job': state,
        'received_after_the_next_job': after, 'test_seconds': round(time.monotonic() - started, 1),
    })
    assert got == {alert_id: ['Alarm']}, got
    assert records(state) == [(alert_id, 'Alarm')] and state['outbox'] == [], (
        f'the shared ledger holds {state} after the job (its fallback file held {kept}); warnings: {warnings_in(run)}'
    )
    assert after == {alert_id: ['Alarm', 'OK']}, f'after the next job Temperstack received {after}'


# -- 8. a delivery process sending from the fallback file while the next run moves it in -----------------------------

HELD_SEND_SECONDS = 5.0


@pytest.mark.skipif(not FULL, reason='long run only (TEMPERSTACK_FAULTS_PROFILE=full)')
def test_an_entry_sent_from_the_fallback_file_is_not_moved_in_meanwhile(harness, stand_in, postgres, place, figures):
    started = time.monotonic()
    database = 'outage_move_while_sending'
    url = postgres.database(database)
    job = new_job(place, stand_in, url)
    # A send that waits is answered, not timed out (a timeout would send it again, as at-least-once delivery does).
    job.env.update({'TEMPERSTACK_TIMEOUT': str(int(3 * HELD_SEND_SECONDS)), 'TEMPERSTACK_FLUSH_TIMEOUT': str(int(6 * HELD_SEND_SECONDS))})
    postgres.stop()
    # Each request waits at Temperstack: the failing run's delivery process is inside its send from the fallback file.
    stand_in.latency(HELD_SEND_SECONDS)
    try:
        first = harness.start(playbook(place, 'play.yml'), env=job.env, inventory=hosts_ini(place),
                              args=play_args(job, failing='h1'))
        assert wait_for(lambda: stand_in.stats()['in_flight'] >= 1 or first[0].poll() is not None, 120), 'no send started'
        assert stand_in.stats()['in_flight'] >= 1, 'the failing run ended before its Alarm was sent'
    finally:
        postgres.start()
    # The server is back, and the next run on that controller starts while the Alarm is still on its way.
    again = new_job(place, stand_in, url, home=job.home)
    again.env.update({name: job.env[name] for name in ('TEMPERSTACK_TIMEOUT', 'TEMPERSTACK_FLUSH_TIMEOUT')})
    second = harness.start(playbook(place, 'play.yml'), env=again.env, inventory=hosts_ini(place), args=play_args(again))
    try:
        runs = [finish(harness, first), finish(harness, second)]
    finally:
        stand_in.latency(0)
    for run in runs:
        check_run(run, postgres)
    assert [run.rc for run in runs] == [2, 0], [run.stdout[-2000:] for run in runs]
    while_sending = story(stand_in)
    state_between = pg_state(postgres, database)
    third = harness.playbook(playbook(place, 'play.yml'), env=again.env, inventory=hosts_ini(place), args=play_args(again),
                             timeout=RUN_TIMEOUT)
    check_run(third, postgres)
    assert third.rc == 0, third.stdout[-3000:]
    got = story(stand_in)
    state = pg_state(postgres, database)
    figures.set('ledger_outage', 'move_while_sending', {
        'received_after_the_two_runs': while_sending, 'shared_ledger_after_the_two_runs': state_between, 'received': got,
        'shared_ledger': state, 'fallback_file': file_state(job.fallback), 'test_seconds': round(time.monotonic() - started, 1),
    })
    alert_id = only_alert(got)
    assert got == {alert_id: ['Alarm', 'OK']}, (
        f'Temperstack received {got} (after the two runs: {while_sending}); the shared ledger holds {state} '
        f'(after the two runs: {state_between}); warnings: {[warnings_in(run) for run in runs]}'
    )
    assert records(state) == [(alert_id, 'OK')] and state['outbox'] == [], state
    assert file_state(job.fallback) == {'alerts': [], 'outbox': []}, file_state(job.fallback)
