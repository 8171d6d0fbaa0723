# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""The alert ledger: what Temperstack has acknowledged, per endpoint and alert_id, and what still waits.

Temperstack's webhook can be written to but not read, so this is the collection's only memory of
what Temperstack knows. The plugins use it only through the methods of ``Ledger``; nothing else in the
collection speaks SQL.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import socket
import sqlite3
import stat
import time
import typing as t
import uuid
from urllib.parse import quote

from ._alert import Alert
from ._endpoint import MASK

DEFAULT_LEDGER_PATH = os.path.join('~', '.ansible', 'temperstack', 'ledger.sqlite3')
LEDGER_PATH_ENV = 'TEMPERSTACK_LEDGER_PATH'
SCHEMA_VERSION = 3
# Resolved alerts are forgotten after this long; forgetting one only means a later OK for it is resent.
RETENTION_SECONDS = 90 * 24 * 3600
PRUNE_INTERVAL_SECONDS = 24 * 3600
BUSY_TIMEOUT_SECONDS = 30.0
CLAIM_POLL_SECONDS = 0.05
# How long a failure held by a running playbook stays held without being renewed. The run's delivery process
# renews it a few times per lease, and releases it at once when the run ends without saying so.
HOLD_LEASE_SECONDS = 120.0
# SQLite's primary result codes for a file that is not (or no longer) a database. Anything else (a full disk,
# an I/O error, a read-only file) leaves the file alone: moving it aside would forget every open Alarm.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    endpoint TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    status TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    payload TEXT NOT NULL,
    hosts TEXT NOT NULL DEFAULT '[]',
    updated REAL NOT NULL,
    PRIMARY KEY (endpoint, alert_id)
);
CREATE TABLE IF NOT EXISTS claims (
    endpoint TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    token TEXT NOT NULL,
    expires REAL NOT NULL,
    holder TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (endpoint, alert_id)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    status TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    payload TEXT NOT NULL,
    hosts TEXT NOT NULL DEFAULT '[]',
    queued REAL NOT NULL,
    hold_token TEXT,
    hold_owner TEXT,
    hold_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_by_endpoint ON outbox (endpoint, seq);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS silences (
    name TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts REAL NOT NULL,
    ends REAL NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS withheld (
    endpoint TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    silence TEXT NOT NULL,
    status TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    payload TEXT NOT NULL,
    hosts TEXT NOT NULL DEFAULT '[]',
    updated REAL NOT NULL,
    PRIMARY KEY (endpoint, alert_id)
);
CREATE TABLE IF NOT EXISTS streaks (
    endpoint TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    status TEXT NOT NULL,
    count INTEGER NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (endpoint, alert_id)
);
"""
# From schema 1: failures held by a running playbook (see Ledger.hold).
_MIGRATIONS = {
    1: (
        'ALTER TABLE outbox ADD COLUMN hold_token TEXT',
        'ALTER TABLE outbox ADD COLUMN hold_owner TEXT',
        'ALTER TABLE outbox ADD COLUMN hold_until REAL',
        "ALTER TABLE claims ADD COLUMN holder TEXT NOT NULL DEFAULT ''",
    ),
    # From schema 2: failed delivery attempts per outbox entry (silences, withheld Alarms and streaks are new tables).
    2: (
        'ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0',
    ),
}
# An outbox entry is deliverable unless a live run still holds it.
_DELIVERABLE = '(hold_until IS NULL OR hold_until <= ?)'


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


def default_ledger_path(environ: t.Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get(LEDGER_PATH_ENV) or DEFAULT_LEDGER_PATH


class Ledger:
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

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: t.Any) -> None:
        self.close()

    # -- the interface the plugins use -----------------------------------------------------------

    def lookup(self, endpoint: str, alert_id: str) -> Record | None:
        """The alert's current state: the newest deliverable outbox entry if one waits, else the last acknowledged.

        Failures a running playbook still holds (``hold``) are not yet part of the state.
        """
        return self._guard(self._lookup, endpoint, alert_id)

    @contextlib.contextmanager
    def claim(self, endpoint: str, alert_id: str, lease: float) -> t.Iterator[Claim]:
        """Hold the right to send ``alert_id`` for ``lease`` seconds, renewed by every write made under it.

        A process that finds the alert claimed waits for the claim to be released (or to expire, should
        its holder have died); ``lookup`` then shows what the holder recorded.
        """
        deadline = time.monotonic() + lease + BUSY_TIMEOUT_SECONDS
        while True:
            claim = self.try_claim(endpoint, alert_id, lease)
            if claim is not None:
                break
            if time.monotonic() > deadline:
                raise LedgerError(f'alert {alert_id} stayed claimed by another process for over {lease:g} s')
            time.sleep(CLAIM_POLL_SECONDS)
        try:
            yield claim
        finally:
            with contextlib.suppress(LedgerError):
                self.release(claim)

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

    def record(self, endpoint: str, alert: Alert, hosts: t.Iterable[str] = (), claim: Claim | None = None) -> None:
        """Remember that Temperstack acknowledged ``alert``. Call only after a 2xx, under the alert's claim.

        Raises ``LeaseLost`` if the claim has passed to another process, which then decides what is on record.
        """
        self._guard(self._record, endpoint, alert, tuple(hosts), claim)

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

    def _guard(self, operation: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
        """Run ``operation``, turning the backend's errors into a ``LedgerError`` that names the ledger."""
        raise NotImplementedError

    def _lookup(self, endpoint: str, alert_id: str) -> Record | None:
        raise NotImplementedError

    def _try_claim(self, claim: Claim) -> bool:
        raise NotImplementedError

    def _release(self, claim: Claim) -> None:
        raise NotImplementedError

    def _renew(self, claim: Claim) -> None:
        raise NotImplementedError

    def _record(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], claim: Claim | None) -> None:
        raise NotImplementedError

    def _queue(self, endpoint: str, alert: Alert, hosts: tuple[str, ...]) -> int:
        raise NotImplementedError

    def _hold(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], token: str, owner: str) -> None:
        raise NotImplementedError

    def _settle(self, endpoint: str, alert_id: str, token: str, alert: Alert | None, hosts: tuple[str, ...]) -> None:
        raise NotImplementedError

    def _renew_holds(self, token: str, lease: float) -> int:
        raise NotImplementedError

    def _release_holds(self, token: str) -> int:
        raise NotImplementedError

    def _release_stale_holds(self) -> int:
        raise NotImplementedError

    def _discard(self, queued: Queued, claim: Claim | None) -> None:
        raise NotImplementedError

    def _pending(self, endpoint: str, alert_id: str | None) -> list[Queued]:
        raise NotImplementedError

    def _delivered(self, endpoint: str, queued: Queued, claim: Claim | None) -> bool:
        raise NotImplementedError

    def _prune(self, retention: float, now: float) -> int:
        raise NotImplementedError

    def _prune_if_due(self) -> None:
        raise NotImplementedError

    def _export(self) -> list[tuple[str, int | None, Record]]:
        raise NotImplementedError

    def _adopt(self, endpoint: str, record: Record) -> bool:
        raise NotImplementedError

    def _forget(self, endpoint: str, alert_id: str, seq: int | None) -> None:
        raise NotImplementedError

    def _newest(self, endpoint: str, alert_id: str) -> float | None:
        raise NotImplementedError

    def _acknowledged(self, endpoint: str, alert_id: str) -> Record | None:
        raise NotImplementedError

    def _records(self, endpoint: str) -> list[Record]:
        raise NotImplementedError

    def _entries(self) -> list[Entry]:
        raise NotImplementedError

    def _attempted(self, seq: int) -> None:
        raise NotImplementedError

    def _put_silence(self, silence: Silence) -> bool:
        raise NotImplementedError

    def _remove_silence(self, name: str) -> bool:
        raise NotImplementedError

    def _silences(self) -> list[Silence]:
        raise NotImplementedError

    def _withhold(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], silence: str) -> None:
        raise NotImplementedError

    def _withheld(self, endpoint: str | None, alert_id: str | None) -> list[Withheld]:
        raise NotImplementedError

    def _forget_withheld(self, endpoint: str, alert_id: str) -> bool:
        raise NotImplementedError

    def _streak(self, endpoint: str, alert_id: str, status: str, count: bool) -> int:
        raise NotImplementedError


