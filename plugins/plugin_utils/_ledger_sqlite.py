# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module is for internal use by the temperstack.alerting collection only.
# Its interface can change at any time, even in patch releases.

"""The embedded ledger: one SQLite file per controller (the default), and the fallback file of a shared ledger."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import time
import typing as t
from urllib.parse import quote

from ._alert import Alert
from ._holder import is_gone, this_process
from ._ledger import (
    doubted,
    BUSY_TIMEOUT_SECONDS,
    CLAIM_POLL_SECONDS,
    HOLD_LEASE_SECONDS,
    PRUNE_INTERVAL_SECONDS,
    RETENTION_SECONDS,
    Claim,
    Entry,
    Ledger,
    LedgerError,
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
from ._ledger_spec import default_ledger_path

SCHEMA_VERSION = 3
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

    def _lookup(self, endpoint: str, alert_id: str, unheld_only: bool) -> Record | None:
        deliverable, now = self._deliverable()
        if unheld_only and self._holds:
            deliverable, now = ' AND hold_token IS NULL', ()
        row = self._conn.execute(
            'SELECT status, fingerprint, payload, queued, hosts FROM outbox WHERE endpoint = ? AND alert_id = ?'
            f'{deliverable} ORDER BY seq DESC LIMIT 1',
            (endpoint, alert_id, *now),
        ).fetchone()
        if row is not None:
            return record_from_row(alert_id, row, pending=True)
        row = self._conn.execute(
            'SELECT status, fingerprint, payload, updated, hosts FROM alerts WHERE endpoint = ? AND alert_id = ?',
            (endpoint, alert_id),
        ).fetchone()
        if row is None:
            return None
        return record_from_row(alert_id, row)

    def _try_claim(self, claim: Claim) -> bool:
        now = time.time()
        with _immediate(self._conn):
            row = self._conn.execute(
                'SELECT expires, holder FROM claims WHERE endpoint = ? AND alert_id = ?', (claim.endpoint, claim.alert_id)
            ).fetchone()
            # A holder on this controller that no longer exists (killed mid-send) need not be waited for.
            if row is not None and row[0] > now and not is_gone(row[1]):
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

    def _record(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], claim: Claim | None, doubtful: bool) -> None:
        with _immediate(self._conn):
            self._fence(claim)
            self._upsert(endpoint, alert, hosts, fingerprint=doubted(alert.fingerprint) if doubtful else None)
            self._sent_at_last(endpoint, alert.alert_id)

    def _upsert(
        self, endpoint: str, alert: Alert, hosts: tuple[str, ...], updated: float | None = None, fingerprint: str | None = None,
    ) -> None:
        self._conn.execute(
            'INSERT OR REPLACE INTO alerts (endpoint, alert_id, status, fingerprint, payload, hosts, updated) '
            'VALUES (?, ?, ?, ?, ?, ?, ?)',
            (endpoint, alert.alert_id, alert.status, fingerprint or alert.fingerprint, dumps(alert.payload), dumps(hosts),
             time.time() if updated is None else updated),
        )

    def _sent_at_last(self, endpoint: str, alert_id: str) -> None:
        # What Temperstack now holds is the alert's last stated status: an Alarm a silence withheld is history.
        self._conn.execute('DELETE FROM withheld WHERE endpoint = ? AND alert_id = ?', (endpoint, alert_id))

    def _insert_entry(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], hold: tuple[t.Any, ...] = (None,) * 3) -> int:
        cursor = self._conn.execute(
            'INSERT INTO outbox (endpoint, alert_id, status, fingerprint, payload, hosts, queued, '
            'hold_token, hold_owner, hold_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
            (endpoint, alert.alert_id, alert.status, alert.fingerprint, dumps(alert.payload), dumps(hosts),
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
        return sum(self._release_holds(token) for token, owner in owners if is_gone(owner))

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
        return [exported_from_row(row) for row in records + entries]

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
                    (endpoint, alert.alert_id, alert.status, alert.fingerprint, dumps(alert.payload),
                     dumps(record.hosts), record.updated),
                )
            else:
                self._upsert(endpoint, alert, record.hosts, record.updated)
            return True

    def _acknowledged(self, endpoint: str, alert_id: str) -> Record | None:
        row = self._conn.execute(
            'SELECT status, fingerprint, payload, updated, hosts FROM alerts WHERE endpoint = ? AND alert_id = ?',
            (endpoint, alert_id),
        ).fetchone()
        return None if row is None else record_from_row(alert_id, row)

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
        return [record_from_row(row[0], row[1:]) for row in rows]

    def _entries(self) -> list[Entry]:
        attempts = 'attempts' if self._holds else '0'
        held = f'hold_until IS NOT NULL AND hold_until > {time.time()!r}' if self._holds else '0'
        rows = self._conn.execute(
            f'SELECT endpoint, seq, payload, hosts, queued, {attempts}, {held} FROM outbox ORDER BY seq'
        ).fetchall()
        return [entry_from_row(row) for row in rows]

    def _attempted(self, seq: int) -> None:
        with _immediate(self._conn):
            self._conn.execute('UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?', (seq,))

    def _put_silence(self, silence: Silence) -> bool:
        with _immediate(self._conn):
            self._conn.execute('DELETE FROM silences WHERE ends < ?', (time.time(),))
            row = self._conn.execute(
                'SELECT matchers, starts, ends, comment FROM silences WHERE name = ?', (silence.name,)
            ).fetchone()
            if row is not None and tuple(row) == silence_to_row(silence)[1:5]:
                return False
            self._conn.execute(
                'INSERT OR REPLACE INTO silences (name, matchers, starts, ends, comment, created) VALUES (?, ?, ?, ?, ?, ?)',
                silence_to_row(silence),
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
        return [silence_from_row(row) for row in rows]

    def _withhold(self, endpoint: str, alert: Alert, hosts: tuple[str, ...], silence: str) -> None:
        with _immediate(self._conn):
            self._conn.execute(
                'INSERT OR REPLACE INTO withheld (endpoint, alert_id, silence, status, fingerprint, payload, hosts, updated) '
                'VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                (endpoint, alert.alert_id, silence, alert.status, alert.fingerprint, dumps(alert.payload),
                 dumps(hosts), time.time()),
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
        return [withheld_from_row(row) for row in rows]

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

    # -- what only a fallback file keeps (see _ledger_open.LedgerWithFallback) -------------------------------------

    def note(self, name: str, value: str) -> None:
        """Keep a note for later (an instruction for the shared ledger, once it answers)."""
        self._guard(self._write_meta, 'note\t' + name, value)

    def notes(self) -> list[tuple[str, str]]:
        """Every note kept, oldest name first."""
        rows = self._guard(lambda: self._conn.execute(
            "SELECT name, value FROM meta WHERE name LIKE 'note' || char(9) || '%' ORDER BY name").fetchall())
        return [(name[len('note\t'):], value) for name, value in rows]

    def drop_note(self, name: str) -> None:
        self._guard(self._write_meta, 'note\t' + name, None)

    def replace_silences(self, silences: t.Sequence[Silence]) -> None:
        """Make the silences of this file exactly ``silences`` (the last read from the shared ledger)."""
        def replace() -> None:
            with _immediate(self._conn):
                self._conn.execute('DELETE FROM silences')
                self._conn.executemany(
                    'INSERT INTO silences (name, matchers, starts, ends, comment, created) VALUES (?, ?, ?, ?, ?, ?)',
                    [silence_to_row(silence) for silence in silences],
                )
        self._guard(replace)

    def withheld_alerts(self) -> list[tuple[str, str]]:
        """``(endpoint, alert_id)`` of every withheld Alarm."""
        if not self._has_table('withheld'):
            return []
        return [tuple(row) for row in self._conn.execute('SELECT endpoint, alert_id FROM withheld ORDER BY alert_id')]

    def _write_meta(self, name: str, value: str | None) -> None:
        with _immediate(self._conn):
            if value is None:
                self._conn.execute('DELETE FROM meta WHERE name = ?', (name,))
            else:
                self._conn.execute('INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)', (name, value))

    def _has_table(self, name: str) -> bool:
        # A read-only view of an older ledger lacks the newer tables: they read as empty.
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


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


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, 'sqlite_errorcode', None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc).lower()
    return 'not a database' in text or 'malformed' in text


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return 'locked' in text or 'busy' in text
