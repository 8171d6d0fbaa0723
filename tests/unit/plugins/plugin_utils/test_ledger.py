# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import socket
import sqlite3
import stat
import time
from urllib.parse import quote

import pytest

from ansible_collections.temperstack.alerting.plugins.plugin_utils import _ledger_sqlite
from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import resolve_endpoint
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_spec import (
    DEFAULT_LEDGER_PATH,
    LEDGER_PATH_ENV,
    default_ledger_path,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_sqlite import SqliteLedger
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import LeaseLost, LedgerError, Queued, Record
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_open import discard_shared, shared_ledger

ALERT_ID = 'ansible-disk-almost-full-web01-b9a91f0f86e6'


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def files_in(directory) -> dict[str, bytes]:
    with os.scandir(directory) as entries:
        return {entry.name: open(entry.path, 'rb').read() for entry in entries if entry.is_file()}


def run_processes(context, target, args_list, timeout=60.0):
    """Start one process per argument tuple, wait for all, and fail if any of them failed."""
    processes = [context.Process(target=target, args=args) for args in args_list]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout)
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    assert [process.exitcode for process in processes] == [0] * len(processes)


@pytest.fixture
def ledger(ledger_path):
    with SqliteLedger(ledger_path) as opened:
        yield opened


# -- lookup / record / queue / pending / delivered / discard --------------------------------------


def test_lookup_of_unknown_alert_is_none(ledger, endpoint):
    assert ledger.lookup(endpoint.ledger_key, ALERT_ID) is None


def test_record_then_lookup(ledger, endpoint, make_alert):
    alert = make_alert()
    before = time.time()
    ledger.record(endpoint.ledger_key, alert, hosts=['web01', 'web02'])

    record = ledger.lookup(endpoint.ledger_key, alert.alert_id)
    assert isinstance(record, Record)
    assert record.alert_id == alert.alert_id
    assert record.status == 'Alarm'
    assert record.fingerprint == alert.fingerprint
    assert record.payload == alert.payload
    assert before <= record.updated <= time.time()
    assert record.pending is False
    assert record.hosts == ('web01', 'web02')


def test_record_replaces_the_previous_state(ledger, endpoint, make_alert):
    ledger.record(endpoint.ledger_key, make_alert())
    ledger.record(endpoint.ledger_key, make_alert(status='OK'))
    record = ledger.lookup(endpoint.ledger_key, make_alert().alert_id)
    assert record.status == 'OK'
    assert record.hosts == ()


def test_records_are_per_endpoint_and_alert_id(ledger, make_alert):
    one = resolve_endpoint({'api_key': 'key-one', 'org': 'acme'}, environ={})
    two = resolve_endpoint({'api_key': 'key-two', 'org': 'acme'}, environ={})
    ledger.record(one.ledger_key, make_alert())
    assert ledger.lookup(two.ledger_key, make_alert().alert_id) is None
    assert ledger.lookup(one.ledger_key, make_alert(resource_id='web02').alert_id) is None


def test_records_persist_across_reopening(ledger_path, endpoint, make_alert):
    with SqliteLedger(ledger_path) as first:
        first.record(endpoint.ledger_key, make_alert())
    with SqliteLedger(ledger_path) as second:
        assert second.lookup(endpoint.ledger_key, make_alert().alert_id).payload == make_alert().payload