class SqliteLedger(Ledger):
    """One SQLite file shared by every fork and plugin on a controller.

    Every write is a short ``BEGIN IMMEDIATE`` transaction in WAL mode; no transaction is ever held
    across a network call. Everything sent for one alert is sent under its claim, a row with a lease:
    forks and processes that decide the same alert at once send it once, each alert's outbox entries have
    one sender at a time, and distinct alerts still go out in parallel.
    """

    def __init__(
        self,
        path: str | None = None,
        warn: t.Callable[[str], None] | None = None,
        read_only: bool = False,
    ) -> None:
        """Open (or create) the ledger at ``path``.

        With ``read_only`` (check mode) nothing on disk is created or changed: a missing ledger reads as empty,
        and an existing one is opened read-only, with no change to its mode, journal or schema.
        """
        super().__init__(warn)
        self.path = os.path.abspath(os.path.expanduser(path or default_ledger_path()))
        self.location = self.spec = self.path
        self._holds = True
        _check_file_name(self.path)
        if read_only:
            self._conn = self._open_read_only()
        else:
            self._conn = self._open()

    # -- opening ---------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if os.path.isdir(self.path):
            raise LedgerError(f'the ledger path {self.path} is a directory; set ledger_path to a file name')
        self._prepare_directory()
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if _is_busy(exc):
                raise LedgerError(f'the ledger {self.path} is locked by another process: {exc}') from None
            if not _is_corrupt(exc):
                raise LedgerError(f'the ledger {self.path} cannot be used: {exc}') from None
            aside = self._move_aside()
            self._warn(
                f'the ledger {self.path} could not be read ({exc}); it was moved to {aside} and a new, '
                'empty ledger was started, so alerts already sent may be sent once more'
            )
            try:
                return self._connect()
            except sqlite3.DatabaseError as again:
                raise LedgerError(f'cannot start a new ledger at {self.path}: {again}') from None

    def _open_read_only(self) -> sqlite3.Connection:
        if not os.path.exists(self.path):
            return _empty_ledger()
        if os.path.isdir(self.path):
            raise LedgerError(f'the ledger path {self.path} is a directory; set ledger_path to a file name')
        self._check_owner()
        try:
            conn = sqlite3.connect(
                f'file:{quote(self.path)}?mode=ro', uri=True, timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None, check_same_thread=False,
            )
            version = conn.execute('PRAGMA user_version').fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f'the ledger {self.path} cannot be read: {exc}') from None
        if version > SCHEMA_VERSION:
            conn.close()
            raise LedgerError(self._newer_schema_message(version))
        if version == 0:
            # An empty file: the first real run makes it a ledger.
            conn.close()
            return _empty_ledger()
        self._holds = version >= 2
        return conn

    def _prepare_directory(self) -> None:
        directory = os.path.dirname(self.path)
        missing = []
        parent = directory
        while not os.path.isdir(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        try:
            # Every directory made here is private, not only the last one: makedirs() would give the
            # parents the umask's mode, and a world-writable parent lets others swap the ledger's directory.
            for path in reversed(missing):
                try:
                    os.mkdir(path, 0o700)
                except FileExistsError:
                    if not os.path.isdir(path):
                        raise
                    continue  # made by another process at the same moment
                os.chmod(path, 0o700)  # mkdir() applied the umask
        except OSError as exc:
            raise LedgerError(f'cannot create the ledger directory {directory}: {exc.strerror or exc}') from None

    def _connect(self) -> sqlite3.Connection:
        self._create_private_file()
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        try:
            _use_wal(conn)
            conn.execute('PRAGMA synchronous=NORMAL')
            version = conn.execute('PRAGMA user_version').fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LedgerError(self._newer_schema_message(version))
            if version < SCHEMA_VERSION:
                _create_schema(conn)
            # Reads the table's first page, so an unreadable file is found here (and moved aside by _open).
            # Not count(*): that reads every page, milliseconds per open once the ledger holds 100,000 alerts.
            conn.execute('SELECT 1 FROM alerts LIMIT 1').fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    def _newer_schema_message(self, version: int) -> str:
        return (
            f'the ledger {self.path} was written by a newer temperstack.alerting '
            f'(schema {version}); upgrade the collection or set ledger_path to another file'
        )

    def _create_private_file(self) -> None:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            self._check_owner()
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
            if mode & 0o077:
                try:
                    os.chmod(self.path, 0o600)
                except OSError as exc:
                    raise LedgerError(
                        f'the ledger {self.path} can be read by others (mode {mode:04o}) and cannot be made private: '
                        f'{exc.strerror or exc}; run chmod 600 {self.path}'
                    ) from None
            return
        except OSError as exc:
            raise LedgerError(f'cannot create the ledger {self.path}: {exc.strerror or exc}') from None
        os.close(fd)

    def _check_owner(self) -> None:
        """Refuse a ledger file that another user owns, as ssh refuses such a key file.

        Whoever owns the file can rewrite what it says Temperstack holds, and read or replace the outbox.
        """
        try:
            owner = os.stat(self.path).st_uid
        except OSError as exc:
            raise LedgerError(f'cannot read the ledger {self.path}: {exc.strerror or exc}') from None
        me = os.geteuid()
        if owner != me:
            raise LedgerError(
                f'the ledger {self.path} belongs to another user (uid {owner}, you are uid {me}), who could change '
                f'what it holds; use a ledger of your own (set ledger_path), or, if the file is yours, '
                f'take it over with: chown {me} {self.path}'
            )

    def _move_aside(self) -> str:
        aside = f'{self.path}.corrupt-{time.strftime("%Y%m%dT%H%M%S")}-{os.getpid()}'
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            raise LedgerError(f'the ledger {self.path} is unreadable and cannot be moved aside: {exc}') from None
        for suffix in ('-wal', '-shm'):
            with contextlib.suppress(OSError):
                os.replace(self.path + suffix, aside + suffix)
        return aside

    def close(self) -> None:
        self._conn.close()

    # -- SQL -------------------------------------------------------------------------------------

    def _guard(self, operation: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
        try:
            return operation(*args)
        except sqlite3.Error as exc:
            raise LedgerError(f'the ledger {self.path} failed: {exc}') from None

    def _deliverable(self) -> tuple[str, tuple[float, ...]]:
        # A read-only view of a schema-1 ledger has no holds.
        return (f' AND {_DELIVERABLE}', (time.time(),)) if self._holds else ('', ())

    def _lookup(self, endpoint: str, alert_id: str) -> Record | None:
        deliverable, now = self._deliverable()
        row = self._conn.execute(
            'SELECT status, fingerprint, payload, queued, hosts FROM outbox WHERE endpoint = ? AND alert_id = ?'
            f'{deliverable} ORDER BY seq DESC LIMIT 1',
            (endpoint, alert_id, *now),
        ).fetchone()
        if row is not None:
            return Record(alert_id, row[0], row[1], json.loads(row[2]), row[3], True, tuple(json.loads(row[4])))
        row = self._conn.execute(
            'SELECT status, fingerprint, payload, updated, hosts FROM alerts WHERE endpoint = ? AND alert_id = ?',
            (endpoint, alert_id),
        ).fetchone()
        if row is None:
            return None
        return Record(alert_id, row[0], row[1], json.loads(row[2]), row[3], False, tuple(json.loads(row[4])))

    def _try_claim(self, claim: Claim) -> bool:
        now = time.time()
        with _immediate(self._conn):
            row = self._conn.execute(
                'SELECT expires, holder FROM claims WHERE endpoint = ? AND alert_id = ?', (claim.endpoint, claim.alert_id)
            ).fetchone()
            # A holder on this controller that no longer exists (killed mid-send) need not be waited for.
            if row is not None and row[0] > now and not _is_gone(row[1]):
                return False
            self._conn.execute(
                'INSERT OR REPLACE INTO claims (endpoint, alert_id, token, expires, holder) VALUES (?, ?, ?, ?, ?)',
                (claim.endpoint, claim.alert_id, claim.token, now + claim.lease, this_process()),
            )
        return True

    def _release(self, claim: Claim) -> None:
        with _immediate(self._conn):
            self._conn.execute(
                'DELETE FROM claims WHERE endpoint = ? AND alert_id = ? AND token = ?',
                (claim.endpoint, claim.alert_id, claim.token),
            )

    def _renew(self, claim: Claim) -> None:
        with _immediate(self._conn):
            self._fence(claim)

    def _fence(self, claim: Claim | None) -> None:
        """Inside a write transaction: go on only if ``claim`` is still the alert's claim, and renew it."""
        if claim is None:
            return
        cursor = self._conn.execute(
            'UPDATE claims SET expires = ? WHERE endpoint = ? AND alert_id = ? AND token = ?',
            (time.time() + claim.lease, claim.endpoint, claim.alert_id, claim.token),
        )
        if cursor.rowcount != 1:
            raise LeaseLost(
                f'the claim on alert {claim.alert_id} expired and passed to another sender; this one stops'
            )

    def _record(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], claim: Claim | None) -> None:
        with _immediate(self._conn):
            self._fence(claim)
            self._upsert(endpoint, alert, hosts)
            self._sent_at_last(endpoint, alert.alert_id)

    def _upsert(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], updated: float | None = None) -> None:
        self._conn.execute(
            'INSERT OR REPLACE INTO alerts (endpoint, alert_id, status, fingerprint, payload, hosts, updated) '
            'VALUES (?, ?, ?, ?, ?, ?, ?)',
            (endpoint, alert.alert_id, alert.status, alert.fingerprint, _dumps(alert.payload), _dumps(hosts),
             time.time() if updated is None else updated),
        )

    def _sent_at_last(self, endpoint: str, alert_id: str) -> None:
        # What Temperstack now holds is the alert's last stated status: an Alarm a silence withheld is history.
        self._conn.execute('DELETE FROM withheld WHERE endpoint = ? AND alert_id = ?', (endpoint, alert_id))

    def _insert_entry(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], hold: tuple[t.Any, ...] = (None,) * 3) -> int:
        cursor = self._conn.execute(
            'INSERT INTO outbox (endpoint, alert_id, status, fingerprint, payload, hosts, queued, '
            'hold_token, hold_owner, hold_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
            (endpoint, alert.alert_id, alert.status, alert.fingerprint, _dumps(alert.payload), _dumps(hosts),
             time.time(), *hold),
        )
        return int(cursor.lastrowid or 0)

    def _queue(self, endpoint: str, alert: Alert, hosts: tuple[str, ...]) -> int:
        with _immediate(self._conn):
            return self._insert_entry(endpoint, alert, hosts)

    def _hold(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], token: str, owner: str) -> None:
        with _immediate(self._conn):
            self._drop_held(endpoint, alert.alert_id, token)
            self._insert_entry(endpoint, alert, hosts, (token, owner, time.time() + HOLD_LEASE_SECONDS))

    def _settle(self, endpoint: str, alert_id: str, token: str, alert: Alert | None, hosts: tuple[str, ...]) -> None:
        with _immediate(self._conn):
            self._drop_held(endpoint, alert_id, token)
            if alert is not None:
                self._insert_entry(endpoint, alert, hosts)

    def _drop_held(self, endpoint: str, alert_id: str, token: str) -> None:
        self._conn.execute(
            'DELETE FROM outbox WHERE endpoint = ? AND alert_id = ? AND hold_token = ?', (endpoint, alert_id, token)
        )

    def _renew_holds(self, token: str, lease: float) -> int:
        with _immediate(self._conn):
            return self._conn.execute(
                'UPDATE outbox SET hold_until = ? WHERE hold_token = ?', (time.time() + lease, token)
            ).rowcount

    def _release_holds(self, token: str) -> int:
        with _immediate(self._conn):
            return self._conn.execute(
                'UPDATE outbox SET hold_token = NULL, hold_owner = NULL, hold_until = NULL WHERE hold_token = ?', (token,)
            ).rowcount

    def _release_stale_holds(self) -> int:
        owners = self._conn.execute(
            'SELECT DISTINCT hold_token, hold_owner FROM outbox WHERE hold_token IS NOT NULL AND hold_until > ?',
            (time.time(),),
        ).fetchall()
        return sum(self._release_holds(token) for token, owner in owners if _is_gone(owner))

    def _pending(self, endpoint: str, alert_id: str | None) -> list[Queued]:
        deliverable, now = self._deliverable()
        if alert_id is None:
            where, args = 'endpoint = ?', (endpoint,)
        else:
            where, args = 'endpoint = ? AND alert_id = ?', (endpoint, alert_id)
        rows = self._conn.execute(
            f'SELECT seq, payload, hosts FROM outbox WHERE {where}{deliverable} ORDER BY seq', (*args, *now)
        ).fetchall()
        return [Queued(seq, Alert(json.loads(payload)), tuple(json.loads(hosts))) for seq, payload, hosts in rows]

    def _discard(self, queued: Queued, claim: Claim | None) -> None:
        with _immediate(self._conn):
            self._fence(claim)
            self._conn.execute('DELETE FROM outbox WHERE seq = ?', (queued.seq,))

    def _delivered(self, endpoint: str, queued: Queued, claim: Claim | None) -> bool:
        with _immediate(self._conn):
            self._fence(claim)
            if self._conn.execute('DELETE FROM outbox WHERE seq = ?', (queued.seq,)).rowcount != 1:
                return False
            self._upsert(endpoint, queued.alert, queued.hosts)
            self._sent_at_last(endpoint, queued.alert.alert_id)
            return True

    def _prune(self, retention: float, now: float) -> int:
        with _immediate(self._conn):
            cursor = self._conn.execute(
                "DELETE FROM alerts WHERE status = 'OK' AND updated < ?", (now - retention,)
            )
            # A live claim is never pruned, whatever ``now`` a caller passes: its holder may be sending right now.
            self._conn.execute('DELETE FROM claims WHERE expires < ?', (time.time(),))
            self._conn.execute('DELETE FROM silences WHERE ends < ?', (now,))
            self._conn.execute('DELETE FROM streaks WHERE updated < ?', (now - retention,))
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('last_prune', ?)", (repr(now),)
            )
            return cursor.rowcount

    def _prune_if_due(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE name = 'last_prune'").fetchone()
        if row is None or float(row[0]) < time.time() - PRUNE_INTERVAL_SECONDS:
            self._prune(RETENTION_SECONDS, time.time())

    def _export(self) -> list[tuple[str, int | None, Record]]:
        deliverable, now = self._deliverable()
        records = self._conn.execute(
            'SELECT endpoint, NULL, alert_id, status, fingerprint, payload, updated, 0, hosts FROM alerts ORDER BY updated'
        ).fetchall()
        entries = self._conn.execute(
            'SELECT endpoint, seq, alert_id, status, fingerprint, payload, queued, 1, hosts FROM outbox '
            f'WHERE 1 = 1{deliverable} ORDER BY seq',
            now,
        ).fetchall()
        return [_exported(row) for row in records + entries]

    def _adopt(self, endpoint: str, record: Record) -> bool:
        with _immediate(self._conn):
            newest = self._newest(endpoint, record.alert_id)
            if newest is not None and newest >= record.updated:
                return False
            alert = Alert(record.payload)
            if record.pending:
                self._conn.execute(
                    'INSERT INTO outbox (endpoint, alert_id, status, fingerprint, payload, hosts, queued) '
                    'VALUES (?, ?, ?, ?, ?, ?, ?)',
                    (endpoint, alert.alert_id, alert.status, alert.fingerprint, _dumps(alert.payload),
                     _dumps(record.hosts), record.updated),
                )
            else:
                self._upsert(endpoint, alert, record.hosts, record.updated)
            return True

    def _acknowledged(self, endpoint: str, alert_id: str) -> Record | None:
        row = self._conn.execute(
            'SELECT status, fingerprint, payload, updated, hosts FROM alerts WHERE endpoint = ? AND alert_id = ?',
            (endpoint, alert_id),
        ).fetchone()
        return None if row is None else Record(alert_id, row[0], row[1], json.loads(row[2]), row[3], False, tuple(json.loads(row[4])))

    def _newest(self, endpoint: str, alert_id: str) -> float | None:
        return self._conn.execute(
            'SELECT max(updated) FROM (SELECT updated FROM alerts WHERE endpoint = ? AND alert_id = ? '
            'UNION ALL SELECT queued FROM outbox WHERE endpoint = ? AND alert_id = ?)',
            (endpoint, alert_id, endpoint, alert_id),
        ).fetchone()[0]

    def _forget(self, endpoint: str, alert_id: str, seq: int | None) -> None:
        with _immediate(self._conn):
            if seq is None:
                self._conn.execute('DELETE FROM alerts WHERE endpoint = ? AND alert_id = ?', (endpoint, alert_id))
            else:
                self._conn.execute('DELETE FROM outbox WHERE seq = ?', (seq,))

    # -- day-2: what is open, silences, withheld Alarms, streaks ---------------------------------------------------

    def _records(self, endpoint: str) -> list[Record]:
        rows = self._conn.execute(
            'SELECT alert_id, status, fingerprint, payload, updated, hosts FROM alerts WHERE endpoint = ? ORDER BY alert_id',
            (endpoint,),
        ).fetchall()
        return [Record(row[0], row[1], row[2], json.loads(row[3]), row[4], False, tuple(json.loads(row[5]))) for row in rows]

    def _entries(self) -> list[Entry]:
        attempts = 'attempts' if self._holds else '0'
        held = f'hold_until IS NOT NULL AND hold_until > {time.time()!r}' if self._holds else '0'
        rows = self._conn.execute(
            f'SELECT endpoint, seq, payload, hosts, queued, {attempts}, {held} FROM outbox ORDER BY seq'
        ).fetchall()
        return [_entry(row) for row in rows]

    def _attempted(self, seq: int) -> None:
        with _immediate(self._conn):
            self._conn.execute('UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?', (seq,))

    def _put_silence(self, silence: Silence) -> bool:
        with _immediate(self._conn):
            self._conn.execute('DELETE FROM silences WHERE ends < ?', (time.time(),))
            row = self._conn.execute(
                'SELECT matchers, starts, ends, comment FROM silences WHERE name = ?', (silence.name,)
            ).fetchone()
            if row is not None and tuple(row) == _silence_row(silence)[1:5]:
                return False
            self._conn.execute(
                'INSERT OR REPLACE INTO silences (name, matchers, starts, ends, comment, created) VALUES (?, ?, ?, ?, ?, ?)',
                _silence_row(silence),
            )
            return True

    def _remove_silence(self, name: str) -> bool:
        with _immediate(self._conn):
            self._conn.execute('DELETE FROM silences WHERE ends < ? AND name <> ?', (time.time(), name))
            return self._conn.execute('DELETE FROM silences WHERE name = ?', (name,)).rowcount == 1

    def _silences(self) -> list[Silence]:
        if not self._has_table('silences'):
            return []
        rows = self._conn.execute(
            'SELECT name, matchers, starts, ends, comment, created FROM silences ORDER BY name'
        ).fetchall()
        return [_silence(row) for row in rows]

    def _withhold(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], silence: str) -> None:
        with _immediate(self._conn):
            self._conn.execute(
                'INSERT OR REPLACE INTO withheld (endpoint, alert_id, silence, status, fingerprint, payload, hosts, updated) '
                'VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                (endpoint, alert.alert_id, silence, alert.status, alert.fingerprint, _dumps(alert.payload),
                 _dumps(hosts), time.time()),
            )

    def _withheld(self, endpoint: str | None, alert_id: str | None) -> list[Withheld]:
        if not self._has_table('withheld'):
            return []
        where, args = ('1 = 1', ()) if endpoint is None else ('endpoint = ?', (endpoint,))
        if alert_id is not None:
            where, args = where + ' AND alert_id = ?', (*args, alert_id)
        rows = self._conn.execute(
            f'SELECT silence, alert_id, status, fingerprint, payload, updated, hosts FROM withheld WHERE {where} '
            'ORDER BY alert_id',
            args,
        ).fetchall()
        return [_withheld(row) for row in rows]

    def _forget_withheld(self, endpoint: str, alert_id: str) -> bool:
        with _immediate(self._conn):
            return self._conn.execute(
                'DELETE FROM withheld WHERE endpoint = ? AND alert_id = ?', (endpoint, alert_id)
            ).rowcount == 1

    def _streak(self, endpoint: str, alert_id: str, status: str, count: bool) -> int:
        if not count:
            if not self._has_table('streaks'):
                return 1
            row = self._conn.execute(
                'SELECT status, count FROM streaks WHERE endpoint = ? AND alert_id = ?', (endpoint, alert_id)
            ).fetchone()
            return row[1] + 1 if row is not None and row[0] == status else 1
        with _immediate(self._conn):
            row = self._conn.execute(
                'SELECT status, count FROM streaks WHERE endpoint = ? AND alert_id = ?', (endpoint, alert_id)
            ).fetchone()
            in_a_row = row[1] + 1 if row is not None and row[0] == status else 1
            self._conn.execute(
                'INSERT OR REPLACE INTO streaks (endpoint, alert_id, status, count, updated) VALUES (?, ?, ?, ?, ?)',
                (endpoint, alert_id, status, in_a_row, time.time()),
            )
            return in_a_row

    def _has_table(self, name: str) -> bool:
        # A read-only view of an older ledger lacks the newer tables: they read as empty.
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def is_url(spec: str | None) -> bool:
    """Whether a ledger spec names a PostgreSQL server (a libpq URI) rather than a file."""
    return bool(spec) and spec.split('://', 1)[0].lower() in ('postgresql', 'postgres') and '://' in spec


