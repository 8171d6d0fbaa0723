# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Item 1: the fault matrix. Every fault, for the module and for the callback, with real ansible-playbook runs.

Each case is a story at one endpoint: a first run meets the fault, a follow-up run finds the endpoint healthy
(the same URL: the stand-in started on the refused port, a valid certificate on the TLS port, an HTTP proxy
that reaches the unresolvable name). The case passes when the first run ends as the fault should make it end
(delivered, retried then delivered, failed with the right message, queued) within its time bound, without a
traceback, and when Temperstack has, at the end of the story, exactly the Alarm and then the OK, once each:
nothing lost, nothing duplicated, in order. (HTTP 400 is the one exception, by design: Temperstack refuses that
body and would refuse it every time, so the callback drops it with a warning rather than block every later alert.)

Module: retries=2 (three attempts), timeout=1 s. Callback: the same, flush_timeout=10 s.
"""

from __future__ import annotations

import contextlib
import os
import re
import typing as t
from concurrent.futures import ThreadPoolExecutor

import pytest

from faultlib import (
    FAIL_PLAYBOOK,
    FULL,
    SECRET_KEY,
    SilentServer,
    StandIn,
    assert_clean,
    callback_env,
    first_json,
    free_port,
    ledger_rows,
    make_certificates,
    stand_in,
)

TIMEOUT, RETRIES, FLUSH_TIMEOUT = 1, 2, 10
QUICK_ONCE = ('HTTP 503 once', 'response timeout once')
ATTEMPTS = RETRIES + 1


class Fault(t.NamedTuple):
    name: str
    endpoint: str = 'plain'           # plain | refused | dns | tls-untrusted | tls-expired | handshake
    script: tuple = ()                # what the stand-in answers the first requests of the first run
    module: str = 'failed'            # delivered | retried | failed
    callback: str = 'queued'          # delivered | retried | queued | dropped
    message: str = ''                 # a regular expression the failure (task message / warning) must match
    attempts: int = ATTEMPTS          # requests the first run makes for the alert
    seconds: float = 3.0              # the longest the module's task may take with this fault (beyond a healthy run)


def every(item: dict[str, t.Any], times: int = ATTEMPTS) -> tuple:
    return (dict(item, repeat=times),)


FAULTS = [
    Fault('connection refused', 'refused', message=r'after 3 attempts: the connection failed \(.*[Cc]onnection refused'),
    Fault('DNS failure (temperstack.invalid)', 'dns', message=r'after 3 attempts: the connection failed \(.*(Name or service not known|not known|resolution)'),
    Fault('TLS: untrusted certificate', 'tls-untrusted', attempts=1,
          message=r'TLS verification of .* failed \(CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate\)'),
    Fault('TLS: expired certificate', 'tls-expired', attempts=1,
          message=r'TLS verification of .* failed \(CERTIFICATE_VERIFY_FAILED: certificate has expired\)'),
    Fault('TLS handshake timeout', 'handshake', message=r'after 3 attempts: no answer within the 1 s timeout', seconds=6),
    Fault('response timeout (hang)', script=every({'action': 'hang', 'seconds': 30}),
          message=r'after 3 attempts: no answer within the 1 s timeout', seconds=6),
    Fault('response timeout once', script=({'action': 'hang', 'seconds': 30},), module='retried', callback='retried', attempts=2),
    Fault('connection closed without an answer', script=every({'action': 'drop'}),
          message=r'after 3 attempts: the connection failed \(.*(closed|Remote end|disconnect)'),
    Fault('connection closed once', script=({'action': 'drop'},), module='retried', callback='retried', attempts=2),
    Fault('connection reset', script=every({'action': 'reset'}), message=r'after 3 attempts: the connection failed \(.*reset'),
    Fault('connection reset once', script=({'action': 'reset'},), module='retried', callback='retried', attempts=2),
    Fault('connection reset mid-body of a 200', script=({'action': 'truncate', 'status': 200},), module='delivered',
          callback='delivered', attempts=1),
    Fault('HTTP 500', script=every({'status': 500}), message=r'after 3 attempts: Temperstack answered HTTP 500'),
    Fault('HTTP 500 once', script=({'status': 500},), module='retried', callback='retried', attempts=2),
    Fault('HTTP 502', script=every({'status': 502}), message=r'after 3 attempts: Temperstack answered HTTP 502'),
    Fault('HTTP 502 once', script=({'status': 502},), module='retried', callback='retried', attempts=2),
    Fault('HTTP 503', script=every({'status': 503}), message=r'after 3 attempts: Temperstack answered HTTP 503'),
    Fault('HTTP 503 once', script=({'status': 503},), module='retried', callback='retried', attempts=2),
    Fault('HTTP 429 with Retry-After: 1', script=every({'status': 429, 'retry_after': '1'}),
          message=r'after 3 attempts: Temperstack answered HTTP 429', seconds=4),
    Fault('HTTP 429 with Retry-After: 1, once', script=({'status': 429, 'retry_after': '1'},), module='retried',
          callback='retried', attempts=2),
    Fault('HTTP 429 without Retry-After', script=every({'status': 429}), message=r'after 3 attempts: Temperstack answered HTTP 429'),
    Fault('HTTP 429 without Retry-After, once', script=({'status': 429},), module='retried', callback='retried', attempts=2),
    Fault('HTTP 400', script=({'status': 400, 'body': {'error': 'bad field'}},), callback='dropped',
          message=r'Temperstack refused the alert \(HTTP 400: \{"error": "bad field"\}\)', attempts=1),
    Fault('HTTP 401', script=({'status': 401},), message=r'the integration key was rejected by .*\(HTTP 401', attempts=1),
    Fault('HTTP 403', script=({'status': 403},), message=r'the integration key was rejected by .*\(HTTP 403', attempts=1),
    Fault('HTTP 404', script=({'status': 404},), message=r'the integration key was rejected by .*\(HTTP 404', attempts=1),
    Fault('HTTP 200 with a body that is not JSON', script=({'status': 200, 'body': '<html>OK</html>'},), module='delivered',
          callback='delivered', attempts=1),
    Fault('HTTP 302 redirect', script=({'action': 'redirect', 'location': 'https://elsewhere.example.com/hook'},),
          message=r'Temperstack answered with a redirect \(HTTP 302.*\) to https://elsewhere.example.com/hook; configure the final webhook URL',
          attempts=1),
]

MODULE_PLAYBOOK = """\
- name: Fault matrix
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Raise the alert
      temperstack.alerting.alert:
        alert_name: Disk almost full
        status: Alarm
        resource_id: web01
        description: /var is 93% full
        timeout: {timeout}
        retries: {retries}
        ca_path: "{{{{ lookup('env', 'FAULT_CA') or omit }}}}"
      ignore_errors: true
{resolve}"""

RESOLVE = """\
    - name: Resolve the alert
      temperstack.alerting.alert:
        alert_name: Disk almost full
        status: OK
        resource_id: web01
        description: /var is 93% full
        timeout: {timeout}
        retries: {retries}
        ca_path: "{{{{ lookup('env', 'FAULT_CA') or omit }}}}"