def test_queue_is_the_current_state_until_delivered(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.record(key, make_alert(status='OK'))
    first = ledger.queue(key, make_alert(), hosts=['web01'])
    second = ledger.queue(key, make_alert(description='now 99% full'))
    assert second > first

    current = ledger.lookup(key, make_alert().alert_id)
    assert current.pending is True
    assert current.status == 'Alarm'
    assert current.payload['description'] == 'now 99% full'


def test_pending_oldest_first_per_endpoint(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    other = resolve_endpoint({'api_key': 'other', 'org': 'acme'}, environ={}).ledger_key
    alarm, ok, elsewhere = make_alert(), make_alert(status='OK'), make_alert(resource_id='db01')
    ledger.queue(key, alarm, hosts=['web01'])
    ledger.queue(other, elsewhere)
    ledger.queue(key, ok)

    pending = ledger.pending(key)
    assert [queued.alert.payload for queued in pending] == [alarm.payload, ok.payload]
    assert all(isinstance(queued, Queued) for queued in pending)
    assert pending[0].seq < pending[1].seq
    assert pending[0].hosts == ('web01',)
    assert [queued.alert.payload for queued in ledger.pending(other)] == [elsewhere.payload]


def test_delivered_records_and_dequeues_atomically(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.queue(key, make_alert(), hosts=['web01'])
    ledger.queue(key, make_alert(status='OK'))

    alert_id = make_alert().alert_id
    alarm, ok = ledger.pending(key)
    ledger.delivered(key, alarm)
    assert [(queued.seq, queued.alert.payload) for queued in ledger.pending(key)] == [(ok.seq, ok.alert.payload)]
    # The OK still waits, so it is the alert's current state.
    assert ledger.lookup(key, alert_id).status == 'OK'
    assert ledger.lookup(key, alert_id).pending is True

    ledger.delivered(key, ok)
    assert ledger.pending(key) == []
    record = ledger.lookup(key, alert_id)
    assert (record.status, record.pending) == ('OK', False)


def test_discard_drops_without_recording(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.queue(key, make_alert())
    [queued] = ledger.pending(key)
    ledger.discard(queued)
    assert ledger.pending(key) == []
    assert ledger.lookup(key, make_alert().alert_id) is None


# -- prune ----------------------------------------------------------------------------------------


def _age_all_records(path, updated=0.0):
    with sqlite3.connect(path) as conn:
        conn.execute('UPDATE alerts SET updated = ?', (updated,))
    conn.close()


def test_prune_forgets_only_old_resolved_alerts(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.record(key, make_alert(resource_id='old-ok', status='OK'))
    ledger.record(key, make_alert(resource_id='old-alarm'))
    now = time.time() + 1000

    assert ledger.prune(retention=100, now=now) == 1
    assert ledger.lookup(key, make_alert(resource_id='old-ok').alert_id) is None
    assert ledger.lookup(key, make_alert(resource_id='old-alarm').alert_id).status == 'Alarm'

    ledger.record(key, make_alert(resource_id='recent-ok', status='OK'))
    assert ledger.prune(retention=100) == 0
    assert ledger.lookup(key, make_alert(resource_id='recent-ok').alert_id) is not None


def test_prune_drops_expired_claims(ledger, endpoint):
    with ledger.claim(endpoint.ledger_key, 'held', lease=0.01):
        pass
    ledger._conn.execute("INSERT INTO claims (endpoint, alert_id, token, expires) VALUES ('e', 'stale', 't', 0)")  # pylint: disable=protected-access
    ledger.prune()
    assert ledger._conn.execute('SELECT count(*) FROM claims').fetchone()[0] == 0  # pylint: disable=protected-access


def test_prune_if_due_runs_once_per_interval(ledger, ledger_path, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.record(key, make_alert(resource_id='first', status='OK'))
    _age_all_records(ledger_path)
    ledger.prune_if_due()
    assert ledger.lookup(key, make_alert(resource_id='first').alert_id) is None

    ledger.record(key, make_alert(resource_id='second', status='OK'))
    _age_all_records(ledger_path)
    ledger.prune_if_due()  # pruned a moment ago: not due yet
    assert ledger.lookup(key, make_alert(resource_id='second').alert_id) is not None


# -- where the ledger lives -----------------------------------------------------------------------


def test_default_ledger_path():
    assert default_ledger_path({}) == DEFAULT_LEDGER_PATH == os.path.join('~', '.ansible', 'temperstack', 'ledger.sqlite3')
    assert default_ledger_path({LEDGER_PATH_ENV: '/srv/ledger.db'}) == '/srv/ledger.db'
    assert default_ledger_path({LEDGER_PATH_ENV: ''}) == DEFAULT_LEDGER_PATH


def test_default_ledger_under_home(isolated_environment):
    with SqliteLedger() as ledger:
        assert ledger.path == str(isolated_environment / '.ansible' / 'temperstack' / 'ledger.sqlite3')
    assert os.path.isfile(ledger.path)


def test_ledger_path_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(LEDGER_PATH_ENV, str(tmp_path / 'from-env.sqlite3'))
    with SqliteLedger() as ledger:
        assert ledger.path == str(tmp_path / 'from-env.sqlite3')


def test_tilde_and_relative_paths_are_resolved(isolated_environment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with SqliteLedger('~/custom/ledger.sqlite3', read_only=True) as ledger:
        assert ledger.path == str(isolated_environment / 'custom' / 'ledger.sqlite3')
    with SqliteLedger('relative.sqlite3', read_only=True) as ledger:
        assert ledger.path == str(tmp_path / 'relative.sqlite3')


# -- permissions ----------------------------------------------------------------------------------


@pytest.fixture(params=[0o022, 0o000, 0o077], ids=['umask-022', 'umask-000', 'umask-077'])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def test_new_ledger_is_private_under_any_umask(umask, tmp_path, endpoint, make_alert):
    directory = tmp_path / 'outer' / 'inner'
    path = directory / 'ledger.sqlite3'
    with SqliteLedger(str(path)) as ledger:
        ledger.record(endpoint.ledger_key, make_alert())
        ledger.queue(endpoint.ledger_key, make_alert(status='OK'))
        files = sorted(os.listdir(directory))
        assert files == ['ledger.sqlite3', 'ledger.sqlite3-shm', 'ledger.sqlite3-wal']
        for name in files:
            assert mode_of(directory / name) == 0o600, name
    assert mode_of(path) == 0o600
    # Every directory the ledger had to create is private, not only the last one.
    assert mode_of(directory) == 0o700
    assert mode_of(tmp_path / 'outer') == 0o700


def test_existing_directory_is_left_alone(umask, tmp_path):
    directory = tmp_path / 'shared'
    directory.mkdir()
    os.chmod(directory, 0o755)
    with SqliteLedger(str(directory / 'ledger.sqlite3')):
        pass
    assert mode_of(directory) == 0o755
    assert mode_of(directory / 'ledger.sqlite3') == 0o600


def test_existing_ledger_with_loose_mode_is_made_private(ledger_path, endpoint, make_alert):
    with SqliteLedger(ledger_path) as ledger:
        ledger.record(endpoint.ledger_key, make_alert())
    os.chmod(ledger_path, 0o644)
    with SqliteLedger(ledger_path) as ledger:
        assert ledger.lookup(endpoint.ledger_key, make_alert().alert_id) is not None
    assert mode_of(ledger_path) == 0o600


def test_uncreatable_directory_is_a_ledger_error(tmp_path):
    (tmp_path / 'a-file').write_text('not a directory')
    with pytest.raises(LedgerError, match='cannot create the ledger directory'):
        SqliteLedger(str(tmp_path / 'a-file' / 'sub' / 'ledger.sqlite3'))


# -- the key never touches disk -------------------------------------------------------------------


def test_key_never_written(ledger_path, endpoint, api_key, make_alert):
    key = endpoint.ledger_key
    secrets = [api_key, quote(api_key, safe=''), endpoint.url]
    directory = os.path.dirname(ledger_path)
    with SqliteLedger(ledger_path) as ledger:
        ledger.record(key, make_alert(), hosts=['web01'])
        ledger.queue(key, make_alert(status='OK'))
        with ledger.claim(key, make_alert().alert_id, lease=5):
            during = files_in(directory)
        [queued] = ledger.pending(key)
        ledger.delivered(key, queued)
        open_files = files_in(directory)
    closed_files = files_in(directory)

    assert 'ledger.sqlite3-wal' in open_files
    for snapshot in (during, open_files, closed_files):
        everything = b''.join(snapshot.values())
        # The endpoint is there, as its hash: the check reads the data that was written.
        assert key.encode() in everything
        for secret in secrets:
            assert secret.encode() not in everything


# -- damaged, foreign and missing ledgers ---------------------------------------------------------


def test_corrupt_ledger_moved_aside_with_warning(ledger_path, endpoint, make_alert):
    os.makedirs(os.path.dirname(ledger_path), mode=0o700)
    garbage = b'this is not an SQLite database \x00\xff' * 200
    with open(ledger_path, 'wb') as handle:
        handle.write(garbage)
    warnings = []

    with SqliteLedger(ledger_path, warn=warnings.append) as ledger:
        ledger.record(endpoint.ledger_key, make_alert())
        assert ledger.lookup(endpoint.ledger_key, make_alert().alert_id).status == 'Alarm'

    [warning] = warnings
    directory = os.path.dirname(ledger_path)
    [aside] = [name for name in os.listdir(directory) if '.corrupt-' in name]
    assert aside.startswith('ledger.sqlite3.corrupt-')
    assert ledger_path in warning
    assert os.path.join(directory, aside) in warning
    assert 'sent once more' in warning
    with open(os.path.join(directory, aside), 'rb') as handle:
        assert handle.read() == garbage
    assert mode_of(ledger_path) == 0o600
    with SqliteLedger(ledger_path, warn=warnings.append) as reopened:
        assert reopened.lookup(endpoint.ledger_key, make_alert().alert_id) is not None
    assert len(warnings) == 1


def test_a_directory_at_the_ledger_path_is_refused_not_moved_aside(ledger_path):
    os.makedirs(os.path.join(ledger_path, 'someone-elses-files'))

    with pytest.raises(LedgerError, match='is a directory'):
        SqliteLedger(ledger_path)
    assert os.listdir(ledger_path) == ['someone-elses-files']
    assert [name for name in os.listdir(os.path.dirname(ledger_path)) if '.corrupt-' in name] == []


def test_corrupt_ledger_without_warn_callback(ledger_path):
    os.makedirs(os.path.dirname(ledger_path))
    with open(ledger_path, 'wb') as handle:
        handle.write(b'\x01' * 4096)
    with SqliteLedger(ledger_path) as ledger:
        assert ledger.pending('anything') == []


def test_empty_file_is_a_new_ledger(ledger_path, endpoint, make_alert):
    os.makedirs(os.path.dirname(ledger_path))
    open(ledger_path, 'wb').close()
    warnings = []
    with SqliteLedger(ledger_path, warn=warnings.append) as ledger:
        ledger.record(endpoint.ledger_key, make_alert())
    assert warnings == []


def test_ledger_of_a_newer_collection_is_refused_not_replaced(ledger_path):
    os.makedirs(os.path.dirname(ledger_path))
    conn = sqlite3.connect(ledger_path)
    conn.execute('PRAGMA user_version=99')
    conn.close()
    warnings = []
    with pytest.raises(LedgerError, match=r'newer temperstack.alerting \(schema 99\)'):
        SqliteLedger(ledger_path, warn=warnings.append)
    assert warnings == []
    assert os.listdir(os.path.dirname(ledger_path)) == ['ledger.sqlite3']


def test_missing_ledger_read_only_writes_nothing(tmp_path, endpoint, make_alert):
    before = sorted(os.listdir(tmp_path))
    path = tmp_path / 'state' / 'ledger.sqlite3'
    with SqliteLedger(str(path), read_only=True) as ledger:
        assert ledger.lookup(endpoint.ledger_key, make_alert().alert_id) is None
        assert ledger.pending(endpoint.ledger_key) == []
        # Refused, as by a ledger opened read-only from disk (and by PostgreSQL's): never a change nobody sees.
        with pytest.raises(LedgerError):
            ledger.record(endpoint.ledger_key, make_alert())
        with pytest.raises(LedgerError):
            ledger.try_claim(endpoint.ledger_key, make_alert().alert_id, lease=1)
    assert sorted(os.listdir(tmp_path)) == before
    assert not path.parent.exists()


def test_existing_ledger_read_only_is_read(ledger_path, endpoint, make_alert):
    with SqliteLedger(ledger_path) as ledger:
        ledger.record(endpoint.ledger_key, make_alert())
    with SqliteLedger(ledger_path, read_only=True) as ledger:
        assert ledger.lookup(endpoint.ledger_key, make_alert().alert_id).status == 'Alarm'


# -- claims ---------------------------------------------------------------------------------------


def test_claim_yields_the_claim_of_that_alert(ledger, endpoint, make_alert):
    key, alert_id = endpoint.ledger_key, make_alert().alert_id
    with ledger.claim(key, alert_id, lease=5) as claim:
        assert (claim.endpoint, claim.alert_id, claim.lease) == (key, alert_id, 5)
        assert ledger.try_claim(key, alert_id, lease=5) is None
    assert ledger.try_claim(key, alert_id, lease=5) is not None


def test_claim_released_on_exit_and_on_error(ledger_path, endpoint):
    key = endpoint.ledger_key
    with SqliteLedger(ledger_path) as first, SqliteLedger(ledger_path) as second:
        with first.claim(key, 'a', lease=30):
            pass
        with pytest.raises(RuntimeError):
            with first.claim(key, 'b', lease=30):
                raise RuntimeError('send failed')
        started = time.monotonic()
        with second.claim(key, 'a', lease=30), second.claim(key, 'b', lease=30):
            pass
        assert time.monotonic() - started < 1.0


def test_claims_on_distinct_alerts_do_not_wait(ledger_path, endpoint):
    with SqliteLedger(ledger_path) as first, SqliteLedger(ledger_path) as second:
        with first.claim(endpoint.ledger_key, 'a', lease=30):
            started = time.monotonic()
            with second.claim(endpoint.ledger_key, 'b', lease=30):
                pass
            assert time.monotonic() - started < 1.0


def test_claim_waits_for_an_expired_lease(ledger_path, endpoint):
    with SqliteLedger(ledger_path) as first, SqliteLedger(ledger_path) as second:
        abandoned = first.claim(endpoint.ledger_key, 'a', lease=0.3)
        abandoned.__enter__()  # never left: its holder "hangs"
        started = time.monotonic()
        with second.claim(endpoint.ledger_key, 'a', lease=30):
            waited = time.monotonic() - started
        assert 0.2 <= waited < 2.0


def _claim_and_die(path, key, alert_id, lease, claimed_at):
    ledger = SqliteLedger(path)
    holder = ledger.claim(key, alert_id, lease=lease)
    holder.__enter__()  # keep a reference: a collected context manager would release the claim
    claimed_at.value = time.time()
    os._exit(0)  # dies holding the claim: no release, no clean-up


def test_claim_of_a_dead_holder_is_taken_over(fork_context, ledger_path, endpoint):
    claimed_at = fork_context.Value('d', 0.0)
    run_processes(fork_context, _claim_and_die, [(ledger_path, endpoint.ledger_key, 'a', 0.5, claimed_at)])
    assert claimed_at.value > 0

    with SqliteLedger(ledger_path) as ledger:
        with ledger.claim(endpoint.ledger_key, 'a', lease=30):
            taken_over = time.time()
    # Its holder is gone from this controller: taken over at once, not after the 0.5 s lease.
    assert claimed_at.value <= taken_over < claimed_at.value + 3.0


def _claim_repeatedly(path, key, alert_id, rounds, start, holders, most_holders, counter_path):
    with SqliteLedger(path) as ledger:
        start.wait()
        for _round in range(rounds):
            with ledger.claim(key, alert_id, lease=30):
                with holders.get_lock():
                    holders.value += 1
                    most_holders.value = max(most_holders.value, holders.value)
                # A read-modify-write that only the claim protects: overlapping holders would lose counts.
                with open(counter_path) as handle:
                    count = int(handle.read())
                time.sleep(0.01)
                with open(counter_path, 'w') as handle:
                    handle.write(str(count + 1))
                with holders.get_lock():
                    holders.value -= 1


def test_racing_processes_hold_a_claim_one_at_a_time(fork_context, ledger_path, endpoint, tmp_path):
    processes, rounds = 4, 5
    SqliteLedger(ledger_path).close()
    counter_path = tmp_path / 'counter'
    counter_path.write_text('0')
    start = fork_context.Barrier(processes)
    holders = fork_context.Value('i', 0)
    most_holders = fork_context.Value('i', 0)

    run_processes(
        fork_context,
        _claim_repeatedly,
        [(ledger_path, endpoint.ledger_key, 'same-alert', rounds, start, holders, most_holders, str(counter_path))] * processes,
    )
    assert most_holders.value == 1
    assert int(counter_path.read_text()) == processes * rounds


def _write_many(path, key, worker, count, start, make_payload):
    from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import build_alert

    start.wait()
    with SqliteLedger(path) as ledger:  # every worker also races to create the ledger
        for number in range(count):
            alert = build_alert(make_payload(worker, number))
            if number % 5 == 4:
                ledger.queue(key, alert)
            else:
                ledger.record(key, alert)


def _payload(worker, number):
    return {'alert_name': 'Concurrent', 'status': 'Alarm', 'alert_id': f'w{worker}-n{number}', 'description': str(number)}


def _open_at_once(path, start):
    start.wait()
    SqliteLedger(path).close()


def test_processes_creating_the_ledger_at_once_all_open_it(fork_context, tmp_path):
    # Each of them switches the new file to WAL, and SQLite answered the losers "database is locked" at once
    # instead of waiting: about one race in five with 8 processes, so 30 races all but always caught it.
    for race in range(30):
        path = str(tmp_path / f'race-{race}' / 'ledger.sqlite3')
        start = fork_context.Barrier(8)
        run_processes(fork_context, _open_at_once, [(path, start)] * 8)


def test_concurrent_writers_lose_no_updates(fork_context, ledger_path, endpoint):
    workers, count = 8, 25
    start = fork_context.Barrier(workers)
    run_processes(
        fork_context, _write_many, [(ledger_path, endpoint.ledger_key, worker, count, start, _payload) for worker in range(workers)]
    )

    with SqliteLedger(ledger_path) as ledger:
        for worker in range(workers):
            for number in range(count):
                record = ledger.lookup(endpoint.ledger_key, f'w{worker}-n{number}')
                assert record is not None, (worker, number)
                assert record.payload['description'] == str(number)
                assert record.pending is (number % 5 == 4)
        pending = ledger.pending(endpoint.ledger_key)
    assert len(pending) == workers * count // 5
    assert len({queued.seq for queued in pending}) == len(pending)


# -- cost of opening, and the ledger shared by a process's tasks (issue 5: make bench) ---------------


def test_open_does_not_read_the_whole_ledger(ledger_path, endpoint, make_alert, monkeypatch):
    with SqliteLedger(ledger_path) as ledger:
        ledger.record(endpoint.ledger_key, make_alert())
    statements = []
    connect = sqlite3.connect

    def traced_connect(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(_ledger_sqlite.sqlite3, 'connect', traced_connect)
    SqliteLedger(ledger_path).close()
    assert statements
    # count(*) reads every page of the table: milliseconds per module task on a ledger of 100,000 alerts.
    assert not [statement for statement in statements if 'count(' in statement.lower()]


def test_shared_ledger_is_opened_once_per_process(ledger_path, endpoint, make_alert):
    first = shared_ledger(ledger_path)
    try:
        first.record(endpoint.ledger_key, make_alert())
        again = shared_ledger(os.path.join(os.path.dirname(ledger_path), '.', os.path.basename(ledger_path)))
        assert again is first
        assert again.lookup(endpoint.ledger_key, make_alert().alert_id) is not None
    finally:
        discard_shared(first)


def test_shared_ledger_follows_a_deleted_ledger(ledger_path, endpoint, make_alert):
    first = shared_ledger(ledger_path)
    try:
        first.record(endpoint.ledger_key, make_alert())
        for suffix in ('', '-wal', '-shm'):
            if os.path.exists(ledger_path + suffix):
                os.unlink(ledger_path + suffix)
        second = shared_ledger(ledger_path)
        assert second is not first
        # A deleted ledger is a fresh start, as it is for a process that opens it for the first time.
        assert second.lookup(endpoint.ledger_key, make_alert().alert_id) is None
        assert os.path.isfile(ledger_path)
    finally:
        discard_shared(shared_ledger(ledger_path))
    with pytest.raises(LedgerError):
        first.lookup(endpoint.ledger_key, make_alert().alert_id)  # closed when it was replaced


def test_discarded_shared_ledger_is_closed_and_reopened(ledger_path, endpoint, make_alert):
    first = shared_ledger(ledger_path)
    discard_shared(first)
    with pytest.raises(LedgerError):
        first.lookup(endpoint.ledger_key, make_alert().alert_id)
    second = shared_ledger(ledger_path)
    try:
        assert second is not first
        second.record(endpoint.ledger_key, make_alert())
    finally:
        discard_shared(second)
    discard_shared(second)  # a second discard is harmless


def _shared_in_child(path, parent_id, result_path):
    child = shared_ledger(path)
    with open(result_path, 'w') as handle:
        handle.write('own' if id(child) != parent_id else 'inherited')
    discard_shared(child)


def test_forked_child_opens_its_own_shared_ledger(fork_context, ledger_path, tmp_path):
    parent = shared_ledger(ledger_path)
    try:
        result_path = tmp_path / 'child'
        run_processes(fork_context, _shared_in_child, [(ledger_path, id(parent), str(result_path))])
        assert result_path.read_text() == 'own'
        # The child's exit left the parent's connection alone.
        parent.prune_if_due()
    finally:
        discard_shared(parent)


@pytest.mark.parametrize('name', ['led\x00ger.sqlite3', 'led\ud800ger.sqlite3'])
def test_a_path_no_file_can_have_is_a_ledger_error(tmp_path, name):
    # Found by the fault suite (tests/faults): ledger_path with a NUL or an unencodable character raised
    # ValueError/UnicodeEncodeError from deep inside os and sqlite3, which a task shows as a traceback.
    with pytest.raises(LedgerError, match='is not a valid file name.*set ledger_path to another file'):
        SqliteLedger(str(tmp_path / 'state' / name))
    assert not (tmp_path / 'state').exists()


def test_undecodable_bytes_in_a_path_are_fine(tmp_path):
    # Surrogate escapes stand for bytes the file system takes as they are.
    with SqliteLedger(str(tmp_path / 'led\udcffger.sqlite3')) as ledger:
        assert ledger.pending('e' * 64) == []


def test_host_names_with_undecodable_bytes_are_stored(ledger_path, make_alert):
    # Found by the fault suite (tests/faults): a host named with a lone surrogate made SQLite refuse the outbox
    # entry (UnicodeEncodeError), and the callback lost the Alarm with "Callback dispatch ... failed".
    endpoint_key = 'e' * 64
    with SqliteLedger(ledger_path) as ledger:
        ledger.queue(endpoint_key, make_alert(), hosts=('web\ud800', 'db\udcff'))
        [queued] = ledger.pending(endpoint_key)
        ledger.delivered(endpoint_key, queued)
        record = ledger.lookup(endpoint_key, queued.alert.alert_id)
    assert queued.hosts == ('web\ud800', 'db\udcff')
    assert record.hosts == ('web\ud800', 'db\udcff')


# -- one sender per alert: fenced writes (issue 10, item 5) ---------------------------------------


def test_a_write_under_a_claim_taken_over_is_refused(ledger_path, endpoint, make_alert):
    key, alert = endpoint.ledger_key, make_alert()
    with SqliteLedger(ledger_path) as slow, SqliteLedger(ledger_path) as other:
        slow.queue(key, alert)
        [queued] = slow.pending(key)
        stale = slow.try_claim(key, alert.alert_id, lease=0.05)
        time.sleep(0.1)
        fresh = other.try_claim(key, alert.alert_id, lease=30)
        assert fresh is not None
        ok = make_alert(status='OK')
        other.record(key, ok, claim=fresh)
        with pytest.raises(LeaseLost, match='passed to another sender'):
            slow.delivered(key, queued, stale)
        with pytest.raises(LeaseLost):
            slow.record(key, alert, claim=stale)
        with pytest.raises(LeaseLost):
            slow.discard(queued, stale)
        # Nothing the stale sender tried got through: the entry still waits, the newer record stands.
        assert [q.seq for q in other.pending(key)] == [queued.seq]
        assert other.lookup(key, alert.alert_id).status == 'Alarm'  # the queued entry is the current state
        other.release(fresh)
        with pytest.raises(LeaseLost):  # a released claim fences its holder out too
            other.delivered(key, queued, fresh)
        renewed = other.try_claim(key, alert.alert_id, lease=30)
        other.renew(renewed)
        with pytest.raises(LeaseLost):
            other.renew(fresh)


def test_every_fenced_write_renews_the_claim(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    for status in ('Alarm', 'OK'):
        ledger.queue(key, make_alert(status=status))
    claim = ledger.try_claim(key, make_alert().alert_id, lease=0.3)
    for queued in ledger.pending(key):
        time.sleep(0.2)
        assert ledger.delivered(key, queued, claim) is True
    # 0.4 s after it was taken, a 0.3 s lease is still held: each delivery renewed it.
    assert ledger.try_claim(key, make_alert().alert_id, lease=1) is None


def test_an_entry_already_delivered_does_not_overwrite_a_newer_record(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.queue(key, make_alert())
    [alarm] = ledger.pending(key)
    assert ledger.delivered(key, alarm) is True
    ledger.record(key, make_alert(status='OK'))
    assert ledger.delivered(key, alarm) is False
    assert ledger.lookup(key, alarm.alert.alert_id).status == 'OK'


def test_pending_of_one_alert(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.queue(key, make_alert(alert_id='a'))
    ledger.queue(key, make_alert(alert_id='b'))
    ledger.queue(key, make_alert(alert_id='a', status='OK'))
    assert [(q.alert.alert_id, q.alert.status) for q in ledger.pending(key, 'a')] == [('a', 'Alarm'), ('a', 'OK')]


# -- failures held by a running playbook (item 3) -------------------------------------------------


def test_a_held_failure_is_durable_but_not_sent_nor_the_state_until_released(ledger_path, endpoint, make_alert):
    key, alert = endpoint.ledger_key, make_alert()
    with SqliteLedger(ledger_path) as run:
        run.hold(key, alert, ['web1'], token='run-1', owner='controller:1')
    with SqliteLedger(ledger_path) as other:
        assert other.pending(key) == []
        assert other.lookup(key, alert.alert_id) is None
        assert other.release_holds('run-1') == 1
        [queued] = other.pending(key)
        assert (queued.alert.payload, queued.hosts) == (alert.payload, ('web1',))
        assert other.lookup(key, alert.alert_id).pending is True


def test_a_newer_hold_replaces_the_runs_earlier_one(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.hold(key, make_alert(description='web1 failed'), ['web1'], token='run-1', owner='c:1')
    ledger.hold(key, make_alert(description='web1 and web2 failed'), ['web1', 'web2'], token='run-1', owner='c:1')
    ledger.hold(key, make_alert(alert_id='other'), ['web3'], token='run-1', owner='c:1')
    assert ledger.release_holds('run-1') == 2
    assert [(q.alert.alert_id, q.alert.payload['description'], q.hosts) for q in ledger.pending(key)] == [
        (make_alert().alert_id, 'web1 and web2 failed', ('web1', 'web2')),
        ('other', make_alert().payload['description'], ('web3',)),
    ]


def test_settle_replaces_a_hold_by_the_final_entry_or_by_nothing(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.hold(key, make_alert(alert_id='a'), ['web1'], token='run-1', owner='c:1')
    ledger.hold(key, make_alert(alert_id='b'), ['web1'], token='run-1', owner='c:1')
    ledger.settle(key, 'a', 'run-1', make_alert(alert_id='a', description='final'), ['web1', 'web2'])
    ledger.settle(key, 'b', 'run-1', None)
    assert ledger.release_holds('run-1') == 0
    assert [(q.alert.alert_id, q.alert.payload['description'], q.hosts) for q in ledger.pending(key)] == [
        ('a', 'final', ('web1', 'web2')),
    ]


def test_an_expired_hold_is_deliverable_and_renewing_keeps_it_held(ledger, endpoint, make_alert, monkeypatch):
    key = endpoint.ledger_key
    ledger.hold(key, make_alert(alert_id='a'), ['web1'], token='alive', owner='c:1')
    ledger.hold(key, make_alert(alert_id='b'), ['web1'], token='gone', owner='c:2')
    later = time.time() + _ledger_sqlite.HOLD_LEASE_SECONDS + 1
    monkeypatch.setattr(_ledger_sqlite.time, 'time', lambda: later)
    assert [q.alert.alert_id for q in ledger.pending(key)] == ['a', 'b']
    assert ledger.renew_holds('alive') == 1
    assert [q.alert.alert_id for q in ledger.pending(key)] == ['b']


def test_holds_of_a_dead_process_on_this_host_are_released(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    here, dead_pid = socket.gethostname(), 2 ** 22 + 7  # above Linux's pid_max: no process has it
    ledger.hold(key, make_alert(alert_id='dead'), ['web1'], token='t1', owner=f'{here}:{dead_pid}')
    ledger.hold(key, make_alert(alert_id='alive'), ['web1'], token='t2', owner=f'{here}:{os.getpid()}')
    ledger.hold(key, make_alert(alert_id='elsewhere'), ['web1'], token='t3', owner=f'not-{here}:{dead_pid}')
    assert ledger.release_stale_holds() == 1
    assert [q.alert.alert_id for q in ledger.pending(key)] == ['dead']


def test_a_schema_1_ledger_is_upgraded_and_keeps_what_it_holds(ledger_path, endpoint, make_alert):
    os.makedirs(os.path.dirname(ledger_path), mode=0o700, exist_ok=True)
    conn = sqlite3.connect(ledger_path)
    conn.executescript("""
        CREATE TABLE alerts (endpoint TEXT NOT NULL, alert_id TEXT NOT NULL, status TEXT NOT NULL,
            fingerprint TEXT NOT NULL, payload TEXT NOT NULL, hosts TEXT NOT NULL DEFAULT '[]', updated REAL NOT NULL,
            PRIMARY KEY (endpoint, alert_id));
        CREATE TABLE claims (endpoint TEXT NOT NULL, alert_id TEXT NOT NULL, token TEXT NOT NULL, expires REAL NOT NULL,
            PRIMARY KEY (endpoint, alert_id));
        CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, endpoint TEXT NOT NULL, alert_id TEXT NOT NULL,
            status TEXT NOT NULL, fingerprint TEXT NOT NULL, payload TEXT NOT NULL, hosts TEXT NOT NULL DEFAULT '[]',
            queued REAL NOT NULL);
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        PRAGMA user_version=1;
    """)
    alert = make_alert()
    conn.execute('INSERT INTO outbox (endpoint, alert_id, status, fingerprint, payload, hosts, queued) VALUES (?, ?, ?, ?, ?, ?, ?)',
                 (endpoint.ledger_key, alert.alert_id, alert.status, alert.fingerprint, _ledger_sqlite.dumps(alert.payload), '["web1"]', 1.0))
    conn.commit()
    conn.close()
    os.chmod(ledger_path, 0o600)
    with SqliteLedger(ledger_path, read_only=True) as check_mode:
        assert [q.alert.payload for q in check_mode.pending(endpoint.ledger_key)] == [alert.payload]
    with SqliteLedger(ledger_path) as ledger:
        assert [q.hosts for q in ledger.pending(endpoint.ledger_key)] == [('web1',)]
        ledger.hold(endpoint.ledger_key, make_alert(alert_id='new'), ['web2'], token='t', owner='c:1')
    assert sqlite3.connect(ledger_path).execute('PRAGMA user_version').fetchone()[0] == _ledger_sqlite.SCHEMA_VERSION


# -- only corruption moves a ledger aside (item 6) ------------------------------------------------


@pytest.mark.parametrize('error', [
    sqlite3.OperationalError('database or disk is full'),
    sqlite3.OperationalError('disk I/O error'),
    sqlite3.OperationalError('attempt to write a readonly database'),
    sqlite3.OperationalError('unable to open database file'),
])
def test_errors_other_than_corruption_leave_the_ledger_where_it_is(ledger_path, endpoint, make_alert, monkeypatch, error):
    with SqliteLedger(ledger_path) as ledger:
        ledger.record(endpoint.ledger_key, make_alert())
    before = files_in(os.path.dirname(ledger_path))

    def failing_wal(conn):
        raise error

    monkeypatch.setattr(_ledger_sqlite, '_use_wal', failing_wal)
    warnings: list[str] = []
    with pytest.raises(LedgerError, match=f'^the ledger {ledger_path} cannot be used: {error}$'):
        SqliteLedger(ledger_path, warn=warnings.append)
    assert warnings == []
    assert sorted(files_in(os.path.dirname(ledger_path))) == sorted(before)
    monkeypatch.undo()
    with SqliteLedger(ledger_path) as ledger:
        assert ledger.lookup(endpoint.ledger_key, make_alert().alert_id).status == 'Alarm'


def test_a_read_only_ledger_file_is_an_error_not_moved_aside(ledger_path, endpoint, make_alert):
    with SqliteLedger(ledger_path) as ledger:
        ledger.record(endpoint.ledger_key, make_alert())
    directory = os.path.dirname(ledger_path)
    for name in os.listdir(directory):
        os.remove(os.path.join(directory, name)) if name != 'ledger.sqlite3' else None
    # Read-only for everyone, root included: an immutable-looking file on a read-only mount.
    os.chmod(ledger_path, 0o400)
    os.chmod(directory, 0o500)
    try:
        if os.geteuid() == 0:
            pytest.skip('root writes to read-only files and directories')
        with pytest.raises(LedgerError, match='cannot be used'):
            SqliteLedger(ledger_path)
        assert os.listdir(directory) == ['ledger.sqlite3']
    finally:
        os.chmod(directory, 0o700)
        os.chmod(ledger_path, 0o600)


# -- check mode opens the ledger read-only (item 7) -----------------------------------------------


def test_read_only_changes_nothing_on_disk(ledger_path, endpoint, make_alert):
    with SqliteLedger(ledger_path) as ledger:
        ledger.record(endpoint.ledger_key, make_alert())
        ledger.queue(endpoint.ledger_key, make_alert(status='OK'))
    os.chmod(ledger_path, 0o644)  # loose: a read-write open would make it 0600
    with open(ledger_path, 'rb') as stream:
        content = stream.read()
    mtime = os.stat(ledger_path).st_mtime_ns
    with SqliteLedger(ledger_path, read_only=True) as ledger:
        assert ledger.lookup(endpoint.ledger_key, make_alert().alert_id).status == 'OK'
        assert len(ledger.pending(endpoint.ledger_key)) == 1
        with pytest.raises(LedgerError, match='readonly'):
            ledger.record(endpoint.ledger_key, make_alert(description='changed'))
    assert mode_of(ledger_path) == 0o644
    assert os.stat(ledger_path).st_mtime_ns == mtime
    with open(ledger_path, 'rb') as stream:
        assert stream.read() == content


def test_read_only_never_moves_a_corrupt_ledger_aside(ledger_path):
    os.makedirs(os.path.dirname(ledger_path), mode=0o700, exist_ok=True)
    with open(ledger_path, 'wb') as stream:
        stream.write(b'not a ledger at all' * 300)
    os.chmod(ledger_path, 0o600)
    with pytest.raises(LedgerError, match='cannot be read: file is not a database'):
        SqliteLedger(ledger_path, read_only=True).lookup('e', 'a')
    assert os.listdir(os.path.dirname(ledger_path)) == ['ledger.sqlite3']


# -- a ledger that is not yours is refused (item 12) ----------------------------------------------


def _give_away(path: str) -> int:
    other = 65534 if os.geteuid() != 65534 else 65533
    try:
        os.chown(path, other, -1)
    except PermissionError:
        pytest.skip('only root can give a file to another user')
    return other


@pytest.mark.parametrize('read_only', [False, True])
def test_a_ledger_owned_by_another_user_is_refused(ledger_path, endpoint, make_alert, read_only):
    with SqliteLedger(ledger_path) as ledger:
        ledger.record(endpoint.ledger_key, make_alert())
    other = _give_away(ledger_path)
    with pytest.raises(LedgerError) as raised:
        SqliteLedger(ledger_path, read_only=read_only)
    message = str(raised.value)
    assert f'belongs to another user (uid {other}, you are uid {os.geteuid()})' in message
    assert 'set ledger_path' in message and f'chown {os.geteuid()} {ledger_path}' in message


def test_a_ledger_that_cannot_be_made_private_is_refused(ledger_path, monkeypatch):
    SqliteLedger(ledger_path).close()
    os.chmod(ledger_path, 0o666)

    def refuse(path, mode):
        raise PermissionError(1, 'Operation not permitted')

    monkeypatch.setattr(_ledger_sqlite.os, 'chmod', refuse)
    with pytest.raises(LedgerError, match=r'can be read by others \(mode 0666\) and cannot be made private: '
                                          r'Operation not permitted; run chmod 600 '):
        SqliteLedger(ledger_path)


def test_a_claim_held_by_a_killed_process_not_yet_reaped_is_taken_over(ledger, endpoint, monkeypatch):
    # A process killed with its parent stays a zombie until someone reaps it, which on some systems is never.
    child = os.fork()
    if child == 0:
        os._exit(0)
    try:
        for _attempt in range(200):
            with open(f'/proc/{child}/stat', encoding='utf-8') as stat_file:
                if stat_file.read().rsplit(')', 1)[1].split()[0] == 'Z':
                    break
            time.sleep(0.01)
        with monkeypatch.context() as patch:
            patch.setattr(_ledger_sqlite, 'this_process', lambda: f'{socket.gethostname()}:{child}')
            assert ledger.try_claim(endpoint.ledger_key, 'a', lease=60) is not None
        assert ledger.try_claim(endpoint.ledger_key, 'a', lease=60) is not None
    finally:
        os.waitpid(child, 0)