def mask_url(spec: str) -> str:
    """A ledger spec fit for any message: a URL's password (in its user part or a password parameter) masked."""
    if not is_url(spec):
        return spec
    scheme, rest = spec.split('://', 1)
    authority, sep, tail = rest.partition('/')
    userinfo, at, hosts = authority.rpartition('@')
    if at and ':' in userinfo:
        userinfo = userinfo.split(':', 1)[0] + ':' + MASK
    tail = re.sub(r'(?i)((?:^|[?&])password=)[^&#]*', lambda match: match.group(1) + MASK, tail)
    return f'{scheme}://{userinfo}{at}{hosts}{sep}{tail}'


def open_ledger(spec: str | None = None, warn: t.Callable[[str], None] | None = None, read_only: bool = False) -> Ledger:
    """The ledger that ``spec`` names: a ``postgresql://`` URL, or a file path (None: the default file).

    Raises ``LedgerUnreachable`` for a server that cannot be reached, ``LedgerError`` for anything else.
    """
    if is_url(spec):
        # Imported here: psycopg is needed only by those who set ledger_url.
        from ._ledger_postgres import PostgresLedger  # pylint: disable=import-outside-toplevel
        return PostgresLedger(t.cast(str, spec), warn=warn, read_only=read_only)
    return SqliteLedger(spec, warn=warn, read_only=read_only)


