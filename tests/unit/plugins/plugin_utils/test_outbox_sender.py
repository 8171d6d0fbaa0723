# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Background delivery of the outbox: OutboxSender (the thread) and SenderProcess (the process around it)."""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
import typing as t

import pytest

from ansible_collections.temperstack.alerting.plugins.plugin_utils._client import SendError, TemperstackClient
from ansible_collections.temperstack.alerting.plugins.plugin_utils import _outbox_sender
from ansible_collections.temperstack.alerting.plugins.plugin_utils._endpoint import resolve_endpoint
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import LedgerError
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_sqlite import SqliteLedger
from ansible_collections.temperstack.alerting.plugins.plugin_utils._outbox_sender import (
    SLOW_FLUSH_SECONDS,
    SenderProcess,
    FlushReport,
    OutboxSender,
)

OTHER_ENDPOINT_KEY = 'f' * 64


class FakeClient:
    """What OutboxSender needs of a TemperstackClient: an endpoint and send(payload).

    ``outcomes`` is consumed one per send: None delivers, an exception is raised. ``gate``, when given,
    holds every send until it is set (a slow or hanging Temperstack).
    """

    # What claim_lease() reads of a TemperstackClient.
    max_attempts = 1
    timeout = 1

    def __init__(self, endpoint, outcomes: t.Iterable[BaseException | None] = (), gate: threading.Event | None = None):
        self.endpoint = endpoint
        self.outcomes = list(outcomes)
        self.gate = gate
        self.sent: list[dict[str, str]] = []
        self.attempted: list[dict[str, str]] = []

    def send(self, payload):
        self.attempted.append(dict(payload))
        if self.gate is not None:
            self.gate.wait(30)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        self.sent.append(dict(payload))
        return None


@pytest.fixture
def ledger(ledger_path):
    with SqliteLedger(ledger_path) as opened:
        yield opened


@pytest.fixture
def story(make_alert):
    """Alarm A, Alarm B, OK A: the order in which one run (or several) queued them."""
    return [
        make_alert(alert_id='a', status='Alarm', description='A broke'),
        make_alert(alert_id='b', status='Alarm', description='B broke'),
        make_alert(alert_id='a', status='OK', description='A recovered'),
    ]


def queue_all(ledger, endpoint, alerts, hosts=('web1',)):
    for alert in alerts:
        ledger.queue(endpoint.ledger_key, alert, hosts)


def run_sender(client, ledger_path, timeout=10.0) -> FlushReport:
    sender = OutboxSender(client, ledger_path)
    sender.start()
    return sender.flush(timeout)


def sequence(payloads):
    return [(p['alert_id'], p['status']) for p in payloads]


# -- OutboxSender ---------------------------------------------------------------------------------


def test_delivers_the_outbox_oldest_first_and_records_it(ledger, ledger_path, endpoint, story):
    queue_all(ledger, endpoint, story)
    client = FakeClient(endpoint)

    report = run_sender(client, ledger_path)

    assert sequence(client.sent) == [('a', 'Alarm'), ('b', 'Alarm'), ('a', 'OK')]
    assert report == FlushReport(['Alarm', 'Alarm', 'OK'], 0, [], True)
    assert ledger.pending(endpoint.ledger_key) == []
    assert ledger.lookup(endpoint.ledger_key, 'a').status == 'OK'
    assert ledger.lookup(endpoint.ledger_key, 'a').pending is False
    assert ledger.lookup(endpoint.ledger_key, 'b').status == 'Alarm'
    assert ledger.lookup(endpoint.ledger_key, 'b').hosts == ('web1',)


def test_sends_exactly_the_queued_payloads(ledger, ledger_path, endpoint, story):
    queue_all(ledger, endpoint, story)
    client = FakeClient(endpoint)

    run_sender(client, ledger_path)

    assert client.sent == [alert.payload for alert in story]


