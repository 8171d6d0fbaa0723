# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""The alert ledger's interface: what Temperstack has acknowledged, per endpoint and alert_id, and what still waits.

Temperstack's webhook can be written to but not read, so the ledger is the collection's only memory of what
Temperstack knows. This file is the contract only: errors, value types, ``Ledger`` and helpers built on it. It
imports no backend; ``_ledger_sqlite`` and ``_ledger_postgres`` implement it, and ``_ledger_open`` alone knows both.
"""

from __future__ import annotations

import abc
import contextlib
import os
import time
import typing as t
import uuid

from ._alert import Alert

# Resolved alerts are forgotten after this long; forgetting one only means a later OK for it is resent.
RETENTION_SECONDS = 90 * 24 * 3600
PRUNE_INTERVAL_SECONDS = 24 * 3600
BUSY_TIMEOUT_SECONDS = 30.0
CLAIM_POLL_SECONDS = 0.05
# How long a failure held by a running playbook stays held without being renewed. The run's delivery process
# renews it a few times per lease, and releases it at once when the run ends without saying so.
HOLD_LEASE_SECONDS = 120.0
# The collection's own tests shorten it to see a play outlast its holds in seconds, not minutes. Not an option.
if os.environ.get('_TEMPERSTACK_TEST_HOLD_LEASE_SECONDS'):
    HOLD_LEASE_SECONDS = max(1.0, float(os.environ['_TEMPERSTACK_TEST_HOLD_LEASE_SECONDS']))


class LedgerError(Exception):
    """The ledger cannot be used; the message says which file and why."""


class LedgerUnreachable(LedgerError):
    """The ledger's server cannot be reached (down, refusing, timing out): alerts go out without its memory."""


class LeaseLost(LedgerError):
    """Another sender took over an alert whose claim had expired: this one must stop writing for it."""


class Claim(t.NamedTuple):
    """The right to send one alert, and so to write its record and its outbox entries, for ``lease`` seconds.

    Every write made under a claim checks that the claim is still this one (fencing), and renews it.
    """

    endpoint: str
    alert_id: str
    token: str
    lease: float


class Record(t.NamedTuple):
    """What Temperstack is known to hold for one alert (or will, once ``pending`` is delivered)."""

    alert_id: str
    status: str
    fingerprint: str
    payload: dict[str, str]
    updated: float
    pending: bool = False
    # The hosts an alert is about, as the callback saw them; an OK under --limit needs all of them.
    hosts: tuple[str, ...] = ()


class Queued(t.NamedTuple):
    seq: int
    alert: Alert
    hosts: tuple[str, ...] = ()


class Entry(t.NamedTuple):
    """An outbox entry as an operator sees it (``entries``)."""

    endpoint: str
    seq: int
    alert: Alert
    hosts: tuple[str, ...]
    queued: float
    attempts: int
    held: bool


class Silence(t.NamedTuple):
    """A maintenance window: while it lasts, the Alarms of the alerts it matches are withheld (see _silences)."""

    name: str
    alert_ids: tuple[str, ...] = ()
    resource_ids: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    starts: float = 0.0
    ends: float = 0.0
    comment: str = ''
    created: float = 0.0


class Withheld(t.NamedTuple):
    """An Alarm a silence kept from Temperstack: the alert's last stated status, never sent."""

    silence: str
    record: Record