"""


class Story:
    """One case: the endpoint (and its URL) for the faulty run, then the same URL healthy for the follow-up."""

    def __init__(self, fault: Fault, directory: str, certificates: t.Any) -> None:
        self.fault = fault
        self.directory = directory
        self.certificates = certificates
        self.records: list[dict[str, t.Any]] = []
        self.silent: SilentServer | None = None
        self.port = free_port()
        self.https = fault.endpoint in ('tls-untrusted', 'tls-expired', 'handshake')
        host = 'temperstack.invalid' if fault.endpoint == 'dns' else '127.0.0.1'
        self.base_url = f'{"https" if self.https else "http"}://{host}:{self.port}'
        self.env: dict[str, str] = {'FAULT_CA': certificates.ca if self.https else ''}
        self._servers = 0

    @contextlib.contextmanager
    def faulty(self) -> t.Iterator[StandIn | None]:
        endpoint = self.fault.endpoint
        if endpoint == 'plain':
            with self._stand_in() as server:
                server.script(list(self.fault.script))
                yield server
                self.records += server.requests()
        elif endpoint in ('tls-untrusted', 'tls-expired'):
            with self._stand_in(self.certificates.untrusted if endpoint == 'tls-untrusted' else self.certificates.expired) as server:
                yield server
                self.records += server.requests()
        elif endpoint == 'handshake':
            with SilentServer(self.port) as silent:
                self.silent = silent
                yield None
        else:  # refused: nothing listens on the port; dns: the name does not resolve
            yield None

    @contextlib.contextmanager
    def healthy(self) -> t.Iterator[dict[str, str]]:
        """The same URL, now answering; the extra environment the follow-up run needs to reach it."""
        with self._stand_in(self.certificates.valid if self.https else None) as server:
            extra = {}
            if self.fault.endpoint == 'dns':
                # The name still resolves nowhere; an HTTP proxy (the stand-in itself) reaches it, as a proxy
                # from the environment would. no_proxy leaves 127.0.0.1 alone, not temperstack.invalid.
                extra = {'http_proxy': server.url, 'HTTP_PROXY': server.url}
            yield extra
            self.records += server.requests()

    def _stand_in(self, tls: tuple[str, str] | None = None):
        kwargs: dict[str, t.Any] = {'port': self.port}
        if tls is not None:
            kwargs.update(tls_cert=tls[0], tls_key=tls[1])
        self._servers += 1
        return stand_in(os.path.join(self.directory, f'stand-in-{self._servers}'), **kwargs)

    @property
    def delivered(self) -> list[str]:
        return [r['json']['status'] for r in self.records if r['delivered']]

    def attempts(self, first_run: int) -> int:
        if self.silent is not None:
            return self.silent.accepted
        return first_run


def run_module_case(harness, fault: Fault, directory: str, certificates, baseline: float) -> dict[str, t.Any]:
    story = Story(fault, directory, certificates)
    ledger = os.path.join(directory, 'ledger', 'ledger.sqlite3')
    env = dict(story.env, TEMPERSTACK_BASE_URL=story.base_url, TEMPERSTACK_API_KEY=SECRET_KEY, TEMPERSTACK_LEDGER_PATH=ledger)
    raise_only = harness.write(directory, 'raise.yml', MODULE_PLAYBOOK.format(timeout=TIMEOUT, retries=RETRIES, resolve=''))
    story_book = harness.write(directory, 'story.yml', MODULE_PLAYBOOK.format(
        timeout=TIMEOUT, retries=RETRIES, resolve=RESOLVE.format(timeout=TIMEOUT, retries=RETRIES)))
    problems = []
    with story.faulty():
        first = harness.playbook(raise_only, env=env)
    first_count = len(story.records)
    result = first_json(first.stdout, 'changed: [localhost] =>') or {}
    failure = first_json(first.stdout, '[localhost]: FAILED! =>')
    if failure is not None:
        result = dict(failure, failed=True)
    with story.healthy() as extra:
        second = harness.playbook(story_book, env=dict(env, **extra))
    for run in (first, second):
        with contextlib.suppress(AssertionError):
            assert_clean(run)
            continue
        problems.append(f'traceback or failed dispatch in {run.command}')
    if second.rc != 0:
        problems.append(f'the follow-up run failed (rc {second.rc})')

    failed = bool(result.get('failed'))
    attempts = result.get('attempts', 0) if fault.endpoint != 'handshake' else story.attempts(0)
    if fault.module == 'failed':
        outcome = 'failed'
        if not failed:
            problems.append(f'expected the task to fail, got {result}')
        elif not re.search(fault.message, result.get('msg', '')):
            problems.append(f'message {result.get("msg")!r} does not match /{fault.message}/')
    else:
        outcome = 'delivered' if attempts == 1 else 'retried, then delivered'
        if failed or not result.get('sent'):
            problems.append(f'expected delivery, got {result}')
    if fault.endpoint == 'plain' and first_count != fault.attempts:
        problems.append(f'{first_count} requests reached the stand-in, expected {fault.attempts}')
    if result.get('attempts', fault.attempts) != fault.attempts:
        problems.append(f'the task reports {result.get("attempts")} attempts, expected {fault.attempts}')
    extra_seconds = first.seconds - baseline
    if extra_seconds > fault.seconds + (2 if not FULL else 1):
        problems.append(f'the faulty run took {first.seconds:.1f} s, {extra_seconds:.1f} s more than a healthy one')
    if story.delivered != ['Alarm', 'OK']:
        problems.append(f'Temperstack got {story.delivered}, expected the Alarm then the OK')
    if SECRET_KEY in first.output + second.output:
        problems.append('the key is in the output')
    return {
        'fault': fault.name, 'surface': 'module', 'outcome': outcome, 'attempts': result.get('attempts', attempts),
        'seconds': round(first.seconds, 2), 'extra_seconds': round(extra_seconds, 2),
        'message': result.get('msg', '') if failed else '', 'delivered_in_the_end': story.delivered, 'problems': problems,
    }


SUMMARY = re.compile(r'^Temperstack: (?!delivering )(.*)$', re.M)
# The one line a slow end of run prints while it waits for its deliveries (after about 2 s).
PROGRESS = re.compile(r'^Temperstack: delivering (?:\d+ )?alerts? \(up to \d+ s more\)\.\.\.$', re.M)
WARNING = re.compile(r'\[WARNING\]: temperstack: (.*)')


def run_callback_case(harness, fault: Fault, directory: str, certificates, baseline: float) -> dict[str, t.Any]:
    story = Story(fault, directory, certificates)
    ledger = os.path.join(directory, 'ledger', 'ledger.sqlite3')
    playbook = harness.write(directory, 'deploy.yml', FAIL_PLAYBOOK)
    env = dict(callback_env(story.base_url, ledger, timeout=TIMEOUT, retries=RETRIES, flush_timeout=FLUSH_TIMEOUT), **story.env)
    if story.https:
        env['TEMPERSTACK_CA_PATH'] = certificates.ca
    problems = []
    with story.faulty():
        first = harness.playbook(playbook, env=env)
    first_count = len(story.records)
    after_first = ledger_rows(ledger)
    with story.healthy() as extra:
        second = harness.playbook(playbook, env=dict(env, **extra), args=['-e', 'fail_release=false'])
    for run in (first, second):
        with contextlib.suppress(AssertionError):
            assert_clean(run)
            continue
        problems.append('traceback or failed callback dispatch')
    if (first.rc, second.rc) != (2, 0):
        problems.append(f'exit codes {first.rc}, {second.rc}: the callback changed them (expected 2, 0)')
    summary = ' / '.join(SUMMARY.findall(first.stdout))
    if len(PROGRESS.findall(first.stdout)) > 1:
        problems.append(f'more than one progress line: {PROGRESS.findall(first.stdout)}')
    warnings = [' '.join(w.split()) for w in WARNING.findall(' '.join(first.stderr.split('\n[WARNING]')).replace('\n', ' '))]
    warning = ' | '.join(warnings)
    queued = [status for _seq, _alert_id, status in after_first['outbox']]
    if fault.callback in ('delivered', 'retried'):
        outcome = 'delivered' if fault.callback == 'delivered' else 'retried, then delivered'
        if summary != 'sent 1 Alarm' or queued:
            problems.append(f'expected the Alarm delivered in the run, got "{summary}", queued {queued}')
    elif fault.callback == 'queued':
        outcome = 'queued for the next run'
        if summary != 'sent nothing; 1 queued for the next run' or queued != ['Alarm']:
            problems.append(f'expected the Alarm queued, got "{summary}", queued {queued}')
        if not re.search(fault.message, warning):
            problems.append(f'warning {warning!r} does not match /{fault.message}/')
    else:
        outcome = 'dropped with a warning (HTTP 400: refused for good)'
        if queued or 'was refused and dropped' not in warning or not re.search(fault.message, warning):
            problems.append(f'expected the Alarm dropped with a warning, got "{summary}" / {warning!r}')
    if fault.endpoint == 'plain' and first_count != fault.attempts:
        problems.append(f'{first_count} requests reached the stand-in, expected {fault.attempts}')
    if fault.endpoint == 'handshake' and story.attempts(0) != fault.attempts:
        problems.append(f'{story.attempts(0)} connections reached the silent server, expected {fault.attempts}')
    expected_end = [] if fault.callback == 'dropped' else ['Alarm', 'OK']
    if story.delivered != expected_end:
        problems.append(f'Temperstack got {story.delivered}, expected {expected_end}')
    if ledger_rows(ledger)['outbox']:
        problems.append('the follow-up run left alerts in the outbox')
    if first.seconds - baseline > FLUSH_TIMEOUT + 3:
        problems.append(f'the faulty run took {first.seconds:.1f} s: more than flush_timeout beyond a healthy run')
    if SECRET_KEY in first.output + second.output:
        problems.append('the key is in the output')
    attempts = story.attempts(first_count) if fault.endpoint in ('plain', 'handshake') else _attempts_from(warning, fault)
    return {
        'fault': fault.name, 'surface': 'callback', 'outcome': outcome, 'attempts': attempts,
        'seconds': round(first.seconds, 2), 'extra_seconds': round(first.seconds - baseline, 2),
        'message': warning, 'summary': summary, 'delivered_in_the_end': story.delivered, 'problems': problems,
    }


def _attempts_from(warning: str, fault: Fault) -> int:
    match = re.search(r'after (\d+) attempts', warning)
    return int(match.group(1)) if match else fault.attempts


@pytest.fixture(scope='module')
def certificates(work_dir):
    return make_certificates(os.path.join(work_dir, 'tls'))


def baseline_seconds(harness, server, directory: str, surface: str) -> float:
    """How long the same run takes against a healthy endpoint (the best of three): the cost of Ansible itself."""
    times = []
    for index in range(3 if FULL else 1):
        ledger = os.path.join(directory, f'baseline-{index}', 'ledger.sqlite3')
        if surface == 'module':
            playbook = harness.write(directory, 'raise.yml', MODULE_PLAYBOOK.format(timeout=TIMEOUT, retries=RETRIES, resolve=''))
            run = harness.playbook(playbook, env={'TEMPERSTACK_BASE_URL': server.url, 'TEMPERSTACK_API_KEY': SECRET_KEY,
                                                  'TEMPERSTACK_LEDGER_PATH': ledger})
        else:
            playbook = harness.write(directory, 'deploy.yml', FAIL_PLAYBOOK)
            run = harness.playbook(playbook, env=callback_env(server.url, ledger))
        times.append(run.seconds)
    return min(times)


@pytest.mark.parametrize('surface', ['module', 'callback'])
def test_fault_matrix(harness, server, work_dir, certificates, figures, surface):
    directory = os.path.join(work_dir, f'matrix-{surface}')
    os.makedirs(directory, exist_ok=True)
    server.reset()
    baseline = baseline_seconds(harness, server, directory, surface)
    runner = run_module_case if surface == 'module' else run_callback_case
    # The long run (make faults) takes one case at a time, so the times are those of an idle machine; the
    # short one runs three at once, and of the faults that strike once only two (the module has them all).
    with ThreadPoolExecutor(max_workers=1 if FULL else 3) as pool:
        futures = [
            pool.submit(runner, harness, fault, os.path.join(directory, f'{index:02d}'), certificates, baseline)
            for index, fault in enumerate(FAULTS)
            if FULL or surface == 'module' or fault.name in QUICK_ONCE or fault.callback not in ('retried',)
        ]
        rows = [future.result() for future in futures]
    figures.set('matrix', f'{surface}_baseline_seconds', round(baseline, 2))
    figures.set('matrix', surface, rows)
    failures = [f'{row["fault"]}: {"; ".join(row["problems"])}' for row in rows if row['problems']]
    assert not failures, '\n'.join(failures)
