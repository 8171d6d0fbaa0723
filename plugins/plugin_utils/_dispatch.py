# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""The one path an alert takes: ledger decision, client, record."""

from __future__ import annotations

import contextlib
import queue
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor

from ._alert import STATUS_ALARM, STATUS_OK, Alert
from ._client import RETRY_AFTER_CAP, Acknowledgement, SendError, TemperstackClient
from ._endpoint import Endpoint
from ._ledger import Claim, Ledger, LedgerError, Queued, Record
from ._silences import silencing

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
    # Why a send that Temperstack acknowledged could not be recorded (the next decision may send it again).
    unrecorded: str = ''
    # The silence that withheld this Alarm (or whose withheld Alarm this OK resolved before it was ever sent).
    silenced: str = ''
    # Flap damping: this status has been stated N times in a row, fewer than the M it takes ("N of M").
    damped: str = ''


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
    hosts: t.Sequence[str] = (),
    damping: tuple[int, int] = (1, 1),
    fail_open: bool = False,
) -> Outcome:
    """Send ``alert`` if it is news (or ``force``), and record it once Temperstack acknowledged it.

    ``fail_open`` (the shared ledger is unreachable, so ``ledger`` is this controller's fallback file, which does not
    know what Temperstack holds): send as if forced, but unlike ``force`` silences and flap damping still hold.

    With ``only_if_raised``, an OK is sent only for an alert on record as Alarm (``force`` does not
    override that); otherwise it is withheld, and nothing is sent or recorded.
    ``damping`` is (failures before an Alarm, successes before an OK): a status stated fewer times in a row than
    that is not sent yet. An Alarm that an active silence covers (by alert id, resource id or ``hosts``) is
    withheld and remembered as withheld; an OK for an alert whose Alarm was withheld and never sent sends nothing.
    Raises ``SendError`` when Temperstack did not acknowledge it; the ledger is then unchanged. When Temperstack
    acknowledged it but the ledger could not record it, the outcome says so in ``unrecorded``.
    """
    key = endpoint.ledger_key
    previous = ledger.lookup(key, alert.alert_id)
    withheld = is_withheld(alert, previous, only_if_raised)
    # An entry the callback queued but could not deliver is what Temperstack is about to hold, not what it
    # holds: the task delivers it, and its own alert if that still differs.
    pending = previous is not None and previous.pending
    wanted = pending or (not withheld and (force or fail_open or is_news(alert, previous)))
    if damping != (1, 1) and not force:
        damped = _damped(ledger, key, alert, damping, check_mode)
        if damped and wanted and not pending:
            return Outcome(alert, previous, changed=False, damped=damped)
    # An OK is checked whether or not it is wanted: one that only_if_raised holds back still ends a withheld Alarm.
    if not pending and (wanted or alert.status == STATUS_OK):
        held_back = _held_back(ledger, key, alert, previous, hosts, check_mode)
        if held_back:
            return Outcome(alert, previous, changed=False, silenced=held_back)
    if check_mode or not wanted:
        return Outcome(alert, previous, changed=wanted, withheld=withheld)

    with ledger.claim(endpoint.ledger_key, alert.alert_id, lease=claim_lease(client)) as claim:
        current = ledger.lookup(endpoint.ledger_key, alert.alert_id)
        outbox_ack = None
        if current is not None and current.pending:
            # Oldest first, so that an OK never reaches Temperstack before the Alarm it resolves.
            outbox_ack = send_outbox(ledger, client, claim=claim, on_dropped=warn)
            current = ledger.lookup(endpoint.ledger_key, alert.alert_id)
        # Another fork may have sent this very alert (or an OK that resolved it) while we waited for the claim.
        withheld = is_withheld(alert, current, only_if_raised)
        if withheld or (not force and not fail_open and not is_news(alert, current)):
            if outbox_ack is not None:
                return Outcome(alert, previous, True, True, outbox_ack.http_status, outbox_ack.attempts, withheld)
            return Outcome(alert, current, changed=False, withheld=withheld)
        ack = client.send(alert.payload)
        try:
            ledger.record(endpoint.ledger_key, alert, hosts, claim=claim)
        except LedgerError as exc:
            return Outcome(alert, current, True, True, ack.http_status, ack.attempts, unrecorded=str(exc))
    return Outcome(alert, current, True, True, ack.http_status, ack.attempts)


def _damped(ledger: Ledger, key: str, alert: Alert, damping: tuple[int, int], check_mode: bool) -> str:
    """'N of M' while ``alert``'s status has been stated fewer than the M times in a row it takes; '' once it has."""
    needed = damping[0] if alert.status == STATUS_ALARM else damping[1]
    # Every decision counts, so that a status that changes starts the other count afresh.
    in_a_row = ledger.streak(key, alert.alert_id, alert.status, count=not check_mode)
    return f'{in_a_row} of {needed}' if in_a_row < needed else ''


