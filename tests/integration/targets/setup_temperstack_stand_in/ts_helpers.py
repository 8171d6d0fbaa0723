# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the integration targets need to see and set up outside Ansible, shared by all of them.

A library for a target's own script (day2.py, fleet.py, check.py put this directory on sys.path), and a command
that runs the shared helpers (jobs.sh runs it as ts_helper):

The stand-in (standard library only):
    ts_helpers.py sent STAND_IN_URL FROM [NAME=KEY...]
                                           one line per webhook request after the first FROM: "CODE STATUS ALERT_ID"
                                           (CODE: the HTTP status answered, or HANG or DROP); given NAME=KEY pairs,
                                           a fourth word names the request's key ("unknown" for any other key), so
                                           that no key is ever printed

The PostgreSQL test server (psycopg; the URLs come from TEMPERSTACK_TEST_PG_*, see tools/pg_server.sh):
    ts_helpers.py url DB                   the owner role's URL for database DB
    ts_helpers.py create-db DB...          new, empty databases owned by the owner role (temperstack)
    ts_helpers.py drop-dbs DB...           drop these databases (those that exist)

Nothing here prints a key or a password: URLs are printed only by `url`, whose output runme.sh keeps in variables.
"""

from __future__ import annotations

import json
import os
import sys
import typing as t
import urllib.request

SCHEMA = 'temperstack'
OWNER_ROLE = 'temperstack'
JOB_ROLE = 'temperstack_job'
# The test server's roles, and the variables of tests/pg_server.env that hold their URLs.
ROLES = {
    'owner': 'TEMPERSTACK_TEST_PG_URL',
    'job': 'TEMPERSTACK_TEST_PG_JOB_URL',
    'admin': 'TEMPERSTACK_TEST_PG_ADMIN_URL',
}


def stand_in_records(base: str) -> list[dict[str, t.Any]]:
    """Every request the stand-in at ``base`` recorded since its last reset, oldest first."""
    with urllib.request.urlopen(base.rstrip('/') + '/_stand_in/requests', timeout=10) as response:
        return json.loads(response.read().decode('utf-8'))


def request_lines(base: str, start: int, key_names: t.Mapping[str, str] | None = None) -> list[str]:
    """``CODE STATUS ALERT_ID`` for each request after the first ``start``; with ``key_names``, and its key's name."""
    lines = []
    for record in stand_in_records(base)[start:]:
        code = record['response_status'] if record['outcome'] == 'response' else record['outcome'].upper()
        payload = record['json'] if isinstance(record['json'], dict) else {}
        line = f"{code} {payload.get('status', '-')} {payload.get('alert_id', '-')}"
        if key_names is not None:
            line += f" {key_names.get(record['key'], 'unknown')}"
        lines.append(line)
    return lines


def collection_root() -> str:
    """The temperstack.alerting that ansible-playbook loads (the first on ANSIBLE_COLLECTIONS_PATH)."""
    for entry in os.environ.get('ANSIBLE_COLLECTIONS_PATH', '').split(os.pathsep):
        root = os.path.join(entry, 'ansible_collections', 'temperstack', 'alerting')
        if entry and os.path.isfile(os.path.join(root, 'meta', 'runtime.yml')):
            return root
    raise SystemExit('cannot find temperstack.alerting on ANSIBLE_COLLECTIONS_PATH')


def identifier(name: str) -> str:
    """``name``, if it is a plain lower-case database name that needs no quoting."""
    if not name.replace('_', '').isalnum() or not name[0].isalpha() or name != name.lower():
        raise SystemExit(f'not a plain database name: {name!r}')
    return name


def pg_url(role: str, db: str) -> str:
    """The test server's URL for ``role``, with database ``db`` (pg_server.sh's URLs end in /temperstack)."""
    base = os.environ.get(ROLES[role])
    if not base:
        raise SystemExit(f'{ROLES[role]} is not set: runme.sh sources tests/pg_server.env first')
    head, _sep, _db = base.rpartition('/')
    return f'{head}/{identifier(db)}'


def connect_url(url: str, who: str = 'a') -> t.Any:
    """An autocommit connection to ``url``, or an exit that names the server but never the password."""
    import psycopg  # pylint: disable=import-outside-toplevel

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        # libpq names host and port, never the password.
        raise SystemExit(
            f'cannot connect to the PostgreSQL test server of tests/pg_server.env as {who} role (is it running? '
            f'tools/pg_server.sh status DIR): {" ".join(str(exc).split())}'
        ) from None


def connect(role: str, db: str) -> t.Any:
    """An autocommit connection to database ``db`` of the test server, as ``role`` (owner, job or admin)."""
    return connect_url(pg_url(role, db), f'its {role}')


def _sent(args: list[str]) -> None:
    key_names = {key: name for name, _sep, key in (item.partition('=') for item in args[2:])} if args[2:] else None
    for line in request_lines(args[0], int(args[1]), key_names):
        print(line)


def _create_dbs(args: list[str]) -> None:
    with connect('admin', 'postgres') as conn:
        for db in args:
            conn.execute(f'CREATE DATABASE {identifier(db)} OWNER {OWNER_ROLE}')


def _drop_dbs(args: list[str]) -> None:
    with connect('admin', 'postgres') as conn:
        for db in args:
            conn.execute(f'DROP DATABASE IF EXISTS {identifier(db)} WITH (FORCE)')


COMMANDS: dict[str, t.Callable[[list[str]], int | None]] = {
    'sent': _sent,
    'url': lambda args: print(pg_url('owner', args[0])),
    'create-db': _create_dbs,
    'drop-dbs': _drop_dbs,
}


def run(commands: t.Mapping[str, t.Callable[[list[str]], int | None]], argv: list[str]) -> int:
    """Run ``argv[1]``, one of ``commands``, with the rest of ``argv``: what each target's script does as a command."""
    if len(argv) < 2 or argv[1] not in commands:
        print(f'unknown command {argv[1:2]!r}; known: {", ".join(sorted(commands))}', file=sys.stderr)
        return 2
    return commands[argv[1]](argv[2:]) or 0


if __name__ == '__main__':
    sys.exit(run(COMMANDS, sys.argv))
