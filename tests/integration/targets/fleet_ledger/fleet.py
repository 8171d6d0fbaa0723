# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the fleet_ledger target needs to see and set up outside Ansible (run by runme.sh).

The stand-in (standard library only):
    fleet.py sent STAND_IN_URL FROM        one line per webhook request after the first FROM: "CODE STATUS ALERT_ID"
                                           (CODE is the HTTP status answered, or HANG / DROP)

The PostgreSQL test server (psycopg; the URLs come from TEMPERSTACK_TEST_PG_*, see tools/pg_server.sh):
    fleet.py create-db DB                  a new, empty database DB owned by the owner role (temperstack)
    fleet.py drop-dbs DB...                drop these databases (those that exist)
    fleet.py install-schema DB             what docs/fleet.md has a DBA run ahead of time: as the owner, the
                                           collection's SCHEMA_SQL; as a superuser, the privileges the guide lists
                                           for a job role (temperstack_job), read from the guide itself
    fleet.py dump DB                       the ledger in DB: "alerts STATUS ALERT_ID" and "outbox STATUS ALERT_ID"
                                           lines, then "meta NAME VALUE" lines but last_prune; "no schema" if none
    fleet.py sql DB STATEMENT              run STATEMENT as the admin, print the rows tab-separated

A server that never answers (a blackholed address, a hung server):
    fleet.py silent-listener PORT_FILE     listen on 127.0.0.1 (a free port, written to PORT_FILE), accept
                                           nothing and answer nothing, until killed

AWX's credential type (examples/awx/credential-type-*.yml):
    fleet.py awx-env INPUTS_JSON [NAME=VALUE...]
                                           the environment a job gets from a credential of that type with these
                                           inputs, as its injector renders it, plus NAME=VALUE (JSON, fit for
                                           ansible-runner's env/envvars)

The SQLite ledger of a controller:
    fleet.py sqlite-dump PATH              as dump, for a ledger file (read-only)

Nothing here prints a password.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import sys
import time
import typing as t
import urllib.parse
import urllib.request

ROLES = {
    'owner': 'TEMPERSTACK_TEST_PG_URL',
    'job': 'TEMPERSTACK_TEST_PG_JOB_URL',
    'admin': 'TEMPERSTACK_TEST_PG_ADMIN_URL',
}
JOB_ROLE = 'temperstack_job'
OWNER_ROLE = 'temperstack'
SCHEMA = 'temperstack'
# Where docs/fleet.md lists what a job role needs, and the names its SQL uses for what the test server calls otherwise.
PRIVILEGES_HEADING = '### The least privileges a job role needs'
GUIDE_OWNER_ROLE = 'temperstack_owner'
GUIDE_DATABASE = 'temperstack'


def stand_in_records(base: str) -> list[dict[str, t.Any]]:
    with urllib.request.urlopen(base.rstrip('/') + '/_stand_in/requests', timeout=10) as response:
        return json.loads(response.read().decode('utf-8'))


def url(role: str, db: str) -> str:
    """The test server's URL for ``role``, with database ``db`` (pg_server.sh's URLs end in /temperstack)."""
    base = os.environ.get(ROLES[role])
    if not base:
        raise SystemExit(f'{ROLES[role]} is not set: runme.sh sources tests/pg_server.env first')
    head, _sep, _db = base.rpartition('/')
    return f'{head}/{db}'


def connect(role: str, db: str) -> t.Any:
    import psycopg  # pylint: disable=import-outside-toplevel

    try:
        return psycopg.connect(url(role, db), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        # libpq names host and port, never the password.
        raise SystemExit(
            f'cannot connect to the PostgreSQL test server of tests/pg_server.env as its {role} role (is it running? '
            f'tools/pg_server.sh status DIR): {" ".join(str(exc).split())}'
        ) from None


def identifier(name: str) -> str:
    if not name.replace('_', '').isalnum() or not name[0].isalpha() or name != name.lower():
        raise SystemExit(f'not a plain database name: {name!r}')
    return name


def collection_root() -> str:
    """The temperstack.alerting that ansible-playbook loads (the first on ANSIBLE_COLLECTIONS_PATH)."""
    for entry in os.environ.get('ANSIBLE_COLLECTIONS_PATH', '').split(os.pathsep):
        root = os.path.join(entry, 'ansible_collections', 'temperstack', 'alerting')
        if entry and os.path.isfile(os.path.join(root, 'galaxy.yml')):
            return root
    raise SystemExit('cannot find temperstack.alerting on ANSIBLE_COLLECTIONS_PATH')


def schema_sql() -> str:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(collection_root()))))
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.temperstack.alerting.plugins.plugin_utils._ledger_postgres import SCHEMA_SQL

    return SCHEMA_SQL


