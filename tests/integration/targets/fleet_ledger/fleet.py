# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the fleet_ledger target needs to see and set up outside Ansible (run by runme.sh), beside the helpers every
target shares (../setup_temperstack_stand_in/ts_helpers.py: the requests the stand-in received, the test server's
databases).

The PostgreSQL test server (psycopg; the URLs come from TEMPERSTACK_TEST_PG_*, see tools/pg_server.sh):
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, 'setup_temperstack_stand_in'))
# pylint: disable-next=wrong-import-position
from ts_helpers import JOB_ROLE, OWNER_ROLE, SCHEMA, collection_root, connect, identifier, run

# Where docs/fleet.md lists what a job role needs, and the names its SQL uses for what the test server calls otherwise.
PRIVILEGES_HEADING = '### The least privileges a job role needs'
GUIDE_OWNER_ROLE = 'temperstack_owner'
GUIDE_DATABASE = 'temperstack'


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


def install_schema(args: list[str]) -> None:
    db = identifier(args[0])
    privileges = documented_privileges(db)
    with connect('owner', db) as conn:
        conn.execute(schema_sql())
    with connect('admin', db) as conn:
        for statement in privileges:
            print(f'{statement};')
            conn.execute(statement)


def dump(args: list[str]) -> None:
    with connect('admin', identifier(args[0])) as conn:
        if conn.execute('SELECT to_regclass(%s)', (f'{SCHEMA}.meta',)).fetchone()[0] is None:
            print('no schema')
            return
        dump_rows(
            conn.execute(f'SELECT status, alert_id FROM {SCHEMA}.alerts ORDER BY alert_id').fetchall(),
            conn.execute(f'SELECT status, alert_id FROM {SCHEMA}.outbox ORDER BY seq').fetchall(),
            conn.execute(f"SELECT name, value FROM {SCHEMA}.meta WHERE name <> 'last_prune' ORDER BY name").fetchall(),
        )


def sql(args: list[str]) -> None:
    with connect('admin', identifier(args[0])) as conn:
        cursor = conn.execute(args[1])
        if cursor.description is not None:
            for row in cursor.fetchall():
                print('\t'.join(str(value) for value in row))


def sqlite_dump(args: list[str]) -> None:
    conn = sqlite3.connect(f'file:{urllib.parse.quote(args[0])}?mode=ro', uri=True)
    try:
        dump_rows(
            conn.execute('SELECT status, alert_id FROM alerts ORDER BY alert_id').fetchall(),
            conn.execute('SELECT status, alert_id FROM outbox ORDER BY seq').fetchall(),
        )
    finally:
        conn.close()


def print_awx_env(args: list[str]) -> None:
    environment = awx_env(json.loads(args[0]))
    environment.update(item.split('=', 1) for item in args[1:])
    print(json.dumps(environment, indent=2))


def silent_listener(args: list[str]) -> None:
    # The kernel completes the handshakes into the backlog, so clients connect and then wait for an answer.
    with socket.socket() as listener:
        listener.bind(('127.0.0.1', 0))
        listener.listen(64)
        with open(args[0] + '.tmp', 'w', encoding='ascii') as port_file:
            port_file.write(str(listener.getsockname()[1]))
        os.rename(args[0] + '.tmp', args[0])
        while True:
            time.sleep(3600)


COMMANDS = {
    'install-schema': install_schema,
    'dump': dump,
    'sql': sql,
    'sqlite-dump': sqlite_dump,
    'awx-env': print_awx_env,
    'silent-listener': silent_listener,
}


if __name__ == '__main__':
    sys.exit(run(COMMANDS, sys.argv))
