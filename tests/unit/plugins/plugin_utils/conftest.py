# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Fixtures for the ledger's conformance suite (test_ledger_contract.py): every test runs on both backends.

``ledger_backend`` is parametrized with ``sqlite`` (a file in the test's tmp_path) and ``postgresql`` (a database of
its own per pytest worker, on the server that TEMPERSTACK_TEST_PG_ADMIN_URL names, emptied before each test).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shlex
import sqlite3
import typing as t
from urllib.parse import urlsplit, urlunsplit

import pytest

from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger import Ledger
from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_open import open_ledger
from ansible_collections.temperstack.alerting.tests.unit.tcp_proxy import TcpProxy

try:
    # Imported here, by the worker, and not by each test: ansible-test runs every test in a fork of the worker, and a
    # fork that imports them itself pays about 0.2 s a test for it.
    import psycopg
    from ansible_collections.temperstack.alerting.plugins.plugin_utils import _ledger_postgres
except ImportError as _import_error:  # pragma: no cover - psycopg is in tests/unit/requirements.txt
    psycopg = None  # pylint: disable=invalid-name
    PSYCOPG_IMPORT_ERROR: ImportError | None = _import_error
else:
    PSYCOPG_IMPORT_ERROR = None

PG_ADMIN_URL_ENV = 'TEMPERSTACK_TEST_PG_ADMIN_URL'
PG_SCHEMA = 'temperstack'
PG_DATABASE_PREFIX = 'ledger_contract_'
_SLOW_INSERT = 'contract_test_slow_insert'
# ansible-test sets this in the environment it gives pytest, and in no other.
_ANSIBLE_TEST_MARKER = 'ANSIBLE_TEST_ANSIBLE_LIB_ROOT'
# `make pg-stage-env` (tools/pg_server.mk) writes the server's URLs there, into the staged collection.
_STAGED_PG_ENV = pathlib.Path(__file__).resolve().parents[3] / 'pg_server.env'
# The process that collected the tests (an xdist worker, or pytest itself). ansible-test runs each test in a fork
# of it, so a name made from the test's own pid would change from test to test.
_WORKER = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
PG_DATABASE = PG_DATABASE_PREFIX + _WORKER


# -- settings ---------------------------------------------------------------------------------------


def caller_setting(name: str) -> str | None:
    """``name`` from this process's environment or, under ansible-test, from the environment ansible-test got.

    ``ansible-test units`` starts pytest with a fixed handful of variables (HOME, PATH, ...), so a variable that the
    Makefile or CI sets for it never reaches the tests. Every process ansible-test starts carries its marker
    variable; the nearest ancestor without it is ansible-test itself, started with the caller's environment.
    """
    if name in os.environ or _ANSIBLE_TEST_MARKER not in os.environ:
        return os.environ.get(name)
    pid = os.getpid()
    for _generation in range(32):
        pid = _parent_of(pid)
        environ = _environ_of(pid) if pid and pid > 1 else None
        if environ is None:
            return None
        if _ANSIBLE_TEST_MARKER not in environ:
            return environ.get(name)
    return None


def pg_admin_url_setting() -> str | None:
    """The test server's superuser URL: from the environment (see caller_setting), else from the staged file."""
    return caller_setting(PG_ADMIN_URL_ENV) or _staged_setting(PG_ADMIN_URL_ENV)


def _staged_setting(name: str) -> str | None:
    try:
        text = _STAGED_PG_ENV.read_text(encoding='utf-8')
    except OSError:
        return None
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == 'export' and words[1].startswith(f'{name}='):
            return words[1].split('=', 1)[1]
    return None