def check_ledger_url(url: str | None) -> str | None:
    """``ledger_url`` as given, if it is a PostgreSQL connection URI; a LedgerError naming the option if not."""
    if url is None:
        return None
    if not is_url(url):
        shown = mask_url(url) if '://' in url and '@' not in url else 'the value given'
        raise LedgerError(
            f'ledger_url must be a PostgreSQL connection URI, postgresql://user@host[:port]/dbname[?sslmode=...] '
            f'(an empty value is not "unset"); got {shown}. Leave it unset to use the local ledger file (ledger_path)'
        )
    return url


def ledger_spec(url: str | None, path: str | None) -> str:
    """The ledger a task or run uses: ``ledger_url`` wins over ``ledger_path``, which defaults to the local file."""
    if url:
        return url
    return os.path.abspath(os.path.expanduser(path or default_ledger_path()))


def fallback_path(path: str | None) -> str:
    """The local file that keeps what could not be written to a shared ledger, next to ``ledger_path``'s file.

    A file of its own, so that entering or leaving fleet mode never mixes it with a controller's own ledger:
    everything in it is moved into the shared ledger by the next run on this machine that reaches the server.
    """
    root, ext = os.path.splitext(os.path.abspath(os.path.expanduser(path or default_ledger_path())))
    return f'{root}.fallback{ext or ".sqlite3"}'