def _held_back(
    ledger: Ledger, key: str, alert: Alert, previous: Record | None, hosts: t.Sequence[str], check_mode: bool,
) -> str:
    """The silence that keeps this alert from Temperstack, if one does: see ``dispatch``."""
    if alert.status == STATUS_ALARM:
        silence = silencing(ledger.silences(), alert.alert_id, alert.payload.get('resource_id'), hosts)
        if silence is None:
            return ''
        if not check_mode:
            ledger.withhold(key, alert, hosts, silence.name)
        return silence.name
    if previous is not None and previous.status == STATUS_ALARM:
        return ''
    unsent = ledger.withheld(key, alert.alert_id)
    if not unsent:
        return ''
    # Temperstack never heard of this Alarm, so there is nothing to resolve; it is no longer the last stated status.
    if not check_mode:
        ledger.forget_withheld(key, alert.alert_id)
    return unsent[0].silence


def send_outbox(
    ledger: Ledger,
    client: TemperstackClient,
    claim: Claim | None = None,
    on_sent: t.Callable[[Alert], None] | None = None,
    on_dropped: t.Callable[[str], None] | None = None,
    workers: int = 1,
) -> Acknowledgement | None:
    """Deliver the outbox of the client's endpoint, each alert's entries oldest first, under that alert's claim.

    A caller that holds an alert's ``claim`` gets only that alert's entries delivered. Otherwise every alert
    whose claim this sender can take is delivered; an alert claimed by another sender (another run, a module
    task, a delivery process that outlived its run) is left to it, so each alert's entries have one sender at a
    time and an Alarm is never delivered after its OK.

    Stops at the first alert that cannot be delivered by raising its ``SendError``, so nothing
    overtakes it. An alert Temperstack refuses with HTTP 400 would be refused however often it is sent,
    and would block everything queued behind it: it is dropped and ``on_dropped`` is told why.

    With ``workers`` > 1 and a backlog of more than ``workers`` entries, once one delivery has got through,
    up to ``workers`` alerts are delivered at once, each alert's entries still one after another in the order
    they were queued, started oldest first. After a failure no new delivery starts; the ledger is written by
    the calling thread only. A short queue, and an endpoint that is down (it gets one request, not one per
    worker), are served one alert at a time, oldest first.
    """
    if claim is not None:
        last = None
        for queued in _without_repeats(ledger, claim, ledger.pending(claim.endpoint, claim.alert_id)):
            last = _send_entry(ledger, client, claim, queued, on_sent, on_dropped) or last
        return last
    backlog = ledger.pending(client.endpoint.ledger_key)
    chains = _Chains(ledger, client)
    last = None
    try:
        for index, queued in enumerate(backlog):
            if workers > 1 and last is not None and len(backlog) - index > workers:
                rest = list(dict.fromkeys(entry.alert.alert_id for entry in backlog[index:]))
                chains.release()
                return _send_in_parallel(ledger, client, rest, workers, on_sent, on_dropped) or last
            chain_claim = chains.claim_for(queued)
            if chain_claim is not None:
                last = _send_entry(ledger, client, chain_claim, queued, on_sent, on_dropped) or last
    finally:
        chains.release()
    return last


class _Chains:
    """The claims one pass over the outbox holds, taken when it reaches each alert's first entry."""

    def __init__(self, ledger: Ledger, client: TemperstackClient) -> None:
        self._ledger = ledger
        self._client = client
        self._claims: dict[str, Claim | None] = {}
        self._entries: dict[str, set[int]] = {}

    def claim_for(self, queued: Queued) -> Claim | None:
        """The claim to send ``queued`` under, or None if another sender has its alert or has delivered it."""
        alert_id = queued.alert.alert_id
        if alert_id not in self._claims:
            endpoint_key = self._client.endpoint.ledger_key
            claim = self._ledger.try_claim(endpoint_key, alert_id, claim_lease(self._client))
            self._claims[alert_id] = claim
            if claim is not None:
                # Read again under the claim: what another sender delivered meanwhile must not be sent again.
                chain = _without_repeats(self._ledger, claim, self._ledger.pending(endpoint_key, alert_id))
                self._entries[alert_id] = {entry.seq for entry in chain}
        claim = self._claims[alert_id]
        return claim if claim is not None and queued.seq in self._entries[alert_id] else None

    def release(self) -> None:
        for claim in self._claims.values():
            if claim is not None:
                _release(self._ledger, claim)
        self._claims.clear()


def _send_entry(
    ledger: Ledger,
    client: TemperstackClient,
    claim: Claim,
    queued: Queued,
    on_sent: t.Callable[[Alert], None] | None,
    on_dropped: t.Callable[[str], None] | None,
) -> Acknowledgement | None:
    """Send one outbox entry under its alert's claim, renewed first so that no one takes it over mid-request."""
    ledger.renew(claim)
    try:
        ack = client.send(queued.alert.payload)
    except SendError as exc:
        if exc.http_status != 400:
            _count_attempt(ledger, queued)
            raise _not_delivered(queued, exc) from None
        _drop(ledger, queued, exc, on_dropped, claim)
        return None
    if on_sent is not None:
        on_sent(queued.alert)
    ledger.delivered(claim.endpoint, queued, claim)
    return ack