def test_stops_at_the_first_failure_so_an_ok_never_overtakes_its_alarm(ledger, ledger_path, endpoint, story):
    queue_all(ledger, endpoint, story)
    client = FakeClient(endpoint, [SendError('Temperstack answered HTTP 503', 503, 4)])

    report = run_sender(client, ledger_path)

    assert sequence(client.attempted) == [('a', 'Alarm')]
    assert client.sent == []
    assert report.sent == []
    assert report.queued == 3
    assert report.finished
    assert len(report.errors) == 1
    assert 'Alarm for a was not delivered' in report.errors[0]
    assert 'HTTP 503' in report.errors[0]
    # Everything waits, in the same order, for the next run.
    assert [(q.alert.alert_id, q.alert.status) for q in ledger.pending(endpoint.ledger_key)] == [
        ('a', 'Alarm'), ('b', 'Alarm'), ('a', 'OK'),
    ]
    assert ledger.lookup(endpoint.ledger_key, 'a').pending


def test_the_next_sender_delivers_what_the_last_could_not_in_order(ledger, ledger_path, endpoint, story):
    queue_all(ledger, endpoint, story[:1])
    run_sender(FakeClient(endpoint, [SendError('connection refused', None, 4)]), ledger_path)
    queue_all(ledger, endpoint, story[1:])
    client = FakeClient(endpoint)

    report = run_sender(client, ledger_path)

    assert sequence(client.sent) == [('a', 'Alarm'), ('b', 'Alarm'), ('a', 'OK')]
    assert report.queued == 0


def test_a_failure_midway_keeps_what_was_delivered(ledger, ledger_path, endpoint, story):
    queue_all(ledger, endpoint, story)
    client = FakeClient(endpoint, [None, SendError('timeout', None, 4)])

    report = run_sender(client, ledger_path)

    assert report.sent == ['Alarm']
    assert report.queued == 2
    assert ledger.lookup(endpoint.ledger_key, 'a') .status == 'OK'  # the queued OK is a's current state
    assert ledger.lookup(endpoint.ledger_key, 'a').pending
    assert [(q.alert.alert_id, q.alert.status) for q in ledger.pending(endpoint.ledger_key)] == [
        ('b', 'Alarm'), ('a', 'OK'),
    ]


def test_blocked_sender_does_not_retry_on_later_wakeups(ledger, ledger_path, endpoint, story):
    queue_all(ledger, endpoint, story[:1])
    client = FakeClient(endpoint, [SendError('refused', None, 4)])
    sender = OutboxSender(client, ledger_path)
    sender.start()
    _wait_for(lambda: sender.errors)
    queue_all(ledger, endpoint, story[1:])
    sender.notify()

    report = sender.flush(5)

    assert len(client.attempted) == 1
    assert report.queued == 3


def test_http_400_is_dropped_with_an_error_and_the_rest_goes_on(ledger, ledger_path, endpoint, story):
    queue_all(ledger, endpoint, story)
    client = FakeClient(endpoint, [SendError('Temperstack refused the alert (HTTP 400: bad field)', 400, 1)])

    report = run_sender(client, ledger_path)

    assert sequence(client.sent) == [('b', 'Alarm'), ('a', 'OK')]
    assert report.sent == ['Alarm', 'OK']
    assert report.queued == 0
    assert len(report.errors) == 1
    assert 'Alarm for a was refused and dropped' in report.errors[0]
    assert 'HTTP 400: bad field' in report.errors[0]


@pytest.mark.parametrize('status', [401, 403, 404, 422])
def test_other_final_4xx_answers_block_and_keep_the_alert(ledger, ledger_path, endpoint, story, status):
    queue_all(ledger, endpoint, story)
    client = FakeClient(endpoint, [SendError(f'HTTP {status}', status, 1)])

    report = run_sender(client, ledger_path)

    assert client.sent == []
    assert report.queued == 3


def test_errors_never_hold_the_key(ledger, ledger_path, endpoint, api_key, webhook_url, story):
    queue_all(ledger, endpoint, story)
    client = FakeClient(endpoint, [SendError(f'could not reach {webhook_url} (key {api_key})', None, 4)])

    report = run_sender(client, ledger_path)

    assert report.errors
    assert all(api_key not in error for error in report.errors)
    assert '********' in report.errors[0]


def test_only_this_endpoints_outbox_is_drained(ledger, ledger_path, endpoint, story):
    ledger.queue(OTHER_ENDPOINT_KEY, story[0])
    queue_all(ledger, endpoint, story[1:2])
    client = FakeClient(endpoint)

    report = run_sender(client, ledger_path)

    assert sequence(client.sent) == [('b', 'Alarm')]
    assert report.queued == 0
    assert len(ledger.pending(OTHER_ENDPOINT_KEY)) == 1