def documented_privileges(db: str) -> list[str]:
    """The statements docs/fleet.md gives a DBA for the job role, for database ``db`` of the test server."""
    path = os.path.join(collection_root(), 'docs', 'fleet.md')
    with open(path, encoding='utf-8') as guide:
        text = guide.read()
    _before, heading, after = text.partition(PRIVILEGES_HEADING)
    block = re.search(r'```sql\n(.*?)```', after, re.S) if heading else None
    if block is None:
        raise SystemExit(f'{path} has no SQL block under {PRIVILEGES_HEADING!r}')
    statements = []
    for statement in filter(None, (part.strip() for part in block.group(1).split(';'))):
        statement = re.sub(rf'\b{GUIDE_OWNER_ROLE}\b', OWNER_ROLE, statement)
        statements.append(re.sub(rf'\bDATABASE {GUIDE_DATABASE}\b', f'DATABASE {db}', statement))
    if not any(JOB_ROLE in statement for statement in statements):
        raise SystemExit(f'the SQL under {PRIVILEGES_HEADING!r} in {path} grants nothing to {JOB_ROLE}')
    return statements


def awx_env(inputs: dict[str, str]) -> dict[str, str]:
    """What AWX injects for a credential of the collection's type: its injector's env, rendered as AWX does."""
    import yaml  # pylint: disable=import-outside-toplevel
    from jinja2.sandbox import SandboxedEnvironment  # pylint: disable=import-outside-toplevel

    examples = os.path.join(collection_root(), 'examples', 'awx')
    with open(os.path.join(examples, 'credential-type-inputs.yml'), encoding='utf-8') as handle:
        declared = yaml.safe_load(handle)
    with open(os.path.join(examples, 'credential-type-injectors.yml'), encoding='utf-8') as handle:
        injectors = yaml.safe_load(handle)
    fields = {field['id'] for field in declared['fields']}
    if set(inputs) - fields or set(declared.get('required', ())) - set(inputs):
        raise SystemExit(f'the credential type declares {sorted(fields)} (required: {declared.get("required")}); given {sorted(inputs)}')
    environment = SandboxedEnvironment()
    return {name: environment.from_string(template).render(**inputs) for name, template in injectors['env'].items()}


def dump_rows(alerts: t.Iterable[t.Sequence[str]], outbox: t.Iterable[t.Sequence[str]], meta: t.Iterable[t.Sequence[str]] = ()) -> None:
    for status, alert_id in alerts:
        print(f'alerts {status} {alert_id}')
    for status, alert_id in outbox:
        print(f'outbox {status} {alert_id}')
    for name, value in meta:
        print(f'meta {name} {value}')


def main(argv: list[str]) -> int:
    command, args = argv[1], argv[2:]
    if command == 'sent':
        for record in stand_in_records(args[0])[int(args[1]):]:
            code = record['response_status'] if record['outcome'] == 'response' else record['outcome'].upper()
            payload = record['json'] or {}
            print(f"{code} {payload.get('status', '-')} {payload.get('alert_id', '-')}")
    elif command == 'create-db':
        with connect('admin', 'postgres') as conn:
            conn.execute(f'CREATE DATABASE {identifier(args[0])} OWNER {OWNER_ROLE}')
    elif command == 'drop-dbs':
        with connect('admin', 'postgres') as conn:
            for db in args:
                conn.execute(f'DROP DATABASE IF EXISTS {identifier(db)} WITH (FORCE)')
    elif command == 'install-schema':
        db = identifier(args[0])
        privileges = documented_privileges(db)
        with connect('owner', db) as conn:
            conn.execute(schema_sql())
        with connect('admin', db) as conn:
            for statement in privileges:
                print(f'{statement};')
                conn.execute(statement)
    elif command == 'dump':
        with connect('admin', identifier(args[0])) as conn:
            if conn.execute('SELECT to_regclass(%s)', (f'{SCHEMA}.meta',)).fetchone()[0] is None:
                print('no schema')
                return 0
            dump_rows(
                conn.execute(f'SELECT status, alert_id FROM {SCHEMA}.alerts ORDER BY alert_id').fetchall(),
                conn.execute(f'SELECT status, alert_id FROM {SCHEMA}.outbox ORDER BY seq').fetchall(),
                conn.execute(f"SELECT name, value FROM {SCHEMA}.meta WHERE name <> 'last_prune' ORDER BY name").fetchall(),
            )
    elif command == 'sql':
        with connect('admin', identifier(args[0])) as conn:
            cursor = conn.execute(args[1])
            if cursor.description is not None:
                for row in cursor.fetchall():
                    print('\t'.join(str(value) for value in row))
    elif command == 'sqlite-dump':
        conn = sqlite3.connect(f'file:{urllib.parse.quote(args[0])}?mode=ro', uri=True)
        try:
            dump_rows(
                conn.execute('SELECT status, alert_id FROM alerts ORDER BY alert_id').fetchall(),
                conn.execute('SELECT status, alert_id FROM outbox ORDER BY seq').fetchall(),
            )
        finally:
            conn.close()
    elif command == 'awx-env':
        environment = awx_env(json.loads(args[0]))
        environment.update(item.split('=', 1) for item in args[1:])
        print(json.dumps(environment, indent=2))
    elif command == 'silent-listener':
        # The kernel completes the handshakes into the backlog, so clients connect and then wait for an answer.
        with socket.socket() as listener:
            listener.bind(('127.0.0.1', 0))
            listener.listen(64)
            with open(args[0] + '.tmp', 'w', encoding='ascii') as port_file:
                port_file.write(str(listener.getsockname()[1]))
            os.rename(args[0] + '.tmp', args[0])
            while True:
                time.sleep(3600)
    else:
        print(f'unknown command {command!r}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