class Ledger(abc.ABC):
    """What Temperstack holds and what still waits, behind one interface whichever backend keeps it.

    Open one with ``open_ledger``: a file path gives the embedded SQLite ledger, a ``postgresql://`` URL the
    ledger a fleet shares. Everything sent for one alert is sent under its claim, a row with a lease: forks,
    processes and controllers that decide the same alert at once send it once, each alert's outbox entries have
    one sender at a time, and distinct alerts still go out in parallel. No transaction is ever held across a
    network call to Temperstack.
    """

    #: Where the ledger is, fit for any message: a file path, or a URL with its password masked.
    location: str = ''
    #: What ``open_ledger`` takes to open this ledger again (a URL here may hold a password: never show it).
    spec: str = ''

    def __init__(self, warn: t.Callable[[str], None] | None = None) -> None:
        self._warn = warn or (lambda message: None)
        # The claims this connection took and has not released, for release_claims_of().
        self.claims: set[Claim] = set()

    @abc.abstractmethod
    def close(self) -> None:
        """A backend's implementation of the public method of the same name without the underscore."""

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: t.Any) -> None:
        self.close()

    # -- the interface the plugins use -----------------------------------------------------------

    def lookup(self, endpoint: str, alert_id: str) -> Record | None:
        """The alert's current state: the newest deliverable outbox entry if one waits, else the last acknowledged.

        Failures a running playbook still holds (``hold``) are not yet part of the state; a hold that expired is.
        """
        return self._guard(self._lookup, endpoint, alert_id, False)

    def on_record(self, endpoint: str, alert_id: str) -> Record | None:
        """The alert's state as decisions made it: like ``lookup``, but no held failure counts, expired or not.

        What a unit's end is compared with: a failure held for it (by this run or another) is a guess at its Alarm,
        never proof that the Alarm is old news.
        """
        return self._guard(self._lookup, endpoint, alert_id, True)

    @contextlib.contextmanager
    def claim(self, endpoint: str, alert_id: str, lease: float) -> t.Iterator[Claim]:
        """Hold the right to send ``alert_id`` for ``lease`` seconds, renewed by every write made under it.

        A process that finds the alert claimed waits for the claim to be released (or to expire, should
        its holder have died); ``lookup`` then shows what the holder recorded.
        """
        with waiting_claim(self, endpoint, alert_id, lease) as claim:
            yield claim

    def try_claim(self, endpoint: str, alert_id: str, lease: float) -> Claim | None:
        """The alert's claim, or None at once if another process holds it."""
        claim = Claim(endpoint, alert_id, uuid.uuid4().hex, lease)
        if not self._guard(self._try_claim, claim):
            return None
        self.claims.add(claim)
        return claim

    def release(self, claim: Claim) -> None:
        self._guard(self._release, claim)
        self.claims.discard(claim)

    def release_claims_of(self, other: Ledger) -> None:
        """Release what ``other`` (a connection whose thread is stuck in a request it gives up) still claims.

        The request may yet reach Temperstack, so the next sender may send that entry again: a duplicate, never
        a reordering, and better than leaving the alert blocked for the rest of the lease.
        """
        for claim in list(other.claims):
            self.release(claim)

    def renew(self, claim: Claim) -> None:
        """Extend ``claim`` by its lease before a send; raises ``LeaseLost`` if it is no longer this one."""
        self._guard(self._renew, claim)

    def record(
        self, endpoint: str, alert: Alert, hosts: t.Iterable[str] = (), claim: Claim | None = None, doubtful: bool = False,
    ) -> None:
        """Remember that Temperstack acknowledged ``alert``. Call only after a 2xx, under the alert's claim.

        Raises ``LeaseLost`` if the claim has passed to another process, which then decides what is on record.
        A ``doubtful`` record (two controllers told Temperstack different things, in an order no one can know) keeps
        its status and hosts, but matches no alert: the next decision sends whatever it is told (see ``doubted``).
        """
        self._guard(self._record, endpoint, alert, tuple(hosts), claim, doubtful)

    def queue(self, endpoint: str, alert: Alert, hosts: t.Iterable[str] = ()) -> int:
        """Keep an alert in the outbox until it is delivered, in order, by ``pending``/``delivered``."""
        return self._guard(self._queue, endpoint, alert, tuple(hosts))

    def hold(self, endpoint: str, alert: Alert, hosts: t.Iterable[str], token: str, owner: str) -> None:
        """Keep a failure a running playbook has seen, durably, before it is decided what to send for it.

        A held entry replaces the run's earlier held entry for the same alert. It is not sent, nor part of the
        alert's state, while the run holds it: the run ``settle``s it when its unit ends. If the run never does
        (killed, interrupted), the hold is released (``release_holds``, ``release_stale_holds``) or expires,
        and the entry is delivered like any other.
        """
        self._guard(self._hold, endpoint, alert, tuple(hosts), token, owner)

    def settle(self, endpoint: str, alert_id: str, token: str, alert: Alert | None, hosts: t.Iterable[str] = ()) -> None:
        """Replace the run's held entry for ``alert_id`` by ``alert`` (queued for delivery) or, if None, by nothing."""
        self._guard(self._settle, endpoint, alert_id, token, alert, tuple(hosts))

    def renew_holds(self, token: str, lease: float = HOLD_LEASE_SECONDS) -> int:
        """Extend the holds of a run that is still going; returns how many it holds."""
        return self._guard(self._renew_holds, token, lease)

    def release_holds(self, token: str) -> int:
        """Make what a run held deliverable now (the run ended without settling it); returns how many."""
        return self._guard(self._release_holds, token)

    def release_stale_holds(self) -> int:
        """Release the holds of runs on this controller whose process is gone (killed with SIGKILL, say)."""
        return self._guard(self._release_stale_holds)

    def discard(self, queued: Queued, claim: Claim | None = None) -> None:
        """Drop a queued alert that Temperstack will never accept."""
        self._guard(self._discard, queued, claim)

    def pending(self, endpoint: str, alert_id: str | None = None) -> list[Queued]:
        """Undelivered alerts for ``endpoint`` (only ``alert_id``'s, if given), oldest first; not those held."""
        return self._guard(self._pending, endpoint, alert_id)

    def delivered(self, endpoint: str, queued: Queued, claim: Claim | None = None) -> bool:
        """A queued alert reached Temperstack: record it and take it out of the outbox, atomically.

        Under ``claim`` (the sender's): raises ``LeaseLost`` if another process has taken the claim over. An entry
        that is no longer in the outbox was delivered by another sender, and recording it could overwrite a
        newer record: then nothing is written and the result is False.
        """
        return self._guard(self._delivered, endpoint, queued, claim)

    def prune(self, retention: float = RETENTION_SECONDS, now: float | None = None) -> int:
        """Forget resolved alerts older than ``retention`` seconds, and ended silences; returns how many alerts."""
        return self._guard(self._prune, retention, time.time() if now is None else now)

    def prune_if_due(self) -> None:
        self._guard(self._prune_if_due)

    def export(self) -> list[tuple[str, int | None, Record]]:
        """Everything the ledger holds, for copying it elsewhere: ``(endpoint, seq, record)``, records first.

        An acknowledged record has no ``seq``; an outbox entry (not one a live run holds) is a pending record whose
        ``updated`` is when it was queued, in outbox order.
        """
        return self._guard(self._export)

    def adopt(self, endpoint: str, record: Record) -> bool:
        """Take in a record or outbox entry exported from another ledger, unless this one knows something newer.

        Newer means a record or entry of the same alert as recent as it or more: taking in an older one would
        undo what the fleet told Temperstack since, or put an Alarm behind its own OK. So adopting the same
        export twice adopts nothing the second time. Returns whether it was taken in.
        """
        return self._guard(self._adopt, endpoint, record)

    def records(self, endpoint: str) -> list[Record]:
        """Every acknowledged record of ``endpoint``, by alert id (outbox entries aside: see ``entries``)."""
        return self._guard(self._records, endpoint)

    def entries(self) -> list[Entry]:
        """Every outbox entry, of every endpoint, held ones included, oldest first."""
        return self._guard(self._entries)

    def attempted(self, seq: int) -> None:
        """Count a failed attempt to deliver outbox entry ``seq``."""
        self._guard(self._attempted, seq)

    def put_silence(self, silence: Silence) -> bool:
        """Create or replace a silence by its name; returns whether anything changed."""
        return self._guard(self._put_silence, silence)

    def remove_silence(self, name: str) -> bool:
        """Delete a silence; returns whether there was one."""
        return self._guard(self._remove_silence, name)

    def silences(self) -> list[Silence]:
        """Every silence, by name, ended ones that are not yet pruned included."""
        return self._guard(self._silences)

    def withhold(self, endpoint: str, alert: Alert, hosts: t.Iterable[str], silence: str) -> None:
        """Remember an Alarm that ``silence`` kept from Temperstack, so that it goes out once the silence ends."""
        self._guard(self._withhold, endpoint, alert, tuple(hosts), silence)

    def withheld(self, endpoint: str | None, alert_id: str | None = None) -> list[Withheld]:
        """The withheld Alarms of ``endpoint`` (None: of every endpoint; only ``alert_id``'s, if given)."""
        return self._guard(self._withheld, endpoint, alert_id)

    def forget_withheld(self, endpoint: str, alert_id: str) -> bool:
        """Drop the withheld Alarm of ``alert_id`` (sent now, or resolved before it was ever sent)."""
        return self._guard(self._forget_withheld, endpoint, alert_id)

    def streak(self, endpoint: str, alert_id: str, status: str, count: bool = True) -> int:
        """Count one more decision of ``status`` in a row for ``alert_id``; returns how many in a row so far.

        With ``count=False`` (check mode) nothing is written: it returns what counting would have returned.
        """
        return self._guard(self._streak, endpoint, alert_id, status, count)

    def acknowledged(self, endpoint: str, alert_id: str) -> Record | None:
        """What Temperstack acknowledged for ``alert_id``, whatever waits in the outbox (``lookup`` prefers that)."""
        return self._guard(self._acknowledged, endpoint, alert_id)

    def newest(self, endpoint: str, alert_id: str) -> float | None:
        """When the newest record or outbox entry of ``alert_id`` was written (None: the ledger has neither)."""
        return self._guard(self._newest, endpoint, alert_id)

    def forget(self, endpoint: str, alert_id: str, seq: int | None = None) -> None:
        """Drop a record (or, with ``seq``, an outbox entry) that has been moved to another ledger."""
        self._guard(self._forget, endpoint, alert_id, seq)

    # -- what each backend implements -------------------------------------------------------------

    @abc.abstractmethod
    def _guard(self, operation: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
        """Run ``operation``, turning the backend's errors into a ``LedgerError`` that names the ledger."""

    @abc.abstractmethod
    def _lookup(self, endpoint: str, alert_id: str, unheld_only: bool) -> Record | None:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _try_claim(self, claim: Claim) -> bool:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _release(self, claim: Claim) -> None:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _renew(self, claim: Claim) -> None:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _record(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], claim: Claim | None, doubtful: bool) -> None:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _queue(self, endpoint: str, alert: Alert, hosts: tuple[str, ...]) -> int:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _hold(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], token: str, owner: str) -> None:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _settle(self, endpoint: str, alert_id: str, token: str, alert: Alert | None, hosts: tuple[str, ...]) -> None:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _renew_holds(self, token: str, lease: float) -> int:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _release_holds(self, token: str) -> int:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _release_stale_holds(self) -> int:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _discard(self, queued: Queued, claim: Claim | None) -> None:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _pending(self, endpoint: str, alert_id: str | None) -> list[Queued]:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _delivered(self, endpoint: str, queued: Queued, claim: Claim | None) -> bool:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _prune(self, retention: float, now: float) -> int:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _prune_if_due(self) -> None:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _export(self) -> list[tuple[str, int | None, Record]]:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _adopt(self, endpoint: str, record: Record) -> bool:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _forget(self, endpoint: str, alert_id: str, seq: int | None) -> None:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _newest(self, endpoint: str, alert_id: str) -> float | None:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _acknowledged(self, endpoint: str, alert_id: str) -> Record | None:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _records(self, endpoint: str) -> list[Record]:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _entries(self) -> list[Entry]:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _attempted(self, seq: int) -> None:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _put_silence(self, silence: Silence) -> bool:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _remove_silence(self, name: str) -> bool:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _silences(self) -> list[Silence]:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _withhold(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], silence: str) -> None:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _withheld(self, endpoint: str | None, alert_id: str | None) -> list[Withheld]:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _forget_withheld(self, endpoint: str, alert_id: str) -> bool:
        """A backend's implementation of the public method of the same name without the underscore."""

    @abc.abstractmethod
    def _streak(self, endpoint: str, alert_id: str, status: str, count: bool) -> int:
        """A backend's implementation of the public method of the same name without the underscore."""