def _parent_of(pid: int) -> int | None:
    try:
        with open(f'/proc/{pid}/stat', encoding='utf-8') as stat_file:
            return int(stat_file.read().rsplit(')', 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _environ_of(pid: int) -> dict[str, str] | None:
    try:
        with open(f'/proc/{pid}/environ', 'rb') as environ_file:
            entries = environ_file.read().split(b'\0')
    except OSError:
        return None
    pairs = (os.fsdecode(entry).partition('=') for entry in entries if b'=' in entry)
    return {name: value for name, _sep, value in pairs}


def _under_ci() -> bool:
    return (caller_setting('CI') or '').lower() in ('true', '1', 'yes')


def _require_psycopg() -> None:
    if psycopg is None:
        pytest.fail(
            f'{PG_ADMIN_URL_ENV} is set but psycopg cannot be imported ({PSYCOPG_IMPORT_ERROR}): pip install "psycopg[binary]"',
            pytrace=False,
        )


def with_database(url: str, database: str) -> str:
    """``url`` (a postgresql:// URL) naming ``database`` instead of its own."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path='/' + database))


# -- the backends -----------------------------------------------------------------------------------


class LedgerBackend:
    """One backend's ledger for one test: its spec, the connections the test opened, and what only a test does to it."""

    name = ''

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._opened: list[Ledger] = []

    def open(self, **kwargs: t.Any) -> Ledger:
        """``open_ledger`` of this backend's spec; closed when the test ends."""
        ledger = open_ledger(self.spec, **kwargs)
        self._opened.append(ledger)
        return ledger

    def close(self) -> None:
        for ledger in self._opened:
            with contextlib.suppress(Exception):
                ledger.close()
        self._opened.clear()

    def exists(self) -> bool:
        raise NotImplementedError

    def remove(self) -> None:
        """Make the ledger not exist yet, as before its first use."""
        raise NotImplementedError

    def set_schema_version(self, version: int) -> None:
        """Mark the ledger as written by another version of the collection."""
        raise NotImplementedError

    def contents(self) -> t.Any:
        """Everything the ledger's storage holds, raw, to compare before and after."""
        raise NotImplementedError

    @contextlib.contextmanager
    def slow_inserts(self, most: float) -> t.Iterator[None]:
        """Outbox entries that take up to ``most`` seconds between getting their seq and committing, as on a busy server.

        SQLite needs nothing: its writers take turns (BEGIN IMMEDIATE), so it numbers entries in commit order anyway.
        """
        yield


class SqliteBackend(LedgerBackend):
    name = 'sqlite'

    def exists(self) -> bool:
        return os.path.exists(self.spec)

    def remove(self) -> None:
        for suffix in ('', '-wal', '-shm'):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.spec + suffix)

    def set_schema_version(self, version: int) -> None:
        conn = sqlite3.connect(self.spec)
        try:
            conn.execute(f'PRAGMA user_version={int(version)}')
        finally:
            conn.close()

    def contents(self) -> t.Any:
        # The file, and its write-ahead log if that holds anything. Not the -shm file: an index of the log that any
        # reader rebuilds (a read-only one leaves it, and an empty log, behind).
        files = {}
        for suffix in ('', '-wal'):
            with contextlib.suppress(FileNotFoundError), open(self.spec + suffix, 'rb') as stream:
                files[suffix] = stream.read()
        if not files.get('-wal'):
            files.pop('-wal', None)
        return files


class PostgresBackend(LedgerBackend):
    name = 'postgresql'

    def __init__(self, spec: str, conn: t.Any) -> None:
        super().__init__(spec)
        # A superuser's connection to the test's database, for what no ledger method does.
        self.conn = conn

    def close(self) -> None:
        super().close()
        self.conn.close()

    def exists(self) -> bool:
        return self.conn.execute('SELECT 1 FROM pg_namespace WHERE nspname = %s', (PG_SCHEMA,)).fetchone() is not None

    def remove(self) -> None:
        self.conn.execute(f'DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE')

    def set_schema_version(self, version: int) -> None:
        self.conn.execute(f"UPDATE {PG_SCHEMA}.meta SET value = %s WHERE name = 'schema_version'", (str(version),))

    @contextlib.contextmanager
    def slow_inserts(self, most: float) -> t.Iterator[None]:
        # Before the row is inserted, but after its identity column has taken the next seq.
        self.conn.execute(
            f'CREATE FUNCTION {PG_SCHEMA}.{_SLOW_INSERT}() RETURNS trigger LANGUAGE plpgsql '
            f'AS $$ BEGIN PERFORM pg_sleep(random() * {float(most)}); RETURN NEW; END $$'
        )
        self.conn.execute(
            f'CREATE TRIGGER {_SLOW_INSERT} BEFORE INSERT ON {PG_SCHEMA}.outbox FOR EACH ROW EXECUTE FUNCTION {PG_SCHEMA}.{_SLOW_INSERT}()'
        )
        try:
            yield
        finally:
            self.conn.execute(f'DROP FUNCTION {PG_SCHEMA}.{_SLOW_INSERT}() CASCADE')

    def contents(self) -> t.Any:
        columns = self.conn.execute(
            'SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns '
            'WHERE table_schema = %s ORDER BY table_name, ordinal_position',
            (PG_SCHEMA,),
        ).fetchall()
        rows = {}
        for table in sorted({column[0] for column in columns}):
            found = self.conn.execute(f'SELECT row_to_json(t)::text FROM {PG_SCHEMA}.{table} AS t').fetchall()
            rows[table] = sorted(row[0] for row in found)
        return columns, rows


def _empty_schema(conn: t.Any) -> None:
    """Empty the ledger's tables, or drop the schema if a test left it changed (another version, a table dropped)."""
    try:
        with conn.transaction():
            row = conn.execute(f"SELECT value FROM {PG_SCHEMA}.meta WHERE name = 'schema_version'").fetchone()
            if row is None or row[0] != str(_ledger_postgres.SCHEMA_VERSION):
                raise LookupError('not this version')
            # Faster than dropping and re-creating the schema (about 7 ms a test against 12 ms, measured).
            tables = [row[0] for row in conn.execute(
                "SELECT quote_ident(table_name) FROM information_schema.tables WHERE table_schema = %s AND table_name <> 'meta'",
                (PG_SCHEMA,),
            )]
            conn.execute(f"TRUNCATE {', '.join(f'{PG_SCHEMA}.{table}' for table in tables)} RESTART IDENTITY")
            conn.execute(f"DELETE FROM {PG_SCHEMA}.meta WHERE name <> 'schema_version'")
            # Left by a test that died inside slow_inserts().
            conn.execute(f'DROP FUNCTION IF EXISTS {PG_SCHEMA}.{_SLOW_INSERT}() CASCADE')
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        conn.execute(f'DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE')
    except LookupError:
        conn.execute(f'DROP SCHEMA {PG_SCHEMA} CASCADE')


def _connect_or_create(admin_url: str, url: str) -> t.Any:
    """A connection to this worker's database, created on first use (once per worker, whichever test comes first)."""
    _require_psycopg()
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError:
        pass  # no such database yet (any other trouble shows when the admin connects)
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as admin:
        _drop_stale_databases(admin)
        _create_database(admin)
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def _create_database(admin: t.Any) -> None:
    """This worker's database, with a linguistic collation (ICU's en-US) if the server has one.

    Most servers sort text that way (en_US.UTF-8 in the postgres image, on RDS, under AWX), not in the byte order of
    the C locale that test servers are made with: a ledger that orders text must say how, or its order is the
    database's. A server without ICU (before PostgreSQL 15, or built without it) gets its default.
    """
    for options in ("TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'", ''):
        try:
            admin.execute(f'CREATE DATABASE "{PG_DATABASE}" {options}')
            return
        except psycopg.errors.DuplicateDatabase:
            return
        except psycopg.Error:
            if not options:
                raise


def _drop_stale_databases(admin: t.Any) -> None:
    """Drop the databases of earlier test sessions on this machine whose worker is gone (killed before it dropped its own)."""
    for (name,) in admin.execute('SELECT datname FROM pg_database WHERE datname LIKE %s', (PG_DATABASE_PREFIX + '%',)).fetchall():
        pid = name.rpartition('_')[2]
        if name == PG_DATABASE or not pid.isdigit() or _pid_runs(int(pid)):
            continue
        # Without FORCE: a database someone is connected to is in use, whatever its name says.
        with contextlib.suppress(psycopg.Error):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    return True


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:  # pylint: disable=unused-argument
    """Drop this worker's database, if a test made one: the worker's last test may not have been a PostgreSQL one.

    Runs in the worker itself: ansible-test runs each test in a fork of it, and a fork's session fixtures end with it.
    """
    admin_url = pg_admin_url_setting()
    if not admin_url or psycopg is None:
        return
    with contextlib.suppress(psycopg.Error), psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as admin:
        if admin.execute('SELECT 1 FROM pg_database WHERE datname = %s', (PG_DATABASE,)).fetchone():
            admin.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope='session')
