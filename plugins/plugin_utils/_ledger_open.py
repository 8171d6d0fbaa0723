# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""Opening a ledger from its spec, and the one policy for a shared ledger whose server is unreachable.

The only file that knows both backends. A shared (PostgreSQL) ledger is used through ``LedgerWithFallback``: when
its server cannot be reached, this controller's fallback file (SQLite) stands in, alerts still go out (fail open),
and what was sent, queued, silenced or counted meanwhile is moved into the shared ledger once it answers again.
The action plugins, the callback and its delivery process all go through it, so the policy is written once.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
import typing as t

from ._alert import STATUS_ALARM, Alert
from ._ledger import (
    HOLD_LEASE_SECONDS,
    Claim,
    Entry,
    Ledger,
    LedgerError,
    LedgerUnreachable,
    Queued,
    Record,
    Silence,
    Withheld,
    waiting_claim,
)
from ._ledger_spec import is_url, ledger_spec, mask_url
from ._ledger_sqlite import SqliteLedger

# A server found unreachable is not tried again by this process for this long (see postgres_ledger).
UNREACHABLE_RETRY_SECONDS = 30.0
# A lost server is tried again with this connect timeout (libpq's shortest that means it), so that a server that
# accepts connections and never answers costs a retry seconds, not the full connect timeout, each time.
RECONNECT_TIMEOUT_SECONDS = 2
# How long moving one alert's facts from the fallback file may hold its claims in both ledgers.
MOVE_LEASE_SECONDS = 60.0
# What the fallback file notes for the shared ledger, to be done there once it answers: a run's held failure that
# its unit's end replaced (drop it), and the holds of a run that ended (release them).
_DROP_HOLD = 'drop-hold\t'
_RELEASE_HOLDS = 'release-holds\t'


def open_ledger(
    spec: str | None = None,
    warn: t.Callable[[str], None] | None = None,
    read_only: bool = False,
    fallback: str | None = None,
    on_fallback: t.Callable[[LedgerError], None] | None = None,
    **fallback_options: t.Any,
) -> Ledger:
    """The ledger that ``spec`` names: a ``postgresql://`` URL, or a file path (None: the default file).

    With ``fallback`` (a file path), a URL gives a ``LedgerWithFallback`` (``fallback_options`` are its own), which
    never raises ``LedgerUnreachable``.
    Without it, raises ``LedgerUnreachable`` for a server that cannot be reached, ``LedgerError`` for anything else.
    """
    if not is_url(spec):
        return SqliteLedger(spec, warn=warn, read_only=read_only)
    url = t.cast(str, spec)
    if fallback:
        return t.cast(Ledger, LedgerWithFallback(
            url, fallback, warn=warn, read_only=read_only, on_fallback=on_fallback, **fallback_options))
    return postgres_ledger(url, warn=warn, read_only=read_only)


def postgres_ledger(
    url: str, warn: t.Callable[[str], None] | None = None, read_only: bool = False,
    retry_seconds: float = UNREACHABLE_RETRY_SECONDS, connect_timeout: int | None = None,
) -> Ledger:
    """The PostgreSQL ledger at ``url``; a server this process found unreachable less than ``retry_seconds`` ago is
    not tried again (a loop of 100 items would otherwise wait for the connect timeout 100 times)."""
    # Imported here: psycopg is needed only by those who set ledger_url (without it, PostgresLedger says how to get it).
    from ._ledger_postgres import PostgresLedger  # pylint: disable=import-outside-toplevel
    failed = _UNREACHABLE.get((os.getpid(), url))
    if failed is not None and time.monotonic() - failed[0] < retry_seconds:
        raise LedgerUnreachable(failed[1])
    try:
        return PostgresLedger(url, warn=warn, read_only=read_only, connect_timeout=connect_timeout)
    except LedgerUnreachable as exc:
        note_unreachable(url, exc)
        raise


_UNREACHABLE: dict[tuple[int, str], tuple[float, str]] = {}


def note_unreachable(spec: str, exc: LedgerError) -> None:
    """Remember, for this process, that the server of ``spec`` could not be reached (see ``postgres_ledger``)."""
    _UNREACHABLE[(os.getpid(), spec)] = (time.monotonic(), str(exc))