def test_wakes_up_for_alerts_queued_while_it_runs(ledger, ledger_path, endpoint, story):
    client = FakeClient(endpoint)
    sender = OutboxSender(client, ledger_path)
    sender.start()
    for alert in story:
        ledger.queue(endpoint.ledger_key, alert)
        sender.notify()
        _wait_for(lambda: len(client.sent) == story.index(alert) + 1)

    report = sender.flush(5)

    assert sequence(client.sent) == [('a', 'Alarm'), ('b', 'Alarm'), ('a', 'OK')]
    assert report.sent == ['Alarm', 'Alarm', 'OK']


def test_nothing_queued_is_an_empty_finished_report(ledger_path, endpoint):
    report = run_sender(FakeClient(endpoint), ledger_path)

    assert report == FlushReport([], 0, [], True)


def test_flush_waits_at_most_its_timeout_for_a_slow_temperstack(ledger, ledger_path, endpoint, story):
    queue_all(ledger, endpoint, story)
    gate = threading.Event()
    client = FakeClient(endpoint, gate=gate)
    sender = OutboxSender(client, ledger_path)
    sender.start()
    try:
        started = time.monotonic()
        report = sender.flush(0.5)
        waited = time.monotonic() - started
    finally:
        gate.set()

    assert 0.4 <= waited < 2.0
    assert not report.finished
    assert report.sent == []
    assert report.queued == 3  # the hanging Alarm is still queued: it was not acknowledged


def test_flush_returns_as_soon_as_delivery_is_done(ledger, ledger_path, endpoint, story):
    queue_all(ledger, endpoint, story)
    sender = OutboxSender(FakeClient(endpoint), ledger_path)
    sender.start()

    started = time.monotonic()
    report = sender.flush(30)

    assert time.monotonic() - started < 5
    assert report.finished


def test_unusable_ledger_is_reported_not_raised(tmp_path, endpoint):
    blocker = tmp_path / 'not-a-directory'
    blocker.write_text('')
    report = run_sender(FakeClient(endpoint), str(blocker / 'ledger.sqlite3'))

    assert report.finished
    assert report.sent == []
    assert report.queued == -1
    assert len(report.errors) == 1
    assert 'ledger' in report.errors[0]


def _wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError('condition not met in time')
        time.sleep(0.01)


# -- SenderProcess: the same, from a separate process, against a local HTTP server -------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(('127.0.0.1', 0), _Handler)
        self.bodies: list[dict[str, t.Any]] = []
        self.paths: list[str] = []
        self.hang = threading.Event()  # set: requests hang until released
        self.release = threading.Event()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        self.server.paths.append(self.path)
        self.server.bodies.append(json.loads(body))
        if self.server.hang.is_set():
            self.server.release.wait(60)
            return
        data = b'{"status": "success"}'
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def local_endpoint(server, api_key):
    return resolve_endpoint({'api_key': api_key, 'base_url': f'http://127.0.0.1:{server.server_address[1]}'}, environ={})


def delivery_process(endpoint, ledger_path, flush_timeout=10.0, timeout=10):
    return SenderProcess(TemperstackClient(endpoint, timeout=timeout, retries=0), ledger_path, flush_timeout)


def test_process_delivers_in_order_and_reports(ledger, ledger_path, local_endpoint, server, story, api_key):
    queue_all(ledger, local_endpoint, story)
    process = delivery_process(local_endpoint, ledger_path)

    process.notify()
    report = process.flush()

    assert report == FlushReport(['Alarm', 'Alarm', 'OK'], 0, [], True)
    assert sequence(server.bodies) == [('a', 'Alarm'), ('b', 'Alarm'), ('a', 'OK')]
    assert server.paths == [f'/api/integration/webhook/{api_key}'] * 3
    assert ledger.pending(local_endpoint.ledger_key) == []


def test_process_without_anything_to_send_is_never_started(ledger_path, local_endpoint, server):
    process = delivery_process(local_endpoint, ledger_path)

    assert process.flush() == FlushReport([], 0, [], True)
    assert server.bodies == []


def test_process_delivers_what_is_queued_after_it_started(ledger, ledger_path, local_endpoint, server, story):
    process = delivery_process(local_endpoint, ledger_path)
    queue_all(ledger, local_endpoint, story[:1])
    process.notify()
    queue_all(ledger, local_endpoint, story[1:])
    process.notify()

    report = process.flush()

    assert report.sent == ['Alarm', 'Alarm', 'OK']
    assert sequence(server.bodies) == [('a', 'Alarm'), ('b', 'Alarm'), ('a', 'OK')]