# What this process last found in each fallback file when it emptied it: see absorb_fallback().
_ABSORBED: dict[tuple[int, str], tuple[int, ...]] = {}


def absorb_fallback(ledger: Ledger, fallback: str) -> tuple[int, int]:
    """Move into the shared ``ledger`` what this controller kept in ``fallback`` while the server was unreachable.

    Records and outbox entries go in unless the shared ledger knows something newer of the same alert
    (``adopt``), and leave the local file either way. A file unchanged since this process last emptied it is not
    opened again, so a loop pays for this once. Returns how many records and entries were taken in.
    """
    key = (os.getpid(), fallback)
    state = _file_state(fallback)
    if state is None or _ABSORBED.get(key) == state:
        return 0, 0
    with SqliteLedger(fallback) as local:
        moved = copy_ledger(local, ledger, move=True)
    _ABSORBED[key] = _file_state(fallback) or ()
    return moved.records, moved.entries


def _file_state(path: str) -> tuple[int, ...] | None:
    # A write may still sit in the write-ahead log, which changes without the main file.
    try:
        main = os.stat(path)
    except OSError:
        return None
    try:
        wal = os.stat(path + '-wal')
        return main.st_ino, main.st_mtime_ns, main.st_size, wal.st_mtime_ns, wal.st_size
    except OSError:
        return main.st_ino, main.st_mtime_ns, main.st_size