class LedgerWithFallback:
    """A shared ledger, with this controller's fallback file standing in while the server cannot be reached.

    It offers every method of ``Ledger`` (it is registered as one). While the server answers, everything goes to the
    shared ledger, and the last silences read there are kept in the fallback file. When a call finds the server
    unreachable, that call and the following ones go to the fallback file: alerts are decided without the fleet's
    memory (fail open), but silences and flap damping still hold. ``reconnect`` (called by the plugins at points
    where nothing read from one ledger is still to be written back to it) tries the server again and, once it
    answers, moves in what the fallback file kept:

    - each alert under its claim in both ledgers, so that a mover and a sender never both own an entry;
    - without comparing two machines' clocks: queued entries join the end of the shared outbox, in their order; a
      record of something sent during the outage is taken in as it is when the shared ledger has nothing for the
      alert or says the same, and as a doubtful record otherwise (the Alarm stays known as open, and whatever is
      stated next is sent: see ``Ledger.record``);
    - held failures that a unit's end replaced in the fallback file are dropped from the shared ledger, and the holds
      of runs that ended there are released, so that none goes out after the OK that followed it.
    """

    def __init__(
        self,
        url: str,
        fallback: str,
        warn: t.Callable[[str], None] | None = None,
        read_only: bool = False,
        on_fallback: t.Callable[[LedgerError], None] | None = None,
        retry_seconds: float = UNREACHABLE_RETRY_SECONDS,
        known_unreachable: str = '',
    ) -> None:
        """``known_unreachable``: why another process of this run just found the server unreachable; then the
        fallback file stands in from the start, and the server is tried again only after ``retry_seconds``."""
        self.spec = url
        self.location = mask_url(url)
        self.fallback_spec = fallback
        self._warn = warn or (lambda message: None)
        self._read_only = read_only
        self._on_fallback = on_fallback or (lambda exc: self._warn(str(exc)))
        self._retry_seconds = retry_seconds
        self._shared: Ledger | None = None
        self._local: SqliteLedger | None = None
        self._lost_at = 0.0
        # Why the fallback file stands in ('' while the shared ledger is used).
        self.unreachable = ''
        # Claims taken on the shared ledger: if it is lost before they are released, writes made under them go to the
        # fallback file without them.
        self._shared_tokens: set[str] = set()
        self._cached_silences: list[Silence] | None = None
        # Alerts of the fallback file that could not be moved in (a sender on this controller had them): moved by the
        # first claim taken on them (see try_claim), or by the next reconnect.
        self._left_behind: set[tuple[str, str]] = set()
        # How many records and queued alerts this ledger has moved in from the fallback file so far.
        self.moved = (0, 0)
        self.claims: set[Claim] = set()
        self._retry_after = retry_seconds
        if known_unreachable:
            # Said already, by the process that found it.
            self.unreachable, self._lost_at = known_unreachable, time.monotonic()
            return
        try:
            self._shared = postgres_ledger(url, warn=warn, read_only=read_only, retry_seconds=retry_seconds)
        except LedgerUnreachable as exc:
            self._lose(exc)
        else:
            self._move_in()

    # -- the policy ------------------------------------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        """Whether the fallback file stands in for the shared ledger right now."""
        return self._shared is None

    def reconnect(self, force: bool = False) -> bool:
        """Try the server again (at most once per retry interval unless ``force``); True if it is used now."""
        if self._shared is not None:
            if self._left_behind:
                self._move_in()
            return self._shared is not None
        if not force and time.monotonic() - self._lost_at < self._retry_after:
            return False
        try:
            self._shared = postgres_ledger(
                self.spec, warn=self._warn, read_only=self._read_only, retry_seconds=0,
                connect_timeout=RECONNECT_TIMEOUT_SECONDS,
            )
        except LedgerUnreachable as exc:
            self._lost_at = time.monotonic()
            self.unreachable = str(exc)
            # Each failed try waits twice as long for the next one, up to UNREACHABLE_RETRY_SECONDS.
            self._retry_after = min(max(self._retry_after * 2, 1.0), max(self._retry_seconds, UNREACHABLE_RETRY_SECONDS))
            return False
        self._retry_after = self._retry_seconds
        self.unreachable = ''
        self._move_in()
        return self._shared is not None

    def _lose(self, exc: LedgerError) -> None:
        note_unreachable(self.spec, exc)
        if self._shared is not None:
            with contextlib.suppress(Exception):
                self._shared.close()
        self._shared = None
        self._lost_at = time.monotonic()
        first = not self.unreachable
        self.unreachable = str(exc)
        if first:
            self._on_fallback(exc)

    def local(self, create: bool = True) -> SqliteLedger | None:
        """The fallback file (None if it does not exist and ``create`` is false)."""
        if self._local is None:
            if not create and not os.path.exists(self.fallback_spec):
                return None
            self._local = SqliteLedger(self.fallback_spec, warn=self._warn, read_only=self._read_only)
        return self._local

    def _call(self, name: str, *args: t.Any) -> t.Any:
        return self._call_on(name, *args)[1]

    def _call_on(self, name: str, *args: t.Any) -> tuple[Ledger, t.Any]:
        """``name`` on the ledger used now, and which one answered (the fallback file if the server is lost)."""
        shared = self._shared
        if shared is not None:
            try:
                return shared, getattr(shared, name)(*args)
            except LedgerUnreachable as exc:
                self._lose(exc)
        local = t.cast(SqliteLedger, self.local())
        # A claim taken on the shared ledger means nothing to the fallback file: there it is fail-open.
        args = tuple(None if isinstance(arg, Claim) and arg.token in self._shared_tokens else arg for arg in args)
        return local, getattr(local, name)(*args)

    def _both(self, name: str, *args: t.Any) -> int:
        """``name`` on the shared ledger (if it answers) and on the fallback file (if there is one): the sum."""
        total = 0
        if self._shared is not None:
            try:
                total += getattr(self._shared, name)(*args)
            except LedgerUnreachable as exc:
                self._lose(exc)
        local = self.local(create=False)
        if local is not None:
            total += getattr(local, name)(*args)
        return total

    def _move_in(self) -> None:
        """Move what the fallback file kept into the shared ledger (see the class); a lost server stops it."""
        local = self.local(create=False)
        if local is None or self._shared is None or self._read_only:
            return
        try:
            self._apply_notes(self._shared, local)
            self._left_behind = {
                alert for alert in _alerts_in(local) if not self._move_alert(self._shared, local, *alert)
            }
        except LedgerUnreachable as exc:
            self._lose(exc)
        except LedgerError as exc:
            # The local file's trouble is not the alert's: it is decided by the shared ledger all the same.
            self._warn(f'what this controller kept while the shared ledger was unreachable stays where it is: {exc}')

    @staticmethod
    def _apply_notes(shared: Ledger, local: SqliteLedger) -> None:
        for name, value in local.notes():
            if name.startswith(_DROP_HOLD):
                endpoint, alert_id = value.split('\t', 1)
                shared.settle(endpoint, alert_id, name[len(_DROP_HOLD):].split('\t', 1)[0], None)
            elif name.startswith(_RELEASE_HOLDS):
                shared.release_holds(value)
            local.drop_note(name)

    def _move_alert(self, shared: Ledger, local: SqliteLedger, endpoint: str, alert_id: str) -> bool:
        """Move one alert's facts, under its claim in both ledgers; False if either is held by a sender."""
        local_claim = local.try_claim(endpoint, alert_id, MOVE_LEASE_SECONDS)
        if local_claim is None:
            return False
        try:
            shared_claim = shared.try_claim(endpoint, alert_id, MOVE_LEASE_SECONDS)
            if shared_claim is None:
                return False
            try:
                sent = local.acknowledged(endpoint, alert_id)
                if sent is not None:
                    _merge_record(shared, endpoint, sent, shared_claim)
                    local.forget(endpoint, alert_id)
                    self.moved = (self.moved[0] + 1, self.moved[1])
                for queued in local.pending(endpoint, alert_id):
                    shared.queue(endpoint, queued.alert, queued.hosts)
                    local.forget(endpoint, alert_id, queued.seq)
                    self.moved = (self.moved[0], self.moved[1] + 1)
                for withheld in local.withheld(endpoint, alert_id):
                    if not shared.withheld(endpoint, alert_id):
                        shared.withhold(endpoint, Alert(withheld.record.payload), withheld.record.hosts, withheld.silence)
                    local.forget_withheld(endpoint, alert_id)
            finally:
                shared.release(shared_claim)
        finally:
            local.release(local_claim)
        return True

    def _cache_silences(self, silences: list[Silence]) -> None:
        """Keep the last silences read from the shared ledger in the fallback file, for an outage to honour."""
        if silences == self._cached_silences or self._read_only:
            return
        local = self.local(create=bool(silences))
        if local is not None:
            _keep_silences(local, silences)
        self._cached_silences = silences

    # -- the Ledger interface ----------------------------------------------------------------------------------------

    def close(self) -> None:
        for ledger in (self._shared, self._local):
            if ledger is not None:
                with contextlib.suppress(Exception):
                    ledger.close()
        self._shared = self._local = None

    def __enter__(self) -> LedgerWithFallback:
        return self

    def __exit__(self, *exc_info: t.Any) -> None:
        self.close()

    def lookup(self, endpoint: str, alert_id: str) -> Record | None:
        return self._call('lookup', endpoint, alert_id)

    def on_record(self, endpoint: str, alert_id: str) -> Record | None:
        return self._call('on_record', endpoint, alert_id)

    @contextlib.contextmanager
    def claim(self, endpoint: str, alert_id: str, lease: float) -> t.Iterator[Claim]:
        with waiting_claim(self, endpoint, alert_id, lease) as claim:
            yield claim

    def try_claim(self, endpoint: str, alert_id: str, lease: float) -> Claim | None:
        if (endpoint, alert_id) in self._left_behind and self._shared is not None:
            # What a sender on this controller is sending from the fallback file comes first: this claim waits for it,
            # then its facts move in, so that a decision made under the claim knows them.
            try:
                if not self._move_alert(self._shared, t.cast(SqliteLedger, self.local()), endpoint, alert_id):
                    return None
                self._left_behind.discard((endpoint, alert_id))
            except LedgerUnreachable as exc:
                self._lose(exc)
        answered, claim = self._call_on('try_claim', endpoint, alert_id, lease)
        if claim is not None:
            if answered is self._shared:
                self._shared_tokens.add(claim.token)
            self.claims.add(claim)
        return claim

    def release(self, claim: Claim) -> None:
        self.claims.discard(claim)
        ledger = self._shared if claim.token in self._shared_tokens else self.local(create=False)
        if ledger is None:
            return  # the lost server's claim expires on its own
        try:
            ledger.release(claim)
        except LedgerUnreachable as exc:
            self._lose(exc)

    def release_claims_of(self, other: t.Any) -> None:
        for claim in list(other.claims):
            self.release(claim)

    def renew(self, claim: Claim) -> None:
        self._call('renew', claim)

    def record(
        self, endpoint: str, alert: Alert, hosts: t.Iterable[str] = (), claim: Claim | None = None, doubtful: bool = False,
    ) -> None:
        self._call('record', endpoint, alert, tuple(hosts), claim, doubtful)

    def queue(self, endpoint: str, alert: Alert, hosts: t.Iterable[str] = ()) -> int:
        return self._call('queue', endpoint, alert, tuple(hosts))

    def hold(self, endpoint: str, alert: Alert, hosts: t.Iterable[str], token: str, owner: str) -> None:
        self._call('hold', endpoint, alert, tuple(hosts), token, owner)

    def settle(self, endpoint: str, alert_id: str, token: str, alert: Alert | None, hosts: t.Iterable[str] = ()) -> None:
        """Settle the held failure wherever it is held: in the ledger used now, and dropped from the other."""
        answered, _nothing = self._call_on('settle', endpoint, alert_id, token, alert, tuple(hosts))
        local = self.local(create=False)
        if answered is not local:
            if local is not None:
                local.settle(endpoint, alert_id, token, None)
        elif local is not None and not self._read_only:
            # Held in the shared ledger before it was lost: dropped there once it answers again.
            local.note(f'{_DROP_HOLD}{token}\t{endpoint}\t{alert_id}', f'{endpoint}\t{alert_id}')

    def renew_holds(self, token: str, lease: float = HOLD_LEASE_SECONDS) -> int:
        return self._both('renew_holds', token, lease)

    def release_holds(self, token: str) -> int:
        released = self._both('release_holds', token)
        if self._shared is None and not self._read_only:
            t.cast(SqliteLedger, self.local()).note(f'{_RELEASE_HOLDS}{token}', token)
        return released

    def release_stale_holds(self) -> int:
        return self._both('release_stale_holds')

    # Outbox entries of the fallback file are handed out with their sequence number negated, so that an entry is
    # always written back to the ledger it came from, whichever is used by then.

    def pending(self, endpoint: str, alert_id: str | None = None) -> list[Queued]:
        answered, found = self._call_on('pending', endpoint, alert_id)
        if answered is self._shared:
            return found
        return [queued._replace(seq=-queued.seq) for queued in found]

    def delivered(self, endpoint: str, queued: Queued, claim: Claim | None = None) -> bool:
        if queued.seq < 0:
            return self._from_file('delivered', endpoint, queued._replace(seq=-queued.seq), claim)
        if self._shared is not None:
            try:
                return self._shared.delivered(endpoint, queued, claim)
            except LedgerUnreachable as exc:
                self._lose(exc)
        # Temperstack has it: the fallback file remembers that. The shared ledger's entry, still queued there, goes
        # out once more later: a duplicate in its order, never a reordering.
        t.cast(SqliteLedger, self.local()).record(endpoint, queued.alert, queued.hosts)
        return True

    def discard(self, queued: Queued, claim: Claim | None = None) -> None:
        if queued.seq < 0:
            self._from_file('discard', queued._replace(seq=-queued.seq), claim)
        elif self._shared is not None:
            try:
                self._shared.discard(queued, claim)
            except LedgerUnreachable as exc:
                self._lose(exc)

    def attempted(self, seq: int) -> None:
        if seq < 0:
            self._from_file('attempted', -seq)
        elif self._shared is not None:
            try:
                self._shared.attempted(seq)
            except LedgerUnreachable as exc:
                self._lose(exc)

    def _from_file(self, name: str, *args: t.Any) -> t.Any:
        args = tuple(None if isinstance(arg, Claim) and arg.token in self._shared_tokens else arg for arg in args)
        return getattr(self.local(), name)(*args)

    def prune(self, retention: float | None = None, now: float | None = None) -> int:
        args = () if retention is None else (retention, now)
        return self._call('prune', *args)

    def prune_if_due(self) -> None:
        self._call('prune_if_due')

    def export(self) -> list[tuple[str, int | None, Record]]:
        return self._call('export')

    def adopt(self, endpoint: str, record: Record) -> bool:
        return self._call('adopt', endpoint, record)

    def records(self, endpoint: str) -> list[Record]:
        return self._call('records', endpoint)

    def entries(self) -> list[Entry]:
        return self._call('entries')

    def put_silence(self, silence: Silence) -> bool:
        return self._call('put_silence', silence)

    def remove_silence(self, name: str) -> bool:
        return self._call('remove_silence', name)

    def silences(self) -> list[Silence]:
        shared = self._shared
        found = self._call('silences')
        if shared is not None and self._shared is shared:
            with contextlib.suppress(LedgerError):
                self._cache_silences(found)
        return found

    def withhold(self, endpoint: str, alert: Alert, hosts: t.Iterable[str], silence: str) -> None:
        self._call('withhold', endpoint, alert, tuple(hosts), silence)

    def withheld(self, endpoint: str | None, alert_id: str | None = None) -> list[Withheld]:
        return self._call('withheld', endpoint, alert_id)

    def forget_withheld(self, endpoint: str, alert_id: str) -> bool:
        return self._call('forget_withheld', endpoint, alert_id)

    def streak(self, endpoint: str, alert_id: str, status: str, count: bool = True) -> int:
        return self._call('streak', endpoint, alert_id, status, count)

    def acknowledged(self, endpoint: str, alert_id: str) -> Record | None:
        return self._call('acknowledged', endpoint, alert_id)

    def newest(self, endpoint: str, alert_id: str) -> float | None:
        return self._call('newest', endpoint, alert_id)

    def forget(self, endpoint: str, alert_id: str, seq: int | None = None) -> None:
        self._call('forget', endpoint, alert_id, seq)


