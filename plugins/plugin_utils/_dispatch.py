# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""The one path an alert takes: ledger decision, client, record."""

from __future__ import annotations

import queue
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor

from ._alert import STATUS_ALARM, STATUS_OK, Alert
from ._client import RETRY_AFTER_CAP, Acknowledgement, SendError, TemperstackClient
from ._endpoint import Endpoint
from ._ledger import Ledger, Queued, Record

# How many deliveries to one endpoint the background sender runs at once when a backlog waits. Sent one after
# another, a failure storm of 2,000 alerts at 100 ms per request takes 200 s, far beyond flush_timeout; 16 at
# once take 13 s. Deliveries of one alert stay one after another, in the order they were queued.
OUTBOX_SEND_THREADS = 16


class Outcome(t.NamedTuple):
    alert: Alert
    previous: Record | None
    changed: bool
    sent: bool = False
    http_status: int | None = None
    attempts: int = 0
    # An OK held back by ``only_if_raised`` because the alert is not on record as Alarm.
    withheld: bool = False


def is_news(alert: Alert, known: Record | None) -> bool:
    """Whether Temperstack would learn something from ``alert``, given what it is known to hold."""
    return known is None or known.status != alert.status or known.fingerprint != alert.fingerprint


def is_withheld(alert: Alert, known: Record | None, only_if_raised: bool) -> bool:
    """Whether ``only_if_raised`` holds back ``alert``: an OK for an alert not on record as Alarm.

    An Alarm still waiting in the outbox counts as on record, as it does for every other decision.
    """
    return only_if_raised and alert.status == STATUS_OK and (known is None or known.status != STATUS_ALARM)


def dispatch(
    alert: Alert,
    endpoint: Endpoint,
    ledger: Ledger,
    client: TemperstackClient,
    force: bool = False,
    check_mode: bool = False,
    warn: t.Callable[[str], None] | None = None,
    only_if_raised: bool = False,
) -> Outcome:
    """Send ``alert`` if it is news (or ``force``), and record it once Temperstack acknowledged it.

    With ``only_if_raised``, an OK is sent only for an alert on record as Alarm (``force`` does not
    override that); otherwise it is withheld, and nothing is sent or recorded.
    Raises ``SendError`` when Temperstack did not acknowledge it; the ledger is then unchanged.
    """
    previous = ledger.lookup(endpoint.ledger_key, alert.alert_id)
    withheld = is_withheld(alert, previous, only_if_raised)
    # An entry the callback queued but could not deliver is what Temperstack is about to hold, not what it
    # holds: the task delivers it, and its own alert if that still differs.
    pending = previous is not None and previous.pending
    wanted = pending or (not withheld and (force or is_news(alert, previous)))
    if check_mode or not wanted:
        return Outcome(alert, previous, changed=wanted, withheld=withheld)

    with ledger.claim(endpoint.ledger_key, alert.alert_id, lease=claim_lease(client)) as current:
        outbox_ack = None
        if current is not None and current.pending:
            # Oldest first, so that an OK never reaches Temperstack before the Alarm it resolves.
            outbox_ack = send_outbox(ledger, client, alert_id=alert.alert_id, on_dropped=warn)
            current = ledger.lookup(endpoint.ledger_key, alert.alert_id)
        # Another fork may have sent this very alert (or an OK that resolved it) while we waited for the claim.
        withheld = is_withheld(alert, current, only_if_raised)
        if withheld or (not force and not is_news(alert, current)):
            if outbox_ack is not None:
                return Outcome(
                    alert, previous, True, True, outbox_ack.http_status, outbox_ack.attempts, withheld
                )
            return Outcome(alert, current, changed=False, withheld=withheld)
        delivery = client.send(alert.payload)
        ledger.record(endpoint.ledger_key, alert)
    return Outcome(alert, current, True, True, delivery.http_status, delivery.attempts)