# A server found unreachable is not tried again by this process for this long: a loop of 100 items against a server
# that does not answer would otherwise wait for the connect timeout 100 times.
UNREACHABLE_RETRY_SECONDS = 30.0
_UNREACHABLE: dict[tuple[int, str], tuple[float, str]] = {}


def note_unreachable(spec: str, exc: LedgerError) -> None:
    """Remember, for this process, that the server of ``spec`` could not be reached (see shared_ledger)."""
    _UNREACHABLE[(os.getpid(), spec)] = (time.monotonic(), str(exc))


# Ledgers kept open for the rest of the process, by (process id, spec): see shared_ledger().
_SHARED: dict[tuple[int, str], tuple[Ledger, tuple[int, int] | None]] = {}


def shared_ledger(spec: str | None = None, warn: t.Callable[[str], None] | None = None) -> Ledger:
    """The ledger ``spec`` names, opened once in this process and kept open for every later caller in it.

    Ansible runs all the items of a loop in one worker process, each with a new action plugin. A SQLite ledger
    opened and closed per item pays, whenever no other process has it open, for SQLite's checkpoint on the last
    close (an fsync) and for creating the write-ahead log again on the next write: about 1 ms per item, a third
    of what Ansible spends on its cheapest task. A PostgreSQL ledger would pay a connection (and its password
    exchange) per item. Kept open, each is paid once per process. A process that exits without closing it
    (Ansible's workers end with os._exit) leaves the write-ahead log to the next one, as SQLite is designed to.

    Never shared across processes: a forked child opens its own (connections must not cross a fork).
    A ledger file deleted or replaced since it was opened is opened again. Call ``discard_shared`` after a
    ``LedgerError``, so that the next caller starts afresh.
    """
    resolved = ledger_spec(spec if is_url(spec) else None, None if is_url(spec) else spec)
    key = (os.getpid(), resolved)
    entry = _SHARED.get(key)
    if entry is not None:
        if is_url(resolved) or _file_id(resolved) == entry[1]:
            return entry[0]
        discard_shared(entry[0])
    failed = _UNREACHABLE.get(key)
    if failed is not None and time.monotonic() - failed[0] < UNREACHABLE_RETRY_SECONDS:
        raise LedgerUnreachable(failed[1])
    try:
        ledger = open_ledger(resolved, warn=warn)
    except LedgerUnreachable as exc:
        note_unreachable(resolved, exc)
        raise
    file_id = None if is_url(resolved) else _file_id(resolved)
    if is_url(resolved) or file_id is not None:
        _SHARED[key] = (ledger, file_id)
    return ledger