Ledger.register(LedgerWithFallback)


def keep_silences_for_outage(fallback: str, silences: list[Silence]) -> None:
    """Make ``silences`` (just read from the shared ledger) what the fallback file honours during an outage."""
    if silences or os.path.exists(fallback):
        with SqliteLedger(fallback) as local:
            _keep_silences(local, silences)


def _keep_silences(local: SqliteLedger, silences: list[Silence]) -> None:
    if local.silences() != silences:
        local.replace_silences(silences)


def _alerts_in(local: SqliteLedger) -> list[tuple[str, str]]:
    """Every alert the fallback file holds a fact of (a record, a deliverable entry, a withheld Alarm), in order."""
    found = [(endpoint, record.alert_id) for endpoint, _seq, record in local.export()]
    found += local.withheld_alerts()
    return list(dict.fromkeys(found))


def _merge_record(shared: Ledger, endpoint: str, sent: Record, claim: Claim) -> None:
    """Take in what this controller sent during the outage, ordered without any clock (see ``LedgerWithFallback``).

    The shared ledger may have learned something else of the alert meanwhile, from controllers that could reach it:
    in what order Temperstack heard the two, no one can know. Where they agree there is nothing to doubt. Where they
    differ, an Alarm from either side stays known as open (so that its OK is sent), and the record is doubtful (so
    that the next Alarm stated is sent too, whatever Temperstack heard last).
    """
    known = shared.acknowledged(endpoint, sent.alert_id)
    alert = Alert(sent.payload)
    if known is None:
        shared.record(endpoint, alert, sent.hosts, claim)
        return
    if (known.status, known.fingerprint) == (sent.status, sent.fingerprint):
        if not set(sent.hosts) <= set(known.hosts):
            shared.record(endpoint, alert, tuple(dict.fromkeys(known.hosts + sent.hosts)), claim)
        return
    alarms = [record for record in (sent, known) if record.status == STATUS_ALARM]
    if not alarms:
        return  # OK either way: Temperstack holds OK, whichever payload it heard last
    hosts = tuple(dict.fromkeys(host for record in alarms for host in record.hosts))
    shared.record(endpoint, Alert(alarms[0].payload), hosts, claim, doubtful=True)