def test_process_can_be_used_again_after_a_flush(ledger, ledger_path, local_endpoint, server, story):
    # ansible-playbook one.yml two.yml sends the stats event, and so a flush, after each playbook.
    process = delivery_process(local_endpoint, ledger_path)
    queue_all(ledger, local_endpoint, story[:1])
    process.notify()
    first = process.flush()
    queue_all(ledger, local_endpoint, story[1:])
    process.notify()
    second = process.flush()

    assert first.sent == ['Alarm']
    assert second.sent == ['Alarm', 'OK']
    assert second.queued == 0
    assert sequence(server.bodies) == [('a', 'Alarm'), ('b', 'Alarm'), ('a', 'OK')]


@pytest.fixture
def spawned(monkeypatch) -> list[tuple[list[str], dict[str, str]]]:
    """The command line and environment of every process started, as they were handed to Popen."""
    import subprocess

    seen: list[tuple[list[str], dict[str, str]]] = []
    real_popen = subprocess.Popen

    def spy(args, **kwargs):
        seen.append((list(args), dict(kwargs.get('env') or {})))
        return real_popen(args, **kwargs)

    monkeypatch.setattr(subprocess, 'Popen', spy)
    return seen


def test_process_gets_the_key_over_its_pipe_only(ledger, ledger_path, local_endpoint, server, story, api_key, spawned):
    seen = spawned
    queue_all(ledger, local_endpoint, story[:1])
    process = delivery_process(local_endpoint, ledger_path)
    process.notify()
    report = process.flush()

    assert report.sent == ['Alarm']
    assert len(seen) == 1
    argv, env = seen[0]
    assert not any(api_key in arg for arg in argv)
    assert not any(api_key in value for value in env.values())


def test_process_flush_is_bounded_when_temperstack_hangs(ledger, ledger_path, local_endpoint, server, story):
    server.hang.set()
    queue_all(ledger, local_endpoint, story)
    process = delivery_process(local_endpoint, ledger_path, flush_timeout=1.0, timeout=30)
    process.notify()
    _wait_for(lambda: server.bodies, timeout=10)  # the Alarm is in flight and hanging

    started = time.monotonic()
    report = process.flush()
    waited = time.monotonic() - started

    # flush_timeout for the sender plus at most the 2 s the callback adds for the process to report
    assert waited < 1.0 + 2.0 + 1.5
    assert report.sent == []
    assert not report.finished
    assert report.queued in (3, -1)
    # Whatever the report says, nothing was lost: all three wait for the next run, in order.
    assert [(q.alert.alert_id, q.alert.status) for q in ledger.pending(local_endpoint.ledger_key)] == [
        ('a', 'Alarm'), ('b', 'Alarm'), ('a', 'OK'),
    ]
    server.release.set()


def test_process_flush_says_once_when_it_is_slow(ledger, ledger_path, local_endpoint, server, story):
    # Issue 20: the end of a run stalled silently for up to flush_timeout; on_slow lets the callback say so.
    server.hang.set()
    queue_all(ledger, local_endpoint, story)
    process = delivery_process(local_endpoint, ledger_path, flush_timeout=SLOW_FLUSH_SECONDS + 1.5, timeout=30)
    process.notify()
    _wait_for(lambda: server.bodies, timeout=10)
    calls = []

    started = time.monotonic()
    report = process.flush(on_slow=lambda left: calls.append((time.monotonic() - started, left)))

    assert len(calls) == 1
    after, left = calls[0]
    assert SLOW_FLUSH_SECONDS <= after < SLOW_FLUSH_SECONDS + 1.0
    assert 0.5 < left <= 1.5
    assert not report.finished
    assert time.monotonic() - started < SLOW_FLUSH_SECONDS + 1.5 + 2.0 + 1.5
    server.release.set()


def test_process_flush_that_is_quick_is_not_slow(ledger, ledger_path, local_endpoint, server, story):
    queue_all(ledger, local_endpoint, story)
    process = delivery_process(local_endpoint, ledger_path)
    process.notify()
    calls = []

    report = process.flush(on_slow=calls.append)

    assert report.sent == ['Alarm', 'Alarm', 'OK']
    assert calls == []


