# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""Delivering the ledger's outbox in the background, oldest first, so no task waits on Temperstack.

The callback runs in ansible-playbook's main process, which forks a worker for every task. A thread
there that is inside SQLite or OpenSSL at the moment of a fork leaves their locks held forever in the
child, and a task using either would hang. So the callback starts a separate process
(``SenderProcess``) that runs the ``OutboxSender`` thread; that process is created by fork+exec and
shares no locks with anything.

The process also keeps the run's held failures (``Ledger.hold``) alive while the run goes on, and releases
them for delivery when the run ends without saying so (SIGTERM, SIGKILL, a crash): its pipe then reaches
end-of-file without the ``end`` line.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import typing as t

import ansible

from ._alert import Alert
from ._client import SendError, TemperstackClient
from ._dispatch import OUTBOX_SEND_THREADS, send_outbox
from ._endpoint import Endpoint
from ._ledger import HOLD_LEASE_SECONDS, Ledger, LedgerError
from ._ledger_open import LedgerWithFallback, open_ledger

# The directory that holds ``ansible_collections``: the delivery process imports this module from there.
_COLLECTIONS_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *(['..'] * 5)))
# The directory that holds the ``ansible`` package this controller runs (a venv, a source checkout).
_ANSIBLE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ansible.__file__)))
_WAKE = b'wake\n'
# How often the delivery process checks that ansible-playbook is still there.
PARENT_CHECK_SECONDS = 0.5
# How soon the delivery process tries a lost shared ledger again: its run's alerts are queued there again as soon as
# the callback reaches it, and they should go out in this run.
RECONNECT_SECONDS = 2.0
# The hold keeper's first wait after a ledger error; it doubles up to a quarter of the lease.
HOLD_RETRY_SECONDS = 1.0
_END = b'end\n'
# After this long, the end of a run that still waits on its deliveries says so (SenderProcess.flush's on_slow).
SLOW_FLUSH_SECONDS = 2.0
# What the delivery process needs of the environment: nothing else crosses over, so neither PYTHON* variables
# nor anything a playbook's environment happens to hold reaches the process that holds the key.
_PASSED_ENVIRONMENT = (
    'PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LANGUAGE', 'TZ', 'TMPDIR', 'SYSTEMROOT',
    'http_proxy', 'https_proxy', 'no_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY',
    'SSL_CERT_FILE', 'SSL_CERT_DIR', '_TEMPERSTACK_TEST_HOLD_LEASE_SECONDS',
)
# Run with -I (no working directory, script directory, user site-packages or PYTHON* variables on the path):
# a json.py or selectors.py beside the playbook must never be imported into the process that holds the key.
_BOOTSTRAP = (
    'import runpy, sys; sys.path[:0] = sys.argv[1:3]; del sys.argv[1:3]; '
    f'runpy.run_module({__name__!r}, run_name="__main__", alter_sys=True)'
)


class FlushReport(t.NamedTuple):
    sent: list[str]
    queued: int
    errors: list[str]
    finished: bool


