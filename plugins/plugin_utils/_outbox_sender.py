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
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import typing as t

from ._alert import Alert
from ._client import SendError, TemperstackClient
from ._dispatch import OUTBOX_SEND_THREADS, send_outbox
from ._endpoint import Endpoint
from ._ledger import Ledger, LedgerError

# The directory that holds ``ansible_collections``: the delivery process imports this module from there.
_COLLECTIONS_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *(['..'] * 5)))
_WAKE = b'wake\n'


class FlushReport(t.NamedTuple):
    sent: list[str]
    queued: int
    errors: list[str]
    finished: bool


class OutboxSender:
    """A daemon thread that drains one endpoint's outbox whenever it is woken.

    Everything to send is first written to the outbox by the caller, so an alert survives a dead
    endpoint, a full flush timeout or a killed controller: the next run with the same endpoint sends
    it before its own alerts. A backlog goes out ``OUTBOX_SEND_THREADS`` alerts at once, each alert's entries in
    order; after a failure no new delivery starts, so an OK never overtakes the Alarm it resolves.
    """

    def __init__(self, client: TemperstackClient, ledger_path: str) -> None:
        self._client = client
        self._endpoint = client.endpoint
        self._ledger_path = ledger_path
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._closing = False
        self._blocked = False
        self.sent: list[str] = []
        self.errors: list[str] = []
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
        with self._lock:
            return FlushReport(list(self.sent), self._count_pending(), list(self.errors), finished)

    def _run(self) -> None:
        try:
            ledger = Ledger(self._ledger_path)
        except LedgerError as exc:
            self._fail(str(exc))
            return
        with ledger:
            while True:
                self._wake.wait()
                self._wake.clear()
                if not self._blocked:
                    self._drain(ledger)
                if self._closing and not self._wake.is_set():
                    return

    def _drain(self, ledger: Ledger) -> None:
        try:
            send_outbox(ledger, self._client, on_sent=self._sent, on_dropped=self._fail, workers=OUTBOX_SEND_THREADS)
        except SendError as exc:
            self._blocked = True
            self._fail(exc.message)
        except LedgerError as exc:
            self._blocked = True
            self._fail(str(exc))
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # Anything else would end this thread silently, and the run would report nothing as wrong.
            self._blocked = True
            self._fail(
                f'delivery failed unexpectedly ({type(exc).__name__}: {exc}); alerts stay queued for the next run'
            )

    def _sent(self, alert: Alert) -> None:
        with self._lock:
            self.sent.append(alert.status)

    def _fail(self, message: str) -> None:
        with self._lock:
            self.errors.append(self._endpoint.mask(message))

    def _count_pending(self) -> int:
        # A fresh, short-lived connection: the sender thread may still be using its own.
        try:
            with Ledger(self._ledger_path) as ledger:
                return len(ledger.pending(self._endpoint.ledger_key))
        except LedgerError:
            return -1


class SenderProcess:
    """The callback's side of the delivery process: start it, wake it, and collect its report.

    The endpoint and its key travel over a pipe, never on a command line or in the environment.
    """

    def __init__(self, client: TemperstackClient, ledger_path: str, flush_timeout: float) -> None:
        self._settings = {
            'url': client.endpoint.url,
            'secrets': list(client.endpoint.secrets),
            'timeout': client.timeout,
            'retries': client.retries,
            'validate_certs': client.validate_certs,
            'ca_path': client.ca_path,
            'ledger_path': ledger_path,
            'flush_timeout': flush_timeout,
        }
        self._endpoint = client.endpoint
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

    def flush(self) -> FlushReport:
        """Tell the process that nothing more is coming and wait, at most the flush timeout, for its report."""
        if self._process is None:
            return FlushReport([], 0, [self._broken] if self._broken else [], True)
        process = self._process
        try:
            # communicate() closes the pipe, which is the process's signal that nothing more is coming.
            out, err = process.communicate(timeout=self._flush_timeout + 2.0)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        report = self._report(out, err)
        # ansible-playbook a.yml b.yml flushes after each playbook: the next notify() starts a new process.
        self._process = None
        return report

    def _spawn(self) -> subprocess.Popen:
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(filter(None, [_COLLECTIONS_ROOT, env.get('PYTHONPATH')]))
        process = subprocess.Popen(
            [sys.executable, '-m', __name__],
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
            reason = self._endpoint.mask(last) if self._process and self._process.returncode == 0 else (
                f'it was stopped after flush_timeout or failed: {self._endpoint.mask(last)}'
            )
            return FlushReport([], -1, [f'the delivery process gave no report ({reason})'], False)


def _serve(stdin: t.BinaryIO, stdout: t.TextIO) -> None:
    """The delivery process: drain on every wake-up, and once more when the callback closes the pipe."""
    settings = json.loads(stdin.readline())
    endpoint = Endpoint(settings['url'], settings['secrets'])
    client = TemperstackClient(
        endpoint,
        timeout=settings['timeout'],
        retries=settings['retries'],
        validate_certs=settings['validate_certs'],
        ca_path=settings['ca_path'],
    )
    sender = OutboxSender(client, settings['ledger_path'])
    sender.start()
    for _line in iter(stdin.readline, b''):
        sender.notify()
    report = sender.flush(settings['flush_timeout'])
    stdout.write(json.dumps(report._asdict()) + '\n')
    stdout.flush()


if __name__ == '__main__':
    _serve(sys.stdin.buffer, sys.stdout)
    # A delivery still hanging after flush_timeout is abandoned here; it stays queued in the ledger.
    os._exit(0)