def test_process_flush_shorter_than_the_slow_mark_is_never_slow(ledger, ledger_path, local_endpoint, server, story):
    server.hang.set()
    queue_all(ledger, local_endpoint, story)
    process = delivery_process(local_endpoint, ledger_path, flush_timeout=SLOW_FLUSH_SECONDS / 2, timeout=30)
    process.notify()
    _wait_for(lambda: server.bodies, timeout=10)
    calls = []

    report = process.flush(on_slow=calls.append)

    assert calls == []
    assert not report.finished
    server.release.set()


def test_process_reports_a_dead_endpoint_without_the_key(ledger, ledger_path, story, api_key, tmp_path):
    # Nothing listens on this port (the server was closed), so every attempt is refused.
    closed = http.server.HTTPServer(('127.0.0.1', 0), http.server.BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    endpoint = resolve_endpoint({'api_key': api_key, 'base_url': f'http://127.0.0.1:{port}'}, environ={})
    queue_all(ledger, endpoint, story)
    process = delivery_process(endpoint, ledger_path)

    process.notify()
    report = process.flush()

    assert report.finished
    assert report.sent == []
    assert report.queued == 3
    assert report.errors and 'Alarm for a was not delivered' in report.errors[0]
    assert all(api_key not in error for error in report.errors)


def test_module_runs_as_a_script_from_the_collections_root():
    # SenderProcess starts `python -m <this module>` with the directory above ansible_collections
    # on PYTHONPATH: that directory must really hold this collection.
    from ansible_collections.temperstack.alerting.plugins.plugin_utils import _outbox_sender

    root = _outbox_sender._COLLECTIONS_ROOT
    assert os.path.isfile(
        os.path.join(root, 'ansible_collections', 'temperstack', 'alerting', 'plugins', 'plugin_utils', '_outbox_sender.py')
    )


def test_an_unexpected_error_is_reported_not_swallowed(ledger, ledger_path, endpoint, story):
    # Found by the fault suite (tests/faults): with TEMPERSTACK_TIMEOUT=-1 the client raised ValueError in the
    # sender thread, which died silently: the run said "1 queued" and nothing about why.
    queue_all(ledger, endpoint, story[:1])
    client = FakeClient(endpoint, [ValueError('Timeout value out of range')])

    report = run_sender(client, ledger_path)

    assert report.sent == []
    assert report.queued == 1
    assert report.finished
    assert report.errors == [
        'delivery failed unexpectedly (ValueError: Timeout value out of range); alerts stay queued for the next run'
    ]


# -- the process runs isolated (issue 10, item 4) --------------------------------------------------


def test_process_imports_nothing_from_the_working_directory_or_the_environment(
    ledger, ledger_path, local_endpoint, server, story, monkeypatch, tmp_path
):
    playbook_dir = tmp_path / 'playbooks'
    playbook_dir.mkdir()
    marker = tmp_path / 'imported'
    for name in ('json', 'selectors', 'random', 'queue', 'sitecustomize', 'usercustomize'):
        (playbook_dir / f'{name}.py').write_text(f'open({str(marker)!r} + "-{name}", "w").close()\nraise SystemExit(3)\n')
    monkeypatch.chdir(playbook_dir)
    monkeypatch.setenv('PYTHONPATH', str(playbook_dir))
    monkeypatch.setenv('PYTHONSTARTUP', str(playbook_dir / 'json.py'))
    monkeypatch.setenv('UNRELATED_SECRET', 'should-not-cross')
    queue_all(ledger, local_endpoint, story)
    process = delivery_process(local_endpoint, ledger_path)
    process.notify()
    report = process.flush()

    assert report == FlushReport(['Alarm', 'Alarm', 'OK'], 0, [], True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('imported')) == []


def test_process_gets_only_the_environment_it_needs(ledger, ledger_path, local_endpoint, server, story, monkeypatch, spawned):
    seen = spawned
    monkeypatch.setenv('UNRELATED_SECRET', 'should-not-cross')
    monkeypatch.setenv('https_proxy', 'http://proxy.example.com:3128')
    monkeypatch.setenv('no_proxy', '127.0.0.1,localhost')
    queue_all(ledger, local_endpoint, story[:1])
    process = delivery_process(local_endpoint, ledger_path)
    process.notify()
    assert process.flush().sent == ['Alarm']

    [(argv, env)] = seen
    assert argv[1] == '-I'
    assert 'UNRELATED_SECRET' not in env and not any(name.startswith('PYTHON') for name in env)
    assert env['https_proxy'] == 'http://proxy.example.com:3128' and env['no_proxy'] == '127.0.0.1,localhost'


# -- held failures: kept while the run lives, released when it dies (item 3) -----------------------


def _hold_story(ledger, endpoint, story, token):
    for alert in story[:2]:
        ledger.hold(endpoint.ledger_key, alert, ['web1'], token=token, owner='test:1')


def test_an_orderly_end_leaves_what_the_run_settles_held(ledger, ledger_path, local_endpoint, server, story):
    _hold_story(ledger, local_endpoint, story, 'run-1')
    process = SenderProcess(TemperstackClient(local_endpoint, timeout=5, retries=0), ledger_path, 5.0, run_token='run-1')
    process.notify()
    report = process.flush()

    assert report == FlushReport([], 0, [], True)
    assert server.bodies == []
    assert ledger.release_holds('run-1') == 2  # still held: the run settles them itself


def test_a_run_that_dies_has_its_held_failures_delivered_by_the_process(ledger, ledger_path, local_endpoint, server, story):
    import subprocess

    _hold_story(ledger, local_endpoint, story, 'run-2')
    process = SenderProcess(TemperstackClient(local_endpoint, timeout=5, retries=0), ledger_path, 5.0, run_token='run-2')
    process.notify()
    child = process._process
    # What SIGKILL of ansible-playbook leaves: the pipe closes without the end line.
    child.stdin.close()
    child.stdin = None
    out, _err = child.communicate(timeout=15)

    assert json.loads(out.decode().splitlines()[-1])['sent'] == ['Alarm', 'Alarm']
    assert sequence(server.bodies) == [('a', 'Alarm'), ('b', 'Alarm')]
    assert ledger.pending(local_endpoint.ledger_key) == []
    assert isinstance(child, subprocess.Popen)


def test_a_flush_that_gives_up_on_a_hanging_request_releases_its_claims(ledger, ledger_path, endpoint, story):
    gate = threading.Event()
    queue_all(ledger, endpoint, story)
    sender = OutboxSender(FakeClient(endpoint, gate=gate), ledger_path)
    sender.start()
    try:
        _wait_for(lambda: sender._ledger is not None and sender._ledger.claims, timeout=10)
        report = sender.flush(0.2)
        assert report.finished is False
        # The next run need not wait for the hanging sender's lease to deliver the alert it was sending.
        assert ledger.try_claim(endpoint.ledger_key, story[0].alert_id, lease=5) is not None
    finally:
        gate.set()


# -- the shared ledger through an outage ------------------------------------------------------------------------


def test_once_the_server_answers_again_this_run_delivers_both_the_shared_outbox_and_the_fallback_file(
    pg_relay, postgresql_backend, tmp_path, endpoint, story, monkeypatch,
):
    monkeypatch.setattr(_outbox_sender, 'RECONNECT_SECONDS', 0.0)
    proxy, url = pg_relay
    fallback = str(tmp_path / 'ledger.fallback.sqlite3')
    client = FakeClient(endpoint)
    sender = OutboxSender(client, url, fallback)
    sender.start()
    time.sleep(0.3)
    proxy.down()
    with SqliteLedger(fallback) as local:  # the callback, cut off too, queued an Alarm in the fallback file
        local.queue(endpoint.ledger_key, story[0])
    sender.notify()
    time.sleep(0.5)
    proxy.up()
    with postgresql_backend.open() as shared:  # the callback reached the server again and queued another there
        shared.queue(endpoint.ledger_key, story[1])
    sender.notify()
    report = sender.flush(10)

    assert sorted(payload['alert_id'] for payload in client.sent) == ['a', 'b']
    assert report.queued == 0 and report.finished
    with postgresql_backend.open() as shared:
        assert {record.alert_id for record in shared.records(endpoint.ledger_key)} == {'a', 'b'}


def test_what_a_run_kept_in_the_fallback_file_is_written_back_before_the_run_ends(
    pg_relay, postgresql_backend, tmp_path, endpoint, story, monkeypatch,
):
    # An AWX job's container goes with its fallback file: what it sent in the outage must reach the shared ledger.
    proxy, url = pg_relay
    fallback = str(tmp_path / 'ledger.fallback.sqlite3')
    proxy.down()
    client = FakeClient(endpoint)
    sender = OutboxSender(client, url, fallback)
    sender.start()
    with SqliteLedger(fallback) as local:
        local.queue(endpoint.ledger_key, story[0])
    sender.notify()
    time.sleep(0.5)
    assert [payload['alert_id'] for payload in client.sent] == ['a']  # sent during the outage, from the file
    proxy.up()
    sender.flush(10)

    with postgresql_backend.open() as shared:
        assert [(r.alert_id, r.status) for r in shared.records(endpoint.ledger_key)] == [('a', 'Alarm')]
    with SqliteLedger(fallback) as local:
        assert local.records(endpoint.ledger_key) == [] and local.entries() == []


class FlakyLedger:
    """A ledger whose first renewals fail, as during a PostgreSQL restart or a busy SQLite file."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.renewed = 0

    def renew_holds(self, token: str) -> int:
        if self.failures:
            self.failures -= 1
            raise LedgerError('the ledger failed: database is locked')
        self.renewed += 1
        return 1

    def close(self) -> None:
        pass


def test_the_hold_keeper_outlives_ledger_errors_and_renews_again(monkeypatch):
    monkeypatch.setattr(_outbox_sender, 'HOLD_RETRY_SECONDS', 0.01)
    monkeypatch.setattr(_outbox_sender, 'HOLD_LEASE_SECONDS', 0.4)
    flaky = FlakyLedger(failures=3)
    keeper = _outbox_sender._HoldKeeper('unused', 'run-token')  # pylint: disable=protected-access
    monkeypatch.setattr(keeper, '_open', lambda: flaky)
    keeper.start()
    time.sleep(0.5)
    keeper.stop(release=False)
    assert flaky.failures == 0 and flaky.renewed >= 2


# -- routing: one process drains every endpoint the run uses ----------------------------------------------------

SECOND_KEY = 'tsk-SECOND-CANARY-8a7b6c5d'


def test_process_drains_every_endpoint_of_the_run_and_gets_their_keys_over_its_pipe(
    ledger, ledger_path, local_endpoint, server, story, api_key, spawned
):
    second = resolve_endpoint({'api_key': SECOND_KEY, 'base_url': f'http://127.0.0.1:{server.server_address[1]}'},
                              environ={})
    second.integration = 'db'
    queue_all(ledger, local_endpoint, story[:1])
    queue_all(ledger, second, story[1:])
    process = SenderProcess(
        TemperstackClient(local_endpoint, timeout=10, retries=0), ledger_path, 10.0,
        others=[TemperstackClient(second, timeout=10, retries=0)],
    )
    process.notify()
    report = process.flush()

    assert sorted(report.sent) == ['Alarm', 'Alarm', 'OK']
    assert report.queued == 0
    assert sorted(server.paths) == sorted([f'/api/integration/webhook/{api_key}'] + [f'/api/integration/webhook/{SECOND_KEY}'] * 2)
    assert ledger.pending(local_endpoint.ledger_key) == [] and ledger.pending(second.ledger_key) == []
    argv, env = spawned[0]
    for key in (api_key, SECOND_KEY):
        assert not any(key in arg for arg in argv)
        assert not any(key in value for value in env.values())


def test_a_dead_endpoint_blocks_only_its_own_deliveries_and_its_error_names_its_integration(
    ledger, ledger_path, endpoint, story
):
    other = resolve_endpoint({'api_key': SECOND_KEY, 'base_url': 'https://other.example.com'}, environ={})
    other.integration = 'db'
    queue_all(ledger, endpoint, story[:1])
    queue_all(ledger, other, story[1:])
    dead = FakeClient(endpoint, outcomes=[SendError(f'HTTP 503 from {endpoint.url}', http_status=503, attempts=1)] * 5)
    alive = FakeClient(other)
    sender = OutboxSender(dead, ledger_path, others=[alive])
    sender.start()
    report = sender.flush(10.0)

    assert sequence(alive.sent) == [('b', 'Alarm'), ('a', 'OK')]
    assert dead.sent == []
    assert report.queued == 1
    [error] = report.errors
    assert error.startswith('integration default: ')
    assert 'HTTP 503' in error
    assert SECOND_KEY not in error and endpoint.url not in error