class _Claimable(t.Protocol):
    def try_claim(self, endpoint: str, alert_id: str, lease: float) -> Claim | None: ...  # noqa: E704

    def release(self, claim: Claim) -> None: ...  # noqa: E704


@contextlib.contextmanager
def waiting_claim(ledger: _Claimable, endpoint: str, alert_id: str, lease: float) -> t.Iterator[Claim]:
    """``Ledger.claim`` for anything that can try and release claims (a ledger, or one with a fallback)."""
    deadline = time.monotonic() + lease + BUSY_TIMEOUT_SECONDS
    while True:
        claim = ledger.try_claim(endpoint, alert_id, lease)
        if claim is not None:
            break
        if time.monotonic() > deadline:
            raise LedgerError(f'alert {alert_id} stayed claimed by another process for over {lease:g} s')
        time.sleep(CLAIM_POLL_SECONDS)
    try:
        yield claim
    finally:
        with contextlib.suppress(LedgerError):
            ledger.release(claim)


DOUBT_PREFIX = 'doubtful:'


def doubted(fingerprint: str) -> str:
    """A fingerprint no alert has: the record keeps its status and hosts, and anything stated next is news."""
    return fingerprint if fingerprint.startswith(DOUBT_PREFIX) else DOUBT_PREFIX + fingerprint


