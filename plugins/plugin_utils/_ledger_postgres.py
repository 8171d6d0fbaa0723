# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""The ledger a fleet shares: the same contract as the SQLite ledger, kept in PostgreSQL.

Only ``_ledger_open`` imports this module, and only for a ``postgresql://`` spec, so psycopg is needed by
those who set ``ledger_url`` and by no one else.

Times that decide who may send (claim leases, held failures) are the server's clock, never a controller's:
controllers of one fleet need not agree on the time for those. When a record or an entry was written is the
writer's own clock, as in the SQLite ledger, so that what a controller kept in its fallback file while the server
was unreachable compares with what it wrote here before on one clock (``adopt``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import typing as t
import weakref

from ._alert import Alert
from ._holder import is_gone, this_process
from ._ledger import (
    doubted,
    HOLD_LEASE_SECONDS,
    PRUNE_INTERVAL_SECONDS,
    RETENTION_SECONDS,
    Claim,
    Entry,
    Ledger,
    LedgerError,
    LedgerUnreachable,
    LeaseLost,
    Queued,
    Record,
    Silence,
    Withheld,
)
from ._ledger_rows import (
    dumps,
    entry_from_row,
    exported_from_row,
    record_from_row,
    silence_from_row,
    silence_to_row,
    withheld_from_row,
)
from ._ledger_spec import mask_passwords, mask_url

try:
    import psycopg
    from psycopg import conninfo as _conninfo
except ImportError as _import_error:  # pragma: no cover - depends on the controller
    psycopg = None  # pylint: disable=invalid-name
    PSYCOPG_IMPORT_ERROR: ImportError | None = _import_error
else:
    PSYCOPG_IMPORT_ERROR = None

SCHEMA = 'temperstack'
SCHEMA_VERSION = 1
# Bounded waits: a controller never hangs on the ledger for longer than these, whatever the server does.
CONNECT_TIMEOUT_SECONDS = 5
MAX_CONNECT_TIMEOUT_SECONDS = 30
STATEMENT_TIMEOUT_MS = 10_000
LOCK_TIMEOUT_MS = 5_000
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000
CLIENT_DEADLINE_SECONDS = STATEMENT_TIMEOUT_MS / 1000 + 5
WATCHDOG_POLL_SECONDS = 0.5
# Any fixed number: the key of the advisory lock under which the schema is created or upgraded.
_SCHEMA_LOCK = 0x7E3B5A11
_NOW = 'extract(epoch from clock_timestamp())'
_DELIVERABLE = f'(hold_until IS NULL OR hold_until <= {_NOW})'

# The whole schema, as a DBA can run it ahead of time (docs/fleet.md): then job credentials need no DDL rights.
SCHEMA_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.meta (
    name text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.alerts (
    endpoint text NOT NULL,
    alert_id text NOT NULL,
    status text NOT NULL,
    fingerprint text NOT NULL,
    payload text NOT NULL,
    hosts text NOT NULL DEFAULT '[]',
    updated double precision NOT NULL,
    PRIMARY KEY (endpoint, alert_id)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.claims (
    endpoint text NOT NULL,
    alert_id text NOT NULL,
    token text NOT NULL,
    expires double precision NOT NULL,
    holder text NOT NULL DEFAULT '',
    PRIMARY KEY (endpoint, alert_id)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.outbox (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint text NOT NULL,
    alert_id text NOT NULL,
    status text NOT NULL,
    fingerprint text NOT NULL,
    payload text NOT NULL,
    hosts text NOT NULL DEFAULT '[]',
    queued double precision NOT NULL,
    hold_token text,
    hold_owner text,
    hold_until double precision,
    attempts integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_by_alert ON {SCHEMA}.outbox (endpoint, alert_id, seq);
CREATE INDEX IF NOT EXISTS outbox_by_hold ON {SCHEMA}.outbox (hold_token) WHERE hold_token IS NOT NULL;
CREATE TABLE IF NOT EXISTS {SCHEMA}.silences (
    name text PRIMARY KEY,
    matchers text NOT NULL,
    starts double precision NOT NULL,
    ends double precision NOT NULL,
    comment text NOT NULL DEFAULT '',
    created double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.withheld (
    endpoint text NOT NULL,
    alert_id text NOT NULL,
    silence text NOT NULL,
    status text NOT NULL,
    fingerprint text NOT NULL,
    payload text NOT NULL,
    hosts text NOT NULL DEFAULT '[]',
    updated double precision NOT NULL,
    PRIMARY KEY (endpoint, alert_id)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.streaks (
    endpoint text NOT NULL,
    alert_id text NOT NULL,
    status text NOT NULL,
    count integer NOT NULL,
    updated double precision NOT NULL,
    PRIMARY KEY (endpoint, alert_id)
);
INSERT INTO {SCHEMA}.meta (name, value) VALUES ('schema_version', '{SCHEMA_VERSION}') ON CONFLICT (name) DO NOTHING;
"""

INSTALL_HINT = (
    "ledger_url needs the Python package psycopg (version 3) on the controller, or in the execution environment: "
    "pip install 'psycopg[binary]' (or psycopg, with the system's libpq)"
)


def _bounded_connect_timeout(given: str) -> int:
    """libpq's connect_timeout as the URL sets it, kept within 1..30 s: 0 would wait for as long as TCP does."""
    try:
        seconds = int(float(given))
    except ValueError:
        return CONNECT_TIMEOUT_SECONDS
    return min(max(seconds, 1), MAX_CONNECT_TIMEOUT_SECONDS) if seconds > 0 else CONNECT_TIMEOUT_SECONDS


class _Watchdog:
    """Cuts a connection whose request has had no answer for CLIENT_DEADLINE_SECONDS.

    The server enforces statement_timeout and lock_timeout itself, so only a server that stopped answering altogether
    (frozen, or a network that drops everything while TCP keepalives are still acknowledged) can hold a request past
    them; this is the bound on the client's side. One thread per open ledger, asleep unless a request is under way,
    and ended by ``stop`` when its ledger is closed (or dropped: see ``_Connection``).
    """

    def __init__(self) -> None:
        self._deadline: float | None = None
        self._conn: t.Any = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.fired = False

    @contextlib.contextmanager
    def watching(self, conn: t.Any) -> t.Iterator[None]:
        self.fired = False
        self._conn = conn
        self._deadline = time.monotonic() + CLIENT_DEADLINE_SECONDS
        if self._thread is None and not self._stopped.is_set():
            self._thread = threading.Thread(target=self._run, name='temperstack-ledger-watchdog', daemon=True)
            self._thread.start()
        try:
            yield
        finally:
            self._deadline = None
            self._conn = None

    def stop(self) -> None:
        self._stopped.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(WATCHDOG_POLL_SECONDS * 2)

    def _run(self) -> None:
        while not self._stopped.wait(WATCHDOG_POLL_SECONDS):
            deadline, conn = self._deadline, self._conn
            if deadline is not None and conn is not None and time.monotonic() > deadline:
                self._deadline = None
                self.fired = True
                _cut(conn)


class _Connection:
    """What a PostgresLedger holds open: its connection and its watchdog, closed together exactly once.

    Kept apart from the ledger so that a ledger dropped without ``close()`` is still collected, and its
    finalizer closes these (nothing here refers back to the ledger).
    """

    def __init__(self) -> None:
        self.conn: t.Any = None
        self.watchdog = _Watchdog()

    def close(self) -> None:
        self.watchdog.stop()
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()


def _cut(conn: t.Any) -> None:
    """Shut the connection's socket down under libpq's feet: the request it waits on fails at once."""
    with contextlib.suppress(Exception):
        sock = socket.fromfd(conn.pgconn.socket, socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


class PostgresLedger(Ledger):
    """The ledger in a PostgreSQL database, in a schema of its own (``temperstack``).

    One connection per process, in autocommit mode: every write is one short transaction, and no transaction
    is held across a call to Temperstack. Each alert's outbox entries are written under a transaction-scoped
    advisory lock on that alert, so that their sequence numbers (which PostgreSQL hands out at insert, not at
    commit) are in the order their transactions commit, and a sender never sees a later entry before an earlier
    one of the same alert. A connection the server dropped (a restart) is opened again, once, transparently.
    """

    def __init__(
        self, url: str, warn: t.Callable[[str], None] | None = None, read_only: bool = False,
        connect_timeout: int | None = None,
    ) -> None:
        """Connect to the ledger at ``url``; ``connect_timeout`` (seconds) caps the URL's own, for a quick retry."""
        super().__init__(warn)
        self._connect_cap = connect_timeout
        self.spec = url
        self.location = mask_url(url)
        self._read_only = read_only
        # A missing schema read in check mode: the ledger is empty, and nothing is created.
        self._absent = False
        if psycopg is None:
            raise LedgerError(INSTALL_HINT)
        self._conninfo = self._make_conninfo(url)
        self._link = _Connection()
        self._closer = weakref.finalize(self, self._link.close)
        self._link.conn = self._connect()

    # -- connecting --------------------------------------------------------------------------------

    def _make_conninfo(self, url: str) -> str:
        try:
            given = _conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise LedgerError(
                f'ledger_url {self.location} is not a valid PostgreSQL connection URI: {self._describe(exc)}'
            ) from None
        settings = {
            'connect_timeout': str(CONNECT_TIMEOUT_SECONDS),
            'application_name': 'temperstack.alerting',
            # A server that vanished without closing the connection is noticed in seconds, not hours.
            'keepalives': '1',
            'keepalives_idle': '10',
            'keepalives_interval': '5',
            'keepalives_count': '3',
            # ... and one that stops acknowledging what is sent to it, in 10 s.
            'tcp_user_timeout': '10000',
        }
        settings.update({name: str(value) for name, value in given.items() if value is not None})
        seconds = _bounded_connect_timeout(settings['connect_timeout'])
        settings['connect_timeout'] = str(min(seconds, self._connect_cap or seconds))
        options = [
            f'-c statement_timeout={STATEMENT_TIMEOUT_MS}',
            f'-c lock_timeout={LOCK_TIMEOUT_MS}',
            f'-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}',
        ]
        if self._read_only:
            options.append('-c default_transaction_read_only=on')
        settings['options'] = ' '.join(filter(None, [settings.get('options', ''), *options]))
        return _conninfo.make_conninfo('', **settings)

    def _connect(self) -> t.Any:
        try:
            # No server-side prepared statements: they would not survive a pooler (PgBouncer) in transaction mode.
            conn = psycopg.connect(self._conninfo, autocommit=True, prepare_threshold=None)
        except psycopg.OperationalError as exc:
            raise LedgerUnreachable(f'the ledger at {self.location} is unreachable: {self._describe(exc)}') from None
        except psycopg.Error as exc:
            raise LedgerError(f'the ledger at {self.location} cannot be used: {self._describe(exc)}') from None
        try:
            self._check_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_schema(self, conn: t.Any) -> None:
        version = self._schema_version(conn)
        if version == SCHEMA_VERSION:
            return
        if version is not None and version > SCHEMA_VERSION:
            raise LedgerError(
                f'the ledger at {self.location} was written by a newer temperstack.alerting (schema {SCHEMA}, '
                f'version {version}); upgrade the collection on every controller that shares it'
            )
        if self._read_only:
            self._absent = version is None
            return
        try:
            with conn.transaction():
                conn.execute('SELECT pg_advisory_xact_lock(%s)', (_SCHEMA_LOCK,))
                conn.execute(SCHEMA_SQL)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise LedgerError(
                f'the ledger at {self.location} has no schema {SCHEMA} yet, and this role may not create it '
                f'({self._describe(exc)}); have a database owner create it (docs/fleet.md) or grant CREATE on the database'
            ) from None
        except psycopg.Error as exc:
            raise LedgerError(f'cannot create the schema {SCHEMA} in the ledger at {self.location}: {self._describe(exc)}') from None

    def _schema_version(self, conn: t.Any) -> int | None:
        try:
            row = conn.execute(f"SELECT value FROM {SCHEMA}.meta WHERE name = 'schema_version'").fetchone()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            return None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise LedgerError(
                f'the ledger at {self.location} may not be read by this role ({self._describe(exc)}); '
                'grant it the privileges docs/fleet.md lists'
            ) from None
        except psycopg.Error as exc:
            raise LedgerError(f'the ledger at {self.location} cannot be used: {self._describe(exc)}') from None
        return int(row[0]) if row else None

    def _describe(self, exc: BaseException) -> str:
        # The server's own words, without the statement it quotes back; libpq's for a connection that failed (it
        # quotes a URI it cannot parse whole, password and all).
        primary = getattr(getattr(exc, 'diag', None), 'message_primary', None)
        text = ' '.join((primary or str(exc)).split()) or type(exc).__name__
        return mask_passwords(text, self.spec)

    @property
    def _conn(self) -> t.Any:
        return self._link.conn

    @_conn.setter
    def _conn(self, conn: t.Any) -> None:
        self._link.conn = conn

    @property
    def _watchdog(self) -> _Watchdog:
        return self._link.watchdog

    def close(self) -> None:
        self._closer()

    def _guard(self, operation: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
        try:
            with self._watchdog.watching(self._conn):
                return operation(*args)
        except LedgerError:
            raise
        except psycopg.Error as exc:
            if self._watchdog.fired:
                raise LedgerUnreachable(
                    f'the ledger at {self.location} did not answer in time: no answer within {CLIENT_DEADLINE_SECONDS:g} s'
                ) from None
            if not self._conn.broken and not self._conn.closed:
                raise self._failure(exc) from None
        # The server dropped the connection (a restart, a failover): one new connection, one more try.
        self._conn.close()
        self._conn = self._connect()
        try:
            with self._watchdog.watching(self._conn):
                return operation(*args)
        except psycopg.Error as exc:
            raise self._failure(exc) from None

    def _failure(self, exc: BaseException) -> LedgerError:
        # A server that takes longer than the statement or lock timeout is as good as down for an alert that is due.
        if isinstance(exc, (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable)):
            return LedgerUnreachable(f'the ledger at {self.location} did not answer in time: {self._describe(exc)}')
        if isinstance(exc, psycopg.OperationalError) and (self._conn.broken or self._conn.closed):
            return LedgerUnreachable(f'the ledger at {self.location} is unreachable: {self._describe(exc)}')
        return LedgerError(f'the ledger at {self.location} failed: {self._describe(exc)}')

    def _lock_alert(self, endpoint: str, alert_id: str) -> None:
        self._conn.execute('SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))', (f'{endpoint}/{alert_id}',))

    # -- the contract --------------------------------------------------------------------------------

    def _lookup(self, endpoint: str, alert_id: str, unheld_only: bool) -> Record | None:
        if self._absent:
            return None
        deliverable = 'hold_token IS NULL' if unheld_only else _DELIVERABLE
        # One round trip: the newest deliverable outbox entry if there is one, else the record.
        row = self._conn.execute(
            f'(SELECT status, fingerprint, payload, queued, hosts, true AS pending FROM {SCHEMA}.outbox '
            f'WHERE endpoint = %s AND alert_id = %s AND {deliverable} ORDER BY seq DESC LIMIT 1) '
            f'UNION ALL (SELECT status, fingerprint, payload, updated, hosts, false FROM {SCHEMA}.alerts '
            'WHERE endpoint = %s AND alert_id = %s) ORDER BY pending DESC LIMIT 1',
            (endpoint, alert_id, endpoint, alert_id),
        ).fetchone()
        if row is None:
            return None
        return record_from_row(alert_id, row, pending=row[5])

    def _try_claim(self, claim: Claim) -> bool:
        taken = self._take_claim(claim, '')
        if taken:
            return True
        row = self._conn.execute(
            f'SELECT holder FROM {SCHEMA}.claims WHERE endpoint = %s AND alert_id = %s', (claim.endpoint, claim.alert_id)
        ).fetchone()
        # A holder on this controller that no longer exists (killed mid-send) need not be waited for.
        return row is not None and is_gone(row[0]) and self._take_claim(claim, row[0])

    def _take_claim(self, claim: Claim, gone_holder: str) -> bool:
        # One statement: a free, expired or dead holder's claim is taken; a live one is left alone. Retrying with
        # this claim's own token (after a reconnect) finds it already taken by this claim.
        row = self._conn.execute(
            f'INSERT INTO {SCHEMA}.claims AS c (endpoint, alert_id, token, expires, holder) '
            f'VALUES (%s, %s, %s, {_NOW} + %s, %s) '
            'ON CONFLICT (endpoint, alert_id) DO UPDATE SET token = excluded.token, expires = excluded.expires, '
            f'holder = excluded.holder WHERE c.token = excluded.token OR c.expires <= {_NOW} '
            "OR (c.holder = %s AND c.holder <> '') RETURNING token",
            (claim.endpoint, claim.alert_id, claim.token, claim.lease, this_process(), gone_holder),
        ).fetchone()
        return row is not None

    def _release(self, claim: Claim) -> None:
        self._conn.execute(
            f'DELETE FROM {SCHEMA}.claims WHERE endpoint = %s AND alert_id = %s AND token = %s',
            (claim.endpoint, claim.alert_id, claim.token),
        )

    def _renew(self, claim: Claim) -> None:
        self._fence(claim)

    def _fence(self, claim: Claim | None) -> None:
        """Go on only if ``claim`` is still the alert's claim, and renew it (inside the write's transaction)."""
        if claim is None:
            return
        cursor = self._conn.execute(
            f'UPDATE {SCHEMA}.claims SET expires = {_NOW} + %s WHERE endpoint = %s AND alert_id = %s AND token = %s',
            (claim.lease, claim.endpoint, claim.alert_id, claim.token),
        )
        if cursor.rowcount != 1:
            raise LeaseLost(
                f'the claim on alert {claim.alert_id} expired and passed to another sender; this one stops'
            )

    def _record(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], claim: Claim | None, doubtful: bool) -> None:
        with self._conn.transaction():
            self._fence(claim)
            self._lock_alert(endpoint, alert.alert_id)
            self._upsert(endpoint, alert, hosts, fingerprint=doubted(alert.fingerprint) if doubtful else None)
            self._sent_at_last(endpoint, alert.alert_id)

    def _upsert(
        self, endpoint: str, alert: Alert, hosts: tuple[str, ...], updated: float | None = None, fingerprint: str | None = None,
    ) -> None:
        self._conn.execute(
            f'INSERT INTO {SCHEMA}.alerts (endpoint, alert_id, status, fingerprint, payload, hosts, updated) '
            'VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (endpoint, alert_id) DO UPDATE SET '
            'status = excluded.status, fingerprint = excluded.fingerprint, payload = excluded.payload, '
            'hosts = excluded.hosts, updated = excluded.updated',
            (endpoint, alert.alert_id, alert.status, fingerprint or alert.fingerprint, dumps(alert.payload), dumps(hosts),
             time.time() if updated is None else updated),
        )

    def _sent_at_last(self, endpoint: str, alert_id: str) -> None:
        # What Temperstack now holds is the alert's last stated status: an Alarm a silence withheld is history.
        self._conn.execute(f'DELETE FROM {SCHEMA}.withheld WHERE endpoint = %s AND alert_id = %s', (endpoint, alert_id))

    def _insert_entry(
        self, endpoint: str, alert: Alert, hosts: tuple[str, ...], hold: tuple[t.Any, ...] = (None, None, None),
        queued: float | None = None,
    ) -> int:
        token, owner, lease = hold
        row = self._conn.execute(
            f'INSERT INTO {SCHEMA}.outbox (endpoint, alert_id, status, fingerprint, payload, hosts, queued, '
            f'hold_token, hold_owner, hold_until) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, '
            f'{_NOW} + %s) RETURNING seq',
            (endpoint, alert.alert_id, alert.status, alert.fingerprint, dumps(alert.payload), dumps(hosts),
             time.time() if queued is None else queued, token, owner, lease),
        ).fetchone()
        return int(row[0])

    def _queue(self, endpoint: str, alert: Alert, hosts: tuple[str, ...]) -> int:
        with self._conn.transaction():
            self._lock_alert(endpoint, alert.alert_id)
            return self._insert_entry(endpoint, alert, hosts)

    def _hold(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], token: str, owner: str) -> None:
        with self._conn.transaction():
            self._lock_alert(endpoint, alert.alert_id)
            self._drop_held(endpoint, alert.alert_id, token)
            self._insert_entry(endpoint, alert, hosts, (token, owner, HOLD_LEASE_SECONDS))

    def _settle(self, endpoint: str, alert_id: str, token: str, alert: Alert | None, hosts: tuple[str, ...]) -> None:
        with self._conn.transaction():
            self._lock_alert(endpoint, alert_id)
            self._drop_held(endpoint, alert_id, token)
            if alert is not None:
                self._insert_entry(endpoint, alert, hosts)

    def _drop_held(self, endpoint: str, alert_id: str, token: str) -> None:
        self._conn.execute(
            f'DELETE FROM {SCHEMA}.outbox WHERE endpoint = %s AND alert_id = %s AND hold_token = %s',
            (endpoint, alert_id, token),
        )

    def _renew_holds(self, token: str, lease: float) -> int:
        return self._conn.execute(
            f'UPDATE {SCHEMA}.outbox SET hold_until = {_NOW} + %s WHERE hold_token = %s', (lease, token)
        ).rowcount

    def _release_holds(self, token: str) -> int:
        return self._conn.execute(
            f'UPDATE {SCHEMA}.outbox SET hold_token = NULL, hold_owner = NULL, hold_until = NULL WHERE hold_token = %s',
            (token,),
        ).rowcount

    def _release_stale_holds(self) -> int:
        owners = self._conn.execute(
            f'SELECT DISTINCT hold_token, hold_owner FROM {SCHEMA}.outbox '
            f'WHERE hold_token IS NOT NULL AND hold_until > {_NOW}'
        ).fetchall()
        return sum(self._release_holds(token) for token, owner in owners if is_gone(owner))

    def _pending(self, endpoint: str, alert_id: str | None) -> list[Queued]:
        if self._absent:
            return []
        where, args = ('endpoint = %s', (endpoint,)) if alert_id is None else (
            'endpoint = %s AND alert_id = %s', (endpoint, alert_id))
        rows = self._conn.execute(
            f'SELECT seq, payload, hosts FROM {SCHEMA}.outbox WHERE {where} AND {_DELIVERABLE} ORDER BY seq', args
        ).fetchall()
        return [Queued(seq, Alert(json.loads(payload)), tuple(json.loads(hosts))) for seq, payload, hosts in rows]

    def _discard(self, queued: Queued, claim: Claim | None) -> None:
        with self._conn.transaction():
            self._fence(claim)
            self._conn.execute(f'DELETE FROM {SCHEMA}.outbox WHERE seq = %s', (queued.seq,))

    def _delivered(self, endpoint: str, queued: Queued, claim: Claim | None) -> bool:
        with self._conn.transaction():
            self._fence(claim)
            # Every write of an alert's record takes its lock, so that one computed from what it read (adopt) never
            # overwrites a record committed after that read.
            self._lock_alert(endpoint, queued.alert.alert_id)
            if self._conn.execute(f'DELETE FROM {SCHEMA}.outbox WHERE seq = %s', (queued.seq,)).rowcount != 1:
                return False
            self._upsert(endpoint, queued.alert, queued.hosts)
            self._sent_at_last(endpoint, queued.alert.alert_id)
            return True

    def _prune(self, retention: float, now: float) -> int:
        with self._conn.transaction():
            cursor = self._conn.execute(
                f"DELETE FROM {SCHEMA}.alerts WHERE status = 'OK' AND updated < %s", (now - retention,)
            )
            self._conn.execute(f'DELETE FROM {SCHEMA}.claims WHERE expires < {_NOW}')
            self._conn.execute(f'DELETE FROM {SCHEMA}.silences WHERE ends < %s', (now,))
            self._conn.execute(f'DELETE FROM {SCHEMA}.streaks WHERE updated < %s', (now - retention,))
            self._conn.execute(
                f"INSERT INTO {SCHEMA}.meta (name, value) VALUES ('last_prune', %s) "
                'ON CONFLICT (name) DO UPDATE SET value = excluded.value',
                (repr(now),),
            )
            return cursor.rowcount

    def _prune_if_due(self) -> None:
        row = self._conn.execute(f"SELECT value FROM {SCHEMA}.meta WHERE name = 'last_prune'").fetchone()
        if row is None or float(row[0]) < time.time() - PRUNE_INTERVAL_SECONDS:
            self._prune(RETENTION_SECONDS, time.time())

    def _export(self) -> list[tuple[str, int | None, Record]]:
        if self._absent:
            return []
        records = self._conn.execute(
            f'SELECT endpoint, NULL, alert_id, status, fingerprint, payload, updated, 0, hosts FROM {SCHEMA}.alerts '
            'ORDER BY updated'
        ).fetchall()
        entries = self._conn.execute(
            f'SELECT endpoint, seq, alert_id, status, fingerprint, payload, queued, 1, hosts FROM {SCHEMA}.outbox '
            f'WHERE {_DELIVERABLE} ORDER BY seq'
        ).fetchall()
        return [exported_from_row(row) for row in records + entries]

    def _adopt(self, endpoint: str, record: Record) -> bool:
        with self._conn.transaction():
            self._lock_alert(endpoint, record.alert_id)
            newest = self._newest(endpoint, record.alert_id)
            if newest is not None and newest >= record.updated:
                return False
            alert = Alert(record.payload)
            if record.pending:
                self._insert_entry(endpoint, alert, record.hosts, queued=record.updated)
            else:
                self._upsert(endpoint, alert, record.hosts, record.updated)
            return True

    def _forget(self, endpoint: str, alert_id: str, seq: int | None) -> None:
        if seq is None:
            self._conn.execute(f'DELETE FROM {SCHEMA}.alerts WHERE endpoint = %s AND alert_id = %s', (endpoint, alert_id))
        else:
            self._conn.execute(f'DELETE FROM {SCHEMA}.outbox WHERE seq = %s', (seq,))

    def _newest(self, endpoint: str, alert_id: str) -> float | None:
        if self._absent:
            return None
        return self._conn.execute(
            f'SELECT max(updated) FROM (SELECT updated FROM {SCHEMA}.alerts WHERE endpoint = %s AND alert_id = %s '
            f'UNION ALL SELECT queued FROM {SCHEMA}.outbox WHERE endpoint = %s AND alert_id = %s) AS known',
            (endpoint, alert_id, endpoint, alert_id),
        ).fetchone()[0]

    # -- day-2: what is open, silences, withheld Alarms, streaks ---------------------------------------------------

    def _records(self, endpoint: str) -> list[Record]:
        if self._absent:
            return []
        rows = self._conn.execute(
            f'SELECT alert_id, status, fingerprint, payload, updated, hosts FROM {SCHEMA}.alerts WHERE endpoint = %s '
            'ORDER BY alert_id COLLATE "C"',
            (endpoint,),
        ).fetchall()
        return [record_from_row(row[0], row[1:]) for row in rows]

    def _entries(self) -> list[Entry]:
        if self._absent:
            return []
        rows = self._conn.execute(
            f'SELECT endpoint, seq, payload, hosts, queued, attempts, NOT {_DELIVERABLE} FROM {SCHEMA}.outbox ORDER BY seq'
        ).fetchall()
        return [entry_from_row(row) for row in rows]

    def _attempted(self, seq: int) -> None:
        self._conn.execute(f'UPDATE {SCHEMA}.outbox SET attempts = attempts + 1 WHERE seq = %s', (seq,))

    def _put_silence(self, silence: Silence) -> bool:
        row = silence_to_row(silence)
        with self._conn.transaction():
            self._conn.execute(f'DELETE FROM {SCHEMA}.silences WHERE ends < %s', (time.time(),))
            return self._conn.execute(
                f'INSERT INTO {SCHEMA}.silences AS s (name, matchers, starts, ends, comment, created) '
                'VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET matchers = excluded.matchers, '
                'starts = excluded.starts, ends = excluded.ends, comment = excluded.comment, created = excluded.created '
                'WHERE (s.matchers, s.starts, s.ends, s.comment) IS DISTINCT FROM '
                '(excluded.matchers, excluded.starts, excluded.ends, excluded.comment)',
                row,
            ).rowcount == 1

    def _remove_silence(self, name: str) -> bool:
        with self._conn.transaction():
            self._conn.execute(f'DELETE FROM {SCHEMA}.silences WHERE ends < %s AND name <> %s', (time.time(), name))
            return self._conn.execute(f'DELETE FROM {SCHEMA}.silences WHERE name = %s', (name,)).rowcount == 1

    def _silences(self) -> list[Silence]:
        if self._absent:
            return []
        rows = self._conn.execute(
            f'SELECT name, matchers, starts, ends, comment, created FROM {SCHEMA}.silences ORDER BY name COLLATE "C"'
        ).fetchall()
        return [silence_from_row(row) for row in rows]

    def _withhold(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], silence: str) -> None:
        self._conn.execute(
            f'INSERT INTO {SCHEMA}.withheld (endpoint, alert_id, silence, status, fingerprint, payload, hosts, updated) '
            'VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (endpoint, alert_id) DO UPDATE SET '
            'silence = excluded.silence, status = excluded.status, fingerprint = excluded.fingerprint, '
            'payload = excluded.payload, hosts = excluded.hosts, updated = excluded.updated',
            (endpoint, alert.alert_id, silence, alert.status, alert.fingerprint, dumps(alert.payload), dumps(hosts),
             time.time()),
        )

    def _withheld(self, endpoint: str | None, alert_id: str | None) -> list[Withheld]:
        if self._absent:
            return []
        where, args = ('1 = 1', ()) if endpoint is None else ('endpoint = %s', (endpoint,))
        if alert_id is not None:
            where, args = where + ' AND alert_id = %s', (*args, alert_id)
        rows = self._conn.execute(
            f'SELECT silence, alert_id, status, fingerprint, payload, updated, hosts FROM {SCHEMA}.withheld '
            f'WHERE {where} ORDER BY alert_id COLLATE "C"',
            args,
        ).fetchall()
        return [withheld_from_row(row) for row in rows]

    def _forget_withheld(self, endpoint: str, alert_id: str) -> bool:
        return self._conn.execute(
            f'DELETE FROM {SCHEMA}.withheld WHERE endpoint = %s AND alert_id = %s', (endpoint, alert_id)
        ).rowcount == 1

    def _streak(self, endpoint: str, alert_id: str, status: str, count: bool) -> int:
        if not count:
            known = None if self._absent else self._conn.execute(
                f'SELECT status, count FROM {SCHEMA}.streaks WHERE endpoint = %s AND alert_id = %s', (endpoint, alert_id)
            ).fetchone()
            return known[1] + 1 if known is not None and known[0] == status else 1
        row = self._conn.execute(
            f'INSERT INTO {SCHEMA}.streaks AS s (endpoint, alert_id, status, count, updated) VALUES (%s, %s, %s, 1, %s) '
            'ON CONFLICT (endpoint, alert_id) DO UPDATE SET '
            'count = CASE WHEN s.status = excluded.status THEN s.count + 1 ELSE 1 END, '
            'status = excluded.status, updated = excluded.updated RETURNING count',
            (endpoint, alert_id, status, time.time()),
        ).fetchone()
        return int(row[0])

    def _acknowledged(self, endpoint: str, alert_id: str) -> Record | None:
        if self._absent:
            return None
        row = self._conn.execute(
            f'SELECT status, fingerprint, payload, updated, hosts FROM {SCHEMA}.alerts WHERE endpoint = %s AND alert_id = %s',
            (endpoint, alert_id),
        ).fetchone()
        return None if row is None else record_from_row(alert_id, row)