class OutboxSender:
    """A daemon thread that drains the outbox of every endpoint the run uses whenever it is woken.

    Everything to send is first written to the outbox by the caller, so an alert survives a dead
    endpoint, a full flush timeout or a killed controller: the next run with the same endpoint sends
    it before its own alerts. A backlog goes out ``OUTBOX_SEND_THREADS`` alerts at once, each alert's entries in
    order; after a failure no new delivery starts to that endpoint, so an OK never overtakes the Alarm it resolves.
    Routing gives a run several endpoints (``others``, one client each): a dead one blocks only its own deliveries.
    """

    def __init__(
        self, client: TemperstackClient, ledger_spec: str, fallback: str = '', unreachable: str = '',
        others: t.Sequence[TemperstackClient] = (),
    ) -> None:
        self._client = client
        self._endpoint = client.endpoint
        self._clients = list({c.endpoint.ledger_key: c for c in (client, *others)}.values())
        # The endpoints whose deliveries stopped after a failure, by ledger key.
        self._blocked_endpoints: set[str] = set()
        self._ledger_spec = ledger_spec
        # With a shared ledger: the controller's file that stands in for it while its server is unreachable.
        self._fallback = fallback if fallback != ledger_spec else ''
        # Why the callback found the shared ledger unreachable at the start of the run, if it did.
        self._unreachable = unreachable
        self._opening = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._closing = False
        self._blocked = False
        self.sent: list[str] = []
        self.errors: list[str] = []
        self._ledger: Ledger | None = None
        self._thread = threading.Thread(target=self._run, name='temperstack-outbox', daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.notify()

    def notify(self) -> None:
        self._wake.set()

    def flush(self, timeout: float) -> FlushReport:
        """Let the thread finish what is queued, waiting at most ``timeout`` seconds."""
        self._closing = True
        self.notify()
        self._thread.join(max(timeout, 0.0))
        finished = not self._thread.is_alive()
        queued = self._wind_up(finished)
        with self._lock:
            return FlushReport(list(self.sent), queued, list(self.errors), finished)

    def _wind_up(self, finished: bool) -> int:
        """How many entries are left, on fresh connections (the sender thread may still be using its own).

        A sender still hanging in a request gives up its claims first: the process exits without it, and the
        alerts it claimed would otherwise wait for the rest of their lease (minutes) before the next run could
        deliver them. -1 if no ledger could be read.
        """
        left = None
        for spec in filter(None, (self._ledger_spec, self._fallback)):
            if spec == self._fallback and not os.path.exists(spec):
                continue  # nothing was ever kept there; counting must not create it
            try:
                with open_ledger(spec) as ledger:
                    if not finished and self._ledger is not None:
                        ledger.release_claims_of(self._ledger)
                    left = (left or 0) + sum(len(ledger.pending(c.endpoint.ledger_key)) for c in self._clients)
            except LedgerError:
                continue
        return -1 if left is None else left

    def _run(self) -> None:
        try:
            self._opening = True
            self._ledger = open_ledger(
                self._ledger_spec, fallback=self._fallback or None, on_fallback=self._fell_back,
                **(_fallback_options(self._unreachable) if self._fallback else {}),
            )
        except LedgerError as exc:
            self._fail(str(exc))
            return
        finally:
            self._opening = False
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if not self._blocked:
                    self._drain(self._ledger)
                if self._closing and not self._wake.is_set():
                    self._write_back(self._ledger)
                    return
        finally:
            self._ledger.close()

    def _fell_back(self, exc: LedgerError) -> None:
        if self._opening:
            return  # the callback found it unreachable too, and has said so
        self._fail(f'{exc}; alerts queued on this controller are delivered from {self._fallback}')

    def _drain(self, ledger: Ledger) -> None:
        try:
            if isinstance(ledger, LedgerWithFallback):
                # Between two passes, nothing read from one ledger is still to be written back to it: the moment to
                # try a lost server again, and to move in what the fallback file kept meanwhile.
                ledger.reconnect()
            for client in self._clients:
                if client.endpoint.ledger_key in self._blocked_endpoints:
                    continue
                try:
                    send_outbox(ledger, client, on_sent=self._sent, on_dropped=self._fail, workers=OUTBOX_SEND_THREADS)
                except SendError as exc:
                    self._blocked_endpoints.add(client.endpoint.ledger_key)
                    self._fail(self._named(client, exc.message))
        except LedgerError as exc:
            self._blocked = True
            self._fail(str(exc))
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # Anything else would end this thread silently, and the run would report nothing as wrong.
            self._blocked = True
            self._fail(
                f'delivery failed unexpectedly ({type(exc).__name__}: {exc}); alerts stay queued for the next run'
            )

    def _write_back(self, ledger: Ledger) -> None:
        """Before the run ends, move what this run kept in the fallback file into the shared ledger, if it answers.

        An AWX job's container, and its fallback file with it, is thrown away after the run: what the job sent or
        queued during an outage would otherwise be known to no one.
        """
        if not isinstance(ledger, LedgerWithFallback) or not ledger.degraded:
            return
        if ledger.reconnect(force=True) and not self._blocked:
            self._drain(ledger)

    def _sent(self, alert: Alert) -> None:
        with self._lock:
            self.sent.append(alert.status)

    def _named(self, client: TemperstackClient, message: str) -> str:
        """A delivery error, naming its integration when the run has several."""
        if len(self._clients) > 1:
            return f'integration {client.endpoint.integration}: {message}'
        return message

    def _fail(self, message: str) -> None:
        for client in self._clients:
            message = client.endpoint.mask(message)
        with self._lock:
            self.errors.append(message)


class SenderProcess:
    """The callback's side of the delivery process: start it, wake it, and collect its report.

    The endpoint and its key travel over a pipe, never on a command line or in the environment.
    """

    def __init__(
        self, client: TemperstackClient, ledger_spec: str, flush_timeout: float, run_token: str = '', fallback: str = '',
        unreachable: str = '', others: t.Sequence[TemperstackClient] = (),
    ) -> None:
        self._settings = {
            'url': client.endpoint.url,
            'secrets': list(client.endpoint.secrets),
            'integration': client.endpoint.integration,
            # Routing: every other endpoint the run uses, drained by the same process.
            'others': [
                {'url': other.endpoint.url, 'secrets': list(other.endpoint.secrets), 'integration': other.endpoint.integration}
                for other in others
            ],
            'timeout': client.timeout,
            'retries': client.retries,
            'validate_certs': client.validate_certs,
            'ca_path': os.path.abspath(client.ca_path) if client.ca_path else None,
            'ledger_spec': ledger_spec,
            'fallback': fallback,
            'unreachable': unreachable,
            'flush_timeout': flush_timeout,
            'run_token': run_token,
        }
        self._endpoint = client.endpoint
        self._endpoints = [client.endpoint, *(other.endpoint for other in others)]
        self._flush_timeout = flush_timeout
        self._process: subprocess.Popen | None = None
        self._broken = ''

    def notify(self) -> None:
        """Deliver what is queued, starting the process on first use."""
        try:
            if self._process is None:
                self._process = self._spawn()
            elif self._process.stdin is not None:
                self._process.stdin.write(_WAKE)
                self._process.stdin.flush()
        except OSError as exc:
            self._broken = f'the delivery process failed ({exc}); alerts stay queued for the next run'

    def flush(self, on_slow: t.Callable[[float], None] | None = None) -> FlushReport:
        """Tell the process that nothing more is coming and wait, at most the flush timeout, for its report.

        If the report has not come after ``SLOW_FLUSH_SECONDS``, ``on_slow`` is called once, with the seconds left
        of the flush timeout, so that the caller can say what the run is waiting for instead of stalling silently.
        """
        if self._process is None:
            return FlushReport([], 0, [self._broken] if self._broken else [], True)
        process = self._process
        try:
            if process.stdin is not None:
                # An orderly end: what the run still holds is settled, not abandoned.
                process.stdin.write(_END)
                process.stdin.flush()
        except OSError:
            pass  # the process is gone; its report (or its absence) says why
        started = time.monotonic()
        limit = self._flush_timeout + 2.0
        slow = on_slow is not None and SLOW_FLUSH_SECONDS < self._flush_timeout
        try:
            try:
                # communicate() closes the pipe, which is the process's signal that nothing more is coming.
                out, err = process.communicate(timeout=SLOW_FLUSH_SECONDS if slow else limit)
            except subprocess.TimeoutExpired:
                if not slow or on_slow is None:
                    raise
                on_slow(max(0.0, self._flush_timeout - (time.monotonic() - started)))
                # A second communicate() goes on where the first stopped, and loses no output.
                out, err = process.communicate(timeout=max(0.0, limit - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        report = self._report(out, err)
        # ansible-playbook a.yml b.yml flushes after each playbook: the next notify() starts a new process.
        self._process = None
        return report

    def _spawn(self) -> subprocess.Popen:
        env = {name: os.environ[name] for name in _PASSED_ENVIRONMENT if name in os.environ}
        # libpq's own settings (PGPASSWORD, PGPASSFILE, PGSSLROOTCERT, ...) reach a shared ledger from here too.
        env.update({name: value for name, value in os.environ.items() if name.startswith(('LC_', 'PG'))})
        process = subprocess.Popen(
            [sys.executable, '-I', '-c', _BOOTSTRAP, _COLLECTIONS_ROOT, _ANSIBLE_ROOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            close_fds=True,
            # Ctrl-C stops the playbook, not the delivery of what it has already queued.
            start_new_session=True,
        )
        process.stdin.write(json.dumps(self._settings).encode('utf-8') + b'\n')
        process.stdin.flush()
        return process

    def _report(self, out: bytes, err: bytes) -> FlushReport:
        lines = out.decode('utf-8', 'replace').strip().splitlines()
        try:
            data = json.loads(lines[-1])
            return FlushReport(data['sent'], data['queued'], data['errors'], data['finished'])
        except (IndexError, ValueError, KeyError, TypeError):
            last = (err.decode('utf-8', 'replace').strip().splitlines() or ['no report'])[-1]
            for endpoint in self._endpoints:
                last = endpoint.mask(last)
            reason = last if self._process and self._process.returncode == 0 else (
                f'it was stopped after flush_timeout or failed: {last}'
            )
            return FlushReport([], -1, [f'the delivery process gave no report ({reason})'], False)


def _serve(stdin: t.BinaryIO, stdout: t.TextIO) -> None:
    """The delivery process: drain on every wake-up, and once more when the callback closes the pipe.

    While the pipe is open, the run's held failures are renewed; if it closes without the ``end`` line, the run
    died before settling them, and they are released and delivered now.
    """
    settings = json.loads(stdin.readline())

    def client_of(item: t.Mapping[str, t.Any]) -> TemperstackClient:
        return TemperstackClient(
            Endpoint(item['url'], item['secrets'], item.get('integration') or 'default'),
            timeout=settings['timeout'],
            retries=settings['retries'],
            validate_certs=settings['validate_certs'],
            ca_path=settings['ca_path'],
        )

    client = client_of(settings)
    others = [client_of(item) for item in settings.get('others') or ()]
    unreachable = settings.get('unreachable') or ''
    sender = OutboxSender(client, settings['ledger_spec'], settings.get('fallback') or '', unreachable, others=others)
    sender.start()
    holds = _HoldKeeper(settings['ledger_spec'], settings.get('run_token') or '', settings.get('fallback') or '', unreachable)
    holds.start()
    ended = False
    for line in _lines_while_parent_lives(stdin):
        ended = line == _END
        sender.notify()
    holds.stop(release=not ended)
    if not ended:
        sender.notify()
    report = sender.flush(settings['flush_timeout'])
    stdout.write(json.dumps(report._asdict()) + '\n')
    stdout.flush()


def _lines_while_parent_lives(stdin: t.BinaryIO) -> t.Iterator[bytes]:
    """The callback's lines, until its pipe closes or ansible-playbook dies.

    A SIGKILLed ansible-playbook does not close the pipe: every task worker it forked holds a copy of its write
    end, and a worker in a long task can live on for minutes. Being reparented says the run is over.
    """
    parent = os.getppid()
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in iter(stdin.readline, b''):
            lines.put(line)
        lines.put(b'')

    threading.Thread(target=read, name='temperstack-pipe', daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=PARENT_CHECK_SECONDS)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if not line:
            return
        yield line


def _fallback_options(unreachable: str) -> dict[str, t.Any]:
    """How the delivery process uses a shared ledger: it tries a lost server again soon (its run's alerts go out in
    this run once it answers), and not at all at first if the callback has just found it unreachable."""
    return {'retry_seconds': RECONNECT_SECONDS, 'known_unreachable': unreachable}


class _HoldKeeper:
    """Renews the run's held failures a few times per lease while the run goes on, in whichever ledger holds them.

    A ledger error (SQLite busy, a PostgreSQL restart) is retried with backoff for as long as the run lasts: a hold
    that is not renewed expires, and its Alarm goes out as the failures seen so far, before its unit has ended.
    """

    def __init__(self, ledger_spec: str, run_token: str, fallback: str = '', unreachable: str = '') -> None:
        self._ledger_spec = ledger_spec
        self._fallback = fallback if fallback != ledger_spec else ''
        self._unreachable = unreachable
        self._token = run_token
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name='temperstack-holds', daemon=True)

    def start(self) -> None:
        if self._token:
            self._thread.start()

    def stop(self, release: bool) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        if release and self._token:
            # The run ended without settling what it held: from now on that is an ordinary outbox entry.
            try:
                with self._open() as ledger:
                    ledger.release_holds(self._token)
            except LedgerError:
                pass  # the holds expire on their own, and the next run delivers them then

    def _open(self) -> Ledger:
        return open_ledger(
            self._ledger_spec, fallback=self._fallback or None, on_fallback=lambda exc: None,
            **(_fallback_options(self._unreachable) if self._fallback else {}),
        )

    def _run(self) -> None:
        ledger: Ledger | None = None
        wait, failures = 0.0, 0
        try:
            while not self._stopped.wait(wait):
                try:
                    if ledger is None:
                        ledger = self._open()
                    elif isinstance(ledger, LedgerWithFallback):
                        ledger.reconnect()
                    ledger.renew_holds(self._token)
                    failures = 0
                except LedgerError:
                    failures += 1
                wait = min(HOLD_RETRY_SECONDS * 2 ** (failures - 1), HOLD_LEASE_SECONDS / 4) if failures else HOLD_LEASE_SECONDS / 4
        finally:
            if ledger is not None:
                ledger.close()


if __name__ == '__main__':
    _serve(sys.stdin.buffer, sys.stdout)
    # A delivery still hanging after flush_timeout is abandoned here; it stays queued in the ledger.
    os._exit(0)