def discard_shared(ledger: Ledger) -> None:
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


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> t.Iterator[None]:
    conn.execute('BEGIN IMMEDIATE')
    try:
        yield
    except BaseException:
        conn.execute('ROLLBACK')
        raise
    conn.execute('COMMIT')


def _use_wal(conn: sqlite3.Connection) -> None:
    # When several processes open a ledger that does not exist yet, all of them try to switch the new file to
    # WAL, and SQLite reports the losers as busy at once instead of waiting for the busy timeout. Once one has
    # switched it, the others find it done.
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            conn.execute('PRAGMA journal_mode=WAL')
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(CLAIM_POLL_SECONDS)


def _create_schema(conn: sqlite3.Connection) -> None:
    # executescript() would commit any open transaction first, so statements go one by one.
    with _immediate(conn):
        version = conn.execute('PRAGMA user_version').fetchone()[0]
        if version >= SCHEMA_VERSION:
            return  # another process created or upgraded it while this one waited for the lock
        # A new ledger (version 0) gets the whole schema below; an older one first gets what it lacks.
        for old in range(version, SCHEMA_VERSION) if version else ():
            for statement in _MIGRATIONS.get(old, ()):
                conn.execute(statement)
        for statement in filter(None, (part.strip() for part in _SCHEMA.split(';'))):
            conn.execute(statement)
        conn.execute(f'PRAGMA user_version={SCHEMA_VERSION}')


