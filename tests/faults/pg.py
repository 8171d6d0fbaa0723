# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The fault suite's own PostgreSQL server (issue 11), for test_pg_ledger.py.

A real server from tools/pg_server.sh, started in the session's work directory and stopped (its data deleted)
when the session ends. The suite's tests stop, restart and lock it, so it is never one that another suite shares.
Each test gets a database of its own (``PgServer.database``), so that alerts of one test are never another's.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
import subprocess
import time
import typing as t
from urllib.parse import urlsplit, urlunsplit

from faultlib import COLLECTION_ROOT

PG_SERVER = os.path.join(COLLECTION_ROOT, 'tools', 'pg_server.sh')
SCHEMA = 'temperstack'
OWNER_ROLE = 'temperstack'
# How the collection masks a password (plugins/plugin_utils/_endpoint.py).
MASK = '********'


def _psycopg() -> t.Any:
    import psycopg  # pylint: disable=import-outside-toplevel

    return psycopg


def with_database(url: str, database: str) -> str:
    """``url`` (a postgresql:// URL) naming ``database`` instead of its own."""
    return urlunsplit(urlsplit(url)._replace(path='/' + database))


def password_of(url: str) -> str:
    return urlsplit(url).password or ''


class PgServer:
    """A running server: its URLs, pg_ctl to stop and start it, and a superuser's connections for what tests do to it."""

    def __init__(self, directory: str, settings: dict[str, str]) -> None:
        self.directory = directory
        self.url = settings['TEMPERSTACK_TEST_PG_URL']
        self.admin_url = settings['TEMPERSTACK_TEST_PG_ADMIN_URL']
        self.log = settings['TEMPERSTACK_TEST_PG_LOG']
        self.data = settings['TEMPERSTACK_TEST_PG_DATA']
        self._ctl = shlex.split(settings['TEMPERSTACK_TEST_PG_CTL'])
        self.port = urlsplit(self.url).port
        # Every password the server has: none may appear in anything a run prints.
        self.passwords = sorted(filter(None, (password_of(settings[name]) for name in settings if name.endswith('_URL'))))

    # -- databases -------------------------------------------------------------------------------------

    def database(self, name: str) -> str:
        """A new, empty database ``name`` owned by the ledger's role (dropped first if an earlier run left it); its URL."""
        with self.admin('postgres') as conn:
            conn.execute(f'DROP DATABASE IF EXISTS {name} WITH (FORCE)')
            conn.execute(f'CREATE DATABASE {name} OWNER {OWNER_ROLE}')
        return with_database(self.url, name)

    @contextlib.contextmanager
    def admin(self, database: str) -> t.Iterator[t.Any]:
        """A superuser's autocommit connection to ``database``."""
        conn = _psycopg().connect(with_database(self.admin_url, database), autocommit=True, connect_timeout=10)
        try:
            yield conn
        finally:
            conn.close()

    def query(self, database: str, sql: str, args: t.Sequence[t.Any] = ()) -> list[tuple]:
        with self.admin(database) as conn:
            cursor = conn.execute(sql, args)
            return cursor.fetchall() if cursor.description else []

    def tables(self, database: str) -> dict[str, list[tuple]]:
        """The shared ledger's alerts, outbox and claims, as any client reads them (empty lists if not created yet)."""
        with self.admin(database) as conn:
            exists = conn.execute('SELECT 1 FROM pg_namespace WHERE nspname = %s', (SCHEMA,)).fetchone()
            if not exists:
                return {'alerts': [], 'outbox': [], 'claims': []}
            return {
                'alerts': conn.execute(f'SELECT alert_id, status FROM {SCHEMA}.alerts ORDER BY alert_id').fetchall(),
                'outbox': conn.execute(f'SELECT seq, alert_id, status FROM {SCHEMA}.outbox ORDER BY seq').fetchall(),
                'claims': conn.execute(f'SELECT alert_id, holder, expires FROM {SCHEMA}.claims ORDER BY alert_id').fetchall(),
            }

    # -- the server itself -----------------------------------------------------------------------------

    def ctl(self, *args: str) -> float:
        """Run pg_ctl (``stop -m fast``, ``start``, ``restart -m fast``); returns how long it took."""
        started = time.monotonic()
        # Not a pipe: the postmaster that start leaves running must not hold one of ours open.
        with open(os.path.join(self.directory, 'pg_ctl.out'), 'ab') as out:
            done = subprocess.run([*self._ctl, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=False, timeout=120)
        if done.returncode != 0:
            raise AssertionError(f'pg_ctl {" ".join(args)} failed ({done.returncode}); see {self.directory}/pg_ctl.out and {self.log}')
        return time.monotonic() - started

    def stop(self) -> float:
        return self.ctl('stop', '-m', 'fast')

    def start(self) -> float:
        return self.ctl('start')

    def restart(self) -> float:
        return self.ctl('restart', '-m', 'fast')

    def running(self) -> bool:
        done = subprocess.run([PG_SERVER, 'status', self.directory], capture_output=True, check=False)
        return done.returncode == 0

    def ensure_running(self) -> None:
        """After a test that stopped it and failed before it started it again."""
        if not self.running():
            self.start()


def _searchable_by_others(path: str, top: str) -> None:
    # Run by root, the server runs as a user of its own, which must reach its directory through every parent, and a
    # mkdtemp work directory is 0700. Search permission only (nothing can be listed), and only up to the work
    # directory: pg_server.sh names any parent above it that the server's user cannot enter.
    path, top = os.path.abspath(path), os.path.abspath(top)
    while True:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if not mode & stat.S_IXOTH:
            os.chmod(path, mode | stat.S_IXOTH)
        if path == top or path == os.path.dirname(path):
            return
        path = os.path.dirname(path)


@contextlib.contextmanager
def pg_server(directory: str, work_dir: str) -> t.Iterator[PgServer]:
    """Start a server in ``directory`` (tools/pg_server.sh), and stop it and delete its data at the end."""
    os.makedirs(directory, exist_ok=True)
    if os.geteuid() == 0:
        _searchable_by_others(directory, work_dir)
    started = subprocess.run([PG_SERVER, 'start', directory], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, check=False, timeout=600)
    if started.returncode != 0:
        raise RuntimeError(f'tools/pg_server.sh start {directory} failed:\n{started.stderr}')
    try:
        printed = subprocess.run([PG_SERVER, 'env', directory], capture_output=True, text=True, check=True, timeout=60).stdout
        settings = {}
        for line in printed.splitlines():
            name, _sep, value = line.removeprefix('export ').partition('=')
            settings[name] = shlex.split(value)[0]
        yield PgServer(directory, settings)
    finally:
        subprocess.run([PG_SERVER, 'stop', directory], stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=300)


def masked(url: str) -> str:
    """``url`` as the collection shows it: its password masked."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = f'{parts.username}:{MASK}@{parts.hostname}' + (f':{parts.port}' if parts.port else '')
    return urlunsplit(parts._replace(netloc=netloc))


def with_port(url: str, port: int) -> str:
    """``url`` with another port: where nothing, or something else, listens."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition('@')[0] + f'@{parts.hostname}:{port}'
    return urlunsplit(parts._replace(netloc=netloc))