def send_outbox(
    ledger: Ledger,
    client: TemperstackClient,
    alert_id: str | None = None,
    on_sent: t.Callable[[Alert], None] | None = None,
    on_dropped: t.Callable[[str], None] | None = None,
    workers: int = 1,
) -> Acknowledgement | None:
    """Deliver the outbox of the client's endpoint (only ``alert_id``'s entries, if given), oldest first.

    Stops at the first alert that cannot be delivered by raising its ``SendError``, so nothing
    overtakes it. An alert Temperstack refuses with HTTP 400 would be refused however often it is sent,
    and would block everything queued behind it: it is dropped and ``on_dropped`` is told why.

    With ``workers`` > 1 and a backlog of more than ``workers`` entries, once one delivery has got through,
    up to ``workers`` alerts are delivered at once, each alert's entries still one after another in the order
    they were queued (an OK never overtakes its Alarm), started oldest first. After a failure no new delivery
    starts; the ledger is written by the calling thread only. A short queue, and an endpoint that is down
    (it gets one request, not one per worker), are served one entry at a time, strictly oldest first.
    """
    endpoint_key = client.endpoint.ledger_key
    pending = [q for q in ledger.pending(endpoint_key) if alert_id is None or q.alert.alert_id == alert_id]
    last = None
    for index, queued in enumerate(pending):
        rest = pending[index:]
        if workers > 1 and last is not None and len(rest) > workers:
            return _deliver_in_parallel(ledger, client, rest, workers, on_sent, on_dropped) or last
        try:
            last = client.send(queued.alert.payload)
        except SendError as exc:
            if exc.http_status != 400:
                raise _not_delivered(queued, exc) from None
            _drop(ledger, queued, exc, on_dropped)
            continue
        ledger.delivered(endpoint_key, queued)
        if on_sent is not None:
            on_sent(queued.alert)
    return last


def _deliver_in_parallel(
    ledger: Ledger,
    client: TemperstackClient,
    pending: list[Queued],
    workers: int,
    on_sent: t.Callable[[Alert], None] | None,
    on_dropped: t.Callable[[str], None] | None,
) -> Acknowledgement | None:
    # One chain per alert, in the order of its oldest entry; a chain is delivered by one thread, in order.
    chains: dict[str, list[Queued]] = {}
    for queued in pending:
        chains.setdefault(queued.alert.alert_id, []).append(queued)
    outcomes: queue.Queue = queue.Queue()
    stop = threading.Event()
    done = object()

    def run(chain: list[Queued]) -> None:
        try:
            for queued in chain:
                if stop.is_set():
                    return
                try:
                    outcomes.put((queued, client.send(queued.alert.payload), None))
                except SendError as exc:
                    outcomes.put((queued, None, exc))
                    if exc.http_status != 400:
                        stop.set()
                        return
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            stop.set()
            outcomes.put((None, None, exc))
        finally:
            outcomes.put((done, None, None))

    endpoint_key = client.endpoint.ledger_key
    last: Acknowledgement | None = None
    failure: tuple[Queued, SendError] | None = None
    unexpected: BaseException | None = None
    with ThreadPoolExecutor(max_workers=min(workers, len(chains)), thread_name_prefix='temperstack-delivery') as pool:
        for chain in chains.values():
            pool.submit(run, chain)
        finished = 0
        try:
            while finished < len(chains):
                queued, delivery, exc = outcomes.get()
                if queued is done:
                    finished += 1
                elif exc is None:
                    ledger.delivered(endpoint_key, queued)
                    last = delivery
                    if on_sent is not None:
                        on_sent(queued.alert)
                elif queued is None:
                    unexpected = unexpected or exc
                elif exc.http_status == 400:
                    _drop(ledger, queued, exc, on_dropped)
                elif failure is None or queued.seq < failure[0].seq:
                    failure = (queued, exc)
        except BaseException:
            stop.set()  # the ledger failed: start nothing more; the pool waits for what is on its way
            raise
    if unexpected is not None:
        raise unexpected
    if failure is not None:
        raise _not_delivered(*failure)
    return last


def _not_delivered(queued: Queued, exc: SendError) -> SendError:
    return SendError(
        f'{queued.alert.status} for {queued.alert.alert_id} was not delivered: {exc.message}',
        exc.http_status,
        exc.attempts,
    )


def _drop(ledger: Ledger, queued: Queued, exc: SendError, on_dropped: t.Callable[[str], None] | None) -> None:
    ledger.discard(queued)
    if on_dropped is not None:
        on_dropped(f'{queued.alert.status} for {queued.alert.alert_id} was refused and dropped: {exc.message}')


def claim_lease(client: TemperstackClient) -> float:
    """The longest one send can take, so a claim outlives its holder's work but not its holder."""
    return client.max_attempts * (client.timeout + RETRY_AFTER_CAP) + 5.0
