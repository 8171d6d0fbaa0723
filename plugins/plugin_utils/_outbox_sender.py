# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""Delivering the ledger's outbox in the background, oldest first, so no task waits on Temperstack."""

from __future__ import annotations

import threading
import typing as t

from ._client import DeliveryError, TemperstackClient
from ._ledger import Ledger, LedgerError


class FlushReport(t.NamedTuple):
    sent: list[str]
    queued: int
    errors: list[str]
    finished: bool


class OutboxSender:
    """A daemon thread that drains one endpoint's outbox whenever it is woken.

    Everything to send is first written to the outbox by the caller, so an alert survives a dead
    endpoint, a full flush timeout or a killed controller: the next run with the same endpoint sends
    it before its own alerts. Delivery stops at the first alert that cannot be delivered, so an OK
    never overtakes the Alarm it resolves.
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
            for queued in ledger.pending(self._endpoint.ledger_key):
                try:
                    self._client.send(queued.alert.payload)
                except DeliveryError as exc:
                    if exc.http_status == 400:
                        # Temperstack will refuse this body however often it is sent; keeping it would
                        # block every alert queued behind it.
                        ledger.discard(queued)
                        self._fail(f'{queued.alert.status} for {queued.alert.alert_id} was refused and dropped: {exc.message}')
                        continue
                    self._blocked = True
                    self._fail(f'{queued.alert.status} for {queued.alert.alert_id} was not delivered: {exc.message}')
                    return
                ledger.delivered(self._endpoint.ledger_key, queued)
                with self._lock:
                    self.sent.append(queued.alert.status)
        except LedgerError as exc:
            self._blocked = True
            self._fail(str(exc))

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