class Copied(t.NamedTuple):
    """What ``copy_ledger`` took in (or, in a dry run, would take in)."""

    records: int
    entries: int
    alert_ids: tuple[str, ...]


def copy_ledger(
    source: Ledger, target: Ledger, move: bool = False, endpoints: t.Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> Copied:
    """Copy what ``source`` holds into ``target`` (``adopt``), and say what was taken in.

    With ``move``, whatever is in ``target`` afterwards (taken in now, or known there as newer) is dropped from
    ``source``. With ``endpoints``, only the endpoints it maps are copied, each to its new endpoint (a rotated key).
    A ``dry_run`` writes nothing to either. Safe to run twice: the second run takes nothing in.
    """
    records = entries = 0
    alert_ids: set[str] = set()
    # A dry run remembers what it would have taken in, as adopt() would find it there.
    planned: dict[tuple[str, str], float] = {}
    for endpoint, seq, record in source.export():
        if endpoints is not None and endpoint not in endpoints:
            continue
        to = endpoints[endpoint] if endpoints is not None else endpoint
        if dry_run:
            seen = (target.newest(to, record.alert_id), planned.get((to, record.alert_id)))
            known = max((time for time in seen if time is not None), default=None)
            taken = known is None or known < record.updated
            if taken:
                planned[(to, record.alert_id)] = record.updated
        else:
            taken = target.adopt(to, record)
        if taken:
            entries += record.pending
            records += not record.pending
            alert_ids.add(record.alert_id)
        if move and not dry_run:
            source.forget(endpoint, record.alert_id, seq)
    return Copied(records, entries, tuple(sorted(alert_ids)))
