# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The shared ledger through an outage (LedgerWithFallback), against the real test server behind a relay.

Taking the relay down is what a stopped server does to the ledger (connections cut, new ones refused), without
stopping the server that other tests share. The races of ../shared/repro/ledger-outage are forced here as their
scripts force them: a sender held inside a request, a transaction slowed between its write and its commit.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import threading
import time
import typing as t

import pytest

from ansible_collections.temperstack.alerting.plugins.plugin_utils._client import TemperstackClient
from ansible_collections.temperstack.alerting.plugins.plugin_utils._dispatch import dispatch, send_outbox
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import LedgerError, LedgerUnreachable, Silence
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_open import (
    LedgerWithFallback,
    keep_silences_for_outage,
    open_ledger,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_sqlite import SqliteLedger
from ansible_collections.temperstack.alerting.tests.unit.fakes import FakeResponse
from ansible_collections.temperstack.alerting.tests.unit.tcp_proxy import TcpProxy

ALERT_ID = 'disk-web1'


class Webhook:
    """Temperstack as the senders see it: what it received, in order, and a gate that can hold one request."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def client(self, endpoint: t.Any, label: str = '', hold: threading.Event | None = None,
               started: threading.Event | None = None) -> TemperstackClient:
        def opener(url: str, data: bytes | None = None, **kwargs: t.Any) -> FakeResponse:
            payload = json.loads(data or b'{}')
            if started is not None:
                started.set()
            if hold is not None:
                hold.wait(10)
            with self._lock:
                self.received.append((label, payload['status'], payload['alert_id']))
            return FakeResponse(200)

        return TemperstackClient(endpoint, timeout=2, retries=0, opener=opener, sleep=lambda seconds: None)

    @property
    def statuses(self) -> list[str]:
        return [status for _label, status, _alert_id in self.received]


@pytest.fixture
def webhook() -> Webhook:
    return Webhook()


@pytest.fixture
def fallback(tmp_path) -> str:
    return str(tmp_path / 'state' / 'ledger.fallback.sqlite3')


@pytest.fixture
def fleet(pg_relay, fallback) -> t.Iterator[t.Callable[..., LedgerWithFallback]]:
    """``fleet()``: this controller's view of the shared ledger, retrying a lost server at every reconnect()."""
    opened: list[LedgerWithFallback] = []

    def make(**kwargs: t.Any) -> LedgerWithFallback:
        ledger = LedgerWithFallback(pg_relay[1], fallback, retry_seconds=0, **kwargs)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.close()


@pytest.fixture
def shared(postgresql_backend) -> t.Any:
    """The shared ledger as another controller, which always reaches the server, sees it."""
    return postgresql_backend.open()


@pytest.fixture
def unreachable_url() -> str:
    """A server that refuses every connection: nothing listens on the port."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    return f'postgresql://temperstack:pg-Secret-7f3a@127.0.0.1:{port}/temperstack?connect_timeout=2'


def alarm(make_alert: t.Any, description: str = '/var is 93% full') -> t.Any:
    return make_alert(alert_id=ALERT_ID, status='Alarm', description=description)


def ok(make_alert: t.Any) -> t.Any:
    return make_alert(alert_id=ALERT_ID, status='OK')


# -- falling back and coming back ------------------------------------------------------------------------------


def test_the_fallback_file_stands_in_while_the_server_is_down_and_moves_in_when_it_answers(
    fleet, pg_relay, shared, endpoint, make_alert, fallback,
):
    proxy, _url = pg_relay
    lost: list[LedgerError] = []
    ledger = fleet(on_fallback=lost.append)
    proxy.down()
    ledger.queue(endpoint.ledger_key, alarm(make_alert), ['web1'])

    assert ledger.degraded and len(lost) == 1 and 'unreachable' in str(lost[0])
    assert [q.alert.status for q in SqliteLedger(fallback).pending(endpoint.ledger_key)] == ['Alarm']
    assert shared.pending(endpoint.ledger_key) == []

    proxy.up()
    assert ledger.reconnect()
    assert not ledger.degraded
    assert [(q.alert.status, q.hosts) for q in shared.pending(endpoint.ledger_key)] == [('Alarm', ('web1',))]
    assert SqliteLedger(fallback).pending(endpoint.ledger_key) == []


def test_a_server_that_never_answers_is_never_raised_as_unreachable(fallback, endpoint, make_alert, unreachable_url):
    with LedgerWithFallback(unreachable_url, fallback) as ledger:
        assert ledger.degraded
        assert ledger.lookup(endpoint.ledger_key, ALERT_ID) is None
        ledger.queue(endpoint.ledger_key, alarm(make_alert))
        assert not ledger.reconnect(force=True)
    assert len(SqliteLedger(fallback).pending(endpoint.ledger_key)) == 1


def test_without_a_fallback_an_unreachable_server_is_an_error(unreachable_url):
    with pytest.raises(LedgerUnreachable):
        open_ledger(unreachable_url)


# -- r2: an entry moves only under its claim in both ledgers -------------------------------------------------------


def test_an_entry_a_fallback_sender_is_sending_is_not_moved_and_its_ok_comes_after_it(
    fleet, pg_relay, endpoint, make_alert, fallback, webhook,
):
    proxy, _url = pg_relay
    proxy.down()
    with fleet() as outage:
        outage.queue(endpoint.ledger_key, alarm(make_alert))  # queued by a run that could not reach the server

    # A sender on this controller, still without the server, is in the middle of sending that Alarm.
    in_send, release = threading.Event(), threading.Event()
    with SqliteLedger(fallback) as local:
        sender = threading.Thread(
            target=send_outbox, args=(local, webhook.client(endpoint, 'fallback-sender', release, in_send)))
        sender.start()
        assert in_send.wait(5)

        proxy.up()
        ledger = fleet()  # the server answers again: a task on this controller moves the fallback file in
        send_outbox(ledger, webhook.client(endpoint, 'shared-sender'))
        assert webhook.received == []  # the Alarm in flight was not moved, so nobody sends it twice

        # The service recovers; the OK's decision waits for the Alarm in flight, then knows it.
        threading.Timer(0.3, release.set).start()
        outcome = dispatch(ok(make_alert), endpoint, ledger, webhook.client(endpoint, 'task'))
        sender.join(5)

    assert outcome.sent
    assert [(label, status) for label, status, _alert_id in webhook.received] == [('fallback-sender', 'Alarm'), ('task', 'OK')]
    assert ledger.acknowledged(endpoint.ledger_key, ALERT_ID).status == 'OK'
    assert SqliteLedger(fallback).pending(endpoint.ledger_key) == []
    assert SqliteLedger(fallback).acknowledged(endpoint.ledger_key, ALERT_ID) is None


# -- r5 and r1: the order of facts never depends on two machines' clocks --------------------------------------------


def test_an_alarm_sent_during_the_outage_is_known_open_afterwards_whatever_the_clocks(
    fleet, pg_relay, shared, endpoint, make_alert, fallback, webhook, monkeypatch,
):
    proxy, _url = pg_relay
    shared.record(endpoint.ledger_key, ok(make_alert), ['web1'])  # controller B recorded an OK
    proxy.down()
    real = time.time
    with monkeypatch.context() as patch:
        patch.setattr(time, 'time', lambda: real() - 600)  # this controller's clock is 10 minutes slow
        with fleet() as outage:
            outage.record(endpoint.ledger_key, alarm(make_alert), ['web1'])  # it sent an Alarm during the outage

    proxy.up()
    ledger = fleet()
    assert ledger.acknowledged(endpoint.ledger_key, ALERT_ID).status == 'Alarm'
    recovered = dispatch(ok(make_alert), endpoint, ledger, webhook.client(endpoint), only_if_raised=True)
    assert recovered.sent and webhook.statuses == ['OK']


def test_a_record_the_fleet_wrote_meanwhile_makes_the_moved_one_doubtful_so_the_next_failure_is_sent(
    fleet, pg_relay, shared, endpoint, make_alert, webhook,
):
    proxy, _url = pg_relay
    shared.record(endpoint.ledger_key, alarm(make_alert, 'first'), ['web1'])
    proxy.down()
    with fleet() as outage:
        outage.record(endpoint.ledger_key, alarm(make_alert, 'seen during the outage'), ['web2'])
    shared.record(endpoint.ledger_key, ok(make_alert))  # meanwhile another controller resolved it

    proxy.up()
    ledger = fleet()
    moved = ledger.acknowledged(endpoint.ledger_key, ALERT_ID)
    assert moved.status == 'Alarm' and set(moved.hosts) == {'web2'}
    # Temperstack heard the Alarm and the OK in an order no one knows: the same failure again goes out.
    again = dispatch(alarm(make_alert, 'seen during the outage'), endpoint, ledger, webhook.client(endpoint))
    assert again.sent and webhook.statuses == ['Alarm']
    assert not dispatch(alarm(make_alert, 'seen during the outage'), endpoint, ledger, webhook.client(endpoint)).sent


def test_a_record_that_agrees_with_the_fleet_moves_in_without_doubt(fleet, pg_relay, shared, endpoint, make_alert, webhook):
    proxy, _url = pg_relay
    shared.record(endpoint.ledger_key, alarm(make_alert), ['web1'])
    proxy.down()
    with fleet() as outage:
        outage.record(endpoint.ledger_key, alarm(make_alert), ['web2'])
    proxy.up()
    ledger = fleet()
    record = ledger.acknowledged(endpoint.ledger_key, ALERT_ID)
    assert record.fingerprint == alarm(make_alert).fingerprint and set(record.hosts) == {'web1', 'web2'}
    assert not dispatch(alarm(make_alert), endpoint, ledger, webhook.client(endpoint)).sent


def test_an_older_record_never_overwrites_one_committed_concurrently(postgresql_backend, endpoint, make_alert, tmp_path):
    controller_file = SqliteLedger(str(tmp_path / 'controller.sqlite3'))
    sender, mover = postgresql_backend.open(), postgresql_backend.open()
    sender.record(endpoint.ledger_key, alarm(make_alert))
    sender.queue(endpoint.ledger_key, ok(make_alert))
    time.sleep(0.02)
    controller_file.record(endpoint.ledger_key, alarm(make_alert, 'an older Alarm from another ledger'))
    [exported] = [record for _endpoint, _seq, record in controller_file.export()]
    time.sleep(0.02)
    [queued] = sender.pending(endpoint.ledger_key)

    # The OK's delivery is slowed between its write and its commit, as on a busy server.
    upsert = sender._upsert  # pylint: disable=protected-access
    written = threading.Event()

    def slow_upsert(*args: t.Any, **kwargs: t.Any) -> None:
        upsert(*args, **kwargs)
        written.set()
        time.sleep(0.5)

    sender._upsert = slow_upsert  # pylint: disable=protected-access
    delivering = threading.Thread(target=sender.delivered, args=(endpoint.ledger_key, queued))
    delivering.start()
    assert written.wait(5)
    mover.adopt(endpoint.ledger_key, exported)
    delivering.join(5)

    assert mover.acknowledged(endpoint.ledger_key, ALERT_ID).status == 'OK'


# -- r4: holds written before a mid-run fallback -----------------------------------------------------------------


def test_a_hold_written_before_the_server_was_lost_is_dropped_there_once_its_unit_settled(
    fleet, pg_relay, shared, endpoint, make_alert, webhook,
):
    proxy, _url = pg_relay
    run = fleet()
    run.hold(endpoint.ledger_key, alarm(make_alert), ['web1'], 'run-1', 'controller-a:1')
    proxy.down()
    run.settle(endpoint.ledger_key, ALERT_ID, 'run-1', alarm(make_alert), ['web1'])  # the unit ends in the outage
    proxy.up()
    assert run.reconnect()

    assert [e.held for e in shared.entries()] == [False]  # the settled Alarm; the hold is gone
    send_outbox(run, webhook.client(endpoint))
    assert dispatch(ok(make_alert), endpoint, run, webhook.client(endpoint)).sent
    assert run.release_holds('run-1') == 0
    send_outbox(shared, webhook.client(endpoint))
    assert webhook.statuses == ['Alarm', 'OK']


def test_the_holds_of_a_run_that_ended_in_the_outage_are_released_once_the_server_answers(
    fleet, pg_relay, shared, endpoint, make_alert,
):
    proxy, _url = pg_relay
    run = fleet()
    run.hold(endpoint.ledger_key, alarm(make_alert), ['web1'], 'run-1', 'controller-a:1')
    proxy.down()
    run.release_holds('run-1')
    proxy.up()
    assert run.reconnect()
    assert [(e.alert.status, e.held) for e in shared.entries()] == [('Alarm', False)]
    assert len(shared.pending(endpoint.ledger_key)) == 1


def test_holds_are_renewed_in_whichever_ledger_holds_them(fleet, pg_relay, endpoint, make_alert):
    proxy, _url = pg_relay
    run = fleet()
    run.hold(endpoint.ledger_key, alarm(make_alert), ['web1'], 'run-1', 'a:1')
    proxy.down()
    run.hold(endpoint.ledger_key, make_alert(alert_id='other', status='Alarm'), ['web2'], 'run-1', 'a:1')
    assert run.renew_holds('run-1') == 1  # the fallback file's; the server's cannot be reached
    proxy.up()
    assert run.reconnect()
    assert run.renew_holds('run-1') == 2


# -- writes in flight when the server is lost ------------------------------------------------------------------


def test_a_send_under_a_claim_taken_before_the_server_was_lost_is_remembered_in_the_fallback_file(
    fleet, pg_relay, endpoint, make_alert, fallback,
):
    proxy, _url = pg_relay
    ledger = fleet()
    with ledger.claim(endpoint.ledger_key, ALERT_ID, lease=30) as claim:
        proxy.down()
        ledger.record(endpoint.ledger_key, alarm(make_alert), ['web1'], claim=claim)
    assert SqliteLedger(fallback).acknowledged(endpoint.ledger_key, ALERT_ID).status == 'Alarm'


def test_an_entry_delivered_after_the_server_was_lost_is_not_taken_for_a_fallback_entry(
    fleet, pg_relay, shared, endpoint, make_alert, fallback,
):
    proxy, _url = pg_relay
    shared.queue(endpoint.ledger_key, alarm(make_alert))
    ledger = fleet()
    ledger.queue(endpoint.ledger_key, make_alert(alert_id='other', status='Alarm'))
    [queued, _other] = ledger.pending(endpoint.ledger_key)
    proxy.down()
    with SqliteLedger(fallback) as local:
        local.queue(endpoint.ledger_key, make_alert(alert_id='kept-here', status='Alarm'))
    assert ledger.delivered(endpoint.ledger_key, queued)

    with SqliteLedger(fallback) as local:
        assert [q.alert.alert_id for q in local.pending(endpoint.ledger_key)] == ['kept-here']
        assert local.acknowledged(endpoint.ledger_key, ALERT_ID).status == 'Alarm'


# -- silences and damping during an outage --------------------------------------------------------------------------


def test_silences_read_from_the_server_are_honoured_during_an_outage(fleet, pg_relay, shared, endpoint, make_alert, webhook):
    proxy, _url = pg_relay
    shared.put_silence(Silence('maintenance', alert_ids=(ALERT_ID,), starts=time.time() - 1, ends=time.time() + 3600))
    ledger = fleet()
    assert [s.name for s in ledger.silences()] == ['maintenance']
    proxy.down()

    outcome = dispatch(alarm(make_alert), endpoint, ledger, webhook.client(endpoint), fail_open=True)
    assert ledger.degraded
    assert (outcome.sent, outcome.silenced) == (False, 'maintenance')
    assert webhook.received == []
    other = dispatch(make_alert(alert_id='not-silenced', status='Alarm'), endpoint, ledger, webhook.client(endpoint),
                     fail_open=True)
    assert other.sent  # fail open for everything else


def test_a_silence_kept_for_an_outage_is_honoured_though_no_decision_read_it_before(
    fleet, pg_relay, shared, endpoint, make_alert, webhook, fallback,
):
    proxy, _url = pg_relay
    shared.put_silence(Silence('maintenance', alert_ids=(ALERT_ID,), starts=time.time() - 1, ends=time.time() + 3600))
    keep_silences_for_outage(fallback, shared.silences())  # what the silence module does after changing one
    proxy.down()
    outcome = dispatch(alarm(make_alert), endpoint, fleet(), webhook.client(endpoint), fail_open=True)
    assert (outcome.sent, outcome.silenced) == (False, 'maintenance')

    keep_silences_for_outage(fallback, [])  # the silence removed: the fallback file forgets it too
    assert dispatch(alarm(make_alert), endpoint, fleet(), webhook.client(endpoint), fail_open=True).sent


def test_flap_damping_goes_on_counting_in_the_fallback_file(fleet, pg_relay, endpoint, make_alert, webhook):
    proxy, _url = pg_relay
    ledger = fleet()
    proxy.down()
    first = dispatch(alarm(make_alert), endpoint, ledger, webhook.client(endpoint), damping=(2, 1), fail_open=True)
    second = dispatch(alarm(make_alert), endpoint, ledger, webhook.client(endpoint), damping=(2, 1), fail_open=True)
    assert (first.sent, first.damped, second.sent) == (False, '1 of 2', True)


def test_an_alarm_withheld_during_the_outage_moves_in(fleet, pg_relay, shared, endpoint, make_alert):
    proxy, _url = pg_relay
    ledger = fleet()
    proxy.down()
    ledger.withhold(endpoint.ledger_key, alarm(make_alert), ['web1'], 'maintenance')
    proxy.up()
    assert ledger.reconnect()
    [withheld] = shared.withheld(endpoint.ledger_key)
    assert (withheld.silence, withheld.record.status) == ('maintenance', 'Alarm')


# -- r6: passwords, whatever the URL ----------------------------------------------------------------------------


@pytest.mark.parametrize('url', [
    'postgresql://ts_user@[::1/temperstack?password=Hunter2SecretPW',
    'postgresql://ts_user@db.example.com/temperstack?password=Hunter2%2BSecret%ZZ',
    'postgresql://ts_user:Hunter2SecretPW@[::1/temperstack',
    'postgresql://ts_user:Hunter2SecretPW@db.invalid:notaport/temperstack',
])
def test_no_password_of_a_malformed_url_reaches_any_message(url, fallback):
    messages: list[str] = []
    try:
        with LedgerWithFallback(url, fallback, warn=messages.append, on_fallback=lambda exc: messages.append(str(exc))):
            pass
    except LedgerError as exc:
        messages.append(str(exc))
    assert messages
    assert not any('Hunter2' in message for message in messages), messages


# -- r7: threads and connections end with their ledger ----------------------------------------------------------


def _connections(postgresql_backend: t.Any, name: str, expected: int = 0) -> int:
    """How many connections named ``name`` the server has, once it has seen the clients that left go (5 s at most)."""
    deadline = time.monotonic() + 5
    while True:
        count = postgresql_backend.conn.execute(
            'SELECT count(*) FROM pg_stat_activity WHERE application_name = %s', (name,)).fetchone()[0]
        if count == expected or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def _watchdogs() -> int:
    return sum(thread.name == 'temperstack-ledger-watchdog' for thread in threading.enumerate())


def test_threads_and_connections_end_with_their_ledger(postgresql_backend, endpoint):
    name = f'temperstack-test-{os.getpid()}'
    url = postgresql_backend.spec + f'?application_name={name}'
    before = _watchdogs()
    for _cycle in range(10):
        with open_ledger(url) as ledger:
            ledger.lookup(endpoint.ledger_key, ALERT_ID)
    assert _watchdogs() == before
    assert _connections(postgresql_backend, name) == 0


def test_a_ledger_dropped_without_close_closes_its_connection(postgresql_backend, endpoint):
    name = f'temperstack-drop-{os.getpid()}'
    url = postgresql_backend.spec + f'?application_name={name}'
    before = _watchdogs()
    for _cycle in range(5):
        ledger = open_ledger(url)
        ledger.lookup(endpoint.ledger_key, ALERT_ID)
        del ledger
    gc.collect()
    assert _connections(postgresql_backend, name) == 0
    assert _watchdogs() == before


def test_a_ledger_with_a_fallback_closes_both_of_its_ledgers(postgresql_backend, fallback, endpoint, make_alert):
    name = f'temperstack-both-{os.getpid()}'
    proxy, url = TcpProxy.for_url(postgresql_backend.spec + f'?application_name={name}')
    try:
        ledger = LedgerWithFallback(url, fallback, retry_seconds=0)
        proxy.down()
        ledger.queue(endpoint.ledger_key, alarm(make_alert))
        proxy.up()
        assert ledger.reconnect() and _connections(postgresql_backend, name, expected=1) == 1
        local = ledger.local()
        ledger.close()
        assert _connections(postgresql_backend, name) == 0
        with pytest.raises(LedgerError, match='closed'):
            local.pending(endpoint.ledger_key)
    finally:
        proxy.close()