def _send_in_parallel(
    ledger: Ledger,
    client: TemperstackClient,
    chains: list[str],
    workers: int,
    on_sent: t.Callable[[Alert], None] | None,
    on_dropped: t.Callable[[str], None] | None,
) -> Acknowledgement | None:
    # One thread per alert chain at a time; the chain is claimed and read by this thread just before it starts,
    # and every ledger write happens here, in the order the sends were acknowledged.
    endpoint_key = client.endpoint.ledger_key
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
            outcomes.put((done, chain[0].alert.alert_id, None))

    waiting = list(chains)
    claims: dict[str, Claim] = {}
    last: Acknowledgement | None = None
    failure: tuple[Queued, SendError] | None = None
    unexpected: BaseException | None = None
    with ThreadPoolExecutor(max_workers=min(workers, len(chains)), thread_name_prefix='temperstack-outbox') as pool:
        try:
            while True:
                while waiting and len(claims) < workers and not stop.is_set():
                    _start_chain(ledger, client, waiting.pop(0), claims, lambda chain: pool.submit(run, chain))
                if not claims:
                    break
                queued, ack, exc = outcomes.get()
                if queued is done:
                    _release(ledger, claims.pop(ack))
                elif queued is None:
                    unexpected = unexpected or exc
                elif exc is None:
                    last = ack
                    if on_sent is not None:
                        on_sent(queued.alert)
                    ledger.delivered(endpoint_key, queued, claims[queued.alert.alert_id])
                elif exc.http_status == 400:
                    _drop(ledger, queued, exc, on_dropped, claims[queued.alert.alert_id])
                elif failure is None or queued.seq < failure[0].seq:
                    failure = (queued, exc)
        except BaseException:
            stop.set()  # the ledger failed: start nothing more; the pool waits for what is on its way
            for claim in claims.values():
                _release(ledger, claim)
            raise
    if unexpected is not None:
        raise unexpected
    if failure is not None:
        _count_attempt(ledger, failure[0])
        raise _not_delivered(*failure)
    return last


def _start_chain(
    ledger: Ledger,
    client: TemperstackClient,
    alert_id: str,
    claims: dict[str, Claim],
    submit: t.Callable[[list[Queued]], t.Any],
) -> None:
    endpoint_key = client.endpoint.ledger_key
    claim = ledger.try_claim(endpoint_key, alert_id, claim_lease(client))
    if claim is None:
        return  # another sender has this alert
    chain = _without_repeats(ledger, claim, ledger.pending(endpoint_key, alert_id))
    if not chain:
        _release(ledger, claim)
        return
    claims[alert_id] = claim
    submit(chain)


def _without_repeats(ledger: Ledger, claim: Claim, chain: list[Queued]) -> list[Queued]:
    """``chain`` (one alert's entries, read under its claim) without the entries that would tell Temperstack nothing.

    Controllers that see the same play fail at the same moment each queue its Alarm; Temperstack needs it once.
    An entry with the status and payload of the one before it (or of what Temperstack acknowledged), naming no host
    that one lacks, is discarded under the claim instead of sent.
    """
    before = ledger.acknowledged(claim.endpoint, claim.alert_id) if chain else None
    kept: list[Queued] = []
    for queued in chain:
        last = (kept[-1].alert.status, kept[-1].alert.fingerprint, kept[-1].hosts) if kept else (
            (before.status, before.fingerprint, before.hosts) if before is not None else None)
        if last is not None and last[:2] == (queued.alert.status, queued.alert.fingerprint) and set(queued.hosts) <= set(last[2]):
            ledger.discard(queued, claim)
            continue
        kept.append(queued)
    return kept


def _release(ledger: Ledger, claim: Claim) -> None:
    with contextlib.suppress(LedgerError):
        ledger.release(claim)


def _count_attempt(ledger: Ledger, queued: Queued) -> None:
    # For the operator (alert_info): how often the entry at the head of its alert's chain failed to go out.
    with contextlib.suppress(LedgerError):
        ledger.attempted(queued.seq)


def _not_delivered(queued: Queued, exc: SendError) -> SendError:
    return SendError(
        f'{queued.alert.status} for {queued.alert.alert_id} was not delivered: {exc.message}',
        exc.http_status,
        exc.attempts,
    )


def _drop(
    ledger: Ledger,
    queued: Queued,
    exc: SendError,
    on_dropped: t.Callable[[str], None] | None,
    claim: Claim,
) -> None:
    ledger.discard(queued, claim)
    if on_dropped is not None:
        on_dropped(f'{queued.alert.status} for {queued.alert.alert_id} was refused and dropped: {exc.message}')


def claim_lease(client: TemperstackClient) -> float:
    """The longest one send can take, so a claim outlives its holder's work but not its holder.

    Every ledger write made under a claim renews it, so a chain of several entries keeps it from send to send.
    """
    return client.max_attempts * (client.timeout + RETRY_AFTER_CAP) + 5.0