def pg_admin_url() -> str:
    """A superuser's URL on the test server: skips the PostgreSQL cases without one, except under CI, which fails them."""
    url = pg_admin_url_setting()
    if url:
        return url
    reason = (
        f'{PG_ADMIN_URL_ENV} is not set, so the PostgreSQL half of the ledger contract cannot run: run `make units`, '
        'or start a server with tools/pg_server.sh start DIR and set it with eval "$(tools/pg_server.sh env DIR)"'
    )
    if _under_ci():
        pytest.fail(f'{reason}. Under CI the PostgreSQL half must run.', pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope='session')
def pg_database_url(pg_admin_url: str) -> str:
    """This worker's own database (created by the first test that needs it, dropped at the end of the session)."""
    return with_database(pg_admin_url, PG_DATABASE)


@pytest.fixture
def sqlite_backend(tmp_path) -> t.Iterator[SqliteBackend]:
    backend = SqliteBackend(str(tmp_path / 'ledger' / 'ledger.sqlite3'))
    yield backend
    backend.close()


@pytest.fixture
def postgresql_backend(pg_admin_url: str, pg_database_url: str) -> t.Iterator[PostgresBackend]:
    conn = _connect_or_create(pg_admin_url, pg_database_url)
    _empty_schema(conn)
    backend = PostgresBackend(pg_database_url, conn)
    yield backend
    backend.close()


@pytest.fixture(params=['sqlite', 'postgresql'])
def ledger_backend(request) -> LedgerBackend:
    """Each backend in turn: every test that uses it is part of the contract both must keep."""
    return request.getfixturevalue(f'{request.param}_backend')


@pytest.fixture
def other_backend(request, ledger_backend: LedgerBackend) -> LedgerBackend:
    """The other backend, empty, for what goes from one to the other."""
    return request.getfixturevalue('postgresql_backend' if ledger_backend.name == 'sqlite' else 'sqlite_backend')


@pytest.fixture
def pg_relay(postgresql_backend: PostgresBackend) -> t.Iterator[tuple[TcpProxy, str]]:
    """The test's PostgreSQL ledger through a relay the test can take down (``proxy.down()``) and bring back (``up()``)."""
    proxy, url = TcpProxy.for_url(postgresql_backend.spec)
    yield proxy, url
    proxy.close()