def _empty_ledger() -> sqlite3.Connection:
    """An empty ledger in memory: what check mode reads when there is no ledger on disk yet."""
    conn = sqlite3.connect(':memory:', isolation_level=None, check_same_thread=False)
    _create_schema(conn)
    # Read-only like a ledger opened from disk in check mode: a write is an error, not a change nobody sees.
    conn.execute('PRAGMA query_only=ON')
    return conn


def _check_file_name(path: str) -> None:
    """A path the operating system cannot take (a NUL, an unencodable character) is a LedgerError, not a crash."""
    try:
        if '\0' in path:
            raise ValueError('it contains a NUL character')
        os.fsencode(path)
    except (UnicodeError, ValueError) as exc:
        raise LedgerError(f'the ledger path {path!r} is not a valid file name ({exc}); set ledger_path to another file') from None


def _exported(row: t.Sequence[t.Any]) -> tuple[str, int | None, Record]:
    endpoint, seq, alert_id, status, fingerprint, payload, updated, pending, hosts = row
    return endpoint, seq, Record(alert_id, status, fingerprint, json.loads(payload), updated, bool(pending), tuple(json.loads(hosts)))


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


def _entry(row: t.Sequence[t.Any]) -> Entry:
    endpoint, seq, payload, hosts, queued, attempts, held = row
    return Entry(endpoint, seq, Alert(json.loads(payload)), tuple(json.loads(hosts)), queued, int(attempts), bool(held))


def _silence_row(silence: Silence) -> tuple[t.Any, ...]:
    matchers = {'alert_id': list(silence.alert_ids), 'resource_id': list(silence.resource_ids), 'hosts': list(silence.hosts)}
    return (silence.name, _dumps(matchers), silence.starts, silence.ends, silence.comment, silence.created or time.time())


def _silence(row: t.Sequence[t.Any]) -> Silence:
    name, matchers, starts, ends, comment, created = row
    found = json.loads(matchers)
    return Silence(
        name, tuple(found.get('alert_id', ())), tuple(found.get('resource_id', ())), tuple(found.get('hosts', ())),
        starts, ends, comment, created,
    )


def _withheld(row: t.Sequence[t.Any]) -> Withheld:
    silence, alert_id, status, fingerprint, payload, updated, hosts = row
    return Withheld(silence, Record(alert_id, status, fingerprint, json.loads(payload), updated, False, tuple(json.loads(hosts))))


def _dumps(value: t.Any) -> str:
    # ASCII with \u escapes: a host name with undecodable bytes (a lone surrogate) is stored and read back as it
    # is, where SQLite would refuse it as text (UnicodeEncodeError).
    return json.dumps(value, sort_keys=True)


def this_process() -> str:
    """Who holds a claim or a failure: this controller and process, so others on it can tell a dead holder."""
    return f'{socket.gethostname()}:{os.getpid()}'


def _is_gone(holder: str) -> bool:
    host, _sep, pid = (holder or '').rpartition(':')
    return host == socket.gethostname() and pid.isdigit() and not _process_runs(int(pid))


def _process_runs(pid: int) -> bool:
    """Whether process ``pid`` still runs. A zombie does not: killed, it holds nothing, whoever reaps it and when."""
    if os.path.isdir('/proc/self'):
        try:
            with open(f'/proc/{pid}/stat', encoding='utf-8') as stat_file:
                return stat_file.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
        except FileNotFoundError:
            return False
        except (OSError, IndexError):
            pass  # unreadable: ask the kernel instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # it exists, as another user's process
    return True


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, 'sqlite_errorcode', None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc).lower()
    return 'not a database' in text or 'malformed' in text


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return 'locked' in text or 'busy' in text
