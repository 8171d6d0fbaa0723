# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.temperstack.alerting.plugins.plugin_utils._alert import build_alert
from ansible_collections.temperstack.alerting.plugins.plugin_utils._client import (
    RETRY_AFTER_CAP,
    Acknowledgement,
    SendError,
    TemperstackClient,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._dispatch import (
    Outcome,
    claim_lease,
    dispatch,
    send_outbox,
    is_news,
    is_withheld,
)
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_sqlite import SqliteLedger
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import LedgerError


@pytest.fixture
def client(endpoint, opener, sleeps):
    return TemperstackClient(endpoint, retries=2, opener=opener, sleep=sleeps.append, jitter=lambda: 0.5)


@pytest.fixture
def ledger(ledger_path):
    with SqliteLedger(ledger_path) as opened:
        yield opened


def snapshot(ledger, endpoint, alert_id):
    record = ledger.lookup(endpoint.ledger_key, alert_id)
    pending = [(queued.seq, queued.alert.payload) for queued in ledger.pending(endpoint.ledger_key)]
    return (record._replace(updated=0.0) if record else None), pending


# -- the decision ---------------------------------------------------------------------------------


def test_sends_when_nothing_is_recorded(ledger, endpoint, client, opener, make_alert):
    alert = make_alert()
    outcome = dispatch(alert, endpoint, ledger, client)

    assert outcome == Outcome(alert, None, changed=True, sent=True, http_status=200, attempts=1)
    assert opener.bodies == [alert.payload]
    record = ledger.lookup(endpoint.ledger_key, alert.alert_id)
    assert (record.status, record.fingerprint, record.pending) == ('Alarm', alert.fingerprint, False)


def test_does_not_send_what_is_recorded(ledger, endpoint, client, opener, make_alert):
    dispatch(make_alert(), endpoint, ledger, client)
    opener.calls.clear()

    outcome = dispatch(make_alert(), endpoint, ledger, client)
    assert (outcome.changed, outcome.sent, outcome.http_status, outcome.attempts) == (False, False, None, 0)
    assert outcome.previous.status == 'Alarm'
    assert opener.calls == []


@pytest.mark.parametrize(
    'change',
    [{'status': 'OK'}, {'description': '/var is 99% full'}, {'alert_priority': 'Medium'}, {'alert_priority': None}],
    ids=['status', 'description', 'priority', 'priority-removed'],
)
def test_sends_when_status_or_payload_differ(ledger, endpoint, client, opener, make_alert, change):
    dispatch(make_alert(), endpoint, ledger, client)
    changed = make_alert(**change)
    assert changed.alert_id == make_alert().alert_id

    outcome = dispatch(changed, endpoint, ledger, client)
    assert (outcome.changed, outcome.sent) == (True, True)
    assert outcome.previous.payload == make_alert().payload
    assert opener.bodies == [make_alert().payload, changed.payload]
    assert ledger.lookup(endpoint.ledger_key, changed.alert_id).fingerprint == changed.fingerprint


def test_force_sends_what_is_recorded(ledger, endpoint, client, opener, make_alert):
    dispatch(make_alert(), endpoint, ledger, client)
    outcome = dispatch(make_alert(), endpoint, ledger, client, force=True)
    assert (outcome.changed, outcome.sent, outcome.http_status) == (True, True, 200)
    assert len(opener.calls) == 2


def test_attempts_and_status_of_a_retried_send(ledger, endpoint, client, opener, make_alert):
    opener.http_error(503).respond(201)
    outcome = dispatch(make_alert(), endpoint, ledger, client)
    assert (outcome.http_status, outcome.attempts) == (201, 2)


def test_is_news():
    alert = build_alert({'alert_name': 'x', 'status': 'Alarm'})
    assert is_news(alert, None)


# -- only_if_raised -------------------------------------------------------------------------------


@pytest.mark.parametrize('force', [False, True])
def test_only_if_raised_withholds_an_ok_for_an_alert_never_raised(ledger, endpoint, client, opener, make_alert, force):
    outcome = dispatch(make_alert(status='OK'), endpoint, ledger, client, force=force, only_if_raised=True)
    assert outcome._replace(alert=None) == Outcome(None, None, changed=False, withheld=True)
    assert opener.calls == []
    assert snapshot(ledger, endpoint, make_alert().alert_id) == (None, [])


def test_only_if_raised_withholds_an_ok_for_a_resolved_alert(ledger, endpoint, client, opener, make_alert):
    dispatch(make_alert(status='OK'), endpoint, ledger, client)
    opener.calls.clear()
    before = snapshot(ledger, endpoint, make_alert().alert_id)

    # A different payload would be news without the option.
    outcome = dispatch(make_alert(status='OK', description='fine again'), endpoint, ledger, client, only_if_raised=True)
    assert (outcome.changed, outcome.sent, outcome.withheld) == (False, False, True)
    assert outcome.previous.status == 'OK'
    assert opener.calls == []
    assert snapshot(ledger, endpoint, make_alert().alert_id) == before


def test_only_if_raised_resolves_a_raised_alert_once(ledger, endpoint, client, opener, make_alert):
    dispatch(make_alert(), endpoint, ledger, client, only_if_raised=True)
    resolved = dispatch(make_alert(status='OK'), endpoint, ledger, client, only_if_raised=True)
    again = dispatch(make_alert(status='OK'), endpoint, ledger, client, only_if_raised=True)

    assert (resolved.changed, resolved.sent, resolved.withheld) == (True, True, False)
    assert resolved.previous.status == 'Alarm'
    assert (again.changed, again.sent, again.withheld) == (False, False, True)
    assert [body['status'] for body in opener.bodies] == ['Alarm', 'OK']
    assert ledger.lookup(endpoint.ledger_key, make_alert().alert_id).status == 'OK'


def test_only_if_raised_has_no_effect_on_an_alarm(ledger, endpoint, client, opener, make_alert):
    outcome = dispatch(make_alert(), endpoint, ledger, client, only_if_raised=True)
    assert (outcome.changed, outcome.sent, outcome.withheld) == (True, True, False)
    assert opener.bodies == [make_alert().payload]


@pytest.mark.parametrize(('raised', 'changed'), [(False, False), (True, True)], ids=['never-raised', 'raised'])
def test_only_if_raised_in_check_mode(ledger, endpoint, client, opener, make_alert, raised, changed):
    if raised:
        dispatch(make_alert(), endpoint, ledger, client)
        opener.calls.clear()
    outcome = dispatch(make_alert(status='OK'), endpoint, ledger, client, check_mode=True, only_if_raised=True)
    assert (outcome.changed, outcome.sent, outcome.withheld) == (changed, False, not raised)
    assert opener.calls == []


def test_only_if_raised_counts_a_queued_alarm_as_raised(ledger, endpoint, client, opener, make_alert):
    ledger.queue(endpoint.ledger_key, make_alert(), hosts=['web01'])
    outcome = dispatch(make_alert(status='OK'), endpoint, ledger, client, only_if_raised=True)
    assert (outcome.changed, outcome.sent, outcome.withheld) == (True, True, False)
    assert [body['status'] for body in opener.bodies] == ['Alarm', 'OK']
    assert ledger.pending(endpoint.ledger_key) == []


def test_only_if_raised_still_delivers_a_queued_ok(ledger, endpoint, client, opener, make_alert):
    # The callback queued the OK that resolves the alert; the task delivers it, and its own OK is withheld.
    dispatch(make_alert(), endpoint, ledger, client)
    ledger.queue(endpoint.ledger_key, make_alert(status='OK', description='recovered'))
    opener.calls.clear()

    outcome = dispatch(make_alert(status='OK'), endpoint, ledger, client, only_if_raised=True)
    assert (outcome.changed, outcome.sent, outcome.withheld) == (True, True, True)
    assert [body.get('description') for body in opener.bodies] == ['recovered']
    assert ledger.pending(endpoint.ledger_key) == []
    assert ledger.lookup(endpoint.ledger_key, make_alert().alert_id).payload['description'] == 'recovered'


def test_only_if_raised_rechecks_under_the_claim(ledger, endpoint, client, opener, make_alert, monkeypatch):
    # Another fork resolved the alert between this fork's first look and its claim.
    dispatch(make_alert(), endpoint, ledger, client)
    stale = ledger.lookup(endpoint.ledger_key, make_alert().alert_id)
    dispatch(make_alert(status='OK', description='resolved elsewhere'), endpoint, ledger, client)
    opener.calls.clear()
    real_lookup = ledger.lookup
    looks = []

    def lookup(endpoint_key, alert_id):
        looks.append(alert_id)
        return stale if len(looks) == 1 else real_lookup(endpoint_key, alert_id)

    monkeypatch.setattr(ledger, 'lookup', lookup)
    outcome = dispatch(make_alert(status='OK'), endpoint, ledger, client, only_if_raised=True)
    assert len(looks) == 2
    assert (outcome.changed, outcome.sent, outcome.withheld) == (False, False, True)
    assert outcome.previous.payload['description'] == 'resolved elsewhere'
    assert opener.calls == []


def test_is_withheld():
    alarm = build_alert({'alert_name': 'x', 'status': 'Alarm'})
    ok = build_alert({'alert_name': 'x', 'status': 'OK'})
    assert not is_withheld(ok, None, only_if_raised=False)
    assert is_withheld(ok, None, only_if_raised=True)
    assert not is_withheld(alarm, None, only_if_raised=True)


# -- check mode -----------------------------------------------------------------------------------


@pytest.mark.parametrize('force', [False, True])
def test_check_mode_on_a_missing_ledger_sends_and_writes_nothing(tmp_path, endpoint, client, opener, make_alert, force):
    path = tmp_path / 'state' / 'ledger.sqlite3'
    with SqliteLedger(str(path), read_only=True) as ledger:
        outcome = dispatch(make_alert(), endpoint, ledger, client, force=force, check_mode=True)
    assert outcome._replace(alert=None) == Outcome(None, None, changed=True)
    assert opener.calls == []
    assert not path.parent.exists()


@pytest.mark.parametrize(
    ('change', 'changed'), [({}, False), ({'status': 'OK'}, True), ({'description': 'new'}, True)], ids=['same', 'status', 'payload']
)
def test_check_mode_reports_what_would_happen(ledger, endpoint, client, opener, make_alert, change, changed):
    dispatch(make_alert(), endpoint, ledger, client)
    opener.calls.clear()
    before = snapshot(ledger, endpoint, make_alert().alert_id)

    outcome = dispatch(make_alert(**change), endpoint, ledger, client, check_mode=True)
    assert (outcome.changed, outcome.sent, outcome.attempts) == (changed, False, 0)
    assert outcome.previous.status == 'Alarm'
    assert opener.calls == []
    assert snapshot(ledger, endpoint, make_alert().alert_id) == before


def test_check_mode_force(ledger, endpoint, client, opener, make_alert):
    dispatch(make_alert(), endpoint, ledger, client)
    opener.calls.clear()
    outcome = dispatch(make_alert(), endpoint, ledger, client, force=True, check_mode=True)
    assert (outcome.changed, outcome.sent) == (True, False)
    assert opener.calls == []


# -- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize('recorded', [False, True], ids=['no-record', 'older-record'])
@pytest.mark.parametrize('status', [400, 401, 503])
def test_delivery_error_leaves_the_ledger_unchanged(ledger, endpoint, client, opener, make_alert, recorded, status):
    if recorded:
        dispatch(make_alert(status='OK'), endpoint, ledger, client)
    before = snapshot(ledger, endpoint, make_alert().alert_id)
    opener.http_error(status, 'no', times=client.max_attempts if status == 503 else 1)

    with pytest.raises(SendError) as info:
        dispatch(make_alert(), endpoint, ledger, client)
    assert info.value.http_status == status
    assert snapshot(ledger, endpoint, make_alert().alert_id) == before

    # The claim was released: the next attempt neither waits nor skips the alert.
    started = time.monotonic()
    assert dispatch(make_alert(), endpoint, ledger, client).sent is True
    assert time.monotonic() - started < 1.0


# -- the outbox -----------------------------------------------------------------------------------


def test_queued_identical_alert_is_delivered_once_by_the_task(ledger, endpoint, client, opener, make_alert):
    # Queued is not acknowledged: the task that states the same alert delivers the queued entry,
    # and does not send its identical alert a second time.
    ledger.queue(endpoint.ledger_key, make_alert())
    outcome = dispatch(make_alert(), endpoint, ledger, client)
    assert (outcome.changed, outcome.sent) == (True, True)
    assert outcome.previous.pending is True
    assert len(opener.calls) == 1
    assert ledger.pending(endpoint.ledger_key) == []
    assert ledger.lookup(endpoint.ledger_key, make_alert().alert_id).pending is False


def test_queued_alert_is_reported_in_check_mode_without_a_request(ledger, endpoint, client, opener, make_alert):
    ledger.queue(endpoint.ledger_key, make_alert())
    outcome = dispatch(make_alert(), endpoint, ledger, client, check_mode=True)
    assert (outcome.changed, outcome.sent) == (True, False)
    assert opener.calls == []
    assert len(ledger.pending(endpoint.ledger_key)) == 1


def test_queued_alarm_goes_before_its_ok(ledger, endpoint, client, opener, make_alert):
    ledger.queue(endpoint.ledger_key, make_alert(), hosts=['web01'])
    outcome = dispatch(make_alert(status='OK'), endpoint, ledger, client)

    assert [body['status'] for body in opener.bodies] == ['Alarm', 'OK']
    assert (outcome.changed, outcome.sent) == (True, True)
    assert ledger.pending(endpoint.ledger_key) == []
    assert ledger.lookup(endpoint.ledger_key, make_alert().alert_id).status == 'OK'
    # Idempotent afterwards.
    assert dispatch(make_alert(status='OK'), endpoint, ledger, client).sent is False
    assert len(opener.calls) == 2


def test_queued_alerts_of_other_ids_are_left_for_the_callback(ledger, endpoint, client, opener, make_alert):
    ledger.queue(endpoint.ledger_key, make_alert(resource_id='db01'))
    dispatch(make_alert(), endpoint, ledger, client)
    assert [body['resource_id'] for body in opener.bodies] == ['web01']
    assert len(ledger.pending(endpoint.ledger_key)) == 1


def test_claim_lease_outlasts_the_longest_send(endpoint):
    client = TemperstackClient(endpoint, timeout=7, retries=4)
    assert claim_lease(client) >= client.max_attempts * (client.timeout + RETRY_AFTER_CAP)


# -- concurrency ----------------------------------------------------------------------------------


class SlowCountingClient:
    """A client whose send takes ``delay`` seconds and is counted across processes."""

    def __init__(self, sends, delay: float) -> None:
        self.sends = sends
        self.delay = delay
        self.timeout = 10
        self.retries = 0
        self.max_attempts = 1

    def send(self, payload):
        with self.sends.get_lock():
            self.sends.value += 1
        time.sleep(self.delay)
        return Acknowledgement(200, 1, 'ok')


def _deliver_in_process(index, ledger_path, options, sends, delay, start, sent, started, finished):
    from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import resolve_endpoint

    endpoint = resolve_endpoint({'api_key': 'tsk-concurrency', 'org': 'acme'}, environ={})
    with SqliteLedger(ledger_path) as ledger:
        start.wait()
        started[index] = time.monotonic()
        outcome = dispatch(build_alert(options), endpoint, ledger, SlowCountingClient(sends, delay))
        finished[index] = time.monotonic()
    sent[index] = 1 if outcome.sent else 0
    if outcome.changed != outcome.sent:
        raise SystemExit(3)


def _run_deliveries(fork_context, ledger_path, options_list, delay):
    count = len(options_list)
    SqliteLedger(ledger_path).close()  # created before the fork, not held across it
    sends = fork_context.Value('i', 0)
    start = fork_context.Barrier(count)
    sent = fork_context.Array('i', count)
    started = fork_context.Array('d', count)
    finished = fork_context.Array('d', count)
    processes = [
        fork_context.Process(
            target=_deliver_in_process, args=(index, ledger_path, options, sends, delay, start, sent, started, finished)
        )
        for index, options in enumerate(options_list)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0] * count
    return sends.value, list(sent), max(finished) - min(started)


def test_same_alert_from_many_processes_is_sent_once(fork_context, ledger_path, alert_args):
    sends, sent, _elapsed = _run_deliveries(fork_context, ledger_path, [alert_args] * 6, delay=0.2)
    assert sends == 1
    assert sorted(sent) == [0, 0, 0, 0, 0, 1]


def test_distinct_alerts_go_out_in_parallel(fork_context, ledger_path, alert_args):
    delay, count = 0.3, 6
    options = [dict(alert_args, resource_id=f'web{number:02}') for number in range(count)]
    sends, sent, elapsed = _run_deliveries(fork_context, ledger_path, options, delay=delay)
    assert sends == count
    assert sent == [1] * count
    assert elapsed < delay * count / 2, f'{count} sends of {delay} s took {elapsed:.2f} s'


# -- delivering the outbox in parallel ------------------------------------------------------------------------


class SlowClient:
    """A Temperstack that takes ``latency`` seconds per request; records what ran at once and in which order."""

    # What claim_lease() reads of a TemperstackClient.
    max_attempts = 1
    timeout = 1

    def __init__(self, endpoint, latency=0.05, fail=None):
        self.endpoint = endpoint
        self.latency = latency
        self.fail = dict(fail or {})
        self.sent = []
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()

    def send(self, payload):
        key = (payload['alert_id'], payload['status'])
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(self.latency)
            if key in self.fail:
                raise self.fail[key]
            with self._lock:
                self.sent.append(key)
            return Acknowledgement(200, 1, '')
        finally:
            with self._lock:
                self.in_flight -= 1


class ThreadCheckingLedger:
    """The real ledger, asserting that only the thread that made it writes to it."""

    def __init__(self, ledger):
        self._ledger = ledger
        self._thread = threading.get_ident()

    def __getattr__(self, name):
        attribute = getattr(self._ledger, name)
        if name in ('delivered', 'discard', 'record', 'queue', 'try_claim', 'release', 'renew'):
            def checked(*args, **kwargs):
                assert threading.get_ident() == self._thread, f'ledger.{name} called from a worker thread'
                return attribute(*args, **kwargs)
            return checked
        return attribute


def queue_story(ledger, endpoint, make_alert, alerts=40):
    """Alarm for every alert, then an OK for every other one: what a storm and a partial recovery queue."""
    for index in range(alerts):
        ledger.queue(endpoint.ledger_key, make_alert(alert_id=f'id-{index}', status='Alarm'))
    for index in range(0, alerts, 2):
        ledger.queue(endpoint.ledger_key, make_alert(alert_id=f'id-{index}', status='OK'))


def test_parallel_delivery_is_bounded_faster_and_keeps_each_alerts_order(ledger, endpoint, make_alert):
    # Found by the fault suite (tests/faults, load): one request at a time, 2,000 alerts at 100 ms each took
    # 200 s, far beyond flush_timeout (30 s); most of a failure storm was left for the next run.
    queue_story(ledger, endpoint, make_alert)
    client = SlowClient(endpoint)
    sent = []

    started = time.monotonic()
    send_outbox(ThreadCheckingLedger(ledger), client, on_sent=lambda alert: sent.append(alert.alert_id), workers=8)
    elapsed = time.monotonic() - started

    assert 2 <= client.peak <= 8
    assert elapsed < 60 * 0.05 / 2  # 60 requests of 50 ms, eight at once
    assert len(client.sent) == len(sent) == 60
    for index in range(0, 40, 2):
        assert client.sent.index((f'id-{index}', 'Alarm')) < client.sent.index((f'id-{index}', 'OK'))
    assert ledger.pending(endpoint.ledger_key) == []
    assert ledger.lookup(endpoint.ledger_key, 'id-0').status == 'OK'
    assert ledger.lookup(endpoint.ledger_key, 'id-1').status == 'Alarm'


def test_parallel_delivery_stops_starting_after_a_failure_and_an_ok_never_overtakes(ledger, endpoint, make_alert):
    queue_story(ledger, endpoint, make_alert)
    client = SlowClient(endpoint, fail={('id-4', 'Alarm'): SendError('HTTP 503', 503, 4)})

    with pytest.raises(SendError, match='^Alarm for id-4 was not delivered: HTTP 503$'):
        send_outbox(ledger, client, workers=4)

    assert ('id-4', 'OK') not in client.sent
    # Only what was already on its way when the failure came was sent; everything else waits, in order.
    assert len(client.sent) < 20
    left = [(q.alert.alert_id, q.alert.status) for q in ledger.pending(endpoint.ledger_key)]
    assert [entry for entry in left if entry[0] == 'id-4'] == [('id-4', 'Alarm'), ('id-4', 'OK')]
    assert len(left) + len(client.sent) == 60


def test_an_endpoint_that_is_down_gets_one_request_not_one_per_worker(ledger, endpoint, make_alert):
    queue_story(ledger, endpoint, make_alert)
    client = SlowClient(endpoint, latency=0.01, fail={('id-0', 'Alarm'): SendError('refused', None, 4)})

    with pytest.raises(SendError, match='^Alarm for id-0 was not delivered'):
        send_outbox(ledger, client, workers=16)

    assert client.peak == 1 and client.sent == []
    assert len(ledger.pending(endpoint.ledger_key)) == 60


def test_a_short_queue_goes_strictly_oldest_first(ledger, endpoint, make_alert):
    queue_story(ledger, endpoint, make_alert, alerts=4)
    client = SlowClient(endpoint, latency=0.01)

    send_outbox(ledger, client, workers=16)

    assert client.peak == 1
    assert client.sent == [('id-0', 'Alarm'), ('id-1', 'Alarm'), ('id-2', 'Alarm'), ('id-3', 'Alarm'),
                           ('id-0', 'OK'), ('id-2', 'OK')]


def test_parallel_delivery_drops_a_400_and_goes_on(ledger, endpoint, make_alert):
    queue_story(ledger, endpoint, make_alert, alerts=6)
    dropped = []
    client = SlowClient(endpoint, latency=0.01, fail={('id-2', 'Alarm'): SendError('HTTP 400: bad', 400, 1)})

    send_outbox(ledger, client, on_dropped=dropped.append, workers=4)

    assert dropped == ['Alarm for id-2 was refused and dropped: HTTP 400: bad']
    assert len(client.sent) == 8
    assert ledger.pending(endpoint.ledger_key) == []


def test_one_alert_id_is_delivered_in_order_whatever_the_workers(ledger, endpoint, make_alert):
    for status in ('Alarm', 'OK', 'Alarm', 'OK'):
        ledger.queue(endpoint.ledger_key, make_alert(alert_id='same', status=status, description=f'{status} {time.time()}'))
    client = SlowClient(endpoint, latency=0.01)

    send_outbox(ledger, client, workers=16)

    assert client.sent == [('same', 'Alarm'), ('same', 'OK'), ('same', 'Alarm'), ('same', 'OK')]
    assert client.peak == 1


# -- sent, but not recorded (issue 10, item 10) ----------------------------------------------------


def test_a_ledger_error_after_a_2xx_is_reported_as_sent_but_not_recorded(ledger, endpoint, client, opener, make_alert, monkeypatch):
    def broken_record(*args, **kwargs):
        raise LedgerError('the ledger /x failed: database or disk is full')

    monkeypatch.setattr(ledger, 'record', broken_record)
    outcome = dispatch(make_alert(), endpoint, ledger, client)

    assert (outcome.changed, outcome.sent, outcome.http_status) == (True, True, 200)
    assert outcome.unrecorded == 'the ledger /x failed: database or disk is full'
    assert len(opener.calls) == 1


# -- one sender per alert chain (item 5) -----------------------------------------------------------


def test_concurrent_senders_deliver_each_chain_once_and_in_order(ledger_path, endpoint, make_alert):
    with SqliteLedger(ledger_path) as ledger:
        for alert_id in ('a', 'b', 'c'):
            ledger.queue(endpoint.ledger_key, make_alert(alert_id=alert_id))
            ledger.queue(endpoint.ledger_key, make_alert(alert_id=alert_id, status='OK'))
    client = SlowClient(endpoint, latency=0.05)
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            with SqliteLedger(ledger_path) as own:
                send_outbox(own, client)
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            errors.append(exc)

    threads = [threading.Thread(target=sender) for _sender in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    for alert_id in ('a', 'b', 'c'):
        assert [status for aid, status in client.sent if aid == alert_id] == ['Alarm', 'OK']
    with SqliteLedger(ledger_path) as ledger:
        assert ledger.pending(endpoint.ledger_key) == []


def test_a_sender_leaves_an_alert_claimed_by_another_alone(ledger, endpoint, make_alert):
    ledger.queue(endpoint.ledger_key, make_alert(alert_id='a'))
    ledger.queue(endpoint.ledger_key, make_alert(alert_id='b'))
    held = ledger.try_claim(endpoint.ledger_key, 'a', lease=30)
    client = SlowClient(endpoint, latency=0)
    send_outbox(ledger, client)
    assert client.sent == [('b', 'Alarm')]
    assert [q.alert.alert_id for q in ledger.pending(endpoint.ledger_key)] == ['a']
    ledger.release(held)


def test_a_sender_whose_claim_was_taken_over_stops_before_sending_again(ledger_path, endpoint, make_alert):
    with SqliteLedger(ledger_path) as ledger, SqliteLedger(ledger_path) as rival:
        ledger.queue(endpoint.ledger_key, make_alert(alert_id='a'))
        ledger.queue(endpoint.ledger_key, make_alert(alert_id='a', status='OK'))

        class TakenOverAfterFirstSend(SlowClient):
            def send(self, payload):
                ack = super().send(payload)
                # The sender stalls past its lease and another takes the alert over.
                with rival._conn:
                    rival._conn.execute("UPDATE claims SET token = 'rival'")
                return ack

        client = TakenOverAfterFirstSend(endpoint, latency=0)
        with pytest.raises(LedgerError, match='passed to another sender'):
            send_outbox(ledger, client)
        assert client.sent == [('a', 'Alarm')]  # the OK was not sent by the sender that lost the claim
        assert [q.alert.status for q in ledger.pending(endpoint.ledger_key)] == ['Alarm', 'OK']


@pytest.mark.parametrize('workers', [1, 16])
def test_the_same_alarm_queued_by_several_controllers_is_sent_once(ledger, endpoint, client, opener, make_alert, workers):
    """Three controllers saw the same play fail at once and each queued its Alarm: Temperstack needs it once."""
    alarm = make_alert(status='Alarm')
    for controller in range(3):  # pylint: disable=unused-variable
        ledger.queue(endpoint.ledger_key, alarm, ['web1'])
    # A backlog of other alerts, so that 16 workers take the parallel path.
    for index in range(20):
        ledger.queue(endpoint.ledger_key, make_alert(alert_id=f'other-{index}'))

    send_outbox(ledger, client, workers=workers)

    sent = [call.json['alert_id'] for call in opener.calls]
    assert sent.count(alarm.alert_id) == 1
    assert len(sent) == 21
    assert ledger.pending(endpoint.ledger_key) == []


def test_a_repeat_that_names_a_new_host_is_still_sent(ledger, endpoint, client, opener, make_alert):
    alarm = make_alert(status='Alarm')
    ledger.queue(endpoint.ledger_key, alarm, ['web1'])
    ledger.queue(endpoint.ledger_key, alarm, ['web1', 'web2'])

    send_outbox(ledger, client)

    assert len(opener.calls) == 2
    assert ledger.lookup(endpoint.ledger_key, alarm.alert_id).hosts == ('web1', 'web2')


def test_an_alarm_again_after_its_ok_is_sent(ledger, endpoint, client, opener, make_alert):
    for status in ('Alarm', 'OK', 'Alarm'):
        ledger.queue(endpoint.ledger_key, make_alert(status=status))

    send_outbox(ledger, client)

    assert [call.json['status'] for call in opener.calls] == ['Alarm', 'OK', 'Alarm']


def test_a_queued_repeat_of_what_temperstack_holds_is_not_sent(ledger, endpoint, client, opener, make_alert):
    alarm = make_alert(status='Alarm')
    ledger.record(endpoint.ledger_key, alarm, ['web1'])
    ledger.queue(endpoint.ledger_key, alarm, ['web1'])

    send_outbox(ledger, client)

    assert opener.calls == []
    assert ledger.pending(endpoint.ledger_key) == []