# Ledgers kept open for the rest of the process, by (process id, spec): see shared_ledger().
_SHARED: dict[tuple[int, str], tuple[t.Any, tuple[int, int] | None]] = {}


def shared_ledger(spec: str | None = None, warn: t.Callable[[str], None] | None = None, fallback: str | None = None) -> Ledger:
    """The ledger ``spec`` names, opened once in this process and kept open for every later caller in it.

    Ansible runs all the items of a loop in one worker process, each with a new action plugin. A SQLite ledger
    opened and closed per item pays, whenever no other process has it open, for SQLite's checkpoint on the last
    close (an fsync) and for creating the write-ahead log again on the next write: about 1 ms per item, a third
    of what Ansible spends on its cheapest task. A PostgreSQL ledger would pay a connection (and its password
    exchange) per item. Kept open, each is paid once per process. A process that exits without closing it
    (Ansible's workers end with os._exit) leaves the write-ahead log to the next one, as SQLite is designed to.

    Never shared across processes: a forked child opens its own (connections must not cross a fork).
    A ledger file deleted or replaced since it was opened is opened again. Call ``discard_shared`` after a
    ``LedgerError``, so that the next caller starts afresh. A URL with a ``fallback`` gives a ``LedgerWithFallback``,
    which tries its server again (``reconnect``) each time it is handed out while the fallback file stands in.
    """
    url = is_url(spec)
    resolved = ledger_spec(spec if url else None, None if url else spec)
    key = (os.getpid(), resolved)
    entry = _SHARED.get(key)
    if entry is not None:
        ledger = entry[0]
        if isinstance(ledger, LedgerWithFallback):
            ledger.reconnect()
            return t.cast(Ledger, ledger)
        if url or _file_id(resolved) == entry[1]:
            return ledger
        discard_shared(ledger)
    ledger = open_ledger(resolved, warn=warn, fallback=fallback, on_fallback=lambda exc: None)
    file_id = None if url else _file_id(resolved)
    if url or file_id is not None:
        _SHARED[key] = (ledger, file_id)
    return ledger


def discard_shared(ledger: t.Any) -> None:
    """Close ``ledger`` if it is this process's shared one, so that ``shared_ledger`` opens it again."""
    key = (os.getpid(), ledger.spec)
    entry = _SHARED.get(key)
    if entry is not None and entry[0] is ledger:
        del _SHARED[key]
        with contextlib.suppress(Exception):
            ledger.close()


@atexit.register
def _close_shared() -> None:
    """An orderly exit closes this process's shared ledgers (never those a fork inherited from its parent)."""
    for pid, spec in list(_SHARED):
        if pid == os.getpid():
            discard_shared(_SHARED[(pid, spec)][0])


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino
