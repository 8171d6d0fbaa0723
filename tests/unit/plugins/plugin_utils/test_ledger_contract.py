# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The ledger's behaviour contract, run against every backend (issue 11, item 3).

Each test takes ``ledger_backend`` (conftest.py), so it runs once on SQLite and once on PostgreSQL, and uses only
what the plugins use: ``open_ledger`` and the public methods of ``Ledger`` (the backend fixture only sets the scene:
a ledger missing, or of a newer schema, or slow to commit). A test that passes on one backend and fails on the other
has found a defect. What only SQLite has (files, modes, corruption) is tested in test_ledger.py.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import typing as t
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import AlertValidationError
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import (
    RETENTION_SECONDS,
    Claim,
    Ledger,
    LedgerError,
    LedgerUnreachable,
    LeaseLost,
    Queued,
    Record,
    Silence,
    copy_ledger,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_spec import mask_url
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_open import open_ledger

from ansible_collections.temperstack.alerting.tests.unit.plugins.plugin_utils.conftest import LedgerBackend, with_database

OTHER_ENDPOINT = 'f' * 64
# Long enough for a few round trips to the server, short enough to wait out.
SHORT_LEASE = 0.3
# When a record was written, by whichever clock a backend takes it from, compared with time.time() around the write.
CLOCK_SLACK = 0.05
# Host names as inventories have them: non-ASCII, and undecodable bytes (lone surrogates) from a foreign file system.
HOSTS = ('web01', 'wéb-02.example', '東京-db', 'db\udcff', 'web\ud800')
# Above Linux's largest pid_max (2 ** 22): no process on this host has it.
DEAD_PID = 2 ** 22 + 7
PASSWORD_CANARY = 'pgLEAKCANARY5e1f07'
# Names whose order differs between code points (SQLite's) and a linguistic collation (most PostgreSQL servers').
# By code point: B, Web_3, a, web-2, web1. By ICU's en-US: a, B, Web_3, web-2, web1 (case comes second).
NAMES = ('web1', 'web-2', 'Web_3', 'a', 'B')


@pytest.fixture
def ledger(ledger_backend: LedgerBackend) -> Ledger:
    return ledger_backend.open()


@pytest.fixture
def controller_file(tmp_path) -> t.Iterator[Ledger]:
    """A controller's own SQLite ledger: what the fleet's migration copies from and the fallback copies back."""
    with open_ledger(str(tmp_path / 'controller' / 'ledger.sqlite3')) as ledger:
        yield ledger


def record_of(alert: t.Any, updated: float, pending: bool = False, hosts: t.Iterable[str] = ()) -> Record:
    return Record(alert.alert_id, alert.status, alert.fingerprint, alert.payload, updated, pending, tuple(hosts))


def shown(queued: t.Iterable[Queued]) -> list[tuple[int, str, str, str, tuple[str, ...]]]:
    """Queued entries as comparable values (an Alert compares by identity)."""
    return [(q.seq, q.alert.alert_id, q.alert.status, q.alert.payload.get('description', ''), q.hosts) for q in queued]


def without_seqs(exported: list[tuple[str, int | None, Record]]) -> list[tuple[str, bool, Record]]:
    """An export as another ledger would hold it: an entry's seq is the ledger's own."""
    return [(endpoint, seq is None, record) for endpoint, seq, record in exported]


def live_owner() -> str:
    """A holder that is running: this process."""
    return f'{socket.gethostname()}:{os.getpid()}'


# -- lookup and record ------------------------------------------------------------------------------


def test_an_unknown_alert_has_no_state(ledger, endpoint, make_alert):
    key, alert_id = endpoint.ledger_key, make_alert().alert_id
    assert ledger.lookup(key, alert_id) is None
    assert ledger.pending(key) == []
    assert ledger.pending(key, alert_id) == []
    assert ledger.newest(key, alert_id) is None
    assert ledger.export() == []


def test_a_recorded_alert_is_looked_up_as_recorded(ledger, endpoint, make_alert):
    key, alert = endpoint.ledger_key, make_alert()
    before = time.time()
    ledger.record(key, alert, hosts=['web01', 'web02'])
    after = time.time()

    record = ledger.lookup(key, alert.alert_id)
    assert isinstance(record, Record)
    assert record == record_of(alert, record.updated, hosts=['web01', 'web02'])
    assert isinstance(record.updated, float)
    assert before - CLOCK_SLACK <= record.updated <= after + CLOCK_SLACK
    assert ledger.newest(key, alert.alert_id) == record.updated


def test_record_overwrites_the_alerts_record(ledger, endpoint, make_alert):
    key, alarm, ok = endpoint.ledger_key, make_alert(), make_alert(status='OK')
    ledger.record(key, alarm, hosts=['web01', 'web02'])
    first = ledger.lookup(key, alarm.alert_id)
    ledger.record(key, ok)

    record = ledger.lookup(key, alarm.alert_id)
    assert record == record_of(ok, record.updated)
    assert record.updated >= first.updated
    assert [(endpoint_key, seq, kept.status) for endpoint_key, seq, kept in ledger.export()] == [(key, None, 'OK')]


def test_lookup_is_the_newest_deliverable_entry_while_one_waits(ledger, endpoint, make_alert):
    key, alert_id = endpoint.ledger_key, make_alert().alert_id
    ledger.record(key, make_alert(status='OK'))
    ledger.queue(key, make_alert(description='first'), hosts=['web01'])
    before = time.time()
    ledger.queue(key, make_alert(description='second'), hosts=['web02'])
    # Held by a running playbook: not yet part of the alert's state.
    ledger.hold(key, make_alert(description='held'), ['web03'], token='run-1', owner=live_owner())

    current = ledger.lookup(key, alert_id)
    assert (current.status, current.payload['description'], current.pending, current.hosts) == ('Alarm', 'second', True, ('web02',))
    assert current.fingerprint == make_alert(description='second').fingerprint
    assert current.updated >= before - CLOCK_SLACK

    for queued in ledger.pending(key):
        assert ledger.delivered(key, queued) is True
    current = ledger.lookup(key, alert_id)
    assert (current.payload['description'], current.pending, current.hosts) == ('second', False, ('web02',))


def test_records_and_entries_belong_to_one_endpoint_and_alert(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.record(key, make_alert())
    ledger.queue(key, make_alert(resource_id='db01'))
    assert ledger.lookup(OTHER_ENDPOINT, make_alert().alert_id) is None
    assert ledger.lookup(key, make_alert(resource_id='web02').alert_id) is None
    assert ledger.pending(OTHER_ENDPOINT) == []
    assert ledger.pending(key, make_alert().alert_id) == []
    assert ledger.lookup(key, make_alert(resource_id='db01').alert_id).pending is True


def test_hosts_and_non_ascii_text_round_trip(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    alert = make_alert(resource_id='wéb-02', description='/var is 93 % full — 東京')
    ledger.record(key, alert, hosts=HOSTS)
    assert ledger.lookup(key, alert.alert_id) == record_of(alert, ledger.lookup(key, alert.alert_id).updated, hosts=HOSTS)

    ledger.queue(key, alert, hosts=HOSTS)
    [queued] = ledger.pending(key)
    assert (queued.alert.payload, queued.hosts) == (alert.payload, HOSTS)
    assert ledger.lookup(key, alert.alert_id).hosts == HOSTS
    assert ledger.delivered(key, queued) is True
    assert ledger.lookup(key, alert.alert_id).hosts == HOSTS

    ledger.hold(key, alert, HOSTS, token='run-1', owner=live_owner())
    assert ledger.release_holds('run-1') == 1
    assert [q.hosts for q in ledger.pending(key)] == [HOSTS]
    assert [record.hosts for _endpoint, _seq, record in ledger.export()] == [HOSTS, HOSTS]


def test_any_alert_id_the_alert_model_accepts_is_kept(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    # The last one holds a NUL, which a PostgreSQL text value cannot.
    for alert_id in ('wéb-東京', "it's \"quoted\"; --", '%_\\*', 'x' * 128, 'a\x00b'):
        try:
            alert = make_alert(alert_id=alert_id)
        except AlertValidationError:
            continue  # refused before any ledger sees it: that is as good
        ledger.record(key, alert)
        assert ledger.lookup(key, alert_id) == record_of(alert, ledger.lookup(key, alert_id).updated)
        seq = ledger.queue(key, alert)
        assert [q.seq for q in ledger.pending(key, alert_id)] == [seq]
        claim = ledger.try_claim(key, alert_id, lease=30)
        assert claim is not None
        [queued] = ledger.pending(key, alert_id)
        assert ledger.delivered(key, queued, claim) is True
        ledger.release(claim)


# -- claims -----------------------------------------------------------------------------------------


def test_a_claim_is_held_by_one_sender_until_released(ledger_backend, endpoint):
    key = endpoint.ledger_key
    first, second = ledger_backend.open(), ledger_backend.open()
    claim = first.try_claim(key, 'a', lease=30)
    assert claim == Claim(key, 'a', claim.token, 30)
    assert first.claims == {claim}

    assert first.try_claim(key, 'a', lease=30) is None
    assert second.try_claim(key, 'a', lease=30) is None
    # Distinct alerts, and the same alert of another endpoint, go out in parallel.
    assert second.try_claim(key, 'b', lease=30) is not None
    assert second.try_claim(OTHER_ENDPOINT, 'a', lease=30) is not None

    first.release(claim)
    assert first.claims == set()
    taken = second.try_claim(key, 'a', lease=30)
    assert taken is not None and taken.token != claim.token


def test_an_expired_claim_is_taken_over(ledger_backend, endpoint):
    key = endpoint.ledger_key
    hung, other = ledger_backend.open(), ledger_backend.open()
    assert hung.try_claim(key, 'a', lease=SHORT_LEASE) is not None
    assert other.try_claim(key, 'a', lease=30) is None
    time.sleep(SHORT_LEASE + 0.1)
    assert other.try_claim(key, 'a', lease=30) is not None


def test_writes_under_a_claim_taken_over_raise_lease_lost_and_write_nothing(ledger_backend, endpoint, make_alert):
    key, alarm, ok = endpoint.ledger_key, make_alert(), make_alert(status='OK')
    slow, fast = ledger_backend.open(), ledger_backend.open()
    slow.queue(key, alarm)
    [queued] = slow.pending(key)
    stale = slow.try_claim(key, alarm.alert_id, lease=SHORT_LEASE)
    time.sleep(SHORT_LEASE + 0.1)
    fresh = fast.try_claim(key, alarm.alert_id, lease=30)
    assert fresh is not None
    fast.record(key, ok, claim=fresh)
    before = fast.export()

    for write in (
        lambda: slow.record(key, alarm, claim=stale),
        lambda: slow.delivered(key, queued, stale),
        lambda: slow.discard(queued, stale),
        lambda: slow.renew(stale),
    ):
        with pytest.raises(LeaseLost, match='passed to another sender') as raised:
            write()
        assert isinstance(raised.value, LedgerError)
    # Nothing the stale sender tried got through: the entry still waits, the newer record stands, the claim is fresh's.
    assert fast.export() == before
    assert shown(fast.pending(key)) == shown([queued])
    assert slow.try_claim(key, alarm.alert_id, lease=30) is None
    fast.renew(fresh)

    # A released claim fences its holder out too.
    fast.release(fresh)
    with pytest.raises(LeaseLost):
        fast.delivered(key, queued, fresh)
    with pytest.raises(LeaseLost):
        fast.renew(fresh)
    assert fast.export() == before


def test_renew_and_every_fenced_write_extend_the_claim(ledger_backend, endpoint, make_alert):
    key, alert_id = endpoint.ledger_key, make_alert().alert_id
    holder, other = ledger_backend.open(), ledger_backend.open()
    holder.queue(key, make_alert())
    holder.record(key, make_alert(status='OK'))
    claim = holder.try_claim(key, alert_id, lease=SHORT_LEASE)

    # Each time the lease has run out, but nobody took the claim: the holder's write renews it, and it holds again.
    time.sleep(SHORT_LEASE + 0.1)
    holder.renew(claim)
    assert other.try_claim(key, alert_id, lease=30) is None
    time.sleep(SHORT_LEASE + 0.1)
    holder.record(key, make_alert(status='OK'), claim=claim)
    assert other.try_claim(key, alert_id, lease=30) is None
    time.sleep(SHORT_LEASE + 0.1)
    [queued] = holder.pending(key)
    assert holder.delivered(key, queued, claim) is True
    assert other.try_claim(key, alert_id, lease=30) is None

    time.sleep(SHORT_LEASE + 0.1)
    assert other.try_claim(key, alert_id, lease=30) is not None


def test_the_claim_context_waits_for_the_holder_to_release(ledger_backend, endpoint):
    key = endpoint.ledger_key
    holder, waiter = ledger_backend.open(), ledger_backend.open()
    held = holder.try_claim(key, 'a', lease=30)
    acquired: list[tuple[float, Claim]] = []

    def wait_for_the_claim() -> None:
        with waiter.claim(key, 'a', lease=30) as claim:
            acquired.append((time.monotonic(), claim))

    thread = threading.Thread(target=wait_for_the_claim)
    thread.start()
    try:
        time.sleep(0.3)
        assert acquired == []
        released_at = time.monotonic()
        holder.release(held)
    finally:
        thread.join(10)
    assert not thread.is_alive()
    [(acquired_at, claim)] = acquired
    assert released_at <= acquired_at < released_at + 3.0
    assert claim.token != held.token
    # Left, the context released it.
    assert waiter.claims == set()
    assert holder.try_claim(key, 'a', lease=30) is not None


def test_the_claim_context_releases_on_error(ledger_backend, endpoint):
    key = endpoint.ledger_key
    first, second = ledger_backend.open(), ledger_backend.open()
    with pytest.raises(RuntimeError):
        with first.claim(key, 'a', lease=30) as claim:
            assert first.claims == {claim}
            raise RuntimeError('the send failed')
    assert first.claims == set()
    assert second.try_claim(key, 'a', lease=30) is not None


class ClaimingProcess:
    """A process of this host that claims an alert in a ledger of its own, and holds it until it is ended."""

    def __init__(self, spec: str, endpoint_key: str, alert_id: str, lease: float) -> None:
        ready_read, ready_write = os.pipe()
        self._end_read, end_write = os.pipe()
        self._end_write: int | None = end_write
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.close(ready_read)
                os.close(end_write)
                claimed = open_ledger(spec).try_claim(endpoint_key, alert_id, lease) is not None
                os.write(ready_write, b'1' if claimed else b'0')
                os.read(self._end_read, 1)  # returns when the parent closes its end
                code = 0
            finally:
                os._exit(code)  # dies holding the claim: no release, no clean-up
        os.close(ready_write)
        os.close(self._end_read)
        with os.fdopen(ready_read, 'rb') as ready:
            self.claimed = ready.read(1) == b'1'

    def end(self) -> None:
        """Let it exit (not reaped yet: a zombie holds nothing either)."""
        if self._end_write is not None:
            os.close(self._end_write)
            self._end_write = None

    def reap(self) -> int:
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])


def test_a_claim_whose_holder_is_gone_is_taken_at_once(ledger_backend, endpoint):
    key = endpoint.ledger_key
    ledger = ledger_backend.open()
    holder = ClaimingProcess(ledger_backend.spec, key, 'a', lease=60)
    try:
        assert holder.claimed
        assert ledger.try_claim(key, 'a', lease=30) is None  # its holder runs
        holder.end()
        # Taken over as soon as the process has exited, not after its 60 s lease.
        deadline = time.monotonic() + 5
        claim = None
        while claim is None and time.monotonic() < deadline:
            claim = ledger.try_claim(key, 'a', lease=30)
            time.sleep(0.02)
        assert claim is not None
    finally:
        holder.end()
        exit_code = holder.reap()
    assert exit_code == 0


def test_release_claims_of_frees_what_a_stuck_connection_claimed(ledger_backend, endpoint):
    key = endpoint.ledger_key
    stuck, rescuer, next_sender = ledger_backend.open(), ledger_backend.open(), ledger_backend.open()
    first, second = stuck.try_claim(key, 'a', lease=30), stuck.try_claim(key, 'b', lease=30)
    assert stuck.claims == {first, second}
    rescuer.release_claims_of(stuck)
    assert next_sender.try_claim(key, 'a', lease=30) is not None
    assert next_sender.try_claim(key, 'b', lease=30) is not None
    with pytest.raises(LeaseLost):
        stuck.renew(first)


# -- the outbox -------------------------------------------------------------------------------------


def test_pending_is_oldest_first_per_endpoint_and_per_alert(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    alarm_a, alarm_b, ok_a = make_alert(alert_id='a'), make_alert(alert_id='b'), make_alert(alert_id='a', status='OK')
    seqs = [
        ledger.queue(key, alarm_a, hosts=['web01']),
        ledger.queue(OTHER_ENDPOINT, make_alert(alert_id='c')),
        ledger.queue(key, alarm_b),
        ledger.queue(key, ok_a),
    ]
    assert all(isinstance(seq, int) for seq in seqs)
    assert seqs == sorted(set(seqs))

    pending = ledger.pending(key)
    assert all(isinstance(queued, Queued) for queued in pending)
    assert [(q.seq, q.alert.payload, q.hosts) for q in pending] == [
        (seqs[0], alarm_a.payload, ('web01',)),
        (seqs[2], alarm_b.payload, ()),
        (seqs[3], ok_a.payload, ()),
    ]
    assert [q.seq for q in ledger.pending(key, 'a')] == [seqs[0], seqs[3]]
    assert [q.seq for q in ledger.pending(OTHER_ENDPOINT)] == [seqs[1]]
    assert ledger.pending(key, 'unknown') == []


def test_delivered_records_the_entry_and_takes_it_out_of_the_outbox(ledger, endpoint, make_alert):
    key, alert_id = endpoint.ledger_key, make_alert().alert_id
    ledger.queue(key, make_alert(), hosts=['web01'])
    ledger.queue(key, make_alert(status='OK'))
    alarm, ok = ledger.pending(key)

    assert ledger.delivered(key, alarm) is True
    assert shown(ledger.pending(key)) == shown([ok])
    # The OK still waits, so it is the alert's state.
    assert (ledger.lookup(key, alert_id).status, ledger.lookup(key, alert_id).pending) == ('OK', True)

    before = time.time()
    assert ledger.delivered(key, ok) is True
    assert ledger.pending(key) == []
    record = ledger.lookup(key, alert_id)
    assert record == record_of(make_alert(status='OK'), record.updated)
    assert record.updated >= before - CLOCK_SLACK


def test_an_entry_already_delivered_is_not_recorded_again(ledger_backend, endpoint, make_alert):
    key, alert_id = endpoint.ledger_key, make_alert().alert_id
    first, second = ledger_backend.open(), ledger_backend.open()
    first.queue(key, make_alert())
    [entry], [same_entry] = first.pending(key), second.pending(key)

    assert first.delivered(key, entry) is True
    first.record(key, make_alert(status='OK'))
    # Recording it now would put the Alarm over the newer OK.
    assert second.delivered(key, same_entry) is False
    assert first.delivered(key, entry) is False
    claim = second.try_claim(key, alert_id, lease=30)
    assert second.delivered(key, same_entry, claim) is False
    assert first.lookup(key, alert_id) == record_of(make_alert(status='OK'), first.lookup(key, alert_id).updated)


def test_discard_drops_an_entry_without_recording_it(ledger, endpoint, make_alert):
    key, alert_id = endpoint.ledger_key, make_alert().alert_id
    ledger.record(key, make_alert(status='OK'))
    ledger.queue(key, make_alert(description='rejected'))
    ledger.queue(key, make_alert(description='also rejected'))
    first, second = ledger.pending(key)

    ledger.discard(first)
    assert shown(ledger.pending(key)) == shown([second])
    assert ledger.lookup(key, alert_id).payload['description'] == 'also rejected'
    claim = ledger.try_claim(key, alert_id, lease=30)
    ledger.discard(second, claim)
    assert ledger.pending(key) == []
    assert ledger.lookup(key, alert_id) == record_of(make_alert(status='OK'), ledger.lookup(key, alert_id).updated)
    ledger.discard(second)  # already gone: nothing to do


# -- failures held by a running playbook --------------------------------------------------------------


def test_a_held_entry_is_durable_but_neither_state_nor_pending_until_released(ledger_backend, endpoint, make_alert):
    key, alert = endpoint.ledger_key, make_alert()
    with ledger_backend.open() as run:
        run.record(key, make_alert(status='OK'))
        run.hold(key, alert, ['web01'], token='run-1', owner=live_owner())
    other = ledger_backend.open()
    assert other.pending(key) == []
    assert other.pending(key, alert.alert_id) == []
    assert (other.lookup(key, alert.alert_id).status, other.lookup(key, alert.alert_id).pending) == ('OK', False)
    assert [seq for _endpoint, seq, _record in other.export()] == [None]

    assert other.release_holds('run-1') == 1
    [queued] = other.pending(key)
    assert (queued.alert.payload, queued.hosts) == (alert.payload, ('web01',))
    assert (other.lookup(key, alert.alert_id).status, other.lookup(key, alert.alert_id).pending) == ('Alarm', True)
    assert other.release_holds('run-1') == 0


def test_a_newer_hold_replaces_the_runs_earlier_one(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.hold(key, make_alert(description='web1 failed'), ['web1'], token='run-1', owner=live_owner())
    ledger.hold(key, make_alert(description='web1 and web2 failed'), ['web1', 'web2'], token='run-1', owner=live_owner())
    ledger.hold(key, make_alert(alert_id='other'), ['web3'], token='run-1', owner=live_owner())
    # Another run's hold of the same alert is its own.
    ledger.hold(key, make_alert(description='run 2 saw it'), ['web4'], token='run-2', owner=live_owner())

    assert ledger.release_holds('run-1') == 2
    assert [(q.alert.alert_id, q.alert.payload['description'], q.hosts) for q in ledger.pending(key)] == [
        (make_alert().alert_id, 'web1 and web2 failed', ('web1', 'web2')),
        ('other', make_alert().payload['description'], ('web3',)),
    ]
    assert ledger.release_holds('run-2') == 1


def test_settle_replaces_a_held_entry_by_the_alert_or_by_nothing(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.hold(key, make_alert(alert_id='a'), ['web1'], token='run-1', owner=live_owner())
    ledger.hold(key, make_alert(alert_id='b'), ['web1'], token='run-1', owner=live_owner())
    ledger.hold(key, make_alert(alert_id='a', description='run 2'), ['web9'], token='run-2', owner=live_owner())

    ledger.settle(key, 'a', 'run-1', make_alert(alert_id='a', description='final'), ['web1', 'web2'])
    ledger.settle(key, 'b', 'run-1', None)
    assert [(q.alert.alert_id, q.alert.payload['description'], q.hosts) for q in ledger.pending(key)] == [
        ('a', 'final', ('web1', 'web2')),
    ]
    assert ledger.lookup(key, 'b') is None
    assert ledger.release_holds('run-1') == 0
    assert ledger.release_holds('run-2') == 1


def test_renew_holds_counts_the_runs_holds_and_a_lapsed_hold_is_deliverable(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    for alert_id, token in (('a', 'run-1'), ('b', 'run-1'), ('c', 'run-2')):
        ledger.hold(key, make_alert(alert_id=alert_id), ['web1'], token=token, owner=live_owner())
    assert ledger.renew_holds('run-1') == 2
    assert ledger.renew_holds('no-such-run') == 0

    assert ledger.renew_holds('run-1', lease=SHORT_LEASE) == 2
    assert ledger.pending(key) == []
    time.sleep(SHORT_LEASE + 0.1)
    # Not renewed in time: delivered like any other entry.
    assert [q.alert.alert_id for q in ledger.pending(key)] == ['a', 'b']
    assert ledger.lookup(key, 'a').pending is True
    # Renewed after all, by a run that is still going: held again.
    assert ledger.renew_holds('run-1', lease=60) == 2
    assert ledger.pending(key) == []


def test_release_stale_holds_releases_those_of_processes_gone_from_this_host(ledger, endpoint, make_alert):
    key, here = endpoint.ledger_key, socket.gethostname()
    ledger.hold(key, make_alert(alert_id='dead'), ['web1'], token='t1', owner=f'{here}:{DEAD_PID}')
    ledger.hold(key, make_alert(alert_id='alive'), ['web1'], token='t2', owner=live_owner())
    ledger.hold(key, make_alert(alert_id='elsewhere'), ['web1'], token='t3', owner=f'not-{here}:{DEAD_PID}')
    assert ledger.release_stale_holds() == 1
    assert [q.alert.alert_id for q in ledger.pending(key)] == ['dead']
    assert ledger.release_stale_holds() == 0


# -- prune ------------------------------------------------------------------------------------------


def test_prune_forgets_only_resolved_alerts_older_than_the_retention(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    old_ok, old_alarm, queued_ok = (make_alert(resource_id=name, status=status) for name, status in (
        ('old-ok', 'OK'), ('old-alarm', 'Alarm'), ('queued-ok', 'OK')))
    ledger.record(key, old_ok)
    ledger.record(key, old_alarm)
    ledger.queue(key, queued_ok)

    assert ledger.prune(retention=100, now=time.time() + 1000) == 1
    assert ledger.lookup(key, old_ok.alert_id) is None
    assert ledger.lookup(key, old_alarm.alert_id).status == 'Alarm'
    assert [q.alert.alert_id for q in ledger.pending(key)] == [queued_ok.alert_id]

    recent_ok = make_alert(resource_id='recent-ok', status='OK')
    ledger.record(key, recent_ok)
    assert ledger.prune(retention=100) == 0
    assert ledger.lookup(key, recent_ok.alert_id).status == 'OK'


def test_prune_leaves_a_live_claim_alone_whatever_now_it_is_given(ledger_backend, endpoint):
    key = endpoint.ledger_key
    holder, other = ledger_backend.open(), ledger_backend.open()
    claim = holder.try_claim(key, 'a', lease=30)
    holder.prune(retention=100, now=time.time() + 1000)
    assert other.try_claim(key, 'a', lease=30) is None
    holder.renew(claim)


def test_prune_if_due_prunes_at_most_once_per_interval(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    long_ago = time.time() - RETENTION_SECONDS - 3600
    first, second = make_alert(resource_id='first', status='OK'), make_alert(resource_id='second', status='OK')
    assert ledger.adopt(key, record_of(first, long_ago)) is True
    ledger.prune_if_due()
    assert ledger.lookup(key, first.alert_id) is None

    assert ledger.adopt(key, record_of(second, long_ago)) is True
    ledger.prune_if_due()  # pruned a moment ago: not due yet
    assert ledger.lookup(key, second.alert_id) is not None


# -- export, adopt, forget, copy ------------------------------------------------------------------


def test_export_is_records_then_deliverable_entries_in_outbox_order(ledger, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger.record(key, make_alert(alert_id='a', status='OK'))
    ledger.record(OTHER_ENDPOINT, make_alert(alert_id='b'), hosts=['web1'])
    first = ledger.queue(key, make_alert(alert_id='c'), hosts=['web2'])
    ledger.hold(key, make_alert(alert_id='held'), ['web3'], token='run-1', owner=live_owner())
    second = ledger.queue(OTHER_ENDPOINT, make_alert(alert_id='a'))

    exported = ledger.export()
    assert [(endpoint_key, seq, record.alert_id, record.status, record.pending, record.hosts) for endpoint_key, seq, record in exported] == [
        (key, None, 'a', 'OK', False, ()),
        (OTHER_ENDPOINT, None, 'b', 'Alarm', False, ('web1',)),
        (key, first, 'c', 'Alarm', True, ('web2',)),
        (OTHER_ENDPOINT, second, 'a', 'Alarm', True, ()),
    ]
    for endpoint_key, _seq, record in exported:
        assert record == ledger.lookup(endpoint_key, record.alert_id)


def test_adopt_takes_in_only_what_is_newer_than_anything_known_of_the_alert(ledger, endpoint, make_alert):
    key, alarm, ok = endpoint.ledger_key, make_alert(), make_alert(status='OK')
    then = 1_700_000_000.25
    assert ledger.adopt(key, record_of(alarm, then, hosts=['web01'])) is True
    assert ledger.lookup(key, alarm.alert_id) == record_of(alarm, then, hosts=['web01'])
    assert ledger.newest(key, alarm.alert_id) == then

    assert ledger.adopt(key, record_of(alarm, then)) is False  # the same again
    assert ledger.adopt(key, record_of(ok, then - 1)) is False  # an older record
    assert ledger.adopt(key, record_of(ok, then - 1, pending=True)) is False  # an older entry
    assert ledger.pending(key) == []
    assert ledger.lookup(key, alarm.alert_id) == record_of(alarm, then, hosts=['web01'])

    assert ledger.adopt(key, record_of(ok, then + 1, pending=True, hosts=['web01'])) is True
    [queued] = ledger.pending(key)
    assert (queued.alert.payload, queued.hosts) == (ok.payload, ('web01',))
    assert ledger.lookup(key, alarm.alert_id) == record_of(ok, then + 1, pending=True, hosts=['web01'])
    assert ledger.newest(key, alarm.alert_id) == then + 1
    # An entry is known too: nothing older than it, nor as old, goes in behind it.
    assert ledger.adopt(key, record_of(alarm, then + 0.5)) is False
    assert ledger.adopt(key, record_of(alarm, then + 1, pending=True)) is False
    assert shown(ledger.pending(key)) == shown([queued])


def test_forget_drops_a_record_or_one_entry(ledger, endpoint, make_alert):
    key, alarm = endpoint.ledger_key, make_alert()
    ledger.record(key, alarm)
    first = ledger.queue(key, make_alert(status='OK'))
    second = ledger.queue(key, make_alert(description='again'))

    ledger.forget(key, alarm.alert_id, first)
    assert [q.seq for q in ledger.pending(key)] == [second]
    ledger.forget(key, alarm.alert_id)
    assert [(seq is None, record.alert_id) for _endpoint, seq, record in ledger.export()] == [(False, alarm.alert_id)]
    ledger.forget(key, alarm.alert_id, second)
    assert ledger.lookup(key, alarm.alert_id) is None
    assert ledger.export() == []


def fill(ledger: Ledger, key: str, make_alert: t.Callable[..., t.Any]) -> None:
    """What a controller's ledger holds: open and resolved alerts, queued entries, a failure a live run holds."""
    ledger.record(key, make_alert(alert_id='open-alarm'), hosts=HOSTS)
    ledger.record(key, make_alert(alert_id='resolved', status='OK'))
    ledger.record(OTHER_ENDPOINT, make_alert(alert_id='open-alarm', description='elsewhere'))
    ledger.queue(key, make_alert(alert_id='resolved', description='failed again'), hosts=['web01'])
    ledger.queue(key, make_alert(alert_id='queued', description='東京'), hosts=HOSTS)
    ledger.queue(key, make_alert(alert_id='queued', status='OK'))
    ledger.hold(key, make_alert(alert_id='held'), ['web02'], token='run-1', owner=live_owner())


def test_copy_ledger_takes_in_a_controllers_file_once(ledger, controller_file, endpoint, make_alert):
    key = endpoint.ledger_key
    fill(controller_file, key, make_alert)
    exported = controller_file.export()

    copied = copy_ledger(controller_file, ledger)
    assert (copied.records, copied.entries, copied.alert_ids) == (3, 3, ('open-alarm', 'queued', 'resolved'))
    assert without_seqs(ledger.export()) == without_seqs(exported)

    again = copy_ledger(controller_file, ledger)
    assert (again.records, again.entries, again.alert_ids) == (0, 0, ())
    assert without_seqs(ledger.export()) == without_seqs(exported)
    # Both now know the same: back the other way takes nothing in either.
    back = copy_ledger(ledger, controller_file)
    assert (back.records, back.entries) == (0, 0)
    assert controller_file.export() == exported


def test_copy_ledger_never_puts_older_over_newer(ledger, controller_file, endpoint, make_alert):
    key = endpoint.ledger_key
    # The controller's file knew these first; the shared ledger has newer news of each since.
    controller_file.record(key, make_alert(alert_id='recorded'))
    controller_file.queue(key, make_alert(alert_id='queued'))
    controller_file.record(key, make_alert(alert_id='queued', description='an older record'))
    time.sleep(0.01)
    ledger.record(key, make_alert(alert_id='recorded', status='OK'))
    ledger.queue(key, make_alert(alert_id='queued', status='OK'), hosts=['web01'])
    before = ledger.export()

    copied = copy_ledger(controller_file, ledger, move=True)
    assert (copied.records, copied.entries) == (0, 0)
    assert ledger.export() == before
    # Moved means gone from the file whether taken in or known there as newer.
    assert controller_file.export() == []


def test_copy_moves_a_ledger_to_the_other_backend_and_back(ledger, other_backend, endpoint, make_alert):
    key = endpoint.ledger_key
    fill(ledger, key, make_alert)
    exported = ledger.export()
    other = other_backend.open()

    there = copy_ledger(ledger, other, move=True)
    assert (there.records, there.entries) == (3, 3)
    assert without_seqs(other.export()) == without_seqs(exported)
    # The held failure is the live run's: it stays where the run holds it.
    assert ledger.export() == []
    assert ledger.release_holds('run-1') == 1
    ledger.forget(key, 'held', ledger.pending(key, 'held')[0].seq)

    back = copy_ledger(other, ledger)
    assert (back.records, back.entries) == (3, 3)
    assert without_seqs(ledger.export()) == without_seqs(exported)
    assert copy_ledger(other, ledger) == copy_ledger(ledger, other) == (0, 0, ())


def test_a_dry_run_copy_writes_nothing_and_says_what_a_copy_would_take(ledger, controller_file, endpoint, make_alert):
    key = endpoint.ledger_key
    fill(controller_file, key, make_alert)
    ledger.record(key, make_alert(alert_id='resolved', description='newer than anything in the file'))
    source_before, target_before = controller_file.export(), ledger.export()

    planned = copy_ledger(controller_file, ledger, move=True, dry_run=True)
    assert controller_file.export() == source_before
    assert ledger.export() == target_before
    assert copy_ledger(controller_file, ledger) == planned
    assert (planned.records, planned.entries, planned.alert_ids) == (2, 2, ('open-alarm', 'queued'))


# -- listings: one order, whatever the database sorts text by ----------------------------------------


def test_listings_are_in_code_point_order_whatever_the_databases_collation(ledger, endpoint, make_alert):
    """What lists by alert id or name lists in one order on every backend (the contract of the methods for silences,
    withheld Alarms and streaks is test_ledger_contract_silences_and_streaks.py). SQLite orders text by code point;
    PostgreSQL orders it by the database's collation unless a query says otherwise, and the test database has a
    linguistic one, as most servers do (conftest.py).
    """
    key, now = endpoint.ledger_key, time.time()
    for name in NAMES:
        ledger.record(key, make_alert(alert_id=name))
        ledger.withhold(key, make_alert(alert_id=name), [], silence='window')
        assert ledger.put_silence(Silence(name, starts=now, ends=now + 60)) is True
    assert [record.alert_id for record in ledger.records(key)] == sorted(NAMES)
    assert [withheld.record.alert_id for withheld in ledger.withheld(key)] == sorted(NAMES)
    assert [silence.name for silence in ledger.silences()] == sorted(NAMES)


# -- opening: schema, connections, read-only --------------------------------------------------------


def test_first_use_creates_the_ledger_even_when_many_open_it_at_once(ledger_backend, endpoint, make_alert):
    ledger_backend.remove()
    assert not ledger_backend.exists()
    start = threading.Barrier(6)
    opened: list[Ledger] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        start.wait()
        try:
            opened.append(ledger_backend.open())
        except Exception as exc:  # pylint: disable=broad-exception-caught
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _thread in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(opened) == 6 and ledger_backend.exists()
    opened[0].record(endpoint.ledger_key, make_alert())
    assert all(ledger.lookup(endpoint.ledger_key, make_alert().alert_id) is not None for ledger in opened)


def test_a_ledger_of_a_newer_schema_is_refused_and_left_as_it_is(ledger_backend, endpoint, make_alert):
    with ledger_backend.open() as ledger:
        ledger.record(endpoint.ledger_key, make_alert())
        ledger.queue(endpoint.ledger_key, make_alert(status='OK'))
        location = ledger.location
    ledger_backend.set_schema_version(99)
    before = ledger_backend.contents()

    warnings: list[str] = []
    for read_only in (False, True):
        with pytest.raises(LedgerError) as raised:
            ledger_backend.open(warn=warnings.append, read_only=read_only)
        assert not isinstance(raised.value, LedgerUnreachable)
        message = str(raised.value)
        assert location in message
        assert 'newer temperstack.alerting' in message and '99' in message
    assert warnings == []
    assert ledger_backend.contents() == before


def test_two_connections_to_one_ledger_see_each_others_writes(ledger_backend, endpoint, make_alert):
    key, alert_id = endpoint.ledger_key, make_alert().alert_id
    first, second = ledger_backend.open(), ledger_backend.open()
    first.record(key, make_alert(), hosts=['web01'])
    assert second.lookup(key, alert_id) == first.lookup(key, alert_id)

    second.queue(key, make_alert(status='OK'))
    assert first.lookup(key, alert_id).status == 'OK'
    [queued] = first.pending(key)
    first.hold(key, make_alert(alert_id='held'), ['web02'], token='run-1', owner=live_owner())
    assert second.release_holds('run-1') == 1
    assert second.delivered(key, queued) is True
    assert first.lookup(key, alert_id).pending is False
    assert [q.alert.alert_id for q in first.pending(key)] == ['held']

    claim = first.try_claim(key, alert_id, lease=30)
    assert second.try_claim(key, alert_id, lease=30) is None
    first.release(claim)
    assert second.try_claim(key, alert_id, lease=30) is not None


def test_the_spec_opens_the_same_ledger_and_the_location_names_it(ledger_backend, endpoint, make_alert):
    ledger = ledger_backend.open()
    ledger.record(endpoint.ledger_key, make_alert())
    assert ledger.spec == ledger_backend.spec
    assert ledger.location == mask_url(ledger.spec)
    with open_ledger(ledger.spec) as again:
        assert again.lookup(endpoint.ledger_key, make_alert().alert_id) == ledger.lookup(endpoint.ledger_key, make_alert().alert_id)
        assert (again.spec, again.location) == (ledger.spec, ledger.location)


def test_a_missing_ledger_opened_read_only_reads_as_empty_and_is_not_created(ledger_backend, endpoint, make_alert):
    ledger_backend.remove()
    with ledger_backend.open(read_only=True) as ledger:
        assert ledger.lookup(endpoint.ledger_key, make_alert().alert_id) is None
        assert ledger.pending(endpoint.ledger_key) == []
        assert ledger.pending(endpoint.ledger_key, make_alert().alert_id) == []
        assert ledger.newest(endpoint.ledger_key, make_alert().alert_id) is None
        assert ledger.export() == []
    assert not ledger_backend.exists()


def read_only_writes(ledger: Ledger, key: str, make_alert: t.Callable[..., t.Any]) -> list[t.Callable[[], t.Any]]:
    return [
        lambda: ledger.record(key, make_alert(description='changed')),
        lambda: ledger.queue(key, make_alert(description='changed')),
        lambda: ledger.try_claim(key, make_alert().alert_id, lease=30),
        lambda: ledger.hold(key, make_alert(), ['web1'], token='run-1', owner=live_owner()),
        lambda: ledger.prune(retention=0),
    ]


def test_a_ledger_opened_read_only_is_read_and_never_written(ledger_backend, endpoint, make_alert):
    key = endpoint.ledger_key
    with ledger_backend.open() as writer:
        writer.record(key, make_alert())
        writer.queue(key, make_alert(status='OK'))
    before = ledger_backend.contents()
    with ledger_backend.open(read_only=True) as ledger:
        assert ledger.lookup(key, make_alert().alert_id).status == 'OK'
        assert [q.alert.status for q in ledger.pending(key)] == ['OK']
        for write in read_only_writes(ledger, key, make_alert):
            with pytest.raises(LedgerError):
                write()
    assert ledger_backend.contents() == before


def test_a_missing_ledger_opened_read_only_refuses_writes_as_an_existing_one_does(ledger_backend, endpoint, make_alert):
    key = endpoint.ledger_key
    ledger_backend.remove()
    with ledger_backend.open(read_only=True) as ledger:
        for write in read_only_writes(ledger, key, make_alert):
            with pytest.raises(LedgerError):
                write()
    assert not ledger_backend.exists()


# -- per-alert order under concurrency ------------------------------------------------------------


def test_per_alert_order_holds_while_many_connections_queue_at_once(ledger_backend, endpoint, make_alert):
    """PostgreSQL hands out sequence numbers at insert, not at commit: without a lock per alert, a sender could
    deliver an alert's later entry and only then see an earlier one commit.

    Inserts slowed down on the server make that certain to show: without the lock, this failed 40 runs in 40 here,
    and 17 in 40 by load alone.
    """
    key = endpoint.ledger_key
    writers, per_writer, drained, kept = 8, 15, ('a', 'b'), 'c'
    alert_ids = (*drained, kept)
    connections = [ledger_backend.open() for _connection in range(writers + 1)]
    reader = connections.pop()
    start = threading.Barrier(writers + 1)
    writing = threading.Event()
    writing.set()
    errors: list[BaseException] = []
    written: dict[int, list[tuple[str, int]]] = {number: [] for number in range(writers)}
    delivered: dict[str, list[tuple[int, str]]] = {alert_id: [] for alert_id in drained}
    out_of_order: list[tuple[str, int, int]] = []

    def write(number: int, ledger: Ledger) -> None:
        try:
            start.wait()
            for count in range(per_writer):
                alert_id = alert_ids[(number + count) % len(alert_ids)]
                seq = ledger.queue(key, make_alert(alert_id=alert_id, description=f'{number}:{count}'))
                written[number].append((alert_id, seq))
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            errors.append(exc)

    def drain() -> None:
        newest: dict[str, int] = {}
        try:
            start.wait()
            while True:
                last_round = not writing.is_set()
                for alert_id in drained:
                    for queued in reader.pending(key, alert_id):
                        if queued.seq < newest.get(alert_id, 0):
                            out_of_order.append((alert_id, newest[alert_id], queued.seq))
                        newest[alert_id] = max(newest.get(alert_id, 0), queued.seq)
                        assert reader.delivered(key, queued) is True
                        delivered[alert_id].append((queued.seq, queued.alert.payload['description']))
                if last_round:
                    return
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(number, ledger)) for number, ledger in enumerate(connections)]
    sender = threading.Thread(target=drain)
    with ledger_backend.slow_inserts(0.02):
        for thread in (*threads, sender):
            thread.start()
        for thread in threads:
            thread.join(60)
        writing.clear()
        sender.join(60)
    assert errors == []
    assert not any(thread.is_alive() for thread in (*threads, sender))

    # The sender never delivered an entry of an alert after a later one of the same alert.
    assert out_of_order == []
    assert sorted(seq for entries in delivered.values() for seq, _description in entries) == sorted(
        seq for entries in written.values() for alert_id, seq in entries if alert_id in drained)
    # Each alert's entries went out, and the kept alert's still wait, in the order each writer queued its own.
    chains = {alert_id: [description for _seq, description in entries] for alert_id, entries in delivered.items()}
    chains[kept] = [q.alert.payload['description'] for q in reader.pending(key, kept)]
    for alert_id, chain in chains.items():
        for number in range(writers):
            mine = [int(description.split(':')[1]) for description in chain if description.startswith(f'{number}:')]
            assert mine == sorted(mine), (alert_id, number, mine)
            assert len(mine) == sum(1 for written_id, _seq in written[number] if written_id == alert_id)
    assert [q.alert.alert_id for q in reader.pending(key)] == [kept] * len(chains[kept])


# -- PostgreSQL only: the URL's password ------------------------------------------------------------


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in its user part."""
    parts = urlsplit(url)
    user = parts.username or 'postgres'
    host = parts.hostname or '127.0.0.1'
    host = f'[{host}]' if ':' in host else host
    netloc = f'{user}:{quote(password, safe="")}@{host}' + (f':{parts.port}' if parts.port else '')
    return urlunsplit(parts._replace(netloc=netloc))


def test_postgresql_messages_never_show_the_password(postgresql_backend, endpoint, make_alert):
    # The test server's own password if the URL has one (scram), else a stand-in that trust authentication ignores.
    password = urlsplit(postgresql_backend.spec).password or PASSWORD_CANARY
    url = with_password(postgresql_backend.spec, password)
    parts = urlsplit(url)
    as_parameter = urlunsplit(parts._replace(
        netloc=parts.netloc.replace(f':{quote(password, safe="")}@', '@'), query=f'password={quote(password, safe="")}'))
    messages: list[str] = []

    def refused(spec: str) -> LedgerError:
        with pytest.raises(LedgerError) as raised:
            open_ledger(spec, warn=messages.append).close()
        messages.append(str(raised.value))
        return raised.value

    with open_ledger(url, warn=messages.append) as ledger:
        assert password not in ledger.location
        ledger.record(endpoint.ledger_key, make_alert())
        messages.append(ledger.location)
        # A table gone from under it: a failure of one call.
        postgresql_backend.conn.execute('DROP TABLE temperstack.claims')
        with pytest.raises(LedgerError) as raised:
            ledger.try_claim(endpoint.ledger_key, 'a', lease=30)
        messages.append(str(raised.value))

    assert isinstance(refused(with_database(url, 'no_such_ledger_database')), LedgerUnreachable)
    assert isinstance(refused(with_database(as_parameter, 'no_such_ledger_database')), LedgerUnreachable)
    postgresql_backend.remove()
    open_ledger(url).close()
    postgresql_backend.set_schema_version(99)
    refused(url)
    refused(as_parameter)
    # URLs libpq cannot parse: it quotes back what it could not read.
    refused(url.replace(f':{parts.port}/', ':notaport/'))
    refused(url.replace(f'@{parts.hostname}', '@[::1'))
    refused(with_password(postgresql_backend.spec, password + '%zz'))

    assert len(messages) == 9
    for message in messages:
        assert password not in message, message
        assert quote(password, safe='') not in message, message
